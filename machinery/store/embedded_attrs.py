"""The embedded store's indexes of search attributes: what ATTR_INDEX (event_filters) is on MongoDB.

An event's ``attrs`` ({"k", "v"} entries, one per path) are read as (k, value key) pairs; a value key
orders values as MongoDB compares them (numbers with numbers whatever their type, then strings, then
booleans: type bracketing). Each pair puts the event, in list order (newest first), in three sorted
lists, kept for all events and for its workflow's: ("attr", scope, k, value) for equalities, ("attr_key",
scope, k) for every event with the attribute, and ("attr_values", scope, k) by value, then newest first,
for ranges. A query is answered from the list of the condition that matches fewest events (each count a
bisection); the others, and the status, are checked on the pairs the indexes keep of each event, and
anything else in the query by mongomock's own matcher. A query with other conditions only (a bulk
action's dates, error kind or step) walks the newest-first list of its workflow and status instead.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterator

_NUMBER, _STRING, _BOOL = 1, 2, 3
_RANGES = {"$gt", "$gte", "$lt", "$lte"}
_AFTER = (2,)  # sorts after every newest-first position (whose sort keys start with 0 or 1)
GATHER_MAX = 2000  # a range matching at most this many events is read from the values' list and sorted


def value_key(value: Any) -> tuple | None:
    """How the indexes order a value (None: one they do not keep, left to mongomock)."""
    kind = type(value)
    if kind is str:
        return (_STRING, value)
    if kind is bool:
        return (_BOOL, value)
    if kind is int or (kind is float and math.isfinite(value)):
        return (_NUMBER, value)
    return None


def read(document: dict) -> tuple | None:
    """The (k, value key) pairs of an event's attrs; () without any, None for a shape not kept."""
    attrs = document.get("attrs")
    if attrs is None:
        return ()
    if type(attrs) is not list:
        return None
    pairs = []
    for entry in attrs:
        if type(entry) is not dict or set(entry) != {"k", "v"} or type(entry["k"]) is not str:
            return None
        key = value_key(entry["v"])
        if key is None:
            return None
        pairs.append((entry["k"], key))
    if len({name for name, _ in pairs}) != len(pairs):
        return None  # one value per path, as machinery.search writes them
    return tuple(pairs)


def memberships(pairs: tuple, workflow: str | None, entry: tuple, entries: dict) -> None:
    """Add to `entries` the attribute indexes an event is in: `entry` is its newest-first position."""
    for scope in (None, workflow) if workflow else (None,):
        for name, key in pairs:
            entries["attr", scope, name, key] = entry
            entries["attr_key", scope, name] = entry
            entries["attr_values", scope, name] = (key, *entry)


def _condition(part: Any) -> tuple | None:
    """(k, operator, value key) of an attribute condition {"attrs": {"$elemMatch": {"k", "v"}}}."""
    if type(part) is not dict or list(part) != ["attrs"]:
        return None
    match = part["attrs"]
    if type(match) is not dict or list(match) != ["$elemMatch"]:
        return None
    inner = match["$elemMatch"]
    if type(inner) is not dict or set(inner) != {"k", "v"} or type(inner["k"]) is not str:
        return None
    wanted = inner["v"]
    if type(wanted) is dict:
        if len(wanted) != 1:
            return None
        operator, value = next(iter(wanted.items()))
        if operator not in _RANGES and operator != "$ne":
            return None
    else:
        operator, value = "$eq", wanted
    key = value_key(value)
    return None if key is None else (inner["k"], operator, key)


def _meets(key: tuple | None, operator: str, wanted: tuple) -> bool:
    if key is None:
        return False
    if operator == "$eq":
        return key == wanted
    if operator == "$ne":
        return key != wanted
    if key[0] != wanted[0]:
        return False  # type bracketing: a range on numbers matches numbers only
    if operator == "$gt":
        return key > wanted
    if operator == "$gte":
        return key >= wanted
    if operator == "$lt":
        return key < wanted
    return key <= wanted


