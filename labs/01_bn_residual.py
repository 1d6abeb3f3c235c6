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
# # Lab 01 — A deep network that will not train, and whether BatchNorm and residual connections fix it
#
# **Source:** 《小团队AI突围:从技术困境到行业标杆的逆袭之路》 (*Small teams breaking through in AI:
# from technical dead ends to industry benchmark*), section 1, "技术攻坚的核心挑战" (the core
# technical challenges). Its claim, about a model without batch normalisation:
# 「某团队曾因未正确配置批量归一化层,导致模型在第五个epoch时完全失效」 ("one team, having not set up
# its batch-normalisation layers correctly, saw the model fail completely by the fifth epoch"), and the
# fix: 「通过引入批量归一化与残差连接,模型稳定性显著提升」 ("introducing batch normalisation and
# residual connections made the model markedly more stable"). The article gives no accuracy figure;
# it gives code (`SimpleModel` → `ResidualModel`), which the errata below runs as printed.
#
# **What you will measure**, on real handwritten digits, at equal depth and training budget:
#
# 1. a deep plain network (sigmoid and ReLU) and whether it learns at all, with the gradient that
#    reaches each of its layers, against the decay its initialisation predicts;
# 2. the same depth built from a residual block with BatchNorm, written in the lab (edit it and
#    the experiments train your version), and from its two halves: BatchNorm only, residual only;
# 3. what a residual network without BatchNorm does under SGD and under Adam.
#
# **Objectives.** After this lab you can:
#
# * read vanishing (and exploding) gradients off a per-layer gradient-norm plot, and predict the
#   decay of a plain ReLU stack from its initialisation;
# * write a residual block with BatchNorm, and check it against a tested reference;
# * say what each half of the fix does, and what SGD and Adam each do to a residual network
#   without normalisation;
# * build the pre-activation variant of the block and train a deep network from it.
#
# **Prerequisites.** Lab 00 (the setup, the digits data, `train.fit`). What a convolution is and
# what backpropagation computes.
#
# **Time.** `smoke`: about 15 s. `cpu` (2 cores): about 1 minute of compute, 45 minutes with the
# exercises. `gpu`: under a minute of compute.
#
# Answers to the open questions: `docs/answers/01_bn_residual.md`.

# %%
import math

import torch
from torch import nn

from lablib import show, table
from lablib.core import checks, config, env, results, viz
from lablib.data import datasets
from lablib.nets import models, train

