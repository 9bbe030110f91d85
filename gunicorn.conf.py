"""Gunicorn reads this file when started from the repository root: the settings of `machinery serve`."""

from machinery.gunicorn_conf import *  # noqa: F401,F403
