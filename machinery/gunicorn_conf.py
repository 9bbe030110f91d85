"""Gunicorn settings for `machinery serve`: gthread workers, sizes from the environment, graceful shutdown.

The values come from the MACHINERY_* settings (machinery/config.py); a bad one stops gunicorn here,
before any worker starts, with one line naming the variable. Hooks: stale multiprocess metric
files are cleared at start, a dead worker's are marked dead, each worker sets the garbage collector
for a long-running server once its app is loaded, and stops its event threads and releases the
events it holds when it exits.
"""

import logging
import os
import shutil
import sys

from machinery.config import load_config
from machinery.exceptions import ConfigError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OWNED_MULTIPROC_ENV = "MACHINERY_OWNED_METRICS_DIR"  # set by `machinery serve` when it made the dir


def _settings() -> dict:
    try:
        return load_config()
    except ConfigError as error:
        print(f"machinery: {error.message}", file=sys.stderr)
        raise SystemExit(2) from None


def default_workers(settings: dict) -> int:
    """MACHINERY_GUNICORN_WORKERS, else WEB_CONCURRENCY, else 1."""
    if settings["GUNICORN_WORKERS"]:
        return settings["GUNICORN_WORKERS"]
    raw = os.environ.get("WEB_CONCURRENCY", "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        print(f"machinery: WEB_CONCURRENCY={raw!r} is not valid: must be a whole number of at least 1",
              file=sys.stderr)
        raise SystemExit(2)
    return int(raw)


_SETTINGS = _settings()

bind = [_SETTINGS["BIND"]]
worker_class = "gthread"
workers = default_workers(_SETTINGS)
threads = _SETTINGS["GUNICORN_THREADS"]
timeout = _SETTINGS["GUNICORN_TIMEOUT"]
graceful_timeout = _SETTINGS["GUNICORN_GRACEFUL_TIMEOUT"]
keepalive = 5
# The spec admits query values of up to 2000 characters (base_url), up to three times that once percent-encoded:
# the longest request line gunicorn allows, rather than its 4094 default, lets every valid request through.
limit_request_line = 8190
# Heartbeat files in memory: a container's disk-backed /tmp can stall them and get workers killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
accesslog = None  # the app logs one line a request, with its request id (MACHINERY_ACCESS_LOG)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "machinery"
# gunicorn 27's control socket is one path per user: several instances on a host (tests, demo) would share it.
control_socket_disable = True


def on_starting(server):
    """Clear samples a previous run left in the multiprocess metrics dir (they would add up forever)."""
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.unlink(os.path.join(folder, name))


def child_exit(server, worker):
    """A worker ended: drop its live gauges from the multiprocess metrics."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """In the worker, its app loaded: the collector set for a long-running server (machinery/collector.py)."""
    from machinery import collector

    collector.tune()


def worker_exit(server, worker):
    """In the exiting worker: stop its event threads, let them finish briefly, release what is still held."""
    app = getattr(worker, "wsgi", None)
    runtime = getattr(app, "extensions", {}).get("machinery") if app is not None else None
    if runtime is not None:
        try:
            runtime.close(grace_s=max(1.0, graceful_timeout / 2))
        except Exception:  # exiting anyway: say why, do not mask the exit
            logging.getLogger("machinery.gunicorn").exception("worker %s: close failed", worker.pid)


def on_exit(server):
    """Remove the multiprocess metrics dir `machinery serve` made for this run."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder and os.environ.get(OWNED_MULTIPROC_ENV) == folder:
        shutil.rmtree(folder, ignore_errors=True)
