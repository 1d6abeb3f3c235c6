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
# # Lab 04 — Mixed precision
#
# **The claim** (the source article): wrap the forward pass in `torch.cuda.amp.autocast()`, scale
# the loss with `torch.cuda.amp.GradScaler`, and training runs "3× faster on A100" at the same
# accuracy.
#
# **What you will measure:**
#
# 1. the article's API today: `torch.cuda.amp.*` is deprecated, and its GradScaler switches itself
#    off without CUDA. The current spelling is `torch.autocast(device_type, dtype)` and
#    `torch.amp.GradScaler(device)`, and it works on the CPU too;
# 2. what autocast really does, layer by layer: which layers run in bfloat16 / float16 and which
#    stay in float32;
# 3. why float16 needs **loss scaling** and bfloat16 does not: their dynamic range, and real
#    gradients underflowing to zero in fp16, rescued by the scaler;
# 4. speed: fp32 vs bf16 training steps and a matmul on this CPU (and fp16 / bf16 / TF32 on a GPU,
#    when there is one), and whether this CPU has the hardware that makes bf16 fast;
# 5. accuracy: the same training in fp32 and bf16.

# %%
import warnings

import torch
import torch.nn.functional as F

from lablib import show
from lablib.core import bench, checks, compat, config, env, results, viz
from lablib.data import datasets
from lablib.methods import amp
from lablib.nets import models, train

cfg = config.profile(
    smoke=dict(width=8, epochs=1, bench_size=8, bench_batch=64, matmul_n=256, matmul_repeats=2, repeats=2, rounds=1),
    cpu=dict(width=16, epochs=20, bench_size=16, bench_batch=64, matmul_n=1024, matmul_repeats=2, repeats=3, rounds=2),
    gpu=dict(width=64, epochs=20, bench_size=32, bench_batch=256, matmul_n=4096, matmul_repeats=20, repeats=20, rounds=3),
)
device = config.device()
config.seed_everything(0)
print(env.line())
flags = env.cpu_flags()
bf16_units = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
print("CPU features:", ", ".join(flags) or "(not reported)")
cfg

# %% [markdown]
# ## 1. The article's API, and today's
#
# The article writes `torch.cuda.amp.autocast()` and `torch.cuda.amp.GradScaler()`. Both still exist,
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
print(f"\nthe article's GradScaler is enabled here: {old_scaler.is_enabled()}")
new_scaler = compat.grad_scaler(device.type)
print(f"torch.amp.GradScaler({device.type!r}) is enabled here: {new_scaler.is_enabled()} (initial scale {new_scaler.get_scale():g})")

# %% [markdown]
# The current spelling names the device and the dtype: `torch.autocast(device_type="cpu",
# dtype=torch.bfloat16)`, and `torch.amp.GradScaler("cuda")` (or `"cpu"`). `lablib.compat.grad_scaler`
# picks it on every supported torch version. One training step then reads:

# %%
show(amp.train_step)

# %% [markdown]
# `amp.autocast(device, dtype)` is `torch.autocast(device_type=..., dtype=...)`, switched off for
# `"fp32"`. Note what is *not* in the step: no `.half()` on the model. The weights stay in fp32;
# autocast casts them to the low precision on the fly for the ops where that is safe, and the
# optimizer updates the fp32 weights ("mixed" precision). `scaler.step` is `opt.step` with two extras:
# it divides the gradients by the scale first, and it skips the step when a gradient is inf or NaN.

# %% [markdown]
# ## 2. What autocast runs in which dtype
#
# Autocast keeps per-device lists of ops: matrix multiplications and convolutions run in the low
# precision (that is where the speed is), ops that need range or accuracy such as losses run in
# fp32, and everything else simply follows its input. Forward hooks on every layer record the dtype
# each output came out in:

# %%
show(amp.autocast_dtypes)

# %%
splits = datasets.digits()
probe = models.SmallCNN(width=cfg.width)
xb, yb = splits.train.x[:8], splits.train.y[:8]
table = {dt: amp.autocast_dtypes(probe, xb, device, dt, y=yb) for dt in ("fp32", "bf16", "fp16")}
print(f"{'layer':<14}{'type':<20}{'fp32':>10}{'bf16':>12}{'fp16':>12}")
for i, (name, kind, _) in enumerate(table["fp32"]):
    print(f"{name:<14}{kind:<20}{table['fp32'][i][2]:>10}{table['bf16'][i][2]:>12}{table['fp16'][i][2]:>12}")

