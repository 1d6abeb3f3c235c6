"""Bad-input probe of lablib's public API: call every public function the way a careless learner
or a hostile file would, and sort what happens into five classes.

    python tools/probe.py                          # the lablib of this checkout
    python tools/probe.py --tree ../old-checkout   # another checkout's lablib (the "before")
    python tools/probe.py --only quantize --timeout 10 --json data/probe/q.json

Each case of the catalogue below makes ONE call with one bad argument (a wrong type, a number out
of range, NaN, an empty or mis-shaped tensor, a missing path, an environment variable) or with an
edge input that must be handled correctly (a 16-bit PNG, a FIFO in an image folder, a truncated
checkpoint, a NaN bit pattern). It runs in a forked worker process with a time limit, in a
scratch project (LAB_ROOT, also the working directory) of its own, and ends in one class:

  clear    raised ValueError / TypeError / LookupError / OSError (or a subclass: KeyError,
           FileNotFoundError, ...) whose message names the bad argument (the environment
           variable, the file): what the hardening asks of every public function
  unclear  raised anything else (a RuntimeError from deep inside torch, an AttributeError, ...),
           or a message that does not say which argument was wrong
  silent   returned normally although the input is invalid
  wrong    returned a value the case's oracle rejects (a 16-bit PNG read as all 1.0, a label -1
           counted as class 0), lost data the call was not asked to touch, or wrote outside the
           project's data/ and results/ folders (checked after every case)
  hang     still running after --timeout seconds (killed)
  ok       an edge input handled correctly (its oracle holds): not a failure
  n/a      the function, or an argument the case passes, does not exist in this checkout

"Names the argument" means the argument's name as a whole word (a plural argument also by its
singular: "provider 'gpu' is unknown" names `providers`), or for a path the path itself.

The probe never downloads (HF_HUB_OFFLINE=1, LAB_ALLOW_DOWNLOADS unset) and keeps every input
tiny. Its scratch files live in a folder of their own under data/probe/ (several probes can run
at once) and are removed afterwards (--keep keeps them).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import math
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
import types
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("clear", "unclear", "silent", "wrong", "hang")  # the five the issue counts
OTHER = ("ok", "n/a")
# An error is "clear" only if it is one of these (or a subclass) and names what was wrong.
CLEAR_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, LookupError, OSError)
NAN, INF = float("nan"), float("inf")
MEMORY_LIMIT = 8 * 2**30  # address space per worker: a runaway allocation fails, never swaps


class _Lazy:
    """A module imported on first use: torch must not load before the environment is set."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


torch = _Lazy("torch")
nn = _Lazy("torch.nn")


# --- the case model -------------------------------------------------------------------------------


class NotApplicable(Exception):
    """The function or argument a case calls does not exist in the checkout under test."""


@dataclass
class Ctx:
    """What a case's callables get: the function under test (resolved in the checkout being
    probed), the case's input folder and its project root (LAB_ROOT, the working directory)."""

    fn: Callable
    dir: Path
    root: Path


@dataclass
class Case:
    """One call with one bad (or edge) input.

    call(ctx)          makes the inputs and calls ctx.fn once; its result goes to `check`
    names              what a clear error must name (any of them): the argument, the variable,
                       the file; or a function of ctx, for names known once the files exist
    check(result, ctx) oracle for a returned value: True correct (ok), False wrong, None
                       accepted without a word (silent); without an oracle a return is silent
    after(ctx)         checked whatever happened: a problem (data lost, a file written outside
                       the folder it was given) makes the case wrong
    env                environment variables set for the call
    errors             the exception types a clear error may have
    needs              fixtures the parent builds once before forking (see FIXTURES)
    """

    target: str
    label: str
    call: Callable[[Ctx], Any]
    names: tuple[str, ...] | Callable[[Ctx], tuple[str, ...]] = ()
    check: Callable[[Any, Ctx], bool | None] | None = None
    after: Callable[[Ctx], str | None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    errors: tuple[type[BaseException], ...] = CLEAR_ERRORS
    needs: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """'methods/quantize' for lablib.methods.quantize.quantize_tensor."""
        return "/".join(self.target.split(".")[1:3])

    @property
    def id(self) -> str:
        """'quantize.quantize_tensor:bits=0'."""
        return f"{'.'.join(self.target.split('.')[2:])}:{self.label}"


@dataclass
class V:
    """A value made in the worker from the case's context: tensors, models, files."""

    make: Callable[[Ctx], Any]


@dataclass
class Bad:
    """One bad value for an argument of a sweep. alt=True: an acceptable other spelling (a list
    for a tensor), correct if the call returns what the valid baseline returns."""

    label: str
    value: Any
    names: tuple[str, ...] = ()
    check: Callable[[Any, Ctx], bool | None] | None = None
    alt: bool = False


def made(label: str, make: Callable[[], Any], **kwargs) -> Bad:
    """A bad value made in the worker (a tensor, a model)."""
    return Bad(label, V(lambda ctx: make()), **kwargs)


def at(label: str, make: Callable[[Ctx], Any], **kwargs) -> Bad:
    """A bad value made in the worker from the case's context (a file in its folder)."""
    return Bad(label, V(make), **kwargs)


def value(v, ctx: Ctx):
    return v.make(ctx) if isinstance(v, V) else v


def short(v) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    text = repr(v)
    return text if len(text) <= 24 else type(v).__name__


def sweep(target: str, base: dict | Callable[[Ctx], dict], bad: dict[str, list], *,
          aliases: dict[str, tuple[str, ...]] | None = None,
          needs: tuple[str, ...] = ()) -> list[Case]:
    """A case per (argument, bad value): `base` gives valid keyword arguments (a dict whose
    values may be V, or a function of ctx), each case replaces one of them."""
    aliases = aliases or {}

    def kwargs_of(ctx) -> dict:
        return base(ctx) if callable(base) else {k: value(v, ctx) for k, v in base.items()}

    cases = []
    for arg, values in bad.items():
        for b in values:
            b = b if isinstance(b, Bad) else Bad(short(b), b)

            def call(ctx, arg=arg, b=b):
                return ctx.fn(**{**kwargs_of(ctx), arg: value(b.value, ctx)})

            check = b.check
            if b.alt:
                def check(result, ctx):
                    return same(result, ctx.fn(**kwargs_of(ctx)))
            names = b.names or (arg, *aliases.get(arg, ()))
            cases.append(Case(target, f"{arg}={b.label}", call, names, check, needs=needs))
    return cases


def case(target: str, label: str, call, names=(), **kwargs) -> Case:
    return Case(target, label, call, names if callable(names) else tuple(names), **kwargs)


def env_case(target: str, var: str, val: str, check=None, names=None) -> Case:
    """config-style functions read an environment variable: call fn() with it set."""
    return Case(target, f"env {var}={val}", lambda ctx: ctx.fn(), names or (var,), check,
                env={var: val})


def same(a, b) -> bool:
    """Equal values: tensors (shape and values, NaN equal to NaN), numbers, containers."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        both = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        if not both or a.shape != b.shape:
            return False
        return bool(torch.allclose(a.double(), b.double(), equal_nan=True))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# --- inputs ---------------------------------------------------------------------------------------


def lab(path: str):
    """A lablib attribute by dotted path, from the checkout under test."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def rand(*shape, seed: int = 0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def randn(*shape, seed: int = 0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tensor(*args, **kwargs):
    return torch.tensor(*args, **kwargs)


def imgs(n: int = 4, c: int = 1, s: int = 8):
    return rand(n, c, s, s)


def labels(n: int = 12, k: int = 3):
    return torch.arange(n) % k


def imageset(n: int = 12, k: int = 3, y=None, x=None):
    return lab("lablib.data.datasets.ImageSet")(imgs(n) if x is None else x,
                                                labels(n, k) if y is None else y,
                                                [f"c{i}" for i in range(k)])


def batches_of(ds, batch_size: int = 4):
    return torch.utils.data.DataLoader(ds, batch_size=batch_size)


def raw_batches(x, y, batch_size: int = 4):
    """A loader over (x, y) that bypasses ImageSet's own checks: the bad data reaches the
    function under test, whatever ImageSet accepts in this checkout."""
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def cnn(k: int = 3, c: int = 1):
    torch.manual_seed(0)
    return lab("lablib.nets.models.SmallCNN")(c, k, 4)


def mlp():
    torch.manual_seed(0)
    return lab("lablib.nets.models.MLP")(64, (8,), 3)


def logits(n: int = 4, k: int = 3, seed: int = 0):
    return randn(n, k, seed=seed)


def grad_scaler():
    return lab("lablib.core.compat.grad_scaler")("cpu", enabled=False)


def write_file(ctx: Ctx, name: str, data: bytes | str = b"") -> Path:
    """A file in the case's folder (every input file lives there)."""
    path = ctx.dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def fifo(ctx: Ctx, name: str) -> Path:
    path = ctx.dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def symlink_loop(ctx: Ctx, name: str) -> Path:
    path = ctx.dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.name)
    return path


def folder(ctx: Ctx, name: str, *files: str) -> Path:
    path = ctx.dir / name
    path.mkdir(parents=True, exist_ok=True)
    for f in files:
        (path / f).write_text("foreign file", encoding="utf-8")
    return path


def truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def png(ctx: Ctx, rel: str, mode: str = "grey8", size: int = 8) -> Path:
    """An image whose pixels run from 0.25 to 0.75 of full scale, as 8-bit grey, 16-bit grey
    ("grey16", a PNG) or 32-bit float ("float", a TIFF)."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0.25, 0.75, size * size).reshape(size, size)
    array = {"grey8": (ramp * 255).round().astype(np.uint8),
             "grey16": (ramp * 65535).round().astype(np.uint16),
             "float": ramp.astype(np.float32)}[mode]
    path = ctx.dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def ramp_loaded(ds) -> bool:
    """An image folder of ramp images (see png) loaded with its real values."""
    return abs(ds.x.min().item() - 0.25) < 0.02 and abs(ds.x.max().item() - 0.75) < 0.02


def copy_fixture(ctx: Ctx, name: str, dst: str) -> Path:
    src, out = FIXTURE_DIR / name, ctx.dir / dst
    out.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, out)
    else:
        shutil.copy(src, out)
    return out


def no_escape(*rels: str) -> Callable[[Ctx], str | None]:
    def after(ctx):
        escaped = [r for r in rels if (ctx.dir / r).exists()]
        return f"wrote outside the folder it was given: {escaped}" if escaped else None
    return after


def still_there(rel: str) -> Callable[[Ctx], str | None]:
    def after(ctx):
        return None if (ctx.dir / rel).exists() else f"deleted {rel}, which it did not write"
    return after


# --- fixtures: built once in the parent (each fork shares them), never modified by a case --------

FIXTURE_DIR = Path()  # set by run()
_FIXTURES: dict[str, Any] = {}


def _make_onnx():
    path = FIXTURE_DIR / "model.onnx"
    lab("lablib.deploy.onnx_export.onnx_export")(cnn(), imgs(2), path, dynamo=False)
    return path


def _make_unet():
    torch.manual_seed(0)
    return lab("lablib.methods.diffusion.make_unet")(8, 1, 2, (8, 8))


def _make_checkpoint():
    path = FIXTURE_DIR / "unet"
    lab("lablib.methods.diffusion.save_unet")(fixture("unet"), path, {"loss": [1.0]})
    return path


def _make_state_dict():
    path = FIXTURE_DIR / "weights.pt"
    torch.save(cnn().state_dict(), path)
    return path


def _warm_dynamo():
    """The first dynamo export of a process takes seconds; later ones in its forks much less."""
    try:
        lab("lablib.deploy.onnx_export.onnx_export")(cnn(), imgs(2), FIXTURE_DIR / "warm.onnx")
    except Exception:  # the cases will say what is wrong
        pass


FIXTURES: dict[str, Callable[[], Any]] = {
    "onnx": _make_onnx,
    "unet": _make_unet,
    "checkpoint": _make_checkpoint,
    "weights": _make_state_dict,
    "pipe": lambda: lab("lablib.methods.stable_diffusion.tiny_sd_pipeline")(),
    "schedulers": lambda: lab("lablib.methods.diffusion.make_schedulers")(),
    "dynamo": _warm_dynamo,
    "digits": lambda: lab("lablib.data.datasets.digits")(),
    "serving_store": lambda: _make_serving_store(),
}

SERVING_META = {"classes": ["a", "b", "c"], "input_shape": [1, 8, 8], "preprocessing": {"invert": "auto"}}


def _make_serving_store():
    """A model store holding version v1: the fixture CNN (3 classes) exported to ONNX."""
    root = FIXTURE_DIR / "serving-models"
    lab("lablib.deploy.serving.save_model")("v1", fixture("onnx"), SERVING_META, root)
    return root


def fixture(name: str):
    if name not in _FIXTURES:
        _FIXTURES[name] = FIXTURES[name]()
    return _FIXTURES[name]


# --- families of bad values -----------------------------------------------------------------------


def pos_int(*extra) -> list:
    """Bad values for an int that must be >= 1."""
    return [0, 2.5, "2", None, *extra]


def positive(*extra) -> list:
    """Bad values for a number that must be > 0."""
    return [0.0, NAN, "1", None, *extra]


def fraction(*extra) -> list:
    """Bad values for a share in [0, 1]."""
    return [1.5, NAN, "0.5", *extra]


def missing(name: str, *also: str) -> Bad:
    """A path that does not exist; a clear error names the argument or the path."""
    return at("<missing>", lambda ctx: ctx.dir / name, names=(*also, name))


def a_dir(name: str, *also: str) -> Bad:
    return at("<a directory>", lambda ctx: folder(ctx, name), names=(*also, name))


def a_file(name: str, *also: str) -> Bad:
    return at("<a file>", lambda ctx: write_file(ctx, name), names=(*also, name))


# --- the catalogue: lablib.core -------------------------------------------------------------------


def core_config() -> list[Case]:
    m = "lablib.core.config."
    threads = ("100000", "²", "0", "1.5", "four")
    cases = [env_case(m + "threads", "LAB_THREADS", v) for v in threads]
    cases += [env_case(m + "scale", "LAB_SCALE", v) for v in ("big", "smoke2")]
    cases += [env_case(m + "solutions", "LAB_SOLUTIONS", v) for v in ("yes", "true")]
    cases += [env_case(m + "lab_name", "LAB_NAME", v) for v in ("lab", "Lab 1")]
    cases += [env_case(m + "device", "LAB_DEVICE", v) for v in ("gpu", "cuda")]

    def root_is_a_file(ctx):
        os.environ["LAB_ROOT"] = str(write_file(ctx, "root.txt"))
        return ctx.fn()

    cases += [
        env_case(m + "project_root", "LAB_ROOT", "~/lab-probe-root",
                 check=lambda r, ctx: "~" not in Path(r).parts),
        case(m + "project_root", "env LAB_ROOT=<a file>", root_is_a_file, ("LAB_ROOT",)),
        case(m + "profile", "env LAB_SCALE=big", lambda ctx: ctx.fn(smoke={"a": 1}, cpu={"a": 2}),
             ("LAB_SCALE",), env={"LAB_SCALE": "big"}),
    ]
    good = {"smoke": {"epochs": 1}, "cpu": {"epochs": 2}, "gpu": {"epochs": 3}}
    cases += sweep(m + "profile", good, {
        "smoke": [None, {"steps": 1}],
        "cpu": ["epochs=2"],
        "gpu": [{"epochs": 1, "extra": 2}],
        "active": ["big", 1],
    })
    cases += sweep(m + "device", {}, {"prefer": ["gpu", 1, "cuda"]},
                   aliases={"prefer": ("device",)})
    cases += sweep(m + "seed_everything", {}, {"seed": [-1, "0", True, 2**64]})
    cases += sweep(m + "lab_sources", {}, {
        "labs_dir": [missing("nope", "labs_dir"), a_file("labs.txt", "labs_dir"), 123]})
    return cases


def core_env() -> list[Case]:
    m = "lablib.core.env."
    cases = sweep(m + "speed_verdict", {}, {"train_img_per_s": positive(INF)})
    cases += sweep(m + "print_report", {}, {"checks": ["abc", [None], 5]})
    cases += [env_case(m + "line", "LAB_SCALE", "big"), env_case(m + "stamp", "LAB_SCALE", "big")]
    return cases


RECORD = {"lab": "01_probe", "scale": "cpu", "claims": [], "metrics": {"m": 1.0}, "exercises": {},
          "taught_steps": {}, "solutions_mode": False, "notes": "", "wall_s": 1.0,
          "env": {"date": "2026-01-01", "device": "cpu", "versions": {}}}
RECORD_FILE = "01_probe.cpu.json"


def record_file(ctx: Ctx, sub: str = "results", **changes) -> Path:
    """A results file as results.record writes it; a change to ... removes that key."""
    entry = {k: v for k, v in {**RECORD, **changes}.items() if v is not ...}
    return write_file(ctx, f"{sub}/{RECORD_FILE}", json.dumps(entry))


def core_results() -> list[Case]:
    m = "lablib.core.results."
    claim = {"name": "probe", "measured": 1.0, "holds": True, "condition": ">= 0", "source": ""}
    cases = sweep(m + "claim", claim, {
        "name": ["", None],
        "measured": [NAN, made("tensor[2]", lambda: tensor([1.0, 2.0]))],
        "holds": ["yes"],
        "condition": [None],
        "asserted": ["no"],
    }, aliases={"measured": ("probe",)})
    cases += sweep(m + "record", {"metrics": {"m": 1.0}, "lab": "01_probe", "scale": "cpu"}, {
        "metrics": [[1, 2], {"bad_metric": NAN}, {"bad_metric": None}, {1: 2.0}, {}],
        "notes": [123],
        "scale": ["big"],
        "lab": ["lab1", 123],
    }, aliases={"metrics": ("metric", "bad_metric")})
    cases.append(case(m + "record", "env LAB_NAME=lab", lambda ctx: ctx.fn({"m": 1.0}, scale="cpu"),
                      ("LAB_NAME",), env={"LAB_NAME": "lab"}))

    def load(label, make):
        return case(m + "load_records", label, lambda ctx: ctx.fn("cpu", make(ctx).parent),
                    (RECORD_FILE,))

    where = f"results/{RECORD_FILE}"
    cases += [
        load("file=truncated JSON", lambda ctx: write_file(ctx, where, '{"lab": "01_')),
        load("file=empty", lambda ctx: write_file(ctx, where)),
        load("file=no lab key", lambda ctx: write_file(ctx, where, "{}")),
        load("file=lab not a str", lambda ctx: record_file(ctx, lab=5)),
        load("file=binary", lambda ctx: write_file(ctx, where, b"\xff\xfe\x00")),
        load("file=FIFO", lambda ctx: fifo(ctx, where)),
        load("file=directory", lambda ctx: folder(ctx, where)),
        load("file=symlink loop", lambda ctx: symlink_loop(ctx, where)),
    ]
    cases += sweep(m + "load_records", {"folder": V(lambda ctx: record_file(ctx).parent)}, {
        "scale": ["big", None],
        "folder": [missing("nope", "folder"), at("<a file>", record_file, names=("folder",))],
    })
    spoiled = [("no env", {"env": ...}), ("notes=123", {"notes": 123}),
               ("wall_s='x'", {"wall_s": "x"}), ("claim without keys", {"claims": [{"name": "c"}]}),
               ("metrics a list", {"metrics": [1]})]
    for label, changes in spoiled:
        cases.append(case(m + "render", f"file={label}",
                          lambda ctx, c=changes: ctx.fn(("cpu",), record_file(ctx, **c).parent,
                                                        ctx.dir / "labs"),
                          (RECORD_FILE,)))
    records = {"folder": V(lambda ctx: record_file(ctx).parent), "labs_dir": V(lambda ctx: ctx.dir)}
    cases += sweep(m + "render", records, {"scales": ["cpu", None]})
    verdicts = {"folder": records["folder"], "scale": "cpu", "minimum": 1}
    cases += sweep(m + "exercise_problems", verdicts, {"minimum": [-1, "3"]})

    def main_with_bad_record(ctx):
        record_file(ctx, sub="../results", notes=123)  # the project's own results/ folder
        return ctx.fn(["--scale", "cpu", "--out", str(ctx.dir / "out.md")])

    cases.append(case(m + "main", f"results/{RECORD_FILE} has notes=123", main_with_bad_record,
                      (RECORD_FILE,)))
    cases += sweep(m + "fmt", {}, {"value": [None, [1, 2]]})
    cases += sweep(m + "lab_names", {}, {"labs_dir": [missing("nope", "labs_dir")]})
    return cases


def core_cache() -> list[Case]:
    m = "lablib.core.cache."
    cases = sweep(m + "write_atomic", {"path": V(lambda ctx: ctx.dir / "out.txt"), "text": "x"}, {
        "text": [None, b"bytes"],
        "path": [None, at("<a directory>", lambda ctx: folder(ctx, "adir", "keep.txt"),
                          names=("path", "adir")),
                 at("<under a file>", lambda ctx: write_file(ctx, "afile") / "x.txt",
                    names=("path", "afile"))],
    })

    def write_one(tmp):
        (tmp / "w.txt").write_text("w", encoding="utf-8")

    fill = {"folder": V(lambda ctx: ctx.dir / "out"), "write": write_one}
    cases += sweep(m + "write_folder", fill, {
        "write": [None, 123],
        "folder": [None, a_file("afile", "folder")],
    })

    def into_data_dir(ctx):
        write_file(ctx, "../data/keep.txt", "x")
        return ctx.fn(lab("lablib.core.config.data_dir")(), write_one)

    cases += [
        case(m + "write_folder", "folder=<non-empty foreign folder>",
             lambda ctx: ctx.fn(folder(ctx, "mine", "keep.txt"), write_one), ("folder", "mine"),
             after=still_there("mine/keep.txt")),
        case(m + "write_folder", "folder=config.data_dir()", into_data_dir, ("folder", "data"),
             after=still_there("../data/keep.txt")),
    ]
    cases += sweep(m + "is_complete", {}, {"folder": [None, 123]})
    cases += [
        case(m + "fingerprint", "tensors=()", lambda ctx: ctx.fn(), ("tensors",)),
        case(m + "fingerprint", "tensors=('x',)", lambda ctx: ctx.fn("x"), ("tensors",)),
        case(m + "fingerprint", "tensors=[a list]", lambda ctx: ctx.fn([rand(3)]), ("tensors",)),
        case(m + "fingerprint", "tensor=bfloat16 (valid)", lambda ctx: ctx.fn(rand(3).bfloat16()),
             check=lambda r, ctx: isinstance(r, str)),
    ]
    cases += sweep(m + "cache_folder", {"name": "probe", "settings": {"a": 1}}, {
        "name": ["../../x", "", None, "x\0y"],
        "settings": [None, {1: 2, "1": 3}],
    })

    def two_big_tensors(ctx):
        data = torch.arange(5000)
        other = data.clone()
        other[2500] = -1
        return ctx.fn("p", {"data": data}), ctx.fn("p", {"data": other})

    # str(tensor) elides the middle of a big tensor: two different settings, one key
    cases.append(case(m + "cache_folder", "settings={big tensor} differing in the middle (valid)",
                      two_big_tensors, ("settings",), check=lambda r, ctx: r[0] != r[1]))
    return cases


def core_progress() -> list[Case]:
    m = "lablib.core.progress."
    cases = sweep(m + "remember", {"lab": "02_distillation", "exercise": "my_tau"}, {
        "lab": [None, "", "distillation", "../02_x", 2],
        "exercise": [None, "", 3],
    })
    cases.append(case(m + "load", "a damaged progress.json: no progress",
                      lambda ctx: ((lab("lablib.core.config.results_dir")() / "progress.json").parent.mkdir(exist_ok=True),
                                   (lab("lablib.core.config.results_dir")() / "progress.json").write_text("{oops"),
                                   ctx.fn())[-1],
                      check=lambda r, ctx: r == {}))
    return cases


def core_checks() -> list[Case]:
    m = "lablib.core.checks."

    def ref(x):
        return x * 2

    def make(g):
        return (torch.rand(3, generator=g),)

    base = {"candidate": ref, "reference": ref, "make_inputs": make, "quiet": True}
    cases = sweep(m + "check_function", base, {
        "candidate": [123],
        "reference": [None],
        "make_inputs": [None],
        "trials": [0, "2"],
        "time_limit": [0, NAN],
        "atol": [-1.0],
        "seed": ["0"],
        "name": [123],
    })
    cases += sweep(m + "check_value", {"got": 1.0, "expected": 1.0, "quiet": True}, {
        "atol": [-1.0, NAN],
        "rtol": ["x"],
    })
    two = {"got": V(lambda ctx: rand(3)), "expected": V(lambda ctx: rand(3))}
    cases += sweep(m + "difference", two, {"atol": [-1.0, "x"], "rtol": [-1.0]})
    linear = V(lambda ctx: nn.Linear(2, 2))
    modules = {"candidate": linear, "reference": linear, "quiet": True,
               "make_input": lambda g: torch.rand(1, 2, generator=g)}
    cases += sweep(m + "check_module", modules, {
        "reference": [None],
        "make_input": [None],
        "trials": [0, None],
        "time_limit": [-1],
    })
    cases += sweep(m + "agrees", {"fn": ref, "reference": ref, "make_inputs": make},
                   {"fn": [None], "reference": [None]})
    cases += sweep(m + "exercise", {}, {"fn": [123, None]})
    cases += sweep(m + "answer", {"value": 1}, {"name": ["my var", 123, None]})
    return cases


def core_show() -> list[Case]:
    m = "lablib.core.show."
    cases = sweep(m + "source", {}, {"obj": [123, None, len]})
    cases += sweep(m + "show", {}, {"obj": [None]})
    cases += sweep(m + "table", {"rows": [{"a": 1}]}, {
        "rows": [[], None, [1, 2], {"r": 1}],
        "title": [123],
        "columns": ["ab"],
    })
    return cases


def core_bench() -> list[Case]:
    m = "lablib.core.bench."

    def noop():
        return None

    quick = {"warmup": 0, "repeats": 2}
    cases = sweep(m + "latency", {"fn": noop, **quick}, {
        "fn": [None],
        "warmup": [-1, 1.5, True],
        "repeats": [0, "2", None],
        "cuda": ["yes"],
    })
    cases += sweep(m + "compare", {"fns": {"a": noop}, "rounds": 1, **quick}, {
        "fns": [{}, [noop], {"a": 1}],
        "rounds": [0],
    })
    cases += sweep(m + "verdict", {"ratio": 2.0}, {
        # inf is valid: the new time rounded to zero, infinitely faster
        "ratio": [0.0, NAN, "2", Bad("inf", INF, check=lambda r, ctx: r == "faster")],
        "margin": [1.0, NAN, None, INF],
    })
    cases += sweep(m + "compared", {"ratio": 2.0}, {
        "ratio": [0.0, NAN, "2"],
        "margin": [1.0, NAN],
    })
    cases += sweep(m + "throughput", {"fn": noop, "items": 10, **quick}, {
        "items": [0, None],
        "fn": [None],
    })
    cases += sweep(m + "peak_memory", {"fn": noop}, {
        "fn": [None],
        "interval_s": [-1.0, NAN, "0.1", 1e6],
    })
    return cases


def core_viz() -> list[Case]:
    m = "lablib.core.viz."

    def history(rows=2):
        h = lab("lablib.nets.train.History")()
        for i in range(rows):
            h.append(epoch=i + 1, train_loss=1.0 / (i + 1), val_acc=0.5)
        return h

    cases = sweep(m + "curves", {"histories": V(lambda ctx: {"run": history()})}, {
        "histories": [{}, {"run": "not a history"},
                      made("{'run': History()}", lambda: {"run": history(0)})],
        "metrics": [["nope"], []],
    }, aliases={"metrics": ("metric",)})
    cases += sweep(m + "per_layer", {"norms": {"run": {"l1": 1.0, "l2": 0.1}}}, {
        "norms": [{}, {"run": 5}, {"run": {"l1": -1.0}}, {"run": {"l1": NAN}}],
    })
    cases += sweep(m + "image_grid", {"images": V(lambda ctx: imgs())}, {
        "images": [None, made("empty", lambda: imgs(0)),
                   made("float 0..255", lambda: imgs() * 255)],
        "labels": [[1, 2]],
        "ncols": [0, "3"],
        "size": [0.0],
    })

    def counts_valid_pairs(fig, ctx):
        # labels outside 0..k-1 must be refused, not counted in some other cell
        return None if int(fig.matrix.sum()) == 2 else False

    conf = {"y_true": [0, 1, 1], "y_pred": [0, 1, 0], "classes": ["a", "b"]}
    cases += sweep(m + "confusion", conf, {
        "y_true": [Bad("[-1, 0, 1]", [-1, 0, 1], check=counts_valid_pairs, names=("y_true", "-1")),
                   Bad("[0.7, 1.2, 1.9] floats", [0.7, 1.2, 1.9], check=lambda r, ctx: False),
                   Bad("[2, 0, 1] >= len(classes)", [2, 0, 1], check=counts_valid_pairs),
                   [0, 1], None],
        "classes": [[], 3],
    })
    # the issue's own example: label -1 and prediction 2 make -1 * 2 + 2 = 0, "a correct class 0"
    cases.append(case(m + "confusion", "y_true=-1 with y_pred=2 (2 classes)",
                      lambda ctx: ctx.fn([-1, 0], [2, 1], ["a", "b"]),
                      ("y_true", "y_pred", "-1", "2"),
                      check=lambda fig, ctx: None if int(fig.matrix.sum()) == 1 else False))
    cases += sweep(m + "bars", {"values": {"a": 1.0}, "ylabel": "y"}, {
        "values": [{}, {"a": "x"}, {"a": NAN}, [1, 2]],
    })
    cases.append(case(m + "bars", "values={'a': 0} with log=True",
                      lambda ctx: ctx.fn({"a": 0.0}, "y", log=True), ("values", "log")))
    cases += sweep(m + "lines", {"series": {"a": ([1, 2], [1, 2])}, "xlabel": "x", "ylabel": "y"}, {
        "series": [{}, {"a": [1, 2, 3]}, {"a": ([1, 2], [1])}],
        "reference": [[1]],
    })
    cases.append(case(m + "lines", "series x=0 with logx=True",
                      lambda ctx: ctx.fn({"a": ([0, 1], [1, 2])}, "x", "y", logx=True),
                      ("series", "logx")))
    cases += sweep(m + "grouped_bars", {"groups": {"g": {"s": 1.0}}, "ylabel": "y"}, {
        "groups": [{}, {"g": {}}, {"g": 5}, {"g": {"s": "x"}}],
    })
    return cases


def core_compat_validate() -> list[Case]:
    m = "lablib.core.compat."
    cases = sweep(m + "version_tuple", {}, {"version": [None, "abc"]})
    cases += sweep(m + "grad_scaler", {"device": "cpu"}, {"device": ["gpu", 1], "enabled": ["no"]})
    cases += sweep("lablib.core.validate.series", {"name": "xs", "values": [1.0, 2.0], "finite": True}, {
        "values": [None, "12", 3, [1.0, "2"], [True], {"a": 1.0}, [1.0, NAN], [INF]]},
        aliases={"values": ("xs",)})  # the error names the argument the caller named

    def load(label, make, names=("path", "weights.pt")):
        return case(m + "torch_load", label, lambda ctx: ctx.fn(make(ctx)), names,
                    needs=("weights",))

    def unsafe_pickle(ctx):
        torch.save({"f": Path("x")}, ctx.dir / "weights.pt")
        return ctx.dir / "weights.pt"

    cases += [
        load("path=<missing>", lambda ctx: ctx.dir / "weights.pt"),
        load("path=<a directory>", lambda ctx: folder(ctx, "weights.pt")),
        load("path=None", lambda ctx: None, ("path",)),
        load("file=empty", lambda ctx: write_file(ctx, "weights.pt")),
        load("file=truncated",
             lambda ctx: truncated(FIXTURE_DIR / "weights.pt", ctx.dir / "weights.pt")),
        load("file=text", lambda ctx: write_file(ctx, "weights.pt", "not a checkpoint")),
        load("file=FIFO", lambda ctx: fifo(ctx, "weights.pt")),
        load("file=symlink loop", lambda ctx: symlink_loop(ctx, "weights.pt")),
        load("file=pickled object (unsafe)", unsafe_pickle),
    ]
    weights = {"path": V(lambda ctx: copy_fixture(ctx, "weights.pt", "weights.pt"))}
    cases += sweep(m + "torch_load", weights, {"map_location": ["gpu", 5]}, needs=("weights",))
    v = "lablib.core.validate."
    cases += sweep(v + "positive_int", {"name": "n"}, {"value": pos_int()},
                   aliases={"value": ("n",)})
    cases += sweep(v + "existing_file", {}, {
        "path": [None, missing("nope.txt"),
                 at("<FIFO>", lambda ctx: fifo(ctx, "f.txt"), names=("f.txt",)),
                 at("<symlink loop>", lambda ctx: symlink_loop(ctx, "loop.txt"),
                    names=("loop.txt",))],
    })
    return cases


def no_process(call, what: str):
    """The case with subprocess.Popen replaced in the worker: a bad argument that slips through
    ends "unclear" instead of starting `what` (ranks, a server)."""
    def guarded_call(ctx):
        import subprocess

        def refuse(*args, **kwargs):
            raise RuntimeError(f"the bad call got as far as starting {what}")

        subprocess.Popen = refuse
        return call(ctx)
    return guarded_call


def core_launch() -> list[Case]:
    """Every bad argument of the torchrun launcher is refused before a process starts. Should one
    slip through, subprocess.Popen is replaced in the worker, so the case ends "unclear" instead
    of launching ranks."""
    m = "lablib.core.launch."

    def script(ctx):
        return write_file(ctx, "train.py", "print('hello')\n")

    def busy(name):
        def call(ctx):
            import socket
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                s.listen(1)
                return ctx.fn(script(ctx), **{name: s.getsockname()[1]})
        return call

    bad_script = [missing("missing.py", "script"), a_dir("folder.py", "script"),
                  a_file("notes.txt", "script"), None, 3]
    bad_env = [["A=1"], "A=1", {"A": 1}, {1: "a"}, {"": "x"}, {"A": None}]
    cases = sweep(m + "torchrun", {"script": V(script), "nproc": 1, "timeout_s": 10}, {
        "script": bad_script, "nproc": pos_int(True, 10_000), "timeout_s": positive(-5, INF),
        "master_port": [80, 70_000, "29500", 2.5], "env": bad_env, "echo": ["yes"],
        "cwd": [missing("nowhere", "cwd"), a_file("cwd.txt", "cwd")]})
    cases += sweep(m + "torchrun_nodes", {"script": V(script), "nnodes": 1, "nproc": 1, "timeout_s": 10}, {
        "script": bad_script[:2], "nnodes": pos_int(True, 10_000), "nproc": [0, 10_000],
        "timeout_s": [0, NAN], "port": [80, 70_000, "29500"], "env": bad_env[:3]})
    cases += [case(m + "torchrun", "master_port=<busy>", busy("master_port"), ("master_port",)),
              case(m + "torchrun_nodes", "port=<busy>", busy("port"), ("port",)),
              case(m + "torchrun", "args=(None,)", lambda ctx: ctx.fn(script(ctx), None, nproc=1), ("args",))]
    for c in cases:
        c.call = no_process(c.call, "torchrun")
    cases += sweep(m + "stop", {"procs": []}, {"procs": [None, "proc", [1234], made("a Popen's pid list", lambda: [os.getpid()])],
                                               "grace_s": [-1, NAN, "3"]})
    return cases


# --- lablib.data ----------------------------------------------------------------------------------


def data_augment() -> list[Case]:
    m = "lablib.data.augment."
    x = {"x": V(lambda ctx: imgs())}
    cases = sweep(m + "weak", x, {
        "x": [None, made("3-d", lambda: rand(4, 8, 8)),
              made("uint8", lambda: (imgs() * 255).byte()),
              made("empty (valid)", lambda: imgs(0),
                   check=lambda r, ctx: tuple(r.shape) == (0, 1, 8, 8))],
        "shift": [-1, 1.5, True, 8],
        "flip": ["yes"],
        "generator": [123],
    })
    cases += sweep(m + "cutout", x, {
        "x": [None],
        "size": [0.0, NAN, "0.5"],
        "fill": [NAN, 2.0],
    })
    cases += sweep(m + "strong", x, {
        "x": [None],
        "n": [-1, 13, "2"],
        "cutout_size": [1.5, "0.5"],
    })
    cases += sweep(m + "rand_augment", x, {
        "x": [None, made("2 channels", lambda: imgs(c=2))],
        "n": [-1, "x"],
        "m": [31, NAN],
        "seed": ["1"],
    })
    return cases


def data_datasets() -> list[Case]:
    m = "lablib.data.datasets."
    good = {"x": V(lambda ctx: imgs(12)), "y": V(lambda ctx: labels()), "classes": ["a", "b", "c"]}
    cases = sweep(m + "ImageSet", good, {
        "x": [None, made("3-d", lambda: rand(12, 8, 8)),
              made("float 0..255", lambda: imgs(12) * 255),
              made("NaN pixels", lambda: imgs(12).fill_(NAN))],
        "y": [made("shape (11,)", lambda: labels(11)),
              made("float", lambda: labels().float() + 0.5),
              made("with -1", lambda: labels() - 1), made(">= len(classes)", lambda: labels() + 1),
              None],
        "classes": [None, [], ["a", "a", "b"]],
    })
    mask = Bad("bool mask", [True, False] * 6, check=lambda r, ctx: len(r) == 6)
    cases += sweep(m + "ImageSet.subset", {"self": V(lambda ctx: imageset())}, {
        "index": [[100], [0.5], "a", mask],
    })
    cases.append(case(m + "ImageSet.counts", "labels >= len(classes)",
                      lambda ctx: ctx.fn(imageset(y=labels() + 1)), ("y", "classes")))
    every_image = Bad("labels >= len(classes)", V(lambda ctx: imageset(30, y=labels(30, 4))),
                      names=("y", "classes", "ds"),
                      check=lambda r, ctx: sum(map(len, (r.train, r.val, r.test))) == 30)
    tensor_dataset = made("TensorDataset",
                          lambda: torch.utils.data.TensorDataset(imgs(6), labels(6)))
    cases += sweep(m + "split", {"ds": V(lambda ctx: imageset(30))}, {
        "val": [-0.1, 1.0, NAN, "0.1"],
        "test": [1.5],
        "seed": [-1],
        "ds": [None, tensor_dataset, every_image],
    })
    cases.append(case(m + "split", "val + test = 1.1", lambda ctx: ctx.fn(imageset(30), 0.6, 0.5),
                      ("val", "test")))
    cases += sweep(m + "partition", {"ds": V(lambda ctx: imageset(30)), "fraction": 0.5}, {
        "fraction": [0, 1, NAN, "0.5", None],
    })
    cases += sweep(m + "digits", {}, {
        "size": [3, 8.5, "16", True],
        "val": [1.5],
        "seed": [-1],
    }, needs=("digits",))
    cases += sweep(m + "labelled_split", {"ds": V(lambda ctx: imageset(30)), "per_class": 2}, {
        "per_class": [0, 1.5, "2", 10],
    })
    cases += sweep(m + "select_classes", {"ds": V(lambda ctx: imageset(12)), "classes": ["a", "c"]}, {
        "ds": [None, "digits"],
        "classes": ["a", 1, [], ["a", "a"], ["z"], None],
    })
    cases += sweep(m + "shapes", {"n": 6, "size": 8}, {
        "n": [0, "6"],
        "size": [None],
        "classes": [["hexagon"], ("circle", "circle")],
        "seed": [-1],
    })

    def classes_folder(ctx, *extra):
        png(ctx, "imgs/cat/a.png")
        png(ctx, "imgs/dog/b.png")
        for make in extra:
            make(ctx)
        return ctx.dir / "imgs"

    cases += sweep(m + "image_folder", {"root": V(classes_folder), "size": 8}, {
        "root": [missing("nope", "root"), a_file("a.png", "root"), None,
                 at("<no class folders>", lambda ctx: folder(ctx, "flat", "a.png"))],
        "size": [3, None, "32"],
        "classes": [["zzz"], "cat", []],
        "channels": [2, "3"],
    })

    def loads(label, make, check=None, names=("x.png",)):
        return case(m + "image_folder", label,
                    lambda ctx: ctx.fn(classes_folder(ctx, make), size=8), names, check=check)

    def only(mode, suffix):
        def make(ctx):
            shutil.rmtree(ctx.dir / "imgs")
            png(ctx, f"imgs/cat/a.{suffix}", mode)
            png(ctx, f"imgs/dog/b.{suffix}", mode)
        return make

    def half_a_png(ctx):
        truncated(png(ctx, "imgs/cat/full.png", size=64), ctx.dir / "imgs/cat/x.png")

    def skipped(ds, ctx):
        return len(ds) == 2

    def silently_skipped(ds, ctx):
        return None

    cases += [
        loads("16-bit PNG (0.25-0.75)", only("grey16", "png"), lambda ds, ctx: ramp_loaded(ds),
              ("a.png", "b.png")),
        loads("float32 TIFF (0.25-0.75)", only("float", "tif"), lambda ds, ctx: ramp_loaded(ds),
              ("a.tif", "b.tif")),
        loads("8-bit PNG (0.25-0.75, valid)", lambda ctx: None, lambda ds, ctx: ramp_loaded(ds),
              ()),
        loads("FIFO x.png", lambda ctx: fifo(ctx, "imgs/cat/x.png"), skipped),
        loads("symlink loop x.png", lambda ctx: symlink_loop(ctx, "imgs/cat/x.png"), skipped),
        loads("empty x.png", lambda ctx: write_file(ctx, "imgs/cat/x.png"), silently_skipped),
        loads("text file x.png", lambda ctx: write_file(ctx, "imgs/cat/x.png", "hello"),
              silently_skipped),
        loads("truncated x.png", half_a_png, silently_skipped),
        loads("directory x.png", lambda ctx: folder(ctx, "imgs/cat/x.png"), skipped),
        loads("class folder without images", lambda ctx: folder(ctx, "imgs/empty", "notes.txt"),
              names=("empty",)),
    ]
    empty = made("empty", lambda: torch.utils.data.TensorDataset(imgs(0), labels(0)))
    cases += sweep(m + "loader", {"ds": V(lambda ctx: imageset()), "shuffle": True}, {
        "batch_size": [0, 2.5, None, True],
        "ds": [None, empty],
        "seed": [Bad("-1 (shuffle)", -1)],
        "drop_last": ["no"],
    })
    return cases


# --- lablib.nets ----------------------------------------------------------------------------------


def nets_models() -> list[Case]:
    m = "lablib.nets.models."
    cases = sweep(m + "count_params", {"model": V(lambda ctx: cnn())}, {
        "model": [None, made("tensor", lambda: rand(3))], "trainable_only": ["no"]})
    cases += sweep(m + "SmallCNN", {}, {"in_channels": pos_int(), "num_classes": [0, "2"],
                                        "width": [0, "2"]})
    cases += sweep(m + "MLP", {}, {
        "in_features": [0, "64"], "hidden": [8, (0,), None], "num_classes": [0],
        "act": ["swish", made("nn.ReLU", lambda: nn.ReLU)],
    })
    cases += sweep(m + "batch_norm", {"x": V(lambda ctx: imgs())}, {
        "x": [None, made("3-d", lambda: rand(4, 8, 8))], "eps": [-1.0, NAN]})
    block = {"x": V(lambda ctx: imgs(2, 2)), "conv_weight": V(lambda ctx: randn(2, 2, 3, 3)),
             "bn_weight": V(lambda ctx: rand(2)), "bn_bias": V(lambda ctx: rand(2))}
    cases += sweep(m + "residual_block", block, {
        "x": [None, made("3-d", lambda: rand(2, 8, 8))],
        "conv_weight": [None, made("(2, 2, 5, 5)", lambda: randn(2, 2, 5, 5))],
        "bn_weight": [made("(3,)", lambda: rand(3))],
        "bn_bias": [made("(1,)", lambda: rand(1))],
        "eps": [-1.0],
    })
    cases += sweep(m + "ResidualBlock", {"width": 4}, {
        "width": pos_int(), "act": ["swish"], "norm": ["no"]})
    cases += sweep(m + "PreActBlock", {}, {"width": [0, "2"]})
    cases += sweep(m + "DeepNet", {"depth": 2, "width": 4}, {
        "depth": [0, "2"], "width": [0], "in_channels": [0], "num_classes": [None],
        "block": [123, Bad("lambda w: 5", lambda w: 5)], "act": ["swish"],
    })
    cases += [
        case(m + "SmallCNN.forward", "x=3 channels for in_channels=1",
             lambda ctx: ctx.fn(cnn(), imgs(c=3)), ("x",)),
        case(m + "SmallCNN.forward", "x=3-d", lambda ctx: ctx.fn(cnn(), rand(1, 8, 8)), ("x",)),
        case(m + "MLP.forward", "x=wrong feature count", lambda ctx: ctx.fn(mlp(), imgs(s=4)),
             ("x",)),
    ]
    return cases


def nets_train() -> list[Case]:
    m = "lablib.nets.train."
    cases = sweep(m + "precision_dtype", {}, {
        "precision": ["fp64", None, made("torch.float64", lambda: torch.float64)]})
    cases += sweep(m + "autocast", {"device": "cpu"}, {"device": ["gpu"], "precision": ["x"]})

    def history(rows=2, value=0.5):
        h = lab("lablib.nets.train.History")()
        for i in range(rows):
            h.append(epoch=i + 1, val_acc=value)
        return h

    cases += [
        case(m + "History.best", "metric='nope'", lambda ctx: ctx.fn(history(), "nope"),
             ("metric", "nope")),
        case(m + "History.best", "empty history", lambda ctx: ctx.fn(history(0), "val_acc"),
             ("val_acc", "History")),
        case(m + "History.best", "all NaN", lambda ctx: ctx.fn(history(2, NAN), "val_acc"),
             ("val_acc",)),
        case(m + "History.last", "empty history", lambda ctx: ctx.fn(history(0), "val_acc"),
             ("val_acc", "History")),
    ]
    cases += sweep(m + "grad_norms", {}, {"model": [None]})
    cases += sweep(m + "GradNormMonitor", {}, {"every": pos_int()})
    optimizer = {"optimizer": "adam", "model": V(lambda ctx: cnn()), "lr": 0.1}
    cases += sweep(m + "make_optimizer", optimizer, {
        "optimizer": ["adm", None], "lr": [-1.0, NAN, "x"], "weight_decay": [-1.0],
        "model": [None]})
    cases += sweep(m + "to_device", {"batch": V(lambda ctx: [rand(2)]), "device": "cpu"},
                   {"device": ["gpu", 5]})
    scored = {"logits": V(lambda ctx: logits()), "y": V(lambda ctx: labels(4))}
    cases += sweep(m + "accuracy", scored, {
        "logits": [None, made("1-d", lambda: rand(4))],
        "y": [made("(5,)", lambda: labels(5)), made("float 0.5", lambda: labels(4).float() + 0.5),
              made("with -1", lambda: labels(4) - 1), Bad("list", [0, 1, 2, 0], alt=True)],
    })
    cases.append(case(m + "accuracy", "empty logits and y",
                      lambda ctx: ctx.fn(logits(0), labels(0)), ("logits", "y")))
    cases += sweep(m + "classify", {"model": V(lambda ctx: cnn()), "batch": None}, {
        "batch": [made("(x,)", lambda: (imgs(),)),
                  made("y float", lambda: (imgs(), labels(4).float())),
                  made("y = 5 of 3 classes", lambda: (imgs(), labels(4) + 5))],
    })

    def step_base(ctx):
        model = cnn()
        return {"model": model, "batch": (imgs(), labels(4)), "scaler": grad_scaler(),
                "opt": torch.optim.SGD(model.parameters(), 0.1)}

    cases += sweep(m + "optimizer_step", step_base, {
        "precision": ["x"], "grad_clip": [-1.0, NAN, "1"], "opt": [None], "scaler": [None],
        "step": [None],
    })
    predict = predict_base()
    cases += sweep(m + "predict", predict, {
        "loader": [[], None, made("(x,) batches", lambda: [(imgs(),)])],
        "device": ["gpu"],
    })
    cases += sweep(m + "evaluate", predict, {
        "loader": [[], made("labels 5 of 3 classes", lambda: raw_batches(imgs(8), labels(8) + 5))],
    })

    def train(**kwargs):
        """fit on a tiny set (SmallCNN, 8 images), with kwargs, no progress bar."""
        def call(ctx):
            options = {"steps": 2, **kwargs} if "epochs" not in kwargs else kwargs
            return ctx.fn(cnn(), batches_of(imageset(8)), progress=False, **options)
        return call

    nan_names = ("nan", "NaN", "non-finite", "not finite")
    fit = {"model": V(lambda ctx: cnn()), "train": V(lambda ctx: batches_of(imageset(8))),
           "steps": 2, "progress": False}
    cases += sweep(m + "fit", fit, {
        "steps": [0, 2.5, "2", None],
        "lr": [0, INF, NAN, "0.1", None],
        "optimizer": ["adm"],
        "weight_decay": [-1.0],
        "schedule": ["linear", 123],
        "precision": ["fp64"],
        "grad_clip": [-1.0, "1"],
        "monitor": [123],
        "step": [123],
        "update": [123],
        "log_every": [0],
        "evaluate_fn": [123, Bad("returns 5", lambda model: 5)],
        "device": ["gpu"],
        "train": [None, made("empty loader", lambda: raw_batches(imgs(0), labels(0))),
                  made("empty list", lambda: []),
                  made("labels 5 of 3 classes", lambda: raw_batches(imgs(8), labels(8) + 5)),
                  made("NaN images", lambda: raw_batches(imgs(8).fill_(NAN), labels(8)),
                       names=nan_names)],
        "val": [made("empty list", lambda: [])],
        "model": [None],
    })
    for c in cases:
        if c.id == "train.fit:train=NaN images":  # "the loss became NaN at step k" is the answer
            c.errors = (*CLEAR_ERRORS, FloatingPointError)

    def empty_loader_epochs(ctx):
        return ctx.fn(cnn(), raw_batches(imgs(0), labels(0)), epochs=1, progress=False)

    cases += [
        case(m + "fit", "epochs=0", train(epochs=0), ("epochs",)),
        case(m + "fit", "epochs=1.5", train(epochs=1.5), ("epochs",)),
        case(m + "fit", "epochs=1, train=empty loader", empty_loader_epochs, ("train",)),
        case(m + "fit", "steps=2 and epochs=1", train(steps=2, epochs=1), ("epochs", "steps")),
        case(m + "fit", "neither epochs nor steps", train(epochs=None), ("epochs", "steps")),
        case(m + "fit", "lr=1e10 (a finite loss or an error naming NaN)",
             train(steps=4, lr=1e10, optimizer="sgd"), (*nan_names, "inf"),
             check=lambda h, ctx: all(math.isfinite(v) for v in h["train_loss"]),
             errors=(*CLEAR_ERRORS, FloatingPointError)),
    ]
    return cases


# --- lablib.methods -------------------------------------------------------------------------------


def methods_amp() -> list[Case]:
    m = "lablib.methods.amp."
    cases = sweep(m + "supports", {"device": "cpu", "dtype": "bf16"}, {
        "device": ["gpu", 123], "dtype": ["fp64", None]})
    model_x = {"model": V(lambda ctx: cnn()), "x": V(lambda ctx: imgs())}
    cases += sweep(m + "autocast_dtypes", {**model_x, "device": "cpu", "dtype": "bf16"}, {
        "model": [None], "x": [None, made("3 channels", lambda: imgs(c=3))],
        "y": [made("(5,)", lambda: labels(5))], "device": ["gpu"], "dtype": ["fp64"],
    })
    cases += sweep(m + "underflow_fraction", {"grads": V(lambda ctx: rand(8) * 1e-6)}, {
        "grads": [None, Bad("list", [1e-6, 2e-6]), made("int", lambda: labels(4))],
        "scale": positive(INF), "dtype": ["fp8"],
    })

    def step_base(ctx):
        model = cnn()
        return {"model": model, "x": imgs(), "y": labels(4), "scaler": grad_scaler(),
                "opt": torch.optim.SGD(model.parameters(), 0.1), "device": "cpu", "dtype": "bf16"}

    cases += sweep(m + "train_step", step_base, {
        "x": [None], "y": [made("float", lambda: labels(4).float())], "opt": [None],
        "device": ["gpu"], "dtype": ["x"]})
    step = {**model_x, "y": V(lambda ctx: labels(4)), "device": "cpu", "dtype": "fp32"}
    cases += sweep(m + "step_fn", step, {"device": ["gpu", None], "dtype": ["x"],
                                         "lr": [-1.0, NAN]})
    cases += sweep(m + "train_step_ms", {**step, "warmup": 0, "repeats": 1}, {
        "warmup": [-1], "repeats": [0], "device": ["gpu"]})
    cases += sweep(m + "min_loss_scale", {"grads": V(lambda ctx: rand(8) * 1e-9)}, {
        "grads": [None, made("int", lambda: labels(4))],
        "dtype": ["x", made("torch.float64", lambda: torch.float64)]})

    def bits(*patterns):
        return torch.tensor(list(patterns), dtype=torch.int64).to(torch.int32).view(torch.float32)

    def like_torch(make):
        """The result of torch's own fp32 -> bf16 -> fp32: NaN stays NaN, the rest equal."""
        def check(r, ctx):
            expected = make().to(torch.bfloat16).float()
            same_nan = torch.equal(r.isnan(), expected.isnan())
            return bool(same_nan and torch.equal(r[~r.isnan()], expected[~expected.isnan()]))
        return check

    rounding = [
        ("NaN bit patterns 0x7fffffff, 0x7f800001, 0xffffffff",
         lambda: bits(0x7FFFFFFF, 0x7F800001, 0xFFFFFFFF)),
        ("NaN bit patterns 0x7fc00000, 0xff800001", lambda: bits(0x7FC00000, 0xFF800001)),
        ("inf, -inf, -0.0", lambda: tensor([INF, -INF, -0.0])),
        ("largest float32 (rounds to inf)", lambda: tensor([3.4028235e38, -3.4028235e38])),
        ("subnormals", lambda: bits(1, 0x007FFFFF, 0x80000001)),
        ("ordinary values", lambda: randn(16)),
    ]
    for label, make in rounding:
        cases.append(case(m + "round_to_bf16", f"x={label} (valid)",
                          lambda ctx, mk=make: ctx.fn(mk()), check=like_torch(make)))
    cases += sweep(m + "round_to_bf16", {}, {
        "x": [None, Bad("list", [1.0, 2.0]), made("float64", lambda: randn(4).double())]})
    return cases


