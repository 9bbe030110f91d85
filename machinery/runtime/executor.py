"""Run one event step by step: call each service over HTTP, retry, and save every step as it ends."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping

from machinery import guard, search, secrets
from machinery.exceptions import InvalidData, MachineryError, ServiceCallError, TooLarge
from machinery.ids import random_hex, secret_hex
from machinery.language import dataflow, types
from machinery.runtime import calls, cancel, flow, payloads, tree, turns
from machinery.runtime.transport import CallFailed, Pool, thread_pool
from machinery.store import EPOCH, Store, pending_webhook, utcnow
from machinery.store.limits import EVENT_LIMIT_BYTES, LIMIT, MAX_DOCUMENT_BYTES, RecordSize, element_size, mib

LOG = logging.getLogger(__name__)

DEFAULT_RETRY = {"max_attempts": 3, "backoff_s": 0.5}
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 300.0
CONNECT_TIMEOUT_S = 5.0
# json.dumps with any argument builds an encoder at each call; a step's body needs the same one every time.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class Observer:
    """Hooks the executor calls as events and steps move; the default does nothing."""

    def call_attempt(self, service: str, outcome: str) -> None: ...
    def step_finished(self, service: str, status: str, duration_s: float, *, workflow: str = "",
                      step: str = "") -> None: ...
    def event_finished(self, workflow: str, status: str, *, duration_ms: float | None = None) -> None: ...
    def step_queued(self, service: str, why: str) -> None: ...


def backoff_delay(attempt: int, backoff_s: float, rand: Callable[[], float] = random.random) -> float:
    """The wait after failed attempt `attempt` (1-based): exponential, with jitter in [half, full]."""
    full = min(backoff_s * (2 ** (attempt - 1)), MAX_BACKOFF_S)
    return full / 2 + rand() * full / 2


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


@dataclass
class Outcome:
    """How one step ended: completed (outputs), waiting (202), or failed (error)."""

    status: str
    outputs: dict = field(default_factory=dict)
    error: dict | None = None
    attempts: int = 0
    attempt_log: list = field(default_factory=list)
    request: dict | None = None  # what a version 2 call sent: method, URL, its templated headers (secrets as ***)
    queued: dict | None = None  # held back by the service's flow control: why, and until when (status queued)


def new_span_id() -> str:
    return random_hex(64)


class Executor:
    """Runs events held by `owner`; knows nothing of Flask, talks to the store only through Store."""

    def __init__(self, store: Store, config: Mapping[str, Any], *,
                 connections: Callable[[], Pool] = thread_pool,
                 sleep: Callable[[float], None] = time.sleep,
                 observer: Observer | None = None,
                 rand: Callable[[], float] = random.random):
        self.store = store
        self.config = config
        self.connections = connections  # this thread's kept-alive connections (tests pass a fake)
        self.sleep = sleep
        self.observer = observer or Observer()
        self.rand = rand
        self.max_response_bytes = config.get("MAX_RESPONSE_BYTES", 64 * 1024 * 1024)
        store.offload_bytes = config.get("OFFLOAD_BYTES", store.offload_bytes)
        payloads.return_large_blocks()
        self.secrets = secrets.Keeper(store, config)
        self.secrets.check_at_start()
        self.flow = flow.Flow(store, config)

    # -- one call -----------------------------------------------------------------------

    def _headers(self, event: Mapping[str, Any], step_index: int, run: int, span_id: str,
                 callback_url: str | None) -> dict:
        event_id = event["event_id"]
        headers = {
            "Content-Type": "application/json",
            "X-Machinery-Event": event_id,
            "X-Machinery-Step": str(step_index),
            "Idempotency-Key": f"{event_id}:{step_index}" if run == 0 else f"{event_id}:{step_index}:{run}",
        }
        trace = event.get("trace") or {}
        if trace.get("request_id"):
            headers["X-Request-Id"] = trace["request_id"]
        if trace.get("trace_id"):
            headers["traceparent"] = f"00-{trace['trace_id']}-{span_id}-01"
        if callback_url:
            headers["X-Machinery-Callback"] = callback_url
        return headers

    def _read_body(self, reply) -> bytes:
        """Read a reply body, capped in size. Time is capped by the call's Deadline, which cuts the
        socket of a server that trickles or never closes."""
        cap = self.max_response_bytes
        declared = reply.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > cap:
            reply.close()
            raise ServiceCallError(f"reply body of {declared} bytes is larger than the {cap} allowed "
                                   "(MACHINERY_MAX_RESPONSE_BYTES)",
                                   kind="too_large", retryable=False, status=reply.status)
        raw = reply.read(cap)
        if len(raw) > cap:
            raise ServiceCallError(f"reply body is larger than the {cap} bytes allowed (MACHINERY_MAX_RESPONSE_BYTES)",
                                   kind="too_large", retryable=False, status=reply.status)
        return raw

    def call(self, service: Mapping[str, Any], body: bytes | None, headers: Mapping[str, str],
             compiled: calls.Call | None = None,
             prepared: calls.Prepared | None = None) -> tuple[int, dict | None]:
        """One call to a service: a POST of `body` (version 1), or the `prepared` request of a `compiled`
        call. Returns (status, the reply's JSON object, or its view for a compiled call) for a success,
        (202, None) for "wait for the callback"; raises ServiceCallError otherwise."""
        # Checked at every call, not only at registration: a host taken off the list is not called again.
        refused = guard.refusal(service["address"], self.config.get("ALLOWED_HOSTS"))
        if refused:
            raise ServiceCallError(f"not called: {refused}", kind="forbidden_host", retryable=False)
        timeout = float(service.get("timeout_s") or self.config.get("DEFAULT_TIMEOUT_S", 10.0))
        with guard.Deadline(timeout) as cutoff:
            try:
                response, raw = self._exchange(service, body, headers, timeout, compiled, prepared)
            except ServiceCallError as error:
                if cutoff.fired and error.kind == "connection":
                    raise ServiceCallError(f"no complete reply within {timeout:g} s", kind="timeout",
                                           retryable=True) from None
                raise
            if cutoff.fired:
                # Cut at the deadline, a reply may look whole (headers or a body ended by the close): it is not.
                response.close()
                raise ServiceCallError(f"no complete reply within {timeout:g} s", kind="timeout", retryable=True)
        status = response.status
        if compiled is not None:
            if compiled.success is not None and status in compiled.success:
                return status, compiled.view(status, response.headers, raw)
            if status == 202:
                return status, None
            if compiled.success is None and 200 <= status < 300:
                return status, compiled.view(status, response.headers, raw)
            if compiled.success is not None and 200 <= status < 300:
                raise ServiceCallError(f"replied {status}, which is not among its success statuses "
                                       f"{', '.join(map(str, sorted(compiled.success)))}: {_excerpt(raw)}",
                                       kind="http_status", retryable=False, status=status)
        elif status == 202:
            return status, None
        elif 200 <= status < 300:
            try:
                payload = json.loads(raw) if raw else None
            except (ValueError, RecursionError):  # RecursionError: a reply nested thousands of levels deep
                payload = None
            if not isinstance(payload, dict):
                raise ServiceCallError(f"replied {status} with a body that is not a JSON object: "
                                       f"{_excerpt(raw)}", kind="contract", retryable=False, status=status)
            return status, payload
        if 300 <= status < 400:
            raise ServiceCallError(
                f"replied {status} redirecting to {response.headers.get('Location', '?')}; "
                "redirects are not followed", kind="redirect", retryable=False, status=status)
        retryable = status == 429 or status >= 500
        raise ServiceCallError(
            f"replied {status}: {_excerpt(raw)}", kind="http_status", retryable=retryable, status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None)

    def _exchange(self, service: Mapping[str, Any], body: bytes | None, headers: Mapping[str, str],
                  timeout: float, compiled: calls.Call | None = None,
                  prepared: calls.Prepared | None = None) -> tuple[Any, bytes]:
        """Send the request and read the reply body; connection problems as ServiceCallError."""
        try:
            if prepared is None:
                reply = self.connections().post(service["address"], body, headers,
                                                connect_timeout=min(CONNECT_TIMEOUT_S, timeout), read_timeout=timeout)
            else:
                reply = self.connections().send(prepared.method, compiled.origin, prepared.path, prepared.body,
                                                prepared.headers, connect_timeout=min(CONNECT_TIMEOUT_S, timeout),
                                                read_timeout=timeout)
            return reply, self._read_body(reply)
        except CallFailed as error:
            message = f"no reply within {timeout:g} s" if error.kind == "timeout" else error.message
            raise ServiceCallError(message, kind=error.kind, retryable=error.retryable) from None

    # -- one step -----------------------------------------------------------------------

    def run_step(self, event: Mapping[str, Any], step: Mapping[str, Any], inputs: dict, run: int,
                 span_id: str, callback_url: str | None, values: payloads.Payloads | None = None) -> Outcome:
        """Call a step's service until it completes, waits, or fails for good.

        A version 1 service is POSTed its inputs; a service with a `request` (or `success` statuses,
        or outputs `from` the reply) is called as its compiled form says, its secrets read at each
        attempt and masked in whatever is kept of the reply."""
        service = step["service"]
        compiled = calls.compiled_for(service)
        limits = flow.limits_of(service)
        retry = {**DEFAULT_RETRY, **(service.get("retry") or {})}
        headers = self._headers(event, step["index"], run, span_id, callback_url)
        # `values`: the inputs may hold references (version 1 steps), sent as the values they stand for.
        if compiled is None:
            body = values.request_body(inputs) if values else _COMPACT.encode(inputs).encode()
        else:
            body, inputs = None, values.resolve(inputs) if values else inputs
        prepared = None
        used: list[str] = []
        log = []
        for attempt in range(1, retry["max_attempts"] + 1):
            started = time.monotonic()
            entry: dict[str, Any] = {"attempt": attempt, "at": utcnow()}
            try:
                if compiled is not None:
                    prepared = compiled.prepare(inputs, headers, self.secrets.value)
                    used = prepared.secrets
                if limits is None:
                    status, payload = self.call(service, body, headers, compiled, prepared)
                else:
                    status, payload = self.flow.through(
                        limits, functools.partial(self.call, service, body, headers, compiled, prepared), event)
            except flow.Held as held:
                # Not called: no attempt is spent; the step runs again, from its first attempt, when due.
                self.observer.step_queued(service["name"], held.kind)
                return Outcome("queued", attempts=attempt - 1, attempt_log=log, queued=held.note(step["index"]))
            except ServiceCallError as error:
                text = calls.mask(error.message, used) if used else error.message
                entry.update(outcome=error.kind, status=error.status, error=text, duration_ms=_ms(started))
                log.append(entry)
                self.observer.call_attempt(service["name"], error.kind)
                last = attempt == retry["max_attempts"]
                if not error.retryable or last:
                    message = text if attempt == 1 else f"{text} (after {attempt} attempts)"
                    return Outcome("failed", error={"kind": error.kind, "message": message,
                                                    "status": error.status},
                                   attempts=attempt, attempt_log=log, request=prepared and prepared.record)
                wait = backoff_delay(attempt, retry["backoff_s"], self.rand)
                if error.retry_after is not None:
                    wait = max(wait, error.retry_after)
                entry["retry_in_s"] = round(wait, 3)
                self.sleep(wait)
                continue
            body = None  # not sent again: a large request is let go before its reply is read into outputs
            entry.update(outcome="ok" if payload is not None or status != 202 else "accepted", status=status,
                         duration_ms=_ms(started))
            log.append(entry)
            if payload is None and status == 202:
                self.observer.call_attempt(service["name"], "accepted")
                return Outcome("waiting", attempts=attempt, attempt_log=log, request=prepared and prepared.record)
            outputs, problems = reply_outputs(service, compiled, payload, used, self.store.offload_bytes)
            if problems:
                payloads.forget_encoded()  # a large output checked, not stored: not kept by the thread
                self.observer.call_attempt(service["name"], "contract")
                entry["outcome"] = "contract"
                return Outcome("failed", error={"kind": "contract", "status": status,
                                                "message": "reply does not match the declared outputs: "
                                                + "; ".join(f"{k}: {v}" for k, v in problems.items()),
                                                "fields": problems},
                               attempts=attempt, attempt_log=log, request=prepared and prepared.record)
            self.observer.call_attempt(service["name"], "ok")
            return Outcome("completed", outputs=outputs, attempts=attempt, attempt_log=log,
                           request=prepared and prepared.record)
        raise AssertionError("unreachable: the loop returns on its last attempt")

    # -- one event ----------------------------------------------------------------------

    def run(self, event: dict, owner: str) -> dict:
        """Run an event held by `owner` from its next step until it completes, waits or fails.

        Every step's result is saved as the step ends (one write per step, the last one also
        finishing the event). Returns the event's final state as far as this run saw it. A run that
        raises has its error noted in the event (`last_error`), for the claim that gives up on it.
        """
        try:
            if event.get("concurrency"):  # the workflow limits its running events per key: wait for the turn
                queued = turns.take(self.store, event, owner)
                if queued is not None:
                    return queued
            if (event.get("plan") or {}).get("version") == 2:
                return tree.run_tree(self, event, owner)
            return self._run(event, owner)
        except Exception as error:
            self._note_error(event, owner, error)
            raise

    def _run(self, event: dict, owner: str) -> dict:
        steps = event["plan"]["steps"]
        context = dict(event.get("context") or {})
        index = event.get("next_step", 0)
        run = event.get("run", 0)
        size = RecordSize(event)
        max_claims = self.config.get("MAX_CLAIMS", 10)
        if event.get("claims_without_progress", 0) > max_claims:
            return self._stuck(event, owner, size, max_claims)
        if event.get("waiting"):
            return self._expire_waiting(event, owner, size)
        values = payloads.Payloads(self.store, event["event_id"])
        while index < len(steps):
            step = steps[index]
            span_id = new_span_id()
            inputs = dataflow.step_inputs(step, context)  # references resolved as the call is built
            started_at, started = utcnow(), time.monotonic()
            token = None
            callback_url = None
            base = event.get("callback_base")
            if base:
                token = new_callback_token(event["event_id"])
                callback_url = f"{base.rstrip('/')}/callbacks/{token}"
            outcome = self.run_step(event, step, inputs, run, span_id, callback_url, values)
            if outcome.status == "queued":
                return self._queue(event, owner, context, index, outcome.queued, size)
            # The inputs sent are not stored: the plan and the context before the step give them back
            # (events.for_display), and storing them would copy the context into every step.
            record = {
                "step": index, "service": step["service"]["name"], "status": outcome.status, "run": run,
                "attempts": outcome.attempts, "started_at": started_at,
                "span_id": span_id, "attempt_log": outcome.attempt_log,
            }
            if outcome.request is not None:
                record["request"] = outcome.request
            if outcome.status == "waiting":
                return self._wait(event, owner, record, context, index, token, size)
            finished_at = utcnow()
            record.update(finished_at=finished_at, duration_ms=_ms(started))
            self.observer.step_finished(record["service"], outcome.status, time.monotonic() - started,
                                        workflow=event.get("workflow_name", ""), step=f"step-{index}")
            if LOG.isEnabledFor(logging.DEBUG):
                LOG.debug("event %s step %d (%s) %s in %.1f ms", event["event_id"], index, record["service"],
                          outcome.status, record["duration_ms"], extra=log_fields(event, index, record["service"]))
            if outcome.status == "failed":
                record["error"] = outcome.error
                error = {**outcome.error, "step": index, "service": record["service"]}
                return self._finish(event, owner, record, context, index, "failed", size, error=error)
            record["outputs"] = values.outputs(outcome.outputs)
            changes: dict[str, Any] = {}
            dataflow.apply_outputs(step, record["outputs"], changes)
            if index + 1 == len(steps):
                return self._finish(event, owner, record, context, index + 1, "completed", size, changes=changes)
            after = {**context, **changes}
            update = {"$push": {"steps": record}, "$set": {
                "context": after, "next_step": index + 1, "updated_at": finished_at, "claims_without_progress": 0}}
            search.fold(event["plan"], update["$set"])
            grown = size.after(update, changes, record_bound(record))
            if grown > EVENT_LIMIT_BYTES:
                return self._too_large(event, owner, record, context, index, size, grown=grown)
            try:
                held = self.store.update_event(event["event_id"], update, owner=owner, expect=cancel.RUNNING)
            except TooLarge as refused:
                return self._too_large(event, owner, record, context, index, size, refused=refused)
            if not held and (cancelled := self._cancelled(event, owner, update)) is not None:
                return cancelled
            size.commit(update)
            context = after
            index += 1
            if not held:
                LOG.warning("event %s: lease lost at step %d; another worker resumes it", event["event_id"], index,
                            extra=log_fields(event, index, record["service"]))
                return {**event, "status": "running", "context": context, "next_step": index}
        # A plan with no step left (a replay past the end) completes at once.
        return self._finish(event, owner, None, context, index, "completed", size)

    def _finish(self, event, owner, record, context, index, status, size, outputs=None, error=None,
                changes=None, last_resort=False) -> dict:
        """End the event with one write (the step record, if any, pushed with it). `changes`: what the
        last step adds to `context`; the workflow's outputs are read from the context they make."""
        now = utcnow()
        changes = changes or {}
        final = {**context, **changes} if changes else context
        if status == "completed":
            outputs = dataflow.workflow_outputs(event["plan"], final)
        update: dict[str, Any] = {"$set": {
            "status": status, "context": final, "next_step": index, "outputs": outputs, "error": error,
            "updated_at": now, "finished_at": now, "lease_owner": None, "lease_expires": EPOCH,
            "claims_without_progress": 0,
        }}
        if event.get("callback_url"):
            update["$set"]["webhook"] = pending_webhook()
        search.fold(event["plan"], update["$set"])
        if record is not None:
            update["$push"] = {"steps": record}
        if event.get("waiting"):
            update["$unset"] = {"waiting": ""}
        if event.get("queued"):  # it ended (stuck, too large) before its queued step was admitted
            update.setdefault("$unset", {})["queued"] = ""
        grown = size.after(update, changes, record_bound(record) if record is not None else None)
        if grown > EVENT_LIMIT_BYTES and not last_resort:
            return self._too_large(event, owner, record, context, record["step"] if record else index, size,
                                   grown=grown)
        try:
            held = self.store.update_event(event["event_id"], update, owner=owner, expect=cancel.RUNNING)
        except TooLarge as refused:
            if not last_resort:
                return self._too_large(event, owner, record, context, record["step"] if record else index, size,
                                       refused=refused)
            # Even the failure does not fit: fail it with writes that make the record smaller.
            held = self.store.fail_too_large(event["event_id"], error, owner=owner)
        if not held and (cancelled := self._cancelled(event, owner, update)) is not None:
            return cancelled
        if not held:
            LOG.warning("event %s: lease lost before it could finish", event["event_id"],
                        extra=log_fields(event, index))
            return {**event, "status": "running"}
        tree.event_ended(self.store, self.observer, event, status, now)
        # Debug: a sync event's outcome is in the access log line of its request, and the worker logs
        # the events it runs; a line per event here cost 4 % of a loaded API process.
        LOG.debug("event %s %s", event["event_id"], status,
                  extra={**log_fields(event, index, record["service"] if record else None), "status": status})
        return {**event, "status": status, "context": final, "next_step": index, "outputs": outputs,
                "error": error, "finished_at": now, "steps": [*event.get("steps", []), *([record] if record else [])]}

    def _too_large(self, event, owner, record, context, index, size, grown=None, refused=None) -> dict:
        """The event's record would pass MongoDB's 16 MiB limit: fail the event for good at step `index`,
        with a write that leaves out what did not fit (the step's outputs), so that no claim calls the
        step's service again."""
        service = event["plan"]["steps"][index]["service"]["name"] if index < len(event["plan"]["steps"]) else None
        error = too_large_error(index, service, grown=grown, refused=refused)
        if record is not None:
            record = {key: value for key, value in record.items() if key != "outputs"}
            record.update(status="failed", error={"kind": "too_large", "message": error["message"]},
                          outputs_dropped=True)
        LOG.error("event %s: %s", event["event_id"], error["message"], extra=log_fields(event, index, service))
        return self._finish(event, owner, record, context, index, "failed", size, error=error, last_resort=True)

    def _stuck(self, event, owner, size, max_claims) -> dict:
        """Claimed more than MACHINERY_MAX_CLAIMS times without a step ending: fail it, naming the last error."""
        index = event.get("next_step", 0)
        steps = event["plan"]["steps"]
        service = steps[index]["service"]["name"] if index < len(steps) else None
        last = (event.get("last_error") or {}).get("message")
        message = (f"claimed {event['claims_without_progress'] - 1} times without a step ending "
                   f"(MACHINERY_MAX_CLAIMS={max_claims}); last error: "
                   + (last or "none recorded (the process that held it stopped, or lost its lease, each time)"))
        error = {"kind": "stuck", "step": index, "service": service, "message": message}
        LOG.error("event %s: %s", event["event_id"], message, extra=log_fields(event, index, service))
        return self._finish(event, owner, None, dict(event.get("context") or {}), index, "failed", size,
                            error=error)

    def _note_error(self, event, owner, error: Exception) -> None:
        """Record what made a run of the event raise, for the claim that gives up on it (kind `stuck`)."""
        message = error.message if isinstance(error, MachineryError) else str(error)
        text = f"{type(error).__name__}: {message}"[:500]
        try:
            self.store.update_event(event["event_id"], {"$set": {"last_error": {"at": utcnow(), "message": text}}},
                                    owner=owner)
        except Exception as failed:  # the store may be what failed
            LOG.warning("event %s: could not record its error (%s): %s", event.get("event_id"),
                        type(failed).__name__, text)

    def _wait(self, event, owner, record, context, index, token, size) -> dict:
        """A service answered 202: park the event until its callback comes or the deadline passes."""
        service = event["plan"]["steps"][index]["service"]
        timeout = float(service.get("callback_timeout_s") or self.config.get("CALLBACK_TIMEOUT_S", 3600.0))
        expires = utcnow() + timedelta(seconds=timeout)
        waiting = {**record, "token_hash": hash_token(token) if token else None, "expires": expires}
        update = {"$set": {
            "status": "waiting", "waiting": waiting, "context": context, "next_step": index,
            "updated_at": utcnow(), "lease_owner": None, "lease_expires": expires, "claims_without_progress": 0,
        }}
        grown = size.after(update, {})
        if grown > EVENT_LIMIT_BYTES:
            return self._too_large(event, owner, record, context, index, size, grown=grown)
        try:
            held = self.store.update_event(event["event_id"], update, owner=owner, expect=cancel.RUNNING)
        except TooLarge as refused:
            return self._too_large(event, owner, record, context, index, size, refused=refused)
        if not held:
            # Cancelled while the service took the work: its callback is refused (410) like any spent one.
            ended = close_waiting(waiting, status="cancelled", error={
                "kind": "cancelled", "message": "the event was cancelled while this step was called"})
            revoked = {"$set": {"context": context, "next_step": index}, "$push": {"steps": ended}}
            if waiting.get("token_hash"):
                revoked["$push"]["spent_tokens"] = waiting["token_hash"]
            cancelled = self._cancelled(event, owner, revoked)
            if cancelled is not None:
                return cancelled
        if not held:
            LOG.warning("event %s: lease lost while parking it", event["event_id"],
                        extra=log_fields(event, index, record["service"]))
            return {**event, "status": "running"}
        return {**event, "status": "waiting", "waiting": waiting, "context": context, "next_step": index}

    def _cancelled(self, event, owner, update) -> dict | None:
        """A write that expected the event running missed. If it was cancelled, keep what the step in
        flight did (`update` without its status) and let the event go: its final state is returned. None
        when the lease was lost instead."""
        if not cancel.settle(self.store, event["event_id"], owner, update):
            return None
        LOG.info("event %s: cancelled; the step in flight was recorded and nothing more runs", event["event_id"],
                 extra=log_fields(event))
        return self.store.get_event(event["event_id"])

    def _queue(self, event, owner, context, index, queued, size) -> dict:
        """The service's flow control held the step back: hand the event back to the store, pending until
        the note's due time, saying why. Not a claim without progress: the service is what is busy."""
        update = {"$set": {
            "status": "pending", "queued": queued, "context": context, "next_step": index, "updated_at": utcnow(),
            "lease_owner": None, "lease_expires": queued["until"], "claims_without_progress": 0}}
        size.after(update, {})
        if not self.store.update_event(event["event_id"], update, owner=owner):
            LOG.warning("event %s: lease lost while queueing it", event["event_id"], extra=log_fields(event, index))
            return {**event, "status": "running"}
        size.commit(update)
        return {**event, "status": "pending", "queued": queued, "context": context, "next_step": index}

    def _expire_waiting(self, event, owner, size) -> dict:
        """Claimed while waiting: the callback deadline passed, so the step fails."""
        waiting = close_waiting(event["waiting"], status="failed",
                                error={"kind": "callback_timeout",
                                       "message": "the service's callback did not come before its deadline"})
        index = waiting["step"]
        error = {**waiting["error"], "step": index, "service": waiting["service"]}
        return self._finish(event, owner, waiting, dict(event.get("context") or {}), index, "failed", size,
                            error=error)


