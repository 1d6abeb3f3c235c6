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
# # Lab 01 — A deep network that will not train, and how BatchNorm and residual connections fix it
#
# **The claim** (the first source article, `SimpleModel` → `ResidualModel`): stack enough layers and
# a plain network stops learning because its gradients vanish on the way back to the early layers;
# batch normalisation and residual (skip) connections make the same depth trainable again.
#
# **What you will measure**, on real handwritten digits, at equal depth and training budget:
#
# 1. a 30-layer plain network (sigmoid and ReLU) that stays at chance, 10 %, and the gradient
#    reaching each of its layers: the first layer's is many orders of magnitude below the last's;
# 2. the same depth with BatchNorm only, residual connections only, and both;
# 3. why a residual-only network explodes under SGD while Adam copes with it.
#
# Before that, a short errata: the article's own code does not run as printed.

# %%
import math

import torch
from torch import nn

from lablib import show
from lablib.core import checks, config, env, results, viz
from lablib.data import datasets
from lablib.nets import models, train

cfg = config.profile(
    smoke=dict(depth=6, width=8, epochs=1, sgd_lr=0.05, adam_lr=2e-3),
    cpu=dict(depth=30, width=16, epochs=15, sgd_lr=0.05, adam_lr=2e-3),
    gpu=dict(depth=30, width=32, epochs=30, sgd_lr=0.05, adam_lr=2e-3),
)
device = config.device()
config.seed_everything(0)
print(env.line())
cfg

# %% [markdown]
# ## Errata: the article's snippet, run as printed
#
# The article's models, in essence: a 3×3 convolution on 224×224 RGB images, flattened into a linear
# layer sized for 112×112 feature maps; the "residual" model keeps `residual = x`, then never uses it.

# %%
class ArticleSimpleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(64 * 112 * 112, 10)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = x.view(x.size(0), -1)
        return self.fc(x)


class ArticleResidualModel(ArticleSimpleModel):
    def __init__(self):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(64)

    def forward(self, x):
        residual = x  # noqa: F841  (kept, never added: the "residual" connection is missing)
        x = self.relu(self.bn1(self.conv1(x)))
        x = x.view(x.size(0), -1)
        return self.fc(x)


images = torch.randn(2, 3, 224, 224)
for model_cls in (ArticleSimpleModel, ArticleResidualModel):
    try:
        model_cls()(images)
    except RuntimeError as err:
        print(f"{model_cls.__name__}: RuntimeError: {err}")
print("conv1 output:", tuple(nn.Conv2d(3, 64, kernel_size=3)(images).shape), "-> 64*222*222 =", 64 * 222 * 222, "features, not", 64 * 112 * 112)

# %% [markdown]
# Two defects. A 3×3 convolution without padding trims one pixel per side (224 → 222), and nothing
# halves the resolution to 112; and the residual branch is computed but never added. Corrected:
# `padding=1` keeps 224, a 2×2 max-pool gives 112, and the input is added back through a 1×1
# convolution (the channel count changes from 3 to 64, so the skip needs a projection).

# %%
class FixedResidualModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, padding=1)  # 224 -> 224
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.skip = nn.Conv2d(3, 64, kernel_size=1)  # match channels so the two can be added
        self.pool = nn.MaxPool2d(2)  # 224 -> 112
        self.fc = nn.Linear(64 * 112 * 112, 10)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)) + self.skip(x))  # the residual, actually added
        return self.fc(self.pool(out).flatten(1))


print("FixedResidualModel output:", tuple(FixedResidualModel()(images).shape))

# %% [markdown]
# One layer deep, though, it cannot show what the article is about. The rest of the lab builds the
# deep version on data small enough to train in minutes.
#
# ## 1. The problem: a deep plain network
#
# The data: scikit-learn's 1,797 real 8×8 handwritten digits (bundled, nothing downloaded), in a
# fixed, seeded split. The network: `lablib.models.DeepNet`, a stem convolution, then `depth`
# identical blocks of 3×3 convolution + activation, global average pooling and a linear classifier.
# The flags `norm` and `residual` switch on the two fixes; with both off it is the plain network.

