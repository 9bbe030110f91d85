"""Search: GET /events by search attributes as stored events grow from 1e3 to 1e5 (embedded store, in
process). Each query reads one page of 20 through the attribute indexes; the ratio column is each
latency over the same query's at the smallest size, in this run."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import time
from urllib.parse import parse_qsl

from bson import ObjectId

from benchmarks import common
from machinery import search

SIZES = tuple(int(size) for size in os.environ.get("BENCH_SEARCH_SIZES", "1000,10000,100000").split(","))
REPEATS = 60
UPPER = {"name": "upper", "address": "http://upper.local:5000/",
         "inputs": [{"name": "message", "type": "string"}], "outputs": [{"name": "message", "type": "string"}]}
ORDERS = {
    "name": "orders", "services": ["upper"], "search": ["customer_id", "order.total"],
    "inputs": [{"name": "message", "type": "string"}, {"name": "customer_id", "type": "string"},
               {"name": "order", "type": {"type": "object", "fields": [{"name": "total", "type": "int"}]}}],
    "outputs": [{"name": "message", "type": "string"}],
}
# customer_id takes 100 values (1 % of the events each), order.total 1,000 (0 to 999).
QUERIES = {
    "attr.customer_id=c7 (1 %)": "attr.customer_id=c7",
    "attr.order.total__gte=990 (1 %)": "attr.order.total__gte=990",
    "attr.order.total__gt=499 (50 %)": "attr.order.total__gt=499",
    "attr.customer_id__ne=c7 (99 %)": "attr.customer_id__ne=c7",
    "workflow + customer + total > 499 (0.5 %)": "workflow=orders&attr.customer_id=c7&attr.order.total__gt=499",
}


def _timed(call) -> dict:
    latencies = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    return common.summary(latencies)


def measure() -> tuple[list, dict]:
    rows, results = [], {}
    with contextlib.ExitStack() as stack:
        app = common.in_process(stack, "bench-search")
        client = app.test_client()
        store = app.extensions["machinery"].store
        client.post("/services", json=UPPER)
        client.post("/workflows", json=ORDERS)
        first = client.post("/e/orders?mode=async", json={"message": "hi", "customer_id": "c0", "order": {"total": 0}})
        template = store.get_event(first.get_json()["event_id"])
        template.pop("event_id")
        rng = random.Random(7)
        count, base = 1, {}
        for size in SIZES:
            while count < size:
                customer, total = f"c{rng.randrange(100)}", rng.randrange(1000)
                data = {"message": "hi", "customer_id": customer, "order": {"total": total}}
                store.insert_event({**template, "_id": ObjectId(), "data": data, "context": data,
                                    "attrs": [{"k": "customer_id", "v": customer}, {"k": "order.total", "v": total}]})
                count += 1
            results[size] = {}
            gc.collect()  # what filling left to collect is not the searches' cost
            workflow_id = store.get_workflow("orders")["workflow_id"]
            for label, query in QUERIES.items():
                arguments = parse_qsl(query)
                attrs = search.parse_filters(arguments)
                scope = workflow_id if ("workflow", "orders") in arguments else None
                alone = _timed(lambda attrs=attrs, scope=scope: store.list_events_page(
                    20, workflow_id=scope, attrs=attrs))
                def page(query=query):
                    answer = client.get(f"/events?{query}&page_size=20")
                    assert answer.status_code == 200, answer.get_json()
                    return answer.get_json()
                listed = page()
                cursor = listed["next_cursor"]
                timing = _timed(page)
                deeper = _timed(lambda query=query, cursor=cursor: client.get(
                    f"/events?{query}&page_size=20" + (f"&cursor={cursor}" if cursor else "")))
                base.setdefault(label, timing["median_ms"])
                results[size][label] = {"first page": timing, "next page": deeper, "store alone": alone,
                                        "total": listed["total"]}
                rows.append([f"{size:,}", label, listed["total"], timing["median_ms"], timing["p99_ms"],
                             deeper["median_ms"], alone["median_ms"], common.ratio(timing["median_ms"], base[label])])
    return rows, results


def run() -> dict:
    rows, results = measure()
    text = common.table("Search by attributes as stored events grow (embedded store, in process, ms)",
                        ["stored events", "query", "total (counted to 10,000)", "median", "p99",
                         "next page median", "Store alone median", "median / at 1e3"], rows)
    common.save("search", {"sizes": results, "table": text})
    return results


if __name__ == "__main__":
    run()