def methods_distill() -> list[Case]:
    m = "lablib.methods.distill."
    teacher = {"teacher_logits": V(lambda ctx: logits())}
    as_list = Bad("list", V(lambda ctx: logits().tolist()), alt=True)
    cases = sweep(m + "soft_targets", teacher, {
        "teacher_logits": [None, "x", as_list, made("1-d", lambda: rand(3))],
        "T": [0.0, NAN, "2"],
    })
    pair = {**teacher, "student_logits": V(lambda ctx: logits(seed=1)),
            "targets": V(lambda ctx: labels(4))}
    cases += sweep(m + "distillation_loss", pair, {
        "student_logits": [None, made("(4, 5) vs (4, 3)", lambda: logits(4, 5))],
        "teacher_logits": [as_list],
        "targets": [None, made("(5,)", lambda: labels(5)), made("float", lambda: labels(4).float()),
                    made("5 of 3 classes", lambda: labels(4) + 5),
                    made("-2", lambda: labels(4) - 2)],
        "T": [0.0, "2"],
        "alpha": [1.5, NAN, "0.5"],
    })
    cases.append(case(m + "distillation_loss", "empty batch (0, 3)",
                      lambda ctx: ctx.fn(logits(0), logits(0), labels(0)),
                      ("student_logits", "empty")))
    cases += sweep(m + "pseudo_labels", teacher, {
        "teacher_logits": [None, made("1-d", lambda: rand(3)), as_list],
        "threshold": [1.5, NAN, "0.5"],
    })
    return cases


def methods_pruning() -> list[Case]:
    m = "lablib.methods.pruning."
    relu = made("nn.ReLU()", lambda: nn.ReLU())
    a_tensor = made("tensor", lambda: rand(3))
    cases = sweep(m + "prunable", {}, {"model": [None, a_tensor, relu]})
    cases += sweep(m + "sparsity", {}, {
        "model_or_tensor": [None, made("empty", lambda: rand(0)), relu]})
    cases += sweep(m + "layer_sparsity", {}, {"model": [None, relu]})
    weight = {"weight": V(lambda ctx: randn(4, 4))}
    empty_ok = made("empty (valid)", lambda: rand(0), check=lambda r, ctx: r.numel() == 0)
    cases += sweep(m + "l1_mask", {**weight, "amount": 0.5}, {
        "weight": [None, [1.0, 2.0], empty_ok],
        "amount": fraction(True),
    })
    two = {"weights": V(lambda ctx: [randn(4), randn(2, 2)]), "amount": 0.5}
    cases += sweep(m + "global_l1_masks", two, {
        "weights": [made("a tensor", lambda: randn(4)), [],
                    made("[tensor, 'x']", lambda: [randn(4), "x"])],
        "amount": [1.5, "0.5"],
    })
    cases += sweep(m + "nm_mask", weight, {
        "weight": [None, made("0-d", lambda: tensor(1.0)), made("(4, 3)", lambda: randn(4, 3))],
        "n": [5, "2"],
        "m": [0, 3],
    })
    cases += sweep(m + "global_magnitude_prune", {"model": V(lambda ctx: mlp()), "amount": 0.5}, {
        "model": [None, relu], "amount": [1.5, NAN, True]})
    cases += sweep(m + "clone", {}, {"model": [None]})
    cases += sweep(m + "make_permanent", {}, {"model": [None]})
    cases += sweep(m + "structured_prune_mlp", {"model": V(lambda ctx: mlp()), "keep": 0.5}, {
        "model": [made("SmallCNN", cnn), None],
        "keep": [0, 1.5, NAN, "0.5"],
    })
    cases += sweep(m + "size_bytes", {}, {"model": [None, a_tensor]})
    return cases


