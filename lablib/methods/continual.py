"""Continual learning: the diagonal Fisher information, the EWC penalty, task builders, a replay
buffer, and K small models trained at once.

    fisher = fisher_diagonal(model, x_a, y_a)            # after task A: F_i = E[(d log p / d theta_i)^2]
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = F.cross_entropy(model(x_b), y_b) + ewc_penalty(model, fisher, anchor, lam=1e3)

Elastic weight consolidation (Kirkpatrick et al., 2017) keeps the weights that mattered for task A
near their values after A while the model learns task B: the penalty is (lam / 2) * sum_i F_i *
(theta_i - theta*_i)^2, a quadratic (Laplace) approximation of task A's log-likelihood around
theta*, with the diagonal of the Fisher information as its curvature.

`fisher_diagonal` takes per-sample gradients with torch.func (`vmap(grad(...))` over the batch),
so it costs about one backward pass per chunk rather than one per example. With labels `y` it is
the *empirical* Fisher (the gradients of the true labels); with y=None it is the Fisher itself,
the expectation over the model's own predictive distribution, computed exactly (one gradient per
class, weighted by its probability).

`Ensemble` stacks K models of one architecture (`torch.func.stack_module_state`) and runs them
with `vmap`, so K tiny models train in one step for the price of one larger step; each member's
loss touches only its own weights, and an element-wise optimizer (SGD, Adam) then updates each
member exactly as K separate optimizers would.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from lablib.core.validate import integer, module, positive_int, real

__all__ = ["fisher_diagonal", "ewc_penalty", "merge_fishers", "permutation", "permute_pixels", "split_classes",
           "replay_buffer", "Ensemble", "member_batches"]


# --- argument checks ------------------------------------------------------------------------------

def _features(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, ...), got {type(x).__name__}")
    if x.ndim < 2 or len(x) == 0 or not x.is_floating_point():
        raise ValueError(f"{name} must be a non-empty float batch (N, ...), got {x.dtype} {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def _labels(name: str, y, n: int | None = None, classes: int | None = None) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int64 class labels, got {type(y).__name__}")
    if y.dtype != torch.long or y.ndim != 1 or (n is not None and len(y) != n):
        want = f"({n},)" if n is not None else "(N,)"
        raise ValueError(f"{name} must be int64 labels of shape {want}, got {y.dtype} {tuple(y.shape)}")
    if len(y) and (int(y.min()) < 0 or (classes is not None and int(y.max()) >= classes)):
        top = f"..{classes - 1}" if classes is not None else " and up"
        raise ValueError(f"{name} must hold class labels 0{top}, got {int(y.min())}..{int(y.max())}")
    return y


def _class_list(name: str, classes) -> list[int]:
    if isinstance(classes, torch.Tensor):
        if classes.ndim != 1 or classes.dtype.is_floating_point or classes.dtype == torch.bool:
            raise TypeError(f"{name} must be a list of int class labels, got a {classes.dtype} tensor {tuple(classes.shape)}")
        classes = classes.tolist()
    if isinstance(classes, (str, bytes, Mapping)) or not hasattr(classes, "__iter__"):
        raise TypeError(f"{name} must be a list of int class labels, got {type(classes).__name__}")
    out = [integer(f"{name}[{i}]", c, 0) for i, c in enumerate(classes)]
    if not out:
        raise ValueError(f"{name} must name at least one class")
    if len(set(out)) < len(out):
        raise ValueError(f"{name} must be distinct classes, got {out}")
    return out


def _tensor_dict(name: str, value) -> dict[str, torch.Tensor]:
    if isinstance(value, nn.Module):
        return dict(value.named_parameters())
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of name -> tensor (or a model), got {type(value).__name__}")
    for key, t in value.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{key!r}] must be a torch.Tensor, got {type(t).__name__}")
    return dict(value)


def _same_keys_and_shapes(names: tuple[str, str], a: dict, b: dict) -> None:
    if set(a) != set(b):
        missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"{names[1]} must have the keys of {names[0]}: missing {missing}, extra {extra}")
    for key in a:
        if a[key].shape != b[key].shape:
            raise ValueError(f"{names[1]}[{key!r}] has shape {tuple(b[key].shape)}, "
                             f"but {names[0]}[{key!r}] has {tuple(a[key].shape)}")


# --- the Fisher and the penalty -------------------------------------------------------------------

def fisher_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, classes=None, *,
                    batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The diagonal of the Fisher information of `model` on inputs `x`, per parameter (a dict
    name -> tensor of the parameter's shape, detached): the mean over examples of the squared
    per-example gradient of log p(label | x).

    y: the labels. Given, this is the *empirical* Fisher (the true labels' gradients). None: the
       Fisher of the model's own predictive distribution, the expectation over every class c of
       p(c | x) * (d log p(c | x) / d theta)^2, computed exactly.
    classes: the output columns that form the task's head (task-incremental learning with one
       shared output layer): log p is the softmax over those columns only, and y then holds
       the original labels, each one of `classes`. None: every output column.
    batch_size: examples per vmap chunk (memory, not the result).
    The model runs in eval mode (dropout off) and is left in the mode it was in; only parameters
    that require grad get an entry.
    """
    module("model", model)
    x = _features("x", x)
    batch_size = positive_int("batch_size", batch_size)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no parameters that require grad: there is no Fisher to compute")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:1])
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise ValueError(f"model must return logits (N, classes), got {type(out).__name__} "
                             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}")
        width = out.shape[1]
        cols = None
        if classes is not None:
            cols = _class_list("classes", classes)
            if max(cols) >= width:
                raise ValueError(f"classes names output column {max(cols)}, but the model has {width} outputs")
        if y is not None:
            y = _labels("y", y, len(x), width)
            if cols is not None:
                position = torch.full((width,), -1, dtype=torch.long)
                position[torch.tensor(cols)] = torch.arange(len(cols))
                y = position[y]
                if (y < 0).any():
                    raise ValueError(f"y holds labels outside classes={cols}")
        index = torch.tensor(cols) if cols is not None else None

        def log_probs(p, xi):
            logits = functional_call(model, p, (xi.unsqueeze(0),))[0]
            if index is not None:
                logits = logits[index]
            return torch.log_softmax(logits, dim=-1)

        def log_p(p, xi, yi):  # a label can't index inside vmap (logp[yi] calls .item()): gather it
            return log_probs(p, xi).gather(0, yi.unsqueeze(0)).squeeze(0)

        per_example = vmap(grad(log_p), in_dims=(None, 0, 0))
        total = {n: torch.zeros_like(p) for n, p in params.items()}
        k = len(cols) if cols is not None else width
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            if y is not None:
                g = per_example(params, xb, y[start:start + batch_size])
                for n in total:
                    total[n] += (g[n] ** 2).sum(0)
            else:
                with torch.no_grad():
                    probs = vmap(log_probs, in_dims=(None, 0))(params, xb).exp()  # (B, k)
                for c in range(k):
                    g = per_example(params, xb, torch.full((len(xb),), c, dtype=torch.long))
                    for n in total:
                        w = probs[:, c].reshape(-1, *([1] * (g[n].ndim - 1)))
                        total[n] += (w * g[n] ** 2).sum(0)
    finally:
        model.train(was_training)
    return {n: (t / len(x)).detach() for n, t in total.items()}


