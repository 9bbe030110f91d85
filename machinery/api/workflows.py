"""The /workflows resource (and /w, the first prototype's alias): register after a data-flow check."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView

from machinery import registry
from machinery.api.body import Blueprint, page
from machinery.schemas import PageArgsSchema, WorkflowOutSchema, WorkflowSchema, page_of

bp = Blueprint("workflows", __name__, url_prefix="/workflows",
               description="Workflows: services chained by a checked data flow")
alias = Blueprint("workflows_alias", __name__, url_prefix="/w", description="Alias of POST /workflows")


def _store():
    return current_app.extensions["machinery"].store


def _register(definition):
    workflow, created = registry.register_workflow(_store(), definition)
    return workflow, 201 if created else 200


@bp.route("")
class Workflows(MethodView):
    @bp.arguments(PageArgsSchema, location="query")
    @bp.response(200, page_of(WorkflowOutSchema))
    def get(self, args):
        """List workflows, by name"""
        items, total = _store().list_workflows(args["page"], args["page_size"])
        return page(items, total, args)

    @bp.arguments(WorkflowSchema)
    @bp.response(201, WorkflowOutSchema, description="Registered")
    @bp.alt_response(200, schema=WorkflowOutSchema, description="Replaced: a new version of that name")
    def post(self, definition):
        """Register a workflow, or a new version of the one of that name"""
        return _register(definition)


@alias.route("")
class WorkflowsAlias(MethodView):
    @alias.arguments(WorkflowSchema)
    @alias.response(201, WorkflowOutSchema)
    @alias.alt_response(200, schema=WorkflowOutSchema)
    def post(self, definition):
        """Register a workflow (alias of POST /workflows)"""
        return _register(definition)


@bp.route("/<ref>")
class Workflow(MethodView):
    @bp.response(200, WorkflowOutSchema)
    def get(self, ref):
        """Read a workflow by id or name"""
        return _store().get_workflow(ref)

    @bp.response(204)
    def delete(self, ref):
        """Delete a workflow (its events are kept)"""
        _store().delete_workflow(ref)
