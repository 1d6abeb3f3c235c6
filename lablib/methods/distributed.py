"""Data-parallel training as arithmetic: the collectives that keep N workers in step, simulated on
lists of tensors, and ZeRO's memory per worker.

    grads = [g_on_rank0, g_on_rank1, g_on_rank2]   # one tensor per (simulated) rank
    ring_allreduce(grads)                          # every rank ends with g0 + g1 + g2, ring-style
    reduce_scatter_sum(grads)                      # rank r ends with chunk r of the sum only
    zero_bytes(1_000_000, n_ranks=4, stage=3)      # bytes of params/grads/optimizer per rank
    model_state_bytes(model, optimizer)            # what this process really holds

Data parallelism gives every worker ("rank") a copy of the model and a slice of the batch; after
the backward pass the ranks add up their gradients (an **all-reduce**) so that every copy takes
the same optimizer step. A **ring** all-reduce is what NCCL and gloo do for large tensors: the
ranks stand in a ring, each tensor is cut into N chunks, and in N - 1 steps of "pass one chunk to
your right neighbour and add" every rank ends with the full sum of one chunk (the
**reduce-scatter**); N - 1 more steps of passing the finished chunks round (the **all-gather**)
give every rank the whole sum. Each rank sends 2 (N - 1) / N times the tensor's bytes, almost
independent of N: that is why the ring scales.

ZeRO (Rajbhandari et al., 2020; FSDP in PyTorch, DeepSpeed's `zero_optimization`) removes the
N copies of the training state: stage 1 shards the optimizer state over the ranks, stage 2 also
the gradients (reduce-scatter instead of all-reduce), stage 3 also the parameters (all-gathered
layer by layer when needed). `zero_bytes` is the paper's arithmetic; `model_state_bytes`
measures a real run (a sharded parameter, a DTensor, counts only its local shard).

The simulations take plain lists, one entry per rank, and need no process group: they are the
references that the lab's own code and the real `torch.distributed` runs are checked against.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lablib.core.validate import integer, module, positive_int, tensor_dict

__all__ = ["allreduce_sum", "reduce_scatter_sum", "ring_allreduce", "ring_traffic", "average_gradients",
           "Precision", "FP32_ADAM", "MIXED_ADAM", "zero_bytes", "zero_saving", "model_state_bytes",
           "max_difference"]


# --- argument checks ------------------------------------------------------------------------------

def _rank_tensors(name: str, tensors) -> list[torch.Tensor]:
    """One tensor per rank: a non-empty list of numeric tensors of one shape, dtype and device."""
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Sequence) or isinstance(tensors, (str, bytes)):
        raise TypeError(f"{name} must be a list with one tensor per rank, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{name} must hold at least one rank's tensor, got an empty list")
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{name}[{i}] must hold real numbers, got {t.dtype}")
    first = tensors[0]
    for i, t in enumerate(tensors[1:], start=1):
        if t.shape != first.shape or t.dtype != first.dtype or t.device != first.device:
            raise ValueError(f"{name}[{i}] is {t.dtype} {tuple(t.shape)} on {t.device}, but {name}[0] is "
                             f"{first.dtype} {tuple(first.shape)} on {first.device}: every rank holds the same tensor")
    return list(tensors)


def _tensor_dict(name: str, value) -> dict[str, torch.Tensor]:
    return tensor_dict(name, value, model="state_dict")


# --- collectives, simulated -----------------------------------------------------------------------

def allreduce_sum(tensors) -> list[torch.Tensor]:
    """The all-reduce by definition: every rank gets the sum of all ranks' tensors (added in rank
    order). One new tensor per rank; the inputs are not changed."""
    tensors = _rank_tensors("tensors", tensors)
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return [total.clone() for _ in tensors]


def reduce_scatter_sum(tensors) -> list[torch.Tensor]:
    """Rank r gets chunk r of the sum, flattened: the sum cut into N chunks with
    `torch.tensor_split` (the first numel % N chunks one element longer; a chunk may be empty when
    the tensor has fewer elements than there are ranks). What ZeRO-2/3 does with gradients."""
    summed = allreduce_sum(tensors)[0]
    return [c.clone() for c in summed.reshape(-1).tensor_split(len(tensors))]


def ring_allreduce(tensors) -> list[torch.Tensor]:
    """The all-reduce as a ring of N ranks does it, step by step: a reduce-scatter (N - 1 steps:
    each rank passes one chunk to its right neighbour, which adds it to its own) then an all-gather
    (N - 1 steps: the finished chunks go round). Equal to `allreduce_sum` up to the order of the
    additions (each chunk is summed starting from a different rank), so float results may differ
    in the last bits. Differentiable: the inputs' gradients flow through the additions."""
    tensors = _rank_tensors("tensors", tensors)
    n, shape = len(tensors), tensors[0].shape
    chunks = [list(t.reshape(-1).tensor_split(n)) for t in tensors]  # chunks[rank][c]
    # reduce-scatter: at step s rank r sends chunk (r - s) % n; all ranks send at once, so every
    # message is read before any is added
    for s in range(n - 1):
        sent = [(r, (r - s) % n, chunks[r][(r - s) % n]) for r in range(n)]
        for r, c, data in sent:
            chunks[(r + 1) % n][c] = chunks[(r + 1) % n][c] + data
    # now rank r holds the finished sum of chunk (r + 1) % n; all-gather: pass them on, n - 1 times
    for s in range(n - 1):
        sent = [(r, (r + 1 - s) % n, chunks[r][(r + 1 - s) % n]) for r in range(n)]
        for r, c, data in sent:
            chunks[(r + 1) % n][c] = data
    return [torch.cat(ch).reshape(shape) for ch in chunks]


