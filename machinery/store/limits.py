"""What MongoDB refuses to store because of its size, how pymongo says so, and an event's size counted
write by write.

MongoDB keeps at most 16 MiB (16,777,216 bytes of BSON) in one document (its jstests/core/max_doc_size.js
shows the codes). An update whose result would be larger fails with code 17419 (8375908 in later
versions; 17420 for a whole replacement); a BSON object past 16 MiB + 16 KiB, with 10334 on the server
or, before a command that large is sent, with pymongo's `DocumentTooLarge`, which is a
`bson.errors.InvalidDocument` and not a `PyMongoError`; an insert of a document over 16 MiB in a command
under that, with code 2 ("object to insert too large"): pymongo 4 leaves that check to the server for
acknowledged writes. All of them are permanent: the same write fails the same way every time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

import bson
from bson import ObjectId
from pymongo.errors import DocumentTooLarge, OperationFailure

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # MongoDB's maxBsonObjectSize
COMMAND_OVERHEAD_BYTES = 16382  # what a command may add to it (pymongo's _COMMAND_OVERHEAD)
# The executor fails an event before its document reaches the limit, leaving this much for the
# writes it does not count (the failure itself, claims, webhook attempts, a callback token).
HEADROOM_BYTES = 64 * 1024
EVENT_LIMIT_BYTES = MAX_DOCUMENT_BYTES - HEADROOM_BYTES
LIMIT = "MongoDB's 16 MiB document limit (16,777,216 bytes of BSON)"
TOO_LARGE_CODES = (17419, 17420, 8375908, 10334)
INSERT_TOO_LARGE = "object to insert too large"  # code 2 (BadValue), as MongoDB words it
UPDATE_TOO_LARGE = f"Resulting document after update is larger than {MAX_DOCUMENT_BYTES}"  # code 17419


def is_too_large(error: BaseException) -> bool:
    """Whether a store error says a document or a command is past MongoDB's size limit."""
    if isinstance(error, DocumentTooLarge):
        return True
    if isinstance(error, OperationFailure):
        if error.code in TOO_LARGE_CODES:
            return True
        return error.code == 2 and INSERT_TOO_LARGE in str(error)
    return False


def mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


_SCALAR_BYTES = {bool: 1, float: 8, datetime: 8, type(None): 0, ObjectId: 12}
_SMALL = 16  # containers up to this many items are counted here; larger ones are encoded (in C)


def element_size(key: str, value: Any) -> int:
    """The bytes `key: value` takes inside a BSON document (type, name, value). Scalars, ASCII strings
    and small documents and arrays of them are counted without encoding: a call to the encoder costs
    more than counting a step record, and an aware date costs it more again."""
    kind = type(value)
    if type(key) is not str:
        return len(bson.encode({key: value})) - 5  # raises as the encoder would
    head = 2 + (len(key) if key.isascii() else len(key.encode()))
    fixed = _SCALAR_BYTES.get(kind)
    if fixed is not None:
        return head + fixed
    if kind is int:
        return head + (4 if -(2 ** 31) <= value < 2 ** 31 else 8)
    if kind is str and value.isascii():
        return head + 5 + len(value)
    if kind is dict and len(value) <= _SMALL:
        return head + 5 + sum([element_size(name, item) for name, item in value.items()])
    if kind is list and len(value) <= _SMALL:
        return head + 5 + sum([element_size(_INDEXES[index], item) for index, item in enumerate(value)])
    return len(bson.encode({key: value})) - 5


_INDEXES = [str(index) for index in range(_SMALL)]


def document_size(document: Mapping[str, Any]) -> int:
    return len(bson.encode(document))


class EventSize:
    """An event document's BSON size, kept up to date from the writes made to it.

    It starts from one encoding of the event as read; then a write costs only the encoding of what it
    writes: the values it sets, the items it pushes, and of the context only the keys that change
    (passed as `changes`), each key's size kept once known. The count is of the event as the Store
    hands it out (its id as a string `event_id`), a few bytes over the stored document.
    """

    def __init__(self, event: Mapping[str, Any]):
        self._event = event
        self.total = document_size(event)
        self._fields: dict[str, int] = {}  # element sizes of top-level fields, as last set or first read
        self._grown: dict[str, int] = {}  # what pushes (or context keys) added to a field since
        self._context: dict[str, int] = {}  # element sizes of context keys, likewise
        self._context_source = event.get("context") or {}
        self._lengths: dict[str, int] = {}  # lengths of the arrays pushed to
        self._pending: tuple | None = None

    def _field(self, key: str) -> int:
        size = self._fields.get(key)
        if size is None:
            size = self._fields[key] = element_size(key, self._event[key]) if key in self._event else 0
        return size + self._grown.get(key, 0)

    def _exists(self, key: str) -> bool:
        if key in self._fields:
            return self._fields[key] > 0 or self._grown.get(key, 0) > 0
        return key in self._event or key in self._grown

    def _context_key(self, key: str) -> int:
        size = self._context.get(key)
        if size is None:
            source = self._context_source
            size = self._context[key] = element_size(key, source[key]) if key in source else 0
        return size

    def after(self, update: Mapping[str, Mapping[str, Any]], changes: Mapping[str, Any] | None = None) -> int:
        """The size the event would have after `update` (top-level `$set`, `$push` of one item,
        `$unset`). When it sets `context`, `changes` are the context's keys that differ from the
        context as last written (None: a new context, measured whole). Remembered for commit()."""
        total = self.total
        fields: dict[str, int] = {}
        grown: dict[str, int] = {}
        context: dict[str, int] | None = {}
        for key, value in (update.get("$set") or {}).items():
            if key == "context" and changes is not None and self._exists("context"):
                for name, item in changes.items():
                    context[name] = element_size(name, item)
                    grown["context"] = grown.get("context", 0) + context[name] - self._context_key(name)
                total += grown.get("context", 0)
                continue
            if key == "context":
                context = None
            fields[key] = element_size(key, value)
            total += fields[key] - self._field(key)
        lengths = {}
        for key, item in (update.get("$push") or {}).items():
            length = self._lengths.get(key)
            if length is None:
                length = len(self._event.get(key) or ())
            grown[key] = element_size(str(length), item)
            if not self._exists(key):
                grown[key] += 7 + len(key)  # a new array: its type, name and length around the item
            lengths[key] = length + 1
            total += grown[key]
        for key in update.get("$unset") or {}:
            fields[key] = 0
            total -= self._field(key)
        self._pending = (total, fields, grown, context, lengths, update)
        return total

    def commit(self) -> None:
        """Take the size worked out by the last after() as the event's: its write was made."""
        total, fields, grown, context, lengths, update = self._pending
        self._pending = None
        self.total = total
        for key, size in fields.items():
            self._fields[key] = size
            self._grown.pop(key, None)
        for key, size in grown.items():
            self._grown[key] = self._grown.get(key, 0) + size
        self._lengths.update(lengths)
        if context is None:  # a new context: its keys are measured again when they change
            self._context, self._context_source = {}, update["$set"]["context"]
        else:
            self._context.update(context)


