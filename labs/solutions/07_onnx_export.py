"""Reference answers for lab 07 (ONNX export and ONNX Runtime)."""

import onnxruntime as ort
import torch

LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}


def my_export_torchscript(model, example, path, opset=None):
    """The TorchScript exporter, on every torch: dynamic batch named per input and output."""
    model.eval()
    torch.onnx.export(model, (example,), str(path), dynamo=False,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      opset_version=opset)
    return path


def my_session_options(threads, level):
    """SessionOptions with `threads` intra-op threads and the optimisation level named `level`."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    return options