# %% [markdown]
# Read the bf16 column: `Conv2d` and `Linear` are on autocast's low-precision list and run in bf16;
# `ReLU`, `MaxPool2d` and the pooling are on no list and keep whatever dtype they receive (bf16,
# since a convolution came first); `cross_entropy` is on the fp32 list, so the loss is computed in
# fp32 from the bf16 logits. The lists differ by device: on CUDA, `softmax`, `layer_norm` and
# `group_norm` are cast to fp32, while on the CPU (torch 2.13) they follow their input. PyTorch's
# "Autocast Op Reference" lists every op per device.

# %% [markdown]
# ## 3. Why fp16 needs loss scaling and bf16 does not
#
# Both formats have 16 bits; they spend them differently. fp16 has 10 mantissa bits and a 5-bit
# exponent; bf16 keeps fp32's 8-bit exponent and only 7 mantissa bits. So bf16 is *coarser* (a
# larger epsilon) but reaches numbers as small and large as fp32, while fp16 stops near 6e-5 (6e-8 with
# subnormals):

# %%
print(f"{'dtype':<10}{'largest':>12}{'smallest normal':>18}{'smallest > 0':>15}{'epsilon':>11}")
for name, dt in amp.DTYPES.items():
    fi = torch.finfo(dt)
    tiniest = torch.nextafter(torch.zeros((), dtype=dt), torch.ones((), dtype=dt)).item()
    print(f"{name:<10}{fi.max:>12.3g}{fi.smallest_normal:>18.3g}{tiniest:>15.3g}{fi.eps:>11.3g}")

# %% [markdown]
# Gradients are often far smaller than activations: they shrink as a model learns, and a loss averaged
# over a batch divides every contribution by the batch size. Here are the real gradients of a
# `SmallCNN` after some fp32 training (the model the accuracy section below trains), and the share of
# them that becomes exactly **zero** when stored in fp16, in bf16, and in fp16 after multiplying the
# loss by `2**16` (the GradScaler's initial scale):

# %%
show(amp.underflow_fraction)

# %%
def train_model(amp_mode, seed=0):
    """The same SmallCNN, data order and schedule for every precision."""
    config.seed_everything(seed)
    model = models.SmallCNN(width=cfg.width)
    loader = datasets.loader(splits.train, batch_size=64, shuffle=True, seed=seed)
    history = train.fit(model, loader, epochs=cfg.epochs, lr=3e-3, schedule="cosine", device=device,
                        amp=amp_mode, desc=f"train {amp_mode or 'fp32'}")
    return model, history


fp32_model, fp32_history = train_model(None)
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
for name, share in underflow.items():
    print(f"  stored as {name:<14} {share:7.2%} become 0")
bins = {f"1e{e}": ((grads.abs() >= 10.0**e) & (grads.abs() < 10.0 ** (e + 1))).float().mean().item() for e in range(-12, 0)}
viz.bars(bins, ylabel="share of gradient entries", title="|gradient| by decade (fp16's smallest normal is 6e-5)")

# %% [markdown]
# Entries below fp16's smallest normal number are stored as subnormals, with fewer significant bits,
# and those below about 6e-8 vanish. Stored once, at the end, most of these gradients survive; the
# real danger is *inside* a backward pass under fp16 autocast, where the gradients flowing between
# layers are fp16 tensors, each layer's chain-rule products rounded to fp16 again. Here is that backward pass on this model, once
# plain and once through the scaler. The loss is divided by 1000 to stand in for a long training run's
# smaller loss and gradients:

# %%
def fp16_weight_grads(model, scaler):
    model.zero_grad()
    with amp.autocast(device, "fp16"):
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
print(f"fp16 backward without scaling: {lost_plain:.2%} of the weight gradients are exactly 0, relative error {err(plain):.3f}")
print(f"fp16 backward with GradScaler: {lost_scaled:.2%} are exactly 0, relative error {err(scaled):.3f}")

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
print(f"parameter after a step with inf gradients: {p.detach().tolist()} (unchanged), scale {before:g} -> {scaler.get_scale():g}")

