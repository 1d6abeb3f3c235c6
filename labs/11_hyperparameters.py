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
# # Lab 11 — The training loop's knobs: learning rate, batch size, and searching for them
#
# **Sources.** 《AI应用技术全景:从模型到工程的完整链条》 ("The AI application landscape: the whole
# chain from model to engineering"), section 2.1 "模型训练" (model training), gives a PyTorch training
# loop (`SimpleNN`, one `nn.Linear(784, 10)`, SGD at `lr=0.01`, 10 epochs) and says:
#
# > 学习率过大可能导致震荡,过小则收敛缓慢;批次大小影响梯度估计的准确性,需根据硬件资源权衡。
#
# > "Too large a learning rate can make training oscillate, too small a one converges slowly; the
# > batch size sets how accurate the gradient estimate is, and is traded against the hardware."
#
# 《AI创业公司如何应对技术瓶颈?》 ("How AI start-ups deal with technical bottlenecks"), section 3.2.4
# "超参数优化" (hyper-parameter optimisation), lists three ways to search:
#
# > 1. 网格搜索:在预定义的超参数空间中,穷举搜索最优组合。2. 随机搜索:在超参数空间中,随机搜索最优组合。
# > 3. 贝叶斯优化:利用贝叶斯方法,高效搜索最优超参数组合。
#
# > "1. Grid search: try every combination in a predefined space. 2. Random search: try random
# > combinations. 3. Bayesian optimisation: search efficiently with Bayesian methods."
#
# Neither article gives a figure. This lab measures them on real 8×8 handwritten digits.
#
# **What you will measure**
#
# 1. the article's loop, run on digits (it needs three fixes first);
# 2. what "too large" and "too small" look like, and a **learning-rate range test** (written in
#    this lab) that suggests a rate from one short run;
# 3. how the best learning rate moves with the batch size, for SGD and for AdamW;
# 4. grid vs random vs Bayesian search (Optuna's TPE), with and without pruning, under one trial
#    budget and over several seeds: first the noise floor, then which differences survive it.
#
# **Objectives.** After this lab you can
#
# * read a loss curve and say whether the learning rate is too large, too small, or about right;
# * run a learning-rate range test and read a rate off it;
# * change the batch size without losing accuracy, knowing when the learning rate must follow;
# * set up an Optuna study (ask/tell, samplers, pruners) and judge a search comparison against its
#   seed-to-seed noise.
#
# **Prerequisites.** Lab 00 (setup) and lab 01 (a training loop). What SGD, momentum and
# cross-entropy are; a mean and a standard deviation.
#
# **Time.** `smoke`: about 15 s; `cpu` (2 cores): about 1.5–2 min of computing; `gpu`: a few
# minutes (more seeds and trials). Reading and the exercises: 45–60 min.
#
# Answers to the open questions and exercises: `docs/answers/11_hyperparameters.md`.

# %%
import copy
import itertools
import math
import random
import statistics
import time
import warnings

import matplotlib.pyplot as plt
import optuna
import optuna.visualization.matplotlib as optuna_plots
import scipy.stats
import torch
import torch.nn as nn
import torch.nn.functional as F
from optuna.trial import TrialState
from tqdm.auto import tqdm

from lablib import table
from lablib.core import checks, config, env, results, viz
from lablib.data import datasets
from lablib.methods import tuning
from lablib.nets import models, train

cfg = config.profile(
    smoke=dict(article_epochs=1, lr_epochs=2, sweep_epochs=1, sweep_seeds=1, batch_sizes=(64, 256),
               range_steps=60, noise_seeds=4, epochs=2, trials=4, search_seeds=2, startup=2),
    cpu=dict(article_epochs=10, lr_epochs=10, sweep_epochs=10, sweep_seeds=2, batch_sizes=(8, 16, 32, 64, 128, 256),
             range_steps=200, noise_seeds=20, epochs=10, trials=20, search_seeds=10, startup=5),
    gpu=dict(article_epochs=10, lr_epochs=10, sweep_epochs=10, sweep_seeds=3, batch_sizes=(8, 16, 32, 64, 128, 256),
             range_steps=200, noise_seeds=40, epochs=10, trials=20, search_seeds=20, startup=5),
)
torch.set_num_threads(1)  # every model here is tiny: a second thread costs more than it saves (see section 4)
config.seed_everything(0)
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
splits = datasets.digits(val=0.25, test=0.25, seed=0)  # 897 / 450 / 450 images
x_train, y_train = splits.train.tensors
x_val, y_val = splits.val.tensors
x_test, y_test = splits.test.tensors
print(env.line())
cfg

# %% [markdown]
# Every run in this lab is small enough for a laptop's CPU, and the lab runs them all there: the
# models are tiny, so a step costs about a millisecond of overhead and almost no arithmetic.
# Validation and test sets are a quarter of the digits each (450 images), so one image is 0.22
# points of accuracy.
#
# ## 1. The article's loop, as printed
#
# Here is the article's code with `dataloader` pointed at the digits (the article never defines
# it):

# %%
class SimpleNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)  # 输入784维,输出10类 (784 inputs, 10 classes)

    def forward(self, x):
        return self.fc(x)


dataloader = datasets.loader(splits.train, batch_size=32, shuffle=True)
model = SimpleNN()
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
try:
    for epoch in range(10):  # noqa: B007 (the article's loop, as printed)
        for inputs, labels in dataloader:
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
except RuntimeError as err:
    print(f"RuntimeError: {err}")

