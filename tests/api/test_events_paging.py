"""GET /events pages: ?page for the first ones, next_cursor to walk on at any depth, totals within a bound."""

from __future__ import annotations

from tests.conftest import register_examples


def send(client, count: int) -> list[str]:
    ids = []
    for number in range(count):
        answer = client.post("/e/process-text?mode=async", json={"message": f"event {number}"})
        assert answer.status_code == 202
        ids.append(answer.get_json()["event_id"])
    return ids


def test_a_cursor_walk_reads_250_events_once_each_while_new_ones_arrive(client):
    # GIVEN 250 events
    register_examples(client)
    sent = send(client, 250)
    # WHEN they are walked 40 at a time by next_cursor, while new events arrive between pages
    seen, query = [], "/events?page_size=40&workflow=process-text"
    for _ in range(20):
        page = client.get(query).get_json()
        seen.extend(item["event_id"] for item in page["items"])
        send(client, 3)
        if page["next_cursor"] is None:
            break
        query = f"/events?page_size=40&workflow=process-text&cursor={page['next_cursor']}"
    # THEN every one of the 250 came exactly once, newest first, with no gap and none of the later ones
    assert seen == sent[::-1]


def test_a_page_keeps_its_fields_and_adds_the_cursor(client):
    # GIVEN 5 events WHEN the first page of 2 is read
    register_examples(client)
    sent = send(client, 5)
    first = client.get("/events?page_size=2").get_json()
    second = client.get("/events?page=2&page_size=2").get_json()
    after = client.get(f"/events?page_size=2&after={first['next_cursor']}").get_json()
    # THEN items, page, page_size and total mean what they did, and the cursor reads what page 2 does
    assert (first["page"], first["page_size"], first["total"], first["total_is_lower_bound"]) == (1, 2, 5, False)
    assert [item["event_id"] for item in first["items"]] == sent[:-3:-1]
    assert [item["event_id"] for item in second["items"]] == [item["event_id"] for item in after["items"]]
    # AND the last page has no cursor
    assert client.get("/events?page=3&page_size=2").get_json()["next_cursor"] is None


def test_bad_positions_are_refused_naming_the_parameter(client):
    # WHEN a cursor is made up, or given with a page, or a page skips too far
    made_up = client.get("/events?cursor=bm90LWEtY3Vyc29y")
    both = client.get("/events?cursor=abc&page=2")
    too_far = client.get("/events?page=500&page_size=100")
    # THEN each is a 422 naming what to change
    assert made_up.status_code == 422 and "cursor" in made_up.get_json()["errors"]
    assert both.status_code == 422 and "page" in both.get_json()["errors"]
    assert too_far.status_code == 422 and "page" in too_far.get_json()["errors"]
    assert "cursor" in too_far.get_json()["message"]
