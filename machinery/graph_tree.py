"""Draw a tree plan (version 2) as SVG, Mermaid or Graphviz DOT: calls as boxes, `if`/`switch` as a
decision with its conditions on the edges, `parallel` as lanes side by side, `map` as a box around its
body labelled ``× <expr> (≤ N)``, a child workflow as a linked box, `sleep` as a timer.

`progress` (an event's summary per node) adds done/failed/running counts to each node it names and
marks the branches taken. Version 1 plans are drawn by `graph`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from machinery.graph import (
    CHAR_W,
    FONT,
    LINE_H,
    MARGIN,
    PAD,
    _attr,
    _dot_text,
    _mermaid_text,
    _x,
    call_line,
    clean,
    fit,
)

MAX_CHARS = 48
GAP = 26        # vertical space between steps of a block
COLUMN_GAP = 18  # horizontal space between branches
HEADER = 24     # a lane's or a box's label


def is_tree(plan: Mapping[str, Any]) -> bool:
    return plan.get("version") == 2 and "tree" in plan


def _condition(text: str) -> str:
    return text.replace("`", "")


def _counts(progress: Mapping[str, Any] | None, node_id: str) -> str:
    entry = (progress or {}).get(node_id)
    if not isinstance(entry, Mapping):
        return ""
    parts = [f"{entry.get(key)} {key}" for key in ("done", "failed", "running", "waiting", "queued") if entry.get(key)]
    total = entry.get("n")
    return (", ".join(parts) + (f" of {total}" if total else "")) if parts else ""


def _taken(progress: Mapping[str, Any] | None, node_id: str) -> set[str]:
    entry = (progress or {}).get(node_id)
    taken = entry.get("taken") if isinstance(entry, Mapping) else None
    if isinstance(taken, Mapping):
        return {str(key) for key, count in taken.items() if count}
    if isinstance(taken, str):
        return {taken}
    return set()


def node_lines(node: Mapping[str, Any], plan: Mapping[str, Any]) -> list[str]:
    """The text of a leaf node (call, workflow, sleep) and the header of a composite one."""
    kind = node.get("kind")
    if kind == "call":
        service = (plan.get("services") or {}).get(node.get("service"), {})
        return [f"{node['id']}: {node.get('service')}", call_line(service)]
    if kind == "poll":
        service = (plan.get("services") or {}).get(node.get("service"), {})
        return [f"{node['id']}: poll {node.get('service')}", call_line(service),
                f"until {_condition(node.get('until', ''))}, every {node.get('interval_s', 5.0):g} s"]
    if kind == "workflow":
        return [f"{node['id']}: workflow {node.get('workflow')}", "a child event"]
    if kind == "sleep":
        if "seconds" in node:
            return [f"{node['id']}: sleep {node['seconds']:g} s"]
        return [f"{node['id']}: sleep until {node.get('until')}"]
    if kind == "if":
        return [f"{node['id']}: if {_condition(node.get('if', ''))}"]
    if kind == "switch":
        return [f"{node['id']}: switch"]
    if kind == "parallel":
        return [f"{node['id']}: parallel"]
    if kind == "map":
        return [f"{node['id']}: \u00d7 {node.get('map')} (\u2264 {node.get('max_concurrency', 8)})"]
    return [f"{node.get('id')}: {kind}"]


def branches(node: Mapping[str, Any]) -> list[tuple[str, str, list]]:
    """(name, edge label, steps) of each branch of an if, switch or parallel."""
    kind = node.get("kind")
    if kind == "if":
        return [("then", "then", node.get("then") or []), ("else", "else", node.get("else") or [])]
    if kind == "switch":
        cases = [(str(number), f"when {_condition(case.get('when', ''))}", case.get("steps") or [])
                 for number, case in enumerate(node.get("cases") or [])]
        return cases + [("default", "default", node.get("default") or [])]
    if kind == "parallel":
        return [(branch["name"], branch["name"], branch.get("steps") or []) for branch in node.get("branches") or []]
    return []


# -- SVG ----------------------------------------------------------------------------------

class _Box:
    """A laid-out piece: its size, and how to draw it with its top-left corner at (x, y)."""

    def __init__(self, width: float, height: float, draw: Callable[[float, float], list[str]]):
        self.width, self.height, self.draw = width, height, draw


def _text_width(lines: list[str]) -> float:
    return max((len(line) for line in lines), default=0) * CHAR_W


def _arrow(x1: float, y1: float, x2: float, y2: float, css: str = "edge") -> str:
    if abs(x1 - x2) < 0.5:
        path = f"M{x1:.1f},{y1:.1f} V{y2 - 1:.1f}"
    else:
        middle = (y1 + y2) / 2
        path = f"M{x1:.1f},{y1:.1f} V{middle:.1f} H{x2:.1f} V{y2 - 1:.1f}"
    return (f'<path class="{css}" d="{path}" fill="none" stroke="#64748b" stroke-width="1.5" '
            'marker-end="url(#machinery-arrow)"/>')


class _Layout:
    def __init__(self, plan: Mapping[str, Any], progress: Mapping[str, Any] | None,
                 link: Callable[[str, str], str] | None):
        self.plan, self.progress, self.link = plan, progress, link

    def block(self, steps: list) -> _Box:
        parts = [self.node(step) for step in steps]
        if not parts:
            return _Box(60, 24, lambda x, y: [f'<text x="{x + 30:.1f}" y="{y + 16:.1f}" text-anchor="middle" '
                                              'fill="#94a3b8">(nothing)</text>'])
        width = max(part.width for part in parts)
        height = sum(part.height for part in parts) + GAP * (len(parts) - 1)

        def draw(x, y):
            out, top = [], y
            for number, part in enumerate(parts):
                left = x + (width - part.width) / 2
                out += part.draw(left, top)
                if number + 1 < len(parts):
                    out.append(_arrow(x + width / 2, top + part.height, x + width / 2, top + part.height + GAP))
                top += part.height + GAP
            return out
        return _Box(width, height, draw)

    def leaf(self, node: Mapping[str, Any], lines: list[str], css: str) -> _Box:
        counts = _counts(self.progress, node["id"])
        shown = [fit(clean(line), MAX_CHARS) for line in lines] + ([counts] if counts else [])
        width = max(180.0, _text_width(shown) + 2 * PAD)
        height = len(shown) * LINE_H + 2 * PAD
        colours = {"call": ("#eef2ff", "#6366f1"), "workflow": ("#ecfeff", "#0891b2"),
                   "sleep": ("#fefce8", "#ca8a04"), "decision": ("#fff7ed", "#ea580c")}
        fill, stroke = colours.get(css, colours["call"])
        state = (self.progress or {}).get(node["id"]) or {}
        if isinstance(state, Mapping) and state.get("failed"):
            stroke = "#dc2626"
        radius = 14 if css in ("sleep", "decision") else 6
        target = None
        if self.link and node.get("kind") in ("call", "workflow"):
            target = self.link(node["kind"], node.get("service") or node.get("workflow") or "")

        def draw(x, y):
            out = [f'<g class="node {css}" data-node={_attr(node["id"])}>']
            if target:
                out.append(f"<a href={_attr(target)}>")
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" rx="{radius}" '
                       f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>')
            for number, line in enumerate(shown):
                weight = ' font-weight="bold"' if number == 0 else ""
                out.append(f'<text x="{x + PAD:.1f}" y="{y + PAD + (number + 1) * LINE_H - 4:.1f}"{weight}>'
                           f"{_x(line)}</text>")
            if target:
                out.append("</a>")
            out.append("</g>")
            return out
        return _Box(width, height, draw)

    def node(self, node: Mapping[str, Any]) -> _Box:
        kind = node.get("kind")
        if kind in ("call", "workflow", "sleep"):
            return self.leaf(node, node_lines(node, self.plan), kind)
        if kind == "map":
            return self.framed(node, self.block(node.get("steps") or []))
        if kind in ("if", "switch", "parallel"):
            return self.fork(node)
        return self.leaf(node, node_lines(node, self.plan), "call")

    def framed(self, node: Mapping[str, Any], body: _Box) -> _Box:
        """A map: a box around its body, labelled with what it runs over and its bound."""
        label = fit(clean(node_lines(node, self.plan)[0]), MAX_CHARS)
        counts = _counts(self.progress, node["id"])
        entry = (self.progress or {}).get(node["id"]) or {}
        share = (entry.get("done", 0) + entry.get("failed", 0)) / entry["n"] if entry.get("n") else None
        width = max(body.width + 2 * PAD, _text_width([label, counts]) + 2 * PAD)
        bar = 10 if share is not None else 0
        height = HEADER + (LINE_H if counts else 0) + bar + body.height + 2 * PAD

        def draw(x, y):
            out = [f'<g class="node map" data-node={_attr(node["id"])}>',
                   f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" rx="8" '
                   'fill="#f8fafc" stroke="#0f766e" stroke-width="1.5" stroke-dasharray="6 3"/>',
                   f'<text x="{x + PAD:.1f}" y="{y + 17:.1f}" font-weight="bold" fill="#0f766e">{_x(label)}</text>']
            top = y + HEADER
            if counts:
                out.append(f'<text x="{x + PAD:.1f}" y="{top + 12:.1f}" fill="#334155">{_x(counts)}</text>')
                top += LINE_H
            if share is not None:
                inner = width - 2 * PAD
                out.append(f'<rect class="progress" x="{x + PAD:.1f}" y="{top:.1f}" width="{inner:.1f}" height="6" '
                           'fill="#e2e8f0"/>')
                out.append(f'<rect class="progress-done" x="{x + PAD:.1f}" y="{top:.1f}" '
                           f'width="{inner * min(share, 1.0):.1f}" height="6" fill="#0f766e"/>')
                top += bar
            out += body.draw(x + (width - body.width) / 2, top + PAD)
            out.append("</g>")
            return out
        return _Box(width, height, draw)

    def fork(self, node: Mapping[str, Any]) -> _Box:
        """A decision or a parallel: its header, then its branches side by side, each in a lane."""
        header = self.leaf(node, node_lines(node, self.plan), "decision")
        taken = _taken(self.progress, node["id"])
        lanes = []
        for name, label, steps in branches(node):
            body = self.block(steps)
            text = fit(clean(label), 36)
            lanes.append((name, text, body, max(body.width, len(text) * CHAR_W) + 2 * PAD))
        row_w = sum(lane[3] for lane in lanes) + COLUMN_GAP * max(len(lanes) - 1, 0)
        row_h = max((lane[2].height for lane in lanes), default=0) + HEADER + 2 * PAD
        width = max(header.width, row_w)
        height = header.height + GAP + row_h
        parallel = node.get("kind") == "parallel"

        def draw(x, y):
            out = [f'<g class="node {"parallel" if parallel else "decision"}" data-node={_attr(node["id"])}>']
            out += header.draw(x + (width - header.width) / 2, y)
            left = x + (width - row_w) / 2
            top = y + header.height + GAP
            for name, text, body, lane_w in lanes:
                chosen = name in taken
                stroke = "#16a34a" if chosen else "#cbd5e1"
                out.append(f'<g class="lane{" taken" if chosen else ""}" data-branch={_attr(name)}>')
                dash = "" if parallel else ' stroke-dasharray="3 3"'
                out.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{lane_w:.1f}" height="{row_h:.1f}" rx="6" '
                           f'fill="none" stroke="{stroke}" stroke-width="{2 if chosen else 1}"{dash}/>')
                out.append(f'<text class="edge-label" x="{left + PAD:.1f}" y="{top + 16:.1f}" fill="#b45309">'
                           f"{_x(text)}</text>")
                out.append(_arrow(x + width / 2, y + header.height, left + lane_w / 2, top))
                out += body.draw(left + (lane_w - body.width) / 2, top + HEADER + PAD)
                out.append("</g>")
                left += lane_w + COLUMN_GAP
            out.append("</g>")
            return out
        return _Box(width, height, draw)


def svg(plan: Mapping[str, Any], name: str | None = None, link: Callable[[str, str], str] | None = None,
        progress: Mapping[str, Any] | None = None) -> str:
    """The tree as a standalone SVG document, top to bottom. `link(kind, name)` makes a call's box a
    link to its service and a child workflow's box a link to that workflow."""
    layout = _Layout(plan, progress, link)
    inputs = ", ".join(field["name"] for field in plan.get("inputs") or []) or "(none)"
    outputs = ", ".join(field["name"] for field in plan.get("outputs") or []) or "(none)"
    start = layout.leaf({"id": "inputs"}, [f"inputs: {inputs}"], "sleep")
    end = layout.leaf({"id": "outputs"}, [f"outputs: {outputs}"], "sleep")
    body = layout.block(list(plan.get("tree") or []))
    width = max(start.width, body.width, end.width)
    height = start.height + body.height + end.height + 2 * GAP
    total_w, total_h = width + 2 * MARGIN, height + 2 * MARGIN
    title = f"Workflow {name}" if name else "Workflow"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="workflow-graph tree" width="{total_w:.0f}" '
        f'height="{total_h:.0f}" viewBox="0 0 {total_w:.0f} {total_h:.0f}" role="img" aria-label={_attr(title)} '
        f'font-family="{FONT}" font-size="12">',
        f"<title>{_x(title)}</title>",
        '<defs><marker id="machinery-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#64748b"/></marker></defs>',
    ]
    centre = MARGIN + width / 2
    top = MARGIN
    for number, part in enumerate((start, body, end)):
        out += part.draw(centre - part.width / 2, top)
        if number < 2:
            out.append(_arrow(centre, top + part.height, centre, top + part.height + GAP))
        top += part.height + GAP
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -- Mermaid and DOT ----------------------------------------------------------------------