# %% [markdown]
# Three things stop it:
#
# * **784 inputs** are MNIST's 28×28 pixels; these digits have 8×8 = 64.
# * **The images are not flattened.** A batch is `(32, 1, 8, 8)`; `nn.Linear` wants `(32, 64)`.
#   With 784 inputs and MNIST, the same line fails on `(32, 1, 28, 28)`.
# * **`dataloader` is never defined**, and nothing measures the result: the loop has no
#   validation, so it cannot tell a good learning rate from a bad one.
#
# The fixed loop, with the article's settings (SGD, `lr=0.01`, batch 32, 10 epochs) and a
# validation score after each epoch:

# %%
class SimpleNN(nn.Module):
    def __init__(self, inputs=64, classes=10):
        super().__init__()
        self.fc = nn.Linear(inputs, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))  # (N, 1, 8, 8) -> (N, 64)


def run_article_loop(lr, epochs, batch_size=32, seed=0):
    """The article's loop, fixed; returns every step's loss and the validation accuracy per epoch."""
    torch.manual_seed(seed)
    model = SimpleNN()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    dataloader = datasets.loader(splits.train, batch_size=batch_size, shuffle=True, seed=seed)
    step_losses, val_acc = [], []
    for _ in range(epochs):
        for inputs, labels in dataloader:
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            step_losses.append(loss.item())
        with torch.no_grad():
            val_acc.append(train.accuracy(model(x_val), y_val))
    return step_losses, val_acc


_, article_acc = run_article_loop(lr=0.01, epochs=cfg.article_epochs)
table([{"epoch": i + 1, "val acc %": 100 * a} for i, a in enumerate(article_acc)],
      title="The article's loop, fixed: SGD, lr=0.01, batch 32")

# %% [markdown]
# ## 2. Too large, too small
#
# The same loop at six learning rates, a decade apart. The table shows how each run ended; the
# left plot, each epoch's mean training loss (log scale); the right plot, every batch's loss
# during the last epoch for the three largest rates.

# %% figure="loss-by-learning-rate"
lr_grid = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
lr_runs = {lr: run_article_loop(lr, cfg.lr_epochs) for lr in tqdm(lr_grid, desc="learning rates")}
steps_per_epoch = len(dataloader)


def last_epoch(losses):
    return losses[-steps_per_epoch:]


lr_rows = []
for lr, (losses, acc) in lr_runs.items():
    tail = last_epoch(losses)
    lr_rows.append({"lr": lr, "val acc %": 100 * acc[-1], "last-epoch loss (mean)": statistics.mean(tail),
                    "(sd)": statistics.stdev(tail) if len(tail) > 1 else 0.0})
table(lr_rows, title=f"The fixed loop after {cfg.lr_epochs} epochs")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
plt.close(fig)  # shown once, as the cell's value
for lr, (losses, _) in lr_runs.items():
    per_epoch = [statistics.mean(losses[i:i + steps_per_epoch]) for i in range(0, len(losses), steps_per_epoch)]
    ax1.plot(range(1, len(per_epoch) + 1), per_epoch, marker="o", ms=3, label=f"lr={lr:g}")
for lr in lr_grid[-3:]:
    ax2.plot(last_epoch(lr_runs[lr][0]), lw=1, label=f"lr={lr:g}")
ax1.set(yscale="log", xlabel="epoch", ylabel="training loss (epoch mean)", title="Too small: slow. Right: fast.")
ax2.set(xlabel="step of the last epoch", ylabel="training loss (one batch)",
        title="Too large: the loss jumps from batch to batch")
ax1.legend(ncol=2, fontsize=8)
ax2.legend(fontsize=8)
fig.tight_layout()
fig

# %%
best_lr = max(lr_runs, key=lambda lr: lr_runs[lr][1][-1])
slow_gap = 100 * (lr_runs[best_lr][1][-1] - lr_runs[1e-3][1][-1])
sd_best = statistics.stdev(last_epoch(lr_runs[best_lr][0]))
sd_large = statistics.stdev(last_epoch(lr_runs[100.0][0]))
print(f"Best of the six: lr={best_lr:g}. lr=1e-3 ends {slow_gap:.1f} points below it after the same "
      f"{cfg.lr_epochs} epochs; lr=100's last-epoch loss swings {sd_large / sd_best:.0f}x as much as the best's.")
results.claim("too small a learning rate converges slowly (points behind the best)", slow_gap, holds=slow_gap >= 10,
              condition=">= 10 points behind after the same epochs", source="过小则收敛缓慢 (too small converges slowly)")
results.claim("too large a learning rate oscillates (loss sd vs the best rate's)", sd_large / sd_best,
              holds=sd_large / sd_best >= 5, condition="last-epoch loss sd >= 5x the best rate's",
              source="学习率过大可能导致震荡 (too large oscillates)")

# %% [markdown]
# Why the large rates do not give NaN here: the model is linear, and the cross-entropy's gradient
# is bounded by the pixels (0…1), so each step moves the weights by at most a bounded amount. The
# logits grow until the softmax saturates, and then each batch that disagrees flips them: the
# loss jumps between near 0 and large values. That is the article's 震荡 (oscillation). A
# deeper network multiplies the effect layer by layer and usually ends in NaN (lab 12 catches it).
#
# Six full runs a decade apart place a good rate only to within a decade. A **learning-rate range
# test** (Smith, 2017) looks for it with one short run: start tiny, multiply the rate a little at
# every step, record the loss, and stop when the loss blows up. The loss first stays flat (the
# rate is too small to matter), then falls (useful rates), then rises (too large). Two common
# readings of the curve: the rate where the smoothed loss **falls fastest**, or a **tenth of the
# rate at its minimum**.
#
# ## 3. The learning-rate range test, written here
#
# This is the step the lab teaches. It trains a copy of the model, so the model you pass in stays
# untouched.

