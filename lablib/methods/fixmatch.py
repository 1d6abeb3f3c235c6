"""FixMatch (Sohn et al. 2020): semi-supervised learning from a few labels and many unlabelled
images. The model labels a weakly augmented view of each unlabelled image itself; where it is
confident (probability >= tau) that label becomes the target for a strongly augmented view.

    loss = CE(labelled) + lambda_u * mean_over_unlabelled( [max p_weak >= tau] * CE(p_strong, argmax p_weak) )

FixMatch trains with the one training loop, `lablib.nets.train.fit`; this module gives it the
pieces that plug in:

    history = train.fit(model, fixmatch.batches(labelled, unlabelled, batch_size=32, mu=7, seed=0),
                        steps=400, step=fixmatch.fixmatch_step, lr=0.03, optimizer="nesterov",
                        weight_decay=5e-4, schedule=fixmatch.cosine_lr, log_every=25,
                        evaluate_fn=lambda m: fixmatch.evaluate(m, test_loader))

* `batches`: an endless, seeded stream of (x_l, y_l, x_u, y_u); y_u, the unlabelled images' true
  labels, is there only to *measure* the pseudo-labels, and no loss here reads it;
* `fixmatch_step` (and the baseline's `supervised_step`): step(model, batch) -> (loss, logs),
  logging the mask rate and the accuracy of the pseudo-labels used;
* `cosine_lr`: the paper's schedule, f(k, total) -> factor;
* `evaluate`: test accuracy and the top-class share (near 1 when the model has collapsed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from lablib.core import validate
from lablib.core.validate import integer, positive_int, real
from lablib.data import augment
from lablib.nets.train import predict


def check_tau(tau) -> float:
    return real("tau", tau, 0, 1, low_open=True)  # the confidence threshold, a probability


def check_mu(mu) -> int:
    if isinstance(mu, bool) or not isinstance(mu, int) or mu < 1:
        raise ValueError(f"mu (unlabelled images per labelled image in a batch) must be an int >= 1, got {mu!r}")
    return mu



def confident_pseudo_labels(weak_logits: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(pseudo-labels, mask): the top class of each row, and whether its probability reaches tau.
    Detached: a pseudo-label is a target, and no gradient may flow into it."""
    tau = check_tau(tau)
    if validate.tensor("weak_logits", weak_logits).ndim != 2:
        raise ValueError(f"weak_logits must be (batch, classes), got {tuple(weak_logits.shape)}")
    confidence, labels = F.softmax(weak_logits.detach(), dim=1).max(dim=1)
    return labels, confidence >= tau


def _same_shape(strong_logits: torch.Tensor, weak_logits: torch.Tensor) -> None:
    if validate.tensor("strong_logits", strong_logits).shape != validate.tensor("weak_logits", weak_logits).shape:
        raise ValueError(f"strong_logits {tuple(strong_logits.shape)} and weak_logits "
                         f"{tuple(weak_logits.shape)} must have the same shape")
    if len(weak_logits) == 0:  # the loss averages over the images: over none it is NaN
        raise ValueError("strong_logits and weak_logits are empty: there is no image to average over")


