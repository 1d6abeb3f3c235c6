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
# # Lab 04 — Mixed precision: autocast, loss scaling, and what they buy on your machine
#
# **Source:** 《突破AI技术壁垒:从算法创新到生态重构的路径探索》 (*Breaking through AI's technical
# barriers: from algorithmic innovation to rebuilding the ecosystem*), section 四.1 "混合精度训练"
# (mixed-precision training): 「使用FP16/FP8混合精度加速训练,NVIDIA A100显卡可提升3倍速度」 ("use
# FP16/FP8 mixed precision to speed up training: on an NVIDIA A100 it is up to 3× faster"), followed by
# five lines of PyTorch: `scaler = torch.cuda.amp.GradScaler()`, the forward pass and the loss inside
# `with torch.cuda.amp.autocast():`, then `scaler.scale(loss).backward()`, `scaler.step(optimizer)`,
# `scaler.update()`. The same five lines appear in 《AI探索者的技术实践:从兴趣驱动到系统化学习》
# (*An AI explorer's technical practice: from interest-driven to systematic learning*), section 三.2
# "训练优化技巧" (training optimisation tricks): 「在某NLP项目实践中,我们通过以下组合优化使训练效率提升3倍」
# ("in one NLP project, the following combination of optimisations made training 3× more
# efficient"). Neither article mentions accuracy: the speed-up is presented as free.
#
# **What you will measure:**
#
# 1. the articles' API today: `torch.cuda.amp.*` is deprecated, and its GradScaler switches itself
#    off without CUDA. You write the training step in the current spelling, which works on the CPU too;
# 2. what autocast really does, layer by layer: which layers run in bfloat16 / float16 and which
#    stay in float32;
# 3. why float16 needs **loss scaling** and bfloat16 does not: their ranges, and real gradients
#    that underflow to zero in an fp16 backward pass, and whether the GradScaler rescues them;
# 4. speed: fp32 against bf16 training steps and a matrix multiplication on this machine (and
#    fp16 / bf16 / TF32 on a GPU, when there is one), beside the articles' 3×;
# 5. accuracy: the same training in fp32 and in bf16.
#
# **Objectives.** After this lab you can:
#
# * write a mixed-precision training step with `torch.autocast` and `torch.amp.GradScaler`, and
#   put gradient clipping in the right place in it;
# * say which ops autocast runs in low precision and why the weights stay in fp32;
# * explain, with numbers, why fp16 needs a loss scale and bf16 does not;
# * decide from a measurement, not a headline, whether mixed precision pays on a given machine.
#
# **Prerequisites.** Lab 00 (the setup, the digits data). A PyTorch training step (forward, loss,
# `backward`, optimizer step); what a floating-point number's exponent and mantissa are.
#
# **Time.** `smoke`: about 20 s. `cpu` (2 cores): under a minute of compute, 40 minutes with the
# exercises (exercise 4's fp16 runs take a few minutes more on a CPU). `gpu`: about a minute of compute.
#
# Answers to the open questions: `docs/answers/04_mixed_precision.md`.

# %%
import functools
import math
import os
import platform
import warnings

import torch
import torch.nn.functional as F

from lablib import table
from lablib.core import bench, checks, compat, config, env, results, viz
from lablib.data import datasets
from lablib.methods import amp
from lablib.nets import models, train

cfg = config.profile(
    smoke=dict(width=8, epochs=1, bench_size=8, bench_batch=64, matmul_n=256, matmul_repeats=2, repeats=2, rounds=1),
    cpu=dict(width=16, epochs=20, bench_size=16, bench_batch=64, matmul_n=512, matmul_repeats=2, repeats=3, rounds=2),
    gpu=dict(width=64, epochs=20, bench_size=32, bench_batch=256, matmul_n=4096, matmul_repeats=20, repeats=20, rounds=3),
)
device = config.device()
config.seed_everything(0)
print(env.line())
# Linux on x86 lists the CPU features in /proc/cpuinfo; macOS and Windows have no such file, and ARM CPUs name theirs differently.
flags = env.cpu_flags()
flags_known = bool(flags) or (platform.machine().lower() in ("x86_64", "amd64", "i686") and os.access("/proc/cpuinfo", os.R_OK))
bf16_units = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
print("CPU features:", ", ".join(flags) if flags else f"none of {', '.join(env.CPU_FLAGS)}" if flags_known
      else "unknown (this system does not report them)")
