import math

import pytest

from lablib.methods import pipeline


def pt(name, accuracy, latency_ms, size_kb, **extra):
    return {"name": name, "accuracy": accuracy, "latency_ms": latency_ms, "size_kb": size_kb, **extra}


POINTS = [
    pt("teacher", 0.96, 5.0, 4000.0),
    pt("student", 0.95, 0.5, 500.0),
    pt("int8", 0.95, 0.4, 130.0),
    pt("worse", 0.94, 0.6, 600.0),  # dominated by student and int8
    pt("tiny", 0.80, 0.1, 20.0),
]


def test_dominates_needs_no_worse_everywhere_and_better_somewhere():
    assert pipeline.dominates(POINTS[2], POINTS[3])
    assert not pipeline.dominates(POINTS[3], POINTS[2])
    assert not pipeline.dominates(POINTS[0], POINTS[1])  # more accurate but slower: a trade-off
    assert not pipeline.dominates(POINTS[1], POINTS[1])  # equal is not better


def test_pareto_front_keeps_the_trade_offs_in_order():
    assert pipeline.pareto_front(POINTS) == ["teacher", "int8", "tiny"]
    assert pipeline.pareto_front(POINTS[:1]) == ["teacher"]
    assert pipeline.pareto_front([]) == []
    twins = [pt("a", 0.9, 1.0, 1.0), pt("b", 0.9, 1.0, 1.0)]
    assert pipeline.pareto_front(twins) == ["a", "b"]  # identical points do not dominate each other


def test_choose_picks_the_most_accurate_within_the_budget():
    open_budget = {"max_latency_ms": math.inf, "max_size_kb": math.inf, "min_accuracy": 0.0}
    assert pipeline.choose(POINTS, open_budget) == "teacher"
    assert pipeline.choose(POINTS, open_budget | {"max_latency_ms": 1.0}) == "int8"  # ties: the faster
    assert pipeline.choose(POINTS, open_budget | {"max_size_kb": 130.0}) == "int8"  # limits are inclusive
    assert pipeline.choose(POINTS, open_budget | {"max_size_kb": 100.0}) == "tiny"
    assert pipeline.choose(POINTS, open_budget | {"max_size_kb": 100.0, "min_accuracy": 0.9}) is None
    same = [pt("first", 0.9, 1.0, 1.0), pt("second", 0.9, 1.0, 1.0)]
    assert pipeline.choose(same, open_budget) == "first"
    assert pipeline.within(POINTS[2], open_budget | {"max_latency_ms": 0.4})
    assert not pipeline.within(POINTS[2], open_budget | {"min_accuracy": 0.951})


def test_compound_ratios_and_zero_latencies():
    base = pt("t", 0.96, 5.0, 4000.0, params=2_000_000)
    final = pt("f", 0.95, 0.5, 100.0, params=100_000)
    got = pipeline.compound(base, final)
    assert got["fewer_params"] == pytest.approx(20.0) and got["smaller"] == pytest.approx(40.0)
    assert got["faster"] == pytest.approx(10.0) and got["accuracy_points"] == pytest.approx(-1.0)
    assert pipeline.compound(base, final | {"latency_ms": 0.0})["faster"] == math.inf
    assert math.isnan(pipeline.compound(base | {"latency_ms": 0.0}, final | {"latency_ms": 0.0})["faster"])


@pytest.mark.parametrize("call, word", [
    (lambda: pipeline.pareto_front({"a": 1}), "points"),
    (lambda: pipeline.pareto_front("abc"), "points"),
    (lambda: pipeline.pareto_front([1]), r"points\[0\]"),
    (lambda: pipeline.pareto_front([pt("", 0.9, 1, 1)]), "name"),
    (lambda: pipeline.pareto_front([pt("a", 0.9, 1, 1), pt("a", 0.8, 1, 1)]), "twice"),
    (lambda: pipeline.pareto_front([{"name": "a", "accuracy": 0.9, "latency_ms": 1}]), "size_kb"),
    (lambda: pipeline.pareto_front([pt("a", 1.5, 1, 1)]), "accuracy"),
    (lambda: pipeline.pareto_front([pt("a", 0.9, -1, 1)]), "latency_ms"),
    (lambda: pipeline.pareto_front([pt("a", 0.9, float("nan"), 1)]), "latency_ms"),
    (lambda: pipeline.pareto_front([pt("a", 0.9, 1, "1")]), "size_kb"),
    (lambda: pipeline.pareto_front([pt("a", True, 1, 1)]), "accuracy"),
    (lambda: pipeline.choose(POINTS, None), "budget"),
    (lambda: pipeline.choose(POINTS, {"max_latency_ms": 1}), "budget"),
    (lambda: pipeline.choose(POINTS, {"max_latency_ms": 1, "max_size_kb": 1, "min_accuracy": 2}), "min_accuracy"),
    (lambda: pipeline.choose(POINTS, {"max_latency_ms": "1", "max_size_kb": 1, "min_accuracy": 0}), "max_latency_ms"),
    (lambda: pipeline.compound(POINTS[0], POINTS[1]), "params"),
    (lambda: pipeline.compound(POINTS[0] | {"params": 1}, POINTS[1] | {"params": -1}), "params"),
    (lambda: pipeline.dominates(POINTS[0], None), "b must be a point"),
    (lambda: pipeline.dominates({"accuracy": 0.9}, POINTS[0]), r"a \(|'a'|a has no"),
    (lambda: pipeline.within(POINTS[0] | {"size_kb": -1}, {}), r"point\['size_kb'\]"),
])
def test_bad_input_is_named(call, word):
    with pytest.raises((TypeError, ValueError), match=word):
        call()
