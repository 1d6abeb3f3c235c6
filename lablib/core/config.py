"""Scale profiles, device choice and seeding.

One environment variable, LAB_SCALE, decides how big every lab runs:
  smoke  seconds per lab; proves every cell runs, no effect is claimed
  cpu    a few minutes on a 2-core laptop; the technique's effect is visible and asserted
  gpu    larger data and models, and the GPU-only measurements
"""

from __future__ import annotations

import os
import random
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# torch is optional for this module: the model service's image (docker/serving.Dockerfile)
# runs ONNX Runtime without torch, and lablib.deploy.serving imports this module.
try:
    import torch
except ImportError:
    torch = None

from lablib.core.validate import integer
from lablib.core.validate import path as as_path

SCALES = ("smoke", "cpu", "gpu")

# When lablib was first imported: a notebook's wall time in results.record counts from here.
STARTED = time.time()


def solutions() -> bool:
    """LAB_SOLUTIONS=1: run the labs with the reference answers in place of the learner's stubs
    (see checks.exercise). Unset or 0: the learner's own code runs."""
    value = os.environ.get("LAB_SOLUTIONS", "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"LAB_SOLUTIONS={value!r} must be 1 (reference answers) or 0/unset (your own)")
    return value == "1"


def allow_downloads() -> bool:
    """LAB_ALLOW_DOWNLOADS=1: a lab may fetch a model from the Hugging Face hub. Unset or 0: only
    local folders are read (the default: CI and workshop rooms run offline)."""
    value = os.environ.get("LAB_ALLOW_DOWNLOADS", "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"LAB_ALLOW_DOWNLOADS={value!r} must be 1 (allow) or 0/unset (refuse)")
    return value == "1"


LAB_NAME = re.compile(r"^\d\d_[a-z0-9_]+$")


def lab_name() -> str:
    """The running lab's name ("02_distillation"), taken from the notebook's file name.

    Jupyter tells the kernel which notebook it runs (JPY_SESSION_NAME, set by Jupyter Server,
    and by the test runner for the labs), VS Code sets __vsc_ipynb_file__; LAB_NAME overrides
    both, e.g. for a copy of a lab saved under another name."""
    override = os.environ.get("LAB_NAME", "").strip()
    if override and not re.match(r"\d\d_[a-z0-9_]+", Path(override).stem):
        raise ValueError(f"LAB_NAME={override!r} must be a lab's name, NN_topic (e.g. 02_distillation)")
    candidates = [override, os.environ.get("JPY_SESSION_NAME", "")]
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            candidates += [str(shell.user_ns.get(k, "")) for k in ("__session__", "__vsc_ipynb_file__")]
    except ImportError:  # pragma: no cover - IPython ships with Jupyter
        pass
    for value in candidates:
        # "02_distillation-Copy1.ipynb", a copy JupyterLab made, is still lab 02_distillation
        found = re.match(r"\d\d_[a-z0-9_]+", Path(value.strip()).stem) if value.strip() else None
        if found:
            return found.group(0)
    raise RuntimeError("cannot tell which lab this is: run it as a notebook in Jupyter, or set "
                       "LAB_NAME=NN_topic (the notebook's name without .ipynb)")


def threads() -> int | None:
    """LAB_THREADS, if set: how many CPU threads torch may use. Leave it unset on your own
    laptop; set LAB_THREADS=1 when several notebooks share a machine, where torch's default
    (one thread per core, each waiting for the slowest) can make everything many times slower."""
    value = os.environ.get("LAB_THREADS", "").strip()
    if not value:
        return None
    cores = os.cpu_count() or 1
    # isascii: str.isdigit also accepts digits like '²' that int() cannot read
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= cores:
        raise ValueError(f"LAB_THREADS={value!r} must be a whole number from 1 to {cores} (the CPU cores here)")
    return int(value)


if threads() is not None and torch is not None:  # applied once, when the first lab imports lablib
    torch.set_num_threads(threads())


def scale() -> str:
    """The active scale: LAB_SCALE if set, else "gpu" when CUDA is present, else "cpu"."""
    value = os.environ.get("LAB_SCALE", "").strip().lower()
    if not value:
        return "gpu" if torch is not None and torch.cuda.is_available() else "cpu"
    if value not in SCALES:
        raise ValueError(f"LAB_SCALE={value!r} is not a scale; use one of {', '.join(SCALES)}")
    return value


class Knobs(dict):
    """A lab's settings for the active scale; read them as cfg.epochs or cfg["epochs"].

    Its repr shows every profile side by side, so a reader sees what changes with the scale.
    """

    def __init__(self, chosen: str, profiles: dict[str, dict]):
        super().__init__(profiles[chosen])
        self.scale = chosen
        self.profiles = profiles

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no knob named {name!r}; knobs: {', '.join(self)}") from None

    def table(self) -> str:
        names = list(self.profiles)
        rows = [["knob", *[f"{n} *" if n == self.scale else n for n in names]]]
        rows += [[k, *[repr(self.profiles[n][k]) for n in names]] for k in self]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines) + f"\n(* = active scale: LAB_SCALE={self.scale})"

    __repr__ = table


def profile(*, smoke: dict, cpu: dict, gpu: dict | None = None, active: str | None = None) -> Knobs:
    """State a lab's knobs once per scale and get those of the active one.

    >>> cfg = profile(smoke=dict(epochs=1), cpu=dict(epochs=10), gpu=dict(epochs=30))
    >>> cfg.epochs  # 10 under LAB_SCALE=cpu

    gpu defaults to the cpu profile. Every profile must name the same knobs.
    """
    profiles = {"smoke": smoke, "cpu": cpu, "gpu": cpu if gpu is None else gpu}
    for name, knobs in profiles.items():
        if not isinstance(knobs, dict):
            raise TypeError(f"profile {name!r} must be a dict of knobs, got {type(knobs).__name__}")
    keys = set(cpu)
    for name, knobs in profiles.items():
        if set(knobs) != keys:
            missing, extra = sorted(keys - set(knobs)), sorted(set(knobs) - keys)
            raise ValueError(
                f"profile {name!r} must name the same knobs as 'cpu': missing {missing}, extra {extra}"
            )
    chosen = scale() if active is None else active
    if chosen not in SCALES:
        raise ValueError(f"active={chosen!r} is not a scale; use one of {', '.join(SCALES)}")
    return Knobs(chosen, profiles)


def device(prefer: str | None = None) -> torch.device:
    """The best device here: cuda > mps > cpu. LAB_DEVICE (or `prefer`) overrides it."""
    if prefer is not None and not isinstance(prefer, str):
        raise TypeError(f"prefer must be a device name ('cuda', 'mps' or 'cpu') or None, got {type(prefer).__name__}")
    source = "prefer" if prefer else "LAB_DEVICE"  # the error names where the choice came from
    wanted = (prefer or os.environ.get("LAB_DEVICE", "")).strip().lower()
    if wanted:
        if wanted not in ("cuda", "mps", "cpu"):
            raise ValueError(f"device {source}={wanted!r} is not one of cuda, mps, cpu")
        if wanted == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {source}='cuda' was asked for but CUDA is not available here")
        if wanted == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {source}='mps' was asked for but MPS is not available here")
        return torch.device(wanted)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a torch.Generator seeded the same."""
    seed = integer("seed", seed, 0, 2**32 - 1)  # NumPy's seeds stop at 2**32 - 1
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def project_root() -> Path:
    """The project folder (the one holding labs/ and pyproject.toml), found from the current
    folder upwards, so results land in one place whether a notebook runs from labs/ (nbmake,
    JupyterLab) or the root. LAB_ROOT overrides it; outside a checkout it is the current folder."""
    if os.environ.get("LAB_ROOT"):
        root = Path(os.environ["LAB_ROOT"]).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise ValueError(f"LAB_ROOT={os.environ['LAB_ROOT']!r} must be a folder, but it is a file")
        return root
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "labs").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return here


def lab_sources(labs_dir: Path | None = None) -> list[Path]:
    """The source of every lab: labs/NN_topic.py, or labs/NN_topic/NN_topic.py for a lab that
    also holds scripts or other sources in its folder."""
    if labs_dir is not None and not as_path("labs_dir", labs_dir).is_dir():
        raise ValueError(f"labs_dir {str(labs_dir)!r} is not a folder")
    labs_dir = project_root() / "labs" if labs_dir is None else Path(labs_dir)
    flat = [p for p in labs_dir.glob("[0-9][0-9]_*.py") if LAB_NAME.match(p.stem)]
    nested = [d / f"{d.name}.py" for d in labs_dir.glob("[0-9][0-9]_*") if d.is_dir() and (d / f"{d.name}.py").is_file()]
    return sorted(flat + nested)


def results_dir() -> Path:
    """Where results.record writes: <project>/results (not committed)."""
    return project_root() / "results"


def data_dir() -> Path:
    """Where labs cache data and checkpoints: <project>/data (not committed)."""
    return project_root() / "data"


# torch's compiler writes a cache when the dynamo ONNX exporter runs; by default that is
# /tmp/torchinductor_<user>, left behind. Keep it with the project's other caches instead.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(data_dir() / "cache" / "torchinductor"))
# Its precompiled C++ header (~150 MB, torch.compile on CPU) goes to /tmp/torchinductor_<user>
# whatever that setting says (torch's _HEADER_DIR uses the default folder): switch it off.
os.environ.setdefault("TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS", "0")


def sharp_figures() -> bool:
    """In a notebook, draw figures at twice the pixels and show them at the same size ("retina"
    PNGs): sharp on a projector, and the copies `make site` exports are fit for a slide.
    Returns whether it applied (False outside a Jupyter kernel)."""
    if "ipykernel" not in sys.modules:
        return False
    try:  # the inline backend's own settings; setting them does not import matplotlib
        from matplotlib_inline.config import InlineBackend
    except ImportError:  # pragma: no cover - ships with ipykernel
        return False
    with warnings.catch_warnings():  # traitlets deprecates the backend's own change handler
        warnings.simplefilter("ignore", DeprecationWarning)
        InlineBackend.instance().figure_formats = {"retina"}
    return True


sharp_figures()
