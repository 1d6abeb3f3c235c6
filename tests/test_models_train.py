
import pytest
import torch
from torch import nn

from lablib.core import compat, config
from lablib.data import datasets
from lablib.nets import models, train


def test_smallcnn_shapes_and_size():
    m = models.SmallCNN()
    assert m(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    assert models.SmallCNN(in_channels=3, num_classes=3, width=8)(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert 10_000 < models.count_params(m) < 20_000
    with pytest.raises(ValueError, match="width"):
        models.SmallCNN(width=0)


def test_mlp_and_count_params():
    m = models.MLP(64, hidden=(32, 16), num_classes=10)
    assert m(torch.zeros(4, 1, 8, 8)).shape == (4, 10)
    assert models.count_params(m) == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    m.net[1].weight.requires_grad_(False)
    assert models.count_params(m, trainable_only=True) == models.count_params(m) - 64 * 32
    with pytest.raises(ValueError, match="act"):
        models.MLP(act="swish")


def test_fit_overfits_one_batch():
    """The loss on one fixed batch must collapse: proof the loop really trains."""
    config.seed_everything(0)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    loader = [(x, y)]
    model = models.SmallCNN()
    h = train.fit(model, loader, epochs=60, lr=3e-3, progress=False)
    assert len(h) == 60
    assert h["train_loss"][-1] < 0.1 * h["train_loss"][0]
    assert h.last("train_acc") == 1.0
    assert h["epoch"] == list(range(1, 61)) and h["step"] == list(range(1, 61))
    assert set(h.rows[0]) == {"epoch", "step", "train_loss", "train_acc", "lr", "seconds"}  # no val: no val_ columns
    assert not model.training  # fit leaves the model in eval mode


def test_fit_learns_digits_and_history_api():
    config.seed_everything(0)
    s = datasets.digits()
    h = train.fit(models.SmallCNN(), datasets.loader(s.train, 64, shuffle=True), datasets.loader(s.val, 256),
                  epochs=4, lr=3e-3, schedule="cosine", progress=False)
    assert h.best("val_acc") > 0.8
    assert h["lr"][-1] < 1e-6  # cosine decays to zero by the last step
    assert h.best("val_loss") == min(h["val_loss"])
    assert "val_acc" in repr(h)
    with pytest.raises(KeyError, match="no metric 'acc'"):
        _ = h["acc"]


def test_evaluate_and_predict():
    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        m[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        m[1].bias.zero_()
    x = torch.tensor([[[[2.0, 0], [0, 0]]], [[[0, 3.0], [0, 0]]], [[[5.0, 0], [0, 0]]]])
    y = torch.tensor([0, 1, 1])
    logits, labels = train.predict(m, [(x, y)])
    assert torch.equal(labels, y) and logits.shape == (3, 2)
    out = train.evaluate(m, [(x, y)])
    assert out["acc"] == pytest.approx(2 / 3)
    assert train.accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])) == 0.5
    with pytest.raises(ValueError, match="logits must be"):
        train.accuracy(torch.zeros(3), torch.zeros(3))


def test_grad_norm_monitor_records_each_layer():
    mon = train.GradNormMonitor()
    m = models.MLP(64, hidden=(16,), num_classes=10)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    train.fit(m, [(x, y)], epochs=3, progress=False, monitor=mon)
    assert list(mon.history) == ["net.1", "net.3"]  # weights only, input side first
    assert all(len(v) == 3 for v in mon.history.values())
    manual = m.net[1].weight.grad.norm().item()
    assert mon.history["net.1"][-1] == pytest.approx(manual)
    assert set(mon.mean()) == set(mon.first()) == {"net.1", "net.3"}
    with pytest.raises(ValueError, match="every"):
        train.GradNormMonitor(every=0)


def test_grad_clip_bounds_update():
    m = nn.Linear(4, 2)
    before = m.weight.detach().clone()
    x, y = torch.randn(16, 4) * 1000, torch.randint(0, 2, (16,))
    train.fit(m, [(x, y)], epochs=1, lr=1.0, optimizer="sgd", grad_clip=0.01, progress=False)
    step = (m.weight.detach() - before).norm().item()
    assert step <= 0.01 + 1e-6


