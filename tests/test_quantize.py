import onnx
import pytest
import torch
from torch import nn

from lablib.deploy import onnx_export
from lablib.methods import quantize
from lablib.nets import models


class Wide(nn.Module):
    """A Linear-heavy net on 8x8 images: almost all of its file is weights."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random-weight Wide net exported once, and its three INT8 versions."""
    torch.manual_seed(0)
    model = Wide().eval()
    folder = tmp_path_factory.mktemp("q")
    src = folder / "fp32.onnx"
    with onnx_export.quiet():
        onnx_export.onnx_export(model, torch.rand(2, 1, 8, 8), src)
    calib = torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    out = {"fp32": src, "dynamic": quantize.dynamic(src, folder / "dyn.onnx")}
    for fmt in quantize.FORMATS:
        out[fmt] = quantize.static(src, folder / f"{fmt}.onnx", calib, fmt=fmt)
    return model, out


def _ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_files_are_at_least_3x_smaller(files):
    _, f = files
    for kind in ("dynamic", "qdq", "qoperator"):
        assert quantize.file_size(f["fp32"]) >= 3 * quantize.file_size(f[kind]), kind


def test_int8_outputs_close_to_fp32(files):
    model, f = files
    x = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
    for kind in ("dynamic", "qdq", "qoperator"):
        got = onnx_export.ort_predict(onnx_export.session(f[kind]), x)
        assert (got - ref).abs().max().item() < 0.15 * ref.abs().max().item(), kind  # random logits: small, near-tied
        assert (got.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.85, kind


def test_graph_formats(files):
    _, f = files
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(f["qdq"])
    assert "Gemm" in _ops(f["qdq"]) or "MatMul" in _ops(f["qdq"])  # the float op stays, wrapped
    qop = _ops(f["qoperator"])
    assert qop & {"QGemm", "QLinearMatMul", "QLinearConv"}, qop
    assert "DequantizeLinear" not in _ops(f["dynamic"]) and "DynamicQuantizeLinear" in _ops(f["dynamic"])


def test_static_cnn_has_qlinearconv(tmp_path):
    src = tmp_path / "cnn.onnx"
    with onnx_export.quiet():
        onnx_export.onnx_export(models.SmallCNN(width=4).eval(), torch.rand(2, 1, 8, 8), src)
    dst = quantize.static(src, tmp_path / "q.onnx", torch.rand(8, 1, 8, 8), fmt="qoperator")
    assert "QLinearConv" in _ops(dst)


def test_reader_yields_batches_then_none_and_rewinds():
    x = torch.rand(10, 1, 8, 8)
    reader = quantize.ImageReader(x, input_name="pixels", batch_size=4)
    feeds = []
    while (feed := reader.get_next()) is not None:
        feeds.append(feed)
    assert [list(f) for f in feeds] == [["pixels"]] * 3
    assert [f["pixels"].shape[0] for f in feeds] == [4, 4, 2]
    assert feeds[0]["pixels"].dtype.name == "float32"
    assert torch.equal(torch.from_numpy(feeds[2]["pixels"]), x[8:])
    reader.rewind()
    assert reader.get_next()["pixels"].shape == (4, 1, 8, 8)


def test_bad_inputs_raise(tmp_path, files):
    _, f = files
    with pytest.raises(ValueError, match="fmt"):
        quantize.static(f["fp32"], tmp_path / "x.onnx", torch.rand(4, 1, 8, 8), fmt="int4")
    with pytest.raises(ValueError, match="not a file"):
        quantize.dynamic(tmp_path / "missing.onnx", tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="empty"):
        quantize.static(f["fp32"], tmp_path / "x.onnx", torch.empty(0, 1, 8, 8))
    with pytest.raises(TypeError, match="calibration"):
        quantize.ImageReader([[0.0]])
    with pytest.raises(TypeError, match="src"):
        quantize.dynamic(123, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="scale"):
        quantize.quantize_tensor(torch.ones(3), 0.0)
    with pytest.raises(ValueError, match="bits"):
        quantize.symmetric_scale(torch.ones(3), bits=1)
    for bits in (0, 1, 8.5, 17, True):  # bits=0 used to give -0.5 as a "quantized" value
        with pytest.raises(ValueError, match="bits"):
            quantize.quantize_tensor(torch.ones(3), 0.1, bits=bits)
    for zp in (0.5, 128, -129, True):  # a fraction is off the integer grid; 128 is outside int8
        with pytest.raises(ValueError, match="zero_point"):
            quantize.quantize_tensor(torch.ones(3), 0.1, zero_point=zp)
    with pytest.raises(ValueError, match="zero_point"):
        quantize.dequantize(torch.ones(3), 0.1, zero_point=0.5)


def test_quantize_dequantize_roundtrip():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.26, 1.0, 3.0])
    scale = quantize.symmetric_scale(x[:-1]).item()  # max |x| = 1 -> 1/127
    assert scale == pytest.approx(1 / 127)
    q = quantize.quantize_tensor(x, scale)
    assert q.tolist() == [-127, -64, 0, 33, 127, 127]  # 3.0 clips to the top of the range
    err = (quantize.dequantize(q, scale)[:-1] - x[:-1]).abs().max().item()
    assert err <= scale / 2 + 1e-7
    assert quantize.quantize_tensor(torch.tensor([0.0]), 0.1, zero_point=5).item() == 5


