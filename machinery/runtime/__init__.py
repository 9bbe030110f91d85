"""Running events: the executor, the HTTP client that calls services, and the workers.

Version 1 plans (a list of steps) run in ``executor`` as before. A tree plan (``"version": 2``, see
``machinery.language``) runs in ``tree``: a scheduler of the tree, one small function per kind.

Instances. A node runs as an *instance* named by its path: ``order``, ``notify/sms-send``,
``reserve[42]/hold`` (item 42 of map ``reserve``; nested maps give ``a[1]/b[7]/c``). The instance
is the unit of record and of idempotency: a call's ``Idempotency-Key`` is ``<event>:<instance>``
(``:<run>`` appended after a retry or replay), so a service called twice by a resumed event can tell.

Records. Each call, child workflow and sleep that ends (or starts waiting) is one document of the
``step_runs`` collection, one write, unique on (event_id, run, instance)::

    {"event_id", "run", "instance", "node", "kind", "items": [indices of the enclosing maps],
     "item": <innermost index or null>, "service", "status": "completed" | "failed" | "waiting",
     "outputs", "error", "attempts", "attempt_log", "request", "span_id", "started_at", "finished_at",
     "duration_ms", "ack_date" (the event's: one TTL covers both collections),
     "token_hash" + "expires" (a call waiting for its callback), "until" (a sleep),
     "child_event_id" (a child workflow)}

No record copies a context: a map of 10,000 items writes 10,000 small documents (one per item
whose body is one call) and its event document stays small.

The event document of a tree event keeps ``context`` (the top-level context at the last
checkpoint), ``progress`` ({node id: {"n", "done", "failed", "running", "waiting", "taken"}}: a map's
items, a node's instances, the branch an ``if``/``switch`` took), the lease, ``run``/``runs`` and the
outcome; its ``steps`` stays empty. It is written when the tree parks, when it ends, and between
those at most once a second to refresh ``progress``: never more writes than finished steps.

Resuming. Conditions and expressions depend only on the context, so running the tree again from
the top with the records already written gives the same path: a claimed event (after a crash, a
callback, a timer or a child's end) is walked from the top, and an instance with a completed record
is not run again (its outputs are applied), a failed one ends the walk, a waiting one is looked at
(its callback came, its timer is due, its child ended). Only what had not finished runs. A retry or
replay is a new run; ``runs`` entries say from which step id (and map item) it starts, with which
``overrides``, and records of earlier runs serve what the new run does not redo.

Waiting. While any branch runs, others may wait; when nothing runs and something waits, the event
parks: status ``waiting``, ``lease_expires`` the earliest deadline (a callback's, a timer's). A
callback completes its record and wakes the event (``lease_expires`` now); so does a child event
that ends, for its parent. After parking, the executor looks once more at what it waits for, so a
callback that came in between is not missed. Timers live in the store: a sleeping event is
resumed by whichever worker claims it when it is due, also after every process restarted. A poll
step waits the same way between its calls: its one record holds the count of polls, the last
outputs and ``next_poll_at`` (the event's deadline), changed at each poll rather than added to.

Concurrency. Branches and map items run on threads of the process holding the event, a map at most
``max_concurrency`` items at once; calls in flight per process are bounded (``MACHINERY_MAX_CALLS``).
A branch's or item's final failure stops what has not started; what runs finishes and is recorded;
the event fails with the first error.

Cancelling (``runtime.cancel``). A cancel is a write to the event's document (status ``cancelled``),
seen by every process: the holder's writes expect the event running, and a walk reads the status
before it starts a call, a poll, a sleep or a child, so what is in flight finishes and is recorded
and nothing new starts. A paused workflow's new events are stored pending and held (a lease no
claim takes) until it is resumed.
"""
