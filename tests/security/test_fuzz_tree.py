"""A structure-aware fuzz of the step tree: random trees of every kind, and the examples mutated at
random, sent to the check, registered, run over the example services, read back and retried. No
request gets a server error (a failed step's 502 is an event's answer, not an error)."""

from __future__ import annotations

import copy
import json
import os
import random

import pytest

from machinery import cli
from machinery.app import create_app
from machinery.serving import ServerThread
from tests.conftest import DEFINITIONS

# Enough to reach every kind and most refusals in a few seconds; raise it locally to dig.
ROUNDS = int(os.environ.get("MACHINERY_FUZZ_TREES", "400"))
SEEDS = (11, 12)
ORDERS_TOKEN = "token-of-the-fuzzed-orders-0123"

ATOMS = [None, True, False, 0, -1, 1, 2 ** 63, -2 ** 63 - 1, 1.5, 1e308, "", "x", "a.b", "`1`", "@", "[*]",
         "&foo", "length(@)", "'str'", "\u0000", "é", "x" * 300, [], {}, [1], {"a": 1}, "total > `500`",
         "lines[*].sku", "items", "words", "message", "$x", "..", "not_null(x)", "`{}`", "`null`",
         {"$ref": "x"}, "257", 257, 0.0, "call", "map", "if", "parallel", "switch", "sleep", "workflow", "poll"]
KINDS = ["call", "if", "switch", "parallel", "map", "sleep", "workflow", "poll"]
SERVICES = ["orders", "fraud-check", "reserve", "notify", "upper", "reverse", "words", "space-counter", "nope"]
KEYS = ["if", "map", "call", "parallel", "steps", "then", "else", "collect", "as", "default", "cases", "until",
        "seconds", "in", "out", "max_concurrency", "id"]


