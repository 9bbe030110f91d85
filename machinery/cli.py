"""The `machinery` command: serve, worker, init-db, apply, send, import-openapi, demo."""

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
    "orders": "orders", "words": "words",
}
# Services the `orders` example app also serves (its other REST endpoints), each with a definition of its own.
ORDERS_API_SERVICES = ("fraud-check", "reserve", "notify")
ORDERS_SECRET = "orders_token"  # the secret the `orders` example's definition names in its Authorization header


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
    if "services" in definition or "steps" in definition:  # version 1, or a tree of steps
        return "workflow"
    return None


def read_definitions(paths: list[str]) -> list[tuple[str, dict, Path]]:
    """Every service and workflow definition in the files and folders given, services first."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files.extend(sorted(file for file in path.iterdir() if file.suffix in DEFINITION_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            _fail(f"no such file or folder: {name}")
    found = []
    for file in files:
        for definition in read_documents(file):
            kind = kind_of(definition)
            if kind:
                found.append((kind, definition, file))
    return sorted(found, key=lambda item: item[0] != "service")


DEFINITION_SUFFIXES = (".json", ".yaml", ".yml")


def read_documents(file: Path) -> list[Any]:
    """The documents of a JSON file, or of a YAML file (.yaml, .yml: several, separated by ---), read
    under the API's rules (no duplicate keys, 64-bit whole numbers, anchors and aliases bounded)."""
    from machinery.api.body import BadBody, parse_json, parse_yaml_documents

    try:
        raw = file.read_bytes()
    except OSError as error:
        _fail(f"{file}: cannot be read: {error.strerror}")
    try:
        if file.suffix in (".yaml", ".yml"):
            return parse_yaml_documents(raw)
        return [parse_json(raw)]
    except BadBody as error:
        _fail(f"{file}: {error.message}")
    return []


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
        documents = read_documents(Path(args.file))
        if len(documents) != 1:
            _fail(f"{args.file}: holds {len(documents)} documents; an event is one")
        body = documents[0]
    elif args.data:
        body = json.loads(args.data)
    else:
        body = json.load(sys.stdin)
    url = f"{args.api.rstrip('/')}/e/{args.workflow}" + ("?mode=async" if args.async_ else "")
    response = requests.post(url, json=body, timeout=args.timeout, headers=api_headers())
    print(json.dumps(response.json(), indent=2))
    return 0 if response.status_code < 400 else 1


def cmd_import_openapi(args) -> int:
    """POST the document (or its URL) to /services/import and print what became of each operation."""
    params = {key: value for key, value in (("prefix", args.prefix), ("base_url", args.base_url),
                                            ("only", args.only)) if value}
    if args.dry_run:
        params["dry_run"] = "true"
    url = f"{args.api.rstrip('/')}/services/import"
    if args.source.startswith(("http://", "https://")):
        # The API fetches it, under its MACHINERY_ALLOWED_HOSTS, so a relative server URL reads against it.
        response = requests.post(url, params=params, json={"url": args.source}, timeout=args.timeout,
                                 headers=api_headers())
    else:
        path = Path(args.source)
        if not path.is_file():
            _fail(f"no such file: {args.source}")
        raw = path.read_bytes()
        as_json = path.suffix == ".json" or (path.suffix not in (".yaml", ".yml") and raw.lstrip()[:1] == b"{")
        content_type = "application/json" if as_json else "application/yaml"
        response = requests.post(url, params=params, data=raw, timeout=args.timeout,
                                 headers={**api_headers(), "Content-Type": content_type})
    try:
        report = response.json()
    except ValueError:
        _fail(f"the API answered HTTP {response.status_code} without JSON")
    if response.status_code >= 400:
        print(f"machinery: HTTP {response.status_code}: {report.get('message', report)}", file=sys.stderr)
        return 1
    print(print_import_report(report, args.api))
    return 1 if report.get("counts", {}).get("refused") else 0


