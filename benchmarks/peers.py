"""Peers: the same 3-step chain of HTTP calls run by Machinery, the bare relay, a Celery chain over Redis,
a Prefect 3 flow of three tasks and an n8n webhook workflow of three HTTP Request nodes, in one run.

Peers are installed under benchmarks/.peers/ (`python -m benchmarks.peers --install`), never into the
project's dependencies; a peer that is not installed, or cannot start, is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time

import requests

from benchmarks import common

STEPS = 3
MESSAGE = {"message": "hello world"}
VENV = common.PEERS / "venv"
N8N_DIR = common.PEERS / "n8n"
N8N_BIN = N8N_DIR / "node_modules" / ".bin" / "n8n"
N8N_VERSION = "2.8.4"  # the newest n8n that runs on Node 20
WORKFLOW_ID = "BenchChain3Steps"
CLIENTS = 8


def install() -> None:
    """Install the peers under benchmarks/.peers/ (needs PyPI, npm and Debian's packages)."""
    common.PEERS.mkdir(parents=True, exist_ok=True)
    if not shutil.which("redis-server"):
        subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=False)
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "celery[redis]>=5.4,<6", "prefect>=3,<4",
                    "requests"], check=True)
    N8N_DIR.mkdir(exist_ok=True)
    # n8n's xlsx dependency points at a tarball outside the registry: use the registry's 0.18.5.
    (N8N_DIR / "package.json").write_text(json.dumps({
        "name": "machinery-bench-n8n", "private": True, "dependencies": {"n8n": N8N_VERSION},
        "overrides": {"xlsx": "0.18.5"}}, indent=2))
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=N8N_DIR, check=True)


def _skip(name: str, reason: str) -> dict:
    print(f"peer {name}: skipped: {reason}", flush=True)
    return {"skipped": reason}


def _drive(peer: str, urls: list[str], env: dict, samples: int, events: int, timeout_s: float) -> dict:
    command = [str(VENV / "bin" / "python"), str(common.HERE / "peer_driver.py"), peer, *urls]
    settings = {**os.environ, "PYTHONPATH": str(common.HERE), "BENCH_SAMPLES": str(samples),
                "BENCH_EVENTS": str(events), "BENCH_CLIENTS": str(CLIENTS), **env}
    done = subprocess.run(command, env=settings, capture_output=True, text=True, timeout=timeout_s,
                          cwd=common.PEERS)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{peer} driver exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return json.loads(lines[-1])


def run_celery(stack: contextlib.ExitStack, urls: list[str]) -> dict:
    env = start_celery(stack, CLIENTS)
    if isinstance(env, str):
        return _skip("celery", env)
    return _drive("celery", urls, env, common.SAMPLES, 400, 300)


def start_celery(stack: contextlib.ExitStack, concurrency: int, name: str = "celery-worker") -> dict | str:
    """Redis and a Celery worker (thread pool of `concurrency`) for peer_tasks, stopped with `stack`;
    returns the environment a driver needs, or why they cannot run."""
    if not (VENV / "bin" / "celery").exists():
        return "not installed (python -m benchmarks.peers --install)"
    if not shutil.which("redis-server"):
        return "redis-server not installed (apt-get install -y redis-server)"
    port = common.free_port()
    redis = common.Process("redis", ["redis-server", "--port", str(port), "--bind", common.LOCAL, "--save", "",
                                     "--appendonly", "no"], cwd=common.PEERS)
    stack.callback(redis.stop)
    url = f"redis://{common.LOCAL}:{port}/0"
    env = {"BENCH_REDIS_URL": url, "PYTHONPATH": str(common.HERE)}
    worker = common.Process(name, [str(VENV / "bin" / "celery"), "-A", "peer_tasks", "worker",
                                   "--pool", "threads", "--concurrency", str(concurrency),
                                   "--loglevel", "info", "--without-gossip", "--without-mingle",
                                   "--without-heartbeat"], env=env, cwd=common.PEERS)
    stack.callback(worker.stop)
    deadline = time.monotonic() + 60
    while "ready." not in worker.log_path.read_text():
        if not worker.alive() or time.monotonic() > deadline:
            return f"the worker did not start:\n{worker.tail()}"
        time.sleep(0.2)
    return env


def run_prefect(stack: contextlib.ExitStack, urls: list[str]) -> dict:
    if not (VENV / "bin" / "prefect").exists():
        return _skip("prefect", "not installed (python -m benchmarks.peers --install)")
    home = common.PEERS / "prefect-home"
    env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_LOGGING_TO_API_ENABLED": "false",
           "DO_NOT_TRACK": "1", "BENCH_TIME_LIMIT_S": "45"}
    # As shipped: each flow run ends by joining its heartbeat thread (~0.85 s), so few runs are made.
    return _drive("prefect", urls, env, 15, 24, 400)


N8N_ENV = {
    "N8N_DIAGNOSTICS_ENABLED": "false", "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
    "N8N_TEMPLATES_ENABLED": "false", "N8N_PERSONALIZATION_ENABLED": "false", "N8N_HIRING_BANNER_ENABLED": "false",
    "N8N_LISTEN_ADDRESS": common.LOCAL, "N8N_SECURE_COOKIE": "false", "N8N_LOG_LEVEL": "warn",
    "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "false", "N8N_PUBLIC_API_DISABLED": "true",
    "EXTERNAL_FRONTEND_HOOKS_URLS": "", "N8N_DEFAULT_BINARY_DATA_MODE": "default",
}


