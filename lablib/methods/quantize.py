"""INT8 quantization: the arithmetic, ONNX Runtime's two recipes, and quantization-aware training.

In the order a quantization workflow uses it:

  quantize_tensor / dequantize   the affine map float <-> int8 every recipe is built on
  symmetric_scale(x, bits)       the scale that maps a tensor's largest |value| to the top int
                                 (one per tensor, or per output channel)
  affine_params(x, bits)         scale and zero point from the tensor's min/max (asymmetric),
                                 what MinMax calibration computes for an activation
  dynamic(src, dst)              weights stored as int8; activations quantized on the fly, per call
  ImageReader                    calibration batches for static quantization
  static(src, dst, images, fmt)  weights *and* activations int8, ranges calibrated beforehand;
                                 fmt "qdq" (QuantizeLinear/DequantizeLinear around float ops)
                                 or "qoperator" (ORT's own integer ops: QLinearConv, ...)
  fake_quantize / qat(model)     quantization-aware training with a straight-through estimator
                                 (qat takes any fake-quantizer, e.g. one written in a lab)
  file_size(path)                bytes on disk
"""

from __future__ import annotations

import copy
import functools
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)
from torch import nn
from torch.nn.utils import parametrize

from lablib.core import validate
from lablib.core.validate import existing_file, positive_int
from lablib.core.validate import path as check_path
from lablib.deploy import onnx_export

FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}


# --- the arithmetic -------------------------------------------------------------------------

def _check_scale(scale) -> None:
    """A scale is a positive number, or a tensor of positive numbers (one per channel)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, torch.Tensor)):
        raise TypeError(f"scale must be a number or a tensor, got {type(scale).__name__}")
    s = torch.as_tensor(scale, dtype=torch.float32)  # what the arithmetic will use
    # NaN fails `> 0`; inf would send every value to 0; a scale float32 rounds to 0 divides by 0
    if s.numel() == 0 or not bool(((s > 0) & s.isfinite()).all()):
        raise ValueError(f"scale must be a positive finite number (float32: at least "
                         f"{torch.finfo(torch.float32).tiny:.1e}), got {scale!r}")


def quantize_tensor(x: torch.Tensor, scale, zero_point: int = 0, bits: int = 8) -> torch.Tensor:
    """q = clamp(round(x / scale) + zero_point) into the signed range of `bits` bits
    ([-128, 127] for 8): what ONNX's QuantizeLinear computes (as int, in a float tensor).
    `scale` is a number, or a tensor that broadcasts against x (one scale per channel)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    _check_scale(scale)
    _check_bits(bits)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    _check_zero_point(zero_point, lo, hi)
    return torch.clamp(torch.round(x / scale) + zero_point, lo, hi)


def dequantize(q: torch.Tensor, scale: float, zero_point: int = 0) -> torch.Tensor:
    """x ~ (q - zero_point) * scale: what DequantizeLinear computes."""
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"q must be a torch.Tensor, got {type(q).__name__}")
    _check_scale(scale)
    _check_zero_point(zero_point, -(2**15), 2**16 - 1)
    return (q - zero_point) * scale


def _check_zero_point(zero_point, lo: int, hi: int) -> None:
    # a fractional zero point would shift every value off the integer grid
    if isinstance(zero_point, bool) or not isinstance(zero_point, int) or not lo <= zero_point <= hi:
        raise ValueError(f"zero_point must be an int in [{lo}, {hi}], got {zero_point!r}")


def _check_bits(bits) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an int in [2, 16], got {bits!r}")


