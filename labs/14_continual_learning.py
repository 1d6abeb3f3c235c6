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
# # Lab 14 — Continual learning: catastrophic forgetting and elastic weight consolidation
#
# **Source:** 《突破AI技术壁垒:从算法创新到生态重构的路径探索》 ("Breaking through AI's technical
# barriers: exploring the path from algorithmic innovation to ecosystem reconstruction"), section 二
# "算法创新" (algorithmic innovation), part 3 "增量学习与持续训练" (incremental learning and continual
# training):
#
# > 针对动态数据场景,采用Elastic Weight Consolidation(EWC)算法防止灾难性遗忘。
#
# > "For scenarios where the data keeps changing, use the Elastic Weight Consolidation (EWC)
# > algorithm to prevent catastrophic forgetting."
#
# It prints a TensorFlow snippet (section 1 below) and gives no figure. This lab measures what
# EWC does, and where it does not help, on real 8×8 handwritten digits.
#
# **What you will measure**
#
# 1. the article's code, and why it neither runs nor computes EWC as printed;
# 2. **catastrophic forgetting**: a network trained on task A, then on task B, and its accuracy on A;
# 3. EWC written here: the diagonal **Fisher information** from per-example gradients
#    (`torch.func.vmap(grad(...))`) and the penalty `λ/2 · Σᵢ Fᵢ (θᵢ − θ*ᵢ)²`;
# 4. three continual settings (split digits with a head per task, permuted digits, class-incremental
#    with one shared head), each with plain fine-tuning, EWC and a small **replay buffer**, over
#    seeds; a **λ sweep** on permuted digits, and λ chosen on validation data.
#
# **Objectives.** After this lab you can
#
# * compute per-example gradients with `torch.func` and a diagonal Fisher from them, and say
#   which Fisher (empirical or the model's) you computed;
# * write the EWC penalty, check it against a reference, and choose its λ on validation data;
# * tell task-, domain- and class-incremental learning apart, and predict where a
#   weight-regularisation method such as EWC can work and where it cannot;
# * compare EWC with the simplest strong baseline, replaying a few stored examples.
#
# **Prerequisites.** Lab 00 (setup) and lab 01 (a training loop with `train.fit`); lab 11 shows
# how several small models train at once. Cross-entropy, softmax, what a gradient is.
#
# **Time.** `smoke`: about 15 s; `cpu` (2 cores): about 1 min of computing; `gpu`: a few minutes
# (more seeds and a finer λ grid; the models stay on the CPU). Reading and the exercises: 45–60 min.
#
# Answers to the open questions and exercises: `docs/answers/14_continual_learning.md`.

# %%
import math
import statistics

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from lablib import table
from lablib.core import checks, config, env, results
from lablib.data import datasets
from lablib.methods import continual
from lablib.nets import ensemble, models, train

cfg = config.profile(
    smoke=dict(seeds=1, hidden=(400,), steps_a=30, steps_b=40, batch_size=64, lr=1e-3, lams=(1e2, 1e3),
               per_class=10, replay_fraction=0.5, eval_every=10, budget=3.0),
    cpu=dict(seeds=3, hidden=(400,), steps_a=400, steps_b=800, batch_size=64, lr=1e-3, lams=(1e1, 1e2, 1e3, 1e4, 1e5),
             per_class=10, replay_fraction=0.5, eval_every=100, budget=3.0),
    gpu=dict(seeds=5, hidden=(400,), steps_a=400, steps_b=800, batch_size=64, lr=1e-3,
             lams=(1e0, 1e1, 3e1, 1e2, 3e2, 1e3, 3e3, 1e4, 1e5), per_class=10, replay_fraction=0.5, eval_every=50, budget=3.0),
)
torch.set_num_threads(1)  # small models: a second thread costs more than it saves on a busy 2-core machine
# every model stays on the CPU at every scale: too small for a GPU to pay off (the gpu profile buys seeds and λ values)
config.seed_everything(0)
splits = datasets.digits(val=0.15, test=0.25, seed=0)
x_train, y_train = splits.train.x.flatten(1), splits.train.y  # the MLPs read 64 pixels per image
x_val, y_val = splits.val.x.flatten(1), splits.val.y
x_test, y_test = splits.test.x.flatten(1), splits.test.y
print(f"digits: {len(x_train)} train / {len(x_val)} validation / {len(x_test)} test images")
print(env.line())
cfg

