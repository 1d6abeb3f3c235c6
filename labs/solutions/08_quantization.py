"""Reference answers for lab 08 (INT8 quantization)."""

import torch


def my_fake_quant_per_channel(w, bits=8):
    """Symmetric fake quantization with one scale per output channel (dim 0), straight-through gradient."""
    top = 2 ** (bits - 1) - 1
    largest = torch.flatten(w.detach().abs(), 1).amax(dim=1).clamp_min(1e-12)
    scale = (largest / top).reshape(-1, *([1] * (w.dim() - 1)))  # (C, 1, ...) broadcasts against w
    rounded = torch.clamp(torch.round(w / scale), -top - 1, top) * scale
    return w + (rounded - w).detach()


def my_affine_params(x, bits=8):
    """Asymmetric (min/max) scale and zero point; 0 stays exactly representable."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    low, high = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = max((high - low) / (qmax - qmin), 1e-12)
    zero_point = round(qmin - low / scale)
    return scale, zero_point
