"""Custom operators in C++ (and CUDA): a just-in-time build helper, registration of an operator's
fake kernel and autograd formula, and the tested references of the backward formulas.

    built = build("my_ops", [cpp_text])            # compiled into data/cache/torch_extensions/...
    register("my_ops::sin", fake=..., backward=..., setup_context=...)
    torch.ops.my_ops.sin(x)

The C++ declares its operators with TORCH_LIBRARY and gives them kernels with TORCH_LIBRARY_IMPL;
loading the shared library runs those registrations, so no Python binding (pybind11) is built.

Three facts of one Python process shape `build` and `register`:
  * a shared library is loaded once per path: loading the same file again is a no-op;
  * a namespace can be declared by one TORCH_LIBRARY only: loading a second library that declares
    it again does not raise, it aborts the process (a dead notebook kernel), so `build` refuses it
    first, with an error that says to restart;
  * older torch refuses a second register_fake / register_autograd for one operator (newer torch
    replaces the first): `register` registers once and lets later calls swap the functions.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lablib.core import config, env
from lablib.core.cache import write_atomic
from lablib.core.validate import path as as_path
from lablib.core.validate import tensor

__all__ = ["sin_backward", "sin_mul_add_reference", "sin_mul_add_backward", "toolchain_problem",
           "build", "Build", "register"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DECLARES = re.compile(r"\bTORCH_LIBRARY\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
_MANIFEST = "built.json"  # written last into a build folder: the library's size and hash


# --- the backward formulas ----------------------------------------------------------------------


def _same_shape(**tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        tensor(name, t)
    first, *others = tensors.values()
    if any(t.shape != first.shape for t in others):  # compared, not hashed: traced shapes are symbolic
        shapes = {name: tuple(t.shape) for name, t in tensors.items()}
        raise ValueError(f"{', '.join(shapes)} must have one shape, got {shapes}")


def sin_backward(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The gradient of sin at x: d sin(x)/dx = cos(x), times the incoming gradient."""
    _same_shape(grad=grad, x=x)
    return grad * torch.cos(x)