def methods_quantize() -> list[Case]:
    m = "lablib.methods.quantize."
    x = {"x": V(lambda ctx: randn(8))}
    cases = sweep(m + "quantize_tensor", {**x, "scale": 0.05}, {
        "x": [None, "x", Bad("list", V(lambda ctx: randn(8).tolist()), alt=True)],
        "scale": positive(made("tensor with 0", lambda: tensor([0.1, 0.0]))),
        "zero_point": [0.5, "0", 200],
        "bits": [0, 8.5, "8", 64],
    })
    cases += sweep(m + "dequantize", {"q": V(lambda ctx: randn(8).round()), "scale": 0.05}, {
        "q": [None], "scale": positive(), "zero_point": [0.5, "0"]})
    cases += sweep(m + "symmetric_scale", x, {
        "x": [None, Bad("list", [1.0, -2.0], alt=True),
              made("with inf", lambda: tensor([1.0, INF])),
              made("with NaN", lambda: tensor([1.0, NAN])), made("empty", lambda: rand(0))],
        "bits": [0, 17],
    })
    cases.append(case(m + "symmetric_scale", "per_channel with a 0-d tensor",
                      lambda ctx: ctx.fn(tensor(1.0), per_channel=True), ("x", "per_channel")))
    cases += sweep(m + "affine_params", x, {
        "x": [None, made("empty", lambda: rand(0)), made("with NaN", lambda: tensor([1.0, NAN])),
              made("with inf", lambda: tensor([1.0, INF]))],
        "bits": [0, "8"],
    })
    cases += sweep(m + "file_size", {}, {
        "path": [None, missing("nope.onnx", "path"), a_dir("adir.onnx", "path"),
                 at("<FIFO>", lambda ctx: fifo(ctx, "f.onnx"), names=("path", "f.onnx"))]})
    cases += sweep(m + "ImageReader", {"images": V(lambda ctx: imgs())}, {
        "images": [None, Bad("list", V(lambda ctx: imgs().tolist())),
                   made("empty", lambda: imgs(0)),
                   made("3-d", lambda: rand(4, 8, 8))],
        "batch_size": [0, "64"], "input_name": [123],
    })
    onnx = {"src": V(lambda ctx: copy_fixture(ctx, "model.onnx", "model.onnx")),
            "dst": V(lambda ctx: ctx.dir / "q.onnx")}
    empty_onnx = at("<empty file>", lambda ctx: write_file(ctx, "bad.onnx"),
                    names=("src", "bad.onnx"))
    hostile = [
        empty_onnx,
        at("<truncated>", lambda ctx: truncated(FIXTURE_DIR / "model.onnx", ctx.dir / "bad.onnx"),
           names=("src", "bad.onnx")),
        at("<text file>", lambda ctx: write_file(ctx, "bad.onnx", "not onnx"),
           names=("src", "bad.onnx")),
    ]
    cases += sweep(m + "dynamic", onnx, {
        "src": [None, missing("nope.onnx", "src"), a_dir("adir.onnx", "src"), *hostile],
        "dst": [None, a_dir("out.onnx", "dst")],
    }, needs=("onnx",))
    cases += sweep(m + "static", {**onnx, "calibration_images": V(lambda ctx: imgs())}, {
        "src": [missing("nope.onnx", "src"), empty_onnx],
        "calibration_images": [None, made("empty", lambda: imgs(0)),
                               made("3 channels", lambda: imgs(c=3)),
                               made("3-d", lambda: rand(4, 8, 8))],
        "fmt": ["int8", None],
    }, needs=("onnx",))
    cases += sweep(m + "fake_quantize", x, {"x": [None], "bits": [0, 8.5]})
    cases += sweep(m + "FakeQuant", {}, {"bits": [0, "8"], "fn": [123]})
    cases += sweep(m + "qat", {"model": V(lambda ctx: mlp())}, {
        "model": [None], "bits": [0, 8.5, "8"], "fake": [123]})
    cases += sweep(m + "freeze", {}, {"model": [None]})
    cases += sweep(m + "int8_dynamic", {}, {"model": [None]})
    return cases


def methods_fixmatch() -> list[Case]:
    m = "lablib.methods.fixmatch."
    cases = sweep(m + "check_tau", {}, {"tau": [0, 1.5, NAN, "0.9", None, True]})
    cases += sweep(m + "check_mu", {}, {"mu": [0, 1.5, "7", True]})
    weak = {"weak_logits": V(lambda ctx: logits()), "tau": 0.5}
    cases += sweep(m + "confident_pseudo_labels", weak, {
        "weak_logits": [None, made("1-d", lambda: rand(3))], "tau": [0]})
    views = {"strong_logits": V(lambda ctx: logits(seed=1)), "weak_logits": V(lambda ctx: logits()),
             "tau": 0.5}
    cases += sweep(m + "unsupervised_loss", views, {
        "strong_logits": [None, made("(4, 5)", lambda: logits(4, 5))], "tau": ["0.5"]})
    cases.append(case(m + "unsupervised_loss", "empty batch (0, 3)",
                      lambda ctx: ctx.fn(logits(0), logits(0), 0.5),
                      ("strong_logits", "weak_logits", "empty")))
    cases += sweep(m + "soft_unsupervised_loss", views, {
        "temperature": [0, NAN, "0.5", None], "weak_logits": [made("(3, 3)", lambda: logits(3))]})
    used = {"pseudo": V(lambda ctx: labels(4)), "y_u": V(lambda ctx: labels(4)),
            "mask": V(lambda ctx: tensor([True, False, True, True]))}
    cases += sweep(m + "pseudo_label_accuracy", used, {
        "mask": [made("float", lambda: tensor([1.0, 0.0, 1.0, 1.0])),
                 made("(3,)", lambda: tensor([True, False, True]))],
        "y_u": [made("(3,)", lambda: labels(3))],
        "pseudo": [None],
    })
    step = {"model": V(lambda ctx: cnn()),
            "batch": V(lambda ctx: (imgs(2), labels(2), imgs(4), labels(4)))}
    cases += sweep(m + "fixmatch_step", step, {
        "lambda_u": [-1.0, NAN, "1"],
        "tau": [0],
        "batch": [made("(x,)", lambda: (imgs(),)), None,
                  made("y_l 5 of 3 classes", lambda: (imgs(2), labels(2) + 5, imgs(4)))],
        "weak": [None],
    })
    cases += sweep(m + "supervised_step", step, {"batch": [made("(x,)", lambda: (imgs(),)), None]})
    sets = {"labelled": V(lambda ctx: imageset(6)), "unlabelled": V(lambda ctx: imageset(12))}
    no_images = made("empty", lambda: types.SimpleNamespace(x=imgs(0), y=labels(0)))
    cases += sweep(m + "batches", sets, {
        "batch_size": [0, "32"], "mu": [0],
        "labelled": [None, no_images], "unlabelled": [Bad("list", [1, 2])],
        "seed": ["0"],
    })
    cases += sweep(m + "evaluate", predict_base(), {"loader": [[], None]})
    conf = {"confidence": V(lambda ctx: rand(8)), "correct": V(lambda ctx: rand(8) > 0.5),
            "taus": [0.5, 0.9]}
    cases += sweep(m + "mask_rate_curve", conf, {
        "taus": [[0], 0.5, ["0.9"]],
        "confidence": [made("(7,)", lambda: rand(7)), made("> 1", lambda: rand(8) * 5), None],
        "correct": [made("(2, 4)", lambda: rand(2, 4) > 0.5)],
    })
    cases += sweep(m + "pick_tau", {**conf, "target": 0.9}, {"target": [0, NAN, "0.9", None]})
    cases += sweep(m + "cosine_lr", {"step": 1, "total": 10}, {
        "total": [0, 2.5, "10"], "step": [-1, "1"]})
    return cases


def predict_base() -> dict:
    return {"model": V(lambda ctx: cnn()), "loader": V(lambda ctx: batches_of(imageset(8)))}


def methods_diffusion() -> list[Case]:
    m = "lablib.methods.diffusion."
    cases = sweep(m + "make_unet", {"image_size": 8, "widths": (8, 8)}, {
        "image_size": [0, "8", 7],
        "num_classes": [0],
        "widths": [(8,), (8, 12), (0, 8)],
    })
    cases += sweep(m + "make_schedulers", {}, {
        "num_train_timesteps": [0, "1000"], "beta_schedule": ["cosine"]})
    cases += sweep(m + "num_classes", {}, {"model": [made("SmallCNN", cnn)]})
    cases += sweep(m + "to_model_range", {}, {
        "images": [None, Bad("list", [0.0, 1.0], alt=True), made("0..255", lambda: imgs() * 255)]})
    cases += sweep(m + "to_image_range", {}, {"x": [None]})
    noisy = {"x0": V(lambda ctx: imgs()), "noise": V(lambda ctx: randn(4, 1, 8, 8)),
             "alpha_bar": V(lambda ctx: rand(4))}
    cases += sweep(m + "add_noise", noisy, {
        "noise": [made("(2, 1, 8, 8)", lambda: randn(2, 1, 8, 8))],
        "alpha_bar": [made("3 values for 4 images", lambda: rand(3)),
                      made("1.5", lambda: tensor([1.5] * 4)),
                      made("-0.5", lambda: tensor([-0.5] * 4)),
                      None],
        "x0": [None],
    })
    unet = V(lambda ctx: fixture("unet"))
    ddpm, ddim = V(lambda ctx: fixture("schedulers")[0]), V(lambda ctx: fixture("schedulers")[1])
    loss = {"model": unet, "x0": V(lambda ctx: imgs(2) * 2 - 1),
            "labels": V(lambda ctx: tensor([0, 1])), "scheduler": ddpm}
    cases += sweep(m + "ddpm_loss", loss, {
        "labels": [made("(3,)", lambda: tensor([0, 1, 1])),
                   made("5 of 2 classes", lambda: tensor([5, 0]))],
        "x0": [made("3 channels", lambda: imgs(2, 3))],
        "scheduler": [None],
    }, needs=("unet", "schedulers"))
    data = {"images": V(lambda ctx: imgs(6)), "labels": V(lambda ctx: labels(6, 2))}
    cases += sweep(m + "batches", data, {
        "batch_size": [0, "64"],
        "p_uncond": [1, NAN, "0.1"],
        "seed": ["0"],
        "images": [made("3-d", lambda: rand(6, 8, 8)), None],
        "labels": [made("with -1", lambda: labels(6, 2) - 1),
                   made("float 0.5", lambda: labels(6, 2).float() + 0.5)],
        "num_classes": [0, "2"],
    })
    cases += sweep(m + "warmup_cosine", {"k": 1, "total": 10}, {"total": [0, -1, "10"], "k": [-1]})
    training = {**data, "model": unet, "scheduler": ddpm, "steps": 1, "batch_size": 2,
                "progress": False}
    cases += sweep(m + "train_unet", training, {
        "steps": [0, "1"],
        "lr": [NAN],
        "batch_size": [0],
        "labels": [made("5 of 2 classes", lambda: labels(6, 2) + 5)],
        "images": [made("3-d", lambda: rand(6, 8, 8))],
    }, needs=("unet", "schedulers"))
    sampling = {"model": unet, "labels": [0, 1], "scheduler": ddim, "steps": 2}
    cases += sweep(m + "sample", sampling, {
        "steps": [0],
        "labels": [[5], [], [0.5], None],
        "guidance_scale": [0.5, NAN, "2"],
        "seed": [-1],
        "batch_size": [0],
        "scheduler": [None, Bad("DDPMScheduler (the training one)", ddpm)],
    }, needs=("unet", "schedulers"))
    step = {"x_t": V(lambda ctx: randn(2, 1, 4, 4)),
            "noise_pred": V(lambda ctx: randn(2, 1, 4, 4, seed=1))}
    other_batch = made("(3, 1, 4, 4)", lambda: randn(3, 1, 4, 4))
    cases += sweep(m + "predict_x0", {**step, "alpha_bar": 0.5}, {
        "alpha_bar": [0.0, 1.5, "0.5"], "noise_pred": [other_batch]})
    cases += sweep(m + "ddim_step", {**step, "alpha_bar_t": 0.5, "alpha_bar_prev": 0.6}, {
        "alpha_bar_t": [0.0, 1.5], "alpha_bar_prev": [1.5, -1.0], "noise_pred": [other_batch]})
    cases += sweep(m + "nearest_distance", {"images": V(lambda ctx: imgs(2)),
                                            "reference": V(lambda ctx: imgs(3))}, {
        "images": [made("3-d", lambda: rand(2, 8, 8))],
        "reference": [made("empty", lambda: imgs(0)), made("(3, 1, 4, 4)", lambda: imgs(3, s=4))],
    })
    cases += sweep(m + "diversity", {**data, "num_classes": 2}, {
        "labels": [made("(5,)", lambda: labels(5, 2)),
                   made(">= num_classes", lambda: labels(6, 2) + 2)],
        "num_classes": [0, -1, "2"],
    })
    cases += sweep(m + "save_unet", {"model": unet, "folder": V(lambda ctx: ctx.dir / "ck")}, {
        "model": [made("SmallCNN", cnn)],
        "folder": [None, a_file("ck", "folder")],
        "extra": [made("{'t': tensor}", lambda: {"t": tensor(1.0)}), [1, 2]],
    }, needs=("unet",))

    def into_data_dir(ctx):
        write_file(ctx, "../data/keep.txt", "x")
        return ctx.fn(fixture("unet"), lab("lablib.core.config.data_dir")())

    cases += [
        case(m + "save_unet", "folder=<non-empty foreign folder>",
             lambda ctx: ctx.fn(fixture("unet"), folder(ctx, "mine", "keep.txt")),
             ("folder", "mine"), after=still_there("mine/keep.txt"), needs=("unet",)),
        case(m + "save_unet", "folder=config.data_dir()", into_data_dir, ("folder", "data"),
             after=still_there("../data/keep.txt"), needs=("unet",)),
    ]
    cases += sweep(m + "has_checkpoint", {}, {"folder": [None]})

    def checkpoint(label, spoil, names=("ck",), check=None):
        def call(ctx):
            path = copy_fixture(ctx, "unet", "ck")
            spoil(path)
            return ctx.fn(path)
        return case(m + "load_unet", label, call, ("folder", *names), check=check,
                    needs=("checkpoint",))

    def replace_by_file(path):
        shutil.rmtree(path)
        path.write_text("x")

    def fifo_extra(path):
        (path / "extra.json").unlink()
        os.mkfifo(path / "extra.json")

    weights = "diffusion_pytorch_model.safetensors"
    cases += [
        checkpoint("folder=<missing>", shutil.rmtree),
        checkpoint("folder=<a file>", replace_by_file),
        checkpoint("truncated safetensors", lambda p: truncated(p / weights, p / weights),
                   (weights, "ck")),
        checkpoint("empty safetensors", lambda p: (p / weights).write_bytes(b""), (weights, "ck")),
        checkpoint("corrupt config.json", lambda p: (p / "config.json").write_text("{"),
                   ("config.json",)),
        checkpoint("corrupt extra.json", lambda p: (p / "extra.json").write_text("{"),
                   ("extra.json",)),
        # skipping an extra.json that is not a regular file is right; opening it would block
        checkpoint("extra.json is a FIFO", fifo_extra, ("extra.json",), check=lambda r, ctx: True),
        checkpoint("no .complete marker", lambda p: (p / ".complete").unlink()),
        case(m + "load_unet", "folder=None", lambda ctx: ctx.fn(None), ("folder",)),
    ]
    return cases


def methods_stable_diffusion() -> list[Case]:
    m = "lablib.methods.stable_diffusion."
    expanded = os.path.expanduser("~/models/sd")  # a lookup of "~/models/sd" must show this path
    cases = [
        env_case(m + "sd_pipeline", "LAB_SD_MODEL", "~/models/sd", names=(expanded,)),
        case(m + "sd_pipeline", "model='~/models/sd'",
             lambda ctx: ctx.fn("~/models/sd", allow_download=False), (expanded,)),
    ]
    cases += sweep(m + "sd_pipeline", {"allow_download": False}, {
        "model": [at("<missing absolute>", lambda ctx: str(ctx.dir / "nope"),
                     names=("model", "nope")),
                  "org/name",
                  at("<a file>", lambda ctx: str(write_file(ctx, "sd.bin")),
                     names=("model", "sd.bin")),
                  at("<empty folder>", lambda ctx: str(folder(ctx, "sd")), names=("model", "sd"))],
        "device": ["gpu", 5],
    })
    cases.append(case(m + "sd_pipeline", "env LAB_ALLOW_DOWNLOADS=yes",
                      lambda ctx: ctx.fn("org/name"), ("LAB_ALLOW_DOWNLOADS", "model"),
                      env={"LAB_ALLOW_DOWNLOADS": "yes"}))
    cases += sweep(m + "tiny_sd_pipeline", {}, {"seed": ["0", 1.5]})
    generate = {"pipe": V(lambda ctx: fixture("pipe")), "prompts": {"cat": "a cat"},
                "root": V(lambda ctx: ctx.dir / "gen"), "per_class": 1, "steps": 1, "size": 16}
    cases += sweep(m + "generate_folder", generate, {
        "prompts": [Bad("{'../escape': ...}", {"../escape": "a cat"}, check=lambda r, ctx: None),
                    # this one lands in the run's scratch folder: every case's own check sees it
                    Bad("{'../../../../escape2': ...}", {"../../../../escape2": "a cat"},
                        check=lambda r, ctx: None),
                    Bad("{'': ...}", {"": "a cat"}), Bad("{'a/b': ...}", {"a/b": "a cat"}),
                    {}, ["a cat"], {"cat": 123}],
        "per_class": [0],
        "steps": [0],
        "guidance_scale": [-1.0, NAN, "7"],
        "size": [7, 0],
        "seed": ["0"],
        "root": [None, a_file("gen", "root")],
        "pipe": [None],
        "negative_prompt": [123],
    }, needs=("pipe",))
    for c in cases:
        if c.label.startswith("prompts={'../escape'"):
            c.after = no_escape("escape")
    return cases


# --- lablib.deploy --------------------------------------------------------------------------------