def ewc_penalty(params, fisher, anchor, lam: float) -> torch.Tensor:
    """The EWC penalty (lam / 2) * sum_i F_i * (theta_i - theta*_i)^2 over the parameters that
    `fisher` names. params: a dict name -> tensor (or the model itself); fisher and anchor (the
    weights theta* after the old task): dicts with the same keys and shapes. Returns a scalar
    tensor that carries the gradient lam * F * (theta - theta*) to `params`."""
    params = _tensor_dict("params", params)
    fisher, anchor = _tensor_dict("fisher", fisher), _tensor_dict("anchor", anchor)
    lam = real("lam", lam, 0, math.inf, high_open=True)
    if not fisher:
        raise ValueError("fisher must name at least one parameter")
    _same_keys_and_shapes(("fisher", "anchor"), fisher, anchor)
    for key, f in fisher.items():
        if key not in params:
            raise ValueError(f"fisher names {key!r}, which is not in params (params: {', '.join(sorted(params))})")
        if params[key].shape != f.shape:
            raise ValueError(f"fisher[{key!r}] has shape {tuple(f.shape)}, but params[{key!r}] has {tuple(params[key].shape)}")
        if (f < 0).any() or not torch.isfinite(f).all():
            raise ValueError(f"fisher[{key!r}] must be finite and >= 0 (a Fisher diagonal is a mean of squares)")
        if not torch.isfinite(anchor[key]).all():
            raise ValueError(f"anchor[{key!r}] holds NaN or infinite values")
    total = sum((fisher[k] * (params[k] - anchor[k]) ** 2).sum() for k in fisher)
    return lam / 2 * total