cfg = config.profile(
    smoke=dict(depth=6, width=8, epochs=1, sgd_lr=0.05, adam_lr=2e-3),
    cpu=dict(depth=30, width=16, epochs=10, sgd_lr=0.05, adam_lr=2e-3),
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
        print(f"{model_cls.__name__}: runs")
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
# fixed, seeded split.

# %%
splits = datasets.digits()
train_loader = datasets.loader(splits.train, batch_size=64, shuffle=True)
val_loader = datasets.loader(splits.val, batch_size=256)
test_loader = datasets.loader(splits.test, batch_size=256)
print(splits)

# %% [markdown]
# A plain network is a stack of identical blocks, each a 3×3 convolution and an activation:

# %%
class PlainBlock(nn.Module):
    """conv 3x3 -> activation: one layer of a plain deep network."""

    def __init__(self, width, act=nn.ReLU):
        super().__init__()
        self.conv = nn.Conv2d(width, width, kernel_size=3, padding=1)
        self.act = act()

    def forward(self, x):
        return self.act(self.conv(x))


# %% [markdown]
# `models.DeepNet` puts `depth` such blocks between a stem convolution and a classifier (global
# average pooling, then a linear layer); `block=` says how to build each one. Every run below gets
# the same depth, width, data, epochs and seed, and plain SGD with momentum and a cosine
# learning-rate decay; only the block changes. A `GradNormMonitor` records the gradient norm of
# every layer's weights at every step.

# %%
show(models.DeepNet.forward)


def run(name, block, optimizer="sgd"):
    """Train a depth-`cfg.depth` DeepNet whose blocks are block(width); return what it measured."""
    config.seed_everything(0)
    model = models.DeepNet(depth=cfg.depth, width=cfg.width, block=block)
    monitor = train.GradNormMonitor()
    lr = cfg.sgd_lr if optimizer == "sgd" else cfg.adam_lr
    history = train.fit(model, train_loader, val_loader, epochs=cfg.epochs, lr=lr, optimizer=optimizer,
                        schedule="cosine", monitor=monitor, device=device, desc=name)
    test_acc = train.evaluate(model, test_loader)["acc"]
    return {"model": model, "history": history, "monitor": monitor, "test_acc": test_acc}


runs = {}
runs["plain sigmoid"] = run("plain sigmoid", lambda width: PlainBlock(width, act=nn.Sigmoid))
runs["plain relu"] = run("plain relu", PlainBlock)
table({name: {"test acc": runs[name]["test_acc"], "chance": 0.1} for name in ("plain sigmoid", "plain relu")},
      title=f"Plain networks, depth {cfg.depth}")

# %% [markdown]
# The per-layer gradient norms at the first training step show what reaches each layer: read the
# plot from right (the output) to left (the input).

# %% figure="gradient-norm-per-layer-plain"
def first_and_last(name):
    norms = list(runs[name]["monitor"].first().values())
    return norms[1], norms[-2]  # first and last of the repeated blocks (skip stem and head)


def grad_ratio(name):
    first, last = first_and_last(name)
    return first / max(last, 1e-45)


table({name: {"first block": first_and_last(name)[0], "last block": first_and_last(name)[1], "first / last": grad_ratio(name)}
       for name in ("plain sigmoid", "plain relu")}, title="Gradient norm at the first step")
viz.per_layer({name: runs[name]["monitor"].first() for name in ("plain sigmoid", "plain relu")},
               title=f"Gradient norm per layer at the first step, depth {cfg.depth}")

# %% [markdown]
# Backpropagation multiplies, layer after layer, by each layer's weights and by the derivative of its
# activation. For the sigmoid that derivative is at most 0.25, so every layer divides the gradient
# by at least 4, on top of what its weights do (a gradient of exactly 0 is drawn at the bottom of
# the log axis).
#
# For ReLU the culprit is the initialisation. PyTorch draws a convolution's weights uniformly from
# ±1/√fan_in, a variance of 1/(3·fan_in); ReLU passes half of the signal's energy; so each layer
# scales the signal's variance by fan_in · 1/(3·fan_in) · 1/2 = 1/6, and its size by √(1/6) ≈ 0.41,
# on the way forward and on the way back. Between the first and the last block lie
# `depth - 1` layers:

# %%
predicted = (1 / 6) ** ((cfg.depth - 1) / 2)
measured = grad_ratio("plain relu")
print(f"first/last gradient ratio of plain relu, predicted 0.41^{cfg.depth - 1} = {predicted:.1e}, measured {measured:.1e}"
      f" ({abs(math.log10(measured / predicted)):.1f} decades apart)")

# %% [markdown]
# Where the ratio is many decades below 1, the early layers receive essentially nothing: they stay
# random, and the layers above them have nothing useful to work with. (An initialisation scaled
# for ReLU, He et al.'s `kaiming_normal_` with variance 2/fan_in, makes that factor 1; exercise 3
# explores depth instead.)
#
# ## 2. The fix, written here: a residual block with BatchNorm
#
# * **BatchNorm** re-centres and re-scales each channel over the batch: whatever the layers before
#   it did to the size of the signal, the next layer sees it at mean 0 and variance 1 (then a learned
#   scale and shift). It also makes a block's output independent of the scale of its weights.
# * **A residual connection** adds the block's input to its output, `relu(x + bn(conv(x)))`: the
#   gradient reaches earlier layers through the `+ x` path, which multiplies it by one, however deep
#   the stack.
#
# The block, ordered as in ResNet (He et al. 2016). The two flags switch each half of the fix off,
# so the experiments can compare them; the convolution drops its bias when BatchNorm follows, since
# BatchNorm's shift does the same job.

# %%
class ResidualBlock(nn.Module):
    """conv 3x3 -> BatchNorm -> add the input -> ReLU."""

    def __init__(self, width, norm=True, residual=True):
        super().__init__()
        self.conv = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=not norm)
        self.norm = nn.BatchNorm2d(width) if norm else nn.Identity()
        self.residual = residual

    def forward(self, x):
        out = self.norm(self.conv(x))
        if self.residual:
            out = out + x  # the skip: the gradient flows back through "+ x" unchanged
        return torch.relu(out)


