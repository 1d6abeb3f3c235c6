import functools
import math

import pytest
import torch
import torch.nn.functional as F

from lablib.data import datasets
from lablib.methods import fixmatch
from lablib.nets import models, train


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


def _batch(seed=0, n_l=4, n_u=12):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n_l, 1, 8, 8, generator=g), torch.randint(0, 10, (n_l,), generator=g),
            torch.rand(n_u, 1, 8, 8, generator=g), torch.randint(0, 10, (n_u,), generator=g))


def _confident_model(seed=0):
    """A SmallCNN with large random weights: confident enough that tau = 0.5 keeps some rows."""
    g = torch.Generator().manual_seed(seed)
    model = models.SmallCNN(width=4)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=g))
    return model


def _identity(x):
    return x


def _flip(x):
    return x.flip(-1)


def test_fixmatch_step_weak_pass_builds_no_graph_and_uses_tau():
    torch.manual_seed(0)
    model = models.SmallCNN(width=4)
    batch = _batch()
    calls = []
    model.register_forward_hook(lambda m, inp, out: calls.append(torch.is_grad_enabled()))
    loss, logs = fixmatch.fixmatch_step(model, batch, tau=0.5)
    assert calls == [True, False, True]  # labelled, weak (no graph), strong
    assert loss.requires_grad and set(logs) == {"mask_rate", "pseudo_acc"}
    # tau = 1 keeps nothing from a fresh model, and lambda_u = 0 drops the unlabelled term:
    # both leave the supervised loss alone
    g = torch.Generator().manual_seed(3)
    only_sup = fixmatch.supervised_step(model, batch, weak=_identity)
    for kwargs in ({"tau": 1.0}, {"tau": 0.5, "lambda_u": 0.0}):
        out, _ = fixmatch.fixmatch_step(model, batch, weak=_identity, strong=lambda x: x + 0.1 * torch.rand(x.shape, generator=g), **kwargs)
        assert torch.allclose(out, only_sup)


def test_fixmatch_step_logs_mask_rate_and_pseudo_label_accuracy():
    model, batch = _confident_model(), _batch(n_u=64)
    x_l, y_l, x_u, _ = batch
    with torch.no_grad():
        pseudo, mask = fixmatch.confident_pseudo_labels(model(x_u), 0.5)
    assert 0 < mask.sum() < len(mask)  # the test input has both kinds of rows
    y_u = torch.where(torch.arange(64) % 2 == 0, pseudo, (pseudo + 1) % 10)  # every other one right
    _, logs = fixmatch.fixmatch_step(model, (x_l, y_l, x_u, y_u), tau=0.5, weak=_identity, strong=_flip)
    assert logs["mask_rate"].item() == pytest.approx(mask.float().mean().item())
    assert logs["pseudo_acc"].item() == pytest.approx((pseudo == y_u)[mask].float().mean().item())
    _, none_used = fixmatch.fixmatch_step(model, batch, tau=1.0, weak=_identity, strong=_flip)
    assert none_used["mask_rate"].item() == 0 and math.isnan(none_used["pseudo_acc"].item())
    _, unmeasured = fixmatch.fixmatch_step(model, batch[:3], tau=0.5, weak=_identity, strong=_flip)
    assert math.isnan(unmeasured["pseudo_acc"].item())


def test_loss_and_gradients_do_not_depend_on_the_unlabelled_true_labels():
    """y_u is in the batch only to measure the pseudo-labels: any y_u (or none) gives the same
    loss and the same gradient on every weight, while pseudo_acc does change with it."""
    x_l, y_l, x_u, y_u = _batch(n_u=64)
    results = []
    for labels in (y_u, (y_u + 3) % 10, torch.zeros_like(y_u), None):
        model = _confident_model()
        batch = (x_l, y_l, x_u, labels) if labels is not None else (x_l, y_l, x_u)
        loss, logs = fixmatch.fixmatch_step(model, batch, tau=0.5, weak=_identity, strong=_flip)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()], logs["pseudo_acc"].item()))
    first_loss, first_grads, _ = results[0]
    assert first_loss > 0 and any(g.abs().sum() > 0 for g in first_grads)
    for loss, grads, _ in results[1:]:
        assert torch.equal(loss, first_loss)
        assert all(torch.equal(a, b) for a, b in zip(grads, first_grads, strict=True))
    assert results[0][2] != results[1][2]  # ...but the measurement did read them


