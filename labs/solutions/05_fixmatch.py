"""Reference answers of lab 05 (FixMatch): one function per exercise, named as in the lab.
Under LAB_SOLUTIONS=1 they replace the learner's stubs."""

import torch.nn.functional as F


def my_soft_unsupervised_loss(strong_logits, weak_logits, tau, temperature):
    """FixMatch's mask, but the target of a confident row is the weak view's distribution
    sharpened at `temperature`; the mean runs over all rows; no gradient reaches weak_logits."""
    weak = weak_logits.detach()
    mask = F.softmax(weak, dim=1).max(dim=1).values >= tau
    target = F.softmax(weak / temperature, dim=1)
    per_row = -(target * F.log_softmax(strong_logits, dim=1)).sum(dim=1)
    return (per_row * mask).mean()


def my_pick_tau(confidence, correct, taus, target):
    """The smallest tau whose kept pseudo-labels are at least `target` correct; None if none is."""
    for tau in sorted(taus):
        kept = confidence >= tau
        if kept.any() and correct[kept].float().mean().item() >= target:
            return tau
    return None