class _Text:
    """Walks the tree once for a text format: nodes, edges with labels, and clusters."""

    def __init__(self, plan: Mapping[str, Any]):
        self.plan = plan
        self.count = 0

    def name(self) -> str:
        self.count += 1
        return f"n{self.count}"

    def block(self, steps: list, entries: list[tuple[str, str | None]], out: list, emit) -> list:
        """Draw `steps` after `entries` ((node name, label of the edge into what follows))."""
        for step in steps:
            entries = self.node(step, entries, out, emit)
        return entries

    def node(self, node: Mapping[str, Any], entries, out, emit):
        kind = node.get("kind")
        if kind in ("call", "workflow", "sleep", "poll"):
            name = self.name()
            emit.leaf(out, name, node, node_lines(node, self.plan))
            for source, label in entries:
                emit.edge(out, source, name, label)
            return [(name, None)]
        if kind == "map":
            cluster = self.name()
            emit.open(out, cluster, node_lines(node, self.plan)[0])
            exits = self.block(node.get("steps") or [], entries, out, emit)
            emit.close(out)
            return exits
        if kind in ("if", "switch", "parallel"):
            name = self.name()
            emit.fork(out, name, node, node_lines(node, self.plan)[0], parallel=kind == "parallel")
            for source, label in entries:
                emit.edge(out, source, name, label)
            exits = []
            for _, label, steps in branches(node):
                if not steps:
                    exits.append((name, label))
                    continue
                lane = self.name()
                if kind == "parallel":
                    emit.open(out, lane, label)
                exits += self.block(steps, [(name, label)], out, emit)
                if kind == "parallel":
                    emit.close(out)
            if kind == "parallel":
                join = self.name()
                emit.join(out, join)
                for source, label in exits:
                    emit.edge(out, source, join, label)
                return [(join, None)]
            return exits
        return entries


