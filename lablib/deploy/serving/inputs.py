"""What a classify request carries, turned into what the model expects, and the answer back.

  RequestError            a bad request: its HTTP status (400, 413, 415, 422), a short error code
                          and a detail; also a ValueError, so library callers can catch that
  from_base64(image_base64)  the bytes of a base64 string (a data: URL prefix is allowed)
  decode_image(data, ...) a PNG or JPEG of any size -> grey (H, W) float32 in [0, 1]
  pixels_array(pixels, shape)  a raw pixel array (nested lists) of the model's shape -> float32
  softmax(logits)         probabilities, row by row
  top_k(probs, classes, k)  the k most probable labels, descending, as [{"label", "probability"}]
  respond(logits, classes, k, version)  one image's whole answer: softmax, top-k, version
"""

from __future__ import annotations

import base64
import binascii
import io
import numbers
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from lablib.core.validate import integer

FORMATS = ("PNG", "JPEG")
# A PNG of a few kB can declare 50,000 x 50,000 pixels (a "decompression bomb"): the body limit
# cannot see that, so the declared size is checked before any pixel is decoded.
MAX_PIXELS = 4096 * 4096
DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)


class RequestError(ValueError):
    """A request the service refuses: `status` is the HTTP status to answer with, `error` a
    short machine-readable code, `detail` what was wrong, for a person."""

    def __init__(self, status: int, error: str, detail):
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


def from_base64(image_base64) -> bytes:
    """The bytes `image_base64` encodes (standard alphabet, padding required). A browser's data
    URL prefix ("data:image/png;base64,") is dropped first; whitespace is not allowed."""
    if not isinstance(image_base64, str):
        raise RequestError(422, "invalid_field", f"image_base64 must be a string, got {_kind(image_base64)}")
    text = DATA_URL.sub("", image_base64, count=1)
    if not text:
        raise RequestError(400, "invalid_base64", "image_base64 is empty")
    try:
        # validate=True: without it, b64decode silently skips characters outside the alphabet
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, "invalid_base64", f"image_base64 is not valid base64: {exc}") from None


def decode_image(data, size=(8, 8), invert: str = "auto") -> np.ndarray:
    """A PNG or JPEG (bytes) of any size as the model's input: grey, resized to `size` (H, W) by
    averaging the pixels each output pixel covers, scaled to [0, 1].

    invert: the digits the model learnt from are light ink on a dark background. "auto" turns a
    mostly light image (mean above 0.5: dark ink on paper) around; "never" / "always" force it.
    Transparent pixels count as white paper (a drawing on a transparent canvas)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be the image file's bytes, got {type(data).__name__}")
    h, w = _size(size)
    if invert not in ("auto", "never", "always"):
        raise ValueError(f"invert must be 'auto', 'never' or 'always', got {invert!r}")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        if image.format not in FORMATS:
            raise RequestError(400, "invalid_image", f"the image data must be a PNG or JPEG, got {image.format}")
        if image.width * image.height > MAX_PIXELS:
            raise RequestError(400, "invalid_image", f"the image in data is {image.width} x {image.height} "
                               f"pixels; at most {MAX_PIXELS:,} pixels are decoded")
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(paper, image.convert("RGBA"))
        grey = image.convert("L").resize((w, h), Image.Resampling.BOX)
    except RequestError:
        raise
    except Image.DecompressionBombError as exc:  # declared far beyond MAX_PIXELS: Pillow's own guard
        raise RequestError(400, "invalid_image", f"the image data declares too many pixels: {exc}") from None
    except UnidentifiedImageError:
        raise RequestError(400, "invalid_image", "the data is not an image (PNG or JPEG expected)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # a damaged or truncated file
        raise RequestError(400, "invalid_image", f"the image cannot be decoded: {exc}") from None
    x = np.asarray(grey, dtype=np.float32) / 255.0
    if invert == "always" or (invert == "auto" and float(x.mean()) > 0.5):
        x = 1.0 - x
    return x


def pixels_array(pixels, shape) -> np.ndarray:
    """`pixels` (nested lists of numbers in [0, 1]) as a float32 array of the model's input
    `shape` (C, H, W); with one channel, (H, W) is accepted too."""
    shape = tuple(integer("shape", d, 1) for d in shape) if isinstance(shape, (list, tuple)) else None
    if not shape:
        raise TypeError("shape must be the model's input shape, a list of positive ints such as [1, 8, 8]")
    if not isinstance(pixels, list):
        raise RequestError(422, "invalid_field", f"pixels must be a nested list of numbers, got {_kind(pixels)}")
    try:
        x = np.asarray(pixels)  # no dtype: a string or a bool stays visible in x.dtype
    except ValueError:  # ragged on some NumPy versions
        x = None
    if x is None or x.dtype.kind not in "iuf":
        raise RequestError(422, "invalid_field", "pixels must be a regular nested list of numbers (no "
                           "strings, booleans or null; every row the same length)")
    accepted = [shape] + ([shape[1:]] if len(shape) == 3 and shape[0] == 1 else [])
    if x.shape not in accepted:
        wanted = " or ".join(str(list(s)) for s in accepted)
        raise RequestError(422, "invalid_field", f"pixels must have the shape {wanted}, got {list(x.shape)}")
    x = x.astype(np.float32).reshape(shape)
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise RequestError(422, "invalid_field", "pixels must be finite numbers in [0, 1]")
    return x


def softmax(logits) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, computed stably (the row's maximum subtracted first)."""
    try:
        z = np.asarray(logits, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"logits must be numbers (N, classes), got {type(logits).__name__}") from None
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"logits must be a 2-D array (N, classes), got shape {z.shape}")
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def top_k(probs, classes, k: int) -> list[dict]:
    """The `k` most probable of `classes` for one image's probabilities `probs` (K,), most
    probable first (ties: the lower class index first), as [{"label": ..., "probability": ...}]."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if not isinstance(classes, (list, tuple)) or len(classes) != len(p):
        raise ValueError(f"classes must be a list of labels, one per value of probs ({len(p)}), got {classes!r}")
    if not np.isfinite(p).all():
        raise ValueError("probs holds NaN or infinite values")
    k = integer("k", k, 1, len(p))
    order = np.argsort(-p, kind="stable")[:k]
    return [{"label": classes[i], "probability": float(p[i])} for i in order]


def respond(logits, classes, k: int, version: str) -> dict:
    """The service's answer for one image from the model's raw scores `logits` (K,): softmax,
    then the top `k` labels with their probabilities, most probable first, and the version:
    {"version": ..., "predictions": [{"label": ..., "probability": ...}, ...]}."""
    if not isinstance(version, str) or not version:
        raise TypeError(f"version must be the model version's name (a str), got {version!r}")
    try:
        z = np.asarray(logits, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"logits must be numbers, one per class, got {type(logits).__name__} {logits!r}"[:200]) from None
    if z.ndim != 1:
        raise ValueError(f"logits must be one image's scores, shape (classes,), got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits holds NaN or infinite values")
    e = np.exp(z - z.max())  # float64 throughout (softmax() rounds to float32, where tiny probabilities tie at 0)
    return {"version": version, "predictions": top_k(e / e.sum(), classes, k)}


def _size(size) -> tuple[int, int]:
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in size)):
        raise ValueError(f"size must be (height, width), two positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _kind(value) -> str:
    """How a JSON value's type reads in an error: 'a number', 'null', 'an object'..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Number):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