# %% [markdown]
# ## 1. The article's code, as printed
#
# ```python
# import numpy as np
# from tensorflow.keras.models import Model
# from tensorflow.keras.layers import Input, Dense
# # 初始化基础模型 (the base model)
# inputs = Input(shape=(784,))
# x = Dense(512, activation='relu')(inputs)
# outputs = Dense(10, activation='softmax')(x)
# model = Model(inputs, outputs)
# # EWC正则化项实现 (the EWC regulariser)
# def ewc_loss(fisher_matrix, old_weights, model):
#     def loss(y_true, y_pred):
#         ce_loss = model.compiled_loss(y_true, y_pred)
#         ewc_term = 0
#         for i, (layer, fisher) in enumerate(zip(model.layers, fisher_matrix)):
#             if hasattr(layer, 'kernel'):
#                 ewc_term += tf.reduce_sum(fisher * tf.square(layer.kernel - old_weights[i]))
#         return ce_loss + 0.1 * ewc_term # 0.1为权重系数 (0.1 is the weight coefficient)
#     return loss
# ```
#
# (The page lost the indentation; it is restored here.) This lab's environment has PyTorch, not
# TensorFlow, so the snippet is read rather than run. What stops it, and what is not EWC in it:
#
# * **`tf` is never imported.** Only `numpy` (then unused) and two Keras modules are; the line
#   that adds up the penalty raises `NameError: name 'tf' is not defined` whenever it is reached.
# * **`model.compiled_loss` is the wrong loss.** It is only set by `model.compile(...)`, and it is
#   the container of the loss given to `compile`. Compile the model with `loss=ewc_loss(...)`,
#   the way a Keras loss `loss(y_true, y_pred)` is meant to be used, and `compiled_loss` calls
#   `loss`, which calls `compiled_loss`…: unbounded recursion (a `RecursionError`, before the
#   `tf` line is ever reached). The task's loss must be named directly
#   (`keras.losses.categorical_crossentropy(y_true, y_pred)`).
# * **The Fisher and the old weights are never computed.** `fisher_matrix` and `old_weights` are
#   arguments that nothing in the article builds, and the Fisher is the whole method: it says
#   which weights mattered for the old task.
# * **Weights paired by layer position.** `zip(model.layers, fisher_matrix)` and `old_weights[i]`
#   index by the position in `model.layers`, whose first entry is the `InputLayer` (no kernel). A
#   list with one Fisher per kernel, the natural way to build it, is shifted by one; `zip` stops at
#   the shorter list without a word.
# * **Biases are left out.** Only `layer.kernel` is held; each `Dense` layer's bias may drift
#   freely, and a bias shift alone can wreck the old task.
# * **The weight is arbitrary.** EWC's penalty is `λ/2 · Σ F (θ − θ*)²`; `0.1 · Σ …` is λ = 0.2, and
#   nothing says why. The right λ depends on how the Fisher is normalised (a mean or a sum over the
#   examples: a factor of N) and on the model; section 5 shows it must be chosen by measurement.
# * The inputs are MNIST's 784 pixels; these digits have 64.
#
# ## 2. The problem: catastrophic forgetting
#
# **Task A** is the digits as they are; **task B** is the same digits with their 64 pixels
# shuffled by one fixed permutation (the same for every image). To a fully connected network B is
# as hard as A, and it needs the same output classes, so B's training rewrites the weights A
# relied on. A one-hidden-layer MLP trained on A, then on B, with lablib's training loop:

# %%
perm = continual.permutation(64, seed=1)  # task B's pixel order


def make_model(seed):
    torch.manual_seed(seed)
    return models.MLP(64, cfg.hidden, num_classes=10)


def steps_on(x, y, seed):
    """Endless (x, y) batches of one task, drawn with replacement (seeded)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=g)
        yield x[idx], y[idx]


def accuracy(model, x, y):
    with torch.no_grad():
        return 100 * train.accuracy(model(x), y)


x_train_b, x_test_b = continual.permute_pixels(x_train, perm), continual.permute_pixels(x_test, perm)
net = make_model(0)
train.fit(net, steps_on(x_train, y_train, 0), steps=cfg.steps_a, lr=cfg.lr, desc="task A")
a_after_a, b_after_a = accuracy(net, x_test, y_test), accuracy(net, x_test_b, y_test)
train.fit(net, steps_on(x_train_b, y_train, 1), steps=cfg.steps_b, lr=cfg.lr, desc="task B")
a_after_b, b_after_b = accuracy(net, x_test, y_test), accuracy(net, x_test_b, y_test)
table([{"after training on": "A", "task A test acc %": a_after_a, "task B test acc %": b_after_a},
       {"after training on": "A, then B", "task A test acc %": a_after_b, "task B test acc %": b_after_b}],
      title="One MLP, trained on A then on B (plain fine-tuning)")
print(f"Before training on B the network scored {b_after_a:.1f} % on it (10 % is chance). "
      f"Training on B cost task A {a_after_a - a_after_b:.1f} points.")

# %% [markdown]
# Nothing told the network to keep A: B's gradient moves every weight that lowers B's loss,
# including those A depended on. **Elastic weight consolidation** (Kirkpatrick et al., 2017) adds
# a spring to each weight, pulling it back to its value after A (θ*), stiff where the weight
# mattered for A and slack where it did not:
#
# L(θ) = L_B(θ) + λ/2 · Σᵢ Fᵢ (θᵢ − θ*ᵢ)²
#
# The stiffness Fᵢ is the diagonal of the **Fisher information** of task A at θ*: the mean over
# A's examples of the squared gradient of the log-likelihood, `(∂ log p(y|x) / ∂θᵢ)²`. It is the
# curvature of A's loss around θ* (for a well-fit model), so the penalty is a quadratic stand-in
# for "don't raise A's loss", with no A data needed while training B.
#
# ## 3. EWC, written in the lab
#
# The Fisher needs one gradient **per example**, not the batch's mean gradient. `torch.func` gives
# it without a Python loop: `grad(f)` is the gradient of a function of the parameters, and `vmap`
# maps it over the examples. The model is called through `functional_call` with the parameters
# passed in, so `grad` can differentiate with respect to them.
#
# One trap first: inside `vmap` a label is a batched 0-d tensor, and indexing with it
# (`log_probs[y]`) needs its Python value, which `vmap` cannot give:

# %%
params = {n: p.detach() for n, p in net.named_parameters()}


def log_likelihood_indexed(p, x, y):
    log_probs = torch.log_softmax(functional_call(net, p, (x.unsqueeze(0),))[0], dim=-1)
    return log_probs[y]  # fails: y is a batched tensor inside vmap


try:
    vmap(grad(log_likelihood_indexed), in_dims=(None, 0, 0))(params, x_train[:4], y_train[:4])
except RuntimeError as err:
    print("RuntimeError:", str(err).split(". ")[0][:150], "...")

# %% [markdown]
# `log_probs.gather(0, y.unsqueeze(0))` picks the same entry with a tensor operation, and `vmap`
# batches it. (`F.cross_entropy` on a batch of one also works: it gathers internally.)
#
# **Which Fisher?** The Fisher proper is an expectation over labels drawn from the *model's* own
# predictive distribution p(y | x, θ*). Many implementations use the true labels instead: the
# **empirical Fisher**. This lab uses the empirical Fisher, as most EWC code does: one gradient
# per example (the exact expectation over 10 classes costs 10), and no sampling noise. They are
# not the same thing (Kunstner et al., 2019). On a model that fits its data the empirical Fisher
# is the *smaller*: an example classified correctly with probability p contributes in proportion
# to (1 − p)² with its true label, against p(1 − p) in the expectation. What EWC needs most is
# the *ranking* (which weights matter); a uniform difference in scale is absorbed by λ, which is
# chosen by measurement anyway. Exercise 1 computes the model's Fisher exactly and compares the
# two; you can then rerun the experiments with it.
#
# For the task-incremental setting (section 4), a task's **head** is a subset of the output
# classes; the log-likelihood is then the softmax over that head only (`classes`).
#
# This is the step the lab teaches. Every experiment below runs these two functions; edit them and
# rerun, and the experiments run your version.

# %%
def fisher_diagonal(model, x, y, classes=None):
    """Empirical Fisher diagonal: mean over examples of (d log p(y_n | x_n) / d theta)^2, per parameter."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    outside = None
    if classes is not None:  # a task's head: the softmax over its classes only
        outside = ~torch.isin(torch.arange(model(x[:1]).shape[1]), torch.tensor(classes))

    def log_likelihood(p, xi, yi):
        logits = functional_call(model, p, (xi.unsqueeze(0),))[0]
        if outside is not None:
            logits = logits.masked_fill(outside, -math.inf)
        return torch.log_softmax(logits, dim=-1).gather(0, yi.unsqueeze(0)).squeeze(0)

    per_example = vmap(grad(log_likelihood), in_dims=(None, 0, 0))(params, x, y)  # name -> (N, *shape)
    return {n: (g ** 2).mean(0) for n, g in per_example.items()}


