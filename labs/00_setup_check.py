# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lab 00 — Setup check
#
# **Source:** 《AI探索者的技术实践:从兴趣驱动到系统化学习》 (*An AI explorer's practice: from
# curiosity to systematic learning*), section 二 "开发环境搭建:构建AI实验场" (setting up the
# development environment). Its documented environment, 「典型配置示例」 (a typical configuration):
# 「OS: Ubuntu 22.04 LTS · CUDA: 12.1 · cuDNN: 8.9 · Python: 3.10.6 · PyTorch: 2.0.1 (with GPU
# support)」, and for light experiments 「推荐使用消费级GPU(如NVIDIA RTX 40系列)配合CUDA 12.0+环境」
# ("a consumer GPU such as an RTX 40-series card with CUDA 12.0 or newer"). The labs also run on
# a laptop CPU; this lab tells you which of the two you have and how fast it is.
#
# Run this lab first, before the workshop. In a few minutes it answers three questions:
#
# **What you will measure**
#
# 1. **Is everything installed?** Each package the labs need, checked against the versions the
#    project supports (`[OK]` / `[FAIL]` on every line), and this machine beside the article's
#    environment.
# 2. **Can this machine train a network?** A small network trained on real handwritten digits, and
#    its accuracy on images it never saw.
# 3. **Will it keep up?** Training images per second and inference latency, compared with the
#    machine the labs' `cpu` settings were sized on.
#
# **Objectives.** After this lab you can:
#
# * tell whether your environment runs the labs, and what differs from the article's;
# * choose the scale (`LAB_SCALE`) that suits your machine;
# * read a lab's claims (`[✓]` holds, `[✗]` does not, `[~]` reported but not held against the run);
# * solve a self-checking exercise and get its hints.
#
# **Prerequisites.** The installation in `docs/setup.md` (a venv, conda or the Docker image). No
# machine-learning knowledge yet.
#
# **Time.** `smoke`: about 10 s. `cpu` (2 cores): about 15 s of compute, 10 minutes with reading.
# `gpu`: about 15 s.
#
# (Answers to the exercise: `docs/answers/00_setup_check.md`.)
#
# **How the labs work.** Every lab reads one setting, `LAB_SCALE`:
#
# | `LAB_SCALE` | what it is for |
# | --- | --- |
# | `smoke` | seconds per lab: proves every cell runs, claims nothing |
# | `cpu` | the default without a GPU: a few minutes per lab on a laptop, big enough to show the effect |
# | `gpu` | the default with an NVIDIA GPU: larger data and models, plus the GPU-only measurements |
#
# Each lab states its settings ("knobs") for every scale in its first code cell, so you can see what
# changes. To pick a scale, set the variable before starting JupyterLab
# (`LAB_SCALE=smoke make lab`).

# %%
import platform

import torch

from lablib import show, table
from lablib.core import bench, checks, config, env, progress, results, viz
from lablib.data import datasets
from lablib.nets import models, train

cfg = config.profile(
    smoke=dict(epochs=1, bench_repeats=3),
    cpu=dict(epochs=8, bench_repeats=30),
    gpu=dict(epochs=8, bench_repeats=50),
)
device = config.device()
config.seed_everything(0)
print(env.line())
cfg

# %% [markdown]
# ## 1. Is everything installed?
#
# `[INFO]` lines are not problems: no NVIDIA GPU simply means the labs run on the CPU.

# %%
checks_found = env.report()
all_ok = env.print_report(checks_found)

# %% [markdown]
# This machine beside the environment the article documents. The project cannot pin that exact
# set (PyTorch 2.0.1 was never built for CUDA 12.1, and the labs need torch 2.5 or newer);
# `docs/setup.md` lists what the Docker image and the conda files ship instead.

# %%
def os_name():
    try:
        return platform.freedesktop_os_release()["PRETTY_NAME"]
    except (OSError, AttributeError, KeyError):  # not Linux, or no os-release file
        return platform.platform(terse=True)


def cudnn_version():
    v = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if v is None:
        return "none"
    return f"{v // 10000}.{v // 100 % 100}" if v >= 10000 else f"{v // 1000}.{v // 100 % 10}"  # 90100 -> 9.1, 8902 -> 8.9


