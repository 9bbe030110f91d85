"""GET /ui/events/<id>/live: the part of an event's page that its script swaps in while the event runs."""

from __future__ import annotations

from machinery.app import create_app
from tests.api.test_ui import send
from tests.conftest import register_examples
from tests.security.conftest import ADMIN_KEY, READ_KEY, basic


def test_the_live_part_of_a_pending_event_asks_to_be_followed(client, example_services):
    register_examples(client, example_services)
    event = send(client, mode="async")  # no worker runs in these tests: it stays pending
    response = client.get(f"/ui/events/{event['event_id']}/live")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<div id="event"') and "<html" not in body and "<header" not in body
    assert 'data-status="pending"' in body and 'data-poll="1500"' in body
    assert f'data-live-url="/ui/events/{event["event_id"]}/live"' in body
    page = client.get(f"/ui/events/{event['event_id']}").get_data(as_text=True)
    assert body.strip() in page  # the same part as the page holds


def test_the_live_part_of_an_ended_event_stops_the_following(client, example_services):
    register_examples(client, example_services)
    event = send(client)
    body = client.get(f"/ui/events/{event['event_id']}/live").get_data(as_text=True)
    assert 'data-status="completed"' in body and "data-poll" not in body
    assert body.count('class="lane status-completed"') == 3


def test_the_live_part_of_an_unknown_event_is_a_404(client):
    assert client.get("/ui/events/6b0000000000000000000000/live").status_code == 404


def test_the_live_part_asks_for_a_key_as_the_ui_does(example_services):
    app = create_app({"MONGO_URI": "mongomock://localhost/machinery-live", "EMBEDDED_WORKERS": 0,
                      "API_KEYS": f"{ADMIN_KEY}:admin,{READ_KEY}:read"})
    try:
        client = app.test_client()
        client.environ_base.update({"HTTP_AUTHORIZATION": basic(ADMIN_KEY)["Authorization"]})
        register_examples(client, example_services)
        event = send(client, mode="async")
        anonymous = app.test_client().get(f"/ui/events/{event['event_id']}/live")
        assert anonymous.status_code == 401
        assert 'Basic realm="machinery", charset="UTF-8"' in anonymous.headers.getlist("WWW-Authenticate")
        reader = app.test_client().get(f"/ui/events/{event['event_id']}/live", headers=basic(READ_KEY))
        assert reader.status_code == 200 and 'data-status="pending"' in reader.get_data(as_text=True)
    finally:
        app.extensions["machinery"].close(grace_s=2)


def test_a_live_event_with_a_long_timeline_is_followed_less_often(client, store, example_services):
    from datetime import timedelta

    register_examples(client, example_services)
    event = send(client, mode="async")
    stored = store.get_event(event["event_id"])
    store.update_event(event["event_id"], {"$set": {"status": "running", "plan": {**stored["plan"], "version": 2,
                                                                                   "tree": []}}})
    # 500 runs that all overlap whatever the axis's span (it ends at the moment the page is drawn, which a
    # slow machine puts later): each starts a microsecond after the one before and runs for a minute.
    for number in range(500):
        start = stored["ack_date"] + timedelta(microseconds=number)
        store.insert_step_run({"event_id": event["event_id"], "run": 0, "instance": f"each[{number}]/up",
                               "node": "up", "kind": "call", "items": [number], "item": number, "status": "completed",
                               "service": "upper", "attempts": 1, "started_at": start, "duration_ms": 60_000.0,
                               "finished_at": start + timedelta(minutes=1)})
    body = client.get(f"/ui/events/{event['event_id']}/live").get_data(as_text=True)
    assert 'data-poll="5000"' in body
    drawn = body.count('class="bar bar-green"')
    assert drawn < 500 and f"{500 - drawn} more runs are folded: more than 32 overlap at this scale" in body
