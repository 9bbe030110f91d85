"""Finding the workflows that run a child, the same on the embedded store, over the wire and on a real
MongoDB: one index over the trees' `workflows` (written at registration) answers it, trees stored before
that field are still found, and (real MongoDB only) no version 1 workflow or unrelated tree is read."""

from __future__ import annotations

import pytest
from bson import ObjectId

from machinery import registry
from machinery.store.store import RUNNING_INDEX
from tests.mongo.conftest import REAL_URI
from tests.mongo.test_store_ops import plan_nodes

INT = {"name": "n", "type": "int"}


def tree(name, steps):
    return {"name": name, "inputs": [INT], "outputs": [], "steps": steps}


def register(store, definition):
    """Store a definition as registration does (its services and children derived), without the check."""
    store.put_workflow(registry.derived(definition))


def legacy(store, definition):
    """A tree as stored before its `workflows` field was written: its steps only."""
    store.workflows.insert_one({"_id": ObjectId(), "version": 1, **definition})


def populate(store, version_1_workflows=3):
    register(store, tree("parent-a", [{"id": "k", "workflow": "kid"}]))
    register(store, tree("parent-b", [{"id": "fan", "parallel": {"one": [
        {"id": "each", "map": "values", "as": "v", "steps": [{"id": "deep", "workflow": "kid"}]}]}}]))
    register(store, tree("other-parent", [{"id": "k", "workflow": "other-kid"}]))
    register(store, tree("no-children", [{"id": "d", "call": "double"}]))
    legacy(store, tree("old-parent", [{"id": "big", "if": "n > `1`", "then": [{"id": "k", "workflow": "kid"}]}]))
    legacy(store, tree("old-other", [{"id": "k", "workflow": "other-kid"}]))
    for number in range(version_1_workflows):
        register(store, {"name": f"chain-{number}", "services": ["double"], "inputs": [INT], "outputs": []})


def test_the_trees_that_run_a_child_are_found_by_its_name_old_ones_too(store):
    # GIVEN trees that run `kid` (one nested in a parallel and a map), trees that run another child or
    # none, version 1 workflows, and trees stored before `workflows` was written
    populate(store)
    # WHEN the workflows running each child are asked for
    # THEN exactly those that run it come back, by name, the old ones found through their steps
    assert [parent["name"] for parent in store.workflows_running("kid")] == ["old-parent", "parent-a", "parent-b"]
    assert [parent["name"] for parent in store.workflows_running("other-kid")] == ["old-other", "other-parent"]
    assert store.workflows_running("no-children") == []
    assert store.workflows_running("nobody") == []
    found = store.workflows_running("kid")[0]
    assert found["workflow_id"] and found["steps"]  # whole definitions, as get_workflow gives them


def test_a_tree_registered_again_is_found_by_its_new_children_only(store):
    # GIVEN a tree that ran `kid`, registered again to run `other-kid` instead
    register(store, tree("parent", [{"id": "k", "workflow": "kid"}]))
    register(store, tree("parent", [{"id": "k", "workflow": "other-kid"}]))
    # THEN only the new child names it
    assert store.workflows_running("kid") == []
    assert [parent["name"] for parent in store.workflows_running("other-kid")] == ["parent"]


def test_the_index_is_made_over_trees_only(store):
    # GIVEN the indexes made (the store fixture ran ensure_indexes), and made again
    store.ensure_indexes()
    indexes = {index["name"]: index for index in store.workflows.list_indexes()}
    # THEN the index is there, once, on `workflows`, over the documents that hold steps
    index = indexes[RUNNING_INDEX]
    assert list(dict(index["key"]).items()) == [("workflows", 1)]
    assert index["partialFilterExpression"] == {"steps": {"$exists": True}}


def test_finding_the_parents_reads_only_the_trees_that_may_run_the_child(store):
    if not REAL_URI or store.embedded or "gitVersion" not in store.db.client.server_info():
        pytest.skip("query plans are the real MongoDB's: set MACHINERY_TEST_MONGO_URI")
    # GIVEN many version 1 workflows beside the trees
    populate(store, version_1_workflows=60)
    # WHEN each find of workflows_running is explained
    for find in store._running_finds("kid"):
        explained = find.explain()
        winning = explained["queryPlanner"]["winningPlan"]
        nodes = list(plan_nodes(winning))
        # THEN it is a lookup of the index, never a scan of the collection
        assert "COLLSCAN" not in [node["stage"] for node in nodes], winning
        assert RUNNING_INDEX in {node.get("indexName") for node in nodes if node["stage"] == "IXSCAN"}, winning
        stats = explained.get("executionStats")
        if stats:  # the verbosity that runs the plan: only a few trees were read, no version 1 workflow
            assert stats["totalDocsExamined"] <= 3, stats
