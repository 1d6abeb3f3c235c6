"""Version shims: every call whose spelling differs between torch 2.5 and the newest lives here,
so the labs read the same on every supported version."""

from __future__ import annotations

import copy
import functools
import inspect
import re
import warnings
from pathlib import Path

import torch
from torch import nn


def version_tuple(version: str) -> tuple[int, int]:
    """'2.13.0+cpu' -> (2, 13)."""
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"version {version!r} does not start with MAJOR.MINOR")
    return int(m.group(1)), int(m.group(2))


TORCH = version_tuple(torch.__version__)


def grad_scaler(device: str = "cuda", enabled: bool = True):
    """A GradScaler for fp16 training. torch.cuda.amp.GradScaler is deprecated (and disables
    itself off CUDA); torch.amp.GradScaler(device) is the current spelling."""
    device = torch.device(device).type
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device == "cuda")  # pragma: no cover


def load(path, map_location="cpu"):
    """torch.load restricted to tensors and plain containers (weights_only=True): loading a
    pickle can run arbitrary code, and torch >= 2.6 refuses it by default anyway."""
    return torch.load(path, map_location=map_location, weights_only=True)


def dynamo_exporter_available() -> bool:
    """The dynamo-based ONNX exporter needs `onnxscript` and a torch.onnx.export that takes dynamo=."""
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return "dynamo" in inspect.signature(torch.onnx.export).parameters


def dynamo_is_default() -> bool:
    """Whether onnx_export(dynamo=None) uses the dynamo exporter: from torch 2.9, as torch does."""
    return TORCH >= (2, 9) and dynamo_exporter_available()


def onnx_export(
    model: nn.Module,
    example: torch.Tensor,
    path,
    *,
    dynamic_batch: bool = True,
    opset: int | None = None,
    dynamo: bool | None = None,
    input_name: str = "input",
    output_name: str = "output",
) -> Path:
    """Export `model` to a single ONNX file at `path` and return the path.

    dynamo=None picks what torch itself defaults to: the dynamo exporter from torch 2.9 (the
    TorchScript exporter, dynamo=False, is deprecated there), TorchScript before. On torch 2.5
    the dynamo exporter was a preview, and its graphs break ONNX Runtime's quantization tools.
    dynamic_batch makes the first input dimension symbolic so any batch size runs.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"example must be a tensor (one input batch), got {type(example).__name__}")
    if opset is not None and (not isinstance(opset, int) or opset < 7):
        raise ValueError(f"opset must be an int >= 7 or None, got {opset!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if dynamo is None:
        dynamo = dynamo_is_default()
    if dynamo and not dynamo_exporter_available():
        raise ValueError("dynamo=True needs the onnxscript package and torch >= 2.5")
    params = inspect.signature(torch.onnx.export).parameters
    kwargs = {"input_names": [input_name], "output_names": [output_name], "opset_version": opset}
    was_training = model.training
    model.eval()
    try:
        if dynamo:
            if dynamic_batch and example.shape[0] == 1:
                # torch.export specialises a dimension of size 1; trace with a batch of 2.
                example = example.repeat(2, *([1] * (example.ndim - 1)))
            if dynamic_batch:
                kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
            if "external_data" in params:
                kwargs["external_data"] = False  # one self-contained file, no model.onnx.data
            torch.onnx.export(model, (example,), str(path), dynamo=True, **kwargs)
        else:
            if dynamic_batch:
                kwargs["dynamic_axes"] = {input_name: {0: "batch"}, output_name: {0: "batch"}}
            if "dynamo" in params:
                kwargs["dynamo"] = False
            torch.onnx.export(model, (example,), str(path), **kwargs)
    finally:
        model.train(was_training)
    return path


def int8_dynamic(model: nn.Module) -> tuple[nn.Module | None, str]:
    """A copy of `model` with its Linear layers quantized to int8 (dynamic activations) by
    PyTorch itself, and which API did it: torchao where installed (the current one), else the
    deprecated torch.ao.quantization while it still exists, else (None, why not)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
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