table([
    {"component": "OS", "article": "Ubuntu 22.04 LTS", "this machine": os_name()},
    {"component": "CUDA", "article": "12.1", "this machine": torch.version.cuda or "none (CPU build of torch)"},
    {"component": "cuDNN", "article": "8.9", "this machine": cudnn_version()},
    {"component": "Python", "article": "3.10.6", "this machine": platform.python_version()},
    {"component": "PyTorch", "article": "2.0.1", "this machine": torch.__version__},
    {"component": "GPU", "article": "consumer GPU, e.g. RTX 40 series", "this machine": env.device_name()},
], title="The article's environment and this machine")

# %% [markdown]
# ## 2. Can this machine train a network?
#
# The data is scikit-learn's *digits*: 1,797 real handwritten digits, 8×8 pixels, that ship with
# scikit-learn (nothing is downloaded). The split is fixed and seeded, so every participant gets
# the same train, validation and test images.

# %%
splits = datasets.digits()
print(splits)
viz.image_grid(splits.train.x[:20], labels=[splits.classes[i] for i in splits.train.y[:20]], title="Digits from the training split")

# %% [markdown]
# The network is `lablib.nets.models.SmallCNN`, the small convolutional net several labs use. Here
# is its code: the labs show the lablib code they rely on this way, with `show(...)`.

# %%
show(models.SmallCNN)

# %%
train_loader = datasets.loader(splits.train, batch_size=64, shuffle=True)
val_loader = datasets.loader(splits.val, batch_size=256)
test_loader = datasets.loader(splits.test, batch_size=256)

model = models.SmallCNN().to(device)
print(f"SmallCNN: {models.count_params(model):,} parameters")
history = train.fit(model, train_loader, val_loader, epochs=cfg.epochs, lr=3e-3, device=device, desc="SmallCNN")
history

# %% figure="learning-curves"
viz.curves({"SmallCNN": history}, metrics=("train_loss", "val_acc"), title="Learning curves")

# %% [markdown]
# On a working setup the validation accuracy should climb past 90 % within a few epochs at `cpu` scale
# (at `smoke` scale one epoch is too short to tell). The test set is touched once, at the end, and
# the confusion matrix shows which digits the network still mixes up.

# %%
logits, labels = train.predict(model, test_loader)
test_acc = train.accuracy(logits, labels)
viz.confusion(labels, logits.argmax(1), splits.classes)

# %% [markdown]
# Each lab states its results as *claims*: what was measured, the condition it is held to, and a
# verdict. At `cpu` and `gpu` scale an *asserted* claim (`[✓]`/`[✗]`) that does not hold stops the lab
# with an error when it records its results (at the end); a `[~]` claim (a timing, which a busy
# machine can flip) is only reported. At `smoke` scale nothing is held against the run.

# %%
results.claim("every package the labs need is installed", all_ok, holds=all_ok,
              condition="no [FAIL] line in section 1",
              source="「Python: 3.10.6 · PyTorch: 2.0.1」 (the labs need Python >= 3.10 and torch >= 2.5)")
trains = results.claim("this machine trains a network to a useful accuracy", test_acc, holds=test_acc >= 0.90,
                        condition="SmallCNN test accuracy on the digits >= 0.90")

# %% [markdown]
# ## 3. How fast is this machine?
#
# Two measurements, both the careful way (`lablib.core.bench`): a few warm-up calls first, then the
# median of many repeats.
#
# * **training speed**: images per second during the epochs above (every epoch after the first,
#   which pays one-off start-up costs);
# * **inference latency**: one forward pass at batch size 1 and at batch size 64.

# %%
epoch_end = history["seconds"]
epoch_seconds = [b - a for a, b in zip([0.0, *epoch_end[:-1]], epoch_end, strict=True)]
timed = epoch_seconds[1:] or epoch_seconds
train_img_per_s = len(splits.train) * len(timed) / sum(timed)

