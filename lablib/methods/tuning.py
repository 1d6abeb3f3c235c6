"""Hyper-parameters: the learning-rate range test, many small trials trained at once, and the
statistics that say whether one search strategy really beat another.

    lrs, losses = lr_range_test(model, x, y)             # one short run, the LR growing each step
    suggest_lr(lrs, losses)                               # where the loss falls fastest
    out = train_many(x, y, {"val": (xv, yv)}, lr=[1e-3, 1e-2, 1e-1], seed=[0, 1, 2])
    out["val_acc"]                                        # (3, epochs): one row per trial

`train_many` exists because a search runs hundreds of trials of a tiny model, and on a CPU a tiny
model's step is almost all overhead (Python and kernel launches, ~1 ms), not arithmetic. Stacking K
one-hidden-layer MLPs into one batched model (`torch.bmm`) pays that overhead once per step for all
K. Each member keeps its own initial weights, batch order and hyper-parameters, and its loss
gradient touches only its own weights, so the result is what K separate runs would give (a test
checks it against `nn.Linear` + `torch.optim`). This is the "model ensembling" idea of
`torch.func.stack_module_state`, written out with plain tensors.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from lablib.core.validate import integer, positive_int, real, series

OPTIMIZERS = ("sgd", "adamw")


def _xy(name: str, x, y, flatten: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be tensors (x, y), got {type(x).__name__} and {type(y).__name__}")
    if x.ndim < 2 or len(x) == 0 or not x.is_floating_point():
        raise ValueError(f"{name}: x must be a non-empty float batch (N, ...), got {x.dtype} {tuple(x.shape)}")
    if y.shape != x.shape[:1] or y.dtype != torch.long:
        raise ValueError(f"{name}: y must be int64 labels of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}")
    if y.min() < 0:
        raise ValueError(f"{name}: y must hold class labels >= 0, got {int(y.min())}")
    return (x.reshape(len(x), -1) if flatten else x), y


def _numbers(name: str, values) -> torch.Tensor:
    return torch.tensor(series(name, values), dtype=torch.float64)


# --- the learning-rate range test ---------------------------------------------------------------

def lr_range_test(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr_min: float = 1e-5, lr_max: float = 10.0,
                  steps: int = 100, batch_size: int = 32, momentum: float = 0.9, diverge: float = 4.0,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Train a copy of `model` with SGD for up to `steps` mini-batches while the learning rate grows
    geometrically from lr_min to lr_max; stop once the loss exceeds `diverge` x the lowest loss seen.
    Returns (lrs, losses): the rate and the raw training loss of every step taken. `model` is not
    changed. Batches are drawn from (x, y) with replacement-free shuffles, seeded."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    x, y = _xy("x, y", x, y, flatten=False)
    lr_min = real("lr_min", lr_min, 0, math.inf, low_open=True)
    lr_max = real("lr_max", lr_max, lr_min, math.inf, low_open=True, high_open=True)
    steps, batch_size = positive_int("steps", steps), positive_int("batch_size", batch_size)
    momentum = real("momentum", momentum, 0.0, 1.0, high_open=True)
    diverge = real("diverge", diverge, 1.0, math.inf, low_open=True)
    seed = integer("seed", seed, 0, 2**63 - 1)
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (a range needs two ends), got {steps}")
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr_min, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    lrs, losses, best, pos = [], [], math.inf, 0
    for k in range(steps):
        lr = lr_min * (lr_max / lr_min) ** (k / (steps - 1))
        for group in opt.param_groups:
            group["lr"] = lr
        if pos + batch_size > len(x):  # a fresh shuffle when the data runs out
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        lrs.append(lr)
        losses.append(loss.item())
        best = min(best, losses[-1])
        if not math.isfinite(losses[-1]) or losses[-1] > diverge * best:
            break
    return torch.tensor(lrs, dtype=torch.float64), torch.tensor(losses, dtype=torch.float64)


def _curve(lrs, losses) -> tuple[torch.Tensor, torch.Tensor]:
    lrs, losses = _numbers("lrs", lrs), _numbers("losses", losses)
    if len(lrs) != len(losses) or len(lrs) < 3:
        raise ValueError(f"lrs and losses must have the same length >= 3, got {len(lrs)} and {len(losses)}")
    if not bool((lrs > 0).all()) or not bool(torch.isfinite(lrs).all()):
        raise ValueError("lrs must be positive, finite learning rates")
    return lrs, losses


def smooth(losses, beta: float = 0.9) -> torch.Tensor:
    """Exponential moving average with the start-up bias removed (Adam's correction), so the first
    values are not pulled towards 0. Non-finite losses stay non-finite."""
    beta = real("beta", beta, 0.0, 1.0, high_open=True)
    losses = _numbers("losses", losses)
    out, avg = torch.empty_like(losses), 0.0
    for i, v in enumerate(losses.tolist()):
        avg = beta * avg + (1 - beta) * v
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def suggest_lr(lrs, losses, rule: str = "steepest", beta: float = 0.9) -> float:
    """The learning rate a range test suggests, read from the smoothed loss:
    'steepest': where the loss falls fastest per decade of learning rate;
    'min/10': a tenth of the rate at the lowest loss (before the loss blows up)."""
    lrs, losses = _curve(lrs, losses)
    s = smooth(losses, beta)
    finite = torch.isfinite(s)
    if int(finite.sum()) < 3:
        raise ValueError("losses must hold at least 3 finite values")
    lrs, s = lrs[finite], s[finite]
    if rule == "min/10":
        return float(lrs[int(torch.argmin(s))]) / 10
    if rule == "steepest":
        slope = (s[1:] - s[:-1]) / (lrs[1:].log10() - lrs[:-1].log10()).clamp_min(1e-12)
        return float(lrs[int(torch.argmin(slope))])
    raise ValueError(f"rule must be 'steepest' or 'min/10', got {rule!r}")


# --- many small trials at once --------------------------------------------------------------------

def _per_member(name: str, value, k: int) -> list:
    values = list(value) if isinstance(value, (list, tuple, torch.Tensor)) else [value] * k
    if len(values) != k:
        raise ValueError(f"{name} must be one value or a list of {k} (one per member), got {len(values)}")
    return [v.item() if isinstance(v, torch.Tensor) else v for v in values]


def _members(lr, momentum, weight_decay, hidden, seed) -> int:
    lengths = {len(v) for v in (lr, momentum, weight_decay, hidden, seed) if isinstance(v, (list, tuple, torch.Tensor))}
    if len(lengths) > 1:
        raise ValueError(f"lr, momentum, weight_decay, hidden and seed given as lists must have one length, got {sorted(lengths)}")
    k = lengths.pop() if lengths else 1
    if k == 0:
        raise ValueError("lr (or another per-member list) is empty: there is nothing to train")
    return k


def init_weights(features: int, hidden: int, classes: int, seed: int) -> list[torch.Tensor]:
    """One member's initial (W1, b1, W2, b2), drawn as nn.Linear draws them (uniform within
    1/sqrt(fan_in)) from its own seeded generator. W1 is (features, hidden): x @ W1."""
    features, hidden, classes = positive_int("features", features), positive_int("hidden", hidden), positive_int("classes", classes)
    gen = torch.Generator().manual_seed(integer("seed", seed, 0, 2**63 - 1))

    def uniform(shape, fan_in):
        return (torch.rand(shape, generator=gen) * 2 - 1) / math.sqrt(fan_in)

    return [uniform((features, hidden), features), uniform((hidden,), features),
            uniform((hidden, classes), hidden), uniform((classes,), hidden)]


def train_many(x: torch.Tensor, y: torch.Tensor, evals: dict | None = None, *, lr, momentum=0.0, weight_decay=0.0,
               hidden=64, seed=0, optimizer: str = "sgd", batch_size: int = 64, epochs: int = 10,
               on_epoch: Callable | None = None, record_steps: bool = False) -> dict[str, torch.Tensor]:
    """Train K one-hidden-layer MLPs (x -> hidden -> ReLU -> classes) at once, K = the length of
    whichever of lr, momentum, weight_decay, hidden, seed are lists (the others are shared).

    Each member has its own initial weights and batch order (from its seed) and its own
    hyper-parameters; `optimizer` is 'sgd' (torch.optim.SGD: L2 added to the gradient, heavy-ball
    momentum) or 'adamw' (decoupled weight decay; momentum is ignored). evals: {name: (x, y)} scored
    after every epoch. on_epoch(epoch, scores) -> None or K booleans: members marked False stop
    training (a pruned trial) and are dropped from the batch, so their compute is really saved.

    Returns {"<name>_acc", "<name>_loss": (K, epochs) per eval set, "train_loss": (K, epochs),
    "epochs": (K,) epochs each member trained, and with record_steps "step_loss": (K, steps)}.
    Values after a member stopped are NaN.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: see _train_many
    try:
        return _train_many(x, y, evals, lr=lr, momentum=momentum, weight_decay=weight_decay, hidden=hidden, seed=seed,
                           optimizer=optimizer, batch_size=batch_size, epochs=epochs, on_epoch=on_epoch,
                           record_steps=record_steps)
    finally:
        torch.set_num_threads(threads)