def ewc_penalty(params, fisher, anchor, lam):
    """lam/2 * sum_i F_i * (theta_i - theta*_i)^2 over the parameters the Fisher names."""
    return lam / 2 * sum((fisher[n] * (params[n] - anchor[n]) ** 2).sum() for n in fisher)


# %% [markdown]
# The checks compare them with `lablib.methods.continual`'s tested versions on random small
# models and data (values and, for the penalty, its gradient λ F (θ − θ*)).

# %%
def fisher_inputs(g):
    torch.manual_seed(int(torch.randint(0, 10_000, (1,), generator=g)))
    d, k, n = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((3, 9), (2, 6), (4, 30)))
    model = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.Tanh(), torch.nn.Linear(8, k))
    return model, torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def head_inputs(g):
    model, x, _ = fisher_inputs(g)
    k = model(x[:1]).shape[1]
    head = torch.randperm(k, generator=g)[: max(1, k // 2)].tolist()
    y = torch.tensor(head)[torch.randint(0, len(head), (len(x),), generator=g)]
    return model, x, y, head


def penalty_inputs(g):
    shapes = [(int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))), (3,)]
    names = ["w", "b"]
    anchor = {n: torch.randn(s, generator=g, dtype=torch.float64) for n, s in zip(names, shapes, strict=True)}
    fisher = {n: torch.rand(s, generator=g, dtype=torch.float64) for n, s in zip(names, shapes, strict=True)}
    params = {n: (a + torch.randn(a.shape, generator=g, dtype=torch.float64)).requires_grad_() for n, a in anchor.items()}
    return params, fisher, anchor, float(10 ** torch.empty(1).uniform_(-1, 4, generator=g))


checks.agrees(fisher_diagonal, reference=continual.fisher_diagonal, make_inputs=fisher_inputs, trials=5)
checks.agrees(fisher_diagonal, reference=continual.fisher_diagonal, make_inputs=head_inputs, trials=5,
              name="fisher_diagonal (one head)")
checks.agrees(ewc_penalty, reference=continual.ewc_penalty, make_inputs=penalty_inputs, trials=8)

# %% [markdown]
# ## 4. Three settings, three methods, several seeds
#
# Continual learning comes in three settings (van de Ven & Tolias, 2019), and they are not equally hard:
#
# | setting | task A | task B | at test time |
# | --- | --- | --- | --- |
# | **split digits** (task-incremental) | digits 0–4 | digits 5–9 | the task is known: its own head (5 classes) |
# | **permuted digits** (domain-incremental) | the digits | the same digits, pixels permuted | 10 classes, one head, same labels |
# | **class-incremental** | digits 0–4 | digits 5–9 | one shared 10-class head: which of all 10? |
#
# Each gets three methods after training on A: **fine-tuning** (train on B, nothing else),
# **EWC** (the penalty above, with A's Fisher and weights), and **replay**: keep a small memory of
# A (`cfg.per_class` images per class, drawn at random) and fill `cfg.replay_fraction` of every B
# batch from it. Replay is the baseline EWC is usually compared with: it needs stored data, EWC
# only a copy of the weights and the Fisher.
#
# A "head per task" is implemented with one 10-output layer and a mask: in the split setting each
# example's logits outside its task's classes are set to −∞, so the softmax runs over its own head
# (rows 0–4 of the output layer for A, 5–9 for B, exactly two separate heads).
#
# **Many small models at once.** Every run here is a small MLP, and on a CPU its step is mostly
# overhead. `ensemble.Ensemble` (from `lablib.nets`) stacks K models (`torch.func.stack_module_state`) and runs them
# with `vmap`: one step trains all of them, each member on its own batches (`member_batches`)
# with its own mask, Fisher, anchor and λ. Adam updates each weight element by element, so each
# member trains as it would alone (lablib's tests check it against separate runs). The loss of
# one step, for all members:

