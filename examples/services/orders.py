"""The `orders` example service: a REST API of its own, not written for Machinery.

`GET /orders/{order_id}` answers `{"order": {"id", "customer_note", "total", "lines": [{"sku", "qty",
"price"}]}}`, and with `?expand=lines` each line also names its product. Every call needs
`Authorization: Bearer <token>`: the token is `app.config["ORDERS_TOKEN"]` (from the ORDERS_TOKEN
variable when run alone; `machinery demo` makes one at start and registers it as the secret
`orders_token`). An unknown order is a 404, a missing or wrong token a 401, both as JSON.
`GET /openapi.yaml` serves its OpenAPI document (examples/openapi/orders.yaml), without a token.
"""

from __future__ import annotations

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
}

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


@app.get("/openapi.yaml")
def document():
    return Response(DOCUMENT.read_bytes(), content_type="application/yaml")


@app.get("/healthcheck")
def healthcheck():
    return "", 204


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