def _train_many(x, y, evals, *, lr, momentum, weight_decay, hidden, seed, optimizer, batch_size, epochs, on_epoch,
                record_steps) -> dict[str, torch.Tensor]:
    """train_many's body, run on one CPU thread: these matrices are so small that a second thread
    costs more in hand-offs than it saves, and on a busy machine a thread waiting for a core stalls
    every operation (measured on 2 cores under load: 1.4 ms per step on one thread, 77 ms on two)."""
    x, y = _xy("x, y", x, y)
    evals = {} if evals is None else evals
    if not isinstance(evals, dict):
        raise TypeError(f"evals must be a dict {{name: (x, y)}}, got {type(evals).__name__}")
    evals = {str(name): _xy(f"evals[{name!r}]", *pair) if isinstance(pair, (tuple, list)) and len(pair) == 2
             else _bad_eval(name) for name, pair in evals.items()}
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    batch_size, epochs = positive_int("batch_size", batch_size), positive_int("epochs", epochs)
    if not isinstance(record_steps, bool):
        raise TypeError(f"record_steps must be True or False, got {record_steps!r}")
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"on_epoch must be a function (epoch, scores) -> keep or None, got {type(on_epoch).__name__}")
    k = _members(lr, momentum, weight_decay, hidden, seed)
    lrs = [real("lr", v, 0, math.inf, low_open=True, high_open=True) for v in _per_member("lr", lr, k)]
    mus = [real("momentum", v, 0.0, 1.0, high_open=True) for v in _per_member("momentum", momentum, k)]
    wds = [real("weight_decay", v, 0.0, math.inf) for v in _per_member("weight_decay", weight_decay, k)]
    widths = [positive_int("hidden", v) for v in _per_member("hidden", hidden, k)]
    seeds = [integer("seed", v, 0, 2**63 - 1) for v in _per_member("seed", seed, k)]
    classes = int(max([int(y.max())] + [int(v[1].max()) for v in evals.values()])) + 1
    n, feats, width = len(x), x.shape[1], max(widths)
    for name, (ex, _) in evals.items():
        if ex.shape[1] != feats:
            raise ValueError(f"evals[{name!r}] has {ex.shape[1]} features per row, the training data {feats}")

    # Stacked parameters: member i's hidden units beyond widths[i] are masked to 0 (never used).
    params = [torch.zeros(k, feats, width), torch.zeros(k, 1, width), torch.zeros(k, width, classes), torch.zeros(k, 1, classes)]
    for i, (h, s) in enumerate(zip(widths, seeds, strict=True)):
        w1, b1, w2, b2 = init_weights(feats, h, classes, s)
        params[0][i, :, :h], params[1][i, 0, :h], params[2][i, :h], params[3][i, 0] = w1, b1, w2, b2
    mask = torch.zeros(k, 1, width)
    for i, h in enumerate(widths):
        mask[i, 0, :h] = 1.0
    for p in params:
        p.requires_grad_(True)
    hyper = {name: torch.tensor(v, dtype=torch.float32).view(k, 1, 1) for name, v in (("lr", lrs), ("mu", mus), ("wd", wds))}
    state = [[torch.zeros_like(p) for p in params] for _ in range(2)]  # SGD: [momentum]; AdamW: [m, v]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    alive = torch.arange(k)  # original index of each member still in the batch

    nan = float("nan")
    out = {f"{name}_{m}": torch.full((k, epochs), nan) for name in evals for m in ("acc", "loss")}
    out["train_loss"] = torch.full((k, epochs), nan)
    steps_per_epoch = math.ceil(n / batch_size)
    if record_steps:
        out["step_loss"] = torch.full((k, epochs * steps_per_epoch), nan)
    out["epochs"] = torch.zeros(k, dtype=torch.long)
    t = 0

    def forward(xb):  # xb: (members, batch, features) -> logits (members, batch, classes)
        hidden_out = torch.relu(torch.baddbmm(params[1], xb, params[0])) * mask
        return torch.baddbmm(params[3], hidden_out, params[2])

    for epoch in range(epochs):
        order = torch.stack([torch.randperm(n, generator=gens[i]) for i in alive.tolist()])
        running = torch.zeros(len(alive))
        for b in range(steps_per_epoch):
            idx = order[:, b * batch_size:(b + 1) * batch_size]
            logits = forward(x[idx])
            per_member = F.cross_entropy(logits.transpose(1, 2), y[idx], reduction="none").mean(1)
            # the sum's gradient w.r.t. member i's weights is the gradient of member i's own loss
            grads = torch.autograd.grad(per_member.sum(), params)
            t += 1
            with torch.no_grad():
                _update(params, grads, state, hyper, optimizer, t)
                running += per_member.detach()
                if record_steps:
                    out["step_loss"][alive, epoch * steps_per_epoch + b] = per_member.detach()
        out["train_loss"][alive, epoch] = running / steps_per_epoch
        out["epochs"][alive] += 1
        scores = {}
        with torch.no_grad():
            for name, (ex, ey) in evals.items():
                logits = forward(ex.expand(len(alive), *ex.shape))
                out[f"{name}_loss"][alive, epoch] = F.cross_entropy(logits.transpose(1, 2), ey.expand(len(alive), -1), reduction="none").mean(1)
                out[f"{name}_acc"][alive, epoch] = (logits.argmax(-1) == ey).float().mean(1)
                scores[name] = out[f"{name}_acc"][:, epoch].clone()
        if on_epoch is not None and epoch < epochs - 1:
            keep = on_epoch(epoch, scores)
            if keep is not None:
                keep = torch.as_tensor(keep, dtype=torch.bool).flatten()
                if len(keep) != k:
                    raise ValueError(f"on_epoch must return {k} booleans (one per member) or None, got {len(keep)}")
                stay = keep[alive]
                if not bool(stay.all()):
                    if not bool(stay.any()):
                        break
                    alive = alive[stay]
                    params = [p.detach()[stay].requires_grad_(True) for p in params]
                    state = [[s[stay] for s in group] for group in state]
                    hyper = {name: v[stay] for name, v in hyper.items()}
                    mask = mask[stay]
    return out