# %%
SETTINGS = ("split", "permuted", "class-incremental")
FIRST, SECOND = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
task_of = torch.tensor([0] * 5 + [1] * 5)
HEADS = {"split": task_of[:, None] == task_of[None, :],  # label -> the classes of its task's head
         "permuted": torch.ones(10, 10, dtype=torch.bool), "class-incremental": torch.ones(10, 10, dtype=torch.bool)}


def task_data(setting, task, x, y):
    """(x, y) of task "A" or "B" of a setting, from one split of the digits."""
    if setting == "permuted":
        return (x, y) if task == "A" else (continual.permute_pixels(x, perm), y)
    return continual.split_classes(x, y, FIRST if task == "A" else SECOND)


def member_losses(ens, x, y, heads):
    """Cross-entropy of each member (K,) on its batch: x (K, B, 64), y (K, B), heads (K, 10, 10)."""
    logits = ens(x)
    allowed = heads[torch.arange(len(heads))[:, None], y]  # (K, B, 10): each example's head
    logits = logits.masked_fill(~allowed, -math.inf)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)


@torch.no_grad()
def member_accuracy(ens, x, y, heads):
    """Accuracy % of each member (K,) on one evaluation set shared by all."""
    logits = ens(x.expand(len(ens), *x.shape))
    return 100 * (logits.masked_fill(~heads[:, y], -math.inf).argmax(-1) == y).float().mean(1)


def train_members(models, data, heads, steps, *, fisher=None, anchor=None, lams=None, replay=None, curves=None, seed=0,
                  desc="train"):
    """Train the models together; returns the Ensemble and, every cfg.eval_every steps, each curve set's accuracies."""
    ens = ensemble.Ensemble(models)
    heads = torch.stack(heads)
    batches = ensemble.member_batches(data, cfg.batch_size, seed=seed, replay=replay, replay_fraction=cfg.replay_fraction)

    def step(model, batch):
        loss = member_losses(model, *batch, heads).sum()
        if fisher is not None:  # the lab's ewc_penalty, once per member (its own F, θ*, λ)
            loss = loss + vmap(ewc_penalty)(model.params(), fisher, anchor, lams).sum()
        return loss

    history = {name: [] for name in curves or {}}

    def evaluate_fn(model):
        for name, (x, y) in (curves or {}).items():
            history[name].append(member_accuracy(model, x, y, heads))
        return {}

    evaluate_fn(ens)  # the curves start at step 0
    train.fit(ens, batches, step=step, steps=steps, lr=cfg.lr, log_every=cfg.eval_every, evaluate_fn=evaluate_fn, desc=desc)
    return ens, {name: torch.stack(v, 1) for name, v in history.items()}  # name -> (K, points)


# %% [markdown]
# **Task A**, for every setting and seed at once. The split setting trains A with its head
# (classes 0–4); the class-incremental setting trains the same images against all 10 outputs.
# Then each member's Fisher on its task A, with the lab's `fisher_diagonal`:

# %%
seeds = list(range(cfg.seeds))
members_a = [(setting, seed) for seed in seeds for setting in SETTINGS]
ens_a, _ = train_members([make_model(seed) for _, seed in members_a],
                         [task_data(s, "A", x_train, y_train) for s, _ in members_a],
                         [HEADS[s] for s, _ in members_a], cfg.steps_a, desc="task A, all members")
after_a = {}
for k, (setting, seed) in enumerate(members_a):
    model = ens_a.member(k)
    x_a, y_a = task_data(setting, "A", x_train, y_train)
    after_a[setting, seed] = dict(
        model=model, anchor={n: p.detach().clone() for n, p in model.named_parameters()},
        fisher=fisher_diagonal(model, x_a, y_a, classes=FIRST if setting == "split" else None),
        test=member_accuracy(ens_a, *task_data(setting, "A", x_test, y_test), HEADS[setting].expand(len(ens_a), 10, 10))[k].item())
table([{"setting": s, "task A test acc % (mean of seeds)": statistics.mean(after_a[s, sd]["test"] for sd in seeds)}
       for s in SETTINGS], title=f"After task A ({cfg.steps_a} steps)")