def print_import_report(report: dict, api: str) -> str:
    """The import's report as lines: one per operation, its warnings, then the secrets to register."""
    lines = [f"{report.get('title') or 'OpenAPI document'} {report.get('version', '')} "
             f"(OpenAPI {report.get('openapi')}){' -- dry run, nothing stored' if report.get('dry_run') else ''}"]
    for item in report.get("services", []):
        name = item.get("name") or "-"
        lines.append(f"  {item['outcome']:<14} {name:<32} {item['operation']}")
        if item.get("reason"):
            lines.append(f"      why: {item['reason']}")
        lines.extend(f"      warning: {warning}" for warning in item.get("warnings", []))
    counts = ", ".join(f"{count} {outcome}" for outcome, count in report.get("counts", {}).items())
    lines.append(f"{counts or 'no operations'}")
    for secret in report.get("secrets", []):
        lines.append(f"secret {secret['name']}: {secret['holds']}; register it with\n"
                     f"  curl -X PUT {api.rstrip('/')}/secrets/{secret['name']} -H 'Content-Type: application/json' "
                     f"-d '{{\"value\": \"...\"}}'   (or set MACHINERY_SECRET_{secret['name'].upper()})")
    return "\n".join(lines)


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
    from machinery.rollups import Recorder, RollupObserver

    rollups = Recorder(store)
    executor = Executor(store, config, observer=RollupObserver(metrics.MetricsObserver(), rollups))
    worker = Worker(store, executor, keeper, config, args.threads or config["WORKER_THREADS"])
    exporter = metrics.serve_worker_metrics(config["WORKER_METRICS_PORT"])
    stopping = threading.Event()

    def on_signal(signum, _frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    from machinery import collector

    collector.tune()
    worker.start()
    while not stopping.wait(0.5):
        pass
    worker.stop(args.grace)
    keeper.stop()
    executor.flow.stop()
    try:
        rollups.stop()
    except MachineryError as error:
        print(f"machinery: rollups: the last counts were not written: {error.message}", file=sys.stderr)
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
    apps = {name: _load_example(module) for name, module in EXAMPLE_SERVICES.items()}
    token = orders_token(apps["orders"])
    servers = {name: ServerThread(app).start() for name, app in apps.items()}
    api = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "MACHINERY_MONGO_URI": "mongomock://localhost/machinery"}
    process = subprocess.Popen(gunicorn_command(f"{args.host}:{args.port}", 1, 8), env=env)
    try:
        wait_for(f"{api}/healthcheck", process=process)
        addresses = {name: server.url for name, server in servers.items()}
        addresses.update({name: servers["orders"].url for name in ORDERS_API_SERVICES})
        for name, server in servers.items():
            print(f"example service {name:<13} {server.url}")
        register_orders_secret(api, token)
        if apply_definitions([str(EXAMPLES / "definitions")], api, addresses, quiet=False):
            _fail("the example definitions did not register")
        body = json.loads((EXAMPLES / "definitions" / "event-text.json").read_text())
        answer = requests.post(f"{api}/e/process-text", json=body, timeout=30)
        record = requests.get(f"{api}/events/{answer.json()['event_id']}", timeout=10).json()
        print(f"\nPOST /e/process-text -> {answer.status_code}")
        print(json.dumps(record, indent=2))
        print(f"\noutputs: {json.dumps(record['outputs'])}")
        orders = run_orders_example(api)
        trees = run_tree_examples(api)
        if args.once:
            return 0 if record["status"] == "completed" and orders["status"] == "completed" and all(
                tree["status"] == "completed" for tree in trees) else 1
        print(DEMO_HELP.format(api=api, orders=servers["orders"].url.rstrip("/")))
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


def orders_token(app) -> str:
    """The bearer token the `orders` example accepts: MACHINERY_SECRET_ORDERS_TOKEN's value, or one made now."""
    import secrets as random_secrets

    token = os.environ.get(f"MACHINERY_SECRET_{ORDERS_SECRET.upper()}") or random_secrets.token_urlsafe(24)
    app.config["ORDERS_TOKEN"] = token
    return token


def register_orders_secret(api: str, token: str) -> None:
    """Register the orders token as the secret `orders_token` (unless the API has it from its environment)."""
    if os.environ.get(f"MACHINERY_SECRET_{ORDERS_SECRET.upper()}"):
        print(f"secret {ORDERS_SECRET}: from MACHINERY_SECRET_{ORDERS_SECRET.upper()}")
        return
    response = requests.put(f"{api}/secrets/{ORDERS_SECRET}", json={"value": token}, timeout=10,
                            headers=api_headers())
    if response.status_code not in (200, 201):
        _fail(f"PUT /secrets/{ORDERS_SECRET} answered {response.status_code}: {response.text[:300]}")
    print(f"secret {ORDERS_SECRET}: registered with PUT /secrets/{ORDERS_SECRET} (a token made at start, "
          "never shown)")