def test_fake_quantize_straight_through_and_qat_freeze():
    x = torch.randn(50, requires_grad=True)
    y = quantize.fake_quantize(x, bits=4)
    scale = quantize.symmetric_scale(x, 4)
    assert torch.allclose(y / scale, torch.round(y / scale), atol=1e-4)  # on the 4-bit grid
    assert len(torch.unique(y.detach())) <= 15
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(50))  # straight through
    model = quantize.qat(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), bits=4)
    out = model(torch.randn(3, 8))
    out.sum().backward()
    assert model[0].parametrizations.weight.original.grad is not None
    quantize.freeze(model)
    w = model[0].weight
    assert isinstance(w, nn.Parameter) and len(torch.unique(w.detach())) <= 15
    with pytest.raises(TypeError):
        quantize.qat("not a model")


def test_tensor_scale_per_channel_and_its_validation():
    w = torch.tensor([[1.0, -0.25], [0.005, 0.02]])
    scale = quantize.symmetric_scale(w, 8, per_channel=True)
    assert scale.shape == (2, 1)
    assert torch.allclose(scale.squeeze(1), torch.tensor([1 / 127, 0.02 / 127]))
    assert quantize.quantize_tensor(w, scale).tolist() == [[127, -32], [32, 127]]  # each row uses its own grid
    assert quantize.symmetric_scale(torch.zeros(3, 4), per_channel=True).min() > 0  # the floor
    with pytest.raises(ValueError, match="per_channel"):
        quantize.symmetric_scale(torch.tensor(1.0), per_channel=True)
    for bad in (0.0, -1.0, float("nan"), torch.tensor([0.1, 0.0]), torch.tensor([])):
        with pytest.raises(ValueError, match="scale"):
            quantize.quantize_tensor(w, bad)
    with pytest.raises(TypeError, match="scale"):
        quantize.quantize_tensor(w, "0.1")
    with pytest.raises(ValueError, match="bits"):
        quantize.symmetric_scale(w, bits=True)


def test_per_channel_fake_quantize_beats_per_tensor_on_uneven_channels():
    w = torch.cat([torch.randn(1, 32) * 10, torch.randn(7, 32) * 0.1]).requires_grad_()
    per_tensor = quantize.fake_quantize(w, 4)
    per_channel = quantize.fake_quantize(w, 4, per_channel=True)
    err_t, err_c = (per_tensor - w).abs()[1:].mean(), (per_channel - w).abs()[1:].mean()
    assert err_c < err_t / 5  # the small channels get a fine grid of their own
    for row in per_channel.detach():
        assert len(torch.unique(row)) <= 15
    per_channel.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight through


def test_affine_params_use_the_whole_grid_and_keep_zero_exact():
    relu = torch.tensor([0.0, 0.5, 1.0, 2.55])
    scale, zero_point = quantize.affine_params(relu, 8)
    assert scale == pytest.approx(2.55 / 255) and zero_point == -128
    q = quantize.quantize_tensor(relu, scale, zero_point)
    assert q.min().item() == -128 and q.max().item() == 127  # every level available is used
    assert quantize.dequantize(q[:1], scale, zero_point).item() == 0.0  # zero exactly representable
    scale, zero_point = quantize.affine_params(torch.tensor([-1.0, 3.0]), 8)
    assert scale == pytest.approx(4 / 255) and zero_point == round(-128 + 255 / 4)
    assert isinstance(scale, float) and isinstance(zero_point, int)
    scale, zero_point = quantize.affine_params(torch.tensor([-2.0, -1.0]), 4)  # 0 joins the range
    assert scale == pytest.approx(2 / 15) and zero_point == 7
    assert quantize.affine_params(torch.zeros(3))[0] > 0
    with pytest.raises(ValueError, match="empty"):
        quantize.affine_params(torch.tensor([]))
    with pytest.raises(ValueError, match="bits"):
        quantize.affine_params(torch.ones(2), 1)