# %%
def lr_range_test(model, x, y, lr_min=1e-5, lr_max=10.0, steps=100, batch_size=32, momentum=0.9,
                  diverge=4.0, seed=0):
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr_min, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    order, pos = torch.randperm(len(x), generator=gen), 0
    lrs, losses, best = [], [], math.inf
    for k in range(steps):
        lr = lr_min * (lr_max / lr_min) ** (k / (steps - 1))  # geometric: equal steps per decade
        for group in optimizer.param_groups:
            group["lr"] = lr
        if pos + batch_size > len(x):  # out of data: reshuffle
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lrs.append(lr)
        losses.append(loss.item())
        best = min(best, losses[-1])
        if not math.isfinite(losses[-1]) or losses[-1] > diverge * best:  # it blew up: stop
            break
    return torch.tensor(lrs, dtype=torch.float64), torch.tensor(losses, dtype=torch.float64)


# %% [markdown]
# The next cell checks it against `lablib.methods.tuning.lr_range_test` (the tested reference) on
# random models and data. If you edit the cell above, this check tells you whether it still
# computes the same thing, and the experiments below run your version either way.

# %%
def range_test_inputs(g):
    torch.manual_seed(int(torch.randint(0, 10_000, (1,), generator=g)))
    n, d = int(torch.randint(20, 60, (1,), generator=g)), int(torch.randint(3, 10, (1,), generator=g))
    model = nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(n, d, generator=g), torch.randint(0, 3, (n,), generator=g)
    return model, x, y, 1e-4, 10.0, int(torch.randint(5, 25, (1,), generator=g)), 8


checks.agrees(lr_range_test, reference=tuning.lr_range_test, make_inputs=range_test_inputs, trials=5)

# %% [markdown]
# Now on the digits, with a one-hidden-layer MLP (64 units) and SGD with momentum 0.9 (the
# training setting of the rest of the lab):

# %%
def mlp(hidden=64, seed=0):
    torch.manual_seed(seed)
    return models.MLP(64, (hidden,))


lrs, losses = lr_range_test(mlp(), x_train, y_train, steps=cfg.range_steps, batch_size=64)
steepest = tuning.suggest_lr(lrs, losses, rule="steepest")
tenth = tuning.suggest_lr(lrs, losses, rule="min/10")
fig, ax = plt.subplots(figsize=(7, 3.6))
plt.close(fig)
ax.plot(lrs, losses, lw=0.6, alpha=0.5, label="loss (one batch)")
ax.plot(lrs, tuning.smooth(losses), lw=2, label="smoothed")
for value, name, color in ((steepest, "steepest", "C2"), (tenth, "min/10", "C3")):
    ax.axvline(value, ls="--", color=color, label=f"{name}: {value:.2g}")
ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="Learning-rate range test (batch 64, SGD momentum 0.9)")
ax.legend(fontsize=8)
print(f"{len(lrs)} steps, stopped at lr={lrs[-1]:.3g}. Suggestions: steepest descent {steepest:.3g}, min/10 {tenth:.3g}.")
fig

# %% [markdown]
# Is the suggestion any good? The next section trains a sweep of learning rates at each batch
# size and puts the range test's suggestion beside the sweep's best.
#
# ## 4. Batch size and the learning rate
#
# The article says batch size sets the gradient's accuracy. A larger batch averages more
# examples, so its gradient is less noisy; but for the same number of epochs it takes fewer
# steps. For plain SGD, Goyal et al. (2017) give the **linear scaling rule**: multiply the batch
# by k, multiply the learning rate by k. Adam-style optimizers divide each step by a running
# gradient scale, so their best rate is expected to move less.
#
# Every (batch size, learning rate) pair below trains for the same epochs, over
# `cfg.sweep_seeds` seeds. To keep that affordable on a CPU, `tuning.train_many` trains all the
# learning rates of one batch size at once as one batched model: each member has its own
# weights, batch order and rate, and gets exactly what it would get alone (a unit test checks it
# against `nn.Linear` and `torch.optim`). On models this small a step is almost all fixed
# overhead, so one batched step for 20 models costs little more than one step for one. For the
# same reason the setup cell runs torch on one thread: splitting a 64×64 matrix product between
# two threads costs more in hand-offs than it saves, and when another program keeps a core busy,
# a thread waiting for it stalls every step (on a loaded 2-core machine, steps can become many
# times slower).

# %%
sweep_lrs = [10 ** (e / 2) for e in range(-8, 2)]  # 1e-4 … 3.16, half a decade apart
optimizers = {"sgd": dict(momentum=0.9), "adamw": dict(weight_decay=0.01)}
suggested = {}  # batch -> the range test's suggestion (SGD, momentum 0.9)
for batch in cfg.batch_sizes:
    lrs_b, losses_b = lr_range_test(mlp(), x_train, y_train, steps=cfg.range_steps, batch_size=batch)
    suggested[batch] = tuning.suggest_lr(lrs_b, losses_b, rule="steepest")
