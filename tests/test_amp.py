import warnings

import pytest
import torch
from torch import nn

from lablib.core import compat
from lablib.methods import amp
from lablib.nets import models, train


def test_cpu_bf16_autocast_runs_conv_and_linear_in_bf16_and_the_loss_in_fp32():
    model = models.SmallCNN(width=4)
    rows = amp.autocast_dtypes(model, torch.randn(3, 1, 8, 8), "cpu", "bf16", y=torch.tensor([0, 1, 2]))
    by_type = {}
    for _, kind, dtype in rows:
        by_type.setdefault(kind, set()).add(dtype)
    assert by_type["Conv2d"] == {"bfloat16"}
    assert by_type["Linear"] == {"bfloat16"}
    assert by_type["ReLU"] == {"bfloat16"}  # not on autocast's lists: follows its input
    assert by_type["cross_entropy"] == {"float32"}  # on the fp32 list
    assert [r[0] for r in rows][:2] == ["features.0", "features.1"]  # call order
    # fp32 means no autocast; and the hooks are removed afterwards
    assert {d for *_, d in amp.autocast_dtypes(model, torch.randn(2, 1, 8, 8), "cpu", "fp32")} == {"float32"}
    assert not any(m._forward_hooks for m in model.modules())


def test_mse_loss_is_kept_in_fp32_under_cpu_autocast():
    with train.autocast("cpu", torch.bfloat16):
        h = nn.Linear(4, 4)(torch.randn(2, 4))
        assert h.dtype == torch.bfloat16
        assert nn.functional.mse_loss(h, torch.zeros(2, 4)).dtype == torch.float32


def test_small_gradients_underflow_in_fp16_and_a_loss_scale_rescues_them():
    grads = torch.full((1000,), 1e-8)
    assert amp.underflow_fraction(grads, scale=1.0, dtype="fp16") == 1.0
    assert amp.underflow_fraction(grads, scale=2.0**16, dtype="fp16") == 0.0
    assert amp.underflow_fraction(grads, scale=1.0, dtype="bf16") == 0.0  # fp32's exponent range
    mixed = torch.tensor([1e-2, 1e-9, 0.0, 1e-3])  # zeros are not counted
    assert amp.underflow_fraction(mixed) == pytest.approx(1 / 3)
    assert amp.underflow_fraction(torch.zeros(5)) == 0.0


