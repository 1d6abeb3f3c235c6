"""Datasets the labs use, all offline: scikit-learn's digits, generated shapes, your own folder.

Every dataset is an ImageSet: a TensorDataset of images (N, C, H, W) in [0, 1] and integer
labels (N,), with the class names in `.classes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, TensorDataset

from lablib.core.validate import integer, path, positive_int, real

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SHAPE_CLASSES = ("circle", "square", "triangle")


class ImageSet(TensorDataset):
    """Images (N, C, H, W) float in [0, 1], labels (N,) int64, and the class names."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
            raise ValueError(f"x must be a float tensor of shape (N, C, H, W), got {_describe(x)}")
        if len(x) and not (x.min() >= 0 and x.max() <= 1):  # False for NaN too
            raise ValueError(f"x must hold pixel values in [0, 1], got {x.min().item():g}..{x.max().item():g}")
        if not isinstance(y, torch.Tensor) or y.dtype != torch.long or y.shape != (len(x),):
            raise ValueError(f"y must be an int64 tensor of shape ({len(x)},), got {_describe(y)}")
        if isinstance(classes, str) or not hasattr(classes, "__len__") or len(classes) == 0:
            raise ValueError(f"classes must be a non-empty list of class names, got {classes!r}")
        if len(set(classes)) < len(classes):
            raise ValueError(f"classes must be distinct names, got {list(classes)!r}")
        # a label outside the classes would be dropped by split() and miscounted by counts()
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise ValueError(f"y holds labels {int(y.min())}..{int(y.max())}, but there are "
                             f"{len(classes)} classes (labels 0..{len(classes) - 1})")
        super().__init__(x, y)
        self.classes = list(classes)

    @property
    def x(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def y(self) -> torch.Tensor:
        return self.tensors[1]

    def subset(self, index) -> ImageSet:
        """The images at `index`: a list or tensor of ints, or a bool mask of len(self)."""
        try:
            index = torch.as_tensor(index)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"index must be a list or tensor of ints (or a bool mask), got {index!r}") from None
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise ValueError(f"index as a bool mask must have shape ({len(self)},), got {tuple(index.shape)}")
            index = index.nonzero().flatten()
        elif index.numel() and (index.is_floating_point() or index.is_complex()):
            raise TypeError(f"index must be ints (or a bool mask), got {index.dtype} values")
        index = index.long()
        return ImageSet(self.x[index], self.y[index], self.classes)

    def counts(self) -> list[int]:
        """Images per class, in class order."""
        return torch.bincount(self.y, minlength=len(self.classes)).tolist()

    def __repr__(self) -> str:
        return f"ImageSet({len(self)} images of {tuple(self.x.shape[1:])}, {len(self.classes)} classes)"


@dataclass
class Splits:
    """A fixed train / val / test split of one dataset."""

    train: ImageSet
    val: ImageSet
    test: ImageSet

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    def __repr__(self) -> str:
        return f"Splits(train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, image={tuple(self.train.x.shape[1:])})"


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"{t.dtype} tensor of shape {tuple(t.shape)}"
    return type(t).__name__


def _check_size(size, optional: bool = False):
    if not (optional and size is None) and (not isinstance(size, int) or isinstance(size, bool) or size < 4):
        raise ValueError(f"size must be an int >= 4 (pixels per side){' or None' if optional else ''}, got {size!r}")


def _check_imageset(ds):
    if not isinstance(ds, ImageSet):
        raise TypeError(f"ds must be an ImageSet (e.g. datasets.digits().train), got {type(ds).__name__}")


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def split(ds: ImageSet, val: float = 0.1, test: float = 0.2, seed: int = 0) -> Splits:
    """A seeded, stratified train/val/test split (each class split in the same proportions)."""
    _check_imageset(ds)
    for name, frac in (("val", val), ("test", test)):
        real(name, frac, 0, 1, high_open=True)
    if val + test >= 1:
        raise ValueError(f"val + test must leave some training data, got {val} + {test}")
    integer("seed", seed, 0)
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for c in range(len(ds.classes)):
        idx = rng.permutation(np.flatnonzero(ds.y.numpy() == c))
        n_test, n_val = round(len(idx) * test), round(len(idx) * val)
        parts["test"] += idx[:n_test].tolist()
        parts["val"] += idx[n_test : n_test + n_val].tolist()
        parts["train"] += idx[n_test + n_val :].tolist()
    return Splits(**{k: ds.subset(sorted(v)) for k, v in parts.items()})


