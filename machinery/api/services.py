"""The /services resource (and /s, the first prototype's alias): register, list, read, replace, delete."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView

from machinery import guard, registry
from machinery.api.body import Blueprint, page
from machinery.schemas import PageArgsSchema, ServiceOutSchema, ServiceSchema, page_of

bp = Blueprint("services", __name__, url_prefix="/services",
               description="Services: HTTP endpoints with typed inputs and outputs")
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


@bp.route("/<ref>")
class Service(MethodView):
    @bp.response(200, ServiceOutSchema)
    def get(self, ref):
        """Read a service by id or name, with the workflows that use it"""
        service = _store().get_service(ref)
        service["used_by"] = [workflow["name"] for workflow in _store().workflows_using(service["name"])]
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
