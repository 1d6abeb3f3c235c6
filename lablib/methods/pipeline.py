"""Choosing among the models a compression pipeline produces: which ones are worth keeping (the
Pareto front of accuracy, latency and size), which one a budget picks, and what the whole
pipeline bought compared with where it started (the compound ratios).

A point is a dict: {"name": str, "accuracy": fraction, "latency_ms": ms, "size_kb": kB, ...};
other keys (e.g. "params") ride along. A budget is a dict: {"max_latency_ms", "max_size_kb",
"min_accuracy"}; math.inf (or 0 for the accuracy) leaves a limit open.
"""

from __future__ import annotations

import math

# The three objectives, and which way is better for each.
OBJECTIVES = {"accuracy": "higher", "latency_ms": "lower", "size_kb": "lower"}
BUDGET_KEYS = ("max_latency_ms", "max_size_kb", "min_accuracy")


def _number(name: str, value, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if math.isnan(value) or value < low:
        raise ValueError(f"{name} must be a number >= {low:g}, got {value!r}")
    return float(value)


def check_points(points) -> list[dict]:
    """`points` if it is a list of dicts with distinct str names and the three objectives as
    numbers (accuracy in [0, 1], latency and size >= 0); else an error naming the bad entry."""
    if isinstance(points, dict) or not isinstance(points, (list, tuple)):
        raise TypeError(f"points must be a list of dicts, got {type(points).__name__}")
    names = set()
    for i, p in enumerate(points):
        if not isinstance(p, dict):
            raise TypeError(f"points[{i}] must be a dict, got {type(p).__name__}")
        name = p.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"points[{i}]['name'] must be a non-empty str, got {name!r}")
        if name in names:
            raise ValueError(f"points[{i}]['name'] {name!r} is used twice: names must be distinct")
        names.add(name)
        for key in OBJECTIVES:
            if key not in p:
                raise ValueError(f"points[{i}] ({name!r}) has no {key!r}")
            _number(f"points[{i}][{key!r}]", p[key])
        if p["accuracy"] > 1:
            raise ValueError(f"points[{i}]['accuracy'] must be a fraction in [0, 1], got {p['accuracy']!r}")
    return list(points)


def check_budget(budget) -> dict:
    """`budget` if it is a dict with exactly max_latency_ms, max_size_kb (numbers >= 0, inf for
    no limit) and min_accuracy (in [0, 1])."""
    if not isinstance(budget, dict):
        raise TypeError(f"budget must be a dict with keys {', '.join(BUDGET_KEYS)}, got {type(budget).__name__}")
    if set(budget) != set(BUDGET_KEYS):
        raise ValueError(f"budget must have exactly the keys {', '.join(BUDGET_KEYS)}, got {sorted(budget)}")
    for key in BUDGET_KEYS:
        _number(f"budget[{key!r}]", budget[key])
    if budget["min_accuracy"] > 1:
        raise ValueError(f"budget['min_accuracy'] must be a fraction in [0, 1], got {budget['min_accuracy']!r}")
    return budget


def _point(name: str, value) -> dict:
    """`value` checked as one point (its own name may be anything); errors name `name`."""
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a point (a dict with accuracy, latency_ms, size_kb), "
                        f"got {type(value).__name__}")
    try:
        check_points([{**value, "name": name}])
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc).replace("points[0]", name)) from None
    return value


def dominates(a: dict, b: dict) -> bool:
    """Whether a is at least as good as b on every objective and strictly better on one: then
    nobody should pick b, whatever their priorities."""
    _point("a", a), _point("b", b)
    no_worse = (a["accuracy"] >= b["accuracy"] and a["latency_ms"] <= b["latency_ms"]
                and a["size_kb"] <= b["size_kb"])
    better = a["accuracy"] > b["accuracy"] or a["latency_ms"] < b["latency_ms"] or a["size_kb"] < b["size_kb"]
    return no_worse and better


def pareto_front(points) -> list[str]:
    """The names of the points no other point dominates, in the order given."""
    points = check_points(points)
    return [p["name"] for p in points if not any(dominates(q, p) for q in points if q is not p)]


def within(point: dict, budget: dict) -> bool:
    """Whether `point` meets every limit of `budget` (limits are inclusive)."""
    _point("point", point)
    check_budget(budget)
    return (point["latency_ms"] <= budget["max_latency_ms"] and point["size_kb"] <= budget["max_size_kb"]
            and point["accuracy"] >= budget["min_accuracy"])


def choose(points, budget) -> str | None:
    """The name of the most accurate point within `budget`; ties go to the faster, then the
    smaller, then the one listed first. None when no point fits."""
    points, budget = check_points(points), check_budget(budget)
    fits = [p for p in points if within(p, budget)]
    if not fits:
        return None
    # min() keeps the first of equals, so "listed first" breaks the last tie
    return min(fits, key=lambda p: (-p["accuracy"], p["latency_ms"], p["size_kb"]))["name"]


def compound(base: dict, final: dict) -> dict[str, float]:
    """What a pipeline bought, `final` against `base` (points with "params" too):
    fewer_params and smaller (base / final, x), faster (base latency / final latency, x) and
    accuracy_points (final - base, in percentage points; negative: accuracy lost)."""
    _point("base", base), _point("final", final)
    for name, p in (("base", base), ("final", final)):
        if "params" not in p:
            raise ValueError(f"{name} has no 'params' (the parameter count)")
        _number(f"{name}['params']", p["params"])

    def ratio(key):
        top, bottom = float(base[key]), float(final[key])
        return math.inf if bottom == 0 and top > 0 else math.nan if bottom == 0 else top / bottom

    return {"fewer_params": ratio("params"), "smaller": ratio("size_kb"), "faster": ratio("latency_ms"),
            "accuracy_points": 100 * (final["accuracy"] - base["accuracy"])}
