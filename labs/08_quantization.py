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
# **The claim** (the source article): store and run the model in 8-bit integers instead of 32-bit
# floats and it becomes **4× smaller and 3× faster**, with little or no loss of accuracy; where
# post-training quantization costs accuracy, **quantization-aware training** (QAT) wins it back.
#
# **What you will measure**, on the digits CNN of lab 07 and on a Linear-heavy model:
#
# 1. the arithmetic: a float tensor as int8 plus a scale, and the rounding error that costs;
# 2. ONNX Runtime's two recipes: **dynamic** quantization (weights int8, activations quantized on
#    the fly) and **static** quantization (activation ranges calibrated on real digits), the latter
#    in both of its file formats, **QDQ** and **QOperator**;
# 3. file size and test accuracy of each, against the "4× smaller";
# 4. latency at batch 1 and 64, against the "3× faster": first the small CNN, then a wide MLP,
#    where INT8 does pay, and why the two differ;
# 5. PyTorch's own quantization path, where this installation still has one;
# 6. quantization-aware training with a hand-written fake-quantizer, exported to a QDQ file.

# %%
import copy

import onnx
import onnxruntime as ort
import torch

from lablib import show
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
# weights are about 60 kB and the fixed part is a large share of the file, so no recipe can reach
# 4×; section 4 measures exactly that. Training runs on the best device here; everything after it
# runs on the CPU.

# %%
splits = datasets.digits()
train_loader = datasets.loader(splits.train, batch_size=64, shuffle=True)
val_loader = datasets.loader(splits.val, batch_size=256)
test_loader = datasets.loader(splits.test, batch_size=256)

cnn = models.SmallCNN(width=cfg.width)
train.fit(cnn, train_loader, val_loader, epochs=cfg.epochs, lr=3e-3, schedule="cosine", device=device, desc="SmallCNN")
cnn = cnn.cpu().eval()
fp32_acc = train.evaluate(cnn, test_loader)["acc"]

paths = {"fp32": folder / "cnn_fp32.onnx"}
with onnx_export.quiet():
    onnx_export.onnx_export(cnn, splits.test.x[:1], paths["fp32"])
print(f"{models.count_params(cnn):,} parameters; eager test accuracy {fp32_acc:.3f}; "
      f"fp32 ONNX file {quantize.file_size(paths['fp32']) / 1024:.0f} kB")

# %% [markdown]
# ## 2. The arithmetic
#
# INT8 quantization stores a float tensor `x` as integers `q` in [-128, 127] plus one float
# **scale** (and an integer **zero point**, 0 for a symmetric range):
#
# `q = clamp(round(x / scale) + zero_point)`, and back: `x ≈ (q - zero_point) · scale`.
#
# These are exactly what ONNX's `QuantizeLinear` and `DequantizeLinear` ops compute:

# %%
show(quantize.quantize_tensor)
show(quantize.dequantize)

# %% [markdown]
# For a weight tensor the usual choice is *symmetric*: the scale maps the largest |weight| to 127.
# Every weight then moves by at most half a step, scale / 2. On the first convolution's weights:

# %%
w = cnn.features[0].weight.detach()
scale = w.abs().max().item() / 127
q = quantize.quantize_tensor(w, scale)
err = (quantize.dequantize(q, scale) - w).abs()
print(f"weights in [{w.min():.3f}, {w.max():.3f}]; scale {scale:.5f}; {len(torch.unique(q))} distinct int8 values used")
print(f"largest rounding error {err.max():.5f} (<= scale/2 = {scale / 2:.5f}); mean {err.mean():.5f}")

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
# deliberately here.) The **dynamic** file swapped each `Conv` for `ConvInteger` plus a
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

print(f"{'':<18}{'size (kB)':>10}{'smaller':>9}{'test acc':>10}{'change':>9}")
for name in paths:
    print(f"{name:<18}{size_kb[name]:>10.1f}{size_kb['fp32'] / size_kb[name]:>8.2f}x{acc[name]:>10.4f}"
          f"{100 * (acc[name] - acc['fp32']):>+8.2f}pt")
