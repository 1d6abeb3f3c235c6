# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lab 03 — Pruning
#
# **Source:** 《突破AI技术壁垒:从算法创新到生态重构的路径探索》 (*Breaking through AI's technical
# barriers: from algorithmic innovation to rebuilding the ecosystem*), on making models lighter,
# gives the recipe's one line of code and its figure, 30 %:
#
# > 开发者可采用PyTorch的torch.nn.utils.prune模块实现自动化剪枝:
# > `prune.l1_unstructured(model.fc1, name="weight", amount=0.3) # 对全连接层剪枝30%`
# >
# > (Developers can prune automatically with PyTorch's `torch.nn.utils.prune` module: … prune 30 %
# > of the fully connected layer.)
#
# 《AI应用技术全景:从模型到工程的完整链条》 (*The AI application landscape: the complete chain from
# model to engineering*) gives the steps and the promise:
#
# > 可通过模型剪枝、知识蒸馏等技术减少参数量,提升推理速度。以模型剪枝为例,可通过以下步骤实现:
# > 训练原始模型:获得基准性能。计算权重重要性:基于L1范数或梯度信息评估。剪枝低权重连接:移除重要性低于阈值的连接。
# > 微调模型:恢复剪枝后的性能。
# >
# > (Pruning, distillation and similar techniques reduce the number of parameters and raise
# > inference speed. Pruning takes these steps: train the original model, to get the baseline;
# > compute each weight's importance, by its L1 norm or its gradient; prune the connections whose
# > importance is below a threshold; fine-tune, to recover the performance lost to pruning.)
#
# **What you will measure**, on real handwritten digits:
#
# 1. what `torch.nn.utils.prune` does to a layer (`weight_orig`, `weight_mask`, a hook), and the
#    mask it computes, written here in a few lines;
# 2. accuracy against sparsity, 30 % to 98 % of the weights removed by one global magnitude
#    ranking, before and after fine-tuning, beside a **control**: the dense model given the same
#    extra training, unpruned;
# 3. what the pruned models cost: do 90 % zeros make the model faster or its file smaller? What
#    does removing whole neurons (*structured* pruning) buy, and how does it compare with
#    training the small network from scratch?
#
# **Objectives.** After this lab you can:
#
# - explain what `torch.nn.utils.prune` does to a layer, and make the pruning permanent;
# - write a global magnitude (L1) mask and prune a whole network with it;
# - measure accuracy against sparsity against a fair control;
# - tell what unstructured and structured pruning each do to file size and latency, and measure it;
# - write the layer-wise and N:M (2:4) variants of the mask.
#
# **Prerequisites.** Lab 00 (the setup check); lab 01 helps (training an MLP on the digits with
# `train.fit`). PyTorch basics: tensors, `nn.Linear`, `torch.topk`.
#
# **Time.** `smoke`: about 20 s. `cpu` (2 cores): about 1.5 min of computing. `gpu`: about a minute.
# Reading and the exercises: 45–60 minutes.
#
# Answers to the exercises and open questions: `docs/answers/03_pruning.md`.

# %%
import copy

import torch
from torch.nn.utils import prune  # the API the article uses

from lablib import show, table
from lablib.core import bench, checks, config, env, results, viz
from lablib.data import datasets
from lablib.methods import pruning  # lablib's tested pruning functions
from lablib.nets import models, train

cfg = config.profile(
    smoke=dict(hidden=(128, 128), epochs=2, finetune_epochs=1, amounts=(0.5, 0.9), keep=0.25, bench_batch=256, bench_repeats=3),
    cpu=dict(hidden=(1024, 1024), epochs=40, finetune_epochs=20, amounts=(0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98), keep=0.25, bench_batch=256, bench_repeats=50),
    gpu=dict(hidden=(1024, 1024), epochs=40, finetune_epochs=20, amounts=(0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98), keep=0.25, bench_batch=8192, bench_repeats=100),
)
device = config.device()
config.seed_everything(0)
print(env.line())
cfg

# %% [markdown]
# ## 1. A dense network to prune
#
# scikit-learn's 1,797 real 8×8 digits (bundled, nothing downloaded), in the fixed seeded split
# every lab uses. The model is an MLP with two wide hidden layers: at the `cpu` width about a
# million weights, far more than 8×8 digits need, which is the situation pruning is for.

# %%
splits = datasets.digits()
train_loader = datasets.loader(splits.train, batch_size=64, shuffle=True)
val_loader = datasets.loader(splits.val, batch_size=256)
test_loader = datasets.loader(splits.test, batch_size=256)

