"""Plots the labs share. Each function returns a matplotlib Figure already closed in pyplot, so a
notebook shows it exactly once: as the cell's value, or with display(fig)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib.pyplot as plt  # in a notebook, importing pyplot turns on inline PNG display
import torch
from matplotlib.figure import Figure

from lablib.core.results import fmt
from lablib.core.validate import positive_int, real
from lablib.nets.train import History


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.6, nrows: int = 1):
    fig = plt.figure(figsize=(width * ncols, height * nrows), layout="constrained")
    plt.close(fig)  # pyplot would show it again at the end of the cell
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _mapping(name: str, value) -> Mapping:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, got {type(value).__name__} {value!r}")
    return value


def _number(name: str, value, positive: bool = False) -> float:
    """A finite number (a 0-d tensor too); positive=True for a log axis."""
    value = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
    return real(name, value, 0 if positive else -math.inf, math.inf, low_open=True, high_open=True)


def curves(histories: dict[str, History], metrics=("train_loss", "val_acc"), title: str | None = None) -> Figure:
    """Learning curves: one panel per metric, one line per run (histories: name -> History)."""
    if not _mapping("histories", histories):
        raise ValueError("histories must name at least one run")
    for name, h in histories.items():
        if not isinstance(h, History):
            raise TypeError(f"histories[{name!r}] must be a History, got {type(h).__name__}")
        if not len(h):
            raise ValueError(f"histories[{name!r}] is empty: no epoch was logged")
    if isinstance(metrics, str):
        metrics = (metrics,)
    if not metrics:
        raise ValueError("metrics must name at least one metric")
    fig, axes = _figure(len(metrics))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name, h in histories.items():
            ax.plot(h["epoch"], h[metric], marker="o", ms=3, label=name)
        ax.set(xlabel="epoch", ylabel=metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def per_layer(norms: dict[str, dict[str, float]], title: str = "Gradient norm per layer") -> Figure:
    """Per-layer gradient norms on a log scale, input layer on the left (norms: run -> layer -> norm).
    Vanishing gradients show as a line falling many decades towards the input."""
    if not _mapping("norms", norms):
        raise ValueError("norms must name at least one run")
    for name, layers in norms.items():
        for layer, v in _mapping(f"norms[{name!r}]", layers).items():
            real(f"norms[{name!r}][{layer!r}]", v, 0)  # a norm: >= 0, not NaN
    fig, axes = _figure(1, width=7)
    ax = axes[0][0]
    for name, per_layer in norms.items():
        values = [max(v, 1e-30) for v in per_layer.values()]  # log axis: no zeros
        ax.semilogy(range(1, len(values) + 1), values, marker="o", ms=3, label=name)
    ax.set(xlabel="layer (1 = nearest the input)", ylabel="gradient L2 norm", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return fig


def image_grid(images: torch.Tensor, labels=None, ncols: int = 10, title: str | None = None, size: float = 1.0) -> Figure:
    """A grid of images (N, C, H, W) in [0, 1]; 1-channel images are drawn in grey."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError("images must be a tensor of shape (N, 1 or 3, H, W)")
    if not len(images):
        raise ValueError("images is empty: nothing to draw")
    if images.dtype == torch.uint8:  # 0..255 pixels
        images = images / 255
    lo, hi = images.min().item(), images.max().item()
    if not -1e-3 <= lo <= hi <= 1 + 1e-3:  # NaN fails too
        raise ValueError(f"images must hold values in [0, 1], got {lo:g}..{hi:g} (0..255 pixels: divide by 255)")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"labels has {len(labels)} entries for {len(images)} images")
    positive_int("ncols", ncols)
    real("size", size, 0, math.inf, low_open=True, high_open=True)
    n = len(images)
    ncols = min(ncols, n)
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = _figure(ncols, width=size, height=size * (1.25 if labels is not None else 1.0), nrows=nrows)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].detach().float().cpu().clamp(0, 1).numpy()
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img.transpose(1, 2, 0))
        if labels is not None:
            ax.set_title(str(labels[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _labels(name: str, values, k: int) -> torch.Tensor:
    """Class indices 0..k-1 as int64; anything else would land in the wrong cell of the matrix."""
    try:
        t = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a list or tensor of class indices, got {type(values).__name__}") from exc
    if t.numel() == 0:  # torch reads [] as float
        return t.long().reshape(-1)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"{name} must be one label per example (1-D), got shape {tuple(t.shape)}")
    if len(t) and (int(t.min()) < 0 or int(t.max()) >= k):
        raise ValueError(f"{name} holds labels {int(t.min())}..{int(t.max())}, but there are {k} classes")
    return t.long()


def confusion(y_true, y_pred, classes, title: str = "Confusion matrix") -> Figure:
    """Counts of (true class, predicted class); the diagonal is what the model got right."""
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__len__"):
        raise TypeError(f"classes must be a list of class names, got {type(classes).__name__} {classes!r}")
    k = len(classes)
    y_true, y_pred = _labels("y_true", y_true, k), _labels("y_pred", y_pred, k)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)} differ in shape")
    matrix = torch.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    fig, axes = _figure(1, width=0.45 * k + 2, height=0.45 * k + 1.5)
    ax = axes[0][0]
    ax.imshow(matrix.numpy(), cmap="Blues")
    for i in range(k):
        for j in range(k):
            v = matrix[i, j].item()
            if v:
                ax.text(j, i, v, ha="center", va="center", fontsize=7, color="white" if v > matrix.max() / 2 else "black")
    ax.set(xticks=range(k), yticks=range(k), xticklabels=classes, yticklabels=classes, xlabel="predicted", ylabel="true", title=title)
    fig.matrix = matrix  # the numbers behind the picture
    return fig


