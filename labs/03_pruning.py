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
# 2. accuracy against sparsity, from 30 % to 98 % of the weights removed, before and after a
#    short fine-tune;
# 3. the honest cost picture: do 90 % zeros make the model faster or its file smaller? And what
#    does removing whole neurons (*structured* pruning) buy instead?

# %%
import copy

import torch
from torch.nn.utils import prune  # the API the article uses

from lablib import bench, checks, config, data, env, models, results, show, train, viz
from lablib import prune as pruning  # this lab's tested helpers (shown below as they are used)

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
splits = data.digits()
train_loader = data.loader(splits.train, batch_size=64, shuffle=True)
val_loader = data.loader(splits.val, batch_size=256)
test_loader = data.loader(splits.test, batch_size=256)

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
print("hooks:     ", list(fc1._forward_pre_hooks.values()))

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
# attached (a few epochs at a small learning rate), measure again. The sparsity column is counted
# after fine-tuning: exact zeros, still exactly where the masks put them.

# %%
sweep, pruned = [], {}
for amount in cfg.amounts:
    model = pruning.global_magnitude_prune(copy.deepcopy(dense), amount)
    before = train.evaluate(model, test_loader)["acc"]
    train.fit(model, train_loader, val_loader, epochs=cfg.finetune_epochs, lr=1e-3, schedule="cosine", device=device, desc=f"fine-tune {amount:.0%}")
    after = train.evaluate(model, test_loader)["acc"]
    sweep.append(dict(amount=amount, sparsity=pruning.sparsity(model), before=before, after=after))
    pruned[amount] = model

print(f"dense test accuracy: {dense_acc:.3f}\n")
print(f"{'amount':>7} {'sparsity':>9} {'before FT':>10} {'after FT':>9} {'vs dense':>9}")
for r in sweep:
    print(f"{r['amount']:>7.2f} {r['sparsity']:>9.4f} {r['before']:>10.3f} {r['after']:>9.3f} {100 * (r['after'] - dense_acc):>+8.1f}pt")

# %%
amounts = [r["amount"] for r in sweep]
viz.lines(
    {
        "pruned, no fine-tune": (amounts, [r["before"] for r in sweep]),
        "pruned + fine-tune": (amounts, [r["after"] for r in sweep]),
        "dense": (amounts, [dense_acc] * len(amounts)),
    },
    xlabel="share of weights removed (global L1)",
    ylabel="test accuracy",
    title="Accuracy against sparsity",
)

# %% [markdown]
# Where did global pruning take the weights from? At 90 % overall, layer by layer:

# %%
sparse90 = pruned[0.9]
print(f"{'layer':<7} {'shape':<13} {'weights':>9} {'sparsity':>9}")
for name, s in pruning.layer_sparsity(sparse90).items():
    shape = tuple(sparse90.get_submodule(name).weight.shape)
    print(f"{name:<7} {str(shape):<13} {sparse90.get_submodule(name).weight.numel():>9,} {s:>9.3f}")
print(f"{'all':<7} {'':<13} {sum(m.weight.numel() for m, _ in pruning.prunable(sparse90)):>9,} {pruning.sparsity(sparse90):>9.3f}")
acc90_before = next(r["before"] for r in sweep if r["amount"] == 0.9)
acc90_after = next(r["after"] for r in sweep if r["amount"] == 0.9)

# %% [markdown]
# Global pruning did not take 90 % from every layer. The wide middle layer holds almost all the
# weights, most of them small, and gives up the most; the first layer, where each pixel has only a
# few strong connections, gives up far less. Pruning every layer by the same share would have
# cut the layers that can least afford it.
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
latency, size = {}, {}
with torch.inference_mode():
    for name, model in contenders.items():
        model.eval()
        latency[name] = bench.latency(lambda m=model: m(x), warmup=5, repeats=cfg.bench_repeats).median_ms
        size[name] = pruning.size_bytes(model)

print(f"{'model':<16} {'params':>10} {'sparsity':>9} {'latency':>10} {'raw file':>10} {'zlib':>10}")
for name, model in contenders.items():
    print(f"{name:<16} {models.count_params(model):>10,} {pruning.sparsity(model):>9.3f} {latency[name]:>8.3f}ms "
          f"{size[name]['raw'] / 1e6:>8.2f}MB {size[name]['compressed'] / 1e6:>8.2f}MB")

# %%
viz.bars(latency, ylabel=f"ms per batch of {cfg.bench_batch}", title="Latency: zeros cost the same as weights")