print(f"width-16 CNN: fp32 {narrow_kb['fp32']:.1f} kB, static QDQ {narrow_kb['static QDQ']:.1f} kB: "
      f"{narrow_kb['fp32'] / narrow_kb['static QDQ']:.2f}x smaller")
print("for comparison, measured when this lab was designed (a 2-core CPU, a small CNN): 3.7x smaller, no accuracy lost")

# %%
viz.bars({f"{k}\nwidth {cfg.width}": v for k, v in size_kb.items()}
         | {"fp32\nwidth 16": narrow_kb["fp32"], "static QDQ\nwidth 16": narrow_kb["static QDQ"]},
         ylabel="file size (kB)", title="ONNX file size: fp32 vs INT8")

# %% [markdown]
# INT8 weights are a quarter of fp32 weights, so a file that is nearly all weights shrinks nearly
# 4×: the article's first number holds when the model is big enough. The width-16 ratio shows what
# the fixed part of the file does to it. Biases stay 32-bit (int32 in the static files, float32 in
# the dynamic one) and every quantized tensor carries its scale and zero point, which is why even a
# large model lands a little below 4×.
# Accuracy barely moves: 256 levels per tensor are plenty for a network whose weights and
# activations fill their range reasonably evenly.
#
# ## 5. Latency of the small CNN
#
# Every file at batch 1 and 64, interleaved rounds, best round kept (as in lab 07):

# %%
def measure(fns):
    return bench.compare(fns, rounds=cfg.rounds, warmup=5, repeats=cfg.repeats)


def time_sessions(sessions, x, batches=(1, 64)):
    """name -> batch -> median ms, for every session at every batch size."""
    feeds = {b: {"input": x[:b].contiguous().numpy()} for b in batches}
    timed = measure({f"{n}|{b}": (lambda s=s, f=f: s.run(None, f)) for n, s in sessions.items() for b, f in feeds.items()})
    return {n: {b: timed[f"{n}|{b}"].median_ms for b in batches} for n in sessions}


def latency_table(ms):
    print(f"{'':<18}{'batch 1 (ms)':>14}{'batch 64 (ms)':>15}{'vs fp32 @1':>12}{'vs fp32 @64':>13}")
    for name, t in ms.items():
        print(f"{name:<18}{t[1]:>14.3f}{t[64]:>15.3f}{ms['fp32'][1] / t[1]:>11.2f}x{ms['fp32'][64] / t[64]:>12.2f}x")


cnn_ms = time_sessions(sessions, splits.test.x)
latency_table(cnn_ms)
print("for comparison, measured when this lab was written (2-core CPU, width-16 CNN), batch 64: "
      "fp32 0.7 ms, dynamic INT8 6.7 ms; static INT8 faster only at batch 1")

# %%
viz.grouped_bars({f"batch {b}": {n: t[b] for n, t in cnn_ms.items()} for b in (1, 64)},
                 ylabel="median latency per call (ms, log scale)", log=True,
                 title=f"SmallCNN (width {cfg.width}), ONNX Runtime on the CPU")

# %% [markdown]
# Read your table before the explanation. For comparison, on a narrower CNN (lab 07's width 16)
# dynamic INT8 was measured about ten times *slower* than fp32 at batch 64 when this lab was
# designed, and static INT8 faster only at batch 1: a different model, so expect different
# numbers, but the same forces at work. What decides the outcome:
#
# * **dynamic** quantization quantizes activations at run time: for each layer a pass to find the
#   min/max, a pass to quantize, the integer convolution, a pass to rescale. With three small
#   convolutions on 8×8 images those extra passes cost more than the arithmetic they save. And
#   `ConvInteger` is a generic kernel: ORT's fp32 convolutions (NCHWc layout, fused ReLU, lab 07)
#   are among its most tuned code.
# * **static** QDQ has no run-time range finding, and ORT fuses `DQ → Conv → Q` into its integer
#   `QLinearConv`; still, the input and output must be quantized and dequantized, and the pooling
#   in between runs on int8 or goes back to float. That fixed cost per layer and per call is
#   large against a tiny convolution and shrinks as the layers widen, so whether static INT8
#   beats fp32, and at which batch size, depends on the width: compare your width-48 row with the
#   width-16 reference (set `width=16` in the profile to measure it yourself).
# * none of this is the article's 3×: the int8 kernels need the CPU's help to get there, and
#   models whose time is in matrix multiplications. See the next section.
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
for n in mlp_paths:
    print(f"{n:<18}{mlp_kb[n]:>9.0f} kB ({mlp_kb['fp32'] / mlp_kb[n]:.2f}x smaller), test acc {mlp_acc[n]:.4f}")
