import math

import numpy as np
import pytest
import torch
from torch import nn

from lablib.core import checks
from lablib.nets.train import accuracy


def _inputs(g):
    return torch.randn(16, 5, generator=g), torch.randint(0, 5, (16,), generator=g)


def test_correct_answer_passes(capsys):
    v = checks.check_function(lambda lg, y: (lg.argmax(1) == y).float().mean().item(), accuracy, _inputs)
    assert v and v.status == "correct"
    assert "[✓] correct" in capsys.readouterr().out


def test_not_attempted_never_raises(capsys):
    def stub(logits, y):
        raise NotImplementedError

    assert checks.check_function(stub, accuracy, _inputs).status == "not attempted"
    assert checks.check_function(None, accuracy, _inputs).status == "not attempted"
    assert capsys.readouterr().out.count("not attempted") == 2


# Wrong answers of every kind a learner (or a broken check) produces: each must be judged wrong.
def _ref(x):
    return x.softmax(dim=1)


def _make(g):
    return torch.randn(4, 5, generator=g).requires_grad_()


@pytest.mark.parametrize(
    "answer, word",
    [
        (lambda x: None, "is None"),  # forgot to return
        (lambda x: x.softmax(dim=1) * float("nan"), "NaN"),
        (lambda x: torch.full_like(x, float("nan")), "NaN"),
        (lambda x: x.softmax(dim=0), "differs"),  # wrong axis
        (lambda x: x.softmax(dim=1)[:2], "shape"),
        (lambda x: x.softmax(dim=1).T, "shape"),
        (lambda x: x.softmax(dim=1).detach(), "no gradient"),
        (lambda x: x.detach().softmax(dim=1) + 0 * x, "gradient"),  # right value, wrong gradient
        (lambda x: x.softmax(dim=1).tolist(), "should be a tensor"),
        (lambda x: True, "should be a tensor"),
        (lambda x: x.softmax(dim=1) > 0, "dtype"),
    ],
)
def test_wrong_answers_of_every_kind_are_wrong(answer, word):
    v = checks.check_function(answer, _ref, _make, quiet=True)
    assert v.status == "wrong" and word in v.message, v


@pytest.mark.parametrize(
    "got, expected",
    [(float("nan"), 0.0), (0.0, float("nan")), (True, 1), (1, True), (False, 0.0), (None, 0.0),
     (torch.tensor(True), 1.0), ("1.0", 1.0), (float("inf"), 1e308), (1.0, float("inf")),
     (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0])), ({"a": 1}, {"a": 1, "b": 2}),
     (np.float64("nan"), 1.0), ([1.0], (1.0, 2.0)),
     # a wrong mask, a wrong bool, a wrong string, another type, a wrong dict value
     (torch.tensor([True, False]), torch.tensor([True, True])), (False, True), ("b", "a"),
     ("1", 1), (b"a", "a"), ({"a": 1.0}, {"a": 2.0})],
)
def test_difference_catches_what_equality_misses(got, expected):
    assert checks.difference(got, expected) is not None