def merge_fishers(old, new, gamma: float = 1.0) -> dict[str, torch.Tensor]:
    """Online EWC (Schwarz et al., 2018): one running Fisher instead of one per task,
    gamma * old + new. gamma = 1 adds the tasks' Fishers up (EWC with one penalty per task, when the
    anchors coincide); gamma < 1 lets old tasks fade."""
    old, new = _tensor_dict("old", old), _tensor_dict("new", new)
    gamma = real("gamma", gamma, 0.0, 1.0)
    _same_keys_and_shapes(("old", "new"), old, new)
    return {k: gamma * old[k] + new[k] for k in old}


# --- tasks ----------------------------------------------------------------------------------------

def permutation(features: int, seed: int = 0) -> torch.Tensor:
    """A fixed random permutation of `features` positions (seeded): the pixel order of a
    permuted task."""
    features = positive_int("features", features)
    seed = integer("seed", seed, 0, 2**63 - 1)
    return torch.randperm(features, generator=torch.Generator().manual_seed(seed))


def permute_pixels(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Every example of `x` (N, ...) with its features (pixels, flattened) reordered by `perm`;
    same shape as `x`. A permuted task: the same images and labels, scrambled the same way."""
    x = _features("x", x)
    if not isinstance(perm, torch.Tensor):
        raise TypeError(f"perm must be a torch.Tensor (a permutation of 0..d-1), got {type(perm).__name__}")
    d = math.prod(x.shape[1:])
    if perm.dtype != torch.long or perm.shape != (d,) or not torch.equal(perm.sort().values, torch.arange(d)):
        raise ValueError(f"perm must be a permutation of 0..{d - 1} (int64, shape ({d},)), got {perm.dtype} {tuple(perm.shape)}")
    return x.reshape(len(x), d)[:, perm].reshape(x.shape)


def split_classes(x: torch.Tensor, y: torch.Tensor, classes) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples of (x, y) whose label is one of `classes` (labels unchanged, order kept)."""
    x = _features("x", x)
    y = _labels("y", y, len(x))
    cols = _class_list("classes", classes)
    keep = torch.isin(y, torch.tensor(cols))
    if not keep.any():
        raise ValueError(f"no example of (x, y) has a label in classes={cols}")
    return x[keep], y[keep]


def replay_buffer(x: torch.Tensor, y: torch.Tensor, per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A small class-balanced memory of an old task: `per_class` examples of each label present
    in y (all of a class that has fewer), drawn at random (seeded), in their original order."""
    x = _features("x", x)
    y = _labels("y", y, len(x))
    per_class = positive_int("per_class", per_class)
    seed = integer("seed", seed, 0, 2**63 - 1)
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    index = torch.cat(keep).sort().values
    return x[index], y[index]


# --- K models at once -----------------------------------------------------------------------------

class Ensemble(nn.Module):
    """K models of one architecture, stacked and run together (torch.func.stack_module_state +
    vmap): forward(x) takes x of shape (K, B, ...), one batch per member (x.expand(K, ...) shares
    one), and returns (K, B, outputs). `params()` gives the stacked parameters by the
    single model's names (each of shape (K, ...)); `member(k)` a separate copy of member k."""

    def __init__(self, models):
        super().__init__()
        if isinstance(models, nn.Module) or not isinstance(models, (list, tuple)) or not models:
            raise TypeError(f"models must be a non-empty list of nn.Module, got {type(models).__name__}")
        for i, m in enumerate(models):
            module(f"models[{i}]", m)
        shapes = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in models]
        for i, s in enumerate(shapes[1:], start=1):
            if s != shapes[0]:
                raise ValueError(f"models[{i}] has other parameters than models[0]: all members need one architecture")
        if not shapes[0]:
            raise ValueError("models[0] has no parameters")
        params, buffers = stack_module_state(list(models))
        self.names = list(params)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach().clone()) for n in self.names])
        self.buffer_names = list(buffers)
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"buffer_{i}", buffers[n].clone())
        self._template = [copy.deepcopy(models[0])]  # in a list: not a submodule (its weights are not ours)
        self.size = len(models)

    def __len__(self) -> int:
        return self.size

    def params(self) -> dict[str, torch.Tensor]:
        """The stacked parameters, name -> (K, ...) tensor (the optimizer's leaves)."""
        return dict(zip(self.names, self.stacked, strict=True))

    def _buffers_dict(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, f"buffer_{i}") for i, n in enumerate(self.buffer_names)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 2 or x.shape[0] != self.size:
            raise ValueError(f"x must hold one batch per member, shape ({self.size}, B, ...), got {tuple(x.shape)}: "
                             f"for one batch shared by all, pass x.expand({self.size}, *x.shape)")
        base = self._template[0]

        def one(p, b, xi):
            return functional_call(base, (p, b), (xi,))

        return vmap(one)(self.params(), self._buffers_dict(), x)

    def member(self, k: int) -> nn.Module:
        """A separate copy of member k, with its current weights (a plain model)."""
        k = integer("k", k, -self.size, self.size - 1) % self.size
        model = copy.deepcopy(self._template[0])
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(self.params()[n][k])
            for n, b in model.named_buffers():
                if n in self.buffer_names:
                    b.copy_(self._buffers_dict()[n][k])
        return model


