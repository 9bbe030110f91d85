"""The /ui pages and GET /workflows/<ref>/graph, through the Flask test client."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from flask import Flask

from machinery.serving import ServerThread, free_port
from tests.conftest import EXAMPLE_TEXT, register_examples

HOSTILE = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def examples(client, example_services):
    register_examples(client, example_services)
    return client


@pytest.fixture(scope="module")
def refusing_service():
    """A service that answers 400 with markup in its body, which ends up in the step's error message."""
    app = Flask("refusing")

    @app.post("/")
    def refuse():
        return HOSTILE, 400

    server = ServerThread(app).start()
    yield server.url
    server.stop()


def send(client, workflow="process-text", data=None, mode="sync"):
    response = client.post(f"/e/{workflow}?mode={mode}", json={"data": data or {"message": EXAMPLE_TEXT}})
    assert response.status_code in (201, 202, 502), response.get_json()
    return response.get_json()


def register_failing(client, address, name="refuser", workflow="refusing-flow", description=None):
    service = {"name": name, "address": address, "inputs": [{"name": "message", "type": "string"}],
               "outputs": [{"name": "message", "type": "string"}], "retry": {"max_attempts": 1}}
    if description is not None:
        service["description"] = description
    assert client.post("/services", json=service).status_code == 201
    flow = {"name": workflow, "services": [name], "inputs": [{"name": "message", "type": "string"}],
            "outputs": [{"name": "message", "type": "string"}]}
    if description is not None:
        flow["description"] = description
    assert client.post("/workflows", json=flow).status_code == 201


def page(client, url, status=200) -> str:
    response = client.get(url)
    assert response.status_code == status, response.data[:500]
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


# -- pages ---------------------------------------------------------------------------------

def test_ui_root_is_the_dashboard(client):
    html = page(client, "/ui/")
    assert "<h1>Dashboard</h1>" in html
    assert "No event has ended in the last day" in html


def test_dashboard_counts_what_was_sent(examples, refusing_service):
    register_failing(examples, refusing_service)
    for _ in range(4):
        send(examples)
    for _ in range(2):
        send(examples, "refusing-flow", {"message": "no"})
    html = page(examples, "/ui/")
    row = html[html.index('<tr data-workflow="process-text">'):]
    row = row[:row.index("</tr>")]
    assert '<span class="figure" data-figure="hour-events">4</span>' in row
    assert '<span class="figure" data-figure="hour-success">100.0 %</span>' in row
    assert row.count("<svg class=\"chart\"") == 3
    failing = html[html.index('<tr data-workflow="refusing-flow">'):]
    failing = failing[:failing.index("</tr>")]
    assert '<span data-figure="day-failed">2</span>' in failing
    assert '<span class="figure" data-figure="hour-success">0.0 %</span>' in failing
    table = html[html.index('id="failing"'):]
    table = table[:table.index("</table>")]
    assert "refusing-flow</a> · <code>step-0</code>" in table and "<td>refuser</td><td>2</td><td>2</td>" in table
    slowest = html[html.index('id="slowest"'):]
    assert "process-text</a> · <code>step-0</code>" in slowest[:slowest.index("</table>")]
    assert 'data-status="pending">0<' in html


