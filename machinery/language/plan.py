"""Plan a step tree: check every path of a version 2 workflow and produce the plan its events snapshot.

``plan_tree(workflow, services, workflows)`` walks the tree with the type of each context key, as
``dataflow.plan`` walks a chain, and returns the plan in the format of ``machinery.language``; every
problem is a dict ``{"step", "path", "problem", "available"?}`` in the ``errors`` of a DataflowError.
``normalise(v1)`` writes a version 1 workflow as the call steps it stands for.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Iterable, Mapping

from machinery.exceptions import DataflowError
from machinery.language import dataflow, types
from machinery.language.expressions import Expression, ExpressionError, boolean, compile_expression, infer, join

ID_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$(?!\n)")
KEY_PATTERN = re.compile(r"^(?!\$)[^.\x00-\x1f\x7f]{1,100}$(?!\n)")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KINDS = ("call", "if", "switch", "parallel", "map", "workflow", "sleep", "poll")
# What each kind may hold beside its own key, its id and a description.
_KEYS = {"call": {"in", "out"}, "if": {"then", "else"}, "switch": set(), "parallel": set(),
         "map": {"as", "max_concurrency", "steps", "collect"}, "workflow": {"in", "out"}, "sleep": set(),
         "poll": {"in", "out", "until", "interval_s", "backoff", "max_interval_s", "timeout_s"}}
MAX_DEPTH = 16
MAX_STEPS = 500
MAX_BRANCHES = 64
MAX_CONCURRENCY = 256
DEFAULT_CONCURRENCY = 8
MAX_SLEEP = 365 * 24 * 3600
# A poll step: (default, lowest, highest) of each of its numbers.
POLL_NUMBERS = {"interval_s": (5.0, 0.1, 86400.0), "backoff": (1.0, 1.0, 10.0),
                "max_interval_s": (None, 0.1, 86400.0), "timeout_s": (3600.0, 0.1, 30 * 86400.0)}
MAX_PROBLEMS = 50
MAX_CHILDREN = 100
MAX_DESCRIPTION = 2000
# How deep the JSON of a definition may nest, which a request body must be allowed: the workflow object
# is level 1 and its "steps" level 2; a switch case's list sits five levels below the list holding the
# switch (the step, "switch", "cases", the case, its "steps"), the most of any kind; types nest less
# (three levels each). The deepest tree that checks ends in an empty list at 2 + MAX_DEPTH * 5; one
# more level lets every tree one step too deep reach the check, so that its refusal names the path.
JSON_DEPTH = 2 + (MAX_DEPTH + 1) * 5
CHILD_FIELDS = ("workflow_id", "name", "version", "inputs", "outputs")


def key_expression(key: str) -> str:
    """The expression that reads one context key: the bare key, or quoted when it is not an identifier."""
    return key if _IDENTIFIER.match(key) else json.dumps(key)


def normalise(workflow: Mapping[str, Any]) -> list[dict]:
    """A version 1 workflow as call steps ``step-0``...: its renames become ``in`` and ``out``."""
    problems: list[dict] = []
    renames = dataflow._operations_for(workflow, problems)
    if problems:
        raise DataflowError(f"data flow does not check: {problems[0]['where']}: {problems[0]['problem']}",
                            errors=problems)
    steps = []
    for index, name in enumerate(workflow["services"]):
        step: dict[str, Any] = {"id": f"step-{index}", "call": name}
        if renames[index]["inputs"]:
            step["in"] = {field: key_expression(key) for field, key in renames[index]["inputs"].items()}
        if renames[index]["outputs"]:
            step["out"] = dict(renames[index]["outputs"])
        steps.append(step)
    return steps


def children_of(definition: Mapping[str, Any]) -> list[str]:
    """The child workflows a stored definition runs: its `workflows` (written at registration), or, for
    a tree stored before that field was, those its steps name; a version 1 workflow runs none."""
    children = definition.get("workflows")
    if children is None and isinstance(definition.get("steps"), list):
        children = called(definition["steps"])[1]
    return list(children or ())


def called(steps: Any) -> tuple[list[str], list[str]]:
    """The service names and child workflow names a tree names, each once, in order of first use."""
    services: dict[str, None] = {}
    workflows: dict[str, None] = {}
    stack, seen = [steps], 0
    order: list[Any] = []
    while stack and seen < 10 * MAX_STEPS:
        item = stack.pop()
        seen += 1
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            order.append(item)
            for kind in ("call", "poll"):
                if isinstance(item.get(kind), str):
                    services.setdefault(item[kind])
            if isinstance(item.get("workflow"), str):
                workflows.setdefault(item["workflow"])
            nested = []
            for key in ("then", "else", "steps", "default"):
                nested.append(item.get(key))
            if isinstance(item.get("switch"), dict):
                cases = item["switch"].get("cases")
                if isinstance(cases, list):
                    nested.extend(case.get("steps") for case in cases if isinstance(case, dict))
                nested.append(item["switch"].get("default"))
            if isinstance(item.get("parallel"), dict):
                nested.extend(item["parallel"].values())
            stack.extend(reversed([steps_ for steps_ in nested if isinstance(steps_, list)]))
    return list(services), list(workflows)


def _available(context: Mapping[str, dict]) -> dict[str, str]:
    return {key: types.describe({"type": slot["type"], "required": slot["required"]})
            for key, slot in context.items()}


def _slot(field: Mapping[str, Any]) -> dict:
    return dataflow._slot(field)


def _write(context: dict[str, dict], key: str, slot: dict) -> None:
    previous = context.get(key)
    dataflow._write(context, key, {"type": slot["type"], "required": slot["required"]})
    why = slot.get("why") if not slot["required"] else None
    if not context[key]["required"]:
        why = why or (previous or {}).get("why")
    if why:
        context[key]["why"] = why
    else:
        context[key].pop("why", None)


def _roots(node: Any, out: set[str]) -> None:
    """The context keys an expression reads at its root (not inside a projection or a function's expref)."""
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "field":
        out.add(node["value"])
    elif kind in ("subexpression", "index_expression", "projection", "filter_projection",
                  "value_projection", "pipe"):
        _roots(node["children"][0], out)
    elif kind in ("flatten", "not_expression", "and_expression", "or_expression", "comparator",
                  "multi_select_list", "function_expression"):
        for child in node["children"]:
            _roots(child, out)
    elif kind == "multi_select_dict":
        for pair in node["children"]:
            _roots(pair["children"][0], out)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def fingerprint(plan: Mapping[str, Any]) -> str:
    """The sha256 of the plan's canonical JSON, without its own fingerprint."""
    rest = {key: value for key, value in plan.items() if key != "fingerprint"}
    return hashlib.sha256(_canonical(rest).encode()).hexdigest()


class _Checker:
    def __init__(self, workflow: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]],
                 workflows: Mapping[str, Mapping[str, Any]]):
        self.workflow = workflow
        self.services = services
        self.workflows = workflows
        self.problems: list[dict] = []
        self.ids: set[str] = set()
        self.count = 0
        self.used_services: dict[str, dict] = {}
        self.used_workflows: dict[str, dict] = {}
        self.too_many = False

    # -- reporting ---------------------------------------------------------------------------------

    def problem(self, step: str, path: str, text: str, context: Mapping[str, dict] | None = None, **extra) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            return
        entry: dict[str, Any] = {"step": step, "path": path, "problem": text}
        if context is not None:
            entry["available"] = _available(context)
        entry.update(extra)
        self.problems.append(entry)

    def expression(self, step: str, path: str, text: Any,
                   context: Mapping[str, dict]) -> tuple[Expression | None, dict]:
        """Compile and type an expression; its problems are reported at `path`."""
        try:
            compiled = compile_expression(text)
        except ExpressionError as error:
            self.problem(step, path, str(error), context)
            return None, types.parse_type("any")
        result, problems = infer(compiled, context)
        for text_ in problems:
            self.problem(step, path, f"{compiled.text}: {text_}" if not text_.startswith(compiled.text) else text_,
                         context)
        if problems:
            # What a wrong expression gives is unknown: one problem, not a second about its type.
            return compiled, types.parse_type("any")
        return compiled, result

    # -- the walk ----------------------------------------------------------------------------------

    def steps(self, steps: Any, context: dict[str, dict], path: str, depth: int,
              owner: str) -> tuple[list[dict], set[str]]:
        """Check a list of steps from a context (changed in place); the nodes and the keys written."""
        written: set[str] = set()
        if not isinstance(steps, list):
            self.problem(owner, path, f"must be a list of steps, got {types.json_type(steps)}")
            return [], written
        if depth > MAX_DEPTH and steps:
            # An empty list (an else or a default left out) nests nothing: only a step is too deep.
            self.problem(owner, path, f"steps nest deeper than {MAX_DEPTH} levels")
            return [], written
        nodes = []
        for index, step in enumerate(steps):
            node = self.step(step, context, f"{path}[{index}]", depth, written)
            if node is not None:
                nodes.append(node)
        return nodes, written

    def step(self, step: Any, context: dict[str, dict], where: str, depth: int, written: set[str]) -> dict | None:
        self.count += 1
        if self.count > MAX_STEPS:
            if not self.too_many:
                self.too_many = True
                self.problem("workflow", "steps", f"more than {MAX_STEPS} steps in all")
            return None
        if not isinstance(step, dict):
            self.problem(where, where, f"a step is an object with an id and one kind ({', '.join(KINDS)}), "
                                       f"got {types.json_type(step)}")
            return None
        ident = step.get("id")
        if not isinstance(ident, str) or not ID_PATTERN.match(ident):
            self.problem(where, f"{where}.id", "a step's id is 1 to 64 letters, digits, '_' or '-', starting "
                                               f"with a letter or '_'; got {json.dumps(ident, default=str)[:80]}")
            return None
        if ident in self.ids:
            self.problem(ident, f"{where}.id", f"id {ident!r} is used by another step; ids are unique "
                                               "in the whole workflow")
            return None
        self.ids.add(ident)
        description = step.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > MAX_DESCRIPTION):
            self.problem(ident, f"{ident}.description", f"a step's description is text of at most "
                         f"{MAX_DESCRIPTION} characters, got {types.json_type(description)}"
                         + (f" of {len(description)}" if isinstance(description, str) else ""))
            return None
        kinds = [kind for kind in KINDS if kind in step]
        if len(kinds) != 1:
            text = (f"has two kinds: {', '.join(kinds)}; a step is one of them" if kinds else
                    f"has no kind: a step holds one of {', '.join(KINDS)}")
            unknown = sorted(str(key) for key in step if key not in ("id", "description"))
            if not kinds and unknown:
                text += f" (unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:5])})"
            self.problem(ident, ident, f"step {ident!r} {text}")
            return None
        kind = kinds[0]
        extra = sorted(str(key) for key in set(step) - {"id", "description", kind} - _KEYS[kind])
        if extra:
            self.problem(ident, f"{ident}.{extra[0]}", f"a {kind} step does not take "
                         f"{', '.join(repr(key) for key in extra)}; it takes "
                         f"{', '.join(sorted(_KEYS[kind] | {'id', 'description', kind}))}")
            return None
        return getattr(self, "_" + kind)(ident, step, context, depth, written)

    # -- calls -------------------------------------------------------------------------------------

    def _service(self, ident, name, path):
        """The registered service a call or poll names, kept for the plan; None (reported) if none."""
        if not isinstance(name, str) or name not in self.services:
            self.problem(ident, path, f"service {name!r} is not registered"
                         if isinstance(name, str) else "must be the name of a registered service")
            return None
        service = self.services[name]
        self.used_services[name] = {key: dataflow._without_schemas(key, service[key])
                                    for key in dataflow.SERVICE_FIELDS if service.get(key) is not None}
        return service

    def _call(self, ident, step, context, depth, written):
        name = step["call"]
        service = self._service(ident, name, f"{ident}.call")
        if service is None:
            return None
        ins, outs = self._io(ident, step, service["inputs"], service["outputs"], context, written,
                             f"service {name!r}")
        return {"id": ident, "kind": "call", "service": name, "in": ins, "out": outs}

    def _poll(self, ident, step, context, depth, written):
        """A call made again, `interval_s` apart (times `backoff` each time, up to `max_interval_s`),
        until the condition `until` over the service's outputs holds or `timeout_s` passes."""
        name = step["poll"]
        service = self._service(ident, name, f"{ident}.poll")
        if service is None:
            return None
        replied = {field["name"]: _slot(field) for field in service["outputs"]}
        until = step.get("until")
        compiled = None
        if until is None:
            self.problem(ident, f"{ident}.until", f"a poll step needs until: a condition over the outputs of "
                         f"service {name!r} that holds when it is done", replied)
        else:
            compiled = self._condition(ident, f"{ident}.until", until, replied)
        numbers = {}
        for key, (default, low, high) in POLL_NUMBERS.items():
            value = step.get(key, default)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high:
                self.problem(ident, f"{ident}.{key}", f"must be a number from {low:g} to {high:g}, got "
                             f"{json.dumps(value, default=str)[:40]}")
                continue
            numbers[key] = value
        if numbers.get("max_interval_s") is not None and numbers["max_interval_s"] < numbers.get("interval_s", 0):
            self.problem(ident, f"{ident}.max_interval_s", "must be at least interval_s")
        ins, outs = self._io(ident, step, service["inputs"], service["outputs"], context, written,
                             f"service {name!r}")
        if compiled is None:
            return None
        return {"id": ident, "kind": "poll", "service": name, "in": ins, "out": outs, "until": compiled.text,
                **numbers}

    def _workflow(self, ident, step, context, depth, written):
        name = step["workflow"]
        if not isinstance(name, str) or not name:
            self.problem(ident, f"{ident}.workflow", "must be the name of a registered workflow")
            return None
        if name == self.workflow.get("name"):
            self.problem(ident, f"{ident}.workflow", f"workflow {name!r} runs itself: a cycle")
            return None
        child = self.workflows.get(name)
        if child is None:
            self.problem(ident, f"{ident}.workflow", f"workflow {name!r} is not registered")
            return None
        cycle = _cycle(self.workflow.get("name"), name, self.workflows)
        if cycle:
            self.problem(ident, f"{ident}.workflow", "a cycle through child workflows: " + " -> ".join(cycle))
            return None
        self.used_workflows[name] = {key: child.get(key) for key in CHILD_FIELDS if child.get(key) is not None}
        self.used_workflows[name]["inputs"] = [dataflow._without_schema(f) for f in child["inputs"]]
        self.used_workflows[name]["outputs"] = [dataflow._without_schema(f) for f in child["outputs"]]
        ins, outs = self._io(ident, step, child["inputs"], child["outputs"], context, written,
                             f"workflow {name!r}")
        return {"id": ident, "kind": "workflow", "workflow": name, "in": ins, "out": outs}

    def _io(self, ident, step, inputs, outputs, context, written, what):
        given_in = step.get("in")
        given_out = step.get("out")
        if given_in is None:
            given_in = {}
        if given_out is None:
            given_out = {}
        ins: dict[str, str] = {}
        outs: dict[str, str] = {}
        if not isinstance(given_in, dict):
            self.problem(ident, f"{ident}.in", "must map inputs to expressions")
            given_in = {}
        if not isinstance(given_out, dict):
            self.problem(ident, f"{ident}.out", "must map outputs to context keys")
            given_out = {}
        declared_in = {field["name"]: field for field in inputs}
        declared_out = {field["name"]: field for field in outputs}
        for unknown in sorted(set(given_in) - set(declared_in)):
            self.problem(ident, f"{ident}.in.{unknown}", f"{what} has no input {unknown!r}; its inputs: "
                         f"{', '.join(declared_in) or 'none'}")
        for unknown in sorted(set(given_out) - set(declared_out)):
            self.problem(ident, f"{ident}.out.{unknown}", f"{what} has no output {unknown!r}; its outputs: "
                         f"{', '.join(declared_out) or 'none'}")
        for name, field in declared_in.items():
            path = f"{ident}.in.{name}"
            wanted = _slot(field)
            shown = types.describe(wanted["type"])
            if name in given_in:
                text = given_in[name]
                source = f"{text!r}" if isinstance(text, str) else "the expression"
            else:
                if name not in context:
                    if wanted["required"]:
                        self.problem(ident, path, f"input {name!r} ({shown}) reads context key {name!r}, which "
                                     "is not available; map it in \"in\"", context)
                    continue
                text = key_expression(name)
                source = f"context key {name!r}"
            compiled, result = self.expression(ident, path, text, context)
            if compiled is None:
                continue
            ins[name] = compiled.text
            self._fits(ident, path, compiled, result, wanted, context, f"input {name!r}", source)
        for name, field in declared_out.items():
            key = given_out.get(name, name)
            path = f"{ident}.out.{name}"
            if not isinstance(key, str) or not KEY_PATTERN.match(key):
                self.problem(ident, path, "must be a context key: 1 to 100 characters, not starting with '$', "
                                          "without '.' or control characters")
                continue
            outs[name] = key
            _write(context, key, _slot(field))
            written.add(key)
        return ins, outs

    def _fits(self, ident, path, compiled, result, wanted, context, what, source):
        """Whether an expression's result may feed a field; the problem names the path."""
        shown = types.describe(wanted["type"])
        if result["type"] == "any":
            return
        target = wanted["type"]
        lenient = {**target, "nullable": True} if not wanted["required"] else target
        misfits = types.incompatibilities(result, lenient)
        roots: set[str] = set()
        _roots(compiled.parsed, roots)
        absent = [key for key in sorted(roots) if key in context and not context[key]["required"]]
        if misfits and all(text.startswith("may be null") for text in misfits) and absent:
            reasons = "; ".join(context[key].get("why") or f"{key} may be absent (an optional input or output "
                                "fills it)" for key in absent)
            self.problem(ident, path, f"{what} is required but {source} may be absent: {reasons}", context)
            return
        if misfits:
            self.problem(ident, path, f"{what} expects {shown} but {source} is {types.describe(result)}"
                         + dataflow._where(misfits), context)

    # -- control -----------------------------------------------------------------------------------

    def _condition(self, ident, path, text, context):
        compiled, result = self.expression(ident, path, text, context)
        if compiled is not None and not boolean(result):
            self.problem(ident, path, f"{compiled.text!r} is {types.describe(result)}, not bool: a condition "
                         "is a comparison or another expression of type bool", context)
        return compiled

    def _join(self, ident, outer: dict, branches: list[tuple[str, dict]]) -> dict:
        """The context after branches of which exactly one runs."""
        keys: dict[str, None] = {}
        for _, branch in branches:
            keys.update(dict.fromkeys(branch))
        result: dict[str, dict] = {}
        for key in keys:
            having = [(label, branch[key]) for label, branch in branches if key in branch]
            lacking = [label for label, branch in branches if key not in branch]
            kind = having[0][1]["type"]
            for _, slot in having[1:]:
                kind = join(kind, slot["type"])
            required = not lacking and all(slot["required"] for _, slot in having)
            slot: dict[str, Any] = {"type": kind, "required": required}
            if lacking:
                setters = [label for label, _ in having]
                slot["why"] = (f"{key} is set only on branch{'es' if len(setters) > 1 else ''} "
                               f"{', '.join(setters)} of step {ident}; {', '.join(lacking)} "
                               f"do{'es' if len(lacking) == 1 else ''} not set it")
            elif not required:
                whys = [slot_.get("why") for _, slot_ in having if slot_.get("why")]
                if whys:
                    slot["why"] = whys[0]
            result[key] = slot
        return result

    def _if(self, ident, step, context, depth, written):
        compiled = self._condition(ident, f"{ident}.if", step["if"], context)
        outer = dict(context)
        then_context, else_context = dict(outer), dict(outer)
        then, then_written = self.steps(step.get("then", []), then_context, f"{ident}.then", depth + 1, ident)
        else_, else_written = self.steps(_given(step, "else", []), else_context, f"{ident}.else", depth + 1, ident)
        joined = self._join(ident, outer, [("then", then_context), ("else", else_context)])
        context.clear()
        context.update(joined)
        written.update(then_written, else_written)
        if "then" not in step:
            self.problem(ident, f"{ident}.then", "an if step needs \"then\": the steps to run when it holds")
        if compiled is None:
            return None
        return {"id": ident, "kind": "if", "if": compiled.text, "then": then, "else": else_}

    def _switch(self, ident, step, context, depth, written):
        spec = step["switch"]
        if not isinstance(spec, dict) or not isinstance(spec.get("cases"), list) or not spec["cases"]:
            self.problem(ident, f"{ident}.switch", "must be {\"cases\": [{\"when\": <expr>, \"steps\": [...]}, "
                                                   "...], \"default\": [...]} with at least one case")
            return None
        extra = sorted(str(key) for key in set(spec) - {"cases", "default"})
        if extra:
            self.problem(ident, f"{ident}.switch.{extra[0]}", "a switch holds \"cases\" and \"default\"")
        if len(spec["cases"]) > MAX_BRANCHES:
            self.problem(ident, f"{ident}.switch.cases", f"more than {MAX_BRANCHES} cases")
            return None
        outer = dict(context)
        branches, cases, ok = [], [], True
        for number, case in enumerate(spec["cases"]):
            path = f"{ident}.cases[{number}]"
            if not isinstance(case, dict) or "when" not in case or set(case) - {"when", "steps"}:
                self.problem(ident, path, "a case is {\"when\": <expr>, \"steps\": [...]}")
                ok = False
                continue
            compiled = self._condition(ident, f"{path}.when", case["when"], outer)
            branch = dict(outer)
            nodes, branch_written = self.steps(case.get("steps", []), branch, f"{path}.steps", depth + 1, ident)
            written.update(branch_written)
            branches.append((f"cases[{number}]", branch))
            if compiled is None:
                ok = False
            else:
                cases.append({"when": compiled.text, "steps": nodes})
        branch = dict(outer)
        default, default_written = self.steps(_given(spec, "default", []), branch, f"{ident}.default",
                                              depth + 1, ident)
        written.update(default_written)
        branches.append(("default", branch))
        context.clear()
        context.update(self._join(ident, outer, branches))
        if not ok:
            return None
        return {"id": ident, "kind": "switch", "cases": cases, "default": default}

    def _parallel(self, ident, step, context, depth, written):
        spec = step["parallel"]
        if not isinstance(spec, dict) or not spec:
            self.problem(ident, f"{ident}.parallel", "must map branch names to lists of steps")
            return None
        if len(spec) > MAX_BRANCHES:
            self.problem(ident, f"{ident}.parallel", f"more than {MAX_BRANCHES} branches")
            return None
        outer = dict(context)
        writers: dict[str, str] = {}
        nodes = []
        for name, steps in spec.items():
            if not isinstance(name, str) or not ID_PATTERN.match(name):
                self.problem(ident, f"{ident}.parallel", f"branch name {name!r}: 1 to 64 letters, digits, "
                                                         "'_' or '-', starting with a letter or '_'")
                continue
            branch = dict(outer)
            branch_nodes, branch_written = self.steps(steps, branch, f"{ident}.{name}", depth + 1, ident)
            for key in sorted(branch_written):
                if key in writers:
                    self.problem(ident, f"{ident}.{name}", f"branches {writers[key]} and {name} of step "
                                 f"{ident} both write {key!r}; parallel branches write different keys", outer)
                    continue
                writers[key] = name
                context[key] = branch[key]
            written.update(branch_written)
            nodes.append({"name": name, "steps": branch_nodes})
        return {"id": ident, "kind": "parallel", "branches": nodes}

    def _map(self, ident, step, context, depth, written):
        compiled, source = self.expression(ident, f"{ident}.map", step["map"], context)
        if compiled is not None and source["type"] not in ("array", "any"):
            self.problem(ident, f"{ident}.map", f"{compiled.text!r} is {types.describe(source)}, not an array: "
                         "a map runs its steps once per item of an array", context)
        elif compiled is not None and source["type"] == "array" and source["nullable"]:
            # At run time null is no array: refused here rather than found then.
            roots: set[str] = set()
            _roots(compiled.parsed, roots)
            reasons = [context[key]["why"] for key in sorted(roots) if context.get(key, {}).get("why")]
            self.problem(ident, f"{ident}.map", f"{compiled.text!r} is {types.describe(source)}, which may be null"
                         + (f" ({'; '.join(reasons)})" if reasons else "") + ": a map runs over an array; give "
                         f"a default, such as not_null({compiled.text}, `[]`)", context)
        item = (source["items"] if source["type"] == "array" and source["items"] is not None
                else types.parse_type("any"))
        alias = step.get("as", "item")
        if not isinstance(alias, str) or not KEY_PATTERN.match(alias):
            self.problem(ident, f"{ident}.as", "must be a context key: 1 to 100 characters, not starting "
                                               "with '$', without '.' or control characters")
            alias = "item"
        limit = step.get("max_concurrency", DEFAULT_CONCURRENCY)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CONCURRENCY:
            self.problem(ident, f"{ident}.max_concurrency", f"must be a whole number from 1 to "
                         f"{MAX_CONCURRENCY}, got {json.dumps(limit, default=str)[:40]}")
            limit = DEFAULT_CONCURRENCY
        body = dict(context)
        body[alias] = {"type": item, "required": True}
        before = len(self.problems)
        if "steps" in step:
            nodes, _ = self.steps(step["steps"], body, f"{ident}.steps", depth + 1, ident)
        else:
            nodes = []
            self.problem(ident, f"{ident}.steps", "a map needs \"steps\": what runs for each item")
        # When the body or its item does not check, what it leaves is unknown: collect gathers `any`
        # rather than report each collected key a second time.
        known = len(self.problems) == before and alias == step.get("as", "item")
        collect = _given(step, "collect", {})
        gathered: dict[str, str] = {}
        if not isinstance(collect, dict):
            self.problem(ident, f"{ident}.collect", "must map outer keys to expressions over the item's context")
            collect = {}
        for key, text in collect.items():
            path = f"{ident}.collect.{key}"
            if not KEY_PATTERN.match(key):
                self.problem(ident, path, "must be a context key: 1 to 100 characters, not starting with '$', "
                                          "without '.' or control characters")
                continue
            if known:
                inner, result = self.expression(ident, path, text, body)
            else:
                try:
                    inner, result = compile_expression(text), types.parse_type("any")
                except ExpressionError as error:
                    self.problem(ident, path, str(error), body)
                    continue
            if inner is None:
                continue
            gathered[key] = inner.text
            _write(context, key, {"type": {"type": "array", "nullable": False, "enum": None,
                                           "items": result, "fields": None}, "required": True})
            written.add(key)
        if compiled is None:
            return None
        return {"id": ident, "kind": "map", "map": compiled.text, "as": alias, "max_concurrency": limit,
                "steps": nodes, "collect": gathered}

    def _sleep(self, ident, step, context, depth, written):
        spec = step["sleep"]
        if not isinstance(spec, dict) or len(spec) != 1 or not set(spec) <= {"seconds", "until"}:
            self.problem(ident, f"{ident}.sleep", "must be {\"seconds\": <number>} or {\"until\": <expr>}")
            return None
        if "seconds" in spec:
            seconds = spec["seconds"]
            if (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds)
                    or not 0 < seconds <= MAX_SLEEP):
                self.problem(ident, f"{ident}.sleep.seconds", f"must be a number of seconds above 0 and at most "
                             f"{MAX_SLEEP} (a year), got {json.dumps(seconds, default=str)[:40]}")
                return None
            return {"id": ident, "kind": "sleep", "seconds": seconds}
        compiled, result = self.expression(ident, f"{ident}.sleep.until", spec["until"], context)
        if compiled is None:
            return None
        if result["type"] not in ("string", "any"):
            self.problem(ident, f"{ident}.sleep.until", f"{compiled.text!r} is {types.describe(result)}, not a "
                         "string: until is an ISO 8601 date and time", context)
        return {"id": ident, "kind": "sleep", "until": compiled.text}

    # -- the end -----------------------------------------------------------------------------------

    def end(self, context: dict[str, dict]) -> None:
        for field in self.workflow["outputs"]:
            name = field["name"]
            path = f"end.outputs.{name}"
            wanted = _slot(field)
            shown = types.describe(wanted["type"])
            slot = context.get(name)
            if slot is None:
                if wanted["required"]:
                    self.problem("end", path, f"workflow output {name!r} ({shown}) is never produced", context)
                continue
            misfits = types.incompatibilities(slot["type"], wanted["type"])
            if misfits:
                self.problem("end", path, f"workflow output {name!r} expects {shown} but the context holds "
                             f"{types.describe(slot['type'])}" + dataflow._where(misfits), context)
            elif wanted["required"] and not slot["required"]:
                why = slot.get("why") or "an optional input or output fills it"
                self.problem("end", path, f"workflow output {name!r} is required but may be absent: {why}",
                             context)


