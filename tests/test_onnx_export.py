import logging
import warnings

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from lablib.core import compat
from lablib.data import datasets
from lablib.deploy import onnx_export
from lablib.nets import models


class TwoLayer(nn.Module):
    """A tiny MLP on 8x8 images: exports in about a second."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One SmallCNN exported once (dynamo exporter where available, dynamic batch)."""
    torch.manual_seed(0)
    model = models.SmallCNN(width=4).eval()
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    with onnx_export.quiet() as said:
        onnx_export.onnx_export(model, torch.rand(1, 1, 8, 8), path)
    return model, path, said


def test_inspect_reports_symbolic_batch_and_ops(exported):
    _, path, _ = exported
    info = onnx_export.inspect(path)
    onnx.checker.check_model(onnx.load(str(path)))
    batch, *rest = info["inputs"][0]["shape"]
    assert isinstance(batch, str) and batch  # a named, symbolic dim
    assert rest == [1, 8, 8]
    assert info["inputs"][0]["name"] == "input" and info["inputs"][0]["dtype"] == "float32"
    assert info["outputs"][0]["name"] == "output"
    assert isinstance(info["outputs"][0]["shape"][0], str) and info["outputs"][0]["shape"][1] == 10
    assert info["ops"]["Conv"] == 3 and info["ops"]["Relu"] == 3 and "Gemm" in info["ops"]
    assert info["nodes"] == sum(info["ops"].values())
    assert isinstance(info["opset"], int) and info["opset"] >= 13
    assert info["size_kb"] > 0


def test_parity_at_several_batch_sizes(exported):
    model, path, _ = exported
    diffs = onnx_export.parity(model, path, batch_sizes=(1, 7, 64))
    assert set(diffs) == {1, 7, 64}
    assert all(0 <= d < 1e-4 for d in diffs.values()), diffs
    # with real data, through an existing session
    x = datasets.digits().test.x
    diffs = onnx_export.parity(model, onnx_export.session(path), [1, 7, 64], x=x)
    assert max(diffs.values()) < 1e-4
    assert not model.training


def test_parity_catches_a_different_model(exported):
    _, path, _ = exported
    other = models.SmallCNN(width=4)  # fresh weights: not what the file holds
    assert max(onnx_export.parity(other, path, [7]).values()) > 1e-3


def test_ort_predict_and_accuracy_match_eager(exported):
    model, path, _ = exported
    sess = onnx_export.session(path)
    x = torch.rand(5, 1, 8, 8)
    out = onnx_export.ort_predict(sess, x)
    assert isinstance(out, torch.Tensor) and out.shape == (5, 10)
    assert torch.allclose(out, model(x).detach(), atol=1e-4)
    ds = datasets.digits().test
    acc, predicted = onnx_export.ort_accuracy(sess, datasets.loader(ds, batch_size=50))
    with torch.no_grad():
        eager_pred = model(ds.x).argmax(1)
    assert predicted.shape == (len(ds),)
    assert (predicted == eager_pred).float().mean().item() > 0.99
    assert acc == pytest.approx((predicted == ds.y).float().mean().item())


def test_session_options_are_applied(exported):
    _, path, _ = exported
    for threads, level, enum in [(1, "disabled", "ORT_DISABLE_ALL"), (2, "extended", "ORT_ENABLE_EXTENDED"),
                                 (1, "all", "ORT_ENABLE_ALL")]:
        sess = onnx_export.session(path, threads=threads, level=level)
        got = onnx_export.describe_options(sess.get_session_options())
        assert got == {"intra_op_num_threads": threads, "graph_optimization_level": enum}
        assert sess.get_providers() == ["CPUExecutionProvider"]


def test_session_threads_follow_lab_threads(exported, monkeypatch):
    _, path, _ = exported
    monkeypatch.setenv("LAB_THREADS", "1")
    assert onnx_export.session(path).get_session_options().intra_op_num_threads == 1
    monkeypatch.delenv("LAB_THREADS")
    assert onnx_export.session(path).get_session_options().intra_op_num_threads == 0  # ORT's default


