"""The /workflows resource (and /w, the first prototype's alias): register after a data-flow check."""

from __future__ import annotations

from flask import Response, current_app
from flask.views import MethodView
from marshmallow import EXCLUDE, Schema, fields, validate

from machinery import graph, registry
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


class CheckedSchema(Schema):
    """What POST /workflows/check answers for a definition that checks."""

    ok = fields.Boolean(required=True)
    plan = fields.Dict(required=True, metadata={
        "description": "the plan events of this definition would snapshot: a chain's steps, or a tree's "
                       "nodes (version 2)"})
    warnings = fields.List(fields.String(), required=True, metadata={
        "description": "where a schema said more than the type model can (it became any)"})
    graph = fields.String(metadata={
        "description": "with ?graph=: the workflow drawn as GET /workflows/{ref}/graph draws a registered one "
                       "(an SVG document, Mermaid or Graphviz DOT)"})


class CheckArgsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    graph = fields.String(validate=validate.OneOf(
        list(graph.FORMATS), error="unknown graph format {input!r}; use one of " + ", ".join(graph.FORMATS)), metadata={
        "description": "svg, mermaid or dot: also answer the checked workflow drawn, in `graph`"})


@bp.route("/check")
class WorkflowCheck(MethodView):
    # /workflows/check is also /workflows/{ref} with the ref "check": OPTIONS answers what this path
    # itself takes (check_options below), not the methods of the other route as well.
    provide_automatic_options = False

    @bp.arguments(CheckArgsSchema, location="query")
    @bp.arguments(WorkflowSchema)
    @bp.response(200, CheckedSchema, description="The definition checks; nothing is registered")
    def post(self, args, definition):
        """Check a workflow definition as registering it would, registering nothing"""
        plan = registry.check_workflow(_store(), definition)
        answer = {"ok": True, "plan": plan, "warnings": list(definition.get("warnings") or [])}
        if args.get("graph"):
            answer["graph"] = graph.render(plan, args["graph"], definition["name"])
        return answer


def check_options():
    return Response(status=200, headers={"Allow": "OPTIONS, POST"})


# On the app, not through the documenting blueprint: OPTIONS is not an operation of the served spec.
bp.record_once(lambda state: state.app.add_url_rule(
    f"{bp.url_prefix}/check", "workflows_check_options", check_options, methods=["OPTIONS"],
    provide_automatic_options=False))


@bp.route("/<ref>")
class Workflow(MethodView):
    @bp.response(200, WorkflowOutSchema)
    def get(self, ref):
        """Read a workflow by id or name"""
        return _store().get_workflow(ref)

    @bp.response(204)
    def delete(self, ref):
        """Delete a workflow (its events are kept; refused while a workflow runs it as a child)"""
        registry.delete_workflow(_store(), ref)
