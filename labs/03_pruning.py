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
# **The claim** (the source article): train a network, rank its weights by magnitude (L1), remove
# the smallest, fine-tune. Its example is one line of PyTorch,
# `prune.l1_unstructured(model.fc1, "weight", amount=0.3)`, and the promise behind the recipe is
# the usual one: most weights can go at little cost in accuracy, so the model gets smaller and
# faster.
#
# **What you will measure**, on real handwritten digits:
#
# 1. what `torch.nn.utils.prune` really does to a layer (`weight_orig`, `weight_mask`, a hook);
# 2. accuracy against sparsity, from 30 % to 98 % of the weights removed, before and after
#    fine-tuning, beside a **control**: the dense model given the same extra training, unpruned;
# 3. the honest cost picture: do 90 % zeros make the model faster or its file smaller? And what
#    does removing whole neurons (*structured* pruning) buy instead, compared with simply
#    training the smaller network from scratch?

# %%
import copy

import torch
from torch.nn.utils import prune  # the API the article uses

from lablib import show
from lablib.core import bench, checks, config, env, results, viz
from lablib.data import datasets
from lablib.methods import pruning  # this lab's tested helpers shown below
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
# every lab uses. The model is an MLP with two wide hidden layers: about a million weights, far
# more than 8×8 digits need, which is the situation pruning is for.

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
print(f"dense MLP{cfg.hidden}: {dense_params:,} parameters, test accuracy {dense_acc:.3f}")
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
w, mask = fc1.weight_orig.detach(), fc1.weight_mask
print("weight == weight_orig * weight_mask:", torch.equal(fc1.weight, w * mask))
print(f"share pruned: {1 - mask.mean().item():.3f}")
largest_pruned, smallest_kept = w[mask == 0].abs().max().item(), w[mask == 1].abs().min().item()
print(f"largest |w| pruned {largest_pruned:.6f} <= smallest |w| kept {smallest_kept:.6f}: {largest_pruned <= smallest_kept}")
one_layer_acc = train.evaluate(one_layer, test_loader)["acc"]
print(f"test accuracy with 30 % of fc1 gone, no fine-tune: {one_layer_acc:.3f} (dense {dense_acc:.3f})")

# %% [markdown]
# `prune.remove` makes it permanent: `weight` is a plain parameter again (with its zeros), and the
# mask and the hook are gone. Do this once you have finished fine-tuning, before you save or ship.

# %%
prune.remove(fc1, "weight")
print("parameters:", [name for name, _ in fc1.named_parameters()])
print("buffers:   ", [name for name, _ in fc1.named_buffers()])
print(f"fc1 sparsity after remove: {pruning.sparsity(fc1.weight):.3f}")

# %% [markdown]
# ## 3. Global magnitude pruning: how far can we go?
#
# Pruning layer by layer needs a share per layer. **Global** pruning ranks every weight of every
# layer together and removes the smallest overall, so a big layer full of small weights gives up
# more than a small, busy one. Here are this lab's helpers; each is a few lines around
# `torch.nn.utils.prune`:

# %%
show(pruning.prunable)
show(pruning.global_magnitude_prune)
show(pruning.sparsity)

# %% [markdown]
# For each amount: a fresh copy of the dense model, prune, measure, fine-tune with the masks still
# attached, measure again. The fine-tune is `cfg.finetune_epochs` more epochs of the same training
# as before (Adam, learning rate 1e-3 decaying to zero on a fresh cosine schedule): at `cpu` scale
# 20 epochs, half the original 40, so it is a second round of training rather than a light touch.
# The sparsity column is counted after fine-tuning: exact zeros, still exactly where the masks put
# them.
#
# That extra training needs a **control**. Every pruned model gets `cfg.finetune_epochs` more epochs
# than `dense` did, so a pruned model that beats `dense` may owe it to the epochs, not the pruning.
# The control is a copy of `dense` given exactly the same extra epochs, unpruned:

# %%
dense_long = copy.deepcopy(dense)
train.fit(dense_long, train_loader, val_loader, epochs=cfg.finetune_epochs, lr=1e-3, schedule="cosine", device=device, desc="dense control")
dense_long_acc = train.evaluate(dense_long, test_loader)["acc"]
n_test = len(splits.test)
print(f"dense, {cfg.epochs} epochs:                      test accuracy {dense_acc:.3f}")
print(f"dense control, {cfg.epochs} + {cfg.finetune_epochs} epochs, unpruned: test accuracy {dense_long_acc:.3f}")
print(f"({n_test} test images: one image is {100 / n_test:.2f} points of accuracy)")

