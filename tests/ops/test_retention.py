"""Event retention: a TTL index on finished_at when MACHINERY_EVENT_TTL_DAYS is set, and only finished events dated."""

from __future__ import annotations

import pytest

from machinery.store import Store
from tests.conftest import EXAMPLE_TEXT, register_examples


@pytest.fixture
def fresh_store():
    return Store.connect("mongomock://localhost/retention")


def retention(store) -> dict | None:
    return {index["name"]: index for index in store.events.list_indexes()}.get("retention")


def test_a_ttl_sets_a_retention_index_on_finished_at(fresh_store):
    fresh_store.ensure_indexes(event_ttl_days=7)
    index = retention(fresh_store)
    assert index is not None and dict(index["key"]) == {"finished_at": 1}
    assert index["expireAfterSeconds"] == 7 * 86400


def test_a_changed_ttl_replaces_the_index(fresh_store):
    fresh_store.ensure_indexes(event_ttl_days=7)
    fresh_store.ensure_indexes(event_ttl_days=0.5)
    assert retention(fresh_store)["expireAfterSeconds"] == 43200


def test_no_ttl_drops_the_index(fresh_store):
    fresh_store.ensure_indexes(event_ttl_days=7)
    fresh_store.ensure_indexes(event_ttl_days=None)
    assert retention(fresh_store) is None


def test_the_app_applies_the_setting_at_start(app):
    assert retention(app.extensions["machinery"].store) is None


@pytest.mark.parametrize("config", [{"EVENT_TTL_DAYS": 30.0}])
def test_the_app_creates_the_index_from_the_setting(app, config):
    assert retention(app.extensions["machinery"].store)["expireAfterSeconds"] == 30 * 86400


@pytest.mark.e2e
def test_only_finished_events_have_finished_at(client, store, example_services):
    # GIVEN the examples served for real
    register_examples(client, example_services)
    # WHEN one event completes, one fails (reverse moved to a closed port) and one stays pending (no worker)
    completed = client.post("/e/process-text", json={"data": {"message": EXAMPLE_TEXT}}).get_json()
    register_examples(client, {**example_services, "reverse": "http://127.0.0.1:9/"})
    failed = client.post("/e/process-text", json={"data": {"message": EXAMPLE_TEXT}}).get_json()
    pending = client.post("/e/process-text?mode=async", json={"data": {"message": "later"}}).get_json()
    # THEN the finished ones are dated, the pending one is not (the TTL index ignores it)
    assert (completed["status"], failed["status"], pending["status"]) == ("completed", "failed", "pending")
    assert store.get_event(completed["event_id"])["finished_at"] is not None
    assert store.get_event(failed["event_id"])["finished_at"] is not None
    assert store.get_event(pending["event_id"])["finished_at"] is None