print(f"(this MLP trains only {cfg.mlp_epochs} epochs: it is here for timing. If an INT8 file scores a few test images "
      f"better than fp32, that is noise on {len(splits.test)} images, not quantization helping.)")

# %%
mlp_ms = time_sessions(mlp_sessions, splits.test.x)
latency_table(mlp_ms)
print(f"CPU features: {env.cpu_flags() or 'none reported'} "
      "(avx512_vnni / amx_int8 = hardware int8 dot products; without them int8 runs on avx2)")

# %%
viz.grouped_bars({f"batch {b}": {n: t[b] for n, t in mlp_ms.items()} for b in (1, 64)},
                 ylabel="median latency per call (ms, log scale)", log=True,
                 title="Wide MLP, ONNX Runtime on the CPU")

# %% [markdown]
# Here the picture turns: the INT8 files usually beat fp32 at both batch sizes, because almost all
# of the time is in the matrix multiplications, and INT8 moves a quarter of the bytes (a 1024×1024
# layer is 4 MB in fp32, 1 MB in int8). How much depends on the CPU and the batch size; your table
# above is the answer for this machine:
#
# * with **AVX-512 VNNI** (Intel Cascade Lake and later, AMD Zen 4) or **AMX-INT8** (Sapphire
#   Rapids), one instruction does many int8 multiply-adds into int32, which makes int8 matmuls
#   faster still;
# * with only **AVX2** (the flags printed above tell you which), int8 products go through 16-bit
#   intermediate steps; the gain then comes largely from moving fewer bytes, and is largest at
#   batch 1, where reading the weights dominates the time;
# * the per-op cost of `QuantizeLinear`/`DequantizeLinear` (or the dynamic range finding) is paid
#   per layer and per call: negligible against a 1024×1024 matmul, dominant against the CNN's
#   small convolutions;
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
# `lablib.quantize.int8_dynamic` uses torchao when it is installed and otherwise, while it still
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
        t = measure({"eager fp32": lambda: mlp(x64), "eager int8": lambda: tq_model(x64)})
    torch_q["fp32 ms"], torch_q["int8 ms"] = t["eager fp32"].median_ms, t["eager int8"].median_ms
    print(f"{torch_q['path']}: test acc {torch_q['acc']:.4f}; batch 64: eager fp32 {torch_q['fp32 ms']:.3f} ms, "
          f"int8 {torch_q['int8 ms']:.3f} ms")

# %% [markdown]
# Eager PyTorch's dynamic int8 `Linear` does the same thing as ORT's dynamic recipe, with the same
# trade-off. For deployment, the ONNX route of sections 3–6 is independent of that API churn.
#
# ## 8. Quantization-aware training
#
# At 8 bits this model lost nothing, so there is nothing for QAT to win back. It matters when
# the rounding is coarse: fewer bits (4-bit weights are common for large models), or models whose
# weights have outliers. (How coarse must it be before this CNN notices? Exercise 3 asks.) To see
# the effect clearly, go all the way down to **2 bits**: three levels
# per tensor, −s, 0 and +s ("ternary" weights):
#
# * **post-training** (PTQ): round the trained weights, no more training;
# * **QAT**: fine-tune a few epochs with the rounding *in the forward pass*, so the weights learn
#   to sit where rounding does not hurt.
#
# Rounding has zero gradient almost everywhere, so QAT uses the **straight-through estimator**:
# the forward pass uses the rounded weight, the backward pass pretends rounding was the identity.
# `quantize.qat` puts a fake-quantizer on every weight with `torch.nn.utils.parametrize`;
# `quantize.freeze` bakes the rounded weights in (writing the fake-quantizer yourself is exercise 2).