def test_fit_with_bf16_autocast_and_custom_step():
    config.seed_everything(0)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    h = train.fit(models.SmallCNN(), [(x, y)], epochs=30, lr=3e-3, precision="bf16", progress=False)
    assert h["train_loss"][-1] < 0.5 * h["train_loss"][0]
    calls = []

    def loss_only(model, batch):
        xb, yb = batch
        calls.append(len(xb))
        return nn.functional.cross_entropy(model(xb), yb)

    h = train.fit(models.SmallCNN(), [(x, y)], epochs=2, step=loss_only, progress=False)
    assert calls == [32, 32]
    with pytest.raises(KeyError, match="no metric 'train_acc'"):  # a step that logs nothing adds no train_ columns
        _ = h["train_acc"]


def test_fit_logs_what_a_custom_step_returns():
    """step -> (loss, logs): each log is averaged over the row's steps and named train_<name>."""
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    seen = []

    def regress(model, batch):
        xb, yb = batch
        seen.append(1)
        out = model(xb)
        return nn.functional.mse_loss(out, yb), {"mae": (out - yb).abs().mean(), "k": float(len(seen))}

    h = train.fit(nn.Linear(4, 1), [(x, y)] * 3, epochs=2, step=regress, lr=1e-2, progress=False)
    assert len(h) == 2 and h["step"] == [3, 6] and h["epoch"] == [1, 2]
    assert h["train_k"] == [2.0, 5.0]  # the mean of 1, 2, 3 and of 4, 5, 6
    assert all(isinstance(v, float) and v > 0 for v in h["train_mae"])
    assert "train_acc" not in h.rows[0]  # no accuracy unless the step logs one


def test_fit_for_steps_with_an_endless_generator_and_a_schedule():
    def batches():
        g = torch.Generator().manual_seed(0)
        while True:  # endless: only steps= can tell fit when to stop
            x = torch.randn(16, 3, generator=g)
            yield x, (x[:, 0] > 0).long()

    calls = []

    def warmup_then_half(k, total):
        calls.append((k, total))
        return 0.5 if k >= 5 else (k + 1) / 5

    model = nn.Linear(3, 2)
    h = train.fit(model, batches(), steps=20, log_every=5, lr=0.1, schedule=warmup_then_half, progress=False)
    assert h["step"] == [5, 10, 15, 20] and "epoch" not in h.rows[0]
    assert h["lr"] == [pytest.approx(0.05)] * 4  # the lr after each row's last step: 0.1 x 0.5
    assert calls[0] == (0, 20) and {total for _, total in calls} == {20}
    assert h["train_acc"][-1] > 0.8  # it learned the sign of the first feature
    assert not model.training  # fit leaves the model in eval mode
    h = train.fit(nn.Linear(3, 2), batches(), steps=7, progress=False)  # default: a row every steps // 10, at least 1
    assert h["step"] == list(range(1, 8))
    few = iter([(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))] * 2)
    with pytest.raises(ValueError, match="ran out of batches after 2 of 5"):
        train.fit(nn.Linear(3, 2), few, steps=5, progress=False)


def test_fit_stops_on_a_nan_loss_naming_the_step():
    calls = []

    def goes_nan(model, batch):
        calls.append(1)
        loss = model(batch[0]).pow(2).mean()
        return loss * float("nan") if len(calls) == 3 else loss

    x = torch.randn(4, 2)
    with pytest.raises(FloatingPointError, match="at step 3 of 10"):
        train.fit(nn.Linear(2, 1), [(x, x)] * 5, epochs=2, step=goes_nan, progress=False)
    assert len(calls) == 3  # no step after the NaN