# %%
sweep, pruned = [], {}
for amount in cfg.amounts:
    model = pruning.global_magnitude_prune(copy.deepcopy(dense), amount)
    before = train.evaluate(model, test_loader)["acc"]
    train.fit(model, train_loader, val_loader, epochs=cfg.finetune_epochs, lr=1e-3, schedule="cosine", device=device, desc=f"fine-tune {amount:.0%}")
    after = train.evaluate(model, test_loader)["acc"]
    sweep.append(dict(amount=amount, sparsity=pruning.sparsity(model), before=before, after=after))
    pruned[amount] = model

print(f"dense test accuracy {dense_acc:.3f}; dense control (+{cfg.finetune_epochs} epochs, unpruned) {dense_long_acc:.3f}\n")
print(f"{'removed':>7} {'remaining':>9} {'sparsity':>9} {'before FT':>10} {'after FT':>9} {'vs dense':>9} {'vs control':>11}")
for r in sweep:
    print(f"{r['amount']:>7.2f} {1 - r['amount']:>9.2f} {r['sparsity']:>9.4f} {r['before']:>10.3f} {r['after']:>9.3f} "
          f"{100 * (r['after'] - dense_acc):>+7.1f}pt {100 * (r['after'] - dense_long_acc):>+9.1f}pt")

# %% [markdown]
# The plot puts the share of weights *remaining* on a log scale, so that 10 %, 5 % and 2 % left,
# where everything happens, are spread out. The dashed lines are the two unpruned references.

# %%
remaining = [1 - r["amount"] for r in sweep]
fig = viz.lines(
    {
        "pruned, no fine-tune": (remaining, [r["before"] for r in sweep]),
        f"pruned + fine-tune ({cfg.finetune_epochs} epochs)": (remaining, [r["after"] for r in sweep]),
    },
    xlabel="share of weights remaining (global L1; log scale)",
    ylabel="test accuracy",
    title="Accuracy against sparsity",
    logx=True,
    reference={"dense": dense_acc, f"dense control (+{cfg.finetune_epochs} epochs, unpruned)": dense_long_acc},
)
fig.axes[0].set_xticks(remaining, [f"{r:.0%}" for r in remaining])  # label the measured points,
fig.axes[0].minorticks_off()  # not the log axis's crowded minor ticks
fig

# %% [markdown]
# At 90 % removed, set the pruned model against both references, in test images as well as points:

# %%
acc90_before = next(r["before"] for r in sweep if r["amount"] == 0.9)
acc90_after = next(r["after"] for r in sweep if r["amount"] == 0.9)
for label, a, b in [
    ("dense control vs dense (extra epochs alone)", dense_long_acc, dense_acc),
    ("90 % pruned + fine-tune vs dense", acc90_after, dense_acc),
    ("90 % pruned + fine-tune vs dense control", acc90_after, dense_long_acc),
]:
    print(f"{label:<45} {a:.3f} vs {b:.3f}: {100 * (a - b):+.1f} points = {round((a - b) * n_test):+d} of {n_test} images")

# %% [markdown]
# Read the three lines together. Against the original `dense` model, the fine-tuned 90 % sparse
# model can look *better* than dense, which would be a surprising gift from deleting nine weights
# in ten. The control shows what the extra epochs give on their own: the unpruned dense model moves
# too. What is left between the pruned model and the control is a handful of test images, too few
# to call. The honest reading is "removing 90 % of the weights and fine-tuning cost nothing
# measurable on this task", not "pruning improved the model".

# %% [markdown]
# Where did global pruning take the weights from? At 90 % overall, layer by layer, beside each
# layer's **initialisation scale**. PyTorch starts a Linear layer's weights uniform in
# ±1/√fan_in, where fan_in is the number of inputs each neuron reads: ±1/√64 = ±0.125 for the first
# layer, which reads the 64 pixels, but only ±1/√1024 ≈ ±0.031 for a layer reading 1,024 hidden
# units (the `cpu` width). A uniform start has a mean |w| of half its bound; the last column but one
# is the mean |w| after training.

# %%
sparse90 = pruned[0.9]
print(f"{'layer':<7} {'shape':<13} {'weights':>9} {'fan_in':>7} {'init bound':>11} {'init mean|w|':>13} "
      f"{'trained mean|w|':>16} {'sparsity':>9}")
