"""The trivial services and the bare relay the benchmarks serve under gunicorn.

`echo` answers {"message": ...} (202 with no body under /accept); `sleepy` is `echo` after
BENCH_SLEEP_MS (50) of sleep; `watched` is `sleepy` counting its calls in flight (GET /stats);
`rest` answers GET /orders/<id> with a nested order; `relay_app()` is
the bare relay: a minimal Flask app that receives an event and makes the same calls as Machinery,
storing nothing. Its chains come from BENCH_RELAY_CHAINS: {"workflow": ["url", ...]}; a chain given
as {"get": "<base URL>", "token": "..."} instead makes the REST-style call of `rest` (GET
/orders/<order_id> with two headers, the order's total taken from the reply). BENCH_RELAY_CLIENT picks how it
calls: "requests" (a pooled requests.Session per thread, what a minimal Flask relay would use) or
"lean" (Machinery's own client, `machinery.runtime.transport`), to tell the client's share from the rest.
"""

from __future__ import annotations

import json
import os
import threading
import time
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter


def echo(environ, start_response):
    """A trivial service: POST {"message": m} -> 200 {"message": m}; under /accept -> 202."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    if environ.get("PATH_INFO", "").startswith("/accept"):
        start_response("202 Accepted", [("Content-Length", "0")])
        return [b""]
    try:
        message = json.loads(raw).get("message", "")
    except ValueError:
        message = ""
    body = json.dumps({"message": message}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


SLEEP_S = float(os.environ.get("BENCH_SLEEP_MS", "50")) / 1000


def sleepy(environ, start_response):
    """A slow service: as `echo`, after sleeping SLEEP_S (the thread sleeps; gunicorn's other threads serve)."""
    time.sleep(SLEEP_S)
    return echo(environ, start_response)


_WATCH = {"in_flight": 0, "max_in_flight": 0, "calls": 0, "first": None, "last_end": None}
_WATCH_LOCK = threading.Lock()


def watched(environ, start_response):
    """`sleepy`, counting what is in flight: GET /stats -> {"in_flight", "max_in_flight", "calls", "first"
    (time.monotonic() of the first call), "last_end" (of the last reply)}."""
    if environ["REQUEST_METHOD"] == "GET":
        with _WATCH_LOCK:
            body = json.dumps(_WATCH).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    with _WATCH_LOCK:
        _WATCH["calls"] += 1
        _WATCH["in_flight"] += 1
        _WATCH["max_in_flight"] = max(_WATCH["max_in_flight"], _WATCH["in_flight"])
        if _WATCH["first"] is None:
            _WATCH["first"] = time.monotonic()
    try:
        return sleepy(environ, start_response)
    finally:
        with _WATCH_LOCK:
            _WATCH["in_flight"] -= 1
            _WATCH["last_end"] = time.monotonic()


def rest(environ, start_response):
    """A REST-style service: GET /orders/<id> -> 200 {"order": {"id", "total", "lines"}}; else as `echo`."""
    path = environ.get("PATH_INFO", "")
    if environ["REQUEST_METHOD"] != "GET" or not path.startswith("/orders/"):
        return echo(environ, start_response)
    order_id = path[len("/orders/"):]
    body = json.dumps({"order": {"id": order_id, "total": 12.5, "lines": [{"sku": "a-1", "qty": 2},
                                                                         {"sku": "b-2", "qty": 1}]}}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


_local = threading.local()


def pooled_session() -> requests.Session:
    """One keep-alive session per thread, as Machinery keeps."""
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_connections=16, pool_maxsize=16, max_retries=0))
        session.trust_env = False
        _local.session = session
    return session


def requests_call(url: str, body: dict) -> dict:
    reply = pooled_session().post(url, json=body, timeout=10)
    reply.raise_for_status()
    return reply.json()


def lean_call(url: str, body: dict) -> dict:
    from machinery.runtime.transport import thread_pool

    reply = thread_pool().post(url, json.dumps(body).encode(), {"Content-Type": "application/json"},
                               connect_timeout=5, read_timeout=10)
    if reply.status != 200:
        raise RuntimeError(f"{url} answered {reply.status}")
    return json.loads(reply.read(1 << 20))


def lean_get(base: str, order_id: str, tenant: str, token: str) -> float:
    """The REST-style call through Machinery's client: GET with a path parameter and two headers."""
    from machinery.runtime.transport import target, thread_pool

    scheme, host, port, path = target(base)
    headers = [("Accept", "application/json"), ("Authorization", f"Bearer {token}"), ("X-Tenant", tenant)]
    reply = thread_pool().send("GET", (scheme, host, port), f"{path.rstrip('/')}/orders/{quote(order_id, safe='')}",
                               None, headers, connect_timeout=5, read_timeout=10)
    if reply.status != 200:
        raise RuntimeError(f"{base} answered {reply.status}")
    return json.loads(reply.read(1 << 20))["order"]["total"]


def requests_get(base: str, order_id: str, tenant: str, token: str) -> float:
    reply = pooled_session().get(f"{base.rstrip('/')}/orders/{quote(order_id, safe='')}", timeout=10,
                                 headers={"Authorization": f"Bearer {token}", "X-Tenant": tenant})
    reply.raise_for_status()
    return reply.json()["order"]["total"]


def relay_app():
    """The bare relay: receive an event, call each service in order, answer 201; store nothing."""
    from flask import Flask, jsonify, request

    chains = json.loads(os.environ.get("BENCH_RELAY_CHAINS", "{}"))
    lean = os.environ.get("BENCH_RELAY_CLIENT", "requests") == "lean"
    call, get = (lean_call, lean_get) if lean else (requests_call, requests_get)
    app = Flask("relay")

    @app.post("/e/<workflow>")
    def relay(workflow):
        context = dict(request.get_json())
        chain = chains[workflow]
        if isinstance(chain, dict):
            total = get(chain["get"], context["order_id"], context["tenant"], chain["token"])
            return jsonify({"status": "completed", "outputs": {"total": total}}), 201
        for url in chain:
            context["message"] = call(url, {"message": context["message"]})["message"]
        return jsonify({"status": "completed", "outputs": {"message": context["message"]}}), 201

    return app