config.seed_everything(0)
dense = models.MLP(64, hidden=cfg.hidden, num_classes=10)
history = train.fit(dense, train_loader, val_loader, epochs=cfg.epochs, lr=1e-3, schedule="cosine", device=device, desc="dense")
dense_params = models.count_params(dense)
dense_acc = train.evaluate(dense, test_loader)["acc"]
n_test = len(splits.test)
print(f"dense MLP{cfg.hidden}: {dense_params:,} parameters, test accuracy {dense_acc:.3f} "
      f"({n_test} test images: one image is {100 / n_test:.2f} points of accuracy)")
dense

# %% [markdown]
# ## 2. The article's line, step by step
#
# The article prunes 30 % of one layer, `model.fc1`. Our first Linear layer is `model.net[1]`.
# We work on a copy, so `dense` stays intact for the rest of the lab.

# %%
one_layer = copy.deepcopy(dense)
fc1 = one_layer.net[1]
prune.l1_unstructured(fc1, "weight", amount=0.3)

print("parameters:", [name for name, _ in fc1.named_parameters()])
print("buffers:   ", [name for name, _ in fc1.named_buffers()])
print("hooks:     ", [type(hook).__name__ for hook in fc1._forward_pre_hooks.values()])

# %% [markdown]
# Three things happened:
#
# * the trained weight moved to the parameter **`weight_orig`**, untouched;
# * a buffer **`weight_mask`** of 0s and 1s appeared: 0 for the 30 % of entries with the smallest
#   |w| in this layer;
# * a **forward pre-hook** sets the plain attribute `fc1.weight = weight_orig * weight_mask`
#   before every forward pass. The optimizer keeps updating `weight_orig`, but the mask zeroes the
#   pruned entries in every forward (and their gradients), so fine-tuning cannot bring them back.
#
# Check it, and check that the *smallest* weights are the ones that went:

# %%
w, mask = fc1.weight_orig.detach().clone(), fc1.weight_mask.clone()
print("weight == weight_orig * weight_mask:", torch.equal(fc1.weight, w * mask))
print(f"share pruned: {1 - mask.mean().item():.3f}")
largest_pruned, smallest_kept = w[mask == 0].abs().max().item(), w[mask == 1].abs().min().item()
print(f"largest |w| pruned {largest_pruned:.6f} <= smallest |w| kept {smallest_kept:.6f}: {largest_pruned <= smallest_kept}")
one_layer_acc = train.evaluate(one_layer, test_loader)["acc"]
print(f"test accuracy with 30 % of fc1 gone, no fine-tune: {one_layer_acc:.3f} "
      f"({100 * (one_layer_acc - dense_acc):+.1f} points against dense {dense_acc:.3f})")

# %% [markdown]
# `prune.remove` makes it permanent: `weight` is a plain parameter again (with its zeros), and the
# mask and the hook are gone. Do this once you have finished fine-tuning, before you save or ship.

# %%
prune.remove(fc1, "weight")
print("parameters:", [name for name, _ in fc1.named_parameters()])
print("buffers:   ", [name for name, _ in fc1.named_buffers()])
print(f"fc1 sparsity after remove: {pruning.sparsity(fc1.weight):.3f}")

# %% [markdown]
# ## 3. The technique: a global magnitude mask, written here
#
# Pruning layer by layer needs a share for every layer. **Global** pruning ranks every weight of
# every layer together and removes the smallest overall, so a big layer full of small weights
# gives up more than a small, busy one. The mask is the whole technique: the importance of a
# weight is its magnitude |w| (its L1 norm), and the connections below the threshold go.
# Here it is, the definition every global-pruning experiment below runs:

# %%
def global_l1_masks(weights, amount):
    """One 0/1 mask per weight tensor: 0 at the round(amount * N) smallest |w| of all N weights together."""
    scores = torch.cat([w.detach().abs().flatten() for w in weights])  # every weight in one ranking
    k = round(amount * scores.numel())  # how many go
    keep = torch.ones_like(scores)
    keep[torch.topk(scores, k, largest=False).indices] = 0  # the k smallest |w| anywhere
    sizes = [w.numel() for w in weights]
    return [m.reshape(w.shape) for m, w in zip(keep.split(sizes), weights, strict=True)]


# %% [markdown]
# It must compute what lablib's tested reference computes (the reference adds argument checks and
# is itself tested against `torch.nn.utils.prune.global_unstructured`). Random weights of three
# layers with different scales, random amounts:

# %%
checks.agrees(
    global_l1_masks,
    reference=pruning.global_l1_masks,
    make_inputs=lambda g: ([torch.randn(16, 8, generator=g), 0.1 * torch.randn(32, 16, generator=g), 3 * torch.randn(4, 32, generator=g)],
                           torch.rand(1, generator=g).item()),
)
print("with one tensor it is the article's line:", torch.equal(global_l1_masks([w], 0.3)[0], mask))

