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
    assert checks.check_function(lambda lg, y: None, accuracy, _inputs).status == "not attempted"
    assert checks.check_function(None, accuracy, _inputs).status == "not attempted"
    assert capsys.readouterr().out.count("not attempted") == 3


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