f0 = after_a["permuted", 0]["fisher"]
entries = torch.cat([f.flatten() for f in f0.values()]).sort(descending=True).values
share = {top: 100 * entries[: len(entries) * top // 100].sum().item() / entries.sum().item() for top in (1, 10)}
print("Fisher of the permuted setting's model (seed 0), mean per parameter: "
      + ", ".join(f"{n} {f.mean():.2e}" for n, f in f0.items())
      + f".\nThe largest 1 % of its {len(entries):,} entries hold {share[1]:.0f} % of the total, the largest 10 % hold {share[10]:.0f} %.")


# %% [markdown]
# Were the Fisher spread evenly, the largest 1 % and 10 % of its entries would hold 1 % and 10 %
# of the total; the printed shares say how concentrated it is. The entries that hold most of it
# are the stiff springs; the many weights with a tiny Fisher are nearly free, and that freedom is
# what leaves room for task B.
#
# ## 5. Permuted digits: how large should λ be?
#
# λ has no natural scale (it multiplies a Fisher whose size depends on the model, the data and
# the normalisation; this lab averages over examples). Too small, and the springs do nothing; too
# large, and B cannot be learned. So every seed runs fine-tuning, replay and EWC at each λ of
# `cfg.lams`, all at once, and λ is **chosen on the validation split**: the largest λ whose task-B
# validation accuracy stays within `cfg.budget` points of fine-tuning's (3 points: the cost on B
# that section 6's claim accepts). The test split is only used for the figures reported. The
# validation split is small (one image is about 0.4 points), so its estimate of the cost is noisy:
# compare the table's last two columns, the cost on B measured on the test and on the validation
# split.

# %%
ensembles = {}


def stacked(dicts):
    return {n: torch.stack([d[n] for d in dicts]) for n in dicts[0]}


def run_setting(setting, methods, seed_offset):
    """Train B for every (method, λ, replay) of `methods` and every seed; return rows of test/val accuracies and curves."""
    members = [(seed, name, lam, rep) for seed in seeds for name, lam, rep in methods]
    start = [after_a[setting, seed] for seed, *_ in members]
    zero = {n: torch.zeros_like(f) for n, f in start[0]["fisher"].items()}
    x_a_test, y_a_test = task_data(setting, "A", x_test, y_test)
    x_b_test, y_b_test = task_data(setting, "B", x_test, y_test)
    ens, curves = train_members(
        [s["model"] for s in start], [task_data(setting, "B", x_train, y_train)] * len(members),
        [HEADS[setting]] * len(members), cfg.steps_b,
        fisher=stacked([s["fisher"] if lam > 0 else zero for s, (_, _, lam, _) in zip(start, members, strict=True)]),
        anchor=stacked([s["anchor"] for s in start]), lams=torch.tensor([float(lam) for _, _, lam, _ in members]),
        replay=[continual.replay_buffer(*task_data(setting, "A", x_train, y_train), cfg.per_class, seed=seed) if rep else None
                for seed, _, _, rep in members],
        curves={"A": (x_a_test, y_a_test), "B": (x_b_test, y_b_test)}, seed=seed_offset, desc=f"{setting}: task B")
    ensembles[setting] = ens, members  # kept for exercise 3
    heads = torch.stack([HEADS[setting]] * len(members))
    acc = {f"{t} {part}": member_accuracy(ens, *task_data(setting, t, xs, ys), heads)
           for t in ("A", "B") for part, (xs, ys) in (("test", (x_test, y_test)), ("val", (x_val, y_val)))}
    rows = [dict(seed=seed, method=name, lam=lam, a_before=after_a[setting, seed]["test"],
                 **{key: v[k].item() for key, v in acc.items()}, curve_a=curves["A"][k], curve_b=curves["B"][k])
            for k, (seed, name, lam, _) in enumerate(members)]
    return rows


def mean_sd(values):
    values = list(values)
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(rows, method, key):
    return mean_sd(r[key] for r in rows if r["method"] == method)


permuted_rows = run_setting("permuted", [("fine-tuning", 0.0, False), ("replay", 0.0, True)]
                            + [(f"EWC λ={lam:g}", lam, False) for lam in cfg.lams], seed_offset=10)
sweep_rows = []
ft_b_val, _ = summarise(permuted_rows, "fine-tuning", "B val")
ft_b_test, _ = summarise(permuted_rows, "fine-tuning", "B test")
for lam in cfg.lams:
    name = f"EWC λ={lam:g}"
    (a, a_sd), (b, b_sd) = summarise(permuted_rows, name, "A test"), summarise(permuted_rows, name, "B test")
    b_val, _ = summarise(permuted_rows, name, "B val")
    sweep_rows.append({"λ": lam, "A test %": a, "(sd)": a_sd, "B test %": b, "(sd) ": b_sd,
                       "B test − fine-tuning": b - ft_b_test, "B val − fine-tuning": b_val - ft_b_val})
within = [r["λ"] for r in sweep_rows if r["B val − fine-tuning"] >= -cfg.budget]
lam_star = max(within) if within else min(cfg.lams)
table(sweep_rows, title=f"Permuted digits, EWC at each λ, mean of {len(seeds)} seeds "
                        f"(fine-tuning's task B: {ft_b_test:.1f} % test, {ft_b_val:.1f} % val)")
print(f"Chosen on validation: λ* = {lam_star:g} (the largest λ whose task-B validation accuracy is within "
      f"{cfg.budget:g} points of fine-tuning's).")

# %% [markdown]
# The sweep, on the test split, with fine-tuning and replay as references (mean of seeds; the
# band is ± one sd over seeds):

# %% figure="accuracy-vs-ewc-lambda"
def reference_line(ax, rows, method, key, color, style):
    mean, _ = summarise(rows, method, key)
    ax.axhline(mean, color=color, ls=style, lw=1, label=f"{method}, task {key[0]}")


fig, ax = plt.subplots(figsize=(8.5, 4))
plt.close(fig)  # shown once, as the cell's value
for key, color in (("A test", "C0"), ("B test", "C1")):
    means = [summarise(permuted_rows, f"EWC λ={lam:g}", key) for lam in cfg.lams]
    ax.plot(cfg.lams, [m for m, _ in means], marker="o", color=color, label=f"EWC, task {key[0]}")
    ax.fill_between(cfg.lams, [m - s for m, s in means], [m + s for m, s in means], color=color, alpha=0.15)
    reference_line(ax, permuted_rows, "fine-tuning", key, color, ":")
    reference_line(ax, permuted_rows, "replay", key, color, "--")
ax.axvline(lam_star, color="grey", lw=0.8, label=f"λ* = {lam_star:g} (chosen on validation)")
ax.set(xscale="log", xlabel="λ", ylabel="test accuracy %", title="Permuted digits after training on B")
ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
fig.tight_layout()
fig

# %%
best_a = max(sweep_rows, key=lambda r: r["A test %"])
last = sweep_rows[-1]
b_drop = sweep_rows[0]["B test %"] - last["B test %"]
a_past_best = best_a["A test %"] - last["A test %"]
print(f"From λ={cfg.lams[0]:g} to λ={cfg.lams[-1]:g}, task B falls {b_drop:.1f} points. Task A is best at "
      f"λ={best_a['λ']:g} ({best_a['A test %']:.1f} %); at λ={cfg.lams[-1]:g} it is {a_past_best:.1f} points lower.")

# %% [markdown]
# If task A is lower at the largest λ than at a middle one, why would pinning A's weights harder
# hurt A? Two explanations worth testing: the penalty's curvature λF becomes huge for the
# stiffest weights, and Adam, whose step is about `lr` per weight whatever the gradient's size,
# may then jitter those weights around θ* instead of settling; and the weights with a tiny
# Fisher, which EWC leaves free, still matter a little for A, and B pushes them all the harder
# when the rest is pinned. The answers key says how to tell them apart.
#
# ## 6. Split digits and class-incremental learning, with λ*
#
# The same three methods, with the λ chosen above:

# %%
methods = [("fine-tuning", 0.0, False), (f"EWC λ={lam_star:g}", lam_star, False), ("replay", 0.0, True)]
rows_by_setting = {"split": run_setting("split", methods, seed_offset=20),
                   "permuted": permuted_rows,
                   "class-incremental": run_setting("class-incremental", methods, seed_offset=30)}
ewc = f"EWC λ={lam_star:g}"
summary = []
for setting, rows in rows_by_setting.items():
    for method in ("fine-tuning", ewc, "replay"):
        (before, _), (a, a_sd), (b, b_sd) = (summarise(rows, method, k) for k in ("a_before", "A test", "B test"))
        summary.append({"setting": setting, "method": method, "A after A %": before, "A after B %": a, "(sd)": a_sd,
                        "forgotten (points)": before - a, "B %": b, "(sd) ": b_sd})
table(summary, title=f"Test accuracy, mean of {len(seeds)} seeds (sd over seeds); replay keeps {cfg.per_class} images per class of A")

# %% [markdown]
# Accuracy on A (solid) and on B (dashed) while training on B, per method (mean of seeds, band
# ± one sd):

# %% figure="task-accuracy-while-training-on-b"
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), sharey=True)
plt.close(fig)
points = list(range(0, cfg.steps_b + 1, cfg.eval_every))
points = points if points[-1] == cfg.steps_b else [*points, cfg.steps_b]
for ax, (setting, rows) in zip(axes, rows_by_setting.items(), strict=True):
    for i, method in enumerate(("fine-tuning", ewc, "replay")):
        for task, style in (("curve_a", "-"), ("curve_b", "--")):
            runs = torch.stack([r[task] for r in rows if r["method"] == method])
            mean, sd = runs.mean(0), runs.std(0) if len(runs) > 1 else torch.zeros(runs.shape[1])
            ax.plot(points[:len(mean)], mean, style, color=f"C{i}", label=f"{method}, task {task[-1].upper()}")
            ax.fill_between(points[:len(mean)], mean - sd, mean + sd, color=f"C{i}", alpha=0.12)
    ax.set(title=setting, xlabel="steps on task B")