# %%
splits = datasets.digits()
train_loader = datasets.loader(splits.train, batch_size=64, shuffle=True)
val_loader = datasets.loader(splits.val, batch_size=256)
test_loader = datasets.loader(splits.test, batch_size=256)
print(splits)
show(models.ResidualBlock)

# %% [markdown]
# Every run below gets the same depth, width, data, epochs and seed, and plain SGD with momentum
# and a cosine learning-rate decay; only the architecture changes. A `GradNormMonitor` records the
# gradient norm of every layer's weights at every step.

# %%
def run(name, norm, residual, act="relu", optimizer="sgd"):
    config.seed_everything(0)
    model = models.DeepNet(depth=cfg.depth, width=cfg.width, norm=norm, residual=residual, act=act)
    monitor = train.GradNormMonitor()
    lr = cfg.sgd_lr if optimizer == "sgd" else cfg.adam_lr
    history = train.fit(model, train_loader, val_loader, epochs=cfg.epochs, lr=lr, optimizer=optimizer,
                        schedule="cosine", monitor=monitor, device=device, desc=name)
    test_acc = train.evaluate(model, test_loader)["acc"]
    return {"model": model, "history": history, "monitor": monitor, "test_acc": test_acc}


runs = {}
runs["plain sigmoid"] = run("plain sigmoid", norm=False, residual=False, act="sigmoid")
runs["plain relu"] = run("plain relu", norm=False, residual=False)
for name in ("plain sigmoid", "plain relu"):
    print(f"{name:>14}: test accuracy {runs[name]['test_acc']:.3f}  (chance is 0.100)")

# %% [markdown]
# Both stay at chance. The per-layer gradient norms at the first training step show why: read the
# plot from right (the output) to left (the input).

# %%
def first_and_last(name):
    norms = list(runs[name]["monitor"].first().values())
    return norms[1], norms[-2]  # first and last of the repeated blocks (skip stem and head)


for name in ("plain sigmoid", "plain relu"):
    first, last = first_and_last(name)
    print(f"{name:>14}: gradient norm, first block {first:.1e}, last block {last:.1e}  (ratio {first / max(last, 1e-45):.0e})")
viz.per_layer({name: runs[name]["monitor"].first() for name in ("plain sigmoid", "plain relu")},
               title=f"Gradient norm per layer at the first step, depth {cfg.depth}")

# %% [markdown]
# Backpropagation multiplies, layer after layer, by each layer's weights and by the derivative of its
# activation. For the sigmoid that derivative is at most 0.25, so thirty layers shrink the gradient
# to nothing (a gradient of exactly 0 is drawn at the bottom of the log axis).
#
# For ReLU the culprit is the initialisation. PyTorch draws a convolution's weights uniformly from
# ±1/√fan_in, a variance of 1/(3·fan_in); ReLU passes half of the signal's energy; so each layer
# scales the signal's variance by fan_in · 1/(3·fan_in) · 1/2 = 1/6, and its size by √(1/6) ≈ 0.41,
# on the way forward and on the way back. Between the first and the last block lie
# `depth - 1` layers:

# %%
predicted = (1 / 6) ** ((cfg.depth - 1) / 2)
measured = first_and_last("plain relu")[0] / first_and_last("plain relu")[1]
print(f"predicted first/last gradient ratio, 0.41^{cfg.depth - 1}: {predicted:.1e};  measured: {measured:.1e}")

# %% [markdown]
# The early layers receive essentially nothing: they stay random, and the layers above them have
# nothing useful to work with. (An initialisation scaled for ReLU, He et al.'s `kaiming_normal_`
# with variance 2/fan_in, makes that factor 1; exercise 3 below explores depth instead.)
#
# ## 2. The fixes
#
# * **BatchNorm** re-centres and re-scales each channel over the batch: whatever the layers before
#   it did to the size of the signal, the next layer sees it at mean 0 and variance 1. It also makes
#   a block's output independent of the scale of its weights.
# * **A residual connection** adds the block's input to its output, `relu(x + bn(conv(x)))`: the
#   gradient reaches earlier layers through the `+ x` path, which multiplies it by one, however deep
#   the stack.