class AttrQuery:
    """One query with attribute conditions, planned over an embedded store's _Indexes."""

    def __init__(self, indexes, filter: dict):
        self.indexes = indexes
        self.ok = False
        keyset = indexes._keyset(filter)
        if keyset is None or not indexes._answers_for("ack_date", "attrs"):
            return
        scope, self.low, self.high = keyset
        if not set(scope) <= {"workflow_id", "status", "$and"} or type(scope.get("$and")) is not list:
            return
        self.workflow, self.status = scope.get("workflow_id"), scope.get("status")
        if any(value is not None and type(value) is not str for value in (self.workflow, self.status)):
            return
        if self.workflow is not None and not indexes._answers_for("workflow_id"):
            return
        if self.status is not None and not indexes._answers_for("status"):
            return
        self.conditions, rest = [], []
        for part in scope["$and"]:
            condition = _condition(part)
            (self.conditions if condition else rest).append(condition or part)
        self.rest = {"$and": rest} if rest else None
        if not self.conditions:
            # Only other conditions (a bulk filter's dates, error kind, step): the newest-first list of
            # the workflow and status, each event checked on the rest.
            if self.rest is None:
                return
            self.scope = ("newest", tuple(item for field in ("workflow_id", "status") if field in scope
                                          for item in (field, scope[field])))
            self.chosen, self.others, self.status, self.count_of = None, [], None, 0
            self.ok = True
            return
        counted = [(self._count(condition), position) for position, condition in enumerate(self.conditions)]
        self.count_of, position = min(counted)
        self.chosen = self.conditions[position]
        self.others = self.conditions[:position] + self.conditions[position + 1:]
        self.ok = True

    # -- counting and walking one condition's lists -----------------------------------------------

    def _list(self, *index) -> Any:
        return self.indexes._indexes.get(index, ())

    def _range(self, name: str, operator: str, wanted: tuple) -> tuple[Any, int, int]:
        """The values' list of `name` and the slice of it a range condition matches."""
        values = self._list("attr_values", self.workflow, name)
        if not values:
            return values, 0, 0
        start, end = values.bisect_left(((wanted[0],),)), values.bisect_left(((wanted[0] + 1,),))
        if operator == "$gt":
            start = values.bisect_left((wanted, _AFTER))
        elif operator == "$gte":
            start = values.bisect_left((wanted,))
        elif operator == "$lt":
            end = values.bisect_left((wanted,))
        else:
            end = values.bisect_left((wanted, _AFTER))
        return values, start, max(start, end)

    def _count(self, condition: tuple) -> int:
        name, operator, wanted = condition
        if operator == "$eq":
            return len(self._list("attr", self.workflow, name, wanted))
        if operator == "$ne":
            every = self._list("attr_key", self.workflow, name)
            return len(every) - len(self._list("attr", self.workflow, name, wanted))
        _, start, end = self._range(name, operator, wanted)
        return end - start

    def _walk_list(self, entries) -> Iterator[tuple]:
        """A newest-first list's entries within the query's positions, newest first."""
        if not entries:
            return iter(())
        start = entries.bisect_left(self.low) if self.low is not None else 0
        end = entries.bisect_left(self.high) if self.high is not None else len(entries)
        return entries.islice(start, end, reverse=True) if end > start else iter(())

    def _candidates(self) -> Iterator[tuple]:
        """The newest-first positions of the events meeting the chosen condition."""
        if self.chosen is None:
            return self._walk_list(self._list(*self.scope))
        name, operator, wanted = self.chosen
        if operator == "$eq":
            return self._walk_list(self._list("attr", self.workflow, name, wanted))
        if operator in _RANGES and self.count_of <= GATHER_MAX:
            values, start, end = self._range(name, operator, wanted)
            chosen = [entry[1:] for entry in values.islice(start, end)] if end > start else []
            chosen = [entry for entry in chosen if (self.low is None or entry >= self.low)
                      and (self.high is None or entry < self.high)]
            return iter(sorted(chosen, reverse=True))
        every = self._walk_list(self._list("attr_key", self.workflow, name))
        return (entry for entry in every if _meets(self._value(-entry[-1], name), operator, wanted))

    def _value(self, number: int, name: str) -> tuple | None:
        for key, value in self.indexes._read[self.indexes._key[number]][3]:
            if key == name:
                return value
        return None

    # -- the answers ------------------------------------------------------------------------------

    def _matches(self) -> Iterator[dict]:
        from mongomock.filtering import filter_applies

        indexes, status, others, rest = self.indexes, self.status, self.others, self.rest
        plain = status is None and not others and rest is None
        for entry in self._candidates():
            number = -entry[-1]
            key = indexes._key[number]
            if not plain:
                read = indexes._read[key]
                if status is not None and read[0][indexes.status_position] != (status,):
                    continue
                if others:
                    pairs = dict(read[3])
                    if not all(_meets(pairs.get(name), operator, wanted) for name, operator, wanted in others):
                        continue
                if rest is not None and not filter_applies(rest, indexes.documents[key]):
                    continue
            yield indexes.documents[key]

    def count(self, limit: int | None) -> int:
        if self.status is None and not self.others and self.rest is None and self.low is None and self.high is None:
            return self.count_of
        matches = self._matches()
        return sum(1 for _ in (matches if limit is None else itertools.islice(matches, limit)))

    def page(self, skip: int, limit: int) -> list[dict]:
        return list(itertools.islice(self._matches(), skip, skip + limit))
