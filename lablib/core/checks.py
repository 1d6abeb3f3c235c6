"""Exercise checks: run the learner's answer and a tested reference on the same random inputs
and say whether they agree, with a hint when they do not.

Verdicts: `[✓] correct`, `[✗] wrong`, `[ ] not attempted` (the stub still raises
NotImplementedError: never fails a notebook), `[!] error` (the answer crashed or ran too long).

The reference answer of every exercise is in labs/solutions/<lab>.py, for a learner who is stuck
(`show_solution(name)` prints it) and for the solutions mode: with LAB_SOLUTIONS=1 every function
marked `@exercise` (and every `answer(...)`) is replaced by its reference answer, and a check
that is not correct stops the run, so CI proves that every exercise can be solved.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import re
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lablib.core import config, progress
from lablib.core.validate import integer, positive_int, real

NOT_ATTEMPTED, CORRECT, WRONG, ERROR = "not attempted", "correct", "wrong", "error"
_MARK = {NOT_ATTEMPTED: "[ ]", CORRECT: "[✓]", WRONG: "[✗]", ERROR: "[!]"}
_STUB = "replace `raise NotImplementedError` with your code, then run this cell again."

# Every verdict of this kernel, by exercise name: results.record saves them with the lab's figures.
VERDICTS: dict[str, str] = {}
# Whether each taught step written in the lab agrees with lablib's reference (see `agrees`).
AGREEMENTS: dict[str, str] = {}


@dataclass
class Verdict:
    status: str
    message: str
    name: str = ""

    def __bool__(self) -> bool:
        return self.status == CORRECT

    def __repr__(self) -> str:
        who = f" ({self.name})" if self.name else ""
        return f"{_MARK[self.status]} {self.status}{who}: {self.message}"

    def _ipython_display_(self) -> None:
        """The check already printed the verdict; as a cell's value it would show twice."""


def _report(verdict: Verdict, quiet: bool, record: bool = True) -> Verdict:
    if verdict.name and record:
        VERDICTS[verdict.name] = verdict.status
        if verdict.status == CORRECT and not config.solutions():
            _remember(verdict.name)
    if not quiet:
        print(repr(verdict))
    if config.solutions() and verdict.status != CORRECT:
        raise AssertionError(f"LAB_SOLUTIONS=1: the reference answer of {verdict.name or 'an exercise'} "
                             f"was judged {verdict.status}: {verdict.message}")
    return verdict


def _remember(name: str) -> None:
    """The learner's own answer passed: note it in results/progress.json (see lablib.core.progress).
    Outside a lab (no notebook name) or on a read-only disk there is nothing to note it in."""
    try:
        progress.remember(config.lab_name(), name)
    except (RuntimeError, OSError):
        pass


# --- solutions -------------------------------------------------------------------------------


