"""Pruning: remove the weights (or whole neurons) a trained network needs least.

Two kinds, and the difference is the lesson:

  unstructured  zero the individual weights with the smallest |w| (torch.nn.utils.prune).
                Every tensor keeps its shape, so a dense matmul does the same work and the
                raw file is the same size; only a compressor (or sparse hardware) profits.
  structured    remove whole neurons: a row of one Linear and the matching column of the
                next. The matrices really shrink, so the model is smaller and faster.

How torch.nn.utils.prune works: pruning `layer.weight` renames the parameter to
`layer.weight_orig`, adds a buffer `layer.weight_mask` (1 keep, 0 pruned) and a forward
pre-hook that sets `layer.weight = weight_orig * weight_mask` before every forward. The
optimizer keeps updating weight_orig, but the mask zeroes the pruned entries in every
forward and their gradient, so fine-tuning never revives them. `prune.remove` bakes the
product into a plain `weight` parameter again.
"""

from __future__ import annotations

import copy
import io
import zlib

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from lablib.core import validate
from lablib.nets.models import MLP

PRUNABLE = (nn.Linear, nn.Conv2d)


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every (module, "weight") pair worth pruning: the weights of each Linear and Conv2d.

    Biases are left alone: they are few, and zeroing one shifts a whole neuron.
    """
    return _prunable(model, "model")


def _prunable(model: nn.Module, name: str) -> list[tuple[nn.Module, str]]:
    validate.module(name, model)
    pairs = [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]
    if not pairs:
        raise ValueError(f"{name} has no Linear or Conv2d layer to prune ({type(model).__name__})")
    return pairs


def _fraction(name: str, value, low_open: bool) -> float:
    """Check a fraction in [0, 1] (amount) or (0, 1] (keep) and return it as a float.

    The float matters: torch.nn.utils.prune reads an int amount as a *count*, so amount=1
    would prune one weight, not 100 %."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a fraction (a number), got {type(value).__name__}")
    if not (0 < value <= 1 if low_open else 0 <= value <= 1):
        raise ValueError(f"{name} must be in {'(0, 1]' if low_open else '[0, 1]'}, got {value!r}")
    return float(value)


def sparsity(model_or_tensor) -> float:
    """Share of exactly-zero entries: of one tensor, or over all prunable weights of a model."""
    if isinstance(model_or_tensor, torch.Tensor):
        weights = [model_or_tensor]
    elif isinstance(model_or_tensor, nn.Module):
        # getattr, not named_parameters: on a pruned layer `weight` is weight_orig * mask
        weights = [getattr(m, name) for m, name in _prunable(model_or_tensor, "model_or_tensor")]
    else:
        raise TypeError(f"model_or_tensor must be an nn.Module or a tensor, got {type(model_or_tensor).__name__}")
    zeros = sum((w == 0).sum().item() for w in weights)
    total = sum(w.numel() for w in weights)
    if total == 0:
        raise ValueError("model_or_tensor has no elements")
    return zeros / total


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Sparsity of each prunable layer's weight, keyed by the layer's name (e.g. "net.1")."""
    prunable(model)  # the same checks: a module, with something to prune
    return {name: sparsity(m.weight) for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def l1_mask(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """The mask L1 (magnitude) pruning puts on one tensor: 0 for the round(amount * n) entries
    with the smallest |w|, 1 for the rest. What prune.l1_unstructured computes, spelled out."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a tensor, got {type(weight).__name__}")
    k = round(_fraction("amount", amount, low_open=False) * weight.numel())
    mask = torch.ones(weight.numel(), dtype=weight.dtype, device=weight.device)
    if k > 0:
        smallest = torch.topk(weight.detach().abs().flatten(), k, largest=False).indices
        mask[smallest] = 0
    return mask.reshape(weight.shape)


