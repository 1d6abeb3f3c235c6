"""Watching a training run: the per-layer signals, the alarms a team wires to them, and the
TensorBoard event files they are logged to, read back as plain Python.

    norms = train.grad_norms(model)        # after backward: each layer's weight-gradient L2 norm
    before = snapshot(model); opt.step()
    ratios = update_ratios(before, snapshot(model))   # ||w_new - w_old|| / ||w_old||, per layer

The alarms are pure functions of a metric's history (the index at which each first fires, or
None), and `Alarms` runs them as the values come in, one alert per kind:

    first_nonfinite(losses)                          a NaN or infinite loss
    first_explosion(norms, factor, window, limit)    a gradient norm above `limit`, or `factor` times
                                                     the median of the `window` norms before it
    first_stall(losses, window, min_improvement)     a window whose mean loss is not
                                                     `min_improvement` (relative) below the previous one
    first_gap(train, val, max_gap, patience)         train - val accuracy above `max_gap` for
                                                     `patience` evaluations in a row
    early_stopping(val_losses, patience, min_delta)  the best evaluation, and where to stop

`system_metrics` reads the process's memory and CPU use (psutil) and, on a CUDA device, the peak
memory torch allocated and the GPU's utilisation (NVML, where present). `read_scalars` reads a
TensorBoard log folder back into {tag: (steps, values)}; `served_tags` starts a TensorBoard
server on the loopback interface, asks it which scalar tags it serves, and stops it.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lablib.core.validate import module, path, positive_int, real, series

# --- the per-layer signals ------------------------------------------------------------------


def _weights(model: nn.Module):
    """The weight matrices and kernels (ndim > 1) by layer name, as `train.grad_norms` keys its
    norms ("fc1", not "fc1.weight"): biases and norm scales are skipped, their norms say little
    and a bias that starts at 0 has no ratio."""
    return [(name.removesuffix(".weight"), p) for name, p in model.named_parameters() if p.ndim > 1]


def total_grad_norm(model: nn.Module) -> float:
    """One norm over every parameter's gradient (biases included): what
    torch.nn.utils.clip_grad_norm_ returns, and what an exploding-gradient alarm watches."""
    module("model", model)
    grads = [p.grad.detach().double().flatten() for p in model.parameters() if p.grad is not None]
    return torch.cat(grads).norm().item() if grads else 0.0


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the weights (ndim > 1) by layer name: take one before the optimizer step."""
    module("model", model)
    return {name: p.detach().clone() for name, p in _weights(model)}


def _tensor_dict(name: str, value) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict of name -> tensor (a snapshot), got {type(value).__name__}")
    for k, t in value.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{k!r}] must be a tensor, got {type(t).__name__}")
    return value


def update_ratios(before: dict, after: dict, eps: float = 1e-12) -> dict[str, float]:
    """||after - before|| / (||before|| + eps) for each weight: how far one step moved it,
    relative to its size. Around 1e-3 is the usual healthy order for Adam and SGD; 1e-1 and
    above, the step is rewriting the layer; below 1e-5, the layer has stopped learning."""
    _tensor_dict("before", before)
    _tensor_dict("after", after)
    if set(before) != set(after):
        raise ValueError(f"before and after must name the same weights: only in before {sorted(set(before) - set(after))}, "
                         f"only in after {sorted(set(after) - set(before))}")
    real("eps", eps, 0, math.inf, high_open=True)
    out = {}
    for name, old in before.items():
        new = after[name]
        if new.shape != old.shape:
            raise ValueError(f"after[{name!r}] has shape {tuple(new.shape)}, before[{name!r}] {tuple(old.shape)}")
        out[name] = (new.detach() - old.detach()).norm().item() / (old.detach().norm().item() + eps)
    return out


# --- alarms ------------------------------------------------------------------------------------


def first_nonfinite(losses) -> int | None:
    """The index of the first NaN or infinite loss, or None."""
    values = series("losses", losses)
    return next((i for i, v in enumerate(values) if not math.isfinite(v)), None)


def _explodes_at(norms: list[float], i: int, factor: float, window: int, limit: float | None) -> bool:
    if limit is not None and norms[i] > limit:
        return True
    return i >= window and norms[i] > factor * statistics.median(norms[i - window:i])