for name, s in pruning.layer_sparsity(sparse90).items():
    trained = dense.get_submodule(name).weight.detach()
    fan_in = trained.shape[1]
    bound = 1 / fan_in**0.5  # nn.Linear's default init: U(-bound, bound)
    print(f"{name:<7} {str(tuple(trained.shape)):<13} {trained.numel():>9,} {fan_in:>7} {bound:>11.3f} {bound / 2:>13.4f} "
          f"{trained.abs().mean().item():>16.4f} {s:>9.3f}")
print(f"{'all':<7} {'':<13} {sum(m.weight.numel() for m, _ in pruning.prunable(sparse90)):>9,} {'':>7} {'':>11} {'':>13} "
      f"{'':>16} {pruning.sparsity(sparse90):>9.3f}")

# %% [markdown]
# Global pruning did not take 90 % from every layer, and the table says why. The layers that read
# many inputs started with weights four times smaller than the first layer's (at the `cpu` width),
# and training changed the weights without undoing that order: the first layer's trained mean |w|
# is still several times theirs. One global threshold on |w| therefore falls mostly on the
# large-fan-in layers (the wide middle layer and the output layer), while the first layer keeps
# far more of its weights. The ranking is as much about where the weights *started* as about
# which ones matter.
#
# Is that better or worse than taking the same 90 % from every layer? Measured before any
# fine-tuning (it costs one evaluation), with the article's line applied to each layer in turn:

# %%
layerwise90 = copy.deepcopy(dense)
for layer, name in pruning.prunable(layerwise90):
    prune.l1_unstructured(layer, name, amount=0.9)  # 90 % of this layer's own weights
layerwise90_acc = train.evaluate(layerwise90, test_loader)["acc"]
print(f"layer sparsity: {', '.join(f'{n} {s:.3f}' for n, s in pruning.layer_sparsity(layerwise90).items())}")
print(f"90 % removed, before fine-tune: global ranking {acc90_before:.3f}, "
      f"90 % from every layer {layerwise90_acc:.3f} (dense {dense_acc:.3f})")

# %% [markdown]
# Compare the two accuracies: taking 90 % from every layer, the first layer (only 64 inputs per
# neuron) and the output layer included, is the blunter cut here. We compared them before
# fine-tuning only; whether a fine-tune closes the gap is an experiment for you.
#
# **Past 90 %.** The sweep's last rows show the fine-tuned accuracy first slipping and then
# collapsing. Here is where the remaining weights are at each of those amounts, and how many
# digit classes have lost *every* weight into their output neuron:

# %%
layer_names = list(pruning.layer_sparsity(dense))
print(f"{'removed':>7} " + " ".join(f"{n + ' sparsity':>15}" for n in layer_names)
      + f" {'output weights left':>20} {'classes cut off':>16} {'after FT':>9}")
for r in sweep:
    if r["amount"] < 0.9:
        continue
    model = pruned[r["amount"]]
    out = pruning.prunable(model)[-1][0].weight  # the output layer: one row per class
    cut_off = int((out == 0).all(dim=1).sum())
    print(f"{r['amount']:>7.2f} " + " ".join(f"{s:>15.4f}" for s in pruning.layer_sparsity(model).values())
          + f" {int((out != 0).sum()):>20,} {cut_off:>13} of {out.shape[0]} {r['after']:>9.3f}")
worst = sweep[-1]
print(f"\nat {worst['amount']:.0%} removed the fine-tuned model scores {worst['after']:.3f} "
      f"({100 * (worst['after'] - dense_acc):+.1f} points against dense)")

# %% [markdown]
# The output layer reads 1,024 inputs, so it started with the same small weights as the middle
# layer, and the global threshold empties it about as fast, even though it has only ten rows and
# every one of them is needed. A class whose row is all zeros gets a constant logit (its bias
# alone): the network can no longer produce evidence for it, and no fine-tune can bring the
# weights back, because the masks hold them at zero. Excluding the output layer from the ranking,
# or giving each layer a floor, is the usual remedy (see Going further).
#
# ## 4. The honest cost picture
#
# A 90 % sparse model *sounds* ten times smaller and faster. The zeros, though, sit in the same dense
# tensors as before: a matmul multiplies by zero as fast as by anything else, and a zero is still
# four bytes in the file. First make the pruning permanent:

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
print(f"MLP{small_hidden} from scratch, {cfg.epochs + cfg.finetune_epochs} epochs: test accuracy {scratch_acc:.3f}")
print(f"MLP{small_hidden} pruned out of dense + {cfg.finetune_epochs}-epoch fine-tune: test accuracy {structured_acc:.3f}")
print(f"difference: {100 * (structured_acc - scratch_acc):+.1f} points = {round((structured_acc - scratch_acc) * n_test):+d} of {n_test} test images")