axes[0].set_ylabel("test accuracy %")
fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=9, frameon=False)
fig.tight_layout(rect=(0, 0.14, 1, 1))
fig

# %% [markdown]
# ### What the three settings say
#
# The claims below are computed from the table (the gains are the mean over seeds; the cost is
# fine-tuning's task-B accuracy minus EWC's).

# %%
def row(setting, method):
    return next(r for r in summary if r["setting"] == setting and r["method"] == method)


ft_p, ewc_p, rep_p = (row("permuted", m) for m in ("fine-tuning", ewc, "replay"))
gain = ewc_p["A after B %"] - ft_p["A after B %"]
cost = ft_p["B %"] - ewc_p["B %"]
results.claim("permuted digits: EWC recovers task A (points over fine-tuning, mean of seeds)", gain, holds=gain >= 15,
              condition=">= 15 points",
              source="采用Elastic Weight Consolidation(EWC)算法防止灾难性遗忘 (use EWC to prevent catastrophic forgetting; no figure given)")
results.claim("permuted digits: ... at a cost on task B (points below fine-tuning)", cost, holds=cost <= 3,
              condition="<= 3 points")
ft_s, ewc_s = row("split", "fine-tuning"), row("split", ewc)
results.claim("split digits, a head per task: fine-tuning forgets little (points of A lost)", ft_s["forgotten (points)"],
              holds=ft_s["forgotten (points)"] <= 15, condition="<= 15 points",
              source="task-incremental is the easy setting (van de Ven & Tolias, 2019)")
results.claim("split digits: EWC keeps task A (% after B)", ewc_s["A after B %"], holds=ewc_s["A after B %"] >= 93,
              condition=">= 93 %")