# %%
show(quantize.FakeQuant)
show(quantize.qat)
show(quantize.freeze)

# %%
bits = cfg.qat_bits
ptq = quantize.freeze(quantize.qat(copy.deepcopy(cnn), bits))  # round the trained weights once
ptq_acc = train.evaluate(ptq, test_loader)["acc"]

qat_model = quantize.qat(copy.deepcopy(cnn), bits)
train.fit(qat_model, train_loader, val_loader, epochs=cfg.qat_epochs, lr=1e-3, schedule="cosine", device=device, desc="QAT")
qat_model = quantize.freeze(qat_model.cpu()).eval()
qat_acc = train.evaluate(qat_model, test_loader)["acc"]
levels = len(torch.unique(qat_model.features[2].weight.detach()))
print(f"{bits}-bit weights: fp32 {fp32_acc:.4f}, post-training rounding {ptq_acc:.4f}, QAT {qat_acc:.4f} "
      f"({levels} distinct values in a QAT conv weight)")

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
print(f"QAT model as a QDQ file: {quantize.file_size(qat_paths['static QDQ']) / 1024:.0f} kB, test acc {qat_onnx_acc:.4f}")

# %% [markdown]
# What to take from it, honestly: on digits, with a small CNN, 8-bit post-training static
# quantization is already lossless, so QAT is not needed for INT8 here. With coarse rounding,
# plain rounding after training breaks the model and a few epochs of QAT win most of it back
# (compare the three accuracies above). The ternary weights land exactly on the int8 grid
# (±127 and 0), so the QDQ file changes them not at all; any accuracy it loses against the QAT
# model most likely comes from quantizing the *activations* (and re-quantizing the biases), which
# this QAT did not simulate. And it stores
# them in 8 bits: packing 2-bit weights needs kernels ORT's CPU path does not have. This is
# weight-only fake quantization, per tensor: a
# full QAT recipe also fake-quantizes the activations with learned or tracked ranges
# (torchao's QAT, or `torch.ao.quantization`'s `prepare_qat` while it lasts).
#
# ## 9. Record the result

# %%
static_ratio = size_kb["fp32"] / size_kb["static QDQ"]
metrics = {"CNN width": cfg.width, "fp32 test acc": fp32_acc}
for name in paths:
    metrics[f"CNN {name} size (kB)"] = size_kb[name]
    metrics[f"CNN {name} test acc"] = acc[name]
metrics["CNN static QDQ smaller (x)"] = static_ratio
metrics["width-16 CNN static QDQ smaller (x)"] = narrow_kb["fp32"] / narrow_kb["static QDQ"]
for kind, table in (("CNN", cnn_ms), ("MLP", mlp_ms)):
    for name, t in table.items():
        for b in (1, 64):
            metrics[f"{kind} {name} batch {b} (ms)"] = t[b]
    for name in ("dynamic", "static QDQ"):
        for b in (1, 64):
            metrics[f"{kind} {name} speed-up batch {b} (x)"] = table["fp32"][b] / table[name][b]
metrics["MLP static QDQ smaller (x)"] = mlp_kb["fp32"] / mlp_kb["static QDQ"]
metrics |= {f"MLP {n} test acc": a for n, a in mlp_acc.items()}
metrics |= {f"PyTorch int8 {k}": v for k, v in torch_q.items()}
metrics |= {f"{bits}-bit PTQ test acc": ptq_acc, f"{bits}-bit QAT test acc": qat_acc, "QAT QDQ file test acc": qat_onnx_acc}
claims = {
    "CNN static QDQ smaller (x)": "4x smaller (article)",
    "MLP static QDQ smaller (x)": "4x smaller (article)",
    "CNN static QDQ speed-up batch 64 (x)": "3x faster (article)",
    "MLP static QDQ speed-up batch 1 (x)": "3x faster (article)",
    "MLP static QDQ speed-up batch 64 (x)": "3x faster (article)",
    "MLP dynamic speed-up batch 64 (x)": "3x faster (article)",
    f"{bits}-bit QAT test acc": "QAT recovers what post-training quantization loses (article)",
}
results.record("08_quantization", metrics, claims=claims)