def deploy_onnx_export() -> list[Case]:
    m = "lablib.deploy.onnx_export."
    export = {"model": V(lambda ctx: cnn()), "example": V(lambda ctx: imgs(2)),
              "path": V(lambda ctx: ctx.dir / "m.onnx"), "dynamo": False}
    cases = sweep(m + "onnx_export", export, {
        "model": [None],
        "example": [None, made("3 channels", lambda: imgs(2, 3))],
        "opset": [5, "17", True, Bad("99 (TorchScript)", 99)],
        "path": [None, a_dir("m.onnx", "path")],
        "input_name": [123, ""],
    })

    def opset_99(path, ctx):
        return lab("lablib.deploy.onnx_export.inspect")(path)["opset"] == 99

    cases.append(case(m + "onnx_export", "opset=99 (default exporter)",
                      lambda ctx: ctx.fn(cnn(), imgs(2), ctx.dir / "m.onnx", opset=99), ("opset",),
                      check=opset_99, needs=("dynamo",)))

    def model_file(ctx):
        return copy_fixture(ctx, "model.onnx", "model.onnx")

    damaged = [
        at("<empty file>", lambda ctx: write_file(ctx, "e.onnx"), names=("path", "e.onnx")),
        at("<truncated>", lambda ctx: truncated(FIXTURE_DIR / "model.onnx", ctx.dir / "t.onnx"),
           names=("path", "t.onnx")),
        at("<text file>", lambda ctx: write_file(ctx, "x.onnx", "hello"), names=("path", "x.onnx")),
    ]
    cases += sweep(m + "inspect", {}, {"path": [
        missing("nope.onnx", "path"), a_dir("d.onnx", "path"), None,
        at("<FIFO>", lambda ctx: fifo(ctx, "f.onnx"), names=("path", "f.onnx")),
        at("<symlink loop>", lambda ctx: symlink_loop(ctx, "l.onnx"), names=("path", "l.onnx")),
        *damaged]}, needs=("onnx",))
    cases += sweep(m + "session_options", {}, {
        "threads": [-1, 1.5, "2", 100000], "level": ["max", None]})
    cases += sweep(m + "describe_options", {}, {"options": [123]})
    cases += sweep(m + "provider_name", {}, {"provider": ["gpu", None, "cuda"]})
    no_folder = at("<missing folder>/o.onnx", lambda ctx: ctx.dir / "no" / "o.onnx",
                   names=("optimized_path", "o.onnx"),
                   check=lambda r, ctx: (ctx.dir / "no" / "o.onnx").is_file())
    cases += sweep(m + "session", {"path": V(model_file)}, {
        "path": damaged,
        "providers": [[], "gpu"],
        "threads": ["2"],
        "level": ["max"],
        "optimized_path": [a_dir("opt", "optimized_path"), no_folder],
    }, needs=("onnx",))
    cases += [
        case(m + "session", f"env LAB_THREADS={v}", lambda ctx: ctx.fn(model_file(ctx)),
             ("LAB_THREADS",), env={"LAB_THREADS": v}, needs=("onnx",))
        for v in ("²", "-2")
    ]
    sess = V(lambda ctx: lab("lablib.deploy.onnx_export.session")(model_file(ctx)))
    cases += sweep(m + "ort_predict", {"sess": sess, "x": V(lambda ctx: imgs(2))}, {
        "sess": [None, at("<a path>", model_file)],
        "x": [None, made("3 channels", lambda: imgs(2, 3)), made("3-d", lambda: rand(2, 8, 8))],
    }, needs=("onnx",))
    cases += sweep(m + "parity", {"model": V(lambda ctx: cnn()), "sess_or_path": V(model_file)}, {
        "batch_sizes": [[], [0], 3],
        "x": [made("2 rows for batch 64", lambda: imgs(2))],
        "sess_or_path": [missing("nope.onnx", "sess_or_path"), None],
        "model": [made("SmallCNN(3 channels)", lambda: cnn(c=3))],
        "seed": ["0"],
    }, needs=("onnx",))
    scored = {"sess": sess, "loader": V(lambda ctx: batches_of(imageset(4)))}
    cases += sweep(m + "ort_accuracy", scored, {
        "loader": [[], None,
                   made("labels 5 of 3 classes", lambda: raw_batches(imgs(4), labels(4) + 5))],
        "sess": [None],
    }, needs=("onnx",))
    run_it = {"model": V(lambda ctx: cnn()), "x": V(lambda ctx: imgs(2)),
              "path": V(lambda ctx: ctx.dir / "m.onnx"), "dynamo": False}
    cases += sweep(m + "export_and_run", run_it, {"x": [None], "opset": [5], "foo": [1]})
    return cases


# --- lablib.data.tables, lablib.methods.quality, lablib.data.versioning (lab 10) -----------------

np = _Lazy("numpy")


def frame(rows: int = 12, cols: int = 3):
    import pandas as pd

    return pd.DataFrame(np.random.default_rng(0).uniform(1, 2, (rows, cols)), columns=[f"c{i}" for i in range(cols)])


def data_tables() -> list[Case]:
    import pandas as pd

    m = "lablib.data.tables."
    df = {"df": V(lambda ctx: frame())}
    cases = sweep(m + "load", {}, {"name": ["iris2", 3, None, ""]})
    cases += sweep(m + "inject_faults", df, {
        "df": [None, made("ndarray", lambda: np.ones((3, 3))), made("empty", lambda: pd.DataFrame()),
               made("text column", lambda: pd.DataFrame({"a": ["x", "y"]})),
               made("with inf", lambda: pd.DataFrame({"a": [1.0, INF, 2.0]}))],
        "missing": fraction(-0.1), "unit": fraction(), "sentinel": fraction(),
        "factors": [(), "10", (10, NAN), (1,), (0,), None],
        "sentinel_value": [NAN, INF, "x"],
        "seed": [-1, 1.5, "0"],
    })
    cases.append(case(m + "inject_faults", "missing + unit + sentinel > 1",
                      lambda ctx: ctx.fn(frame(), missing=0.6, unit=0.5), ("missing", "unit", "sentinel")))
    cases += sweep(m + "corrupt_rows", df, {
        "df": [None, made("with inf", lambda: pd.DataFrame({"a": [1.0, INF]}))],
        "fraction": fraction(-0.5), "whole": ["yes", 1], "factors": [(), (NAN,)], "seed": [-1],
    })
    kind = {"kind": V(lambda ctx: pd.DataFrame(np.zeros((4, 3), dtype=int)))}
    cases += sweep(m + "heatmap", kind, {
        "kind": [None, made("ndarray", lambda: np.zeros((4, 3), dtype=int)),
                 made("code 7", lambda: pd.DataFrame(np.full((4, 3), 7))),
                 made("floats", lambda: pd.DataFrame(np.zeros((4, 3)))), made("empty", lambda: pd.DataFrame())],
        "title": [3],
        "flagged": [made("wrong shape", lambda: pd.DataFrame(np.zeros((2, 3), dtype=bool))),
                    made("not bool", lambda: pd.DataFrame(np.zeros((4, 3))))],
        "targets": ["unit", ("clean",), (), 3],
    })
    return cases


def methods_quality() -> list[Case]:
    import pandas as pd

    m = "lablib.methods.quality."
    x = {"x": V(lambda ctx: frame().to_numpy())}
    bad_x = [None, [1.0, 2.0], made("empty", lambda: np.array([])), made("3-d", lambda: np.zeros((2, 2, 2))),
             made("strings", lambda: np.array(["a", "b"])), made("bools", lambda: np.array([True, False])),
             made("with inf", lambda: np.array([[1.0], [INF]])), made("complex", lambda: np.array([1 + 2j])),
             made("text column", lambda: pd.DataFrame({"a": ["x", "y"]}))]
    cases = sweep(m + "iqr_outliers", x, {"x": bad_x, "k": [-1.0, NAN, INF, "3", None], "log": ["yes", 1]})
    cases += sweep(m + "mad_outliers", x, {"x": bad_x, "threshold": [-1.0, NAN, INF, "3"]})
    cases += sweep(m + "missing_share", x, {"x": bad_x})
    masks = {"flagged": V(lambda ctx: np.zeros(5, bool)), "truth": V(lambda ctx: np.ones(5, bool))}
    cases += sweep(m + "precision_recall", masks, {
        "flagged": [None, made("floats", lambda: np.zeros(5)), made("shape (4,)", lambda: np.zeros(4, bool))],
        "truth": [[True] * 5, made("ints", lambda: np.ones(5, int))],
    })
    score = {"truth": V(lambda ctx: np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 4.0]])),
             "imputed": V(lambda ctx: np.zeros((3, 2))), "mask": V(lambda ctx: np.eye(3, 2, dtype=bool))}
    cases += sweep(m + "imputation_error", score, {
        "imputed": [None, made("(3, 3)", lambda: np.zeros((3, 3))), made("NaN in a masked cell", lambda: np.full((3, 2), NAN))],
        "mask": [made("floats", lambda: np.eye(3, 2)), made("all False", lambda: np.zeros((3, 2), bool)),
                 made("(2, 2)", lambda: np.zeros((2, 2), bool))],
        "truth": [made("constant columns", lambda: np.ones((3, 2))), made("NaN in a masked cell", lambda: np.full((3, 2), NAN))],
        "scale": [[1.0], [0.0, 1.0], [NAN, 1.0], "1"],
    })
    like = {"failures": V(lambda ctx: pd.DataFrame({"column": ["c0"], "index": [1]})), "like": V(lambda ctx: frame())}
    cases += sweep(m + "failure_mask", like, {
        "failures": [None, "errors", made("no index column", lambda: pd.DataFrame({"column": ["c0"]}))],
        "like": [None, made("ndarray", lambda: np.zeros((12, 3)))],
    })
    return cases


def data_versioning() -> list[Case]:
    m = "lablib.data.versioning."

    def sandbox(ctx):
        return lab("lablib.data.versioning.Sandbox")(ctx.root / "data" / "box")

    cases = sweep(m + "Sandbox", {"folder": V(lambda ctx: ctx.root / "data" / "box")}, {
        "folder": [None, "", at("<the data folder itself>", lambda ctx: ctx.root / "data"),
                   at("<outside data/>", lambda ctx: ctx.dir / "elsewhere"),
                   at("<escapes data/ with ..>", lambda ctx: ctx.root / "data" / ".." / "labs"),
                   at("<a file>", lambda ctx: write_file(ctx, "../data/afile", "keep"))],
        "timeout": [0, -1, NAN, "10"],
        "fresh": ["yes", 1],
    })
    cases += [
        case(m + "Sandbox.run", "words=()", lambda ctx: sandbox(ctx).run(), ("words",)),
        case(m + "Sandbox.run", "words=('rm', '-rf', '/')", lambda ctx: sandbox(ctx).run("rm", "-rf", "/"), ("words",)),
        case(m + "Sandbox.run", "words=(3,)", lambda ctx: sandbox(ctx).run(3), ("words",)),
        case(m + "Sandbox.run", "ok='0'", lambda ctx: sandbox(ctx).run("git", "status", ok="0"), ("ok",)),
        case(m + "Sandbox.run", "timeout=-1", lambda ctx: sandbox(ctx).run("git", "status", timeout=-1), ("timeout",)),
        case(m + "Sandbox.show", "max_lines=0", lambda ctx: sandbox(ctx).show("git", "--version", max_lines=0), ("max_lines",)),
        case(m + "Sandbox.write", "relative='../x'", lambda ctx: sandbox(ctx).write("../x", "t"), ("relative",)),
        case(m + "Sandbox.write", "text=b'x'", lambda ctx: sandbox(ctx).write("x.txt", b"x"), ("text",)),
        case(m + "Sandbox.copy_in", "source=<missing>", lambda ctx: sandbox(ctx).copy_in(ctx.dir / "nope.py"), ("source",)),
    ]
    cases += sweep(m + "md5", {"path": V(lambda ctx: write_file(ctx, "a.csv", "x"))}, {
        "path": [None, "", missing("b.csv"), a_dir("adir")]})
    cases += sweep(m + "recorded_md5", {"dvc_file": V(lambda ctx: write_file(ctx, "a.dvc", "outs:\n- md5: " + "0" * 32 + "\n"))}, {
        "dvc_file": [None, missing("b.dvc"), at("<not .dvc>", lambda ctx: write_file(ctx, "a.csv", "x")),
                     at("<broken YAML>", lambda ctx: write_file(ctx, "c.dvc", "outs: [")),
                     at("<no md5>", lambda ctx: write_file(ctx, "d.dvc", "outs:\n- path: x\n"))]})
    cases += sweep(m + "clean_output", {"text": "a\rb\n"}, {"text": [None, b"bytes", 3]})
    return cases


# --- lablib.data.augment.affine, lablib.methods.mixup, lablib.methods.imbalance (lab 09) ---------


def data_augment_affine() -> list[Case]:
    m = "lablib.data.augment."
    return sweep(m + "affine", {"x": V(lambda ctx: imgs())}, {
        "x": [None, made("3-d", lambda: rand(4, 8, 8)), made("uint8", lambda: (imgs() * 255).byte()),
              made("empty (valid)", lambda: imgs(0), check=lambda r, ctx: tuple(r.shape) == (0, 1, 8, 8))],
        "rotation": [-1, 181, NAN, "20"],
        "shift": [-0.1, 1.5, INF],
        "shear": [-1, 90, NAN],
        "zoom": [-0.1, 1.0, "0.1"],
        "flip": ["yes", 1],
        "fill": ["wrap", None, 0],
        "generator": [123],
    })


def methods_mixup() -> list[Case]:
    m = "lablib.methods.mixup."
    good = {"model": V(lambda ctx: cnn()), "x": V(lambda ctx: imgs()), "y": V(lambda ctx: labels(4)),
            "lam": 0.3, "perm": V(lambda ctx: torch.tensor([1, 0, 3, 2]))}
    cases = sweep(m + "mixup_loss", good, {
        "model": [None, "cnn"],
        "x": [None, made("empty", lambda: imgs(0)), made("uint8", lambda: (imgs() * 255).byte())],
        "y": [made("(3,)", lambda: labels(3)), made("float", lambda: labels(4).float())],
        "lam": [-0.1, 1.5, NAN, "0.3", None, made("2 values", lambda: torch.tensor([0.1, 0.2]))],
        "perm": [made("repeats", lambda: torch.tensor([0, 0, 1, 2])), made("(3,)", lambda: torch.tensor([0, 1, 2])),
                 made("float", lambda: torch.tensor([1.0, 0.0, 3.0, 2.0])), [1, 0, 3, 2]],
    })
    targets = {"y": V(lambda ctx: labels(4)), "perm": V(lambda ctx: torch.tensor([1, 0, 3, 2])), "lam": 0.3,
               "num_classes": 3}
    cases += sweep(m + "mixup_targets", targets, {
        "y": [None, made("with 3 of 3 classes", lambda: labels(4) + 1), made("2-d", lambda: labels(4)[None]),
              made("with -1", lambda: labels(4) - 1)],
        "num_classes": [0, 2.5, "3"],
        "lam": [INF],
        "perm": [made("out of range", lambda: torch.tensor([1, 0, 3, 4]))],
    })
    cases += sweep(m + "random_box", {"height": 8, "width": 8, "lam": 0.5}, {
        "height": [0, -1, 8.5], "width": ["8"], "lam": [1.1, NAN], "generator": [5]})
    cut = {"x": V(lambda ctx: imgs()), "perm": V(lambda ctx: torch.tensor([1, 0, 3, 2])), "box": (1, 1, 3, 3)}
    cases += sweep(m + "cutmix", cut, {
        "x": [None, made("(4, 64)", lambda: rand(4, 64))],
        "box": [None, (1, 1, 3), (-1, 0, 2, 2), (6, 6, 4, 4), (0, 0, 2.5, 2), "0,0,2,2"],
        "perm": [made("(5,)", lambda: torch.arange(5))],
    })
    return cases


def methods_imbalance() -> list[Case]:
    m = "lablib.methods.imbalance."
    np_ = __import__("numpy")
    xy = {"x": V(lambda ctx: np_.zeros((12, 2))), "y": V(lambda ctx: np_.arange(12) % 3), "cls": 1, "keep": 2}
    cases = sweep(m + "make_rare", xy, {
        "x": [made("(11, 2)", lambda: np_.zeros((11, 2)))],
        "y": [None, made("floats", lambda: np_.arange(12) / 2), made("2-d", lambda: np_.zeros((12, 1), int)),
              made("with -1", lambda: np_.arange(12) % 3 - 1), made("empty", lambda: np_.array([], int)),
              made("bools", lambda: np_.arange(12) % 2 == 0)],
        "cls": [-1, 1.5, "1"],
        "keep": [0, 5, 2.0],
        "seed": [-1, 2**32, "0"],
    })
    cases += sweep(m + "class_weights", {"y": V(lambda ctx: np_.arange(12) % 3), "num_classes": 3}, {
        "y": [None, made("label 3 of 3 classes", lambda: np_.arange(12) % 4), made("strings", lambda: np_.array(["a", "b"]))],
        "num_classes": [0, 3.0, None],
    })
    scores = {"y_true": V(lambda ctx: np_.arange(12) % 3), "y_pred": V(lambda ctx: np_.arange(12) % 3), "cls": 1}
    cases += sweep(m + "rare_class_scores", scores, {
        "y_true": [None, made("no sample of cls", lambda: np_.zeros(12, int))],
        "y_pred": [made("(11,)", lambda: np_.arange(11) % 3), made("floats", lambda: np_.zeros(12))],
        "cls": [-1, "1"],
    })
    return cases


def methods_tuning() -> list[Case]:
    m = "lablib.methods.tuning."
    xy = {"x": V(lambda ctx: randn(20, 6)), "y": V(lambda ctx: torch.arange(20) % 3)}
    cases = sweep(m + "train_many", {**xy, "lr": 0.1, "epochs": 2}, {
        "x": [None, made("numpy", lambda: randn(20, 6).numpy()), made("(20,)", lambda: randn(20)),
              made("int", lambda: torch.zeros(20, 6, dtype=torch.long)), made("(19, 6)", lambda: randn(19, 6))],
        "y": [made("floats", lambda: torch.zeros(20)), made("with -1", lambda: torch.arange(20) % 3 - 1)],
        "evals": [[1, 2], {"val": 3}, made("wrong features", lambda: {"val": (randn(5, 4), torch.zeros(5, dtype=torch.long))})],
        "lr": [0, -0.1, NAN, INF, "0.1", [], [0.1, NAN]],
        "momentum": [1.0, -0.1, [0.9, "0.9"]],
        "weight_decay": [-1e-4, NAN],
        "hidden": [0, 2.5, [8, 0]],
        "seed": [-1, 1.5],
        "optimizer": ["adam", None],
        "batch_size": [0, 4.0],
        "epochs": [0, -1, "3"],
        "on_epoch": [3, made("returns too few", lambda: (lambda e, s: [True, False]))],
        "record_steps": ["yes"],
    })
    rt = {**xy, "model": V(lambda ctx: torch.nn.Linear(6, 3)), "steps": 5}
    cases += sweep(m + "lr_range_test", rt, {
        "model": [None, "net"],
        "x": [made("numpy", lambda: randn(20, 6).numpy()), made("empty", lambda: randn(0, 6))],
        "lr_min": [0, -1e-5, NAN],
        "lr_max": [1e-6, INF],
        "steps": [0, 1, 2.5],
        "batch_size": [0, "32"],
        "momentum": [1.0, NAN],
        "diverge": [1.0, 0, NAN],
        "seed": [-1],
    })
    curve = {"lrs": V(lambda ctx: torch.logspace(-4, 0, 10)), "losses": V(lambda ctx: torch.linspace(2, 1, 10))}
    cases += sweep(m + "suggest_lr", curve, {
        "lrs": [None, made("negative", lambda: -torch.logspace(-4, 0, 10)), made("(5,)", lambda: torch.logspace(-4, 0, 5)),
                made("with inf", lambda: torch.tensor([1e-3, INF] * 5))],
        "losses": [made("all NaN", lambda: torch.full((10,), NAN)), made("(2,)", lambda: torch.ones(2))],
        "rule": ["max", None],
        "beta": [1.0, -0.1, NAN],
    })
    cases += sweep(m + "smooth", {"losses": V(lambda ctx: torch.ones(5))}, {"beta": [1.0, -1, "0.9"], "losses": ["abc"]})
    cases += sweep(m + "init_weights", {"features": 4, "hidden": 3, "classes": 2, "seed": 0}, {
        "features": [0, 2.5], "hidden": [-1], "classes": ["2"], "seed": [-1, NAN]})
    cases += sweep(m + "best_so_far", {"values": [0.1, 0.2]}, {"maximize": ["yes", 1], "values": ["ab", 5]})
    cases += sweep(m + "seeds_needed", {"differences": [0.0, 1.0, 2.0]}, {
        "differences": [[1.0], [], [1.0, NAN], "12", None],
        "alpha": [0.1, -1, "0.05"],
        "power": [0.5, 1.0],
    })
    return cases


# --- lablib.methods.monitoring (lab 12) -----------------------------------------------------------