def symmetric_scale(x: torch.Tensor, bits: int = 8, per_channel: bool = False) -> torch.Tensor:
    """Symmetric scale (zero point 0): the largest |x| maps to 2**(bits-1) - 1 (127 for int8).
    A tiny floor keeps an all-zero tensor from dividing by zero.

    per_channel=False: one scale for the whole tensor (a 0-dim tensor). per_channel=True: one
    scale per slice along dim 0 (a weight's output channels), shaped (C, 1, ...) so that it
    broadcasts against x."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    _check_bits(bits)
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}): it has no largest value")
    top = 2 ** (bits - 1) - 1
    if not per_channel:
        scale = x.detach().abs().max().clamp_min(1e-12) / top
    elif x.ndim == 0:
        raise ValueError(f"per_channel needs a tensor with channels along dim 0, got shape {tuple(x.shape)}")
    else:
        largest = x.detach().abs().reshape(len(x), -1).amax(dim=1).clamp_min(1e-12)
        scale = (largest / top).reshape(-1, *([1] * (x.ndim - 1)))
    if not bool(scale.isfinite().all()):  # max() passes NaN and inf on
        raise ValueError("x holds inf or NaN: it has no finite range to quantize")
    return scale


def affine_params(x: torch.Tensor, bits: int = 8) -> tuple[float, int]:
    """Asymmetric (min/max) quantization parameters for `x` on the signed `bits`-bit grid:
    the range [min(x, 0), max(x, 0)] maps onto [-2**(bits-1), 2**(bits-1) - 1], so 0 is exactly
    representable; returns (scale, zero_point). What MinMax calibration computes for an
    activation: a ReLU output (all >= 0) then uses every level instead of half of them."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.numel() == 0:
        raise ValueError("x is empty: its range is undefined")
    _check_bits(bits)
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    lo, hi = x.min().item(), x.max().item()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"x holds inf or NaN (min {lo}, max {hi}): it has no finite range to quantize")
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / (qmax - qmin), 1e-12)
    zero_point = int(min(max(round(qmin - lo / scale), qmin), qmax))
    return scale, zero_point


# --- ONNX Runtime ---------------------------------------------------------------------------

def file_size(path) -> int:
    """Size of the file at `path` in bytes."""
    return existing_file(path, "path").stat().st_size


def _check_images(name: str, images, shape=None) -> None:
    """Calibration images: a non-empty (N, C, H, W) tensor that fits the model's input `shape`
    (ints where fixed, names or 0 where free), when given."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of calibration images, got {type(images).__name__}")
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"{name} must be a non-empty (N, C, H, W) batch: static quantization "
                         f"needs representative inputs; got shape {tuple(images.shape)}")
    if shape is not None and (len(shape) != images.ndim or any(
            isinstance(d, int) and d > 0 and d != n for d, n in zip(shape, images.shape, strict=True))):
        raise ValueError(f"{name} has shape {tuple(images.shape)}, but the model's input is {shape}")


class ImageReader(CalibrationDataReader):
    """Feeds `images` (N, C, H, W) to the calibrator in batches: {input_name: float32 array}
    per get_next() call, None when done. rewind() starts again (ORT may read twice)."""

    def __init__(self, images: torch.Tensor, input_name: str = "input", batch_size: int = 64):
        _check_images("images", images)
        if not isinstance(input_name, str):
            raise TypeError(f"input_name must be the model's input name (a str), got {input_name!r}")
        if not input_name:
            raise ValueError("input_name must not be empty: it names the model's input")
        positive_int("batch_size", batch_size)
        array = images.detach().cpu().float().contiguous().numpy()
        self.batches = [{input_name: array[i:i + batch_size]} for i in range(0, len(array), batch_size)]
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)


def dynamic(src, dst) -> Path:
    """Dynamic quantization: weights of MatMul/Gemm/Conv... become int8 in the file; at run time
    each activation is quantized on the fly with a range measured on that very call (no
    calibration data, but extra work per call: find min/max, quantize, dequantize)."""
    src, dst = existing_file(src, "src"), check_path("dst", dst)
    onnx_export.inspect(src)  # a damaged file: an error that names it
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(src), str(pre))  # shape inference + clean-ups, see static()
        # int8 weights where this ORT can run them in a ConvInteger; older releases (1.23, the
        # Docker image's) only have uint8 x uint8 and would refuse the file.
        weights = QuantType.QInt8 if ort_conv_integer_int8_weights() else QuantType.QUInt8
        quantize_dynamic(str(pre), str(dst), weight_type=weights)
    return dst


def static(src, dst, calibration_images: torch.Tensor, fmt: str = "qdq", per_channel: bool = False) -> Path:
    """Static quantization: the activation ranges are measured once, on calibration images, and
    frozen into the file, so at run time nothing is measured.

    First quant_pre_process: symbolic shape inference and graph clean-ups (folding constants,
    fusing e.g. Conv+BatchNorm) so the quantizer sees the graph ORT will run. Then
    quantize_static with MinMax calibration in the chosen format:
      "qdq"        QuantizeLinear -> DequantizeLinear pairs around the original float ops;
                   ORT fuses each pattern into an integer kernel when it has one
      "qoperator"  the ops replaced by integer ones (QLinearConv, QLinearMatMul, ...)
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    src, dst = existing_file(src, "src"), check_path("dst", dst)
    _check_images("calibration_images", calibration_images, onnx_export.inspect(src)["inputs"][0]["shape"])
    reader = ImageReader(calibration_images)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(src), str(pre))
        # int8 weights; activations int8 for QDQ, uint8 for QOperator: ORT's x86 integer kernels
        # (QLinearConv, QGemm) are fast for uint8 x int8 and slow for int8 x int8
        activations = QuantType.QInt8 if fmt == "qdq" else QuantType.QUInt8
        quantize_static(str(pre), str(dst), reader, quant_format=FORMATS[fmt], per_channel=per_channel,
                        activation_type=activations, weight_type=QuantType.QInt8)
    return dst


