import io
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lablib import show
from lablib.core import compat, env
from lablib.core.show import source
from lablib.deploy import onnx_export
from lablib.methods import quantize
from lablib.nets import models


def test_version_tuple():
    assert compat.version_tuple("2.13.0+cpu") == (2, 13)
    assert compat.version_tuple("2.5.1") == (2, 5)
    with pytest.raises(ValueError, match="MAJOR.MINOR"):
        compat.version_tuple("nightly")


def test_grad_scaler_is_current_api_and_disabled_off_cuda():
    s = compat.grad_scaler("cpu", enabled=False)
    assert isinstance(s, torch.amp.GradScaler) and not s.is_enabled()
    loss = torch.tensor(2.0)
    assert s.scale(loss) is loss  # disabled: a no-op


def test_load_round_trip_and_refuses_pickled_objects(tmp_path):
    sd = models.SmallCNN().state_dict()
    torch.save(sd, tmp_path / "w.pt")
    back = compat.torch_load(tmp_path / "w.pt")
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    torch.save({"obj": object()}, tmp_path / "bad.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported"):
        compat.torch_load(tmp_path / "bad.pt")


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_both_exporters_dynamic_batch(tmp_path, dynamo):
    if dynamo and not onnx_export.dynamo_exporter_available():
        pytest.skip("dynamo exporter not available in this torch")
    torch.manual_seed(0)
    model = models.SmallCNN().eval()
    path = onnx_export.onnx_export(model, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx", dynamo=dynamo)
    onnx.checker.check_model(onnx.load(str(path)))
    assert not (tmp_path / "m.onnx.data").exists()  # a single self-contained file
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "input"
    for batch in (1, 7):
        x = torch.randn(batch, 1, 8, 8)
        out = sess.run(None, {"input": x.numpy()})[0]
        assert np.abs(out - model(x).detach().numpy()).max() < 1e-4
    assert not model.training


def test_default_exporter_follows_torch(monkeypatch):
    monkeypatch.setattr(onnx_export, "dynamo_exporter_available", lambda: True)
    monkeypatch.setattr(compat, "TORCH", (2, 5))
    assert not onnx_export.dynamo_is_default()  # torch 2.5-2.8: the dynamo exporter was a preview
    monkeypatch.setattr(compat, "TORCH", (2, 9))
    assert onnx_export.dynamo_is_default()
    monkeypatch.setattr(onnx_export, "dynamo_exporter_available", lambda: False)  # no onnxscript
    assert not onnx_export.dynamo_is_default()


def test_onnx_export_bad_input(tmp_path):
    with pytest.raises(TypeError, match="model"):
        onnx_export.onnx_export(lambda x: x, torch.zeros(1), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="example"):
        onnx_export.onnx_export(models.SmallCNN(), [1], tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="opset"):
        onnx_export.onnx_export(models.SmallCNN(), torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx", opset=3)


def test_env_report_covers_requirements():
    checks = env.report()
    names = [c.name for c in checks]
    for wanted in ("Python", "torch", "CUDA", "transformers", "diffusers", "onnxruntime", "jupytext", "matplotlib"):
        assert wanted in names
    assert all(c.status in ("OK", "FAIL", "WARN", "INFO") for c in checks)
    torch_check = checks[names.index("torch")]
    assert torch_check.found == __import__("torch").__version__


def test_env_version_logic_and_missing_package(monkeypatch):
    assert env._version_ok("2.13.0+cpu", "2.5") and not env._version_ok("2.4.1", "2.5")
    assert not env._version_ok("garbage", "1.0")
    monkeypatch.setattr(env, "REQUIREMENTS", [("nonexistent-pkg", "nonexistent_pkg_xyz", "1.0", "a test")])
    checks = env.report()
    assert checks[-1].status == "FAIL" and "needed for a test" in checks[-1].note
    assert env.print_report(checks) is False


def test_cuda_check_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    c = env.cuda_check()
    assert c.status == "INFO" and "cpu scale" in c.note


def test_stamp_and_line():
    s = env.stamp()
    assert s["scale"] == "smoke" and s["versions"]["torch"] == torch.__version__
    assert isinstance(s["cpu_flags"], list) and s["date"].endswith("+00:00")
    assert env.line().startswith("LAB_SCALE=smoke | ")


def test_speed_verdict_bands():
    ref = env.REFERENCE_TRAIN_IMG_PER_S
    assert "keeps up" in env.speed_verdict(ref)
    assert "4x as long" in env.speed_verdict(ref / 4)
    assert "too slow" in env.speed_verdict(ref / 20)
    with pytest.raises(ValueError, match="train_img_per_s"):
        env.speed_verdict(0)


def test_show_prints_source_with_location(capsys):
    show(models.count_params)
    out = capsys.readouterr().out
    assert out.startswith("# lablib/nets/models.py, line ") and "def count_params" in out
    assert "class SmallCNN" in source(models.SmallCNN)
    with pytest.raises(TypeError, match="show"):
        source(3)


@pytest.mark.parametrize("obj", [123, None, len])
def test_show_names_obj(obj):
    with pytest.raises(TypeError, match="obj must be"):
        source(obj)
    with pytest.raises(TypeError, match="obj must be"):
        show(obj)


@pytest.mark.parametrize("call, match", [
    (lambda: compat.version_tuple(None), "version"),
    (lambda: compat.grad_scaler("gpu"), "device"),
    (lambda: compat.grad_scaler(1), "device"),
    (lambda: compat.grad_scaler("cpu", enabled="no"), "enabled"),
    (lambda: compat.torch_load(None), "path"),
])
def test_compat_refuses_bad_input_naming_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def _fifo(p):
    os.mkfifo(p)
    return p


@pytest.mark.parametrize("make", [
    lambda p: p,  # missing
    lambda p: p.write_bytes(b"") and p or p,  # empty
    lambda p: p.write_text("not a checkpoint") and p,
    lambda p: p.write_bytes(_checkpoint_bytes()[:100]) and p,  # truncated
    _fifo,  # would block the read forever
], ids=["missing", "empty", "text", "truncated", "fifo"])
def test_torch_load_names_a_bad_file(tmp_path, make):
    path = make(tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="weights.pt"):
        compat.torch_load(path)


def _checkpoint_bytes():
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("map_location, error", [("gpu", ValueError), (5, TypeError)])
def test_torch_load_checks_map_location(tmp_path, map_location, error):
    (tmp_path / "w.pt").write_bytes(_checkpoint_bytes())
    with pytest.raises(error, match="map_location"):
        compat.torch_load(tmp_path / "w.pt", map_location=map_location)
    assert torch.equal(compat.torch_load(tmp_path / "w.pt", map_location=torch.device("cpu"))["w"], torch.ones(3))


def test_int8_dynamic_quantizes_linear_layers_or_says_why():
    torch.manual_seed(0)
    model = models.MLP(64, hidden=(32,), num_classes=10).eval()
    quantized, path = quantize.int8_dynamic(model)
    if quantized is None:
        assert "available" in path
        return
    x = torch.randn(16, 1, 8, 8)
    assert type(quantized.net[1]) is not torch.nn.Linear  # replaced by a quantized Linear
    assert type(model.net[1]) is torch.nn.Linear  # the original is untouched
    assert (quantized(x) - model(x)).abs().max().item() < 0.05
    with pytest.raises(TypeError, match="model"):
        quantize.int8_dynamic("mlp")


def test_validate_batch_and_labels_name_the_argument():
    from lablib.core import validate

    x = torch.rand(3, 2)
    assert validate.batch("x", x) is x
    for bad, kind in ((torch.rand(0, 2), ValueError), (torch.rand(3), ValueError), (torch.zeros(3, 2, dtype=torch.long), ValueError),
                      (torch.full((3, 2), float("nan")), ValueError), ([[1.0]], TypeError)):
        with pytest.raises(kind, match="x"):
            validate.batch("x", bad)
    y = torch.tensor([0, 2, 1])
    assert validate.labels("y", y, n=3, classes=3) is y
    for bad, kw in ((torch.tensor([0, 3]), {"classes": 3}), (torch.tensor([-1, 0]), {}), (torch.tensor([0.0]), {}),
                    (torch.tensor([0, 1]), {"n": 3})):
        with pytest.raises(ValueError, match="y"):
            validate.labels("y", bad, **kw)
    with pytest.raises(TypeError, match="y"):
        validate.labels("y", [0, 1])
