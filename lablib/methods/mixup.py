"""Mixup and CutMix: train on blends of two images, with the labels blended in the same share.

    lam ~ Beta(alpha, alpha), perm = a random pairing of the batch
    Mixup:  x' = lam * x + (1 - lam) * x[perm]
    CutMix: x' = x with a box pasted in from x[perm]; lam = the share of x left uncovered
    loss = lam * CE(model(x'), y) + (1 - lam) * CE(model(x'), y[perm])

Zhang et al. (2018), "mixup: Beyond Empirical Risk Minimization"; Yun et al. (2019), "CutMix".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lablib.core.validate import integer, module, positive_int, real, tensor


def _check_batch(x, y=None) -> int:
    tensor("x", x)
    if x.ndim < 2 or not x.is_floating_point() or len(x) == 0:
        raise ValueError(f"x must be a non-empty float batch (N, ...), got {x.dtype} {tuple(x.shape)}")
    if y is not None:
        tensor("y", y)
        if y.shape != (len(x),) or y.dtype != torch.long:
            raise ValueError(f"y must be int64 class labels of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}")
    return len(x)


def _check_perm(perm, n: int) -> None:
    tensor("perm", perm)
    if perm.shape != (n,) or perm.dtype != torch.long or not torch.equal(perm.sort().values, torch.arange(n, device=perm.device)):
        raise ValueError(f"perm must be a permutation of 0..{n - 1} (int64, shape ({n},)), got {perm.dtype} {tuple(perm.shape)}")


def _check_lam(lam) -> float:
    if isinstance(lam, torch.Tensor) and lam.numel() == 1:
        lam = lam.item()
    return real("lam", lam, 0, 1)


def mixup_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """Mixup's loss for one batch, given its share `lam` and pairing `perm`."""
    module("model", model)
    n = _check_batch(x, y)
    lam = _check_lam(lam)
    _check_perm(perm, n)
    logits = model(lam * x + (1 - lam) * x[perm])
    c = logits.shape[-1]  # -100 would be silently skipped (cross_entropy's ignore_index), others raise deep in torch
    if y.min() < 0 or y.max() >= c:
        raise ValueError(f"y must hold labels in 0..{c - 1} (the model's classes), got values from {y.min().item()} to {y.max().item()}")
    return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])


def mixup_targets(y: torch.Tensor, perm: torch.Tensor, lam: float, num_classes: int) -> torch.Tensor:
    """The soft labels Mixup trains on: lam * one_hot(y) + (1 - lam) * one_hot(y[perm]).
    Cross-entropy against them equals mixup_loss's two-term form (cross-entropy is linear in the target)."""
    tensor("y", y)
    if y.ndim != 1 or y.dtype != torch.long or len(y) == 0:
        raise ValueError(f"y must be a non-empty 1-d int64 tensor of labels, got {y.dtype} {tuple(y.shape)}")
    num_classes = positive_int("num_classes", num_classes)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"y must hold labels in 0..{num_classes - 1}, got values from {y.min().item()} to {y.max().item()}")
    _check_perm(perm, len(y))
    lam = _check_lam(lam)
    one_hot = F.one_hot(y, num_classes).float()
    return lam * one_hot + (1 - lam) * one_hot[perm]


def random_box(height: int, width: int, lam: float, generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """CutMix's box (top, left, box_height, box_width): sides sqrt(1 - lam) of the image's, centred
    at a random pixel and clipped at the border (so the box may cover less than 1 - lam)."""
    height, width = positive_int("height", height), positive_int("width", width)
    lam = _check_lam(lam)
    ratio = math.sqrt(1 - lam)
    bh, bw = int(round(height * ratio)), int(round(width * ratio))
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    top, bottom = max(cy - bh // 2, 0), min(cy - bh // 2 + bh, height)
    left, right = max(cx - bw // 2, 0), min(cx - bw // 2 + bw, width)
    return top, left, max(bottom - top, 0), max(right - left, 0)


def cutmix(x: torch.Tensor, perm: torch.Tensor, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, float]:
    """Paste the box (top, left, box_height, box_width) of x[perm] into x; returns the images and
    lam, the share of each image that is still its own (1 - box area / image area)."""
    n = _check_batch(x)
    if x.ndim != 4:
        raise ValueError(f"x must be images (N, C, H, W), got shape {tuple(x.shape)}")
    _check_perm(perm, n)
    if not isinstance(box, (tuple, list)) or len(box) != 4:
        raise TypeError(f"box must be (top, left, box_height, box_width), got {box!r}")
    h, w = x.shape[-2:]
    top, left = integer("box top", box[0], 0, h), integer("box left", box[1], 0, w)
    bh, bw = integer("box height", box[2], 0, h - top), integer("box width", box[3], 0, w - left)
    out = x.clone()
    out[:, :, top : top + bh, left : left + bw] = x[perm][:, :, top : top + bh, left : left + bw]
    return out, 1 - bh * bw / (h * w)
