"""Version shims: every call whose spelling differs between torch 2.5 and the newest lives here,
so the labs read the same on every supported version."""

from __future__ import annotations

import pickle
import re

import torch

from lablib.core.validate import existing_file


def version_tuple(version: str) -> tuple[int, int]:
    """'2.13.0+cpu' -> (2, 13)."""
    if not isinstance(version, str):
        raise TypeError(f"version must be a str like '2.5.1', got {type(version).__name__} {version!r}")
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"version {version!r} does not start with MAJOR.MINOR")
    return int(m.group(1)), int(m.group(2))


TORCH = version_tuple(torch.__version__)


def grad_scaler(device: str = "cuda", enabled: bool = True):
    """A GradScaler for fp16 training. torch.cuda.amp.GradScaler is deprecated (and disables
    itself off CUDA); torch.amp.GradScaler(device) is the current spelling."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str like 'cuda' or a torch.device, got {type(device).__name__} {device!r}")
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {enabled!r}")
    try:
        device = torch.device(device).type
    except RuntimeError:
        raise ValueError(f"device {device!r} is not a torch device type (e.g. 'cuda', 'cpu')") from None
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device == "cuda")  # pragma: no cover


def torch_load(path, map_location="cpu"):
    """torch.load restricted to tensors and plain containers (weights_only=True): loading a
    pickle can run arbitrary code, and torch >= 2.6 refuses it by default anyway."""
    path = existing_file(path, "path")  # a regular file: a FIFO would block the read forever
    if isinstance(map_location, str):
        try:
            torch.device(map_location)
        except RuntimeError:
            raise ValueError(f"map_location {map_location!r} is not a torch device (e.g. 'cpu', 'cuda')") from None
    elif not (map_location is None or isinstance(map_location, (torch.device, dict)) or callable(map_location)):
        raise TypeError(f"map_location must be a device, a dict or a function, got {type(map_location).__name__}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # what weights_only refuses
        raise ValueError(f"{str(path)!r} holds Python objects, not only tensors: weights_only=True refuses it "
                         "(torch.load(..., weights_only=False) runs its code: only for a file you trust)") from exc
    except (RuntimeError, EOFError) as exc:
        raise ValueError(f"{str(path)!r} could not be loaded (empty, truncated, not a checkpoint?): {exc}") from exc


def fsdp2():
    """FSDP2's two entry points, (fully_shard, MixedPrecisionPolicy). torch >= 2.6 exports them
    from torch.distributed.fsdp; torch 2.5 only from torch.distributed._composable.fsdp."""
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:  # pragma: no cover - torch 2.5
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
    return fully_shard, MixedPrecisionPolicy