# %% [markdown]
# Now the measurements. **Latency**: one forward pass of a batch (median of many, after warm-up;
# random inputs, since the values do not change the work). **Size**: the state dict as `torch.save`
# writes it, raw and after zlib compression.

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

print(f"{'model':<16} {'params':>10} {'sparsity':>9} {'latency':>10} {'raw file':>10} {'zlib':>10}")
for name, model in contenders.items():
    print(f"{name:<16} {models.count_params(model):>10,} {pruning.sparsity(model):>9.3f} {latency[name]:>8.3f}ms "
          f"{size[name]['raw'] / 1e6:>8.2f}MB {size[name]['compressed'] / 1e6:>8.2f}MB")

# %%
viz.bars(latency, ylabel=f"ms per batch of {cfg.bench_batch}", title="Latency: zeros cost the same as weights")

# %%
viz.grouped_bars(
    {name: {"raw": size[name]["raw"] / 1e6, "zlib-compressed": size[name]["compressed"] / 1e6} for name in contenders},
    ylabel="MB",
    title="File size: raw and zlib-compressed",
)

# %% [markdown]
# What the numbers say:
#
# * **No speed-up from zeros.** The 90 % permanent model runs the same dense matmuls as the dense
#   one; with its masks still attached it is even a little slower (the hook multiplies a million
#   weights by the mask on every call).
# * **No smaller file from zeros, until you compress.** Raw, the permanent model is as big as the
#   dense one. A compressor squeezes the zeros out, so a zipped download of it does shrink. With
#   the masks still attached the file is about *twice* as big (`weight_orig` plus a float mask),
#   and even compressed it is no smaller than dense: `weight_orig` still holds every original
#   weight. Call `make_permanent` (`prune.remove`) before you save.
# * **Structured pruning delivers both.** Fewer parameters, a smaller raw file and a lower latency,
#   with any plain runtime, because the matrices are really smaller. Its price: neurons are a
#   coarser unit than weights, so it needs its fine-tune.
# * **But the control matters.** The same narrow MLP trained from scratch for the same number of
#   epochs (printed above) ends within a few test images of the pruned one. On 8×8 digits, then,
#   structured pruning's real contribution is telling us that a network this narrow is enough;
#   training that network directly gets the same speed and size. Pruning a trained model pays off
#   when training the small one from scratch is the expensive or the worse option (a big pretrained
#   model you cannot retrain, a large dataset); that is worth measuring on your own task, with this
#   same control, before you take it on trust.
#
# ## 5. Headline figures against the claim

# %%
lat_dense, lat_sparse, lat_struct = latency["dense"], latency["90 % permanent"], latency[f"structured {cfg.keep:.0%}"]
sparse_raw = size["90 % permanent"]["raw"] / size["dense"]["raw"]
sparse_zip = size["90 % permanent"]["compressed"] / size["dense"]["compressed"]


def holds(ok):
    return "holds" if ok else "does NOT hold"