def _given(spec: Mapping[str, Any], key: str, default: Any) -> Any:
    """What a step gives under a key; left out or null is the default, anything else is checked as given."""
    value = spec.get(key)
    return default if value is None else value


def _cycle(root: str | None, child: str, workflows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The chain root -> child -> ... -> root when the child runs the root again, else []."""
    if root is None:
        return []
    stack: list[tuple[str, list[str]]] = [(child, [root, child])]
    seen: set[str] = set()
    while stack:
        name, chain = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for grandchild in children_of(workflows.get(name) or {}):
            if grandchild == root:
                return [*chain, root]
            stack.append((grandchild, [*chain, grandchild]))
    return []


def _count(nodes: Iterable[dict]) -> int:
    total = 0
    for node in nodes:
        total += 1
        kind = node["kind"]
        if kind == "if":
            total += _count(node["then"]) + _count(node["else"])
        elif kind == "switch":
            total += sum(_count(case["steps"]) for case in node["cases"]) + _count(node["default"])
        elif kind == "parallel":
            total += sum(_count(branch["steps"]) for branch in node["branches"])
        elif kind == "map":
            total += _count(node["steps"])
    return total


def plan_tree(workflow: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]],
              workflows: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Check a version 2 workflow against the registered services and child workflows; return its plan.

    Raises DataflowError whose `errors` are {"step", "path", "problem", "available"?} dicts, every
    problem of the tree (up to MAX_PROBLEMS).
    """
    checker = _Checker(workflow, services, workflows or {})
    context: dict[str, dict] = {field["name"]: _slot(field) for field in workflow["inputs"]}
    tree, _ = checker.steps(workflow.get("steps"), context, "steps", 1, "workflow")
    checker.end(context)
    if checker.problems:
        first = checker.problems[0]
        more = f" (and {len(checker.problems) - 1} more)" if len(checker.problems) > 1 else ""
        raise DataflowError(f"the steps do not check: {first['path']}: {first['problem']}{more}",
                            errors=checker.problems)
    plan: dict[str, Any] = {
        "version": 2,
        "inputs": [dataflow._without_schema(field) for field in workflow["inputs"]],
        "outputs": [dataflow._without_schema(field) for field in workflow["outputs"]],
        "services": checker.used_services,
        "workflows": checker.used_workflows,
        "node_count": _count(tree),
        "tree": tree,
    }
    plan["fingerprint"] = fingerprint(plan)
    return plan


def final_context(workflow: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]],
                  workflows: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict]:
    """The types of the context keys at the end of a tree (what the check knows), for tests and tools."""
    checker = _Checker(workflow, services, workflows or {})
    context: dict[str, dict] = {field["name"]: _slot(field) for field in workflow["inputs"]}
    checker.steps(workflow.get("steps"), context, "steps", 1, "workflow")
    return {key: {"type": slot["type"], "required": slot["required"]} for key, slot in context.items()}