def global_l1_masks(weights, amount: float) -> list[torch.Tensor]:
    """The masks global magnitude (L1) pruning puts on several tensors at once: the |w| of all
    of them are ranked together, the round(amount * total) smallest get 0, the rest 1. One mask
    per tensor, shaped like it. What prune.global_unstructured(..., L1Unstructured) computes,
    spelled out; with a single tensor it is l1_mask."""
    if isinstance(weights, torch.Tensor) or not isinstance(weights, (list, tuple)):
        raise TypeError(f"weights must be a list of tensors, got {type(weights).__name__}")
    if not weights:
        raise ValueError("weights must hold at least one tensor")
    for i, w in enumerate(weights):
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"weights[{i}] must be a tensor, got {type(w).__name__}")
    amount = _fraction("amount", amount, low_open=False)
    scores = torch.cat([w.detach().abs().flatten().to(weights[0]) for w in weights])
    masks = l1_mask(scores, amount).split([w.numel() for w in weights])
    return [m.reshape(w.shape).to(dtype=w.dtype, device=w.device) for m, w in zip(masks, weights, strict=True)]


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """The N:M semi-structured mask (2:4 by default): cut the last dimension into groups of m
    consecutive entries and keep the n with the largest |w| in each group (1), zero the rest (0).

    Every group ends up with exactly m - n zeros, a pattern sparse tensor cores can skip
    (torch.sparse.to_sparse_semi_structured wants 2:4). Attach it with
    torch.nn.utils.prune.custom_from_mask(layer, "weight", mask).
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a tensor, got {type(weight).__name__}")
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if m < 1 or not 0 <= n <= m:
        raise ValueError(f"n and m must satisfy 0 <= n <= m and m >= 1, got n={n}, m={m}")
    if weight.dim() == 0 or weight.shape[-1] % m:
        raise ValueError(f"weight's last dimension must be a multiple of m={m}, got shape {tuple(weight.shape)}")
    groups = weight.detach().abs().reshape(-1, m)  # one row per group of m neighbours
    keep = groups.topk(n, dim=1).indices  # the n largest of each group
    mask = torch.zeros_like(groups).scatter_(1, keep, 1.0)
    return mask.reshape(weight.shape)


def global_magnitude_prune(model: nn.Module, amount: float) -> nn.Module:
    """Zero the `amount` share of all prunable weights with the smallest |w|, ranked across
    every layer at once (so layers with many small weights lose more). In place; returns model.

    The masks stay attached (weight_orig, weight_mask, a forward pre-hook), so fine-tuning
    afterwards keeps the pruned weights at zero. make_permanent() bakes them in.
    """
    amount = _fraction("amount", amount, low_open=False)
    torch_prune.global_unstructured(
        prunable(model), pruning_method=torch_prune.L1Unstructured, amount=amount
    )
    return model


def clone(model: nn.Module) -> nn.Module:
    """copy.deepcopy that also works on a pruned model.

    A pruned layer's `weight` is computed (weight_orig * weight_mask, with a gradient history)
    and deepcopy refuses computed tensors. Detaching it first changes nothing: the forward
    pre-hook recomputes it on the next call anyway.
    """
    for module, name in prunable(model):
        if hasattr(module, f"{name}_mask"):
            setattr(module, name, getattr(module, name).detach())
    return copy.deepcopy(model)


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove the pruning machinery: weight = weight_orig * weight_mask becomes a plain
    parameter again, weight_orig, weight_mask and the hook are gone. In place; returns model."""
    for module, name in prunable(model):
        if hasattr(module, f"{name}_mask"):
            torch_prune.remove(module, name)
    return model


def structured_prune_mlp(model: MLP, keep: float) -> MLP:
    """A genuinely smaller copy of a lablib MLP: in every hidden layer keep the `keep` share of
    neurons whose incoming weights have the largest L2 norm, and drop the rest, together with
    the matching input columns of the next layer. The output layer keeps all its classes.

    keep=1.0 returns an exact copy. Masks from unstructured pruning are baked in first.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a lablib.models.MLP, got {type(model).__name__}")
    keep = _fraction("keep", keep, low_open=True)
    small = make_permanent(clone(model))
    positions = [i for i, m in enumerate(small.net) if isinstance(m, nn.Linear)]
    kept_inputs = None  # which inputs of the current layer survived (None: all of them)
    for n, i in enumerate(positions):
        old = small.net[i]
        w = old.weight.detach()
        if kept_inputs is not None:
            w = w[:, kept_inputs]  # the previous layer's dropped neurons are gone
        if n == len(positions) - 1:
            rows = torch.arange(w.shape[0], device=w.device)  # the output layer: every class
        else:
            n_keep = max(1, round(keep * w.shape[0]))
            strength = w.norm(dim=1)  # one L2 norm per output neuron (row)
            rows = strength.topk(n_keep).indices.sort().values  # keep the original order
        new = nn.Linear(w.shape[1], len(rows), bias=old.bias is not None,
                        device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w[rows])
            if old.bias is not None:
                new.bias.copy_(old.bias.detach()[rows])
        small.net[i] = new
        kept_inputs = rows
    return small


def size_bytes(model: nn.Module) -> dict[str, int]:
    """Size of the model's state dict as torch.save writes it (raw) and after zlib (compressed).

    Zeros are still 4-byte floats in the raw file; only a compressor squeezes them. A model
    with its masks still attached stores weight_orig *and* weight_mask: call make_permanent first.
    """
    validate.module("model", model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    raw = buffer.getvalue()
    return {"raw": len(raw), "compressed": len(zlib.compress(raw, 9))}
