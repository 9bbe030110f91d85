"""What every example service shares: a Flask app answering POST / and /event, /healthcheck and /infos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from flask import Flask, jsonify, request

DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"


def load_definition(filename: str) -> dict:
    return json.loads((DEFINITIONS / filename).read_text())


def bad_request(message: str):
    return jsonify({"code": 400, "status": "Bad Request", "message": message}), 400


def read_message():
    """The `message` string of a JSON body, or an error reply."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return None, bad_request("send a JSON object with a 'message' string")
    message = body.get("message")
    if not isinstance(message, str):
        return None, bad_request("'message' must be a string")
    return message, None


def text_service(name: str, definition_file: str, transform: Callable[[str], object]) -> Flask:
    """A service that reads `message` (a string) and answers {"message": transform(message)}."""
    app = Flask(name)
    definition = load_definition(definition_file)

    def handle():
        message, error = read_message()
        if error:
            return error
        return jsonify({"message": transform(message)})

    app.add_url_rule("/", "root", handle, methods=["POST"])
    app.add_url_rule("/event", "event", handle, methods=["POST"])
    app.add_url_rule("/healthcheck", "healthcheck", lambda: ("", 204))
    app.add_url_rule("/infos", "infos", lambda: jsonify(definition))
    return app
