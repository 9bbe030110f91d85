"""Settings: one documented table, and a bad value stopping every entry point with one line naming it."""

from __future__ import annotations

import sys

import pytest

from machinery.config import SETTINGS, settings_table
from machinery.serving import free_port
from tests.support.processes import MACHINERY, ROOT, clean_env, run

START, END = "<!-- settings:start -->", "<!-- settings:end -->"
REGENERATE = ("regenerate it with `python -m machinery.config` and paste the output between "
              f"{START} and {END} in README.md")


def test_the_readme_holds_exactly_the_settings_table():
    readme = (ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else ""
    assert START in readme and END in readme, f"README.md has no settings table markers: {REGENERATE}"
    documented = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert documented == settings_table().strip(), f"README.md's settings table is out of date: {REGENERATE}"


def test_the_table_has_one_row_per_setting_with_its_default():
    rows = settings_table().strip().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [f"| `{setting.env}`" for setting in SETTINGS]
    assert "| `MACHINERY_LEASE_S` | `30.0` |" in settings_table()
    assert "| `MACHINERY_EVENT_TTL_DAYS` | unset |" in settings_table()


def test_python_dash_m_machinery_config_prints_the_table():
    result = run([sys.executable, "-m", "machinery.config"], clean_env())
    assert result.returncode == 0 and result.stdout == settings_table()


BAD = [("MACHINERY_LEASE_S", "soon"), ("MACHINERY_LOG_LEVEL", "loud"), ("MACHINERY_MONGO_URI", "mysql://x"),
       ("MACHINERY_GUNICORN_WORKERS", "0")]


def _stopped_cleanly(result, variable):
    assert result.returncode != 0
    assert variable in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("variable,bad", BAD)
def test_a_bad_value_stops_machinery_serve_naming_the_variable(variable, bad):
    command = [*MACHINERY, "serve", "--bind", f"127.0.0.1:{free_port()}"]
    _stopped_cleanly(run(command, clean_env(**{variable: bad}), timeout=30), variable)


@pytest.mark.parametrize("variable,bad", BAD[:3])
def test_a_bad_value_stops_machinery_worker_naming_the_variable(variable, bad):
    _stopped_cleanly(run([*MACHINERY, "worker"], clean_env(**{variable: bad}), timeout=30), variable)


@pytest.mark.parametrize("config", [["--config", "python:machinery.gunicorn_conf"], []],
                         ids=["machinery.gunicorn_conf", "root gunicorn.conf.py"])
def test_a_bad_value_stops_gunicorn_itself_before_any_worker(config):
    command = [sys.executable, "-m", "gunicorn", *config, "--bind", f"127.0.0.1:{free_port()}",
               "machinery.app:create_app()"]
    _stopped_cleanly(run(command, clean_env(MACHINERY_LEASE_S="soon"), timeout=30), "MACHINERY_LEASE_S")


def test_a_bad_web_concurrency_is_named_too():
    command = [*MACHINERY, "serve", "--bind", f"127.0.0.1:{free_port()}"]
    _stopped_cleanly(run(command, clean_env(WEB_CONCURRENCY="many"), timeout=30), "WEB_CONCURRENCY")
