"""Start Machinery as real processes (gunicorn, `machinery serve`, `machinery worker`) on 127.0.0.1 free ports,
wait for them boundedly, and always stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from machinery.cli import gunicorn_command
from machinery.serving import free_port, wait_until_answering

ROOT = Path(__file__).resolve().parent.parent.parent
MACHINERY = [sys.executable, "-m", "machinery.cli"]


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without any MACHINERY_* or multiprocess-metrics variable, plus `settings`."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("MACHINERY_") and key not in ("PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY")}
    env.update({"MACHINERY_LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1"})
    env.update(settings)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command to its end (bounded), capturing its output."""
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


class Served:
    """A process serving HTTP on 127.0.0.1:port."""

    def __init__(self, process: subprocess.Popen, port: int, log):
        self.process, self.port, self._log = process, port, log
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=kwargs.pop("timeout", 10), **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")


@contextmanager
def serving(args: list[str], port: int, env: dict[str, str], ready: str = "/healthcheck", wait_s: float = 30,
            own_group: bool = False):
    """Start `args`, wait until GET `ready` answers below 500, yield it, then stop it (TERM, then KILL).
    With `own_group` it leads a process group of its own, so that kill_9 takes its children too."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=own_group)
        served = Served(process, port, log)
        try:
            problem = wait_until_answering(served.url + ready, wait_s, running=lambda: process.poll() is None)
            if problem == "exited":
                raise AssertionError(f"exited with {process.returncode} before answering:\n{served.output()}")
            if problem:
                raise AssertionError(f"{ready} did not answer within {wait_s:g} s:\n{served.output()}")
            yield served
        finally:
            stop(process, timeout=20)


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
    return clean_env(**{key: str(value) for key, value in extra.items()})


def stop(process: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 15) -> int:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_9(process)
    return process.returncode


def kill_9(process: subprocess.Popen) -> None:
    """SIGKILL a process, and every process of its group when it leads one (gunicorn's master and its
    workers at once, as when their machine dies), then reap it."""
    if process.poll() is None:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    process.wait(timeout=10)


@contextmanager
def gunicorn_served(env: dict, workers: int = 1, threads: int = 8):
    """The API under gunicorn on a free port, leading its own process group (see kill_9); yields it Served."""
    port = free_port()
    with serving(gunicorn_command(f"127.0.0.1:{port}", workers, threads), port, _env(env), own_group=True) as served:
        yield served


@contextmanager
def gunicorn_api(env: dict, workers: int = 1, threads: int = 8):
    """The API under gunicorn on a free port; yields its base URL."""
    with gunicorn_served(env, workers, threads) as served:
        yield served.url


def start_worker(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*MACHINERY, "worker", *args], env=_env(env))
