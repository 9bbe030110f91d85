"""A service that watches how it is called: how many calls are in flight at once, when each came, and,
when told to be down, answers 503 (a retryable failure) to every call."""

from __future__ import annotations

import threading
import time

from flask import Flask, jsonify, request


class Watch:
    """What the service saw: the most calls in flight at once, and the arrival time of every call."""

    def __init__(self):
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: list[float] = []  # time.monotonic() of each call
        self.down = False
        self.latency_s = 0.0

    def calls(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def most_in_any(self, window_s: float) -> int:
        """The most calls that arrived within any `window_s`."""
        with self.lock:
            times = sorted(self.arrivals)
        most, start = 0, 0
        for end, when in enumerate(times):
            while when - times[start] > window_s:
                start += 1
            most = max(most, end - start + 1)
        return most


def flow_service(watch: Watch) -> Flask:
    """POST /call answers {"message": <upper case>} after the watch's latency (or ?ms=), counting what is in
    flight; 503 while the watch says down."""
    app = Flask("flow-watched")

    @app.post("/call")
    def call():
        delay = float(request.args.get("ms", 0)) / 1000 or watch.latency_s  # read first: a test may change it
        with watch.lock:
            watch.arrivals.append(time.monotonic())
            watch.in_flight += 1
            watch.max_in_flight = max(watch.max_in_flight, watch.in_flight)
        try:
            if delay:
                time.sleep(delay)
            if watch.down:
                return "down", 503
            body = request.get_json(silent=True) or {}
            return jsonify({"message": str(body.get("message", "")).upper()})
        finally:
            with watch.lock:
                watch.in_flight -= 1

    return app
