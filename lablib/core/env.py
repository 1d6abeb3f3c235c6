"""What this machine is: the [OK]/[FAIL] report of the setup check, the one-line summary each lab prints,
and the environment stamp stored with every result."""

from __future__ import annotations

import datetime as dt
import importlib
import math
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata

from packaging.version import InvalidVersion, Version

from lablib.core.validate import real

# (distribution name, import name, lowest supported version, what needs it)
REQUIREMENTS = [
    ("torch", "torch", "2.5", "every lab"),
    ("numpy", "numpy", "1.24", "every lab"),
    ("scikit-learn", "sklearn", "1.3", "the digits dataset"),
    ("matplotlib", "matplotlib", "3.7", "plots"),
    ("jupytext", "jupytext", "1.16", "opening labs/*.py as notebooks"),
    ("kornia", "kornia", "0.7.3", "augmentations"),
    ("onnx", "onnx", "1.16", "ONNX export (labs 07, 08)"),
    ("onnxruntime", "onnxruntime", "1.19", "ONNX Runtime (labs 07, 08)"),
    ("transformers", "transformers", "4.46", "text encoders, small transformers (labs 06, 08)"),
    ("diffusers", "diffusers", "0.31", "diffusion models"),
]
MIN_PYTHON = (3, 10)
# The setup check trains a SmallCNN on digits and compares this machine's speed with the machine the
# `cpu` profiles were sized on: the 2-core CI machine (AMD EPYC, torch 2.13 CPU), where the setup check
# measured 12,000-15,000 training images per second. It is a yardstick, not a result.
REFERENCE_TRAIN_IMG_PER_S = 13000.0
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")


@dataclass
class Requirement:
    name: str
    status: str  # OK | FAIL | WARN | INFO
    found: str
    note: str = ""

    def __str__(self) -> str:
        return f"[{self.status}]".ljust(7) + f"{self.name:<14}{self.found:<22}{self.note}"


def _version_ok(found: str, lowest: str) -> bool:
    try:
        return Version(found.split("+")[0]) >= Version(lowest)
    except InvalidVersion:
        return False


def cuda_check() -> Requirement:
    import torch

    if not torch.cuda.is_available():
        note = "no NVIDIA GPU visible: fine, the labs run at cpu scale (GPU parts are skipped)"
        if torch.backends.mps.is_available():
            note = "Apple GPU (MPS) found: used where an op supports it"
        return Requirement("CUDA", "INFO", "not available", note)
    built = torch.version.cuda or "?"
    name = torch.cuda.get_device_name(0)
    if built.startswith("12."):
        return Requirement("CUDA", "OK", built, f"{name}; the Docker image uses CUDA 12.1")
    return Requirement("CUDA", "WARN", built, f"{name}; the project is tested with CUDA 12.x builds")


def report() -> list[Requirement]:
    """Every requirement checked against what this Python can import."""
    checks = []
    py = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info[:2] >= MIN_PYTHON
    checks.append(Requirement("Python", "OK" if ok else "FAIL", py, "" if ok else "needs Python 3.10 or newer"))
    for dist, module, lowest, why in REQUIREMENTS:
        try:
            # The module's own __version__ first: PyPI's metadata says '2.5.1' where torch
            # itself says '2.5.1+cu124', and the build tag is what a learner needs to see.
            found = getattr(importlib.import_module(module), "__version__", None) or metadata.version(dist)
        except Exception as exc:  # missing, or broken at import: both are a FAIL to report
            checks.append(Requirement(dist, "FAIL", "not importable", f"{type(exc).__name__}; needed for {why}"))
            continue
        good = _version_ok(found, lowest)
        checks.append(Requirement(dist, "OK" if good else "FAIL", found, f">= {lowest} needed" if not good else ""))
        if dist == "torch":
            checks.append(cuda_check())
    return checks


def print_report(checks: list[Requirement] | None = None) -> bool:
    """Print the report; return True when nothing FAILed."""
    checks = report() if checks is None else checks
    if not isinstance(checks, (list, tuple)) or not all(isinstance(c, Requirement) for c in checks):
        raise TypeError(f"checks must be a list of Requirement (from env.report()), got {checks!r:.80}")
    for c in checks:
        print(c)
    failed = [c.name for c in checks if c.status == "FAIL"]
    print("\nAll requirements met." if not failed else f"\nFix before the workshop: {', '.join(failed)}")
    return not failed


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU features that decide low-precision speed (bf16, int8), where Linux tells them."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in CPU_FLAGS if flag in have]
    except OSError:
        pass
    return []


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    if torch.backends.mps.is_available():
        return "mps (Apple GPU)"
    n = torch.get_num_threads()
    return f"cpu ({cpu_name()}, {n} thread{'' if n == 1 else 's'})"


def line() -> str:
    """One line a lab prints in its setup cell."""
    import torch

    from lablib.core import config

    return (
        f"LAB_SCALE={config.scale()} | {device_name()} | torch {torch.__version__} | "
        f"Python {platform.python_version()} | {platform.system()} {platform.machine()}"
    )


def stamp() -> dict:
    """The environment a result was measured in: stored beside every recorded figure."""
    import torch

    from lablib import __version__
    from lablib.core import config

    versions = {"python": platform.python_version(), "lablib": __version__}
    for dist, *_ in REQUIREMENTS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    versions["torch"] = torch.__version__  # with its build tag (+cpu, +cu121), as above
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "scale": config.scale(),
        "device": device_name(),
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "platform": f"{platform.system()} {platform.machine()}",
        "ci": bool(os.environ.get("CI")),
        "versions": versions,
    }


def speed_verdict(train_img_per_s: float) -> str:
    """How this machine compares with the one the `cpu` profiles were sized on."""
    real("train_img_per_s", train_img_per_s, 0, math.inf, low_open=True, high_open=True)
    ratio = train_img_per_s / REFERENCE_TRAIN_IMG_PER_S
    if ratio >= 0.5:
        return f"{ratio:.1f}x the reference machine: keeps up; the labs at cpu scale take a few minutes each."
    if ratio >= 0.2:
        return f"{ratio:.1f}x the reference machine: slower; expect cpu-scale labs to take about {1 / ratio:.0f}x as long."
    return f"{ratio:.2f}x the reference machine: too slow for cpu scale in a workshop; use LAB_SCALE=smoke, a GPU box or a neighbour."
