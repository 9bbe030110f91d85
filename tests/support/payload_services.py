"""Services for the large-payload tests, served on 127.0.0.1; each refuses a body holding a reference.

POST /pass echoes its JSON body as it came (so a value goes through byte for byte).
POST /grow {"seed"} answers {"seed": <MiB given by ?mib= of text, distinct per step>}.
POST /stream answers as /grow does, in pieces, with no Content-Length.
POST /piece {"i"} answers {"blob": <?kib= KiB of text>, "i": i}.
POST /accept answers 202 and keeps its callback URL (GET /callbacks lists them).
GET /seen answers the largest body received and whether any held "$ref".
"""

from __future__ import annotations

import json
import threading

from flask import Flask, Response, jsonify, request


def payload_services() -> Flask:
    app = Flask("payload-services")
    lock = threading.Lock()
    seen = {"largest": 0, "refs": 0, "calls": 0}
    callbacks: list[str] = []

    def body() -> bytes:
        data = request.get_data()
        with lock:
            seen["calls"] += 1
            seen["largest"] = max(seen["largest"], len(data))
            if b'"$ref"' in data:
                seen["refs"] += 1
        return data

    @app.post("/pass")
    def passed():
        return Response(body(), mimetype="application/json")

    @app.post("/grow")
    def grow():
        json.loads(body())
        size = int(float(request.args.get("mib", "5")) * 1024 * 1024)
        step = request.headers.get("X-Machinery-Step", "?")
        return jsonify(seed=f"step {step}:" + "g" * size)

    @app.post("/stream")
    def stream():
        """{"seed": ?mib= MiB of text} sent in 64 KiB pieces with no Content-Length (read to the close)."""
        body()
        size = int(float(request.args.get("mib", "3")) * 1024 * 1024)
        piece = "s" * (64 * 1024)

        def pieces():
            yield b'{"seed": "'
            for _ in range(size // len(piece)):
                yield piece.encode()
            yield b'"}'
        return Response(pieces(), mimetype="application/json")

    @app.post("/piece")
    def piece():
        given = json.loads(body())
        size = int(request.args.get("kib", "100")) * 1024
        return jsonify(blob=str(given["i"]).rjust(8, "0") + "p" * size, i=given["i"])

    @app.post("/accept")
    def accept():
        body()
        with lock:
            callbacks.append(request.headers.get("X-Machinery-Callback", ""))
        return "", 202

    @app.get("/callbacks")
    def listed():
        with lock:
            return jsonify(list(callbacks))

    @app.get("/seen")
    def report():
        with lock:
            return jsonify(seen)

    return app