# %% [markdown]
# To prune a model with it, collect the weights of its Linear layers, compute the masks, and
# attach each with `prune.custom_from_mask`: the same `weight_orig`, `weight_mask` and hook as in
# section 2, with our mask instead of one computed by `torch.nn.utils.prune`.

# %%
def prune_model(model, amount, masks_fn=global_l1_masks):
    """Mask `model`'s Linear (and Conv) weights in place with masks_fn(weights, amount); returns model."""
    layers = pruning.prunable(model)  # [(layer, "weight"), ...]
    masks = masks_fn([getattr(layer, name) for layer, name in layers], amount)
    for (layer, name), m in zip(layers, masks, strict=True):
        prune.custom_from_mask(layer, name, m)
    return model


# %% [markdown]
# ## 4. How far can we go?
#
# For each amount: a fresh copy of the dense model, prune, measure, fine-tune with the masks still
# attached, measure again. The fine-tune is `cfg.finetune_epochs` more epochs of the same training
# as before (Adam, learning rate 1e-3 decaying to zero on a fresh cosine schedule): half the
# original epochs, so it is a second round of training rather than a light touch. The sparsity
# column is counted after fine-tuning: exact zeros, still exactly where the masks put them.
#
# That extra training needs a **control**. Every pruned model gets `cfg.finetune_epochs` more epochs
# than `dense` did, so a pruned model that beats `dense` may owe it to the epochs, not the pruning.
# The control is a copy of `dense` given exactly the same extra epochs, unpruned:

# %%
dense_long = copy.deepcopy(dense)
train.fit(dense_long, train_loader, val_loader, epochs=cfg.finetune_epochs, lr=1e-3, schedule="cosine", device=device, desc="dense control")
dense_long_acc = train.evaluate(dense_long, test_loader)["acc"]
print(f"dense, {cfg.epochs} epochs: test accuracy {dense_acc:.3f}; "
      f"dense control, {cfg.epochs} + {cfg.finetune_epochs} epochs, unpruned: {dense_long_acc:.3f}")

# %%
masks_fn = global_l1_masks  # Exercise 1: put your my_layer_masks here and rerun from this cell
sweep, pruned = [], {}
for amount in cfg.amounts:
    model = prune_model(copy.deepcopy(dense), amount, masks_fn)
    before = train.evaluate(model, test_loader)["acc"]
    train.fit(model, train_loader, val_loader, epochs=cfg.finetune_epochs, lr=1e-3, schedule="cosine", device=device, desc=f"fine-tune {amount:.0%}")
    after = train.evaluate(model, test_loader)["acc"]
    sweep.append(dict(amount=amount, sparsity=pruning.sparsity(model), before=before, after=after))
    pruned[amount] = model

table([{"removed": r["amount"], "remaining": 1 - r["amount"], "sparsity": r["sparsity"], "acc before FT": r["before"],
        "acc after FT": r["after"], "vs dense (points)": 100 * (r["after"] - dense_acc),
        "vs control (points)": 100 * (r["after"] - dense_long_acc)} for r in sweep],
      title=f"dense {dense_acc:.3f}, dense control (+{cfg.finetune_epochs} epochs, unpruned) {dense_long_acc:.3f}")

# %% [markdown]
# The plot puts the share of weights *remaining* on a log scale, so that 10 %, 5 % and 2 % left,
# where everything happens, are spread out. The dashed lines are the two unpruned references.

# %% figure="accuracy-vs-sparsity"
remaining = [1 - r["amount"] for r in sweep]
fig = viz.lines(
    {
        "pruned, no fine-tune": (remaining, [r["before"] for r in sweep]),
        f"pruned + fine-tune ({cfg.finetune_epochs} epochs)": (remaining, [r["after"] for r in sweep]),
    },
    xlabel="share of weights remaining (log scale)",
    ylabel="test accuracy",
    title="Accuracy against sparsity",
    logx=True,
    reference={"dense": dense_acc, f"dense control (+{cfg.finetune_epochs} epochs, unpruned)": dense_long_acc},
)
fig.axes[0].set_xticks(remaining, [f"{r:.0%}" for r in remaining])  # label the measured points,
fig.axes[0].minorticks_off()  # not the log axis's crowded minor ticks
fig

# %% [markdown]
# The article's recipe at 90 %: prune, fine-tune, and the performance should come back. Here is
# the claim, then the pruned model set against both references, in test images as well as points:

# %%
acc90_before = next(r["before"] for r in sweep if r["amount"] == 0.9)
acc90_after = next(r["after"] for r in sweep if r["amount"] == 0.9)
results.claim("90 % pruned + fine-tune keeps dense accuracy", acc90_after, holds=acc90_after >= dense_acc - 0.01,
              condition=f"within 1 point of dense (>= {dense_acc - 0.01:.3f})",
              source="剪枝低权重连接 … 微调模型:恢复剪枝后的性能 (prune the low-weight connections, fine-tune to recover)")