# %% [markdown]
# Does it compute what a residual block should? lablib keeps a tested reference,
# `models.residual_block(x, conv_weight, bn_weight, bn_bias)`, written as a function of the input
# and the weights. The check runs the lab's block with the same weights (`torch.func.functional_call`
# puts given tensors in place of a module's parameters) on random inputs, in training mode, and
# compares outputs and the gradients with respect to the input and every weight.

# %%
def residual_block(x, conv_weight, bn_weight, bn_bias):
    """The lab's ResidualBlock (both fixes on) as a function of its input and weights."""
    weights = {"conv.weight": conv_weight, "norm.weight": bn_weight, "norm.bias": bn_bias}
    return torch.func.functional_call(ResidualBlock(x.shape[1]), weights, (x,))


def block_inputs(g, width=8):
    return (
        torch.randn(4, width, 6, 6, generator=g, requires_grad=True),
        (0.2 * torch.randn(width, width, 3, 3, generator=g)).requires_grad_(),
        (1 + 0.5 * torch.randn(width, generator=g)).requires_grad_(),
        (0.5 * torch.randn(width, generator=g)).requires_grad_(),
    )


checks.agrees(residual_block, reference=models.residual_block, make_inputs=block_inputs)

# %% [markdown]
# If you edit `ResidualBlock`, rerun from here: the check says whether it still agrees, and the
# runs below train your version. Each half of the fix alone, then both:

# %%
runs["BN only"] = run("BN only", lambda width: ResidualBlock(width, residual=False))
runs["residual only"] = run("residual only", lambda width: ResidualBlock(width, norm=False))
runs["BN + residual"] = run("BN + residual", ResidualBlock)

# %% [markdown]
# And a variant the article does not discuss: residual connections without BatchNorm, trained with
# Adam instead of SGD.

# %%
runs["residual only (Adam)"] = run("residual only (Adam)", lambda width: ResidualBlock(width, norm=False), optimizer="adam")

# %% [markdown]
# ## 3. Measurement
#
# *grad ratio* is the gradient norm of the first block's weights divided by the last block's, at the
# first training step: far below 1, the gradient vanishes on its way to the input; far above 1, it
# grows. *ln 10 ≈ 2.303* is the loss of a network that gives every image the same, uniform answer.

# %%
LN10 = math.log(10)  # the cross-entropy of a uniform guess over 10 classes


def note(name):
    losses = runs[name]["history"]["train_loss"]
    if abs(losses[-1] - LN10) < 0.01:
        return "stuck at ln 10: one constant guess" + (" (after a first epoch above it)" if losses[0] > LN10 + 0.05 else "")
    return ""


rows = {name: {"test acc": r["test_acc"], "loss, epoch 1": r["history"]["train_loss"][0],
               "loss, last": r["history"]["train_loss"][-1], "grad ratio": grad_ratio(name), "note": note(name)}
        for name, r in runs.items()}
table(rows, title=f"depth {cfg.depth}, width {cfg.width}, {cfg.epochs} epochs, same data and seed for every run")

# %% figure="learning-curves-plain-vs-fixed"
# "plain sigmoid" is left out: at a depth where it learns nothing its curves lie on top of "plain relu".
viz.curves({name: r["history"] for name, r in runs.items() if name != "plain sigmoid"},
           metrics=("train_loss", "val_acc"), title=f"Depth {cfg.depth}: learning curves")

# %% figure="gradient-norm-before-after-fixes"
viz.per_layer({name: runs[name]["monitor"].first() for name in ("plain relu", "BN only", "residual only", "BN + residual")},
               title="Gradient norm per layer at the first step: before and after the fixes")

# %% [markdown]
# The article's two statements, as measured here (at `smoke` scale the networks are shallow and
# trained for one epoch, so the verdicts are shown but not held against the run):

