"""Pretrained models through Hugging Face transformers, offline first: a ConvNeXt small enough to
train on a laptop, and loading a checkpoint from a local folder (no network) or, only when
downloads are switched on, from the hub into the project's data/ folder."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from lablib.core import config, validate


@contextlib.contextmanager
def _quiet():
    """transformers' logging at errors only: its import-time advisories (torchvision missing) and
    the load report of a replaced head are noise in a lab; the callers say what changed."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights: 43/43" on every load
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def _quiet_import():
    with _quiet():
        from transformers import ConvNextConfig, ConvNextForImageClassification
    return ConvNextConfig, ConvNextForImageClassification


def tiny_convnext(num_labels: int = 10, image_size: int = 32, channels: int = 1, widths=(16, 32, 64),
                  depths=(1, 1, 1), patch_size: int = 4):
    """A randomly initialised ConvNextForImageClassification, the architecture of
    facebook/convnext-tiny-224 (widths 96-768, depths 3-3-9-3, 28 M parameters) shrunk to
    tens of thousands of parameters: it trains on 32x32 digits in seconds on a CPU."""
    num_labels, image_size = validate.positive_int("num_labels", num_labels), validate.positive_int("image_size", image_size)
    channels, patch_size = validate.positive_int("channels", channels), validate.positive_int("patch_size", patch_size)
    for name, values in (("widths", widths), ("depths", depths)):
        if isinstance(values, (str, int)) or not hasattr(values, "__len__") or len(values) == 0:
            raise TypeError(f"{name} must be a list of positive ints, one per stage, got {values!r}")
        for v in values:
            validate.positive_int(name, v)
    if len(widths) != len(depths):
        raise ValueError(f"widths and depths must name the same number of stages, got {len(widths)} and {len(depths)}")
    # the stem divides the side by patch_size, each later stage by 2
    if image_size % (patch_size * 2 ** (len(widths) - 1)):
        raise ValueError(f"image_size={image_size} must be divisible by patch_size * 2**(stages - 1) = "
                         f"{patch_size * 2 ** (len(widths) - 1)}")
    ConvNextConfig, ConvNextForImageClassification = _quiet_import()
    cfg = ConvNextConfig(num_channels=channels, patch_size=patch_size, num_stages=len(widths),
                         hidden_sizes=list(widths), depths=list(depths), image_size=image_size,
                         num_labels=num_labels)
    return ConvNextForImageClassification(cfg)


def _allow_download(allow_download) -> bool:
    if allow_download is not None and not isinstance(allow_download, bool):
        raise TypeError(f"allow_download must be True, False or None, got {allow_download!r}")
    return config.allow_downloads() if allow_download is None else allow_download


def load_pretrained(model: str | os.PathLike, num_labels: int | None = None, allow_download: bool | None = None):
    """ConvNextForImageClassification.from_pretrained(model), and a line saying where it came from.

    model: a folder written by save_pretrained (read with local_files_only: no network), or a hub
    id such as "facebook/convnext-tiny-224", fetched only when allow_download is True (default:
    LAB_ALLOW_DOWNLOADS=1), into data/huggingface rather than the home folder.
    num_labels: a new classification head of that size when it differs from the checkpoint's
    (transfer to a new task); the body keeps its pretrained weights.
    """
    if not isinstance(model, (str, os.PathLike)) or not str(model).strip():
        raise TypeError(f"model must be a folder or a hub id, got {model!r}")
    if num_labels is not None:
        validate.positive_int("num_labels", num_labels)
    allow = _allow_download(allow_download)
    _, ConvNextForImageClassification = _quiet_import()
    # a new head of another size: the checkpoint's head is dropped, not an error
    head = {"num_labels": num_labels, "ignore_mismatched_sizes": True} if num_labels is not None else {}
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"model folder {str(folder)!r} holds no config.json: save it with save_pretrained")
        with _quiet():
            model = ConvNextForImageClassification.from_pretrained(folder, local_files_only=True, **head)
        return model, f"local folder {folder}"
    if isinstance(model, os.PathLike) or folder.is_absolute() or str(model).startswith("."):
        raise FileNotFoundError(f"model {str(model)!r} is not a folder")
    if not allow:
        raise ValueError(f"model {model!r} is not a local folder, and downloads are off: set "
                         "LAB_ALLOW_DOWNLOADS=1 (or allow_download=True) to fetch it from the hub")
    cache = config.data_dir() / "huggingface"
    return (ConvNextForImageClassification.from_pretrained(model, cache_dir=cache, **head),
            f"hub checkpoint {model} (cached in {cache})")