def test_soft_unsupervised_loss():
    strong, weak = _logits()
    tau, T = 0.8, 0.5
    probs = F.softmax(weak, 1)
    targets = F.softmax(weak / T, 1)
    keep = probs.max(1).values >= tau
    expected = sum(-(targets[i] * F.log_softmax(strong[i], 0)).sum() for i in range(len(weak)) if keep[i]) / len(weak)
    assert 0 < keep.sum() < len(weak)
    assert torch.allclose(fixmatch.soft_unsupervised_loss(strong, weak, tau, T), expected)
    # as T -> 0 the soft target is the one-hot top class: FixMatch's own loss
    assert torch.allclose(fixmatch.soft_unsupervised_loss(strong, weak, tau, 1e-4),
                          fixmatch.unsupervised_loss(strong, weak, tau), atol=1e-5)
    strong.requires_grad_()
    weak.requires_grad_()
    fixmatch.soft_unsupervised_loss(strong, weak, tau, T).backward()
    assert weak.grad is None and strong.grad.abs().sum() > 0
    for bad in (0, -1.0, True, "0.5"):
        with pytest.raises(ValueError, match="temperature"):
            fixmatch.soft_unsupervised_loss(strong, weak, tau, bad)


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
    with pytest.raises(ValueError, match="total"):
        fixmatch.cosine_lr(0, 0)


def _pools(per_class=2):
    splits = datasets.digits()
    labelled, unlabelled = datasets.labelled_split(splits.train, per_class=per_class, seed=0)
    return splits, labelled, unlabelled


def test_batches_shapes_seeding_and_sources():
    _, labelled, unlabelled = _pools()
    stream = fixmatch.batches(labelled, unlabelled, batch_size=4, mu=3, seed=1)
    x_l, y_l, x_u, y_u = next(stream)
    assert x_l.shape == (4, 1, 8, 8) and y_l.shape == (4,) and x_u.shape == (12, 1, 8, 8) and y_u.shape == (12,)
    # every labelled pair comes from the labelled set, every unlabelled pair from the pool
    lab = {(x.numpy().tobytes(), int(y)) for x, y in zip(labelled.x, labelled.y, strict=True)}
    pool = {(x.numpy().tobytes(), int(y)) for x, y in zip(unlabelled.x, unlabelled.y, strict=True)}
    for _ in range(5):
        x_l, y_l, x_u, y_u = next(stream)
        assert {(x.numpy().tobytes(), int(y)) for x, y in zip(x_l, y_l, strict=True)} <= lab
        assert {(x.numpy().tobytes(), int(y)) for x, y in zip(x_u, y_u, strict=True)} <= pool
    a = [next(fixmatch.batches(labelled, unlabelled, 4, 3, seed=5)) for _ in range(2)]
    assert all(torch.equal(s, t) for s, t in zip(a[0], a[1], strict=True))  # same seed, same batches
    b = next(fixmatch.batches(labelled, unlabelled, 4, 3, seed=6))
    assert not torch.equal(a[0][2], b[2])


def _fit(model, labelled, unlabelled, loader, steps, log_every, step=fixmatch.fixmatch_step, seed=0):
    return train.fit(model, fixmatch.batches(labelled, unlabelled, batch_size=4, mu=3, seed=seed), steps=steps,
                     step=step, lr=0.03, optimizer="nesterov", weight_decay=5e-4, schedule=fixmatch.cosine_lr,
                     log_every=log_every, evaluate_fn=lambda m: fixmatch.evaluate(m, loader), progress=False)


def test_trains_with_the_one_loop_and_logs():
    splits, labelled, unlabelled = _pools()
    loader = datasets.loader(splits.test, batch_size=256)
    torch.manual_seed(0)
    step = functools.partial(fixmatch.fixmatch_step, tau=0.5)
    history = _fit(models.SmallCNN(width=4), labelled, unlabelled, loader, steps=6, log_every=3, step=step)
    assert history["step"] == [3, 6]
    for row in history.rows:
        assert 0 <= row["test_acc"] <= 1 and 0.1 <= row["top_class_share"] <= 1
        assert 0 <= row["train_mask_rate"] <= 1
    assert history["lr"][-1] == pytest.approx(0.03 * fixmatch.cosine_lr(6, 6))
    baseline = _fit(models.SmallCNN(width=4), labelled, unlabelled, loader, steps=2, log_every=1,
                    step=fixmatch.supervised_step)
    assert "train_mask_rate" not in baseline.rows[0] and 0 <= baseline.last("test_acc") <= 1


def test_training_does_not_depend_on_log_every():
    """Evaluating (a DataLoader draws from torch's global RNG) must not change the training."""
    splits, labelled, unlabelled = _pools()
    loader = datasets.loader(splits.test, batch_size=256)
    finals = []
    for every in (1, 4):
        torch.manual_seed(0)
        model = models.SmallCNN(width=4)
        _fit(model, labelled, unlabelled, loader, steps=4, log_every=every)
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(finals[0], finals[1])


