import random
import sys

import numpy as np
import pytest
import torch

from lablib.core import config


@pytest.mark.parametrize("value", ["smoke", "cpu", "gpu", " CPU "])
def test_scale_reads_env(monkeypatch, value):
    monkeypatch.setenv("LAB_SCALE", value)
    assert config.scale() == value.strip().lower()


def test_scale_default_follows_cuda(monkeypatch):
    monkeypatch.delenv("LAB_SCALE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.scale() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.scale() == "gpu"


def test_unknown_scale_names_the_allowed_ones(monkeypatch):
    monkeypatch.setenv("LAB_SCALE", "huge")
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        config.scale()


def test_profile_picks_active_scale_and_shows_all(monkeypatch):
    monkeypatch.setenv("LAB_SCALE", "cpu")
    cfg = config.profile(smoke=dict(epochs=1, width=8), cpu=dict(epochs=10, width=16), gpu=dict(epochs=30, width=64))
    assert cfg.epochs == 10 and cfg["width"] == 16 and cfg.scale == "cpu"
    table = repr(cfg)
    assert "cpu *" in table and "30" in table and "LAB_SCALE=cpu" in table
    with pytest.raises(AttributeError, match="no knob named 'lr'"):
        _ = cfg.lr


def test_profile_gpu_defaults_to_cpu():
    cfg = config.profile(smoke=dict(n=1), cpu=dict(n=5), active="gpu")
    assert cfg.n == 5


def test_profile_rejects_mismatched_knobs():
    with pytest.raises(ValueError, match=r"'smoke'.*missing \['width'\]"):
        config.profile(smoke=dict(epochs=1), cpu=dict(epochs=2, width=3))
    with pytest.raises(TypeError, match="'gpu' must be a dict"):
        config.profile(smoke=dict(a=1), cpu=dict(a=1), gpu=[1])
    with pytest.raises(ValueError, match="active='big'"):
        config.profile(smoke=dict(a=1), cpu=dict(a=1), active="big")


def test_device_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert config.device().type == "cpu"


def test_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert config.device().type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.device().type == "cuda"


def test_device_override_and_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LAB_DEVICE", "cpu")
    assert config.device().type == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        config.device("cuda")
    with pytest.raises(ValueError, match="'tpu' is not one of"):
        config.device("tpu")


def test_seed_everything_repeats_every_generator():
    g1 = config.seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g1).item())
    g2 = config.seed_everything(3)
    b = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g2).item())
    assert a == b
    with pytest.raises(ValueError, match="seed"):
        config.seed_everything(-1)


def test_project_root_found_from_labs_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_ROOT")
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.chdir(tmp_path / "labs")
    assert config.project_root() == tmp_path
    assert config.results_dir() == tmp_path / "results"
    assert config.data_dir() == tmp_path / "data"


def test_threads_from_env(monkeypatch):
    monkeypatch.delenv("LAB_THREADS", raising=False)
    assert config.threads() is None
    monkeypatch.setattr(config.os, "cpu_count", lambda: 4)
    monkeypatch.setenv("LAB_THREADS", "3")
    assert config.threads() == 3
    # zero, more threads than cores, a superscript digit that str.isdigit accepts, a fraction
    for bad in ("0", "5", "100000", "²", "1.5", "-1", "three"):
        monkeypatch.setenv("LAB_THREADS", bad)
        with pytest.raises(ValueError, match="LAB_THREADS"):
            config.threads()


def test_solutions_mode_from_env(monkeypatch):
    assert config.solutions() is False
    monkeypatch.setenv("LAB_SOLUTIONS", "1")
    assert config.solutions() is True
    monkeypatch.setenv("LAB_SOLUTIONS", "yes")
    with pytest.raises(ValueError, match="LAB_SOLUTIONS='yes'"):
        config.solutions()


def test_lab_name_comes_from_the_notebook(monkeypatch, _isolated):
    with pytest.raises(RuntimeError, match="LAB_NAME"):
        config.lab_name()
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/labs/02_distillation.ipynb")  # Jupyter Server, nbmake
    assert config.lab_name() == "02_distillation"
    monkeypatch.setenv("JPY_SESSION_NAME", "02_distillation-Copy1.ipynb")  # a copy made in JupyterLab
    assert config.lab_name() == "02_distillation"
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/Untitled.ipynb")  # not a lab
    with pytest.raises(RuntimeError, match="cannot tell which lab"):
        config.lab_name()
    monkeypatch.setenv("LAB_NAME", "05_fixmatch")  # the override wins
    assert config.lab_name() == "05_fixmatch"


