"""ONNX export and ONNX Runtime: look inside an exported file, run it, check it against PyTorch.

  onnx_export(model, x, path)  the export, with the exporter your torch defaults to (version logic here)

  inspect(path)          what the file holds: opset, inputs/outputs (symbolic batch dim), ops
  session(path, ...)     an onnxruntime.InferenceSession: provider, threads, graph optimisation
  ort_predict(sess, x)   one batch through the session, back as a torch tensor
  parity(model, ...)     the largest |eager - ONNX Runtime| difference, per batch size
  ort_accuracy(...)      accuracy of the session over a DataLoader
  export_and_run(...)    export, then run one batch in ONNX Runtime: the reference a lab's own
                         export step is checked against
  quiet()                collects the exporter's progress lines and warnings instead of printing
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from inspect import signature
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from google.protobuf.message import DecodeError
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument, InvalidProtobuf
from torch import nn

from lablib.core import compat, config, validate
from lablib.core.validate import existing_file, integer
from lablib.core.validate import path as check_path

# The graph optimisation levels of ONNX Runtime, from none to every rewrite it knows:
#   disabled  run the graph exactly as exported
#   basic     graph-level clean-ups that keep the ops standard: constant folding, removing
#             redundant nodes (Identity, Dropout at inference)
#   extended  fusions into ORT's own ops, e.g. Conv + Relu -> FusedConv, Gemm + activation
#   layout    (ORT >= 1.22) the extended rewrites plus layout changes; older ORT has no such level
#   all       everything, including the NCHWc memory layout that suits the CPU's vector units
LEVELS = {
    name: getattr(ort.GraphOptimizationLevel, enum)
    for name, enum in [
        ("disabled", "ORT_DISABLE_ALL"),
        ("basic", "ORT_ENABLE_BASIC"),
        ("extended", "ORT_ENABLE_EXTENDED"),
        ("layout", "ORT_ENABLE_LAYOUT"),
        ("all", "ORT_ENABLE_ALL"),
    ]
    if hasattr(ort.GraphOptimizationLevel, enum)
}

# Short names for the execution providers a learner is likely to ask for.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def dynamo_exporter_available() -> bool:
    """The dynamo-based ONNX exporter needs `onnxscript` and a torch.onnx.export that takes dynamo=."""
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return "dynamo" in signature(torch.onnx.export).parameters


def dynamo_is_default() -> bool:
    """Whether onnx_export(dynamo=None) uses the dynamo exporter: from torch 2.9, as torch does."""
    return compat.TORCH >= (2, 9) and dynamo_exporter_available()


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
    validate.module("model", model)
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"example must be a tensor (one input batch), got {type(example).__name__}")
    newest = onnx.defs.onnx_opset_version()  # the newest opset this onnx package knows
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or not 7 <= opset <= newest):
        raise ValueError(f"opset must be an int in [7, {newest}] or None, got {opset!r}")
    path = check_path("path", path)
    _name("input_name", input_name)
    _name("output_name", output_name)
    if dynamo is None:
        dynamo = dynamo_is_default()
    if dynamo and not dynamo_exporter_available():
        raise ValueError("dynamo=True needs the onnxscript package and torch >= 2.5")
    params = signature(torch.onnx.export).parameters
    kwargs = {"input_names": [input_name], "output_names": [output_name], "opset_version": opset}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _forward(model, example, "example")  # a wrong shape reads better here than from the exporter
        path.parent.mkdir(parents=True, exist_ok=True)
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
    written = inspect(path)["opset"]
    if opset is not None and written != opset:
        # the dynamo exporter converts down from its own opset and only logs a failure
        raise ValueError(f"opset={opset} was asked for, but the exporter wrote opset {written} to "
                         f"{str(path)!r} (it could not convert the graph); try dynamo=False or opset=None")
    return path


def _name(name: str, value) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(f"{name} must not be empty: ONNX names every input and output")


def _forward(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """model(x), with an error naming `name` when x does not fit the model (channels, rank)."""
    try:
        return model(x)
    except (RuntimeError, ValueError) as exc:  # torch's shape errors, or the model's own checks
        raise ValueError(f"{name} of shape {tuple(x.shape)} does not fit the model: {exc}") from None


def _load(path: Path) -> onnx.ModelProto:
    """onnx.load, with an error naming the file when it holds no ONNX model."""
    try:
        model = onnx.load(str(path))
    except DecodeError as exc:
        raise ValueError(f"{str(path)!r} is not an ONNX model (damaged or truncated?): {exc}") from None
    if not model.HasField("graph"):  # an empty file parses as an empty model
        raise ValueError(f"{str(path)!r} is not an ONNX model: it holds no graph")
    return model


def inspect(path) -> dict:
    """What an .onnx file holds, as a dict:

    opset    the version of the standard operator set (domain "") the graph is written in
    inputs   [{"name", "shape", "dtype"}]: a dimension is an int when fixed, its name (a str,
             e.g. "batch") when symbolic, that is, left free for any size at run time
    outputs  the same for the outputs
    ops      {op type: count}, most frequent first (non-standard ops as "domain.Op")
    nodes    total number of nodes; size_kb: the file's size
    """
    path = existing_file(path)
    model = _load(path)

    def describe(value_info) -> dict:
        tensor = value_info.type.tensor_type
        # each dim has either dim_value (a fixed int) or dim_param (a symbol such as "batch")
        shape = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return {"name": value_info.name, "shape": shape, "dtype": dtype}

    # ops from outside the standard set carry their domain: com.microsoft.FusedConv is ORT's own
    ops = Counter(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
                  for node in model.graph.node)
    return {
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "inputs": [describe(v) for v in model.graph.input],
        "outputs": [describe(v) for v in model.graph.output],
        "ops": dict(ops.most_common()),
        "nodes": len(model.graph.node),
        "size_kb": path.stat().st_size / 1024,
    }


def session_options(threads: int | None = None, level: str = "all") -> ort.SessionOptions:
    """SessionOptions with `threads` intra-op threads (the threads one operator, e.g. a big
    Conv, is split over; None or 0 = ONNX Runtime's default, one per physical core) and the
    graph optimisation `level` (a key of LEVELS)."""
    if threads is not None:
        # more threads than cores only oversubscribe, but lab 07 compares up to 4 on any machine
        integer("threads", threads, 0, max(os.cpu_count() or 1, 4))
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.graph_optimization_level = LEVELS[level]
    return options


def describe_options(options: ort.SessionOptions | None) -> dict | None:
    """The two session settings that matter most (threads, optimisation level), as plain values (None passes through)."""
    if options is None:
        return None
    if not isinstance(options, ort.SessionOptions):
        raise TypeError(f"options must be an onnxruntime.SessionOptions, got {type(options).__name__}")
    return {
        "intra_op_num_threads": options.intra_op_num_threads,
        "graph_optimization_level": options.graph_optimization_level.name,
    }


def provider_name(provider: str) -> str:
    """'cuda' -> 'CUDAExecutionProvider'; full names pass through. ValueError for unknown
    names, and for providers this onnxruntime build does not have (with what to install)."""
    if not isinstance(provider, str):
        raise TypeError(f"provider must be a name (str) such as 'cpu', got {type(provider).__name__}")
    name = PROVIDERS.get(provider.lower(), provider)
    known = set(PROVIDERS.values()) | set(ort.get_all_providers())
    if name not in known:
        raise ValueError(f"provider {provider!r} is unknown; use one of {', '.join(PROVIDERS)} or a full name such as 'CPUExecutionProvider'")
    available = ort.get_available_providers()
    if name not in available:
        hint = " (pip install onnxruntime-gpu, with a CUDA GPU and driver)" if name != "CPUExecutionProvider" else ""
        raise ValueError(f"provider {name} is not available in this onnxruntime build{hint}; available: {', '.join(available)}")
    return name


def cuda_available() -> bool:
    """Whether this onnxruntime build can run on an NVIDIA GPU (needs the onnxruntime-gpu package)."""
    return "CUDAExecutionProvider" in ort.get_available_providers()


def session(path, providers=None, threads: int | None = None, level: str = "all",
            optimized_path=None) -> ort.InferenceSession:
    """An onnxruntime.InferenceSession for the .onnx file at `path`.

    providers      execution providers in order of preference ('cpu', 'cuda', 'tensorrt' or full
                   names); default: the CPU only. ORT falls back along the list node by node.
    threads        intra-op threads; default LAB_THREADS if set, else ORT's own default.
    level          graph optimisation level: 'disabled', 'basic', 'extended', ('layout',) 'all'.
    optimized_path where to save the graph *after* optimisation, to see what ORT rewrote.
    """
    path = existing_file(path)
    if providers is None:
        providers = ["cpu"]
    if isinstance(providers, str):
        providers = [providers]
    if not providers:
        raise ValueError("providers must name at least one execution provider")
    names = [provider_name(p) for p in providers]
    options = session_options(config.threads() if threads is None else threads, level)
    if optimized_path is not None:
        optimized_path = check_path("optimized_path", optimized_path)
        if optimized_path.is_dir():
            raise ValueError(f"optimized_path {str(optimized_path)!r} is a folder; name a file in it")
        optimized_path.parent.mkdir(parents=True, exist_ok=True)
        options.optimized_model_filepath = str(optimized_path)
        # saving an NCHWc-optimised graph makes ORT warn it is hardware specific: we know
        options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=names)
    except (InvalidProtobuf, InvalidArgument) as exc:  # an empty, truncated or foreign file
        raise ValueError(f"ONNX Runtime cannot load {str(path)!r}: {exc}") from None


def ort_predict(sess: ort.InferenceSession, x: torch.Tensor) -> torch.Tensor:
    """Run one batch `x` through `sess` (single input, first output) and return a tensor."""
    if not isinstance(sess, ort.InferenceSession):
        raise TypeError(f"sess must be an onnxruntime.InferenceSession, got {type(sess).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    expected = sess.get_inputs()[0].shape  # ints where fixed; names (or None) where free
    if x.ndim != len(expected) or any(isinstance(d, int) and d != n for d, n in zip(expected, x.shape, strict=True)):
        raise ValueError(f"x has shape {tuple(x.shape)}, but the model's input is {expected}")
    # ORT takes and returns NumPy arrays; float32 and contiguous, as the graph expects
    feed = {sess.get_inputs()[0].name: x.detach().cpu().float().contiguous().numpy()}
    return torch.from_numpy(sess.run(None, feed)[0])


def _batch_sizes(batch_sizes) -> list[int]:
    try:
        sizes = list(batch_sizes)
    except TypeError:
        raise TypeError(f"batch_sizes must be a list of positive ints, got {type(batch_sizes).__name__}") from None
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise ValueError(f"batch_sizes must be a non-empty list of positive ints, got {batch_sizes!r}")
    return sizes


def parity(model: nn.Module, sess_or_path, batch_sizes=(1, 7, 64), x: torch.Tensor | None = None,
           seed: int = 0) -> dict[int, float]:
    """The largest absolute difference between eager PyTorch and ONNX Runtime, per batch size.

    Inputs are the first `b` rows of `x` (real data) or, without `x`, uniform random inputs of
    the file's input shape. Float32 kernels differ in summation order, so ~1e-6 is normal;
    anything near 1e-2 means the graph computes something else.
    """
    validate.module("model", model)
    sizes = _batch_sizes(batch_sizes)
    integer("seed", seed)
    if not isinstance(sess_or_path, (ort.InferenceSession, str, os.PathLike)):
        raise TypeError(f"sess_or_path must be an onnxruntime.InferenceSession or a path, "
                        f"got {type(sess_or_path).__name__}")
    sess = sess_or_path if isinstance(sess_or_path, ort.InferenceSession) else session(sess_or_path)
    name = "x" if x is not None else "the ONNX file's input"
    if x is not None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor or None, got {type(x).__name__}")
        if len(x) < max(sizes):
            raise ValueError(f"x has {len(x)} rows, fewer than the largest batch size {max(sizes)}")
    else:
        shape = sess.get_inputs()[0].shape[1:]
        if not all(isinstance(d, int) for d in shape):
            raise ValueError(f"the input shape {shape} has symbolic dims beyond the batch: pass x")
        x = torch.rand(max(sizes), *shape, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()
    diffs = {}
    try:
        with torch.inference_mode():
            for b in sizes:
                eager = _forward(model, x[:b], name).float().cpu()
                diffs[b] = (eager - ort_predict(sess, x[:b])).abs().max().item()
    finally:
        model.train(was_training)
    return diffs


def ort_accuracy(sess: ort.InferenceSession, loader) -> tuple[float, torch.Tensor]:
    """Accuracy of the session over `loader` (batches of images, labels), and its predicted
    class for every example, in loader order."""
    if not isinstance(sess, ort.InferenceSession):
        raise TypeError(f"sess must be an onnxruntime.InferenceSession, got {type(sess).__name__}")
    if not isinstance(loader, Iterable):
        raise TypeError(f"loader must yield (images, labels) batches, got {type(loader).__name__}")
    predictions, labels = [], []
    for x, y in loader:
        logits = ort_predict(sess, x)
        predictions.append(logits.argmax(dim=1))
        labels.append(torch.as_tensor(y))
    if not predictions:
        raise ValueError("loader yielded no batches")
    predicted, y = torch.cat(predictions), torch.cat(labels)
    classes = logits.shape[1]
    if y.is_floating_point() or y.shape != predicted.shape or not bool(((y >= 0) & (y < classes)).all()):
        raise ValueError(f"loader's labels must be class indices in [0, {classes}), one per image; "
                         f"got {y.dtype} {tuple(y.shape)} from {y.min().item()} to {y.max().item()}")
    return (predicted == y).float().mean().item(), predicted


def export_and_run(model: nn.Module, x: torch.Tensor, path=None, **options) -> torch.Tensor:
    """Export `model` with onnx_export() (example batch `x`, dynamic batch; `options` go to it),
    then run `x` through an ONNX Runtime session of the file and return the output. The
    exporter's messages are collected (quiet), not printed. `path`: where the file goes (None: a
    temporary folder, deleted afterwards)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if path is None:
        with tempfile.TemporaryDirectory() as tmp:
            return export_and_run(model, x, Path(tmp) / "model.onnx", **options)
    with quiet():
        onnx_export(model, x, path, **options)
    return ort_predict(session(path), x)