class _Mermaid:
    def leaf(self, out, name, node, lines):
        text = "<br/>".join(_mermaid_text(line) for line in lines)
        shape = {"workflow": ('[["', '"]]'), "sleep": ('(["', '"])')}.get(node.get("kind"), ('["', '"]'))
        out.append(f"  {name}{shape[0]}{text}{shape[1]}")
        if node.get("kind") == "workflow":
            out.append(f'  click {name} "/ui/workflows/{_mermaid_text(node.get("workflow", ""))}"')

    def fork(self, out, name, node, line, parallel):
        text = _mermaid_text(line)
        out.append(f'  {name}[["{text}"]]' if parallel else f'  {name}{{"{text}"}}')

    def join(self, out, name):
        out.append(f"  {name}(( ))")

    def edge(self, out, source, target, label):
        out.append(f'  {source} -->|"{_mermaid_text(label)}"| {target}' if label else f"  {source} --> {target}")

    def open(self, out, name, label):
        out.append(f'  subgraph {name} ["{_mermaid_text(label)}"]')

    def close(self, out):
        out.append("  end")


class _Dot:
    def leaf(self, out, name, node, lines):
        shape = {"workflow": "box3d", "sleep": "oval"}.get(node.get("kind"), "box")
        extra = ""
        if node.get("kind") == "workflow":
            extra = f', URL="/ui/workflows/{_dot_text(node.get("workflow", ""))}"'
        out.append(f'  {name} [shape={shape}, label="{_dot_text(chr(10).join(lines))}"{extra}];')

    def fork(self, out, name, node, line, parallel):
        out.append(f'  {name} [shape={"box" if parallel else "diamond"}, label="{_dot_text(line)}"];')

    def join(self, out, name):
        out.append(f'  {name} [shape=point, label=""];')

    def edge(self, out, source, target, label):
        out.append(f'  {source} -> {target} [label="{_dot_text(label)}"];' if label else f"  {source} -> {target};")

    def open(self, out, name, label):
        out.append(f'  subgraph cluster_{name} {{ label="{_dot_text(label)}"; style=dashed;')

    def close(self, out):
        out.append("  }")


def _text(plan: Mapping[str, Any], emit, head: list[str], tail: list[str]) -> str:
    walker = _Text(plan)
    out = list(head)
    inputs = ", ".join(field["name"] for field in plan.get("inputs") or []) or "(none)"
    outputs = ", ".join(field["name"] for field in plan.get("outputs") or []) or "(none)"
    emit.leaf(out, "start", {"kind": "sleep"}, [f"inputs: {inputs}"])
    exits = walker.block(list(plan.get("tree") or []), [("start", None)], out, emit)
    emit.leaf(out, "finish", {"kind": "sleep"}, [f"outputs: {outputs}"])
    for source, label in exits:
        emit.edge(out, source, "finish", label)
    return "\n".join(out + tail) + "\n"


def mermaid(plan: Mapping[str, Any]) -> str:
    return _text(plan, _Mermaid(), ["flowchart TD"], [])


def dot(plan: Mapping[str, Any], name: str | None = None) -> str:
    return _text(plan, _Dot(), [f'digraph "{_dot_text(name or "workflow")}" {{', "  rankdir=TB;",
                                "  node [fontname=monospace, fontsize=11];"], ["}"])
