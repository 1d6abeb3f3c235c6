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
# # Lab 13 — Efficient blocks and transfer learning: MobileNet's convolution, ConvNeXt, and when pretraining pays
#
# **Source:** 《突破AI技术壁垒:从算法创新到生态重构的路径探索》 ("Breaking through AI's technical
# barriers: from algorithmic innovation to rebuilding the ecosystem"), section 二 "算法创新"
# (algorithmic innovation):
#
# > MobileNet系列通过深度可分离卷积将参数量减少90%,同时保持80%以上准确率。
#
# > "The MobileNet family cuts the number of parameters by 90 % with depthwise-separable
# > convolutions, while keeping more than 80 % accuracy."
#
# and, for "混合架构设计" (hybrid architectures), "ConvNeXt通过纯卷积架构逼近Swin Transformer性能"
# (ConvNeXt approaches the Swin Transformer with a pure convolutional architecture), loaded with
# transformers' `from_pretrained`:
#
# ```python
# from transformers import ConvNeXtForImageClassification
# model = ConvNeXtForImageClassification.from_pretrained("facebook/convnext-tiny-224")
# ```
#
# From 《AI创业公司如何应对技术瓶颈?》 ("How AI start-ups deal with technical bottlenecks"),
# transfer learning in three steps: "预训练:在大型数据集上预训练模型,学习通用特征。微调:在特定任务
# 上微调模型" (pretrain on a large data set to learn general features; fine-tune on the specific
# task), with the warning "迁移学习的效果依赖于源模型与目标任务的相似度,可能存在迁移鸿沟" (how well
# transfer works depends on how similar the source is to the target task: there can be a
# *transfer gap*). And from 《AI探索者的技术实践:从兴趣驱动到系统化学习》 ("An AI explorer's
# technical practice"): "计算复杂度:通过FLOPs指标评估模型推理耗时" (judge a model's inference
# time by its FLOPs).
#
# **What you will measure**
#
# 1. the depthwise-separable convolution, written here: its parameters and FLOPs against a plain
#    convolution's, counted by formula and by torch's FLOP counter (and where that counter is
#    wrong);
# 2. its latency on this machine: where the FLOPs saved become time saved, and where they do not;
# 3. a small **ConvNeXt** built, trained, saved and loaded back through transformers, offline;
# 4. **transfer**: a pretrained network fine-tuned with 1–30 labels per class, against the same
#    network trained from scratch, in a setting where pretraining helps and one where it does not;
#    frozen body, full fine-tuning, and a learning rate per layer group.
#
# **Objectives.** After this lab you can
#
# * write a depthwise-separable convolution and count its parameters and FLOPs by hand;
# * measure FLOPs with `torch.utils.flop_counter.FlopCounterMode`, and tell FLOPs from latency;
# * build, save and load a transformers vision model without a network connection, and give it a
#   new classification head;
# * fine-tune a pretrained model (frozen, full, per-group learning rates) and judge from a
#   measurement, not a slogan, whether pretraining helped.
#
# **Prerequisites.** Lab 00 (setup), lab 01 (convolutions, BatchNorm, `train.fit`), lab 04
# (timing on a CPU). What a convolution's weight tensor holds.
#
# **Time.** `smoke`: about 15 s; `cpu` (2 cores): about 1.5 min of computing; `gpu`: a few
# minutes. Reading and the exercises: 45–60 min.
#
# Answers to the open questions and exercises: `docs/answers/13_transfer_learning.md`.

# %%
import copy
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: no network unless you unset it

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lablib import table
from lablib.core import bench, checks, config, env, results, viz
from lablib.data import datasets
from lablib.methods import efficient, transfer
from lablib.nets import models, train

cfg = config.profile(
    smoke=dict(channels=(32, 128), batches=(1, 32), repeats=3, cnn_steps=40, convnext_steps=30,
               per_class=(1, 10), seeds=1, source_steps=100, tune_steps=50, noise=0.35),
    cpu=dict(channels=(32, 64, 128, 256), batches=(1, 32), repeats=5, cnn_steps=300, convnext_steps=300,
             per_class=(1, 3, 10, 30), seeds=3, source_steps=600, tune_steps=150, noise=0.35),
    gpu=dict(channels=(32, 64, 128, 256, 512), batches=(1, 32, 256), repeats=20, cnn_steps=600, convnext_steps=1000,
             per_class=(1, 3, 10, 30), seeds=5, source_steps=1200, tune_steps=300, noise=0.35),
)
device = config.device()
torch.set_num_threads(1)  # tiny models: a second thread only adds waiting; timings then compare like with like
config.seed_everything(0)
print(env.line())
cfg

