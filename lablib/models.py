"""The small networks the labs share, defined once."""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements, not tensors)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _positive(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class SmallCNN(nn.Module):
    """The labs' workhorse image classifier: three 3x3 convolutions, one pooling step,
    global pooling to 2x2 and a linear head. About 15k parameters at width 16; works for
    any image size >= 4 (digits are 8x8)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        c, w = _positive("in_channels", in_channels), _positive("width", width)
        self.features = nn.Sequential(
            nn.Conv2d(c, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(2 * w * 4, _positive("num_classes", num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class MLP(nn.Module):
    """A multilayer perceptron on flattened images: in_features -> hidden... -> num_classes."""

    def __init__(self, in_features: int = 64, hidden=(128,), num_classes: int = 10, act: str = "relu"):
        super().__init__()
        acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}
        if act not in acts:
            raise ValueError(f"act must be one of {', '.join(acts)}, got {act!r}")
        sizes = [_positive("in_features", in_features), *[_positive("hidden", h) for h in hidden]]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), acts[act]()]
        layers.append(nn.Linear(sizes[-1], _positive("num_classes", num_classes)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