def test_fit_rows_carry_evaluate_fn_keys_or_val_metrics():
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    seen = []

    def probe(model):
        seen.append(model.weight.detach().clone())
        return {"probe_norm": model.weight.norm().item(), "probe_const": 7}

    model = nn.Linear(4, 2)
    h = train.fit(model, [(x, y)] * 2, epochs=3, evaluate_fn=probe, progress=False)
    assert h["probe_const"] == [7, 7, 7]
    assert h["probe_norm"] == [pytest.approx(w.norm().item()) for w in seen]
    assert torch.equal(seen[-1], model.weight.detach())  # evaluated after the row's last step
    assert "val_acc" not in h.rows[0] and "val_loss" not in h.rows[0]
    h = train.fit(nn.Linear(4, 2), [(x, y)], val=[(x, y)], epochs=2, progress=False)
    assert {"val_loss", "val_acc"} <= set(h.rows[0]) and 0 <= h.last("val_acc") <= 1


def test_fit_rejects_bad_arguments():
    m, loader = nn.Linear(2, 2), [(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))]
    for kwargs, word in [({"epochs": 0}, "epochs"), ({"steps": 0}, "steps"), ({"epochs": 1, "lr": 0}, "lr"),
                         ({"epochs": 1, "schedule": "step"}, "schedule"), ({"epochs": 1, "grad_clip": -1}, "grad_clip"),
                         ({"epochs": 1, "optimizer": "lion"}, "optimizer"), ({"epochs": 1, "precision": "int8"}, "precision"),
                         ({"epochs": 1, "log_every": 0}, "log_every")]:
        with pytest.raises(ValueError, match=word):
            train.fit(m, loader, progress=False, **kwargs)
    for kwargs in ({}, {"epochs": 1, "steps": 1}):  # exactly one of the two
        with pytest.raises(ValueError, match="exactly one of epochs or steps"):
            train.fit(m, loader, progress=False, **kwargs)
    with pytest.raises(ValueError, match="use steps="):  # an iterator has no length to make epochs of
        train.fit(m, iter(loader), epochs=1, progress=False)
    with pytest.raises(TypeError, match="step must be a function"):
        train.fit(m, loader, epochs=1, step="classify", progress=False)


def test_batch_norm_matches_torch_training_mode():
    x = torch.randn(6, 3, 5, 5) * 4 + 2
    assert torch.allclose(models.batch_norm(x), torch.nn.functional.batch_norm(x, None, None, training=True), atol=1e-5)
    with pytest.raises(ValueError, match="x must be"):
        models.batch_norm(torch.zeros(3, 4))


def test_residual_block_adds_skip_and_deepnet_variants():
    block = models.ResidualBlock(4, norm=False, residual=True)
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(block(x), torch.relu(x + block.conv(x)))
    plain = models.ResidualBlock(4, norm=False, residual=False)
    plain.load_state_dict(block.state_dict())
    assert torch.allclose(plain(x), torch.relu(plain.conv(x)))
    with torch.no_grad():
        block.conv.weight.zero_(), block.conv.bias.zero_()
    assert torch.equal(block(x), torch.relu(x))  # a zero branch leaves the identity path
    net = models.DeepNet(depth=5, width=8, norm=True, residual=True)
    assert net(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert len(net.blocks) == 5 and isinstance(net.blocks[0].norm, torch.nn.BatchNorm2d)
    assert net.blocks[0].conv.bias is None  # BatchNorm's shift makes the conv bias redundant
    with pytest.raises(ValueError, match="act"):
        models.DeepNet(act="swish")
    with pytest.raises(ValueError, match="depth"):
        models.DeepNet(depth=0)


def test_residual_block_function_is_the_module_in_training_mode():
    block = models.ResidualBlock(4)
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 2), block.norm.bias.uniform_(-1, 1)
    x = torch.randn(3, 4, 5, 5)
    got = models.residual_block(x, block.conv.weight, block.norm.weight, block.norm.bias)
    assert torch.allclose(got, block(x), atol=1e-5)
    with pytest.raises(ValueError, match="conv_weight"):
        models.residual_block(x, torch.zeros(4, 4, 1, 1), block.norm.weight, block.norm.bias)
    with pytest.raises(ValueError, match="bn_bias"):
        models.residual_block(x, block.conv.weight, block.norm.weight, torch.zeros(3))


