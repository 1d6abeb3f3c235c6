"""Resolve the pinned stacks (requirements/*.txt) with pip, as the Docker image and the conda
environments will, but without installing: `pip install --dry-run` for CPython 3.10 on
x86-64 Linux (the image's platform), whatever machine this runs on.

One substitution, stated in the output: PyTorch's own index (download.pytorch.org) is not
reachable from CI, so `torch==2.5.1+cu121` resolves as PyPI's `torch==2.5.1`, the same release
with the same Python dependencies (PyPI's Linux build targets CUDA 12.4 instead of 12.1).

    python tools/check_pins.py            # every set
    python tools/check_pins.py cpu.txt    # one set
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETS = ("gpu-cu121.txt", "cpu.txt", "serving.txt")  # serving.txt: the model service's image
TARGET = ["--python-version", "3.10", "--implementation", "cp", "--only-binary=:all:"]
TARGET += [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                                          "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64")]
# Pure-Python dependencies published only as source: a cross-platform dry run may not build
# anything, so each is built here into a universal wheel first and offered with --find-links
# (dvc -> hydra-core -> antlr4-python3-runtime 4.9.*, which has no wheel on PyPI).
SOURCE_ONLY = ("antlr4-python3-runtime==4.9.3",)
SHOWN = ("torch", "transformers", "diffusers", "kornia", "onnxruntime", "onnxruntime-gpu", "numpy")


def requirements(name: str) -> tuple[list[str], list[str]]:
    """The pins of requirements/<name> as pip arguments, and the substitutions made."""
    pins, notes = [], []
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--extra-index-url https://download.pytorch.org"):
            notes.append(f"skipped {line.split()[1]} (not reachable here)")
            continue
        local = re.match(r"(torch==[\d.]+)\+\w+$", line)
        if local:
            notes.append(f"{line} resolved as {local.group(1)} from PyPI")
            line = local.group(1)
        pins.append(line)
    return pins, notes


def resolve(name: str) -> dict[str, str]:
    pins, notes = requirements(name)
    with tempfile.TemporaryDirectory() as tmp:
        report, wheels = Path(tmp) / "report.json", Path(tmp) / "wheels"
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                                "--wheel-dir", str(wheels), *SOURCE_ONLY], capture_output=True, text=True)
        if built.returncode != 0:
            raise SystemExit(f"could not build {SOURCE_ONLY} as wheels:\n{built.stderr[-2000:]}")
        notes.append(f"built {', '.join(SOURCE_ONLY)} locally (source only on PyPI, pure Python)")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
               "--quiet", "--report", str(report), "--find-links", str(wheels), *TARGET, *pins]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            errors = [ln for ln in done.stderr.splitlines() if not ln.startswith("WARNING")]
            raise SystemExit(f"{name}: pip could not resolve the pins:\n" + "\n".join(errors[-15:]))
        installed = json.loads(report.read_text())["install"]
    versions = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] for i in installed}
    shown = ", ".join(f"{k} {versions[k]}" for k in SHOWN if k in versions)
    print(f"{name}: resolves for CPython 3.10 / Linux x86-64: {len(versions)} packages ({shown})")
    for note in notes:
        print(f"  note: {note}")
    return versions


def main(argv: list[str]) -> int:
    names = argv or list(SETS)
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise SystemExit(f"unknown set(s) {unknown}; choose from {list(SETS)}")
    for name in names:
        resolve(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