class Trees:
    """Random step trees and random mutations of valid definitions, from one seeded generator."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def step(self, depth: int, ids: set) -> dict:
        rng = self.rng
        kind = "call" if depth > 3 else rng.choice(KINDS)
        step_id = rng.choice([f"s{len(ids)}", f"s{len(ids)}", rng.choice(sorted(ids) or ["dup"])])
        ids.add(step_id)
        if kind == "call":
            step = {"id": step_id, "call": rng.choice(SERVICES)}
            if rng.random() < .5:
                step["in"] = {rng.choice(["message", "sku", "qty", "order_id", "text", "channel"]):
                              rng.choice(["message", "line.sku", "`1`", "'a'", "x", "words[0]", "length(message)"])}
            if rng.random() < .5:
                step["out"] = {rng.choice(["message", "total", "lines", "note", "reservation_id"]):
                               rng.choice(["message", "m2", "total", "lines", "words"])}
            return step
        if kind == "if":
            step = {"id": step_id, "if": rng.choice(["total > `500`", "message", "length(message) > `2`", "`true`",
                                                     "x == y", "message == 'a'", "words"]),
                    "then": self.block(depth + 1, ids)}
            if rng.random() < .5:
                step["else"] = self.block(depth + 1, ids)
            return step
        if kind == "switch":
            return {"id": step_id, rng.choice(["switch", "cases"]): [
                {"when": rng.choice(["`true`", "message == 'a'", "total"]), "steps": self.block(depth + 1, ids)}
                for _ in range(rng.randint(0, 3))], "default": self.block(depth + 1, ids)}
        if kind == "parallel":
            return {"id": step_id, "parallel": {f"b{i}": self.block(depth + 1, ids) for i in range(rng.randint(0, 3))}}
        if kind == "map":
            step = {"id": step_id, "map": rng.choice(["words", "lines", "message", "items", "`[1,2]`"]),
                    "as": rng.choice(["word", "line", "item", "message"]), "steps": self.block(depth + 1, ids)}
            if rng.random() < .7:
                step["max_concurrency"] = rng.choice([1, 8, 0, 257, -1, "8", 1.5])
            if rng.random() < .6:
                step["collect"] = {rng.choice(["out", "message", "loud"]): rng.choice(["message", "loud", "x"])}
            return step
        if kind == "sleep":
            return {"id": step_id, "sleep": rng.choice([{"seconds": 1}, {"seconds": -1}, {"until": "message"},
                                                       {"seconds": 1e12}, {}, 5, {"seconds": "1"}])}
        if kind == "workflow":
            child = rng.choice(["order-fulfil", "word-shapes", "process-text", "nope", "fz"])
            return {"id": step_id, "workflow": child, "in": {"message": "message"}}
        return {"id": step_id, "poll": rng.choice(SERVICES),
                "until": rng.choice(["status == 'done'", "message", "`true`"]),
                "every_s": rng.choice([1, 0, -1, 3600]), "timeout_s": rng.choice([10, 0, 1e9])}

    def block(self, depth: int, ids: set) -> list:
        return [self.step(depth, ids) for _ in range(self.rng.randint(0, 3))]

    def mutate(self, value, chance: float):
        rng = self.rng
        if rng.random() < chance:
            return rng.choice(ATOMS) if rng.random() < .8 else self.step(2, set())
        if isinstance(value, dict):
            value = dict(value)
            for key in list(value):
                draw = rng.random()
                if draw < .05:
                    del value[key]
                elif draw < .08:
                    value[key + "x"] = value[key]
                else:
                    value[key] = self.mutate(value[key], chance)
            if rng.random() < .03:
                value[rng.choice(KEYS)] = rng.choice(ATOMS)
            return value
        if isinstance(value, list):
            value = [self.mutate(item, chance) for item in value]
            if value and rng.random() < .05:
                value.append(copy.deepcopy(rng.choice(value)))
            return value
        return value

    def definition(self, workflows: list[dict]) -> dict:
        rng = self.rng
        if rng.random() < .55:  # an example, most often a little changed: mostly refused, sometimes still valid
            return self.mutate(copy.deepcopy(rng.choice(workflows)), rng.choice([0.005, 0.01, 0.02, 0.05, 0.15]))
        tree = {"name": rng.choice(["fz", "fz2", "fz3"]), "inputs": [{"name": "message", "type": "string"}],
                "steps": self.block(0, set())}
        if rng.random() < .5:
            tree["outputs"] = [{"name": rng.choice(["message", "m2", "out", "loud"]),
                                "type": rng.choice(["string", "any", {"type": "array", "items": "string"}, "int"])}]
        return self.mutate(tree, 0.05) if rng.random() < .3 else tree


@pytest.fixture(scope="module")
def fuzzed(example_services):
    orders_app = cli._load_example("orders")
    orders_app.config["ORDERS_TOKEN"] = ORDERS_TOKEN
    orders = ServerThread(orders_app).start()
    # Each example service at its own server, as the demo registers them, the orders API's too.
    addresses = {**example_services, **{name: orders.url for name in ("orders", *cli.ORDERS_API_SERVICES)}}
    app = create_app({"MONGO_URI": "mongomock://localhost/machinery-fuzz-tree", "EMBEDDED_WORKERS": 0,
                      "LOG_LEVEL": "critical"})
    client = app.test_client()
    assert client.put("/secrets/orders_token", json={"value": ORDERS_TOKEN}).status_code in (200, 201)
    workflows = []
    for kind, definition, _ in cli.read_definitions([str(DEFINITIONS)]):
        if "slow-upper" in (definition.get("name"), *definition.get("services", ())):
            continue  # it calls back from a thread of its own, at an address the test client does not serve
        if kind == "service":
            definition = {**cli.with_addresses(definition, addresses), "retry": {"max_attempts": 1, "backoff_s": 0}}
            assert client.post("/services", json=definition).status_code in (200, 201)
        else:
            workflows.append(definition)
            assert client.post("/workflows", json=definition).status_code in (200, 201)
    try:
        yield client, workflows
    finally:
        app.extensions["machinery"].close(grace_s=2)
        orders.stop()


@pytest.mark.parametrize("seed", SEEDS)
def test_random_and_mutated_trees_never_get_a_server_error(fuzzed, seed):
    client, workflows = fuzzed
    trees = Trees(seed)
    answered: dict = {}
    problems = []

    def note(what: str, reply, allowed=()) -> None:
        answered[reply.status_code] = answered.get(reply.status_code, 0) + 1
        if reply.status_code >= 500 and reply.status_code not in allowed:
            problems.append(f"{what} -> {reply.status_code} {reply.get_data(as_text=True)[:300]}")

    for _ in range(ROUNDS):
        # GIVEN a random tree, or an example mutated at random
        definition = trees.definition(workflows)
        body = json.dumps(definition)
        # WHEN it is checked or registered
        path = trees.rng.choice(["/workflows/check", "/workflows/check", "/workflows"])
        reply = client.post(path, data=body, content_type="application/json")
        note(f"POST {path} {body[:1500]}", reply)
        if path != "/workflows" or reply.status_code not in (200, 201):
            continue
        # AND, registered, it runs, is read back and is retried
        name = definition["name"]
        for data in ({"message": "hello fuzzed world"}, {"order_id": "A-1003"}, {}):
            sent = client.post(f"/e/{name}", json=data)
            note(f"POST /e/{name} {data} for {body[:1500]}", sent, allowed=(502,))
            if sent.status_code not in (200, 201, 202, 502):
                continue
            event_id = sent.get_json()["event_id"]
            for read in (f"/events/{event_id}", f"/events/{event_id}/steps", f"/ui/events/{event_id}"):
                note(f"GET {read} for {body[:1500]}", client.get(read))
            retried = client.post(f"/events/{event_id}/retry", json=trees.rng.choice([
                {}, {"from_step": trees.rng.choice(["order", "reserve", "s0", "s1", "nope"])},
                {"from_step": "reserve", "item": trees.rng.choice([0, 1, 42, -1])}]))
            note(f"POST /events/{event_id}/retry for {body[:1500]}", retried, allowed=(502,))
        for read in (f"/workflows/{name}/graph", f"/workflows/{name}/graph?format=mermaid", f"/ui/workflows/{name}"):
            note(f"GET {read} for {body[:1500]}", client.get(read))
    # THEN nothing got a server error, and the fuzz reached both refusals and runs
    assert not problems, "\n".join(problems[:5])
    assert answered.get(422, 0) > ROUNDS // 4 and (answered.get(200, 0) + answered.get(201, 0)) > 10, answered
