"""Reference answers of lab 03 (pruning): one function per exercise, named as in the lab."""

import torch


def my_layer_masks(weights, amount):
    """One 0/1 mask per tensor: each tensor loses round(amount * its size) of its own smallest |w|."""
    masks = []
    for w in weights:
        k = round(amount * w.numel())
        keep = torch.ones(w.numel(), dtype=w.dtype, device=w.device)
        keep[torch.topk(w.detach().abs().flatten(), k, largest=False).indices] = 0
        masks.append(keep.reshape(w.shape))
    return masks


def my_nm_mask(weight, n, m):
    """Keep the n largest |w| of every group of m neighbours along the last dimension."""
    groups = weight.detach().abs().reshape(-1, m)  # one group per row
    keep = groups.topk(n, dim=1).indices  # the n largest of each group
    mask = torch.zeros_like(groups).scatter_(1, keep, 1.0)
    return mask.reshape(weight.shape)