def test_deepnet_builds_its_blocks_from_a_given_block():
    torch.manual_seed(0)
    net = models.DeepNet(depth=3, width=8, block=models.PreActBlock)
    assert len(net.blocks) == 3 and all(isinstance(b, models.PreActBlock) for b in net.blocks)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    torch.manual_seed(0)
    same = models.DeepNet(depth=3, width=8, block=lambda w: models.ResidualBlock(w, norm=True, residual=True))
    torch.manual_seed(0)
    flags = models.DeepNet(depth=3, width=8, norm=True, residual=True)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(same(x), flags(x))  # the same blocks, drawn in the same order
    with pytest.raises(ValueError, match="either block or norm"):
        models.DeepNet(block=models.PreActBlock, norm=True)
    with pytest.raises(TypeError, match="block must be a function"):
        models.DeepNet(block="preact")
    with pytest.raises(TypeError, match="must return an nn.Module"):
        models.DeepNet(depth=2, width=4, block=lambda w: None)


def test_preact_block_keeps_the_identity_path():
    block = models.PreActBlock(4).eval()
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(block(x), x + block.conv(torch.relu(block.norm(x))))
    with torch.no_grad():
        block.conv.weight.zero_()
    assert torch.equal(block(x), x)  # a zero branch: exactly the identity, negatives included


def test_plain_deep_net_gradient_vanishes_and_fixes_restore_it():
    """The effect lab 01 is about, at initialisation: the first layer's gradient in a deep plain
    ReLU net is many orders of magnitude below the last; BN + residual keeps them comparable."""
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    ratios = {}
    for name, kw in {"plain": {}, "bn+res": {"norm": True, "residual": True}}.items():
        torch.manual_seed(0)
        net = models.DeepNet(depth=20, width=8, **kw)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        norms = list(train.grad_norms(net).values())
        ratios[name] = norms[1] / norms[-2]  # first block vs last block
    assert ratios["plain"] < 1e-4
    assert ratios["bn+res"] > 1e-2


def test_fit_fp16_uses_a_grad_scaler_on_cpu_too(monkeypatch):
    made = []
    real = train.compat.grad_scaler

    def spy(device, enabled=True):
        made.append((device, enabled))
        return real(device, enabled=enabled)

    monkeypatch.setattr(train.compat, "grad_scaler", spy)
    config.seed_everything(0)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    h = train.fit(models.SmallCNN(), [(x, y)], epochs=30, lr=3e-3, precision="fp16", progress=False)
    assert made == [("cpu", True)]
    assert h["train_loss"][-1] < 0.5 * h["train_loss"][0]


def test_fit_runs_a_caller_supplied_update():
    """A lab that teaches the optimizer step itself plugs it in whole; fit still logs and evaluates."""
    calls = []

    def my_update(model, batch, opt, scaler):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        calls.append(scaler.is_enabled())
        return loss.detach(), {"seen": float(len(y))}

    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    h = train.fit(torch.nn.Linear(4, 3), loader, loader, epochs=2, update=my_update, precision="fp16",
                  loss_scaling=False, progress=False)
    assert len(calls) == 8 and not any(calls)  # loss_scaling=False turned the fp16 scaler off
    assert h["train_seen"] == [16.0, 16.0] and len(h["val_acc"]) == 2
    with pytest.raises(TypeError, match="update"):
        train.fit(torch.nn.Linear(4, 3), loader, epochs=1, update=3, progress=False)


def _cnn(k=3):
    torch.manual_seed(0)
    return models.SmallCNN(1, k, 4)


def _pairs(y, n=4):
    return [(torch.rand(n, 1, 8, 8), y)]


def _history(rows, value=0.5):
    h = train.History()
    for i in range(rows):
        h.append(epoch=i + 1, val_acc=value)
    return h


