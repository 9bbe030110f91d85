"""Draw a workflow's resolved plan as SVG, Mermaid or Graphviz DOT: a box per step, edges labelled with context
keys. A tree plan (version 2) is drawn by `graph_tree`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from xml.sax.saxutils import escape, quoteattr

from machinery.exceptions import InvalidData
from machinery.language import types

FORMATS = {"svg": "image/svg+xml", "mermaid": "text/plain", "dot": "text/plain"}

# Characters XML 1.0 forbids (and lone surrogates): user text may hold them, a drawing must not.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_MERMAID_UNSAFE = set('"<>&#|`\\{}[]();')

ARROW = "\u2192"
DOT_SEP = " \u00b7 "
TYPE_LIMIT = 40  # a nested type is drawn in its short form, cut here; the UI's tables show it whole


def type_text(declared: Mapping[str, Any] | None) -> str:
    """A declared field's type in its short form (``array<object{sku: string, qty: int}>``)."""
    if not declared:
        return "any"
    try:
        return types.describe(declared, limit=TYPE_LIMIT)
    except (ValueError, TypeError, KeyError):
        return str(declared.get("type", "any"))


def call_line(service: Mapping[str, Any]) -> str:
    """How a step calls its service: ``GET /orders/{order_id}`` with a request, else ``POST <address>``."""
    request = service.get("request") or {}
    if request.get("method") or request.get("path"):
        return f"{request.get('method') or 'POST'} {request.get('path') or '/'}"
    return f"POST {service.get('address', '')}"


@dataclass
class Row:
    """One typed field shown in a box: direction ("in"/"out"), name, type, the context key if renamed."""

    direction: str
    name: str
    type: str
    renamed_to: str | None = None
    description: str | None = None

    def text(self) -> str:
        base = f"{self.name}: {self.type}"
        if self.renamed_to is None:
            return base
        return f"{base} {ARROW} {self.renamed_to}" if self.direction == "out" else f"{base} \u2190 {self.renamed_to}"


@dataclass
class Node:
    """A box: the workflow's inputs, one step, or the workflow's outputs."""

    id: str
    kind: str
    title: str
    service: str | None = None
    subtitle: str | None = None
    rows: list[Row] = field(default_factory=list)


@dataclass
class Edge:
    """Data flowing from one box to another, one label per context key; no label: run order only."""

    source: str
    target: str
    labels: list[str] = field(default_factory=list)
    renamed: bool = False


def flow_label(produced_as: str, key: str, consumed_as: str) -> str:
    """The label of one flow: the context key, with the names it was written and read as when they differ."""
    parts = [produced_as] if produced_as != key else []
    parts.append(key)
    if consumed_as != key:
        parts.append(consumed_as)
    return f" {ARROW} ".join(parts)


def model(plan: Mapping[str, Any]) -> tuple[list[Node], list[Edge]]:
    """The boxes and edges of a plan: which box wrote each context key a step (or the end) reads."""
    nodes = [Node("inputs", "inputs", "workflow inputs",
                  rows=[Row("in", f["name"], type_text(f), description=f.get("description"))
                        for f in plan["inputs"]])]
    edges: dict[tuple[str, str], Edge] = {}
    writer: dict[str, tuple[str, str]] = {f["name"]: ("inputs", f["name"]) for f in plan["inputs"]}

    def flow(key: str, target: str, consumed_as: str) -> None:
        if key not in writer:  # a checked plan always has a writer; draw nothing rather than guess
            return
        source, produced_as = writer[key]
        edge = edges.setdefault((source, target), Edge(source, target))
        label = flow_label(produced_as, key, consumed_as)
        if label not in edge.labels:
            edge.labels.append(label)
        edge.renamed = edge.renamed or produced_as != key or consumed_as != key

    for step in plan["steps"]:
        service = step["service"]
        node_id = f"step{step['index']}"
        types_in = {f["name"]: f for f in service.get("inputs") or []}
        types_out = {f["name"]: f for f in service.get("outputs") or []}
        rows = []
        for name, key in step["inputs"].items():
            declared = types_in.get(name, {})
            rows.append(Row("in", name, type_text(declared), key if key != name else None,
                            declared.get("description")))
            flow(key, node_id, name)
        for name, key in step["outputs"].items():
            declared = types_out.get(name, {})
            rows.append(Row("out", name, type_text(declared), key if key != name else None,
                            declared.get("description")))
        nodes.append(Node(node_id, "step", f"{step['index']}{DOT_SEP}{service['name']}", service=service["name"],
                          subtitle=call_line(service), rows=rows))
        for name, key in step["outputs"].items():
            writer[key] = (node_id, name)
    outputs = Node("outputs", "outputs", "workflow outputs",
                   rows=[Row("out", f["name"], type_text(f), description=f.get("description"))
                         for f in plan["outputs"]])
    for f in plan["outputs"]:
        flow(f["name"], "outputs", f["name"])
    nodes.append(outputs)
    # Steps run one after another even when no data passes between them: show that order too.
    order = {node.id: position for position, node in enumerate(nodes)}
    for before, after in zip(nodes, nodes[1:], strict=False):
        if (before.id, after.id) not in edges:
            edges[(before.id, after.id)] = Edge(before.id, after.id)
    ordered = sorted(edges.values(), key=lambda e: (order[e.source], order[e.target]))
    return nodes, ordered


