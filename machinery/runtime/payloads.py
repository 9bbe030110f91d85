"""Large values in an event: kept in the store's `values` bucket, referenced from the event and its steps.

A value of the event's data, of a step's outputs, of a callback's outputs or of the workflow's outputs
whose size passes MACHINERY_OFFLOAD_BYTES is written as a file (``store.values``) and replaced, where
it is stored, by a reference. At rest a reference is a BSON DBRef, ``{"$ref": "values", "$id": <file
id>, "bytes": N, "sha256": ...}``: a valid one on every MongoDB version (a bare `$ref` key is not),
and a type no JSON a user sends can make, so that it is never mistaken for data. The API shows it as
``{"$ref": "<file id>", "bytes": N, "sha256": "..."}`` (`shown`).

References are resolved where a value is used: the inputs of a call, the expressions of a tree, a
sync event's reply. Type checks run on the values themselves: a service's reply is checked before
its outputs are offloaded, and a tree's inputs are read from the resolved context.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any, Mapping

from bson.dbref import DBRef

from machinery import guard
from machinery.config import DEFAULT_OFFLOAD_BYTES
from machinery.exceptions import InvalidData
from machinery.store.limits import element_size

COLLECTION = "values"
# The share of MACHINERY_OFFLOAD_BYTES the outputs of one step may keep inline all together (16 KiB
# by default): past it, their largest values are offloaded too, so that steps never add up to a
# large event document however many values just under the threshold each holds.
RECORD_SHARE = 16
MIN_OFFLOAD_BYTES = 1024  # below this a value stays inline whatever the budget


def is_ref(value: Any) -> bool:
    return type(value) is DBRef and value.collection == COLLECTION


def shown(ref: DBRef) -> dict:
    """A reference as the API shows it."""
    return {"$ref": ref.id, "bytes": ref.bytes, "sha256": ref.sha256}


def encoded(value: Any) -> bytes:
    """A value's JSON, as it is stored and as GET /events/<id>/values/<ref> sends it. The last value
    this thread encoded is kept with its JSON: a reply's output is checked by encoding it, then
    stored, and is encoded once for both."""
    last = getattr(_last, "encoded", None)
    if last is not None and last[0] is value:
        return last[1]
    data = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    _last.encoded = (value, data)
    return data


def forget_encoded() -> None:
    """Let go of the value this thread encoded last, and of its JSON: a value checked but not stored
    after all (its event refused, its reply failing the contract) is not kept until the thread's next
    large value, which in a pooled thread may be never."""
    _last.encoded = None


_last = threading.local()


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own default, before it raises it
_memory_set = False


def return_large_blocks() -> None:
    """Have glibc give every block of 128 KiB or more back to the system when it is freed.

    By default glibc raises that threshold to the size of the largest block freed (up to 32 MiB),
    so after a first large value each thread keeps the space of the large values it held in its own
    arena: under 4 concurrent 10 MB events the API's peak RSS was 330 MB with it, 230 MB without.
    Large values are short-lived here (a request, a reply, a value read back), so they are better
    mapped and unmapped each time. A no-op where the C library is not glibc."""
    global _memory_set
    if _memory_set:
        return
    _memory_set = True
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


def offload_bytes(store) -> int:
    return getattr(store, "offload_bytes", DEFAULT_OFFLOAD_BYTES)


class Payloads:
    """Offload and resolve the large values of one event; resolved values are kept for its run."""

    def __init__(self, store, event_id: str, threshold: int | None = None):
        self.store = store
        self.event_id = event_id
        self.threshold = threshold or offload_bytes(store)
        self._resolved: dict[str, Any] = {}

    # -- writing ----------------------------------------------------------------------------

    def ref(self, value: Any) -> DBRef:
        """Store one value (once per event and content) and answer its reference."""
        data = encoded(value)
        forget_encoded()  # not held past its use
        ref, sha256 = self.store.values.put(self.event_id, data, hashlib.sha256(data).hexdigest())
        return DBRef(COLLECTION, ref, bytes=len(data), sha256=sha256)

    def offload(self, values: Mapping[str, Any] | None, budget: int | None = None, checked: bool = True) -> Any:
        """`values` with each one past the threshold replaced by its reference; with a `budget`, the
        largest of the rest too, while what stays inline passes it. The mapping itself when nothing moves.
        `checked` False: the values were not checked as a document holds them (a tree's context, read by
        expressions out of offloaded values, whose keys need not follow MongoDB's rules): those that
        do not are offloaded too, whatever their size."""
        if not values:
            return values
        sizes = {key: _size(key, value) for key, value in values.items() if not is_ref(value)}
        moved = {key for key, size in sizes.items() if size > self.threshold}
        if not checked:
            moved |= {key for key in sizes if key not in moved and guard.storable_problems(values[key], key)}
        if budget is not None:
            inline = sum(size for key, size in sizes.items() if key not in moved)
            for key in sorted(sizes, key=sizes.get, reverse=True):
                if inline <= budget or sizes[key] < MIN_OFFLOAD_BYTES:
                    break
                if key not in moved:
                    moved.add(key)
                    inline -= sizes[key]
        if not moved:
            return values
        return {key: self.ref(value) if key in moved else value for key, value in values.items()}

    def outputs(self, values: Mapping[str, Any] | None) -> Any:
        """A step's (or a callback's) outputs as its record keeps them: within 1/RECORD_SHARE of the threshold."""
        return self.offload(values, self.threshold // RECORD_SHARE)

    # -- reading ----------------------------------------------------------------------------

    def value(self, ref: DBRef) -> Any:
        """The value a reference stands for (read once per run)."""
        known = self._resolved.get(ref.id, _MISSING)
        if known is _MISSING:
            data = self.store.values.read(ref.id)
            if data is None:
                raise LookupError(f"the value {ref.id} of event {self.event_id} is no longer stored")
            known = self._resolved[ref.id] = json.loads(data)
        return known

    def resolve(self, values: Any) -> Any:
        """A mapping (or a list) with its references replaced by their values, one level deep (where
        references are put); the same object when it holds none."""
        if is_ref(values):
            return self.value(values)
        if isinstance(values, dict):
            if not any(is_ref(item) for item in values.values()):
                return values
            return {key: self.value(item) if is_ref(item) else item for key, item in values.items()}
        if isinstance(values, list) and any(is_ref(item) for item in values):
            return [self.value(item) if is_ref(item) else item for item in values]
        return values

    def request_body(self, inputs: Mapping[str, Any]) -> bytes | bytearray:
        """The JSON object of a call's inputs, as sent: a referenced value's stored JSON is copied in as
        it is, into one buffer, never decoded into Python values and encoded again."""
        if not any(is_ref(value) for value in inputs.values()):
            return json.dumps(inputs, separators=(",", ":")).encode()
        body = bytearray(b"{")
        for number, (name, value) in enumerate(inputs.items()):
            body += (b"," if number else b"") + json.dumps(name).encode() + b":"
            if is_ref(value):
                if not self.store.values.read_into(value.id, body):
                    raise LookupError(f"the value {value.id} of event {self.event_id} is no longer stored")
            else:
                body += json.dumps(value, separators=(",", ":")).encode()
        body += b"}"
        return body

    def rehome(self, values: Mapping[str, Any] | None) -> Any:
        """Values referencing another event's files (a child workflow's outputs) as this event's own,
        so that they stay when the other event is removed."""
        if not values or not any(is_ref(item) for item in values.values()):
            return values
        return {key: self.ref(self.value(item)) if is_ref(item) and not
                item.id.startswith(self.event_id + "-") else item for key, item in values.items()}


_MISSING = object()


def storable_problems(value: Any, path: str, offload_bytes: int | None = None) -> list[str]:
    """What in a value cannot be kept, as guard.storable_problems says. A value past `offload_bytes`
    is kept as a file of JSON, not in a document: MongoDB's rules for keys do not apply to it, and it
    is checked by encoding it (finite numbers, valid Unicode), at the speed of the JSON encoder
    rather than key by key in Python. None: every value as a document holds it."""
    if offload_bytes is not None:
        try:
            if _size(path, value) > offload_bytes:
                encoded(value)
                return []
        except (ValueError, UnicodeEncodeError, RecursionError, TypeError, OverflowError):
            pass  # the key-by-key check names what is wrong
    return guard.storable_problems(value, path)


def check_storable(values: Mapping[str, Any], name: str, offload_bytes: int | None = None) -> None:
    """guard.check_storable for a mapping whose large values are kept as files."""
    if offload_bytes is None or not isinstance(values, dict):
        return guard.check_storable(values, name)
    problems: list[str] = []
    for key, value in values.items():
        problem = guard.key_problem(key)
        if problem:
            problems.append(f"{key}: {problem}" if isinstance(key, str) else problem)
            continue
        problems.extend(storable_problems(value, key, offload_bytes))
    if problems:
        raise InvalidData(f"{name} cannot be stored: " + "; ".join(problems[:5])
                          + (" ..." if len(problems) > 5 else ""), errors={name: problems})


def _size(key: str, value: Any) -> int:
    return element_size(key, value)