# %% [markdown]
# ## 1. The problem: a plain convolution's cost grows with channels squared
#
# A 3×3 convolution from `C` channels to `C` channels holds 3·3·C·C weights: every output
# channel looks at every input channel through its own 3×3 filter. Doubling the width quadruples
# the weights and the work. At 256 channels one such layer holds 590,000 weights.
#
# MobileNet splits the layer in two (Howard et al., 2017):
#
# * a **depthwise** 3×3 convolution: one filter per channel, each channel filtered on its own
#   (`groups=C` in PyTorch), 3·3·C weights;
# * a **pointwise** 1×1 convolution that mixes the channels, C·C_out weights.
#
# Together 9·C + C·C_out weights instead of 9·C·C_out: a share of 1/C_out + 1/9 of the plain
# layer. It is not the same function (a plain convolution can mix channels differently at each of
# the nine positions; the separable one cannot), so whether it keeps the accuracy is a question
# for a measurement.

# %% [markdown]
# ## 2. The technique, written in the lab
#
# The separable convolution, with the weights laid out as `nn.Conv2d` stores them:
# depthwise `(C, 1, k, k)`, pointwise `(C_out, C, 1, 1)`.

# %%
def depthwise_separable(x, depthwise_weight, pointwise_weight, padding=1):
    channels = x.shape[1]
    x = F.conv2d(x, depthwise_weight, padding=padding, groups=channels)  # one k×k filter per channel
    return F.conv2d(x, pointwise_weight)  # 1×1: mix the channels


# %% [markdown]
# It must compute what lablib's reference computes (written with `unfold`, without grouped
# convolutions), values and gradients, on random inputs:

# %%
checks.agrees(depthwise_separable, reference=efficient.separable_conv,
              make_inputs=lambda g: (torch.randn(2, 6, 7, 7, generator=g), torch.randn(6, 1, 3, 3, generator=g),
                                     torch.randn(10, 6, 1, 1, generator=g), 1))

# %% [markdown]
# The layers below run that function: a plain convolution and a separable one, the same shape in
# and out.

# %%
class Plain(nn.Module):
    def __init__(self, c_in, c_out, k=3):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)

    def forward(self, x):
        return self.conv(x)


