"""The one training loop, `fit`, and what goes with it: evaluation, a per-row `History`, a
per-layer gradient-norm monitor, and the precision vocabulary ("fp32", "bf16", "fp16").

`fit` knows nothing about the task. What one step computes is a function you pass in:

    def step(model, batch):               # batch: whatever your loader yields, on the device
        x, y = batch
        return F.mse_loss(model(x), y)    # a loss, or (loss, {"name": value, ...}) to log more

The default step is classification (cross-entropy, and accuracy logged as train_acc).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lablib.core import compat, validate
from lablib.core.validate import positive_int, real

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_dtype(precision) -> torch.dtype:
    """'fp32' | 'bf16' | 'fp16' (or the torch dtype itself) -> the torch dtype."""
    if isinstance(precision, torch.dtype) and precision in PRECISIONS.values():
        return precision
    if isinstance(precision, str) and precision in PRECISIONS:
        return PRECISIONS[precision]
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (or the torch dtype), got {precision!r}")


def _device(device) -> torch.device:
    """`device` as a torch.device, or a ValueError naming it ('gpu', or 'cuda' on a machine without one)."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:0', 'mps' or a torch.device, got {device!r}") from None
    if d.type == "cuda" and (d.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} is not available: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return d



def autocast(device, precision="fp32"):
    """torch.autocast at a low precision; switched off (plain fp32) for 'fp32'."""
    dtype = precision_dtype(precision)
    return torch.autocast(device_type=_device(device).type, dtype=dtype, enabled=dtype != torch.float32)


class History:
    """The rows `fit` logged: history["val_acc"] is a list, one value per row."""

    def __init__(self):
        self.rows: list[dict] = []

    def append(self, **row) -> None:
        self.rows.append(row)

    def __getitem__(self, metric: str) -> list:
        if self.rows and metric not in self.rows[0]:
            raise KeyError(f"no metric {metric!r}; recorded: {', '.join(self.rows[0])}")
        return [r[metric] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def last(self, metric: str):
        if not self.rows:
            raise ValueError(f"History is empty: no {metric!r} recorded yet")
        return self[metric][-1]

    def best(self, metric: str = "val_acc"):
        if not self.rows:
            raise ValueError(f"History is empty: no {metric!r} recorded yet")
        values = [v for v in self[metric] if not math.isnan(v)]
        if not values:
            raise ValueError(f"every {metric!r} value in the History is NaN: there is no best one")
        return (min if "loss" in metric else max)(values)

    def __repr__(self) -> str:
        if not self.rows:
            return "History(empty)"
        keys = list(self.rows[0])
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
        lines = ["  ".join(f"{k:>10}" for k in keys)]
        lines += ["  ".join(f"{fmt(r[k]):>10}" for k in keys) for r in self.rows]
        return "\n".join(lines)


def grad_norms(model: nn.Module) -> dict[str, float]:
    """The L2 norm of each weight matrix/kernel's gradient (biases and norm scales skipped),
    keyed by layer name, in forward-definition order."""
    validate.module("model", model)
    return {
        name.removesuffix(".weight"): p.grad.detach().norm().item()
        for name, p in model.named_parameters()
        if p.grad is not None and p.ndim > 1
    }


class GradNormMonitor:
    """Collects `grad_norms(model)` after every backward pass that `fit` runs.

    monitor.history[layer] is a list (one value per step); monitor.mean() averages each layer.
    """

    def __init__(self, every: int = 1):
        self.every, self.steps = positive_int("every", every), 0
        self.history: dict[str, list[float]] = {}

    def record(self, model: nn.Module) -> None:
        self.steps += 1
        if (self.steps - 1) % self.every:
            return
        for name, value in grad_norms(model).items():
            self.history.setdefault(name, []).append(value)

    def mean(self) -> dict[str, float]:
        return {k: sum(v) / len(v) for k, v in self.history.items()}

    def first(self) -> dict[str, float]:
        return {k: v[0] for k, v in self.history.items()}


def make_optimizer(optimizer, model: nn.Module, lr: float, weight_decay: float = 0.0):
    """'adam' (Adam), 'adamw' (AdamW), 'sgd' (momentum 0.9), 'nesterov' (SGD, Nesterov momentum
    0.9), or a torch.optim.Optimizer you built yourself (returned as it is)."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    validate.module("model", model)
    real("lr", lr, 0, math.inf, low_open=True, high_open=True)
    real("weight_decay", weight_decay, 0, math.inf, high_open=True)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optimizer in ("sgd", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=optimizer == "nesterov", weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam', 'adamw', 'sgd', 'nesterov' or a torch.optim.Optimizer, got {optimizer!r}")


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def to_device(batch, device):
    """Tensors in a batch (a tensor, or lists / tuples / dicts of them) moved to `device`."""
    return _move(batch, _device(device))


def _move(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_move(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _move(v, device) for k, v in batch.items()}
    return batch


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Share of rows whose highest logit is the true class."""
    for name, t in (("logits", logits), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if logits.ndim != 2 or y.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, classes) and y (N,), got {tuple(logits.shape)} and {tuple(y.shape)}")
    if len(y) == 0:
        raise ValueError("logits and y are empty: there is no accuracy of no rows")
    _check_labels("y", y, logits.shape[1])
    return (logits.argmax(dim=1) == y).float().mean().item()


def _check_labels(name: str, y: torch.Tensor, classes: int, hint: str = "") -> None:
    """Class labels: integers in 0..classes-1 (one check, so one GPU sync)."""
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} must be integer class labels (int64), got {y.dtype}{hint}")
    if len(y) and bool(((y < 0) | (y >= classes)).any()):
        raise ValueError(f"{name} must be class labels in 0..{classes - 1} ({classes} classes), "
                         f"got {int(y.min())}..{int(y.max())}{hint}")


