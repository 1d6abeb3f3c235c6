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
# # Lab 08 — INT8 quantization
#
# **Source:** two of the articles.
#
# * 《小团队AI突围:从技术困境到行业标杆的逆袭之路》 (*How a small AI team broke through: from
#   technical dead ends to an industry benchmark*): "某团队通过INT8量化将模型体积缩小4倍,推理速度提升3倍。"
#   (*one team used INT8 quantization to make its model **4× smaller** and inference **3× faster***).
# * 《AI应用技术全景:从模型到工程的完整链条》 (*AI applications end to end: from the model to the
#   engineering*): "量化技术通过将浮点参数转换为低精度整数(如FP32→INT8),可减少计算量并提升推理速度。
#   主流框架如TensorRT支持量化感知训练(QAT),在训练阶段模拟量化效果,避免精度损失。" (*quantization turns
#   float parameters into low-precision integers (FP32 → INT8), cutting computation and speeding up
#   inference; frameworks such as TensorRT support quantization-aware training (QAT), which simulates
#   quantization during training to **avoid losing accuracy***).
#
# **What you will measure**, on the digits CNN of lab 07 and on a Linear-heavy model:
#
# 1. the arithmetic, written in this notebook: a float tensor as integers plus a scale and a zero
#    point, and the rounding error that costs;
# 2. ONNX Runtime's two recipes: **dynamic** quantization (weights int8, activations quantized on
#    the fly) and **static** quantization (activation ranges calibrated on real digits), the latter
#    in both of its file formats, **QDQ** and **QOperator**;
# 3. file size and test accuracy of each, against the "4× smaller";
# 4. latency at batch 1 and 64, against the "3× faster": first the small CNN, then a wide MLP;
# 5. PyTorch's own quantization path, where this installation still has one;
# 6. quantization-aware training with the fake-quantizer written here, exported to a QDQ file.
#
# **Objectives.** After this lab you can
#
# * quantize and dequantize a tensor by hand (scale, zero point, round, clamp) and say how large
#   the rounding error is;
# * quantize an ONNX model with ONNX Runtime, dynamically or statically (QDQ or QOperator), with
#   calibration data, and check its size and accuracy;
# * tell from a latency table when INT8 pays (matrix-heavy models, int8 CPU instructions) and when
#   it does not (small convolutions, per-call quantization);
# * fine-tune a model with a straight-through fake-quantizer (QAT) and show what it wins back
#   over rounding after training.
#
# **Prerequisites.** Lab 07 (ONNX export, ONNX Runtime sessions, timing with `bench.compare`);
# lab 01 (training with lablib's loop). No GPU needed.
#
# **Time.** `smoke` about 20 s; `cpu` (2 cores) about 35 s to run, 45–60 minutes to work
# through; `gpu`: about as long as `cpu` (only the training uses the GPU; INT8 runs on the CPU).
#
# Answers to the exercises and open questions: `docs/answers/08_quantization.md`.

# %%
import copy

import onnx
import onnxruntime as ort
import torch

from lablib import show, table
from lablib.core import bench, checks, config, env, results, viz
from lablib.data import datasets
from lablib.deploy import onnx_export
from lablib.methods import quantize
from lablib.nets import models, train

cfg = config.profile(
    smoke=dict(width=16, epochs=1, mlp_hidden=(256, 256), mlp_epochs=1, calib_images=64,
               qat_bits=2, qat_epochs=1, repeats=5, rounds=1),
    cpu=dict(width=48, epochs=10, mlp_hidden=(1024, 1024, 1024), mlp_epochs=3, calib_images=512,
             qat_bits=2, qat_epochs=3, repeats=60, rounds=3),
    gpu=dict(width=48, epochs=10, mlp_hidden=(1024, 1024, 1024), mlp_epochs=3, calib_images=512,
             qat_bits=2, qat_epochs=3, repeats=100, rounds=3),
)
device = config.device()
config.seed_everything(0)
folder = config.data_dir() / "08_quantization"  # every file this lab writes goes here
folder.mkdir(parents=True, exist_ok=True)
print(env.line())
print(f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}; "
      f"torch threads {torch.get_num_threads()}, LAB_THREADS={config.threads()}")
print(f"CPU features that matter for int8: {env.cpu_flags() or 'none reported'}")
cfg

# %% [markdown]
# ## 1. The fp32 model
#
# Lab 07's `SmallCNN` on scikit-learn's 8×8 digits, but **wider** at `cpu` scale (`width=48`, about
# 130k parameters instead of 15k). Why: an ONNX file holds the graph too (node names, shapes,
# attributes: a few kB whatever the model), and INT8 shrinks only the weights. At width 16 the
# weights are about 60 kB and the fixed part is a large share of the file; section 4 measures what
# that does to the ratio. Training runs on the best device here; everything after it runs on the
# CPU. The export is lab 07's, through lablib.

# %%
splits = datasets.digits()
train_loader = datasets.loader(splits.train, batch_size=64, shuffle=True)
val_loader = datasets.loader(splits.val, batch_size=256)
test_loader = datasets.loader(splits.test, batch_size=256)