def bars(values: dict[str, float], ylabel: str, title: str | None = None, log: bool = False) -> Figure:
    """One labelled bar per entry, its value written on top (latency, size, accuracy...)."""
    if not _mapping("values", values):
        raise ValueError("values must have at least one entry")
    names, heights = list(values), [_number(f"values[{k!r}]", v, positive=log) for k, v in values.items()]
    fig, axes = _figure(1, width=max(4.0, 1.1 * len(values) + 1))
    ax = axes[0][0]
    rects = ax.bar(names, heights, color=[f"C{i}" for i in range(len(names))])
    ax.bar_label(rects, labels=[fmt(h) for h in heights], fontsize=8)
    ax.set(ylabel=ylabel, title=title or "")
    if log:
        ax.set_yscale("log")
    ax.tick_params(axis="x", labelrotation=20)
    return fig


def lines(series: dict[str, tuple], xlabel: str, ylabel: str, title: str | None = None, logx: bool = False,
          reference: dict[str, float] | None = None, spread: dict[str, list] | None = None) -> Figure:
    """y against x for several named series (series: name -> (xs, ys)), e.g. accuracy vs sparsity.
    `reference` draws dashed horizontal lines (name -> y), e.g. the dense model's accuracy.
    `spread` shades y ± s around a series (name -> one s per point), e.g. the sd over seeds."""
    if not _mapping("series", series):
        raise ValueError("series must have at least one entry")
    for name, pair in series.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or len(pair[0]) != len(pair[1]):
            raise ValueError(f"series[{name!r}] must be a pair (xs, ys) of equal lengths")
        for x in pair[0] if logx else ():
            _number(f"series[{name!r}] x (logx=True)", x, positive=True)
    reference = {k: _number(f"reference[{k!r}]", v) for k, v in _mapping("reference", reference or {}).items()}
    spread = dict(_mapping("spread", spread or {}))
    for name, s in spread.items():
        if name not in series:
            raise ValueError(f"spread[{name!r}] names no series (series: {', '.join(map(repr, series))})")
        if not isinstance(s, (tuple, list)) or len(s) != len(series[name][0]):
            raise ValueError(f"spread[{name!r}] must hold one value per point of series[{name!r}]")
        spread[name] = [_number(f"spread[{name!r}]", v) for v in s]
    fig, axes = _figure(1, width=6)
    ax = axes[0][0]
    for i, (name, (xs, ys)) in enumerate(series.items()):
        ax.plot(list(xs), list(ys), marker="o", ms=4, label=name, color=f"C{i}")
        if name in spread:
            ys_ = [float(y) for y in ys]
            ax.fill_between(list(xs), [y - s for y, s in zip(ys_, spread[name], strict=True)],
                            [y + s for y, s in zip(ys_, spread[name], strict=True)], color=f"C{i}", alpha=0.15)
    for i, (name, y) in enumerate(reference.items()):
        ax.axhline(y, linestyle="--", color=f"C{len(series) + i}", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "")
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def grouped_bars(groups: dict[str, dict[str, float]], ylabel: str, title: str | None = None, log: bool = False) -> Figure:
    """Bars in groups, one colour per series (groups: group -> series -> value), e.g. file size
    raw vs compressed for each model, or a probability per class at several temperatures."""
    if not _mapping("groups", groups):
        raise ValueError("groups must have at least one entry")
    groups = {g: {k: _number(f"groups[{g!r}][{k!r}]", v, positive=log)
                  for k, v in _mapping(f"groups[{g!r}]", per_series).items()}
              for g, per_series in groups.items()}
    series = list(dict.fromkeys(k for g in groups.values() for k in g))
    if not series:
        raise ValueError("groups must hold at least one value")
    fig, axes = _figure(1, width=min(10.0, max(5.0, 0.3 * len(groups) * len(series) + 2)))
    ax = axes[0][0]
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        heights = [float(g.get(name, 0.0)) for g in groups.values()]
        rects = ax.bar(xs, heights, width, label=name, color=f"C{i}")
        if len(groups) * len(series) <= 16:
            ax.bar_label(rects, labels=[fmt(h) for h in heights], fontsize=7)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set(ylabel=ylabel, title=title or "")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize="small")
    return fig