def sin_mul_add_reference(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """sin(x) * y + z with eager PyTorch ops: what the fused operator must compute."""
    _same_shape(x=x, y=y, z=z)
    return torch.sin(x) * y + z


def sin_mul_add_backward(grad: torch.Tensor, x: torch.Tensor,
                         y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of out = sin(x) * y + z with respect to (x, y, z), given d loss / d out."""
    _same_shape(grad=grad, x=x, y=y)
    return grad * torch.cos(x) * y, grad * torch.sin(x), grad.clone()


# --- building --------------------------------------------------------------------------------------


def toolchain_problem(cuda: bool = False) -> str | None:
    """What is missing to build an extension here (with CUDA kernels if `cuda`), as a sentence
    naming it; None when nothing is."""
    if not isinstance(cuda, bool):
        raise TypeError(f"cuda must be True or False, got {type(cuda).__name__} {cuda!r}")
    from torch.utils import cpp_extension

    compiler = cpp_extension.get_cxx_compiler()  # $CXX, else c++
    if shutil.which(compiler) is None:
        return (f"no C++ compiler: {compiler!r} is not on PATH (install g++ or clang, "
                "e.g. `apt-get install g++`, or `xcode-select --install` on a Mac)")
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed: torch builds extensions with it (`pip install ninja`)"
    if cuda:
        if torch.version.cuda is None:
            return (f"this torch ({torch.__version__}) is a CPU-only build: torch.version.cuda is None, "
                    "so it has no CUDA headers or libraries to build against")
        if cpp_extension.CUDA_HOME is None:
            return ("CUDA_HOME is not set and nvcc was not found: install the CUDA toolkit "
                    f"(version {torch.version.cuda}, torch's) or set CUDA_HOME")
    return None


@dataclass
class Build:
    """A built and loaded extension: its library, its build folder, and what loading it cost."""

    library: Path
    folder: Path
    seconds: float
    cached: bool  # True: the library was already built (or loaded), nothing was compiled
    namespaces: tuple[str, ...]  # the operator namespaces its TORCH_LIBRARY blocks declare


# namespace -> the library that declared it in this process
_LOADED: dict[str, Path] = {}


def _texts(name: str, value) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, (list, tuple)) or not texts:
        raise TypeError(f"{name} must be a source text (str) or a non-empty list of them, got {type(value).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise TypeError(f"{name}[{i}] must be a non-empty source text (str), got {type(t).__name__} {t!r:.40}")
    return list(texts)


def _flags(name: str, value) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of compiler flags, got {type(value).__name__} {value!r}")
    for f in value:
        if not isinstance(f, str) or not f.startswith("-"):
            raise ValueError(f"{name} must hold flags such as '-O3', got {f!r}")
    return list(value)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _intact(library: Path) -> bool:
    """The library exists and is the file the build wrote (a truncated copy is not)."""
    try:
        manifest = json.loads((library.parent / _MANIFEST).read_text(encoding="utf-8"))
        return (manifest.get("library") == library.name and library.stat().st_size == manifest["size"]
                and _digest(library) == manifest["sha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _wipe(folder: Path, source: Path) -> None:
    """Remove a build folder that this module made (it holds our `source`), and nothing else."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir() or not source.is_file():
        raise FileExistsError(f"{folder} exists but is not a build folder of this module: "
                              "refusing to delete it (move it away, or pass another root)")
    shutil.rmtree(folder)


def _compile(ext_name: str, sources: list[Path], folder: Path, cflags: list[str], cuda_cflags: list[str],
             verbose: bool) -> None:
    """Compile with ninja into `folder` and load the library (torch's load does both)."""
    from torch.utils import cpp_extension

    # torch.utils.cpp_extension.load, not load_inline: it never touches the precompiled header
    # (load_inline's use_pch writes hundreds of MB into torch's own include folder), and it has
    # the same arguments from torch 2.5 on. is_python_module=False: no pybind11 module, the
    # library's TORCH_LIBRARY blocks register the operators when it is loaded.
    cpp_extension.load(ext_name, [str(s) for s in sources], extra_cflags=cflags, extra_cuda_cflags=cuda_cflags,
                       build_directory=str(folder), verbose=verbose, is_python_module=False)


def _load(library: Path) -> None:
    torch.ops.load_library(str(library))


def build(name: str, cpp_sources, cuda_sources=None, *, extra_cflags=("-O3",), extra_cuda_cflags=("-O3",),
          root=None, verbose: bool = False) -> Build:
    """Compile C++ (and CUDA) sources into a shared library and load it into this process.

    The build goes to root/<name>-<key> (root: data/cache/torch_extensions), where the key hashes
    the sources, the flags, the torch and Python versions and the CPU: change any and it builds afresh;
    change none and the library is loaded from the cache without compiling. A library found
    damaged (its size or hash differ from those recorded after the build) or one that fails to
    load is rebuilt once from nothing. Calling again with the same sources in one process does
    nothing (the library is loaded already); different sources declaring a namespace that is
    already loaded raise RuntimeError (loading them would abort the process)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must be an identifier (letters, digits, _), got {name!r}")
    cpp = _texts("cpp_sources", cpp_sources)
    cuda = [] if cuda_sources is None else _texts("cuda_sources", cuda_sources)
    cflags, cuda_cflags = _flags("extra_cflags", extra_cflags), _flags("extra_cuda_cflags", extra_cuda_cflags)
    root = config.data_dir() / "cache" / "torch_extensions" if root is None else as_path("root", root)
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be True or False, got {type(verbose).__name__}")
    namespaces = tuple(dict.fromkeys(_DECLARES.findall("\n".join(cpp + cuda))))
    settings = {"cpp": cpp, "cuda": cuda, "cflags": cflags, "cuda_cflags": cuda_cflags, "torch": torch.__version__,
                "torch_cuda": torch.version.cuda, "python": sys.version_info[:2], "machine": platform.machine(),
                # the CPU too: a library built with -march=native must not load on another CPU model
                "cpu": [env.cpu_name(), env.cpu_flags()]}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = root / f"{name}-{key}"
    ext_name = f"{name}_{key}"  # one file name per key: torch never renames it name_v1, name_v2...
    library = folder / f"{ext_name}.so"

    start = time.perf_counter()
    if namespaces and all(_LOADED.get(ns) == library for ns in namespaces):
        return Build(library, folder, 0.0, True, namespaces)  # a cell run twice: already loaded
    taken = [ns for ns in namespaces if ns in _LOADED or _has_operators(ns)]
    if taken:
        where = _LOADED.get(taken[0])
        raise RuntimeError(
            f"the operator namespace {taken[0]!r} is already registered in this process"
            + (f" (by {where})" if where else "") + "; a second TORCH_LIBRARY for it would abort the process. "
            "Restart the kernel (or the interpreter) to load the changed sources.")
    if problem := toolchain_problem(cuda=bool(cuda)):
        raise RuntimeError(f"cannot build {name!r}: {problem}")

    cached = _intact(library)
    for attempt in (1, 2):
        sources = [folder / f"{name}.cpp"] + ([folder / f"{name}_cuda.cu"] if cuda else [])
        if not cached:
            _wipe(folder, sources[0])  # a half-written or damaged build: start from nothing
            folder.mkdir(parents=True)
            sources[0].write_text("\n".join(cpp), encoding="utf-8")
            if cuda:
                sources[1].write_text("\n".join(cuda), encoding="utf-8")
        try:
            if cached:
                _load(library)
            else:
                _compile(ext_name, sources, folder, cflags, cuda_cflags, verbose)
            break
        except OSError as exc:  # the dynamic loader refused the file: truncated, or not a library
            if attempt == 2:
                raise RuntimeError(f"the library built in {folder} does not load: {exc}") from exc
            cached = False
    if not cached:
        # last: a build killed before this line leaves no manifest, and is rebuilt next time
        write_atomic(folder / _MANIFEST, json.dumps({"library": library.name, "size": library.stat().st_size,
                                                     "sha256": _digest(library)}))
    for ns in namespaces:
        _LOADED[ns] = library
    return Build(library, folder, time.perf_counter() - start, cached, namespaces)


def _has_operators(namespace: str) -> bool:
    """Whether any operator of `namespace` is registered in this process (by any library)."""
    prefix = f"{namespace}::"
    return any(op.startswith(prefix) for op in torch._C._dispatch_get_all_op_names())


# --- registering ----------------------------------------------------------------------------------

# operator -> the functions its registered fake kernel and autograd formula call now
_HOOKS: dict[str, dict[str, Callable]] = {}


def register(op: str, *, fake: Callable, backward: Callable, setup_context: Callable) -> None:
    """Give a C++ operator ("namespace::name") its fake kernel (torch.library.register_fake) and
    its autograd formula (torch.library.register_autograd).

    The first call for `op` registers small forwarding functions, once per process; every call
    points them at the functions given. So a notebook cell that defines the formulas and calls
    `register` can run again (older torch refuses a second registration) and the operator then
    uses the new formulas (autograd, and torch.compile for what it compiles next)."""
    if not isinstance(op, str) or op.count("::") != 1 or not all(_NAME.fullmatch(p) for p in op.split("::")):
        raise ValueError(f"op must name an operator as 'namespace::name', got {op!r}")
    for arg, fn in (("fake", fake), ("backward", backward), ("setup_context", setup_context)):
        if not callable(fn):
            raise TypeError(f"{arg} must be a function, got {type(fn).__name__}")
    if op not in _HOOKS and op not in torch._C._dispatch_get_all_op_names():
        raise ValueError(f"op {op!r} is not a registered operator: build and load its library first")
    first = op not in _HOOKS
    _HOOKS[op] = {"fake": fake, "backward": backward, "setup_context": setup_context}
    if first:  # the forwarders read _HOOKS[op] when they are called, not now
        torch.library.register_fake(op, lambda *args: _HOOKS[op]["fake"](*args))
        torch.library.register_autograd(
            op, lambda ctx, *grads: _HOOKS[op]["backward"](ctx, *grads),
            setup_context=lambda ctx, inputs, output: _HOOKS[op]["setup_context"](ctx, inputs, output))