cnn = models.SmallCNN(width=cfg.width)
train.fit(cnn, train_loader, val_loader, epochs=cfg.epochs, lr=3e-3, schedule="cosine", device=device, desc="SmallCNN")
cnn = cnn.cpu().eval()
fp32_acc = train.evaluate(cnn, test_loader)["acc"]
results.claim("the fp32 CNN is trained", fp32_acc, holds=fp32_acc >= 0.90,
              condition="test accuracy >= 0.90 (a precondition, not the article's claim)")

paths = {"fp32": folder / "cnn_fp32.onnx"}
with onnx_export.quiet():
    onnx_export.onnx_export(cnn, splits.test.x[:1], paths["fp32"])
print(f"{models.count_params(cnn):,} parameters; eager test accuracy {fp32_acc:.3f}; "
      f"fp32 ONNX file {quantize.file_size(paths['fp32']) / 1024:.0f} kB")

# %% [markdown]
# ## 2. The arithmetic, written here
#
# Quantization stores a float tensor `x` as integers `q` on a grid of `2**bits` levels
# ([-128, 127] for 8 bits) plus one float **scale** and an integer **zero point**:
#
# `q = clamp(round(x / scale) + zero_point, qmin, qmax)`, and back: `x ≈ (q - zero_point) · scale`.
#
# These are exactly what ONNX's `QuantizeLinear` and `DequantizeLinear` ops compute. For
# **quantization-aware training** the two are combined into a *fake quantizer*: round to the grid
# and straight back to float, so the forward pass sees the rounding error. Rounding has zero
# gradient almost everywhere, so training would stop; the **straight-through estimator** (STE)
# pretends rounding is the identity in the backward pass: `x + (rounded - x).detach()` has the
# value of `rounded` and the gradient of `x`. For weights the usual scale is *symmetric*: the
# largest |weight| maps to the top of the grid (127 for 8 bits), zero point 0.
#
# The three functions below are this lab's step; sections 2 and 8 run them.

