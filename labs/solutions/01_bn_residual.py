"""Reference answers for lab 01 (BatchNorm and residual connections)."""

import torch
from torch import nn


class MyPreActBlock(nn.Module):
    """x + conv(relu(bn(x))): nothing on the skip path."""

    def __init__(self, width):
        super().__init__()
        self.norm = nn.BatchNorm2d(width)
        self.conv = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)

    def forward(self, x):
        return x + self.conv(torch.relu(self.norm(x)))


def my_batch_norm(x, eps=1e-5):
    """Each channel to mean 0, variance 1 over the batch and both spatial dimensions."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)