def first_explosion(norms, factor: float = 10.0, window: int = 20, limit: float | None = None) -> int | None:
    """The index of the first gradient norm above `limit` (if given), or above `factor` times the
    median of the `window` norms before it (checked once `window` norms are known), or None."""
    values = series("norms", norms, finite=True)
    factor = real("factor", factor, 1, math.inf, high_open=True)
    window = positive_int("window", window)
    if limit is not None:
        limit = real("limit", limit, 0, math.inf, low_open=True, high_open=True)
    return next((i for i in range(len(values)) if _explodes_at(values, i, factor, window, limit)), None)


def _stalls_at(losses: list[float], i: int, window: int, min_improvement: float) -> bool:
    if i + 1 < 2 * window:
        return False
    last = statistics.fmean(losses[i + 1 - window:i + 1])
    previous = statistics.fmean(losses[i + 1 - 2 * window:i + 1 - window])
    return last > (1 - min_improvement) * previous


def first_stall(losses, window: int = 50, min_improvement: float = 0.01) -> int | None:
    """The index i of the first window (losses[i - window + 1 : i + 1]) whose mean is not at
    least `min_improvement` (a share: 0.01 = 1 %) below the mean of the window before it, or None.
    Checked from i = 2 * window - 1 on; a loss that rises counts as stalled too."""
    values = series("losses", losses, finite=True)
    window = positive_int("window", window)
    min_improvement = real("min_improvement", min_improvement, 0, 1, high_open=True)
    return next((i for i in range(len(values)) if _stalls_at(values, i, window, min_improvement)), None)


def _gap_at(train: list[float], val: list[float], i: int, max_gap: float, patience: int) -> bool:
    return i + 1 >= patience and all(train[j] - val[j] > max_gap for j in range(i + 1 - patience, i + 1))


def first_gap(train, val, max_gap: float = 0.1, patience: int = 3) -> int | None:
    """The index of the first evaluation at which train - val (accuracies, or any score where
    higher is better) has been above `max_gap` for `patience` evaluations in a row, or None."""
    train, val = series("train", train, finite=True), series("val", val, finite=True)
    if len(train) != len(val):
        raise ValueError(f"train and val must hold one value per evaluation, got {len(train)} and {len(val)}")
    max_gap = real("max_gap", max_gap, 0, math.inf, high_open=True)
    patience = positive_int("patience", patience)
    return next((i for i in range(len(train)) if _gap_at(train, val, i, max_gap, patience)), None)


def early_stopping(val_losses, patience: int = 5, min_delta: float = 0.0) -> tuple[int | None, int | None]:
    """Early stopping on a validation loss: (best, stop). `best` is the index of the evaluation to
    restore (the lowest loss; an evaluation counts as better only when it is more than
    `min_delta` below the best so far); `stop` is the first index `patience` evaluations after
    the best without such an improvement, or None if training should go on. (None, None) for
    no evaluation."""
    values = series("val_losses", val_losses, finite=True)
    patience = positive_int("patience", patience)
    min_delta = real("min_delta", min_delta, 0, math.inf, high_open=True)
    best = None
    for i, v in enumerate(values):
        if best is None or v < values[best] - min_delta:
            best = i
        elif i - best >= patience:
            return best, i
    return best, None


@dataclass(frozen=True)
class Alert:
    kind: str  # "nonfinite", "explosion", "stall" or "gap"
    step: int
    message: str

    def __str__(self) -> str:
        return f"ALERT [{self.kind}] at step {self.step}: {self.message}"