def n8n_workflow(urls: list[str]) -> dict:
    """A webhook answering with the last node's output, then one HTTP Request node per step."""
    nodes = [{"id": "webhook", "name": "Webhook", "type": "n8n-nodes-base.webhook", "typeVersion": 2,
              "position": [0, 0], "webhookId": "bench-chain-3",
              "parameters": {"httpMethod": "POST", "path": "bench-chain-3", "responseMode": "lastNode",
                             "options": {}}}]
    connections = {}
    previous = "Webhook"
    for index, url in enumerate(urls):
        source = "$json.body.message" if index == 0 else "$json.message"
        name = f"Step {index}"
        nodes.append({"id": f"step{index}", "name": name, "type": "n8n-nodes-base.httpRequest",
                      "typeVersion": 4.2, "position": [220 * (index + 1), 0],
                      "parameters": {"method": "POST", "url": url, "sendBody": True, "specifyBody": "json",
                                     "jsonBody": f"={{{{ JSON.stringify({{ message: {source} }}) }}}}",
                                     "options": {}}})
        connections[previous] = {"main": [[{"node": name, "type": "main", "index": 0}]]}
        previous = name
    return {"id": WORKFLOW_ID, "name": "bench-chain-3", "active": False, "nodes": nodes,
            "connections": connections, "settings": {"executionOrder": "v1"}}


def run_n8n(stack: contextlib.ExitStack, urls: list[str]) -> dict:
    if not N8N_BIN.exists():
        return _skip("n8n", "not installed (python -m benchmarks.peers --install)")
    home = common.PEERS / "n8n-home"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir()
    port = common.free_port()
    env = {**N8N_ENV, "N8N_USER_FOLDER": str(home), "N8N_PORT": str(port)}
    definition = home / "workflow.json"
    definition.write_text(json.dumps([n8n_workflow(urls)]))
    for command in (["import:workflow", f"--input={definition}"], ["publish:workflow", f"--id={WORKFLOW_ID}"]):
        done = subprocess.run([str(N8N_BIN), *command], env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=180, cwd=home)
        if done.returncode != 0:
            return _skip("n8n", f"`n8n {command[0]}` failed: {(done.stderr or done.stdout).strip()[-600:]}")
    server = common.Process("n8n", [str(N8N_BIN), "start"], env=env, cwd=home)
    stack.callback(server.stop)
    hook = f"http://{common.LOCAL}:{port}/webhook/bench-chain-3"
    deadline = time.monotonic() + 120
    while True:
        if not server.alive():
            return _skip("n8n", f"n8n exited:\n{server.tail()}")
        try:
            if requests.post(hook, json=MESSAGE, timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            return _skip("n8n", f"the webhook did not answer within 120 s:\n{server.tail()}")
        time.sleep(0.5)
    return measure_http(hook, 200)


def measure_http(url: str, expect: int = 201) -> dict:
    session = requests.Session()
    sequential = common.summary(common.sequential(lambda: common.post_ok(session, url, MESSAGE, expect)))
    rate, latencies, errors = common.concurrent(common.poster(url, MESSAGE, expect), CLIENTS, 400)
    return {"sequential": sequential, "concurrent": {"clients": CLIENTS, "events_per_s": round(rate, 1),
                                                     "errors": errors, **common.summary(latencies)}}


def run() -> dict:
    results: dict = {}
    with contextlib.ExitStack() as stack:
        echo = common.start_echo(stack)
        urls = common.chain_urls(echo, STEPS)
        relay = common.start_relay(stack, {f"chain-{STEPS}": urls})
        session = requests.Session()
        direct = common.summary(common.sequential(lambda: common.direct_chain(session, urls)))
        rate, latencies, errors = common.concurrent(common.chainer(urls), CLIENTS, 400)
        results["direct"] = {"sequential": direct, "concurrent": {"clients": CLIENTS, "events_per_s": round(rate, 1),
                                                                  "errors": errors, **common.summary(latencies)}}
        results["relay"] = measure_http(f"{relay}/e/chain-{STEPS}")
        with contextlib.ExitStack() as inner:
            api, _ = common.start_machinery(inner, name="machinery-peers")
            workflow = common.http_register(api, echo, STEPS)
            results["machinery"] = measure_http(f"{api}/e/{workflow}")
        for name, runner in (("celery", run_celery), ("prefect", run_prefect), ("n8n", run_n8n)):
            # Each peer's processes stop before the next peer starts, so no two share the CPUs.
            with contextlib.ExitStack() as peer_stack:
                try:
                    results[name] = runner(peer_stack, urls)
                except Exception as error:  # a peer failing is reported, never fatal
                    results[name] = _skip(name, f"{error.__class__.__name__}: {error}")
    rows = []
    relay = results["relay"]
    for name in ("direct", "relay", "machinery", "celery", "prefect", "n8n"):
        entry = results[name]
        if "skipped" in entry:
            rows.append([name, None, None, None, None, None, entry["skipped"].splitlines()[0][:80]])
            continue
        seq, load = entry["sequential"], entry["concurrent"]
        rows.append([name, seq["median_ms"], seq["p99_ms"], common.ratio(seq["median_ms"],
                                                                          relay["sequential"]["median_ms"]),
                     load["events_per_s"], load["p99_ms"], f"{load['errors']} errors"])
    text = common.table(
        f"Peers: the same 3-step HTTP chain (1 client: latency; {CLIENTS} clients: throughput)",
        ["system", "median ms", "p99 ms", "median ÷ relay", f"events/s ({CLIENTS} clients)",
         f"p99 ms ({CLIENTS} clients)", "note"], rows)
    common.save("peers", {"results": results, "table": text})
    return results


if __name__ == "__main__":
    if "--install" in sys.argv[1:]:
        install()
    else:
        run()