def methods_monitoring() -> list[Case]:
    m = "lablib.methods.monitoring."
    cases = []
    for fn in ("total_grad_norm", "snapshot"):
        cases += sweep(m + fn, {"model": V(lambda ctx: mlp())}, {
            "model": [None, "mlp", made("a state dict", lambda: mlp().state_dict())]})
    snap = {"before": V(lambda ctx: {"w": rand(3, 3)}), "after": V(lambda ctx: {"w": rand(3, 3, seed=1)})}
    cases += sweep(m + "update_ratios", snap, {
        "before": [None, made("a list", lambda: [rand(3, 3)]), made("other names", lambda: {"v": rand(3, 3)}),
                   made("a float", lambda: {"w": 1.0})],
        "after": [made("(2, 3)", lambda: {"w": rand(2, 3)}), made("a str", lambda: {"w": "x"})],
        "eps": [-1.0, NAN, INF, "0"],
    })
    cases += sweep(m + "first_nonfinite", {"losses": [1.0, 0.5]}, {
        "losses": [None, "1,2", [1.0, "2"], [True, 1.0], made("2-d tensor entry", lambda: [rand(2)])]})
    cases += sweep(m + "first_explosion", {"norms": [1.0] * 5, "factor": 10.0, "window": 3}, {
        "norms": [None, [1.0, NAN], [1.0, INF], {"a": 1.0}],
        "factor": [0.5, NAN, INF, "10"], "window": [0, 2.5, True], "limit": [0, -1.0, NAN]})
    cases += sweep(m + "first_stall", {"losses": [1.0] * 6, "window": 2, "min_improvement": 0.01}, {
        "losses": [None, [1.0, NAN]], "window": [0, "2"], "min_improvement": [-0.1, 1.0, NAN]})
    cases += sweep(m + "first_gap", {"train": [1.0, 1.0], "val": [0.5, 0.5], "max_gap": 0.1, "patience": 1}, {
        "train": [[1.0], None], "val": [[0.5, "x"]], "max_gap": [-0.1, NAN], "patience": [0, 1.5]})
    cases += sweep(m + "early_stopping", {"val_losses": [1.0, 0.5, 0.7], "patience": 1}, {
        "val_losses": [None, "1.0", [1.0, NAN]], "patience": [0, -1, 2.5], "min_delta": [-0.1, INF]})
    cases += sweep(m + "Alarms", {}, {
        "factor": [0.5, "10"], "window": [0], "limit": [0, NAN], "stall_window": [0],
        "min_improvement": [1.0], "max_gap": [NAN, -1], "patience": [0]})
    cases += sweep(m + "gpu_utilisation", {"index": 0}, {"index": [-1, "0", 1.5, True]})
    cases += sweep(m + "system_metrics", {"device": "cpu"}, {"device": ["gpu0", 3]})
    cases += sweep(m + "read_scalars", {"logdir": V(lambda ctx: ctx.dir)}, {
        "logdir": [None, "", at("<missing>", lambda ctx: ctx.dir / "missing"),
                   at("<a file>", lambda ctx: write_file(ctx, "events.out.tfevents.1", b"not an event")),
                   at("<no event file>", lambda ctx: ctx.dir),
                   at("<corrupt event file>", lambda ctx: write_file(ctx, "run/events.out.tfevents.1.host", b"garbage").parent)]})
    served = {"logdir": V(lambda ctx: ctx.dir), "tmpdir": V(lambda ctx: ctx.root / "data" / "tb-tmp"), "timeout": 5.0}
    cases += sweep(m + "served_tags", served, {
        "logdir": [None, at("<missing>", lambda ctx: ctx.dir / "missing")],
        "tmpdir": [None, at("<a file>", lambda ctx: write_file(ctx, "tmpfile", b""))],
        "timeout": [0, -1.0, NAN, "5"]})
    return cases


# --- lablib.methods.efficient, lablib.methods.transfer (lab 13) -----------------------------------


def methods_efficient() -> list[Case]:
    m = "lablib.methods.efficient."
    good = {"x": V(lambda ctx: randn(1, 3, 5, 5)), "depthwise_weight": V(lambda ctx: randn(3, 1, 3, 3)),
            "pointwise_weight": V(lambda ctx: randn(2, 3, 1, 1)), "padding": 1}
    cases = sweep(m + "separable_conv", good, {
        "x": [None, made("3-d", lambda: randn(3, 5, 5)), made("int", lambda: torch.zeros(1, 3, 5, 5, dtype=torch.long))],
        "depthwise_weight": [made("(4, 1, 3, 3)", lambda: randn(4, 1, 3, 3)), made("(3, 1, 3, 2)", lambda: randn(3, 1, 3, 2)),
                             "w"],
        "pointwise_weight": [made("(2, 4, 1, 1)", lambda: randn(2, 4, 1, 1)), made("(2, 3)", lambda: randn(2, 3))],
        "padding": [-1, 1.5, "1"],
    })
    cases += sweep(m + "SeparableBlock", {"c_in": 4, "c_out": 8}, {"c_in": [0, 2.5, "4"], "c_out": [-1], "stride": [0, None]})
    cases += sweep(m + "conv_params", {"c_in": 4, "c_out": 8}, {
        "c_in": [0, 1.5], "c_out": ["8"], "k": [0, NAN], "separable": ["yes", 1]})
    cases += sweep(m + "conv_flops", {"n": 1, "c_in": 4, "c_out": 8, "h": 4, "w": 4}, {
        "n": [0, -1], "h": [0, "4"], "w": [2.5], "k": [-3], "separable": [None]})
    lin, x = (lambda: torch.nn.Linear(3, 2)), (lambda: randn(2, 3))
    cases += [
        case(m + "count_flops", "model=None", lambda ctx: ctx.fn(None, x()), ("model",)),
        case(m + "count_flops", "model='net'", lambda ctx: ctx.fn("net", x()), ("model",)),
        case(m + "count_flops", "no inputs", lambda ctx: ctx.fn(lin()), ("inputs",)),
        case(m + "count_flops", "inputs=[list]", lambda ctx: ctx.fn(lin(), [1.0, 2.0, 3.0]), ("inputs",)),
        case(m + "count_flops", "backward='yes'", lambda ctx: ctx.fn(lin(), x(), backward="yes"), ("backward",)),
        case(m + "count_flops", "backward=True, no grad",
             lambda ctx: ctx.fn(torch.nn.Identity(), x(), backward=True), ("backward",)),
    ]
    return cases


def methods_transfer() -> list[Case]:
    m = "lablib.methods.transfer."
    cases = sweep(m + "tiny_convnext", {"image_size": 16, "widths": (4, 8), "depths": (1, 1)}, {
        "num_labels": [0, "10"],
        "image_size": [20, 0],
        "channels": [0],
        "widths": [8, "16", [4, 0], (4, 8, 16)],
        "depths": [[1, -1], [], None],
        "patch_size": [0, 2.5],
    })
    cases += sweep(m + "load_pretrained", {"model": "org/model", "allow_download": False}, {
        "model": [None, 3, "", missing("nope", "model"), a_file("weights.bin", "model"), a_dir("empty", "model"),
                  "org/model"],
        "num_labels": [0, "5"],
        "allow_download": ["no", 1],
    })
    return cases



# --- lablib.methods.continual (lab 14) ------------------------------------------------------------


def methods_continual() -> list[Case]:
    m = "lablib.methods.continual."

    def mlp():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))

    def dicts():
        return {"w": randn(3, 4), "b": randn(3)}

    fisher_args = {"model": V(lambda ctx: mlp()), "x": V(lambda ctx: randn(8, 6)), "y": V(lambda ctx: torch.arange(8) % 3)}
    cases = sweep(m + "fisher_diagonal", fisher_args, {
        "model": [None, "net", made("returns a tuple", lambda: torch.nn.LSTM(6, 3))],
        "x": [None, made("numpy", lambda: randn(8, 6).numpy()), made("empty", lambda: randn(0, 6)),
              made("int", lambda: torch.zeros(8, 6, dtype=torch.long)), made("NaN", lambda: torch.full((8, 6), NAN)),
              made("(8,)", lambda: randn(8))],
        "y": [made("floats", lambda: torch.zeros(8)), made("label 3 of 3", lambda: torch.full((8,), 3)),
              made("label -1", lambda: torch.full((8,), -1)), made("(7,)", lambda: torch.zeros(7, dtype=torch.long)),
              [0, 1, 2, 0, 1, 2, 0, 1]],
        "classes": [[0, 3], [1, 1], [], "01", [0.5], made("float tensor", lambda: torch.tensor([0.0, 1.0])),
                    made("y outside", lambda: [1, 2])],
        "batch_size": [0, -1, 2.5, "8"],
    })
    pen = {"params": V(lambda ctx: {k: v.requires_grad_() for k, v in dicts().items()}),
           "fisher": V(lambda ctx: {k: v.abs() for k, v in dicts().items()}), "anchor": V(lambda ctx: dicts()), "lam": 10.0}
    cases += sweep(m + "ewc_penalty", pen, {
        "params": [None, [1, 2], made("missing b", lambda: {"w": randn(3, 4)}), made("w (4, 3)", lambda: {"w": randn(4, 3), "b": randn(3)})],
        "fisher": [None, {}, made("negative", lambda: {k: -v.abs() - 1 for k, v in dicts().items()}),
                   made("NaN", lambda: {"w": torch.full((3, 4), NAN), "b": randn(3).abs()}),
                   made("w (2, 4)", lambda: {"w": randn(2, 4).abs(), "b": randn(3).abs()}), made("a number", lambda: {"w": 1.0, "b": 1.0})],
        "anchor": [None, made("missing b", lambda: {"w": randn(3, 4)}), made("inf", lambda: {"w": torch.full((3, 4), INF), "b": randn(3)})],
        "lam": [-1.0, NAN, INF, "10", None, True],
    })
    merge = {"old": V(lambda ctx: dicts()), "new": V(lambda ctx: dicts()), "gamma": 0.9}
    cases += sweep(m + "merge_fishers", merge, {
        "old": [None, [1.0]], "new": [made("missing b", lambda: {"w": randn(3, 4)}), made("b (4,)", lambda: {"w": randn(3, 4), "b": randn(4)})],
        "gamma": [-0.1, 1.5, NAN, "0.9"],
    })
    cases += sweep(m + "permutation", {"features": 64, "seed": 0}, {"features": [0, -1, 2.5, "64", None], "seed": [-1, 1.5, "0"]})
    cases += sweep(m + "permute_pixels", {"x": V(lambda ctx: randn(4, 1, 2, 2)), "perm": V(lambda ctx: torch.arange(4))}, {
        "x": [None, made("(4,)", lambda: randn(4)), made("empty", lambda: randn(0, 4))],
        "perm": [None, [0, 1, 2, 3], made("repeats", lambda: torch.zeros(4, dtype=torch.long)),
                 made("too short", lambda: torch.arange(3)), made("float", lambda: torch.arange(4.0))],
    })
    xy = {"x": V(lambda ctx: randn(10, 3)), "y": V(lambda ctx: torch.arange(10) % 5)}
    cases += sweep(m + "split_classes", {**xy, "classes": [0, 1]}, {
        "x": [None, made("(10,)", lambda: randn(10))], "y": [made("(9,)", lambda: torch.arange(9) % 5), made("floats", lambda: torch.zeros(10))],
        "classes": [[7], [], [0, 0], [-1], "01", None],
    })
    cases += sweep(m + "replay_buffer", {**xy, "per_class": 1, "seed": 0}, {
        "x": [made("int", lambda: torch.zeros(10, 3, dtype=torch.long))], "y": [made("label -1", lambda: torch.full((10,), -1))],
        "per_class": [0, -2, 1.5, "1"], "seed": [-1, 0.5],
    })
    cases += sweep("lablib.nets.ensemble.Ensemble", {"models": V(lambda ctx: [mlp(), mlp()])}, {
        "models": [None, [], made("a model", lambda: mlp()), made("mixed", lambda: [mlp(), torch.nn.Linear(6, 3)]), ["net"],
                   made("no parameters", lambda: [torch.nn.ReLU()])],
    })
    data = {"data": V(lambda ctx: [(randn(5, 3), torch.zeros(5, dtype=torch.long))]), "batch_size": 4}
    cases += sweep("lablib.nets.ensemble.member_batches", data, {
        "data": [None, [], made("not pairs", lambda: [randn(5, 3)]), made("labels (4,)", lambda: [(randn(5, 3), torch.zeros(4, dtype=torch.long))]),
                 made("shapes differ", lambda: [(randn(5, 3), torch.zeros(5, dtype=torch.long)), (randn(5, 2), torch.zeros(5, dtype=torch.long))])],
        "batch_size": [0, 2.5], "seed": [-1],
        "replay": [[None, None], made("bad pair", lambda: [(randn(2, 3),)])],
        "replay_fraction": [-0.5, 1.5, NAN],
    })
    return cases


def methods_distributed() -> list[Case]:
    m = "lablib.methods.distributed."
    ranks = V(lambda ctx: [randn(3, 2), randn(3, 2, seed=1)])
    bad_ranks = [None, "ab", [], [1.0, 2.0], made("a tensor", lambda: randn(3)),
                 made("shapes differ", lambda: [randn(3), randn(4)]), made("dtypes differ", lambda: [randn(3), randn(3).double()]),
                 made("bool", lambda: [torch.ones(2, dtype=torch.bool)]), made("a dict", lambda: {0: randn(3)})]
    cases = []
    for fn in ("allreduce_sum", "reduce_scatter_sum", "ring_allreduce"):
        cases += sweep(m + fn, {"tensors": ranks}, {"tensors": bad_ranks})
    cases += sweep(m + "ring_traffic", {"n_ranks": 4, "n_bytes": 1000}, {
        "n_ranks": [0, -1, 2.5, "4", None, True], "n_bytes": [-1, NAN, INF, "10", None, True],
    })

    def grads(*shapes):
        return [{"w": randn(*s, seed=i), "b": randn(2, seed=i)} for i, s in enumerate(shapes)]

    cases += sweep(m + "average_gradients", {"grads": V(lambda ctx: grads((2, 2), (2, 2)))}, {
        "grads": [None, [], "ab", made("a dict", lambda: grads((2, 2))[0]), [{"w": 1.0}],
                  made("keys differ", lambda: [{"w": randn(2)}, {"v": randn(2)}]), made("shapes differ", lambda: grads((2, 2), (3, 2))),
                  made("dtypes differ", lambda: [{"w": randn(2)}, {"w": randn(2).double()}]),
                  made("bool", lambda: [{"w": torch.ones(2, dtype=torch.bool)}])],
    })
    zero = {"n_params": 1000, "n_ranks": 4, "stage": 3}
    bad_zero = {"n_params": [0, -5, 1.5, "1000", None, True, NAN], "n_ranks": [0, -1, 2.5, "4", None],
                "stage": [-1, 4, 1.5, "3", None, True], "precision": ["fp32", None, {"params": 4, "grads": 4, "optimizer": 8}]}
    cases += sweep(m + "zero_bytes", zero, bad_zero)
    cases += sweep(m + "zero_saving", zero, bad_zero)
    cases += sweep(m + "Precision", {"name": "fp32", "params": 4, "grads": 4, "optimizer": 8}, {
        "name": [None, 3], "params": [-1, NAN, INF, "4", None, True], "grads": [-0.5, "2"], "optimizer": [INF, None],
    })
    cases += sweep(m + "model_state_bytes", {"model": V(lambda ctx: mlp()), "optimizer": None}, {
        "model": [None, "net", made("a state dict", lambda: mlp().state_dict())],
        "optimizer": ["adam", {"lr": 1e-3}, made("a model", lambda: mlp())],
    })
    state = {"a": V(lambda ctx: {"w": randn(2, 2), "b": randn(2)}), "b": V(lambda ctx: {"w": randn(2, 2, seed=1), "b": randn(2, seed=1)})}
    cases += sweep(m + "max_difference", state, {
        "a": [None, [1.0], {}, {"w": 1.0}], "b": [None, "b", made("keys differ", lambda: {"w": randn(2, 2)}),
                                                  made("w (2, 3)", lambda: {"w": randn(2, 3), "b": randn(2)})],
    })
    return cases


# --- lablib.data.series, lablib.methods.forecast (lab 18) -----------------------------------------


def data_series() -> list[Case]:
    m = "lablib.data.series."
    base = {"n_series": 2, "days": 30, "seed": 0}
    cases = sweep(m + "demand", base, {
        "n_series": pos_int(True, -1), "days": [3, "30", 30.0, None], "seed": [-1, 1.5, "0", None],
        "noise": [-0.1, NAN, INF, "0.1", None], "season_strength": [-1.0, NAN, "0.3"],
        "promo_rate": [1.5, -0.1, NAN, "0.05"], "missing": [0.9, -0.1, NAN, True], "level": [0, -1.0, NAN, INF, "100"],
        "start": ["not a date", 20220101, None, "2022-02-30"],
    })
    cases.append(case(m + "demand", "n_series x days too large",
                      lambda ctx: ctx.fn(n_series=100_000, days=100_000, seed=0), ("n_series", "days")))

    def adds_up(d, ctx):
        parts = sum(getattr(d, c) for c in ("trend", "season", "promo", "holiday", "noise"))
        return bool((parts - d.truth).abs().to_numpy().max() < 1e-9 and (d.truth.to_numpy() >= 0).all())

    cases.append(case(m + "demand", "noisy, strong season: adds up, never negative",
                      lambda ctx: ctx.fn(5, 200, 0, noise=2.0, season_strength=2.0), check=adds_up))
    cases.append(case(m + "Demand.components", "column='s999'",
                      lambda ctx: ctx.fn(lab("lablib.data.series.demand")(2, 20, 0), "s999"), ("column",)))
    return cases


def methods_forecast() -> list[Case]:
    m = "lablib.methods.forecast."
    seq = [None, "123", [], [[1.0, 2.0]], [True, False], [1.0, NAN], [1.0, INF], {"a": 1.0}, 3.0,
           made("2-d tensor", lambda: randn(2, 3))]
    cases = sweep(m + "naive", {"history": [1.0, 2.0, 3.0], "horizon": 3}, {
        "history": seq, "horizon": pos_int(True, -1)})
    cases += sweep(m + "seasonal_naive", {"history": [1.0] * 14, "horizon": 3, "period": 7}, {
        "history": [None, Bad("6 values", [1.0] * 6), Bad("NaN at the end", [1.0] * 13 + [NAN])], "horizon": [0, "3"],
        "period": pos_int(True)})
    week = [5.0, -1.0, 0.0, -2.0, 3.0, -4.0, -1.0]
    cases.append(case(m + "seasonal_naive", "periodic series: exact",
                      lambda ctx: ctx.fn(week * 5, 10, 7),
                      check=lambda r, ctx: [float(v) for v in r] == (week * 2)[:10]))
    good = {"trend": [float(i) for i in range(20)], "seasonal": [0.0] * 20, "horizon": 3, "window": 5, "period": 7}
    cases += sweep(m + "decomposition_forecast", good, {
        "trend": [None, "abc", Bad("NaN end", [float(i) for i in range(17)] + [NAN] * 3), Bad("(20, 1)", [[1.0]] * 20)],
        "seasonal": [Bad("19 values", [0.0] * 19), Bad("strings", ["a"] * 20), Bad("inf", [0.0] * 19 + [INF])],
        "horizon": [0, 2.5], "window": [1, 0, 25, "5"], "period": [0, 30, None],
    })
    cases.append(case(m + "decomposition_forecast", "a line plus a season: exact",
                      lambda ctx: ctx.fn([2.0 * i for i in range(21)], week * 3, 7, 14, 7),
                      check=lambda r, ctx: all(abs(float(v) - (2.0 * (21 + k) + week[k])) < 1e-9
                                               for k, v in enumerate(r))))
    cases += sweep(m + "fill_trend_ends", {"trend": [NAN, 1.0, 2.0, 3.0, 4.0, NAN], "window": 3}, {
        "trend": [None, Bad("all NaN", [NAN] * 6), Bad("inner NaN", [NAN, 1.0, NAN, 3.0, 4.0, NAN]),
                  Bad("inf", [NAN, 1.0, INF, 3.0, 4.0, NAN]), "trend"],
        "window": [1, 0, 2.5, 10, "3"],
    })
    cases.append(case(m + "fill_trend_ends", "a line with NaN ends: filled exactly",
                      lambda ctx: ctx.fn([NAN, NAN, 3.0, 4.0, 5.0, 6.0, NAN], 3),
                      check=lambda r, ctx: all(abs(float(v) - (i + 1)) < 1e-9 for i, v in enumerate(r))))
    for fn in ("mae", "mape", "smape"):
        cases += sweep(m + fn, {"actual": [1.0, 2.0, 4.0], "forecast": [1.0, 2.0, 3.0]}, {
            "actual": [None, [], [1.0, NAN, 2.0], "124", [[1.0, 2.0, 4.0]]],
            "forecast": [[1.0, 2.0], [1.0, INF, 2.0], {"a": 1.0}, [True, False, True]],
        })
    cases.append(case(m + "mape", "actual has a zero day", lambda ctx: ctx.fn([0.0, 2.0], [1.0, 2.0]), ("actual",)))
    cases.append(case(m + "smape", "both zero: a perfect day", lambda ctx: ctx.fn([0.0, 2.0], [0.0, 2.0]),
                      check=lambda r, ctx: r == 0.0))
    return cases


