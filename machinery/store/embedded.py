"""The embedded store's events collection: mongomock, made to answer the way MongoDB's indexes do.

mongomock answers every query, count, sort and unique check by scanning the whole collection, and
copies and compares whole documents on every write. The events collection is the one that grows, so
here it keeps secondary indexes in memory over the fields the Store queries by, re-indexed after every
write that can touch a document, and answers the Store's queries from them: lookups by `_id` or by an
equality on an indexed field, list_events' newest-first pages and their counts, and the oldest due
event a claim takes. It also skips partial unique indexes a document is outside of and updates one
event in place. Results are those of stock mongomock, ties and all; only the cost differs. Any other
query shape, or a field holding a value the indexes do not order (a number, a list, an aware date),
is left to mongomock's scan. Only `store.py` uses this module, and only for `mongomock://` URIs.
"""

from __future__ import annotations

import copy
import functools
import heapq
import itertools
from datetime import datetime
from typing import Any, Iterable

import bson
from bson import ObjectId
from pymongo.errors import DocumentTooLarge, OperationFailure, WriteError

from machinery.store.embedded_attrs import AttrQuery
from machinery.store.embedded_attrs import memberships as attr_memberships
from machinery.store.embedded_attrs import read as attr_read
from machinery.store.limits import COMMAND_OVERHEAD_BYTES, INSERT_TOO_LARGE, MAX_DOCUMENT_BYTES, UPDATE_TOO_LARGE

_IN_PLACE_OPERATORS = {"$set", "$unset", "$push", "$inc"}

# Fields an equality on a string finds documents by; only spent_tokens holds a list (of strings).
_EQUALITY_FIELDS = ("status", "workflow_id", "idempotency_key", "waiting.token_hash", "webhook.status", "spent_tokens")
_MANY_VALUED = "spent_tokens"
# What list_events filters on: a newest-first list is kept per value of each, and of both.
_LISTED_BY = ("workflow_id", "status")
_NEWEST_FIRST = [("ack_date", -1), ("_id", -1)]
# The claims: among documents with one of some values of the first field, the oldest due by the second.
_DUE = {"status": "lease_expires", "webhook.status": "webhook.next_at"}
# MongoDB's order between the types the indexes order (mongomock's filtering._get_compare_type).
_TYPE_ORDER = {type(None): 5, str: 15, ObjectId: 35, datetime: 45}
_DATE, _OBJECT_ID = 45, 35
_AS_IS = frozenset({str, int, float, bool, type(None), bytes, ObjectId})  # what mongomock's patch leaves as is
_MISSING = object()
_UNORDERED = object()
_ID_BYTES = 17  # an ObjectId `_id` in a document
_SLACK_BYTES = 16  # what a field may take in the document beyond what it takes in the update


def _refuse_insert(size: int) -> None:
    """Refuse a document past MongoDB's size limit as pymongo and MongoDB 7 do: pymongo before sending
    an insert command past the limit plus its command overhead (DocumentTooLarge); MongoDB for a
    document past the limit in a command that is not (a write error, code 2)."""
    if size > MAX_DOCUMENT_BYTES + COMMAND_OVERHEAD_BYTES:
        raise DocumentTooLarge(f"BSON document too large ({size} bytes) - the connected server supports BSON "
                               f"document sizes up to {MAX_DOCUMENT_BYTES + COMMAND_OVERHEAD_BYTES} bytes.")
    if size > MAX_DOCUMENT_BYTES:
        message = f"{INSERT_TOO_LARGE}. size in bytes: {size}, max size: {MAX_DOCUMENT_BYTES}"
        raise WriteError(message, 2, {"index": 0, "code": 2, "errmsg": message})


