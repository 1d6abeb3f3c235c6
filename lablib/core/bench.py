"""Latency, throughput and peak memory, measured the careful way: warm-up calls first (caches,
lazy initialisation, autotuning), then the median of many repeats, with CUDA synchronised
so the clock sees the GPU's work. These functions return numbers; they never assert them."""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import torch

from lablib.core.validate import integer, positive_int, real


@dataclass
class Timing:
    """Per-call times in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    times_ms: list[float]

    def __repr__(self) -> str:
        return f"Timing(median {self.median_ms:.3f} ms, p10-p90 {self.p10_ms:.3f}-{self.p90_ms:.3f} ms, n={self.repeats})"


def _sync(cuda: bool) -> None:
    """Wait for queued GPU work, so the clock measures it (CUDA and Apple's MPS run asynchronously)."""
    if cuda:
        torch.cuda.synchronize()
    elif torch.backends.mps.is_available():
        torch.mps.synchronize()


def latency(fn: Callable[[], object], warmup: int = 3, repeats: int = 20, cuda: bool | None = None) -> Timing:
    """Time `fn()` (no arguments: wrap yours in a lambda) over `repeats` calls after `warmup`."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    integer("warmup", warmup, 0)
    positive_int("repeats", repeats)
    if cuda is not None and not isinstance(cuda, bool):
        raise TypeError(f"cuda must be True, False or None (auto), got {cuda!r}")
    if cuda and not torch.cuda.is_available():
        raise ValueError("cuda=True, but torch.cuda.is_available() is False")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    for _ in range(warmup):
        fn()
    _sync(cuda)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(cuda)
        times.append((time.perf_counter() - start) * 1e3)
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return Timing(statistics.median(times), pick(0.1), pick(0.9), repeats, times)


def compare(fns: dict, rounds: int = 3, warmup: int = 3, repeats: int = 20,
            cuda: bool | None = None) -> dict:
    """Time several functions (key -> no-argument callable) in `rounds` interleaved rounds and
    keep each one's best round: a neighbour's burst of work then slows one round of every
    contender alike, instead of all the rounds of one of them.

    Keys may be tuples, so a grid is one call: {("eager", b): ..., ("ORT", b): ...}."""
    if not isinstance(fns, dict):
        raise TypeError(f"fns must be a dict key -> function, got {type(fns).__name__}")
    if not fns:
        raise ValueError("fns must name at least one function")
    for name, fn in fns.items():
        if not callable(fn):
            raise TypeError(f"fns[{name!r}] must be callable, got {type(fn).__name__}")
    positive_int("rounds", rounds)
    best: dict[str, Timing] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = latency(fn, warmup, repeats, cuda)
            if name not in best or t.median_ms < best[name].median_ms:
                best[name] = t
    return best


def verdict(ratio: float, margin: float = 1.25) -> str:
    """How to say a speed ratio (baseline time / new time) so that a loaded machine cannot flip
    it: "faster" or "slower" only beyond `margin`, else "about as fast"."""
    real("ratio", ratio, 0, math.inf, low_open=True)  # inf: the new time rounds to zero
    real("margin", margin, 1, math.inf, low_open=True, high_open=True)
    return "faster" if ratio >= margin else "slower" if ratio <= 1 / margin else "about as fast"


def compared(ratio: float, margin: float = 1.25) -> str:
    """verdict() in a sentence's middle: "faster than", "slower than" or "about as fast as"."""
    return {"faster": "faster than", "slower": "slower than", "about as fast": "about as fast as"}[verdict(ratio, margin)]


def throughput(fn: Callable[[], object], items: int, warmup: int = 3, repeats: int = 20, cuda: bool | None = None) -> float:
    """Items per second when one call of `fn()` processes `items` items (median call time)."""
    positive_int("items", items)
    return items / (latency(fn, warmup, repeats, cuda).median_ms / 1e3)


def peak_memory(fn: Callable[[], object], interval_s: float = 0.001) -> dict[str, float]:
    """Run `fn()` once; return the peak resident memory of this process while it ran, and the
    rise over the level before it (MB, sampled every `interval_s`), plus CUDA's max allocated
    memory when CUDA is present. Returns {"cpu_peak_mb", "cpu_rise_mb", "cuda_peak_mb"?}."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    real("interval_s", interval_s, 0, 1, low_open=True)  # the sampler sleeps this long between looks
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(interval_s)

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        fn()
        _sync(cuda)
    finally:
        done.set()
        watcher.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    out = {"cpu_peak_mb": peak[0] / 2**20, "cpu_rise_mb": (peak[0] - base) / 2**20}
    if cuda:
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out
