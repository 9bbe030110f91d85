"""The `machinery` command: serve, worker, init-db, apply, send, demo."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from machinery.config import is_embedded, load_config
from machinery.exceptions import ConfigError, MachineryError

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
DEFAULT_API = os.environ.get("MACHINERY_API_URL", "http://127.0.0.1:5000")


def api_headers() -> dict:
    """The API key of MACHINERY_API_KEY, when set, for an API that requires one."""
    key = os.environ.get("MACHINERY_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}
EXAMPLE_SERVICES = {  # service name -> module in examples/services
    "upper": "upper", "reverse": "reverse", "space-counter": "space_counter", "slow-upper": "slow_upper",
}


def _fail(message: str) -> None:
    print(f"machinery: {message}", file=sys.stderr)
    raise SystemExit(2)


# -- definitions ----------------------------------------------------------------------------

def kind_of(definition: Any) -> str | None:
    """'service', 'workflow', or None for anything else (an event, say)."""
    if not isinstance(definition, dict):
        return None
    if "address" in definition:
        return "service"
    if "services" in definition:
        return "workflow"
    return None


def read_definitions(paths: list[str]) -> list[tuple[str, dict, Path]]:
    """Every service and workflow definition in the files and folders given, services first."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files.extend(sorted(path.glob("*.json")))
        elif path.is_file():
            files.append(path)
        else:
            _fail(f"no such file or folder: {name}")
    found = []
    for file in files:
        try:
            definition = json.loads(file.read_text())
        except ValueError as error:
            _fail(f"{file}: not JSON: {error}")
        kind = kind_of(definition)
        if kind:
            found.append((kind, definition, file))
    return sorted(found, key=lambda item: item[0] != "service")


def with_addresses(definition: dict, addresses: dict[str, str]) -> dict:
    if definition.get("name") in addresses and "address" in definition:
        return {**definition, "address": addresses[definition["name"]]}
    return definition


def apply_definitions(paths: list[str], api: str | None, addresses: dict[str, str],
                      quiet: bool = False) -> int:
    """Register definitions through the API at `api`, or straight into the store when api is None."""
    failures = 0
    store = None
    if api is None:
        from machinery.store import Store

        config = load_config()
        store = Store.connect(config["MONGO_URI"], config["MONGO_TIMEOUT_MS"])
        store.ensure_indexes(config["EVENT_TTL_DAYS"])
    for kind, definition, file in read_definitions(paths):
        definition = with_addresses(definition, addresses)
        if store is None:
            response = requests.post(f"{api.rstrip('/')}/{kind}s", json=definition, timeout=30,
                                     headers=api_headers())
            ok, detail = response.status_code in (200, 201), response.json()
            outcome = {201: "registered", 200: "replaced"}.get(response.status_code, f"HTTP {response.status_code}")
        else:
            ok, outcome, detail = _apply_direct(store, kind, definition)
        failures += not ok
        if not quiet or not ok:
            print(f"{file.name}: {kind} {definition.get('name')!r} {outcome}"
                  + ("" if ok else f": {detail.get('message', detail)}"))
    return failures


def _apply_direct(store, kind: str, definition: dict) -> tuple[bool, str, Any]:
    from marshmallow import ValidationError

    from machinery import registry
    from machinery.schemas import service_schema, workflow_schema

    schema, register = ((service_schema, registry.register_service) if kind == "service"
                        else (workflow_schema, registry.register_workflow))
    try:
        _, created = register(store, schema.load(definition))
    except ValidationError as error:
        return False, "rejected", {"message": json.dumps(error.messages)}
    except MachineryError as error:
        return False, "rejected", {"message": error.message}
    return True, "registered" if created else "replaced", None


# -- commands -------------------------------------------------------------------------------

def cmd_apply(args) -> int:
    addresses = dict(item.split("=", 1) for item in args.address or [])
    failures = apply_definitions(args.file, None if args.direct else args.api, addresses)
    return 1 if failures else 0


def cmd_init_db(args) -> int:
    from machinery.exceptions import StoreRefused
    from machinery.store import Store

    config = load_config()
    store = Store.connect(config["MONGO_URI"], config["MONGO_TIMEOUT_MS"])
    deadline = time.monotonic() + args.wait
    while True:
        try:
            # No deadline on the builds themselves: on a large collection one takes what it takes.
            store.ensure_indexes(config["EVENT_TTL_DAYS"], build_timeout_s=None)
            break
        except StoreRefused as error:  # waiting will not help: say what to fix, now
            _fail(f"the store refused the indexes: {error.message}")
        except MachineryError as error:
            if time.monotonic() > deadline:
                _fail(f"the store did not answer: {error.message}")
            time.sleep(1)
    print("indexes ensured")
    return 0