table([{"comparison": label, "a": a, "b": b, "points": 100 * (a - b), "test images": round((a - b) * n_test)}
       for label, a, b in [
           ("dense control vs dense (extra epochs alone)", dense_long_acc, dense_acc),
           ("90 % pruned + fine-tune vs dense", acc90_after, dense_acc),
           ("90 % pruned + fine-tune vs dense control", acc90_after, dense_long_acc),
       ]])
vs_control = acc90_after - dense_long_acc
if abs(vs_control) <= 0.01:
    print(f"Against the control the pruned model is {round(vs_control * n_test):+d} of {n_test} test images: within 1 point, "
          "too few to call. Removing 90 % of the weights and fine-tuning cost nothing measurable here.")
else:
    print(f"Against the control the pruned model is {100 * vs_control:+.1f} points: pruning "
          + ("did better than the extra epochs alone." if vs_control > 0 else "cost accuracy that the extra epochs alone did not."))

# %% [markdown]
# Read the lines together. If the fine-tuned sparse model beats `dense`, look at the control
# before crediting the pruning: if the unpruned model moved by as much with the same extra epochs,
# the gain is the training, not the deleted weights.
#
# Where did global pruning take the weights from? At 90 % overall, layer by layer, beside each
# layer's **initialisation scale**. PyTorch starts a Linear layer's weights uniform in
# ±1/√fan_in, where fan_in is the number of inputs each neuron reads: ±1/√64 = ±0.125 for the first
# layer, which reads the 64 pixels, but only ±1/√1024 ≈ ±0.031 for a layer reading 1,024 hidden
# units (the `cpu` width). A uniform start has a mean |w| of half its bound.

# %%
sparse90 = pruned[0.9]
layer_rows = []
for name, s in pruning.layer_sparsity(sparse90).items():
    trained = dense.get_submodule(name).weight.detach()
    bound = 1 / trained.shape[1] ** 0.5  # nn.Linear's default init: U(-bound, bound)
    layer_rows.append({"layer": name, "shape": str(tuple(trained.shape)), "weights": trained.numel(), "fan_in": trained.shape[1],
                       "init mean|w|": bound / 2, "trained mean|w|": trained.abs().mean().item(), "sparsity": s})
table(layer_rows)
first, *others = layer_rows
print(f"The first layer's trained mean |w| is {first['trained mean|w|'] / max(r['trained mean|w|'] for r in others):.1f}x "
      f"that of the next largest layer; global pruning removed {first['sparsity']:.0%} of its weights and "
      + ", ".join(f"{r['sparsity']:.0%} of {r['layer']}'s" for r in others) + ".")

# %% [markdown]
# The layers that read many inputs start with smaller weights, and training changes the weights
# without necessarily undoing that order: compare the two mean-|w| columns. Wherever the first
# layer's weights stay larger, one global threshold on |w| falls mostly on the large-fan-in layers
# (the wide middle layer and the output layer), and the first layer keeps more of its weights.
# The ranking is then as much about where the weights *started* as about which ones matter.
#
# Is that better or worse than taking the same 90 % from every layer? Measured before any
# fine-tuning (it costs one evaluation), with the article's line applied to each layer in turn:

# %%
layerwise90 = copy.deepcopy(dense)
for layer, name in pruning.prunable(layerwise90):
    prune.l1_unstructured(layer, name, amount=0.9)  # 90 % of this layer's own weights
layerwise90_acc = train.evaluate(layerwise90, test_loader)["acc"]
print(f"layer sparsity: {', '.join(f'{n} {s:.3f}' for n, s in pruning.layer_sparsity(layerwise90).items())}")
print(f"90 % removed, before fine-tune: global ranking {acc90_before:.3f}, 90 % from every layer {layerwise90_acc:.3f} "
      f"(dense {dense_acc:.3f}): "
      + ("the same accuracy." if acc90_before == layerwise90_acc else
         f"{'the global ranking' if acc90_before > layerwise90_acc else 'the same share from every layer'} "
         f"keeps {100 * abs(acc90_before - layerwise90_acc):.1f} points more."))

# %% [markdown]
# We compared them before fine-tuning only; whether a fine-tune closes the gap is Exercise 1.
#
# **Past 90 %.** Here is where the remaining weights are at each of the largest amounts, and how
# many digit classes have lost *every* weight into their output neuron:

# %%
past90 = []
for r in sweep:
    if r["amount"] < 0.9:
        continue
    model = pruned[r["amount"]]
    out = pruning.prunable(model)[-1][0].weight  # the output layer: one row per class
    past90.append({"removed": r["amount"], **{f"{n} sparsity": s for n, s in pruning.layer_sparsity(model).items()},
                   "output weights left": int((out != 0).sum()), "classes cut off": int((out == 0).all(dim=1).sum()),
                   "acc after FT": r["after"]})