# %%
viz.bars(
    {f"{name}\n{kind}": size[name][kind] / 1e6 for name in contenders for kind in ("raw", "compressed")},
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
    ("30 % of fc1 pruned (article's line), no fine-tune", f"{one_layer_acc:.3f}",
     f"little cost (within 1 point): {holds(one_layer_acc >= dense_acc - 0.01)}"),
    ("90 % global sparsity, before fine-tune", f"{acc90_before:.3f}", ""),
    ("90 % global sparsity, after fine-tune", f"{acc90_after:.3f}",
     f"prune + fine-tune keeps accuracy (within 1 point): {holds(acc90_after >= dense_acc - 0.01)}"),
    ("90 % sparse: latency vs dense", f"{lat_sparse / lat_dense:.2f}x",
     f"faster (by 20 %+): {holds(lat_sparse < 0.8 * lat_dense)}"),
    ("90 % sparse: raw / zlib file vs dense", f"{sparse_raw:.2f}x / {sparse_zip:.2f}x",
     f"smaller raw: {holds(sparse_raw < 0.8)}; smaller zipped: {holds(sparse_zip < 0.8)}"),
    (f"structured {cfg.keep:.0%}: parameters vs dense", f"{structured_params / dense_params:.3f}x", ""),
    (f"structured {cfg.keep:.0%}: latency vs dense", f"{lat_struct / lat_dense:.2f}x",
     f"faster (by 20 %+): {holds(lat_struct < 0.8 * lat_dense)}"),
    (f"structured {cfg.keep:.0%}: test accuracy after fine-tune", f"{structured_acc:.3f}",
     f"keeps accuracy (within 1 point): {holds(structured_acc >= dense_acc - 0.01)}"),
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
    assert lat_struct < lat_dense, f"structured latency {lat_struct:.3f} ms is not below dense {lat_dense:.3f} ms"
    print("Pruning check passed: 90 % sparse within 1 point of dense; structured model smaller and faster.")

# %% [markdown]
# ## 6. Exercises
#
# **Exercise 1.** Write `my_sparsity(weight)`: the share of entries of a tensor that are exactly
# zero, as a Python float (0.9 for a 90 % sparse layer).

# %%
def my_sparsity(weight):
    # YOUR CODE HERE (one line is enough)
    raise NotImplementedError


def tensor_with_zeros(g):
    w = torch.randn(16, 32, generator=g)
    return w * (torch.rand(16, 32, generator=g) > torch.rand(1, generator=g))  # a random share zeroed


checks.check_function(
    my_sparsity,
    reference=pruning.sparsity,
    make_inputs=tensor_with_zeros,
    hint="(weight == 0) is a boolean tensor; .float().mean() is the share of True, .item() a float.",
)

# %% [markdown]
# **Exercise 2.** Write the mask L1 pruning puts on one tensor: `my_l1_mask(weight, amount)` returns
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
# Stuck? The reference answers are tested code in lablib. Uncomment to see them:

# %%
# show(pruning.sparsity)
# show(pruning.l1_mask)

# %% [markdown]
# ## Going further
#
# * **GPU scale.** With CUDA, `LAB_SCALE=gpu` times batches of 8,192, where the dense matmuls
#   dominate; the structured model's advantage is the same in kind.
# * **Sparse kernels.** Zeros pay off only with a format and a kernel that skip them. Convert a
#   pruned weight with `w.to_sparse_csr()` and time `torch.sparse.mm` against the dense matmul at
#   50 %, 90 % and 98 % sparsity: where, on your machine, does it start to win?
# * **2:4 semi-structured sparsity.** NVIDIA GPUs from Ampere on run matmuls twice as fast when
#   every group of four weights has two zeros. PyTorch exposes it as
#   `torch.sparse.to_sparse_semi_structured`; prune with a 2:4 pattern, fine-tune, convert, time.
# * **Your own data.** `data.image_folder("path/to/folder", size=32, channels=1)` loads a folder of
#   images, one subfolder per class; an MLP on 32×32 inputs (`models.MLP(32 * 32, ...)`) has
#   enough weights to make every effect above larger.
# * **Iterative pruning.** Instead of removing 95 % at once, prune 50 %, fine-tune, prune half of
#   what is left, fine-tune... (calling `global_magnitude_prune` again stacks the masks). Does it
#   beat one-shot pruning at 95 % and 98 %?
# * **Read more:** the [`torch.nn.utils.prune` reference](https://pytorch.org/docs/stable/nn.html#utilities)
#   and the [PyTorch pruning tutorial](https://pytorch.org/tutorials/intermediate/pruning_tutorial.html).
