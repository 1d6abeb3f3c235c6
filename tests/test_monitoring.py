"""lablib.methods.monitoring: per-layer gradient norms and update ratios, the alarms, the system
metrics, and TensorBoard event files written and read back only where asked."""

import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from lablib.methods import monitoring
from lablib.nets import train


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _backward(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(5, 4, generator=g), torch.randint(0, 2, (5,), generator=g)
    nn.functional.cross_entropy(model(x), y).backward()


# --- gradient norms, update ratios ---------------------------------------------------------------


def test_grad_norms_are_each_weights_gradient_norm_biases_skipped():
    model = _model()
    _backward(model)
    got = train.grad_norms(model)  # the norms the lab's monitor is checked against (keys: layer names)
    assert list(got) == ["0", "2"]
    assert got["0"] == pytest.approx(model[0].weight.grad.norm().item())
    assert got["2"] == pytest.approx(model[2].weight.grad.norm().item())


def test_grad_norms_before_any_backward_is_empty():
    assert train.grad_norms(_model()) == {}


def test_total_grad_norm_is_what_clip_grad_norm_returns():
    model = _model()
    _backward(model)
    got = monitoring.total_grad_norm(model)
    expected = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e9).item()
    assert got == pytest.approx(expected, rel=1e-5)
    squares = sum(p.grad.pow(2).sum().item() for p in model.parameters())
    assert got == pytest.approx(math.sqrt(squares), rel=1e-6)


def test_snapshot_is_a_detached_copy():
    model = _model()
    snap = monitoring.snapshot(model)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(snap["0"], model[0].weight)
    assert not snap["0"].requires_grad and set(snap) == {"0", "2"}