def unsupervised_loss(strong_logits: torch.Tensor, weak_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """FixMatch's unlabelled loss: cross-entropy of the strong view against the weak view's
    pseudo-label, kept only where the weak view is confident, averaged over *all* unlabelled
    images (so a batch with few confident images contributes little)."""
    _same_shape(strong_logits, weak_logits)
    pseudo, mask = confident_pseudo_labels(weak_logits, tau)
    per_image = F.cross_entropy(strong_logits, pseudo, reduction="none")
    return (per_image * mask.float()).mean()


def soft_unsupervised_loss(strong_logits: torch.Tensor, weak_logits: torch.Tensor, tau: float,
                           temperature: float = 0.5) -> torch.Tensor:
    """A soft-pseudo-label variant (as in UDA, Xie et al. 2020): the target of each confident row
    is the weak view's whole distribution sharpened at `temperature`, softmax(weak / T), not
    its top class. The mask is the same as FixMatch's (the unsharpened top probability >= tau),
    the average runs over all rows, and no gradient reaches weak_logits. As T -> 0 the target
    becomes the one-hot top class, and the loss becomes `unsupervised_loss`."""
    _same_shape(strong_logits, weak_logits)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    _, mask = confident_pseudo_labels(weak_logits, tau)
    targets = F.softmax(weak_logits.detach() / temperature, dim=1)
    per_image = -(targets * F.log_softmax(strong_logits, dim=1)).sum(dim=1)
    return (per_image * mask.float()).mean()


def _unpack(batch):
    """(x_l, y_l, x_u, y_u) from a batch of 4, or of 3 (no y_u: nothing to measure with)."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (3, 4):
        raise ValueError("batch must be (x_l, y_l, x_u, y_u) or (x_l, y_l, x_u), as fixmatch.batches yields")
    return (*batch, None) if len(batch) == 3 else tuple(batch)


def pseudo_label_accuracy(pseudo: torch.Tensor, mask: torch.Tensor, y_u: torch.Tensor | None) -> torch.Tensor:
    """Share of the pseudo-labels used (mask) that equal the true labels y_u: NaN when none is
    used or y_u is None. Measurement only: never part of a loss."""
    if validate.tensor("mask", mask).dtype != torch.bool or mask.shape != validate.tensor("pseudo", pseudo).shape:
        raise ValueError(f"mask must be a bool tensor shaped like pseudo {tuple(pseudo.shape)}, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    if y_u is not None and validate.tensor("y_u", y_u).shape != pseudo.shape:
        raise ValueError(f"y_u must be shaped like pseudo {tuple(pseudo.shape)}, got {tuple(y_u.shape)}")
    if y_u is None or not mask.any():
        return torch.tensor(float("nan"))
    return (pseudo[mask] == y_u[mask]).float().mean()


def fixmatch_step(model: nn.Module, batch, tau: float = 0.95, lambda_u: float = 1.0,
                  weak=augment.weak, strong=augment.strong) -> tuple[torch.Tensor, dict]:
    """One FixMatch step for train.fit: batch is (x_l, y_l, x_u, y_u) (y_u may be left out or
    None). Returns (loss, {"mask_rate", "pseudo_acc"}): the share of unlabelled images whose
    pseudo-label was used, and how many of those were right (NaN when none was used). y_u is
    read only for pseudo_acc: the loss never depends on it."""
    tau = check_tau(tau)
    if isinstance(lambda_u, bool) or not isinstance(lambda_u, (int, float)) or not lambda_u >= 0:
        raise ValueError(f"lambda_u (the unlabelled loss weight) must be a number >= 0, got {lambda_u!r}")
    _views(weak=weak, strong=strong)
    x_l, y_l, x_u, y_u = _unpack(batch)
    # 1. supervised: ordinary cross-entropy on weakly augmented labelled images
    supervised = _labelled_loss(model, x_l, y_l, weak)
    # 2. pseudo-labels from the weak view. No gradient: they are targets, and a graph for this
    #    pass would only cost memory and time
    with torch.no_grad():
        weak_logits = model(weak(x_u))
    # 3. the strong view must predict the confident pseudo-labels
    strong_logits = model(strong(x_u))
    loss = supervised + lambda_u * unsupervised_loss(strong_logits, weak_logits, tau)
    pseudo, mask = confident_pseudo_labels(weak_logits, tau)
    return loss, {"mask_rate": mask.float().mean(), "pseudo_acc": pseudo_label_accuracy(pseudo, mask, y_u)}


def _views(**augmentations) -> None:
    for name, f in augmentations.items():
        if not callable(f):
            raise TypeError(f"{name} must be an augmentation, a function images -> images, got {type(f).__name__}")


def _labelled_loss(model: nn.Module, x_l: torch.Tensor, y_l: torch.Tensor, weak) -> torch.Tensor:
    """Cross-entropy on the weakly augmented labelled images, with y_l checked against the
    model's classes first (out of range, cross_entropy fails deep inside torch, on a GPU with a
    device-side assert)."""
    logits = model(weak(x_l))
    classes = logits.shape[1]
    if validate.tensor("y_l", y_l).is_floating_point() or not bool(((y_l >= 0) & (y_l < classes)).all()):
        raise ValueError(f"y_l (the batch's labels) must be class indices in [0, {classes}), "
                         f"got {y_l.dtype} values from {y_l.min().item()} to {y_l.max().item()}")
    return F.cross_entropy(logits, y_l)


def supervised_step(model: nn.Module, batch, weak=augment.weak) -> torch.Tensor:
    """The baseline's step for train.fit: cross-entropy on the weakly augmented labelled images
    of a `batches` batch; the unlabelled part is ignored."""
    _views(weak=weak)
    x_l, y_l, _, _ = _unpack(batch)
    return _labelled_loss(model, x_l, y_l, weak)


def batches(labelled, unlabelled, batch_size: int = 32, mu: int = 7, seed: int = 0) -> Iterator[tuple]:
    """An endless stream of FixMatch batches (x_l, y_l, x_u, y_u): batch_size labelled images and
    mu * batch_size unlabelled ones, each drawn at random (with replacement) by a generator
    seeded with `seed`, so a run is repeatable. `labelled` and `unlabelled` have .x and .y (an
    ImageSet). y_u, the unlabelled images' true labels, is for measuring pseudo-labels only."""
    batch_size, mu = positive_int("batch_size", batch_size), check_mu(mu)
    for name, ds in (("labelled", labelled), ("unlabelled", unlabelled)):
        if not hasattr(ds, "x") or not hasattr(ds, "y") or len(ds.x) == 0:
            raise ValueError(f"{name} must be a non-empty image set with .x and .y, got {type(ds).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return _stream(labelled, unlabelled, batch_size, mu, seed)


def _stream(labelled, unlabelled, batch_size, mu, seed):
    gen = torch.Generator().manual_seed(seed)
    while True:
        i = torch.randint(len(labelled.x), (batch_size,), generator=gen)
        j = torch.randint(len(unlabelled.x), (mu * batch_size,), generator=gen)
        yield labelled.x[i], labelled.y[i], unlabelled.x[j], unlabelled.y[j]


def evaluate(model: nn.Module, loader) -> dict[str, float]:
    """For train.fit's evaluate_fn: test_acc, and top_class_share, the share of the loader's
    images predicted as the most predicted class (near 1 when the model calls everything the
    same class, as a self-training run that has collapsed does)."""
    logits, y = predict(model, loader)
    predicted = logits.argmax(dim=1)
    return {"test_acc": (predicted == y).float().mean().item(),
            "top_class_share": torch.bincount(predicted).max().item() / len(y)}


def mask_rate_curve(confidence: torch.Tensor, correct: torch.Tensor, taus) -> list[dict]:
    """For each tau: the mask rate (share of images with confidence >= tau) and the accuracy of
    the pseudo-labels so kept (nan when none is kept). `confidence` is each image's top
    probability, `correct` whether its top class is right (bool), e.g. on a labelled hold-out."""
    if validate.tensor("confidence", confidence).shape != validate.tensor("correct", correct).shape or confidence.ndim != 1:
        raise ValueError(f"confidence and correct must be 1-d and the same shape, got "
                         f"{tuple(confidence.shape)} and {tuple(correct.shape)}")
    if not bool(((confidence >= 0) & (confidence <= 1)).all()):
        raise ValueError("confidence must hold probabilities in [0, 1] (softmax outputs, not logits)")
    if isinstance(taus, str) or not isinstance(taus, Iterable):
        raise TypeError(f"taus must be a list of thresholds, got {type(taus).__name__}")
    rows = []
    for tau in taus:
        kept = confidence >= check_tau(tau)
        acc = correct[kept].float().mean().item() if kept.any() else float("nan")
        rows.append({"tau": float(tau), "mask_rate": kept.float().mean().item(), "pseudo_acc": acc})
    return rows


def pick_tau(confidence: torch.Tensor, correct: torch.Tensor, taus, target: float = 0.99) -> float | None:
    """The smallest tau in `taus` whose kept pseudo-labels are at least `target` correct: as
    many pseudo-labels as possible at that purity. None when no tau reaches it."""
    real("target", target, 0, 1, low_open=True)  # an accuracy
    good = [r["tau"] for r in mask_rate_curve(confidence, correct, taus) if r["pseudo_acc"] >= target]
    return min(good) if good else None


def cosine_lr(step: int, total: int) -> float:
    """FixMatch's schedule as train.fit's schedule=: the factor cos(7 pi k / 16 K) on the
    learning rate at step k of K; it ends at ~20 %, not 0."""
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError(f"total must be a positive int (the number of steps), got {total!r}")
    integer("step", step, 0)
    return math.cos(7 * math.pi * step / (16 * total))
