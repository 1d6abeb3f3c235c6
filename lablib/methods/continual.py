"""Continual learning: the diagonal Fisher information, the EWC penalty, task builders and a replay
buffer (lablib.nets.ensemble trains K small models at once).

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

"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from lablib.core.validate import batch, integer, labels, module, positive_int, real, tensor_dict

__all__ = ["fisher_diagonal", "ewc_penalty", "merge_fishers", "permutation", "permute_pixels", "split_classes",
           "replay_buffer"]


# --- argument checks ------------------------------------------------------------------------------

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
    return tensor_dict(name, value, model="parameters")


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
    x = batch("x", x)
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
            y = labels("y", y, len(x), width)
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
    x = batch("x", x)
    if not isinstance(perm, torch.Tensor):
        raise TypeError(f"perm must be a torch.Tensor (a permutation of 0..d-1), got {type(perm).__name__}")
    d = math.prod(x.shape[1:])
    if perm.dtype != torch.long or perm.shape != (d,) or not torch.equal(perm.sort().values, torch.arange(d)):
        raise ValueError(f"perm must be a permutation of 0..{d - 1} (int64, shape ({d},)), got {perm.dtype} {tuple(perm.shape)}")
    return x.reshape(len(x), d)[:, perm].reshape(x.shape)


def split_classes(x: torch.Tensor, y: torch.Tensor, classes) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples of (x, y) whose label is one of `classes` (labels unchanged, order kept)."""
    x = batch("x", x)
    y = labels("y", y, len(x))
    cols = _class_list("classes", classes)
    keep = torch.isin(y, torch.tensor(cols))
    if not keep.any():
        raise ValueError(f"no example of (x, y) has a label in classes={cols}")
    return x[keep], y[keep]


def replay_buffer(x: torch.Tensor, y: torch.Tensor, per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A small class-balanced memory of an old task: `per_class` examples of each label present
    in y (all of a class that has fewer), drawn at random (seeded), in their original order."""
    x = batch("x", x)
    y = labels("y", y, len(x))
    per_class = positive_int("per_class", per_class)
    seed = integer("seed", seed, 0, 2**63 - 1)
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    index = torch.cat(keep).sort().values
    return x[index], y[index]
