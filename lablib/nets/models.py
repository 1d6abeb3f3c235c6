"""The small networks the labs share, defined once."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lablib.core import validate
from lablib.core.validate import positive_int, real


class ShapeError(ValueError, RuntimeError):
    """An input that does not fit the model: a ValueError naming it, and a RuntimeError too, as
    torch's own shape errors are, so code that catches those (to name its own argument) still does."""



def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):  # "no" would be truthy
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _check_images(name: str, x, channels: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ShapeError(f"{name} must be (N, C, H, W), got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ShapeError(f"{name} must have {channels} channels (N, {channels}, H, W), got shape {tuple(x.shape)}")


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements, not tensors)."""
    validate.module("model", model)
    _check_bool("trainable_only", trainable_only)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class SmallCNN(nn.Module):
    """The labs' workhorse image classifier: three 3x3 convolutions, one pooling step,
    global pooling to 2x2 and a linear head. About 15k parameters at width 16; works for
    any image size >= 4 (digits are 8x8)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        c, w = positive_int("in_channels", in_channels), positive_int("width", width)
        self.in_channels = c
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
        self.head = nn.Linear(2 * w * 4, positive_int("num_classes", num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images("x", x, self.in_channels)
        return self.head(torch.flatten(self.features(x), 1))


class MLP(nn.Module):
    """A multilayer perceptron on flattened images: in_features -> hidden... -> num_classes."""

    def __init__(self, in_features: int = 64, hidden=(128,), num_classes: int = 10, act: str = "relu"):
        super().__init__()
        acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}
        if act not in acts:
            raise ValueError(f"act must be one of {', '.join(acts)}, got {act!r}")
        if isinstance(hidden, (str, int)) or not hasattr(hidden, "__iter__"):
            raise TypeError(f"hidden must be a list of layer widths, e.g. (128,) or [], got {hidden!r}")
        sizes = [positive_int("in_features", in_features), *[positive_int("hidden", h) for h in hidden]]
        self.in_features = sizes[0]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), acts[act]()]
        layers.append(nn.Linear(sizes[-1], positive_int("num_classes", num_classes)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor (N, ...), got {type(x).__name__}")
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.in_features:
            raise ShapeError(f"x must be a batch (N, ...) of {self.in_features} features per row, got shape {tuple(x.shape)}")
        return self.net(x)


_ACTS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def batch_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """What BatchNorm2d computes in training mode, before its learned scale and shift: each
    channel is shifted and scaled to mean 0, variance 1 over the batch and both spatial dims.
    Whatever the layers before it did to the scale of the signal, the next layer sees it reset."""
    _check_images("x", x)
    real("eps", eps, 0, low_open=True)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def residual_block(x: torch.Tensor, conv_weight: torch.Tensor, bn_weight: torch.Tensor, bn_bias: torch.Tensor,
                   eps: float = 1e-5) -> torch.Tensor:
    """What a ResidualBlock (norm and residual on, ReLU) computes in training mode, as a function
    of its input and weights: relu(x + bn_weight * batch_norm(conv3x3(x)) + bn_bias)."""
    _check_images("x", x)
    real("eps", eps, 0, low_open=True)
    c = x.shape[1]
    for name, t in (("conv_weight", conv_weight), ("bn_weight", bn_weight), ("bn_bias", bn_bias)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if tuple(conv_weight.shape) != (c, c, 3, 3):
        raise ValueError(f"conv_weight must be ({c}, {c}, 3, 3) for {c} channels, got {tuple(conv_weight.shape)}")
    for name, t in (("bn_weight", bn_weight), ("bn_bias", bn_bias)):
        if tuple(t.shape) != (c,):
            raise ValueError(f"{name} must be ({c},) for {c} channels, got {tuple(t.shape)}")
    out = batch_norm(F.conv2d(x, conv_weight, padding=1), eps)
    return torch.relu(x + out * bn_weight.view(1, c, 1, 1) + bn_bias.view(1, c, 1, 1))


class ResidualBlock(nn.Module):
    """One 3x3 convolution block, ordered as in ResNet (He et al. 2016):
    act(x + norm(conv(x))) with the skip connection, act(norm(conv(x))) without it.

    The skip gives the gradient a path that bypasses the convolution, so it reaches early
    layers undiminished however deep the stack. norm=False leaves out BatchNorm."""

    def __init__(self, width: int, norm: bool = True, residual: bool = True, act: str = "relu"):
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"act must be one of {', '.join(_ACTS)}, got {act!r}")
        _check_bool("norm", norm)
        _check_bool("residual", residual)
        self.conv = nn.Conv2d(positive_int("width", width), width, 3, padding=1, bias=not norm)
        self.norm = nn.BatchNorm2d(width) if norm else nn.Identity()
        self.act = _ACTS[act]()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        return self.act(x + out) if self.residual else self.act(out)


class PreActBlock(nn.Module):
    """The "pre-activation" residual block (He et al. 2016, Identity Mappings in Deep Residual
    Networks): x + conv(relu(bn(x))). Nothing sits on the skip path, not even a ReLU, so the
    input reaches the output, and the gradient the input, untouched."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(positive_int("width", width))
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.act(self.norm(x)))


class DeepNet(nn.Module):
    """A stem convolution, `depth` blocks of equal width, global pooling, a linear head.

    By default each block is ResidualBlock(width, norm, residual, act): norm=False,
    residual=False is the deep *plain* network, which does not train; the three other
    combinations are the fixes it compares at equal depth and budget. block=f builds each
    block as f(width) instead (your own block class, or a lambda fixing its options); the
    flags norm/residual/act then stay at their defaults."""

    def __init__(self, depth: int = 20, width: int = 16, norm: bool = False, residual: bool = False,
                 act: str = "relu", in_channels: int = 1, num_classes: int = 10,
                 block: Callable[[int], nn.Module] | None = None):
        super().__init__()
        positive_int("depth", depth)
        self.stem = nn.Conv2d(positive_int("in_channels", in_channels), positive_int("width", width), 3, padding=1)
        if block is None:
            blocks = [ResidualBlock(width, norm, residual, act) for _ in range(depth)]
        else:
            if not callable(block):
                raise TypeError(f"block must be a function width -> nn.Module (e.g. a block class), got {type(block).__name__}")
            if norm or residual or act != "relu":
                raise ValueError("give either block or norm/residual/act: with block=, set the options inside it "
                                 "(block=lambda w: MyBlock(w, ...))")
            blocks = [block(width) for _ in range(depth)]
            if not all(isinstance(b, nn.Module) for b in blocks):
                raise TypeError(f"block(width) must return an nn.Module, got {type(blocks[0]).__name__}")
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(width, positive_int("num_classes", num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


class DeepMLP(nn.Module):
    """A deep multilayer perceptron on flattened images: a linear stem to `width`, `depth`
    hidden blocks of equal width, a linear head. The fully connected twin of DeepNet.

    Each block is act(x + norm(linear(x))) with the skip connection, act(norm(linear(x)))
    without it (norm: BatchNorm1d, or nothing with norm=False). norm=False, residual=False is
    the deep *plain* network, whose signal and gradient shrink layer by layer."""

    def __init__(self, in_features: int = 64, width: int = 256, depth: int = 8, norm: bool = True,
                 residual: bool = True, act: str = "relu", num_classes: int = 10):
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"act must be one of {', '.join(_ACTS)}, got {act!r}")
        _check_bool("norm", norm)
        _check_bool("residual", residual)
        self.in_features = positive_int("in_features", in_features)
        w = positive_int("width", width)
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(self.in_features, w), _ACTS[act]())
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"linear": nn.Linear(w, w, bias=not norm),
                           "norm": nn.BatchNorm1d(w) if norm else nn.Identity()})
            for _ in range(positive_int("depth", depth)))
        self.act = _ACTS[act]()
        self.residual = residual
        self.head = nn.Linear(w, positive_int("num_classes", num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor (N, ...), got {type(x).__name__}")
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.in_features:
            raise ShapeError(f"x must be a batch (N, ...) of {self.in_features} features per row, got shape {tuple(x.shape)}")
        h = self.stem(x)
        for block in self.blocks:
            out = block["norm"](block["linear"](h))
            h = self.act(h + out) if self.residual else self.act(out)
        return self.head(h)