sweep, at_suggestion = {}, {}  # (optimizer, batch) -> mean val acc per lr; batch -> acc at the suggestion
seeds = list(range(cfg.sweep_seeds))
t0 = time.perf_counter()
for name, batch in tqdm(list(itertools.product(optimizers, cfg.batch_sizes)), desc="optimizer x batch"):
    members = list(itertools.product(sweep_lrs, seeds))
    if name == "sgd":  # the range test's rate trains beside the grid
        members += [(suggested[batch], s) for s in seeds]
    out = tuning.train_many(x_train, y_train, {"val": (x_val, y_val)}, optimizer=name, batch_size=batch,
                            epochs=cfg.sweep_epochs, lr=[lr for lr, _ in members], seed=[s for _, s in members],
                            **optimizers[name])
    acc = out["val_acc"][:, -1]
    sweep[name, batch] = acc[:len(sweep_lrs) * len(seeds)].view(len(sweep_lrs), len(seeds)).mean(1)
    if name == "sgd":
        at_suggestion[batch] = acc[len(sweep_lrs) * len(seeds):].mean().item()
print(f"sweep: {len(optimizers) * len(cfg.batch_sizes) * len(sweep_lrs) * len(seeds)} runs "
      f"in {time.perf_counter() - t0:.0f} s")

# %% figure="val-accuracy-by-lr-and-batch-size"
def best_lr_of(name, batch):
    return sweep_lrs[int(sweep[name, batch].argmax())]


