"""lablib.methods.efficient (the separable convolution, its parameter and FLOP counts) and
lablib.methods.transfer (a tiny ConvNeXt, saved and loaded offline), and datasets.select_classes."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lablib.data import datasets
from lablib.methods import efficient, transfer
from lablib.nets.models import count_params


def test_separable_conv_matches_grouped_convolutions_and_their_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 9, 7, generator=g, requires_grad=True)
    dw = torch.randn(5, 1, 3, 3, generator=g, requires_grad=True)
    pw = torch.randn(4, 5, 1, 1, generator=g, requires_grad=True)
    for padding in (0, 1, 2):
        got = efficient.separable_conv(x, dw, pw, padding=padding)
        want = F.conv2d(F.conv2d(x, dw, padding=padding, groups=5), pw)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        grads = torch.autograd.grad(got.square().sum(), (x, dw, pw))
        wants = torch.autograd.grad(want.square().sum(), (x, dw, pw))
        for a, b in zip(grads, wants, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_separable_conv_with_identity_pointwise_is_the_per_channel_filter():
    x = torch.zeros(1, 2, 5, 5)
    x[0, 1, 2, 2] = 1.0  # an impulse in channel 1 only
    dw = torch.arange(18.0).view(2, 1, 3, 3)
    out = efficient.separable_conv(x, dw, torch.eye(2).view(2, 2, 1, 1), padding=1)
    assert out[0, 0].abs().sum() == 0  # channel 0 never sees channel 1
    torch.testing.assert_close(out[0, 1, 1:4, 1:4], dw[1, 0].flip(0, 1))  # convolution = correlation with a flipped kernel


@pytest.mark.parametrize("bad, message", [
    (dict(x=torch.randn(2, 3, 5)), "x must be a float tensor"),
    (dict(depthwise_weight=torch.randn(4, 1, 3, 3)), "depthwise_weight must have shape \\(3, 1, k, k\\)"),
    (dict(pointwise_weight=torch.randn(2, 4, 1, 1)), "pointwise_weight must have shape"),
    (dict(padding=-1), "padding"),
    (dict(x=torch.randn(1, 3, 2, 2)), "smaller than the 3x3 kernel"),
])
def test_separable_conv_refuses_bad_input(bad, message):
    args = dict(x=torch.randn(1, 3, 5, 5), depthwise_weight=torch.randn(3, 1, 3, 3), pointwise_weight=torch.randn(2, 3, 1, 1))
    with pytest.raises((ValueError, TypeError), match=message):
        efficient.separable_conv(**(args | bad))


def test_separable_block_is_mobilenets_layer_and_counts_match_the_formula():
    block = efficient.SeparableBlock(8, 16, stride=2)
    assert block.depthwise.groups == 8 and block.depthwise.stride == (2, 2) and block.pointwise.kernel_size == (1, 1)
    assert block(torch.randn(2, 8, 9, 9)).shape == (2, 16, 5, 5)
    convs = block.depthwise.weight.numel() + block.pointwise.weight.numel()
    assert convs == efficient.conv_params(8, 16, 3, separable=True) == 9 * 8 + 8 * 16
    assert count_params(nn.Conv2d(8, 16, 3, bias=False)) == efficient.conv_params(8, 16, 3)
    assert efficient.conv_params(256, 256, separable=True) / efficient.conv_params(256, 256) == pytest.approx(1 / 256 + 1 / 9)


@pytest.mark.parametrize("separable", [False, True])
def test_conv_flops_is_what_torchs_counter_counts_forward(separable):
    c_in, c_out, n, side = 6, 10, 3, 7
    layer = (nn.Sequential(nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False), nn.Conv2d(c_in, c_out, 1, bias=False))
             if separable else nn.Conv2d(c_in, c_out, 3, padding=1, bias=False))
    counts = efficient.count_flops(layer, torch.randn(n, c_in, side, side))
    assert counts["total"] == efficient.conv_flops(n, c_in, c_out, side, side, separable=separable)
    assert counts["aten.convolution"] == counts["total"]


def test_count_flops_backward_is_twice_forward_for_a_plain_layer():
    layer, x = nn.Conv2d(4, 4, 3, padding=1, bias=False), torch.randn(2, 4, 6, 6, requires_grad=True)
    fwd = efficient.count_flops(layer, x)["total"]
    assert efficient.count_flops(layer, x, backward=True)["total"] == 3 * fwd


@pytest.mark.parametrize("call, message", [
    (lambda: efficient.conv_params(0, 4), "c_in"),
    (lambda: efficient.conv_params(4, 4, separable="yes"), "separable"),
    (lambda: efficient.conv_flops(1, 4, 4, 0, 4), "h"),
    (lambda: efficient.count_flops("model", torch.randn(1)), "model"),
    (lambda: efficient.count_flops(nn.Linear(2, 2)), "inputs"),
    (lambda: efficient.count_flops(nn.Linear(2, 2), [1.0, 2.0]), "inputs\\[0\\]"),
    (lambda: efficient.count_flops(nn.Linear(2, 2), torch.randn(1, 2), backward=1), "backward"),
    (lambda: efficient.SeparableBlock(4, 0), "c_out"),
])
def test_efficient_refuses_bad_arguments(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_select_classes_relabels_in_the_order_given():
    ds = datasets.digits().test
    five = datasets.select_classes(ds, ["7", "5"])
    assert five.classes == ["7", "5"]
    assert sorted(five.y.unique().tolist()) == [0, 1]
    assert five.counts() == [ds.counts()[7], ds.counts()[5]]
    sevens = ds.x[ds.y == 7]
    torch.testing.assert_close(five.x[five.y == 0], sevens)
    for bad in (["7", "7"], ["x"], []):
        with pytest.raises(ValueError, match="classes"):
            datasets.select_classes(ds, bad)
    with pytest.raises(TypeError, match="classes"):
        datasets.select_classes(ds, "7")


def test_tiny_convnext_trains_a_step_and_refuses_bad_shapes():
    model = transfer.tiny_convnext(num_labels=3, image_size=16, widths=(8, 16), depths=(1, 1), patch_size=4)
    assert type(model).__name__ == "ConvNextForImageClassification"
    out = model(pixel_values=torch.rand(2, 1, 16, 16), labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.item() > 0
    with pytest.raises(ValueError, match="image_size=20"):
        transfer.tiny_convnext(image_size=20)
    with pytest.raises(ValueError, match="same number of stages"):
        transfer.tiny_convnext(widths=(8, 16), depths=(1,))
    with pytest.raises(TypeError, match="widths"):
        transfer.tiny_convnext(widths=8)


def test_load_pretrained_round_trip_offline_and_a_new_head(tmp_path):
    torch.manual_seed(0)
    model = transfer.tiny_convnext(num_labels=4, image_size=16, widths=(8, 16), depths=(1, 1))
    model.eval()
    model.save_pretrained(tmp_path / "tiny")
    back, where = transfer.load_pretrained(tmp_path / "tiny")
    back.eval()
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(back(pixel_values=x).logits, model(pixel_values=x).logits)
    assert "local folder" in where
    new, _ = transfer.load_pretrained(str(tmp_path / "tiny"), num_labels=2)
    assert new.classifier.out_features == 2
    for (name, a), (_, b) in zip(new.convnext.state_dict().items(), model.convnext.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_load_pretrained_offline_in_a_fresh_process_with_hf_hub_offline(tmp_path):
    """What the lab does: HF_HUB_OFFLINE=1 set before transformers is imported, then the folder."""
    torch.manual_seed(0)
    transfer.tiny_convnext(num_labels=2, image_size=16, widths=(8, 16), depths=(1, 1)).save_pretrained(tmp_path / "m")
    code = ("import sys; from lablib.methods import transfer; m, w = transfer.load_pretrained(sys.argv[1]); "
            "print(m.config.num_labels, w.startswith('local folder'))")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m")], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    assert out.stdout.split() == ["2", "True"]
    assert not (tmp_path / "home").exists() and not (tmp_path / "hf").exists()  # nothing cached anywhere


def test_load_pretrained_refuses_a_hub_id_without_downloads_and_bad_arguments(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_ALLOW_DOWNLOADS", raising=False)
    with pytest.raises(ValueError, match="LAB_ALLOW_DOWNLOADS=1"):
        transfer.load_pretrained("facebook/convnext-tiny-224")
    monkeypatch.setenv("LAB_ALLOW_DOWNLOADS", "yes")
    with pytest.raises(ValueError, match="LAB_ALLOW_DOWNLOADS='yes'"):
        transfer.load_pretrained("facebook/convnext-tiny-224")
    monkeypatch.delenv("LAB_ALLOW_DOWNLOADS")
    with pytest.raises(TypeError, match="model"):
        transfer.load_pretrained(3)
    with pytest.raises(TypeError, match="allow_download"):
        transfer.load_pretrained("x/y", allow_download="no")
    with pytest.raises(ValueError, match="num_labels"):
        transfer.load_pretrained("x/y", num_labels=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        transfer.load_pretrained(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        transfer.load_pretrained(tmp_path / "missing")