def test_optimised_graph_is_saved_and_fuses(exported, tmp_path):
    _, path, _ = exported
    out = tmp_path / "opt.onnx"
    onnx_export.session(path, level="extended", optimized_path=out)
    ops = onnx_export.inspect(out)["ops"]
    assert "com.microsoft.FusedConv" in ops and "Relu" not in ops  # Conv + Relu fused
    out = tmp_path / "none.onnx"
    onnx_export.session(path, level="disabled", optimized_path=out)
    # Even unoptimised, ORT turns Constant nodes (the TorchScript exporter's) into initializers.
    exported_ops = {k: v for k, v in onnx_export.inspect(path)["ops"].items() if k != "Constant"}
    assert onnx_export.inspect(out)["ops"] == exported_ops


def test_session_options_reference():
    opts = onnx_export.session_options(3, "basic")
    assert isinstance(opts, ort.SessionOptions)
    assert onnx_export.describe_options(opts) == {"intra_op_num_threads": 3, "graph_optimization_level": "ORT_ENABLE_BASIC"}
    assert onnx_export.session_options(None, "all").intra_op_num_threads == 0
    assert onnx_export.describe_options(None) is None
    assert set(onnx_export.LEVELS) >= {"disabled", "basic", "extended", "all"}


def test_export_and_run_matches_eager_and_keeps_the_file(tmp_path, capsys):
    torch.manual_seed(1)
    model = TwoLayer().eval()
    x = torch.rand(5, 1, 8, 8)
    out = onnx_export.export_and_run(model, x)  # a temporary file
    assert capsys.readouterr().out == "", "the exporter's progress lines are collected, not printed"
    assert isinstance(out, torch.Tensor) and out.shape == (5, 10)
    assert torch.allclose(out, model(x).detach(), atol=1e-5)
    for opset in (99, 6, 13.0, True):
        with pytest.raises(ValueError, match="opset must be an int in"):
            onnx_export.onnx_export(model, x, tmp_path / "never.onnx", opset=opset)
    path = tmp_path / "kept.onnx"
    out = onnx_export.export_and_run(model, x[:1], path, dynamo=False, opset=13)
    assert path.is_file() and onnx_export.inspect(path)["opset"] == 13
    assert torch.allclose(out, model(x[:1]).detach(), atol=1e-5)
    other = TwoLayer().eval()  # different weights: the output must differ, so the check can fail
    assert not torch.allclose(onnx_export.export_and_run(other, x), model(x).detach(), atol=1e-3)
    with pytest.raises(TypeError, match="x"):
        onnx_export.export_and_run(model, [[0.0]])


def test_quiet_collects_exporter_output_and_restores_logging(tmp_path, capsys):
    torch_onnx = logging.getLogger("torch.onnx")
    before = (list(torch_onnx.handlers), torch_onnx.propagate)
    with onnx_export.quiet() as said:
        print("progress line")
        logging.getLogger("torch.onnx.some_module").warning("a warning")
        logging.getLogger("onnxscript").info("below WARNING: dropped")
        warnings.warn("a python warning", UserWarning, stacklevel=1)
    assert capsys.readouterr().out == ""
    assert said.progress == ["progress line"]
    assert said.warnings == ["WARNING torch.onnx.some_module: a warning", "UserWarning: a python warning"]
    assert said.matching("PYTHON") == ["UserWarning: a python warning"]
    assert (list(torch_onnx.handlers), torch_onnx.propagate) == before
    assert "progress lines" in said.summary()


def test_quiet_does_not_swallow_errors():
    with pytest.raises(RuntimeError, match="boom"), onnx_export.quiet():
        raise RuntimeError("boom")


def test_exported_model_was_quiet(exported):
    _, _, said = exported
    if onnx_export.dynamo_is_default():
        assert said.progress, "the dynamo exporter's progress lines were collected"


def test_torchscript_export_of_mlp_has_symbolic_batch(tmp_path):
    model = TwoLayer().eval()
    with onnx_export.quiet() as said:
        path = onnx_export.onnx_export(model, torch.rand(2, 1, 8, 8), tmp_path / "mlp.onnx", dynamo=False, opset=13)
    info = onnx_export.inspect(path)
    assert info["opset"] == 13
    assert isinstance(info["inputs"][0]["shape"][0], str)
    assert max(onnx_export.parity(model, path, [1, 3]).values()) < 1e-5
    assert said.matching("deprecat") or compat.TORCH < (2, 9)