table(past90)
worst = past90[-1]
print(f"at {worst['removed']:.0%} removed: {worst['classes cut off']} of 10 classes cut off, fine-tuned accuracy "
      f"{worst['acc after FT']:.3f} ({100 * (worst['acc after FT'] - dense_acc):+.1f} points against dense)")

# %% [markdown]
# The output layer reads as many inputs as the middle layer, so it started with the same small
# weights, and the global threshold can empty it (see the "classes cut off" column), although it has only ten rows
# and every one of them is needed. A class whose row is all zeros gets a constant logit (its bias
# alone): the network can no longer produce evidence for it, and no fine-tune can bring the
# weights back, because the masks hold them at zero. If the table shows classes cut off, that
# alone caps the accuracy. Excluding the output layer from the ranking, or giving each layer a
# floor, is the usual remedy (see Going further).
#
# ## 5. What the pruned models cost: size and speed
#
# The article's promise is fewer parameters and faster inference. A 90 % sparse model *sounds*
# ten times smaller and faster. The zeros, though, sit in the same dense tensors as before: a
# dense matmul does the same work whatever the values, and a zero is still four bytes in the
# file. First make the pruning permanent:

# %%
show(pruning.make_permanent)
permanent90 = pruning.make_permanent(pruning.clone(sparse90))  # deepcopy refuses pruned models
print("parameters:", [name for name, _ in permanent90.named_parameters()])
print(f"sparsity still {pruning.sparsity(permanent90):.3f}, accuracy still {train.evaluate(permanent90, test_loader)['acc']:.3f}")

# %% [markdown]
# **Structured pruning** removes whole neurons instead: a row of one Linear layer and the matching
# column of the next. Each hidden layer keeps the `keep` share of its neurons whose incoming weights
# have the largest L2 norm. The result is a genuinely narrower MLP; it is then fine-tuned like the
# others.

# %%
show(pruning.structured_prune_mlp)

# %%
structured = pruning.structured_prune_mlp(dense, keep=cfg.keep)
structured_before = train.evaluate(structured, test_loader)["acc"]
train.fit(structured, train_loader, val_loader, epochs=cfg.finetune_epochs, lr=1e-3, schedule="cosine", device=device, desc="fine-tune structured")
structured_acc = train.evaluate(structured, test_loader)["acc"]
structured_params = models.count_params(structured)
print(f"structured (keep {cfg.keep:.0%} of the neurons): {structured_params:,} parameters "
      f"({1 - structured_params / dense_params:.0%} fewer than dense)")
print(f"test accuracy {structured_before:.3f} before fine-tune, {structured_acc:.3f} after (dense {dense_acc:.3f})")
structured

# %% [markdown]
# The structured model is simply a narrower MLP. Is pruning the big one the way to get it, or would
# training the narrow MLP directly do as well? The second **control**: an MLP with exactly the
# structured model's hidden sizes, trained from scratch for the same total number of epochs the
# structured model has had (`cfg.epochs` inside dense, plus its fine-tune), with the same schedule.

# %%
small_hidden = tuple(layer.out_features for layer, _ in pruning.prunable(structured)[:-1])
config.seed_everything(0)
small_scratch = models.MLP(64, hidden=small_hidden, num_classes=10)
train.fit(small_scratch, train_loader, val_loader, epochs=cfg.epochs + cfg.finetune_epochs, lr=1e-3, schedule="cosine", device=device, desc="small MLP from scratch")
scratch_acc = train.evaluate(small_scratch, test_loader)["acc"]
assert models.count_params(small_scratch) == structured_params  # the same architecture
vs_scratch = structured_acc - scratch_acc
print(f"MLP{small_hidden}: pruned out of dense + fine-tune {structured_acc:.3f}, "
      f"from scratch ({cfg.epochs + cfg.finetune_epochs} epochs) {scratch_acc:.3f}: "
      f"{100 * vs_scratch:+.1f} points = {round(vs_scratch * n_test):+d} of {n_test} test images")

# %% [markdown]
# Now the measurements. **Latency**: one forward pass of a batch (the best of three interleaved
# rounds, each the median of many calls after a warm-up; random inputs, since the values do not
# change the work). **Size**: the state dict as `torch.save` writes it, raw and after zlib
# compression.

# %%
show(pruning.size_bytes)

# %%
contenders = {
    "dense": dense,
    "90 % masked": sparse90,  # masks attached: the hook multiplies weight_orig * mask every call
    "90 % permanent": permanent90,
    f"structured {cfg.keep:.0%}": structured,
}
x = torch.rand(cfg.bench_batch, 1, 8, 8, device=device)
for model in contenders.values():
    model.eval()
