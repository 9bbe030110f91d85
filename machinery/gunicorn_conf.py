"""Gunicorn settings for `machinery serve`: gthread workers, sizes from the environment, graceful shutdown."""

import os

worker_class = "gthread"
workers = int(os.environ.get("MACHINERY_GUNICORN_WORKERS", os.environ.get("WEB_CONCURRENCY", "1")))
threads = int(os.environ.get("MACHINERY_GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("MACHINERY_GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("MACHINERY_GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
accesslog = None