def _solutions_module():
    lab = config.lab_name()
    path = config.project_root() / "labs" / "solutions" / f"{lab}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no reference answers for {lab}: {path} is missing")
    spec = importlib.util.spec_from_file_location(f"solutions_{lab}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _solution(name: str):
    module = _solutions_module()
    if not hasattr(module, name):
        raise AttributeError(f"labs/solutions/{config.lab_name()}.py has no reference answer named {name!r}")
    return getattr(module, name)


def exercise(fn):
    """Mark the learner's function (or class) as an exercise. It is returned unchanged, except
    under LAB_SOLUTIONS=1, where the reference answer of the same name takes its place."""
    if not callable(fn) or not hasattr(fn, "__name__"):
        raise TypeError(f"fn must be a function or class (what @exercise marks), got {type(fn).__name__}")
    return _solution(fn.__name__) if config.solutions() else fn


def answer(name: str, value):
    """An exercise whose answer is a value: `my_tau = answer("my_tau", None)`. Returns `value`,
    or under LAB_SOLUTIONS=1 the reference answer named `name`."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be the answer's variable name, got {name!r}")
    return _solution(name) if config.solutions() else value


def show_solution(name: str) -> None:
    """Print the reference answer of an exercise: the last hint stage, for when you are stuck."""
    from lablib.core.show import show

    obj = _solution(name)
    if callable(obj):
        show(obj)
    else:
        print(f"{name} = {obj!r}")


# --- comparing answers -----------------------------------------------------------------------


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


def _plain(value):
    """numpy scalars and arrays as Python numbers and tensors, so they compare like the rest."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _first_nan(value, where: str) -> str | None:
    """Where the first NaN sits in nested lists, tuples and dicts of numbers and tensors, else None."""
    value = _plain(value)
    if isinstance(value, float):
        return where if math.isnan(value) else None
    if isinstance(value, torch.Tensor):
        return where if value.is_floating_point() and value.isnan().any() else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for k, v in items:
        if (found := _first_nan(v, f"{where}[{k!r}]")) is not None:
            return found
    return None


def difference(got, expected, atol: float = 1e-5, rtol: float = 1e-4, where: str = "the output") -> str | None:
    """None when `got` matches `expected` (tensors, numbers, bools, strings, None, sequences,
    dicts); else a sentence saying what differs. NaN matches only NaN; a bool is not a number."""
    _check_tolerances(atol, rtol)
    kind = "a numpy array" if isinstance(expected, np.ndarray) else "a tensor"
    got, expected = _plain(got), _plain(expected)
    if got is None and expected is not None:
        return f"{where} is None (did you forget to `return` it?)"
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where} should be {kind}, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"{where} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        if got.dtype == torch.bool or expected.dtype == torch.bool:
            if got.dtype != expected.dtype:
                return f"{where} has dtype {got.dtype}, expected {expected.dtype}"
            wrong = (got != expected).sum().item()
            return f"{where} differs from the reference in {wrong} entries" if wrong else None
        g, e = got.detach().double().cpu(), expected.detach().double().cpu()
        nan_g, nan_e = g.isnan(), e.isnan()
        if (nan_g & ~nan_e).any():
            return f"{where} has NaN in {(nan_g & ~nan_e).sum().item()} entries where the reference has numbers"
        if not torch.allclose(g, e, atol=atol, rtol=rtol, equal_nan=True):
            gap = (g - e).abs().nan_to_num(nan=math.inf).max().item()
            return f"{where} differs from the reference by up to {gap:.3g}"
        return None
    if _is_number(expected):
        if isinstance(got, torch.Tensor) and got.numel() == 1 and got.dtype != torch.bool:
            got = got.item()
        if not _is_number(got):
            return f"{where} should be a number, got {type(got).__name__}"
        if math.isnan(expected) or math.isnan(got):
            return None if math.isnan(expected) and math.isnan(got) else f"{where} is {got}, expected {expected:.6g}"
        if math.isinf(expected) or math.isinf(got):
            return None if got == expected else f"{where} is {got:.6g}, expected {expected:.6g}"
        if abs(got - expected) > atol + rtol * abs(expected):
            return f"{where} is {got:.6g}, expected {expected:.6g}"
        return None
    if isinstance(expected, bool):
        if not isinstance(got, bool):
            return f"{where} should be True or False, got {type(got).__name__}"
        return None if got == expected else f"{where} is {got}, expected {expected}"
    if isinstance(expected, (list, tuple, dict)) and _first_nan(expected, where) is None:
        # a NaN inside a structure (an overflowing softmax, say) usually also scrambles what is
        # derived from it, such as a ranking; naming the NaN points at the cause, not the symptom
        if (nan_at := _first_nan(got, where)) is not None:
            return f"{nan_at} is NaN where the reference has a number"
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            return f"{where} should be a sequence of {len(expected)} items"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            if (diff := difference(g, e, atol, rtol, f"{where}[{i}]")) is not None:
                return diff
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"{where} should be a dict with keys {sorted(expected, key=str)}"
        for k in expected:
            if (diff := difference(got[k], expected[k], atol, rtol, f"{where}[{k!r}]")) is not None:
                return diff
        return None
    if type(got) is not type(expected) and not isinstance(got, type(expected)):
        return f"{where} should be a {type(expected).__name__}, got {type(got).__name__}"
    return None if got == expected else f"{where} is {got!r}, expected {expected!r}"


@contextmanager
def _time_limit(seconds: float | None):
    """Stop an answer that runs too long (an endless loop) with TimeoutError, where the platform
    allows it (SIGALRM, main thread: Linux and macOS kernels); elsewhere, no limit."""
    usable = seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def stop(signum, frame):
        raise TimeoutError(f"still running after {seconds:g} s (an endless loop?)")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _check_tolerances(atol, rtol) -> None:
    real("atol", atol, 0, math.inf, high_open=True)
    real("rtol", rtol, 0, math.inf, high_open=True)


