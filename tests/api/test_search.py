"""Search attributes: declared by a workflow, kept on each event, found by GET /events?attr.<path>=..."""

from __future__ import annotations

import pytest

UPPER = {"name": "upper", "address": "http://upper.local:5000/",
         "inputs": [{"name": "message", "type": "string"}], "outputs": [{"name": "message", "type": "string"}]}
ORDERS = {
    "name": "orders", "services": ["upper"], "search": ["customer_id", "order.total"],
    "inputs": [{"name": "message", "type": "string"}, {"name": "customer_id", "type": "string"},
               {"name": "order", "type": {"type": "object", "fields": [{"name": "total", "type": "float"}]}}],
    "outputs": [{"name": "message", "type": "string"}],
}


def register(client, **changes) -> None:
    assert client.post("/services", json=UPPER).status_code in (200, 201)
    answer = client.post("/workflows", json={**ORDERS, **changes})
    assert answer.status_code in (200, 201), answer.get_json()


def send(client, customer: str, total: float) -> str:
    answer = client.post("/e/orders?mode=async", json={"message": "hi", "customer_id": customer,
                                                       "order": {"total": total}})
    assert answer.status_code == 202, answer.get_json()
    return answer.get_json()["event_id"]


def ids(client, query: str) -> list[str]:
    answer = client.get(f"/events?{query}")
    assert answer.status_code == 200, answer.get_json()
    return [item["event_id"] for item in answer.get_json()["items"]]


def test_events_keep_the_values_of_their_workflows_search_paths(client, store):
    # GIVEN a workflow searching customer_id and order.total WHEN an event is sent
    register(client)
    event_id = send(client, "c1", 120.5)
    # THEN the stored event holds both values as attributes, and its summary shows them
    assert store.get_event(event_id)["attrs"] == [{"k": "customer_id", "v": "c1"}, {"k": "order.total", "v": 120.5}]
    assert client.get("/events").get_json()["items"][0]["attrs"][1] == {"k": "order.total", "v": 120.5}


def test_an_equality_and_a_range_find_exactly_the_matching_events_newest_first(client):
    # GIVEN events of three customers with various totals
    register(client)
    sent = [send(client, f"c{number % 3}", float(number * 10)) for number in range(30)]
    # WHEN searched by customer, by total above 100, and by both
    by_customer = ids(client, "attr.customer_id=c1&page_size=100")
    above = ids(client, "attr.order.total__gt=100&page_size=100")
    both = ids(client, "attr.customer_id=c1&attr.order.total__gte=100&attr.order.total__lt=200&page_size=100")
    # THEN each finds exactly its events, newest first
    assert by_customer == [sent[n] for n in range(29, -1, -1) if n % 3 == 1]
    assert above == [sent[n] for n in range(29, 10, -1)]
    assert both == [sent[n] for n in range(19, 9, -1) if n % 3 == 1]
    # AND __ne and __lte mean what they say
    assert ids(client, "attr.customer_id__ne=c1&page_size=100") == [sent[n] for n in range(29, -1, -1) if n % 3 != 1]
    assert ids(client, "attr.order.total__lte=20") == [sent[2], sent[1], sent[0]]


def test_a_search_pages_on_with_the_cursor_and_counts_its_total(client):
    # GIVEN 25 events of one customer among others
    register(client)
    sent = [send(client, "c1" if number % 2 else "c2", 1.0) for number in range(50)]
    wanted = [event for number, event in enumerate(sent) if number % 2][::-1]
    # WHEN walked 10 at a time
    seen, query = [], "attr.customer_id=c1&page_size=10"
    for _ in range(5):
        page = client.get(f"/events?{query}").get_json()
        assert page["total"] == 25
        seen.extend(item["event_id"] for item in page["items"])
        if page["next_cursor"] is None:
            break
        query = f"attr.customer_id=c1&page_size=10&cursor={page['next_cursor']}"
    # THEN every one came once, in order
    assert seen == wanted