# %% [markdown]
# At `cpu` and `gpu` scale the lab asserts what INT8 must deliver on a model big enough for it:
# the static QDQ file at least 3.5× smaller than fp32, with at most one point of test accuracy
# lost, and that QAT beats plain rounding at the coarse bit width of section 8. Latency is
# reported, not asserted: it depends on the CPU's int8 instructions and on the
# neighbours.

# %%
if cfg.scale != "smoke":
    assert fp32_acc >= 0.90, f"the fp32 CNN reached only {fp32_acc:.3f}: train it longer"
    assert static_ratio >= 3.5, f"static QDQ file only {static_ratio:.2f}x smaller than fp32"
    assert acc["static QDQ"] >= acc["fp32"] - 0.01, f"static INT8 lost {100 * (acc['fp32'] - acc['static QDQ']):.2f} points"
    assert mlp_kb["fp32"] / mlp_kb["static QDQ"] >= 3.5, "the MLP file should be nearly all weights"
    assert qat_acc > ptq_acc, f"{bits}-bit QAT ({qat_acc:.3f}) should beat plain rounding ({ptq_acc:.3f})"
    print(f"INT8 verified: static QDQ {static_ratio:.2f}x smaller, accuracy {acc['fp32']:.4f} -> {acc['static QDQ']:.4f}")

# %% [markdown]
# ## Exercises
#
# **Exercise 1: the scale.** Section 2 computed a symmetric scale for 8 bits inline. Write
# `my_symmetric_scale(x, bits)`: the scale that maps the largest |x| to the largest positive
# integer of a signed `bits`-bit type (127 for 8 bits, 7 for 4), returned as a 0-dim tensor, with
# a tiny floor (1e-12) so that an all-zero tensor does not give a zero scale.

# %%
def my_symmetric_scale(x, bits):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_function(
    my_symmetric_scale,
    reference=quantize.symmetric_scale,
    make_inputs=lambda g: (torch.randn(int(torch.randint(1, 50, (1,), generator=g)), generator=g)
                           * float(torch.rand(1, generator=g) * 5), int(torch.randint(2, 9, (1,), generator=g))),
    grads=False,
    hint="max |x| over the whole tensor, divided by 2**(bits-1) - 1; clamp_min(1e-12) keeps it positive.",
)

# %% [markdown]
# **Exercise 2: the straight-through estimator.** Write `my_fake_quantize(x, bits)`: round `x` to
# the symmetric `bits`-bit grid and back (use `quantize.symmetric_scale`, `quantize.quantize_tensor`,
# `quantize.dequantize`), so the *value* is the rounded one, while the *gradient* with respect to
# `x` is that of the identity. The check compares values and gradients.

# %%
def my_fake_quantize(x, bits):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_function(
    my_fake_quantize,
    reference=quantize.fake_quantize,
    make_inputs=lambda g: (torch.randn(20, generator=g).requires_grad_(), int(torch.randint(2, 9, (1,), generator=g))),
    hint="compute the rounded tensor r without caring about its gradient, then return x + (r - x).detach().",
)

# %% [markdown]
# Stuck? The reference answers are the tested code in lablib: uncomment to see them.

# %%
# show(quantize.symmetric_scale); show(quantize.fake_quantize)

# %% [markdown]
# **Exercise 3 (open).** `quantize.static` takes `per_channel=True`: one scale per output channel
# of each weight instead of one per tensor. Quantize the CNN that way: what happens to the file
# size and the accuracy? Then calibrate with only 8 images instead of the default set (`calibration[:8]`)
# and with images of one digit only (`splits.train.x[splits.train.y == 0]`): which activations get
# the wrong range, and what does it cost? Finally, set `qat_bits` to 3 and 4: from how many bits on
# does plain rounding after training stop costing accuracy?
#
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
