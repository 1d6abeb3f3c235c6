"""FixMatch (Sohn et al. 2020): semi-supervised learning from a few labels and many unlabelled
images. The model labels a weakly augmented view of each unlabelled image itself; where it is
confident (probability >= tau) that label becomes the target for a strongly augmented view.

    loss = CE(labelled) + lambda_u * mean_over_unlabelled( [max p_weak >= tau] * CE(p_strong, argmax p_weak) )
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lablib.core.validate import positive_int
from lablib.data import augment
from lablib.nets.train import History, predict


def check_tau(tau) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau <= 1:
        raise ValueError(f"tau (the confidence threshold) must be a probability in (0, 1], got {tau!r}")
    return float(tau)


def check_mu(mu) -> int:
    if isinstance(mu, bool) or not isinstance(mu, int) or mu < 1:
        raise ValueError(f"mu (unlabelled images per labelled image in a batch) must be an int >= 1, got {mu!r}")
    return mu


def confident_pseudo_labels(weak_logits: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(pseudo-labels, mask): the top class of each row, and whether its probability reaches tau.
    Detached: a pseudo-label is a target, and no gradient may flow into it."""
    tau = check_tau(tau)
    if weak_logits.ndim != 2:
        raise ValueError(f"weak_logits must be (batch, classes), got {tuple(weak_logits.shape)}")
    confidence, labels = F.softmax(weak_logits.detach(), dim=1).max(dim=1)
    return labels, confidence >= tau