with torch.inference_mode():  # interleaved rounds: a busy moment slows every contender alike
    timings = bench.compare({name: (lambda m=model: m(x)) for name, model in contenders.items()},
                            rounds=3, warmup=5, repeats=cfg.bench_repeats)
latency = {name: t.median_ms for name, t in timings.items()}
size = {name: pruning.size_bytes(model) for name, model in contenders.items()}
table({name: {"params": models.count_params(model), "sparsity": pruning.sparsity(model), "latency (ms)": latency[name],
              "raw file (MB)": size[name]["raw"] / 1e6, "zlib (MB)": size[name]["compressed"] / 1e6}
       for name, model in contenders.items()})

# %% figure="latency-by-pruning"
viz.bars(latency, ylabel=f"ms per batch of {cfg.bench_batch}", title="Latency per batch")

# %% figure="file-size-raw-and-compressed"
viz.grouped_bars(
    {name: {"raw": size[name]["raw"] / 1e6, "zlib-compressed": size[name]["compressed"] / 1e6} for name in contenders},
    ylabel="MB",
    title="File size: raw and zlib-compressed",
)

# %% [markdown]
# The article's promise, tested on each kind of pruning. Speed ratios (dense time / pruned time)
# are judged with a margin, so that a busy moment on a shared machine cannot flip the verdict:
# zeros must beat dense by 1.5× to count as faster, structured pruning by 2×.

# %%
struct = f"structured {cfg.keep:.0%}"
raw_sparse = size["90 % permanent"]["raw"] / size["dense"]["raw"]
raw_struct = size[struct]["raw"] / size["dense"]["raw"]
speed_sparse = latency["dense"] / latency["90 % permanent"]
speed_struct = latency["dense"] / latency[struct]
zeros_same_file = results.claim("unstructured zeros leave the raw file as big as dense", raw_sparse, holds=abs(raw_sparse - 1) < 0.01,
              condition="raw size / dense within 1 % of 1",
              source="减少参数量 (fewer parameters), read as a smaller model")
zeros_faster = results.claim("90 % unstructured zeros make the model faster", speed_sparse, holds=bench.verdict(speed_sparse, margin=1.5) == "faster",
              condition="dense time / sparse time >= 1.5", source="提升推理速度 (faster inference)", asserted=False)
structured_smaller = results.claim("structured pruning shrinks the model", raw_struct,
              holds=raw_struct < 0.5 and structured_params < 0.5 * dense_params,
              condition="raw size and parameters below half of dense", source="减少参数量 (fewer parameters)")
structured_faster = results.claim("structured pruning makes the model faster", speed_struct, holds=bench.verdict(speed_struct, margin=2.0) == "faster",
              condition="dense time / structured time >= 2", source="提升推理速度 (faster inference)")

# %% [markdown]
# What the measurements say about each kind, printed from this run:

# %%
zip_sparse = size["90 % permanent"]["compressed"] / size["dense"]["compressed"]
raw_masked = size["90 % masked"]["raw"] / size["dense"]["raw"]
zip_masked = size["90 % masked"]["compressed"] / size["dense"]["compressed"]
hook = latency["dense"] / latency["90 % masked"]


def speed(ratio, margin):
    """A speed ratio (dense time / other time) in words, judged with a margin."""
    said = bench.verdict(ratio, margin)
    return f"{ratio:.2f}x the dense speed: {said} ({'within' if said == 'about as fast' else 'beyond'} a {margin:g}x margin)"


print(f"* 90 % zeros, permanent: {speed(speed_sparse, 1.5)}"
      + (". The same dense matmuls run, whatever the values." if not zeros_faster else
         ". Your BLAS or hardware profits from the zeros here: worth knowing, and worth rechecking on the machine you deploy to."))
print(f"* 90 % zeros, masks still attached: {speed(hook, 1.25)}; the hook multiplies every weight by its mask on each call.")
print(f"* File, permanent: raw {raw_sparse:.2f}x dense, zlib-compressed {zip_sparse:.2f}x dense"
      + (": a compressor squeezes the zeros out." if zip_sparse < 0.8 else ": even compressed, not much smaller."))
print(f"* File, masks still attached: raw {raw_masked:.2f}x dense, compressed {zip_masked:.2f}x dense "
      "(weight_orig and the mask are both saved: call make_permanent before you save).")
print(f"* Structured: {structured_params / dense_params:.3f}x the parameters, raw file {raw_struct:.3f}x dense, "
      f"{speed(speed_struct, 2.0)}.")
