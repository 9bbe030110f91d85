"""The MongoDB queries of event filters: search attributes, and the filters of bulk actions.

Search attributes are kept as ``attrs: [{"k": path, "v": value}, ...]`` (machinery.search), one entry
per path, indexed by ATTR_INDEX: (attrs.k, attrs.v, ack_date, _id). A filter on one attribute is an
``$elemMatch`` on k and v, so that the index bounds hold both (a plain ``attrs.k``/``attrs.v`` pair
could match k of one entry and v of another). An equality is then a walk of the index in the list's
order (newest first, no sort); a range (__gt, __lt, ...) reads the range of values and sorts the events
it finds. Several filters are an ``$and``: MongoDB walks one index range and checks the others.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

ATTR_INDEX = "events_by_attr"
ATTR_KEYS = [("attrs.k", 1), ("attrs.v", 1), ("ack_date", -1), ("_id", -1)]
OPERATORS = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte", "ne": "$ne"}


def attr_condition(path: str, operator: str, value: Any) -> dict:
    """The condition one attribute filter (machinery.search.parse_filters) puts on an event."""
    wanted = value if operator == "eq" else {OPERATORS[operator]: value}
    return {"attrs": {"$elemMatch": {"k": path, "v": wanted}}}


def attr_query(filters: Iterable[tuple[str, str, Any]] | None) -> dict:
    """The query part of attribute filters: {} for none, else an $and of their conditions."""
    conditions = [attr_condition(*entry) for entry in filters or ()]
    return {"$and": conditions} if conditions else {}


def event_query(*, workflow_id: str | None = None, status: str | None = None,
                attrs: Iterable[tuple[str, str, Any]] | None = None,
                created_after: datetime | None = None, created_before: datetime | None = None,
                error_kind: str | None = None, failed_step: Any = None) -> dict:
    """The query of a bulk action's filter. `created_*` bound ack_date (the time the event was accepted,
    after included, before excluded); `failed_step` is the step id (or a version 1 step's position)
    an event failed at, as its error names it."""
    query: dict[str, Any] = {}
    if workflow_id:
        query["workflow_id"] = workflow_id
    if status:
        query["status"] = status
    conditions = list(attr_query(attrs).get("$and", ()))
    if created_after is not None or created_before is not None:
        dates: dict[str, Any] = {}
        if created_after is not None:
            dates["$gte"] = created_after
        if created_before is not None:
            dates["$lt"] = created_before
        conditions.append({"ack_date": dates})
    if error_kind:
        conditions.append({"error.kind": error_kind})
    if failed_step is not None:
        conditions.append({"error.step": {"$in": list(failed_step)} if isinstance(failed_step, list) else failed_step})
    if conditions:
        query["$and"] = conditions
    return query