# %% [markdown]
# bf16 has fp32's exponent, so its gradients neither underflow nor overflow where fp32's would not:
# bf16 training needs no scaler (`fit(..., amp="bf16")` uses none). The price is precision: 8
# significant bits instead of 11 (fp16) or 24 (fp32). Section 5 measures whether that costs accuracy.
#
# ## 4. Speed: is bf16 faster here?
#
# Low precision is fast only where the hardware has units for it: tensor cores on NVIDIA GPUs since
# Volta (fp16) and Ampere (bf16, TF32), and on x86 CPUs the `avx512_bf16` instructions (Cooper Lake,
# Zen 4 and newer) or AMX tiles (`amx_bf16`, Sapphire Rapids). Without them, PyTorch falls back to
# generic kernels that convert every element, and bf16 can be **many times slower** than fp32:
# the measurement below says by how much on this machine.

# %%
if bf16_units:
    print(f"This CPU has bf16 hardware ({', '.join(bf16_units)}): bf16 can be faster than fp32 here.")
else:
    print("This CPU has no bf16 hardware (neither avx512_bf16 nor amx_bf16): expect bf16 to be SLOWER than fp32 here.")

# %% [markdown]
# Two measurements, fp32 against bf16, timed in interleaved rounds (`bench.compare`) so a busy
# neighbour slows both alike: a `n × n` matrix multiplication, and one full training step (forward,
# backward, Adam) of a `SmallCNN` on a batch of digits upsampled to `bench_size` pixels, so the
# convolutions have some work to do.

# %%
show(amp.step_fn)

# %%
n = cfg.matmul_n
a32 = torch.randn(n, n, device=device)
a16 = a32.to(torch.bfloat16)
matmul = bench.compare({"fp32": lambda: a32 @ a32, "bf16": lambda: a16 @ a16},
                       rounds=cfg.rounds, warmup=1, repeats=cfg.matmul_repeats)

big = datasets.digits(size=cfg.bench_size)
xs, ys = big.train.x[: cfg.bench_batch], big.train.y[: cfg.bench_batch]
steps = {}
for name in ("fp32", "bf16"):
    config.seed_everything(0)
    steps[name] = amp.step_fn(models.SmallCNN(width=cfg.width), xs, ys, device, name)
step_times = bench.compare(steps, rounds=cfg.rounds, warmup=2, repeats=cfg.repeats)

matmul_speedup = matmul["fp32"].median_ms / matmul["bf16"].median_ms
step_speedup = step_times["fp32"].median_ms / step_times["bf16"].median_ms
print(f"{'':<32}{'fp32 ms':>10}{'bf16 ms':>10}{'bf16 speed-up':>15}")
print(f"{f'matmul {n}x{n}':<32}{matmul['fp32'].median_ms:>10.2f}{matmul['bf16'].median_ms:>10.2f}{matmul_speedup:>14.2f}x")
print(f"{f'SmallCNN step, {cfg.bench_batch} x {cfg.bench_size}x{cfg.bench_size}':<32}"
      f"{step_times['fp32'].median_ms:>10.2f}{step_times['bf16'].median_ms:>10.2f}{step_speedup:>14.2f}x")
print("\nreference (measured elsewhere, a CPU with avx512_bf16): about 4x on the 1024x1024 matmul, "
      "1.2-1.3x on a small CNN; the article (A100 GPU, fp16): 3x")
viz.grouped_bars({f"matmul {n}": {k: v.median_ms for k, v in matmul.items()},
                  "SmallCNN step": {k: v.median_ms for k, v in step_times.items()}},
                 ylabel="median time (ms, lower is better)", title=f"fp32 vs bf16 on {device.type}", log=True)

# %% [markdown]
# Compare the speed-ups with the CPU features printed above. A value below 1 means bf16 is slower:
# that is what a CPU without bf16 units gives, and it is the honest answer for such a laptop:
# there, mixed precision buys neither speed nor (with fp32 master weights kept) much memory. On a CPU with `avx512_bf16` / `amx_bf16` the matmul
# gains the most; a small CNN gains less, because much of its step is memory-bound work (activations,
# pooling, the optimizer) that low precision does not speed up. The article's 3× is a GPU figure:
# tensor cores multiply fp16 many times faster than fp32.
#
# ### On a GPU: fp32, TF32, fp16, bf16 and peak memory