def clean(text: Any) -> str:
    """User text as a drawing can hold it: a string, without characters XML forbids."""
    return _NOT_XML.sub("\ufffd", str(text))


def fit(text: str, limit: int) -> str:
    """Shorten text to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def render(plan: Mapping[str, Any], fmt: str, name: str | None = None) -> str:
    """Draw a plan in one of FORMATS; InvalidData for any other format."""
    if fmt == "svg":
        return svg(plan, name)
    if fmt == "mermaid":
        return mermaid(plan)
    if fmt == "dot":
        return dot(plan, name)
    raise InvalidData(f"unknown graph format {fmt!r}; use one of {', '.join(FORMATS)}",
                      errors={"format": [f"must be one of {', '.join(FORMATS)}"]})


# -- Mermaid ------------------------------------------------------------------------------

def _mermaid_text(text: Any) -> str:
    """Text for a quoted Mermaid label: markup and syntax characters as Mermaid's #code; entities."""
    return "".join(f"#{ord(char)};" if char in _MERMAID_UNSAFE else char
                   for char in clean(text).replace("\n", " ").replace("\r", " "))


def _mermaid_lines(node: Node) -> str:
    lines = [_mermaid_text(node.title)] + ([_mermaid_text(node.subtitle)] if node.subtitle else [])
    lines += [f"{row.direction} {_mermaid_text(row.text())}" for row in node.rows]
    if not node.rows:
        lines.append("(none)")
    return "<br/>".join(lines)


def mermaid(plan: Mapping[str, Any]) -> str:
    """The plan as a Mermaid flowchart, top to bottom."""
    if plan.get("version") == 2:
        from machinery import graph_tree
        return graph_tree.mermaid(plan)
    nodes, edges = model(plan)
    out = ["flowchart TD"]
    for node in nodes:
        label = _mermaid_lines(node)
        out.append(f'    {node.id}(["{label}"])' if node.kind != "step" else f'    {node.id}["{label}"]')
    for edge in edges:
        if edge.labels:
            label = "<br/>".join(_mermaid_text(text) for text in edge.labels)
            out.append(f'    {edge.source} -->|"{label}"| {edge.target}')
        else:
            out.append(f"    {edge.source} -.-> {edge.target}")
    out.append("    classDef io fill:#ecfdf5,stroke:#059669")
    out.append("    class inputs,outputs io")
    return "\n".join(out) + "\n"


# -- Graphviz DOT -------------------------------------------------------------------------

def _dot_text(text: Any) -> str:
    """Text for a quoted DOT string: backslashes and quotes escaped, no raw line breaks."""
    return (clean(text).replace("\\", "\\\\").replace('"', '\\"')
            .replace("\r", " ").replace("\n", " "))


