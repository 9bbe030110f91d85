"""Authentication of every request: which endpoints are open, which need a key, and which right.

- Open: /healthcheck, /readyz, /metrics (probes and the scrape), /openapi.json (it describes the
  API, it holds no data), /static (the UI's CSS and JS), /callbacks/<token> (the single-use,
  unguessable token is the credential).
- POST /e/<workflow>: an API key with the `send` right, or the workflow's own secret: its
  `X-Machinery-Token`, or an `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body>`. A workflow
  with a secret always asks for one, even when no API keys are configured.
- Everything else (services, workflows, events, retry, graphs, the UI): an API key; GET and HEAD
  need `read`, anything else `admin`. /secrets needs `admin` for every method.

A key is sent as `Authorization: Bearer <key>`, or as the password of HTTP Basic (any user name),
which is what a browser sends for the UI (Basic is offered to the UI, to reads and to the UI's script).
No key: 401 with `WWW-Authenticate`; a key without the right: 403. With no API keys configured, only
workflows' own secrets are checked.
"""

from __future__ import annotations

import base64
import binascii
import logging

from flask import Flask, current_app, g, request

from machinery import auth
from machinery.api.errors import reply
from machinery.config import is_embedded
from machinery.exceptions import NotFound

LOG = logging.getLogger(__name__)

