"""The `orders` example service: a REST API of its own, not written for Machinery.

`GET /orders/{order_id}` answers `{"order": {"id", "customer_note", "total", "lines": [{"sku", "qty",
"price"}]}}`, and with `?expand=lines` each line also names its product. Every call needs
`Authorization: Bearer <token>`: the token is `app.config["ORDERS_TOKEN"]` (from the ORDERS_TOKEN
variable when run alone; `machinery demo` makes one at start and registers it as the secret
`orders_token`). An unknown order is a 404, a missing or wrong token a 401, both as JSON.
`GET /openapi.yaml` serves its OpenAPI document (examples/openapi/orders.yaml), without a token.

The rest of fulfilling an order, with the same token (what `order-fulfil` chains, with a branch,
a map and parallel steps):
- `POST /fraud-checks` `{"order_id", "total"}` answers `{"check": {"verdict": "clear" | "review", "score"}}`;
- `POST /reservations` `{"sku", "qty"}` answers 201 `{"reservation": {"id", "sku", "qty"}}`, 409 when
  the stock is short;
- `POST /notifications/{channel}` (`mail` or `sms`) `{"order_id", "text"}` answers 202
  `{"notification": {"id", "channel"}}`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from flask import Flask, Response, jsonify, request

DOCUMENT = Path(__file__).resolve().parent.parent / "openapi" / "orders.yaml"

PRODUCTS = {"SKU-1": "walnut desk", "SKU-2": "desk lamp", "SKU-3": "cable tray"}
ORDERS = {
    "A-1001": {"customer_note": "please leave it at the back door", "lines": [
        {"sku": "SKU-1", "qty": 1, "price": 249.0}, {"sku": "SKU-2", "qty": 2, "price": 19.5}]},
    "A-1002": {"customer_note": "gift wrap, no invoice in the box", "lines": [
        {"sku": "SKU-3", "qty": 4, "price": 7.25}]},
    "A-1003": {"customer_note": "office fit-out, deliver to reception", "lines": [
        {"sku": "SKU-1", "qty": 3, "price": 249.0}, {"sku": "SKU-2", "qty": 3, "price": 19.5},
        {"sku": "SKU-3", "qty": 10, "price": 7.25}]},
}
STOCK = {"SKU-1": 1000, "SKU-2": 1000, "SKU-3": 1000}
CHANNELS = ("mail", "sms")
RESERVED: dict[str, dict] = {}  # Idempotency-Key -> reservation

app = Flask("orders")
app.config["ORDERS_TOKEN"] = os.environ.get("ORDERS_TOKEN", "")


def error(status: int, message: str, headers: dict | None = None):
    return jsonify({"error": {"status": status, "message": message}}), status, headers or {}


def authorised() -> bool:
    expected = app.config["ORDERS_TOKEN"]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), expected.encode())


@app.get("/orders/<path:order_id>")
def get_order(order_id: str):
    if not authorised():
        return error(401, "a valid bearer token is required", {"WWW-Authenticate": 'Bearer realm="orders"'})
    expand = request.args.getlist("expand")
    if any(value != "lines" for value in expand):
        return error(400, "expand takes only 'lines'")
    order = ORDERS.get(order_id)
    if order is None:
        return error(404, f"no order {order_id!r}")
    lines = [{**line, **({"product": PRODUCTS[line["sku"]]} if expand else {})} for line in order["lines"]]
    total = round(sum(line["qty"] * line["price"] for line in order["lines"]), 2)
    return jsonify({"order": {"id": order_id, "customer_note": order["customer_note"], "total": total,
                              "lines": lines}})


def json_body(*required: str):
    """The request's JSON object, or an error reply naming what is missing."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return None, error(400, "send a JSON object")
    missing = [name for name in required if name not in body]
    if missing:
        return None, error(400, f"missing {', '.join(missing)}")
    return body, None


@app.post("/fraud-checks")
def fraud_check():
    if not authorised():
        return error(401, "a valid bearer token is required")
    body, problem = json_body("order_id", "total")
    if problem:
        return problem
    if not isinstance(body["total"], (int, float)) or isinstance(body["total"], bool):
        return error(400, "total must be a number")
    score = round(min(body["total"] / 10000, 1.0), 3)
    return jsonify({"check": {"verdict": "review" if score > 0.5 else "clear", "score": score}})


@app.post("/reservations")
def reserve():
    if not authorised():
        return error(401, "a valid bearer token is required")
    body, problem = json_body("sku", "qty")
    if problem:
        return problem
    sku, qty = body["sku"], body["qty"]
    if sku not in STOCK or not isinstance(qty, int) or isinstance(qty, bool) or qty < 1:
        return error(400, "sku must be a known product and qty a positive integer")
    # The same Idempotency-Key (the same step of the same event, called again) gets the same reservation.
    key = request.headers.get("Idempotency-Key") or os.urandom(8).hex()
    if key in RESERVED:
        return jsonify({"reservation": RESERVED[key]}), 200
    if STOCK[sku] < qty:
        return error(409, f"only {STOCK[sku]} of {sku} left")
    STOCK[sku] -= qty
    RESERVED[key] = {"id": f"R-{hashlib.sha256(key.encode()).hexdigest()[:10]}", "sku": sku, "qty": qty}
    return jsonify({"reservation": RESERVED[key]}), 201


@app.post("/notifications/<channel>")
def notify(channel: str):
    if not authorised():
        return error(401, "a valid bearer token is required")
    if channel not in CHANNELS:
        return error(404, f"no channel {channel!r}; channels: {', '.join(CHANNELS)}")
    body, problem = json_body("order_id", "text")
    if problem:
        return problem
    return jsonify({"notification": {"id": f"{channel}-{body['order_id']}", "channel": channel}}), 202


@app.get("/openapi.yaml")
def document():
    return Response(DOCUMENT.read_bytes(), content_type="application/yaml")


@app.get("/healthcheck")
def healthcheck():
    return "", 204


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