def send_example(api: str, workflow: str, body: Any, timeout: float = 60) -> dict:
    """Send an example event (its body, or the name of a file of examples/definitions) to `workflow`
    and print what came back."""
    if isinstance(body, str):
        body = read_documents(EXAMPLES / "definitions" / body)[0]
    answer = requests.post(f"{api}/e/{workflow}", json=body, timeout=timeout, headers=api_headers())
    record = answer.json()
    print(f"\nPOST /e/{workflow} -> {answer.status_code} {record.get('status')}")
    print(f"outputs: {json.dumps(record.get('outputs'))}")
    if record.get("error"):
        print(f"error: {json.dumps(record['error'])}")
    return record


def run_orders_example(api: str) -> dict:
    """Send the orders example's event to `order-note` and print what came back."""
    return send_example(api, "order-note", "event-order.yaml", timeout=30)


TREE_EXAMPLES = (  # (workflow, event body): the examples with branches, maps and parallel steps
    ("word-shapes", {"message": "upper and reverse every word at once"}),
    ("order-fulfil", "event-order-big.yaml"),
)


def run_tree_examples(api: str) -> list[dict]:
    """Send the examples written as a tree of steps, printing what came back."""
    return [send_example(api, workflow, body) for workflow, body in TREE_EXAMPLES]


DEMO_HELP = """
Machinery is serving on {api} with the examples registered (embedded store). Try:

  curl -s -X POST {api}/e/process-text -H 'Content-Type: application/json' \\
       -d @examples/definitions/event-text.json
  curl -s -X POST '{api}/e/process-text?mode=async' -H 'Content-Type: application/json' \\
       -d '{{"message": "hello async world"}}'
  curl -s -X POST {api}/e/shout-async -H 'Content-Type: application/json' -d '{{"message": "called back"}}'
  curl -s -X POST {api}/e/order-note -H 'Content-Type: application/yaml' \\
       --data-binary @examples/definitions/event-order.yaml
  curl -s -X POST {api}/e/word-shapes -H 'Content-Type: application/json' -d '{{"message": "a map of parallel steps"}}'
  curl -s -X POST {api}/e/order-fulfil -H 'Content-Type: application/yaml' \\
       --data-binary @examples/definitions/event-order-big.yaml
  curl -s {api}/events/<event_id>/steps?node=hold      # the map's step records, a page at a time
  .venv/bin/machinery import-openapi examples/openapi/orders.yaml --base-url {orders} --dry-run
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
    apply.add_argument("-f", "--file", action="append", required=True,
                       help="a JSON or YAML file, or a folder of them")
    apply.add_argument("--api", default=DEFAULT_API, help=f"the API to register through (default {DEFAULT_API})")
    apply.add_argument("--direct", action="store_true", help="write to MACHINERY_MONGO_URI instead of an API")
    apply.add_argument("--address", action="append", metavar="NAME=URL", help="override a service's address")
    apply.set_defaults(handler=cmd_apply)

    send = commands.add_parser("send", help="send an event to a workflow")
    send.add_argument("workflow")
    send.add_argument("-f", "--file", help="a JSON or YAML file (envelope or bare data)")
    send.add_argument("-d", "--data", help="the JSON body inline")
    send.add_argument("--async", dest="async_", action="store_true", help="answer at once; workers run it")
    send.add_argument("--api", default=DEFAULT_API)
    send.add_argument("--timeout", type=float, default=60.0)
    send.set_defaults(handler=cmd_send)

    importing = commands.add_parser("import-openapi", help="register one service per operation of an OpenAPI "
                                                           "3.0 or 3.1 document (a file or a URL)")
    importing.add_argument("source", metavar="FILE|URL", help="a JSON or YAML file, or an http(s) URL the API fetches")
    importing.add_argument("--prefix", help="put before every service name")
    importing.add_argument("--base-url", help="the services' address, instead of the document's servers")
    importing.add_argument("--only", metavar="OPERATION_IDS", help="comma-separated operationIds to import")
    importing.add_argument("--dry-run", action="store_true", help="say what would happen; register nothing")
    importing.add_argument("--api", default=DEFAULT_API)
    importing.add_argument("--timeout", type=float, default=60.0)
    importing.set_defaults(handler=cmd_import_openapi)

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