def _bad_eval(name):
    raise ValueError(f"evals[{name!r}] must be a pair (x, y) of tensors")


def _update(params, grads, state, hyper, optimizer: str, t: int) -> None:
    """One step of torch.optim.SGD (momentum, L2 in the gradient) or AdamW, per member rates."""
    lr, mu, wd = hyper["lr"], hyper["mu"], hyper["wd"]
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if optimizer == "sgd":
            g = g + wd * p
            buf = state[0][i]
            buf.mul_(mu).add_(g)  # the first step starts from 0, so buf = g, as in torch
            p.sub_(lr * buf)
        else:
            b1, b2, eps = 0.9, 0.999, 1e-8
            p.mul_(1 - lr * wd)  # decoupled weight decay
            m, v = state[0][i], state[1][i]
            m.mul_(b1).add_((1 - b1) * g)
            v.mul_(b2).add_((1 - b2) * g * g)
            denom = v.sqrt() / math.sqrt(1 - b2**t) + eps
            p.sub_(lr / (1 - b1**t) * m / denom)


# --- reading a search -----------------------------------------------------------------------------

def best_so_far(values, maximize: bool = True) -> list[float]:
    """The best value found up to each trial (NaN, e.g. a pruned trial, counts as no value)."""
    if not isinstance(maximize, bool):
        raise TypeError(f"maximize must be True or False, got {maximize!r}")
    out, best = [], math.nan
    for v in _numbers("values", values).tolist():
        if not math.isnan(v) and (math.isnan(best) or (v > best if maximize else v < best)):
            best = v
        out.append(best)
    return out


_Z = {0.05: 1.959964, 0.01: 2.575829}
_Z_POWER = {0.8: 0.841621, 0.9: 1.281552}


def seeds_needed(differences, alpha: float = 0.05, power: float = 0.8) -> float:
    """How many paired runs (seeds) a two-sided test at `alpha` needs to detect the mean of
    `differences` with probability `power`: ((z_alpha/2 + z_power) * sd / |mean|)^2, rounded up.
    inf when the mean difference is 0."""
    if alpha not in _Z or power not in _Z_POWER:
        raise ValueError(f"alpha must be one of {sorted(_Z)} and power one of {sorted(_Z_POWER)}, got {alpha}, {power}")
    d = _numbers("differences", differences)
    if len(d) < 2 or not bool(torch.isfinite(d).all()):
        raise ValueError(f"differences must hold >= 2 finite values, got {len(d)}")
    mean, sd = float(d.mean()), float(d.std())
    if mean == 0:
        return math.inf
    return float(math.ceil(((_Z[alpha] + _Z_POWER[power]) * sd / abs(mean)) ** 2))
