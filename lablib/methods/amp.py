"""Mixed precision: what autocast runs in which dtype, why fp16 needs loss scaling and
bf16 does not, and one training step the current way (`torch.autocast(device_type, dtype)` with
`torch.amp.GradScaler(device)`; the `torch.cuda.amp.*` spellings are deprecated)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lablib.core import bench, compat, validate
from lablib.core.validate import real
from lablib.nets.train import autocast, optimizer_step, precision_dtype

DEVICES = ("cpu", "cuda", "mps")


def _device_type(device) -> str:
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return kind


def _check_batch(model, x, y, *, y_optional: bool = False) -> None:
    """model a Module, x a tensor, y a tensor of class ids, one per row of x (or None if optional)."""
    validate.module("model", model)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if (y is not None or not y_optional) and not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a tensor of class ids, got {type(y).__name__}")
    if y is not None and y.dtype not in (torch.long, torch.uint8):  # what cross_entropy takes
        raise TypeError(f"y must hold class ids (int64), got {y.dtype}")
    if y is not None and y.shape != x.shape[:1]:
        raise ValueError(f"y must hold one class id per row of x ({len(x)}), got shape {tuple(y.shape)}")


def _forward(model, x):
    """model(x), a shape mismatch reported as the ValueError about x that it is."""
    try:
        return model(x)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as e:
        raise ValueError(f"x of shape {tuple(x.shape)} does not fit the model: {e}") from e


def supports(device, dtype) -> bool:
    """Can this machine train under autocast at `dtype` on `device`? (fp32 needs no autocast.)
    Says nothing about speed: a CPU without bf16 units runs bf16, only slowly."""
    kind, dt = _device_type(device), precision_dtype(dtype)
    if kind == "cuda" and not torch.cuda.is_available():
        return False
    if kind == "mps" and not torch.backends.mps.is_available():
        return False
    if dt == torch.float32:
        return True
    if kind == "cuda" and dt == torch.bfloat16:
        return torch.cuda.is_bf16_supported()  # Ampere (A100, RTX 30xx) and newer
    return torch.amp.is_autocast_available(kind)


def autocast_dtypes(model: nn.Module, x: torch.Tensor, device, dtype, y: torch.Tensor | None = None) -> list[tuple[str, str, str]]:
    """Run one forward pass under autocast and report the dtype each layer's output came out in:
    [(layer name, layer type, dtype)], in call order. With labels `y`, the cross-entropy loss is
    added as a last row. Forward hooks on the leaf modules do the recording."""
    _check_batch(model, x, y, y_optional=True)
    _device_type(device)
    rows: list[tuple[str, str, str]] = []

    def hook(name):
        def record(module, inputs, output):
            rows.append((name, type(module).__name__, str(output.dtype).removeprefix("torch.")))
        return record

    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    try:
        with torch.no_grad(), autocast(device, dtype):
            out = _forward(model, x)
            if y is not None:
                loss = F.cross_entropy(out, y)
                rows.append(("loss", "cross_entropy", str(loss.dtype).removeprefix("torch.")))
    finally:
        for h in handles:
            h.remove()
    return rows


def underflow_fraction(grads: torch.Tensor, scale: float = 1.0, dtype="fp16") -> float:
    """Share of the non-zero fp32 values in `grads` that become exactly 0 when multiplied by
    `scale` (the loss scale) and stored in `dtype`: the gradient information fp16 loses.
    fp16's smallest positive number is about 6e-8 (normal: 6e-5); bf16 has fp32's range."""
    if not isinstance(grads, torch.Tensor) or not grads.is_floating_point():
        raise TypeError("grads must be a floating-point tensor")
    real("scale", scale, 0, math.inf, low_open=True, high_open=True)
    nonzero = grads != 0
    if not nonzero.any():
        return 0.0
    stored = (grads.float() * scale).to(precision_dtype(dtype))
    return ((stored == 0) & nonzero).sum().item() / nonzero.sum().item()


def train_step(model: nn.Module, x, y, opt, scaler, device, dtype) -> torch.Tensor:
    """One mixed-precision optimizer step, the current spelling, written out (the reference for
    the step a learner writes; `fit` runs the same sequence in train.optimizer_step). Returns
    the (fp32) loss."""
    _check_batch(model, x, y)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"opt must be a torch.optim optimizer, got {type(opt).__name__}")
    if not isinstance(scaler, torch.amp.GradScaler):
        raise TypeError(f"scaler must be a torch.amp.GradScaler (see compat.grad_scaler), got {type(scaler).__name__}")
    _device_type(device)
    with autocast(device, dtype):  # forward (and loss) in the autocast dtypes
        loss = F.cross_entropy(_forward(model, x).float(), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # loss x scale: small fp16 gradients stay above 0
    scaler.step(opt)  # unscales the gradients; skips the step if any is inf/NaN
    scaler.update()  # halves the scale after a skipped step, grows it after many good ones
    return loss.detach()


def step_fn(model: nn.Module, x, y, device, dtype, lr: float = 1e-3) -> Callable[[], torch.Tensor]:
    """A no-argument training step of `model` on one batch at `dtype` (Adam; a GradScaler that
    is on for fp16 only), ready for bench.latency / bench.compare."""
    kind, dt = _device_type(device), precision_dtype(dtype)
    _check_batch(model, x, y)
    real("lr", lr, 0, math.inf, low_open=True, high_open=True)
    model.to(kind).train()
    x, y = x.to(kind), y.to(kind)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    scaler = compat.grad_scaler(kind, enabled=dt == torch.float16)
    return lambda: optimizer_step(model, (x, y), opt, scaler, precision=dt)[0]


def train_step_ms(model: nn.Module, x, y, device, dtype, warmup: int = 2, repeats: int = 10) -> bench.Timing:
    """Time one training step of `model` on the batch (x, y) at `dtype` (median of `repeats`)."""
    return bench.latency(step_fn(model, x, y, device, dtype), warmup=warmup, repeats=repeats,
                         cuda=_device_type(device) == "cuda")


def min_loss_scale(grads: torch.Tensor, dtype="fp16") -> float:
    """The smallest power of two 2**k (k >= 0) that keeps every non-zero entry of `grads` from
    becoming 0 in `dtype` (1.0 for bf16 and fp32, whose range is fp32's)."""
    if not isinstance(grads, torch.Tensor) or not grads.is_floating_point():
        raise TypeError("grads must be a floating-point tensor")
    k = 0
    while underflow_fraction(grads, 2.0**k, dtype) > 0:  # each doubling lifts the smallest entry
        k += 1
    return 2.0**k


def round_to_bf16(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> bf16 -> fp32 by hand: bf16 is the top 16 bits of an fp32 number (sign, the same
    8 exponent bits, 7 of the 23 mantissa bits). Round to nearest, ties to even, then cut."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        raise TypeError("x must be a float32 tensor")
    bits = x.view(torch.int32)
    lowest_kept = (bits >> 16) & 1  # ties go to the neighbour whose last kept bit is 0
    rounded = bits + 0x7FFF + lowest_kept
    out = (rounded & -65536).view(torch.float32)  # -65536 is 0xFFFF0000: drop the low 16 bits
    # A NaN's mantissa can carry into the sign bit (0x7FFFFFFF + 0x8000 wraps round): keep NaN a
    # NaN, as a real bf16 cast does, with the quiet bit set so the cut cannot turn it into inf.
    nan = ((bits & -65536) | 0x00400000).view(torch.float32)
    return torch.where(torch.isnan(x), nan, out)
