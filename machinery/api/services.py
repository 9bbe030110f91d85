"""The /services resource (and /s, the first prototype's alias): register, list, read, replace, delete,
and import from an OpenAPI document."""

from __future__ import annotations

from flask import current_app, request
from flask.views import MethodView
from marshmallow import ValidationError
from werkzeug.routing import BaseConverter

from machinery import guard, registry, secrets
from machinery.api.body import BadBody, Blueprint, is_yaml_mimetype, page, parse_json, parse_yaml, read_body
from machinery.api.errors import _invalid
from machinery.exceptions import InvalidData, MachineryError, NotFound, StoreUnavailable
from machinery.import_schemas import ImportBodySchema, ImportOptionsSchema, ImportReportSchema
from machinery.language import openapi
from machinery.runtime import calls, flow
from machinery.schemas import PageArgsSchema, ServiceOutSchema, ServiceSchema, page_of


class ServiceRef(BaseConverter):
    """A service's id or name in a URL: any segment but `import`, which is POST /services/import's alone."""

    regex = r"(?!import$)[^/]+"


bp = Blueprint("services", __name__, url_prefix="/services",
               description="Services: HTTP endpoints with typed inputs and outputs")
bp.record_once(lambda state: state.app.url_map.converters.setdefault("service_ref", ServiceRef))
alias = Blueprint("services_alias", __name__, url_prefix="/s", description="Alias of POST /services")


def _store():
    return current_app.extensions["machinery"].store


def _allowed(definition):
    """Refuse (422) an address whose host is not in MACHINERY_ALLOWED_HOSTS."""
    guard.check_url(definition["address"], current_app.config["MACHINERY"].get("ALLOWED_HOSTS"), "address")
    return definition


def _register(definition):
    service, created = registry.register_service(_store(), _allowed(definition))
    return service, 201 if created else 200


@bp.route("")
class Services(MethodView):
    @bp.arguments(PageArgsSchema, location="query")
    @bp.response(200, page_of(ServiceOutSchema))
    def get(self, args):
        """List services, by name"""
        items, total = _store().list_services(args["page"], args["page_size"])
        return page(items, total, args)

    @bp.arguments(ServiceSchema)
    @bp.response(201, ServiceOutSchema, description="Registered")
    @bp.alt_response(200, schema=ServiceOutSchema, description="Replaced: a service of that name existed")
    def post(self, definition):
        """Register a service, or replace the one of that name"""
        return _register(definition)


@alias.route("")
class ServicesAlias(MethodView):
    @alias.arguments(ServiceSchema)
    @alias.response(201, ServiceOutSchema)
    @alias.alt_response(200, schema=ServiceOutSchema)
    def post(self, definition):
        """Register a service (alias of POST /services)"""
        return _register(definition)


@bp.route("/<service_ref:ref>")
class Service(MethodView):
    @bp.response(200, ServiceOutSchema)
    def get(self, ref):
        """Read a service by id or name, with the workflows that use it"""
        service = _store().get_service(ref)
        service["used_by"] = [workflow["name"] for workflow in _store().workflows_using(service["name"])]
        if flow.limits_of(service) is not None:
            service["flow"] = flow.state_of(_store().flow.state(service["name"]), service)
        return service

    @bp.arguments(ServiceSchema)
    @bp.response(200, ServiceOutSchema)
    def put(self, definition, ref):
        """Replace a service's definition (refused when it would break a workflow)"""
        return registry.replace_service(_store(), ref, _allowed(definition))

    @bp.response(204)
    def delete(self, ref):
        """Delete a service (refused while a workflow uses it)"""
        _store().delete_service(ref)


# -- POST /services/import -------------------------------------------------------------------

IMPORT_BODY_DOC = {"required": True, "content": {
    "application/json": {"schema": {"description": "an OpenAPI 3.0 or 3.1 document, or {\"url\": ...} with "
                                                   "the options", "type": "object"}},
    "application/yaml": {"schema": {"description": "an OpenAPI 3.0 or 3.1 document in YAML", "type": "object"}},
}}