# %%
gpu_figures = {}
if device.type == "cuda":
    gx, gy = xs.to(device), ys.to(device)
    fns = {}
    for name in ("fp32", "fp16", "bf16"):
        if amp.supports(device, name):
            config.seed_everything(0)
            fns[name] = amp.step_fn(models.SmallCNN(width=cfg.width), gx, gy, device, name)
    # true fp32: cuDNN convolutions use TF32 by default, so switch it off for the baseline
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    gpu_times = bench.compare(fns, rounds=cfg.rounds, warmup=5, repeats=cfg.repeats, cuda=True)
    torch.backends.cudnn.allow_tf32 = True  # TF32 tensor cores for fp32 convolutions and matmuls
    torch.set_float32_matmul_precision("high")
    tf32 = bench.latency(fns["fp32"], warmup=5, repeats=cfg.repeats, cuda=True)
    torch.set_float32_matmul_precision("highest")
    for name, t in gpu_times.items():
        mem = bench.peak_memory(lambda f=fns[name]: [f() for _ in range(3)])
        gpu_figures[f"gpu {name} img/s"] = cfg.bench_batch / (t.median_ms / 1e3)
        gpu_figures[f"gpu {name} peak MB"] = mem["cuda_peak_mb"]
    gpu_figures["gpu fp32+TF32 img/s"] = cfg.bench_batch / (tf32.median_ms / 1e3)
    for k, v in gpu_figures.items():
        print(f"{k:<24}{v:>12,.0f}")
    for name in ("fp16", "bf16"):
        if name in gpu_times:
            gpu_figures[f"gpu {name} speed-up"] = gpu_times["fp32"].median_ms / gpu_times[name].median_ms
            print(f"{name} speed-up over fp32: {gpu_figures[f'gpu {name} speed-up']:.2f}x (the article: 3x on an A100)")
else:
    print("No CUDA GPU here: the GPU comparison (fp32 vs TF32 vs fp16 vs bf16 throughput and peak memory) "
          "is skipped. Run this lab on a GPU box to measure the article's setting.")

# %% [markdown]
# ## 5. Accuracy: the same training in fp32 and bf16
#
# The fp32 model from section 3 and a bf16 one: same seed, same data order, same schedule, only
# `amp="bf16"` differs (`fit` then wraps each forward pass in autocast, exactly as `train_step` does).

# %%
bf16_model, bf16_history = train_model("bf16")
test_loader = datasets.loader(splits.test, batch_size=256)
acc = {
    "fp32": train.evaluate(fp32_model, test_loader)["acc"],
    "bf16": train.evaluate(bf16_model, test_loader, amp="bf16")["acc"],
}
train_s = {"fp32": sum(fp32_history["seconds"]), "bf16": sum(bf16_history["seconds"])}
for name in acc:
    print(f"{name}: test accuracy {acc[name]:.3f}, training {train_s[name]:.1f} s")
gap = 100 * (acc["bf16"] - acc["fp32"])
print(f"bf16 minus fp32: {gap:+.1f} points (the test set has {len(splits.test)} images: 1 image = {100 / len(splits.test):.2f} points)")
viz.curves({"fp32": fp32_history, "bf16": bf16_history}, metrics=("train_loss", "train_acc"), title="fp32 vs bf16 training")

# %% [markdown]
# Where the two curves lie on top of each other and the accuracies agree to within a point, 8
# significant bits were enough for the forward and backward passes of this network: the weights
# and their updates stay in fp32 and the loss is computed in fp32; the matmuls and convolutions
# run in bf16, and their bf16 outputs flow on through the ReLUs and pooling (see the table in
# section 2), and so do the gradients coming back.