middle = 64 if 64 in cfg.batch_sizes else cfg.batch_sizes[len(cfg.batch_sizes) // 2]
sweep_rows = []
for batch in cfg.batch_sizes:
    row = {"batch": batch}
    for name in optimizers:
        accs = sweep[name, batch]
        kept = float(accs[sweep_lrs.index(best_lr_of(name, middle))])
        row |= {f"{name} best lr": best_lr_of(name, batch), f"{name} best %": 100 * float(accs.max()),
                f"{name} at batch {middle}'s lr %": 100 * kept}
    row |= {"range test lr": suggested[batch], "range test %": 100 * at_suggestion[batch]}
    sweep_rows.append(row)
table(sweep_rows, columns=["batch", "sgd best lr", "sgd best %", f"sgd at batch {middle}'s lr %", "range test lr",
                           "range test %"],
      title=f"SGD (momentum 0.9), per batch size: the best learning rate, and what batch {middle}'s best rate\n"
            f"and the range test's rate give (val acc after {cfg.sweep_epochs} epochs, mean of {cfg.sweep_seeds} seeds)")
print()
table(sweep_rows, columns=["batch", "adamw best lr", "adamw best %", f"adamw at batch {middle}'s lr %"],
      title=f"AdamW (weight decay 0.01), per batch size: the best learning rate, and what batch {middle}'s best rate gives")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
plt.close(fig)
for ax, name in zip(axes, optimizers, strict=True):
    grid = torch.stack([sweep[name, b] for b in cfg.batch_sizes]).T * 100  # lr x batch
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", vmin=10, vmax=100)
    ax.set(xticks=range(len(cfg.batch_sizes)), xticklabels=cfg.batch_sizes, yticks=range(len(sweep_lrs)),
           yticklabels=[f"{lr:.0e}" for lr in sweep_lrs], xlabel="batch size", title=f"{name}: val acc %")
    ax.plot(range(len(cfg.batch_sizes)), [int(sweep[name, b].argmax()) for b in cfg.batch_sizes], "w-o", ms=4,
            label="best lr")
    if name == "sgd":  # a grid row is half a decade: row = 2 * log10(lr) + 8
        ax.plot(range(len(cfg.batch_sizes)), [2 * math.log10(suggested[b]) + 8 for b in cfg.batch_sizes], "r--x",
                label="range test")
    ax.legend(fontsize=8, loc="upper left")
axes[0].set_ylabel("learning rate")
fig.colorbar(im, ax=axes, shrink=0.8, label="val acc %")
fig

# %%
small, large = cfg.batch_sizes[0], cfg.batch_sizes[-1]
growth = {name: best_lr_of(name, large) / best_lr_of(name, small) for name in optimizers}
cost = {name: max(r[f"{name} best %"] - r[f"{name} at batch {middle}'s lr %"] for r in sweep_rows) for name in optimizers}
print(f"From batch {small} to {large} ({large // small}x), the best learning rate moves {growth['sgd']:.3g}x for SGD "
      f"and {growth['adamw']:.3g}x for AdamW (one grid row is 3.16x). Keeping batch {middle}'s best rate at every "
      f"batch size costs SGD up to {cost['sgd']:.1f} points and AdamW up to {cost['adamw']:.1f}.")
results.claim(f"SGD's best learning rate grows with the batch ({small} -> {large}, x)", growth["sgd"],
              holds=growth["sgd"] >= 3.1, condition=">= one grid row (3.16x)",
              source="linear scaling rule (Goyal et al. 2017); the article: batch size trades gradient accuracy")
results.claim("not retuning the rate costs SGD more than AdamW (worst points lost, SGD minus AdamW)",
              cost["sgd"] - cost["adamw"], holds=cost["sgd"] > cost["adamw"], asserted=False, condition="> 0")
near = [b for b in cfg.batch_sizes if 16 <= b <= 64] or list(cfg.batch_sizes)
range_gap = statistics.mean(100 * float(sweep["sgd", b].max()) - 100 * at_suggestion[b] for b in near)
print(f"At batch {near[0]}–{near[-1]}, training at the range test's rate ends {range_gap:.1f} points below the sweep's "
      f"best on average; the sweep cost {len(sweep_lrs)} full runs per seed, the range test {cfg.range_steps} steps or fewer.")
results.claim(f"the range test's rate is near the sweep's best (batch {near[0]}–{near[-1]}, points below)", range_gap,
              holds=range_gap <= 3, condition="<= 3 points below on average")

# %% [markdown]
# Read the two panels with the tables. The white line is the best learning rate per batch size.
# The linear rule predicts that SGD's best rate grows as fast as the batch (from batch 8 to 256,
# a 32x batch: a 32x rate, three grid rows); for Adam, a square-root rule is often quoted
# (Malladi et al., 2022: √32 ≈ 5.7x, one and a half rows). On a grid this coarse, with a few
# seeds, compare the factor printed above with both, and look at the bright band's *width* too:
# the columns "at batch 64's lr" say what it costs to change the batch and keep the rate, which
# is what people do by accident. The band that is wider is the optimizer that forgives it.
#
# Where does the red range-test line follow the white one, and where does it drift off? The range
# test reads a rate off its first steps, while the sweep scores the end of ten epochs. At small
# batches, ten epochs are many noisy steps, and a lower rate averages the noise out; at large
# batches there are few steps per epoch, and so short a run wants a higher rate. A short test sees
# neither effect: where the red line stays flat while the white one moves, this is why.
#
# A practical rule that follows: when you change the batch size with SGD, move the learning rate
# with it (and warm it up for large batches). With AdamW, retune it too; if its "at batch 64's lr"
# column loses less than SGD's (the second verdict above), a rate that was good at one batch size
# stays usable over a wider range.
#
# ## 5. Searching: the noise floor first
#
# The rest of the lab searches four hyper-parameters at once: learning rate (1e-3…3, log),
# momentum (0…0.99), hidden width (16…128, log) and weight decay (1e-6…0.1, log), each trial an
# MLP trained for `cfg.epochs` epochs with SGD at batch 64, scored on validation accuracy.
#
# Before comparing search strategies, measure how much a score moves when nothing but the seed
# changes. Here is one reasonable configuration trained `cfg.noise_seeds` times:

# %%
SPACE = {"lr": (1e-3, 3.0), "momentum": (0.0, 0.99), "hidden": (16, 128), "weight_decay": (1e-6, 1e-1)}
reference_config = dict(lr=0.05, momentum=0.9, hidden=64, weight_decay=1e-4)
noise = tuning.train_many(x_train, y_train, {"val": (x_val, y_val), "test": (x_test, y_test)}, epochs=cfg.epochs,
                          seed=[10_000 + s for s in range(cfg.noise_seeds)], **reference_config)
noise_val = 100 * noise["val_acc"][:, -1]
noise_floor = float(noise_val.std())
print(f"{reference_config}: val acc {noise_val.mean():.2f} % ± {noise_floor:.2f} (sd over {cfg.noise_seeds} seeds), "
      f"range {noise_val.min():.1f}–{noise_val.max():.1f}")

# %% [markdown]
# That spread is the noise floor. A search that reports its best trial picks the luckiest draw
# among its trials, so its best validation score is biased upwards; the test score of the chosen
# configuration tells the truth. Two strategies whose results differ by less than a few times
# this spread, over a few seeds, have not been told apart.
#
# ## 6. Grid, random, TPE, and pruning
#
# Five strategies, the same budget of `cfg.trials` trials each:
#
# * **grid:** 5 learning rates × momentum {0, 0.9} × width {16, 128} = 20 points, weight decay
#   fixed (a grid cannot afford a fourth axis at this budget), in a random order (give a
#   search more trials than that and the trials after the 20th are drawn at random);
# * **random:** Optuna's `RandomSampler` over the whole space;
# * **TPE:** Optuna's default Bayesian sampler (a Tree-structured Parzen Estimator). Note that its
#   first `n_startup_trials` trials (10 by default; `cfg.startup` here) are random: with a small
#   budget, much of "Bayesian" search is random search;
# * **TPE + median pruning:** after each epoch a trial reports its validation score; Optuna's
#   `MedianPruner` stops it when it is below the median of earlier trials at the same epoch;
# * **TPE + Hyperband:** `HyperbandPruner`, successive halving over several brackets.
#
# Optuna's ask/tell interface lets the lab drive the studies itself: `study.ask()` gives a trial,
# `trial.suggest_*` draws its parameters, `trial.report` and `trial.should_prune` run inside
# training, and `study.tell` closes it. Each study runs its trials one after another, as it would
# alone; at each round the lab trains one trial of every study (5 strategies ×
# `cfg.search_seeds` seeds) together with `train_many`, which is just a faster way to do the same
# work.

# %%
GRID = {"lr": [1e-3, 7.4e-3, 5.5e-2, 0.4, 3.0], "momentum": [0.0, 0.9], "hidden": [16, 128]}
STRATEGIES = ["grid", "random", "TPE", "TPE + median", "TPE + Hyperband"]


def make_study(strategy, seed):
    if strategy == "grid":
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed),
                                    pruner=optuna.pruners.NopPruner())
        points = [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]
        random.Random(seed).shuffle(points)
        for point in points:
            study.enqueue_trial(point | {"weight_decay": 1e-4})
        return study
    if strategy == "random":
        return optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed),
                                   pruner=optuna.pruners.NopPruner())
    pruner = {"TPE": optuna.pruners.NopPruner(),
              "TPE + median": optuna.pruners.MedianPruner(n_startup_trials=cfg.startup, n_warmup_steps=1),
              "TPE + Hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.epochs, reduction_factor=3)}
    return optuna.create_study(direction="maximize", pruner=pruner[strategy], study_name=f"{strategy} {seed}",
                               sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup))


