"""The model store: one folder per model version, data/serving/models/<version>/, holding
`model.onnx` and `meta.json` (classes, input shape, preprocessing, accuracy), written atomically.

  models_dir()                       data/serving/models (LAB_ROOT moves it with the project)
  save_model(version, onnx_file, meta, root=None, replace=False)   a version from an .onnx file
  versions(root=None)                the complete versions in the store, oldest first
  load_model(version, root=None, threads=1) -> Model   ready to serve: an ONNX Runtime session
  default_model(version="v1", ...)   train the small digits CNN and export it, unless it exists
  Faulty(model, error_rate, delay_s) a deliberately broken version: fails or stalls on request

Nothing here imports torch at module level: the service's image runs ONNX Runtime alone, with
models exported beforehand. Only default_model, which trains, needs torch.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lablib.core import cache, config
from lablib.core.validate import existing_file, integer
from lablib.core.validate import path as as_path
from lablib.deploy.serving.inputs import softmax

MODEL_FILE, META_FILE = "model.onnx", "meta.json"
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a folder name and a metrics label
# How the digits model's inputs are made; meta.json records it so a client can do the same.
DIGITS_PREPROCESSING = {"mode": "L", "size": [8, 8], "resample": "box (area average)",
                        "scale": "pixel / 255", "invert": "auto"}


def models_dir() -> Path:
    """The store's default folder: data/serving/models of the project."""
    return config.data_dir() / "serving" / "models"


def check_version(version, name: str = "version") -> str:
    """`version` if it is a usable version name (letters, digits, '.', '_', '-'; 1-64 characters);
    else an error naming `name`."""
    if not isinstance(version, str):
        raise TypeError(f"{name} must be a str such as 'v1', got {type(version).__name__} {version!r}")
    if not VERSION.match(version):
        raise ValueError(f"{name} must be 1-64 letters, digits, '.', '_' or '-' (not starting with "
                         f"'.', '_' or '-'), got {version!r}")
    return version


def _root(root) -> Path:
    return models_dir() if root is None else as_path("root", root)


def check_meta(meta) -> dict:
    """`meta` if it describes a classifier: `classes` (>= 2 distinct labels), `input_shape` (C, H, W
    without the batch), `preprocessing` (a dict); `accuracy` a number in [0, 1] or absent."""
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    classes = meta.get("classes")
    if (not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes)
            or len(set(classes)) != len(classes)):
        raise ValueError(f"meta['classes'] must be a list of >= 2 distinct str labels, got {classes!r}")
    shape = meta.get("input_shape")
    if (not isinstance(shape, list) or len(shape) != 3
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)):
        raise ValueError(f"meta['input_shape'] must be [channels, height, width], positive ints, got {shape!r}")
    if not isinstance(meta.get("preprocessing"), dict):
        raise ValueError("meta['preprocessing'] must be a dict saying how inputs are made "
                         f"(e.g. {DIGITS_PREPROCESSING}), got {meta.get('preprocessing')!r}")
    acc = meta.get("accuracy")
    if acc is not None and (isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0 <= acc <= 1):
        raise ValueError(f"meta['accuracy'] must be a number in [0, 1] or absent, got {acc!r}")
    if meta.get("output", "logits") not in ("logits", "probabilities"):
        raise ValueError(f"meta['output'] must be 'logits' or 'probabilities', got {meta.get('output')!r}")
    return meta


def _write(folder: Path, version: str, fill, meta: dict) -> Path:
    """Write a version folder atomically: fill(onnx_path) puts the model file in place, then the
    meta is written beside it. A reader (or a server loading it) never sees half a version."""

    def write(tmp: Path) -> None:
        fill(tmp / MODEL_FILE)
        Model(tmp, version=version, meta=meta)  # refuse a file ONNX Runtime cannot load or that misfits the meta
        (tmp / META_FILE).write_text(json.dumps({**meta, "version": version}, indent=1), encoding="utf-8")

    return cache.write_folder(folder, write)


def save_model(version: str, onnx_file, meta: dict, root=None, replace: bool = False) -> Path:
    """Store the ONNX file `onnx_file` as `version` with its `meta` (see check_meta); return the
    version's folder. An existing version is replaced only with replace=True."""
    version = check_version(version)
    onnx_file = existing_file(onnx_file, "onnx_file")
    meta = dict(check_meta(meta))
    if not isinstance(replace, bool):
        raise TypeError(f"replace must be True or False, got {replace!r}")
    folder = _root(root) / version
    if folder.exists() and not replace:
        raise FileExistsError(f"version {version!r} is already in {str(folder.parent)!r}; pass "
                              "replace=True to overwrite it, or choose another version name")
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    try:
        return _write(folder, version, lambda target: shutil.copyfile(onnx_file, target), meta)
    except ValueError as exc:  # the file does not load, or does not fit the meta
        raise ValueError(f"onnx_file {str(onnx_file)!r} cannot be stored: {exc}") from None


