"""The test process's guard against CPython gh-106905 (tests/conftest.py): a parse begun by a finalizer
in the middle of another parse would spoil it; here it is refused, and the outer parse stands."""

from __future__ import annotations

import ast
import gc

import pytest

from tests.conftest import PARSES_SHARE_STATE

pytestmark = pytest.mark.skipif(
    not PARSES_SHARE_STATE, reason="this Python builds each parse's tree with its own recursion count")

SOURCE = "\n".join(f"def f{index}(a):\n    return [x + {index} for x in a]" for index in range(400))


class ParsesWhenCollected:
    """As pytest does when a finalizer warns: it parses the warning's traceback for its carets."""
    seen: list[str] = []

    def __init__(self):
        self.me = self  # a cycle: only the collector frees it

    def __del__(self):
        try:
            ast.parse("a + b")
            self.seen.append("parsed")
        except SyntaxError:
            self.seen.append("refused")


def test_a_parse_begun_by_a_finalizer_inside_another_parse_is_refused_and_the_outer_one_stands():
    # GIVEN garbage whose finalizers parse, and a collector that runs at every allocation
    threshold = gc.get_threshold()
    gc.collect()
    ParsesWhenCollected.seen.clear()
    trees = []
    try:
        for _ in range(5):
            for _ in range(100):
                ParsesWhenCollected()
            gc.set_threshold(1)
            # WHEN a large source is parsed (the collector runs while its tree is built)
            trees.append(ast.parse(SOURCE))
            gc.set_threshold(*threshold)
    finally:
        gc.set_threshold(*threshold)
        gc.collect()
    # THEN every outer parse built its whole tree (unguarded, it fails with "SystemError: AST constructor
    # recursion depth mismatch"), and the finalizers' parses were refused as they ran inside it
    assert all(len(tree.body) == 400 for tree in trees)
    assert "refused" in ParsesWhenCollected.seen
