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
"""
