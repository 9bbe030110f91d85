"""What every benchmark shares: servers it starts and always stops, registration, timing, tables, results."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import requests

from machinery.cli import gunicorn_command
from machinery.serving import free_port, wait_until_answering

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PEERS = HERE / ".peers"
LOCAL = "127.0.0.1"
SERVICE_THREADS = 16  # the trivial services: 1 worker x 16 threads, gthread
API_THREADS = 8  # Machinery and the relay: 1 worker x 8 threads (Machinery's default)
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "300"))
TIME_LIMIT_S = float(os.environ.get("BENCH_TIME_LIMIT_S", "60"))


# -- processes ------------------------------------------------------------------------------

class Process:
    """A server process the benchmark started; stop() ends it (and only it) even on failure."""

    def __init__(self, name: str, command: list[str], env: dict | None = None, cwd: Path = REPO):
        (RESULTS / "logs").mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = RESULTS / "logs" / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(command, env={**os.environ, **(env or {})}, cwd=cwd,
                                      stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        if self.alive():
            # The process leads its own session (start_new_session): signal that group only.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        self.log.close()

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""


def wait_http(url: str, process: Process | None = None, seconds: float = 30.0) -> None:
    """Wait until `url` answers (any status below 500)."""
    problem = wait_until_answering(url, seconds, running=lambda: process is None or process.alive())
    if problem == "exited":
        raise RuntimeError(f"{process.name} exited before answering:\n{process.tail()}")
    if problem:
        raise RuntimeError(f"{url} did not answer within {seconds:g} s")


def gunicorn(app: str, port: int, threads: int, workers: int = 1) -> list[str]:
    """gunicorn gthread for a benchmark app; gunicorn sets TCP_NODELAY on its listener, and Linux
    passes it on to every accepted connection, so no server here stalls on Nagle's algorithm."""
    return [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", str(workers),
            "--threads", str(threads), "--bind", f"{LOCAL}:{port}", "--keep-alive", "5",
            "--log-level", "warning", "--chdir", str(RESULTS), app]


def start_echo(stack: contextlib.ExitStack, name: str = "echo") -> str:
    """The trivial echo service under gunicorn; returns its base URL."""
    port = free_port()
    process = Process(name, gunicorn("benchmarks.apps:echo", port, SERVICE_THREADS))
    stack.callback(process.stop)
    url = f"http://{LOCAL}:{port}"
    wait_for_post(f"{url}/s0", process)
    return url


def wait_for_post(url: str, process: Process, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited before answering:\n{process.tail()}")
        try:
            requests.post(url, json={"message": "ping"}, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds:g} s")


def start_machinery(stack: contextlib.ExitStack, name: str = "machinery", threads: int = API_THREADS,
                    env: dict | None = None) -> tuple[str, Process]:
    """Machinery under gunicorn (1 worker, embedded store), as `machinery serve` runs it."""
    port = free_port()
    settings = {"MACHINERY_MONGO_URI": "mongomock://localhost/bench", **(env or {})}
    process = Process(name, gunicorn_command(f"{LOCAL}:{port}", 1, threads), env=settings)
    stack.callback(process.stop)
    url = f"http://{LOCAL}:{port}"
    wait_http(f"{url}/healthcheck", process)
    return url, process


def start_relay(stack: contextlib.ExitStack, chains: dict[str, list[str]],
                threads: int = API_THREADS, client: str = "requests") -> str:
    """The bare relay under gunicorn; `client` "requests" (the relay of the targets) or "lean" (Machinery's client)."""
    return relay_process(stack, chains, threads, client)[0]


def relay_process(stack: contextlib.ExitStack, chains: dict[str, list[str] | dict],
                  threads: int = API_THREADS, client: str = "requests") -> tuple[str, Process]:
    """start_relay(), with the relay's process too (for its CPU)."""
    port = free_port()
    process = Process("relay" if client == "requests" else f"relay-{client}",
                      gunicorn("benchmarks.apps:relay_app()", port, threads),
                      env={"BENCH_RELAY_CHAINS": json.dumps(chains), "BENCH_RELAY_CLIENT": client})
    stack.callback(process.stop)
    url = f"http://{LOCAL}:{port}"
    wait_for_post(f"{url}/e/{next(iter(chains))}", process)
    return url, process


def in_process(stack: contextlib.ExitStack, name: str):
    """Machinery in this process on its own embedded store (no embedded workers, warnings only),
    closed when the stack unwinds: for what can only be counted or profiled from inside."""
    from machinery.app import create_app

    app = create_app({"MONGO_URI": f"mongomock://localhost/{name}", "EMBEDDED_WORKERS": 0, "LOG_LEVEL": "warning"})
    stack.callback(app.extensions["machinery"].close, 0)
    return app


# -- definitions ----------------------------------------------------------------------------

def chain_urls(echo_url: str, steps: int) -> list[str]:
    return [f"{echo_url}/s{index}" for index in range(steps)]


def definitions(echo_url: str, steps: int, path: str = "s") -> tuple[list[dict], dict]:
    """Services echo-0.. and the workflow chain-<steps> passing `message` along."""
    field = [{"name": "message", "type": "string"}]
    services = [{"name": f"{path}echo-{index}", "address": f"{echo_url}/{path}{index}",
                 "inputs": field, "outputs": field} for index in range(steps)]
    if path == "accept":
        services = [{**service, "outputs": field} for service in services]
    workflow = {"name": f"{path}chain-{steps}", "services": [service["name"] for service in services],
                "inputs": field, "outputs": field}
    return services, workflow


def register(post: Callable[[str, dict], Any], echo_url: str, steps: int, path: str = "s") -> str:
    """Register a chain through `post(path, json)`; returns the workflow's name."""
    services, workflow = definitions(echo_url, steps, path)
    for service in services:
        post("/services", service)
    post("/workflows", workflow)
    return workflow["name"]


def http_register(api: str, echo_url: str, steps: int, path: str = "s") -> str:
    def post(where: str, body: dict) -> None:
        reply = requests.post(api + where, json=body, timeout=10)
        if reply.status_code not in (200, 201):
            raise RuntimeError(f"POST {where}: {reply.status_code} {reply.text}")
    return register(post, echo_url, steps, path)


# -- timing ---------------------------------------------------------------------------------

def summary(latencies_s: Iterable[float]) -> dict:
    """Median, p99 and mean in milliseconds."""
    values = sorted(latencies_s)
    if not values:
        return {"n": 0, "median_ms": None, "p99_ms": None, "mean_ms": None}
    p99 = values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)]
    return {"n": len(values), "median_ms": round(statistics.median(values) * 1000, 3),
            "p99_ms": round(p99 * 1000, 3), "mean_ms": round(statistics.fmean(values) * 1000, 3)}