# %%
plain_acc = max(runs["plain sigmoid"]["test_acc"], runs["plain relu"]["test_acc"])
results.claim("a deep plain network does not learn", plain_acc, holds=plain_acc <= 0.25,
              condition=f"best plain test accuracy (sigmoid, ReLU) at depth {cfg.depth} <= 0.25; chance is 0.10",
              source="「未正确配置批量归一化层,导致模型在第五个epoch时完全失效」 (without proper BatchNorm the model failed completely)")
fixed_acc = runs["BN + residual"]["test_acc"]
trains = results.claim("BatchNorm + residual connections make it train", fixed_acc, holds=fixed_acc >= 0.93,
                       condition=f"test accuracy at depth {cfg.depth} >= 0.93",
                       source="「通过引入批量归一化与残差连接,模型稳定性显著提升」 (markedly more stable; no figure given)")

# %% [markdown]
# **Reading the table.** What this run shows for each half of the fix:

# %%
bn_only, res_sgd, res_adam = (runs[n]["test_acc"] for n in ("BN only", "residual only", "residual only (Adam)"))
if grad_ratio("BN only") > 10:
    print(f"* BatchNorm alone: test accuracy {bn_only:.3f}, but its gradient grows towards the input "
          f"(ratio {grad_ratio('BN only'):.1e}): the early layers take large, noisy steps.")
else:
    print(f"* BatchNorm alone: test accuracy {bn_only:.3f}, gradient ratio {grad_ratio('BN only'):.1e} (no strong growth at this depth).")
print(f"* residual only, SGD: test accuracy {res_sgd:.3f}" + (f" ({note('residual only')})" if note("residual only") else ""))
print(f"* residual only, Adam: test accuracy {res_adam:.3f}")
print(f"* BatchNorm + residual: test accuracy {fixed_acc:.3f}, "
      + ("the best of these runs." if fixed_acc >= max(r["test_acc"] for r in runs.values()) else "not the best here."))

# %% [markdown]
# What lies behind those cases:
#
# * **BatchNorm without skips.** In a deep BatchNorm network without skip connections the gradient
#   tends to *grow* towards the input (Yang et al. 2019 showed this holds for any such network at
#   initialisation): if the ratio above is far above 1, that is what you see.
# * **Skips without BatchNorm.** Residual connections alone start well (nothing vanishes), but
#   nothing keeps a block's output in range when its weights grow. SGD's step is `lr × gradient`;
#   if its first steps enlarge the weights of all blocks at once, the sums along the skip path blow
#   up, the ReLUs end up outputting 0 for every image, and the network settles on one constant guess
#   (a first-epoch loss above ln 10, then the plateau at ln 10). Adam divides each parameter's step
#   by a running estimate of that parameter's gradient size, so its steps stay about `lr` whatever
#   the gradients do: where Adam trains the network that SGD left at ln 10, this is why.
# * **Both.** The skip path carries the gradient at its own size and BatchNorm keeps every block's
#   output in range.

# %% [markdown]
# ## Exercises
#
# **Exercise 1: a pre-activation residual block.** He et al. later moved BatchNorm and ReLU *before*
# the convolution, so that nothing at all sits on the skip path, not even a ReLU (*Identity Mappings
# in Deep Residual Networks*, 2016): `x + conv(relu(bn(x)))`. Complete `MyPreActBlock`: define
# `self.norm` (`BatchNorm2d`), then `self.conv` (3×3, padding 1, no bias), and write `forward`.
# The check copies randomised reference weights into yours and compares the outputs.
#
# <details><summary>Hint</summary>
#
# Same parts as `ResidualBlock` above, in another order: normalise, activate, convolve, then add
# the input. Nothing is applied after the addition.
#
# </details>

# %%
@checks.exercise
class MyPreActBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        # YOUR CODE HERE: self.norm, then self.conv
        raise NotImplementedError

    def forward(self, x):
        # YOUR CODE HERE
        raise NotImplementedError


preact_verdict = checks.check_module(
    lambda: MyPreActBlock(8),
    reference=models.PreActBlock(8),
    make_input=lambda g: torch.randn(4, 8, 6, 6, generator=g),
    name="MyPreActBlock",
    hint="forward returns x + self.conv(torch.relu(self.norm(x))); the skip path is left untouched.",
)
# checks.show_solution("MyPreActBlock")

