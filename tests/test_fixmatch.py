import math

import pytest
import torch
import torch.nn.functional as F

from lablib.data import datasets
from lablib.methods import fixmatch
from lablib.nets import models


def _logits(seed=0, n=64, c=10, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale, torch.randn(n, c, generator=g) * scale


def test_mask_obeys_tau_exactly():
    # rows whose top probability is exactly 0.5 (kept: >= tau), just below and just above
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.49, 0.26, 0.25], [0.51, 0.25, 0.24]]).double()
    pseudo, mask = fixmatch.confident_pseudo_labels(probs.log(), tau=0.5)
    assert F.softmax(probs.log(), 1)[0, 0].item() == 0.5
    assert mask.tolist() == [True, False, True] and pseudo[1:].tolist() == [0, 0]
    weak, _ = _logits()
    for tau in (0.3, 0.7, 0.95, 1.0):
        pseudo, mask = fixmatch.confident_pseudo_labels(weak, tau)
        conf, top = F.softmax(weak, 1).max(1)
        assert torch.equal(mask, conf >= tau) and torch.equal(pseudo, top)


def test_unsupervised_loss_matches_the_formula():
    strong, weak = _logits()
    tau = 0.8
    conf, top = F.softmax(weak, 1).max(1)
    expected = sum(F.cross_entropy(strong[i : i + 1], top[i : i + 1]) for i in range(len(weak)) if conf[i] >= tau) / len(weak)
    assert 0 < (conf >= tau).sum() < len(weak)  # the test input has both kinds of rows
    assert torch.allclose(fixmatch.unsupervised_loss(strong, weak, tau), expected)


def test_no_confident_rows_gives_zero_loss_and_zero_gradient():
    strong, _ = _logits()
    weak = torch.zeros(64, 10)  # uniform: confidence 0.1 everywhere
    strong.requires_grad_()
    loss = fixmatch.unsupervised_loss(strong, weak, tau=0.95)
    loss.backward()
    assert loss.item() == 0 and torch.all(strong.grad == 0)


def test_no_gradient_flows_through_pseudo_labels():
    strong, weak = _logits()
    strong.requires_grad_()
    weak.requires_grad_()
    fixmatch.unsupervised_loss(strong, weak, 0.5).backward()
    assert weak.grad is None and strong.grad is not None and strong.grad.abs().sum() > 0
    pseudo, mask = fixmatch.confident_pseudo_labels(weak, 0.5)
    assert not pseudo.requires_grad and not mask.requires_grad


def test_fixmatch_step_weak_pass_builds_no_graph_and_uses_tau():
    torch.manual_seed(0)
    model = models.SmallCNN(width=4)
    x_l, y_l, x_u = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,)), torch.rand(12, 1, 8, 8)
    calls = []
    model.register_forward_hook(lambda m, inp, out: calls.append(torch.is_grad_enabled()))
    step = fixmatch.fixmatch_step(model, x_l, y_l, x_u, tau=0.5)
    assert calls == [True, False, True]  # labelled, weak (no graph), strong
    assert step.loss.requires_grad and step.pseudo.shape == (12,) and step.mask.dtype == torch.bool
    # tau = 1 keeps nothing from a fresh model, and lambda_u = 0 drops the unlabelled term:
    # both leave the supervised loss alone
    g = torch.Generator().manual_seed(3)
    only_sup = fixmatch.supervised_step(model, x_l, y_l, weak=lambda x: x).loss
    for kwargs in ({"tau": 1.0}, {"tau": 0.5, "lambda_u": 0.0}):
        out = fixmatch.fixmatch_step(model, x_l, y_l, x_u, weak=lambda x: x, strong=lambda x: x + 0.1 * torch.rand(x.shape, generator=g), **kwargs)
        assert torch.allclose(out.loss, only_sup)


def test_mask_rate_curve_and_pick_tau():
    confidence = torch.tensor([0.3, 0.5, 0.6, 0.9, 0.96, 0.99])
    correct = torch.tensor([False, False, True, True, False, True])
    rows = fixmatch.mask_rate_curve(confidence, correct, (0.5, 0.9, 0.97, 1.0))
    assert [r["mask_rate"] for r in rows] == pytest.approx([5 / 6, 3 / 6, 1 / 6, 0.0])
    assert [r["pseudo_acc"] for r in rows[:3]] == pytest.approx([3 / 5, 2 / 3, 1.0])
    assert math.isnan(rows[3]["pseudo_acc"])
    assert fixmatch.pick_tau(confidence, correct, (0.5, 0.9, 0.97, 1.0), target=0.6) == 0.5
    assert fixmatch.pick_tau(confidence, correct, (0.5, 0.9, 0.97, 1.0), target=0.99) == 0.97
    assert fixmatch.pick_tau(confidence, torch.zeros(6, dtype=torch.bool), (0.5, 0.9), target=0.5) is None
    with pytest.raises(ValueError, match="target"):
        fixmatch.pick_tau(confidence, correct, (0.5,), target=0)
    with pytest.raises(ValueError, match="same shape"):
        fixmatch.mask_rate_curve(confidence, correct[:3], (0.5,))


