"""Efficient convolutions and what they cost: MobileNet's depthwise-separable convolution, its
parameter and FLOP counts in closed form, and FLOPs as torch's own counter measures them.

FLOPs here follow torch.utils.flop_counter: one multiply-add is 2 FLOPs (papers that quote
"Mult-Adds", MobileNet's among them, count it once).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lablib.core import validate


def _check_images(name: str, x) -> torch.Tensor:
    validate.tensor(name, x)
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (N, C, H, W), got {x.dtype} of shape {tuple(x.shape)}")
    return x


def separable_conv(x: torch.Tensor, depthwise_weight: torch.Tensor, pointwise_weight: torch.Tensor,
                   padding: int = 0) -> torch.Tensor:
    """A depthwise k x k convolution (one filter per input channel), then a pointwise 1 x 1
    convolution mixing the channels. Written with unfold rather than a grouped convolution, so
    it checks a grouped-convolution version independently.

    depthwise_weight: (C, 1, k, k); pointwise_weight: (C_out, C, 1, 1), as nn.Conv2d stores them.
    """
    _check_images("x", x)
    validate.tensor("depthwise_weight", depthwise_weight)
    validate.tensor("pointwise_weight", pointwise_weight)
    n, c, h, w = x.shape
    if depthwise_weight.ndim != 4 or depthwise_weight.shape[:2] != (c, 1) or depthwise_weight.shape[2] != depthwise_weight.shape[3]:
        raise ValueError(f"depthwise_weight must have shape ({c}, 1, k, k) for {c} input channels, "
                         f"got {tuple(depthwise_weight.shape)}")
    if pointwise_weight.ndim != 4 or pointwise_weight.shape[1:] != (c, 1, 1):
        raise ValueError(f"pointwise_weight must have shape (C_out, {c}, 1, 1), got {tuple(pointwise_weight.shape)}")
    padding = validate.integer("padding", padding, 0)
    k = depthwise_weight.shape[-1]
    h_out, w_out = h + 2 * padding - k + 1, w + 2 * padding - k + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"x of {h}x{w} pixels is smaller than the {k}x{k} kernel with padding={padding}")
    patches = F.unfold(x, k, padding=padding).view(n, c, k * k, h_out * w_out)  # each channel's k*k neighbours
    depthwise = torch.einsum("nckp,ck->ncp", patches, depthwise_weight.view(c, k * k))
    out = torch.einsum("ncp,oc->nop", depthwise, pointwise_weight.view(-1, c))
    return out.view(n, -1, h_out, w_out)


class SeparableBlock(nn.Module):
    """MobileNet v1's block: depthwise 3x3 convolution, BatchNorm, ReLU, then pointwise 1x1
    convolution, BatchNorm, ReLU. Neither convolution has a bias (BatchNorm's shift replaces it)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        c_in, c_out = validate.positive_int("c_in", c_in), validate.positive_int("c_out", c_out)
        stride = validate.positive_int("stride", stride)
        self.depthwise = nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.depthwise(x)))
        return torch.relu(self.bn2(self.pointwise(x)))


def conv_params(c_in: int, c_out: int, k: int = 3, separable: bool = False) -> int:
    """Weights of a k x k convolution from c_in to c_out channels, without bias: k*k*c_in*c_out
    plain; k*k*c_in (depthwise) + c_in*c_out (pointwise) separable."""
    c_in, c_out, k = (validate.positive_int(n, v) for n, v in (("c_in", c_in), ("c_out", c_out), ("k", k)))
    if not isinstance(separable, bool):
        raise TypeError(f"separable must be True or False, got {separable!r}")
    return k * k * c_in + c_in * c_out if separable else k * k * c_in * c_out


def conv_flops(n: int, c_in: int, c_out: int, h: int, w: int, k: int = 3, separable: bool = False) -> int:
    """Forward FLOPs (2 per multiply-add) of that convolution on a batch of n images whose output
    is h x w pixels: every output pixel of every image costs 2 * (its weights)."""
    for name, value in (("n", n), ("h", h), ("w", w)):
        validate.positive_int(name, value)
    return 2 * n * h * w * conv_params(c_in, c_out, k, separable)


def count_flops(model: nn.Module, *inputs, backward: bool = False) -> dict[str, int]:
    """FLOPs of one call of `model(*inputs)` as torch.utils.flop_counter counts them, per operator
    ("aten.convolution", ...) and in total ("total"). backward=True also counts the gradient of
    the output's sum (a training step's backward pass).

    torch 2.13's counter charges a grouped convolution's backward as if it were not grouped: a
    depthwise layer's gradient is over-counted by its number of channels. The forward is exact.
    """
    validate.module("model", model)
    if not inputs:
        raise ValueError("inputs must hold at least one tensor for model(*inputs)")
    for i, t in enumerate(inputs):
        validate.tensor(f"inputs[{i}]", t)
    if not isinstance(backward, bool):
        raise TypeError(f"backward must be True or False, got {backward!r}")
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(backward):
        out = model(*inputs)
        if backward:
            if not isinstance(out, torch.Tensor) or not out.requires_grad:
                raise ValueError("backward=True needs a model whose output is a tensor that requires grad")
            out.sum().backward()
    counts = {str(op): int(v) for op, v in counter.get_flop_counts().get("Global", {}).items()}
    return counts | {"total": int(counter.get_total_flops())}