# What a step record takes besides its outputs, error and attempt log (step, service name of at most
# 100 characters, status, run, attempts, two dates, duration, span id, and their names), and what one
# attempt_log entry takes besides its error message: generous upper bounds, so that counting a record
# costs no encoding of it.
RECORD_FIXED_BYTES = 512
ATTEMPT_FIXED_BYTES = 192


def record_bound(record: Mapping[str, Any]) -> int:
    """An upper bound of a step record's BSON size, as the executor writes it."""
    size = RECORD_FIXED_BYTES
    for key in ("outputs", "error"):
        if key in record:
            size += element_size(key, record[key])
    for entry in record.get("attempt_log") or ():
        size += ATTEMPT_FIXED_BYTES
        if entry.get("error"):
            size += 4 * len(entry["error"])  # UTF-8 takes at most 4 bytes a character
    unknown = set(record) - _RECORD_KEYS
    if unknown:  # a key this bound does not know of (another version's record): measured
        size += sum(element_size(key, record[key]) for key in unknown)
    return size


_RECORD_KEYS = {"step", "service", "status", "run", "attempts", "started_at", "finished_at", "duration_ms",
                "span_id", "attempt_log", "outputs", "error", "outputs_dropped"}


def too_large_error(index: int | None, service: str | None, grown: int | None = None,
                    refused: Exception | None = None) -> dict:
    """The error of an event failed because its record would pass MongoDB's document limit."""
    where = f"step {index}" + (f" ({service})" if service else "")
    if refused is not None:
        why = f"MongoDB refused to store the result of {where}: {refused}"
    else:
        why = f"the result of {where} would take the event's record to about {mib(grown)}, past {LIMIT}"
    return {"kind": "too_large", "step": index, "service": service, "limit_bytes": MAX_DOCUMENT_BYTES,
            "message": f"{why}. What did not fit was not stored, and the event failed for good: running it "
                       "again would fail the same way"}


