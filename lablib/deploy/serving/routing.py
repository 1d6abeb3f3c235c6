"""Which model version answers a request: a routing table changed at run time, sticky by user,
a canary ramp, and an automatic rollback.

  Router(weights, stable)   {version: weight}; choose(user_id) -> version; set_weights(...),
                            promote(version), rollback(reason); every change is kept in .events
  bucket(user_id)           a user's fixed place in [0, 1): a SHA-256 of the id, the same in every
                            process and run (Python's hash() of a str is salted per process)
  Canary(router, version)   the ramp 5 % -> 25 % -> 100 %: advance() moves one step, and the last
                            step promotes the canary to stable
  breaches(stats, ...)      the rollback rule: which thresholds a window's stats break
  RollbackGuard(router)     sliding windows of latency and errors per version; when the canary's
                            error rate or p99 passes its threshold, everything goes back to the
                            stable version and the reason is recorded

How stickiness works: a user's bucket never changes, and each version owns a slice of [0, 1) of
its weight's size. Candidates take the bottom of the range, the stable version the top, so
raising a canary's weight moves users from stable to the canary only: a user who saw the canary
at 5 % still sees it at 25 %. While the weights stay, nobody flips.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import threading
import time
from collections import deque

from lablib.core.validate import integer, real
from lablib.deploy.serving.store import check_version


def bucket(user_id: str) -> float:
    """`user_id`'s fixed place in [0, 1): the first 8 bytes of its SHA-256, as a fraction."""
    if not isinstance(user_id, str) or not user_id:
        raise TypeError(f"user_id must be a non-empty str, got {type(user_id).__name__} {user_id!r}")
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _weights(weights) -> dict[str, float]:
    """`weights` checked ({version: weight >= 0}, some weight > 0) and scaled to sum to 1."""
    if not isinstance(weights, dict) or not weights:
        raise TypeError(f"weights must be a non-empty dict {{version: weight}}, got {weights!r}")
    checked = {check_version(v, "a version in weights"): real(f"weights[{v!r}]", w, 0, math.inf, high_open=True)
               for v, w in weights.items()}
    total = sum(checked.values())
    if total <= 0:
        raise ValueError(f"weights must give some version a weight > 0, got {weights!r}")
    return {v: w / total for v, w in checked.items()}


