"""The `slow-upper` example service: an async service that answers 202 and calls back with the uppercase text.

Its address may carry `?delay=S` (seconds before the callback, default 0.2) and `?mode=sleep`
(no callback: sleep S seconds, then answer 200 like `upper`: a slow synchronous step).
"""

import threading
import time

import requests
from common import load_definition, read_message
from flask import Flask, jsonify, request

app = Flask("slow-upper")
DEFINITION = load_definition("service-slow-upper.json")


def call_back(url: str, message: str, delay: float) -> None:
    time.sleep(delay)
    requests.post(url, json={"message": message.upper()}, timeout=10)


@app.post("/")
@app.post("/event")
def handle():
    message, error = read_message()
    if error:
        return error
    try:
        delay = float(request.args.get("delay", "0.2"))
    except ValueError:
        return jsonify({"code": 400, "status": "Bad Request", "message": "delay must be a number"}), 400
    if request.args.get("mode") == "sleep":
        time.sleep(delay)
        return jsonify({"message": message.upper()})
    callback = request.headers.get("X-Machinery-Callback")
    if not callback:
        return jsonify({"code": 400, "status": "Bad Request", "message": "no X-Machinery-Callback header"}), 400
    threading.Thread(target=call_back, args=(callback, message, delay), daemon=True).start()
    return jsonify({"accepted": True}), 202


@app.get("/healthcheck")
def healthcheck():
    return "", 204


@app.get("/infos")
def infos():
    return jsonify(DEFINITION)


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
