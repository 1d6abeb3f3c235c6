"""Caches under data/: files and folders written atomically, keyed by the settings that made them.

A reader never sees half a file (write under a temporary name beside it, then rename), a changed
setting never picks up a stale entry (the key hashes the settings), and the leftovers of a write
that was killed half-way are removed by the next write into the same folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

# torch is optional for this module: the model service's image (docker/serving.Dockerfile)
# runs ONNX Runtime without torch, and lablib.deploy.serving imports this module.
try:
    import torch
except ImportError:
    torch = None

from lablib.core import config
from lablib.core.validate import path as as_path

_TMP = ".tmp-"  # every temporary name starts with this, so leftovers can be found and removed
_MARKER = ".complete"  # written last into a folder by write_folder


def _clean_leftovers(folder: Path, name: str) -> None:
    """Remove temporaries of `name` that an interrupted write left in `folder`."""
    for stale in folder.glob(f"{_TMP}{name}.*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, then rename: a reader never sees half a file."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    path = as_path("path", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_TMP}{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a plain file is readable by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_folder(folder, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) to fill a fresh temporary folder beside `folder`, then rename it into place.

    An existing `folder` is replaced only when it holds nothing but what such a write puts there
    (it was written by write_folder before, marked by a `.complete` file): a save never deletes a
    folder it did not write.
    """
    folder = as_path("folder", folder)
    if not callable(write):
        raise TypeError(f"write must be a function that fills the folder it is given, got {type(write).__name__}")
    if folder.exists() and not (folder / _MARKER).is_file():
        if not folder.is_dir() or any(folder.iterdir()):
            raise FileExistsError(f"folder {str(folder)!r} exists and was not written by write_folder: "
                                  "refusing to replace it (choose another folder)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(folder.parent, folder.name)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{_TMP}{folder.name}."))
    try:
        write(tmp)
        # the marker lists every file's size and hash, so a file damaged later is noticed too
        (tmp / _MARKER).write_text(json.dumps(_manifest(tmp), indent=1), encoding="utf-8")
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{_TMP}{folder.name}."))
            os.replace(folder, old / "old")  # out of the way first: os.replace cannot overwrite a folder
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _manifest(folder: Path) -> dict[str, list]:
    """{relative path: [size, sha256]} of every file in `folder` but the marker."""
    files = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != _MARKER:
            h = hashlib.sha256()
            with open(f, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    h.update(block)
            files[f.relative_to(folder).as_posix()] = [f.stat().st_size, h.hexdigest()]
    return files


def is_complete(folder) -> bool:
    """Whether `folder` was fully written by write_folder and is intact: a killed write never
    gets as far as the marker, and a file truncated or changed since then no longer matches it."""
    marker = as_path("folder", folder) / _MARKER
    try:
        expected = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, or an old empty marker
        return False
    return isinstance(expected, dict) and _manifest(Path(folder)) == expected


def fingerprint(*tensors: torch.Tensor) -> str:
    """A short hash of tensors' contents: the training data is part of a checkpoint's key."""
    if not tensors:
        raise ValueError("fingerprint needs at least one tensor (tensors is empty)")
    h = hashlib.sha256()
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"fingerprint takes tensors, got {type(t).__name__}")
        # the raw bytes, whatever the dtype (NumPy has no bfloat16)
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def _setting(value) -> str:
    """How json writes a setting it has no type for: a tensor or array by its content (str()
    elides the middle of a big one, so two different tensors would get one key)."""
    if torch is not None and isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)} {value.dtype} {fingerprint(value)}"
    if isinstance(value, np.ndarray) and value.dtype != object:
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:12]
        return f"array {value.shape} {value.dtype} {digest}"
    return str(value)


def cache_folder(name: str, settings: dict) -> Path:
    """data/cache/<name>-<hash of settings>: change any setting (steps, widths, data
    fingerprint...) and the key changes, so a stale checkpoint is never picked up."""
    if (not isinstance(name, str) or not name or Path(name).name != name or name.startswith(".")
            or not name.isprintable()):
        raise ValueError(f"name must be a plain folder name (printable, no '/', no '..'), got {name!r}")
    if not isinstance(settings, dict):
        raise TypeError(f"settings must be a dict, got {type(settings).__name__}")
    try:
        text = json.dumps(settings, sort_keys=True, default=_setting)
    except (TypeError, ValueError) as exc:  # keys of mixed types cannot be sorted; a circular dict
        raise TypeError(f"settings must be a dict with str keys and JSON-like values: {exc}") from None
    key = hashlib.sha256(text.encode()).hexdigest()[:12]
    return config.data_dir() / "cache" / f"{name}-{key}"


def load_or_train(name: str, settings: dict, model, train: Callable) -> tuple[bool, dict]:
    """A model's weights from data/cache/<name>-<key of settings> if a complete checkpoint is
    there; else train(model) (which returns a dict of JSON-able facts worth keeping, e.g. the
    training time) and save the weights and that dict atomically.

    Returns (loaded, facts): loaded is True when the cache was used. A folder that is incomplete,
    changed since it was written, or does not fit `model` (another architecture) is retrained and
    replaced, never trusted. Weights are read with weights_only=True."""
    if torch is None or not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(train):
        raise TypeError(f"train must be a function model -> dict, got {type(train).__name__}")
    folder = cache_folder(name, settings)
    if is_complete(folder):
        # load_state_dict copies the tensors that fit before it raises on those that do not: keep
        # the model's own weights to put back, so a rejected checkpoint never half-loads it
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        try:
            state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
            facts = json.loads((folder / "facts.json").read_text(encoding="utf-8"))
            model.load_state_dict(state)
            return True, facts
        except (OSError, ValueError, RuntimeError, KeyError):  # unreadable, or another architecture
            model.load_state_dict(before)
    facts = train(model)
    if facts is None:
        facts = {}
    if not isinstance(facts, dict):
        raise TypeError(f"train(model) must return a dict (or None), got {type(facts).__name__}")
    text = json.dumps(facts)  # a TypeError here names what cannot be saved, before anything is written

    def write(tmp: Path) -> None:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / "weights.pt")
        (tmp / "facts.json").write_text(text, encoding="utf-8")

    write_folder(folder, write)
    return False, facts