cfg

# %% [markdown]
# ## 1. The articles' API, and today's
#
# The articles write `torch.cuda.amp.autocast()` and `torch.cuda.amp.GradScaler()`. Both still exist,
# but only as deprecated aliases, and they are CUDA-only: on a machine without an NVIDIA GPU the
# scaler quietly disables itself (every `scaler.scale(loss)` then returns the loss unchanged). Here is
# what PyTorch says when you use them (the warnings are captured, so nothing breaks):

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    old_scaler = torch.cuda.amp.GradScaler()
    with torch.cuda.amp.autocast():
        pass
for w in caught:
    print(f"{w.category.__name__}: {w.message}")
print(f"\nthe articles' GradScaler is enabled here: {old_scaler.is_enabled()}")
new_scaler = compat.grad_scaler(device.type)
print(f"torch.amp.GradScaler({device.type!r}) is enabled here: {new_scaler.is_enabled()} (initial scale {new_scaler.get_scale():g})")

# %% [markdown]
# ## 2. The training step, written here
#
# The current spelling names the device and the dtype: `torch.autocast(device_type="cpu",
# dtype=torch.bfloat16)`, and `torch.amp.GradScaler("cuda")` (or `"cpu"`). `train.autocast(device, "bf16")` is that
# `torch.autocast`, switched off for `"fp32"`. Here is the articles' step in that spelling. Every
# experiment below (the training runs of sections 4 and 6, the timings of section 5) runs this
# function: edit it, and they run your version.

# %%
def train_step(model, x, y, opt, scaler, device, precision):
    """One mixed-precision training step on the batch (x, y). Returns the loss (fp32)."""
    with train.autocast(device, precision):  # forward and loss in autocast's dtypes
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # loss x scale: small fp16 gradients stay above zero
    scaler.step(opt)  # divides the gradients by the scale; skips the step if one is inf or NaN
    scaler.update()  # halves the scale after a skipped step, doubles it after 2,000 good ones
    return loss.detach()


# %% [markdown]
# Note what is *not* in the step: no `.half()` on the model. The weights stay in fp32; autocast
# casts them to the low precision on the fly for the ops where that is safe, and the optimizer
# updates the fp32 weights: that is the "mixed" in mixed precision. `scaler.step` is `opt.step` with
# two extras: it divides the gradients by the scale first, and it skips the step when a gradient is
# inf or NaN. With a disabled scaler (fp32, bf16) the three scaler calls are plain `backward`,
# `opt.step()` and nothing.
#
# The next cell checks the step against lablib's tested reference: on random batches, each of the
# three precisions, two steps on a fresh small model, comparing the losses, the gradients and
# weights after the steps, and the loss scale. The batches are scaled up at random, so that some
# scaled fp16 gradients overflow: such a step must be skipped, and the scale halved.

# %%
def two_steps(step):
    """Run `step` twice on a fresh small model (its weights drawn from `seed`) at each precision;
    return what the steps leave behind."""
    @functools.wraps(step)
    def run(seed, x, y, *extra):
        out = {}
        for precision in ("fp32", "bf16", "fp16"):
            torch.manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            scaler = compat.grad_scaler("cpu", enabled=precision == "fp16")
            losses = [step(model, xb, yb, opt, scaler, "cpu", precision, *extra) for xb, yb in zip(x, y, strict=True)]
            out[precision] = {
                "losses": torch.stack(losses),
                "grads": [p.grad.clone() for p in model.parameters()],
                "weights": [p.detach().clone() for p in model.parameters()],
                "scale": scaler.get_scale(),
            }
        return out
    return run


def two_batches(g):
    x = torch.randn(2, 8, 16, generator=g) * 10.0 ** torch.randint(0, 3, (2, 1, 1), generator=g)  # some overflow in fp16
    y = torch.randint(0, 10, (2, 8), generator=g)
    return int(torch.randint(0, 2**31, (1,), generator=g)), x, y


checks.agrees(two_steps(train_step), reference=two_steps(amp.train_step), make_inputs=two_batches, trials=3, name="train_step")

# %% [markdown]
# ## 3. What autocast runs in which dtype
#
# Autocast keeps per-device lists of ops: matrix multiplications and convolutions run in the low
# precision (that is where the speed is), ops that need range or accuracy, such as losses, run in
# fp32, and everything else follows its input. Forward hooks on every layer of a `SmallCNN`
# record the dtype each output came out in (`amp.autocast_dtypes`):