class Alarms:
    """The four alarms run as a training loop reports its values; each kind fires once.

        alarms = Alarms()
        alerts = alarms.on_step(step, loss, grad_norm)           # every training step
        alerts += alarms.on_eval(step, train_acc, val_acc)       # every evaluation
        alarms.fired  -> {kind: Alert}

    A non-finite loss or gradient norm raises the nonfinite alert and is kept out of the other
    alarms' histories (a NaN would poison their medians and means)."""

    def __init__(self, factor: float = 10.0, window: int = 20, limit: float | None = None,
                 stall_window: int = 50, min_improvement: float = 0.01, max_gap: float = 0.1,
                 patience: int = 3):
        self.factor = real("factor", factor, 1, math.inf, high_open=True)
        self.window = positive_int("window", window)
        self.limit = None if limit is None else real("limit", limit, 0, math.inf, low_open=True, high_open=True)
        self.stall_window = positive_int("stall_window", stall_window)
        self.min_improvement = real("min_improvement", min_improvement, 0, 1, high_open=True)
        self.max_gap = real("max_gap", max_gap, 0, math.inf, high_open=True)
        self.patience = positive_int("patience", patience)
        self.losses: list[float] = []
        self.norms: list[float] = []
        self.train: list[float] = []
        self.val: list[float] = []
        self.fired: dict[str, Alert] = {}

    def _fire(self, kind: str, step: int, message: str) -> list[Alert]:
        if kind in self.fired:
            return []
        self.fired[kind] = alert = Alert(kind, step, message)
        return [alert]

    @staticmethod
    def _number(name: str, value) -> float:
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
        return float(value)

    def on_step(self, step: int, loss, grad_norm=None) -> list[Alert]:
        """Feed one training step's loss (and total gradient norm); returns the alerts it raised."""
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"step must be an int, got {type(step).__name__} {step!r}")
        loss = self._number("loss", loss)
        norm = None if grad_norm is None else self._number("grad_norm", grad_norm)
        alerts = []
        if not math.isfinite(loss) or (norm is not None and not math.isfinite(norm)):
            what = f"loss = {loss}" if not math.isfinite(loss) else f"gradient norm = {norm}"
            return self._fire("nonfinite", step, what)
        self.losses.append(loss)
        if norm is not None:
            self.norms.append(norm)
            if _explodes_at(self.norms, len(self.norms) - 1, self.factor, self.window, self.limit):
                median = statistics.median(self.norms[-self.window - 1:-1]) if len(self.norms) > self.window else float("nan")
                alerts += self._fire("explosion", step, f"gradient norm {norm:.3g} (median of the last {self.window}: {median:.3g})")
        if _stalls_at(self.losses, len(self.losses) - 1, self.stall_window, self.min_improvement):
            w = self.stall_window
            last, prev = statistics.fmean(self.losses[-w:]), statistics.fmean(self.losses[-2 * w:-w])
            alerts += self._fire("stall", step, f"mean loss over the last {w} steps {last:.4g} vs {prev:.4g} before "
                                                f"(less than {self.min_improvement:.0%} better)")
        return alerts

    def on_eval(self, step: int, train_acc, val_acc) -> list[Alert]:
        """Feed one evaluation's train and validation accuracy (in [0, 1]); returns the alerts it raised."""
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"step must be an int, got {type(step).__name__} {step!r}")
        self.train.append(real("train_acc", self._number("train_acc", train_acc), 0, 1))
        self.val.append(real("val_acc", self._number("val_acc", val_acc), 0, 1))
        if _gap_at(self.train, self.val, len(self.train) - 1, self.max_gap, self.patience):
            gap = self.train[-1] - self.val[-1]
            return self._fire("gap", step, f"train - val accuracy {gap:.3f} > {self.max_gap} for {self.patience} evaluations")
        return []


# --- system metrics ----------------------------------------------------------------------------

_PROCESS = {}


