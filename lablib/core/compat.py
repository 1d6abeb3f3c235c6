"""Version shims: every call whose spelling differs between torch 2.5 and the newest lives here,
so the labs read the same on every supported version."""

from __future__ import annotations

import re

import torch


def version_tuple(version: str) -> tuple[int, int]:
    """'2.13.0+cpu' -> (2, 13)."""
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"version {version!r} does not start with MAJOR.MINOR")
    return int(m.group(1)), int(m.group(2))


TORCH = version_tuple(torch.__version__)


def grad_scaler(device: str = "cuda", enabled: bool = True):
    """A GradScaler for fp16 training. torch.cuda.amp.GradScaler is deprecated (and disables
    itself off CUDA); torch.amp.GradScaler(device) is the current spelling."""
    device = torch.device(device).type
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device == "cuda")  # pragma: no cover


def torch_load(path, map_location="cpu"):
    """torch.load restricted to tensors and plain containers (weights_only=True): loading a
    pickle can run arbitrary code, and torch >= 2.6 refuses it by default anyway."""
    return torch.load(path, map_location=map_location, weights_only=True)
