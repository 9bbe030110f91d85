"""Start Machinery as real processes (gunicorn, `machinery worker`) and stop them, always."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import requests

from machinery.cli import gunicorn_command
from machinery.serving import free_port


def wait_until(check, seconds: float, interval: float = 0.05, message: str = "condition"):
    """Poll `check` until it returns something truthy; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not met within {seconds} s")


def _env(extra: dict) -> dict:
    return {**os.environ, "MACHINERY_LOG_LEVEL": "warning", **{k: str(v) for k, v in extra.items()}}


def stop(process: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 15) -> int:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


@contextmanager
def gunicorn_api(env: dict, workers: int = 1, threads: int = 8):
    """The API under gunicorn on a free port; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(gunicorn_command(f"127.0.0.1:{port}", workers, threads), env=_env(env))
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            if process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {process.returncode}")
            try:
                return requests.get(f"{url}/healthcheck", timeout=1).status_code == 204
            except requests.RequestException:
                return False
        wait_until(up, 30, 0.1, "gunicorn answering")
        yield url
    finally:
        stop(process)


def start_worker(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "machinery.cli", "worker", *args], env=_env(env))