# %%
results.record(
    "04_mixed_precision",
    {
        "fp32 test acc": acc["fp32"],
        "bf16 test acc": acc["bf16"],
        "bf16 minus fp32 (points)": gap,
        "matmul size": n,
        "matmul fp32 ms": matmul["fp32"].median_ms,
        "matmul bf16 ms": matmul["bf16"].median_ms,
        "matmul bf16 speed-up": matmul_speedup,
        "CNN step fp32 ms": step_times["fp32"].median_ms,
        "CNN step bf16 ms": step_times["bf16"].median_ms,
        "CNN step bf16 speed-up": step_speedup,
        "cpu has bf16 units": bool(bf16_units),
        "cpu flags": " ".join(flags) or "unknown",
        "fp16 backward grads lost (no scaler)": lost_plain,
        "fp16 backward grads lost (GradScaler)": lost_scaled,
        "fp16 stored grads lost (no scaling)": underflow["fp16"],
        **gpu_figures,
    },
    claims={
        "CNN step bf16 speed-up": "3x faster (A100, fp16); reference CPU with avx512_bf16: 1.2-1.3x",
        "matmul bf16 speed-up": "reference CPU with avx512_bf16: about 4x",
        "bf16 minus fp32 (points)": "same accuracy",
    },
)

# %%
if cfg.scale != "smoke":
    assert abs(gap) <= 1.0, f"bf16 accuracy differs from fp32 by {gap:+.1f} points"
    assert lost_plain > 0.05 and lost_scaled < 0.01, "the GradScaler must save fp16 gradients from underflow"
    # speed is reported, not asserted: it depends on the hardware (see section 4)
    print("Effect confirmed: bf16 within 1 point of fp32; the GradScaler keeps fp16 gradients from underflowing")

# %% [markdown]
# ## Exercises
#
# **Exercise 1: bf16 is half an fp32.** Write `my_round_to_bf16(x)`: what the float32 tensor `x`
# becomes when stored in bfloat16, returned as float32 again. One `.to(...)` chain works; then do it
# with integer bit operations on `x.view(torch.int32)`, which shows what bf16 *is* (check the sign,
# the exponent and the mantissa bits, and how ties must round).

# %%
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
    hint="bf16 keeps fp32's sign and 8 exponent bits and the top 7 mantissa bits: the upper 16 bits. "
         "Cutting the lower 16 bits off is not enough: round to nearest (ties to even) first.",
)

# %% [markdown]
# **Exercise 2: the smallest safe loss scale.** Write `my_min_scale(grads)`: the smallest power of two
# `2**k` (k = 0, 1, 2, ...) for which no non-zero entry of `grads` becomes zero in fp16 (use
# `amp.underflow_fraction` if you like). Try it on the gradients `grads` from section 3. Why does the
# GradScaler start far higher, and lower the scale only after an overflow, rather than compute such a
# value?

# %%
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

# %% [markdown]
# Stuck? The reference answers are the tested code in lablib: uncomment to see them.

# %%
# show(amp.round_to_bf16); show(amp.min_loss_scale)

# %% [markdown]
# **Exercise 3 (open).** Train with `amp="fp16"` on this CPU (`train_model("fp16")`; `fit` uses a
# `GradScaler` for fp16 on every device). Does accuracy match fp32 on this small network? Then
# divide the loss by 1000 with `compute_loss=lambda m, x, y: F.cross_entropy(m(x), y) / 1000` and
# compare fp16 with bf16, which needs no scaler.
#
# ## Going further
#
# * **GPU scale.** `LAB_SCALE=gpu` on a CUDA machine runs section 4's GPU cell: fp32, TF32, fp16 and
#   bf16 throughput and peak memory side by side, with a wider network and a larger batch. Tensor
#   cores want dimensions that are multiples of 8; try `width=64` against `width=60`.
# * **Where the time goes.** `torch.profiler.profile()` around a few training steps shows which ops
#   run in which dtype and how long each takes, including the casts autocast inserts.
# * **Pure bf16.** Large-model training often keeps the weights in bf16 too (`model.to(torch.bfloat16)`)
#   with an fp32 copy in the optimizer, or uses fp8 on Hopper GPUs (NVIDIA Transformer Engine).
# * **Read more.** Micikevicius et al. (2018), *Mixed Precision Training*; the PyTorch
#   documentation of `torch.amp` (its "Autocast Op Reference" lists every op per dtype and device).