def ring_traffic(n_ranks: int, n_bytes) -> float:
    """Bytes each rank sends in a ring all-reduce of an `n_bytes` tensor over `n_ranks` ranks:
    2 (N - 1) / N * n_bytes (N - 1 chunks of n_bytes / N in each phase). It tends to 2 * n_bytes as
    N grows: the ring's cost per rank hardly depends on how many ranks there are."""
    n = positive_int("n_ranks", n_ranks)
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, numbers.Real) or not math.isfinite(n_bytes) or n_bytes < 0:
        raise ValueError(f"n_bytes must be a finite number >= 0, got {n_bytes!r}")
    return 2 * (n - 1) / n * float(n_bytes)


def average_gradients(grads) -> list[dict[str, torch.Tensor]]:
    """What DDP does after the backward pass: `grads` holds one dict (parameter name -> gradient)
    per rank; every rank gets the mean over the ranks of each gradient, so every copy of the
    model takes the same optimizer step."""
    if not isinstance(grads, Sequence) or isinstance(grads, (str, bytes)) or not grads:
        raise TypeError(f"grads must be a non-empty list with one dict of gradients per rank, got {type(grads).__name__}")
    dicts = [_tensor_dict(f"grads[{i}]", g) for i, g in enumerate(grads)]
    for i, d in enumerate(dicts[1:], start=1):
        if set(d) != set(dicts[0]):
            raise ValueError(f"grads[{i}] names {sorted(d)}, but grads[0] names {sorted(dicts[0])}")
    for k, first in dicts[0].items():  # a parameter has the same shape and dtype on every rank
        for i, d in enumerate(dicts):
            t = d[k]
            if t.dtype == torch.bool or t.is_complex():
                raise TypeError(f"grads[{i}][{k!r}] must hold real numbers, got {t.dtype}")
            if (t.shape, t.dtype, t.device) != (first.shape, first.dtype, first.device):
                raise ValueError(f"grads[{i}][{k!r}] is {t.dtype} {tuple(t.shape)} on {t.device}, but grads[0][{k!r}] is "
                                 f"{first.dtype} {tuple(first.shape)} on {first.device}")
    mean = {k: allreduce_sum([d[k] for d in dicts])[0] / len(dicts) for k in dicts[0]}
    return [{k: v.clone() for k, v in mean.items()} for _ in dicts]


# --- ZeRO's memory arithmetic ---------------------------------------------------------------------