def test_update_ratios_of_one_sgd_step_is_lr_times_grad_over_weight():
    model = _model()
    _backward(model)
    before = monitoring.snapshot(model)
    grads = {k.removesuffix(".weight"): p.grad.clone() for k, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    got = monitoring.update_ratios(before, monitoring.snapshot(model))
    for name in ("0", "2"):
        expected = (0.1 * grads[name]).norm() / before[name].norm()
        assert got[name] == pytest.approx(expected.item(), rel=1e-5)


def test_update_ratio_of_an_unchanged_weight_is_zero_and_a_doubled_one_is_one():
    w = torch.randn(3, 3)
    assert monitoring.update_ratios({"w": w}, {"w": w.clone()}) == {"w": 0.0}
    assert monitoring.update_ratios({"w": w}, {"w": 2 * w})["w"] == pytest.approx(1.0)


@pytest.mark.parametrize("call, name", [
    (lambda: monitoring.total_grad_norm(None), "model"),
    (lambda: monitoring.snapshot([1]), "model"),
    (lambda: monitoring.update_ratios([1], {}), "before"),
    (lambda: monitoring.update_ratios({}, {"w": 1.0}), "after"),
    (lambda: monitoring.update_ratios({"w": torch.ones(2)}, {"v": torch.ones(2)}), "before"),
    (lambda: monitoring.update_ratios({"w": torch.ones(2)}, {"w": torch.ones(3)}), "after"),
    (lambda: monitoring.update_ratios({}, {}, eps=-1), "eps"),
    (lambda: monitoring.update_ratios({}, {}, eps=math.nan), "eps"),
])
def test_signals_refuse_bad_input_by_name(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


# --- alarms --------------------------------------------------------------------------------------


def test_first_nonfinite():
    assert monitoring.first_nonfinite([1.0, 0.5, 0.4]) is None
    assert monitoring.first_nonfinite([1.0, math.nan, math.inf]) == 1
    assert monitoring.first_nonfinite([1.0, 2.0, -math.inf]) == 2
    assert monitoring.first_nonfinite([]) is None


def test_first_explosion_against_the_running_median():
    norms = [1.0] * 5 + [9.0, 11.0, 1.0]
    assert monitoring.first_explosion(norms, factor=10, window=5) == 6  # 9 < 10 x 1, 11 > 10
    assert monitoring.first_explosion(norms, factor=20, window=5) is None
    assert monitoring.first_explosion([50.0, 1.0], factor=10, window=5) is None  # no history yet
    assert monitoring.first_explosion([1.0, 1.0, 3.0], factor=10, window=5, limit=2.5) == 2  # absolute limit
    # the median shrugs off a single earlier spike: the jump after it is still caught
    assert monitoring.first_explosion([1, 100, 1, 1, 1, 20], factor=10, window=5) == 5


def test_first_stall_compares_window_means():
    falling = [1.0 / (1 + i) for i in range(40)]
    assert monitoring.first_stall(falling, window=10, min_improvement=0.01) is None
    flat = falling[:20] + [falling[19]] * 20
    # windows [20..29] vs [10..19]: the flat part is below the earlier window's mean, still improving;
    # windows [21..30] vs [11..20] ... until the previous window is flat too
    got = monitoring.first_stall(flat, window=10, min_improvement=0.01)
    assert got is not None and 20 <= got < 40
    window_mean = lambda a, b: sum(flat[a:b]) / (b - a)  # noqa: E731
    assert window_mean(got - 9, got + 1) > 0.99 * window_mean(got - 19, got - 9)
    before = got - 1
    assert window_mean(before - 9, before + 1) <= 0.99 * window_mean(before - 19, before - 9)
    assert monitoring.first_stall([1.0, 2.0], window=1, min_improvement=0.5) == 1  # a rise is a stall
    assert monitoring.first_stall([1.0] * 5, window=3) is None  # needs 2 windows


def test_first_gap_needs_patience_evaluations_in_a_row():
    train = [0.5, 0.9, 1.0, 1.0, 1.0, 1.0]
    val = [0.5, 0.7, 0.9, 0.8, 0.8, 0.8]
    assert monitoring.first_gap(train, val, max_gap=0.15, patience=2) == 4  # gaps .2 .1 .2 .2: the 2nd run of 2 ends at 4
    assert monitoring.first_gap(train, val, max_gap=0.15, patience=1) == 1
    assert monitoring.first_gap(train, val, max_gap=0.25, patience=1) is None


def test_early_stopping_best_and_stop():
    losses = [1.0, 0.8, 0.7, 0.71, 0.69, 0.75, 0.8, 0.9]
    assert monitoring.early_stopping(losses, patience=3) == (4, 7)
    assert monitoring.early_stopping(losses, patience=3, min_delta=0.05) == (2, 5)  # 0.69 is not 0.05 better
    assert monitoring.early_stopping(losses, patience=10) == (4, None)
    assert monitoring.early_stopping([], patience=2) == (None, None)


def test_alarms_stream_agrees_with_the_functions_and_fires_once():
    norms = [1.0] * 30 + [50.0, 60.0] + [1.0] * 10
    losses = [1.0 / (1 + i) for i in range(30)] + [0.03] * 12
    alarms = monitoring.Alarms(factor=10, window=20, stall_window=5, min_improvement=0.01)
    alerts = [a for k, (loss, n) in enumerate(zip(losses, norms, strict=True)) for a in alarms.on_step(k, loss, n)]
    assert [a.kind for a in alerts].count("explosion") == 1
    assert alarms.fired["explosion"].step == monitoring.first_explosion(norms, 10, 20) == 30
    assert alarms.fired["stall"].step == monitoring.first_stall(losses, 5, 0.01)
    assert "ALERT [explosion] at step 30" in str(alarms.fired["explosion"])


def test_alarms_catch_nonfinite_and_keep_it_out_of_the_histories():
    alarms = monitoring.Alarms(window=2)
    assert alarms.on_step(0, 1.0, 1.0) == []
    (alert,) = alarms.on_step(1, math.nan, 1.0)
    assert alert.kind == "nonfinite" and alert.step == 1
    assert alarms.on_step(2, torch.tensor(math.inf), 1.0) == []  # already fired
    assert alarms.losses == [1.0]


def test_alarms_gap():
    alarms = monitoring.Alarms(max_gap=0.1, patience=2)
    assert alarms.on_eval(10, 0.9, 0.85) == []
    assert alarms.on_eval(20, 1.0, 0.8) == []
    (alert,) = alarms.on_eval(30, 1.0, 0.85)
    assert alert.kind == "gap" and alert.step == 30


def test_a_healthy_run_raises_no_alarm():
    alarms = monitoring.Alarms(window=10, stall_window=10)
    for k in range(200):
        assert alarms.on_step(k, 2.0 * 0.98**k, 1.0 + 0.1 * math.sin(k)) == []
    assert alarms.fired == {}


@pytest.mark.parametrize("call, name", [
    (lambda: monitoring.first_nonfinite("1, 2"), "losses"),
    (lambda: monitoring.first_nonfinite([1.0, "2"]), "losses"),
    (lambda: monitoring.first_explosion([1.0, math.nan]), "norms"),
    (lambda: monitoring.first_explosion([1.0], factor=0.5), "factor"),
    (lambda: monitoring.first_explosion([1.0], window=0), "window"),
    (lambda: monitoring.first_explosion([1.0], limit=-1), "limit"),
    (lambda: monitoring.first_stall([1.0], window=2.5), "window"),
    (lambda: monitoring.first_stall([1.0], min_improvement=1.0), "min_improvement"),
    (lambda: monitoring.first_stall(None), "losses"),
    (lambda: monitoring.first_gap([1.0], [1.0, 1.0]), "train"),
    (lambda: monitoring.first_gap([1.0], [True]), "val"),
    (lambda: monitoring.first_gap([1.0], [1.0], max_gap=-0.1), "max_gap"),
    (lambda: monitoring.first_gap([1.0], [1.0], patience=0), "patience"),
    (lambda: monitoring.early_stopping([1.0], patience=0), "patience"),
    (lambda: monitoring.early_stopping([1.0], min_delta=math.inf), "min_delta"),
    (lambda: monitoring.early_stopping({"a": 1}), "val_losses"),
    (lambda: monitoring.Alarms(factor="10"), "factor"),
    (lambda: monitoring.Alarms(stall_window=0), "stall_window"),
    (lambda: monitoring.Alarms(max_gap=math.nan), "max_gap"),
    (lambda: monitoring.Alarms().on_step(1.5, 1.0), "step"),
    (lambda: monitoring.Alarms().on_step(1, "1.0"), "loss"),
    (lambda: monitoring.Alarms().on_step(1, 1.0, [2.0]), "grad_norm"),
    (lambda: monitoring.Alarms().on_eval(1, 1.2, 0.5), "train_acc"),
    (lambda: monitoring.Alarms().on_eval(1, 1.0, None), "val_acc"),
])
def test_alarms_refuse_bad_input_by_name(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


# --- system metrics ------------------------------------------------------------------------------


def test_system_metrics_on_the_cpu():
    first = monitoring.system_metrics()
    sum(i * i for i in range(200_000))  # some CPU work between the two calls
    got = monitoring.system_metrics("cpu")
    assert set(got) == {"memory/rss_mib", "cpu/process_percent", "cpu/system_percent"} == set(first)
    assert 10 < got["memory/rss_mib"] < 1e6
    assert got["cpu/process_percent"] >= 0 and 0 <= got["cpu/system_percent"] <= 100


def test_gpu_utilisation_says_why_when_it_cannot_read():
    value, reason = monitoring.gpu_utilisation(0)
    assert (value is None) == bool(reason)
    if value is not None:
        assert 0 <= value <= 100
    assert monitoring.gpu_utilisation(10_000)[0] is None


@pytest.mark.parametrize("call, name", [
    (lambda: monitoring.system_metrics("gpu0"), "device"),
    (lambda: monitoring.gpu_utilisation(-1), "index"),
    (lambda: monitoring.gpu_utilisation("0"), "index"),
])
def test_system_metrics_refuse_bad_input_by_name(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_system_metrics_on_cuda_without_a_gpu_is_refused():
    with pytest.raises(ValueError, match="device"):
        monitoring.system_metrics("cuda")


# --- TensorBoard event files ---------------------------------------------------------------------


def _write_run(logdir: Path, values=(3.0, 2.0, 1.5)):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(logdir))
    try:
        for step, v in enumerate(values):
            writer.add_scalar("loss/train", v, step * 10)
            writer.add_scalar("acc/train", 1 / v, step * 10)
    finally:
        writer.close()


def test_event_files_land_only_where_asked_and_read_back(tmp_path, monkeypatch):
    home, tmp, project = tmp_path / "home", tmp_path / "tmp", tmp_path / "project"
    for d in (home, tmp, project):
        d.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    logdir = project / "data" / "tensorboard" / "run"
    _write_run(logdir)
    _write_run(logdir / "second", values=(5.0, 4.0))
    got = monitoring.read_scalars(logdir)
    assert got["loss/train"] == ([0, 10, 20], [3.0, 2.0, 1.5])
    assert got["acc/train"][0] == [0, 10, 20]
    assert got["acc/train"][1] == pytest.approx([1 / 3, 0.5, 1 / 1.5])
    assert got["second/loss/train"] == ([0, 10], [5.0, 4.0])
    written = {p.relative_to(project).parts[:3] for p in project.rglob("*") if p.is_file()}
    assert written == {("data", "tensorboard", "run")}
    assert list(home.rglob("*")) == [] and list(tmp.rglob("*")) == []


def test_read_scalars_refuses_a_folder_without_events(tmp_path):
    with pytest.raises(ValueError, match="logdir"):
        monitoring.read_scalars(tmp_path)
    with pytest.raises(ValueError, match="logdir"):
        monitoring.read_scalars(tmp_path / "missing")
    with pytest.raises(TypeError, match="logdir"):
        monitoring.read_scalars(None)


def test_read_scalars_refuses_a_corrupt_event_file(tmp_path):
    _write_run(tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "events.out.tfevents.1.host").write_bytes(b"not an event file")
    assert monitoring.read_scalars(tmp_path / "good")["loss/train"][1] == [3.0, 2.0, 1.5]
    with pytest.raises(ValueError, match="logdir"):
        monitoring.read_scalars(tmp_path)


def test_served_tags_serves_the_run_and_leaves_nothing_behind(tmp_path, monkeypatch):
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), tmp.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    logdir = tmp_path / "data" / "tensorboard"
    _write_run(logdir / "run")
    server_tmp = tmp_path / "data" / "tensorboard-tmp"
    got = monitoring.served_tags(logdir, server_tmp, timeout=90)
    assert got == {"run": ["acc/train", "loss/train"]}
    assert not server_tmp.exists()
    assert list(home.rglob("*")) == [] and list(tmp.rglob("*")) == []
    assert not any(p.name.startswith("pid-") for p in Path(os.environ["TMPDIR"]).rglob("*"))


@pytest.mark.parametrize("kwargs, name", [
    (dict(logdir="missing", tmpdir="t"), "logdir"),
    (dict(logdir=".", tmpdir=None), "tmpdir"),
    (dict(logdir=".", tmpdir="t", timeout=0), "timeout"),
])
def test_served_tags_refuses_bad_input_by_name(tmp_path, monkeypatch, kwargs, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, TypeError), match=name):
        monitoring.served_tags(**kwargs)
    assert not (tmp_path / "t").exists()
