"""A small real server of the OpenAPI Initiative's petstore-expanded API (tests/fixtures/openapi), under /api."""

from __future__ import annotations

import itertools
import threading

from flask import Flask, jsonify, request


def petstore_app() -> Flask:
    """GET and POST /api/pets, GET and DELETE /api/pets/{id}, answering as the document says; every
    request it saw is kept in app.config["seen"] as (method, full path)."""
    app = Flask("petstore")
    pets: dict[int, dict] = {}
    ids = itertools.count(1)
    lock = threading.Lock()
    app.config["seen"] = []

    def error(code: int, message: str):
        return jsonify({"code": code, "message": message}), code

    @app.before_request
    def remember():
        app.config["seen"].append((request.method, request.full_path.rstrip("?")))

    @app.get("/api/pets")
    def find_pets():
        tags = request.args.getlist("tags")
        limit = request.args.get("limit", type=int)
        found = [pet for pet in pets.values() if not tags or pet.get("tag") in tags]
        return jsonify(found[:limit] if limit is not None else found)

    @app.post("/api/pets")
    def add_pet():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return error(400, "a NewPet needs a name")
        with lock:
            pet = {"id": next(ids), "name": body["name"], **({"tag": body["tag"]} if "tag" in body else {})}
            pets[pet["id"]] = pet
        return jsonify(pet)

    @app.get("/api/pets/<int:pet_id>")
    def find_pet(pet_id: int):
        pet = pets.get(pet_id)
        return jsonify(pet) if pet else error(404, f"no pet {pet_id}")

    @app.delete("/api/pets/<int:pet_id>")
    def delete_pet(pet_id: int):
        with lock:
            if pets.pop(pet_id, None) is None:
                return error(404, f"no pet {pet_id}")
        return "", 204

    return app