model.eval()
with torch.inference_mode():
    inputs = {batch: splits.test.x[:batch].to(device) for batch in (1, 64)}
    timings = bench.compare({batch: (lambda x=x: model(x)) for batch, x in inputs.items()}, rounds=3, warmup=5,
                            repeats=cfg.bench_repeats)
table({f"batch {batch}": {"median (ms)": t.median_ms, "images/s": batch / (t.median_ms / 1e3)} for batch, t in timings.items()},
      title="Inference latency")

ratio = train_img_per_s / env.REFERENCE_TRAIN_IMG_PER_S
print(f"\ntraining speed: {train_img_per_s:,.0f} images/s")
results.claim("this machine keeps up with the reference machine", ratio, holds=ratio >= 0.5,
              condition=f">= 0.5 x the {env.REFERENCE_TRAIN_IMG_PER_S:,.0f} training images/s of the 2-core machine the cpu scale was sized on",
              asserted=False)
print("verdict:", env.speed_verdict(train_img_per_s))

# %% figure="training-and-inference-speed"
viz.bars(
    {"train (img/s)": train_img_per_s, "predict b=64 (img/s)": 64 / (timings[64].median_ms / 1e3)},
    ylabel="images per second",
    title="This machine's speed on SmallCNN",
)

# %% [markdown]
# ## 4. Try the exercise mechanism
#
# Each lab has exercises that check themselves. You write a function; a check runs it and a tested
# reference on the same random inputs and tells you whether they agree. An exercise you have not
# attempted just says *not attempted*; it never stops the notebook.
#
# **Exercise.** Write `my_accuracy(logits, y)`: the share of rows of `logits` (shape `(N, classes)`)
# whose largest entry is at the true class `y` (shape `(N,)`), as a Python float.
#
# <details><summary>Hint</summary>
#
# Each row's predicted class is the position of its largest entry; compare those positions with
# `y` and take the share that match. `.item()` turns a one-element tensor into a Python float.
#
# </details>

# %%
@checks.exercise
def my_accuracy(logits, y):
    # YOUR CODE HERE (one line is enough)
    raise NotImplementedError


checks.check_function(
    my_accuracy,
    reference=train.accuracy,
    make_inputs=lambda g: (torch.randn(32, 10, generator=g), torch.randint(0, 10, (32,), generator=g)),
    hint="logits.argmax(dim=1) gives the predicted class of each row; compare it with y and average.",
)

# %% [markdown]
# Still stuck after the hint? The last stage is the answer itself: uncomment the line and run it.

# %%
# checks.show_solution("my_accuracy")

# %% [markdown]
# ## 5. Record the result
#
# Every lab ends by recording its claims and its other figures with `results.record`. They go to
# `results/00_setup_check.<scale>.json` with a stamp of this environment, and
# `python -m lablib.core.results` gathers every lab's figures into `docs/results.md`. The record
# keeps your exercise's verdict too, and here the claims above are checked: at `cpu` and `gpu`
# scale, a failed asserted one stops the lab with its reason.

# %%
results.record({
    "training images/s": train_img_per_s,
    "latency batch 1 (ms)": timings[1].median_ms,
    "latency batch 64 (ms)": timings[64].median_ms,
})

# %% [markdown]
# ## 6. Your progress
#
# Every exercise you pass (your own answer, `[✓] correct`) is noted in `results/progress.json` with
# the date. This table is the same as `python -m lablib.core.progress` in a terminal: each lab, how
# many of its exercises you have passed, and which are left. Come back to it as you go.

# %%
progress.main([])

# %% [markdown]
# ## Going further
#
# * **A GPU box.** With an NVIDIA GPU and the CUDA build of PyTorch, section 1 reports the CUDA
#   version and `LAB_SCALE` defaults to `gpu`. The project's Docker image pins CUDA 12.1, as the
#   article does.
# * **Another scale.** Restart JupyterLab with `LAB_SCALE=smoke make lab` for a quick walk through
#   every lab, or `LAB_SCALE=cpu` on a GPU box to match a laptop.
# * **Your results.** Run `make results` from the project folder to run every lab at the current
#   scale and regenerate `docs/results.md` from your own measurements.
