"""What a learner relies on and a regression would quietly break: a failed save keeps the old
file or checkpoint, nothing is downloaded unless asked, and a check calls a wrong answer wrong.

Each test here fails on one of the named mutants of `make mutants` (tools/mutants.py): a save
made non-atomic, downloads allowed by default, the checks' tolerance loosened 1000-fold.
"""

import signal

import pytest
import torch

from lablib.core import cache, checks
from lablib.methods import diffusion, stable_diffusion

# --- a write that fails half-way keeps the old file -------------------------------------------


@pytest.fixture
def disk_fills_after():
    """A context manager: writes to any file stop at `limit` bytes with OSError (EFBIG), as on
    a full disk. RLIMIT_FSIZE is per process and restored on leaving."""
    resource = pytest.importorskip("resource")
    if not hasattr(signal, "SIGXFSZ"):
        pytest.skip("needs SIGXFSZ (Linux, macOS)")
    from contextlib import contextmanager

    @contextmanager
    def limited(limit: int):
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)

    return limited


def test_write_atomic_keeps_the_old_file_when_the_disk_fills(tmp_path, disk_fills_after):
    target = cache.write_atomic(tmp_path / "out" / "results.json", '{"accuracy": 0.97}')
    with disk_fills_after(4096), pytest.raises(OSError):
        cache.write_atomic(target, '{"accuracy": 0.5, "log": "%s"}' % ("x" * 100_000))
    assert target.read_text() == '{"accuracy": 0.97}'  # not half of the new one
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]  # no temporary file left
    cache.write_atomic(target, "{}")  # and the next write works
    assert target.read_text() == "{}"


def _unet(seed: int):
    torch.manual_seed(seed)
    return diffusion.make_unet(image_size=8, widths=(8, 16), num_classes=3).eval()


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_failed_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "cache" / "unet"
    first = _unet(0)
    diffusion.save_unet(first, folder, extra={"run": 1})
    assert diffusion.has_checkpoint(folder), "the first save made no checkpoint"

    second = _unet(1)
    real_save = second.save_pretrained

    def interrupted_save(where, **kwargs):
        """Write the whole checkpoint, then cut its weights file short and fail (a full disk)."""
        real_save(where, **kwargs)
        weights = where / "diffusion_pytorch_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:200])
        raise OSError("No space left on device")

    monkeypatch.setattr(second, "save_pretrained", interrupted_save)
    with pytest.raises(OSError, match="No space left"):
        diffusion.save_unet(second, folder, extra={"run": 2})

    assert diffusion.has_checkpoint(folder), "the failed save spoiled the previous checkpoint"
    loaded, extra = diffusion.load_unet(folder)
    assert extra == {"run": 1} and _same_weights(loaded, first)
    assert [p.name for p in folder.parent.iterdir()] == ["unet"]  # no temporary folder left


# --- nothing is downloaded unless asked --------------------------------------------------------


class _FakeHubPipeline:
    """Stands in for a downloaded pipeline when downloads are allowed (no network here)."""

    def enable_attention_slicing(self):
        pass

    def to(self, device):
        return self


@pytest.fixture
def hub(monkeypatch):
    """Record every from_pretrained of the pipeline class instead of touching the network."""
    calls = []

    def from_pretrained(*args, **kwargs):
        calls.append((args, kwargs))
        return _FakeHubPipeline()

    monkeypatch.setattr(stable_diffusion._sd_pipeline_class(), "from_pretrained", from_pretrained)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a second safety net should the fake be bypassed
    for name in ("LAB_ALLOW_DOWNLOADS", "LAB_SD_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return calls


# device="cuda" only names the device (no GPU needed): downloads are refused for want of the
# opt-in alone, not because the machine lacks a GPU.
@pytest.mark.parametrize("flag", [None, "", "0"], ids=["unset", "empty", "zero"])
def test_a_hub_model_is_not_downloaded_by_default(hub, monkeypatch, flag):
    if flag is not None:
        monkeypatch.setenv("LAB_ALLOW_DOWNLOADS", flag)
    with pytest.raises(ValueError, match="LAB_ALLOW_DOWNLOADS=1"):
        stable_diffusion.sd_pipeline("someone/some-model", device="cuda")
    monkeypatch.setenv("LAB_SD_MODEL", "someone/some-model")  # named by the environment instead
    with pytest.raises(ValueError, match="LAB_ALLOW_DOWNLOADS=1"):
        stable_diffusion.sd_pipeline(device="cuda")
    assert hub == [], "the hub was asked for a model"


def test_a_hub_model_is_downloaded_only_when_asked(hub, monkeypatch):
    pipe, what = stable_diffusion.sd_pipeline("someone/some-model", device="cuda", allow_download=True)
    assert isinstance(pipe, _FakeHubPipeline) and what == "hub checkpoint someone/some-model (fp16)"
    monkeypatch.setenv("LAB_ALLOW_DOWNLOADS", "1")
    stable_diffusion.sd_pipeline("someone/some-model", device="cuda")
    assert [args[0] for args, _ in hub] == ["someone/some-model"] * 2
    with pytest.raises(ValueError, match="LAB_ALLOW_DOWNLOADS"):  # the argument wins over the flag
        stable_diffusion.sd_pipeline("someone/some-model", device="cuda", allow_download=False)
    assert len(hub) == 2


# --- a check calls a wrong answer wrong --------------------------------------------------------


def _softmax(x):
    return x.softmax(dim=1)


def _logits(gen):
    return (torch.randn(4, 5, generator=gen),)


@pytest.mark.parametrize("relative", [1e-2, 1e-3])
def test_a_small_relative_error_is_wrong(relative):
    off = 1 + relative
    assert checks.difference(2.5 * off, 2.5) is not None
    assert checks.difference(torch.full((3,), 2.5) * off, torch.full((3,), 2.5)) is not None
    assert checks.check_value(2.5 * off, 2.5, quiet=True).status == "wrong"
    assert checks.check_value(torch.full((3,), 2.5) * off, torch.full((3,), 2.5), quiet=True).status == "wrong"
    v = checks.check_function(lambda x: _softmax(x) * off, _softmax, _logits, quiet=True)
    assert v.status == "wrong", v


def test_an_absolute_error_near_zero_is_wrong():
    assert checks.check_value(1e-3, 0.0, quiet=True).status == "wrong"
    assert checks.difference(torch.full((3,), 1e-3), torch.zeros(3)) is not None


def test_rounding_error_is_right():
    off = 1 + 1e-7
    assert checks.difference(2.5 * off, 2.5) is None
    assert checks.check_value(2.5 * off, 2.5, quiet=True).status == "correct"
    assert checks.check_value(torch.full((3,), 2.5) * off, torch.full((3,), 2.5), quiet=True).status == "correct"
    v = checks.check_function(lambda x: x.double().softmax(dim=1).float(), _softmax, _logits, quiet=True)
    assert v.status == "correct", v


def test_importing_lablib_leaves_nothing_in_tmp(tmp_path):
    """diffusers' import makes torch's compile cache folder, in /tmp unless TORCHINDUCTOR_CACHE_DIR
    says otherwise: lablib sets it (under data/) before any of its modules imports diffusers."""
    import os
    import subprocess
    import sys

    tmp, root = tmp_path / "tmp", tmp_path / "project"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env |= {"TMPDIR": str(tmp), "LAB_ROOT": str(root)}
    code = "from lablib.methods import diffusion, stable_diffusion"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    assert list(tmp.iterdir()) == []