print(f"* Structured against the same narrow MLP from scratch: {round(vs_scratch * n_test):+d} of {n_test} test images "
      + ("(within 1 point: the narrow network trained directly does as well)." if abs(vs_scratch) <= 0.01 else
         "(pruning the big model gave the better narrow one)." if vs_scratch > 0 else "(training it from scratch did better)."))

# %% [markdown]
# Zeros in dense tensors pay off only where something skips them: a compressor (the download
# shrinks, the model in memory does not), a sparse format with a kernel that wins at that
# sparsity, or hardware built for a pattern (2:4, Exercise 2). Structured pruning makes the
# matrices themselves smaller, so it needs no special runtime; neurons are a coarser unit than
# weights, so it needs its fine-tune. And the scratch control is the question to ask on your own
# task: if the narrow network trained directly is as good, pruning's contribution was to show
# that the narrow network is enough. Pruning a trained model pays off when training the small one
# from scratch is the expensive or the worse option (a big pretrained model you cannot retrain, a
# large dataset).

# %% [markdown]
# ## Exercises
#
# **Exercise 1: layer-wise masks.** Global pruning lets one threshold decide how much each layer
# loses. The other common choice takes the same share from every layer. Write
# `my_layer_masks(weights, amount)`, with the same arguments and result as `global_l1_masks`: one
# 0/1 mask per tensor, but each tensor loses `round(amount * its own size)` of its own smallest
# |w|. For `amount=0.9` it reproduces the "90 % from every layer" model of section 4.
#
# <details><summary>Hint</summary>
#
# A layer-wise mask is a global mask over a list of one tensor: rank each tensor on its own.
# </details>
#
# To run every experiment on your version: in section 4, set `masks_fn = my_layer_masks` and rerun
# from that cell (the sweep, the plot, the claim and the tables then use your masks).

# %%
@checks.exercise
def my_layer_masks(weights, amount):
    # YOUR CODE HERE
    raise NotImplementedError


ex1 = checks.check_function(
    my_layer_masks,
    reference=lambda weights, amount: [pruning.l1_mask(w, amount) for w in weights],
    make_inputs=lambda g: ([torch.randn(16, 8, generator=g), 0.1 * torch.randn(32, 16, generator=g), 3 * torch.randn(4, 32, generator=g)],
                           round(torch.rand(1, generator=g).item(), 2)),
    hint="rank each tensor's |w| on its own, not all of them together.",
)
# checks.show_solution("my_layer_masks")

# %% [markdown]
# Section 4 compared the two choices at 90 % before fine-tuning only. Once your masks are correct,
# this cell fine-tunes the layer-wise 90 % model exactly as the sweep fine-tuned the global one.
# Does the fine-tune close the gap?

# %%
if ex1:
    mine90 = prune_model(copy.deepcopy(dense), 0.9, my_layer_masks)
    mine90_before = train.evaluate(mine90, test_loader)["acc"]
    train.fit(mine90, train_loader, val_loader, epochs=cfg.finetune_epochs, lr=1e-3, schedule="cosine", device=device, desc="fine-tune layer-wise 90%")
    table({"global 90 %": {"before FT": acc90_before, "after FT": acc90_after},
           "90 % from every layer (yours)": {"before FT": mine90_before, "after FT": train.evaluate(mine90, test_loader)["acc"]}},
          title=f"dense {dense_acc:.3f}")
else:
    print("Solve Exercise 1 first; this cell then fine-tunes your layer-wise 90 % model.")

# %% [markdown]
# **Exercise 2: N:M semi-structured masks.** Unstructured zeros fall anywhere, which is why no
# ordinary kernel can skip them. *N:M* sparsity constrains where they fall: cut each row of the
# weight into groups of `m` neighbouring entries and keep only the `n` largest |w| in every group
# (2:4 keeps two of each four, 50 % sparse, a pattern recent GPUs' sparse tensor cores can skip).
# Write `my_nm_mask(weight, n, m)`: one tensor shaped like `weight`, 1 at the kept entries, 0
# elsewhere (the last dimension is a multiple of `m`).
#
# <details><summary>Hint</summary>
#
# Reshape the |w| so that each group of `m` is one row; in each row, the `n` largest are kept
# (`topk` along that dimension), and the positions it returns are where the 1s go. Reshape back.
# </details>

# %%
@checks.exercise
def my_nm_mask(weight, n, m):
    # YOUR CODE HERE
    raise NotImplementedError


def weight_and_pattern(g):
    n, m = [(2, 4), (1, 4), (3, 8)][torch.randint(0, 3, (1,), generator=g).item()]
    return torch.randn(8, 24, generator=g), n, m


ex2 = checks.check_function(
    my_nm_mask,
    reference=pruning.nm_mask,
    make_inputs=weight_and_pattern,
    hint="each group of m neighbours keeps its own n largest |w|.",
)
# checks.show_solution("my_nm_mask")

