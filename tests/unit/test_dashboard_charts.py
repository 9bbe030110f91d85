"""The dashboard's line charts keep every point inside their box, with room for its stroke and dot."""

import re

from machinery.api import dashboard


def _points(svg: str) -> list[tuple[float, float]]:
    found = [(float(x), float(y)) for x, y in re.findall(r'cx="([\d.]+)" cy="([\d.]+)"', svg)]
    for points in re.findall(r'points="([^"]+)"', svg):
        found += [tuple(map(float, pair.split(","))) for pair in points.split()]
    return found


def test_the_first_the_last_and_the_largest_point_are_drawn_whole():
    svg = str(dashboard.lines({"p50": [0.0, 5.0, None, 12.0], "p95": [3.0, 40.0, None, None]}, "p50 / p95"))
    points = _points(svg)
    assert len(points) == 5  # p50: a line of two points, then a lone point; p95: a line of two
    margin = dashboard.LINE_INSET
    assert min(x for x, _ in points) == margin and max(x for x, _ in points) == dashboard.WIDTH - margin
    assert min(y for _, y in points) == margin  # the largest value, 40.0
    assert max(y for _, y in points) <= dashboard.HEIGHT - 1 - margin  # a zero sits above the axis
    assert 'r="2"' in svg and margin >= 2  # the lone point's dot fits in the margin


def test_a_single_minute_is_a_dot_inside_the_box():
    svg = str(dashboard.lines({"p50": [7.0]}, "p50"))
    (x, y), = _points(svg)
    assert x == dashboard.LINE_INSET and y == dashboard.LINE_INSET
