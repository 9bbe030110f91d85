"""The embedded store's step_runs collection: records found by their event and by their key
without scanning every record.

A tree event writes one record per finished step, so a 10,000-item map writes 10,000 of them, and
mongomock checks the unique (event_id, run, instance) index of every insert and update by scanning
the whole collection: each record cost more than the one before (18 ms each at 7,000 records).
Here the collection keeps, in memory, its records by event, by key and by callback token, and by
the date a TTL index expires them by, and finds the documents of a query through them wherever the
query names a string `event_id`, a string `token_hash`, or the whole key. The documents found are
then filtered as mongomock filters them, in the order it stores them, so the results are those of
stock mongomock; only the cost differs. A record whose field holds something the lookups do not
order (not a string, or a run that is not an int) sends the queries on that field back to
mongomock's scan. Only `store.py` uses this module, and only for `mongomock://` URIs.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

from machinery.store.embedded import (
    _UNORDERED,
    _embedded_classes,
    _expected_internals,
    _Expiring,
    _expiring,
    _expiry,
    partial_applies,
)

_MISSING = object()
_KEY = ("event_id", "run", "instance")


def _string(value: Any) -> Any:
    """A value as the string lookups keep it: the string, None for a value no string equality
    matches (absent or null), or _UNORDERED for anything else (a list might hold the string)."""
    if value is _MISSING or value is None:
        return None
    return value if type(value) is str else _UNORDERED


def _read(document: dict) -> tuple:
    """What the lookups read of a record: its event, its key (None when not plainly typed), its token."""
    get = document.get
    event, run, instance = _string(get("event_id", _MISSING)), get("run", _MISSING), get("instance", _MISSING)
    key = (event, run, instance) if type(event) is str and type(run) is int and type(instance) is str else None
    return event, key, _string(document.get("token_hash", _MISSING))


class _StepLookups(_Expiring):
    """The records of one collection by event, by key and by token, as insertion numbers (mongomock
    returns documents in the order they were stored), and the expiry dates TTL indexes walk."""

    reads = frozenset((*_KEY, "token_hash"))  # the fields they read of a record

    def __init__(self, documents: dict, expiring: tuple[str, ...] = ()):
        from sortedcontainers import SortedList

        self.documents = documents
        self.expiring = expiring
        self._numbers = itertools.count()
        self._number: dict[Any, int] = {}
        self._key: dict[int, Any] = {}
        self._read: dict[Any, tuple] = {}
        self.by_event: dict[str, set[int]] = {}
        self.by_key: dict[tuple, set[int]] = {}
        self.by_token: dict[str, set[int]] = {}
        self.unkeyed: dict[str, set[int]] = {}  # an event's records whose key is not plainly typed
        self.odd: dict[str, set[int]] = {"event_id": set(), "token_hash": set()}
        self.expires = {field: SortedList() for field in expiring}
        self.odd_expiry: dict[str, set[int]] = {field: set() for field in expiring}
        for key, document in documents.items():
            self.put(key, document)

    def put(self, key: Any, document: dict) -> None:
        read = (*_read(document), tuple([_expiry(document.get(field)) for field in self.expiring]))
        old = self._read.get(key)
        if read == old:
            return
        number = self._number.get(key)
        if number is None:
            number = self._number[key] = next(self._numbers)
            self._key[number] = key
        if old is not None:
            self._entries(old, number, remove=True)
        self._entries(read, number, remove=False)
        self._read[key] = read

    def drop(self, key: Any) -> None:
        number, read = self._number.pop(key, None), self._read.pop(key, None)
        if number is not None:
            del self._key[number]
        if read is not None:
            self._entries(read, number, remove=True)

    def _entries(self, read: tuple, number: int, *, remove: bool) -> None:
        event, key, token, dates = read

        def enter(index: dict, value: Any) -> None:
            if remove:
                entries = index[value]
                entries.discard(number)
                if not entries:
                    del index[value]
            else:
                index.setdefault(value, set()).add(number)

        for field, value, index in (("event_id", event, self.by_event), ("token_hash", token, self.by_token)):
            if value is _UNORDERED:
                (self.odd[field].discard if remove else self.odd[field].add)(number)
            elif value is not None:
                enter(index, value)
        if key is not None:
            enter(self.by_key, key)
        elif type(event) is str:
            enter(self.unkeyed, event)
        for field, date in zip(self.expiring, dates, strict=True):
            if date is _UNORDERED:
                (self.odd_expiry[field].discard if remove else self.odd_expiry[field].add)(number)
            elif date is not None:
                (self.expires[field].discard if remove else self.expires[field].add)((date, number))

    def narrowed(self, filter: Any) -> list | None:
        """The documents a query's equalities narrow it to (to be filtered further), in the order they
        were stored; None when it has none the lookups answer."""
        numbers = self._numbers_for(filter)
        if numbers is None:
            return None
        return [self.documents[self._key[number]] for number in sorted(numbers)]

    def key_count(self, asked: dict) -> int | None:
        """How many records hold the whole key `asked` (event_id, run, instance), from the lookups
        alone; None when that takes mongomock's filter (a value not plainly typed somewhere)."""
        event, run, instance = (asked.get(field, _MISSING) for field in _KEY)
        if (type(event) is not str or type(run) is not int or type(instance) is not str or self.odd["event_id"]
                or event in self.unkeyed):
            return None
        return len(self.by_key.get((event, run, instance), ()))

    def _numbers_for(self, filter: Any) -> set[int] | None:
        if not isinstance(filter, dict):
            return None
        event = filter.get("event_id", _MISSING)
        if type(event) is str and not self.odd["event_id"]:
            run, instance = filter.get("run", _MISSING), filter.get("instance", _MISSING)
            if type(run) is int and type(instance) is str and event not in self.unkeyed:
                return self.by_key.get((event, run, instance), set())
            return self.by_event.get(event, set())
        token = filter.get("token_hash", _MISSING)
        if type(token) is str and not self.odd["token_hash"]:
            return self.by_token.get(token, set())
        parts = filter.get("$and")
        if isinstance(parts, list):
            for part in parts:
                numbers = self._numbers_for(part)
                if numbers is not None:
                    return numbers
        return None

    def _expiry_entries(self, field: str) -> tuple:
        return self.expires[field], self.odd_expiry[field]