def test_dashboard_reads_rollups_not_events(examples):
    send(examples)
    runtime = examples.application.extensions["machinery"]
    events = runtime.store.events
    seen = []
    for name in ("find", "find_one", "aggregate"):
        original = getattr(events, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            query = args[0] if args else kwargs.get("filter")
            if not (isinstance(query, dict) and "queued.why" in query):  # the queued, by their partial index
                seen.append(_name)
            return _original(*args, **kwargs)

        setattr(events, name, spy)
    try:
        page(examples, "/ui/")
    finally:
        for name in ("find", "find_one", "aggregate"):
            delattr(events, name)
    assert seen == []


def test_pages_forbid_inline_scripts(client):
    response = client.get("/ui/workflows")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_workflows_page_lists_each_workflow_with_its_steps(examples):
    body = page(examples, "/ui/workflows")
    assert 'href="/ui/workflows/process-text"' in body
    assert 'href="/ui/workflows/shout-async"' in body
    for service in ("upper", "reverse", "space-counter", "slow-upper"):
        assert f'<span class="chip">{service}</span>' in body


def test_workflows_page_says_when_there_is_none(client):
    assert "No workflow registered yet" in page(client, "/ui/workflows")


def test_workflow_page_draws_the_plan_with_its_renames(examples):
    body = page(examples, "/ui/workflows/process-text")
    start, end = body.index("<svg"), body.index("</svg>") + len("</svg>")
    root = ET.fromstring(body[start:end])  # the inline drawing is well-formed XML
    texts = {"".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"0 \u00b7 upper", "1 \u00b7 reverse", "2 \u00b7 space-counter"} <= texts
    assert "message \u2192 space_count" in texts
    assert '<span class="rename">\u2192 space_count</span>' in body
    assert "format=mermaid" in body and "format=dot" in body
    assert "/e/process-text" in body  # how to send it an event


def test_workflow_page_finds_a_workflow_by_id(examples):
    workflow_id = examples.get("/workflows/process-text").get_json()["workflow_id"]
    assert "2 \u00b7 space-counter" in page(examples, f"/ui/workflows/{workflow_id}")


def test_unknown_workflow_page_is_an_html_404(client):
    body = page(client, "/ui/workflows/nope", status=404)
    assert "no workflow &#39;nope&#39;" in body


def test_services_page_shows_address_types_and_users(examples, example_services):
    body = page(examples, "/ui/services")
    assert example_services["upper"] in body
    assert 'id="service-space-counter"' in body
    assert '<code>message</code> <span class="type">int</span>' in body
    assert 'href="/ui/workflows/process-text">process-text</a>' in body
    assert 'href="/ui/workflows/shout-async">shout-async</a>' in body


def test_descriptions_are_shown_as_text(client):
    register_failing(client, f"http://127.0.0.1:{free_port()}/", description=HOSTILE)
    for url in ("/ui/services", "/ui/workflows", "/ui/workflows/refusing-flow"):
        body = page(client, url)
        assert "<script>alert" not in body and "<img src=x" not in body
        assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in body, url


def test_events_page_lists_newest_first_with_status_colours(examples):
    first = send(examples)
    second = send(examples, data={"message": "again"})
    body = page(examples, "/ui/events")
    assert body.index(second["event_id"]) < body.index(first["event_id"])
    assert '<span class="badge badge-green">completed</span>' in body


def test_events_page_filters_by_status_and_workflow(examples):
    done = send(examples)
    waiting = send(examples, mode="async")
    failed_only = page(examples, "/ui/events?status=pending")
    assert waiting["event_id"] in failed_only and done["event_id"] not in failed_only
    assert '<option value="pending" selected>' in failed_only
    other = page(examples, "/ui/events?workflow=shout-async")
    assert done["event_id"] not in other and "No event matches" in other


def test_events_page_names_an_unknown_filter(client):
    assert "no workflow &#39;ghost&#39;" in page(client, "/ui/events?workflow=ghost")
    assert "unknown status &#39;bogus&#39;" in page(client, "/ui/events?status=bogus")


def test_events_page_paginates(examples):
    sent = [send(examples, mode="async")["event_id"] for _ in range(27)]
    first = page(examples, "/ui/events?workflow=process-text")
    second = page(examples, "/ui/events?workflow=process-text&page=2")
    assert "page 1 of 2" in first and 'href="/ui/events?page=2&amp;workflow=process-text"' in first
    assert sum(event_id in first for event_id in sent) == 25
    assert sum(event_id in second for event_id in sent) == 2
    assert sent[0] in second  # the oldest is last


def test_event_page_draws_a_timeline_of_its_steps(examples):
    event = send(examples)
    body = page(examples, f"/ui/events/{event['event_id']}")
    assert body.count('class="lane status-completed"') == 3
    assert body.count('class="bar bar-green"') == 3
    assert "0 \u00b7 upper" in body and "2 \u00b7 space-counter" in body
    assert "&#34;space_count&#34;: 7" in body  # the outputs, as JSON
    assert "data-poll" not in body and "http-equiv" not in body  # finished: no refresh
    assert "Retry from step" not in body


def test_pending_event_page_refreshes_itself(examples):
    event = send(examples, mode="async")
    body = page(examples, f"/ui/events/{event['event_id']}")
    assert 'data-poll="1500"' in body
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in body
    assert "No step has run yet" in body


def test_failed_event_page_shows_the_error_escaped_and_offers_a_retry(client, refusing_service):
    register_failing(client, refusing_service)
    event = send(client, workflow="refusing-flow", data={"message": HOSTILE})
    body = page(client, f"/ui/events/{event['event_id']}")
    assert "<script>alert" not in body and "<img src=x" not in body
    assert "replied 400: &lt;script&gt;alert" in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body  # the data and the inputs sent
    assert f'action="/ui/events/{event["event_id"]}/retry"' in body
    assert '<span class="badge badge-red">failed</span>' in body


def test_retry_form_resumes_the_failed_event_and_redirects_to_it(client, refusing_service):
    register_failing(client, refusing_service)
    event = send(client, workflow="refusing-flow")
    response = client.post(f"/ui/events/{event['event_id']}/retry")
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/ui/events/{event['event_id']}")
    stored = client.get(f"/events/{event['event_id']}").get_json()
    assert stored["status"] == "pending" and stored["run"] == 1  # no embedded worker in these tests


def test_retry_form_on_a_completed_event_says_why_not(examples):
    event = send(examples)
    response = examples.post(f"/ui/events/{event['event_id']}/retry")
    assert response.status_code == 409
    assert "only a failed event can be retried" in response.get_data(as_text=True)


def test_retry_form_refuses_a_post_from_another_site(client, refusing_service):
    register_failing(client, refusing_service)
    event = send(client, workflow="refusing-flow")
    response = client.post(f"/ui/events/{event['event_id']}/retry", headers={"Origin": "http://elsewhere.example"})
    assert response.status_code == 403
    assert client.get(f"/events/{event['event_id']}").get_json()["status"] == "failed"


def test_unknown_event_page_is_an_html_404(client):
    assert "no event" in page(client, "/ui/events/0123456789abcdef01234567", status=404)


def test_static_files_are_served(client):
    for path in ("/static/machinery.css", "/static/machinery.js"):
        response = client.get(path)
        try:
            assert response.status_code == 200 and response.data
        finally:
            response.close()  # a file sent from disk stays open until its reply is closed


# -- GET /workflows/<ref>/graph ---------------------------------------------------------------

@pytest.mark.parametrize("query, mimetype, start", [
    ("", "image/svg+xml", "<svg"),
    ("?format=svg", "image/svg+xml", "<svg"),
    ("?format=mermaid", "text/plain", "flowchart TD"),
    ("?format=dot", "text/plain", 'digraph "process-text"'),
])
def test_graph_is_drawn_in_each_format(examples, query, mimetype, start):
    response = examples.get(f"/workflows/process-text/graph{query}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.get_data(as_text=True).startswith(start)


def test_graph_svg_is_a_well_formed_document_without_script(examples):
    response = examples.get("/workflows/process-text/graph")
    root = ET.fromstring(response.data)
    assert root.get("aria-label") == "Workflow process-text"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_graph_in_an_unknown_format_is_422(examples):
    response = examples.get("/workflows/process-text/graph?format=png")
    assert response.status_code == 422
    assert response.get_json() == {"code": 422, "status": "Unprocessable Entity",
                                   "message": "unknown graph format 'png'; use one of svg, mermaid, dot",
                                   "errors": {"format": ["must be one of svg, mermaid, dot"]}}


def test_graph_of_an_unknown_workflow_is_404(client):
    response = client.get("/workflows/ghost/graph")
    assert response.status_code == 404
    assert response.get_json()["message"] == "no workflow 'ghost'"


def test_graph_is_in_the_openapi_description(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/workflows/{ref}/graph"]["get"]
    assert "200" in operation["responses"] and "image/svg+xml" in operation["responses"]["200"]["content"]


# -- REST services and nested types ---------------------------------------------------------

LINES = {"type": "array", "items": {"type": "object", "fields": [
    {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"},
    {"name": "product", "type": {"type": "object", "fields": [{"name": "title", "type": "string"}]},
     "required": False}]}}
ORDERS = {"name": "orders", "address": "http://orders.local:5000/",
          "request": {"method": "GET", "path": "/orders/{order_id}", "query": {"expand": "expand"},
                      "headers": {"X-Tenant": "{tenant}"}},
          "success": [200, 404],
          "inputs": [{"name": "order_id", "type": "string"}, {"name": "expand", "type": "string", "required": False},
                     {"name": "tenant", "type": "string"}],
          "outputs": [{"name": "lines", "type": LINES, "from": "body.order.lines"},
                      {"name": "status", "type": "int", "from": "status"}]}
ORDERS_FLOW = {"name": "orders-flow", "services": ["orders"],
               "inputs": [{"name": "order_id", "type": "string"}, {"name": "tenant", "type": "string"}],
               "outputs": [{"name": "lines", "type": LINES}]}


@pytest.fixture
def rest(client):
    assert client.post("/services", json=ORDERS).status_code == 201
    assert client.post("/workflows", json=ORDERS_FLOW).status_code == 201
    return client


def test_workflow_page_shows_each_steps_method_and_path(rest):
    body = page(rest, "/ui/workflows/orders-flow")
    assert '<td class="mono small call">GET /orders/{order_id}</td>' in body
    assert "GET /orders/{order_id}</text>" in body  # in the drawing too


def test_nested_types_are_collapsed_with_a_way_to_unfold_them(rest):
    body = page(rest, "/ui/workflows/orders-flow")
    summary = ('<details class="type-tree"><summary><span class="type">'
               "array&lt;object{sku: string, qty: int, product: object{title: string}?}&gt;</span></summary>")
    assert summary in body
    assert "<details class=\"type-tree\" open" not in body  # collapsed until asked
    assert "<span class=\"muted small\">each item, an object of:</span>" in body
    assert "<code>product</code><span class=\"muted\" title=\"may be absent\">?</span>" in body
    assert "<code>title</code> <span class=\"type\">string</span>" in body


def test_services_page_shows_request_success_statuses_and_where_outputs_come_from(rest):
    body = page(rest, "/ui/services")
    assert "<strong>GET /orders/{order_id}</strong>" in body
    assert "http://orders.local:5000/" in body
    assert "expand={<span>expand</span>}" in body
    assert "X-Tenant: {tenant}" in body
    assert '<span class="chip mono">200</span><span class="chip mono">404</span>' in body
    assert 'from <code>body.order.lines</code>' in body and 'from <code>status</code>' in body


def test_a_service_without_request_is_shown_as_a_post_of_its_address(examples, example_services):
    body = page(examples, "/ui/services")
    assert f"<strong>POST {example_services['upper']}</strong>" in body
    assert "every 2xx (202 waits for the callback)" in body


def test_a_hostile_path_and_header_template_are_escaped(client):
    hostile = {**ORDERS, "name": "evil", "request": {"method": "GET", "path": "/o/{order_id}/<b>x</b>",
                                                      "headers": {"X-Tenant": "<script>{tenant}</script>"}}}
    response = client.post("/services", json=hostile)
    if response.status_code != 201:
        pytest.skip(f"the registration check refuses this path already: {response.get_json()['message']}")
    body = page(client, "/ui/services")
    assert "<b>x</b>" not in body and "<script>{tenant}" not in body
    assert "&lt;b&gt;x&lt;/b&gt;" in body


def test_dashboard_shows_each_limited_service_now(examples, example_services):
    service = {"name": "limited", "address": example_services["upper"], "max_concurrency": 2,
               "rate_limit": {"per_s": 5, "burst": 10}, "breaker": {"failure_threshold": 3, "cool_down_s": 30},
               "inputs": [{"name": "message", "type": "string"}], "outputs": [{"name": "message", "type": "string"}]}
    assert examples.post("/services", json=service).status_code == 201
    html = page(examples, "/ui/")
    row = html[html.index('<tr data-service="limited">'):]
    row = row[:row.index("</tr>")]
    assert "at most 2 in flight; 5/s, burst 10" in row
    assert '<span data-state="in-flight">0</span> of 2 in flight; 10.0 tokens' in row
    assert 'data-state="breaker">closed</span>' in row and "opens after 3, for 30 s" in row
    assert "Nothing is held back by flow control." in html


def test_dashboard_of_a_workflow_whose_last_hour_has_step_runs_but_no_event_ended(examples):
    runtime = examples.application.extensions["machinery"]
    runtime.rollups.step_finished("process-text", "step-0", "upper", "completed", 5.0)
    html = page(examples, "/ui/")
    row = html[html.index('<tr data-workflow="process-text">'):]
    row = row[:row.index("</tr>")]
    assert '<span class="figure" data-figure="hour-events">0</span> events,\n      none ended' in row