def cmd_send(args) -> int:
    if args.file:
        body = json.loads(Path(args.file).read_text())
    elif args.data:
        body = json.loads(args.data)
    else:
        body = json.load(sys.stdin)
    url = f"{args.api.rstrip('/')}/e/{args.workflow}" + ("?mode=async" if args.async_ else "")
    response = requests.post(url, json=body, timeout=args.timeout, headers=api_headers())
    print(json.dumps(response.json(), indent=2))
    return 0 if response.status_code < 400 else 1


def cmd_worker(args) -> int:
    from machinery.logs import configure_logging
    from machinery.runtime.executor import Executor
    from machinery.runtime.worker import LeaseKeeper, Worker
    from machinery.store import Store

    config = load_config()
    configure_logging(config["LOG_LEVEL"], config["LOG_FORMAT"])
    store = Store.connect(config["MONGO_URI"], config["MONGO_TIMEOUT_MS"])
    keeper = LeaseKeeper(store, config["LEASE_S"])
    from machinery import metrics

    executor = Executor(store, config, observer=metrics.MetricsObserver())
    worker = Worker(store, executor, keeper, config, args.threads or config["WORKER_THREADS"])
    exporter = metrics.serve_worker_metrics(config["WORKER_METRICS_PORT"])
    stopping = threading.Event()

    def on_signal(signum, _frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.start()
    while not stopping.wait(0.5):
        pass
    worker.stop(args.grace)
    keeper.stop()
    if exporter is not None:
        exporter.shutdown()
        exporter.server_close()
    return 0


def gunicorn_command(bind: str, workers: int | None = None, threads: int | None = None) -> list[str]:
    command = [sys.executable, "-m", "gunicorn", "--config", "python:machinery.gunicorn_conf", "--bind", bind]
    if workers:
        command += ["--workers", str(workers)]
    if threads:
        command += ["--threads", str(threads)]
    return [*command, "machinery.app:create_app()"]


def cmd_serve(args) -> int:
    config = load_config()  # a bad MACHINERY_* value stops here, naming the variable
    from machinery import gunicorn_conf

    workers = args.workers or gunicorn_conf.workers
    if is_embedded(config["MONGO_URI"]) and workers > 1:
        if not args.split_embedded_store:
            _fail("the embedded store lives in one process: use --workers 1, or set MACHINERY_MONGO_URI "
                  "(--split-embedded-store gives each worker its own empty store, for tests of serving only)")
        print(f"machinery: WARNING: {workers} workers, each with its OWN embedded store: what one worker "
              "registers or runs, the others never see", file=sys.stderr)
    if workers > 1 and not os.environ.get(gunicorn_conf.MULTIPROC_ENV):
        # Each worker writes its metric samples here, so that a scrape of any worker sums them all.
        folder = tempfile.mkdtemp(prefix="machinery-metrics-")
        os.environ[gunicorn_conf.MULTIPROC_ENV] = folder
        os.environ[gunicorn_conf.OWNED_MULTIPROC_ENV] = folder
    command = gunicorn_command(args.bind, args.workers, args.threads)
    os.execv(command[0], command)
    return 0


def _load_example(module: str):
    folder = EXAMPLES / "services"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(f"machinery_example_{module}", folder / f"{module}.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded.app


def wait_for(url: str, seconds: float = 20.0, process: subprocess.Popen | None = None) -> None:
    from machinery.serving import wait_until_answering

    problem = wait_until_answering(url, seconds, running=lambda: process is None or process.poll() is None)
    if problem == "exited":
        _fail(f"the API exited with code {process.returncode} before answering")
    if problem:
        _fail(f"{url} did not answer within {seconds:g} s")


def cmd_demo(args) -> int:
    from machinery.serving import ServerThread

    if not (EXAMPLES / "definitions").is_dir():
        _fail(f"the examples are not at {EXAMPLES}: run the demo from a checkout of the repository")
    servers = {name: ServerThread(_load_example(module)).start() for name, module in EXAMPLE_SERVICES.items()}
    api = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "MACHINERY_MONGO_URI": "mongomock://localhost/machinery"}
    process = subprocess.Popen(gunicorn_command(f"{args.host}:{args.port}", 1, 8), env=env)
    try:
        wait_for(f"{api}/healthcheck", process=process)
        addresses = {name: server.url for name, server in servers.items()}
        for name, server in servers.items():
            print(f"example service {name:<13} {server.url}")
        if apply_definitions([str(EXAMPLES / "definitions")], api, addresses, quiet=False):
            _fail("the example definitions did not register")
        body = json.loads((EXAMPLES / "definitions" / "event-text.json").read_text())
        answer = requests.post(f"{api}/e/process-text", json=body, timeout=30)
        record = requests.get(f"{api}/events/{answer.json()['event_id']}", timeout=10).json()
        print(f"\nPOST /e/process-text -> {answer.status_code}")
        print(json.dumps(record, indent=2))
        print(f"\noutputs: {json.dumps(record['outputs'])}")
        if args.once:
            return 0 if record["status"] == "completed" else 1
        print(DEMO_HELP.format(api=api))
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        process.wait()
        return process.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for server in servers.values():
            server.stop()


DEMO_HELP = """
Machinery is serving on {api} with the examples registered (embedded store). Try:

  curl -s -X POST {api}/e/process-text -H 'Content-Type: application/json' \\
       -d @examples/definitions/event-text.json
  curl -s -X POST '{api}/e/process-text?mode=async' -H 'Content-Type: application/json' \\
       -d '{{"message": "hello async world"}}'
  curl -s -X POST {api}/e/shout-async -H 'Content-Type: application/json' -d '{{"message": "called back"}}'
  curl -s '{api}/events?workflow=process-text'
  curl -s {api}/workflows/process-text
  open {api}/ui/  (workflows as graphs, events as timelines)

Ctrl-C stops everything.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="machinery", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API under gunicorn")
    serve.add_argument("--bind", default=os.environ.get("MACHINERY_BIND", "0.0.0.0:5000"))
    serve.add_argument("--workers", type=int, help="gunicorn worker processes (default from gunicorn_conf)")
    serve.add_argument("--threads", type=int, help="threads per worker (default from gunicorn_conf)")
    serve.add_argument("--split-embedded-store", action="store_true",
                       help="allow --workers > 1 on the embedded store, each worker with its own (tests only)")
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser("worker", help="claim and run async events until SIGTERM")
    worker.add_argument("--threads", type=int, help="events run at once (default MACHINERY_WORKER_THREADS)")
    worker.add_argument("--grace", type=float, default=20.0,
                        help="seconds to let running events finish on SIGTERM before releasing them")
    worker.set_defaults(handler=cmd_worker)

    init_db = commands.add_parser("init-db", help="create the store's indexes")
    init_db.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the store to answer")
    init_db.set_defaults(handler=cmd_init_db)

    apply = commands.add_parser("apply", help="register the service and workflow definitions in files or folders")
    apply.add_argument("-f", "--file", action="append", required=True, help="a JSON file or a folder of them")
    apply.add_argument("--api", default=DEFAULT_API, help=f"the API to register through (default {DEFAULT_API})")
    apply.add_argument("--direct", action="store_true", help="write to MACHINERY_MONGO_URI instead of an API")
    apply.add_argument("--address", action="append", metavar="NAME=URL", help="override a service's address")
    apply.set_defaults(handler=cmd_apply)

    send = commands.add_parser("send", help="send an event to a workflow")
    send.add_argument("workflow")
    send.add_argument("-f", "--file", help="a JSON file (envelope or bare data)")
    send.add_argument("-d", "--data", help="the JSON body inline")
    send.add_argument("--async", dest="async_", action="store_true", help="answer at once; workers run it")
    send.add_argument("--api", default=DEFAULT_API)
    send.add_argument("--timeout", type=float, default=60.0)
    send.set_defaults(handler=cmd_send)

    demo = commands.add_parser("demo", help="start the example services and the API, register and run the example")
    demo.add_argument("--port", type=int, default=5000)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--once", action="store_true", help="exit after printing the example event")
    demo.set_defaults(handler=cmd_demo)

    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as error:
        _fail(error.message)
    except requests.ConnectionError as error:
        _fail(f"could not reach the API: {error}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