def _patched(value: Any) -> Any:
    """What mongomock's patch_datetime_awareness_in_document makes of a value (a copy of every
    document and list in it, dates to naive UTC milliseconds as MongoDB keeps them), without its
    type tests on every string and number of a document: an event has hundreds."""
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind is dict:  # the test inlined: a call per value is most of the cost
        return {key: item if type(item) in _AS_IS else _patched(item) for key, item in value.items()}
    if kind is list:
        return [item if type(item) in _AS_IS else _patched(item) for item in value]
    if kind is datetime:
        if value.tzinfo is None:
            return value.replace(microsecond=value.microsecond // 1000 * 1000)
        offset = value.utcoffset()
        if offset is not None:  # an aware date (an event's ack_date, as the API answers it): its UTC, naive
            return (value - offset).replace(tzinfo=None, microsecond=value.microsecond // 1000 * 1000)
    from mongomock.helpers import patch_datetime_awareness_in_document

    return patch_datetime_awareness_in_document(value)


def _plain_field_names(document: dict, top: bool = True) -> bool:
    """Whether mongomock's check of field names (no null character anywhere in the documents nested
    in it, no "$" at the top) surely passes: true of plain string names, and checked without the
    abstract-class tests mongomock makes of every value. Anything else is left to mongomock's check."""
    for name, value in document.items():
        if type(name) is not str or "\0" in name or (top and name.startswith("$")):
            return False
        kind = type(value)
        if kind is dict:
            if not _plain_field_names(value, False):
                return False
        elif kind not in _AS_IS and kind is not list and kind is not datetime:
            return False
    return True


def _plain_update(update: dict) -> bool:
    """Whether an update only sets, unsets, increments (by whole numbers) or pushes onto top-level
    fields (no dots; of the `$push` modifiers only `$each` with a negative `$slice`, as a claim
    pushes): the shape of every step's and every claim's write, which _apply_plain applies."""
    for operator, fields in update.items():
        if operator not in ("$set", "$unset", "$push", "$inc") or type(fields) is not dict:
            return False
        for name, value in fields.items():
            if type(name) is not str or name in ("", "_id") or "." in name or name.startswith("$") or "\0" in name:
                return False
            if operator == "$inc" and type(value) is not int:
                return False
            if operator == "$push" and type(value) is dict and any(key.startswith("$") for key in value) and not (
                    set(value) == {"$each", "$slice"} and type(value["$each"]) is list
                    and type(value["$slice"]) is int and value["$slice"] < 0):
                return False
    return True


def _plain_fits(document: dict, update: dict) -> bool:
    """Whether a _plain_update's pushes and increments find the types they need in the document."""
    return (all(type(document.get(name, [])) is list for name in update.get("$push", ()))
            and all(type(document.get(name, 0)) is int for name in update.get("$inc", ())))


def _apply_plain(document: dict, update: dict) -> None:
    """Apply a _plain_update to a stored document in place, as mongomock's update does (its
    `_set_updater`, `_unset_updater`, `$inc` and `$push`), without testing its version and encoding
    each field on its own: the update is checked as BSON at once, before anything changes (_update).
    The update is already a copy (_patched), so its lists need no copy of their own."""
    for operator, fields in update.items():
        if operator == "$set":
            document.update(fields)
        elif operator == "$unset":
            for name in fields:
                document.pop(name, None)
        elif operator == "$inc":
            for name, amount in fields.items():
                document[name] = document.get(name, 0) + amount
        else:
            for name, value in fields.items():
                items = document.setdefault(name, [])
                if type(value) is dict and "$each" in value:
                    items.extend(value["$each"])
                    del items[:value["$slice"]]
                else:
                    items.append(value)


def _unique_fields(collection) -> set[str]:
    """The top-level fields any unique index of a mongomock collection covers (and `_id`)."""
    fields = {"_id"}
    for index in collection._store.indexes.values():
        if index.get("unique"):
            fields.update(key.split(".", 1)[0] for key, _ in index["key"])
    return fields


def partial_applies(partial: Any, document: dict, filter_applies) -> bool:
    """Whether a document is inside a partial index: `{field: {"$exists": True}}` on fields of plain
    embedded documents (every partial index of the Store's but one) is read directly, anything else
    by mongomock's `filter_applies`, a few microseconds a call on every insert."""
    if type(partial) is dict and len(partial) == 1:
        (field, condition), = partial.items()
        if type(condition) is dict and len(condition) == 1 and condition.get("$exists") is True:
            value: Any = document
            for name in field.split("."):
                if type(value) is not dict:
                    return filter_applies(partial, document)
                value = value.get(name, _MISSING)
                if value is _MISSING:
                    return False
            return True
    return filter_applies(partial, document)


def _string_equalities_hold(filter: dict, document: dict, filter_applies) -> bool:
    """Whether a document found by its `_id` matches the rest of the filter: equalities of top-level
    fields to strings (a holder's writes: `lease_owner`, `status`) compared directly where the document
    holds a string there too; anything else by mongomock's `filter_applies`."""
    for field, condition in filter.items():
        if field == "_id":
            continue
        if type(condition) is not str or "." in field or field.startswith("$"):
            return filter_applies(filter, document)
        value = document.get(field)
        if type(value) is not str:
            return filter_applies(filter, document)  # a list may hold it; anything else never equals it
        if value != condition:
            return False
    return True


def _field(document: dict, path: tuple[str, str | None]) -> Any:
    """The value at a path of one or two names through embedded documents: _MISSING when absent or
    under null, _UNORDERED when the path crosses anything else (mongomock would look inside a list)."""
    value = document.get(path[0], _MISSING)
    if path[1] is None or value is _MISSING or value is None:
        return value
    if not isinstance(value, dict):
        return _UNORDERED
    return value.get(path[1], _MISSING)


def _path(field: str) -> tuple[str, str | None]:
    first, _, second = field.partition(".")
    return first, second or None


def _strings(value: Any, many: bool) -> tuple[str, ...] | None:
    """The strings an equality on a string matches this value by; None when the value is something
    else an equality might still match (a number, a document, a list where one is not expected)."""
    if value is _MISSING or value is None:
        return ()
    if type(value) is str:
        return (value,)
    if many and type(value) is list and all(type(item) is str for item in value):
        return tuple(set(value))
    return None


def _sort_key(value: Any) -> tuple | None:
    """mongomock's sort key for a value (filtering.resolve_sort_key) as a tuple Python orders the same
    way; None for a value whose order is left to mongomock."""
    if value is _MISSING:
        return (1, 5, None)
    if type(value) is list:
        return None if value else (0, 5, None)
    rank = _TYPE_ORDER.get(type(value))
    if rank is None or (rank == _DATE and value.tzinfo is not None):
        return None
    return (1, rank, value.binary if rank == _OBJECT_ID else value)


def _asked_strings(condition: Any) -> tuple[str, ...] | None:
    """The strings an equality or `$in` condition asks for; None for any other condition."""
    if type(condition) is str:
        return (condition,)
    if (isinstance(condition, dict) and list(condition) == ["$in"] and isinstance(condition["$in"], list)
            and all(type(item) is str for item in condition["$in"])):
        return tuple(dict.fromkeys(condition["$in"]))
    return None


def _equalities(filter: dict) -> Iterable[tuple[str, tuple[str, ...]]]:
    """The (field, strings) conditions on indexed fields every document matching the filter meets."""
    for field, condition in filter.items():
        if field == "$and" and isinstance(condition, list):
            for part in condition:
                if isinstance(part, dict):
                    yield from _equalities(part)
        elif field in _EQUALITY_FIELDS:
            strings = _asked_strings(condition)
            if strings is not None:
                yield field, strings


def _due_before(condition: Any) -> datetime | None:
    """The date of a `{"$lte": date}` condition, as a claim asks; None for any other condition."""
    if isinstance(condition, dict) and list(condition) == ["$lte"]:
        date = condition["$lte"]
        if type(date) is datetime and date.tzinfo is None:
            return date
    return None


def _expiry(value: Any) -> Any:
    """A TTL-indexed value as the expiry index keeps it: a plain date; None for a value that never
    expires (mongomock: anything false); _UNORDERED for anything else, tested as mongomock does."""
    if type(value) is datetime and value.tzinfo is None:
        return value
    return _UNORDERED if value else None


def _expiring(ttl_indexes: dict) -> tuple[str, ...]:
    """The fields a collection's TTL indexes expire documents by (mongomock ignores compound ones)."""
    return tuple(sorted({next(iter(index["key"]))[0] for index in ttl_indexes.values() if len(index["key"]) == 1}))


_WORKFLOW, _STATUS = _EQUALITY_FIELDS.index("workflow_id"), _EQUALITY_FIELDS.index("status")
_SORTED_KINDS = frozenset({"newest", "due", "expires", "attr", "attr_key", "attr_values"})
_DUE_BY = tuple((_EQUALITY_FIELDS.index(field), date_field) for field, date_field in _DUE.items())
_EQUALITY_PATHS = tuple((_path(field), field == _MANY_VALUED) for field in _EQUALITY_FIELDS)
_DUE_PATHS = tuple(_path(date_field) for date_field in _DUE.values())
# The top-level fields _read reads: an update that changes none of them (TTL fields aside) leaves
# every index as it was.
_READ_ROOTS = frozenset(path.split(".", 1)[0]
                        for path in (*_EQUALITY_FIELDS, *_DUE.values(), "ack_date", "_id", "attrs"))


def _read(document: dict) -> tuple:
    """What the indexes read of a document: the strings of each equality field, the sort keys of its
    newest-first position and of its due dates. Compared first, so that a write that changes none of
    them (most of a step's) costs no more than reading them."""
    return (tuple([_strings(_field(document, path), many) for path, many in _EQUALITY_PATHS]),
            (_sort_key(document.get("ack_date", _MISSING)), _sort_key(document["_id"])),
            tuple([_sort_key(_field(document, path)) for path in _DUE_PATHS]),
            attr_read(document))


def _memberships(read: tuple, number: int) -> dict:
    """Every index the document numbered `number` (its insertion number) is in, with its entry there:
    the number in an equality index; in an ordered one, a tuple that sorts as mongomock's stable sort
    would (ties in insertion order) and ends in the number. An ("unordered", field) index holds the
    documents whose value of a field the indexes cannot answer for, so that queries on it fall back."""
    strings, newest, due, attrs = read
    entries = {}
    if attrs is None:
        entries["unordered", "attrs"] = number
    for field, values in zip(_EQUALITY_FIELDS, strings, strict=True):
        if values is None:
            entries["unordered", field] = number
        else:
            for value in values:
                entries["equal", field, value] = number
    if None in newest:
        entries["unordered", "ack_date"] = number
    else:
        entry = (*newest, -number)  # walked backwards, ties come out in insertion order
        entries["newest", ()] = entry
        workflow, status = strings[_WORKFLOW], strings[_STATUS]
        if workflow:
            entries["newest", ("workflow_id", workflow[0])] = entry
        if status:
            entries["newest", ("status", status[0])] = entry
        if workflow and status:
            entries["newest", ("workflow_id", workflow[0], "status", status[0])] = entry
        if attrs:
            attr_memberships(attrs, workflow[0] if workflow else None, entry, entries)
    for (position, date_field), date in zip(_DUE_BY, due, strict=True):
        for value in strings[position] or ():
            if date is None:
                entries["unordered", date_field] = number
            else:
                entries["due", _EQUALITY_FIELDS[position], value] = (date, number)
    return entries


class _Expiring:
    """What TTL expiry asks of in-memory lookups: `expiring` (the fields followed), `documents` and
    `_key` (a document's number to its key), and `_expiry_entries(field)`: the (date, number) pairs
    in date order, and the numbers of documents whose date is not plainly one."""

    def expired(self, index: dict, meets_expiry) -> list | None:
        """The keys of the documents a TTL index has expired, oldest date first (mongomock's
        CollectionStore._expire_documents, which scans every document on every read and write); None
        for an index on a field not followed here. `meets_expiry` is mongomock's test of one value."""
        import mongomock

        try:
            seconds = int(index["expireAfterSeconds"])
        except ValueError:
            return []
        if len(index["key"]) > 1:
            return []
        field = next(iter(index["key"]))[0]
        if field not in self.expiring:
            return None
        now = mongomock.utcnow()
        dated_entries, odd = self._expiry_entries(field)
        dated = itertools.takewhile(lambda entry: (now - entry[0]).total_seconds() >= seconds, dated_entries)
        numbers = [number for _, number in dated] + [
            number for number in odd if meets_expiry(self.documents[self._key[number]].get(field), seconds, now)]
        return [self._key[number] for number in numbers]


class _Indexes(_Expiring):
    """Secondary indexes over one collection's documents: sets of insertion numbers for equalities,
    sorted lists for orders. Kept by the store and the collection below; read by the collection."""

    reads = _READ_ROOTS  # the top-level fields they read of a document (an update elsewhere leaves them be)

    def __init__(self, documents: dict, expiring: tuple[str, ...] = ()):
        from sortedcontainers import SortedList

        self._sorted_list = SortedList
        self.status_position = _STATUS
        self.documents = documents
        self.expiring = expiring  # the fields TTL indexes expire documents by
        self._numbers = itertools.count()
        self._number: dict[Any, int] = {}  # key -> insertion number: mongomock breaks ties in that order
        self._key: dict[int, Any] = {}
        self._read: dict[Any, tuple] = {}
        self._indexes: dict[tuple, Any] = {}
        for key, document in documents.items():
            self.put(key, document)

    def put(self, key: Any, document: dict) -> None:
        """Index a document stored or changed under `key`, moving only the entries that changed."""
        read = _read(document)
        if self.expiring:
            read += (tuple([_expiry(document.get(field)) for field in self.expiring]),)
        old = self._read.get(key)
        if read == old:
            return
        number = self._number.get(key)
        if number is None:
            number = self._number[key] = next(self._numbers)
            self._key[number] = key
        entries = self._entries(read, number)
        if old is not None:
            for index, entry in self._entries(old, number).items():
                if entries.get(index) != entry:
                    self._remove(index, entry)
                else:
                    del entries[index]  # unchanged
        for index, entry in entries.items():
            self._add(index, entry)
        self._read[key] = read

    def drop(self, key: Any) -> None:
        """Forget a deleted document."""
        number, read = self._number.pop(key, None), self._read.pop(key, None)
        if number is not None:
            del self._key[number]
        if read is not None:
            for index, entry in self._entries(read, number).items():
                self._remove(index, entry)

    def _entries(self, read: tuple, number: int) -> dict:
        """A document's _memberships, and its entries in the expiry indexes its TTL indexes walk."""
        entries = _memberships(read[:4], number)
        for field, date in zip(self.expiring, read[4] if self.expiring else (), strict=True):
            if date is _UNORDERED:
                entries["unordered expiry", field] = number
            elif date is not None:
                entries["expires", field] = (date, number)
        return entries

    def _add(self, index: tuple, entry: Any) -> None:
        entries = self._indexes.get(index)
        if entries is None:
            entries = self._indexes[index] = (
                self._sorted_list() if index[0] in _SORTED_KINDS else set())
        entries.add(entry)

    def _remove(self, index: tuple, entry: Any) -> None:
        entries = self._indexes[index]
        entries.remove(entry)
        if not entries:
            del self._indexes[index]

    def _answers_for(self, *fields: str) -> bool:
        return not any(("unordered", field) in self._indexes for field in fields)

    def _documents_numbered(self, numbers: Iterable[int]) -> list:
        return [self.documents[self._key[number]] for number in numbers]

    def by_equality(self, filter: dict) -> list | None:
        """The documents an equality in the filter narrows it to (to be filtered further), in insertion
        order; None when it has no equality the indexes answer."""
        best = None
        for field, strings in _equalities(filter):
            if self._answers_for(field):
                found = [self._indexes.get(("equal", field, string), ()) for string in strings]
                if best is None or sum(map(len, found)) < sum(map(len, best)):
                    best = found
        if best is None:
            return None
        return self._documents_numbered(sorted(set().union(*best) if len(best) > 1 else best[0]))

    def _newest_scope(self, filter: dict) -> tuple | None:
        """The newest-first list a list_events filter ({}, workflow_id, status or both) is answered by."""
        if not set(filter) <= set(_LISTED_BY) or any(type(value) is not str for value in filter.values()):
            return None
        if not self._answers_for("ack_date", *filter):
            return None
        return "newest", tuple(item for field in _LISTED_BY if field in filter for item in (field, filter[field]))

    def _keyset(self, filter: dict) -> tuple[dict, tuple | None, tuple | None] | None:
        """A list_events filter split into its scope and the newest-first positions a cursor bounds it
        by: ack_date before a date, or at a date with an _id below one (Store._event_walks). The bounds
        are prefixes of the ordered entries, (ack_date key, _id key): entries from `low` up to `high`,
        `high` excluded. None when the filter is neither shape."""
        ack_date, oid = filter.get("ack_date", _MISSING), filter.get("_id", _MISSING)
        if ack_date is _MISSING:
            return filter, None, None
        scope = {key: value for key, value in filter.items() if key not in ("ack_date", "_id")}
        if oid is _MISSING and isinstance(ack_date, dict) and list(ack_date) == ["$lt"]:
            date = _sort_key(ack_date["$lt"])
            return (scope, None, (date,)) if date is not None and date[1] == _DATE else None
        if isinstance(oid, dict) and list(oid) == ["$lt"] and isinstance(oid["$lt"], ObjectId):
            date = _sort_key(ack_date)
            if date is not None and date[1] == _DATE:
                return scope, (date,), (date, _sort_key(oid["$lt"]))
        return None

    def count(self, filter: dict, limit: int | None = None) -> int | None:
        """How many documents match a list_events filter (with search attributes, up to `limit`); None
        for any other filter."""
        if not filter:
            return len(self._number)
        if "$and" in filter:
            query = AttrQuery(self, filter)
            return query.count(limit) if query.ok else None
        scope = self._newest_scope(filter)
        return None if scope is None else len(self._indexes.get(scope, ()))

    def page(self, filter: dict, sort: Any, skip: int, limit: int) -> list | None:
        """One page of the documents matching a filter in a sort's order, for the shapes list_events
        and the claims ask; None for any other."""
        if sort == _NEWEST_FIRST and "$and" in filter:
            query = AttrQuery(self, filter)
            return query.page(skip, limit) if query.ok else None
        if sort == _NEWEST_FIRST:
            keyset = self._keyset(filter)
            scope = None if keyset is None else self._newest_scope(keyset[0])
            if scope is None:
                return None
            entries = self._indexes.get(scope, ())
            _, low, high = keyset
            start = entries.bisect_left(low) if low is not None and entries else 0
            end = (entries.bisect_left(high) if high is not None and entries else len(entries)) - skip
            chosen = entries.islice(max(end - limit, start), end, reverse=True) if end > start else ()
            return self._documents_numbered(-entry[-1] for entry in chosen)
        for field, date_field in _DUE.items():
            if sort == [(date_field, 1)] and set(filter) == {field, date_field}:
                return self._due(filter, field, date_field, skip, limit)
        return None

    def _due(self, filter: dict, field: str, date_field: str, skip: int, limit: int) -> list | None:
        """The matching documents due by `date_field`, oldest first, merged from the sorted list kept
        per value of `field`: the walk stops at the first date after the one asked for."""
        from mongomock.filtering import filter_applies

        strings, before = _asked_strings(filter[field]), _due_before(filter[date_field])
        if strings is None or before is None or not self._answers_for(field, date_field):
            return None
        walk = heapq.merge(*(self._indexes.get(("due", field, string), ()) for string in strings))
        due = (self.documents[self._key[number]] for _, number in
               itertools.takewhile(lambda entry: entry[0][1] != _DATE or entry[0][2] <= before, walk))
        return list(itertools.islice((document for document in due if filter_applies(filter, document)),
                                     skip, skip + limit))

    def _expiry_entries(self, field: str) -> tuple:
        return self._indexes.get(("expires", field), ()), self._indexes.get(("unordered expiry", field), ())


@functools.cache
def _embedded_classes() -> tuple[type, type]:
    """The indexed subclasses of mongomock's collection and document store, with the cursor the
    collection makes (made once, on first use, so that importing this module does not import mongomock)."""
    from mongomock import collection as collection_module
    from mongomock import helpers
    from mongomock.collection import Collection, Cursor
    from mongomock.filtering import filter_applies
    from mongomock.store import CollectionStore
    from packaging import version

    # What mongomock's insert works out on every call, once.
    check_keys = helpers.PYMONGO_VERSION < version.parse("3.6")
    bson_encoder = collection_module.BSON

    class IndexedDocuments(CollectionStore):
        """A collection's documents, with its indexes kept in step with every document stored,
        replaced or deleted, including by TTL expiry, which deletes here directly, and which it
        finds through the indexes too. `lookups` makes them (a subclass may keep others)."""

        lookups = _Indexes

        def __setitem__(self, key, document):
            super().__setitem__(key, document)
            self.secondary.put(key, document)
            self.sizes.pop(key, None)

        def __delitem__(self, key):
            super().__delitem__(key)
            self.secondary.drop(key)
            self.sizes.pop(key, None)

        def drop(self):
            super().drop()
            self.secondary = self.lookups(self._documents)
            self.sizes = {}

        def create_index(self, index_name, index_dict):
            super().create_index(index_name, index_dict)
            self._follow_expiry()

        def drop_index(self, index_name):
            super().drop_index(index_name)
            self._follow_expiry()

        def _follow_expiry(self):
            """Re-index every document when the fields TTL indexes expire by change (rarely: at start)."""
            expiring = _expiring(self._ttl_indexes)
            if expiring != self.secondary.expiring:
                self.secondary = self.lookups(self._documents, expiring)

        def _remove_expired_documents(self):
            for index in self._ttl_indexes.values():
                expired = self.secondary.expired(index, self._value_meets_expiry)
                if expired is None:
                    self._expire_documents(index)
                for key in expired or ():
                    del self[key]

    class IndexedCursor(Cursor):
        """A cursor that reads a limited page of a shape the indexes answer from them, instead of
        sorting every matching document to keep a few."""

        _asked = None

        def _compute_results(self, with_limit_and_skip=False):
            if with_limit_and_skip and self._limit and isinstance(self._skip, int) and self._skip >= 0:
                asked = (self._factory, self._skip, self._limit)
                if self._asked != asked:
                    self._asked = asked
                    self._page = self.collection._indexed_page(
                        self._spec, self._sort, self._projection, self._skip, abs(self._limit))
                if self._page is not None:
                    return self._page
            return super()._compute_results(with_limit_and_skip)

    class IdLookups(Collection):
        """mongomock's collection, finding documents through the indexes wherever a query's shape lets it."""

        _writing = None  # the ids of the documents a general update went through, while it runs

        def _indexes(self):
            """This collection's indexes, or None when its documents are not the indexed ones."""
            store = self._store
            return store.secondary if type(store) is IndexedDocuments else None

        def _lookups(self):
            """What this collection's writes keep in step (a subclass's own lookups; here its indexes)."""
            return self._indexes()

        def find(self, *args, **kwargs):
            cursor = super().find(*args, **kwargs)
            cursor.__class__ = IndexedCursor
            return cursor

        def field_of(self, oid, name):
            """One top-level field of the document whose `_id` is `oid`, as stored (None when there is
            no such document or field): a find by `_id` projected to that field, without a cursor or
            a copy. Two reads of dicts, each atomic under the interpreter lock, so it needs no lock
            and changes nothing; a document past its TTL is seen until the next read or write
            removes it, as MongoDB's TTL monitor removes documents only now and then."""
            document = self._store._documents.get(oid)
            return None if document is None else document.get(name)

        def find_one(self, filter=None, *args, **kwargs):
            # Limited to one document, as pymongo's find_one asks, so that a claim reads one from an index.
            if filter is None:
                filter = {}
            if not isinstance(filter, dict):
                filter = {"_id": filter}
            return next(self.find(filter, *args, **kwargs).limit(1), None)

        def count_documents(self, filter, **kwargs):
            indexes = self._indexes()
            limit = kwargs.get("limit")
            if (indexes is not None and set(kwargs) <= {"limit"} and isinstance(filter, dict)
                    and (limit is None or (type(limit) is int and limit > 0))):
                self._store._remove_expired_documents()
                count = indexes.count(filter, limit)
                if count is not None:
                    return count if limit is None else min(count, limit)
            return super().count_documents(filter, **kwargs)

        def _indexed_page(self, spec, sort, projection, skip, limit):
            """A cursor's page read from the indexes, or None to leave it to mongomock."""
            indexes = self._indexes()
            if indexes is None or not isinstance(spec, dict):
                return None
            self._store._remove_expired_documents()
            documents = indexes.page(spec, sort, skip, limit)
            if documents is None:
                return None
            page = [self._copy_only_fields(document, projection, dict) for document in documents]
            if self.codec_options.tz_aware:
                page = [helpers.make_datetime_timezone_aware_in_document(document) for document in page]
            return page

        def _iter_documents(self, filter):
            documents = self._by_id(filter)
            if documents is None:
                documents = self._by_equality(filter)
            if documents is None:
                documents = super()._iter_documents(filter)
            return documents if self._writing is None else self._recorded(documents)

        def _by_id(self, filter):
            named = filter.get("_id") if isinstance(filter, dict) else None
            if isinstance(named, ObjectId):
                oids = (named,)
            elif (isinstance(named, dict) and list(named) == ["$in"] and isinstance(named["$in"], list)
                  and all(isinstance(oid, ObjectId) for oid in named["$in"])):
                oids = tuple(dict.fromkeys(named["$in"]))
            else:
                return None
            self._store._remove_expired_documents()
            stored = self._store._documents
            documents = [stored[oid] for oid in oids if oid in stored]
            if len(filter) == 1:  # the `_id` is the document's key: nothing left to check
                return iter(documents)
            return (document for document in documents if _string_equalities_hold(filter, document, filter_applies))

        def _by_equality(self, filter):
            indexes = self._indexes()
            if indexes is None or not isinstance(filter, dict):
                return None
            self._store._remove_expired_documents()
            documents = indexes.by_equality(filter)
            if documents is None:
                return None
            if not documents:
                filter_applies(filter, {})  # a bad filter raises, as mongomock's scan would make it
            return (document for document in documents if filter_applies(filter, document))

        def _recorded(self, documents):
            for document in documents:
                self._writing.append(document["_id"])
                yield document

        def _insert(self, data, session=None, ordered=True):
            # mongomock's insert of one document, without the version test it makes on every call
            # and with the cheaper copy of _patched; refused past MongoDB's size limit, as pymongo
            # and MongoDB refuse it (mongomock stores any size).
            if session or type(data) is not dict or check_keys or bson_encoder is None:
                if type(data) is dict:
                    _refuse_insert(len(bson.encode(data, check_keys=False)) + (0 if "_id" in data else _ID_BYTES))
                return super()._insert(data, session, ordered)
            if not _plain_field_names(data):
                if not all(isinstance(key, str) for key in data):
                    raise ValueError("Document keys must be strings")
                collection_module._validate_data_fields(data)
            size = len(bson_encoder.encode(data, check_keys=False)) + (0 if "_id" in data else _ID_BYTES)
            _refuse_insert(size)
            if "_id" not in data:
                data["_id"] = collection_module.ObjectId()
            key = data["_id"]
            if isinstance(key, dict):
                key = helpers.hashdict(key)
            # The stored documents themselves, not the store's `in`, which first expires documents past
            # their TTL: MongoDB expires them only now and then, and a document it has not expired
            # yet still holds its `_id`.
            if key in self._store._documents:
                raise collection_module.DuplicateKeyError("E11000 Duplicate Key Error", 11000)
            data = _patched(data)
            self._store[key] = data
            try:
                self._ensure_uniques(data)
            except collection_module.DuplicateKeyError:
                del self._store[key]
                raise
            if type(self._store) is IndexedDocuments:
                self._store.sizes[key] = size
            return data["_id"]

        def _ensure_uniques(self, new_data):
            for index in self._store.indexes.values():
                partial = index.get("partialFilterExpression")
                if index.get("unique") and (partial is None or partial_applies(partial, new_data, filter_applies)):
                    # mongomock checks a document it updates before the update returns, while it
                    # is changed in place: index it first, so that the check finds it as it is.
                    self._reindex([new_data["_id"]])
                    return super()._ensure_uniques(new_data)
            return None

        def _update(self, spec, document, upsert=False, manipulate=False, multi=False, check_keys=False,
                    **options):
            # mongomock snapshots and compares the whole document on every update, only to tell
            # "modified" from "matched" and to roll back a unique-index clash. An update of one
            # event by `_id`, with plain operators on fields no unique index covers, can clash with
            # nothing, so it is applied in place; it counts as modified whenever it matched.
            oid = spec.get("_id") if isinstance(spec, dict) else None
            if (upsert or multi or manipulate or check_keys or any(options.values())
                    or not isinstance(oid, ObjectId) or not isinstance(document, dict)
                    or not set(document) <= _IN_PLACE_OPERATORS
                    or {key.split(".", 1)[0] for fields in document.values() for key in fields} & _unique_fields(self)):
                return self._general_update(spec, document, upsert, manipulate, multi, check_keys, **options)
            document = _patched(document)
            existing = next(self._iter_documents(spec), None)
            if existing is not None:
                # Measured as pymongo encodes a command: the document it leaves must stay within
                # MongoDB's size limit. A value BSON cannot hold leaves it to mongomock's own checks.
                try:
                    written = len(bson_encoder.encode(document, check_keys=False))
                except (bson.errors.InvalidDocument, TypeError, ValueError, OverflowError):
                    written = None
                    getattr(self._store, "sizes", {}).pop(existing["_id"], None)
                if written is not None and written > MAX_DOCUMENT_BYTES + COMMAND_OVERHEAD_BYTES:
                    raise DocumentTooLarge("update command document too large")  # as pymongo, before sending
                try:
                    if written is None or self._sized_update(existing, document, written) is None:
                        if _plain_update(document) and _plain_fits(existing, document):
                            if written is None:  # what mongomock's $set checks
                                bson_encoder.encode(document.get("$set", {}), check_keys=False)
                            _apply_plain(existing, document)
                        else:
                            self._apply_update_document(existing, spec, document, False)
                finally:
                    if self._reads(document):
                        self._reindex([oid])
            matched = int(existing is not None)
            return {"n": matched, "nModified": matched, "ok": 1, "upserted": None, "updatedExisting": bool(matched)}

        def _sized_update(self, existing, document, written):
            """Keep an upper bound of each document's BSON size (exact at insert, then grown by the size
            of each update: a field set or pushed takes at most what it takes in the update, give or
            take a few bytes of names); when the bound passes MongoDB's limit, measure exactly, and
            refuse an update whose result is too large as MongoDB does (code 17419), leaving the
            document as it was. None when the update is left to the caller to apply."""
            store = self._store
            sizes = store.sizes if type(store) is IndexedDocuments else None
            if sizes is None:
                return None
            key = existing["_id"]
            slack = _SLACK_BYTES * sum(map(len, document.values()))
            known = sizes.get(key)
            if known is not None and known + written + slack <= MAX_DOCUMENT_BYTES:
                sizes[key] = known + written + slack
                return None
            exact = len(bson_encoder.encode(existing, check_keys=False))
            if exact + written + slack <= MAX_DOCUMENT_BYTES:
                sizes[key] = exact + written + slack
                return None
            before = copy.deepcopy(existing)
            self._apply_update_document(existing, {"_id": key}, document, False)
            after = len(bson_encoder.encode(existing, check_keys=False))
            if after > MAX_DOCUMENT_BYTES:
                existing.clear()
                existing.update(before)
                sizes[key] = exact
                raise WriteError(UPDATE_TOO_LARGE, 17419, {"index": 0, "code": 17419, "errmsg": UPDATE_TOO_LARGE})
            sizes[key] = after
            return after

        def _find_and_modify(self, *args, **kwargs):
            # MongoDB answers a findAndModify whose result is too large with a command error, which
            # pymongo raises as OperationFailure (an update's is a WriteError).
            try:
                return super()._find_and_modify(*args, **kwargs)
            except WriteError as error:
                if error.code != 17419:
                    raise
                raise OperationFailure(UPDATE_TOO_LARGE, 17419, {
                    "ok": 0.0, "errmsg": UPDATE_TOO_LARGE, "code": 17419, "codeName": "Location17419"}) from None

        def _general_update(self, *args, **options):
            """mongomock's update, then every document it went through re-indexed (it changes them in
            place, out of the store's sight)."""
            self._writing = touched = []
            try:
                return super()._update(*args, **options)
            finally:
                self._writing = None
                self._reindex(touched)
                sizes = getattr(self._store, "sizes", None)
                for oid in touched if sizes is not None else ():
                    sizes.pop(oid, None)  # measured again when next needed

        def _reads(self, update):
            """Whether an update (of plain operators) may change what the indexes read of a document:
            one that sets, unsets or pushes only other fields (most of a step's) leaves them as they are."""
            lookups = self._lookups()
            if lookups is None:
                return False
            touched = {key.split(".", 1)[0] for fields in update.values() for key in fields}
            return not touched.isdisjoint(lookups.reads) or not touched.isdisjoint(lookups.expiring)

        def _reindex(self, ids):
            lookups, store = self._lookups(), self._store
            if lookups is None:
                return
            for oid in ids:
                key = helpers.hashdict(oid) if isinstance(oid, dict) else oid
                document = store._documents.get(key)
                if document is not None:
                    lookups.put(key, document)

    return IdLookups, IndexedDocuments


def _expected_internals(collection) -> bool:
    """Whether a collection is a stock mongomock one with the internals the subclasses build on."""
    from mongomock import collection as collection_module
    from mongomock import helpers
    from mongomock.collection import Collection
    from mongomock.store import CollectionStore

    store = getattr(collection, "_store", None)
    cursor = collection.find() if type(collection) is Collection else None
    return (type(collection) is Collection
            and all(hasattr(collection, name) for name in (
                "_iter_documents", "_ensure_uniques", "_update", "_apply_update_document", "_copy_only_fields",
                "_find_and_modify"))
            and all(hasattr(cursor, name) for name in (
                "_compute_results", "_factory", "_spec", "_sort", "_projection", "_skip", "_limit"))
            and all(hasattr(helpers, name) for name in (
                "hashdict", "make_datetime_timezone_aware_in_document", "patch_datetime_awareness_in_document",
                "PYMONGO_VERSION"))
            and all(hasattr(collection_module, name) for name in (
                "BSON", "ObjectId", "DuplicateKeyError", "_validate_data_fields"))
            and isinstance(store, CollectionStore)
            and all(hasattr(store, name) for name in (
                "_documents", "_remove_expired_documents", "indexes", "_ttl_indexes", "_expire_documents",
                "_value_meets_expiry", "create_index", "drop_index")))


def embedded_events(collection):
    """The embedded store's events collection, answering the Store's queries from in-memory indexes
    and checking partial unique indexes the way MongoDB's indexes do, without scanning every document.

    mongomock answers every query by scanning the whole collection, so listing events, counting them
    and looking for work grew with the number of events stored, as did each write. Results are
    unchanged (see the module's docstring). Writes must go through the collection returned (the
    Store's): an update made through another mongomock Collection object over the same documents is
    not seen by the indexes. Left as is if mongomock's internals are not the expected ones.
    """
    if not _expected_internals(collection):
        return collection
    id_lookups, indexed_documents = _embedded_classes()
    store = collection._store
    if type(store) is not indexed_documents:
        store.secondary = _Indexes(store._documents, _expiring(store._ttl_indexes))
        store.sizes = {}  # an upper bound of each document's BSON size, by key, where known
        store.__class__ = indexed_documents
    collection.__class__ = id_lookups
    return collection