def partition(ds: ImageSet, fraction: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Split `ds` in two disjoint parts, stratified by class: (the rest, `fraction` of it)."""
    real("fraction", fraction, 0, 1, low_open=True, high_open=True)
    parts = split(ds, val=fraction, test=0.0, seed=seed)
    return parts.train, parts.val


def digits(size: int | None = None, val: float = 0.1, test: float = 0.2, seed: int = 0) -> Splits:
    """scikit-learn's 1,797 real 8x8 handwritten digits, split train/val/test (seeded).

    `size` resizes the images (bilinear), e.g. 16 for the diffusion lab; None keeps 8x8.
    """
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    _check_size(size, optional=True)
    integer("seed", seed, 0)
    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values 0..16
    y = torch.tensor(raw.target, dtype=torch.long)
    ds = ImageSet(_resize(x, size), y, [str(d) for d in range(10)])
    return split(ds, val=val, test=test, seed=seed)


def labelled_split(ds: ImageSet, per_class: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Keep `per_class` labelled images of each class; the rest become the unlabelled pool.

    The pool keeps its true labels so a lab can *measure* pseudo-label accuracy; a
    semi-supervised method must never train on them.
    """
    _check_imageset(ds)
    positive_int("per_class", per_class)
    integer("seed", seed, 0)
    counts = ds.counts()
    if per_class >= min(counts):
        raise ValueError(
            f"per_class={per_class} leaves no unlabelled images for some class (smallest class has {min(counts)})"
        )
    rng = np.random.default_rng(seed)
    labelled = []
    for c in range(len(ds.classes)):
        labelled += rng.choice(np.flatnonzero(ds.y.numpy() == c), per_class, replace=False).tolist()
    rest = sorted(set(range(len(ds))) - set(labelled))
    return ds.subset(sorted(labelled)), ds.subset(rest)


def select_classes(ds: ImageSet, classes) -> ImageSet:
    """The images of some classes only, relabelled 0..len(classes)-1 in the order given: e.g.
    digits 5-9 as a five-class task of their own, ["5", ..., "9"]."""
    _check_imageset(ds)
    if isinstance(classes, (str, int)) or not hasattr(classes, "__iter__"):
        raise TypeError(f"classes must be a list of class names, e.g. ['5', '6'], got {classes!r}")
    classes = list(classes)
    unknown = [c for c in classes if c not in ds.classes]
    if unknown or not classes or len(set(classes)) < len(classes):
        raise ValueError(f"classes must be distinct names from {ds.classes}, got {classes!r}")
    old = torch.tensor([ds.classes.index(c) for c in classes])
    keep = torch.isin(ds.y, old)
    relabel = torch.full((len(ds.classes),), -1, dtype=torch.long)
    relabel[old] = torch.arange(len(classes))
    return ImageSet(ds.x[keep], relabel[ds.y[keep]], classes)


def shapes(n: int = 600, size: int = 32, seed: int = 0, classes=SHAPE_CLASSES) -> ImageSet:
    """Procedurally drawn circles, squares and triangles: random size, position, rotation and
    colours (foreground always distinct from background), balanced classes, seeded."""
    positive_int("n", n)
    _check_size(size)
    unknown = sorted(set(classes) - set(SHAPE_CLASSES))
    if unknown or not classes:
        raise ValueError(f"classes must be drawn from {SHAPE_CLASSES}, got unknown {unknown}")
    if len(set(classes)) < len(classes):
        raise ValueError(f"classes must be distinct, got {classes!r}")
    integer("seed", seed, 0)
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        label = i % len(classes)
        bg = rng.integers(0, 256, 3)
        fg = (bg + rng.integers(80, 176, 3)) % 256  # at least 80 levels away in every channel
        img = Image.new("RGB", (size, size), tuple(int(v) for v in bg))
        r = rng.uniform(0.18, 0.42) * size
        cx, cy = rng.uniform(r, size - r, 2)
        angle = rng.uniform(0, 2 * np.pi)
        corners = {"circle": 0, "square": 4, "triangle": 3}[classes[label]]
        draw = ImageDraw.Draw(img)
        if corners == 0:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in fg))
        else:
            pts = [(cx + r * np.cos(angle + 2 * np.pi * k / corners), cy + r * np.sin(angle + 2 * np.pi * k / corners)) for k in range(corners)]
            draw.polygon(pts, fill=tuple(int(v) for v in fg))
        images.append(np.asarray(img))
        labels.append(label)
    order = rng.permutation(n)
    x = torch.tensor(np.stack(images)[order]).permute(0, 3, 1, 2).float() / 255.0
    return ImageSet(x, torch.tensor(labels)[order], classes)


