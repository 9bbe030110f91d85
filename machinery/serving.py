"""Serve a WSGI app from a background thread (example services, tests) and find free ports."""

from __future__ import annotations

import logging
import socket
import threading
import time

from werkzeug.serving import WSGIRequestHandler, make_server

LOG = logging.getLogger(__name__)


class QuietHandler(WSGIRequestHandler):
    """Keep-alive HTTP/1.1 without Nagle's delay, logging requests at debug level only."""

    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_request(self, code="-", size="-"):
        LOG.debug("%s %s %s", self.command, self.path, code)


def wait_until_answering(url: str, seconds: float, running=lambda: True) -> str | None:
    """Poll GET `url` until it answers with a status below 500. None when it did; otherwise why not:
    "exited" once `running()` turns false, "timed out" after `seconds`."""
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not running():
            return "exited"
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return None
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return "timed out"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ServerThread:
    """A threaded WSGI server on host:port (0: a free port), stopped by stop()."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.server = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
        self.host, self.port = host, self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       name=f"serve-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> ServerThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