class Router:
    """Routes requests between model versions by weight, sticky by user id.

    weights  {version: weight}, scaled to sum to 1; versions with weight 0 may stay listed
    stable   the version everything returns to on a rollback (default: the heaviest)
    seed     for requests without a user id, which are split at random by weight
    """

    def __init__(self, weights: dict, stable: str | None = None, seed: int = 0):
        weights = _weights(weights)
        self._lock = threading.Lock()
        self._rng = random.Random(integer("seed", seed, 0))
        self.events: list[dict] = []
        self._stable = max(weights, key=weights.get) if stable is None else self._known(stable, weights)
        self._apply(weights, "start", "the initial routing table")

    @staticmethod
    def _known(version, weights) -> str:
        if check_version(version, "stable") not in weights:
            raise ValueError(f"stable version {version!r} is not in the routing table {sorted(weights)}")
        return version

    def _apply(self, weights: dict[str, float], kind: str, reason: str, **detail) -> dict:
        # candidates (sorted by name) take the bottom of [0, 1), the stable version the top
        order = sorted(v for v in weights if v != self._stable) + [self._stable]
        uppers, total = [], 0.0
        for v in order:
            total += weights.get(v, 0.0)
            uppers.append(total)
        uppers[-1] = 1.0  # rounding must not leave a sliver of [0, 1) unrouted
        # one tuple, replaced whole: choose() reads it without taking the lock
        self._table = (tuple(order), tuple(uppers))
        self._weights = dict(weights)
        event = {"time": time.time(), "kind": kind, "weights": dict(weights), "stable": self._stable,
                 "reason": reason, **detail}
        self.events.append(event)
        return event

    @property
    def weights(self) -> dict[str, float]:
        """The current table {version: share of traffic}."""
        return dict(self._weights)

    @property
    def stable(self) -> str:
        return self._stable

    def choose(self, user_id: str | None = None) -> str:
        """The version that answers this request: by `user_id`'s bucket when given (sticky),
        else at random by weight."""
        order, uppers = self._table
        if user_id is None:
            with self._lock:  # random.Random is not safe to share between threads
                u = self._rng.random()
        else:
            u = bucket(user_id)
        # the first slice whose upper end lies above u; a zero-weight slice ends where the one
        # before it does, so it is never chosen; u < 1.0 = the last upper end, so one always is
        return order[bisect.bisect_right(uppers, u)]

    def set_weights(self, weights: dict, reason: str = "changed by hand") -> dict:
        """Replace the table (at run time; requests in flight keep the version they got). The
        stable version must stay listed. Returns the recorded event."""
        weights = _weights(weights)
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, got {type(reason).__name__}")
        with self._lock:
            if self._stable not in weights:
                raise ValueError(f"weights must keep the stable version {self._stable!r} (weight 0 is "
                                 "allowed); promote() another version first")
            return self._apply(weights, "weights", reason)

    def promote(self, version: str, reason: str = "promoted") -> dict:
        """Make `version` the stable one, with all the traffic."""
        version = check_version(version)
        with self._lock:
            self._stable = version
            return self._apply({version: 1.0}, "promote", reason)

    def rollback(self, reason: str, **detail) -> dict:
        """Send all traffic to the stable version and record why."""
        if not isinstance(reason, str) or not reason:
            raise TypeError(f"reason must be a non-empty str saying why, got {reason!r}")
        with self._lock:
            rolled = {v: 0.0 for v in self._weights} | {self._stable: 1.0}
            return self._apply(rolled, "rollback", reason, **detail)

    def __repr__(self) -> str:
        table = ", ".join(f"{v}: {w:.0%}" for v, w in self._weights.items())
        return f"Router({{{table}}}, stable={self._stable!r})"


class Canary:
    """A canary release of `version` beside the router's stable version, in `steps` (shares of
    traffic, rising, the last 1.0). advance() moves to the next step; the last step promotes it.
    After a rollback the ramp is over: advance() then raises."""

    def __init__(self, router: Router, version: str, steps=(0.05, 0.25, 1.0)):
        if not isinstance(router, Router):
            raise TypeError(f"router must be a Router, got {type(router).__name__}")
        self.router, self.version = router, check_version(version)
        if version == router.stable:
            raise ValueError(f"version {version!r} is already the stable version: nothing to ramp")
        if not isinstance(steps, (list, tuple)) or not steps:
            raise TypeError(f"steps must be a list of shares of traffic such as (0.05, 0.25, 1.0), got {steps!r}")
        self.steps = [real(f"steps[{i}]", s, 0, 1, low_open=True) for i, s in enumerate(steps)]
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)) or self.steps[-1] != 1.0:
            raise ValueError(f"steps must rise and end at 1.0, got {list(steps)}")
        self.baseline = router.stable
        self.step = -1  # not started
        self._since = len(router.events)

    @property
    def weight(self) -> float:
        """The canary's share of traffic now."""
        return self.router.weights.get(self.version, 0.0)

    @property
    def rolled_back(self) -> dict | None:
        """The rollback event that ended this canary, if one did."""
        return next((e for e in self.router.events[self._since:] if e["kind"] == "rollback"), None)

    @property
    def done(self) -> bool:
        return self.router.stable == self.version

    def advance(self) -> float:
        """Route the next step's share to the canary (the rest to stable); the last step promotes
        it. Returns the canary's share."""
        if self.rolled_back:
            raise RuntimeError(f"the canary {self.version!r} was rolled back: {self.rolled_back['reason']}")
        if self.done:
            raise RuntimeError(f"the canary {self.version!r} is already promoted to stable")
        self.step += 1
        share = self.steps[self.step]
        if share >= 1.0:
            self.router.promote(self.version, reason=f"canary {self.version!r} promoted after {self.step} step(s)")
        else:
            self.router.set_weights({self.version: share, self.baseline: 1.0 - share},
                                    reason=f"canary {self.version!r} at {share:.0%}")
        return share


