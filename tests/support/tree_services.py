"""Small services for the step tree's end-to-end tests: each counts its calls per Idempotency-Key.

POST /double {"n"} answers {"n": 2n}; ?delay=<s> sleeps first; ?fail=<n> answers 400 for that n.
POST /accept answers 202 and keeps the callback URL it was given (GET /callbacks lists them).
GET /counts answers {Idempotency-Key: calls}.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from flask import Flask, jsonify, request


def tree_services() -> Flask:
    app = Flask("tree-services")
    counts: Counter = Counter()
    callbacks: list[str] = []
    lock = threading.Lock()
    app.config["counts"] = counts

    def count() -> None:
        with lock:
            counts[request.headers.get("Idempotency-Key", "")] += 1

    @app.post("/double")
    def double():
        count()
        body = request.get_json()
        delay = float(request.args.get("delay", 0))
        if delay:
            time.sleep(delay)
        healed = app.config.get("healed")  # a test sets it to let a retry through
        if not healed and request.args.get("fail") is not None and str(body.get("n")) == request.args["fail"]:
            return jsonify(error=f"refusing {body['n']}"), 400
        return jsonify(n=body["n"] * 2)

    @app.post("/accept")
    def accept():
        count()
        with lock:
            callbacks.append(request.headers.get("X-Machinery-Callback", ""))
        return "", 202

    @app.get("/callbacks")
    def listed():
        with lock:
            return jsonify(list(callbacks))

    @app.get("/counts")
    def counted():
        with lock:
            return jsonify(dict(counts))

    return app