def suggest(trial):
    return {"lr": trial.suggest_float("lr", *SPACE["lr"], log=True),
            "momentum": trial.suggest_float("momentum", *SPACE["momentum"]),
            "hidden": trial.suggest_int("hidden", *SPACE["hidden"], log=True),
            "weight_decay": trial.suggest_float("weight_decay", *SPACE["weight_decay"], log=True)}


searches = [(strategy, seed) for strategy in STRATEGIES for seed in range(cfg.search_seeds)]
studies = [make_study(strategy, seed) for strategy, seed in searches]
t0 = time.perf_counter()
for round_ in tqdm(range(cfg.trials), desc="trials"):
    trials = [study.ask() for study in studies]
    params = [suggest(trial) for trial in trials]

    def report(epoch, scores, trials=trials):
        """Each trial reports its validation score; returns which trials keep training."""
        keep = []
        for trial, score in zip(trials, scores["val"].tolist(), strict=True):
            if math.isnan(score):  # already pruned
                keep.append(False)
                continue
            trial.report(score, epoch)
            keep.append(not trial.should_prune())
        return keep

    out = tuning.train_many(x_train, y_train, {"val": (x_val, y_val), "test": (x_test, y_test)}, epochs=cfg.epochs,
                            on_epoch=report, seed=[1_000 * round_ + i for i in range(len(studies))],
                            **{key: [p[key] for p in params] for key in SPACE})
    for i, (study, trial) in enumerate(zip(studies, trials, strict=True)):
        trial.set_user_attr("epochs", int(out["epochs"][i]))
        if out["epochs"][i] < cfg.epochs:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            trial.set_user_attr("test_acc", float(out["test_acc"][i, -1]))
            study.tell(trial, float(out["val_acc"][i, -1]))
search_seconds = time.perf_counter() - t0
print(f"{len(studies)} studies x {cfg.trials} trials in {search_seconds:.0f} s")

# %%
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # the grid's unused points wait in its queue


def summary_of(strategy):
    chosen = [studies[i] for i, (s, _) in enumerate(searches) if s == strategy]
    return {"best val": [100 * s.best_value for s in chosen],
            "test of chosen": [100 * s.best_trial.user_attrs["test_acc"] for s in chosen],
            "epochs": [sum(t.user_attrs["epochs"] for t in s.get_trials(states=FINISHED)) for s in chosen],
            "pruned": [len(s.get_trials(states=(TrialState.PRUNED,))) for s in chosen]}


summaries = {strategy: summary_of(strategy) for strategy in STRATEGIES}
full_epochs = cfg.trials * cfg.epochs
rows = []
for strategy, s in summaries.items():
    (bv, bv_sd), (te, te_sd) = results.mean_sd(s["best val"]), results.mean_sd(s["test of chosen"])
    rows.append({"strategy": strategy, "best val %": bv, "val sd": bv_sd, "test of chosen %": te, "test sd": te_sd,
                 "epochs used %": 100 * statistics.mean(s["epochs"]) / full_epochs, "trials pruned": statistics.mean(s["pruned"])})
table(rows, title=f"{cfg.trials} trials per search, mean over {cfg.search_seeds} seeds; the noise floor is {noise_floor:.2f} points")

# %% [markdown]
# Best-so-far curves: after n trials, the best validation score each strategy has found (the
# mean over seeds, with a band of ± one sd). Pruned trials count as trials here; the table
# counts their epochs.

# %% figure="best-so-far-by-search-strategy"
curves = {}
for strategy in STRATEGIES:
    per_seed = [tuning.best_so_far([t.value if t.state == TrialState.COMPLETE else math.nan
                                    for t in studies[i].get_trials(states=FINISHED)])
                for i, (s, _) in enumerate(searches) if s == strategy]
    by_trial = list(zip(*per_seed, strict=True))
    mean = [100 * statistics.fmean(v for v in vals if not math.isnan(v)) if any(not math.isnan(v) for v in vals) else math.nan
            for vals in by_trial]
    sd = [100 * statistics.stdev([v for v in vals if not math.isnan(v)]) if sum(not math.isnan(v) for v in vals) > 1 else 0.0
          for vals in by_trial]
    curves[strategy] = (list(range(1, cfg.trials + 1)), mean, sd)
fig = viz.lines({k: (x, m) for k, (x, m, _) in curves.items()}, xlabel="trials", ylabel="best val acc so far %",
                title="Best so far, mean over seeds (± sd)", spread={k: s for k, (_, _, s) in curves.items()})
