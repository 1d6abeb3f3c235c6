"""lablib.methods.tuning: the range test, the batched trainer (against torch's own modules and
optimizers), and the statistics of a search."""

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lablib.methods import tuning


def _data(n=40, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _separate_run(x, y, xv, yv, *, lr, momentum, wd, hidden, seed, optimizer, batch_size, epochs, classes):
    """One member trained the ordinary way: nn.Linear layers and torch.optim."""
    w1, b1, w2, b2 = tuning.init_weights(x.shape[1], hidden, classes, seed)
    model = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, classes))
    with torch.no_grad():
        model[0].weight.copy_(w1.T), model[0].bias.copy_(b1), model[2].weight.copy_(w2.T), model[2].bias.copy_(b2)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    gen = torch.Generator().manual_seed(seed)
    losses, accs = [], []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for b in range(math.ceil(len(x) / batch_size)):
            idx = order[b * batch_size:(b + 1) * batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total / math.ceil(len(x) / batch_size))
        with torch.no_grad():
            accs.append((model(xv).argmax(1) == yv).float().mean().item())
    return losses, accs


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_train_many_equals_separate_runs(optimizer):
    x, y = _data(50, 6, 3, seed=1)
    xv, yv = _data(30, 6, 3, seed=2)
    members = [dict(lr=0.05, momentum=0.9, wd=1e-3, hidden=5, seed=3),
               dict(lr=0.3, momentum=0.0, wd=0.0, hidden=9, seed=4),
               dict(lr=0.01, momentum=0.5, wd=0.1, hidden=9, seed=5)]
    out = tuning.train_many(x, y, {"val": (xv, yv)}, optimizer=optimizer, batch_size=16, epochs=3,
                            lr=[m["lr"] for m in members], momentum=[m["momentum"] for m in members],
                            weight_decay=[m["wd"] for m in members], hidden=[m["hidden"] for m in members],
                            seed=[m["seed"] for m in members])
    for i, m in enumerate(members):
        losses, accs = _separate_run(x, y, xv, yv, optimizer=optimizer, batch_size=16, epochs=3, classes=3, **m)
        torch.testing.assert_close(out["train_loss"][i], torch.tensor(losses), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out["val_acc"][i], torch.tensor(accs), atol=1e-6, rtol=0)
    assert out["epochs"].tolist() == [3, 3, 3]


def test_train_many_members_are_independent():
    """A member's result does not depend on who else is in the batch."""
    x, y = _data(40, 5, 4, seed=3)
    alone = tuning.train_many(x, y, {"train": (x, y)}, lr=0.1, momentum=0.9, hidden=7, seed=11, epochs=2)
    together = tuning.train_many(x, y, {"train": (x, y)}, lr=[5.0, 0.1], momentum=0.9, hidden=[30, 7], seed=[1, 11], epochs=2)
    torch.testing.assert_close(together["train_acc"][1], alone["train_acc"][0])
    torch.testing.assert_close(together["train_loss"][1], alone["train_loss"][0], atol=1e-5, rtol=1e-4)


def test_train_many_prunes_members_and_saves_their_epochs():
    x, y = _data(40, 5, 3, seed=4)
    calls = []

    def on_epoch(epoch, scores):
        calls.append((epoch, torch.isnan(scores["val"]).tolist()))
        return [True, epoch < 1, False]  # member 2 stops after epoch 0, member 1 after epoch 1

    out = tuning.train_many(x, y, {"val": (x, y)}, lr=[0.1, 0.1, 0.1], seed=[0, 1, 2], epochs=4,
                            on_epoch=on_epoch, record_steps=True)
    assert out["epochs"].tolist() == [4, 2, 1]
    assert torch.isnan(out["val_acc"][2, 1:]).all() and not torch.isnan(out["val_acc"][2, 0])
    assert torch.isnan(out["val_acc"][1, 2:]).all() and not torch.isnan(out["val_acc"][1, :2]).any()
    assert not torch.isnan(out["val_acc"][0]).any()
    assert calls[1] == (1, [False, False, True])  # a stopped member shows as NaN
    steps = math.ceil(40 / 64)
    assert out["step_loss"].shape == (3, 4 * steps)
    # the survivor is unaffected by the others stopping
    alone = tuning.train_many(x, y, {"val": (x, y)}, lr=0.1, seed=0, epochs=4)
    torch.testing.assert_close(out["val_acc"][0], alone["val_acc"][0])


