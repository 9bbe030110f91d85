"""The HTTP API: one blueprint per resource.

Every error, from every endpoint, has one JSON shape (also in the OpenAPI spec as `Error`):

    {"code": 422, "status": "Unprocessable Entity",
     "message": "one sentence saying what went wrong",
     "errors": {... each field, step or item at fault ...}}

Bodies are JSON objects sent as `application/json`, or YAML sent as `application/yaml` (body.py reads
both under the same rules): another content type answers 415,
malformed JSON, an empty body, duplicate keys, NaN or a body nested too deeply answers 400,
and data that does not match a schema answers 422.
"""