def classify(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
    """The default step: cross-entropy on (x, y), and the batch accuracy logged as `acc`."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"batch must be a pair (x, y) for the default step, got {_describe(batch)}: "
                         "for other batches pass your own step=")
    x, y = batch
    logits = model(x)
    _check_labels("batch labels y", y, logits.shape[-1], ": check the labels your train loader yields")
    loss = F.cross_entropy(logits.float(), y)
    return loss, {"acc": (logits.argmax(1) == y).float().mean()}


def optimizer_step(model: nn.Module, batch, opt, scaler, step: Callable = classify, precision="fp32",
                   grad_clip: float | None = None, monitor: GradNormMonitor | None = None) -> tuple[torch.Tensor, dict]:
    """One optimizer step: `step` under autocast, backward through the GradScaler (a no-op unless
    it is enabled, for fp16), optional clipping, the update. Returns the loss (detached) and logs."""
    _check_step_args(step, opt, scaler, grad_clip, monitor)
    device = _device_of(model)
    with autocast(device, precision):
        out = step(model, batch)
    loss, logs = out if isinstance(out, tuple) else (out, {})
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # loss x scale: small fp16 gradients stay above 0
    if monitor is not None or grad_clip is not None:
        scaler.unscale_(opt)  # norms and clipping must see the true gradients
    if monitor is not None:
        monitor.record(model)
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)  # skips the update if a gradient is inf/NaN (fp16 overflow)
    scaler.update()
    return loss.detach(), logs


def _describe(batch) -> str:
    return f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__


def _check_step_args(step, opt, scaler, grad_clip, monitor) -> None:
    if not callable(step):
        raise TypeError(f"step must be a function (model, batch) -> loss, got {type(step).__name__}")
    if not (hasattr(opt, "zero_grad") and hasattr(opt, "step")):
        raise TypeError(f"opt must be a torch.optim.Optimizer, got {type(opt).__name__}")
    if not all(hasattr(scaler, a) for a in ("scale", "unscale_", "step", "update")):
        raise TypeError(f"scaler must be a GradScaler (compat.grad_scaler), got {type(scaler).__name__}")
    if grad_clip is not None:
        real("grad_clip", grad_clip, 0, math.inf, low_open=True)
    if monitor is not None and not hasattr(monitor, "record"):
        raise TypeError(f"monitor must be a GradNormMonitor or None, got {type(monitor).__name__}")


@torch.no_grad()
def predict(model: nn.Module, loader, device=None, precision="fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels for every batch of `loader`, on the CPU, in loader order."""
    validate.module("model", model)
    if not hasattr(loader, "__iter__"):
        raise TypeError(f"loader must be an iterable of (x, y) batches, e.g. a DataLoader, got {type(loader).__name__}")
    device = _device(device) if device is not None else _device_of(model)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"loader must yield (x, y) batches, got {_describe(batch)}")
        x, y = batch
        with autocast(device, precision):
            out = model(x.to(device))
        logits.append(out.float().cpu())
        labels.append(y)
    model.train(was_training)
    if not logits:
        raise ValueError("loader yielded no batches")
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, loader, device=None, precision="fp32") -> dict[str, float]:
    """Mean cross-entropy loss and accuracy of `model` on `loader`."""
    logits, y = predict(model, loader, device, precision)
    _check_labels("the loader's labels", y, logits.shape[1])
    return {"loss": F.cross_entropy(logits, y).item(), "acc": accuracy(logits, y)}