def deploy_serving() -> list[Case]:
    """The model service: every bad argument is refused before a server starts; a request's bad
    field is a RequestError (a ValueError) naming the field. Should a bad serve() call slip
    through, subprocess.Popen is replaced in the worker, so no server starts."""
    m = "lablib.deploy.serving."
    store = V(lambda ctx: fixture("serving_store"))

    def model(ctx):
        return lab(m + "load_model")("v1", fixture("serving_store"))

    def router(weights=None):
        return lab(m + "Router")(weights or {"v1": 1.0})

    def png_bytes(ctx, fmt="PNG"):
        import io

        from PIL import Image
        buf = io.BytesIO()
        Image.new("L", (8, 8)).save(buf, fmt)
        return buf.getvalue()

    def bomb(ctx):  # an 8x8 PNG whose header declares 20,000 x 20,000 pixels
        import struct
        import zlib
        data = bytearray(png_bytes(ctx))
        header = struct.pack(">II", 20_000, 20_000) + bytes(data[24:29])  # IHDR: size, then depth...
        data[16:29] = header
        data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
        return bytes(data)

    cases = sweep(m + "inputs.from_base64", {}, {"image_base64": [None, 5, "", "no base64!", "YWJj*"]})
    cases += sweep(m + "inputs.decode_image", {"data": V(png_bytes)}, {
        "data": [None, "abc", b"", b"hello", at("<a GIF>", lambda ctx: png_bytes(ctx, fmt="GIF")),
                 at("<a PNG of 20000x20000>", bomb, names=("data",))],
        "size": [(0, 8), 8, (8,), ("8", 8), None], "invert": ["maybe", None]})
    cases += sweep(m + "inputs.pixels_array", {"pixels": [[0.0] * 8] * 8, "shape": [1, 8, 8]}, {
        "pixels": [None, "x", Bad("8x7", [[0.0] * 7] * 8), Bad("strings", [["0"] * 8] * 8),
                   Bad("bools", [[True] * 8] * 8), Bad("NaN", [[NAN] * 8] * 8), Bad("2.0", [[2.0] * 8] * 8),
                   Bad("ragged", [[0.0] * 8] * 7 + [[0.0]])],
        "shape": [None, "1x8x8", [0, 8, 8], [1.5, 8, 8]]})
    cases += sweep(m + "inputs.top_k", {"probs": [0.2, 0.5, 0.3], "classes": ["a", "b", "c"], "k": 2}, {
        "probs": [[NAN, 0.5, 0.5], [0.5, 0.5]], "classes": [["a"], None, "abc"], "k": [0, 4, "2", 1.5, True, None]})
    cases += sweep(m + "inputs.softmax", {"logits": [[1.0, 2.0]]}, {"logits": [[1.0, 2.0], [], "ab"]})
    meta = dict(SERVING_META)
    onnx = V(lambda ctx: fixture("onnx"))
    cases += sweep(m + "save_model", {"version": "v2", "onnx_file": onnx, "meta": meta,
                                      "root": V(lambda ctx: ctx.dir / "store")}, {
        "version": [None, "", "../v2", "v 2", ".hidden", 2],
        "onnx_file": [missing("nope.onnx", "onnx_file"), None,
                      at("<not a model>", lambda ctx: write_file(ctx, "x.onnx", "hello"), names=("onnx_file", "x.onnx"))],
        "meta": [None, {}, Bad("one class", {**meta, "classes": ["a"]}, names=("meta", "classes")),
                 Bad("classes a, a, b", {**meta, "classes": ["a", "a", "b"]}, names=("meta", "classes")),
                 Bad("input 1x16x16", {**meta, "input_shape": [1, 16, 16]}, names=("meta", "input_shape")),
                 Bad("input 8x8", {**meta, "input_shape": [8, 8]}, names=("meta", "input_shape")),
                 Bad("accuracy 1.5", {**meta, "accuracy": 1.5}, names=("meta", "accuracy")),
                 Bad("output softmax", {**meta, "output": "softmax"}, names=("meta", "output")),
                 Bad("preprocessing None", {**meta, "preprocessing": None}, names=("meta", "preprocessing")),
                 Bad("4 classes for a 3-class model", {**meta, "classes": ["a", "b", "c", "d"]}, names=("meta", "classes"))],
        "replace": ["yes"], "root": [3, a_file("store.txt", "root")]}, needs=("onnx",))
    cases += [case(m + "save_model", "version=<exists>", lambda ctx: ctx.fn("v1", fixture("onnx"), meta, fixture("serving_store")),
                   ("version", "v1"), needs=("serving_store",))]
    cases += sweep(m + "load_model", {"version": "v1", "root": store}, {
        "version": ["v9", None, "../v1"], "threads": [0, "1", 1.5, None],
        "root": [missing("nowhere", "root"), a_file("store.txt", "root")]}, needs=("serving_store",))
    cases += sweep(m + "versions", {}, {"root": ["", 3, a_file("store.txt", "root")]})
    cases += sweep(m + "default_model", {"version": "v1", "root": store}, {
        "version": ["../v1", None], "epochs": pos_int(), "width": [0, "16"], "seed": [-1, "0"],
        "force": ["yes"], "progress": [1]}, needs=("serving_store",))
    cases += sweep(m + "Faulty", {"model": V(model)}, {
        "model": [None, "v1"], "error_rate": fraction(-0.1), "delay_s": [-1, NAN, "1", 3600], "version": ["bad version"],
        "seed": [-1]}, needs=("serving_store",))
    cases += sweep(m + "Router", {"weights": {"v1": 0.5, "v2": 0.5}}, {
        "weights": [None, {}, [("v1", 1)], {"v1": -1}, {"v1": 0}, {"v1": NAN}, {"v1": INF}, {"v1": "1"}, {"../v1": 1}, {1: 1}],
        "stable": ["v9", 3], "seed": [-1, "0", 1.5]})
    cases += [
        case(m + "Router.set_weights", "weights=<without stable>", lambda ctx: ctx.fn(router(), {"v2": 1.0}), ("weights",)),
        case(m + "Router.set_weights", "weights=[]", lambda ctx: ctx.fn(router(), []), ("weights",)),
        case(m + "Router.set_weights", "reason=3", lambda ctx: ctx.fn(router(), {"v1": 1}, reason=3), ("reason",)),
        case(m + "Router.choose", "user_id=3", lambda ctx: ctx.fn(router(), 3), ("user_id",)),
        case(m + "Router.choose", "user_id=''", lambda ctx: ctx.fn(router(), ""), ("user_id",)),
        case(m + "Router.rollback", "reason=''", lambda ctx: ctx.fn(router(), ""), ("reason",)),
        case(m + "Router.promote", "version=None", lambda ctx: ctx.fn(router(), None), ("version",)),
    ]
    cases += sweep(m + "bucket", {}, {"user_id": [None, "", 3, b"alice"]})
    cases += sweep(m + "Canary", {"router": V(lambda ctx: router()), "version": "v2"}, {
        "router": [None, {"v1": 1}], "version": ["v1", None, "v 2"],
        "steps": [(), (0.5, 0.25, 1.0), (0.05, 0.5), (0, 1.0), (0.5, 1.5), "0.5", (NAN, 1.0)]})
    cases += sweep(m + "RollbackGuard", {"router": V(lambda ctx: router())}, {
        "router": [None], "max_error_rate": [1.0, -0.1, NAN, "0.1"], "max_p99_s": [0, -1, NAN, INF, "0.2"],
        "window": [0, 1.5, "200"], "min_requests": [0, 1000, "20"]})
    guard = V(lambda ctx: lab(m + "RollbackGuard")(router({"v1": 0.5, "v2": 0.5})))
    cases += [
        case(m + "RollbackGuard.observe", f"{arg}={short(v)}",
             lambda ctx, arg=arg, v=v: ctx.fn(guard.make(ctx), **{"version": "v2", "latency_s": 0.01, "ok": True, arg: v}), (arg,))
        for arg, v in [("latency_s", NAN), ("latency_s", -1.0), ("latency_s", "0.1"), ("ok", "yes"), ("ok", 1),
                       ("version", None), ("version", "../v2")]]
    app_base = {"models": V(model)}
    cases += sweep(m + "make_app", app_base, {
        "models": [None, [], {}, "v1", [1, 2]], "weights": [{"v9": 1.0}, {"v1": -1}], "stable": ["v9"],
        "framework": ["flask", None], "max_body": [0, "1MB", 1.5], "admin": ["yes"], "offload": [1],
        "guard": ["yes", None], "router": ["v1"]}, needs=("serving_store",))
    from_env = m + "from_env"
    env_base = V(lambda ctx: {"SERVING_MODELS": str(fixture("serving_store"))})
    for var, bad in [("SERVING_WEIGHTS", "v1=a"), ("SERVING_WEIGHTS", "v9"), ("SERVING_WEIGHTS", "v1=-1"),
                     ("SERVING_THREADS", "x"), ("SERVING_THREADS", "0"), ("SERVING_MAX_BODY", "1MB"),
                     ("SERVING_FRAMEWORK", "flask"), ("SERVING_ADMIN", "yes"), ("SERVING_STABLE", "v9")]:
        cases.append(case(from_env, f"{var}={bad}", lambda ctx, var=var, bad=bad: ctx.fn({**env_base.make(ctx), var: bad}),
                          (var, "weights"), needs=("serving_store",)))
    cases.append(case(from_env, "SERVING_MODELS=<empty folder>",
                      lambda ctx: ctx.fn({"SERVING_MODELS": str(folder(ctx, "empty"))}), ("SERVING_MODELS", "empty")))
    cases += sweep(m + "app.parse_weights", {"text": "v1=1"}, {"text": [None, "", "v1=a", 3]}, aliases={"text": ("weights",)})

    serve_cases = sweep(m + "serve", {"models": store}, {
        "host": ["0.0.0.0", "::", "192.168.1.10", "example.com", "", None],
        "port": [0, 70_000, "8000", 2.5], "app": ["no_colon", None], "framework": ["flask"],
        "models": [missing("nowhere", "models"), a_file("m.txt", "models")], "weights": [{}, {"v1": -1}, "v1"],
        "workers": [0, 100, "2"], "timeout_s": positive(-1, INF), "threads": [0, "1"], "max_body": [0],
        "allow_public": ["yes"], "env": [{"A": 1}, ["A=1"]],
        "app_dir": [missing("nowhere", "app_dir"), a_file("app.py", "app_dir")]}, needs=("serving_store",))
    for c in serve_cases:
        c.call = no_process(c.call, "uvicorn")
    cases += serve_cases
    cases += sweep(m + "load", {"url": "http://127.0.0.1:9", "payloads": None, "path": "/health", "n": 1}, {
        "url": [None, "127.0.0.1:9", "https://127.0.0.1:9", "http://10.1.2.3:80", "http://127.0.0.1"],
        "payloads": [{"pixels": []}, [], b"{}", ["text"]], "concurrency": [0, 5000, "8", None],
        "n": [0, -1, "10", 10**9], "duration_s": [0, -1, NAN, 1e6], "path": ["health", None],
        "timeout_s": [0, NAN], "keep_bodies": ["yes"]})
    cases.append(case(m + "load", "n=None, duration_s=None",
                      lambda ctx: ctx.fn("http://127.0.0.1:9", None, path="/health"), ("n", "duration_s")))
    cases += sweep(m + "percentile", {"values": [1.0, 2.0], "q": 50}, {
        "values": [None, [NAN], [-1.0], ["1"]], "q": [101, -1, NAN, "50"]})
    # the serving lab's additions: one image's answer, the rollback rule, batching, robustness, the gate
    cases += sweep(m + "respond", {"logits": [1.0, 2.0, 3.0], "classes": ["a", "b", "c"], "k": 2, "version": "v1"}, {
        "logits": [[[1.0, 2.0, 3.0]], [NAN, 1.0, 2.0], [INF, 1.0, 2.0], "abc"], "classes": [["a"], None],
        "k": [0, 4, "2", True], "version": [None, "", 3]})
    window = {"n": 30, "error_rate": 0.1, "p99_s": 0.01}
    cases += sweep(m + "breaches", {"stats": window, "max_error_rate": 0.05, "max_p99_s": 0.2, "min_requests": 20}, {
        "stats": [None, {"n": 30}, Bad("n=-1", {**window, "n": -1}, names=("n", "stats")),
                  Bad("error_rate=1.5", {**window, "error_rate": 1.5}, names=("error_rate", "stats")),
                  Bad("p99_s='1'", {**window, "p99_s": "1"}, names=("p99_s", "stats"))],
        "max_error_rate": fraction(-0.1), "max_p99_s": [0, -1, NAN, "0.2"], "min_requests": [0, 1.5, "20"]})
    cases += sweep(m + "MicroBatcher", {"predict": lambda x: x}, {
        "predict": [None, 3], "max_batch": pos_int(), "max_wait_s": [-1, NAN, "0.01", 100], "offload": ["yes", 1]})

    async def ping(x):
        return x

    cases += sweep(m + "closed_loop", {"call": ping, "inputs": [1, 2], "n": 2}, {
        "call": [None, 3, Bad("<not async>", lambda x: x, names=("call", "async"))], "inputs": [[], None, "ab", {}],
        "concurrency": [0, 5000, "8"], "n": pos_int(), "setup": [3]})

    def asgi_case(label, kwargs, names):
        def call(ctx):
            import asyncio
            return asyncio.run(ctx.fn(**{"app": lab(m + "make_app")(model(ctx)), "body": b"{}", **kwargs}))
        return case(m + "asgi_post", label, call, names, needs=("serving_store",))

    cases += [asgi_case("app=None", {"app": None}, ("app",)), asgi_case("body=<a dict>", {"body": {}}, ("body",)),
              asgi_case("body='{}'", {"body": "{}"}, ("body",)), asgi_case("path='api'", {"path": "api"}, ("path",)),
              asgi_case("content_type=None", {"content_type": None}, ("content_type",))]
    r = m + "robustness."
    images = V(lambda ctx: __import__("numpy").zeros((2, 1, 8, 8), dtype="float32"))
    cases += sweep(r + "corrupt", {"x": images, "kind": "noise", "severity": 0.1}, {
        "x": [None, "img", [[0.0]], made("ints", lambda: __import__("numpy").zeros((2, 1, 8, 8), dtype="int64")),
              made("(8, 8)", lambda: __import__("numpy").zeros((8, 8), dtype="float32"))],
        "kind": ["rain", None], "severity": [-0.1, NAN, "0.1", None, 100.0], "seed": [-1, "0"]})
    cases += [case(r + "corrupt", "kind=occlusion, severity=1.5", lambda ctx: ctx.fn(images.make(ctx), "occlusion", 1.5), ("severity",)),
              case(r + "corrupt", "kind=shift, severity=0.5", lambda ctx: ctx.fn(images.make(ctx), "shift", 0.5), ("severity",))]
    cases += sweep(r + "accuracy", {"model": V(model), "x": images, "y": [0, 1]}, {
        "model": [None, "v1"], "x": [None, "img"], "y": [None, [0], [0.5, 1.5], "01", [[0, 1]]], "batch_size": [0, "8"]},
        needs=("serving_store",))
    cases += sweep(r + "curves", {"model": V(model), "x": images, "y": [0, 1]}, {
        "kinds": [[("noise", (0.1,))], "noise", {}, {"rain": (0.1,)}, {"noise": (-1,)}], "seed": [-1]}, needs=("serving_store",))
    cases += sweep(r + "score", {"measured": {"noise": [(0.0, 0.9), (0.1, 0.8)]}}, {
        "measured": [None, {}, [("noise", 0.1)], {"noise": [(0.0, 0.9)]}]})
    g = m + "gate."
    metrics = {"accuracy": 0.9, "robustness": 0.7, "p99_ms": 0.2, "size_kb": 60.0}
    cases += sweep(g + "decide", {"current": metrics, "candidate": metrics}, {
        "current": [None, {"accuracy": 0.9}, Bad("accuracy=NaN", {**metrics, "accuracy": NAN}, names=("accuracy", "current"))],
        "candidate": [None, [0.9], Bad("p99_ms=-1", {**metrics, "p99_ms": -1}, names=("p99_ms", "candidate")),
                      Bad("size_kb='60'", {**metrics, "size_kb": "60"}, names=("size_kb", "candidate"))],
        "rules": [{"max_accuracy_drop": 0.01}, "strict"]})
    cases += sweep(g + "Rules", {}, {
        "max_accuracy_drop": fraction(-0.1), "max_robustness_drop": fraction(-0.1), "max_p99_ratio": [0.5, NAN, INF, "2"],
        "p99_slack_ms": [-1, NAN, "1"], "max_size_ratio": [0.5, NAN, "2"]})
    cases += sweep(g + "measure", {"models": V(lambda ctx: {"v1": model(ctx)}), "x": images, "y": [0, 1], "latency_n": 2}, {
        "models": [None, {}, {"v1": "model"}, [1]], "x": [None, "img"], "y": [[0], None], "latency_n": pos_int(),
        "seed": [-1], "rounds": pos_int()}, needs=("serving_store",))
    cases += sweep(g + "as_dict", {}, {"decision": [None, {"promote": True}]})
    cases += sweep(m + "default_model", {"version": "v1", "root": store}, {
        "noise": [-0.1, NAN, "0.2", 2.0], "shift": [-1, 1.5, "1", 9], "dynamo": ["no", 1]}, needs=("serving_store",))
    return cases


# --- lablib.methods.custom_op ---------------------------------------------------------------------


