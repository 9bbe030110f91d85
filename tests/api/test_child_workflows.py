"""A workflow that registered trees run as a child (a `workflow` step) stays what they need: deleting it,
or registering a version of it that would break one of them, is refused with 409 naming them, and
nothing changes."""

from __future__ import annotations

import pytest

INT = {"name": "n", "type": "int"}
TEXT = {"name": "message", "type": "string"}


@pytest.fixture
def registered(client):
    """A service, a child workflow over it, and two trees that run the child (one deep inside an if, a
    parallel branch and a map), beside one that does not."""
    assert client.post("/services", json={"name": "double", "address": "http://double.local/",
                                           "inputs": [INT], "outputs": [INT]}).status_code == 201
    child = {"name": "kid", "inputs": [INT], "outputs": [INT], "steps": [{"id": "d", "call": "double"}]}
    assert client.post("/workflows", json=child).status_code == 201
    parents = [
        {"name": "parent-a", "inputs": [INT], "outputs": [INT],
         "steps": [{"id": "run-kid", "workflow": "kid"}]},
        {"name": "parent-b", "inputs": [INT, {"name": "values", "type": {"type": "array", "items": "int"}}],
         "outputs": [],
         "steps": [{"id": "big", "if": "n > `1`", "then": [{"id": "fan", "parallel": {"one": [
             {"id": "each", "map": "values", "as": "v", "steps": [
                 {"id": "deep", "workflow": "kid", "in": {"n": "v"}}]}]}}]}]},
        {"name": "bystander", "inputs": [INT], "outputs": [INT], "steps": [{"id": "d", "call": "double"}]},
    ]
    for parent in parents:
        reply = client.post("/workflows", json=parent)
        assert reply.status_code == 201, reply.get_json()
    return client, child


def test_deleting_a_child_that_registered_workflows_run_is_409_naming_them(registered, store):
    client, _ = registered
    # WHEN the child is deleted, by name and by id
    by_name = client.delete("/workflows/kid")
    kid_id = client.get("/workflows/kid").get_json()["workflow_id"]
    by_id = client.delete(f"/workflows/{kid_id}")
    # THEN both are refused, naming the two parents and no other workflow, and the child stays
    for reply in (by_name, by_id):
        assert reply.status_code == 409, reply.get_json()
        body = reply.get_json()
        assert body["errors"] == {"workflows": ["parent-a", "parent-b"]}
        assert "parent-a, parent-b" in body["message"] and "bystander" not in body["message"]
    assert client.get("/workflows/kid").status_code == 200


def test_a_child_can_be_deleted_once_no_workflow_runs_it(registered):
    client, _ = registered
    # GIVEN the parents deleted (a parent itself is run by none)
    assert client.delete("/workflows/parent-a").status_code == 204
    assert client.delete("/workflows/kid").status_code == 409  # parent-b still runs it
    assert client.delete("/workflows/parent-b").status_code == 204
    # WHEN the child is deleted, THEN it goes
    assert client.delete("/workflows/kid").status_code == 204
    assert client.get("/workflows/kid").status_code == 404
    assert client.delete("/workflows/kid").status_code == 404


def test_a_parent_changed_to_run_something_else_no_longer_holds_its_old_child(registered):
    client, _ = registered
    # GIVEN both parents registered again without their child step
    for name in ("parent-a", "parent-b"):
        reply = client.post("/workflows", json={"name": name, "inputs": [INT], "outputs": [INT],
                                                "steps": [{"id": "d", "call": "double"}]})
        assert reply.status_code == 200, reply.get_json()
    # THEN the child may be deleted
    assert client.delete("/workflows/kid").status_code == 204


def test_a_new_version_of_a_child_that_would_break_its_parents_is_409_naming_them(registered):
    client, child = registered
    before = client.get("/workflows/kid").get_json()
    # WHEN the child is registered again taking a string instead of an int
    changed = {**child, "inputs": [TEXT], "steps": [{"id": "d", "call": "double", "in": {"n": "length(message)"}}]}
    reply = client.post("/workflows", json=changed)
    # THEN it is refused, naming both parents with their breaks, and the child keeps its version
    assert reply.status_code == 409, reply.get_json()
    body = reply.get_json()
    assert sorted(body["errors"]["workflows"]) == ["parent-a", "parent-b"]
    assert "parent-a" in body["message"] and "parent-b" in body["message"]
    after = client.get("/workflows/kid").get_json()
    assert after["version"] == before["version"] and after["inputs"] == [INT]


def test_a_new_version_of_a_child_that_fits_its_parents_registers(registered):
    client, child = registered
    # WHEN the child is registered again with an extra optional input, THEN its parents still check
    extended = {**child, "inputs": [INT, {"name": "note", "type": "string", "required": False}]}
    reply = client.post("/workflows", json=extended)
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["version"] == 2


def test_a_parent_stored_before_its_children_were_recorded_still_holds_its_child(registered, store):
    client, child = registered
    # GIVEN a tree stored as it was before registration wrote the children a tree runs (its steps only)
    store.workflows.insert_one({"name": "old-parent", "version": 1, "inputs": [INT], "outputs": [INT],
                                "services": [], "steps": [{"id": "run-kid", "workflow": "kid"}]})
    # WHEN the child is deleted or broken, THEN that parent is named too
    deleted = client.delete("/workflows/kid")
    assert deleted.status_code == 409 and deleted.get_json()["errors"]["workflows"] == [
        "old-parent", "parent-a", "parent-b"]
    broken = client.post("/workflows", json={**child, "inputs": [TEXT], "steps": [
        {"id": "d", "call": "double", "in": {"n": "length(message)"}}]})
    assert broken.status_code == 409 and "old-parent" in broken.get_json()["errors"]["workflows"]
