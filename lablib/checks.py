"""Exercise checks: run the learner's answer and the tested reference on the same random inputs
and say whether they agree, with a hint when they do not.

A stub that raises NotImplementedError (or returns None) is "not attempted": it prints so and
never fails the notebook. The reference is ordinary lablib code: `show(reference)` prints it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

NOT_ATTEMPTED, CORRECT, WRONG, ERROR = "not attempted", "correct", "wrong", "error"
_MARK = {NOT_ATTEMPTED: "[ ]", CORRECT: "[✓]", WRONG: "[✗]", ERROR: "[!]"}


@dataclass
class Verdict:
    status: str
    message: str

    def __bool__(self) -> bool:
        return self.status == CORRECT

    def __repr__(self) -> str:
        return f"{_MARK[self.status]} {self.status}: {self.message}"

    def _ipython_display_(self) -> None:
        """The check already printed the verdict; as a cell's value it would show twice."""


def _report(verdict: Verdict, quiet: bool) -> Verdict:
    if not quiet:
        print(repr(verdict))
    return verdict


def _clone(value):
    if isinstance(value, torch.Tensor):
        out = value.detach().clone()
        return out.requires_grad_(value.requires_grad)
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return copy.deepcopy(value)


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def compare(got, expected, atol: float = 1e-5, rtol: float = 1e-4, where: str = "the output") -> str | None:
    """None when `got` matches `expected` (tensors, numbers, sequences, dicts); else what differs."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where} should be a tensor, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"{where} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        g, e = got.detach().double().cpu(), expected.detach().double().cpu()
        if not torch.allclose(g, e, atol=atol, rtol=rtol, equal_nan=True):
            return f"{where} differs from the reference by up to {(g - e).abs().max().item():.3g}"
        return None
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)):
            return f"{where} should be a number, got {type(got).__name__}"
        if abs(got - expected) > atol + rtol * abs(expected):
            return f"{where} is {got:.6g}, expected {expected:.6g}"
        return None
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            return f"{where} should be a sequence of {len(expected)} items"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            if (diff := compare(g, e, atol, rtol, f"{where}[{i}]")) is not None:
                return diff
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"{where} should be a dict with keys {sorted(expected)}"
        for k in expected:
            if (diff := compare(got[k], expected[k], atol, rtol, f"{where}[{k!r}]")) is not None:
                return diff
        return None
    return None if got == expected else f"{where} is {got!r}, expected {expected!r}"


def check_function(
    candidate: Callable,
    reference: Callable,
    make_inputs: Callable[[torch.Generator], tuple],
    *,
    trials: int = 5,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    grads: bool = True,
    hint: str = "",
    seed: int = 0,
    quiet: bool = False,
) -> Verdict:
    """Call candidate(*args) and reference(*args) on `trials` random inputs from make_inputs(gen).

    With grads=True, inputs that require grad also have their gradients compared, so an answer
    that gets the value right but cuts (or leaks) the gradient is caught.
    """
    if not callable(candidate) and candidate is not None:
        raise TypeError(f"candidate must be a function, got {type(candidate).__name__}")
    if not callable(reference):
        raise TypeError(f"reference must be a function, got {type(reference).__name__}")
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive int, got {trials!r}")
    tip = f" Hint: {hint}" if hint else ""
    if candidate is None:
        return _report(Verdict(NOT_ATTEMPTED, "no function yet."), quiet)
    gen = torch.Generator().manual_seed(seed)
    for trial in range(trials):
        args = make_inputs(gen)
        args = args if isinstance(args, tuple) else (args,)
        mine, theirs = _clone(args), _clone(args)
        try:
            got = candidate(*mine)
        except NotImplementedError:
            return _report(Verdict(NOT_ATTEMPTED, "replace `raise NotImplementedError` with your code, then run this cell again."), quiet)
        except Exception as exc:
            return _report(Verdict(ERROR, f"your function raised {type(exc).__name__}: {exc}.{tip}"), quiet)
        if got is None:
            return _report(Verdict(NOT_ATTEMPTED, "your function returns None: finish it and `return` the result."), quiet)
        expected = reference(*theirs)
        diff = compare(got, expected, atol, rtol)
        if diff is None and grads:
            diff = _compare_grads(got, expected, mine, theirs, atol, rtol)
        if diff is not None:
            return _report(Verdict(WRONG, f"on random input #{trial + 1}, {diff}.{tip}"), quiet)
    return _report(Verdict(CORRECT, f"matches the reference on {trials} random inputs."), quiet)


def _compare_grads(got, expected, mine, theirs, atol, rtol) -> str | None:
    leaves_mine = [t for t in _tensors(mine) if t.requires_grad]
    leaves_ref = [t for t in _tensors(theirs) if t.requires_grad]
    outs_mine, outs_ref = _tensors(got), _tensors(expected)
    if not leaves_ref or not outs_ref or not any(o.requires_grad for o in outs_ref):
        return None
    if not any(o.requires_grad for o in outs_mine):
        return "the output carries no gradient (was something detached, or computed under no_grad?)"
    g_ref = torch.autograd.grad(sum(o.sum() for o in outs_ref if o.requires_grad), leaves_ref, allow_unused=True)
    g_mine = torch.autograd.grad(sum(o.sum() for o in outs_mine if o.requires_grad), leaves_mine, allow_unused=True)
    for i, (gm, gr) in enumerate(zip(g_mine, g_ref, strict=True)):
        gm = torch.zeros_like(leaves_mine[i]) if gm is None else gm
        gr = torch.zeros_like(leaves_ref[i]) if gr is None else gr
        if (diff := compare(gm, gr, atol, rtol, f"the gradient w.r.t. input {i}")) is not None:
            return diff
    return None


def _build(candidate):
    return candidate() if callable(candidate) and not isinstance(candidate, nn.Module) else candidate


def check_module(
    candidate,
    reference: nn.Module,
    make_input: Callable[[torch.Generator], torch.Tensor],
    *,
    trials: int = 3,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    hint: str = "",
    seed: int = 0,
    quiet: bool = False,
) -> Verdict:
    """Compare the learner's module (or a zero-argument function building it) with `reference`.

    The parameters must have the same shapes in the same order. The reference's state is first
    randomised (fresh layers are close to the identity: BatchNorm with mean 0, variance 1, scale
    1, shift 0 would let an answer without it pass), copied into the learner's module, and
    both run in eval mode on random inputs and must agree.
    """
    if not isinstance(reference, nn.Module):
        raise TypeError(f"reference must be an nn.Module, got {type(reference).__name__}")
    tip = f" Hint: {hint}" if hint else ""
    try:
        module = _build(candidate)
    except NotImplementedError:
        return _report(Verdict(NOT_ATTEMPTED, "replace `raise NotImplementedError` with your code, then run this cell again."), quiet)
    except Exception as exc:
        return _report(Verdict(ERROR, f"building your module raised {type(exc).__name__}: {exc}.{tip}"), quiet)
    if module is None:
        return _report(Verdict(NOT_ATTEMPTED, "no module yet."), quiet)
    if not isinstance(module, nn.Module):
        return _report(Verdict(WRONG, f"expected an nn.Module, got {type(module).__name__}.{tip}"), quiet)
    mine = [p for p in module.state_dict().values()]
    gen = torch.Generator().manual_seed(seed)
    reference = copy.deepcopy(reference)
    with torch.no_grad():
        for name, t in reference.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.rand(t.shape, generator=gen)
            # variances must stay positive; everything else may take any value
            t.copy_(0.5 + 1.5 * noise if name.endswith("running_var") else 2 * noise - 1)
    ref_state = reference.state_dict()
    want = [tuple(t.shape) for t in ref_state.values()]
    have = [tuple(t.shape) for t in mine]
    if have != want:
        return _report(Verdict(WRONG, f"parameter/buffer shapes {have} should be {want} (in definition order).{tip}"), quiet)
    module.load_state_dict(dict(zip(module.state_dict(), ref_state.values(), strict=True)))
    module.eval()
    reference.eval()
    for trial in range(trials):
        x = make_input(gen)
        try:
            with torch.no_grad():
                got = module(x.clone())
        except NotImplementedError:
            return _report(Verdict(NOT_ATTEMPTED, "forward() still raises NotImplementedError."), quiet)
        except Exception as exc:
            return _report(Verdict(ERROR, f"your forward() raised {type(exc).__name__}: {exc}.{tip}"), quiet)
        with torch.no_grad():
            expected = reference(x.clone())
        if (diff := compare(got, expected, atol, rtol)) is not None:
            return _report(Verdict(WRONG, f"with the reference's weights, on random input #{trial + 1}, {diff}.{tip}"), quiet)
    return _report(Verdict(CORRECT, f"same outputs as the reference on {trials} random inputs."), quiet)