class RollbackGuard:
    """Watches each version over a sliding window of its last `window` requests; when a version
    other than the stable one, with traffic, has at least `min_requests` in its window and its
    error rate is above `max_error_rate` or its p99 latency above `max_p99_s`, the router rolls
    back to the stable version and the event says which rule fired, with the measured values.

    observe(version, latency_s, ok) is called by the service after each answered request (errors
    are the service's own failures, 5xx; a client's bad request says nothing about a model)."""

    def __init__(self, router: Router, *, max_error_rate: float = 0.05, max_p99_s: float = 0.2,
                 window: int = 200, min_requests: int = 20):
        if not isinstance(router, Router):
            raise TypeError(f"router must be a Router, got {type(router).__name__}")
        self.router = router
        self.max_error_rate = real("max_error_rate", max_error_rate, 0, 1, high_open=True)
        self.max_p99_s = real("max_p99_s", max_p99_s, 0, math.inf, low_open=True, high_open=True)
        self.window = integer("window", window, 1, 1_000_000)
        self.min_requests = integer("min_requests", min_requests, 1, self.window)
        self._seen: dict[str, deque] = {}
        self._lock = threading.Lock()

    def observe(self, version: str, latency_s: float, ok: bool) -> dict | None:
        """Record one request; returns the rollback event when this request triggered one."""
        latency_s = real("latency_s", latency_s, 0, math.inf, high_open=True)
        if not isinstance(ok, bool):
            raise TypeError(f"ok must be True or False, got {ok!r}")
        with self._lock:
            seen = self._seen.setdefault(check_version(version), deque(maxlen=self.window))
            seen.append((latency_s, ok))
            if version == self.router.stable or self.router.weights.get(version, 0.0) == 0.0:
                return None
            stats = self._stats(seen)
            broken = breaches(stats, self.max_error_rate, self.max_p99_s, self.min_requests)
            if not broken:
                return None
            seen.clear()  # a fresh window if the version is tried again
            return self.router.rollback(f"{version}: {' and '.join(broken)} over its last {stats['n']} requests",
                                        version=version, **stats)

    @staticmethod
    def _stats(seen) -> dict:
        latencies = sorted(s for s, _ in seen)
        errors = sum(1 for _, ok in seen if not ok)
        return {"n": len(seen), "error_rate": errors / len(seen), "p99_s": _quantile(latencies, 0.99)}

    def stats(self) -> dict[str, dict]:
        """{version: {"n", "error_rate", "p99_s"}} over each version's current window."""
        with self._lock:
            return {v: self._stats(s) for v, s in self._seen.items() if s}


def breaches(stats: dict, max_error_rate: float, max_p99_s: float, min_requests: int) -> list[str]:
    """The rollback rule: which thresholds a version's window `stats` ({"n", "error_rate",
    "p99_s"}) breaks, as reasons ([] when none does, or when the window holds fewer than
    `min_requests` requests: too few to judge). Errors and p99 are compared strictly (>)."""
    if not isinstance(stats, dict) or not {"n", "error_rate", "p99_s"} <= set(stats):
        raise TypeError(f"stats must be a dict with n, error_rate and p99_s, got {stats!r}")
    n = integer("stats['n']", stats["n"], 0)
    error_rate = real("stats['error_rate']", stats["error_rate"], 0, 1)
    max_error_rate = real("max_error_rate", max_error_rate, 0, 1)
    max_p99_s = real("max_p99_s", max_p99_s, 0, math.inf, low_open=True)
    if n < integer("min_requests", min_requests, 1):
        return []
    p99 = stats["p99_s"]
    p99 = real("stats['p99_s']", p99, 0) if not (isinstance(p99, float) and math.isnan(p99)) else p99
    broken = []
    if error_rate > max_error_rate:
        broken.append(f"error rate {error_rate:.1%} > {max_error_rate:.1%}")
    if p99 > max_p99_s:  # NaN (no latency yet) compares False: not a breach
        broken.append(f"p99 {p99 * 1e3:.1f} ms > {max_p99_s * 1e3:.1f} ms")
    return broken


def _quantile(sorted_values: list[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated between neighbours (NumPy's default)."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