class Separable(nn.Module):
    def __init__(self, c_in, c_out, k=3):
        super().__init__()
        self.depthwise = nn.Parameter(nn.Conv2d(c_in, c_in, k, groups=c_in, bias=False).weight.detach())
        self.pointwise = nn.Parameter(nn.Conv2d(c_in, c_out, 1, bias=False).weight.detach())

    def forward(self, x):
        return depthwise_separable(x, self.depthwise, self.pointwise, padding=self.depthwise.shape[-1] // 2)


rows, ratios = [], {}
for c in cfg.channels:
    plain, separable = models.count_params(Plain(c, c)), models.count_params(Separable(c, c))
    ratios[c] = separable / plain
    rows.append({"channels": c, "plain weights": plain, "separable weights": separable,
                 "share": f"{100 * ratios[c]:.1f} %", "1/C + 1/9": f"{100 * (1 / c + 1 / 9):.1f} %"})
table(rows, title="One 3×3 layer, C -> C channels")

# %%
widest = max(cfg.channels)
results.claim(f"a separable 3×3 layer cuts the weights (at {widest} channels)", 1 - ratios[widest],
              holds=1 - ratios[widest] >= 0.85 and all(abs(r - (1 / c + 1 / 9)) < 1e-12 for c, r in ratios.items()),
              condition=">= 85 % fewer, and the share is exactly 1/C + 1/9 at every width",
              source="深度可分离卷积将参数量减少90% (article: -90 % parameters)")

# %% [markdown]
# The cut approaches 1 − 1/9 ≈ 89 % as the layer widens; the article's "90 %" is that limit. A
# whole MobileNet keeps its first full convolution and its classifier, so its saving is
# smaller than a single layer's.
#
# ### Does it keep the accuracy?
#
# The article's second half: "同时保持80%以上准确率" (while keeping more than 80 % accuracy). Two
# small networks on the 8×8 digits, the same except for their middle convolutions: plain 3×3, or
# separable. Both are trained the same way, on the training split, and scored on the test split.

# %%
splits = datasets.digits()
loaders = {"train": datasets.loader(splits.train, 64, shuffle=True, seed=0), "test": datasets.loader(splits.test, 256)}


def small_net(block, width=32):
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         block(width, width), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
                         block(width, width), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


accuracy = {}
for name, block in (("plain", Plain), ("separable", Separable)):
    torch.manual_seed(0)
    net = small_net(block)
    train.fit(net, loaders["train"], steps=cfg.cnn_steps, lr=3e-3, schedule="cosine", desc=name)
    accuracy[name] = (train.evaluate(net, loaders["test"])["acc"], models.count_params(net))
table([{"network": n, "weights": p, "test accuracy": f"{100 * a:.1f} %"} for n, (a, p) in accuracy.items()])

# %%
kept = accuracy["separable"][0] - accuracy["plain"][0]
results.claim("the separable network's accuracy against the plain one's (points)", 100 * kept,
              holds=100 * kept >= -3, condition="within 3 points or better",
              source="同时保持80%以上准确率 (article: keeps more than 80 % accuracy)")
print(f"The separable network has {accuracy['separable'][1] / accuracy['plain'][1]:.0%} of the plain one's "
      f"weights (its first convolution and classifier are unchanged) and scores {100 * kept:+.1f} points.")

# %% [markdown]
# ## 3. FLOPs, counted twice
#
# The article judges inference time by FLOPs. One multiply-add is 2 FLOPs in torch's counter
# (MobileNet's paper counts "Mult-Adds", once each): a convolution costs 2 × (its weights) FLOPs
# for every output pixel of every image. `torch.utils.flop_counter.FlopCounterMode` counts them
# while the model runs (`efficient.count_flops` wraps it).

# %%
n, side = 8, 16
rows, flops = [], {}
for c in cfg.channels:
    x = torch.randn(n, c, side, side)
    for name, layer in (("plain", Plain(c, c)), ("separable", Separable(c, c))):
        fwd = efficient.count_flops(layer, x)["total"]
        step = efficient.count_flops(layer, x.clone().requires_grad_(), backward=True)["total"]
        formula = efficient.conv_flops(n, c, c, side, side, separable=name == "separable")
        flops[c, name] = (fwd, step)
        rows.append({"channels": c, "layer": name, "forward (counter)": fwd, "forward (formula)": formula,
                     "backward (counter)": step - fwd, "backward / forward": f"{(step - fwd) / fwd:.1f}"})
table(rows, title=f"FLOPs of one layer on a batch of {n} images of {side}×{side}")

# %%
exact = all(r["forward (counter)"] == r["forward (formula)"] for r in rows)
results.claim("torch's FLOP counter agrees with the formula on the forward pass", exact, holds=exact,
              condition="equal at every width, plain and separable")
worst = max((s - f) / f for (c, name), (f, s) in flops.items() if name == "separable")
print(f"Backward / forward for the separable layer: up to {worst:.1f}. ", end="")
if worst > 2.5:
    print("A backward pass computes two gradients (input and weights), each costing about one forward pass, so "
          "about 2× is right (the plain layer shows it). The separable layer's count is far higher: this torch's "
          "counter charges the weight gradient of a grouped convolution as if the layer were not grouped, C times "
          "too much for the depthwise part. Count a training step's FLOPs by formula (about 3× the forward) until "
          "it is fixed.")
else:
    print("About 2×, as for the plain layer: this torch's counter handles grouped convolutions' backward correctly.")
results.claim("FLOP counter's backward over-count for a grouped convolution (backward / forward)", worst,
              holds=worst > 2.5, condition="> 2.5 (2 would be right)", asserted=False)

# %% [markdown]
# ## 4. FLOPs are not latency
#
# A separable layer does 1/C + 1/9 of the work. Whether it takes that share of the time depends
# on how the work runs: a depthwise convolution reads each input value once per filter tap but
# does only 9 multiply-adds per output value, so it waits on memory rather than arithmetic, and
# its loops are short and hard to vectorise. One inference call per layer (on a CPU, one thread), best
# of interleaved rounds (`bench.compare`):

# %%
grid, rows = {}, []
with torch.inference_mode():
    for c in tqdm(cfg.channels, desc="latency"):
        for b in cfg.batches:
            x = torch.randn(b, c, side, side, device=device)
            layers = {"plain": Plain(c, c).to(device).eval(), "separable": Separable(c, c).to(device).eval()}
            t = bench.compare({name: (lambda f=f, x=x: f(x)) for name, f in layers.items()}, rounds=2, warmup=2,
                              repeats=cfg.repeats)
            speedup = t["plain"].median_ms / t["separable"].median_ms
            grid[c, b] = speedup
            rows.append({"channels": c, "batch": b, "plain ms": t["plain"].median_ms,
                         "separable ms": t["separable"].median_ms, "FLOPs saved ×": f"{1 / (1 / c + 1 / 9):.1f}",
                         "time saved ×": f"{speedup:.2f}", "verdict": bench.verdict(speedup)})
where_run = f"{torch.get_num_threads()} CPU thread(s)" if device.type == "cpu" else env.device_name()
table(rows, title=f"One 3×3 layer, {side}×{side} pixels, {where_run}")

# %% figure="separable-speedup-vs-channels"
fig, ax = plt.subplots(figsize=(6, 3.6))
for i, b in enumerate(cfg.batches):
    ax.plot(cfg.channels, [grid[c, b] for c in cfg.channels], marker="o", color=f"C{i}", label=f"measured, batch {b}")
ax.plot(cfg.channels, [1 / (1 / c + 1 / 9) for c in cfg.channels], "k--", label="FLOPs saved")
ax.axhline(1, color="grey", lw=0.8)
ax.set(xscale="log", xlabel="channels", ylabel="plain time / separable time", title="Where FLOPs saved become time saved")
ax.set_xticks(cfg.channels, [str(c) for c in cfg.channels])
ax.minorticks_off()  # only the measured widths on the axis
ax.legend(fontsize="small")
plt.close(fig)
fig

# %%
narrow = min(grid[min(cfg.channels), b] for b in cfg.batches)
wide = max(grid[widest, b] for b in cfg.batches)
results.claim(f"separable layer's speed-up at {min(cfg.channels)} channels (worst batch)", narrow,
              holds=narrow < 0.5 / (1 / min(cfg.channels) + 1 / 9),
              condition="less than half the FLOP saving", asserted=False,
              source="通过FLOPs指标评估模型推理耗时 (article: judge inference time by FLOPs)")
saved = 1 / (1 / widest + 1 / 9)
print(f"At {min(cfg.channels)} channels the separable layer saves {1 / (1 / min(cfg.channels) + 1 / 9):.1f}× the FLOPs "
      f"and {narrow:.2f}× the time ({bench.verdict(narrow)}); at {widest} channels up to {wide:.2f}× "
      f"({bench.verdict(wide)}), " + (f"still short of the {saved:.1f}× in FLOPs." if wide < saved
                                      else f"as much as the {saved:.1f}× in FLOPs or more."))

# %% [markdown]
# FLOPs rank layers of one kind; across kinds (plain against depthwise, convolution against
# attention), time them on the hardware that will run them. On a GPU the gap is often wider:
# depthwise convolutions use a small share of its arithmetic units.
#
# ## 5. ConvNeXt through transformers, offline
#
# The article's line fails before it loads anything: the class is `ConvNextForImageClassification`
# (lower-case "n" in "Next"), not `ConvNeXtForImageClassification`:

# %%
try:
    from transformers import ConvNeXtForImageClassification  # noqa: F401  (the article's spelling)
except ImportError as err:
    print(f"ImportError: {str(err).splitlines()[0][:150]}")

# %% [markdown]
# `facebook/convnext-tiny-224` has 28 M parameters and needs a download; this lab builds the same
# architecture shrunk to three stages of 16, 32 and 64 channels (`transfer.tiny_convnext`) and
# trains it on the digits enlarged to 32×32. A ConvNeXt block is a depthwise 7×7 convolution
# followed by two pointwise layers (an MLP over channels): section 2's idea at a larger kernel.

# %%
big = {"train": datasets.digits(size=32).train, "test": datasets.digits(size=32).test}
convnext = transfer.tiny_convnext(num_labels=10, image_size=32).to(device)
by_kind = {"depthwise 7×7": 0, "pointwise (channel MLP)": 0, "other": 0}
for name, p in convnext.named_parameters():
    kind = "depthwise 7×7" if "dwconv" in name else "pointwise (channel MLP)" if "pwconv" in name else "other"
    by_kind[kind] += p.numel()
table([{"part": k, "weights": v, "share": f"{100 * v / sum(by_kind.values()):.0f} %"} for k, v in by_kind.items()],
      title=f"{type(convnext).__name__}: {sum(by_kind.values()):,} weights")


class Logits(nn.Module):
    """transformers' models return an output object; lablib's loop wants the logits tensor."""

    def __init__(self, hf_model):
        super().__init__()
        self.hf_model = hf_model

    def forward(self, x):
        return self.hf_model(pixel_values=x).logits


torch.manual_seed(0)
start = time.perf_counter()
train.fit(Logits(convnext), datasets.loader(big["train"], 64, shuffle=True, seed=0), steps=cfg.convnext_steps,
          lr=3e-3, optimizer="adamw", weight_decay=0.05, schedule="cosine", desc="ConvNeXt")
convnext_s = time.perf_counter() - start
convnext_acc = train.evaluate(Logits(convnext), datasets.loader(big["test"], 256))["acc"]
print(f"Test accuracy {100 * convnext_acc:.1f} % after {cfg.convnext_steps} steps ({convnext_s:.0f} s).")
results.claim("a small ConvNeXt trained on 32×32 digits: test accuracy", convnext_acc, holds=convnext_acc >= 0.9,
              condition=">= 90 %", source="ConvNeXt通过纯卷积架构逼近Swin Transformer性能 (article)")

# %% [markdown]
# `save_pretrained` writes the configuration and the weights (safetensors) to a folder;
# `from_pretrained` on that folder rebuilds the model with no network. `HF_HUB_OFFLINE=1` (set in
# the setup cell, before transformers was imported) makes any attempt to reach the hub fail
# instead of hanging on a firewall.

# %%
folder = config.data_dir() / "pretrained" / "convnext-digits"
convnext.save_pretrained(folder)
print(sorted(p.name for p in folder.iterdir()))
reloaded, where = transfer.load_pretrained(folder)  # loads on the CPU
original = copy.deepcopy(convnext).cpu().eval()  # compare on one device: GPU kernels may round differently
reloaded.eval()
with torch.no_grad():
    probe = big["test"].x[:64]
    same = (reloaded(pixel_values=probe).logits - original(pixel_values=probe).logits).abs().max().item()
print(f"Loaded from the {where}: largest logit difference {same:g}")
results.claim("the model loaded back offline gives the same logits", same, holds=same == 0.0,
              condition="largest difference exactly 0")

# %% [markdown]
# The article's hub id goes through the same function. Here downloads are off, so it stops with
# a reason (set `LAB_ALLOW_DOWNLOADS=1` on a connected machine and it fetches the checkpoint into
# `data/huggingface`; see "Going further").

# %%
try:
    transfer.load_pretrained("facebook/convnext-tiny-224")
except (ValueError, OSError) as err:
    print(f"{type(err).__name__}: {err}")

# %% [markdown]
# Transfer to a new task starts the same way, with a new head: `num_labels=5` keeps every
# pretrained weight of the body and replaces the 10-way classifier with a fresh 5-way one
# (`ignore_mismatched_sizes=True` under the hood: the checkpoint's head no longer fits, so it is
# dropped rather than refused).

# %%
five, _ = transfer.load_pretrained(folder, num_labels=5)
body_same = all(torch.equal(a, b) for (na, a), (nb, b) in
                zip(five.convnext.state_dict().items(), original.convnext.state_dict().items(), strict=True))
print(f"body weights identical: {body_same}; head {tuple(original.classifier.weight.shape)} -> "
      f"{tuple(five.classifier.weight.shape)}")

# %% [markdown]
# ## 6. Transfer: when does pretraining pay?
#
# The recipe, on a small MLP (64 → 128 → classes) so that many runs fit in a minute:
#
# 1. **pretrain** on a source task with plenty of labels;
# 2. give it a **new head** for the target task, then train on a few labelled target images, in
#    one of three ways:
#    * **frozen**: only the head learns (the body is a fixed feature extractor);
#    * **fine-tune**: everything learns, at one learning rate;
#    * **per-group learning rates**: everything learns, the body 10× slower than the head, so
#      the pretrained features move less while the new head settles;
# 3. compare with the same network trained **from scratch** on the same few labels, and with a
#    control: a head trained on a frozen **random** body. Training fewer weights is itself a
#    regulariser with few labels; if "frozen" beat scratch only for that reason, the random body
#    would do as well.
#
# Two settings, each with source and target images from different parts of the training split
# and scores on the test split:
#
# * **new classes**: pretrain on digits 0–4; the target is digits 5–9.
# * **new scanner**: pretrain on all ten digits; the target is the same ten digits from a
#   "scanner" that adds heavy pixel noise (σ = `cfg.noise`), with few labelled scans.

# %% figure="new-scanner-target-and-source-images"
def noisy(ds, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    return datasets.ImageSet((ds.x + sigma * torch.randn(ds.x.shape, generator=g)).clamp(0, 1), ds.y, ds.classes)


first_half, second_half = datasets.partition(splits.train, 0.5, seed=0)
low, high = [str(d) for d in range(5)], [str(d) for d in range(5, 10)]
settings = {
    "new classes": (datasets.select_classes(splits.train, low), datasets.select_classes(splits.train, high),
                    datasets.select_classes(splits.test, high)),
    "new scanner": (first_half, noisy(second_half, cfg.noise, seed=1), noisy(splits.test, cfg.noise, seed=2)),
}
viz.image_grid(torch.cat([settings["new scanner"][1].x[:10], settings["new scanner"][0].x[:10]]), ncols=10,
               title="new scanner: target images (top) and source images (bottom)")

# %% [markdown]
# The three ways to train, written out: which parameters learn, and at what learning rate.

# %%
LR = 3e-3


def mlp(classes):  # on the CPU at every scale: a GPU gains nothing on a model this small
    return models.MLP(64, (128,), classes)


def optimizer_for(model, how):
    head = model.net[-1]
    body = [p for layer in model.net[:-1] for p in layer.parameters()]
    if how == "frozen":
        for p in body:
            p.requires_grad_(False)
        return torch.optim.Adam(head.parameters(), lr=LR)
    if how == "fine-tune":
        return torch.optim.Adam(model.parameters(), lr=LR)
    if how == "per-group lr":
        return torch.optim.Adam([{"params": body, "lr": LR / 10}, {"params": head.parameters(), "lr": LR}])
    raise ValueError(f"how must be frozen, fine-tune or per-group lr, got {how!r}")


def new_head(model, classes, seed):
    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    model.net[-1] = nn.Linear(model.net[-1].in_features, classes)
    return model


# %% [markdown]
# Each setting: pretrain once, then for every number of labels per class and every seed draw the
# labelled images, and train the five ways (scratch, the three transfer methods and the random-body
# control) for the same number of steps.

# %%
TRANSFER = ("frozen", "fine-tune", "per-group lr")
METHODS = ("scratch", *TRANSFER, "random body, frozen")
few = sorted(cfg.per_class)[1] if len(cfg.per_class) > 1 else cfg.per_class[0]  # "few labels" in the claims
scores, zero_shot = {}, {}
start = time.perf_counter()
for setting, (source, target, test) in settings.items():
    torch.manual_seed(0)
    pretrained = mlp(len(source.classes))
    train.fit(pretrained, datasets.loader(source, 64, shuffle=True, seed=0), steps=cfg.source_steps, lr=LR,
              progress=False)
    if source.classes == target.classes:
        zero_shot[setting] = train.evaluate(pretrained, datasets.loader(test, 512))["acc"]
    runs = [(k, s) for k in cfg.per_class for s in range(cfg.seeds)]
    for k, seed in tqdm(runs, desc=setting):
        labelled, _ = datasets.labelled_split(target, per_class=k, seed=seed)
        batches = datasets.loader(labelled, 64, shuffle=True, seed=seed)
        for how in METHODS:
            if how == "scratch":
                torch.manual_seed(seed)
                model = mlp(len(target.classes))
                opt = torch.optim.Adam(model.parameters(), lr=LR)
            elif how == "random body, frozen":  # the control: a frozen body that learned nothing
                torch.manual_seed(1000 + seed)
                model = mlp(len(target.classes))
                opt = optimizer_for(model, "frozen")
            else:
                model = new_head(pretrained, len(target.classes), seed)
                opt = optimizer_for(model, how)
            train.fit(model, batches, steps=cfg.tune_steps, optimizer=opt, progress=False)
            acc = train.evaluate(model, datasets.loader(test, 512))["acc"]
            scores.setdefault((setting, how, k), []).append(100 * acc)
transfer_s = time.perf_counter() - start


rows = []
for (setting, how, k), accs in scores.items():
    m, sd = results.mean_sd(accs)
    gain = m - statistics.mean(scores[setting, "scratch", k])
    rows.append({"setting": setting, "labels / class": k, "method": how, "test acc %": f"{m:.1f} ± {sd:.1f}",
                 "vs scratch": "" if how == "scratch" else f"{gain:+.1f}"})
table(sorted(rows, key=lambda r: (r["setting"], r["labels / class"])),
      title=f"Mean ± sd over {cfg.seeds} seed(s); {cfg.tune_steps} steps each ({transfer_s:.0f} s in all)")
for setting, acc in zero_shot.items():
    print(f"{setting}: the pretrained model as it is (no target labels) scores {100 * acc:.1f} %")
for setting in settings:
    control = statistics.mean(scores[setting, "random body, frozen", few]) - statistics.mean(scores[setting, "frozen", few])
    meaning = ("the pretrained features are worse than random ones for this target (negative transfer)" if control >= 5
               else "what the pretrained body learned is worth that much: training fewer weights alone does not "
                    "explain the frozen model's score" if control <= -5
               else "within 5 points: the frozen pretrained body does little better than a random one")
    print(f"{setting}: a frozen random body scores {control:+.1f} points against the frozen pretrained one "
          f"at {few} labels per class; {meaning}")

# %% figure="transfer-vs-scratch-by-label-count"
fig, axes = plt.subplots(1, len(settings), figsize=(4 * len(settings) + 2, 3.8), sharey=True, squeeze=False,
                         layout="constrained")
for ax, setting in zip(axes[0], settings, strict=True):
    for i, how in enumerate(METHODS):
        means = [results.mean_sd(scores[setting, how, k]) for k in cfg.per_class]
        ax.errorbar(cfg.per_class, [m for m, _ in means], yerr=[s for _, s in means], marker="o", capsize=3,
                    color=f"C{i}", label=how, ls=":" if how.startswith("random") else "-")
    if setting in zero_shot:
        ax.axhline(100 * zero_shot[setting], ls="--", color="grey", label="pretrained, no target labels")
    ax.set(xscale="log", xlabel="labelled target images per class", title=setting)
    ax.set_xticks(cfg.per_class, [str(k) for k in cfg.per_class])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
axes[0, 0].set_ylabel("test accuracy (%)")
legend = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
fig.legend(legend.values(), legend.keys(), loc="outside right upper", fontsize="small")
fig.suptitle(f"Mean ± sd over {cfg.seeds} seed(s), {cfg.tune_steps} training steps on the target")
plt.close(fig)
fig

# %% [markdown]
# The claims, at the fewest labels above one per class, mean over seeds: for the new scanner, the
# recipe chosen before the run (per-group learning rates) against training from scratch; for the
# new classes, the best of the three transfer methods against scratch (does any of them help?).

# %%
gain = {s: statistics.mean(scores[s, "per-group lr", few]) - statistics.mean(scores[s, "scratch", few]) for s in settings}
results.claim(f"new scanner: transfer's gain over scratch at {few} labels per class (points)", gain["new scanner"],
              holds=gain["new scanner"] >= 5, condition=">= 5 points (mean of seeds)",
              source="预训练…微调 (article: pretrain, then fine-tune)")
best_new_classes = max(statistics.mean(scores["new classes", how, few]) for how in TRANSFER)
no_gain = best_new_classes - statistics.mean(scores["new classes", "scratch", few])
results.claim(f"new classes: the best transfer method's gain over scratch at {few} labels per class (points)",
              no_gain, holds=no_gain < 5, condition="< 5 points", asserted=False,
              source="迁移学习的效果依赖于源模型与目标任务的相似度 (article: a transfer gap)")
print(f"At {few} labels per class, per-group learning rates: {gain['new scanner']:+.1f} points with a new scanner, "
      f"{gain['new classes']:+.1f} with new classes (the best transfer method there: {no_gain:+.1f}).")

# %% [markdown]
# When transfer pays for the new scanner and not for the new classes (the two claims above),
# what differs between the settings is what the pretrained body already knows about the
# target. Trained on digits 0–4, its 128 features are the ones that tell 0–4 apart; digits 5–9
# need others, and with 64 clean pixels a network from scratch learns them from a handful of
# examples. With a new scanner the classes are the same: the features that tell a 3 from an 8
# still apply, and a few noisy labels only have to adapt them, while a model from scratch must
# learn them from noisy images. That is the article's "迁移鸿沟": transfer pays
# when the source shares what the target needs, and a 1,000-class ImageNet model is valued
# because its features are general enough to share with most image tasks.
#
# How much the body may move matters too. The ranking of the five ways at that number of labels:

# %%
width = max(len(setting) for setting in settings)
for setting in settings:
    ranked = sorted(METHODS, key=lambda how: statistics.mean(scores[setting, how, few]), reverse=True)
    print(f"{setting:{width}s}: " + "  >  ".join(f"{how} {statistics.mean(scores[setting, how, few]):.1f}" for how in ranked))
    moves = ["frozen", "per-group lr", "fine-tune"]  # the body moves more from left to right
    order = sorted(moves, key=lambda how: statistics.mean(scores[setting, how, few]))
    if order == moves:
        print("    the more the body may move, the better: the pretrained features are in the way, training replaces them")
    elif order[-1] == "frozen" or abs(statistics.mean(scores[setting, "frozen", few])
                                       - statistics.mean(scores[setting, "fine-tune", few])) < 2:
        print("    freezing the body costs little or nothing: its features already fit the target")
    else:
        print("    no clear order: how far the body may move matters less here than the seeds' spread")

# %% [markdown]
# A frozen body is a fixed feature extractor: cheap (only the head trains, and the features can
# be computed once) and safe with very few labels, but it cannot repair features that do not fit.
# Per-group learning rates let the body adapt slowly; full fine-tuning lets it move as fast as the
# new head, which helps when the features must change and risks washing out what pretraining gave
# when they need not.

# %% [markdown]
# ## 7. Exercises
#
# ### Exercise 1 — MobileNet's block
#
# Write MobileNet v1's building block as an `nn.Module`: a depthwise 3×3 convolution
# (`groups=c_in`, padding 1, stride `stride`, no bias), `BatchNorm2d(c_in)`, ReLU, then a
# pointwise 1×1 convolution to `c_out` channels (no bias), `BatchNorm2d(c_out)`, ReLU. Create the
# layers in that order (the check copies weights by position).
#
# <details><summary>Hint</summary>
#
# `nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False)` is the depthwise
# layer; `nn.Conv2d(c_in, c_out, 1, bias=False)` the pointwise one.
# </details>

# %%
@checks.exercise
class MySeparableBlock(nn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError

    def forward(self, x):
        # YOUR CODE HERE
        raise NotImplementedError


checks.check_module(lambda: MySeparableBlock(8, 16, stride=2), efficient.SeparableBlock(8, 16, stride=2),
                    make_input=lambda g: torch.randn(4, 8, 9, 9, generator=g),
                    hint="depthwise (groups=c_in) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU", name="MySeparableBlock")
# checks.show_solution("MySeparableBlock")

# %% [markdown]
# Once it passes, count its parameters against a plain 3×3 convolution with BatchNorm from 128
# to 256 channels, and predict the share before you run it. Then train section 2's network with
# your block in the middle, `small_net(MySeparableBlock)`, as the accuracy cell there does, and
# compare it with the plain and separable networks.
#
# ### Exercise 2 — FLOPs by hand
#
# Write the forward FLOPs of a depthwise-separable k×k convolution (no bias) on `n` images whose
# output is `h`×`w` pixels, counting a multiply-add as 2 FLOPs, as torch's counter does. The
# check compares your formula with `efficient.conv_flops` on random shapes; the cell after it
# compares it with the counter itself, and uses it to correct the counter's backward count.
#
# <details><summary>Hint</summary>
#
# Each output pixel of each image costs 2 × (the layer's weights): k·k·c_in for the depthwise
# part and c_in·c_out for the pointwise one.
# </details>

# %%
@checks.exercise
def my_separable_flops(n, c_in, c_out, h, w, k):
    # YOUR CODE HERE
    raise NotImplementedError


verdict = checks.check_function(
    my_separable_flops, reference=lambda n, c_in, c_out, h, w, k: efficient.conv_flops(n, c_in, c_out, h, w, k, separable=True),
    make_inputs=lambda g: tuple(int(v) for v in torch.randint(1, 40, (5,), generator=g)) + (int(torch.randint(1, 4, (1,), generator=g)) * 2 + 1,),
    hint="2 FLOPs per weight, for every output pixel of every image; count the depthwise and pointwise weights")
# checks.show_solution("my_separable_flops")

# %%
if verdict:
    c = widest
    counted_fwd, counted_step = flops[c, "separable"]
    mine = my_separable_flops(n, c, c, side, side, 3)
    print(f"{c} channels: your forward {mine:,} vs the counter's {counted_fwd:,}; a training step should cost "
          f"about 3× the forward = {3 * mine:,} FLOPs, the counter says {counted_step:,} "
          f"({counted_step / (3 * mine):.1f}× too many).")
else:
    print("Solve exercise 2 to compare your formula with the counter.")

# %% [markdown]
# ### Question (open) — a scanner that inverts
#
# A third scanner writes white digits on black (every pixel `1 - x`) with the same noise.
# Predict, before measuring: does pretraining on the clean digits help, hurt, or do nothing, with
# 3 labels per class, frozen and fine-tuned? Then add the setting to `settings` and run section
# 6 again, from the cell that trains the five ways down to the ranking (each setting adds about
# half of that cell's time). Which layer has to change most, and why does that decide the answer?
#
# <details><summary>Hint</summary>
#
# Pretrain on the same clean source as the new scanner; invert the target and test images before
# the noise: `inverted = lambda ds: datasets.ImageSet(1 - ds.x, ds.y, ds.classes)`, then
# `settings["inverted scanner"] = (first_half, noisy(inverted(second_half), cfg.noise, seed=1),
# noisy(inverted(splits.test), cfg.noise, seed=2))`.
# </details>

# %%
metrics = {"ConvNeXt train s": convnext_s, "transfer runs s": transfer_s, "ConvNeXt test acc": convnext_acc}
for c in cfg.channels:
    metrics[f"separable share of weights, {c} ch"] = ratios[c]
    for b in cfg.batches:
        metrics[f"separable speed-up, {c} ch, batch {b}"] = grid[c, b]
for name, (acc, _) in accuracy.items():
    metrics[f"{name} CNN test acc"] = acc
for (setting, how, k), accs in scores.items():
    metrics[f"{setting}, {how}, {k}/class"] = statistics.mean(accs)
for setting, acc in zero_shot.items():
    metrics[f"{setting}, pretrained without target labels"] = acc
results.record(metrics, notes=f"Digits. Latency: one layer, {side}x{side}, {where_run}. Transfer: MLP 64-128-classes (on the CPU), "
                              f"Adam lr {LR}, {cfg.source_steps} source steps, {cfg.tune_steps} target steps; "
                              f"noise sigma {cfg.noise}.")

# %% [markdown]
# ## Going further
#
# * **The real checkpoint.** On a connected machine, `LAB_ALLOW_DOWNLOADS=1` lets
#   `transfer.load_pretrained("facebook/convnext-tiny-224", num_labels=10)` fetch the article's
#   model (28 M parameters, trained on ImageNet) into `data/huggingface`. It expects 3-channel
#   224×224 images normalised as its `AutoImageProcessor` says: repeat the digit's channel three
#   times and resize. On a GPU (`LAB_SCALE=gpu`), fine-tune it with section 6's three ways and
#   compare with the tiny one: how many labels per class does each need for 95 %?
# * **MobileNet itself.** torchvision's `mobilenet_v3_small` (2.5 M parameters) against
#   `resnet18` (11.7 M): parameters, FLOPs and latency at batch 1 and 64 on your machine.
# * **Faster depthwise kernels.** `channels_last` memory format, `torch.compile`, and ONNX
#   Runtime (lab 07) change the latency table; the FLOP column does not move.
# * **Read more.** Howard et al. (2017), *MobileNets*; Sandler et al. (2018), *MobileNetV2*;
#   Liu et al. (2022), *A ConvNet for the 2020s* (ConvNeXt); Yosinski et al. (2014), *How
#   transferable are features in deep neural networks?*; Kornblith et al. (2019), *Do Better
#   ImageNet Models Transfer Better?*.