def member_batches(data, batch_size: int, seed: int = 0, replay=None,
                   replay_fraction: float = 0.5) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches for K members trained at once: yields (x, y) of shapes (K, B, ...) and (K, B).

    data: one (x, y) per member (its own task; sizes may differ; every x of one example shape).
    replay: None, or one (x, y) or None per member: a member with a buffer draws
        round(replay_fraction * B) of each batch from it, the rest from its data.
    Examples are drawn uniformly with replacement (seeded), each member from its own sets.
    """
    if not isinstance(data, (list, tuple)) or not data:
        raise TypeError(f"data must be a non-empty list of (x, y) pairs, one per member, got {type(data).__name__}")
    batch_size = positive_int("batch_size", batch_size)
    seed = integer("seed", seed, 0, 2**63 - 1)
    fraction = real("replay_fraction", replay_fraction, 0.0, 1.0)
    if replay is None:
        replay = [None] * len(data)
    if not isinstance(replay, (list, tuple)) or len(replay) != len(data):
        raise ValueError(f"replay must be None or a list of {len(data)} entries ((x, y) or None), one per member")

    def pair(name, p):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise TypeError(f"{name} must be a pair (x, y), got {type(p).__name__}")
        x = _features(f"{name} x", p[0])
        return x, _labels(f"{name} y", p[1], len(x))

    sets = [pair(f"data[{i}]", p) for i, p in enumerate(data)]
    memories = [None if r is None else pair(f"replay[{i}]", r) for i, r in enumerate(replay)]
    shape = sets[0][0].shape[1:]
    named = [(f"data[{i}]", p) for i, p in enumerate(sets)] + [(f"replay[{i}]", m) for i, m in enumerate(memories) if m is not None]
    for name, (x, _) in named:
        if x.shape[1:] != shape:
            raise ValueError(f"{name} x has examples of shape {tuple(x.shape[1:])}, but data[0]'s are {tuple(shape)}: "
                             "every member's examples must have one shape")
    return _batches(sets, memories, batch_size, round(fraction * batch_size), seed)


def _batches(sets, memories, batch_size, n_old, seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        xs, ys = [], []
        for (x, y), memory in zip(sets, memories, strict=True):
            if memory is None:
                idx = torch.randint(0, len(x), (batch_size,), generator=g)
                xs.append(x[idx])
                ys.append(y[idx])
            else:
                idx = torch.randint(0, len(x), (batch_size - n_old,), generator=g)
                old = torch.randint(0, len(memory[0]), (n_old,), generator=g)
                xs.append(torch.cat([x[idx], memory[0][old]]))
                ys.append(torch.cat([y[idx], memory[1][old]]))
        yield torch.stack(xs), torch.stack(ys)