def gpu_utilisation(index: int = 0) -> tuple[float | None, str]:
    """(utilisation in %, "") of GPU `index` through NVML (the nvidia-ml-py package), or
    (None, the reason) where it cannot be read: no package, no driver, no such GPU."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be a GPU index (an int >= 0), got {index!r}")
    try:
        import pynvml
    except ImportError:
        return None, "the nvidia-ml-py package (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML is not available here ({type(exc).__name__}: {exc})"
    try:
        count = pynvml.nvmlDeviceGetCount()
        if index >= count:
            return None, f"NVML sees {count} GPU(s); there is no GPU {index}"
        rates = pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(index))
        return float(rates.gpu), ""
    except Exception as exc:
        return None, f"NVML could not read GPU {index} ({type(exc).__name__}: {exc})"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # pragma: no cover - shutting down what failed to start
            pass


def system_metrics(device=None) -> dict[str, float]:
    """This process's resident memory (MiB), its CPU use since the previous call (%, where 100 is
    one core busy) and the machine's; on a CUDA `device`, also the peak memory torch allocated
    (MiB) and, through NVML where present, the GPU's utilisation (%). The first call's CPU
    figures are 0 (psutil measures between calls)."""
    import psutil

    device = torch.device("cpu") if device is None else device
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:0' or a torch.device, got {device!r}") from None
    pid = os.getpid()
    proc = _PROCESS.get(pid) or _PROCESS.setdefault(pid, psutil.Process(pid))
    out = {"memory/rss_mib": proc.memory_info().rss / 2**20,
           "cpu/process_percent": proc.cpu_percent(None),
           "cpu/system_percent": psutil.cpu_percent(None)}
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} was asked for but CUDA is not available here")
        out["gpu/max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        util, _ = gpu_utilisation(device.index or 0)
        if util is not None:
            out["gpu/util_percent"] = util
    return out


# --- TensorBoard's event files, read back -------------------------------------------------------


def _folder(name: str, value) -> Path:
    p = path(name, value)
    if not p.is_dir():
        raise ValueError(f"{name} {str(p)!r} is not a folder")
    return p


def read_scalars(logdir) -> dict[str, tuple[list[int], list[float]]]:
    """Every scalar logged under `logdir` (a SummaryWriter's folder), as {tag: (steps, values)}
    in step order: plain lists, ready to plot. Runs in subfolders are read too, their tags
    prefixed with the subfolder ("run2/loss/train"). A ValueError if it holds no event file, or
    one that TensorBoard cannot read (it would skip it without a word)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = _folder("logdir", logdir)
    folders = sorted({f.parent for f in root.rglob("events.out.tfevents.*") if f.is_file()})
    if not folders:
        raise ValueError(f"logdir {str(root)!r} holds no TensorBoard event file (events.out.tfevents.*)")
    out: dict[str, tuple[list[int], list[float]]] = {}
    for folder in folders:
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
        acc.Reload()
        written = [f for f in folder.glob("events.out.tfevents.*") if f.is_file() and f.stat().st_size > 0]
        if acc.file_version is None and written:  # TensorBoard's reader skips what it cannot parse, silently
            raise ValueError(f"logdir {str(root)!r}: {written[0].name} in {str(folder)!r} holds no readable "
                             "TensorBoard event (a corrupt or foreign file?)")
        prefix = "" if folder == root else folder.relative_to(root).as_posix() + "/"
        for tag in acc.Tags().get("scalars", []):
            points = sorted(acc.Scalars(tag), key=lambda e: e.step)
            out[prefix + tag] = ([e.step for e in points], [float(e.value) for e in points])
    return out


def served_tags(logdir, tmpdir, timeout: float = 60.0) -> dict[str, list[str]]:
    """Start a TensorBoard server on `logdir`, bound to 127.0.0.1 on a port the system picks,
    ask it for its scalar tags (GET /data/plugin/scalars/tags: {run: [tag, ...]}), and stop it,
    whatever happens (an error, a time-out, Ctrl-C). The server writes its `.tensorboard-info`
    into its temporary folder: `tmpdir` (created, and removed afterwards), never /tmp."""
    root = _folder("logdir", logdir)
    tmp = path("tmpdir", tmpdir)
    timeout = real("timeout", timeout, 0, math.inf, low_open=True, high_open=True)
    if tmp.exists() and not tmp.is_dir():
        raise ValueError(f"tmpdir {str(tmp)!r} must be a folder, but it is a file")
    created = not tmp.exists()
    tmp.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp)}
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(root), "--host", "127.0.0.1",
           "--port", "0", "--load_fast", "false"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        info = tmp / ".tensorboard-info" / f"pid-{proc.pid}.info"
        port = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"TensorBoard exited with code {proc.returncode} before serving {root}")
            if port is None and info.is_file():
                try:
                    port = json.loads(info.read_text())["port"]
                except (ValueError, KeyError):  # written but not complete yet
                    port = None
            if port is not None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                        tags = json.loads(r.read())
                    return {run: sorted(t) for run, t in tags.items()}
                except OSError:  # not listening yet
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"TensorBoard did not serve {root} within {timeout:g} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if created:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(tmp / ".tensorboard-info", ignore_errors=True)