class RecordSize:
    """What an event's record takes, as one run of the executor writes it: cheap on every write,
    exact where it matters.

    The record carries `size_bound`, an upper bound of its BSON size in bytes, set by every write
    that can grow it. A write adds to it what it writes (each pushed item measured, each value set
    counted whole as if nothing were replaced), which costs one encoding of each step record; only
    when that passes EVENT_LIMIT_BYTES is the record measured exactly (an EventSize of it as this run
    has written it), and from then on every write. An event stored without `size_bound` is measured
    exactly from the start.
    """

    def __init__(self, event: Mapping[str, Any]):
        self._event = event
        self._written: list[Mapping] = []  # the updates this run has made, in order
        self._exact: EventSize | None = None
        self._pending: int | None = None
        self.bound = event.get("size_bound")
        if type(self.bound) is not int:
            self._exact = EventSize(event)
            self.bound = self._exact.total

    def after(self, update: dict, changes: Mapping[str, Any], pushed: int | None = None) -> int:
        """The size the record would have after `update` (which sets `context`, if at all, to the
        context as last written plus `changes`); puts it in the update as `size_bound`. `pushed`: an
        upper bound of what its one `$push` adds, when the caller knows one cheaper to work out."""
        fields = update.setdefault("$set", {})
        fields["size_bound"] = self.bound  # a whole number like the one it becomes: the same size
        if self._exact is None:
            size = self.bound + growth_bound(update, changes, pushed)
            if size > EVENT_LIMIT_BYTES:
                self._exact = EventSize(self._as_written())
        if self._exact is not None:
            size = self._exact.after(update, changes)
        fields["size_bound"] = self._pending = size
        return size

    def commit(self, update: Mapping[str, Mapping[str, Any]]) -> None:
        """The write last passed to after() was made."""
        if self._exact is not None:
            self._exact.commit()
        self.bound = self._pending
        self._written.append(update)

    def _as_written(self) -> dict:
        """The event as this run has written it so far."""
        document = dict(self._event)
        for update in self._written:
            document.update(update.get("$set") or {})
            for key, item in (update.get("$push") or {}).items():
                document[key] = [*(document.get(key) or ()), item]
            for key in update.get("$unset") or {}:
                document.pop(key, None)
        return document


def growth_bound(update: Mapping[str, Mapping[str, Any]], changes: Mapping[str, Any],
                 pushed: int | None = None) -> int:
    """An upper bound of what `update` adds to a record: every item pushed (`pushed`, when given,
    for its one push), every value set (of the context, the keys in `changes`), as if nothing it
    replaces were removed."""
    grown = 0
    for key, value in (update.get("$set") or {}).items():
        if key == "context":
            grown += sum([element_size(name, item) for name, item in changes.items()])
        else:
            grown += element_size(key, value)
    for key, item in (update.get("$push") or {}).items():
        grown += (element_size("99999", item) if pushed is None else pushed) + 7 + len(key)  # index, new array
    return grown


_PLAN_SIZES: dict[int, tuple[Any, int]] = {}  # plans are shared by every event of a workflow version


def new_event_bound(event: Mapping[str, Any]) -> int:
    """An upper bound of a new event's BSON size, measuring its plan once per plan object."""
    plan = event.get("plan")
    known = _PLAN_SIZES.get(id(plan))
    if known is None or known[0] is not plan:
        if len(_PLAN_SIZES) >= 256:
            _PLAN_SIZES.clear()
        known = _PLAN_SIZES[id(plan)] = (plan, element_size("plan", plan))
    data = element_size("data", event.get("data"))
    context = data + 3 if event.get("context") == event.get("data") else element_size("context", event.get("context"))
    rest = {key: value for key, value in event.items() if key not in ("plan", "data", "context")}
    return len(bson.encode(rest)) + known[1] + data + context + 16  # and the size_bound itself