def unsupervised_loss(strong_logits: torch.Tensor, weak_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """FixMatch's unlabelled loss: cross-entropy of the strong view against the weak view's
    pseudo-label, kept only where the weak view is confident, averaged over *all* unlabelled
    images (so a batch with few confident images contributes little)."""
    if strong_logits.shape != weak_logits.shape:
        raise ValueError(f"strong_logits {tuple(strong_logits.shape)} and weak_logits "
                         f"{tuple(weak_logits.shape)} must have the same shape")
    pseudo, mask = confident_pseudo_labels(weak_logits, tau)
    per_image = F.cross_entropy(strong_logits, pseudo, reduction="none")
    return (per_image * mask.float()).mean()


@dataclass
class Step:
    """One training step's loss, and for the unlabelled batch the pseudo-labels and which of
    them were used (mask), so a loop can log the mask rate and the pseudo-labels' accuracy."""

    loss: torch.Tensor
    pseudo: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def fixmatch_step(model: nn.Module, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, *,
                  tau: float = 0.95, lambda_u: float = 1.0, weak=augment.weak, strong=augment.strong) -> Step:
    """The loss of one FixMatch step on a labelled batch (x_l, y_l) and an unlabelled batch x_u
    (mu times larger). The caller does backward() and the optimizer step."""
    tau = check_tau(tau)
    if not lambda_u >= 0:
        raise ValueError(f"lambda_u (the unlabelled loss weight) must be >= 0, got {lambda_u!r}")
    # 1. supervised: ordinary cross-entropy on weakly augmented labelled images
    supervised = F.cross_entropy(model(weak(x_l)), y_l)
    # 2. pseudo-labels from the weak view. No gradient: they are targets, and a graph for this
    #    pass would only cost memory and time
    with torch.no_grad():
        weak_logits = model(weak(x_u))
    # 3. the strong view must predict the confident pseudo-labels
    strong_logits = model(strong(x_u))
    loss = supervised + lambda_u * unsupervised_loss(strong_logits, weak_logits, tau)
    pseudo, mask = confident_pseudo_labels(weak_logits, tau)
    return Step(loss, pseudo, mask)


def supervised_step(model: nn.Module, x_l: torch.Tensor, y_l: torch.Tensor, x_u=None, *, weak=augment.weak) -> Step:
    """The baseline: cross-entropy on weakly augmented labelled images; x_u is ignored."""
    return Step(F.cross_entropy(model(weak(x_l)), y_l))


def mask_rate_curve(confidence: torch.Tensor, correct: torch.Tensor, taus) -> list[dict]:
    """For each tau: the mask rate (share of images with confidence >= tau) and the accuracy of
    the pseudo-labels so kept (nan when none is kept). `confidence` is each image's top
    probability, `correct` whether its top class is right (bool), e.g. on a labelled hold-out."""
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError(f"confidence and correct must be 1-d and the same shape, got "
                         f"{tuple(confidence.shape)} and {tuple(correct.shape)}")
    rows = []
    for tau in taus:
        kept = confidence >= check_tau(tau)
        acc = correct[kept].float().mean().item() if kept.any() else float("nan")
        rows.append({"tau": float(tau), "mask_rate": kept.float().mean().item(), "pseudo_acc": acc})
    return rows


def pick_tau(confidence: torch.Tensor, correct: torch.Tensor, taus, target: float = 0.99) -> float | None:
    """The smallest tau in `taus` whose kept pseudo-labels are at least `target` correct: as
    many pseudo-labels as possible at that purity. None when no tau reaches it."""
    if not 0 < target <= 1:
        raise ValueError(f"target must be an accuracy in (0, 1], got {target!r}")
    good = [r["tau"] for r in mask_rate_curve(confidence, correct, taus) if r["pseudo_acc"] >= target]
    return min(good) if good else None


def cosine_lr(step: int, total: int) -> float:
    """FixMatch's schedule: the learning rate times cos(7 pi k / 16 K); it ends at ~20 %, not 0."""
    return math.cos(7 * math.pi * step / (16 * total))


def train(
    model: nn.Module,
    labelled,
    unlabelled,
    test_loader,
    *,
    step_fn: Callable[..., Step] = fixmatch_step,
    steps: int = 400,
    batch_size: int = 32,
    mu: int = 7,
    lr: float = 0.03,
    weight_decay: float = 5e-4,
    optimizer: str = "sgd",
    eval_every: int = 50,
    seed: int = 0,
    progress: bool = True,
    desc: str = "fixmatch",
) -> History:
    """Train `model` for `steps` steps of step_fn(model, x_l, y_l, x_u) -> Step, with the
    paper's cosine schedule and optimizer ('sgd': Nesterov momentum 0.9; 'adam' for AdamW).
    Each step draws batch_size labelled and mu * batch_size unlabelled images at random (with
    replacement).

    The unlabelled images' true labels are never given to step_fn: the loop only uses them to
    *measure* the pseudo-labels. Every `eval_every` steps it appends to the History: step,
    test_acc, top_class_share (share of test images predicted as the most predicted class: near
    1 when the model has collapsed onto one class), mask_rate (share of unlabelled images above
    tau) and pseudo_acc (accuracy of the pseudo-labels that were used), both averaged over those
    steps, and the seconds so far.
    """
    check_mu(mu)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        positive_int(name, value)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    device = next(model.parameters()).device
    if optimizer == "sgd":  # the paper's choice
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: cosine_lr(k, steps))
    gen = torch.Generator().manual_seed(seed)
    history, start = History(), time.perf_counter()
    used = correct = seen = 0
    model.train()
    for k in tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False):
        i = torch.randint(len(labelled), (batch_size,), generator=gen)
        j = torch.randint(len(unlabelled), (mu * batch_size,), generator=gen)
        x_u, y_u_true = unlabelled.x[j].to(device), unlabelled.y[j].to(device)
        out = step_fn(model, labelled.x[i].to(device), labelled.y[i].to(device), x_u)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        if out.mask is not None:  # measurement only: the true labels never reach the loss
            used += int(out.mask.sum())
            correct += int((out.pseudo[out.mask] == y_u_true[out.mask]).sum())
            seen += len(out.mask)
        if k % eval_every == 0 or k == steps:
            with torch.random.fork_rng(devices=[]):  # a DataLoader draws from the global RNG: keep
                logits, y = predict(model, test_loader)  # training independent of eval_every
            predicted = logits.argmax(dim=1)
            history.append(
                step=k,
                test_acc=(predicted == y).float().mean().item(),
                top_class_share=torch.bincount(predicted).max().item() / len(y),
                mask_rate=used / seen if seen else float("nan"),
                pseudo_acc=correct / used if used else float("nan"),
                seconds=time.perf_counter() - start,
            )
            used = correct = seen = 0
            model.train()
    return history