rows = [
    ("dense test accuracy", f"{dense_acc:.3f}", ""),
    (f"control: dense + {cfg.finetune_epochs} more epochs, unpruned", f"{dense_long_acc:.3f}",
     "what the fine-tune epochs give without pruning"),
    ("30 % of fc1 pruned (article's line), no fine-tune", f"{one_layer_acc:.3f}",
     f"little cost (within 1 point): {holds(one_layer_acc >= dense_acc - 0.01)}"),
    ("90 % global sparsity, before fine-tune", f"{acc90_before:.3f}", ""),
    ("90 % global sparsity, after fine-tune", f"{acc90_after:.3f}",
     f"prune + fine-tune keeps accuracy (within 1 point): {holds(acc90_after >= dense_acc - 0.01)}"),
    ("90 % sparse after fine-tune vs control", f"{100 * (acc90_after - dense_long_acc):+.1f}pt",
     f"= {round((acc90_after - dense_long_acc) * n_test):+d} of {n_test} test images"),
    ("90 % sparse: latency vs dense", f"{lat_sparse / lat_dense:.2f}x",
     f"faster (by 20 %+): {holds(lat_sparse < 0.8 * lat_dense)}"),
    ("90 % sparse: raw / zlib file vs dense", f"{sparse_raw:.2f}x / {sparse_zip:.2f}x",
     f"smaller raw: {holds(sparse_raw < 0.8)}; smaller zipped: {holds(sparse_zip < 0.8)}"),
    (f"structured {cfg.keep:.0%}: parameters vs dense", f"{structured_params / dense_params:.3f}x", ""),
    (f"structured {cfg.keep:.0%}: latency vs dense", f"{lat_struct / lat_dense:.2f}x",
     f"faster (by 20 %+): {holds(lat_struct < 0.8 * lat_dense)}"),
    (f"structured {cfg.keep:.0%}: test accuracy after fine-tune", f"{structured_acc:.3f}",
     f"keeps accuracy (within 1 point): {holds(structured_acc >= dense_acc - 0.01)}"),
    (f"control: MLP{small_hidden} from scratch, {cfg.epochs + cfg.finetune_epochs} epochs", f"{scratch_acc:.3f}",
     f"structured minus scratch: {round((structured_acc - scratch_acc) * n_test):+d} of {n_test} test images"),
]
width = max(len(r[0]) for r in rows)
print(f"{'figure':<{width}}  {'measured':>13}  verdict on the claim")
for figure, measured, verdict in rows:
    print(f"{figure:<{width}}  {measured:>13}  {verdict}")

# %%
results.record(
    "03_pruning",
    {
        "dense acc": dense_acc,
        "acc 30% of fc1 pruned": one_layer_acc,
        "acc 90% sparse before fine-tune": acc90_before,
        "acc 90% sparse after fine-tune": acc90_after,
        "dense params": dense_params,
        "structured params": structured_params,
        "structured acc": structured_acc,
        "dense control acc (+fine-tune epochs, unpruned)": dense_long_acc,
        "small MLP from scratch acc (control)": scratch_acc,
        "latency dense (ms)": lat_dense,
        "latency 90% sparse (ms)": lat_sparse,
        "latency structured (ms)": lat_struct,
        "raw size dense (MB)": size["dense"]["raw"] / 1e6,
        "raw size 90% sparse (MB)": size["90 % permanent"]["raw"] / 1e6,
        "zlib size dense (MB)": size["dense"]["compressed"] / 1e6,
        "zlib size 90% sparse (MB)": size["90 % permanent"]["compressed"] / 1e6,
        "raw size structured (MB)": size[f"structured {cfg.keep:.0%}"]["raw"] / 1e6,
    },
    claims={
        "acc 30% of fc1 pruned": "article's example: prune.l1_unstructured(model.fc1, 'weight', amount=0.3)",
        "acc 90% sparse after fine-tune": "article's recipe: train → rank weights by L1 → prune → fine-tune",
    },
)

# %% [markdown]
# At `cpu` and `gpu` scale the lab checks that both effects hold. (At `smoke` scale a couple of
# epochs prove nothing, so nothing is asserted.)

# %%
if cfg.scale != "smoke":
    assert acc90_after >= dense_acc - 0.01, f"90 % sparse after fine-tune: {acc90_after:.3f}, more than 1 point below dense {dense_acc:.3f}"
    assert structured_params < dense_params, f"structured model has {structured_params:,} parameters, dense {dense_params:,}"
    # Latency in an assertion: DESIGN.md keeps timing out of the tests, but the issue asks the lab
    # to show the structured model is faster, and the gap is an order of magnitude (about 10x at
    # cpu scale), far beyond timing noise or a busy machine.
    assert lat_struct < lat_dense, f"structured latency {lat_struct:.3f} ms is not below dense {lat_dense:.3f} ms"
    print("Pruning check passed: 90 % sparse within 1 point of dense; structured model smaller and faster.")

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** Write the mask L1 pruning puts on one tensor: `my_l1_mask(weight, amount)` returns
# a tensor shaped like `weight`, with 0 at the `round(amount * weight.numel())` entries of smallest
# absolute value and 1 everywhere else. That is what `prune.l1_unstructured` stores as `weight_mask`.

# %%
def my_l1_mask(weight, amount):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_function(
    my_l1_mask,
    reference=pruning.l1_mask,
    make_inputs=lambda g: (torch.randn(8, 24, generator=g), round(torch.rand(1, generator=g).item(), 2)),
    hint="k = round(amount * weight.numel()); torch.topk(weight.abs().flatten(), k, largest=False).indices "
    "are the positions of the k smallest: set them to 0 in a flat tensor of ones, then reshape it like weight.",
)