@pytest.mark.parametrize("make, word", [
    (lambda: models.count_params(None), "model"),
    (lambda: models.count_params(_cnn(), trainable_only="no"), "trainable_only"),
    (lambda: models.MLP(64, hidden=8), "hidden"),
    (lambda: models.MLP(64, hidden=None), "hidden"),
    (lambda: models.batch_norm(None), "x"),
    (lambda: models.batch_norm(torch.rand(2, 2, 4, 4), eps=-1.0), "eps"),
    (lambda: models.batch_norm(torch.rand(2, 2, 4, 4), eps=float("nan")), "eps"),
    (lambda: models.residual_block(None, torch.rand(2, 2, 3, 3), torch.rand(2), torch.rand(2)), "x"),
    (lambda: models.residual_block(torch.rand(2, 2, 4, 4), None, torch.rand(2), torch.rand(2)), "conv_weight"),
    (lambda: models.residual_block(torch.rand(2, 2, 4, 4), torch.rand(2, 2, 3, 3), torch.rand(2), torch.rand(2), -1.0), "eps"),
    (lambda: models.ResidualBlock(4, norm="no"), "norm"),
    (lambda: _cnn()(torch.rand(4, 3, 8, 8)), "x"),
    (lambda: _cnn()(torch.rand(1, 8, 8)), "x"),
    (lambda: models.MLP(64, (8,), 3)(torch.rand(4, 1, 4, 4)), "x"),
    (lambda: train.autocast("gpu"), "device"),
    (lambda: train.to_device([torch.zeros(1)], "gpu"), "device"),
    (lambda: _history(0).best("val_acc"), "History"),
    (lambda: _history(2, float("nan")).best("val_acc"), "val_acc"),
    (lambda: _history(0).last("val_acc"), "History"),
    (lambda: train.grad_norms(None), "model"),
    (lambda: train.make_optimizer("adam", _cnn(), lr=-1.0), "lr"),
    (lambda: train.make_optimizer("adam", _cnn(), lr="x"), "lr"),
    (lambda: train.make_optimizer("adam", None, lr=0.1), "model"),
    (lambda: train.accuracy(None, torch.zeros(4, dtype=torch.long)), "logits"),
    (lambda: train.accuracy(torch.rand(4, 3), torch.zeros(4) + 0.5), "y"),
    (lambda: train.accuracy(torch.rand(4, 3), torch.tensor([0, 1, 2, -1])), "y"),
    (lambda: train.accuracy(torch.rand(4, 3), [0, 1, 2, 0]), "y"),
    (lambda: train.accuracy(torch.rand(0, 3), torch.zeros(0, dtype=torch.long)), "y"),
    (lambda: train.classify(_cnn(), (torch.rand(4, 1, 8, 8),)), "batch"),
    (lambda: train.classify(_cnn(), (torch.rand(4, 1, 8, 8), torch.zeros(4))), "y"),
    (lambda: train.classify(_cnn(), (torch.rand(4, 1, 8, 8), torch.full((4,), 5))), "batch"),
    (lambda: train.predict(_cnn(), []), "loader"),
    (lambda: train.predict(_cnn(), None), "loader"),
    (lambda: train.predict(_cnn(), [(torch.rand(4, 1, 8, 8),)]), "loader"),
    (lambda: train.predict(_cnn(), _pairs(torch.zeros(4, dtype=torch.long)), device="gpu"), "device"),
    (lambda: train.evaluate(_cnn(), _pairs(torch.full((4,), 5))), "loader"),
])
def test_bad_arguments_are_named(make, word):
    with pytest.raises((ValueError, TypeError), match=word):
        make()