# %%
splits = datasets.digits()
probe = models.SmallCNN(width=cfg.width)
xb, yb = splits.train.x[:8], splits.train.y[:8]
dtypes = {p: amp.autocast_dtypes(probe, xb, device, p, y=yb) for p in ("fp32", "bf16", "fp16")}
table([{"layer": name, "type": kind, **{p: dtypes[p][i][2] for p in dtypes}} for i, (name, kind, _) in enumerate(dtypes["fp32"])])
low = sorted({kind for _, kind, dt in dtypes["bf16"] if dt == "bfloat16"})
kept = sorted({kind for _, kind, dt in dtypes["bf16"] if dt == "float32"})
print(f"under bf16 autocast on {device.type}: bfloat16 out of {', '.join(low) or 'nothing'}; float32 out of {', '.join(kept) or 'nothing'}")

# %% [markdown]
# On this torch (its version is in the environment line), `Conv2d` and `Linear` are on autocast's low-precision list. `ReLU`, `MaxPool2d` and the pooling are
# on no list and keep whatever dtype they receive, so after a bf16 convolution they run in bf16
# too. `cross_entropy` is on the fp32 list: the loss is computed in fp32 from the low-precision
# logits. The lists differ by device and by torch version (on CUDA, for example, `softmax` and
# `layer_norm` are cast to fp32); PyTorch's "Autocast Op Reference" lists every op per device.

# %% [markdown]
# ## 4. Why fp16 needs loss scaling and bf16 does not
#
# Both formats have 16 bits; they spend them differently. fp16 has 10 mantissa bits and a 5-bit
# exponent; bf16 keeps fp32's 8-bit exponent and only 7 mantissa bits. So bf16 is *coarser* (a
# larger epsilon) but reaches numbers as small and as large as fp32's, while fp16 stops near 6e-5
# (6e-8 with subnormals):

# %%
rows = []
for name, dt in train.PRECISIONS.items():
    fi = torch.finfo(dt)
    tiniest = torch.nextafter(torch.zeros((), dtype=dt), torch.ones((), dtype=dt)).item()
    rows.append({"dtype": name, "largest": fi.max, "smallest normal": fi.smallest_normal, "smallest > 0": tiniest, "epsilon": fi.eps})
table([{k: v if k == "dtype" else f"{v:.3g}" for k, v in row.items()} for row in rows])

# %% [markdown]
# Gradients are often far smaller than activations: they shrink as a model learns, and a loss averaged
# over a batch divides every contribution by the batch size. To see real ones, train a `SmallCNN` in
# fp32 with the step of section 2 (section 6 trains it again in bf16, with the same seed, data
# order and schedule). Then take the gradients of the trained model on the whole training set, and
# count the share of them that becomes exactly **zero** when stored in fp16, in bf16, and in fp16
# after multiplying the loss by `2**16` (the GradScaler's initial scale):

# %% figure="gradient-magnitude-by-decade"
def train_model(precision, step=train_step, seed=0, loss_scaling=None):
    """A SmallCNN trained on the digits for cfg.epochs epochs at `precision`, every optimizer step
    taken by `step` (the one written above, or yours): the same seed, data order and schedule
    (Adam, cosine decay) for every run. A GradScaler is on for fp16 unless loss_scaling=False.
    Returns the model and its History (one row per epoch: train_loss, val_acc, ...)."""
    config.seed_everything(seed)
    model = models.SmallCNN(width=cfg.width)
    loader = datasets.loader(splits.train, batch_size=64, shuffle=True, seed=seed)
    history = train.fit(
        model, loader, datasets.loader(splits.val, batch_size=256), epochs=cfg.epochs, lr=3e-3,
        optimizer="adam", schedule="cosine", precision=precision, loss_scaling=loss_scaling,
        update=lambda m, batch, opt, scaler: step(m, *batch, opt, scaler, device, precision),
        device=device, progress=False)
    return model, history


