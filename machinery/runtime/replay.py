"""What a retry or replay of a tree event redoes: the instances whose earlier records it sets aside.

A replay from step X redoes X and every step after it in the tree's order (its body, the rest of its
block, and what follows the blocks around it); from item i of map M, it redoes that item's body and
what follows the map. Instances are named as ``runtime.tree.Scope`` names them (``a/b[3]/c``): a
step inside a map is redone in every item, so its prefix stops at the first map around it.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from machinery.exceptions import InvalidData

COMPOSITE = ("if", "switch", "parallel", "map")


def children(node: Mapping[str, Any]) -> Iterator[list]:
    kind = node.get("kind")
    if kind == "if":
        yield node.get("then") or []
        yield node.get("else") or []
    elif kind == "switch":
        for case in node.get("cases") or []:
            yield case.get("steps") or []
        yield node.get("default") or []
    elif kind == "parallel":
        for branch in node.get("branches") or []:
            yield branch.get("steps") or []
    elif kind == "map":
        yield node.get("steps") or []


def in_order(steps: list, prefix: str = "", in_map: bool = False) -> Iterator[tuple[Mapping, str, bool]]:
    """Every node in the tree's order, with the prefix its instances start with and whether a map
    encloses it (its prefix then covers every item)."""
    for node in steps:
        yield node, prefix + node["id"] if not in_map else prefix, in_map
        inner = f"{prefix}{node['id']}[" if node.get("kind") == "map" else f"{prefix}{node['id']}/"
        for block in children(node):
            if in_map or node.get("kind") == "map":
                yield from in_order(block, prefix if in_map else inner, True)
            else:
                yield from in_order(block, inner, False)


def redo_prefixes(plan: Mapping[str, Any], from_step: str, item: int | None = None) -> list[str]:
    """The instance prefixes a replay from `from_step` (and map item `item`) redoes."""
    nodes = list(in_order(plan["tree"]))
    ids = [node["id"] for node, _, _ in nodes]
    if from_step not in ids:
        raise InvalidData(f"from_step {from_step!r} is not a step of this event's plan; its steps: "
                          f"{', '.join(ids[:50])}", errors={"from_step": [f"not a step id: {from_step!r}"]})
    position = ids.index(from_step)
    node, prefix, in_map = nodes[position]
    prefixes: list[str] = []
    if item is not None:
        if node.get("kind") != "map":
            raise InvalidData(f"item is given but step {from_step!r} is a {node.get('kind')}, not a map",
                              errors={"item": [f"{from_step!r} is not a map"]})
        if in_map:
            raise InvalidData(f"step {from_step!r} runs inside another map: replay it without item",
                              errors={"item": ["the map is inside another map"]})
        prefixes.append(f"{prefix}[{item}]/")
        following = _after_subtree(nodes, position)
    else:
        prefixes += _node_prefixes(prefix, in_map)
        following = nodes[position + 1:]
    for _, other, inside in following:
        prefixes += _node_prefixes(other, inside)
    return sorted(set(prefixes))


def _after_subtree(nodes: list, position: int) -> list:
    """The nodes after node `position` and everything inside it."""
    _, prefix, _ = nodes[position]
    inner = (f"{prefix}[", f"{prefix}/")
    rest = nodes[position + 1:]
    while rest and rest[0][1].startswith(inner):
        rest = rest[1:]
    return rest


def _node_prefixes(prefix: str, in_map: bool) -> list[str]:
    if in_map:
        return [prefix]  # every item of the enclosing map
    return [prefix, f"{prefix}/", f"{prefix}["]
