"""Knowledge distillation (Hinton et al. 2015): a small student learns from a large teacher's
softened output distribution as well as (or instead of) the hard labels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lablib.core.validate import real


def _logits(name: str, value) -> torch.Tensor:
    """`value` if it is a (batch, classes) tensor, else an error naming `name`."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, classes), got {type(value).__name__}")
    if value.ndim != 2:
        raise ValueError(f"{name} must be (batch, classes), got shape {tuple(value.shape)}")
    return value


def soft_targets(teacher_logits: torch.Tensor, T: float = 2.0) -> torch.Tensor:
    """The teacher's probabilities at temperature T. T > 1 flattens them, so the student also
    sees how the teacher ranks the wrong classes ("this 7 looks a bit like a 1")."""
    real("T", T, 0, math.inf, low_open=True, high_open=True)
    _logits("teacher_logits", teacher_logits)
    return F.softmax(teacher_logits.detach() / T, dim=1)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None = None,
    T: float = 2.0,
    alpha: float = 0.7,
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, targets).

    * KL uses reduction "batchmean" (sum over classes, mean over the batch): the true KL per
      example. nn.KLDivLoss()'s default "mean" also divides by the number of classes.
    * T^2 undoes the 1/T^2 that softening puts on the soft term's gradients, so changing T
      does not silently change the balance between the two terms.
    * alpha=1 is pure distillation (targets may be None: unlabelled transfer data);
      alpha=0 is ordinary cross-entropy. The teacher gets no gradient.
    * targets = -1 marks an example without a label: it gets the soft term only, so one batch
      can mix a few labelled images with many unlabelled ones.
    """
    real("alpha", alpha, 0, 1)
    real("T", T, 0, math.inf, low_open=True, high_open=True)
    _logits("student_logits", student_logits)
    if student_logits.shape != _logits("teacher_logits", teacher_logits).shape:
        raise ValueError(
            f"student_logits and teacher_logits must both be (batch, classes), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if len(student_logits) == 0:  # batchmean over no examples is NaN
        raise ValueError("student_logits and teacher_logits are empty: a batch of 0 examples has no loss")
    if targets is None and alpha < 1:
        raise ValueError("targets are needed unless alpha == 1 (pure distillation)")
    if targets is not None:
        batch, classes = student_logits.shape
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"targets must be a tensor of class indices, got {type(targets).__name__}")
        if targets.is_floating_point() or targets.shape != (batch,):
            raise ValueError(f"targets must be ({batch},) class indices (an int tensor), "
                             f"got {targets.dtype} {tuple(targets.shape)}")
        if not bool(((targets >= -1) & (targets < classes)).all()):  # -1: no label
            raise ValueError(f"targets must be class indices in [0, {classes}) or -1 (no label), "
                             f"got values from {targets.min().item()} to {targets.max().item()}")
    log_student = F.log_softmax(student_logits / T, dim=1)
    soft = F.kl_div(log_student, soft_targets(teacher_logits, T), reduction="batchmean") * T * T
    if alpha == 1:
        return soft
    labelled = targets >= 0
    if not labelled.any():  # a batch of unlabelled images only: nothing for the hard term
        return alpha * soft
    hard = F.cross_entropy(student_logits[labelled], targets[labelled])
    return alpha * soft + (1 - alpha) * hard


def pseudo_labels(teacher_logits: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Hard labels from a teacher: its top class where its probability reaches `threshold`,
    -1 (no label) elsewhere. threshold=0 labels everything; a high threshold keeps only the
    confident guesses (FixMatch builds on this)."""
    real("threshold", threshold, 0, 1)
    _logits("teacher_logits", teacher_logits)
    confidence, labels = F.softmax(teacher_logits.detach(), dim=1).max(dim=1)
    return torch.where(confidence >= threshold, labels, torch.full_like(labels, -1))
