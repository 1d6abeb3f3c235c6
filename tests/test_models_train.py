import math

import pytest
import torch
from torch import nn

from lablib.core import config
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
    h = train.fit(models.SmallCNN(), loader, epochs=60, lr=3e-3, progress=False)
    assert len(h) == 60
    assert h["train_loss"][-1] < 0.1 * h["train_loss"][0]
    assert h.last("train_acc") == 1.0
    assert math.isnan(h.last("val_acc"))


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


def test_fit_with_bf16_autocast_and_custom_loss():
    config.seed_everything(0)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    h = train.fit(models.SmallCNN(), [(x, y)], epochs=30, lr=3e-3, amp="bf16", progress=False)
    assert h["train_loss"][-1] < 0.5 * h["train_loss"][0]
    calls = []

    def loss(model, xb, yb):
        calls.append(len(xb))
        return nn.functional.cross_entropy(model(xb), yb)

    h = train.fit(models.SmallCNN(), [(x, y)], epochs=2, compute_loss=loss, progress=False)
    assert calls == [32, 32] and math.isnan(h.last("train_acc"))


def test_fit_rejects_bad_arguments():
    m, loader = nn.Linear(2, 2), [(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))]
    for kwargs, word in [({"epochs": 0}, "epochs"), ({"lr": 0}, "lr"), ({"schedule": "step"}, "schedule"),
                         ({"grad_clip": -1}, "grad_clip"), ({"optimizer": "lion"}, "optimizer"), ({"amp": "int8"}, "amp")]:
        with pytest.raises(ValueError, match=word):
            train.fit(m, loader, progress=False, **kwargs)


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
    h = train.fit(models.SmallCNN(), [(x, y)], epochs=30, lr=3e-3, amp="fp16", progress=False)
    assert made == [("cpu", True)]
    assert h["train_loss"][-1] < 0.5 * h["train_loss"][0]