def methods_custom_op() -> list[Case]:
    m = "lablib.methods.custom_op."
    t = V(lambda ctx: randn(2, 3))
    wrong_shape = made("(3,)", lambda: randn(3))
    cases = sweep(m + "sin_backward", {"grad": t, "x": t}, {
        "grad": [None, [1.0], wrong_shape], "x": [None, "x", wrong_shape]})
    cases += sweep(m + "sin_mul_add_reference", {"x": t, "y": t, "z": t}, {
        "x": [None, 1.0], "y": [wrong_shape, [1.0]], "z": [made("(2, 1)", lambda: randn(2, 1)), None]})
    cases += sweep(m + "sin_mul_add_backward", {"grad": t, "x": t, "y": t}, {
        "grad": [None, wrong_shape], "x": ["x", wrong_shape], "y": [None, made("(1, 3)", lambda: randn(1, 3))]})
    cases += sweep(m + "toolchain_problem", {}, {"cuda": ["yes", 1, None]})
    # every bad argument is refused before anything is compiled (a valid call would build)
    cases += sweep(m + "build", {"name": "probe_ops", "cpp_sources": ["int probe_x;"]}, {
        "name": ["my-ops", "", "1abc", 3, None], "cpp_sources": [[], [""], 5, None, [3]],
        "cuda_sources": [[None], "", 7], "extra_cflags": ["-O3", ["O3"], [3], None],
        "extra_cuda_cflags": ["x", [None]], "root": ["", 3], "verbose": ["yes", 1]})
    fns = {"fake": V(lambda ctx: lambda x: x), "backward": V(lambda ctx: lambda c, g: g),
           "setup_context": V(lambda ctx: lambda c, i, o: None)}
    cases += sweep(m + "register", {"op": "aten::sin", **fns}, {
        "op": ["sin", "a::b::c", "no_such_ns::op", 3, None], "fake": [None, 3], "backward": [None],
        "setup_context": ["f"]})
    return cases


# --- lablib.methods.pipeline, cache.load_or_train, models.DeepMLP (lab 19) -------------------------


def methods_pipeline() -> list[Case]:
    m = "lablib.methods.pipeline."

    def pt(name="a", accuracy=0.9, latency_ms=1.0, size_kb=10.0, **extra):
        return {"name": name, "accuracy": accuracy, "latency_ms": latency_ms, "size_kb": size_kb, **extra}

    points = [pt("a"), pt("b", 0.95, 2.0, 20.0)]
    budget = {"max_latency_ms": INF, "max_size_kb": INF, "min_accuracy": 0.0}
    bad_points = [None, "ab", {"a": 1}, [1], Bad("[name '']", [pt("")]), Bad("[a, a]", [pt("a"), pt("a")]),
                  Bad("[accuracy 1.5]", [pt(accuracy=1.5)]), Bad("[accuracy nan]", [pt(accuracy=NAN)]),
                  Bad("[latency -1]", [pt(latency_ms=-1.0)]), Bad("[size '1']", [pt(size_kb="1")]),
                  Bad("[accuracy True]", [pt(accuracy=True)]), Bad("[name only]", [{"name": "a"}])]
    cases = sweep(m + "pareto_front", {"points": points}, {"points": bad_points})
    cases += sweep(m + "choose", {"points": points, "budget": budget}, {
        "points": bad_points[:6],
        "budget": [None, [1], {}, Bad("+extra", {**budget, "extra": 1}), Bad("min_accuracy 2", {**budget, "min_accuracy": 2.0}),
                   Bad("max_latency_ms nan", {**budget, "max_latency_ms": NAN}),
                   Bad("max_size_kb -1", {**budget, "max_size_kb": -1.0}),
                   Bad("min_accuracy '0'", {**budget, "min_accuracy": "0"})]})
    cases += sweep(m + "dominates", {"a": pt(), "b": pt("b")}, {
        "a": [None, [1], {"accuracy": 0.9}], "b": [pt(latency_ms=NAN), "b"]})
    cases += sweep(m + "within", {"point": pt(), "budget": budget}, {
        "point": [None, pt(size_kb=-1.0)], "budget": [None, {"max_size_kb": 1}]})
    cases += sweep(m + "compound", {"base": pt(params=10), "final": pt(params=5)}, {
        "base": [None, Bad("no params", pt()), Bad("params -1", pt(params=-1)), Bad("params '10'", pt(params="10"))],
        "final": [Bad("accuracy 2", pt(accuracy=2.0)), 3]})
    cases += [
        case(m + "choose", "nothing fits: None", lambda ctx: ctx.fn(points, {**budget, "min_accuracy": 0.99}),
             check=lambda r, ctx: r is None),
        case(m + "compound", "zero latency: inf", lambda ctx: ctx.fn(pt(params=10), pt(params=5, latency_ms=0.0)),
             check=lambda r, ctx: r["faster"] == INF),
        case(m + "pareto_front", "no points: []", lambda ctx: ctx.fn([]), check=lambda r, ctx: r == []),
    ]

    def linear():
        return torch.nn.Linear(2, 2)

    def trains(model):
        return {"seconds": 1.0}

    c = "lablib.core.cache.load_or_train"
    cases += sweep(c, {"name": "probe", "settings": {"a": 1}, "model": V(lambda ctx: linear()), "train": trains}, {
        "name": ["../x", "", None], "settings": [None, {1: 2, "1": 3}], "model": [None, "model"],
        "train": [None, 3, Bad("returns a list", lambda model: [1], names=("train",)),
                  Bad("returns a tensor", lambda model: {"t": torch.ones(1)}, names=("train", "JSON", "serializable"))]})
    cases.append(case(c, "a truncated checkpoint: retrained",
                      lambda ctx: (ctx.fn("probe", {}, linear(), trains),
                                   (lab("lablib.core.cache.cache_folder")("probe", {}) / "weights.pt").write_bytes(b"x"),
                                   ctx.fn("probe", {}, linear(), trains))[-1],
                      check=lambda r, ctx: r == (False, {"seconds": 1.0})))
    d = "lablib.nets.models.DeepMLP"
    cases += sweep(d, {"in_features": 16, "width": 4, "depth": 2}, {
        "in_features": [0, "16"], "width": [0, 2.5], "depth": [0, None], "norm": ["no", 1], "residual": ["yes"],
        "act": ["swish"], "num_classes": [0]})
    cases += [
        case(d + ".forward", "x=wrong feature count",
             lambda ctx: ctx.fn(lab(d)(16, 4, 2), rand(2, 15)), ("x",)),
        case(d + ".forward", "x=a list", lambda ctx: ctx.fn(lab(d)(16, 4, 2), [0.0] * 16), ("x",)),
    ]
    return cases


CATALOGUE = (core_config, core_env, core_results, core_cache, core_checks, core_progress, core_show, core_bench,
             core_viz, core_compat_validate, core_launch, data_augment, data_datasets, nets_models, nets_train,
             methods_amp, methods_distill, methods_pruning, methods_quantize, methods_fixmatch,
             methods_diffusion, methods_stable_diffusion, deploy_onnx_export, data_augment_affine,
             methods_mixup, methods_imbalance, data_tables, methods_quality, data_versioning,
             methods_tuning, methods_monitoring, methods_efficient, methods_transfer,
             methods_continual, methods_distributed, data_series, methods_forecast, deploy_serving,
             methods_custom_op, methods_pipeline)


def catalogue() -> list[Case]:
    cases = [c for section in CATALOGUE for c in section()]
    duplicates = [i for i, n in Counter(c.id for c in cases).items() if n > 1]
    if duplicates:
        raise RuntimeError(f"duplicate case ids: {duplicates}")
    return cases


# --- running one case -----------------------------------------------------------------------------


def resolve(target: str):
    """The function or class at `target` in the lablib on sys.path; NotApplicable if missing."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            raise NotApplicable(f"{target} does not exist in this checkout") from None
        return obj
    raise NotApplicable(f"no module for {target}")


def guarded(fn):
    """fn, refusing (NotApplicable) a call whose arguments its signature does not take: a case
    written for another version of the API is not counted as an error of this one."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn

    def call(*args, **kwargs):
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise NotApplicable(f"signature differs: {exc}") from None
        return fn(*args, **kwargs)

    return call


def names_in(message: str, names) -> bool:
    """Whether the message names any of `names`: identifiers as whole words (a plural also by
    its singular), anything else (a path) as text."""
    for name in names:
        if not re.fullmatch(r"\w+", name):
            if name in message:
                return True
            continue
        words = {name, name[:-1]} if name.endswith("s") and len(name) > 3 else {name}
        if any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", message) for w in words):
            return True
    return False


def describe(result) -> str:
    try:
        text = repr(result)
    except Exception as exc:  # a broken repr is no reason to lose the case
        text = f"<{type(result).__name__}, repr failed: {exc}>"
    return " ".join(text.split())[:160]


def classify(c: Case, ctx: Ctx) -> dict:
    """Run the case's call here and say which class it falls in."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = c.call(ctx)
        except NotApplicable as exc:
            return {"outcome": "n/a", "message": str(exc)}
        except BaseException as exc:  # SystemExit and friends are outcomes too
            names = c.names(ctx) if callable(c.names) else c.names
            message = f"{type(exc).__name__}: {exc}"
            clear = isinstance(exc, c.errors) and names_in(str(exc), names)
            outcome = "clear" if clear else "unclear"
            frames = traceback.extract_tb(exc.__traceback__)
            if not clear and frames:
                message += f"  [at {Path(frames[-1].filename).name}:{frames[-1].lineno}]"
        else:
            verdict, message = None, f"returned {describe(result)}"
            if c.check is not None:
                try:
                    verdict = c.check(result, ctx)
                except Exception as exc:  # the oracle could not read the result: not a correct one
                    verdict = False
                    message += f"; oracle failed: {type(exc).__name__}: {exc}"
            outcome = {True: "ok", False: "wrong", None: "silent"}[verdict]
            said = [str(w.message) for w in caught]
            if said and outcome != "ok":
                message += f"; warned: {' '.join(said[0].split())[:120]}"
    if c.after is not None and (problem := c.after(ctx)):
        outcome, message = "wrong", f"{problem} ({outcome}: {message})"
    return {"outcome": outcome, "message": message}


def child(c: Case, ctx: Ctx, log: Path, write_fd: int) -> None:
    """The forked worker: isolate, run, send the verdict as JSON, exit without cleanup."""
    try:
        os.setpgid(0, 0)
        os.nice(5)
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        with open(log, "ab") as f:
            f.write(f"\n=== {c.id}\n".encode())
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(ctx.root)
        os.environ["LAB_ROOT"] = str(ctx.root)
        os.environ.update(c.env)
        verdict = classify(c, ctx)
    except BaseException as exc:  # a fault of the probe itself, reported as such
        verdict = {"outcome": "probe-error", "message": f"{type(exc).__name__}: {exc}"}
    data = memoryview(json.dumps(verdict, default=str).encode())
    while data:
        data = data[os.write(write_fd, data):]
    os._exit(0)


def snapshot(run: Path, case_root: Path) -> dict[str, set[str]]:
    """Names in the places a case must not write: its project root (beside data/, results/ and
    its inputs), the folder of all cases, the run's scratch folder, TMPDIR and the home folder."""
    places = {"project": case_root, "cases": case_root.parent, "scratch": run,
              "TMPDIR": run / "tmp", "home": Path.home()}
    out = {}
    for key, place in places.items():
        try:
            out[key] = set(os.listdir(place))
        except OSError:
            out[key] = set()
    return out


def escaped(before: dict[str, set[str]], after: dict[str, set[str]]) -> list[str]:
    new = []
    for key, names in after.items():
        added = names - before[key]
        if key == "project":
            added -= {"data", "results", "in"}
        if key == "cases":
            added = {n for n in added if not n.isdigit()}
        new += [f"{key}/{n}" for n in sorted(added)]
    return new


def wait(pid: int, read_fd: int, timeout: float) -> tuple[bytes, int | None]:
    """The child's verdict and its exit status; status None when it ran out of time (killed)."""
    chunks, deadline = [], time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if select.select([read_fd], [], [], left)[0]:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                return b"".join(chunks), os.waitpid(pid, 0)[1]
            chunks.append(chunk)
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.waitpid(pid, 0)
    return b"", None


def run_case(c: Case, index: int, run: Path, timeout: float, log: Path) -> dict:
    start = time.perf_counter()
    record = {"id": c.id, "module": c.module, "target": c.target}
    try:
        fn = resolve(c.target)
    except NotApplicable as exc:
        return record | {"outcome": "n/a", "message": str(exc), "seconds": 0.0}
    case_root = run / "cases" / str(index)
    (case_root / "in").mkdir(parents=True)
    ctx = Ctx(guarded(fn), case_root / "in", case_root)
    before = snapshot(run, case_root)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        child(c, ctx, log, write_fd)
    os.close(write_fd)
    try:
        data, status = wait(pid, read_fd, timeout)
    finally:
        os.close(read_fd)
    if status is None:
        verdict = {"outcome": "hang", "message": f"still running after {timeout:g} s: killed"}
    elif data:
        verdict = json.loads(data)
    else:
        code = os.waitstatus_to_exitcode(status)
        died = f"signal {-code}" if code < 0 else f"exit {code}"
        verdict = {"outcome": "unclear", "message": f"the worker died ({died})"}
    wrote = escaped(before, snapshot(run, case_root))
    if wrote:
        verdict = {"outcome": "wrong", "message": f"wrote outside data/ and results/: "
                   f"{', '.join(wrote)} ({verdict['outcome']}: {verdict['message']})"}
        shutil.rmtree(run / "tmp", ignore_errors=True)
        (run / "tmp").mkdir(exist_ok=True)
    verdict["message"] = " ".join(verdict["message"].split())
    return record | verdict | {"seconds": round(time.perf_counter() - start, 2)}


# --- the run --------------------------------------------------------------------------------------


def prepare_environment(run: Path, tree: Path) -> None:
    """Before lablib (or torch) is imported: the checkout's lablib first on sys.path, one thread,
    no downloads, caches and temporary files inside the run's scratch folder."""
    for sub in ("tmp", "cache", "fixtures", "cases", "root"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    for var in [v for v in os.environ if v.startswith("LAB_")]:
        del os.environ[var]
    cache = run / "cache"
    os.environ.update({
        "LAB_ROOT": str(run / "root"), "TMPDIR": str(run / "tmp"), "XDG_CACHE_HOME": str(cache),
        "MPLCONFIGDIR": str(cache / "mpl"), "MPLBACKEND": "Agg", "HF_HOME": str(cache / "hf"),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1",
        "PYTHONWARNINGS": "ignore",
    })
    import tempfile

    tempfile.tempdir = None  # read TMPDIR again
    sys.path.insert(0, str(tree))


def import_lablib(tree: Path, notes: list[str]) -> Path:
    """Import every lablib module of the checkout here, in the parent: each fork starts warm."""
    torch.set_num_threads(1)
    import lablib

    where = Path(lablib.__file__).resolve()
    if not where.is_relative_to(tree.resolve()):
        raise SystemExit(f"lablib was imported from {where}, not from the tree {tree}")
    for path in sorted((tree / "lablib").glob("*/*.py")):
        name = ".".join(path.relative_to(tree).with_suffix("").parts)
        try:
            importlib.import_module(name)
        except Exception as exc:  # its cases become n/a or unclear
            notes.append(f"importing {name} failed: {type(exc).__name__}: {exc}")
    return where.parent


@contextlib.contextmanager
def output_to(log: Path):
    """Send what the process prints (Python and C++ alike: file descriptors 1 and 2) to `log`
    while importing lablib and building fixtures: the exporters and loaders are chatty."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def git_commit(tree: Path) -> str:
    def git(*args):
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--", "lablib")
        edits = " + uncommitted lablib changes" if dirty else ""
        return git("rev-parse", "--short", "HEAD") + edits
    except (OSError, subprocess.SubprocessError):
        return "?"


SCRATCH_MARK = ".probe-scratch"  # in every scratch folder this tool made, and only there


def make_scratch(requested: str | None, tree: Path) -> Path:
    """A fresh scratch folder: by default one per run (several probes may run at once). A
    folder given with --scratch is reused only if this tool made it: it never deletes a
    folder it did not write."""
    if requested is None:
        scratch = ROOT / "data" / "probe" / f"run-{tree.name}-{os.getpid()}"
    else:
        scratch = Path(requested).resolve()
    if scratch.exists():
        if not (scratch / SCRATCH_MARK).is_file() and any(scratch.iterdir()):
            raise SystemExit(f"--scratch {str(scratch)!r} exists and was not made by the probe: "
                             "refusing to empty it (name a new folder)")
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    (scratch / SCRATCH_MARK).touch()
    return scratch


def run(args) -> dict:
    global FIXTURE_DIR
    tree = Path(args.tree).resolve()
    scratch = make_scratch(args.scratch, tree)
    prepare_environment(scratch, tree)
    FIXTURE_DIR = scratch / "fixtures"
    started = time.perf_counter()
    log = scratch / "worker.log"
    notes: list[str] = []
    with output_to(log):
        package = import_lablib(tree, notes)
        cases = [c for c in catalogue() if args.only is None or args.only in c.id]
        for name in dict.fromkeys(n for c in cases for n in c.needs):
            try:
                fixture(name)
            except Exception as exc:  # the cases that need it will fail and say so
                notes.append(f"fixture {name} failed: {type(exc).__name__}: {exc}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    shutil.rmtree(scratch / "tmp", ignore_errors=True)  # what the fixtures left is not a case's
    (scratch / "tmp").mkdir()
    results = []
    for i, c in enumerate(cases):
        r = run_case(c, i, scratch, args.timeout, log)
        results.append(r)
        if args.verbose:
            print(f"[{i + 1}/{len(cases)}] {r['outcome']:8} {r['seconds']:6.2f}s {r['id']}",
                  flush=True)
    seconds = time.perf_counter() - started
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    counts = Counter(r["outcome"] for r in results)
    modules: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        modules[r["module"]][r["outcome"]] += 1
    return {
        "tree": str(tree), "lablib": str(package), "commit": git_commit(tree),
        "timeout_s": args.timeout, "only": args.only, "seconds": round(seconds, 1), "notes": notes,
        "cases": len(results),
        "counts": {k: counts.get(k, 0) for k in (*CLASSES, *OTHER, "probe-error")},
        "modules": {m: dict(c) for m, c in sorted(modules.items())},
        "results": results,
    }


def report(summary: dict) -> str:
    counts = summary["counts"]
    columns = (*CLASSES, *OTHER)
    lines = [f"lablib probe: {summary['lablib']} ({summary['commit']})",
             f"{summary['cases']} cases in {summary['seconds']:.0f} s "
             f"(timeout {summary['timeout_s']:g} s per case)", ""]
    lines.append("  ".join(f"{k} {counts[k]}" for k in columns)
                 + f"   (counted: {sum(counts[k] for k in CLASSES)})")
    if counts["probe-error"]:
        lines.append(f"probe-error {counts['probe-error']} (faults of the probe itself: "
                     "fix the catalogue)")
    lines += ["", f"{'module':<26}" + "".join(f"{c:>8}" for c in columns)]
    for module, c in summary["modules"].items():
        lines.append(f"{module:<26}" + "".join(f"{c.get(k, 0):>8}" for k in columns))
    lines += ["", "Not clear (unclear / silent / wrong / hang), by module:"]
    current = None
    for r in sorted(summary["results"], key=lambda r: (r["module"], r["id"])):
        if r["outcome"] not in ("unclear", "silent", "wrong", "hang", "probe-error"):
            continue
        if r["module"] != current:
            current = r["module"]
            lines.append(f"\n  {current}")
        lines.append(f"    {r['outcome']:<8} {r['id']}: {r['message'][:200]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--tree", default=str(ROOT),
                        help="the checkout whose lablib to probe (default: this one)")
    parser.add_argument("--only", metavar="SUBSTRING",
                        help="run only the cases whose id contains it")
    parser.add_argument("--timeout", type=float, default=20.0, metavar="S",
                        help="seconds a case may run before it counts as a hang (default 20)")
    parser.add_argument("--json", default=str(ROOT / "data" / "probe" / "probe.json"),
                        metavar="PATH",
                        help="where to write every case's outcome (default data/probe/probe.json)")
    parser.add_argument("--scratch",
                        help="scratch folder (default data/probe/run-<tree's name>-<process id>)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch folder and worker.log")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each case as it ends")
    args = parser.parse_args(argv)
    summary = run(args)
    print(report(summary))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