OPEN_BLUEPRINTS = frozenset({"health", "callbacks", "api-docs"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_BLUEPRINTS = frozenset({"secrets"})
TOKEN_HEADER = "X-Machinery-Token"
SIGNATURE_HEADER = "X-Hub-Signature-256"
UI_HEADER = "X-Machinery-UI"
REALM = "machinery"


def init_app(app: Flask, settings) -> None:
    """Read the keys once, say loudly when there are none, and check every request."""
    ring = auth.keyring(settings.get("API_KEYS"))
    app.extensions["machinery_keys"] = ring
    if ring:
        LOG.info("authentication on: %d API keys (%s)", len(ring), ring.rights_summary())
    else:
        LOG.warning("NO AUTHENTICATION: MACHINERY_API_KEYS is not set, so anyone who can reach this port may "
                    "register services and workflows, read every event and send events; set "
                    "MACHINERY_API_KEYS=\"<key>:admin,...\" before exposing it")
    hosts = settings.get("ALLOWED_HOSTS")
    if not hosts and not is_embedded(settings.get("MONGO_URI", "")):
        LOG.warning("OUTBOUND CALLS UNRESTRICTED: MACHINERY_ALLOWED_HOSTS is not set, so service addresses and "
                    "callback URLs may name any host this process can reach (cloud metadata, databases, the "
                    "admin ports of internal services); set MACHINERY_ALLOWED_HOSTS=\"*.internal,10.0.0.0/8\"")
    app.before_request(check_request)


def _keys() -> auth.KeyRing:
    return current_app.extensions["machinery_keys"]


def presented_key() -> str | None:
    """The API key a request carries (Bearer, or the password of Basic); None when it carries none."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return "" if header else None


def unauthorized(message: str, invalid: bool):
    response = reply(401, message, headers={
        "WWW-Authenticate": f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid else "")})
    if _offers_basic():
        # A header of its own: browsers read one challenge a header, and skip a header whose first they do
        # not speak (Bearer).
        response.headers.add("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
    return response


def _offers_basic() -> bool:
    """Browsers do not speak Bearer: Basic (the key as the password) is offered where a browser may be
    asking, so that it prompts, or answers with the key already given for this realm. That is the UI's
    pages, a read (a link from the UI to a JSON record), and a call of the UI's own script, which says
    X-Machinery-UI: another site's page cannot send that header without a preflight, which this API
    refuses, so a form posted from elsewhere never gets the browser to add the reader's key to it."""
    return request.blueprint == "ui" or request.method in READ_METHODS or UI_HEADER in request.headers


def forbidden(message: str):
    return reply(403, message)


def check_request():
    """The before_request hook: None lets the request through, a response refuses it."""
    if request.url_rule is None or request.endpoint == "static" or request.blueprint in OPEN_BLUEPRINTS:
        return None  # unrouted (404/405 follow), static files, and the open endpoints
    if request.blueprint == "ingest":
        return _check_ingest()
    ring = _keys()
    if not ring:
        return None
    presented = presented_key()
    key = ring.find(presented) if presented else None
    if key is None:
        if presented is None:
            return unauthorized("this endpoint needs an API key: send Authorization: Bearer <key>", invalid=False)
        return unauthorized("the API key is not valid", invalid=True)
    # Secrets are admin business, even to read their names.
    right = "read" if request.method in READ_METHODS and request.blueprint not in ADMIN_BLUEPRINTS else "admin"
    if not key.allows(right):
        return forbidden(f"this API key lacks the {right!r} right needed to {request.method} {request.path}")
    g.principal = key.label
    return None


def _check_ingest():
    ring = _keys()
    workflow = _workflow_or_none(request.view_args.get("workflow_ref", "")) if request.view_args else None
    g.ingest_workflow = workflow  # the ingest view uses it rather than reading it again
    token_hash = (workflow or {}).get("ingest_token_hash")
    hmac_secret = (workflow or {}).get("ingest_hmac_secret")
    if not ring and not token_hash and not hmac_secret:
        return None
    presented = presented_key() if ring else None
    key = ring.find(presented) if presented else None
    if key is not None and key.allows("send"):
        g.principal = key.label
        return None
    token = request.headers.get(TOKEN_HEADER)
    signature = request.headers.get(SIGNATURE_HEADER)
    if token is not None and auth.verify_token(token, token_hash):
        g.principal = "workflow token"
        return None
    if signature is not None and auth.verify_signature(request.get_data(cache=True), signature, hmac_secret):
        g.principal = "workflow signature"
        return None
    if key is not None:
        return forbidden("this API key lacks the 'send' right needed to send events")
    offered = presented or token is not None or signature is not None
    accepted = [*(["Authorization: Bearer <key with the send right>"] if ring else []),
                *([f"{TOKEN_HEADER}: <the workflow's token>"] if token_hash else []),
                *([f"{SIGNATURE_HEADER}: sha256=<HMAC-SHA256 of the body>"] if hmac_secret else [])]
    if offered:
        return unauthorized("the credentials sent do not authenticate for this workflow; accepted: "
                            + "; ".join(accepted), invalid=True)
    return unauthorized("sending an event to this workflow needs credentials; accepted: " + "; ".join(accepted),
                        invalid=False)


def _workflow_or_none(ref: str):
    try:
        return current_app.extensions["machinery"].store.get_workflow(ref)
    except NotFound:
        return None


INGEST_PATH = "/e/{workflow_ref}"


def document(api, keyed: bool) -> None:
    """Describe the credentials in the OpenAPI spec as they are enforced.

    With API keys configured: a key (Bearer, or the password of Basic) everywhere but the open
    endpoints, and on POST /e/<workflow> a key or the workflow's own secret. Without: no security at
    all, but on POST /e/<workflow> the workflow's own secret, which only workflows that have one ask for.
    """
    spec = api.spec
    if keyed:
        spec.components.security_scheme("apiKey", {
            "type": "http", "scheme": "bearer",
            "description": "An API key from MACHINERY_API_KEYS (rights: admin, read, send)."})
        spec.components.security_scheme("apiKeyBasic", {
            "type": "http", "scheme": "basic",
            "description": "An API key from MACHINERY_API_KEYS as the password of HTTP Basic (any user name), "
                           "as the UI's browsers send it."})
        spec.options["security"] = [{"apiKey": []}, {"apiKeyBasic": []}]
    spec.components.security_scheme("ingestToken", {
        "type": "apiKey", "in": "header", "name": TOKEN_HEADER,
        "description": "The workflow's own ingest_token (POST /e/<workflow> only)."})
    spec.components.security_scheme("hubSignature", {
        "type": "apiKey", "in": "header", "name": SIGNATURE_HEADER,
        "description": "sha256=<hex HMAC-SHA256 of the raw body under the workflow's ingest_hmac_secret> "
                       "(POST /e/<workflow> only)."})
    ingest = ([{"apiKey": []}, {"apiKeyBasic": []}] if keyed else [{}]) + [{"ingestToken": []}, {"hubSignature": []}]
    # The operation was described when its blueprint was registered; what it asks for depends on this
    # app's keys, so it is set here, in the spec's own dict of paths.
    operation = spec.to_dict()["paths"].get(INGEST_PATH, {}).get("post")
    if operation is not None:
        operation["security"] = ingest
