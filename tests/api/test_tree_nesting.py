"""How deep a tree may nest over HTTP: every tree the check accepts gets through the body parser (JSON
and YAML) to the planner, which refuses one level too deep naming the path; a body deeper than any tree
is still a 400 naming the limit, and nothing is stored."""

from __future__ import annotations

import yaml

from machinery.api import body
from machinery.language import plan

INT = {"name": "n", "type": "int"}
DOUBLE = {"name": "double", "address": "http://double.local/", "inputs": [INT], "outputs": [INT]}


def switches(levels: int, innermost: list) -> list:
    """`levels` switches, each inside the first case of the one above; `innermost` in the last."""
    steps = innermost
    for level in range(levels, 0, -1):
        steps = [{"id": f"s{level}", "switch": {"cases": [{"when": "n > `0`", "steps": steps}]}}]
    return steps


def tree(steps: list) -> dict:
    return {"name": "deep", "inputs": [INT], "outputs": [], "steps": steps}


def json_depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((json_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(item) for item in value), default=0)
    return 0


# 16 levels of steps, the deepest JSON the check accepts: a switch at level 16 whose case is empty.
DEEPEST = tree(switches(16, []))
# A step at level 17: a call, and the deepest kind (a switch whose case is empty).
TOO_DEEP = tree(switches(16, [{"id": "leaf", "call": "double"}]))
TOO_DEEP_SWITCH = tree(switches(17, []))


def test_the_body_limit_takes_every_tree_the_check_accepts_and_one_level_more():
    assert json_depth(DEEPEST) == 2 + plan.MAX_DEPTH * 5
    assert json_depth(TOO_DEEP) < json_depth(TOO_DEEP_SWITCH) == plan.JSON_DEPTH == body.MAX_DEPTH
    assert json_depth(tree(switches(18, []))) > body.MAX_DEPTH


def test_a_tree_sixteen_deep_checks_and_registers(client, store):
    assert client.post("/services", json=DOUBLE).status_code == 201
    checked = client.post("/workflows/check", json=DEEPEST)
    assert checked.status_code == 200, checked.get_json()
    assert checked.get_json()["plan"]["node_count"] == 16
    reply = client.post("/workflows", json=DEEPEST)
    assert reply.status_code == 201, reply.get_json()
    stored = client.get("/workflows/deep").get_json()
    assert stored["steps"] == DEEPEST["steps"]


def test_a_tree_sixteen_deep_of_calls_in_switch_cases_registers(client):
    assert client.post("/services", json=DOUBLE).status_code == 201
    definition = tree(switches(15, [{"id": "leaf", "call": "double", "in": {"n": "n"}}]))
    reply = client.post("/workflows", json=definition)
    assert reply.status_code == 201, reply.get_json()


def test_a_tree_sixteen_deep_sent_as_yaml_registers(client):
    assert client.post("/services", json=DOUBLE).status_code == 201
    reply = client.post("/workflows", data=yaml.safe_dump(DEEPEST), content_type="application/yaml")
    assert reply.status_code == 201, reply.get_json()


def test_maps_inside_parallel_branches_sixteen_deep_register(client):
    assert client.post("/services", json=DOUBLE).status_code == 201
    values = {"name": "values", "type": {"type": "array", "items": "int"}}
    steps: list = [{"id": "leaf", "call": "double"}]
    for level in range(15, 0, -1):
        if level % 2:
            steps = [{"id": f"p{level}", "parallel": {"only": steps}}]
        else:
            steps = [{"id": f"m{level}", "map": "values", "as": "n", "steps": steps}]
    reply = client.post("/workflows", json={**tree(steps), "inputs": [INT, values]})
    assert reply.status_code == 201, reply.get_json()


def test_a_tree_seventeen_deep_is_a_422_naming_the_path_once(client, store):
    assert client.post("/services", json=DOUBLE).status_code == 201
    for path in ("/workflows/check", "/workflows"):
        for definition, owner in ((TOO_DEEP, "s16"), (TOO_DEEP_SWITCH, "s16")):
            reply = client.post(path, json=definition)
            assert reply.status_code == 422, reply.get_json()
            answer = reply.get_json()
            assert answer["errors"] == [{"step": owner, "path": f"{owner}.cases[0].steps",
                                         "problem": "steps nest deeper than 16 levels"}]
            assert f"{owner}.cases[0].steps" in answer["message"]
    assert store.list_workflows(1, 10)[1] == 0


def test_a_tree_seventeen_deep_sent_as_yaml_is_a_422(client):
    assert client.post("/services", json=DOUBLE).status_code == 201
    reply = client.post("/workflows", data=yaml.safe_dump(TOO_DEEP_SWITCH), content_type="application/yaml")
    assert reply.status_code == 422
    assert reply.get_json()["errors"][0]["path"] == "s16.cases[0].steps"


def test_a_body_nested_deeper_than_any_tree_is_a_400_naming_the_limit(client, store):
    assert client.post("/services", json=DOUBLE).status_code == 201
    deeper = tree(switches(18, []))
    reply = client.post("/workflows", json=deeper)
    assert reply.status_code == 400
    assert reply.get_json()["message"] == f"the JSON body is nested more than {body.MAX_DEPTH} levels deep"
    reply = client.post("/workflows/check", data=yaml.safe_dump(deeper), content_type="application/yaml")
    assert reply.status_code == 400
    assert f"the YAML body is nested more than {body.MAX_DEPTH} levels deep" in reply.get_json()["message"]
    assert store.list_workflows(1, 10)[1] == 0