ewc_c, rep_c = row("class-incremental", ewc), row("class-incremental", "replay")
results.claim("class-incremental: EWC does not keep task A (% after B)", ewc_c["A after B %"],
              holds=ewc_c["A after B %"] <= 30, condition="<= 30 %",
              source="EWC fails class-incremental learning (van de Ven & Tolias, 2019)")
results.claim("class-incremental: replay does (points of A over EWC)", rep_c["A after B %"] - ewc_c["A after B %"],
              holds=rep_c["A after B %"] - ewc_c["A after B %"] >= 40, condition=">= 40 points")
results.claim("λ sweep: too large a λ hurts task B (points lost from the smallest to the largest λ)", b_drop,
              holds=b_drop >= 1, condition=">= 1 point")
results.claim("λ sweep: past the best λ, task A suffers too (points below the best λ at the largest)", a_past_best,
              holds=a_past_best > 0, condition="> 0", asserted=False)
print(f"Permuted digits: replay keeps {rep_p['A after B %']:.1f} % of task A at {ft_p['B %'] - rep_p['B %']:+.1f} points of B "
      f"cost; EWC keeps {ewc_p['A after B %']:.1f} %.")
f_ci = after_a["class-incremental", 0]["fisher"]
out_w = f_ci[[n for n in f_ci if n.endswith("weight")][-1]]  # the output layer's weights: one row per class
print(f"Class-incremental model after task A (seed 0): mean Fisher of the output rows of classes 0–4 "
      f"{out_w[FIRST].mean():.1e}, of classes 5–9 {out_w[SECOND].mean():.1e}.")

# %% [markdown]
# Why the settings differ so much:
#
# * **Split digits, a head per task.** B's classes have their own output rows, so training on B
#   cannot overwrite A's rows; only the shared hidden layer drifts, and A's head still reads
#   something useful from it. Forgetting is small to begin with, and EWC can only remove what
#   there is.
# * **Permuted digits.** Both tasks share every weight and every output. Fine-tuning rewrites the
#   hidden layer for B's pixel order; EWC pins the weights A's Fisher marks as important and lets
#   B use the rest, which works because the Fisher is concentrated (section 4).
# * **Class-incremental.** During task A the outputs of classes 5–9 are pushed down early and
#   then get almost no gradient (their probabilities are near 0), so their Fisher is small (the
#   cell above prints it beside that of the rows of 0–4) and EWC leaves their output rows free.
#   Training on B raises them, and since B's data never holds a 0–4 image, nothing keeps them
#   below the 0–4 outputs on A's images. The decision between old
#   and new classes is never trained: the model never sees the two groups together. A penalty on
#   weights cannot supply that comparison; a few stored A images can, which is what replay does
#   (van de Ven & Tolias, 2019; Farquhar & Gal, 2018). Compare the class-incremental rows of EWC
#   and replay in the table.
#
# ## 7. Exercises
#
# **Exercise 1 (the taught step, the model's Fisher).** The Fisher proper draws the label from the
# model, not from the data. Write `my_true_fisher(model, x)`: for every parameter, the mean over
# examples of Σ_c p(c | x_n) · (∂ log p(c | x_n) / ∂θ)², with p the model's softmax. It is exact
# (no sampling): one per-example gradient per class, weighted by its probability. The model's
# output has `C = model(x[:1]).shape[1]` classes.
#
# <details><summary>Hint</summary>
#
# Reuse the idea of `fisher_diagonal`: the per-example gradients of the log-likelihood of a label,
# with `vmap(grad(...))`. Call it once per class c with the label tensor `torch.full((len(x),), c)`,
# weight each example's squared gradients by `probs[:, c]` (shape them to broadcast:
# `probs[:, c].reshape(-1, *[1] * (g.ndim - 1))`), sum over classes, mean over examples. Compute
# `probs = model(x).softmax(1)` under `torch.no_grad()`.
# </details>

# %%
@checks.exercise
def my_true_fisher(model, x):
    # YOUR CODE HERE
    raise NotImplementedError


def true_fisher_inputs(g):
    model, x, _ = fisher_inputs(g)
    return model, x


checks.check_function(my_true_fisher, reference=continual.fisher_diagonal, make_inputs=true_fisher_inputs, trials=5,
                      hint="sum over classes c of probs[:, c] * (per-example gradient of log p(c | x))², then the mean over examples")
# checks.show_solution("my_true_fisher")

# %% [markdown]
# Then compare the two Fishers on the permuted setting's model (the cell below runs once your
# function is correct), and rerun the experiments with it: in section 4's task-A cell, replace
# `fisher=fisher_diagonal(model, x_a, y_a, classes=...)` by
# `fisher=fisher_diagonal(model, x_a, y_a, classes=FIRST) if setting == "split" else my_true_fisher(model, x_a)`
# (the split setting keeps the empirical Fisher over its head, unless you restrict your function to
# it), then rerun sections 4–6. Does the chosen λ move? Do the claims still hold?

# %%
if checks.VERDICTS.get("my_true_fisher") == "correct":
    model0 = after_a["permuted", 0]["model"]
    x_a0, y_a0 = task_data("permuted", "A", x_train, y_train)
    n = min(len(x_a0), 300)
    emp, true = fisher_diagonal(model0, x_a0[:n], y_a0[:n]), my_true_fisher(model0, x_a0[:n])
    e, t = torch.cat([v.flatten() for v in emp.values()]), torch.cat([v.flatten() for v in true.values()])
    corr = torch.corrcoef(torch.stack([e, t]))[0, 1].item()
    print(f"On {n} training images: total empirical Fisher / total true Fisher = {e.sum() / t.sum():.2f}; "
          f"correlation of their entries {corr:.3f}.")