def test_training_is_repeatable():
    splits, labelled, unlabelled = _pools()
    loader = datasets.loader(splits.test, batch_size=256)
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(0)
        model = models.SmallCNN(width=4)
        _fit(model, labelled, unlabelled, loader, steps=3, log_every=3, seed=seed)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_evaluate_top_class_share():
    class Always3(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), 3), 10).float()

    splits, _, _ = _pools()
    out = fixmatch.evaluate(Always3(), datasets.loader(splits.test, batch_size=100))
    assert out["top_class_share"] == 1.0
    assert out["test_acc"] == pytest.approx((splits.test.y == 3).float().mean().item())


@pytest.mark.parametrize("tau", [0, 0.0, -0.1, 1.01, 2, True, "0.9", None])
def test_bad_tau(tau):
    strong, weak = _logits()
    with pytest.raises(ValueError if isinstance(tau, (int, float)) and not isinstance(tau, bool) else TypeError, match="tau"):
        fixmatch.unsupervised_loss(strong, weak, tau)


@pytest.mark.parametrize("mu", [0, -1, 2.5, True])
def test_bad_mu(mu):
    _, labelled, unlabelled = _pools()
    with pytest.raises(ValueError, match="mu"):
        fixmatch.batches(labelled, unlabelled, batch_size=4, mu=mu)


@pytest.mark.parametrize("kwargs, word", [({"batch_size": 0}, "batch_size"), ({"batch_size": 2.0}, "batch_size"),
                                          ({"labelled": None}, "labelled"), ({"unlabelled": []}, "unlabelled")])
def test_bad_batches_arguments(kwargs, word):
    _, labelled, unlabelled = _pools()
    args = {"labelled": labelled, "unlabelled": unlabelled, "batch_size": 4, "mu": 2} | kwargs
    with pytest.raises(ValueError, match=word):
        fixmatch.batches(**args)  # eagerly: not at the first next()
    with pytest.raises(TypeError, match="seed"):
        fixmatch.batches(labelled, unlabelled, seed=1.5)


def test_bad_shapes_and_lambda():
    strong, weak = _logits()
    with pytest.raises(ValueError, match="same shape"):
        fixmatch.unsupervised_loss(strong[:, :5], weak, 0.9)
    with pytest.raises(ValueError, match="weak_logits"):
        fixmatch.confident_pseudo_labels(weak[0], 0.9)
    for bad in (-1, True, None):
        with pytest.raises(ValueError, match="lambda_u"):
            fixmatch.fixmatch_step(models.SmallCNN(width=4), _batch(), lambda_u=bad)
    with pytest.raises(ValueError, match="batch"):
        fixmatch.fixmatch_step(models.SmallCNN(width=4), _batch()[:2])


def test_more_bad_inputs_name_the_argument():
    strong, weak = _logits(n=4, c=3)
    pseudo, mask = torch.tensor([0, 1, 2, 0]), torch.tensor([True, False, True, True])
    x_l, y_l, x_u, y_u = _batch()
    model = models.SmallCNN(width=4)
    confidence, correct = torch.rand(8), torch.rand(8) > 0.5
    cases = [
        (lambda: fixmatch.confident_pseudo_labels(None, 0.5), "weak_logits"),
        (lambda: fixmatch.unsupervised_loss(None, weak, 0.5), "strong_logits"),
        (lambda: fixmatch.unsupervised_loss(strong[:0], weak[:0], 0.5), "empty"),
        (lambda: fixmatch.pseudo_label_accuracy(pseudo, mask.float(), pseudo), "mask"),
        (lambda: fixmatch.pseudo_label_accuracy(pseudo, mask, pseudo[:3]), "y_u"),
        (lambda: fixmatch.pseudo_label_accuracy(None, mask, pseudo), "pseudo"),
        (lambda: fixmatch.fixmatch_step(model, (x_l, y_l + 10, x_u, y_u)), "y_l"),
        (lambda: fixmatch.supervised_step(model, (x_l, y_l + 10, x_u, y_u)), "y_l"),
        (lambda: fixmatch.fixmatch_step(model, _batch(), weak=None), "weak"),
        (lambda: fixmatch.mask_rate_curve(confidence, correct, 0.5), "taus"),
        (lambda: fixmatch.mask_rate_curve(confidence * 5, correct, [0.5]), "confidence"),
        (lambda: fixmatch.mask_rate_curve(None, correct, [0.5]), "confidence"),
        (lambda: fixmatch.cosine_lr(-1, 10), "step"),
        (lambda: fixmatch.cosine_lr("1", 10), "step"),
    ]
    for call, word in cases:
        with pytest.raises((ValueError, TypeError), match=word):
            call()