def _schedule(schedule, opt, total: int):
    if schedule is None:
        return None
    if schedule == "cosine":  # decays to 0 over all steps
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if callable(schedule):  # schedule(k, total) -> the factor on the base learning rate at step k
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: schedule(k, total))
    raise ValueError(f"schedule must be None, 'cosine' or a function (step, total) -> factor, got {schedule!r}")


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _passes(train, epochs: int | None):
    """The batches of `epochs` passes over `train` (endless for None); stops at a pass that yields
    nothing, so an empty loader ends in "train ran out of batches", not in an endless loop."""
    for _ in range(epochs) if epochs else itertools.count():
        empty = True
        for batch in train:
            empty = False
            yield batch
        if empty:
            return


def fit(
    model: nn.Module,
    train,
    val=None,
    *,
    step: Callable = classify,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float = 1e-3,
    optimizer="adam",
    weight_decay: float = 0.0,
    schedule=None,
    precision="fp32",
    loss_scaling: bool | None = None,
    grad_clip: float | None = None,
    monitor: GradNormMonitor | None = None,
    update: Callable | None = None,
    log_every: int | None = None,
    evaluate_fn: Callable[[nn.Module], dict] | None = None,
    device=None,
    progress: bool = True,
    desc: str = "train",
) -> History:
    """Train `model` on the batches of `train` for `epochs` passes, or for `steps` steps (cycling
    through `train`, which may then be any iterable, e.g. an endless generator). Returns the History.

    step: step(model, batch) -> loss or (loss, logs); default `classify`. Logs are averaged
          between rows and appear as train_<name>.
    optimizer: 'adam' | 'adamw' | 'sgd' | 'nesterov' | a torch.optim.Optimizer.
    schedule: None (constant lr), 'cosine' (decays to 0), or f(step, total) -> lr factor.
    precision: 'fp32' | 'bf16' | 'fp16' (autocast; fp16 uses a GradScaler, on any device, unless
          loss_scaling=False; loss_scaling=True turns it on for any precision).
    update: the whole optimizer step, update(model, batch, opt, scaler) -> loss or (loss, logs),
          for a lab that teaches the step itself; by default `optimizer_step` runs `step`.
    log_every: steps per History row (default: one epoch, or steps // 10).
    val / evaluate_fn: each row adds val_loss and val_acc on the loader `val`, or the dict that
          evaluate_fn(model) returns. Evaluation never changes the training run's randomness.
    A loss that becomes NaN or infinite stops training with an error naming the step.
    """
    validate.module("model", model)
    if not hasattr(train, "__iter__"):
        raise TypeError(f"train must be a loader or an iterable of batches, got {type(train).__name__}")
    if val is not None and (not hasattr(val, "__iter__") or (hasattr(val, "__len__") and len(val) == 0)):
        raise ValueError(f"val must be a non-empty loader of (x, y) batches or None, got {val!r}")
    if (epochs is None) == (steps is None):
        raise ValueError(f"give exactly one of epochs or steps, got epochs={epochs!r}, steps={steps!r}")
    if epochs is not None:
        positive_int("epochs", epochs)
        if not hasattr(train, "__len__") or len(train) == 0:
            raise ValueError("train must be a non-empty loader when training for epochs (use steps= for a generator)")
        per_epoch = len(train)
        total = epochs * per_epoch
    else:
        total = positive_int("steps", steps)
        per_epoch = None
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if grad_clip is not None:
        real("grad_clip", grad_clip, 0, math.inf, low_open=True)
    if not callable(step):
        raise TypeError(f"step must be a function (model, batch) -> loss, got {type(step).__name__}")
    if monitor is not None and not hasattr(monitor, "record"):
        raise TypeError(f"monitor must be a GradNormMonitor or None, got {type(monitor).__name__}")
    if evaluate_fn is not None and not callable(evaluate_fn):
        raise TypeError(f"evaluate_fn must be a function model -> dict of metrics, got {type(evaluate_fn).__name__}")
    log_every = positive_int("log_every", log_every) if log_every is not None else per_epoch or max(1, total // 10)
    dtype = precision_dtype(precision)
    device = _device(device) if device is not None else _device_of(model)
    model.to(device)
    opt = make_optimizer(optimizer, model, lr, weight_decay)
    sched = _schedule(schedule, opt, total)
    if update is not None and not callable(update):
        raise TypeError(f"update must be a function (model, batch, opt, scaler) -> loss, got {type(update).__name__}")
    scaling = dtype == torch.float16 if loss_scaling is None else bool(loss_scaling)  # bf16 has fp32's range
    scaler = compat.grad_scaler(device.type, enabled=scaling)
    if epochs is not None or hasattr(train, "__len__"):  # pass after pass: a DataLoader reshuffles each one
        batches = _passes(train, epochs)
    else:  # a generator of batches
        batches = iter(train)
    history, window, start = History(), {"loss": []}, time.perf_counter()
    model.train()
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=True)
    for k in range(1, total + 1):
        try:
            batch = next(batches)
        except StopIteration:
            raise ValueError(f"train ran out of batches after {k - 1} of {total} steps") from None
        batch = _move(batch, device)
        if update is None:
            loss, logs = optimizer_step(model, batch, opt, scaler, step, dtype, grad_clip, monitor)
        else:
            out = update(model, batch, opt, scaler)
            loss, logs = out if isinstance(out, tuple) else (out, {})
        value = loss.item()
        if not math.isfinite(value):
            bar.close()
            raise FloatingPointError(f"the loss became {value} at step {k} of {total} (learning rate {opt.param_groups[0]['lr']:.3g}): "
                                     "try a smaller learning rate, gradient clipping, or check the data for NaN")
        if sched is not None:
            sched.step()
        window["loss"].append(value)
        for name, v in logs.items():
            window.setdefault(name, []).append(float(v.detach()) if isinstance(v, torch.Tensor) else float(v))
        bar.update(1)
        if k % log_every == 0 or k == total:
            row = {"epoch": math.ceil(k / per_epoch)} if per_epoch else {}
            row["step"] = k
            row["train_loss"] = _mean(window.pop("loss"))
            row |= {f"train_{name}": _mean(values) for name, values in window.items()}
            window = {"loss": []}
            if val is not None or evaluate_fn is not None:
                with torch.random.fork_rng(devices=[]):  # evaluation must not shift training's random draws
                    metrics = evaluate_fn(model) if evaluate_fn is not None else {
                        f"val_{m}": v for m, v in evaluate(model, val, device, dtype).items()}
                if not isinstance(metrics, dict):
                    raise TypeError(f"evaluate_fn must return a dict of metrics, got {type(metrics).__name__} {metrics!r}")
                model.train()
                row |= metrics
            row["lr"] = opt.param_groups[0]["lr"]
            row["seconds"] = time.perf_counter() - start
            history.append(**row)
            bar.set_postfix({m: f"{v:.3f}" for m, v in row.items() if m in ("train_loss", "val_acc")})
    bar.close()
    model.eval()
    return history