def _check_common(trials, time_limit, atol, rtol, seed, name) -> None:
    positive_int("trials", trials)
    if time_limit is not None and not (_is_number(time_limit) and time_limit > 0):
        raise ValueError(f"time_limit must be a positive number of seconds or None, got {time_limit!r}")
    _check_tolerances(atol, rtol)
    integer("seed", seed, 0, 2**64 - 1)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str (the exercise's name) or None, got {type(name).__name__}")


def _name_of(candidate, name: str | None) -> str:
    name = name or getattr(candidate, "__name__", "") or ""
    return "" if name.startswith("<") else name  # a lambda has no name worth showing


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
    time_limit: float | None = 10.0,
    name: str | None = None,
    quiet: bool = False,
    _record: bool = True,
) -> Verdict:
    """Call candidate(*args) and reference(*args) on `trials` random inputs from make_inputs(gen).

    With grads=True, inputs that require grad also have their gradients compared, so an answer
    that gets the value right but cuts (or leaks) the gradient is caught.
    """
    if candidate is not None and not callable(candidate):
        raise TypeError(f"candidate must be a function, got {type(candidate).__name__}")
    if not callable(reference):
        raise TypeError(f"reference must be a function, got {type(reference).__name__}")
    if not callable(make_inputs):
        raise TypeError(f"make_inputs must be a function of a torch.Generator, got {type(make_inputs).__name__}")
    _check_common(trials, time_limit, atol, rtol, seed, name)
    name, tip = _name_of(candidate, name), f" Hint: {hint}" if hint else ""
    if candidate is None:
        return _report(Verdict(NOT_ATTEMPTED, "no function yet.", name), quiet, _record)
    gen = torch.Generator().manual_seed(seed)
    for trial in range(trials):
        args = make_inputs(gen)
        args = args if isinstance(args, tuple) else (args,)
        mine, theirs = _clone(args), _clone(args)
        try:
            with _time_limit(time_limit):
                got = candidate(*mine)
        except NotImplementedError:
            return _report(Verdict(NOT_ATTEMPTED, _STUB, name), quiet, _record)
        except Exception as exc:
            return _report(Verdict(ERROR, f"your function raised {type(exc).__name__}: {exc}.{tip}", name), quiet, _record)
        expected = reference(*theirs)
        diff = difference(got, expected, atol, rtol)
        if diff is None and grads:
            diff = _compare_grads(got, expected, mine, theirs, atol, rtol)
        if diff is not None:
            return _report(Verdict(WRONG, f"on random input #{trial + 1}, {diff}.{tip}", name), quiet, _record)
    return _report(Verdict(CORRECT, f"matches the reference on {trials} random inputs.", name), quiet, _record)


def _compare_grads(got, expected, mine, theirs, atol, rtol) -> str | None:
    leaves_mine = [t for t in _tensors(mine) if t.requires_grad]
    leaves_ref = [t for t in _tensors(theirs) if t.requires_grad]
    outs_mine, outs_ref = _tensors(got), _tensors(expected)
    if not leaves_ref or not outs_ref or not any(o.requires_grad for o in outs_ref):
        return None
    if not any(o.requires_grad for o in outs_mine):
        return "the output carries no gradient (was something detached, or computed under no_grad?)"
    # Back-propagate a random weighting of the outputs, the same for both: a plain sum would
    # hide a wrong gradient wherever the outputs' sum is constant (a softmax's rows sum to 1).
    gen = torch.Generator().manual_seed(1234)
    weights = [torch.rand(o.shape, generator=gen, dtype=torch.float64) + 0.5 for o in outs_ref]

    def weighted(outs):
        return sum((o * w.to(o.dtype).to(o.device)).sum() for o, w in zip(outs, weights, strict=False) if o.requires_grad)

    if [tuple(o.shape) for o in outs_mine] != [tuple(o.shape) for o in outs_ref]:
        return "the outputs' shapes differ from the reference's"
    g_ref = torch.autograd.grad(weighted(outs_ref), leaves_ref, allow_unused=True)
    g_mine = torch.autograd.grad(weighted(outs_mine), leaves_mine, allow_unused=True)
    for i, (gm, gr) in enumerate(zip(g_mine, g_ref, strict=True)):
        gm = torch.zeros_like(leaves_mine[i]) if gm is None else gm
        gr = torch.zeros_like(leaves_ref[i]) if gr is None else gr
        if (diff := difference(gm, gr, atol, rtol, f"the gradient w.r.t. input {i}")) is not None:
            return diff
    return None