def test_values_parse_as_json_numbers_and_booleans_else_as_strings(client):
    # GIVEN customers whose ids look like a number, and an id that is a plain word
    register(client)
    numeric = send(client, "42", 1.0)
    word = send(client, "true-ish", 1.0)
    # WHEN searched: a bare 42 is the number, "42" quoted is the string, a word is itself
    assert ids(client, "attr.customer_id=42") == []
    assert ids(client, 'attr.customer_id="42"') == [numeric]
    assert ids(client, "attr.customer_id=true-ish") == [word]
    assert ids(client, "attr.order.total=1") == [word, numeric]  # 1 finds the float 1.0, as MongoDB does


def test_the_search_follows_the_context_with_no_write_of_its_own(client, store, example_services):
    # GIVEN two workflows calling the real upper service, one searching the message it rewrites
    assert client.post("/services", json={**UPPER, "address": example_services["upper"]}).status_code == 201
    for name, search in (("plain", None), ("orders", ["message"])):
        body = {**ORDERS, "name": name, "search": search} if search else {
            key: value for key, value in {**ORDERS, "name": name}.items() if key != "search"}
        assert client.post("/workflows", json=body).status_code == 201
    data = {"message": "hi", "customer_id": "c1", "order": {"total": 1.0}}
    # WHEN an event of each runs (sync)
    writes = []
    for name in ("plain", "orders"):
        before = store.writes
        answer = client.post(f"/e/{name}", json=data)
        assert answer.status_code == 201, answer.get_json()
        writes.append(store.writes - before)
    event_id = answer.get_json()["event_id"]
    # THEN the searched one made as many writes as the other, and is found by the value its step wrote
    assert writes[0] == writes[1]
    assert ids(client, "attr.message=HI") == [event_id]
    assert ids(client, "attr.message=hi") == []


@pytest.mark.parametrize("search, named", [
    (["order.totl"], "search[0]"),
    (["nope"], "search[0]"),
    (["customer_id", "order"], "search[1]"),
    (["customer_id", "["], "search[1]"),
    (["customer_id", "customer_id"], "search[1]"),
])
def test_a_search_path_that_does_not_check_is_refused_naming_it(client, store, search, named):
    # WHEN a workflow declares a search path that names nothing, is an object, does not parse, or repeats
    assert client.post("/services", json=UPPER).status_code in (200, 201)
    answer = client.post("/workflows", json={**ORDERS, "search": search})
    # THEN a 422 names the path, and nothing is registered
    assert answer.status_code == 422, answer.get_json()
    assert named in str(answer.get_json())
    assert client.get("/workflows/orders").status_code == 404


@pytest.mark.parametrize("query, named", [
    ("attr.customer_id__foo=1", "attr.customer_id__foo"),
    ("workflow=orders&attr.nothing=1", "attr.nothing"),
    ("attr.=1", "attr."),
    ("attr.customer_id=" + "x" * 600, "attr.customer_id"),
])
def test_bad_filters_are_refused_naming_them(client, query, named):
    register(client)
    answer = client.get(f"/events?{query}")
    assert answer.status_code == 422, answer.get_json()
    assert named in answer.get_json()["errors"]


def test_a_tree_workflow_searches_what_its_steps_write_and_refuses_what_they_cannot(client, store):
    # GIVEN a tree whose step writes `doubled`
    double = {"name": "double", "address": "http://double.local/", "inputs": [{"name": "n", "type": "int"}],
              "outputs": [{"name": "n", "type": "int"}]}
    assert client.post("/services", json=double).status_code == 201
    tree = {"name": "tree", "inputs": [{"name": "n", "type": "int"}], "outputs": [],
            "steps": [{"id": "twice", "call": "double", "out": {"n": "doubled"}}]}
    # WHEN it searches a key its steps write, and another a key nothing writes
    good = client.post("/workflows", json={**tree, "search": ["n", "doubled"]})
    bad = client.post("/workflows", json={**tree, "name": "tree2", "search": ["tripled"]})
    # THEN the first registers and its events keep n at once (doubled once a step writes it)
    assert good.status_code == 201, good.get_json()
    answer = client.post("/e/tree?mode=async", json={"n": 4})
    assert store.get_event(answer.get_json()["event_id"])["attrs"] == [{"k": "n", "v": 4}]
    assert ids(client, "workflow=tree&attr.n=4") == [answer.get_json()["event_id"]]
    # AND the second is refused naming the path
    assert bad.status_code == 422 and "search[0]" in str(bad.get_json())
