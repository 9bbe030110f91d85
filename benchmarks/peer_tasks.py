"""Celery tasks for the peers benchmark: one task per HTTP step, chained. Runs in benchmarks/.peers/venv only."""

from __future__ import annotations

import os
import threading

import requests
from celery import Celery

BROKER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bench", broker=BROKER, backend=BROKER)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                worker_prefetch_multiplier=1, task_acks_late=False, broker_connection_retry_on_startup=True)
_local = threading.local()


def _session() -> requests.Session:
    if getattr(_local, "session", None) is None:
        _local.session = requests.Session()
    return _local.session


@app.task(name="bench.call")
def call(message: str, url: str) -> str:
    """POST {"message"} to a service and return its message: one step of the chain."""
    reply = _session().post(url, json={"message": message}, timeout=10)
    reply.raise_for_status()
    return reply.json()["message"]


@app.task(name="bench.count")
def count(messages: list[str]) -> int:
    """The chord's callback: how many calls came back."""
    return len(messages)
