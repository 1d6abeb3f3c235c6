"""Argument checks shared by every public lablib function: a bad value gets a clear error that
names the argument, instead of a traceback from deep inside torch."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path

# torch is optional for this module: the model service's image (docker/serving.Dockerfile)
# runs ONNX Runtime without torch, and lablib.deploy.serving imports this module.
try:
    import torch
    from torch import nn
except ImportError:
    torch = nn = None


def positive_int(name: str, value) -> int:
    """`value` if it is an int >= 1 (bools are not ints here), else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def integer(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """`value` if it is an int in [low, high] (either end may be open-ended: None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        wanted = (f"in [{low}, {high}]" if low is not None and high is not None
                  else f">= {low}" if low is not None else f"<= {high}")
        raise ValueError(f"{name} must be an int {wanted}, got {value!r}")
    return int(value)


def real(name: str, value, low: float = -math.inf, high: float = math.inf, *,
         low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a float if it is a number in the range (a bool, a string or NaN is not):
    [low, high] by default, an end left out with low_open/high_open."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    inside = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if math.isnan(v) or not inside:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return v


def series(name: str, values, finite: bool = False) -> list[float]:
    """`values` (a list or tuple of numbers, or a tensor or array of them) as a flat list of
    floats; a string, a bool or a non-number gets an error naming `name` and the position.
    With finite=True, NaN and infinities are refused too."""
    if isinstance(values, (str, bytes, dict)) or values is None or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a list of numbers, got {type(values).__name__}")
    if hasattr(values, "reshape") and hasattr(values, "tolist"):  # a tensor or an array
        values = values.reshape(-1).tolist()
    out = []
    for i, v in enumerate(values):
        if torch is not None and isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name}[{i}] must be a number, got {type(v).__name__} {v!r}")
        if finite and not math.isfinite(v):
            raise ValueError(f"{name}[{i}] is {v}: {name} must be finite")
        out.append(float(v))
    return out


def tensor_dict(name: str, value, model: str = "state_dict") -> dict:
    """`value` as a dict of name -> tensor: a mapping whose values are all tensors, or a model,
    read as its state dict (model="state_dict") or its named parameters (model="parameters")."""
    if nn is not None and isinstance(value, nn.Module):
        return dict(value.state_dict() if model == "state_dict" else value.named_parameters())
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of name -> tensor (or a model), got {type(value).__name__}")
    for key, t in value.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{key!r}] must be a torch.Tensor, got {type(t).__name__}")
    return dict(value)


def tensor(name: str, value) -> torch.Tensor:
    """`value` if it is a torch.Tensor, else a TypeError naming `name`."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def batch(name: str, x) -> torch.Tensor:
    """`x` if it is a non-empty, finite float batch (N, ...) with N >= 1, else a clear error naming `name`."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, ...), got {type(x).__name__}")
    if x.ndim < 2 or len(x) == 0 or not x.is_floating_point():
        raise ValueError(f"{name} must be a non-empty float batch (N, ...), got {x.dtype} {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def labels(name: str, y, n: int | None = None, classes: int | None = None) -> torch.Tensor:
    """`y` if it is an int64 tensor of class labels (N,): n of them when given, each in
    0..classes-1 when classes is given (else >= 0); else a clear error naming `name`."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int64 class labels, got {type(y).__name__}")
    if y.dtype != torch.long or y.ndim != 1 or (n is not None and len(y) != n):
        want = f"({n},)" if n is not None else "(N,)"
        raise ValueError(f"{name} must be int64 labels of shape {want}, got {y.dtype} {tuple(y.shape)}")
    if len(y) and (int(y.min()) < 0 or (classes is not None and int(y.max()) >= classes)):
        top = f"..{classes - 1}" if classes is not None else " and up"
        raise ValueError(f"{name} must hold class labels 0{top}, got {int(y.min())}..{int(y.max())}")
    return y


def module(name: str, value) -> nn.Module:
    """`value` if it is a torch.nn.Module (a model or a layer), else a TypeError naming `name`."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def path(name: str, value) -> Path:
    """`value` as a Path when it is a str or os.PathLike (not empty), else a TypeError naming `name`."""
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise TypeError(f"{name} must be a path (str or Path), got {type(value).__name__} {value!r}")
    return Path(value)


def existing_file(path, name: str = "path") -> Path:
    """`path` as a Path when it names a regular file, else a clear error naming the argument."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"{name} must be a path (str or Path), got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{name} {str(p)!r} is not a file")
    return p