@functools.cache
def _step_classes() -> tuple[type, type]:
    """The step_runs subclasses of the embedded collection and of mongomock's document store."""
    from mongomock import collection as collection_module
    from mongomock import helpers
    from mongomock.collection import Collection
    from mongomock.filtering import filter_applies

    id_lookups, indexed_documents = _embedded_classes()

    class StepDocuments(indexed_documents):
        """The embedded document store (its lookups kept in step with every document stored, replaced or
        deleted, TTL expiry included), with the step records' lookups."""

        lookups = _StepLookups

    class StepLookups(id_lookups):
        """The embedded collection (its cheaper insert and its lookups by `_id`), finding the records
        of a query through their event, key or token."""

        def _lookups(self):
            store = self._store
            return store.secondary if type(store) is StepDocuments else None

        def _iter_documents(self, filter):
            documents = self._by_id(filter)
            if documents is None:
                documents = self._by_record(filter)
            if documents is None:
                documents = Collection._iter_documents(self, filter)
            return documents if self._writing is None else self._recorded(documents)

        def _by_record(self, filter):
            lookups = self._lookups()
            if lookups is None:
                return None
            self._store._remove_expired_documents()
            documents = lookups.narrowed(filter)
            if documents is None:
                return None
            if not documents:
                filter_applies(filter, {})  # a bad filter raises, as mongomock's scan would make it
            return (document for document in documents if filter_applies(filter, document))

        def _ensure_uniques(self, new_data):
            # mongomock's check, skipping a partial index the record is outside of, as MongoDB does.
            self._reindex([new_data["_id"]])
            for index in self._store.indexes.values():
                if not index.get("unique"):
                    continue
                partial = index.get("partialFilterExpression")
                if partial is not None and not partial_applies(partial, new_data, filter_applies):
                    continue
                asked = {}
                for key, _ in index["key"]:
                    try:
                        asked[key] = helpers.get_value_by_dot(new_data, key)
                    except KeyError:
                        asked[key] = None
                if index.get("sparse") and set(asked.values()) == {None}:
                    continue
                if partial is None and tuple(asked) == _KEY and (lookups := self._lookups()) is not None:
                    count = lookups.key_count(asked)  # the step_run index of every insert, without a filter
                    if count is not None:
                        if count > 1:
                            raise collection_module.DuplicateKeyError("E11000 Duplicate Key Error", 11000)
                        continue
                if partial is not None:
                    asked = {"$and": [partial, asked]}
                if len(list(itertools.islice(self._iter_documents(asked), 2))) > 1:
                    raise collection_module.DuplicateKeyError("E11000 Duplicate Key Error", 11000)

    return StepLookups, StepDocuments


def embedded_step_runs(collection):
    """The embedded store's step_runs collection, finding records without scanning them all (see the
    module's docstring). Writes must go through the collection returned (the Store's). Left as is if
    mongomock's internals are not the expected ones."""
    if not _expected_internals(collection):
        return collection
    lookups, documents = _step_classes()
    store = collection._store
    if type(store) is not documents:
        store.secondary = _StepLookups(store._documents, _expiring(store._ttl_indexes))
        store.sizes = {}
        store.__class__ = documents
    collection.__class__ = lookups
    return collection