@dataclass
class Captured:
    """What the exporter said while `quiet()` was on."""

    progress: list[str] = field(default_factory=list)  # its printed progress lines
    warnings: list[str] = field(default_factory=list)  # Python warnings and log records >= WARNING
    seconds: float = 0.0

    def summary(self) -> str:
        return f"export took {self.seconds:.1f} s; the exporter printed {len(self.progress)} progress lines and {len(self.warnings)} warnings"

    def matching(self, *words: str) -> list[str]:
        """The warnings that mention any of `words` (case-insensitive)."""
        return [w for w in self.warnings if any(k.lower() in w.lower() for k in words)]


class _Collect(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f"\n  ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        self.into.append(text)


# the loggers the dynamo exporter and its ONNX helpers write to
_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")


@contextlib.contextmanager
def quiet():
    """Collect the exporter's output instead of letting it scroll past: the progress lines it
    prints, Python warnings, and log records at WARNING or above. Errors are not caught: an
    exception inside the block propagates as usual.

        with onnx_export.quiet() as said:
            onnx_export(model, example, path)
        print(said.summary()); print(said.warnings)
    """
    said = Captured()
    handler = _Collect(said.warnings)
    saved = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers, logger.propagate))
        logger.handlers = [handler]  # in place of torch's own stderr printer, for the block
        logger.propagate = False  # and not passed on to the root logger's printer either
    out = io.StringIO()
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
            warnings.simplefilter("always")
            yield said
    finally:
        said.seconds = time.perf_counter() - start
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
        said.progress += [line for line in out.getvalue().splitlines() if line.strip()]
        said.warnings += [f"{w.category.__name__}: {w.message}" for w in caught]