else:
    print("(This comparison runs once my_true_fisher above is correct.)")

# %% [markdown]
# **Exercise 2 (online EWC).** With a third task C, plain EWC keeps one penalty per old task.
# *Online EWC* (Schwarz et al., 2018) keeps one running Fisher: after each task,
# `F ← γ · F_old + F_new`, and one anchor, the latest weights. Write `my_merge_fishers(old, new, gamma)`
# for two dicts name -> tensor; it returns the merged dict (new tensors, inputs unchanged).
#
# <details><summary>Hint</summary>
#
# A dict comprehension over `old`'s names: `gamma * old[n] + new[n]`.
# </details>

# %%
@checks.exercise
def my_merge_fishers(old, new, gamma):
    # YOUR CODE HERE
    raise NotImplementedError


def two_fishers(g):
    shapes = {"w": (3, 4), "b": (3,)}
    old = {n: torch.rand(s, generator=g).requires_grad_() for n, s in shapes.items()}
    new = {n: torch.rand(s, generator=g) for n, s in shapes.items()}
    return old, new, float(torch.rand(1, generator=g))


checks.check_function(my_merge_fishers, reference=continual.merge_fishers, make_inputs=two_fishers, trials=5,
                      hint="gamma * old[name] + new[name], for every name")
# checks.show_solution("my_merge_fishers")

# %% [markdown]
# To use it: a task C (another permutation, `continual.permutation(64, seed=2)`), the Fisher of the
# model after B on task B, merged with A's, and the anchor after B; train C with that one penalty
# and score A, B and C. What does γ < 1 trade?
#
# **Exercise 3 (open).** (a) Change the rule that chooses λ: `cfg["budget"] = 0.5`, then rerun
# sections 5–6. Which λ is chosen, and what does the stricter budget cost on task A? (b) Make
# the replay memory smaller (`cfg["per_class"] = 2`) and larger (`50`): how few stored images does
# replay need to beat EWC on permuted digits? (c) In the class-incremental setting, why does
# EWC's task-A accuracy stay far below replay's at every λ you try? Run more λ values with
# `rows = run_setting("class-incremental", [(f"EWC λ={lam:g}", lam, False) for lam in (1e4, 1e6)], seed_offset=30)`
# and read `r["A test"]` in each row. Then look at which classes the model predicts for A's test
# images: `ens, members = ensembles["class-incremental"]` (`ensembles` keeps each setting's latest
# `run_setting`), `x_a_test, _ = task_data("class-incremental", "A", x_test, y_test)`, then
# `ens.member(k)(x_a_test).argmax(1).bincount(minlength=10)` for the member k you want
# (`members[k]` names it). (d) Give the model two hidden layers (`cfg["hidden"] = (256, 256)`) and
# rerun sections 4–6: does EWC's cost on task B change? Why would more capacity help EWC?
#
# ## Record
#
# This cell saves the claims above with the other figures worth keeping and your exercises'
# verdicts.

# %%
metrics = {"λ* (chosen on validation)": lam_star, "forgetting demo: A before %": a_after_a, "forgetting demo: A after B %": a_after_b}
for r in summary:
    metrics[f"{r['setting']}, {r['method'].split(' ')[0]}: A after B %"] = r["A after B %"]
    metrics[f"{r['setting']}, {r['method'].split(' ')[0]}: B %"] = r["B %"]
for r in sweep_rows:
    metrics[f"permuted, EWC λ={r['λ']:g}: A %"] = r["A test %"]
    metrics[f"permuted, EWC λ={r['λ']:g}: B %"] = r["B test %"]
results.record(metrics, notes=f"Digits ({len(x_train)} train / {len(x_val)} val / {len(x_test)} test), MLP {cfg.hidden}, Adam "
                              f"{cfg.lr:g}, {cfg.steps_a} steps on A and {cfg.steps_b} on B, batch {cfg.batch_size}; {len(seeds)} seeds; "
                              f"replay {cfg.per_class} images per class of A, {cfg.replay_fraction:.0%} of each batch.")

# %% [markdown]
# ## Going further
#
# * **GPU scale.** `LAB_SCALE=gpu` runs 5 seeds and a finer λ grid (nine values). The models are
#   the same size and the lab keeps them on the CPU (they are too small for a GPU to pay off): the
#   larger profile buys seeds and λ values, not speed.
# * **More tasks.** Permuted digits extend to any number of tasks (one permutation each); EWC's
#   penalties add up, online EWC (exercise 2) keeps one. Measure the average accuracy over all
#   tasks seen so far after each new task: the usual continual-learning curve.
# * **Other methods.** Synaptic Intelligence (Zenke et al., 2017) estimates importance online
#   along the training path; LwF (Li & Hoiem, 2016) distils the old model's outputs instead of
#   pinning weights (lab 02's loss); iCaRL and GEM use a memory, like replay. Avalanche
#   (`avalanche-lib`) implements them with benchmarks.
# * **Read more.** Kirkpatrick et al. (2017), *Overcoming catastrophic forgetting in neural
#   networks*; Schwarz et al. (2018), *Progress & Compress*; van de Ven & Tolias (2019), *Three
#   scenarios for continual learning*; Farquhar & Gal (2018), *Towards Robust Evaluations of
#   Continual Learning*; Kunstner et al. (2019), *Limitations of the empirical Fisher
#   approximation*.
