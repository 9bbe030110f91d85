"""Registering a tree of steps: every kind checked on every path, each refusal a 422 naming the step and the
path with the store unchanged, and POST /workflows/check answering the plan without registering anything."""

from __future__ import annotations

import copy

import pytest

INT = {"name": "n", "type": "int"}
TEXT = {"name": "message", "type": "string"}
LINES = {"name": "lines", "type": {"type": "array", "items": {"type": "object", "fields": [
    {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}]}}}


@pytest.fixture
def services(client):
    for service in (
        {"name": "double", "address": "http://double.local/", "inputs": [INT], "outputs": [INT]},
        {"name": "shout", "address": "http://shout.local/", "inputs": [TEXT], "outputs": [TEXT]},
        {"name": "hold", "address": "http://hold.local/", "inputs": [{"name": "sku", "type": "string"}, INT],
         "outputs": [{"name": "reservation", "type": "string"}]},
    ):
        assert client.post("/services", json=service).status_code == 201
    return client


def definition(steps, inputs=(INT,), outputs=()):
    return {"name": "tree", "inputs": list(inputs), "outputs": list(outputs), "steps": steps}


GOOD = definition([
    {"id": "first", "call": "double"},
    {"id": "big", "if": "n > `10`", "then": [{"id": "loud", "call": "shout", "in": {"message": "'big'"}}]},
    {"id": "route", "switch": {"cases": [{"when": "n == `1`", "steps": [{"id": "one", "call": "double"}]}],
                               "default": [{"id": "other", "call": "double"}]}},
    {"id": "both", "parallel": {"a": [{"id": "pa", "call": "double", "out": {"n": "a"}}],
                                "b": [{"id": "pb", "call": "double", "out": {"n": "b"}}]}},
    {"id": "each", "map": "lines", "as": "line", "max_concurrency": 4,
     "steps": [{"id": "reserve", "call": "hold", "in": {"sku": "line.sku", "n": "line.qty"}}],
     "collect": {"reservations": "reservation"}},
    {"id": "nap", "sleep": {"seconds": 1}},
], inputs=(INT, LINES), outputs=({"name": "a", "type": "int"}, {"name": "b", "type": "int"},
                                 {"name": "reservations", "type": {"type": "array", "items": "string"}},
                                 {"name": "message", "type": "string", "required": False}))


def test_every_kind_registers_and_its_plan_is_the_tree(services):
    reply = services.post("/workflows", json=GOOD)
    assert reply.status_code == 201, reply.get_json()
    assert reply.get_json()["services"] == ["double", "shout", "hold"]
    checked = services.post("/workflows/check", json=GOOD).get_json()
    plan = checked["plan"]
    assert plan["version"] == 2 and [node["kind"] for node in plan["tree"]] == [
        "call", "if", "switch", "parallel", "map", "sleep"]
    assert plan["tree"][4]["max_concurrency"] == 4 and plan["tree"][3]["branches"][0]["name"] == "a"


def test_check_registers_nothing(services, store):
    before = store.list_workflows(1, 10)[1]
    reply = services.post("/workflows/check", json={**GOOD, "name": "only-checked"})
    assert reply.status_code == 200 and reply.get_json()["ok"] is True
    assert store.list_workflows(1, 10)[1] == before
    assert services.get("/workflows/only-checked").status_code == 404


def mutated(change):
    broken = copy.deepcopy(GOOD)
    change(broken["steps"])
    return broken


BAD = {
    "duplicate ids": (lambda s: s[1]["then"][0].update(id="first"), "first", "unique"),
    "unknown kind": (lambda s: s.append({"id": "x", "loop": "forever"}), "x", "kind"),
    "two kinds": (lambda s: s[0].update({"sleep": {"seconds": 1}}), "first", "kind"),
    "bad JMESPath": (lambda s: s[1].update({"if": "n >"}), "big.if", ""),
    "a missing field": (lambda s: s[4]["steps"][0]["in"].update(sku="line.skuu"), "reserve.in.sku", "skuu"),
    "a condition that is not boolean": (lambda s: s[1].update({"if": "n"}), "big.if", "bool"),
    "comparing a string with a number": (lambda s: s[1].update({"if": "'a' < n"}), "big.if", ""),
    "a map over a non-array": (lambda s: s[4].update(map="n"), "each.map", "array"),
    "max_concurrency too large": (lambda s: s[4].update(max_concurrency=257), "each", "max_concurrency"),
    "max_concurrency zero": (lambda s: s[4].update(max_concurrency=0), "each", "max_concurrency"),
    "parallel branches writing one key": (lambda s: s[3]["parallel"]["b"][0].update(out={"n": "a"}), "both", "a"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_tree_is_a_422_naming_the_path_and_the_store_is_unchanged(services, store, case):
    change, path, word = BAD[case]
    before = store.list_workflows(1, 10)[1]
    reply = services.post("/workflows", json=mutated(change))
    assert reply.status_code == 422, reply.get_json()
    body = reply.get_json()
    shown = str(body["errors"]) + body["message"]
    assert path in shown and word in shown, body
    assert store.list_workflows(1, 10)[1] == before


def test_a_key_set_on_one_branch_only_is_optional_and_a_required_use_names_the_branch(services):
    required = copy.deepcopy(GOOD)
    required["outputs"][3]["required"] = True
    reply = services.post("/workflows", json=required)
    assert reply.status_code == 422
    assert "set only on branch then of step big" in reply.get_json()["message"]


def test_nesting_and_size_limits(services, store):
    from machinery.exceptions import DataflowError
    from machinery.language.plan import plan_tree

    deep: list = [{"id": "leaf", "call": "double"}]
    for level in range(17):
        deep = [{"id": f"if{level}", "if": "n > `0`", "then": deep}]
    # Through the API a body nested past 32 JSON levels is refused first (400 naming the depth); the
    # planner's own limit holds for definitions from anywhere.
    reply = services.post("/workflows", json=definition(deep))
    assert reply.status_code in (400, 422) and "levels" in reply.get_json()["message"]
    with pytest.raises(DataflowError) as refused:
        plan_tree(definition(deep), store.find_services(["double"]))
    assert "deeper than 16" in refused.value.message
    many = [{"id": f"s{number}", "call": "double"} for number in range(501)]
    reply = services.post("/workflows", json=definition(many))
    assert reply.status_code == 422 and "500" in str(reply.get_json())


def test_a_workflow_gives_services_or_steps_not_both(services):
    both = {**GOOD, "services": ["double"]}
    assert services.post("/workflows", json=both).status_code == 422
    neither = {key: value for key, value in GOOD.items() if key != "steps"}
    assert services.post("/workflows", json=neither).status_code == 422