def test_qat_runs_the_fake_quantizer_it_is_given():
    calls = []

    def halve(w, bits):
        calls.append(bits)
        return w / 2

    model = quantize.qat(nn.Sequential(nn.Linear(4, 3)), bits=3, fake=halve)
    raw = model[0].parametrizations.weight.original.detach().clone()
    assert torch.allclose(model[0].weight, raw / 2) and calls and set(calls) == {3}
    quantize.freeze(model)
    assert torch.allclose(model[0].weight, raw / 2)
    with pytest.raises(TypeError, match="fake"):
        quantize.qat(nn.Linear(2, 2), fake="round")
    with pytest.raises(ValueError, match="bits"):
        quantize.qat(nn.Linear(2, 2), bits=1)


@pytest.mark.parametrize("int8_kernel", [True, False], ids=["int8-weights", "uint8-fallback"])
def test_dynamic_cnn_runs_on_this_ort_and_falls_back_to_uint8(tmp_path, monkeypatch, int8_kernel):
    """Conv layers become ConvInteger; older ORT (1.23) has no int8-weight kernel for it, so
    dynamic() writes uint8 weights there. Both branches must give a file that runs."""
    if int8_kernel and not quantize.ort_conv_integer_int8_weights():
        pytest.skip("this ONNX Runtime has no ConvInteger kernel for int8 weights")
    monkeypatch.setattr(quantize, "ort_conv_integer_int8_weights", lambda: int8_kernel)
    torch.manual_seed(0)
    model = models.SmallCNN(width=8).eval()
    with onnx_export.quiet():
        src = onnx_export.onnx_export(model, torch.rand(2, 1, 8, 8), tmp_path / "cnn.onnx")
    path = quantize.dynamic(src, tmp_path / "dyn.onnx")
    graph = onnx.load(str(path)).graph
    assert "ConvInteger" in {n.op_type for n in graph.node}
    weights = {i.data_type for i in graph.initializer if i.name.endswith("_quantized")}
    assert weights == {onnx.TensorProto.INT8 if int8_kernel else onnx.TensorProto.UINT8}
    x = torch.rand(4, 1, 8, 8)
    got = onnx_export.ort_predict(onnx_export.session(path), x)
    assert (got - model(x).detach()).abs().max() < 0.1


@pytest.mark.parametrize("x", [torch.tensor([1.0, float("inf")]), torch.tensor([1.0, float("nan")]), torch.empty(0)])
def test_no_scale_from_a_tensor_without_a_finite_range(x):
    with pytest.raises(ValueError, match="x"):
        quantize.symmetric_scale(x)
    with pytest.raises(ValueError, match="x"):
        quantize.symmetric_scale(x.reshape(-1, 1), per_channel=True)
    with pytest.raises(ValueError, match="x"):
        quantize.affine_params(x)


@pytest.mark.parametrize("content", [b"", b"not onnx"])
def test_damaged_model_files_are_named(tmp_path, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match="bad.onnx"):
        quantize.dynamic(bad, tmp_path / "q.onnx")
    with pytest.raises(ValueError, match="bad.onnx"):
        quantize.static(bad, tmp_path / "q.onnx", torch.rand(4, 1, 8, 8))
    assert not (tmp_path / "q.onnx").exists()


def test_more_bad_inputs_name_the_argument(tmp_path, files):
    _, f = files
    cases = [
        (lambda: quantize.dynamic(f["fp32"], None), "dst"),
        (lambda: quantize.static(f["fp32"], tmp_path / "q.onnx", None), "calibration_images"),
        (lambda: quantize.static(f["fp32"], tmp_path / "q.onnx", torch.rand(4, 3, 8, 8)), "calibration_images"),
        (lambda: quantize.static(f["fp32"], tmp_path / "q.onnx", torch.rand(4, 8, 8)), "calibration_images"),
        (lambda: quantize.ImageReader(torch.rand(4, 8, 8)), "images"),
        (lambda: quantize.ImageReader(torch.rand(4, 1, 8, 8), input_name=123), "input_name"),
        (lambda: quantize.FakeQuant(bits=0), "bits"),
        (lambda: quantize.FakeQuant(bits="8"), "bits"),
        (lambda: quantize.FakeQuant(fn=123), "fn"),
        (lambda: quantize.freeze(None), "model"),
    ]
    for call, word in cases:
        with pytest.raises((ValueError, TypeError), match=word):
            call()
    assert not (tmp_path / "q.onnx").exists()
