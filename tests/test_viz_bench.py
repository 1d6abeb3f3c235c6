import time

import pytest
import torch

from lablib.core import bench, viz
from lablib.nets.train import History


def _history(vals):
    h = History()
    for i, v in enumerate(vals, 1):
        h.append(epoch=i, train_loss=1 / i, val_acc=v)
    return h


def test_curves_one_panel_per_metric_one_line_per_run():
    fig = viz.curves({"a": _history([0.1, 0.5]), "b": _history([0.2, 0.9])}, metrics=("train_loss", "val_acc"))
    axes = fig.get_axes()
    assert len(axes) == 2
    assert [len(ax.get_lines()) for ax in axes] == [2, 2]
    assert list(axes[1].get_lines()[1].get_ydata()) == [0.2, 0.9]
    with pytest.raises(ValueError, match="histories"):
        viz.curves({})


def test_grad_norms_log_scale_and_order():
    fig = viz.per_layer({"plain": {"l1": 1e-12, "l2": 1e-6, "l3": 1e-2}})
    ax = fig.get_axes()[0]
    assert ax.get_yscale() == "log"
    assert list(ax.get_lines()[0].get_ydata()) == [1e-12, 1e-6, 1e-2]


def test_image_grid_layout_and_errors():
    fig = viz.image_grid(torch.rand(12, 1, 8, 8), labels=list("abcdefghijkl"), ncols=5)
    axes = fig.get_axes()
    assert len(axes) == 15  # 3 rows of 5
    assert axes[0].get_title() == "a" and len(axes[0].get_images()) == 1
    assert len(axes[14].get_images()) == 0
    assert len(viz.image_grid(torch.rand(2, 3, 8, 8)).get_axes()) == 2
    with pytest.raises(ValueError, match="images must be"):
        viz.image_grid(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="labels has 1"):
        viz.image_grid(torch.rand(2, 1, 8, 8), labels=["a"])


def test_confusion_counts():
    fig = viz.confusion([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], ["a", "b", "c"])
    assert fig.matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    with pytest.raises(ValueError, match="differ in shape"):
        viz.confusion([0, 1], [0], ["a", "b"])
    # -1 * 2 + 2 = 0 would count as a correct class-0 prediction; 1.7 would be truncated to 1
    with pytest.raises(ValueError, match="y_true holds labels -1..1"):
        viz.confusion([-1, 1], [2, 1], ["a", "b"])
    with pytest.raises(ValueError, match="y_pred holds labels 0..2"):
        viz.confusion([0, 1], [2, 0], ["a", "b"])
    with pytest.raises(TypeError, match="y_true must hold integer"):
        viz.confusion([0.0, 1.7], [0, 1], ["a", "b"])


def test_bars_and_lines():
    fig = viz.bars({"fp32": 2.0, "int8": 0.5}, ylabel="ms", log=True)
    ax = fig.get_axes()[0]
    assert [p.get_height() for p in ax.patches] == [2.0, 0.5] and ax.get_yscale() == "log"
    fig = viz.lines({"no fine-tune": ([0.3, 0.9], [0.98, 0.5]), "fine-tuned": ([0.3, 0.9], [0.98, 0.97])}, "sparsity", "acc")
    assert len(fig.get_axes()[0].get_lines()) == 2
    with pytest.raises(ValueError):
        viz.bars({}, ylabel="x")
    fig = viz.lines({"a": ([1, 2], [3, 4])}, "x", "y", reference={"dense": 3.5})
    ref_line = fig.get_axes()[0].get_lines()[1]
    assert list(ref_line.get_ydata()) == [3.5, 3.5] and ref_line.get_linestyle() == "--"