# %% [markdown]
# With a correct mask, prune the dense model 2:4 (every layer's inputs are a multiple of four)
# and set it against global pruning at the same 50 %, both before fine-tuning. Which costs more,
# and why?

# %%
if ex2:
    nm24 = prune_model(copy.deepcopy(dense), 0.5, lambda weights, amount: [my_nm_mask(w, 2, 4) for w in weights])
    global50 = next(r["before"] for r in sweep if r["amount"] == 0.5)
    print(f"2:4 sparsity {pruning.sparsity(nm24):.3f}; before fine-tune: 2:4 {train.evaluate(nm24, test_loader)['acc']:.3f}, "
          f"global 50 % {global50:.3f} (dense {dense_acc:.3f})")
else:
    print("Solve Exercise 2 first; this cell then prunes the dense model 2:4 with your mask.")

# %% [markdown]
# The lab's figures, its claims and your exercise verdicts, saved (at `cpu` and `gpu` scale this
# step fails the run if an asserted claim did not hold):

# %%
results.record({
    "dense acc": dense_acc,
    "acc 30% of fc1 pruned (article's line, no fine-tune)": one_layer_acc,
    "acc 90% sparse before fine-tune": acc90_before,
    "acc 90% from every layer before fine-tune": layerwise90_acc,
    "dense control acc (+fine-tune epochs, unpruned)": dense_long_acc,
    "dense params": dense_params,
    "structured params": structured_params,
    "structured acc": structured_acc,
    "small MLP from scratch acc (control)": scratch_acc,
    "latency dense (ms)": latency["dense"],
    "latency 90% sparse (ms)": latency["90 % permanent"],
    "latency 90% masked (ms)": latency["90 % masked"],
    "latency structured (ms)": latency[struct],
    "raw size dense (MB)": size["dense"]["raw"] / 1e6,
    "zlib size dense (MB)": size["dense"]["compressed"] / 1e6,
    "zlib size 90% sparse (MB)": size["90 % permanent"]["compressed"] / 1e6,
    "raw size structured (MB)": size[struct]["raw"] / 1e6,
}, notes=f"MLP{cfg.hidden} on digits; global L1 masks written in the lab; structured keeps {cfg.keep:.0%} of the neurons")

# %% [markdown]
# ## Going further
#
# * **GPU scale.** With CUDA, `LAB_SCALE=gpu` times batches of 8,192, where the dense matmuls
#   dominate; compare the structured model's speed-up there with the one measured here.
# * **Sparse kernels.** Zeros pay off only with a format and a kernel that skip them. Convert a
#   pruned weight with `w.to_sparse_csr()` and time `torch.sparse.mm` against the dense matmul at
#   50 %, 90 % and 98 % sparsity: where, on your machine, does it start to win?
# * **2:4 on sparse tensor cores.** NVIDIA GPUs from Ampere on skip the zeros when every group of
#   four weights has two: up to twice the matmul throughput, the theoretical peak for the matmul
#   alone; end-to-end gains are usually smaller (the rest of the network, memory traffic, small
#   matrices), so measure. Prune with Exercise 2's mask, fine-tune, `make_permanent`, convert with
#   `torch.sparse.to_sparse_semi_structured` (CUDA, fp16/bf16), time.
# * **A pretrained model.** `pruning.prunable` finds every Linear and Conv2d of any `nn.Module`, so
#   `prune_model`, `sparsity`, `layer_sparsity`, `make_permanent` and `size_bytes` work unchanged
#   on a torchvision or timm model, e.g. `torchvision.models.resnet18(weights="DEFAULT")` with
#   downloads switched on (or its weights loaded from a local file); fine-tune on your data
#   afterwards. `structured_prune_mlp` only knows lablib's MLP: removing conv channels means
#   following every layer that reads them, which dedicated libraries such as Torch-Pruning do.
# * **Protect the output layer.** Rank all layers but the last (mask the output layer with ones)
#   and rerun 95 % and 98 %: does the collapse move?
# * **Your own data.** `datasets.image_folder("path/to/folder", size=32, channels=1)` loads a
#   folder of images, one subfolder per class; an MLP on 32×32 inputs (`models.MLP(32 * 32, ...)`)
#   has enough weights to make every effect above larger.
# * **Iterative pruning.** Instead of removing 95 % at once, prune 50 %, fine-tune, prune half of
#   what is left, fine-tune... (`prune_model` on a pruned model multiplies the new mask into the
#   old one). Does it beat one-shot pruning at 95 % and 98 %?
# * **Read more:** the [`torch.nn.utils.prune` reference](https://pytorch.org/docs/stable/nn.html#utilities)
#   and the [PyTorch pruning tutorial](https://pytorch.org/tutorials/intermediate/pruning_tutorial.html).
