"""Training scaffolding: `fit`, `evaluate`, `predict`, a per-epoch `History`, and a per-layer
gradient-norm monitor. The techniques themselves live in their own modules; here is only the
loop every lab would otherwise rewrite."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lablib import compat

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class History:
    """Per-epoch metrics of one `fit` run: history["val_acc"] is a list, one value per epoch."""

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
        return self[metric][-1]

    def best(self, metric: str = "val_acc"):
        values = [v for v in self[metric] if not math.isnan(v)]
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
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.every, self.steps = every, 0
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


def _make_optimizer(optimizer, model: nn.Module, lr: float, weight_decay: float):
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam', 'adamw', 'sgd' or a torch.optim.Optimizer, got {optimizer!r}")


def autocast(device: torch.device, amp: str | None):
    """torch.autocast for amp='bf16'/'fp16', a no-op context for amp=None."""
    if amp is None:
        return nullcontext()
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Share of rows whose highest logit is the true class."""
    if logits.ndim != 2 or y.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, classes) and y (N,), got {tuple(logits.shape)} and {tuple(y.shape)}")
    return (logits.argmax(dim=1) == y).float().mean().item()


@torch.no_grad()
def predict(model: nn.Module, loader, device=None, amp: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels for every batch of `loader`, on the CPU, in loader order."""
    device = torch.device(device) if device is not None else _device_of(model)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        with autocast(device, amp):
            out = model(x.to(device))
        logits.append(out.float().cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, loader, device=None, amp: str | None = None) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy of `model` on `loader`."""
    logits, y = predict(model, loader, device, amp)
    return {"loss": F.cross_entropy(logits, y).item(), "acc": accuracy(logits, y)}


def fit(
    model: nn.Module,
    train_loader,
    val_loader=None,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    optimizer="adam",
    weight_decay: float = 0.0,
    schedule: str | None = None,
    device=None,
    amp: str | None = None,
    grad_clip: float | None = None,
    monitor: GradNormMonitor | None = None,
    compute_loss: Callable | None = None,
    progress: bool = True,
    desc: str = "train",
) -> History:
    """Train `model` for `epochs` and return its History (train loss/acc, val loss/acc, lr, seconds).

    optimizer: 'adam' | 'adamw' | 'sgd' (momentum 0.9) | a torch.optim.Optimizer.
    schedule: None (constant lr) or 'cosine' (decays to 0 over all steps).
    amp: None | 'bf16' | 'fp16' (fp16 always uses a GradScaler, on any device; see lab 04).
    grad_clip: clip the total gradient norm to this value.
    monitor: a GradNormMonitor that records per-layer gradient norms each step.
    compute_loss: f(model, x, y) -> loss, to replace cross-entropy (train accuracy is then NaN).
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if schedule not in (None, "cosine"):
        raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip!r}")
    device = torch.device(device) if device is not None else _device_of(model)
    model.to(device)
    opt = _make_optimizer(optimizer, model, lr, weight_decay)
    total = epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total) if schedule == "cosine" else None
    use_scaler = amp == "fp16"  # fp16 gradients underflow without it; bf16 has fp32's range
    scaler = compat.grad_scaler(device.type, enabled=use_scaler)
    history = History()
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=True)
    for epoch in range(1, epochs + 1):
        model.train()
        start, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            with autocast(device, amp):
                if compute_loss is None:
                    logits = model(x)
                    loss = F.cross_entropy(logits.float(), y)
                    correct += (logits.argmax(1) == y).sum().item()
                else:
                    loss = compute_loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if monitor is not None or grad_clip is not None:
                scaler.unscale_(opt)  # norms and clipping must see the true gradients
            if monitor is not None:
                monitor.record(model)
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(opt)
            scaler.update()
            if sched is not None:
                sched.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
            bar.update(1)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen if compute_loss is None else float("nan"),
            "val_loss": float("nan"),
            "val_acc": float("nan"),
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
        }
        if val_loader is not None:
            metrics = evaluate(model, val_loader, device, amp)
            row["val_loss"], row["val_acc"] = metrics["loss"], metrics["acc"]
        history.append(**row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{row['val_acc']:.3f}")
    bar.close()
    return history