@pytest.mark.parametrize(
    "got, expected",
    [(float("nan"), float("nan")), (1, 1.0), (np.float32(0.5), 0.5), (torch.tensor(2.0), 2.0),
     (True, True), (None, None), ("a", "a"), (float("inf"), float("inf")),
     (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")])), (np.ones(3), torch.ones(3, dtype=torch.float64))],
)
def test_difference_accepts_equal_answers(got, expected):
    assert checks.difference(got, expected) is None


def test_a_nan_inside_a_structure_is_named_before_what_it_scrambled():
    # an overflowing softmax gives NaN probabilities and, from them, a wrong ranking: the message
    # must name the NaN (the cause), not the first wrong label it meets (a symptom)
    got = [{"label": "0", "p": float("nan")}, {"label": "1", "p": float("nan")}]
    expected = [{"label": "1", "p": 1.0}, {"label": "0", "p": 0.0}]
    assert checks.difference(got, expected) == "the output[0]['p'] is NaN where the reference has a number"
    assert "NaN" in checks.difference({"t": np.array([1.0, np.nan])}, {"t": np.array([1.0, 2.0])})
    # where the reference has NaN too, the values are compared as before
    assert checks.difference([{"a": "x", "p": float("nan")}], [{"a": "y", "p": float("nan")}]) == \
        "the output[0]['a'] is 'x', expected 'y'"


def test_a_wrong_type_is_named_as_the_reference_returns_it():
    assert checks.difference([1.0], np.ones(1)) == "the output should be a numpy array, got list"
    assert checks.difference([1.0], torch.ones(1)) == "the output should be a tensor, got list"


def test_an_endless_loop_is_stopped():
    def forever(x):
        while True:
            pass

    v = checks.check_function(forever, _ref, _make, time_limit=0.2, quiet=True)
    assert v.status == "error" and "still running after 0.2 s" in v.message


def test_check_value():
    assert checks.check_value(0.95, 0.95, name="tau", quiet=True)
    assert checks.check_value(..., 0.95, quiet=True).status == "not attempted"
    assert checks.check_value(None, 0.95, quiet=True).status == "wrong"
    assert checks.check_value(float("nan"), 0.95, quiet=True).status == "wrong"
    assert checks.check_value(True, 1, quiet=True).status == "wrong"
    assert checks.check_value(None, None, quiet=True)  # None is right when None is the answer


def test_check_value_does_not_give_the_answer_away():
    v = checks.check_value((24, 16), (32, 16), quiet=True)
    assert v.status == "wrong" and "32" not in v.message and "24" in v.message, v.message
    assert "32" not in checks.check_value(24.0, 32.0, quiet=True).message


def test_verdicts_are_kept_by_name():
    checks.check_function(lambda x: x.softmax(1), _ref, _make, name="my_softmax", quiet=True)
    checks.check_function(lambda x: x, _ref, _make, name="my_other", quiet=True)
    assert checks.VERDICTS == {"my_softmax": "correct", "my_other": "wrong"}


def test_agrees_reports_without_counting_as_an_exercise(capsys):
    def softmax(x):
        return x.exp() / x.exp().sum(dim=1, keepdim=True)

    assert checks.agrees(softmax, _ref, _make)
    assert "[✓] the lab's softmax agrees with" in capsys.readouterr().out
    assert not checks.agrees(lambda x: x.exp(), _ref, _make, name="changed")
    assert "no longer agrees" in capsys.readouterr().out
    assert checks.VERDICTS == {} and checks.AGREEMENTS == {"softmax": "correct", "changed": "wrong"}


def _solutions(root, text):
    (root / "labs" / "solutions").mkdir()
    (root / "labs" / "solutions" / "01_demo.py").write_text(text)


def test_solutions_mode_swaps_in_the_reference_answers(_isolated, monkeypatch):
    _solutions(_isolated, "def my_softmax(x):\n    return x.softmax(dim=1)\n\nmy_tau = 0.95\n")
    monkeypatch.setenv("LAB_NAME", "01_demo")

    @checks.exercise
    def my_softmax(x):
        raise NotImplementedError

    assert checks.check_function(my_softmax, _ref, _make, quiet=True).status == "not attempted"
    assert checks.answer("my_tau", ...) is ...
    monkeypatch.setenv("LAB_SOLUTIONS", "1")

    @checks.exercise
    def my_softmax(x):  # noqa: F811
        raise NotImplementedError

    assert checks.check_function(my_softmax, _ref, _make, quiet=True)
    assert checks.answer("my_tau", ...) == 0.95
    with pytest.raises(AssertionError, match="LAB_SOLUTIONS=1"):  # a reference answer judged wrong stops the run
        checks.check_function(lambda x: x, _ref, _make, name="broken", quiet=True)
    with pytest.raises(AttributeError, match="no reference answer named 'my_missing'"):
        checks.answer("my_missing", None)


def test_show_solution_prints_the_reference(_isolated, monkeypatch, capsys):
    _solutions(_isolated, "def my_softmax(x):\n    return x.softmax(dim=1)\n")
    monkeypatch.setenv("LAB_NAME", "01_demo")
    checks.show_solution("my_softmax")
    assert "return x.softmax(dim=1)" in capsys.readouterr().out


def test_wrong_answer_gets_verdict_and_hint():
    wrong = lambda lg, y: (lg.argmin(1) == y).float().mean().item()  # noqa: E731
    v = checks.check_function(wrong, accuracy, _inputs, hint="use argmax", quiet=True)
    assert not v and v.status == "wrong"
    assert "Hint: use argmax" in v.message and "expected" in v.message


def test_crashing_answer_is_an_error_verdict():
    v = checks.check_function(lambda lg, y: lg.nonexistent(), accuracy, _inputs, quiet=True)
    assert v.status == "error" and "AttributeError" in v.message


def test_wrong_shape_is_reported():
    v = checks.check_function(lambda x: x.sum(0), lambda x: x.sum(1), lambda g: torch.randn(3, 4, generator=g), quiet=True)
    assert v.status == "wrong" and "shape (4,)" in v.message


def test_detached_gradient_is_caught():
    """Right values, but no gradient flows: the check must say so."""
    ref = lambda x: (x**2).mean()  # noqa: E731
    make = lambda g: torch.randn(8, generator=g).requires_grad_()  # noqa: E731
    v = checks.check_function(lambda x: (x.detach() ** 2).mean(), ref, make, quiet=True)
    assert v.status == "wrong" and "no gradient" in v.message
    # value right, gradient wrong: a stop-gradient on the wrong factor
    v = checks.check_function(lambda x: (x * x.detach()).mean(), ref, make, quiet=True)
    assert v.status == "wrong" and "gradient" in v.message
    assert checks.check_function(lambda x: x.pow(2).mean(), ref, make, quiet=True)


def test_learner_cannot_corrupt_reference_inputs():
    def in_place(x):
        x.mul_(0)
        return x.sum()

    v = checks.check_function(in_place, lambda x: x.sum(), lambda g: torch.ones(3), quiet=True)
    assert v.status == "wrong"  # compared with the reference on untouched inputs


class Block(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + torch.relu(self.conv(x))


class NoSkip(Block):
    def forward(self, x):
        return torch.relu(self.conv(x))


class BNBlock(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.norm(self.conv(x)))


class BNLeftOut(BNBlock):
    def forward(self, x):
        return torch.relu(x + self.conv(x))


class BNAfterAdd(BNBlock):
    def forward(self, x):
        return torch.relu(self.norm(x + self.conv(x)))


class TodoBlock(nn.Module):
    def __init__(self):
        super().__init__()
        raise NotImplementedError


def test_check_module_verdicts():
    make = lambda g: torch.randn(2, 4, 5, 5, generator=g)  # noqa: E731
    assert checks.check_module(lambda: Block(), Block(), make, quiet=True)
    assert checks.check_module(NoSkip(), Block(), make, quiet=True).status == "wrong"
    assert checks.check_module(TodoBlock, Block(), make, quiet=True).status == "not attempted"
    v = checks.check_module(lambda: Block(3), Block(), make, quiet=True)
    assert v.status == "wrong" and "shapes" in v.message
    with pytest.raises(TypeError, match="reference"):
        checks.check_module(Block(), lambda x: x, make)


def test_check_module_catches_misplaced_or_missing_batchnorm():
    """A fresh BatchNorm is the identity in eval mode; the check must randomise it first."""
    make = lambda g: torch.randn(2, 4, 5, 5, generator=g)  # noqa: E731
    ref = BNBlock()
    assert checks.check_module(BNBlock, ref, make, quiet=True)
    assert checks.check_module(BNLeftOut, ref, make, quiet=True).status == "wrong"
    assert checks.check_module(BNAfterAdd, ref, make, quiet=True).status == "wrong"
    assert torch.equal(ref.norm.running_var, torch.ones(4))  # the caller's reference is untouched


def test_compare_nested():
    assert checks.difference({"a": [1.0, torch.ones(2)]}, {"a": [1.0, torch.ones(2)]}) is None
    assert "['a'][1]" in checks.difference({"a": [1.0, torch.zeros(2)]}, {"a": [1.0, torch.ones(2)]})
    assert checks.difference(3, 3.5) is not None


def test_bad_arguments():
    with pytest.raises(TypeError, match="reference"):
        checks.check_function(lambda: 1, None, _inputs)
    with pytest.raises(ValueError, match="trials"):
        checks.check_function(lambda: 1, accuracy, _inputs, trials=0)
    with pytest.raises(ValueError, match="trials"):
        checks.check_module(Block(), Block(), lambda g: torch.randn(1, 4, 3, 3), trials=0)
    with pytest.raises(ValueError, match="trials"):
        checks.check_function(lambda: 1, accuracy, _inputs, trials=True)
    with pytest.raises(ValueError, match="time_limit"):
        checks.check_function(lambda: 1, accuracy, _inputs, time_limit=-1)
    with pytest.raises(TypeError, match="make_inputs"):
        checks.check_function(lambda: 1, accuracy, None)
    with pytest.raises(ValueError, match="name"):
        checks.answer("not a name", 1)
    with pytest.raises(TypeError, match="@exercise"):
        checks.exercise(3)


@pytest.mark.parametrize("call, error, word", [
    (lambda: checks.check_function(_ref, _ref, _make, atol=-1.0), ValueError, "atol"),
    (lambda: checks.check_function(_ref, _ref, _make, seed="0"), TypeError, "seed"),
    (lambda: checks.check_function(_ref, _ref, _make, name=123), TypeError, "name"),
    (lambda: checks.check_module(Block(), Block(), lambda g: torch.randn(1, 4, 3, 3), rtol=-1.0), ValueError, "rtol"),
    (lambda: checks.check_value(1.0, 1.0, atol=-1.0), ValueError, "atol"),
    (lambda: checks.check_value(1.0, 1.0, atol=math.nan), ValueError, "atol"),
    (lambda: checks.check_value(1.0, 1.0, rtol="x"), TypeError, "rtol"),
    (lambda: checks.check_value(1.0, 1.0, name=123), TypeError, "name"),
    (lambda: checks.difference(torch.ones(2), torch.ones(2), atol=-1.0), ValueError, "atol"),
    (lambda: checks.difference(torch.ones(2), torch.ones(2), rtol=-1.0), ValueError, "rtol"),
    (lambda: checks.difference(1.0, 1.0, atol="x"), TypeError, "atol"),
    (lambda: checks.exercise(123), TypeError, "fn"),
    (lambda: checks.exercise(None), TypeError, "fn"),
])
def test_bad_check_arguments_are_named(call, error, word):
    with pytest.raises(error, match=word):
        call()
    assert not checks.VERDICTS  # refused before judging anything


def test_zero_tolerances_are_allowed():  # lab 04 checks an exact answer
    assert checks.check_value(1.0, 1.0, atol=0.0, rtol=0.0, quiet=True)


def test_check_value_calls_a_wrong_bool_or_mask_wrong():
    assert checks.check_value(False, True, quiet=True).status == "wrong"
    mask = torch.tensor([True, False, True])
    assert checks.check_value(~mask, mask, quiet=True).status == "wrong"
    assert checks.check_value(mask.clone(), mask, quiet=True).status == "correct"
