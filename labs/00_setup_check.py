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
# Run this lab first, before the workshop. In two minutes it answers two questions:
#
# 1. **Is everything installed?** Each package the labs need is checked against the versions the
#    project supports, with `[OK]` / `[FAIL]` on every line.
# 2. **Will this machine keep up?** It trains a small network on real handwritten digits, measures
#    how many images per second this machine trains and predicts, and compares that with the
#    machine the labs' `cpu` settings were sized on.
#
# Facilitators: ask every participant to run this lab and read out the last line of section 3.
# That is the room preflight.
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
import torch

from lablib import show
from lablib.core import bench, checks, config, env, results, viz
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
# The network is `lablib.models.SmallCNN`, the small convolutional net several labs use. Here is its
# code: every lab shows the lablib code it relies on this way, with `show(...)`.

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

# %%
viz.curves({"SmallCNN": history}, metrics=("train_loss", "val_acc"), title="Learning curves")

# %% [markdown]
# The validation accuracy should climb past 90 % within a few epochs. The test set is touched once,
# at the end, and the confusion matrix shows which digits the network still mixes up.

# %%
logits, labels = train.predict(model, test_loader)
test_acc = train.accuracy(logits, labels)
print(f"test accuracy: {test_acc:.3f}")
viz.confusion(labels, logits.argmax(1), splits.classes)

# %% [markdown]
# ## 3. How fast is this machine?
#
# Two measurements, both the careful way (`lablib.bench`): a few warm-up calls first, then the
# median of many repeats.
#
# * **training speed**: images per second during the epochs above (every epoch after the first,
#   which pays one-off start-up costs);
# * **inference latency**: one forward pass at batch size 1 and at batch size 64.

# %%
train_seconds = history["seconds"][1:] or history["seconds"]
train_img_per_s = len(splits.train) * len(train_seconds) / sum(train_seconds)

model.eval()
timings = {}
with torch.inference_mode():
    for batch in (1, 64):
        x = splits.test.x[:batch].to(device)
        timings[batch] = bench.latency(lambda x=x: model(x), warmup=5, repeats=cfg.bench_repeats)
        print(f"batch {batch:>2}: {timings[batch]}")

print(f"\ntraining speed: {train_img_per_s:,.0f} images/s")
print("verdict:", env.speed_verdict(train_img_per_s))

# %%
viz.bars(
    {"train (img/s)": train_img_per_s, "predict b=64 (img/s)": 64 / (timings[64].median_ms / 1e3)},
    ylabel="images per second",
    title="This machine's speed on SmallCNN",
)

# %% [markdown]
# ## 4. Record the result
#
# Every lab ends by recording its headline figures with `results.record`. They go to
# `results/00_setup_check.<scale>.json` with a stamp of this environment, and
# `python -m lablib.core.results` gathers every lab's figures into `docs/results.md`.

# %%
results.record(
    "00_setup_check",
    {
        "requirements met": all_ok,
        "test accuracy": test_acc,
        "training images/s": train_img_per_s,
        "latency batch 1 (ms)": timings[1].median_ms,
        "latency batch 64 (ms)": timings[64].median_ms,
    },
    claims={"training images/s": f"reference machine: {env.REFERENCE_TRAIN_IMG_PER_S:,.0f} (2-core CI)"},
)

# %% [markdown]
# At `cpu` and `gpu` scale the lab checks that the setup really works. (At `smoke` scale one epoch
# proves nothing, so nothing is asserted.)

# %%
if cfg.scale != "smoke":
    failed = [c.name for c in checks_found if c.status == "FAIL"]
    assert all_ok, f"requirements not met: {failed}"
    assert test_acc >= 0.90, f"SmallCNN reached only {test_acc:.3f} on the digits test set (expected >= 0.90)"
    print("Setup check passed.")

# %% [markdown]
# ## 5. Try the exercise mechanism
#
# Each lab has one to three exercises that check themselves. You write a function; a check runs it
# and the tested reference in lablib on the same random inputs and tells you whether they agree.
# An exercise you have not attempted just says *not attempted*; it never stops the notebook.
#
# **Exercise.** Write `my_accuracy(logits, y)`: the share of rows of `logits` (shape `(N, classes)`)
# whose largest entry is at the true class `y` (shape `(N,)`), as a Python float.

# %%
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
# Stuck? The reference answer is the tested code in lablib. Uncomment to see it:

# %%
# show(train.accuracy)

# %% [markdown]
# ## Going further
#
# * **A GPU box.** With an NVIDIA GPU and the CUDA build of PyTorch, section 1 reports the CUDA
#   version and `LAB_SCALE` defaults to `gpu`. The project's Docker image pins CUDA 12.1.
# * **Another scale.** Restart JupyterLab with `LAB_SCALE=smoke make lab` for a quick walk through
#   every lab, or `LAB_SCALE=cpu` on a GPU box to match a laptop.
# * **Your results.** Run `make results` from the project folder to run every lab at the current
#   scale and regenerate `docs/results.md` from your own measurements.