# %%
runs["BN only"] = run("BN only", norm=True, residual=False)
runs["residual only"] = run("residual only", norm=False, residual=True)
runs["BN + residual"] = run("BN + residual", norm=True, residual=True)

# %% [markdown]
# And the variant the article does not discuss: residual connections without BatchNorm, trained with
# Adam instead of SGD.

# %%
runs["residual only (Adam)"] = run("residual only (Adam)", norm=False, residual=True, optimizer="adam")

# %% [markdown]
# ## 3. Measurement

# %%
LN10 = math.log(10)  # the cross-entropy of a uniform guess over 10 classes


def note(name):
    losses = runs[name]["history"]["train_loss"]
    if any(v != v for v in losses):
        return "loss became NaN"
    if abs(losses[-1] - LN10) < 0.01:
        return "stuck at ln 10: one constant guess"
    return ""


print(f"depth {cfg.depth}, width {cfg.width}, {cfg.epochs} epochs, same data and seed for every run\n")
print(f"{'variant':<22}{'test acc':>9}{'train loss':>12}{'':>3}{'grad ratio':>11}  note")
print(f"{'':<22}{'':>9}{'ep 1 -> last':>12}{'':>3}{'first/last':>11}")
for name, r in runs.items():
    first, last = first_and_last(name)
    losses = r["history"]["train_loss"]
    print(f"{name:<22}{r['test_acc']:>9.3f}{losses[0]:>7.2f} ->{losses[-1]:>5.2f}{first / max(last, 1e-45):>11.1e}  {note(name)}")

# %% [markdown]
# *grad ratio* is the gradient norm of the first block's weights divided by the last block's, at the
# first training step: far below 1, the gradient vanishes on its way to the input; far above 1, it
# grows. *ln 10 ≈ 2.303* is the loss of a network that gives every image the same, uniform answer.

# %%
# "plain sigmoid" is left out: its curves lie on top of "plain relu" (and of "residual only" when
# that one is stuck too), both flat at ln 10 and 10 %.
viz.curves({name: r["history"] for name, r in runs.items() if name != "plain sigmoid"},
           metrics=("train_loss", "val_acc"), title=f"Depth {cfg.depth}: learning curves")

# %%
viz.per_layer({name: runs[name]["monitor"].first() for name in ("plain relu", "BN only", "residual only", "BN + residual")},
               title="Gradient norm per layer at the first step: before and after the fixes")

# %% [markdown]
# **Reading the table.**
#
# * The plain network at this depth stays at chance, whatever the activation: its loss never leaves
#   ln 10.
# * BatchNorm alone makes the network train, but look at its gradient ratio: instead of vanishing,
#   the gradient now *grows* towards the input (Yang et al. 2019 showed this happens in any deep
#   BatchNorm network without skips), so the early layers take large, noisy steps.
# * BatchNorm + residual trains best: the skip path carries the gradient at its own size and
#   BatchNorm keeps every block's output in range. The article's claim holds.
# * Residual connections *without* BatchNorm start well (no vanishing), but nothing keeps a block's
#   output in range when its weights grow. SGD's step is `lr × gradient`; its first steps enlarge
#   the weights of all blocks at once, the sums along the skip path blow up, the ReLUs end up
#   outputting 0 for every image, and the network settles on one constant guess (watch for a first
#   epoch loss above ln 10, then the plateau at ln 10). Adam divides each parameter's step by a
#   running estimate of that parameter's gradient size, so its steps stay about `lr` whatever the
#   gradients do: it trains the network that SGD cannot, although it still trails BatchNorm +
#   residual.

# %%
print("article: a deep plain network does not train; BatchNorm + residual connections fix it")
print(f"here:    depth {cfg.depth}, plain ReLU {runs['plain relu']['test_acc']:.3f} (chance 0.100) -> "
      f"BN + residual {runs['BN + residual']['test_acc']:.3f}")