def test_train_many_stops_when_every_member_is_pruned():
    x, y = _data(30, 4, 2)
    out = tuning.train_many(x, y, {"val": (x, y)}, lr=[0.1, 0.2], epochs=5, on_epoch=lambda e, s: [False, False])
    assert out["epochs"].tolist() == [1, 1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=[0.1, 0.2], seed=[1, 2, 3]), "one length"),
    (dict(lr=[]), "empty"),
    (dict(lr=-1.0), "lr"),
    (dict(lr=0.1, momentum=1.0), "momentum"),
    (dict(lr=0.1, hidden=0), "hidden"),
    (dict(lr=0.1, weight_decay=-1), "weight_decay"),
    (dict(lr=0.1, optimizer="adam"), "optimizer"),
    (dict(lr=0.1, batch_size=0), "batch_size"),
    (dict(lr=0.1, epochs=0), "epochs"),
    (dict(lr=0.1, seed=-1), "seed"),
])
def test_train_many_bad_arguments(kwargs, match):
    x, y = _data()
    with pytest.raises((ValueError, TypeError), match=match):
        tuning.train_many(x, y, **kwargs)


def test_train_many_bad_data_and_callbacks():
    x, y = _data()
    with pytest.raises(ValueError, match="y must be int64"):
        tuning.train_many(x, y.float(), lr=0.1)
    with pytest.raises(TypeError, match="x, y must be tensors"):
        tuning.train_many(x.numpy(), y, lr=0.1)
    with pytest.raises(TypeError, match="evals must be a dict"):
        tuning.train_many(x, y, [(x, y)], lr=0.1)
    with pytest.raises(ValueError, match=r"evals\['val'\] must be a pair"):
        tuning.train_many(x, y, {"val": x}, lr=0.1)
    with pytest.raises(ValueError, match="features"):
        tuning.train_many(x, y, {"val": (x[:, :3], y)}, lr=0.1)
    with pytest.raises(TypeError, match="on_epoch"):
        tuning.train_many(x, y, lr=0.1, on_epoch=3)
    with pytest.raises(ValueError, match="on_epoch must return 2"):
        tuning.train_many(x, y, {"v": (x, y)}, lr=[0.1, 0.2], epochs=2, on_epoch=lambda e, s: [True])


def test_lr_range_test_grows_geometrically_and_leaves_the_model_alone():
    x, y = _data(64, 6, 3)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    before = copy.deepcopy(model.state_dict())
    lrs, losses = tuning.lr_range_test(model, x, y, lr_min=1e-4, lr_max=1.0, steps=9, diverge=1e9)
    torch.testing.assert_close(lrs, torch.logspace(-4, 0, 9, dtype=torch.float64))
    assert len(losses) == 9 and torch.isfinite(losses).all()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    again = tuning.lr_range_test(model, x, y, lr_min=1e-4, lr_max=1.0, steps=9, diverge=1e9)
    assert torch.equal(again[1], losses)  # seeded: the same run twice