def agrees(fn: Callable, reference: Callable, make_inputs: Callable[[torch.Generator], tuple], **kwargs) -> Verdict:
    """Check the lab's own, textbook version of the step it teaches against lablib's tested
    reference (check_function's comparison: values and gradients on random inputs). Not an
    exercise: it proves the lesson's code right, and tells you when your edit changed what it
    computes (the experiments then run your version)."""
    if not callable(fn):
        raise TypeError(f"fn must be the lab's function, got {type(fn).__name__}")
    name = kwargs.pop("name", None) or fn.__name__
    v = check_function(fn, reference, make_inputs, quiet=True, name=name, _record=False, **kwargs)
    AGREEMENTS[name] = v.status
    ref = getattr(reference, "__module__", "lablib") + "." + getattr(reference, "__qualname__", "reference")
    if v.status == CORRECT:
        print(f"{_MARK[CORRECT]} the lab's {name} agrees with {ref}: {v.message}")
    else:
        print(f"{_MARK[v.status]} the lab's {name} no longer agrees with {ref}: {v.message}\n"
              "    If you changed it on purpose, the experiments below now run your version.")
        if config.solutions():
            raise AssertionError(f"the lab's {name} disagrees with its reference: {v.message}")
    return v


def check_value(got, expected, *, atol: float = 1e-5, rtol: float = 1e-4, hint: str = "",
                name: str = "", quiet: bool = False) -> Verdict:
    """Judge a value the learner computed or chose (not a function). NotImplemented, or the
    Ellipsis `...` left in a blank, counts as not attempted."""
    _check_tolerances(atol, rtol)
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (the exercise's name), got {type(name).__name__}")
    tip = f" Hint: {hint}" if hint else ""
    if got is NotImplemented or got is Ellipsis:
        return _report(Verdict(NOT_ATTEMPTED, "fill in the blank (`...`), then run this cell again.", name), quiet)
    if (diff := difference(got, expected, atol, rtol, "your answer")) is not None:
        # a value exercise is answered by its value: say what is wrong, not what is right
        diff = re.sub(r", expected .*$", ": not the expected value", diff)
        return _report(Verdict(WRONG, f"{diff}.{tip}", name), quiet)
    return _report(Verdict(CORRECT, "matches the reference.", name), quiet)


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
    time_limit: float | None = 10.0,
    name: str | None = None,
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
    if not callable(make_input):
        raise TypeError(f"make_input must be a function of a torch.Generator, got {type(make_input).__name__}")
    _check_common(trials, time_limit, atol, rtol, seed, name)
    name, tip = _name_of(candidate, name), f" Hint: {hint}" if hint else ""
    try:
        with _time_limit(time_limit):
            module = _build(candidate)
    except NotImplementedError:
        return _report(Verdict(NOT_ATTEMPTED, _STUB, name), quiet)
    except Exception as exc:
        return _report(Verdict(ERROR, f"building your module raised {type(exc).__name__}: {exc}.{tip}", name), quiet)
    if module is None:
        return _report(Verdict(NOT_ATTEMPTED, "no module yet.", name), quiet)
    if not isinstance(module, nn.Module):
        return _report(Verdict(WRONG, f"expected an nn.Module, got {type(module).__name__}.{tip}", name), quiet)
    gen = torch.Generator().manual_seed(seed)
    reference = copy.deepcopy(reference)
    with torch.no_grad():
        for key, t in reference.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.rand(t.shape, generator=gen)
            # variances must stay positive; everything else may take any value
            t.copy_(0.5 + 1.5 * noise if key.endswith("running_var") else 2 * noise - 1)
    ref_state = reference.state_dict()
    want = [tuple(t.shape) for t in ref_state.values()]
    have = [tuple(t.shape) for t in module.state_dict().values()]
    if have != want:
        return _report(Verdict(WRONG, f"parameter/buffer shapes {have} should be {want} (in definition order).{tip}", name), quiet)
    module.load_state_dict(dict(zip(module.state_dict(), ref_state.values(), strict=True)))
    module.eval()
    reference.eval()
    for trial in range(trials):
        x = make_input(gen)
        try:
            with torch.no_grad(), _time_limit(time_limit):
                got = module(x.clone())
        except NotImplementedError:
            return _report(Verdict(NOT_ATTEMPTED, "forward() still raises NotImplementedError.", name), quiet)
        except Exception as exc:
            return _report(Verdict(ERROR, f"your forward() raised {type(exc).__name__}: {exc}.{tip}", name), quiet)
        with torch.no_grad():
            expected = reference(x.clone())
        if (diff := difference(got, expected, atol, rtol)) is not None:
            return _report(Verdict(WRONG, f"with the reference's weights, on random input #{trial + 1}, {diff}.{tip}", name), quiet)
    return _report(Verdict(CORRECT, f"same outputs as the reference on {trials} random inputs.", name), quiet)