# %% [markdown]
# **Exercise 2.** Unstructured zeros fall anywhere, which is why no ordinary kernel can skip them.
# *N:M semi-structured* sparsity constrains where they fall: cut each row of the weight into groups
# of `m` neighbouring entries and keep only the `n` largest |w| in every group (2:4 keeps two of
# each four, 50 % sparse, a pattern recent GPUs' sparse tensor cores can skip). Write
# `my_nm_mask(weight, n, m)`: a tensor shaped like `weight`, 1 at the kept entries, 0 elsewhere
# (the last dimension is a multiple of `m`). Attach it with
# `prune.custom_from_mask(layer, "weight", mask)`, like any other mask.

# %%
def my_nm_mask(weight, n, m):
    # YOUR CODE HERE
    raise NotImplementedError


def weight_and_pattern(g):
    n, m = [(2, 4), (1, 4), (3, 8)][torch.randint(0, 3, (1,), generator=g).item()]
    return torch.randn(8, 24, generator=g), n, m


checks.check_function(
    my_nm_mask,
    reference=pruning.nm_mask,
    make_inputs=weight_and_pattern,
    hint="weight.abs().reshape(-1, m) puts one group per row; .topk(n, dim=1).indices are the n largest of "
    "each group; scatter 1s there into zeros of the same shape (Tensor.scatter_), then reshape like weight.",
)

# %% [markdown]
# Stuck? The reference answers are tested code in lablib. Uncomment to see them:

# %%
# show(pruning.l1_mask)
# show(pruning.nm_mask)

# %% [markdown]
# ## Going further
#
# * **GPU scale.** With CUDA, `LAB_SCALE=gpu` times batches of 8,192, where the dense matmuls
#   dominate; the structured model's advantage is the same in kind.
# * **Sparse kernels.** Zeros pay off only with a format and a kernel that skip them. Convert a
#   pruned weight with `w.to_sparse_csr()` and time `torch.sparse.mm` against the dense matmul at
#   50 %, 90 % and 98 % sparsity: where, on your machine, does it start to win?
# * **2:4 semi-structured sparsity.** NVIDIA GPUs from Ampere on have sparse tensor cores that
#   skip the zeros when every group of four weights has two: up to twice the matmul throughput,
#   which is the theoretical peak for the matmul alone. End-to-end gains are usually smaller (the
#   rest of the network, memory traffic, small matrices), so measure. Build the mask with
#   Exercise 2's `pruning.nm_mask`, attach it with `prune.custom_from_mask`, fine-tune,
#   `make_permanent`, convert with `torch.sparse.to_sparse_semi_structured` (CUDA, fp16/bf16), time.
# * **A pretrained model.** `pruning.prunable` finds every Linear and Conv2d of any `nn.Module`, so
#   `global_magnitude_prune`, `sparsity`, `layer_sparsity`, `make_permanent` and `size_bytes` work
#   unchanged on a torchvision or timm model, e.g. `torchvision.models.resnet18(weights="DEFAULT")`
#   with downloads switched on (or its weights loaded from a local file); fine-tune on your data
#   afterwards. `structured_prune_mlp` only knows lablib's MLP: removing conv channels means
#   following every layer that reads them, which dedicated libraries such as Torch-Pruning do.
# * **Protect the output layer.** Rank all layers but the last (`pruning.prunable(model)[:-1]`
#   passed to `prune.global_unstructured`) and rerun 95 % and 98 %: does the collapse move?
# * **Your own data.** `data.image_folder("path/to/folder", size=32, channels=1)` loads a folder of
#   images, one subfolder per class; an MLP on 32×32 inputs (`models.MLP(32 * 32, ...)`) has
#   enough weights to make every effect above larger.
# * **Iterative pruning.** Instead of removing 95 % at once, prune 50 %, fine-tune, prune half of
#   what is left, fine-tune... (calling `global_magnitude_prune` again stacks the masks). Does it
#   beat one-shot pruning at 95 % and 98 %?
# * **Read more:** the [`torch.nn.utils.prune` reference](https://pytorch.org/docs/stable/nn.html#utilities)
#   and the [PyTorch pruning tutorial](https://pytorch.org/tutorials/intermediate/pruning_tutorial.html).