fp32_model, fp32_history = train_model("fp32")
fp32_model.zero_grad()
F.cross_entropy(fp32_model(splits.train.x.to(device)), splits.train.y.to(device)).backward()
grads = torch.cat([p.grad.flatten().cpu() for p in fp32_model.parameters()])
fp32_model.zero_grad()
underflow = {
    "fp16": amp.underflow_fraction(grads, 1.0, "fp16"),
    "bf16": amp.underflow_fraction(grads, 1.0, "bf16"),
    "fp16 x 2**16": amp.underflow_fraction(grads, 2.0**16, "fp16"),
}
subnormal = ((grads != 0) & (grads.abs() < torch.finfo(torch.float16).smallest_normal)).float().mean().item()
print(f"{grads.numel():,} gradient entries, |g| median {grads.abs().median().item():.2g}, smallest non-zero "
      f"{grads.abs()[grads != 0].min().item():.2g}; {subnormal:.2%} below fp16's smallest normal number")
table([{"stored as": name, "share that becomes 0": f"{share:.2%}"} for name, share in underflow.items()])
nonzero = grads.abs()[grads != 0]  # one bar per decade, from the smallest entry's to the largest's
low, high = (math.floor(math.log10(nonzero.min().item())), math.floor(math.log10(nonzero.max().item())))
bins = {f"1e{e}": ((grads.abs() >= 10.0**e) & (grads.abs() < 10.0 ** (e + 1))).float().mean().item()
        for e in range(low, high + 1)}
viz.bars(bins, ylabel="share of gradient entries", title="|gradient| by decade (fp16's smallest normal is 6e-5)")

# %% [markdown]
# Entries below fp16's smallest normal number are stored as subnormals, with fewer significant bits,
# and those below about 6e-8 vanish. Stored once, at the end, only the share in the table's first
# row is lost. The real danger is *inside* a backward pass under fp16 autocast, where the gradients
# flowing between layers are fp16 tensors, each layer's chain-rule products rounded to fp16 again.
# Here is that backward pass on the trained model, once plain and once through the scaler. The loss
# is divided by 1000 to stand in for a long training run's smaller loss and gradients:

# %%
def fp16_weight_grads(model, scaler):
    model.zero_grad()
    with train.autocast(device, "fp16"):
        loss = F.cross_entropy(model(splits.train.x.to(device)).float(), splits.train.y.to(device)) / 1000
    scaler.scale(loss).backward()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # only so the scaler can unscale
    scaler.unscale_(opt)
    g = torch.cat([p.grad.flatten().cpu() for p in model.parameters()])
    model.zero_grad()
    return g


plain = fp16_weight_grads(fp32_model, compat.grad_scaler(device.type, enabled=False))
scaled = fp16_weight_grads(fp32_model, compat.grad_scaler(device.type))
reference = grads / 1000
nonzero = reference != 0
lost_plain = ((plain == 0) & nonzero).float().sum().item() / nonzero.sum().item()
lost_scaled = ((scaled == 0) & nonzero).float().sum().item() / nonzero.sum().item()
err = lambda g: ((g - reference).norm() / reference.norm()).item()  # noqa: E731
table({"fp16 backward, no scaling": {"weight gradients exactly 0": lost_plain, "relative error": err(plain)},
       "fp16 backward, GradScaler": {"weight gradients exactly 0": lost_scaled, "relative error": err(scaled)}})
scaler_rescues = results.claim("fp16 weight gradients lost to underflow, with the GradScaler", lost_scaled,
                               holds=lost_plain > 0 and lost_scaled == 0,
                               condition=f"0 with the scaler, > 0 without it (here {lost_plain:.2%})",
                               source="the articles' scaler.scale(loss).backward() (they do not say why)")

# %% [markdown]
# The scaler multiplies the loss by a large power of two (65,536 to start) before `backward`, so every
# gradient in the chain is that much larger and stays inside fp16's range; `unscale_` (or `step`)
# divides the fp32 weight gradients back. If the scale is too large, some gradient overflows to inf:
# the scaler then *skips* that step and halves the scale, and after 2,000 good steps it doubles it
# again. A skipped step, seen from the outside:

# %%
p = torch.nn.Parameter(torch.ones(3))
opt = torch.optim.SGD([p], lr=1.0)
scaler = compat.grad_scaler("cpu")
before = scaler.get_scale()
scaler.scale((p * float("inf")).sum()).backward()
scaler.step(opt)
scaler.update()
print(f"parameter after a step with inf gradients: {p.detach().tolist()}, scale {before:g} -> {scaler.get_scale():g}")

