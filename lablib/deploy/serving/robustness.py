"""Robustness tests of a served model: its accuracy on corrupted copies of a held-out set.

  corrupt(x, kind, severity, seed=0)   a corrupted copy of images x (N, C, H, W) in [0, 1]
  KINDS                                the corruptions and their default severities
  accuracy(model, x, y)                the share of x the model (anything with .predict) gets right
  curves(model, x, y, kinds=KINDS)     {kind: [(severity, accuracy), ...]}
  score(curves)                        one robustness number: the mean accuracy over every
                                       corrupted severity (severity 0, the clean images, left out)

The corruptions are the ones the article names for robustness testing ("noisy images") and the
usual companions (Hendrycks & Dietterich, 2019, ImageNet-C): Gaussian noise (sigma, in pixel
units of [0, 1]), Gaussian blur (sigma in pixels), occlusion (a square of that share of the image
side, at a random place, filled with the background value 0), contrast (the share of contrast
removed: 0 keeps the image, 1 leaves a flat grey at its mean) and shift (whole pixels to the right,
the background filling in). NumPy only: the model service's image has no torch.
"""

from __future__ import annotations

import math

import numpy as np

from lablib.core.validate import integer, real

KINDS: dict[str, tuple[float, ...]] = {
    "noise": (0.0, 0.1, 0.2, 0.3, 0.4),
    "blur": (0.0, 0.5, 0.75, 1.0, 1.5),
    "occlusion": (0.0, 0.25, 0.375, 0.5, 0.625),
    "contrast": (0.0, 0.5, 0.7, 0.8, 0.9),
}
# the largest severity each kind accepts (beyond it the image carries nothing, or the arithmetic breaks)
_LIMITS = {"noise": 10.0, "blur": 10.0, "occlusion": 1.0, "contrast": 1.0, "shift": 64.0}


def _images(x) -> np.ndarray:
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__"):
        raise TypeError(f"x must be an array of images (N, C, H, W), got {type(x).__name__}")
    arr = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
    if arr.ndim != 4 or arr.dtype.kind != "f" or 0 in arr.shape:
        raise ValueError(f"x must be a float array of images (N, C, H, W), got {arr.dtype} {arr.shape}")
    return arr.astype(np.float32)


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix M with M @ v the Gaussian blur of v, its edges reflected (rows sum to 1)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    m = np.zeros((n, n))
    for i in range(n):
        for offset, t in zip(range(-radius, radius + 1), taps, strict=True):
            j = i + offset
            while not 0 <= j < n:  # reflect at the edges (-1 -> 1, n -> n - 2), as often as needed
                j = -j if j < 0 else 2 * (n - 1) - j
                if n == 1:
                    j = 0
            m[i, j] += t
    return m


def corrupt(x, kind: str, severity: float, seed: int = 0) -> np.ndarray:
    """A corrupted copy of the images `x` (N, C, H, W) in [0, 1], as float32 in [0, 1].

    kind: "noise", "blur", "occlusion", "contrast" or "shift" (see the module's notes for what
    `severity` means for each); severity 0 returns the images unchanged. The random ones (noise,
    occlusion) draw from `seed`, so a rerun corrupts the same way."""
    images = _images(x)
    if kind not in _LIMITS:
        raise ValueError(f"kind must be one of {', '.join(_LIMITS)}, got {kind!r}")
    severity = real("severity", severity, 0, _LIMITS[kind])
    rng = np.random.default_rng(integer("seed", seed, 0))
    n, _, h, w = images.shape
    if severity == 0:
        return images.copy()
    if kind == "noise":
        out = images + rng.normal(0, severity, images.shape).astype(np.float32)
    elif kind == "blur":
        out = np.einsum("hi,ncij,wj->nchw", _blur_matrix(h, severity), images, _blur_matrix(w, severity))
    elif kind == "occlusion":
        out = images.copy()
        side_h, side_w = max(1, round(severity * h)), max(1, round(severity * w))
        tops = rng.integers(0, h - side_h + 1, n)
        lefts = rng.integers(0, w - side_w + 1, n)
        for i, (t, left) in enumerate(zip(tops, lefts, strict=True)):
            out[i, :, t:t + side_h, left:left + side_w] = 0.0
    elif kind == "contrast":
        mean = images.mean(axis=(1, 2, 3), keepdims=True)
        out = mean + (1 - severity) * (images - mean)
    else:  # shift
        s = int(severity)
        if s != severity:
            raise ValueError(f"severity must be a whole number of pixels for a shift, got {severity!r}")
        out = np.zeros_like(images)
        if s < w:
            out[:, :, :, s:] = images[:, :, :, : w - s]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _labels(y, n: int) -> np.ndarray:
    if isinstance(y, (str, bytes)) or not hasattr(y, "__len__"):
        raise TypeError(f"y must be an array of class indices, got {type(y).__name__}")
    arr = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
    if arr.ndim != 1 or len(arr) != n or arr.dtype.kind not in "iu":
        raise ValueError(f"y must be {n} integer class indices (one per image), got {arr.dtype} {arr.shape}")
    return arr


def accuracy(model, x, y, batch_size: int = 512) -> float:
    """The share of the images `x` whose most probable class under `model` (anything with
    predict(batch) -> probabilities) is the label in `y`."""
    if not callable(getattr(model, "predict", None)):
        raise TypeError(f"model must have a predict(x) method (a served Model), got {type(model).__name__}")
    images = _images(x)
    labels = _labels(y, len(images))
    integer("batch_size", batch_size, 1)
    hits = 0
    for i in range(0, len(images), batch_size):
        hits += int((np.asarray(model.predict(images[i:i + batch_size])).argmax(1) == labels[i:i + batch_size]).sum())
    return hits / len(images)


def curves(model, x, y, kinds: dict | None = None, seed: int = 0) -> dict[str, list[tuple[float, float]]]:
    """{kind: [(severity, accuracy), ...]} for every kind and severity in `kinds` (default KINDS)."""
    kinds = KINDS if kinds is None else kinds
    if not isinstance(kinds, dict) or not kinds:
        raise TypeError(f"kinds must be a dict {{kind: severities}}, e.g. {{'noise': (0, 0.2)}}, got {kinds!r}")
    for kind, severities in kinds.items():
        if kind not in _LIMITS:
            raise ValueError(f"kinds names {kind!r}; the kinds are {', '.join(_LIMITS)}")
        if isinstance(severities, (str, bytes)) or not hasattr(severities, "__iter__"):
            raise TypeError(f"kinds[{kind!r}] must be a list of severities, got {severities!r}")
        for s in severities:
            real(f"kinds[{kind!r}] severity", s, 0, _LIMITS[kind])
    images = _images(x)
    return {kind: [(float(s), accuracy(model, corrupt(images, kind, s, seed), y)) for s in severities]
            for kind, severities in kinds.items()}


def score(measured: dict) -> float:
    """The mean accuracy over every corrupted point of `measured` (what curves returns), the
    clean points (severity 0) left out: one number to compare two versions' robustness by."""
    if not isinstance(measured, dict) or not measured:
        raise TypeError(f"measured must be what curves() returns, {{kind: [(severity, accuracy), ...]}}, got {measured!r}")
    points = [acc for pts in measured.values() for s, acc in pts if s > 0]
    if not points:
        raise ValueError("measured has no corrupted point (every severity is 0)")
    return float(np.mean(points))