# --- quantization-aware training ------------------------------------------------------------

def fake_quantize(x: torch.Tensor, bits: int = 8, per_channel: bool = False) -> torch.Tensor:
    """Round `x` to the symmetric int grid and back, in float ("fake" quantization), with a
    straight-through estimator: the forward pass sees the rounded values, the backward pass
    treats rounding as the identity (round() has zero gradient almost everywhere).
    per_channel: one scale per slice along dim 0 (see symmetric_scale)."""
    scale = symmetric_scale(x, bits, per_channel)
    rounded = dequantize(quantize_tensor(x, scale, 0, bits), scale)
    return x + (rounded - x).detach()  # value: rounded; gradient: that of x


class FakeQuant(nn.Module):
    """A parametrization: the layer's weight, as the forward pass sees it, is fake-quantized
    by `fn(weight, bits)` (default: fake_quantize)."""

    def __init__(self, bits: int = 8, fn=None):
        _check_bits(bits)
        if fn is not None and not callable(fn):
            raise TypeError(f"fn must be a function (weight, bits) -> weight, got {type(fn).__name__}")
        super().__init__()
        self.bits = bits
        self.fn = fake_quantize if fn is None else fn

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.fn(weight, self.bits)


def qat(model: nn.Module, bits: int = 8, fake=None) -> nn.Module:
    """Make every Linear and Conv2d weight fake-quantized (in place) so that training learns
    weights that survive rounding to `bits` bits. `fake(weight, bits)` is the fake-quantizer
    (default: fake_quantize; a lab passes its own). Undo with `freeze(model)`."""
    validate.module("model", model)
    _check_bits(bits)
    if fake is not None and not callable(fake):
        raise TypeError(f"fake must be a function (weight, bits) -> weight, got {type(fake).__name__}")
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and not parametrize.is_parametrized(m, "weight"):
            parametrize.register_parametrization(m, "weight", FakeQuant(bits, fake))
    return model


def freeze(model: nn.Module) -> nn.Module:
    """Replace each fake-quantized weight by its rounded value, a plain parameter again, so the
    model exports like any other (its weights now lie exactly on the int grid)."""
    validate.module("model", model)
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return model


def int8_dynamic(model: nn.Module) -> tuple[nn.Module | None, str]:
    """A copy of `model` with its Linear layers quantized to int8 (dynamic activations) by
    PyTorch itself, and which API did it: torchao where installed (the current one), else the
    deprecated torch.ao.quantization while it still exists, else (None, why not)."""
    validate.module("model", model)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        pass
    else:
        quantized = copy.deepcopy(model)
        quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
        return quantized, "torchao"
    legacy = getattr(getattr(torch, "ao", None), "quantization", None)
    if legacy is None or not hasattr(legacy, "quantize_dynamic"):
        return None, "neither torchao (pip install torchao) nor torch.ao.quantization is available"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the lab says it is deprecated
        quantized = legacy.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    return quantized, "torch.ao.quantization (deprecated; torchao is not installed)"


@functools.cache
def ort_conv_integer_int8_weights() -> bool:
    """Whether this ONNX Runtime's CPU kernel for ConvInteger takes int8 weights (with uint8
    activations), the pairing quantize_dynamic writes by default. ORT 1.23, the version the
    Docker image pins, only has uint8 x uint8 and refuses such a file at session creation;
    newer releases run it. Probed once with a one-node model, not inferred from a version."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ConvInteger", ["x", "w"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [helper.make_tensor("w", TensorProto.INT8, [1, 1, 1, 1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 7  # readable by every ORT this project supports
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # NOT_IMPLEMENTED: no kernel for this type pairing
        return False
    return True