def dot(plan: Mapping[str, Any], name: str | None = None) -> str:
    """The plan as a Graphviz digraph, top to bottom."""
    if plan.get("version") == 2:
        from machinery import graph_tree
        return graph_tree.dot(plan, name)
    nodes, edges = model(plan)
    out = [f'digraph "{_dot_text(name or "workflow")}" {{', "    rankdir=TB;",
           '    node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="monospace", fontsize=11];',
           '    edge [fontname="monospace", fontsize=10, color="#64748b"];']
    for node in nodes:
        lines = [_dot_text(node.title)] + ([_dot_text(node.subtitle)] if node.subtitle else [])
        lines += [f"{row.direction} {_dot_text(row.text())}" for row in node.rows]
        if not node.rows:
            lines.append("(none)")
        label = "\\l".join(lines) + "\\l"
        fill = "#ecfdf5" if node.kind != "step" else "#ffffff"
        out.append(f'    {node.id} [label="{label}", fillcolor="{fill}"];')
    for edge in edges:
        if edge.labels:
            label = "\\n".join(_dot_text(text) for text in edge.labels)
            colour = ', fontcolor="#b45309"' if edge.renamed else ""
            out.append(f'    {edge.source} -> {edge.target} [label="{label}"{colour}];')
        else:
            out.append(f"    {edge.source} -> {edge.target} [style=dashed];")
    out.append("}")
    return "\n".join(out) + "\n"


# -- SVG ----------------------------------------------------------------------------------

FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"
CHAR_W = 7.3  # width of one character at 12px in a monospace font
LINE_H = 17
PAD = 10
MARGIN = 16
MAX_CHARS = 56
COLOURS = {
    "step": ("#ffffff", "#475569", "#eef2ff"),
    "inputs": ("#ecfdf5", "#059669", "#d1fae5"),
    "outputs": ("#ecfdf5", "#059669", "#d1fae5"),
}


def _x(text: str) -> str:
    return escape(clean(text))


def _attr(text: str) -> str:
    return quoteattr(clean(text))


def _width(text: str) -> float:
    return len(text) * CHAR_W


def _node_lines(node: Node) -> list[str]:
    lines = [fit(node.title, MAX_CHARS)]
    if node.subtitle:
        lines.append(fit(node.subtitle, MAX_CHARS))
    lines += [fit(f"{row.direction:<3} {row.text()}", MAX_CHARS) for row in node.rows] or ["(none)"]
    return lines