# %%
headline = {name: r["test_acc"] for name, r in runs.items()}
results.record(
    "01_bn_residual",
    {
        "depth": cfg.depth,
        "plain sigmoid acc": headline["plain sigmoid"],
        "plain relu acc": headline["plain relu"],
        "BN only acc": headline["BN only"],
        "residual only acc (SGD)": headline["residual only"],
        "residual only acc (Adam)": headline["residual only (Adam)"],
        "BN + residual acc": headline["BN + residual"],
        "plain relu grad first/last block": first_and_last("plain relu")[0] / first_and_last("plain relu")[1],
    },
    claims={
        "plain relu acc": "deep plain net does not learn",
        "BN + residual acc": "BatchNorm + residual make it train",
    },
)

# %%
if cfg.scale != "smoke":
    assert headline["plain relu"] <= 0.25 and headline["plain sigmoid"] <= 0.25, "the plain network should stay near chance"
    assert headline["BN + residual"] >= 0.93, f"BN + residual reached only {headline['BN + residual']:.3f}"
    print("Effect confirmed: plain <= 0.25, BN + residual >= 0.93 at depth", cfg.depth)

# %% [markdown]
# ## Exercises
#
# **Exercise 1: BatchNorm by hand.** Section 2 described what BatchNorm does; now write `my_batch_norm(x)` for a batch of feature maps `x` of
# shape `(N, C, H, W)`: for each channel, subtract its mean and divide by its standard deviation,
# both taken over the batch and the two spatial dimensions (use the biased variance and add
# `eps = 1e-5` inside the square root).

# %%
def my_batch_norm(x, eps=1e-5):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_function(
    my_batch_norm,
    reference=models.batch_norm,
    make_inputs=lambda g: (torch.randn(8, 3, 4, 4, generator=g) * 3 + 1,),
    hint="x.mean(dim=(0, 2, 3), keepdim=True) is the per-channel mean; x.var(..., unbiased=False) the variance.",
)

# %% [markdown]
# **Exercise 2: a pre-activation residual block.** He et al. later moved BatchNorm and ReLU *before*
# the convolution, so nothing at all sits on the skip path (*Identity Mappings in Deep Residual
# Networks*, 2016): `x + conv(relu(bn(x)))`. Complete `MyPreActBlock`: define `self.norm`
# (`BatchNorm2d`), then `self.conv` (3×3, padding 1, no bias), and write `forward`. The check
# copies the reference's (randomised) weights into yours and compares the outputs.

# %%
class MyPreActBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        # YOUR CODE HERE: self.norm, then self.conv
        raise NotImplementedError

    def forward(self, x):
        # YOUR CODE HERE
        raise NotImplementedError


checks.check_module(
    lambda: MyPreActBlock(8),
    reference=models.PreActBlock(8),
    make_input=lambda g: torch.randn(4, 8, 6, 6, generator=g),
    hint="forward returns x + self.conv(torch.relu(self.norm(x))); the skip path is left untouched.",
)

# %% [markdown]
# Stuck? The reference answers are the tested code in lablib: uncomment to see them.

# %%
# show(models.batch_norm); show(models.PreActBlock)

# %% [markdown]
# **Exercise 3 (open).** Find the depth where the plain ReLU network stops learning on this data:
# rerun section 1 with `cfg["depth"] = 5`, `10`, `20`. What does the gradient ratio look like at
# the depth where it breaks?
#
# ## Going further
#
# * **GPU scale.** `LAB_SCALE=gpu` doubles the width and the epochs; on a GPU try depth 50 or 100:
#   the BN + residual network keeps training, which is what made 100-layer ResNets possible.
# * **A pretrained ResNet.** With downloads allowed, `torchvision.models.resnet18(weights="DEFAULT")`
#   is built from exactly the blocks of this lab (convolution, BatchNorm, ReLU, skip); print it and
#   find them.
# * **Bigger images.** `data.image_folder("path/to/folder", size=32)` loads your own class-per-folder
#   images; `models.DeepNet(in_channels=3, num_classes=...)` takes them unchanged.
# * **Read more.** Ioffe & Szegedy (2015), *Batch Normalization*; He et al. (2016), *Deep Residual
#   Learning for Image Recognition* and *Identity Mappings in Deep Residual Networks*.