@dataclass(frozen=True)
class Precision:
    """Bytes per model parameter that training keeps: the parameter itself, its gradient and the
    optimizer state."""

    name: str
    params: float
    grads: float
    optimizer: float

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"Precision name must be a str, got {type(self.name).__name__} {self.name!r}")
        for field in ("params", "grads", "optimizer"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise ValueError(f"Precision {field} must be a number of bytes >= 0, got {v!r}")

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer


# Adam in fp32: 4-byte weights and gradients, two 4-byte moments (m and v) per weight.
FP32_ADAM = Precision("fp32 Adam", 4, 4, 8)
# The ZeRO paper's mixed-precision Adam: fp16 weights and gradients (2 + 2 bytes) and K = 12 bytes
# of optimizer state (an fp32 master copy of the weights, m and v).
MIXED_ADAM = Precision("mixed-precision Adam", 2, 2, 12)


def zero_bytes(n_params: int, n_ranks: int, stage: int, *, precision: Precision = FP32_ADAM) -> dict[str, float]:
    """Bytes of training state each of `n_ranks` ranks holds for a model of `n_params` parameters
    under ZeRO `stage`: a dict params / grads / optimizer / total.

    stage 0: plain data parallelism (DDP), every rank holds everything;
    stage 1: the optimizer state is sharded (each rank keeps ceil(n_params / n_ranks) of it);
    stage 2: the gradients too; stage 3: the parameters too (FSDP's full sharding).
    Activations, temporary buffers and the all-gathered layer in flight are not counted.
    """
    n_params = positive_int("n_params", n_params)
    n_ranks = positive_int("n_ranks", n_ranks)
    stage = integer("stage", stage, 0, 3)
    if not isinstance(precision, Precision):
        raise TypeError(f"precision must be a Precision (FP32_ADAM, MIXED_ADAM or your own), got {type(precision).__name__}")
    shard = -(-n_params // n_ranks)  # ceil: the last rank's shard is padded to the same size
    held = {"params": shard if stage >= 3 else n_params, "grads": shard if stage >= 2 else n_params,
            "optimizer": shard if stage >= 1 else n_params}
    out = {k: held[k] * getattr(precision, k) for k in held}
    out["total"] = out["params"] + out["grads"] + out["optimizer"]
    return out


def zero_saving(n_params: int, n_ranks: int, stage: int, *, precision: Precision = FP32_ADAM) -> float:
    """The fraction of per-rank training-state memory that ZeRO `stage` saves against plain data
    parallelism (stage 0) on the same ranks: 1 - total(stage) / total(0). For stage 3 and a large
    model it is 1 - 1/N: 80 % at N = 5 ranks."""
    full = zero_bytes(n_params, n_ranks, 0, precision=precision)["total"]
    if full == 0:
        raise ValueError(f"precision {precision.name!r} keeps 0 bytes per parameter: there is nothing to save")
    return 1 - zero_bytes(n_params, n_ranks, stage, precision=precision)["total"] / full


def _local_bytes(t: torch.Tensor) -> int:
    # A sharded parameter (DTensor) reports its global shape; its memory on this rank is its local
    # shard (to_local). Duck-typed, so the same code runs on every torch version.
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def model_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes of training state this process holds for `model`: params (its parameters; for a
    sharded model, the local shards), grads (their .grad, where set) and optimizer (every tensor
    in optimizer.state with at least one dimension: Adam's m and v; its 0-d step counters are left
    out, as ZeRO's per-parameter arithmetic leaves them out). A dict params / grads / optimizer /
    total. Buffers (BatchNorm statistics) are not counted."""
    module("model", model)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    params = list({id(p): p for p in model.parameters()}.values())  # a tied weight counts once
    out = {"params": sum(_local_bytes(p) for p in params),
           "grads": sum(_local_bytes(p.grad) for p in params if p.grad is not None), "optimizer": 0}
    if optimizer is not None:
        for state in optimizer.state.values():
            out["optimizer"] += sum(_local_bytes(v) for v in state.values() if isinstance(v, torch.Tensor) and v.ndim > 0)
    out["total"] = out["params"] + out["grads"] + out["optimizer"]
    return out


def max_difference(a, b) -> float:
    """The largest absolute difference between two state dicts (or models) with the same keys and
    shapes, over every entry: 0.0 when they are bit-identical, NaN when either holds NaN."""
    a, b = _tensor_dict("a", a), _tensor_dict("b", b)
    if not a:
        raise ValueError("a must hold at least one tensor")
    if set(a) != set(b):
        missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"b must have the keys of a: missing {missing}, extra {extra}")
    worst = 0.0
    for key in a:
        if a[key].shape != b[key].shape:
            raise ValueError(f"b[{key!r}] has shape {tuple(b[key].shape)}, but a[{key!r}] has {tuple(a[key].shape)}")
        if a[key].numel() == 0:
            continue
        gap = (a[key].detach().double().cpu() - b[key].detach().double().cpu()).abs().max().item()
        if math.isnan(gap):
            return math.nan
        worst = max(worst, gap)
    return worst