# %%
def quant(x, scale, zero_point=0, bits=8):
    """Float -> integer grid: clamp(round(x / scale) + zero_point) into the signed `bits`-bit range."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def dequant(q, scale, zero_point=0):
    """Integer grid -> float: (q - zero_point) * scale."""
    return (q - zero_point) * scale


def fake_quant(x, bits=8):
    """Round x to the symmetric `bits`-bit grid and back, with a straight-through gradient."""
    scale = x.detach().abs().max().clamp_min(1e-12) / (2 ** (bits - 1) - 1)  # largest |x| -> top level
    rounded = dequant(quant(x, scale, 0, bits), scale)
    return x + (rounded - x).detach()  # forward: the rounded value; backward: the identity

# %% [markdown]
# Each is checked against lablib's tested reference on random tensors, scales, zero points and
# bit widths: values, and for `dequant` and `fake_quant` the gradients (the STE's gradient is 1
# everywhere).

# %%
def random_tensor(g, grad=False):
    x = torch.randn(int(torch.randint(1, 200, (1,), generator=g)), generator=g) * float(0.1 + 5 * torch.rand(1, generator=g))
    return x.requires_grad_(grad)


def random_bits(g):
    return int(torch.randint(2, 9, (1,), generator=g))


def random_scale(g):
    return float(0.01 + torch.rand(1, generator=g))


def random_zero_point(g, bits=8):
    half = 2 ** (bits - 1)  # a zero point is itself a value of the grid: [-half, half - 1]
    return int(torch.randint(-min(half, 8), min(half, 8), (1,), generator=g))


def quant_inputs(g):
    bits = random_bits(g)
    return random_tensor(g), random_scale(g), random_zero_point(g, bits), bits


checks.agrees(quant, reference=quantize.quantize_tensor, make_inputs=quant_inputs)
checks.agrees(dequant, reference=quantize.dequantize,
              make_inputs=lambda g: (torch.round(random_tensor(g)).requires_grad_(), random_scale(g), random_zero_point(g)))
checks.agrees(fake_quant, reference=quantize.fake_quantize,
              make_inputs=lambda g: (random_tensor(g, grad=True), random_bits(g)))

# %% [markdown]
# On the first convolution's weights, at 8 bits and below: every weight moves by at most half a
# step, `scale / 2`, and the number of distinct values shrinks with the bits.

# %%
w = cnn.features[0].weight.detach()
rows = {}
for bits in (8, 4, 2):
    scale = w.abs().max().item() / (2 ** (bits - 1) - 1)
    err = (dequant(quant(w, scale, 0, bits), scale) - w).abs()
    rows[f"{bits} bits"] = {"scale": scale, "distinct values": len(torch.unique(fake_quant(w, bits))),
                            "max error": err.max().item(), "scale / 2": scale / 2, "mean error": err.mean().item()}
print(f"first conv weights in [{w.min():.3f}, {w.max():.3f}], {w.numel()} values")
table(rows)

# %% [markdown]
# Weights are known in advance. **Activations** (each layer's input) are not: their range depends
# on the image. The two recipes differ in when they find it:
#
# * **dynamic**: at run time, on every call, measure min/max of the activation, quantize it, run
#   the integer kernel, dequantize the result. No data needed beforehand; extra work every call.
# * **static**: beforehand, run *calibration* images through the fp32 model, record each
#   activation's range, freeze the scales into the file. Nothing is measured at run time.
#
# ## 3. ONNX Runtime: dynamic and static quantization
#
# Both start from the fp32 `.onnx` file. ONNX Runtime recommends a pre-processing step first,
# `quant_pre_process`: shape inference (the quantizer must know every tensor's shape) and graph
# clean-ups such as folding constants, so the quantizer sees the graph ORT will actually run.

# %%
show(quantize.dynamic)

# %% [markdown]
# Static quantization needs a `CalibrationDataReader`: an object whose `get_next()` returns one
# feed (a dict from input name to a NumPy batch) per call, and `None` when the data is exhausted.
# Ours serves held-out digits from the *training* set (calibrating on test images would leak):

# %%
show(quantize.ImageReader)
show(quantize.static)

# %% [markdown]
# The two static formats hold the same numbers, written differently:
#
# * **QDQ** keeps the original float ops (`Conv`, `Gemm`) and puts `QuantizeLinear` →
#   `DequantizeLinear` pairs around them. Any ONNX runtime can run it (in float, if need be); ORT
#   recognises the pattern `DQ → Conv → Q` and swaps in its integer kernel. It is the recommended
#   format, and the one TensorRT reads.
# * **QOperator** replaces the ops by integer ones (`QLinearConv`, `QGemm`, ...): explicit, but
#   tied to the ops that have such a version.
#
# Each ends up in its own file; `inspect` from lab 07 shows what they hold.

# %%
calibration = splits.train.x[: cfg.calib_images]
paths["dynamic"] = quantize.dynamic(paths["fp32"], folder / "cnn_dynamic.onnx")
paths["static QDQ"] = quantize.static(paths["fp32"], folder / "cnn_static_qdq.onnx", calibration, fmt="qdq")
paths["static QOperator"] = quantize.static(paths["fp32"], folder / "cnn_static_qop.onnx", calibration, fmt="qoperator")
for name, path in paths.items():
    ops = onnx_export.inspect(path)["ops"]
    print(f"{name:<17}", ", ".join(f"{op} x{n}" for op, n in ops.items()))

# %% [markdown]
# (The `WARNING:root` lines, if you saw any, are the quantizer's own advice; the formats are chosen
# deliberately here.) In the op lists printed above (they depend on the ONNX Runtime version), the **dynamic** file swapped each `Conv` for `ConvInteger` plus a
# `DynamicQuantizeLinear` (the per-call min/max and quantize) and float `Mul`/`Add`/`Cast` to
# rescale the int32 result: several extra ops per layer. The **QDQ** file has the float ops
# wrapped in Q/DQ pairs; the **QOperator** file has `QLinearConv`, `QGemm` and one quantize at the
# input, one dequantize at the output.
#
# ## 4. Size and accuracy
#
# Each file through ONNX Runtime on the whole test set. The width-16 CNN of lab 07 is exported and
# statically quantized too (weights untrained: size does not depend on their values), to see the
# fixed part of the file at work.

# %%
sessions = {name: onnx_export.session(path) for name, path in paths.items()}
acc = {name: onnx_export.ort_accuracy(s, test_loader)[0] for name, s in sessions.items()}
size_kb = {name: quantize.file_size(p) / 1024 for name, p in paths.items()}

narrow = {"fp32": folder / "cnn16_fp32.onnx"}
with onnx_export.quiet():
    onnx_export.onnx_export(models.SmallCNN(width=16).eval(), splits.test.x[:1], narrow["fp32"])
narrow["static QDQ"] = quantize.static(narrow["fp32"], folder / "cnn16_static_qdq.onnx", calibration)
narrow_kb = {k: quantize.file_size(p) / 1024 for k, p in narrow.items()}

table({name: {"size (kB)": size_kb[name], "smaller (x)": size_kb["fp32"] / size_kb[name], "test acc": acc[name],
              "change (points)": 100 * (acc[name] - acc["fp32"])} for name in paths})
narrow_ratio = narrow_kb["fp32"] / narrow_kb["static QDQ"]
print(f"width-16 CNN: fp32 {narrow_kb['fp32']:.1f} kB, static QDQ {narrow_kb['static QDQ']:.1f} kB: {narrow_ratio:.2f}x smaller")

# %% figure="file-size-fp32-vs-int8"
viz.bars({f"{k}\nwidth {cfg.width}": v for k, v in size_kb.items()}
         | {"fp32\nwidth 16": narrow_kb["fp32"], "static QDQ\nwidth 16": narrow_kb["static QDQ"]},
         ylabel="file size (kB)", title="ONNX file size: fp32 vs INT8")

# %% [markdown]
# The article's "4× smaller" and "no accuracy lost", for the static QDQ file (the recommended
# format):

# %%
static_ratio = size_kb["fp32"] / size_kb["static QDQ"]
results.claim(f"INT8 file about 4x smaller (CNN width {cfg.width}, static QDQ)", static_ratio, holds=static_ratio >= 3.5,
              condition=">= 3.5x (4x on the weights, less the graph and the scales)",
              source="模型体积缩小4倍: 4x smaller (《小团队AI突围》)")
change_points = 100 * (acc["static QDQ"] - acc["fp32"])
results.claim("INT8 keeps the accuracy (CNN, static QDQ, change in points)", change_points, holds=change_points >= -1.0,
              condition="loses at most 1 point of test accuracy",
              source="避免精度损失: no loss of accuracy (《AI应用技术全景》)")
print(f"static QDQ: test accuracy {acc['static QDQ']:.4f} against fp32's {acc['fp32']:.4f}: {change_points:+.2f} points "
      f"({round(abs(change_points) / 100 * len(splits.test))} of {len(splits.test)} test images)")

# %% [markdown]
# INT8 weights are a quarter of fp32 weights, so a file that is nearly all weights shrinks nearly
# 4×; compare the width-16 ratio printed above with the wide model's to see what the fixed part of
# the file does to it. Biases stay 32-bit (int32 in the static files, float32 in the dynamic one)
# and every quantized tensor carries its scale and zero point, which is why even a large model
# lands a little below 4×. If the accuracy changed by a point or less, 256 levels per tensor were
# plenty for this network, whose weights and activations fill their range reasonably evenly.
#
# ## 5. Latency of the small CNN
#
# Every file at batch 1 and 64, in one interleaved grid (`bench.compare`, best round kept, as in
# lab 07). "Faster" and "slower" below mean beyond a 1.25× margin.

# %%
feeds = {b: {"input": splits.test.x[:b].contiguous().numpy()} for b in (1, 64)}


def latency_rows(timed, names):
    """The table of a timing grid keyed (name, batch): ms per call, and the ratio to fp32."""
    return {n: {f"batch {b} (ms)": timed[n, b].median_ms for b in feeds}
            | {f"vs fp32 @{b} (x)": timed["fp32", b].median_ms / timed[n, b].median_ms for b in feeds} for n in names}


def say_verdicts(timed, names):
    """Each INT8 file against fp32 at each batch size, in words that need a 1.25x margin."""
    for n in names:
        if n != "fp32":
            ratios = {b: timed["fp32", b].median_ms / timed[n, b].median_ms for b in feeds}
            print(f"  {n} vs fp32:", ", ".join(f"batch {b} {r:.2f}x ({bench.verdict(r)})" for b, r in ratios.items()))


cnn_t = bench.compare({(n, b): (lambda s=s, f=f: s.run(None, f)) for n, s in sessions.items() for b, f in feeds.items()},
                      rounds=cfg.rounds, warmup=5, repeats=cfg.repeats)
table(latency_rows(cnn_t, sessions))
say_verdicts(cnn_t, sessions)

# %% figure="cnn-latency-fp32-vs-int8"
viz.grouped_bars({f"batch {b}": {n: cnn_t[n, b].median_ms for n in sessions} for b in feeds},
                 ylabel="median latency per call (ms, log scale)", log=True,
                 title=f"SmallCNN (width {cfg.width}), ONNX Runtime on the CPU")

# %%
cnn_speedup = cnn_t["fp32", 64].median_ms / cnn_t["static QDQ", 64].median_ms
results.claim(f"INT8 runs 3x faster (CNN width {cfg.width}, static QDQ, batch 64)", cnn_speedup, holds=cnn_speedup >= 3.0,
              condition="fp32 time / INT8 time >= 3 (the article's figure)",
              source="推理速度提升3倍: 3x faster (《小团队AI突围》)", asserted=False)
print(f"static QDQ at batch 64: {cnn_speedup:.2f}x the speed of fp32, {bench.verdict(cnn_speedup)}")

# %% [markdown]
# Read your table before the explanation. What decides the outcome:
#
# * **dynamic** quantization quantizes activations at run time: for each layer a pass to find the
#   min/max, a pass to quantize, the integer convolution, a pass to rescale. With three small
#   convolutions on 8×8 images those extra passes can cost more than the arithmetic they save.
#   And `ConvInteger` is a generic kernel, while ORT's fp32 convolutions (NCHWc layout, fused
#   ReLU, lab 07) are among its most tuned code. If your dynamic row says "slower", this is why.
# * **static** QDQ has no run-time range finding, and ORT fuses `DQ → Conv → Q` into its integer
#   `QLinearConv`; still, the input and output must be quantized and dequantized, and the pooling
#   in between runs on int8 or goes back to float. That fixed cost per layer and per call is
#   large against a tiny convolution and shrinks as the layers widen, so whether static INT8
#   beats fp32, and at which batch size, depends on the width (set `width=16` in the profile to
#   measure the narrow model yourself).
# * the article's 3× needs the CPU's help (int8 instructions) and a model whose time is in matrix
#   multiplications. See the next section.
#
# ## 6. Where INT8 pays: a Linear-heavy model
#
# Transformers and MLPs spend their time in large matrix multiplications, where an int8 weight
# means four times less memory to stream per multiply-add, and `MatMulInteger`/`QGemm` are
# well-tuned kernels. A wide MLP on the same digits (`models.MLP`, three hidden layers at `cpu`
# scale, millions of weights), trained briefly:

# %%
mlp = models.MLP(64, hidden=cfg.mlp_hidden)
train.fit(mlp, train_loader, val_loader, epochs=cfg.mlp_epochs, lr=1e-3, schedule="cosine", device=device, desc="MLP")
mlp = mlp.cpu().eval()
mlp_paths = {"fp32": folder / "mlp_fp32.onnx"}
with onnx_export.quiet():
    onnx_export.onnx_export(mlp, splits.test.x[:1], mlp_paths["fp32"])
mlp_paths["dynamic"] = quantize.dynamic(mlp_paths["fp32"], folder / "mlp_dynamic.onnx")
mlp_paths["static QDQ"] = quantize.static(mlp_paths["fp32"], folder / "mlp_static_qdq.onnx", calibration, fmt="qdq")
mlp_paths["static QOperator"] = quantize.static(mlp_paths["fp32"], folder / "mlp_static_qop.onnx", calibration, fmt="qoperator")
mlp_sessions = {n: onnx_export.session(p) for n, p in mlp_paths.items()}
mlp_acc = {n: onnx_export.ort_accuracy(s, test_loader)[0] for n, s in mlp_sessions.items()}
mlp_kb = {n: quantize.file_size(p) / 1024 for n, p in mlp_paths.items()}
print(f"MLP: {models.count_params(mlp):,} parameters")
table({n: {"size (kB)": mlp_kb[n], "smaller (x)": mlp_kb["fp32"] / mlp_kb[n], "test acc": mlp_acc[n]} for n in mlp_paths})
mlp_ratio = mlp_kb["fp32"] / mlp_kb["static QDQ"]
results.claim("INT8 file about 4x smaller (MLP, static QDQ)", mlp_ratio, holds=mlp_ratio >= 3.5,
              condition=">= 3.5x (a file that is nearly all weights)", source="模型体积缩小4倍: 4x smaller (《小团队AI突围》)")
print(f"(this MLP trains only {cfg.mlp_epochs} epochs: it is here for size and timing. If an INT8 file scores a few "
      f"test images better than fp32, that is noise on {len(splits.test)} images, not quantization helping.)")

# %%
mlp_t = bench.compare({(n, b): (lambda s=s, f=f: s.run(None, f)) for n, s in mlp_sessions.items() for b, f in feeds.items()},
                      rounds=cfg.rounds, warmup=5, repeats=cfg.repeats)
table(latency_rows(mlp_t, mlp_sessions))
say_verdicts(mlp_t, mlp_sessions)
print(f"CPU features: {env.cpu_flags() or 'none reported'} "
      "(avx512_vnni / amx_int8 = hardware int8 dot products; without them int8 runs on avx2)")

# %% figure="mlp-latency-fp32-vs-int8"
viz.grouped_bars({f"batch {b}": {n: mlp_t[n, b].median_ms for n in mlp_sessions} for b in feeds},
                 ylabel="median latency per call (ms, log scale)", log=True,
                 title="Wide MLP, ONNX Runtime on the CPU")

# %%
mlp_speedup = mlp_t["fp32", 64].median_ms / mlp_t["static QDQ", 64].median_ms
results.claim("INT8 runs 3x faster (MLP, static QDQ, batch 64)", mlp_speedup, holds=mlp_speedup >= 3.0,
              condition="fp32 time / INT8 time >= 3 (the article's figure)",
              source="推理速度提升3倍: 3x faster (《小团队AI突围》)", asserted=False)
best_name, best_b = max(((n, b) for n in mlp_sessions if n != "fp32" for b in feeds),
                        key=lambda k: mlp_t["fp32", k[1]].median_ms / mlp_t[k].median_ms)
best = mlp_t["fp32", best_b].median_ms / mlp_t[best_name, best_b].median_ms
print(f"MLP, static QDQ at batch 64: {mlp_speedup:.2f}x the speed of fp32; the best INT8 row here is "
      f"{best_name} at batch {best_b}, {best:.2f}x ({bench.verdict(best)})")

# %% [markdown]
# Compare the two tables: if INT8 is faster here than on the CNN, it is because almost all of the
# MLP's time is in the matrix multiplications, and INT8 moves a quarter of the bytes (a 1024×1024
# layer is 4 MB in fp32, 1 MB in int8). How much depends on the CPU and the batch size; your
# tables are the answer for this machine:
#
# * with **AVX-512 VNNI** (Intel Cascade Lake and later, AMD Zen 4) or **AMX-INT8** (Sapphire
#   Rapids), one instruction does many int8 multiply-adds into int32, which makes int8 matmuls
#   faster still;
# * with only **AVX2** (the flags printed above tell you which), int8 products go through 16-bit
#   intermediate steps; the gain then comes largely from moving fewer bytes, and is largest where
#   reading the weights dominates the time, at small batches;
# * the per-op cost of `QuantizeLinear`/`DequantizeLinear` (or the dynamic range finding) is paid
#   per layer and per call: small against a 1024×1024 matmul, large against the CNN's small
#   convolutions;
# * if the QOperator file is much slower than QDQ here, look at its ops: ORT's x86 integer kernels
#   are fastest for uint8 activations × int8 weights, and `quantize.static` picks uint8 for
#   QOperator for that reason; QDQ lets ORT choose the kernel when it fuses the pattern.
#
# So "3× faster" is a statement about matmul-heavy models on CPUs with int8 instructions, not about
# every model. Measure your model, on your CPU, at your batch size.
#
# ## 7. PyTorch's own quantization
#
# PyTorch's classic API, `torch.ao.quantization` (eager-mode `quantize_dynamic`, FX graph mode),
# is **deprecated**: its successor is the separate `torchao` package
# (`torchao.quantization.quantize_(model, Int8DynamicActivationInt8WeightConfig())`).
# `quantize.int8_dynamic` (in `lablib.methods.quantize`) uses torchao when it is installed and otherwise, while it still
# exists, the deprecated `torch.ao.quantization.quantize_dynamic`; here it runs on the MLP, eager
# PyTorch at batch 64.

# %%
show(quantize.int8_dynamic)
tq_model, path = quantize.int8_dynamic(mlp)
torch_q = {"path": path}
print("PyTorch int8 path:", path)

if tq_model is not None:
    x64 = splits.test.x[:64]
    with torch.inference_mode():
        torch_q["acc"] = train.evaluate(tq_model, test_loader)["acc"]
        t = bench.compare({"eager fp32": lambda: mlp(x64), "eager int8": lambda: tq_model(x64)},
                          rounds=cfg.rounds, warmup=5, repeats=cfg.repeats)
    torch_q["fp32 ms"], torch_q["int8 ms"] = t["eager fp32"].median_ms, t["eager int8"].median_ms
    ratio = torch_q["fp32 ms"] / torch_q["int8 ms"]
    print(f"{torch_q['path']}: test acc {torch_q['acc']:.4f} (fp32 {mlp_acc['fp32']:.4f} in ORT); batch 64: "
          f"eager fp32 {torch_q['fp32 ms']:.3f} ms, int8 {torch_q['int8 ms']:.3f} ms: {ratio:.2f}x, {bench.verdict(ratio)}")

# %% [markdown]
# Eager PyTorch's dynamic int8 `Linear` does the same thing as ORT's dynamic recipe, with the same
# trade-off. For deployment, the ONNX route of sections 3–6 is independent of that API churn.
#
# ## 8. Quantization-aware training
#
# Section 4 measured what 8-bit static quantization costs this CNN. QAT matters when the rounding
# is coarse: fewer bits (4-bit weights are common for large models), or models whose weights have
# outliers. To see the effect clearly, go all the way down to **2 bits**: three levels per tensor,
# −s, 0 and +s ("ternary" weights):
#
# * **post-training** (PTQ): round the trained weights, no more training;
# * **QAT**: fine-tune a few epochs with the rounding *in the forward pass* (section 2's
#   `fake_quant`, with its straight-through gradient), so the weights learn to sit where rounding
#   does not hurt.
#
# `quantize.qat(model, bits, fake=fake_quant)` puts the lab's fake-quantizer on every Conv and
# Linear weight with `torch.nn.utils.parametrize`; `quantize.freeze` bakes the rounded weights in.

# %%
show(quantize.qat)
show(quantize.freeze)

# %%
bits = cfg.qat_bits
ptq = quantize.freeze(quantize.qat(copy.deepcopy(cnn), bits, fake=fake_quant))  # round the trained weights once
ptq_acc = train.evaluate(ptq, test_loader)["acc"]

qat_model = quantize.qat(copy.deepcopy(cnn), bits, fake=fake_quant)
train.fit(qat_model, train_loader, val_loader, epochs=cfg.qat_epochs, lr=1e-3, schedule="cosine", device=device, desc="QAT")
qat_model = quantize.freeze(qat_model.cpu()).eval()
qat_acc = train.evaluate(qat_model, test_loader)["acc"]
levels = len(torch.unique(qat_model.features[2].weight.detach()))
table({"fp32": {"test acc": fp32_acc}, f"{bits}-bit, rounded after training": {"test acc": ptq_acc},
       f"{bits}-bit, QAT": {"test acc": qat_acc}})
gain = 100 * (qat_acc - ptq_acc)
results.claim(f"QAT wins back what {bits}-bit rounding loses (points over PTQ)", gain, holds=gain >= 5.0,
              condition="QAT beats post-training rounding by >= 5 points",
              source="量化感知训练(QAT)……避免精度损失: QAT avoids the accuracy loss (《AI应用技术全景》)")
lost = fp32_acc - ptq_acc
if lost > 0.01:
    print(f"rounding after training lost {100 * lost:.1f} points; QAT won back {100 * (qat_acc - ptq_acc) / lost:.0f} % of them "
          f"and ends {100 * (qat_acc - fp32_acc):+.1f} points against fp32 ({levels} distinct values in a QAT conv weight)")
else:
    print(f"rounding to {bits} bits after training cost at most a point here: nothing for QAT to win back")

# %% [markdown]
# To deploy it, the QAT model exports like any other and goes through the static QDQ recipe: its
# low-bit weights are re-quantized on the int8 grid (low-bit *kernels* are a GPU / LLM topic, see
# Going further), and the activations are calibrated as before.

# %%
qat_paths = {"fp32": folder / "cnn_qat_fp32.onnx"}
with onnx_export.quiet():
    onnx_export.onnx_export(qat_model, splits.test.x[:1], qat_paths["fp32"])
qat_paths["static QDQ"] = quantize.static(qat_paths["fp32"], folder / "cnn_qat_qdq.onnx", calibration)
qat_onnx_acc = onnx_export.ort_accuracy(onnx_export.session(qat_paths["static QDQ"]), test_loader)[0]
print(f"QAT model as a QDQ file: {quantize.file_size(qat_paths['static QDQ']) / 1024:.0f} kB, test acc {qat_onnx_acc:.4f} "
      f"({100 * (qat_onnx_acc - qat_acc):+.2f} points against the QAT model in PyTorch)")

# %% [markdown]
# What to take from it: with coarse rounding, plain rounding after training can break a model,
# and a few epochs of QAT win much of it back (the table and the claim above give the figures for
# this run). The ternary weights land exactly on the int8 grid (±127 and 0), so the QDQ file does
# not change them; any accuracy it loses against the QAT model comes from quantizing the
# *activations* (and re-quantizing the biases), which this QAT did not simulate. And the file
# stores them in 8 bits: packing 2-bit weights needs kernels ORT's CPU path does not have. This
# is weight-only fake quantization, per tensor: a full QAT recipe also fake-quantizes the
# activations with learned or tracked ranges (torchao's QAT, or `torch.ao.quantization`'s
# `prepare_qat` while it lasts).
#
# ## Exercises
#
# **Exercise 1: one scale per output channel.** `fake_quant` uses one scale for the whole weight
# tensor, so a single large weight coarsens the grid for every channel. Real recipes use one
# scale per **output channel** (dim 0 of a Conv or Linear weight). Write
# `my_fake_quant_per_channel(w, bits)`: like `fake_quant`, but the largest |w| *of each slice
# `w[c]`* maps to the top level; the value is rounded, the gradient that of the identity. The check
# compares values and gradients with lablib's `quantize.fake_quantize(w, bits, per_channel=True)`
# on random 2-D and 4-D weights. Once it is correct, the next cell rounds the trained CNN with
# yours; to fine-tune with it too, pass `fake=my_fake_quant_per_channel` in section 8's QAT cell.
#
# <details><summary>Hint</summary>
#
# `w.detach().abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)` gives one maximum per output channel, shaped
# to broadcast against `w`; `torch.flatten(w, 1)` makes "every dim but the first" easy. Then reuse
# `quant` and `dequant`, and the same straight-through trick as `fake_quant`.
# </details>

# %%
@checks.exercise
def my_fake_quant_per_channel(w, bits=8):
    # YOUR CODE HERE: one scale per w[c], then round to the grid and back with a straight-through gradient
    raise NotImplementedError


def random_weight(g):
    shape = [(16, 8), (8, 4, 3, 3), (10, 32)][int(torch.randint(3, (1,), generator=g))]
    w = torch.randn(shape, generator=g) * (0.1 + torch.rand(shape[0], *([1] * (len(shape) - 1)), generator=g))
    return w.requires_grad_()


per_channel = checks.check_function(
    my_fake_quant_per_channel,
    reference=lambda w, bits: quantize.fake_quantize(w, bits, per_channel=True),
    make_inputs=lambda g: (random_weight(g), random_bits(g)),
    hint="one scale per output channel: w.abs() reduced over every dim but dim 0, divided by 2**(bits-1) - 1.",
)
# checks.show_solution("my_fake_quant_per_channel")

# %%
if per_channel:
    per_channel_acc = train.evaluate(quantize.freeze(quantize.qat(copy.deepcopy(cnn), bits, fake=my_fake_quant_per_channel)),
                                     test_loader)["acc"]
    table({"per tensor (fake_quant)": {f"{bits}-bit rounded, test acc": ptq_acc},
           "per channel (yours)": {f"{bits}-bit rounded, test acc": per_channel_acc}})
else:
    print("solve exercise 1 to round the trained CNN with one scale per channel")

# %% [markdown]
# **Exercise 2: a range for the activations.** A weight is symmetric around 0; a ReLU output is
# not: it is ≥ 0, so a symmetric grid wastes every negative level. Static quantization calibrates
# an *asymmetric* range instead. Write `my_affine_params(x, bits)` returning `(scale, zero_point)`:
# take the range `[min(x.min(), 0), max(x.max(), 0)]` (0 must stay exactly representable), let
# `scale` spread it over all `2**bits - 1` steps of the grid [qmin, qmax] (at least 1e-12), and
# choose the integer `zero_point = round(qmin - low / scale)` so that `low` maps to `qmin`. The
# check compares with `quantize.affine_params`. Once it is correct, the next cell quantizes a real
# ReLU activation both ways with `quant`/`dequant`.
#
# <details><summary>Hint</summary>
#
# `qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1`; `scale = (high - low) / (qmax - qmin)`.
# </details>

# %%
@checks.exercise
def my_affine_params(x, bits=8):
    # YOUR CODE HERE: return scale, zero_point
    raise NotImplementedError


affine = checks.check_function(
    my_affine_params,
    reference=quantize.affine_params,
    make_inputs=lambda g: (random_tensor(g) + float(4 * torch.rand(1, generator=g) - 1), random_bits(g)),
    grads=False,
    hint="low = min(x.min(), 0), high = max(x.max(), 0); scale = (high - low) / (2**bits - 1); zero_point = round(qmin - low / scale).",
)
# checks.show_solution("my_affine_params")

# %%
if affine:
    with torch.no_grad():
        activation = cnn.features[1](cnn.features[0](calibration))  # the first ReLU's output, on calibration images
    sym_scale = activation.abs().max().item() / 127
    a_scale, a_zero = my_affine_params(activation, 8)
    errors = {"symmetric (zero point 0)": (dequant(quant(activation, sym_scale), sym_scale) - activation).abs().mean().item(),
              "asymmetric (yours)": (dequant(quant(activation, a_scale, a_zero), a_scale, a_zero) - activation).abs().mean().item()}
    table({k: {"mean |error|": v} for k, v in errors.items()})
    print(f"the asymmetric grid's error is {errors['symmetric (zero point 0)'] / errors['asymmetric (yours)']:.1f}x smaller")
else:
    print("solve exercise 2 to compare the two grids on a real ReLU activation")

# %% [markdown]
# **Exercise 3 (open).** (a) `quantize.static` takes `per_channel=True`: quantize the CNN that
# way. What happens to the file size and the accuracy? (b) Calibrate with only 8 images
# (`calibration[:8]`) and with images of one digit only (`splits.train.x[splits.train.y == 0]`):
# which activations get the wrong range, and what does it cost? (c) Set `qat_bits` to 3 and 4 in
# the profile: from how many bits on does rounding after training stop costing this CNN accuracy?
# (d) Why is dynamic quantization ORT's recommended recipe for transformers, and did it lose on
# this CNN in your run?
#
# ## Record the result
#
# The claims stated above are saved with the figures below and your exercise verdicts; at `cpu`
# and `gpu` scale an asserted claim that does not hold (size, accuracy, QAT) fails the run here.
# Latency is reported, not asserted: it depends on the CPU's int8 instructions and on the
# neighbours.

# %%
metrics = {"CNN width": cfg.width, "fp32 test acc": fp32_acc}
for name in paths:
    metrics |= {f"CNN {name} size (kB)": size_kb[name], f"CNN {name} test acc": acc[name]}
metrics["width-16 CNN static QDQ smaller (x)"] = narrow_ratio
for kind, timed, names in (("CNN", cnn_t, sessions), ("MLP", mlp_t, mlp_sessions)):
    for name in names:
        for b in feeds:
            metrics[f"{kind} {name} batch {b} (ms)"] = timed[name, b].median_ms
            if name != "fp32":
                metrics[f"{kind} {name} speed-up batch {b} (x)"] = timed["fp32", b].median_ms / timed[name, b].median_ms
metrics |= {f"MLP {n} test acc": a for n, a in mlp_acc.items()}
metrics |= {f"PyTorch int8 {k}": v for k, v in torch_q.items()}
metrics |= {f"{bits}-bit PTQ test acc": ptq_acc, f"{bits}-bit QAT test acc": qat_acc, "QAT QDQ file test acc": qat_onnx_acc}
results.record(metrics)

# %% [markdown]
# ## Going further
#
# * **A transformer.** Build a small encoder from a config, offline and randomly initialised
#   (`transformers.BertConfig(hidden_size=256, num_hidden_layers=4, ...)` and
#   `BertModel(config)`), export it, and run section 6's comparison: the MatMuls dominate, and
#   `quantize.dynamic` is ORT's recommended recipe for transformers.
# * **Your CPU.** Run this lab on a machine with `avx512_vnni` or `amx_int8` in its flags and
#   compare section 6; ONNX Runtime's `reduce_range=True` exists for older CPUs without VNNI, where
#   full 8-bit products can saturate.
# * **GPU.** On NVIDIA GPUs the QDQ file is what TensorRT reads for INT8 (`providers=["tensorrt",
#   "cuda", "cpu"]` with `trt_int8_enable`); the CUDA execution provider itself runs few int8 ops.
#   On a GPU the usual low-precision step is fp16/bf16 first (lab 04).
# * **PyTorch.** `pip install torchao` and rerun section 7: `quantize_` with int8 or int4 weight
#   configs, and torchao's QAT (`torchao.quantization.qat`), which fake-quantizes activations too.
# * **Large language models.** 4-bit weight-only formats (GPTQ, AWQ, bitsandbytes' NF4) are where
#   section 8's question becomes the main one.
# * **Reading.** ONNX Runtime's quantization guide (onnxruntime.ai, "Quantize ONNX models") covers
#   the formats, `quant_pre_process`, calibration methods (MinMax, Entropy, Percentile) and the
#   int8/uint8 choice per CPU.