def _document_from(raw: bytes, content_type: str, url: str):
    """Parse a fetched document by its content type (or its name's suffix), under the body rules."""
    mimetype = content_type.split(";")[0].strip().lower()
    path = url.split("?")[0].lower()
    as_yaml = is_yaml_mimetype(mimetype) or (not mimetype.endswith("json") and (
        path.endswith((".yaml", ".yml")) or not raw.lstrip().startswith(b"{")))
    try:
        return parse_yaml(raw) if as_yaml else parse_json(raw)
    except BadBody as error:
        raise InvalidData(f"the document at {url[:200]} cannot be read: {error.message}",
                          errors={"url": [error.message]}) from None


def _import_source(body, options: dict) -> tuple[dict, dict, str | None]:
    """(document, options, the document's URL) from the request's body and query options."""
    if isinstance(body, dict) and "openapi" not in body and "swagger" not in body and (
            "url" in body or "document" in body):
        given = ImportBodySchema().load(body)
        options = {**options, **{key: value for key, value in given.items() if key not in ("url", "document")}}
        if ("url" in given) == ("document" in given):
            raise InvalidData("give either url or document, not both", errors={"url": ["url or document"]})
        if "document" in given:
            return given["document"], options, None
        config = current_app.config["MACHINERY"]
        raw, content_type = openapi.fetch(given["url"], config.get("ALLOWED_HOSTS"),
                                          current_app.config.get("MAX_CONTENT_LENGTH") or 1024 * 1024)
        return _document_from(raw, content_type, given["url"]), options, given["url"]
    if not isinstance(body, dict):
        raise InvalidData("send an OpenAPI document (JSON or YAML), or {\"url\": ...}",
                          errors={"body": ["an OpenAPI document or {\"url\": ...}"]})
    return body, options, None


def _would_register(definition: dict) -> str:
    """What registering would do, with the same checks, storing nothing: 'would create' or 'would replace'."""
    store = _store()
    definition = calls.checked(definition, lambda name: secrets.known(store, name))
    try:
        store.get_service(definition["name"])
    except NotFound:
        return "would create"
    broken = {}
    for workflow in store.workflows_using(definition["name"]):
        try:
            registry.plan_workflow(store, workflow, replacing=definition)
        except MachineryError as error:
            broken[workflow["name"]] = error.errors
    if broken:
        raise InvalidData(f"replacing service {definition['name']!r} would break workflow"
                          f"{'s' if len(broken) > 1 else ''} {', '.join(broken)}", errors={"workflows": broken})
    return "would replace"


def _import_one(operation: openapi.Operation, dry_run: bool) -> dict:
    item = operation.report()
    if operation.service is None:
        return {**item, "outcome": "skipped"}
    try:
        definition = ServiceSchema().load(operation.service)
        _allowed(definition)
        if dry_run:
            return {**item, "outcome": _would_register(definition), "service": operation.service}
        service, created = registry.register_service(_store(), definition)
    except ValidationError as error:
        return {**item, "outcome": "refused", "reason": _invalid(error.messages), "errors": error.messages,
                "service": operation.service}
    except StoreUnavailable:
        raise
    except MachineryError as error:
        return {**item, "outcome": "refused", "reason": error.message, "errors": error.errors,
                "service": operation.service}
    return {**item, "outcome": "created" if created else "replaced", "service_id": service["service_id"],
            "service": operation.service}


@bp.route("/import")
class ServicesImport(MethodView):
    @bp.arguments(ImportOptionsSchema, location="query")
    @bp.doc(requestBody=IMPORT_BODY_DOC)
    @bp.response(200, ImportReportSchema, description="Each operation with its outcome: created, replaced, "
                                                      "skipped or refused, and why")
    def post(self, options):
        """Import an OpenAPI document: register one service per operation"""
        document, options, url = _import_source(read_body(request), options)
        conversion = openapi.convert(document, prefix=options.get("prefix", ""), base_url=options.get("base_url"),
                                     only=options.get("only"), document_url=url)
        dry_run = options.get("dry_run", False)
        services = [_import_one(operation, dry_run) for operation in conversion.operations]
        counts: dict[str, int] = {}
        for item in services:
            counts[item["outcome"]] = counts.get(item["outcome"], 0) + 1
        return {"title": conversion.title, "version": conversion.version, "openapi": conversion.openapi,
                "dry_run": dry_run, "counts": counts, "services": services,
                "secrets": [{"name": name, "holds": holds, "register": f"PUT /secrets/{name}"}
                            for name, holds in sorted(conversion.secrets.items())]}
