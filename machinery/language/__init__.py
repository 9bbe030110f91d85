"""The definition language: the type model, the data-flow check, and what turns definitions into plans.

The model of version 2, written once here; the README explains it to users by example.

Types (``types``)
    A type is a name (``string int float bool object array any``, with today's aliases) or a
    structure: ``{"type": "array", "items": T}`` or ``{"type": "object", "fields": [field, ...]}``.
    A field is ``{"name", "type": T, "required": true, "nullable": false, "enum": [...],
    "description"}``; instead of ``type`` it may give ``schema`` (JSON Schema), converted to the same
    model when the definition is loaded (what the model cannot say becomes ``any``, and the reply's
    ``warnings`` name it). A bare ``object`` or ``array`` is an object or array of anything, so every
    version 1 field is a version 2 field. Compatibility is structural subtyping, and every problem,
    at registration or at run time, names a path: ``lines[3].sku: expected string, got int``.

Services: any HTTP endpoint
    ``address`` is the base URL. An optional ``request`` says how a call is made::

        {"method": "GET", "path": "/orders/{order_id}",
         "query": {"expand": "expand"},                       # parameter -> input; an array repeats it
         "headers": {"Authorization": "Bearer {secret.orders_token}", "X-Tenant": "{tenant}"},
         "body": ["note"] | "order" | null}                   # inputs of a JSON object, one object input, none

    ``path`` placeholders are RFC 6570 simple expansions of scalar inputs (percent-encoded, ``/``
    included); headers are templates of scalar inputs and ``{secret.NAME}``. Inputs placed nowhere go
    in the JSON body for POST, PUT and PATCH (unless ``body`` is given: then it says the whole body)
    and in the query string for GET and DELETE, which send no body. Without
    ``request`` a service is called as in version 1: POST of its declared inputs as a JSON object.
    An output may say where it comes from: ``"from": "<JMESPath over {status, headers, body}>"``
    (header names lower-case); without it, the reply body's top-level key of the output's name.
    ``success`` lists the statuses that are normal outcomes, replacing the default (every 2xx; 202
    means "wait for the callback" unless listed). Everything is checked at registration (each placeholder names
    a declared scalar input, each secret exists, each expression compiles) and compiled once per
    plan (``runtime.calls``), never per call.

Secrets
    ``PUT /secrets/<name>`` keeps a value encrypted (Fernet, ``MACHINERY_SECRETS_KEY``);
    ``MACHINERY_SECRET_<NAME>`` variables serve too. A value is read at each call (a rotation takes
    effect at the next one) and never appears in a reply, a record, a log line or an error: recorded
    headers that hold one show ``***``, and any occurrence in what a reply brings back is masked.

Workflows: a tree of steps (``plan``, ``expressions``)
    A version 2 workflow gives ``steps`` instead of ``services``: a list of steps, each with an ``id``
    unique in the whole workflow (``[A-Za-z_][A-Za-z0-9_-]{0,63}``). The kinds, as a user writes them::

        {"id": "order", "call": "orders-get", "in": {"order_id": "order_id"}, "out": {"order": "order"}}
        {"id": "big", "if": "order.total > `500`", "then": [...], "else": [...]}
        {"id": "route", "switch": {"cases": [{"when": "<expr>", "steps": [...]}, ...], "default": [...]}}
        {"id": "notify", "parallel": {"mail": [...], "sms": [...]}}
        {"id": "reserve", "map": "order.lines", "as": "line", "max_concurrency": 8,
         "steps": [...], "collect": {"reservations": "reservation"}}
        {"id": "child", "workflow": "<registered workflow>", "in": {...}, "out": {...}}
        {"id": "nap", "sleep": {"seconds": 30}}   or   {"sleep": {"until": "<expr: ISO 8601 string>"}}
        {"id": "job", "poll": "<service>", "in": {...}, "out": {...}, "until": "<expr over its outputs>",
         "interval_s": 5, "backoff": 1.0, "max_interval_s": 3600, "timeout_s": 3600}

    A ``poll`` calls its service, and while ``until`` (a ``bool`` expression over the service's outputs,
    typed against them) is false, parks the event and calls again ``interval_s`` later (times
    ``backoff`` after each poll, up to ``max_interval_s``), until it holds (its outputs are then
    written as a call's) or ``timeout_s`` has passed since the first poll (kind ``poll_timeout``).
    A failed call fails it as a call's failure would; a 202 counts as "not yet".

    ``in`` maps a service (or child workflow) input to a JMESPath expression over the context; an input
    it leaves out reads the context key of its own name, as in version 1. ``out`` maps an output to
    the context key it is written to; an output it leaves out is written under its own name. A bare
    key is an expression, so version 1's renames are the special case. ``else`` and ``default`` may be
    left out (nothing runs). A map runs its ``steps`` once per item of the array ``map`` gives, in a
    context of its own: the enclosing context, read-only, plus the item under ``as``; what the body
    writes stays in the item, except what ``collect`` gathers: each outer key becomes the array of
    that inner key (an expression over the item's final context), in item order (``null`` where an
    item lacks it). ``max_concurrency`` is 1 to 256 (default 8).

    Version 1 (``services`` + ``operations``) is the short form: its step ``i`` is the call step
    ``step-i`` with the renames as ``in``/``out`` (``plan.normalise``). Version 1 workflows keep their
    linear plan and executor, unchanged; the tree is planned and run for ``steps``.

    The check (``plan.plan_tree``) walks every path with the type of each context key
    (``{"type", "required"}``, as ``dataflow``): every expression compiles once and its type is
    inferred (``expressions.infer``), so a field that does not exist is refused naming the step, the
    path (``reserve.in.sku``) and what was available; comparisons are between comparable types;
    conditions are ``bool``; a map's ``map`` is an array (never null) and its item has the array's item type; a
    child workflow's inputs and outputs are checked like a service's and a cycle through children is
    refused. Joins: after ``if``/``switch`` a key set on every path keeps its type (the wider of
    two, or ``any``), a key set on only some is optional and a later required use of it is refused
    naming the branch that lacks it; ``parallel`` branches never write the same key; a map's
    collected keys are arrays of the body's types. Limits, each a 422: nesting depth 16, 500 steps
    in all, ``max_concurrency`` 1 to 256 (a request body may nest ``plan.JSON_DEPTH`` levels of JSON, what
    a tree one level too deep needs, so that the check answers for it). What the check cannot prove (an
    ``any``) the runtime checks, naming the path.

    The plan of a tree (what an event snapshots; JSON, expressions as their source text, compiled
    once per plan by ``fingerprint``)::

        {"version": 2, "inputs": [...], "outputs": [...], "fingerprint": "<sha256 of the rest>",
         "services": {"<name>": <service, dataflow.SERVICE_FIELDS>},
         "workflows": {"<name>": {"workflow_id", "name", "version", "inputs", "outputs"}},
         "node_count": N, "tree": [node, ...]}

    with each node one of (every input and output of a call or child named in ``in``/``out``)::

        {"id", "kind": "call", "service": "<name>", "in": {"<input>": "<expr>"}, "out": {"<output>": "<key>"}}
        {"id", "kind": "if", "if": "<expr>", "then": [node...], "else": [node...]}
        {"id", "kind": "switch", "cases": [{"when": "<expr>", "steps": [node...]}], "default": [node...]}
        {"id", "kind": "parallel", "branches": [{"name": "<branch>", "steps": [node...]}]}
        {"id", "kind": "map", "map": "<expr>", "as": "<key>", "max_concurrency": n,
         "steps": [node...], "collect": {"<outer key>": "<expr over the item's context>"}}
        {"id", "kind": "workflow", "workflow": "<name>", "in": {...}, "out": {...}}
        {"id", "kind": "sleep", "seconds": s}  |  {"id", "kind": "sleep", "until": "<expr>"}
        {"id", "kind": "poll", "service", "in", "out", "until": "<expr>", "interval_s", "backoff",
         "timeout_s"[, "max_interval_s"]}

    A workflow definition with ``steps`` is stored as given, plus ``services`` (the names it calls,
    so the registry's "who uses this service" keeps working) and ``workflows`` (children it names).
"""
