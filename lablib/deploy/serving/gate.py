"""A release gate: should a candidate model version replace the current one?

  measure(models, x, y, latency_n=300, seed=0, rounds=3) -> {version: {"accuracy", "robustness", "p99_ms", "size_kb"}}
  Rules(...)                                    the thresholds (defaults below, each with its reason)
  decide(current, candidate, rules=None) -> Decision(promote, rows, reasons)

What is compared, each on the same held-out images:
  accuracy    the share classified right                 the candidate may lose at most max_accuracy_drop
  robustness  robustness.score: mean accuracy over the   ... at most max_robustness_drop
              corrupted copies (noise, blur, occlusion, contrast)
  p99_ms      the 99th percentile of one-image predict  at most max_p99_ratio times the current one's,
              calls, both versions timed in turn        unless within p99_slack_ms of it
              (best of 3 rounds)
  size_kb     the model file                            at most max_size_ratio times the current one's

Why tolerances and not "at least as good": on a few hundred test images an accuracy is itself
uncertain (its standard error near 95 % on 360 images is about 1.1 points), and a latency
measured on a shared machine moves by tens of percent from run to run; a gate that demands
strict improvement rejects good candidates at random.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from lablib.core.validate import integer, real
from lablib.deploy.serving import robustness
from lablib.deploy.serving.loadgen import percentile


@dataclass(frozen=True)
class Rules:
    """The gate's thresholds. Shares are fractions (0.02 = 2 points of accuracy)."""

    max_accuracy_drop: float = 0.02
    max_robustness_drop: float = 0.02
    max_p99_ratio: float = 1.5
    p99_slack_ms: float = 2.0  # below this a latency difference is noise, and costs nothing of a 200 ms budget
    max_size_ratio: float = 2.0

    def __post_init__(self):
        real("max_accuracy_drop", self.max_accuracy_drop, 0, 1)
        real("max_robustness_drop", self.max_robustness_drop, 0, 1)
        real("max_p99_ratio", self.max_p99_ratio, 1, math.inf, high_open=True)
        real("p99_slack_ms", self.p99_slack_ms, 0, math.inf, high_open=True)
        real("max_size_ratio", self.max_size_ratio, 1, math.inf, high_open=True)


@dataclass
class Decision:
    """promote: whether every rule passed; rows: one per metric (current, candidate, rule,
    passed); reasons: one sentence per rule that failed."""

    promote: bool
    rows: list[dict] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "promote" if self.promote else "reject"


METRICS = ("accuracy", "robustness", "p99_ms", "size_kb")


def measure(models: dict, x, y, latency_n: int = 300, seed: int = 0, rounds: int = 3) -> dict[str, dict]:
    """Accuracy, robustness score, p99 latency of one-image calls and file size of every model
    in `models` ({version: Model}) on the held-out images `x` (N, C, H, W) and labels `y`.
    The latencies are taken in turn (one call of each model, then the next), so a burst of load
    on the machine slows all of them alike, in `rounds` rounds of `latency_n` calls each; each
    model's p99 is its best round's (a burst that hit one round does not decide the gate; a
    model that is really slower is slower in every round)."""
    if not isinstance(models, dict) or not models:
        raise TypeError(f"models must be a dict {{version: Model}}, got {type(models).__name__}")
    for v, m in models.items():
        if not callable(getattr(m, "predict", None)):
            raise TypeError(f"models[{v!r}] must have a predict(x) method, got {type(m).__name__}")
    latency_n = integer("latency_n", latency_n, 1, 1_000_000)
    rounds = integer("rounds", rounds, 1, 100)
    out = {}
    for v, m in models.items():
        curves = robustness.curves(m, x, y, seed=seed)
        out[v] = {"accuracy": robustness.accuracy(m, x, y), "robustness": robustness.score(curves),
                  "size_kb": float(getattr(m, "size_kb", math.nan))}
    images = np.asarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float32)
    for m in models.values():  # warm-up: allocations, caches
        for i in range(10):
            m.predict(images[i % len(images)][None])
    for _ in range(rounds):
        times: dict[str, list[float]] = {v: [] for v in models}
        for i in range(latency_n):
            one = images[i % len(images)][None]
            for v, m in models.items():
                start = time.perf_counter()
                m.predict(one)
                times[v].append(time.perf_counter() - start)
        for v in models:
            p99 = percentile(times[v], 99) * 1e3
            out[v]["p99_ms"] = min(out[v].get("p99_ms", math.inf), p99)
    return out


def _metrics(name: str, value) -> dict:
    if not isinstance(value, dict) or not set(METRICS) <= set(value):
        raise TypeError(f"{name} must be a dict with {', '.join(METRICS)} (what measure() gives per version), got {value!r}")
    return {k: real(f"{name}[{k!r}]", value[k], 0, math.inf) for k in METRICS}


def decide(current: dict, candidate: dict, rules: Rules | None = None) -> Decision:
    """Promote `candidate` over `current` (each a dict of METRICS, as measure() gives them) only
    if it passes every rule of `rules` (default Rules()); the rows and the failed rules' reasons."""
    cur, cand = _metrics("current", current), _metrics("candidate", candidate)
    rules = Rules() if rules is None else rules
    if not isinstance(rules, Rules):
        raise TypeError(f"rules must be a Rules, got {type(rules).__name__}")
    p99_limit = max(cur["p99_ms"] * rules.max_p99_ratio, cur["p99_ms"] + rules.p99_slack_ms)
    checks = [
        ("accuracy", cand["accuracy"] >= cur["accuracy"] - rules.max_accuracy_drop,
         f">= current - {rules.max_accuracy_drop:.3g}",
         f"accuracy {cand['accuracy']:.3f} is more than {rules.max_accuracy_drop:.3g} below the current {cur['accuracy']:.3f}"),
        ("robustness", cand["robustness"] >= cur["robustness"] - rules.max_robustness_drop,
         f">= current - {rules.max_robustness_drop:.3g}",
         f"robustness {cand['robustness']:.3f} is more than {rules.max_robustness_drop:.3g} below the current "
         f"{cur['robustness']:.3f}"),
        ("p99_ms", cand["p99_ms"] <= p99_limit,
         f"<= max({rules.max_p99_ratio:g} x current, current + {rules.p99_slack_ms:g} ms)",
         f"p99 {cand['p99_ms']:.3f} ms is above the limit {p99_limit:.3f} ms"),
        ("size_kb", cand["size_kb"] <= cur["size_kb"] * rules.max_size_ratio,
         f"<= {rules.max_size_ratio:g} x current",
         f"the file is {cand['size_kb']:.0f} kB, over {rules.max_size_ratio:g} x the current {cur['size_kb']:.0f} kB"),
    ]
    rows = [{"metric": m, "current": cur[m], "candidate": cand[m], "rule": rule, "passed": ok}
            for m, ok, rule, _ in checks]
    reasons = [why for _, ok, _, why in checks if not ok]
    return Decision(not reasons, rows, reasons)


def as_dict(decision: Decision) -> dict:
    """The decision as plain JSON-ready data."""
    if not isinstance(decision, Decision):
        raise TypeError(f"decision must be a Decision, got {type(decision).__name__}")
    return {"verdict": decision.verdict, **asdict(decision)}