def log_fields(event: Mapping[str, Any], step: int | None = None, service: str | None = None) -> dict:
    """The `extra=` of an executor log line: which event, step and service, and the request that sent it."""
    return {"event_id": event["event_id"], "workflow": event.get("workflow_name"), "step": step,
            "service": service, "request_id": (event.get("trace") or {}).get("request_id")}


def close_waiting(waiting: Mapping[str, Any], **outcome: Any) -> dict:
    """The record of a step that waited for its callback, as it ends now with `outcome`
    (status and outputs or error): its callback token's hash and deadline dropped, its duration set."""
    now = utcnow()
    record = {key: value for key, value in waiting.items() if key not in ("token_hash", "expires")}
    record.update(outcome, finished_at=now)
    started = record.get("started_at")
    if started is not None:
        record["duration_ms"] = round((now - started.replace(tzinfo=None)).total_seconds() * 1000, 3)
    return record


def reply_outputs(service: Mapping[str, Any], compiled: calls.Call | None, payload: Any,
                  secrets_used: list[str], offload_bytes: int | None = None) -> tuple[dict, dict]:
    """A reply's declared outputs and the problems of those missing or mistyped: read through the
    compiled call's `from` expressions from the reply's view (a version 2 service), or from the
    top level of its JSON object (version 1), with the secret values the call used masked in both."""
    found: dict[str, str] = {}
    if compiled is not None:
        payload = compiled.select(payload, found)
        if secrets_used:
            payload = calls.mask(payload, secrets_used)
    outputs, problems = check_outputs(service, payload, offload_bytes)
    problems.update(found)  # why an output is missing says more than that it is
    if problems and secrets_used:
        problems = calls.mask(problems, secrets_used)
    return outputs, problems