def test_grad_scaler_skips_a_step_with_inf_gradients_and_lowers_the_scale():
    scaler = compat.grad_scaler("cpu")
    assert scaler.is_enabled()  # torch.amp.GradScaler("cpu") works off CUDA
    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=1.0)
    before = scaler.get_scale()
    scaler.scale((p * float("inf")).sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.equal(p.detach(), torch.ones(3)), "the step with inf gradients must be skipped"
    assert scaler.get_scale() == before / 2
    opt.zero_grad()
    scaler.scale(p.sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.allclose(p.detach(), torch.zeros(3)), "a finite step is applied, unscaled"


def test_deprecated_cuda_scaler_warns_and_disables_itself_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("on a CUDA machine the old scaler stays enabled")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scaler = torch.cuda.amp.GradScaler()
    assert not scaler.is_enabled()
    assert any(issubclass(w.category, FutureWarning) for w in caught)


def test_train_step_lowers_the_loss_in_bf16_and_fp16():
    torch.manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    for dtype in ("bf16", "fp16", "fp32"):
        step = amp.step_fn(models.SmallCNN(width=4), x, y, "cpu", dtype, lr=1e-2)
        first = step().item()
        for _ in range(20):
            last = step().item()
        assert last < first, dtype
    timing = amp.train_step_ms(models.SmallCNN(width=4), x, y, "cpu", "bf16", warmup=0, repeats=2)
    assert timing.repeats == 2 and timing.median_ms > 0


def _two_steps(step, precision, scale_inputs=1.0):
    """Two steps of `step` on a fresh seeded MLP: the losses, the weights after, the loss scale."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = compat.grad_scaler("cpu", enabled=precision == "fp16")
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(2):
        x, y = torch.randn(8, 16, generator=g) * scale_inputs, torch.randint(0, 10, (8,), generator=g)
        losses.append(step(model, x, y, opt, scaler, "cpu", precision))
    return torch.stack(losses), [p.detach().clone() for p in model.parameters()], scaler.get_scale()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_train_step_is_the_step_fit_runs(precision):
    def fit_step(model, x, y, opt, scaler, device, precision):
        return train.optimizer_step(model, (x, y), opt, scaler, precision=precision)[0]

    for scale_inputs in (1.0, 100.0):
        losses, weights, scale = _two_steps(amp.train_step, precision, scale_inputs)
        fit_losses, fit_weights, fit_scale = _two_steps(fit_step, precision, scale_inputs)
        assert torch.equal(losses, fit_losses) and scale == fit_scale
        assert all(torch.equal(a, b) for a, b in zip(weights, fit_weights, strict=True))
    assert losses.dtype == torch.float32 and not losses.requires_grad


def test_train_step_runs_under_autocast_and_skips_fp16_overflow():
    fp32, _, _ = _two_steps(amp.train_step, "fp32")
    bf16, _, _ = _two_steps(amp.train_step, "bf16")
    assert not torch.equal(fp32, bf16), "bf16 must change the forward pass"
    assert torch.allclose(fp32, bf16, rtol=0.05)
    torch.manual_seed(0)
    initial = [p.detach() for p in nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10)).parameters()]
    # small inputs: both fp16 steps are applied, the scale stays
    _, weights, scale = _two_steps(amp.train_step, "fp16")
    assert scale == 65536.0 and not any(torch.equal(a, b) for a, b in zip(weights, initial, strict=True))
    # large inputs: the scaled fp16 gradients overflow, both steps are skipped, the scale halved twice
    _, weights, scale = _two_steps(amp.train_step, "fp16", scale_inputs=100.0)
    assert scale == 65536.0 / 4 and all(torch.equal(a, b) for a, b in zip(weights, initial, strict=True))


def test_supports():
    assert amp.supports("cpu", "fp32") and amp.supports("cpu", "bf16")
    assert amp.supports(torch.device("cpu"), torch.float16)
    assert amp.supports("cuda", "fp16") == torch.cuda.is_available()


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: amp.supports("tpu", "bf16"), "device"),
        (lambda: amp.supports("cpu", "int8"), "dtype"),
        (lambda: amp.supports("cpu", torch.int8), "dtype"),
        (lambda: amp.underflow_fraction(torch.ones(3), scale=0), "scale"),
        (lambda: amp.autocast_dtypes(models.SmallCNN(width=4), torch.randn(1, 1, 8, 8), "cpu", "half"), "dtype"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="grads"):
        amp.underflow_fraction([1e-8])
    with pytest.raises(TypeError, match="model"):
        amp.autocast_dtypes("net", torch.randn(1, 1, 8, 8), "cpu", "bf16")


def test_min_loss_scale_is_the_smallest_power_of_two_that_saves_every_gradient():
    grads = torch.tensor([1e-3, 1e-9, 0.0])
    scale = amp.min_loss_scale(grads)
    assert amp.underflow_fraction(grads, scale) == 0.0 and amp.underflow_fraction(grads, scale / 2) > 0
    assert amp.min_loss_scale(torch.tensor([1e-2, 1e-3])) == 1.0
    assert amp.min_loss_scale(torch.tensor([1e-20]), "bf16") == 1.0


def test_round_to_bf16_matches_torch_and_rounds_ties_to_even():
    x = torch.randn(10_000) * 10.0 ** torch.randint(-30, 30, (10_000,)).float()
    x = torch.cat([x, torch.tensor([0.0, -0.0, 1.0, -2.5, 3.4e38])])
    assert torch.equal(amp.round_to_bf16(x), x.to(torch.bfloat16).float())
    tie = torch.tensor([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8])  # exactly halfway between bf16 neighbours
    assert amp.round_to_bf16(tie).tolist() == [1.0, 1.0 + 4 * 2.0**-8]
    with pytest.raises(TypeError, match="x"):
        amp.round_to_bf16(torch.ones(2, dtype=torch.float64))


def test_round_to_bf16_keeps_every_nan_a_nan():
    # all-ones mantissas would carry into the sign bit (int32 overflow) and come out as 0 or inf
    patterns = [0x7FFFFFFF, 0x7F800001, 0x7FC00000, 0x7FBFFFFF, 0xFFFFFFFF, 0xFF800001, 0xFFC00000]
    x = torch.tensor(patterns, dtype=torch.int64).to(torch.int32).view(torch.float32)
    out = amp.round_to_bf16(x)
    assert torch.isnan(out).all(), out
    assert torch.equal(torch.signbit(out), torch.signbit(x))
    assert torch.equal(out.view(torch.int32) & 0xFFFF, torch.zeros(len(patterns), dtype=torch.int32))


def _step_inputs():
    model = models.SmallCNN(width=4)
    return model, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), torch.optim.SGD(model.parameters(), 0.1)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda m, x, y, o: amp.autocast_dtypes(m, torch.randn(4, 3, 8, 8), "cpu", "bf16"), ValueError, "x"),
        (lambda m, x, y, o: amp.autocast_dtypes(m, x, "cpu", "bf16", y=torch.zeros(5, dtype=torch.long)), ValueError, "y"),
        (lambda m, x, y, o: amp.autocast_dtypes(m, x, "gpu", "bf16"), ValueError, "device"),
        (lambda m, x, y, o: amp.train_step(m, None, y, o, compat.grad_scaler("cpu"), "cpu", "bf16"), TypeError, "x"),
        (lambda m, x, y, o: amp.train_step(m, x, y.float(), o, compat.grad_scaler("cpu"), "cpu", "bf16"), TypeError, "y"),
        (lambda m, x, y, o: amp.train_step(m, x, y, None, compat.grad_scaler("cpu"), "cpu", "bf16"), TypeError, "opt"),
        (lambda m, x, y, o: amp.train_step(m, x, y, o, None, "cpu", "bf16"), TypeError, "scaler"),
        (lambda m, x, y, o: amp.train_step(m, x, y, o, compat.grad_scaler("cpu"), "gpu", "bf16"), ValueError, "device"),
        (lambda m, x, y, o: amp.step_fn(m, x, y, "cpu", "fp32", lr=-1.0), ValueError, "lr"),
        (lambda m, x, y, o: amp.step_fn(m, x, y, "cpu", "fp32", lr=float("nan")), ValueError, "lr"),
        (lambda m, x, y, o: amp.step_fn(m, x, None, "cpu", "fp32"), TypeError, "y"),
    ],
)
def test_bad_batches_and_steps_raise_errors_naming_the_argument(call, error, name):
    model, x, y, opt = _step_inputs()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(error, match=rf"\b{name}\b"):
        call(model, x, y, opt)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # no step taken
