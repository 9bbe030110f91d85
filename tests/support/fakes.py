"""Real HTTP test services that misbehave on purpose, a raw server that answers in hostile ways (huge,
redirecting, trickling, silent, hanging up), and a webhook receiver."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

from flask import Flask, jsonify, request

MAX_TRICKLE_S = 60.0  # a trickle ends by itself after this, even if nobody stops it


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




class HostileServer:
    """A raw HTTP/1.1 server; each connection is answered the way `mode` says.

    - "huge": 200 with a declared Content-Length of `size` bytes, all sent.
    - "huge-undeclared": 200 with no Content-Length, `size` bytes, then the connection is closed.
    - "redirect": 307 to `location`.
    - "trickle-body": 200 headers, then one byte of body every `interval` seconds, never finishing.
    - "trickle-headers": the status line and then one header byte every `interval` seconds.
    - "silent": reads the request and never answers.
    - "hang-up": reads the request and closes the connection without a word.
    - "keep-alive": answers every request on the connection with a small JSON reply, keeping it open.
    - "close-after-reply": answers one request as if keeping the connection, then closes it silently.
    - "hang-up-when-reused": answers the first request on a connection, and closes the connection
      without a word when a second request comes on it.
    - "short-body": declares a Content-Length of 100, sends 10 bytes of body, and closes.
    - "chunked": a JSON reply in chunks, then waits for the next request on the connection.
    """

    def __init__(self, mode: str, size: int = 50 * 1024 * 1024, location: str = "", interval: float = 0.05):
        self.mode, self.size, self.location, self.interval = mode, size, location, interval
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests = 0
        self.bytes_sent = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> HostileServer:
        self._accepter.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._accepter.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read_request(self, connection: socket.socket) -> bool:
        """Read one request; False when the client closed the connection first."""
        connection.settimeout(2)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = connection.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                return False
            body += chunk
        self.requests += 1
        return True

    def _send(self, connection: socket.socket, data: bytes) -> None:
        connection.sendall(data)
        self.bytes_sent += len(data)

    def _serve(self, connection: socket.socket) -> None:
        try:
            self._read_request(connection)
            connection.settimeout(5)
            getattr(self, "_" + self.mode.replace("-", "_"))(connection)
        except OSError:
            pass  # the client hung up: what a well-behaved caller does to us
        finally:
            connection.close()

    def _hang_up(self, connection) -> None:
        """Nothing: _serve closes the connection."""

    REPLY = b'{"message": "ok"}'

    def _keep_alive(self, connection) -> None:
        while not self._stop.is_set():
            self._send(connection, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: %d\r\n\r\n%s" % (len(self.REPLY), self.REPLY))
            if not self._read_request(connection):
                return

    def _close_after_reply(self, connection) -> None:
        self._send(connection, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(self.REPLY), self.REPLY))

    def _hang_up_when_reused(self, connection) -> None:
        self._close_after_reply(connection)
        self._read_request(connection)  # then _serve closes it

    def _short_body(self, connection) -> None:
        self._send(connection, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)

    def _chunked(self, connection) -> None:
        while not self._stop.is_set():
            halves = self.REPLY[:5], self.REPLY[5:]
            self._send(connection, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
                b"%x\r\n%s\r\n" % (len(half), half) for half in halves) + b"0\r\n\r\n")
            if not self._read_request(connection):
                return

    def _huge(self, connection, declared: bool = True) -> None:
        length = f"Content-Length: {self.size}\r\n" if declared else "Connection: close\r\n"
        self._send(connection, f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}\r\n".encode())
        block = b'{"message": "' + b"x" * (1024 * 1024)
        sent = 0
        while sent < self.size and not self._stop.is_set():
            piece = block[: self.size - sent]
            self._send(connection, piece)
            sent += len(piece)

    def _huge_undeclared(self, connection) -> None:
        self._huge(connection, declared=False)

    def _redirect(self, connection) -> None:
        self._send(connection, f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {self.location}\r\n"
                               "Content-Length: 0\r\n\r\n".encode())

    def _trickle(self, connection, first: bytes, drip: bytes) -> None:
        self._send(connection, first)
        deadline = time.monotonic() + MAX_TRICKLE_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._send(connection, drip)
            time.sleep(self.interval)

    def _trickle_body(self, connection) -> None:
        self._trickle(connection, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                  b"Connection: close\r\n\r\n{\"message\": \"", b"x")

    def _trickle_headers(self, connection) -> None:
        self._trickle(connection, b"HTTP/1.1 200 OK\r\nX-Slow: ", b"x")

    def _silent(self, connection) -> None:
        deadline = time.monotonic() + MAX_TRICKLE_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)


def webhook_receiver() -> Flask:
    """Records every POST (body and headers); answers with the status in app.config['status']."""
    app = Flask("receiver")
    app.config.update(received=[], status=200)

    @app.post("/hook")
    def hook():
        app.config["received"].append({"body": request.get_data(), "headers": dict(request.headers)})
        return "", app.config["status"]

    return app


def echo_service() -> Flask:
    """POST /echo answers the body it is sent, as it is; `calls` counts the calls by X-Machinery-Event."""
    app = Flask("echo")
    app.config.update(calls=Counter())

    @app.post("/echo")
    def echo():
        app.config["calls"][request.headers.get("X-Machinery-Event")] += 1
        return request.get_data(), 200, {"Content-Type": "application/json"}

    return app