def test_grouped_bars_one_colour_per_series():
    fig = viz.grouped_bars({"dense": {"raw": 4.5, "zip": 4.2}, "sparse": {"raw": 4.5, "zip": 0.8}}, ylabel="MB")
    ax = fig.get_axes()[0]
    assert [round(p.get_height(), 2) for p in ax.patches] == [4.5, 4.5, 4.2, 0.8]  # series by series
    assert [t.get_text() for t in ax.get_xticklabels()] == ["dense", "sparse"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["raw", "zip"]
    with pytest.raises(ValueError):
        viz.grouped_bars({}, ylabel="x")


def test_latency_warms_up_and_repeats():
    calls = []
    t = bench.latency(lambda: calls.append(1) or time.sleep(0.002), warmup=2, repeats=5, cuda=False)
    assert len(calls) == 7 and t.repeats == 5 and len(t.times_ms) == 5
    assert t.p10_ms <= t.median_ms <= t.p90_ms
    assert t.median_ms >= 1.5  # it slept 2 ms per call: the clock saw it
    assert bench.throughput(lambda: time.sleep(0.002), items=10, warmup=0, repeats=3, cuda=False) < 10 / 0.0015
    with pytest.raises(ValueError, match="repeats"):
        bench.latency(lambda: None, repeats=0)
    with pytest.raises(TypeError, match="fn must be callable"):
        bench.latency(3)
    with pytest.raises(ValueError, match="items"):
        bench.throughput(lambda: None, items=0)


def test_compare_interleaves_rounds_and_keeps_the_best():
    order = []
    slow_once = iter([0.02] + [0.001] * 100)

    def a():
        order.append("a")
        time.sleep(next(slow_once))

    def b():
        order.append("b")

    out = bench.compare({"a": a, "b": b}, rounds=2, warmup=0, repeats=1, cuda=False)
    assert order == ["a", "b", "a", "b"]  # interleaved, not all of a first
    assert out["a"].median_ms < 10  # the disturbed first round of a was discarded
    with pytest.raises(ValueError, match="rounds"):
        bench.compare({"a": a}, rounds=0)
    with pytest.raises(ValueError, match="fns"):
        bench.compare({})


def test_peak_memory_sees_an_allocation():
    def allocate():
        block = bytearray(200 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
        time.sleep(0.05)
        del block

    out = bench.peak_memory(allocate)
    assert out["cpu_rise_mb"] > 150
    assert out["cpu_peak_mb"] >= out["cpu_rise_mb"]


def test_table_aligns_and_formats(capsys):
    from lablib import table

    table({"eager": {"batch 1": 0.2, "batch 64": 3.014}, "ORT": {"batch 1": 0.04, "batch 64": None}}, title="ms")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ms"
    assert lines[1].split() == ["batch", "1", "batch", "64"]
    assert lines[3].split() == ["eager", "0.2", "3.014"] and lines[4].split() == ["ORT", "0.04", "—"]
    assert len({len(line) for line in lines[2:4]}) == 1  # numbers right-aligned under their header
    table([{"tau": 0.5, "acc": 0.889}, {"tau": 0.95, "acc": 0.883}], columns=["acc"])
    assert capsys.readouterr().out.split() == ["acc", "-----", "0.889", "0.883"]
    with pytest.raises(ValueError, match="rows"):
        table([])
    with pytest.raises(ValueError, match="rows"):
        table([1, 2])


@pytest.mark.parametrize("ratio, word", [(1.3, "faster"), (1.24, "about as fast"), (0.81, "about as fast"),
                                         (0.79, "slower"), (5.0, "faster")])
def test_speed_verdict_needs_a_margin(ratio, word):
    assert bench.verdict(ratio) == word


def test_compared_puts_the_verdict_in_a_sentence():
    assert [bench.compared(r) for r in (2.0, 1.0, 0.5)] == ["faster than", "about as fast as", "slower than"]
    assert bench.compared(1.4, margin=1.5) == "about as fast as"


def test_speed_verdict_rejects_nonsense():
    with pytest.raises(ValueError, match="ratio"):
        bench.verdict(0)
    with pytest.raises(ValueError, match="margin"):
        bench.verdict(1.5, margin=1.0)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("call, match", [
    (lambda: viz.curves({"run": "not a history"}), "histories"),
    (lambda: viz.curves({"run": History()}), "histories"),
    (lambda: viz.curves({"run": _history([0.5])}, metrics=[]), "metrics"),
    (lambda: viz.per_layer({"run": 5}), "norms"),
    (lambda: viz.per_layer({"run": {"l1": -1.0}}), "norms"),
    (lambda: viz.per_layer({"run": {"l1": NAN}}), "norms"),
    (lambda: viz.image_grid(torch.rand(0, 1, 8, 8)), "images"),
    (lambda: viz.image_grid(torch.rand(4, 1, 8, 8) * 255), "images"),
    (lambda: viz.image_grid(torch.full((1, 1, 8, 8), NAN)), "images"),
    (lambda: viz.image_grid(torch.rand(4, 1, 8, 8), ncols=0), "ncols"),
    (lambda: viz.image_grid(torch.rand(4, 1, 8, 8), ncols="3"), "ncols"),
    (lambda: viz.image_grid(torch.rand(4, 1, 8, 8), size=0.0), "size"),
    (lambda: viz.confusion(None, [0, 1], ["a", "b"]), "y_true"),
    (lambda: viz.confusion([0, 1], [0, 1], 3), "classes"),
    (lambda: viz.bars({"a": "x"}, ylabel="y"), "values"),
    (lambda: viz.bars({"a": NAN}, ylabel="y"), "values"),
    (lambda: viz.bars([1, 2], ylabel="y"), "values"),
    (lambda: viz.bars({"a": 0.0}, ylabel="y", log=True), "values"),
    (lambda: viz.lines({"a": [1, 2, 3]}, "x", "y"), "series"),
    (lambda: viz.lines({"a": ([1, 2], [1])}, "x", "y"), "series"),
    (lambda: viz.lines({"a": ([1, 2], [1, 2])}, "x", "y", reference=[1]), "reference"),
    (lambda: viz.lines({"a": ([0, 1], [1, 2])}, "x", "y", logx=True), "logx"),
    (lambda: viz.grouped_bars({"g": {}}, ylabel="y"), "groups"),
    (lambda: viz.grouped_bars({"g": 5}, ylabel="y"), "groups"),
    (lambda: viz.grouped_bars({"g": {"s": "x"}}, ylabel="y"), "groups"),
    (lambda: viz.grouped_bars({"g": {"s": INF}}, ylabel="y"), "groups"),
])
def test_viz_refuses_bad_input_naming_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_viz_accepts_what_the_labs_pass():
    fig = viz.image_grid((torch.rand(2, 1, 8, 8) * 255).byte())  # 0..255 pixels are scaled, not all white
    assert fig.get_axes()[0].get_images()[0].get_array().max() <= 1
    fig = viz.bars({"a": torch.tensor(0.5), "b": 0}, ylabel="acc")  # a 0-d tensor, a zero bar
    assert [p.get_height() for p in fig.get_axes()[0].patches] == [0.5, 0.0]
    assert len(viz.lines({"a": (torch.arange(1, 4), [1, 2, 3])}, "x", "y", logx=True).get_axes()) == 1
    assert len(viz.per_layer({"run": {"l1": 0.0, "l2": 1e-3}}).get_axes()) == 1


@pytest.mark.parametrize("call, match", [
    (lambda: bench.latency(lambda: None, repeats=2, cuda="yes"), "cuda"),
    (lambda: bench.compare([lambda: None], rounds=1), "fns"),
    (lambda: bench.compare({"a": 1}, rounds=1), "fns"),
    (lambda: bench.peak_memory(lambda: None, interval_s=-1.0), "interval_s"),
    (lambda: bench.peak_memory(lambda: None, interval_s=NAN), "interval_s"),
    (lambda: bench.peak_memory(lambda: None, interval_s="0.1"), "interval_s"),
    (lambda: bench.peak_memory(lambda: None, interval_s=1e6), "interval_s"),  # would sleep 11 days
])
def test_bench_refuses_bad_input_naming_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_latency_cuda_true_needs_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cuda"):
        bench.latency(lambda: None, repeats=1, cuda=True)


@pytest.mark.parametrize("call, match", [
    (lambda: __import__("lablib").table({"r": 1}), "rows"),
    (lambda: __import__("lablib").table([{"a": 1}], title=123), "title"),
    (lambda: __import__("lablib").table([{"a": 1}], columns="ab"), "columns"),
])
def test_table_refuses_bad_input_naming_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