def test_cosine_schedule_is_the_papers():
    assert fixmatch.cosine_lr(0, 100) == 1.0
    assert fixmatch.cosine_lr(100, 100) == pytest.approx(math.cos(7 * math.pi / 16))
    values = [fixmatch.cosine_lr(k, 100) for k in range(101)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_train_logs_and_never_hands_true_labels_to_the_step():
    splits = datasets.digits()
    labelled, unlabelled = datasets.labelled_split(splits.train, per_class=2, seed=0)
    loader = datasets.loader(splits.test, batch_size=256)
    seen = []

    def spy(model, x_l, y_l, x_u):
        seen.append(x_u.shape)
        return fixmatch.fixmatch_step(model, x_l, y_l, x_u, tau=0.5)

    torch.manual_seed(0)
    history = fixmatch.train(models.SmallCNN(width=4), labelled, unlabelled, loader, step_fn=spy, steps=6,
                             batch_size=4, mu=3, eval_every=3, progress=False)
    assert seen == [torch.Size([12, 1, 8, 8])] * 6  # images only, mu * batch_size of them
    assert history["step"] == [3, 6]
    for row in history.rows:
        assert 0 <= row["test_acc"] <= 1 and 0 <= row["mask_rate"] <= 1 and 0.1 <= row["top_class_share"] <= 1
    baseline = fixmatch.train(models.SmallCNN(width=4), labelled, unlabelled, loader,
                              step_fn=fixmatch.supervised_step, steps=2, eval_every=1, progress=False)
    assert math.isnan(baseline.last("mask_rate"))


def test_train_does_not_depend_on_eval_every():
    """Evaluating (a DataLoader draws from torch's global RNG) must not change the training."""
    splits = datasets.digits()
    labelled, unlabelled = datasets.labelled_split(splits.train, per_class=2, seed=0)
    loader = datasets.loader(splits.test, batch_size=256)
    finals = []
    for every in (1, 4):
        torch.manual_seed(0)
        model = models.SmallCNN(width=4)
        fixmatch.train(model, labelled, unlabelled, loader, steps=4, batch_size=4, mu=2, eval_every=every, progress=False)
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(finals[0], finals[1])


def test_train_is_repeatable():
    splits = datasets.digits()
    labelled, unlabelled = datasets.labelled_split(splits.train, per_class=2, seed=0)
    loader = datasets.loader(splits.test, batch_size=256)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = models.SmallCNN(width=4)
        fixmatch.train(model, labelled, unlabelled, loader, steps=3, batch_size=4, mu=2, progress=False, seed=1)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("tau", [0, 0.0, -0.1, 1.01, 2, True, "0.9", None])
def test_bad_tau(tau):
    strong, weak = _logits()
    with pytest.raises(ValueError, match="tau"):
        fixmatch.unsupervised_loss(strong, weak, tau)


@pytest.mark.parametrize("mu", [0, -1, 2.5, True])
def test_bad_mu(mu):
    with pytest.raises(ValueError, match="mu"):
        fixmatch.train(models.SmallCNN(width=4), None, None, None, mu=mu)


@pytest.mark.parametrize(
    "kwargs, word",
    [({"steps": 0}, "steps"), ({"batch_size": 0}, "batch_size"), ({"lr": 0}, "lr"), ({"optimizer": "rmsprop"}, "optimizer")],
)
def test_bad_train_arguments(kwargs, word):
    splits = datasets.digits()
    labelled, unlabelled = datasets.labelled_split(splits.train, per_class=2, seed=0)
    with pytest.raises(ValueError, match=word):
        fixmatch.train(models.SmallCNN(width=4), labelled, unlabelled, None, progress=False, **kwargs)


def test_bad_shapes_and_lambda():
    strong, weak = _logits()
    with pytest.raises(ValueError, match="same shape"):
        fixmatch.unsupervised_loss(strong[:, :5], weak, 0.9)
    with pytest.raises(ValueError, match="weak_logits"):
        fixmatch.confident_pseudo_labels(weak[0], 0.9)
    with pytest.raises(ValueError, match="lambda_u"):
        fixmatch.fixmatch_step(models.SmallCNN(width=4), torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long),
                               torch.rand(4, 1, 8, 8), lambda_u=-1)