# %% [markdown]
# bf16 has fp32's exponent, so its gradients neither underflow nor overflow where fp32's would not:
# bf16 training needs no scaler (`train_model` above and `train.fit(..., precision="bf16")` use
# none). The price is precision: 8 significant bits instead of 11 (fp16) or 24 (fp32). Section 6
# measures whether that costs accuracy.
#
# ## 5. Speed: is mixed precision faster here?
#
# Low precision is fast only where the hardware has units for it: tensor cores on NVIDIA GPUs since
# Volta (fp16) and Ampere (bf16, TF32), and on x86 CPUs the `avx512_bf16` instructions (Cooper Lake,
# Zen 4 and newer) or AMX tiles (`amx_bf16`, Sapphire Rapids). Without them, PyTorch falls back to
# generic kernels that convert every element, and bf16 can be many times *slower* than fp32.
# What this CPU reports:

# %%
if bf16_units:
    print(f"This CPU has bf16 units ({', '.join(bf16_units)}): bf16 can be faster than fp32 here.")
elif flags_known:
    print("This CPU lists neither avx512_bf16 nor amx_bf16: expect bf16 to be slower than fp32 on it.")
else:
    print("Whether this CPU has bf16 units is unknown: this system does not list CPU features where "
          "the lab looks (/proc/cpuinfo). The timings below answer the question.")

# %% [markdown]
# Two measurements, fp32 against bf16, timed in interleaved rounds (`bench.compare`) so a busy
# neighbour slows both alike: an `n × n` matrix multiplication, and one full training step of your
# `train_step` (forward, backward, Adam) on a `SmallCNN` and a batch of digits upsampled to
# `bench_size` pixels, so the convolutions have some work to do.