def test_lr_range_test_stops_when_the_loss_blows_up():
    x, y = _data(64, 6, 3)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    lrs, losses = tuning.lr_range_test(model, x * 10, y, lr_min=1e-3, lr_max=1e4, steps=200, diverge=4.0)
    assert len(lrs) < 200
    last = losses[-1].item()
    assert not math.isfinite(last) or last > 4.0 * losses[:-1].min().item()
    assert all(last <= 4.0 * losses[:k + 1].min().item() for k, last in enumerate(losses[:-1].tolist()))


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr_min=0), "lr_min"), (dict(lr_max=1e-6), "lr_max"), (dict(steps=1), "steps"),
    (dict(batch_size=0), "batch_size"), (dict(momentum=1.5), "momentum"), (dict(diverge=1.0), "diverge"),
])
def test_lr_range_test_bad_arguments(kwargs, match):
    x, y = _data()
    with pytest.raises((ValueError, TypeError), match=match):
        tuning.lr_range_test(nn.Linear(6, 3), x, y, **kwargs)
    with pytest.raises(TypeError, match="model"):
        tuning.lr_range_test("net", x, y)


def test_smooth_removes_the_start_up_bias():
    torch.testing.assert_close(tuning.smooth([2.0] * 5), torch.full((5,), 2.0, dtype=torch.float64))
    s = tuning.smooth([1.0, 3.0], beta=0.5)
    assert s[0].item() == pytest.approx(1.0) and s[1].item() == pytest.approx((0.25 + 1.5) / 0.75)
    with pytest.raises(ValueError, match="beta"):
        tuning.smooth([1.0], beta=1.0)


def test_suggest_lr_reads_the_curve():
    lrs = torch.logspace(-4, 0, 41, dtype=torch.float64)
    # flat, a drop centred at 1e-2, a minimum at 1e-1, then up
    losses = 2.0 - torch.sigmoid((lrs.log10() + 2) * 8) + torch.relu(lrs.log10() + 1) * 3
    assert tuning.suggest_lr(lrs, losses, rule="steepest", beta=0.0) == pytest.approx(10 ** -2.1, rel=0.3)
    assert tuning.suggest_lr(lrs, losses, rule="min/10", beta=0.0) == pytest.approx(1e-2, rel=0.3)
    losses[-1] = math.nan  # a diverged last step is ignored
    assert tuning.suggest_lr(lrs, losses, rule="min/10", beta=0.0) == pytest.approx(1e-2, rel=0.3)
    with pytest.raises(ValueError, match="rule"):
        tuning.suggest_lr(lrs, losses, rule="max")
    with pytest.raises(ValueError, match="lrs and losses"):
        tuning.suggest_lr(lrs[:5], losses)
    with pytest.raises(ValueError, match="positive"):
        tuning.suggest_lr(-lrs, losses)


def test_best_so_far():
    assert tuning.best_so_far([0.5, math.nan, 0.7, 0.6]) == [0.5, 0.5, 0.7, 0.7]
    assert tuning.best_so_far([3, 1, 2], maximize=False) == [3, 1, 1]
    assert all(math.isnan(v) for v in tuning.best_so_far([math.nan, math.nan]))
    with pytest.raises(TypeError, match="maximize"):
        tuning.best_so_far([1], maximize="yes")


def test_seeds_needed():
    # mean 1, sd 1: ((1.96 + 0.84) * 1 / 1)^2 = 7.85 -> 8
    assert tuning.seeds_needed([0.0, 1.0, 2.0]) == 8
    assert tuning.seeds_needed([1.0, -1.0]) == math.inf
    assert tuning.seeds_needed([2.0, 2.0]) == 0  # no spread: any seed shows it
    assert tuning.seeds_needed([0.0, 1.0, 2.0], alpha=0.01, power=0.9) == math.ceil((2.575829 + 1.281552) ** 2)
    with pytest.raises(ValueError, match="alpha"):
        tuning.seeds_needed([1.0, 2.0], alpha=0.1)
    with pytest.raises(ValueError, match="differences"):
        tuning.seeds_needed([1.0])
    with pytest.raises(ValueError, match="differences"):
        tuning.seeds_needed([1.0, math.inf])


def test_train_many_restores_the_thread_count():
    x, y = _data()
    before = torch.get_num_threads()
    tuning.train_many(x, y, lr=0.1, epochs=1)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        tuning.train_many(x, y, lr=-1.0)
    assert torch.get_num_threads() == before
