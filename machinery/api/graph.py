"""GET /workflows/<ref>/graph: a workflow's resolved plan drawn as SVG, Mermaid or Graphviz DOT."""

from __future__ import annotations

from flask import Response, current_app
from flask.views import MethodView
from marshmallow import EXCLUDE, Schema, fields

from machinery import graph, registry
from machinery.api.body import Blueprint

# A flask-smorest Blueprint (not a plain route) so the drawing is in the OpenAPI description next to the
# other /workflows endpoints; the view returns a Response itself, which flask-smorest passes through as is.
bp = Blueprint("workflow_graph", __name__, url_prefix="/workflows",
               description="A workflow drawn: SVG, Mermaid or Graphviz DOT")


class GraphArgsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    # Not validated here: an unknown format is the core's InvalidData, answered 422 like every other.
    format = fields.String(load_default="svg", metadata={"enum": list(graph.FORMATS),
                                                         "description": "svg (default), mermaid or dot"})


@bp.route("/<ref>/graph")
class WorkflowGraph(MethodView):
    @bp.arguments(GraphArgsSchema, location="query")
    @bp.response(200)
    @bp.alt_response(404, response="NOT_FOUND")
    @bp.doc(responses={"200": {
        "description": "The drawing: SVG by default, text/plain for ?format=mermaid and ?format=dot",
        "content": {"image/svg+xml": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}},
    }})
    def get(self, args, ref):
        """Draw a workflow, by id or name: a box per step, edges labelled with context keys"""
        store = current_app.extensions["machinery"].store
        workflow = store.get_workflow(ref)
        text = graph.render(registry.plan_workflow(store, workflow), args["format"], workflow["name"])
        response = Response(text, mimetype=graph.FORMATS[args["format"]])
        if args["format"] == "svg":
            # Served from our origin, an SVG is a document: allow it no script and no loads.
            response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
