"""Large values over HTTP: a sync event's reply with its outputs inline, and one value streamed."""

from __future__ import annotations

from flask import Response

from machinery.exceptions import InvalidData, NotFound
from machinery.runtime.payloads import Payloads, is_ref
from machinery.store.values import event_of, is_file_id


def resolving(given: str | None) -> bool:
    """?resolve: whether a sync reply carries its outputs inline (true, the default) or as references."""
    if given not in (None, "true", "false"):
        raise InvalidData(f"resolve must be true or false, not {given!r}", errors={"resolve": ["true or false"]})
    return given != "false"


def inline(store, event: dict, resolve: bool) -> dict:
    """The event a sync request answers: its outputs as the values themselves (resolve false: as
    their references, as GET /events/<id> shows them)."""
    outputs = event.get("outputs")
    if not resolve or not isinstance(outputs, dict) or not any(is_ref(item) for item in outputs.values()):
        return event
    return {**event, "outputs": Payloads(store, event["event_id"]).resolve(outputs)}


def download(store, event_id: str, ref: str) -> Response:
    """GET /events/<id>/values/<ref>: the value's JSON, streamed a few chunks at a time."""
    if store.event_status(event_id) is None:  # one field read: the event itself is not sent
        raise NotFound(f"no event {event_id!r}")
    if not is_file_id(ref) or event_of(ref) != event_id:
        raise NotFound(f"event {event_id} has no value {ref[:100]!r}: give the $ref that GET /events/{event_id} "
                       "shows", errors={"ref": ["not a value of this event"]})
    length = store.values.length(ref)
    if length is None:
        raise NotFound(f"event {event_id} has no value {ref!r}", errors={"ref": ["not stored"]})
    return Response(store.values.chunks_of(ref, length), mimetype="application/json", headers={
        "Content-Length": str(length), "Content-Disposition": f'attachment; filename="{ref}.json"'})