def test_lab_sources_finds_flat_and_folder_labs(_isolated):
    labs = _isolated / "labs"
    for name in ("01_a.py", "02_b.py", "notes.py", "02_b.ipynb"):
        (labs / name).write_text("")
    (labs / "15_dist").mkdir()
    (labs / "15_dist" / "15_dist.py").write_text("")
    (labs / "15_dist" / "worker.py").write_text("")
    (labs / "16_empty").mkdir()
    (labs / "solutions").mkdir()
    (labs / "solutions" / "01_a.py").write_text("")
    assert [p.relative_to(labs).as_posix() for p in config.lab_sources()] == ["01_a.py", "02_b.py", "15_dist/15_dist.py"]


def test_torch_compiler_cache_stays_in_data(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"} | {"LAB_ROOT": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", "import os, lablib.core.config; print(os.environ['TORCHINDUCTOR_CACHE_DIR'])"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(tmp_path / "data" / "cache" / "torchinductor")


def test_torch_compiler_precompiles_no_header_into_tmp(tmp_path):
    # inductor puts its precompiled header in /tmp/torchinductor_<user> whatever
    # TORCHINDUCTOR_CACHE_DIR says; importing lablib must switch that header off
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS"}
    code = "import lablib, torch._inductor.config as c; print(c.cpp_cache_precompile_headers)"
    out = subprocess.run([sys.executable, "-c", code], env=env | {"LAB_ROOT": str(tmp_path)},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# --- bad input: a clear error naming the argument or the environment variable -----------------


@pytest.mark.parametrize("var, value, call", [
    ("LAB_NAME", "lab", config.lab_name),
    ("LAB_NAME", "Lab 1", config.lab_name),
    ("LAB_DEVICE", "gpu", config.device),
    ("LAB_DEVICE", "cuda", config.device),
])
def test_a_bad_environment_variable_is_named(monkeypatch, var, value, call):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=f"{var}='{value}'"):
        call()


def test_lab_name_override_may_be_a_notebook_file(monkeypatch):
    monkeypatch.setenv("LAB_NAME", "05_fixmatch-Copy1.ipynb")
    assert config.lab_name() == "05_fixmatch"


def test_lab_root_expands_home_and_must_be_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LAB_ROOT", "~/lab-root")
    assert config.project_root() == tmp_path / "lab-root"
    (tmp_path / "root.txt").write_text("")
    monkeypatch.setenv("LAB_ROOT", str(tmp_path / "root.txt"))
    with pytest.raises(ValueError, match="LAB_ROOT"):
        config.project_root()


@pytest.mark.parametrize("call, error, word", [
    (lambda: config.device(1), TypeError, "prefer"),
    (lambda: config.seed_everything(2**64), ValueError, "seed"),
    (lambda: config.seed_everything("0"), TypeError, "seed"),
    (lambda: config.seed_everything(True), TypeError, "seed"),
    (lambda: config.lab_sources(123), TypeError, "labs_dir"),
])
def test_config_rejects_bad_arguments(call, error, word):
    with pytest.raises(error, match=word):
        call()


def test_lab_sources_refuses_a_labs_dir_that_is_not_a_folder(tmp_path):
    (tmp_path / "labs.txt").write_text("")
    for bad in (tmp_path / "nope", tmp_path / "labs.txt"):
        with pytest.raises(ValueError, match="labs_dir"):
            config.lab_sources(bad)


@pytest.mark.parametrize("checks", ["abc", [None], 5])
def test_print_report_needs_a_list_of_requirements(checks):
    from lablib.core import env

    with pytest.raises(TypeError, match="checks"):
        env.print_report(checks)


# --- figures in notebooks: twice the pixels, shown at the same size ----------------------------


def test_sharp_figures_only_inside_a_kernel(monkeypatch):
    from matplotlib_inline.config import InlineBackend

    backend = InlineBackend.instance()
    monkeypatch.setattr(backend, "figure_formats", {"png"})
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert config.sharp_figures() is False and backend.figure_formats == {"png"}
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    assert config.sharp_figures() is True and backend.figure_formats == {"retina"}


def test_a_lab_figure_is_drawn_at_twice_its_shown_size():
    # a real kernel: lablib imported after pyplot (the inline backend is already on) still applies
    import base64
    import struct

    import nbclient
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nimport lablib"),
                nbformat.v4.new_code_cell("fig = plt.figure(figsize=(4, 3)); plt.close(fig)\n"
                                            "fig.subplots().plot([0, 1]); fig")]
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    (output,) = [o for o in nb.cells[1].outputs if "image/png" in o.get("data", {})]
    width, height = struct.unpack(">II", base64.b64decode(output["data"]["image/png"])[16:24])
    shown = output["metadata"]["image/png"]
    assert (width // 2, height // 2) == (shown["width"], shown["height"])
    assert shown["width"] > 200  # a 4-inch figure, not a thumbnail