def image_folder(root, size: int = 32, classes=None, channels: int = 3) -> ImageSet:
    """Your own images: one subfolder per class (root/cat/*.jpg, root/dog/*.png, ...).

    Every image is loaded with PIL, converted to RGB (channels=3) or grey (channels=1) and
    resized to size x size. `classes` picks and orders the subfolders to use (default: all,
    sorted). Everything is held in memory, so keep folders workshop-sized.
    """
    root = path("root", root)
    if not root.is_dir():
        raise ValueError(f"root {str(root)!r} is not a folder")
    _check_size(size)  # no None: images in a folder come in many sizes
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise ValueError(f"root {str(root)!r} has no class subfolders (expected root/<class>/<image>)")
    if classes is None:
        classes = found
    if isinstance(classes, str) or len(classes) == 0 or len(set(classes)) < len(classes):
        raise ValueError(f"classes must be a non-empty list of distinct subfolder names, got {classes!r}")
    unknown = [c for c in classes if c not in found]
    if unknown:
        raise ValueError(f"classes {unknown} are not subfolders of {str(root)!r}; found {found}")
    images, labels = [], []
    for label, name in enumerate(classes):
        # regular files only: a FIFO or device named x.png would block PIL's read forever
        files = sorted(p for p in (root / name).iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise ValueError(f"class folder {str(root / name)!r} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        for f in files:
            images.append(_load_image(f, size, channels))
            labels.append(label)
    x = torch.tensor(np.stack(images)).permute(0, 3, 1, 2)
    return ImageSet(x, torch.tensor(labels), classes)


def _load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as float32 (size, size, channels) in [0, 1], whatever its bit depth."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                # 16-bit and float images: convert("RGB") would clip them to 0 or 255
                grey = np.asarray(im, dtype=np.float64)
                top = 1.0 if im.mode == "F" else 65535.0
                if not np.isfinite(grey).all() or grey.min() < 0 or grey.max() > top:
                    raise ValueError(f"pixel values {grey.min():g}..{grey.max():g} are outside 0..{top:g}")
                small = Image.fromarray((grey / top).astype(np.float32), "F").resize((size, size), Image.BILINEAR)
                arr = np.asarray(small, dtype=np.float32)[..., None].clip(0, 1)
                return arr.repeat(channels, axis=2)
            im = im.convert("RGB" if channels == 3 else "L").resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.float32).reshape(size, size, channels) / 255.0
    except (OSError, ValueError, SyntaxError) as e:  # PIL's errors rarely say which file
        raise ValueError(f"image {str(path)!r} cannot be read: {e}") from e


def loader(ds, batch_size: int = 64, shuffle: bool = False, seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader; shuffling uses its own seeded generator so runs repeat exactly."""
    if not hasattr(ds, "__len__") or not hasattr(ds, "__getitem__"):
        raise TypeError(f"ds must be a dataset (e.g. an ImageSet), got {type(ds).__name__}")
    if len(ds) == 0:
        raise ValueError("ds is empty: a loader needs at least one item")
    positive_int("batch_size", batch_size)
    integer("seed", seed, 0)
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=drop_last)