def callback_outputs(service: Mapping[str, Any], body: Any, headers: Mapping[str, str],
                     secret: Callable[[str], str]) -> tuple[dict, dict]:
    """The outputs a callback brings for a waiting step of `service`, and their problems.

    A service whose outputs say `from` has its callback read as a reply would be, through the same
    expressions, over ``{"status": 200, "headers": <the callback's headers, lower-case>, "body": body}``,
    so its body need not be an object. Any other service's callback body is the object of its outputs.
    The values of the secrets the service's requests send are masked in what is kept.
    Raises InvalidData when the body cannot hold outputs at all."""
    compiled = calls.compiled_for(service)
    if compiled is None or not compiled.maps_outputs:
        if not isinstance(body, dict):
            raise InvalidData(f"callback body must be a JSON object of outputs, got {types.json_type(body)}")
        view = body if compiled is None else {"status": 200, "body": body}
    else:
        view = {"status": 200, "body": body,
                "headers": {name.lower(): value for name, value in (headers or {}).items()}}
    used = []
    for name in compiled.secret_names if compiled is not None else ():
        try:
            used.append(secret(name))
        except MachineryError:
            continue  # a secret that cannot be read now was not sent either
    return reply_outputs(service, compiled, view, used)


def check_outputs(service: Mapping[str, Any], payload: Mapping[str, Any],
                  offload_bytes: int | None = None) -> tuple[dict, dict]:
    """Keep a reply's declared outputs and say which are missing or mistyped. A value past
    `offload_bytes` is kept as a file, not in a document: it need only be JSON (payloads.storable_problems)."""
    declared = service["outputs"]
    problems = types.check(payload, declared)
    outputs = {field["name"]: payload[field["name"]] for field in declared if field["name"] in payload}
    for name, value in outputs.items():
        unstorable = payloads.storable_problems(value, name, offload_bytes)
        if unstorable and name not in problems:
            problems[name] = "cannot be stored: " + "; ".join(unstorable[:3])
    return outputs, problems


def new_callback_token(event_id: str) -> str:
    """A single-use, unguessable token naming its event (so an early callback can wait for it)."""
    return f"{event_id}.{secret_hex(24)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


def _excerpt(raw: bytes, limit: int = 200) -> str:
    text = raw[:limit].decode("utf-8", "replace").strip() or "(empty body)"
    return text + ("..." if len(raw) > limit else "")
