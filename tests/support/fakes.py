"""Real HTTP test services that misbehave on purpose, a server that hangs up, and a webhook receiver."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

from flask import Flask, jsonify, request


def faulty_service() -> Flask:
    """Routes that each fail in one way; every success answers {"message": <uppercase>}."""
    app = Flask("faulty")
    app.config.update(calls=Counter(), broken=True, callbacks=[])

    def ok():
        body = request.get_json(silent=True) or {}
        return jsonify({"message": str(body.get("message", "")).upper()})

    def count():
        key = (request.path, request.headers.get("Idempotency-Key"))
        app.config["calls"][key] += 1
        return app.config["calls"][key]

    @app.post("/ok")
    def always_ok():
        count()
        return ok()

    @app.post("/flaky")
    def flaky():
        return ("boom", 500) if count() == 1 else ok()

    @app.post("/always-500")
    def always_500():
        count()
        return "down", 500

    @app.post("/hang")
    def hang():
        count()
        time.sleep(float(request.args.get("s", "3")))
        return ok()

    @app.post("/not-json")
    def not_json():
        count()
        return "<html>fine</html>", 200, {"Content-Type": "text/html"}

    @app.post("/bad-request")
    def bad_request():
        count()
        return jsonify({"error": "no"}), 400

    @app.post("/toggle")
    def toggle():
        count()
        return ("still broken", 503) if app.config["broken"] else ok()

    @app.post("/async")
    def async_step():
        """Answer 202 and keep the callback URL for the test to use."""
        count()
        app.config["callbacks"].append(request.headers.get("X-Machinery-Callback"))
        return jsonify({"accepted": True}), 202

    return app


class HangUpServer:
    """Accepts connections and closes them at once, before any reply."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _run(self):
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            try:
                connection.recv(65536)
            except OSError:
                pass
            connection.close()

    def start(self) -> HangUpServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def webhook_receiver() -> Flask:
    """Records every POST (body and headers); answers with the status in app.config['status']."""
    app = Flask("receiver")
    app.config.update(received=[], status=200)

    @app.post("/hook")
    def hook():
        app.config["received"].append({"body": request.get_data(), "headers": dict(request.headers)})
        return "", app.config["status"]

    return app