def test_bad_inputs_name_the_argument(exported, tmp_path):
    model, path, _ = exported
    with pytest.raises(ValueError, match="path"):
        onnx_export.inspect(tmp_path / "missing.onnx")
    with pytest.raises(TypeError, match="path"):
        onnx_export.session(123)
    with pytest.raises(ValueError, match="provider 'nope' is unknown"):
        onnx_export.session(path, providers=["nope"])
    with pytest.raises(ValueError, match="providers"):
        onnx_export.session(path, providers=[])
    if not onnx_export.cuda_available():
        with pytest.raises(ValueError, match="onnxruntime-gpu"):
            onnx_export.session(path, providers="cuda")
    with pytest.raises(ValueError, match="level"):
        onnx_export.session(path, level="max")
    with pytest.raises(ValueError, match="threads"):
        onnx_export.session_options(-1)
    with pytest.raises(ValueError, match="batch_sizes"):
        onnx_export.parity(model, path, batch_sizes=[])
    with pytest.raises(ValueError, match="batch_sizes"):
        onnx_export.parity(model, path, batch_sizes=[1, 0])
    with pytest.raises(TypeError, match="batch_sizes"):
        onnx_export.parity(model, path, batch_sizes=7)
    with pytest.raises(ValueError, match="x has 3 rows"):
        onnx_export.parity(model, path, batch_sizes=[1, 7], x=torch.rand(3, 1, 8, 8))
    with pytest.raises(TypeError, match="model"):
        onnx_export.parity(lambda x: x, path)
    with pytest.raises(TypeError, match="sess"):
        onnx_export.ort_predict(str(path), torch.rand(1, 1, 8, 8))
    with pytest.raises(TypeError, match="x"):
        onnx_export.ort_predict(onnx_export.session(path), [[0.0]])
    with pytest.raises(TypeError, match="options"):
        onnx_export.describe_options({"threads": 1})


@pytest.mark.parametrize("content", [b"", b"hello", "truncated"])
def test_damaged_files_are_named(exported, tmp_path, content):
    _, path, _ = exported
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(path.read_bytes()[:200] if content == "truncated" else content)
    for load in (onnx_export.inspect, onnx_export.session):
        with pytest.raises(ValueError, match="bad.onnx"):
            load(bad)


def test_more_bad_inputs_name_the_argument(exported, tmp_path):
    model, path, _ = exported
    sess = onnx_export.session(path)
    x, out = torch.rand(2, 1, 8, 8), tmp_path / "m.onnx"
    cases = [
        (lambda: onnx_export.onnx_export(model, torch.rand(2, 3, 8, 8), out), "example"),
        (lambda: onnx_export.onnx_export(model, x, None), "path"),
        (lambda: onnx_export.onnx_export(model, x, out, input_name=1), "input_name"),
        (lambda: onnx_export.onnx_export(model, x, out, output_name=""), "output_name"),
        (lambda: onnx_export.session_options(100000), "threads"),
        (lambda: onnx_export.session_options("2"), "threads"),
        (lambda: onnx_export.provider_name(None), "provider"),
        (lambda: onnx_export.session(path, optimized_path=tmp_path), "optimized_path"),
        (lambda: onnx_export.ort_predict(sess, torch.rand(2, 3, 8, 8)), "x"),
        (lambda: onnx_export.ort_predict(sess, torch.rand(2, 8, 8)), "x"),
        (lambda: onnx_export.parity(model, None), "sess_or_path"),
        (lambda: onnx_export.parity(models.SmallCNN(in_channels=3, width=4), path), "model"),
        (lambda: onnx_export.parity(model, path, seed="0"), "seed"),
        (lambda: onnx_export.ort_accuracy(sess, None), "loader"),
        (lambda: onnx_export.ort_accuracy(sess, [(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 15]))]), "labels"),
    ]
    for call, word in cases:
        with pytest.raises((ValueError, TypeError), match=word):
            call()
    assert not (tmp_path / "m.onnx").exists()  # refused before anything was written


def test_session_creates_the_folder_of_optimized_path(exported, tmp_path):
    _, path, _ = exported
    out = tmp_path / "new" / "opt.onnx"
    onnx_export.session(path, optimized_path=out)
    assert out.is_file()
    assert onnx_export.describe_options(onnx_export.session_options(0))["intra_op_num_threads"] == 0