def versions(root=None) -> list[str]:
    """The versions in the store whose folders are complete and intact, oldest first (by the
    time meta.json records; then by name)."""
    root = _root(root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"root {str(root)!r} is a file, not the model store's folder")
    found = []
    for folder in root.iterdir() if root.is_dir() else []:
        if folder.is_dir() and VERSION.match(folder.name) and cache.is_complete(folder):
            created = json.loads((folder / META_FILE).read_text(encoding="utf-8")).get("created", "")
            found.append((created, folder.name))
    return [name for _, name in sorted(found)]


def session_options(threads: int = 1) -> ort.SessionOptions:
    """ONNX Runtime options for serving: `threads` intra-op threads, 1 by default.

    Why one thread: a request is one small image; splitting a model this size over threads costs
    more in hand-offs than it saves, and a service scales by processes (uvicorn workers, replicas),
    each of which would otherwise start a thread per core and fight the others for them.
    (lablib.deploy.onnx_export has its own session helpers, but it imports torch.)"""
    integer("threads", threads, 1, 256)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the warnings are about graph rewrites
    return options


class Model:
    """One model version ready to serve: the ONNX Runtime session and what meta.json says.

    predict(x) takes a float32 batch (N, C, H, W) and returns probabilities (N, classes)."""

    def __init__(self, folder, threads: int = 1, *, version: str | None = None, meta: dict | None = None):
        self.folder = as_path("folder", folder)
        if meta is None:
            try:
                meta = json.loads((self.folder / META_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"{str(self.folder / META_FILE)!r} is missing or not JSON: {exc}") from None
        self.meta = check_meta(meta)
        self.version = check_version(version if version is not None else meta.get("version", self.folder.name))
        self.classes: list[str] = list(meta["classes"])
        self.input_shape: tuple[int, ...] = tuple(meta["input_shape"])
        path = existing_file(self.folder / MODEL_FILE, "model file")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own types for a damaged or foreign file
            raise ValueError(f"ONNX Runtime cannot load {str(path)!r}: {exc}") from None
        (inp,), out = self.session.get_inputs(), self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        fixed = list(inp.shape[1:])
        if len(fixed) != 3 or any(isinstance(d, int) and d != m for d, m in zip(fixed, self.input_shape, strict=True)):
            raise ValueError(f"the model's input is {inp.shape}, but meta['input_shape'] says {list(self.input_shape)}")
        if isinstance(out.shape[-1], int) and out.shape[-1] != len(self.classes):
            raise ValueError(f"the model has {out.shape[-1]} outputs, but meta['classes'] names {len(self.classes)}")
        self.size_kb = path.stat().st_size / 1024
        self._softmax = meta.get("output", "logits") == "logits"

    def predict(self, x) -> np.ndarray:
        """Probabilities (N, classes) for the batch `x` (N, C, H, W)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError(f"x must be a batch of shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        (out,) = self.session.run([self.output_name], {self.input_name: x})
        if out.shape != (len(x), len(self.classes)):
            raise ValueError(f"the model returned shape {out.shape}, expected ({len(x)}, {len(self.classes)})")
        return softmax(out) if self._softmax else out

    def __repr__(self) -> str:
        acc = self.meta.get("accuracy")
        return (f"Model({self.version!r}, {len(self.classes)} classes, input {list(self.input_shape)}, "
                f"{self.size_kb:.0f} kB{f', accuracy {acc:.3f}' if acc is not None else ''})")


def load_model(version: str, root=None, threads: int = 1) -> Model:
    """The stored `version` as a Model. A folder that a killed write left incomplete, or whose
    files changed since, is refused rather than served."""
    version = check_version(version)
    folder = _root(root) / version
    if not folder.is_dir():
        have = versions(root)
        raise ValueError(f"no model version {version!r} in {str(folder.parent)!r}; "
                         f"stored: {', '.join(have) if have else 'none (run default_model() first)'}")
    if not cache.is_complete(folder):
        raise ValueError(f"{str(folder)!r} is incomplete or was changed after it was written: "
                         "save or export that version again")
    return Model(folder, threads)


def default_model(version: str = "v1", root=None, *, epochs: int = 10, width: int = 16, seed: int = 0,
                  noise: float = 0.0, shift: int = 0, dynamo: bool | None = None, force: bool = False,
                  progress: bool = False) -> Path:
    """The store's folder of `version`, trained and exported first unless it is already there:
    lablib's SmallCNN on scikit-learn's 8x8 digits (no download), `epochs` epochs with the one
    training loop, exported with onnx_export (symbolic batch), its test accuracy measured with
    ONNX Runtime on the exported file. A few seconds on 2 cores. force=True trains again.

    noise: the standard deviation of Gaussian noise added to every training batch (pixels
    clipped to [0, 1]): a cheap robustness augmentation; 0 trains on the clean images.
    shift: also shift every training image by a random whole number of pixels in [-shift,
    shift] each way (lablib.data.augment.weak); 0: no shift.
    dynamo: the exporter (None: torch's default; False: the TorchScript one, much quicker to
    export a model this small)."""
    from lablib.core.validate import real

    version = check_version(version)
    folder = _root(root) / version
    integer("epochs", epochs, 1, 1000)
    integer("width", width, 1, 1024)
    integer("seed", seed, 0)
    noise = real("noise", noise, 0, 1)
    shift = integer("shift", shift, 0, 4)
    if dynamo is not None and not isinstance(dynamo, bool):
        raise TypeError(f"dynamo must be True, False or None (torch's default), got {dynamo!r}")
    for name, flag in (("force", force), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if not force and cache.is_complete(folder):
        return folder
    try:
        import torch
    except ImportError:
        raise RuntimeError(f"no model {version!r} in {str(folder.parent)!r}, and torch is not installed to "
                           "train one: export the model where torch is, then copy the folder here") from None
    from lablib.data import augment, datasets
    from lablib.deploy import onnx_export
    from lablib.nets import models, train

    config.seed_everything(seed)
    splits = datasets.digits()  # the fixed split every lab uses (seed 0)
    model = models.SmallCNN(width=width)
    noise_gen = torch.Generator().manual_seed(seed)

    def augmented(model, batch):  # the default step on a shifted, noisy copy of the batch
        x, y = batch
        if shift:
            x = augment.weak(x, shift, generator=noise_gen)
        x = (x + noise * torch.randn(x.shape, generator=noise_gen)).clamp(0, 1)
        return train.classify(model, (x, y))

    start = time.perf_counter()
    train.fit(model, datasets.loader(splits.train, batch_size=32, shuffle=True, seed=seed), epochs=epochs,
              lr=3e-3, schedule="cosine", device="cpu", progress=progress, desc=f"train {version}",
              **({"step": augmented} if noise or shift else {}))
    train_s = time.perf_counter() - start
    model.eval()
    test_x, test_y = splits.test.x.numpy(), splits.test.y.numpy()
    meta = {"classes": list(splits.classes), "input_shape": list(splits.test.x.shape[1:]),
            "output": "logits", "preprocessing": DIGITS_PREPROCESSING,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "trained": {"model": f"SmallCNN(width={width})", "data": "sklearn digits, train split",
                        "epochs": epochs, "batch_size": 32, "lr": 3e-3, "seed": seed, "noise": noise, "shift": shift,
                        "seconds": round(train_s, 2), "torch": torch.__version__},
            "accuracy_data": f"sklearn digits, test split ({len(test_y)} images)"}

    def fill(target: Path) -> None:
        with onnx_export.quiet():  # the exporter's progress lines and warnings, collected
            onnx_export.onnx_export(model, splits.test.x[:2], target, dynamo=dynamo)
        # the accuracy of the file that will be served, measured with ONNX Runtime
        probs = Model(target.parent, version=version, meta=meta).predict(test_x)
        meta["accuracy"] = float((probs.argmax(axis=1) == test_y).mean())

    return _write(folder, version, fill, meta)


class Faulty:
    """A deliberately broken version, for trying a rollback: `model` (a Model) that raises on a
    share `error_rate` of its calls and sleeps `delay_s` before answering. It answers as
    `version` (default: the model's own with "-faulty" appended)."""

    def __init__(self, model: Model, error_rate: float = 1.0, delay_s: float = 0.0, version: str | None = None,
                 seed: int = 0):
        import random

        from lablib.core.validate import real

        if not isinstance(model, Model):
            raise TypeError(f"model must be a Model, got {type(model).__name__}")
        self.model = model
        self.error_rate = real("error_rate", error_rate, 0, 1)
        self.delay_s = real("delay_s", delay_s, 0, 60)
        self.version = check_version(version if version is not None else f"{model.version}-faulty")
        self.classes, self.input_shape, self.meta = model.classes, model.input_shape, model.meta
        self._rng = random.Random(integer("seed", seed, 0))

    def predict(self, x) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self._rng.random() < self.error_rate:
            raise RuntimeError(f"{self.version}: a deliberate failure (error_rate={self.error_rate:g})")
        return self.model.predict(x)

    def __repr__(self) -> str:
        return f"Faulty({self.version!r}, error_rate={self.error_rate:g}, delay_s={self.delay_s:g})"