late = [m for _, m, _ in curves.values() for m in m[len(m) // 3:] if not math.isnan(m)]
fig.axes[0].set_ylim(min(late) - 5, 100)  # the first trials are far below: zoom on the race
fig

# %% [markdown]
# Which differences survive the noise? Each seed ran every strategy, so compare them seed by seed
# (paired): the difference in the **test** accuracy of the configuration each one chose, against
# random search.

# %%
def compare(strategy, baseline="random"):
    diffs = [a - b for a, b in zip(summaries[strategy]["test of chosen"], summaries[baseline]["test of chosen"], strict=True)]
    mean, sd = results.mean_sd(diffs)
    n = len(diffs)  # a 95 % interval for the mean difference: Student's t with n - 1 degrees of freedom
    half = scipy.stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else math.inf
    needed = tuning.seeds_needed(diffs) if len(diffs) > 1 and sd > 0 else math.inf
    return diffs, mean, half, needed


paired = []
for strategy in STRATEGIES:
    if strategy == "random":
        continue
    _, mean, half, needed = compare(strategy)
    verdict = "better" if mean - half > 0 else "worse" if mean + half < 0 else "not told apart"
    paired.append({"strategy": strategy, "test acc − random (points)": mean, "± (95 %)": half,
                   "verdict": verdict, "seeds needed": needed})
table(paired, title=f"Paired against random search over {cfg.search_seeds} seeds")

# %% [markdown]
# "Seeds needed" is how many paired seeds a test at the 5 % level would need to detect the
# measured mean difference 80 % of the time, given its measured spread (exercise 2 writes it). A
# strategy "not told apart" from random with a large number there is, on this problem, no better
# or worse in any way that this budget can show.
#
# Pruning is judged differently: it is meant to reach the same accuracy for less compute.

# %%
_, prune_diff, prune_half, _ = compare("TPE + median", baseline="TPE")
saved = 100 * (1 - statistics.mean(summaries["TPE + median"]["epochs"]) / statistics.mean(summaries["TPE"]["epochs"]))
_, hb_diff, _, _ = compare("TPE + Hyperband", baseline="TPE")
hb_saved = 100 * (1 - statistics.mean(summaries["TPE + Hyperband"]["epochs"]) / statistics.mean(summaries["TPE"]["epochs"]))
print(f"Median pruning trains {saved:.0f} % fewer epochs than TPE alone; its chosen configurations score "
      f"{prune_diff:+.2f} points on test (± {prune_half:.2f}). Hyperband: {hb_saved:.0f} % fewer, {hb_diff:+.2f} points.")
results.claim("median pruning saves epochs (%)", saved, holds=saved >= 20, condition=">= 20 % of TPE's epochs")
results.claim("... at equal accuracy (test points vs TPE, mean)", prune_diff, holds=prune_diff + prune_half >= 0,
              condition=f"the paired 95 % interval (± {prune_half:.2f}) reaches 0: no loss the seeds can show")

# %% [markdown]
# Optuna draws its own plots; `optuna.visualization` needs plotly (interactive, a JavaScript
# renderer), while `optuna.visualization.matplotlib` (marked experimental) draws the same plots
# as static figures, which is what this lab uses: no extra package, and the figures survive in
# an exported notebook. Which parameters mattered? The random searches' trials are spread evenly
# over the space, which is what a sensitivity analysis needs: pooled into one study, Optuna's
# `get_param_importances` (fANOVA: the share of the score's variance each parameter explains)
# and its slice plot answer it.

# %%
pooled = optuna.create_study(direction="maximize")
pooled.add_trials([t for i, (s, _) in enumerate(searches) if s == "random"
                   for t in studies[i].get_trials(states=(TrialState.COMPLETE,))])
importances = optuna.importance.get_param_importances(pooled, evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=32, seed=0))
table([{"parameter": k, "importance": v} for k, v in importances.items()],
      title=f"fANOVA importance over {len(pooled.trials)} random trials")
axes = optuna_plots.plot_slice(pooled, params=list(SPACE))
fig = axes[0].figure
plt.close(fig)
fig.set_size_inches(12, 3.2)
for ax in axes:
    ax.xaxis.set_minor_formatter(plt.NullFormatter())  # log axes: major ticks only
    if ax.get_xlabel() == "hidden":  # 16…128 holds a single major tick: label the widths
        ax.set_xticks([16, 32, 64, 128], ["16", "32", "64", "128"])
axes[0].set_ylabel("val accuracy (objective)")
fig

# %% [markdown]
# The learning rate and momentum set the step together (the effective step is about
# lr / (1 − momentum)), so their slices are blurred by each other; the importance table ranks
# them. Where one or two parameters carry most of the importance, this is the random-search
# argument (Bergstra & Bengio, 2012): a grid spends its budget repeating values of the
# parameters that do not matter, while every random trial tries a new value of each. This lab's
# grid tries 5 learning rates in 20 trials; a random search of the same size tries 20. Against
# that, the grid here was designed with sense (momentum 0.9 in, weight decay small), and random
# search spends trials in bad corners of a wide space: the table in section 6 shows which effect
# won on this problem.
#
# ## 7. Exercises
#
# **Exercise 1 (the taught step).** Write the other common reading of a range test:
# `my_suggest_lr(lrs, losses)` returns a tenth of the learning rate at which the *smoothed* loss
# is lowest. Use `tuning.smooth(losses)` (a debiased moving average, β = 0.9) and ignore
# non-finite values.
#
# <details><summary>Hint</summary>
#
# `s = tuning.smooth(losses)`; keep the rows where `torch.isfinite(s)`; `lrs[argmin(s)] / 10`, as a
# Python float.
# </details>

# %%
@checks.exercise
def my_suggest_lr(lrs, losses):
    # YOUR CODE HERE
    raise NotImplementedError


def range_curves(g):
    n = int(torch.randint(5, 60, (1,), generator=g))
    lrs = torch.logspace(-5, 1, n, dtype=torch.float64)
    losses = 2.3 - torch.linspace(0, 1, n, dtype=torch.float64) * torch.rand(1, generator=g).item() * 2
    losses = losses + 0.1 * torch.rand(n, generator=g, dtype=torch.float64) + torch.linspace(0, 1, n, dtype=torch.float64) ** 8 * 20
    if n > 10 and torch.rand(1, generator=g).item() < 0.3:
        losses[-1] = math.inf
    return lrs, losses


checks.check_function(my_suggest_lr, reference=lambda lrs, losses: tuning.suggest_lr(lrs, losses, rule="min/10"),
                      make_inputs=range_curves, trials=10, name="my_suggest_lr",
                      hint="a tenth of the rate where tuning.smooth(losses) is lowest, over the finite values")
# checks.show_solution("my_suggest_lr")

# %% [markdown]
# Then use it: in the first cell of section 4, replace
# `tuning.suggest_lr(lrs_b, losses_b, rule="steepest")` by `my_suggest_lr(lrs_b, losses_b)`, rerun
# section 4, and compare the two readings' gaps to the sweep's best at each batch size.
#
# **Exercise 2.** How many seeds does a comparison need? For paired differences d₁…dₙ with mean
# m and standard deviation s, a two-sided test at level α = 5 % detects m with probability
# (power) 80 % when n ≥ ((z₀.₉₇₅ + z₀.₈) · s / |m|)², with z₀.₉₇₅ = 1.959964 and z₀.₈ = 0.841621.
# Write `my_seeds_needed(differences)`, rounding up to a whole number of seeds (a float;
# `math.inf` when m = 0).
#
# <details><summary>Hint</summary>
#
# `d = torch.as_tensor(differences, dtype=torch.float64)`; `m, s = d.mean().item(), d.std().item()`
# (`std` is the sample sd, n − 1); then `float(math.ceil(((1.959964 + 0.841621) * s / abs(m)) ** 2))`.
# </details>

# %%
@checks.exercise
def my_seeds_needed(differences):
    # YOUR CODE HERE
    raise NotImplementedError


def difference_samples(g):
    n = int(torch.randint(2, 30, (1,), generator=g))
    return torch.randn(n, generator=g, dtype=torch.float64) * torch.rand(1, generator=g).item() * 3 + 0.5


checks.check_function(my_seeds_needed, reference=tuning.seeds_needed, make_inputs=difference_samples, trials=10,
                      hint="ceil(((1.959964 + 0.841621) * sd / |mean|) ** 2), with the sample sd")
# checks.show_solution("my_seeds_needed")

# %% [markdown]
# **Exercise 3 (open).** (a) In section 6, give TPE its default 10 random start-up trials
# (`cfg["startup"] = 10`, which also delays the median pruner) and rerun section 6: how many of
# the 20 trials are then Bayesian, and does the TPE row move beyond the noise? (b) Make the grid
# smarter with what sections 2–4 taught (which learning rates, which momentum?), rerun, and
# explain why this is not a fair comparison any more. (c) Halve `cfg.epochs` (`cfg["epochs"] = 5`,
# then rerun sections 5–6): do the strategies' ranks change? (d) Compare the "best val %" and
# "test of chosen %" columns of the table in section 6. If the chosen configurations score lower
# on test than on validation, why, and by how much would you expect the gap to grow with more
# trials?
#
# ## Record
#
# This cell saves the claims above with the other figures worth keeping and your exercises'
# verdicts.

# %%
metrics = {"article loop val acc %": 100 * article_acc[-1], "noise floor (val acc sd, points)": noise_floor,
           "search seconds": search_seconds, f"range test suggestion, batch {middle}": suggested[middle],
           "SGD best-lr growth (x)": growth["sgd"], "AdamW best-lr growth (x)": growth["adamw"],
           "Hyperband epochs saved %": hb_saved, "Hyperband test vs TPE (points)": hb_diff}
for row in rows:
    metrics[f"{row['strategy']}: test of chosen %"] = row["test of chosen %"]
    metrics[f"{row['strategy']}: epochs used %"] = row["epochs used %"]
for row in sweep_rows:
    metrics[f"batch {row['batch']}: SGD best lr"] = row["sgd best lr"]
    metrics[f"batch {row['batch']}: AdamW best lr"] = row["adamw best lr"]
    metrics[f"batch {row['batch']}: range test acc %"] = row["range test %"]
results.record(metrics, notes=f"Digits (897 train / 450 val / 450 test), one-hidden-layer MLPs; {cfg.trials} trials x "
                              f"{cfg.search_seeds} seeds per strategy, {cfg.epochs} epochs per trial.")

# %% [markdown]
# ## Going further
#
# * **GPU scale.** `LAB_SCALE=gpu` runs the same 20 trials per search over 20 seeds (the budget
#   stays the grid's size; the seeds double) and a 40-seed noise floor, and 3 seeds per cell of
#   the batch-size sweep: the intervals shrink by about √2.
# * **Schedules.** A range test's rate is a peak, not a constant: the one-cycle schedule (Smith &
#   Topin, 2019; `torch.optim.lr_scheduler.OneCycleLR`) warms up to it and anneals down.
# * **Real searches.** Optuna's `study.optimize(objective, n_trials=…, n_jobs=…)` with an RDB
#   storage (`sqlite:///data/study.db`) lets several processes share one study; its dashboard
#   (`optuna-dashboard`) shows a running study. Multi-fidelity methods (Hyperband, ASHA) pay most
#   when a trial is long and early scores predict late ones.
# * **Read more.** Bergstra & Bengio (2012), *Random Search for Hyper-Parameter Optimization*;
#   Smith (2017), *Cyclical Learning Rates for Training Neural Networks*; Goyal et al. (2017),
#   *Accurate, Large Minibatch SGD*; Li et al. (2018), *Hyperband*; Akiba et al. (2019), *Optuna*.