def svg(plan: Mapping[str, Any], name: str | None = None, link: Callable[[str], str] | None = None) -> str:
    """The plan as a standalone SVG document, top to bottom; `link(service)` makes each step box a link."""
    if plan.get("version") == 2:
        from machinery import graph_tree

        def tree_link(kind: str, target: str) -> str:
            return link(target) if kind == "call" else f"/ui/workflows/{target}"
        return graph_tree.svg(plan, name, link=tree_link if link else None)
    nodes, edges = model(plan)
    index = {node.id: position for position, node in enumerate(nodes)}
    box_w = max(220.0, max(_width(line) for node in nodes for line in _node_lines(node)) + 2 * PAD)
    label_w = {id(edge): max((_width(fit(text, MAX_CHARS)) for text in edge.labels), default=0.0) for edge in edges}

    # Vertical gaps: room for the labels of the edge between neighbours.
    gaps = []
    for before, after in zip(nodes, nodes[1:], strict=False):
        edge = next((e for e in edges if e.source == before.id and e.target == after.id), None)
        lines = len(edge.labels) if edge else 0
        gaps.append(max(36, lines * LINE_H + 22))

    heights = [PAD * 2 + len(_node_lines(node)) * LINE_H for node in nodes]
    tops, y = [], MARGIN
    for position, height in enumerate(heights):
        tops.append(y)
        y += height + (gaps[position] if position < len(gaps) else 0)
    total_h = y + MARGIN
    left = MARGIN
    right = left + box_w
    centre = left + box_w / 2

    # Longer jumps run in lanes to the right of the boxes, each as wide as its labels.
    jumps = [edge for edge in edges if index[edge.target] - index[edge.source] > 1]
    adjacent_label_end = max((centre + 10 + label_w[id(e)] for e in edges if e not in jumps), default=0.0)
    lanes: dict[int, float] = {}
    lane_x = max(right, adjacent_label_end) + 26
    for edge in jumps:
        lanes[id(edge)] = lane_x
        lane_x += label_w[id(edge)] + 30
    total_w = max(right, lane_x - 14, adjacent_label_end) + MARGIN

    title = f"Workflow {name}" if name else "Workflow"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="workflow-graph" width="{total_w:.0f}" '
        f'height="{total_h:.0f}" viewBox="0 0 {total_w:.0f} {total_h:.0f}" role="img" aria-label={_attr(title)} '
        f'font-family="{FONT}" font-size="12">',
        f"<title>{_x(title)}</title>",
        '<defs><marker id="machinery-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#64748b"/></marker></defs>',
    ]
    for position, node in enumerate(nodes):
        out.append(_svg_node(node, left, tops[position], box_w, heights[position], link))
    for edge in edges:
        source, target = index[edge.source], index[edge.target]
        start_y = tops[source] + heights[source]
        colour = "#b45309" if edge.renamed else "#334155"
        if id(edge) not in lanes:
            end_y = tops[target]
            dash = "" if edge.labels else ' stroke-dasharray="4 4"'
            out.append(f'<g class="edge" data-source="{edge.source}" data-target="{edge.target}">'
                       f'<line x1="{centre:.1f}" y1="{start_y:.1f}" x2="{centre:.1f}" y2="{end_y - 1:.1f}" '
                       f'stroke="#64748b" stroke-width="1.5"{dash} marker-end="url(#machinery-arrow)"/>')
            first = (start_y + end_y) / 2 - (len(edge.labels) - 1) * LINE_H / 2 + 4
            for number, text in enumerate(edge.labels):
                out.append(f'<text x="{centre + 10:.1f}" y="{first + number * LINE_H:.1f}" fill="{colour}">'
                           f"{_x(fit(text, MAX_CHARS))}</text>")
            out.append("</g>")
            continue
        x = lanes[id(edge)]
        y1 = start_y - 12
        y2 = tops[target] + 12
        out.append(f'<g class="edge" data-source="{edge.source}" data-target="{edge.target}">'
                   f'<path d="M{right:.1f},{y1:.1f} H{x:.1f} V{y2:.1f} H{right + 1:.1f}" fill="none" '
                   f'stroke="#64748b" stroke-width="1.5" marker-end="url(#machinery-arrow)"/>')
        first = (y1 + y2) / 2 - (len(edge.labels) - 1) * LINE_H / 2 + 4
        for number, text in enumerate(edge.labels):
            out.append(f'<text x="{x + 8:.1f}" y="{first + number * LINE_H:.1f}" fill="{colour}">'
                       f"{_x(fit(text, MAX_CHARS))}</text>")
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _svg_node(node: Node, x: float, y: float, width: float, height: float,
              link: Callable[[str], str] | None) -> str:
    fill, stroke, band = COLOURS[node.kind]
    radius = 14 if node.kind != "step" else 6
    parts = [f'<g class="node node-{node.kind}" id="node-{node.id}">']
    if node.service is not None:
        parts.append(f"<title>{_x(node.title + (': ' + node.subtitle if node.subtitle else ''))}</title>")
    parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" rx="{radius}" '
                 f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>')
    parts.append(f'<rect x="{x + 1:.1f}" y="{y + 1:.1f}" width="{width - 2:.1f}" height="{LINE_H + PAD - 2:.1f}" '
                 f'rx="{max(radius - 1, 0)}" fill="{band}"/>')
    parts.append(f'<rect x="{x + 1:.1f}" y="{y + LINE_H / 2:.1f}" width="{width - 2:.1f}" '
                 f'height="{LINE_H / 2 + PAD - 1:.1f}" fill="{band}"/>')
    baseline = y + PAD + 12
    title = _x(fit(node.title, MAX_CHARS))
    if node.service is not None and link is not None:
        title = (f'<a href={_attr(link(node.service))}><tspan fill="#1d4ed8" text-decoration="underline">'
                 f"{title}</tspan></a>")
    parts.append(f'<text x="{x + PAD:.1f}" y="{baseline:.1f}" font-weight="bold" fill="#0f172a">{title}</text>')
    baseline += LINE_H
    if node.subtitle:
        parts.append(f'<text x="{x + PAD:.1f}" y="{baseline:.1f}" fill="#64748b">'
                     f"{_x(fit(node.subtitle, MAX_CHARS))}</text>")
        baseline += LINE_H
    if not node.rows:
        parts.append(f'<text x="{x + PAD:.1f}" y="{baseline:.1f}" fill="#64748b">(none)</text>')
    for row in node.rows:
        colour = "#047857" if row.direction == "in" else "#7c3aed"
        tip = f"<title>{_x(row.description)}</title>" if row.description else ""
        rest = _x(fit(row.text(), MAX_CHARS - 4))
        parts.append(f'<text x="{x + PAD:.1f}" y="{baseline:.1f}" fill="#0f172a" xml:space="preserve">{tip}'
                     f'<tspan fill="{colour}">{row.direction:<3}</tspan> {rest}</text>')
        baseline += LINE_H
    parts.append("</g>")
    return "".join(parts)