def sequential(call: Callable[[], Any], samples: int = SAMPLES, warmup: int = 20,
               time_limit_s: float = TIME_LIMIT_S) -> list[float]:
    """Latencies of `call` made one after another, after a warm-up; bounded in count and time."""
    for _ in range(warmup):
        call()
    latencies = []
    deadline = time.monotonic() + time_limit_s
    while len(latencies) < samples and time.monotonic() < deadline:
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    return latencies


def interleaved(sends: dict[str, Callable[[], Any]], times: int, warmup: int) -> dict[str, list[float]]:
    """Each send timed up to `times` times, the sends taking turns round by round, so that a drift in
    the machine's load (two cores, other processes) falls on all of them alike and not on one block."""
    for send in sends.values():
        for _ in range(warmup):
            send()
    seconds: dict[str, list[float]] = {name: [] for name in sends}
    deadline = time.monotonic() + TIME_LIMIT_S * len(sends)
    while any(len(taken) < times for taken in seconds.values()) and time.monotonic() < deadline:
        for name, send in sends.items():
            started = time.perf_counter()
            send()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def concurrent(make_call: Callable[[], Callable[[], Any]], clients: int, events: int,
               time_limit_s: float = TIME_LIMIT_S, warmup: int = 2) -> tuple[float, list[float], int]:
    """`clients` threads sharing `events` calls; returns (calls/s, latencies, errors).

    Each thread gets its own call (its own session) from make_call().
    """
    lock = threading.Lock()
    remaining = [events]
    latencies: list[float] = []
    errors = [0]
    deadline = [0.0]
    ready = threading.Barrier(clients + 1)

    def client():
        call = make_call()
        for _ in range(warmup):
            call()
        ready.wait()
        mine = []
        while time.monotonic() < deadline[0]:
            with lock:
                if remaining[0] <= 0:
                    break
                remaining[0] -= 1
            started = time.perf_counter()
            try:
                call()
            except Exception:  # counted, not fatal: the table says how many
                with lock:
                    errors[0] += 1
                continue
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + time_limit_s
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(time_limit_s + 30)
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, errors[0]


def post_ok(session: requests.Session, url: str, body: dict, expect: int = 201) -> dict:
    reply = session.post(url, json=body, timeout=30)
    if reply.status_code != expect:
        raise RuntimeError(f"POST {url}: {reply.status_code} {reply.text[:300]}")
    return reply.json()


def poster(url: str, body: dict, expect: int = 201) -> Callable[[], Callable[[], dict]]:
    """A make_call for concurrent(): each client thread POSTs `body` to `url` with its own session."""
    def make_call():
        session = requests.Session()
        return lambda: post_ok(session, url, body, expect)
    return make_call


def chainer(urls: list[str]) -> Callable[[], Callable[[], str]]:
    """A make_call for concurrent(): each client thread makes the chain's calls directly."""
    def make_call():
        session = requests.Session()
        return lambda: direct_chain(session, urls)
    return make_call


def direct_chain(session: requests.Session, urls: list[str], message: str = "hello world") -> str:
    """The chain's calls made directly, one after another, with one session."""
    for url in urls:
        reply = session.post(url, json={"message": message}, timeout=10)
        reply.raise_for_status()
        message = reply.json()["message"]
    return message


# -- reporting ------------------------------------------------------------------------------

def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "python": platform.python_version(), "cpu": cpu,
            "platform": platform.platform()}


def table(title: str, headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table, printed and returned."""
    def cell(value):
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
        return "—" if value is None else str(value)
    lines = [f"\n### {title}\n", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "machine": machine(), **data}, indent=2, default=str))
    print(f"\n(results: {path.relative_to(REPO)})", flush=True)
    return path


def ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 2) if value and base else None