@pytest.mark.parametrize("kwargs, word", [
    ({"grad_clip": -1.0}, "grad_clip"), ({"grad_clip": float("nan")}, "grad_clip"), ({"grad_clip": "1"}, "grad_clip"),
    ({"opt": None}, "opt"), ({"scaler": None}, "scaler"), ({"step": None}, "step"),
])
def test_optimizer_step_rejects_bad_arguments(kwargs, word):
    model = _cnn()
    args = {"model": model, "batch": (torch.rand(4, 1, 8, 8), torch.arange(4) % 3),
            "opt": torch.optim.SGD(model.parameters(), 0.1), "scaler": compat.grad_scaler("cpu", enabled=False)}
    with pytest.raises((ValueError, TypeError), match=word):
        train.optimizer_step(**{**args, **kwargs})


def _raw_loader(x, y):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


@pytest.mark.parametrize("kwargs, word", [
    ({"grad_clip": "1"}, "grad_clip"), ({"monitor": 123}, "monitor"), ({"evaluate_fn": 123}, "evaluate_fn"),
    ({"evaluate_fn": lambda model: 5}, "evaluate_fn"), ({"device": "gpu"}, "device"), ({"train": None}, "train"),
    ({"train": _raw_loader(torch.rand(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))}, "train"),
    ({"train": []}, "train"), ({"train": _raw_loader(torch.rand(8, 1, 8, 8), torch.full((8,), 5))}, "train"),
    ({"val": []}, "val"), ({"model": None}, "model"),
])
def test_fit_names_bad_arguments_and_never_hangs(kwargs, word):
    args = {"model": _cnn(), "train": _pairs(torch.arange(4) % 3), "steps": 2, "progress": False}
    with pytest.raises((ValueError, TypeError), match=word):
        train.fit(**{**args, **kwargs})


def test_deep_mlp_blocks_compute_what_they_say():
    torch.manual_seed(0)
    x = torch.randn(5, 1, 4, 4)
    res = models.DeepMLP(in_features=16, width=6, depth=3, norm=False, residual=True).eval()
    h = res.stem(x)
    for block in res.blocks:
        h = torch.relu(h + block["linear"](h))  # the skip: x + linear(x)
    assert torch.allclose(res(x), res.head(h), atol=1e-6)
    plain = models.DeepMLP(in_features=16, width=6, depth=3, norm=False, residual=False).eval()
    plain.load_state_dict(res.state_dict())
    h = plain.stem(x)
    for block in plain.blocks:
        h = torch.relu(block["linear"](h))
    assert torch.allclose(plain(x), plain.head(h), atol=1e-6)
    bn = models.DeepMLP(in_features=16, width=6, depth=2)
    assert isinstance(bn.blocks[0]["norm"], torch.nn.BatchNorm1d) and bn.blocks[0]["linear"].bias is None
    assert bn(x).shape == (5, 10) and models.DeepMLP(16, 6, 2)(x.flatten(1)).shape == (5, 10)


def test_deep_mlp_plain_gradient_vanishes_and_bn_residual_restore_it():
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    ratios = {}
    for name, kw in {"plain": {"norm": False, "residual": False}, "bn+res": {}}.items():
        torch.manual_seed(0)
        net = models.DeepMLP(in_features=64, width=32, depth=20, **kw)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        ratios[name] = net.stem[1].weight.grad.norm().item() / net.head.weight.grad.norm().item()
    assert ratios["plain"] < 1e-4
    assert ratios["bn+res"] > 1e-2


@pytest.mark.parametrize("make, word", [
    (lambda: models.DeepMLP(in_features=0), "in_features"),
    (lambda: models.DeepMLP(width=1.5), "width"),
    (lambda: models.DeepMLP(depth=0), "depth"),
    (lambda: models.DeepMLP(norm="yes"), "norm"),
    (lambda: models.DeepMLP(residual=1), "residual"),
    (lambda: models.DeepMLP(act="swish"), "act"),
    (lambda: models.DeepMLP(num_classes=0), "num_classes"),
    (lambda: models.DeepMLP(in_features=16)(torch.zeros(2, 15)), "x"),
    (lambda: models.DeepMLP(in_features=16)([0.0] * 16), "x"),
])
def test_deep_mlp_names_bad_arguments(make, word):
    with pytest.raises((ValueError, TypeError), match=word):
        make()
