"""lablib.methods.custom_op: the backward references, the build helper (one real build for the
whole file, into tmp_path), registration, and bad input."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from lablib.methods import custom_op

# A tiny operator of its own namespace, so it never meets the one a notebook builds.
SOURCE = r"""
#include <cmath>
#include <ATen/ATen.h>
#include <torch/library.h>

at::Tensor twice_sin(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kDouble || x.scalar_type() == at::kFloat, "float only");
  at::Tensor in = x.contiguous();
  at::Tensor out = at::empty(in.sizes(), in.options());
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "twice_sin", [&] {
    const scalar_t* src = in.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < in.numel(); ++i) dst[i] = 2 * std::sin(src[i]);
  });
  return out;
}

TORCH_LIBRARY(lablib_test_ops, m) { m.def("twice_sin(Tensor x) -> Tensor"); }
TORCH_LIBRARY_IMPL(lablib_test_ops, CPU, m) { m.impl("twice_sin", &twice_sin); }
"""


def _listing(folder: Path, suspects: tuple[str, ...] = ()) -> set[str]:
    """Names in `folder` (only those starting with one of `suspects`, if given: the temp folder
    is shared with every other process of the machine)."""
    try:
        return {p.name for p in folder.iterdir() if not suspects or p.name.startswith(suspects)}
    except OSError:
        return set()


COMPILER_LEFTOVERS = ("cc", "torch")  # gcc's ccXXXXXX.* files, torch_extensions, torchinductor_*


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The one real build of this file (about 10-30 s), and what it left outside its folder."""
    if problem := custom_op.toolchain_problem():
        pytest.skip(problem)
    root = tmp_path_factory.mktemp("extensions")
    home_cache = Path.home() / ".cache" / "torch_extensions"
    tmp = Path(tempfile.gettempdir())
    before = (_listing(home_cache), _listing(tmp, COMPILER_LEFTOVERS))
    result = custom_op.build("tiny", [SOURCE], root=root)
    after = (_listing(home_cache), _listing(tmp, COMPILER_LEFTOVERS))
    custom_op.register("lablib_test_ops::twice_sin", fake=lambda x: torch.empty(x.shape, dtype=x.dtype),
                       setup_context=lambda ctx, inputs, output: ctx.save_for_backward(inputs[0]),
                       backward=lambda ctx, grad: 2 * custom_op.sin_backward(grad, ctx.saved_tensors[0]))
    return result, root, before, after


# --- the references ----------------------------------------------------------------------------


def test_sin_backward_is_the_derivative():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(5, 3, dtype=torch.float64)
    (expected,) = torch.autograd.grad(torch.sin(x), x, grad)
    assert torch.allclose(custom_op.sin_backward(grad, x), expected)


def test_sin_mul_add_backward_matches_autograd():
    x, y, z = (torch.randn(4, 6, dtype=torch.float64, requires_grad=True) for _ in range(3))
    grad = torch.randn(4, 6, dtype=torch.float64)
    out = custom_op.sin_mul_add_reference(x, y, z)
    assert torch.allclose(out, torch.sin(x) * y + z)
    expected = torch.autograd.grad(out, (x, y, z), grad)
    got = custom_op.sin_mul_add_backward(grad, x, y)
    assert all(torch.allclose(a, b) for a, b in zip(got, expected, strict=True))
    assert got[2] is not grad  # a fresh tensor: autograd may accumulate into it


def test_edge_cases_empty_and_scalar():
    empty = torch.zeros(0)
    assert custom_op.sin_backward(empty, empty).shape == (0,)
    gx, gy, gz = custom_op.sin_mul_add_backward(torch.tensor(2.0), torch.tensor(0.0), torch.tensor(3.0))
    assert (gx.item(), gy.item(), gz.item()) == (6.0, 0.0, 2.0)


@pytest.mark.parametrize("call", [
    lambda: custom_op.sin_backward([1.0], torch.zeros(1)),
    lambda: custom_op.sin_backward(torch.zeros(2), torch.zeros(3)),
    lambda: custom_op.sin_mul_add_reference(torch.zeros(2), torch.zeros(2), torch.zeros(2, 1)),
    lambda: custom_op.sin_mul_add_backward(torch.zeros(2), None, torch.zeros(2)),
])
def test_references_refuse_bad_input(call):
    with pytest.raises((TypeError, ValueError), match=r"\b(grad|x|y|z)\b"):
        call()


