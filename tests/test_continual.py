"""lablib.methods.continual: the Fisher against closed forms and a per-example loop, the EWC
penalty's value and gradient, the task builders, the replay buffer, and the stacked ensemble
against separate models."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lablib.methods import continual
from lablib.nets import ensemble


def _linear(d=5, k=4, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d, k)


def _data(n=12, d=5, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def _mlp(seed=0, d=5, k=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 7), nn.Tanh(), nn.Linear(7, k))


# --- the Fisher ------------------------------------------------------------------------------------

def test_empirical_fisher_of_a_linear_softmax_model_is_the_closed_form():
    model, (x, y) = _linear(), _data()
    f = continual.fisher_diagonal(model, x, y)
    with torch.no_grad():
        p = model(x).softmax(1)
    r = F.one_hot(y, 4).float() - p  # d log p(y|x) / d logits
    assert torch.allclose(f["weight"], (r[:, :, None] ** 2 * x[:, None, :] ** 2).mean(0), atol=1e-6)
    assert torch.allclose(f["bias"], (r ** 2).mean(0), atol=1e-6)


def test_true_fisher_of_a_linear_softmax_model_is_p_times_one_minus_p():
    model, (x, _) = _linear(seed=3), _data(seed=3)
    f = continual.fisher_diagonal(model, x)  # y=None: the expectation over the model's labels
    with torch.no_grad():
        p = model(x).softmax(1)
    v = p * (1 - p)
    assert torch.allclose(f["weight"], (v[:, :, None] * x[:, None, :] ** 2).mean(0), atol=1e-6)
    assert torch.allclose(f["bias"], v.mean(0), atol=1e-6)


def test_empirical_fisher_equals_a_loop_of_per_example_backward_passes():
    model, (x, y) = _mlp(1), _data(seed=1)
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad ** 2 / len(x)
    got = continual.fisher_diagonal(model, x, y, batch_size=5)  # chunks of 5, 5, 2
    assert set(got) == set(expected)
    for n in expected:
        assert torch.allclose(got[n], expected[n], atol=1e-6), n
        assert not got[n].requires_grad


def test_true_fisher_is_the_probability_weighted_mean_of_every_label_s_empirical_fisher():
    model, (x, _) = _mlp(2), _data(n=6, seed=2)
    with torch.no_grad():
        p = model(x).softmax(1)
    expected = {n: torch.zeros_like(q) for n, q in model.named_parameters()}
    for i in range(len(x)):
        for c in range(4):
            one = continual.fisher_diagonal(model, x[i:i + 1], torch.tensor([c]))
            for n in expected:
                expected[n] += p[i, c] * one[n] / len(x)
    got = continual.fisher_diagonal(model, x)
    for n in expected:
        assert torch.allclose(got[n], expected[n], atol=1e-6), n


def test_fisher_over_a_head_is_the_fisher_of_the_model_cut_to_those_outputs():
    model, (x, y) = _linear(d=5, k=6, seed=4), _data(n=20, d=5, k=6, seed=4)
    head = [1, 4, 5]
    keep = torch.isin(y, torch.tensor(head))
    x, y = x[keep], y[keep]
    cut = nn.Linear(5, 3)
    with torch.no_grad():
        cut.weight.copy_(model.weight[head]), cut.bias.copy_(model.bias[head])
    position = {c: i for i, c in enumerate(head)}
    small = continual.fisher_diagonal(cut, x, torch.tensor([position[int(c)] for c in y]))
    for labels in (y, None):
        got = continual.fisher_diagonal(model, x, labels, classes=head)
        ref = small if labels is not None else continual.fisher_diagonal(cut, x)
        assert torch.allclose(got["weight"][head], ref["weight"], atol=1e-6)
        assert got["weight"][[0, 2, 3]].abs().max() == 0  # the other heads get no gradient
        assert torch.allclose(got["bias"][head], ref["bias"], atol=1e-6)


def test_fisher_runs_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 4)).train()
    x, y = _data()
    a, b = continual.fisher_diagonal(model, x, y), continual.fisher_diagonal(model, x, y)
    assert all(torch.equal(a[n], b[n]) for n in a)  # dropout off: deterministic
    assert model.training
    frozen = _mlp()
    frozen[0].weight.requires_grad_(False)
    assert "0.weight" not in continual.fisher_diagonal(frozen, *_data())


@pytest.mark.parametrize("kwargs, name", [
    (dict(model="net"), "model"),
    (dict(x=[[1.0, 2.0]]), "x"),
    (dict(x=torch.zeros(0, 5)), "x"),
    (dict(x=torch.full((3, 5), math.nan)), "x"),
    (dict(y=torch.tensor([0, 1, 2.0])), "y"),
    (dict(y=torch.tensor([0, 1, 9])), "y"),
    (dict(y=torch.tensor([0, 1])), "y"),
    (dict(classes=[0, 9]), "classes"),
    (dict(classes=[0, 0]), "classes"),
    (dict(classes="01"), "classes"),
    (dict(classes=[]), "classes"),
    (dict(classes=[0, 1], y=torch.tensor([0, 1, 2])), "y"),
    (dict(batch_size=0), "batch_size"),
])
def test_fisher_refuses_bad_input_naming_the_argument(kwargs, name):
    args = dict(model=_linear(), x=torch.randn(3, 5), y=torch.tensor([0, 1, 2]))
    args |= kwargs
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        continual.fisher_diagonal(args.pop("model"), args.pop("x"), args.pop("y"), **args)


# --- the penalty -----------------------------------------------------------------------------------

def _penalty_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"w": (3, 4), "b": (3,)}
    anchor = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    fisher = {n: torch.rand(s, generator=g) for n, s in shapes.items()}
    params = {n: (anchor[n] + torch.randn(s, generator=g)).requires_grad_() for n, s in shapes.items()}
    return params, fisher, anchor


def test_penalty_is_zero_at_the_anchor_and_quadratic_around_it():
    params, fisher, anchor = _penalty_inputs()
    assert continual.ewc_penalty(anchor, fisher, anchor, 7.0).item() == 0
    step = {n: params[n].detach() - anchor[n] for n in anchor}
    at = [continual.ewc_penalty({n: anchor[n] + t * step[n] for n in anchor}, fisher, anchor, 7.0).item()
          for t in (1.0, 2.0, -3.0)]
    assert at[1] == pytest.approx(4 * at[0]) and at[2] == pytest.approx(9 * at[0])
    expected = 7.0 / 2 * sum((fisher[n] * step[n] ** 2).sum() for n in anchor)
    assert at[0] == pytest.approx(expected.item())


def test_penalty_gradient_is_lambda_f_times_the_distance():
    params, fisher, anchor = _penalty_inputs(1)
    continual.ewc_penalty(params, fisher, anchor, 3.0).backward()
    for n in params:
        assert torch.allclose(params[n].grad, 3.0 * fisher[n] * (params[n].detach() - anchor[n]), atol=1e-6)


def test_penalty_takes_a_model_and_only_the_parameters_the_fisher_names():
    model = _mlp()
    anchor = {n: p.detach().clone() + 1 for n, p in model.named_parameters()}
    fisher = {"0.weight": torch.ones_like(model[0].weight)}
    value = continual.ewc_penalty(model, fisher, {"0.weight": anchor["0.weight"]}, 2.0)
    assert value.item() == pytest.approx(model[0].weight.numel())  # 2/2 * sum(1 * 1^2)
    value.backward()
    assert model[2].weight.grad is None


@pytest.mark.parametrize("change, name", [
    (lambda p, f, a: (p, f, a, -1.0), "lam"),
    (lambda p, f, a: (p, f, a, math.nan), "lam"),
    (lambda p, f, a: (p, f, a, "1e3"), "lam"),
    (lambda p, f, a: (p, f, a, math.inf), "lam"),
    (lambda p, f, a: ([1, 2], f, a, 1.0), "params"),
    (lambda p, f, a: (p, f | {"w": -f["w"]}, a, 1.0), "fisher"),
    (lambda p, f, a: (p, f | {"w": f["w"][:2]}, a, 1.0), "fisher"),
    (lambda p, f, a: (p, {}, {}, 1.0), "fisher"),
    (lambda p, f, a: (p, f | {"extra": f["b"]}, a | {"extra": a["b"]}, 1.0), "fisher"),
    (lambda p, f, a: (p, f, {"w": a["w"]}, 1.0), "anchor"),
    (lambda p, f, a: (p, f, a | {"b": a["b"][:1]}, 1.0), "anchor"),
    (lambda p, f, a: (p, f, a | {"b": a["b"] * math.nan}, 1.0), "anchor"),
    (lambda p, f, a: (p, f | {"b": 3}, a, 1.0), "fisher"),
])
def test_penalty_refuses_bad_input_naming_the_argument(change, name):
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        continual.ewc_penalty(*change(*_penalty_inputs()))


def test_merge_fishers_is_gamma_old_plus_new():
    _, old, _ = _penalty_inputs(2)
    _, new, _ = _penalty_inputs(3)
    merged = continual.merge_fishers(old, new, gamma=0.5)
    assert all(torch.allclose(merged[n], 0.5 * old[n] + new[n]) for n in old)
    with pytest.raises(ValueError, match="gamma"):
        continual.merge_fishers(old, new, gamma=1.5)
    with pytest.raises(ValueError, match="new"):
        continual.merge_fishers(old, {"w": new["w"]})
    with pytest.raises(TypeError, match="old"):
        continual.merge_fishers(None, new)


# --- tasks and replay ------------------------------------------------------------------------------

def test_permutation_is_seeded_and_permute_pixels_is_invertible():
    p = continual.permutation(64, seed=1)
    assert torch.equal(p.sort().values, torch.arange(64)) and torch.equal(p, continual.permutation(64, seed=1))
    assert not torch.equal(p, continual.permutation(64, seed=2))
    x = torch.rand(5, 1, 8, 8)
    xp = continual.permute_pixels(x, p)
    assert xp.shape == x.shape
    assert torch.equal(xp.reshape(5, 64), x.reshape(5, 64)[:, p])
    assert torch.equal(continual.permute_pixels(xp, p.argsort()), x)
    with pytest.raises(ValueError, match="perm"):
        continual.permute_pixels(x, torch.zeros(64, dtype=torch.long))
    with pytest.raises(ValueError, match="perm"):
        continual.permute_pixels(x, torch.arange(63))
    with pytest.raises(TypeError, match="perm"):
        continual.permute_pixels(x, list(range(64)))
    with pytest.raises(ValueError, match="features"):
        continual.permutation(0)
    with pytest.raises(ValueError, match="seed"):
        continual.permutation(4, seed=-1)


def test_split_classes_keeps_exactly_those_labels_in_order():
    x, y = torch.arange(10.0)[:, None].repeat(1, 2), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    xs, ys = continual.split_classes(x, y, [1, 3])
    assert ys.tolist() == [1, 3, 1, 3] and xs[:, 0].tolist() == [1, 3, 6, 8]
    with pytest.raises(ValueError, match="classes"):
        continual.split_classes(x, y, [7])
    with pytest.raises(ValueError, match="y"):
        continual.split_classes(x, y[:5], [1])


def test_replay_buffer_is_class_balanced_seeded_and_drawn_from_the_data():
    x = torch.randn(60, 3)
    y = torch.arange(60) % 3
    y[:5] = 2  # class 0 and 1 lose a few, class 2 gains them
    xb, yb = continual.replay_buffer(x, y, per_class=4, seed=0)
    assert torch.bincount(yb).tolist() == [4, 4, 4]
    rows = {tuple(r.tolist()) for r in x}
    assert all(tuple(r.tolist()) in rows for r in xb)
    assert torch.equal(xb, continual.replay_buffer(x, y, per_class=4, seed=0)[0])
    small = continual.replay_buffer(x[:4], torch.tensor([0, 0, 1, 1]), per_class=3)[1]
    assert small.tolist() == [0, 0, 1, 1]  # a class with fewer keeps all it has
    with pytest.raises(ValueError, match="per_class"):
        continual.replay_buffer(x, y, per_class=0)


# --- K models at once ------------------------------------------------------------------------------

def test_ensemble_runs_each_member_as_its_own_model():
    models = [_mlp(s) for s in range(3)]
    ens = ensemble.Ensemble(models)
    x = torch.randn(3, 4, 5)
    out = ens(x)
    assert out.shape == (3, 4, 4)
    for k, m in enumerate(models):
        assert torch.allclose(out[k], m(x[k]), atol=1e-6)
        copy_k = ens.member(k)
        assert all(torch.equal(a, b) for a, b in zip(copy_k.parameters(), m.parameters(), strict=True))
    assert torch.allclose(ens(x[0].expand(3, 4, 5))[2], models[2](x[0]), atol=1e-6)
    assert set(ens.params()) == {n for n, _ in models[0].named_parameters()}


def test_ensemble_trained_with_adam_equals_separate_runs():
    models = [_mlp(s) for s in range(3)]
    separate = copy.deepcopy(models)
    ens = ensemble.Ensemble(models)
    opt = torch.optim.Adam(ens.parameters(), lr=0.05)
    opts = [torch.optim.Adam(m.parameters(), lr=0.05) for m in separate]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(3, 6, 5, generator=g), torch.randint(0, 4, (3, 6), generator=g)
        losses = F.cross_entropy(ens(x).flatten(0, 1), y.flatten(), reduction="none").view(3, 6).mean(1)
        opt.zero_grad()
        losses.sum().backward()
        opt.step()
        for k, (m, o) in enumerate(zip(separate, opts, strict=True)):
            o.zero_grad()
            F.cross_entropy(m(x[k]), y[k]).backward()
            o.step()
    for k, m in enumerate(separate):
        for a, b in zip(ens.member(k).parameters(), m.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-5)


def test_ensemble_refuses_bad_input():
    with pytest.raises(TypeError, match="models"):
        ensemble.Ensemble(_mlp())
    with pytest.raises(TypeError, match="models"):
        ensemble.Ensemble([])
    with pytest.raises(ValueError, match=r"models\[1\]"):
        ensemble.Ensemble([_mlp(), nn.Linear(5, 4)])
    ens = ensemble.Ensemble([_mlp(0), _mlp(1)])
    with pytest.raises(ValueError, match="x"):
        ens(torch.randn(4, 5))
    with pytest.raises(ValueError, match="k"):
        ens.member(2)


def test_member_batches_mix_replay_and_are_seeded():
    a = (torch.zeros(10, 2), torch.zeros(10, dtype=torch.long))
    b = (torch.ones(20, 2), torch.ones(20, dtype=torch.long))
    memory = (torch.full((3, 2), 2.0), torch.full((3,), 2, dtype=torch.long))
    it = ensemble.member_batches([a, b], batch_size=8, seed=0, replay=[None, memory], replay_fraction=0.25)
    x, y = next(it)
    assert x.shape == (2, 8, 2) and y.shape == (2, 8)
    assert y[0].tolist() == [0] * 8 and y[1].tolist() == [1] * 6 + [2] * 2
    again = ensemble.member_batches([a, b], batch_size=8, seed=0, replay=[None, memory], replay_fraction=0.25)
    assert torch.equal(next(again)[0], x)
    with pytest.raises(ValueError, match="replay"):
        ensemble.member_batches([a, b], 8, replay=[None])
    with pytest.raises(ValueError, match="replay_fraction"):
        ensemble.member_batches([a, b], 8, replay_fraction=2)
    with pytest.raises(ValueError, match="batch_size"):
        ensemble.member_batches([a, b], 0)
    with pytest.raises(TypeError, match="data"):
        ensemble.member_batches(a[0], 8)
    with pytest.raises(ValueError, match=r"data\[1\] y"):
        ensemble.member_batches([a, (b[0], b[1][:3])], 8)