# %% [markdown]
# Once your block is correct, the next cell trains a deep network built from it, with the same
# budget as the runs above (and says so when the block is not ready yet).

# %%
if preact_verdict:
    runs["pre-activation"] = run("pre-activation", MyPreActBlock)
    table({name: {"test acc": runs[name]["test_acc"], "grad ratio": grad_ratio(name)} for name in ("BN + residual", "pre-activation")},
          title=f"Your pre-activation block against the lab's block, depth {cfg.depth}")
else:
    print("MyPreActBlock is not correct yet: finish exercise 1, then run this cell again.")

# %% [markdown]
# **Exercise 2: BatchNorm by hand.** Write `my_batch_norm(x)` for a batch of feature maps `x` of
# shape `(N, C, H, W)`: what `nn.BatchNorm2d` computes in training mode before its learned scale and
# shift. For each channel, subtract its mean and divide by its standard deviation, both taken over
# the batch and the two spatial dimensions (use the biased variance and add `eps = 1e-5` inside the
# square root). The check compares values and gradients.
#
# <details><summary>Hint</summary>
#
# "Per channel" means: reduce over every dimension except dimension 1, and keep the reduced
# dimensions so that the result broadcasts back against `x`.
#
# </details>

# %%
@checks.exercise
def my_batch_norm(x, eps=1e-5):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_function(
    my_batch_norm,
    reference=models.batch_norm,
    make_inputs=lambda g: ((torch.randn(8, 3, 4, 4, generator=g) * 3 + 1).requires_grad_(),),
    hint="x.mean(dim=(0, 2, 3), keepdim=True) is the per-channel mean; x.var(..., unbiased=False) the variance.",
)
# checks.show_solution("my_batch_norm")

# %% [markdown]
# Then ask: why must BatchNorm behave differently at test time, when one image comes at a time?
# (`nn.BatchNorm2d` keeps running averages for that; `model.eval()` switches to them.)
#
# **Exercise 3 (open).** Find the depth where the plain ReLU network stops learning on this data:
# set `cfg["depth"] = 1` (then `2`, `3`, `5`) and rerun sections 1 and 2. What does the gradient
# ratio look like at the depth where it breaks, and how does BN + residual do at the same depth?
# (`cfg["depth"] = 30` restores the lab's setting.)
#
# ## Record the results
#
# The claims above, the other figures, and your exercises' verdicts, saved to
# `results/01_bn_residual.<scale>.json`; at `cpu` and `gpu` scale a claim that did not hold stops
# the lab here.

# %%
figures = {
    "depth": cfg.depth,
    "plain sigmoid acc": runs["plain sigmoid"]["test_acc"],
    "plain relu acc": runs["plain relu"]["test_acc"],
    "BN only acc": bn_only,
    "residual only acc (SGD)": res_sgd,
    "residual only acc (Adam)": res_adam,
    "plain relu grad first/last block": grad_ratio("plain relu"),
    "plain relu grad first/last block, predicted": predicted,
    "BN only grad first/last block": grad_ratio("BN only"),
}
if "pre-activation" in runs:
    figures["pre-activation acc (exercise 1)"] = runs["pre-activation"]["test_acc"]
results.record(figures, notes="Test accuracy on the digits test split; every run has the same depth, width, epochs, data and seed.")

# %% [markdown]
# ## Going further
#
# * **GPU scale.** `LAB_SCALE=gpu` doubles the width and triples the epochs; on a GPU try depth 50 or 100:
#   watch whether the BN + residual network keeps training, as 100-layer ResNets do.
# * **A pretrained ResNet.** With downloads allowed, `torchvision.models.resnet18(weights="DEFAULT")`
#   is built from the same parts as this lab's block (convolution, BatchNorm, ReLU, skip); print it
#   and find them.
# * **Bigger images.** `datasets.image_folder("path/to/folder", size=32)` loads your own
#   class-per-folder images; `models.DeepNet(in_channels=3, num_classes=...)` takes them unchanged.
# * **Read more.** Ioffe & Szegedy (2015), *Batch Normalization*; He et al. (2016), *Deep Residual
#   Learning for Image Recognition* and *Identity Mappings in Deep Residual Networks*; Yang et al.
#   (2019), *A Mean Field Theory of Batch Normalization*.