# --- bad arguments to build and register: refused before any compiling -------------------------


@pytest.mark.parametrize(("kwargs", "word"), [
    ({"name": "my-ops"}, "name"), ({"name": ""}, "name"), ({"name": 3}, "name"),
    ({"cpp_sources": []}, "cpp_sources"), ({"cpp_sources": [""]}, "cpp_sources"), ({"cpp_sources": 5}, "cpp_sources"),
    ({"cuda_sources": [None]}, "cuda_sources"), ({"extra_cflags": "-O3"}, "extra_cflags"),
    ({"extra_cflags": ["O3"]}, "extra_cflags"), ({"extra_cuda_cflags": [3]}, "extra_cuda_cflags"),
    ({"root": ""}, "root"), ({"verbose": "yes"}, "verbose"),
])
def test_build_refuses_bad_arguments(kwargs, word, tmp_path):
    args = {"name": "ok", "cpp_sources": ["int x;"], "root": tmp_path / "ext"} | kwargs
    with pytest.raises((TypeError, ValueError), match=word):
        custom_op.build(**args)
    assert not (tmp_path / "ext").exists(), "nothing is written for a refused call"


def test_toolchain_problem_names_what_is_missing(monkeypatch):
    with pytest.raises(TypeError, match="cuda"):
        custom_op.toolchain_problem(cuda="yes")
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert "no-such-compiler-here" in custom_op.toolchain_problem()
    monkeypatch.delenv("CXX")
    if torch.version.cuda is None:
        assert "torch.version.cuda is None" in custom_op.toolchain_problem(cuda=True)


def test_build_without_a_compiler_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(RuntimeError, match="no-such-compiler-here"):
        custom_op.build("nocompiler", ["TORCH_LIBRARY(nocompiler_ns, m) {}"], root=tmp_path)


@pytest.mark.parametrize(("op", "kwargs", "word"), [
    ("sin", {}, "op"), ("a::b::c", {}, "op"), (3, {}, "op"), ("lablib_no_such::op", {}, "op"),
    ("aten::sin", {"fake": None}, "fake"), ("aten::sin", {"backward": 1}, "backward"),
    ("aten::sin", {"setup_context": "f"}, "setup_context"),
])
def test_register_refuses_bad_arguments(op, kwargs, word):
    fns = {"fake": lambda x: x, "backward": lambda ctx, g: g, "setup_context": lambda ctx, i, o: None} | kwargs
    with pytest.raises((TypeError, ValueError), match=word):
        custom_op.register(op, **fns)


# --- the one real build --------------------------------------------------------------------------


def test_build_goes_where_it_is_told_and_nowhere_else(built):
    result, root, before, after = built
    assert result.folder.parent == root and result.library.is_file() and result.library.parent == result.folder
    assert result.namespaces == ("lablib_test_ops",)
    assert not result.cached and result.seconds > 0
    assert after == before, "the build wrote into ~/.cache/torch_extensions or left files in the temp folder"
    torch_include = Path(torch.__file__).parent / "include" / "torch"
    assert not list(torch_include.glob("extension.h.gch")), "a precompiled header in torch's include folder"


def test_operator_works_opcheck_and_gradcheck(built):
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(torch.ops.lablib_test_ops.twice_sin(x), 2 * torch.sin(x))
    for args in [(x,), (torch.randn(4, 3).t(),), (torch.zeros(0),)]:
        torch.library.opcheck(torch.ops.lablib_test_ops.twice_sin.default, args)
    assert torch.autograd.gradcheck(torch.ops.lablib_test_ops.twice_sin, (x,))


def test_rebuilding_the_same_sources_is_a_no_op(built):
    result, root, _, _ = built
    again = custom_op.build("tiny", [SOURCE], root=root)
    assert again.cached and again.library == result.library