# %% figure="step-time-fp32-vs-bf16"
def timed_step(precision, x, y, step=train_step):
    """A no-argument call of `step` on a fresh SmallCNN and the batch (x, y), for bench.compare."""
    config.seed_everything(0)
    model = models.SmallCNN(width=cfg.width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = compat.grad_scaler(device.type, enabled=precision == "fp16")
    x, y = x.to(device), y.to(device)
    return lambda: step(model, x, y, opt, scaler, device, precision)


n = cfg.matmul_n
a32 = torch.randn(n, n, device=device)
a16 = a32.to(torch.bfloat16)
matmul = bench.compare({"fp32": lambda: a32 @ a32, "bf16": lambda: a16 @ a16},
                       rounds=cfg.rounds, warmup=1, repeats=cfg.matmul_repeats)

big = datasets.digits(size=cfg.bench_size)
xs, ys = big.train.x[: cfg.bench_batch], big.train.y[: cfg.bench_batch]
step_times = bench.compare({p: timed_step(p, xs, ys) for p in ("fp32", "bf16")}, rounds=cfg.rounds, warmup=1, repeats=cfg.repeats)

matmul_speedup = matmul["fp32"].median_ms / matmul["bf16"].median_ms
step_speedup = step_times["fp32"].median_ms / step_times["bf16"].median_ms
table({
    f"matmul {n}x{n}": {"fp32 ms": matmul["fp32"].median_ms, "bf16 ms": matmul["bf16"].median_ms, "bf16 speed-up": matmul_speedup},
    f"SmallCNN step, {cfg.bench_batch} x {cfg.bench_size}x{cfg.bench_size}": {
        "fp32 ms": step_times["fp32"].median_ms, "bf16 ms": step_times["bf16"].median_ms, "bf16 speed-up": step_speedup},
})
print(f"bf16 on this {device.type}: the matmul is {bench.compared(matmul_speedup)} fp32 ({matmul_speedup:.2f}x), "
      f"the training step {bench.compared(step_speedup)} fp32 ({step_speedup:.2f}x)")
viz.grouped_bars({f"matmul {n}": {k: v.median_ms for k, v in matmul.items()},
                  "SmallCNN step": {k: v.median_ms for k, v in step_times.items()}},
                 ylabel="median time (ms, lower is better)", title=f"fp32 vs bf16 on {device.type}", log=True)

# %% [markdown]
# Compare the speed-ups with the CPU features printed above. A speed-up below 1 means bf16 is slower:
# on a CPU without bf16 units that is the honest answer, and there mixed precision buys neither speed
# nor (with fp32 master weights kept) much memory. If this CPU has `avx512_bf16` or `amx_bf16`, the
# matmul should gain the most; a small CNN gains less, because much of its step is memory-bound
# work (activations, pooling, the optimizer) that low precision does not speed up. The articles' 3×
# is a GPU figure: tensor cores multiply fp16 many times faster than fp32.
#
# ### On a GPU: fp32, TF32, fp16, bf16 and peak memory

# %%
gpu_figures = {}
if device.type == "cuda":
    fns = {p: timed_step(p, xs, ys) for p in ("fp32", "fp16", "bf16") if amp.supports(device, p)}
    # true fp32: cuDNN convolutions use TF32 by default, so switch it off for the baseline
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    gpu_times = bench.compare(fns, rounds=cfg.rounds, warmup=5, repeats=cfg.repeats, cuda=True)
    torch.backends.cudnn.allow_tf32 = True  # TF32 tensor cores for fp32 convolutions and matmuls
    torch.set_float32_matmul_precision("high")
    tf32 = bench.latency(fns["fp32"], warmup=5, repeats=cfg.repeats, cuda=True)
    torch.set_float32_matmul_precision("highest")
    gpu_rows = {}
    for name, t in gpu_times.items():
        mem = bench.peak_memory(lambda f=fns[name]: [f() for _ in range(3)])
        gpu_rows[name] = {"img/s": cfg.bench_batch / (t.median_ms / 1e3), "peak MB": mem["cuda_peak_mb"],
                          "speed-up over fp32": gpu_times["fp32"].median_ms / t.median_ms}
    gpu_rows["fp32 + TF32"] = {"img/s": cfg.bench_batch / (tf32.median_ms / 1e3), "speed-up over fp32": gpu_times["fp32"].median_ms / tf32.median_ms}
    table(gpu_rows, title=f"SmallCNN training step, batch {cfg.bench_batch} of {cfg.bench_size}x{cfg.bench_size}")
    for name, row in gpu_rows.items():
        for k, v in row.items():
            gpu_figures[f"gpu {name} {k}"] = v
else:
    print("No CUDA GPU here: the GPU comparison (fp32 vs TF32 vs fp16 vs bf16 throughput and peak memory) "
          "is skipped. Run this lab on a GPU machine to measure the articles' setting.")

# %% [markdown]
# The headline, beside the articles' figure: the fp16 training-step speed-up on a GPU, or the bf16
# one on this CPU. It is reported, not asserted: it depends on the hardware, and a busy machine moves it.

# %%
if "gpu fp16 speed-up over fp32" in gpu_figures:
    speed_name, speedup = "fp16 training-step speed-up over fp32 (GPU)", gpu_figures["gpu fp16 speed-up over fp32"]
else:
    speed_name, speedup = f"bf16 training-step speed-up over fp32 ({device.type})", step_speedup
three_times = results.claim(speed_name, speedup, holds=speedup >= 3.0, condition=">= 3x, the articles' figure",
                            source="「NVIDIA A100显卡可提升3倍速度」: 3x on an A100 (FP16/FP8)", asserted=False)

# %% [markdown]
# ## 6. Accuracy: the same training in fp32 and bf16
#
# The fp32 model from section 4 and a bf16 one: same seed, same data order, same schedule, the same
# `train_step`; only `precision="bf16"` differs.

# %% figure="learning-curves-fp32-vs-bf16"
bf16_model, bf16_history = train_model("bf16")
test_loader = datasets.loader(splits.test, batch_size=256)
acc = {"fp32": train.evaluate(fp32_model, test_loader)["acc"],
       "bf16": train.evaluate(bf16_model, test_loader, precision="bf16")["acc"]}
gap = 100 * (acc["bf16"] - acc["fp32"])
table({p: {"test accuracy": acc[p], "final train loss": h.last("train_loss")}
       for p, h in (("fp32", fp32_history), ("bf16", bf16_history))})
print(f"the test set has {len(splits.test)} images: one image is {100 / len(splits.test):.2f} points")
results.claim("bf16 minus fp32 test accuracy (points)", gap, holds=gap >= -1.0,
              condition=">= -1: bf16 reaches fp32's accuracy within 1 point",
              source="the articles promise the speed-up with no word of an accuracy cost")
viz.curves({"fp32": fp32_history, "bf16": bf16_history}, metrics=("train_loss", "val_acc"), title="fp32 vs bf16 training")

# %% [markdown]
# If the two curves lie on top of each other and the claim above holds, 8 significant bits were
# enough for the forward and backward passes of this network: the weights and their updates stay in
# fp32 and the loss is computed in fp32; the matmuls and convolutions run in bf16, their bf16 outputs
# flow on through the ReLUs and pooling (see the table in section 3), and so do the gradients
# coming back. If it does not hold, look at where the curves part: early (the forward pass is too
# coarse) or late (the small updates near the end of the schedule are rounded away).

# %% [markdown]
# ## Exercises
#
# **Exercise 1: the step with gradient clipping.** Large models are usually trained with the gradient
# norm clipped (`torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)`). Write
# `my_clipped_step`: `train_step` with clipping added. The catch is the scaler: after
# `scaler.scale(loss).backward()` the gradients are multiplied by the scale (65,536 at first), so
# clipping them there would clip the wrong numbers. The check runs your step and the one
# `train.fit` uses (`train.optimizer_step` with `grad_clip`) at fp32, bf16 and fp16, two steps each.
#
# <details><summary>Hint</summary>
#
# Clipping must see the true gradients: divide them by the scale first, with `scaler.unscale_(opt)`,
# then clip, then `scaler.step(opt)` (which knows the gradients are already unscaled and does not
# divide again) and `scaler.update()`.
#
# </details>

# %%
@checks.exercise
def my_clipped_step(model, x, y, opt, scaler, device, precision, max_norm):
    # YOUR CODE HERE
    raise NotImplementedError


def fit_step(model, x, y, opt, scaler, device, precision, max_norm):
    """The step train.fit runs with grad_clip=max_norm (it finds the device from the model)."""
    return train.optimizer_step(model, (x, y), opt, scaler, precision=precision, grad_clip=max_norm)[0]


def two_batches_and_a_norm(g):
    return (*two_batches(g), 0.05 + torch.rand((), generator=g).item())


clipped_verdict = checks.check_function(
    two_steps(my_clipped_step),
    reference=two_steps(fit_step),
    make_inputs=two_batches_and_a_norm,
    trials=3,
    name="my_clipped_step",
    hint="backward through the scaler, then scaler.unscale_(opt), then clip, then scaler.step and scaler.update.",
)
# checks.show_solution("my_clipped_step")

# %% [markdown]
# Once it is correct, train with it: the next cell reruns section 6's bf16 training on your step
# with `max_norm=1.0`. Does clipping change the accuracy on this small network?
# (`train_model("fp16", step=...)` trains it in fp16 with the scaler.)

# %%
if clipped_verdict:
    clipped_model, clipped_history = train_model("bf16", step=functools.partial(my_clipped_step, max_norm=1.0))
    acc["bf16, clipped"] = train.evaluate(clipped_model, test_loader, precision="bf16")["acc"]
    table({p: {"test accuracy": a} for p, a in acc.items()})
else:
    print("my_clipped_step is not correct yet: finish exercise 1, then run this cell again.")

# %% [markdown]
# **Exercise 2: bf16 is half an fp32.** Write `my_round_to_bf16(x)`: what the float32 tensor `x`
# becomes when stored in bfloat16, returned as float32 again. One `.to(...)` chain works; then do it
# with integer bit operations on `x.view(torch.int32)`, which shows what bf16 *is*.
#
# <details><summary>Hint</summary>
#
# bf16 keeps fp32's sign, its 8 exponent bits and the top 7 of its 23 mantissa bits: the upper 16
# bits. Cutting the lower 16 bits off is not enough: round to the nearest bf16 number first, and
# send exact ties to the neighbour whose last kept bit is 0 ("ties to even").
#
# </details>

# %%
@checks.exercise
def my_round_to_bf16(x):
    # YOUR CODE HERE
    raise NotImplementedError


def bf16_inputs(g):
    x = torch.randn(1000, generator=g) * 10.0 ** torch.randint(-30, 30, (1000,), generator=g).float()
    # a fifth of them exactly halfway between two bf16 numbers (low 16 bits = 0x8000): ties
    x[:200] = ((x[:200].view(torch.int32) & -65536) | 0x8000).view(torch.float32)
    return (x,)


checks.check_function(
    my_round_to_bf16,
    reference=amp.round_to_bf16,
    make_inputs=bf16_inputs,
    atol=0.0,
    rtol=0.0,
    grads=False,
    hint="keep the upper 16 bits of x.view(torch.int32), after rounding to nearest with ties to even.",
)
# checks.show_solution("my_round_to_bf16")

# %% [markdown]
# **Exercise 3: the smallest safe loss scale.** Write `my_min_scale(grads)`: the smallest power of two
# `2**k` (k = 0, 1, 2, ...) for which no non-zero entry of `grads` becomes zero in fp16
# (`amp.underflow_fraction(grads, scale, "fp16")` counts them). Try it on the gradients `grads` from
# section 4. Then the open part: why does the GradScaler start far higher, and lower the scale only
# after an overflow, rather than compute such a value?
#
# <details><summary>Hint</summary>
#
# Try k = 0, 1, 2, ... and stop at the first scale at which nothing underflows.
#
# </details>

# %%
@checks.exercise
def my_min_scale(grads):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_function(
    my_min_scale,
    reference=amp.min_loss_scale,
    make_inputs=lambda g: (torch.randn(500, generator=g) * 10.0 ** (-9 * torch.rand(500, generator=g)),),
    grads=False,
    hint="try k = 0, 1, 2, ... and stop at the first scale where no non-zero entry underflows.",
)
# checks.show_solution("my_min_scale")

# %% [markdown]
# **Exercise 4 (open): fp16 training, with and without the scaler.** Train in fp16 with
# `train_model("fp16")` (the scaler is on) and compare its test accuracy with fp32's. Then make the
# gradients small: copy `train_step` into a new function `tiny_loss_step` whose loss is
# `F.cross_entropy(model(x).float(), y) / 1000`, and train fp16 with it twice,
# `train_model("fp16", step=tiny_loss_step)` and `train_model("fp16", step=tiny_loss_step,
# loss_scaling=False)`, and bf16 once (`train_model("bf16", step=tiny_loss_step)`). Which runs keep
# fp32's accuracy, and why? (Adam divides each update by the gradient's running size, so dividing the
# loss by 1000 alone changes little in fp32.) Each fp16 or bf16 run can take several times
# as long as an fp32 one on a CPU without units for them (section 5 measured the factor for bf16).
#
# ## Record the results
#
# The claims above, the other figures, and your exercises' verdicts, saved to
# `results/04_mixed_precision.<scale>.json`; at `cpu` and `gpu` scale a claim that did not hold
# stops the lab here.

# %%
results.record(
    {
        "fp32 test acc": acc["fp32"],
        "bf16 test acc": acc["bf16"],
        "matmul size": n,
        "matmul fp32 ms": matmul["fp32"].median_ms,
        "matmul bf16 ms": matmul["bf16"].median_ms,
        "matmul bf16 speed-up": matmul_speedup,
        "CNN step fp32 ms": step_times["fp32"].median_ms,
        "CNN step bf16 ms": step_times["bf16"].median_ms,
        "CNN step bf16 speed-up": step_speedup,
        "cpu has bf16 units": ("yes" if bf16_units else "no") if flags_known else "unknown",
        "cpu flags": " ".join(flags) or ("none listed" if flags_known else "unknown"),
        "fp16 backward grads lost (no scaler)": lost_plain,
        "fp16 stored grads lost (no scaling)": underflow["fp16"],
        **gpu_figures,
    },
    notes="Test accuracy on the digits test split (same seed, data order and schedule for fp32 and bf16); "
          "timings are medians of the best of interleaved rounds.",
)

# %% [markdown]
# ## Going further
#
# * **GPU scale.** `LAB_SCALE=gpu` on a CUDA machine runs section 5's GPU cell: fp32, TF32, fp16 and
#   bf16 throughput and peak memory side by side, with a wider network and a larger batch. Tensor
#   cores want dimensions that are multiples of 8; try `width=64` against `width=60`.
# * **Where the time goes.** `torch.profiler.profile()` around a few training steps shows which ops
#   run in which dtype and how long each takes, including the casts autocast inserts.
# * **Pure bf16.** Large-model training often keeps the weights in bf16 too (`model.to(torch.bfloat16)`)
#   with an fp32 copy in the optimizer, or uses fp8 on Hopper GPUs (NVIDIA Transformer Engine), the
#   FP8 of the first article.
# * **The library's loop.** `train.fit(model, loader, precision="bf16")` runs this same step
#   (`train.optimizer_step`), with clipping, logging and evaluation around it.
# * **Read more.** Micikevicius et al. (2018), *Mixed Precision Training*; the PyTorch
#   documentation of `torch.amp` (its "Autocast Op Reference" lists every op per dtype and device).