def test_register_twice_uses_the_new_formula(built):
    op = "lablib_test_ops::twice_sin"
    fake = lambda x: torch.empty(x.shape, dtype=x.dtype)  # noqa: E731
    save = lambda ctx, inputs, output: ctx.save_for_backward(inputs[0])  # noqa: E731
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    try:
        custom_op.register(op, fake=fake, setup_context=save, backward=lambda ctx, grad: torch.zeros_like(grad))
        (g,) = torch.autograd.grad(torch.ops.lablib_test_ops.twice_sin(x).sum(), x)
        assert torch.equal(g, torch.zeros(5, dtype=torch.float64))
    finally:
        custom_op.register(op, fake=fake, setup_context=save,
                           backward=lambda ctx, grad: 2 * custom_op.sin_backward(grad, ctx.saved_tensors[0]))
    (g,) = torch.autograd.grad(torch.ops.lablib_test_ops.twice_sin(x).sum(), x)
    assert torch.allclose(g, 2 * torch.cos(x))


def test_changed_sources_of_a_loaded_namespace_are_refused_not_fatal(built):
    _, root, _, _ = built
    with pytest.raises(RuntimeError, match="lablib_test_ops.*[Rr]estart"):
        custom_op.build("tiny", [SOURCE + "\n// edited\n"], root=root)


def _spy_compile(monkeypatch, good: bytes, library: Path) -> list:
    """Stand in for the compiler (this file keeps to one real build): write the good library back."""
    calls = []

    def fake_compile(ext_name, sources, folder, *rest):
        assert all(s.is_file() for s in sources), "the sources are written before compiling"
        calls.append(folder)
        library.write_bytes(good)

    monkeypatch.setattr(custom_op, "_compile", fake_compile)
    return calls


def test_truncated_library_is_detected_and_rebuilt(built, monkeypatch):
    result, root, _, _ = built
    good = result.library.read_bytes()
    # replace, not truncate in place: the loaded library stays mapped in this process
    damaged = result.folder / "damaged.tmp"
    damaged.write_bytes(good[: len(good) // 3])
    os.replace(damaged, result.library)
    monkeypatch.setattr(custom_op, "_LOADED", {})  # as in a fresh process
    monkeypatch.setattr(custom_op, "_has_operators", lambda ns: False)
    calls = _spy_compile(monkeypatch, good, result.library)
    rebuilt = custom_op.build("tiny", [SOURCE], root=root)
    assert calls == [result.folder] and not rebuilt.cached
    assert result.library.read_bytes() == good
    assert custom_op._intact(result.library)


def test_a_library_that_fails_to_load_is_rebuilt_once(built, monkeypatch, tmp_path):
    result, _, _, _ = built
    good = result.library.read_bytes()
    copy_root = tmp_path / "copy"
    shutil.copytree(result.folder, copy_root / result.folder.name)
    library = copy_root / result.folder.name / result.library.name
    monkeypatch.setattr(custom_op, "_LOADED", {})
    monkeypatch.setattr(custom_op, "_has_operators", lambda ns: False)  # as in a fresh process
    loads = []

    def failing_load(path):
        loads.append(path)
        raise OSError(f"{path}: file too short")

    monkeypatch.setattr(custom_op, "_load", failing_load)
    calls = _spy_compile(monkeypatch, good, library)
    rebuilt = custom_op.build("tiny", [SOURCE], root=copy_root)
    assert loads == [library] and len(calls) == 1 and not rebuilt.cached


def test_a_library_that_never_loads_gives_a_clear_error(built, monkeypatch, tmp_path):
    result, _, _, _ = built
    monkeypatch.setattr(custom_op, "_LOADED", {})
    monkeypatch.setattr(custom_op, "_has_operators", lambda ns: False)

    def broken_compile(ext_name, sources, folder, *rest):
        raise OSError("invalid ELF header")

    monkeypatch.setattr(custom_op, "_compile", broken_compile)
    with pytest.raises(RuntimeError, match="does not load"):
        custom_op.build("tiny", [SOURCE], root=tmp_path)


def test_build_never_deletes_a_folder_it_did_not_make(built, monkeypatch, tmp_path):
    result, _, _, _ = built
    monkeypatch.setattr(custom_op, "_LOADED", {})
    monkeypatch.setattr(custom_op, "_has_operators", lambda ns: False)
    foreign = tmp_path / result.folder.name
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        custom_op.build("tiny", [SOURCE], root=tmp_path)
    assert (foreign / "precious.txt").read_text() == "keep me"
