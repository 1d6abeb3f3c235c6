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
# # Lab 17 — A custom operator in C++ (and CUDA), registered with torch.library
#
# **Source:** 《突破AI技术壁垒:从算法创新到生态重构的路径探索》 ("Breaking through AI's technical barriers:
# from algorithmic innovation to rebuilding the ecosystem"), section 五 "生态协同:开源社区与标准建设"
# (ecosystem collaboration), part 1 "开源框架贡献" (contributing to open-source frameworks):
#
# > 参与PyTorch、TensorFlow等社区开发,如提交自定义算子或优化内核。以PyTorch扩展为例:
# > ```
# > // 自定义CUDA算子示例
# > __global__ void custom_kernel(float* input, float* output, int n) {
# > int idx = blockIdx.x * blockDim.x + threadIdx.x;
# > if (idx < n) output[idx] = sin(input[idx]);
# > }
# > void launch_kernel(torch::Tensor input, torch::Tensor output) {
# > const int threads = 256;
# > const int blocks = (input.size(0) + threads - 1) / threads;
# > custom_kernel<<<blocks, threads>>>(input.data_ptr<float>(), output.data_ptr<float>(), input.size(0));
# > }
# > ```
#
# > "Take part in the development of communities such as PyTorch and TensorFlow, for example by
# > contributing **custom operators** or optimised kernels. Taking a PyTorch extension as the example:"
# > (a CUDA kernel computing `sin`, and the C++ function that launches it).
#
# The article gives no figure, and its code cannot be called from Python as written. This lab turns
# it into a real operator, proves the operator correct the way PyTorch's own tests do, and measures
# when writing one is worth it.
#
# **What you will measure**
#
# 1. what the article's kernel does with a 2-D tensor and with more than 2³¹ elements;
# 2. the build: its time cold and cached, and where it goes;
# 3. `torch.library.opcheck`, `torch.autograd.gradcheck` and `torch.compile(fullgraph=True)` on
#    the operator, and its forward and backward against eager PyTorch;
# 4. the article's `sin`, ported as a plain C++ loop, against PyTorch's own `sin`, from 10³ to
#    10⁷ elements;
# 5. a fused operator `sin(x) * y + z` against the three eager operations it replaces, and against
#    `torch.compile`'s own fusion of them.
#
# **Objectives.** After this lab you can
#
# * say what turns a C++ function into a PyTorch operator: a schema (`TORCH_LIBRARY`), kernels per
#   device (`TORCH_LIBRARY_IMPL`), a fake kernel, an autograd formula;
# * build an extension just in time into a cache of your choosing, and know what a rebuild costs;
# * test an operator with `opcheck` and `gradcheck` and use it under `torch.compile` without a graph break;
# * write the backward formula of an operator and register it;
# * tell when a custom operator pays (fusing memory-bound steps, an operation PyTorch lacks) and when
#   it does not (re-writing an operation PyTorch already vectorises).
#
# **Prerequisites.** Lab 04 (timing with warm-up and medians); reading a little C++; what a
# gradient is. No CUDA knowledge is needed: the CUDA part runs only on a GPU machine.
#
# **Time.** `smoke`: under 20 s with the build cached (the first build of the C++ takes 10–60 s
# depending on the machine, once); `cpu` (2 cores): under a minute, plus the first build; `gpu`:
# about 2 min, plus a first build with nvcc of a few minutes. Reading and the exercises: 45–60 min.
#
# Answers to the open questions and exercises: `docs/answers/17_custom_operator.md`.

# %%
import re

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from lablib import table
from lablib.core import bench, checks, config, env, results
from lablib.core.show import show
from lablib.methods import custom_op

cfg = config.profile(
    smoke=dict(sizes=(1_000, 100_000), rounds=1, repeats=5, gpu_sizes=()),
    cpu=dict(sizes=(1_000, 10_000, 100_000, 1_000_000, 10_000_000), rounds=2, repeats=10, gpu_sizes=()),
    gpu=dict(sizes=(1_000, 10_000, 100_000, 1_000_000, 10_000_000), rounds=2, repeats=10,
             gpu_sizes=(100_000, 10_000_000, 100_000_000)),
)
# One thread: the timings compare code, not how two cores are shared with the rest of the
# machine (a busy core stalls every parallel region of a 2-thread pool). "Going further" lifts it.
torch.set_num_threads(1)
config.seed_everything(0)
device = config.device()
# the C++ and CUDA sources live in csrc/, beside this notebook
lab_dir = config.project_root() / "labs" / config.lab_name()
print(env.line())
cfg

# %% [markdown]
# ## 1. The article's kernel, and why Python cannot call it
#
# Here is the article's code, exactly:

# %%
ARTICLE = """\
__global__ void custom_kernel(float* input, float* output, int n) {
int idx = blockIdx.x * blockDim.x + threadIdx.x;
if (idx < n) output[idx] = sin(input[idx]);
}
void launch_kernel(torch::Tensor input, torch::Tensor output) {
const int threads = 256;
const int blocks = (input.size(0) + threads - 1) / threads;
custom_kernel<<<blocks, threads>>>(input.data_ptr<float>(), output.data_ptr<float>(), input.size(0));
}"""
found = re.findall(r"TORCH_LIBRARY\w*|PYBIND11_MODULE|m\.def|register_\w+", ARTICLE)
print("what would make it visible to Python (a binding or an operator registration):", found or "none")

# %% [markdown]
# Compiled as it is, `launch_kernel` is a C++ symbol in a shared library, and nothing tells Python
# it exists: no `PYBIND11_MODULE` binding (a Python module) and no `TORCH_LIBRARY` registration (a
# PyTorch operator). There are more problems, which need no GPU to see. Below, the same indexing runs
# on the CPU: every (block, thread) pair of the grid computes its `idx` and, if `idx < n`, writes one
# element, through `data_ptr`, i.e. walking memory.

# %%
def launch_kernel_as_written(input, output, n=None):
    """The article's launch_kernel on the CPU: the whole grid at once, each idx = one thread."""
    threads = 256
    n = input.size(0) if n is None else n       # the article passes input.size(0): the FIRST dimension
    n = int(np.array(n, dtype=np.int64).astype(np.int32))  # ...into an `int n`: 32 bits, wraps past 2^31 - 1
    blocks = (n + threads - 1) // threads
    if blocks <= 0:
        raise RuntimeError(f"a launch with {blocks} blocks is invalid: CUDA would refuse it")
    idx = torch.arange(blocks * threads)         # blockIdx.x * blockDim.x + threadIdx.x
    idx = idx[idx < n]
    src, dst = input.view(-1), output.view(-1)   # data_ptr<float>(): the memory, element by element
    dst[idx] = torch.sin(src[idx])


x = torch.randn(4, 1000)
out = torch.zeros_like(x)
launch_kernel_as_written(x, out)
written = (out != 0).sum().item()
print(f"a (4, 1000) tensor: {written} of {x.numel()} elements computed ({written / x.numel():.1%}): n = size(0) = 4")

billions = 3_000_000_000  # 12 GB of float32: a large but real tensor on a big GPU
print(f"n = {billions:,} elements becomes int n = {int(np.array(billions).astype(np.int32)):,}")
try:
    launch_kernel_as_written(torch.zeros(1), torch.zeros(1), n=billions)
except RuntimeError as exc:
    print("and then:", exc)

# %% [markdown]
# The rest needs a GPU to show but is as real:
#
# * `data_ptr<float>()` on a float64 tensor stops with a dtype error (good), but on a transposed or
#   sliced tensor it walks the *memory*, not the view: a non-contiguous input gives wrong answers
#   silently;
# * nothing checks that `input` and `output` are on the GPU, or that they have the same size;
# * the launch goes on the default stream, not PyTorch's current one, so it may run out of order
#   with the work around it, and no error check follows it: a failed launch surfaces later,
#   elsewhere;
# * no fake kernel and no autograd formula: `torch.compile` cannot trace through it and training
#   cannot differentiate it.
#
# ## 2. The operator, written in C++
#
# The fixed version is two files beside this notebook: `csrc/sin_op.cpp` (the operators, their CPU
# kernels) and `csrc/sin_op_cuda.cu` (their CUDA kernels, built only where CUDA is). They are real
# files, not strings in a cell, so an editor highlights them and a `setup.py` could package them
# ("Going further"). Read the CPU one:

# %%
cpp_source = (lab_dir / "csrc" / "sin_op.cpp").read_text(encoding="utf-8")
cuda_source = (lab_dir / "csrc" / "sin_op_cuda.cu").read_text(encoding="utf-8")
print(cpp_source)

# %% [markdown]
# Four things make it an operator rather than a function:
#
# 1. **the schema**, in `TORCH_LIBRARY(labops, m)`: `sin(Tensor x) -> Tensor`. It names the
#    operator (`torch.ops.labops.sin`) and promises that it modifies no input and returns new memory;
# 2. **kernels per device**, in `TORCH_LIBRARY_IMPL(labops, CPU, m)` (and `CUDA` in the `.cu` file):
#    PyTorch's dispatcher picks one from where the tensors are;
# 3. **a fake kernel** (next section): what the output looks like (shape, dtype, device) without
#    computing it, which `torch.compile` needs to trace through the operator;
# 4. **an autograd formula** (next section), so that gradients flow through it.
#
# The kernel checks its dtype, makes its input contiguous, uses 64-bit indices and runs chunks on
# ATen's thread pool. It also handles float64, which `gradcheck` needs.
#
# ### Building it
#
# `custom_op.build` compiles the sources with torch's `cpp_extension.load` and ninja, into
# `data/cache/torch_extensions/labops-<key>/`, where the key hashes the sources, the flags and the
# torch version: a second run loads the cached library in a fraction of a second. It never builds
# into your home folder (torch's default) nor uses a precompiled header (which writes hundreds of MB
# into torch's own install). A library found damaged is rebuilt; the includes are the narrow
# `<ATen/ATen.h>` and `<torch/library.h>` rather than `<torch/extension.h>`, which also pulls in
# pybind11 and the whole C++ front-end: far more for the compiler to read on every build.
#
# The flags: `-O3` (torch adds no optimisation flag by itself); `-ffast-math` with `-fopenmp-simd`
# lets GCC vectorise the loop marked `#pragma omp simd` with glibc's vector `sin`; `-march=native`
# lets it use the widest vectors of *this* CPU, as PyTorch's own kernels do (they choose at run time
# among builds for several CPUs; a JIT build is made for the CPU it runs on, and the cache key
# includes the CPU, so a copy of `data/` on another machine rebuilds); and `-fno-tree-vectorize`
# keeps every *other* loop as written, so the article's port stays the plain one-`sin`-per-element
# loop it is.

# %%
FLAGS = ["-O3", "-ffast-math", "-fopenmp-simd", "-march=native", "-fno-tree-vectorize"]
cuda_problem = custom_op.toolchain_problem(cuda=True)
use_cuda = device.type == "cuda" and cuda_problem is None
built = custom_op.build("labops", [cpp_source], [cuda_source] if use_cuda else None, extra_cflags=FLAGS)
root = config.project_root()
where = built.library.relative_to(root) if built.library.is_relative_to(root) else built.library
print(f"{'loaded from the cache (nothing compiled)' if built.cached else 'compiled'} in {built.seconds:.2f} s: {where}")
print("CUDA kernels:", "built" if use_cuda else f"not built: {cuda_problem or 'no GPU on this machine'}")
print("operators:", [op for op in torch._C._dispatch_get_all_op_names() if op.startswith("labops::")])

# %% [markdown]
# Run that cell again: it returns at once, since a library is loaded once per process. Edit
# `csrc/sin_op.cpp`, run the cell that reads it and then this one, and it refuses: a namespace can
# be declared by one `TORCH_LIBRARY` per process, and loading a second one would not raise an error,
# it would kill the kernel. After an edit, restart the kernel; the new build goes to a new folder,
# and the old one stays cached.
#
# ## 3. The fake kernel and the backward, written in the lab
#
# The backward formula is the step this lab teaches: d sin(x)/dx = cos(x), so the gradient that
# flows back to x is the incoming gradient times cos(x).

# %%
def sin_backward(grad, x):
    return grad * torch.cos(x)


def grad_and_x(g):
    shape = tuple(torch.randint(1, 6, (2,), generator=g).tolist())
    return (torch.randn(shape, generator=g, dtype=torch.float64),
            (torch.randn(shape, generator=g, dtype=torch.float64) * 3).requires_grad_())


checks.agrees(sin_backward, reference=custom_op.sin_backward, make_inputs=grad_and_x, trials=10)

# %% [markdown]
# Around it, the three functions `torch.library` asks for:
#
# * the **fake kernel** takes tensors that carry no data (shape, dtype, device only) and returns one
#   like the real output. The C++ returns a *fresh, contiguous* tensor of x's shape, whatever x's
#   layout, so the fake kernel must say exactly that: `torch.empty_like(x)` would copy the strides of a
#   transposed x, and be wrong (section 4 shows `opcheck` catching it);
# * **setup_context** runs in the forward pass and saves what the backward needs (here x);
# * the **backward** gets the saved tensors and the output's gradient, and returns one gradient per input.

# %%
def sin_fake(x):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def sin_setup_context(ctx, inputs, output):
    (x,) = inputs
    ctx.save_for_backward(x)


def sin_autograd(ctx, grad):
    (x,) = ctx.saved_tensors
    return sin_backward(grad, x)


custom_op.register("labops::sin", fake=sin_fake, backward=sin_autograd, setup_context=sin_setup_context)

# %% [markdown]
# `custom_op.register` calls `torch.library.register_fake` and `torch.library.register_autograd`
# once per process, with small forwarding functions that call whatever you passed last. That keeps
# this cell re-runnable: older torch refuses a second registration for one operator, and either way
# your edited formula is the one used.

# %%
show(custom_op.register)

# %% [markdown]
# ## 4. Is it a correct operator? `opcheck`, `gradcheck`, eager, `torch.compile`
#
# `torch.library.opcheck` is how PyTorch tests its own operators: it checks the schema's promises
# (no input modified, no aliasing), that autograd is registered the supported way, that the fake
# kernel agrees with the real one (shape, strides, dtype, device), and that the operator and its
# backward give the same results under AOT compilation with dynamic shapes. It runs on each input
# given: float32 and float64, a transposed (non-contiguous) one, an empty one, one that needs gradients.

# %%
def opcheck_inputs(n=5):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(3, n, generator=g), torch.randn(3, n, generator=g, dtype=torch.float64).requires_grad_(),
            torch.randn(n, 3, generator=g).t(), torch.randn(0, generator=g), torch.randn(2, 3, n, generator=g)]


opcheck_runs = {}
for i, x in enumerate(opcheck_inputs()):
    opcheck_runs[f"sin #{i}"] = torch.library.opcheck(torch.ops.labops.sin.default, (x,), raise_exception=False)
table([{"input": f"{tuple(x.shape)} {str(x.dtype)[6:]}{' transposed' if not x.is_contiguous() else ''}",
        **opcheck_runs[f"sin #{i}"]} for i, x in enumerate(opcheck_inputs())])

# %% [markdown]
# What a wrong fake kernel looks like: for a moment, register `torch.empty_like(x)` and check the
# transposed input again (the opcheck of the correct one above passed on it).

# %%
custom_op.register("labops::sin", fake=lambda x: torch.empty_like(x), backward=sin_autograd,
                   setup_context=sin_setup_context)
wrong = torch.library.opcheck(torch.ops.labops.sin.default, (opcheck_inputs()[2],), raise_exception=False)
custom_op.register("labops::sin", fake=sin_fake, backward=sin_autograd, setup_context=sin_setup_context)
print("with torch.empty_like as the fake kernel:", {k: v if v == "SUCCESS" else "FAILED" for k, v in wrong.items()})

# %% [markdown]
# `gradcheck` compares the registered backward with finite differences, in float64 (in float32 the
# finite differences themselves are too coarse), and then the operator against eager PyTorch in
# float32, values and gradients:

# %%
x64 = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
sin_gradcheck = torch.autograd.gradcheck(torch.ops.labops.sin, (x64,), raise_exception=False)  # False, not an error

x = torch.randn(64, 257, requires_grad=True)
grad_out = torch.randn(64, 257)
mine = torch.ops.labops.sin(x)
(g_mine,) = torch.autograd.grad(mine, x, grad_out)
ref = torch.sin(x)
(g_ref,) = torch.autograd.grad(ref, x, grad_out)
sin_forward_gap = (mine - ref).abs().max().item()
sin_backward_gap = (g_mine - g_ref).abs().max().item()
print(f"gradcheck (float64): {sin_gradcheck}; float32 against torch.sin: forward gap {sin_forward_gap:.2e}, "
      f"backward gap {sin_backward_gap:.2e}")

# %% [markdown]
# ### The fused operator
#
# The C++ file also holds `labops::sin_mul_add(x, y, z) = sin(x) * y + z`, in one pass. Its
# fake kernel is the same idea as `sin`'s; its backward you will write yourself in exercise 1. For
# now it uses lablib's:

# %%
def sin_mul_add_fake(x, y, z):
    torch._check(x.shape == y.shape and x.shape == z.shape, lambda: "x, y and z must have one shape")
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def sin_mul_add_setup_context(ctx, inputs, output):
    x, y, z = inputs
    ctx.save_for_backward(x, y)


def sin_mul_add_autograd_with(backward_formula):
    def autograd(ctx, grad):
        x, y = ctx.saved_tensors
        return backward_formula(grad, x, y)
    return autograd


custom_op.register("labops::sin_mul_add", fake=sin_mul_add_fake, setup_context=sin_mul_add_setup_context,
                   backward=sin_mul_add_autograd_with(custom_op.sin_mul_add_backward))


def fused_inputs(dtype=torch.float64, shape=(3, 5)):
    g = torch.Generator().manual_seed(2)
    return tuple(torch.randn(shape, generator=g, dtype=dtype).requires_grad_() for _ in range(3))


for i, args in enumerate([fused_inputs(), fused_inputs(torch.float32, (2, 4, 3)), fused_inputs(shape=(0,))]):
    opcheck_runs[f"sin_mul_add #{i}"] = torch.library.opcheck(torch.ops.labops.sin_mul_add.default, args,
                                                               raise_exception=False)
fused_gradcheck = torch.autograd.gradcheck(torch.ops.labops.sin_mul_add, fused_inputs(), raise_exception=False)
args = fused_inputs(torch.float32, (64, 257))
mine = torch.ops.labops.sin_mul_add(*args)
ref = custom_op.sin_mul_add_reference(*args)
fused_forward_gap = (mine - ref).abs().max().item()
g_mine = torch.autograd.grad(mine, args, grad_out)
g_ref = torch.autograd.grad(ref, args, grad_out)
fused_backward_gap = max((a - b).abs().max().item() for a, b in zip(g_mine, g_ref, strict=True))
print(f"sin_mul_add: gradcheck {fused_gradcheck}; forward gap {fused_forward_gap:.2e}, "
      f"backward gap {fused_backward_gap:.2e}")

failed = {name: test for name, run in opcheck_runs.items() for test, verdict in run.items() if verdict != "SUCCESS"}
results.claim("opcheck passes for both operators (schema, autograd, fake kernel, AOT dynamic)", len(failed),
              holds=not failed, condition="0 failed tests", source="the article's kernel: no registration at all")
results.claim("gradcheck (float64) passes for both operators", sin_gradcheck and fused_gradcheck,
              holds=sin_gradcheck and fused_gradcheck, condition="both pass")
gap = max(sin_forward_gap, sin_backward_gap, fused_forward_gap, fused_backward_gap)
results.claim("forward and backward match eager PyTorch (float32)", gap, holds=gap <= 1e-5,
              condition="max |difference| <= 1e-5")

# %% [markdown]
# ### Under `torch.compile`
#
# An operator without a fake kernel makes `torch.compile` stop tracing: a *graph break*, the
# function cut into pieces with Python in between (or an error with `fullgraph=True`). With one, the
# operator is a single node of the graph. `torch._dynamo.explain` counts the breaks; `fullgraph=True`
# would raise at the first one. The backend `aot_eager` traces forward and backward without generating
# code, so this check costs seconds, not a compile.

# %%
def layer(x, y, z):
    return torch.ops.labops.sin_mul_add(torch.ops.labops.sin(x), y, z).relu().sum()


args = fused_inputs(torch.float32, (16, 33))
explained = torch._dynamo.explain(layer)(*args)
compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
loss_compiled = compiled(*args)
grads_compiled = torch.autograd.grad(loss_compiled, args)
loss_eager = layer(*args)
grads_eager = torch.autograd.grad(loss_eager, args)
compile_gap = max((loss_compiled - loss_eager).abs().item(),
                  *((a - b).abs().max().item() for a, b in zip(grads_compiled, grads_eager, strict=True)))
print(f"graphs: {explained.graph_count}, graph breaks: {explained.graph_break_count}, "
      f"ops in the graph: {explained.op_count}; compiled vs eager, loss and gradients: {compile_gap:.2e}")
results.claim("torch.compile(fullgraph=True) traces both operators without a graph break",
              explained.graph_break_count, holds=explained.graph_break_count == 0 and compile_gap <= 1e-5,
              condition="0 graph breaks, same loss and gradients")

# %% [markdown]
# ## 5. When does it pay? Timing
#
# Two questions, from 10³ elements up, one thread each (see the setup cell):
#
# * **the article's `sin`** as a C++ loop, against `torch.sin`. PyTorch's CPU `sin` is already
#   vectorised (4 to 16 floats per instruction, chosen for your CPU at run time); a plain loop calls
#   the scalar `sin` of the C library once per element;
# * **the fused `sin(x) * y + z`** against eager PyTorch, which runs three operations and writes
#   two temporary tensors, and against `torch.compile` (inductor), which fuses the three into one
#   loop by itself, with no C++ from you.
#
# `bench.compare` times the contenders in interleaved rounds (warm-up first, median of the repeats),
# so that a burst of work elsewhere on the machine hits them all alike, and keeps each one's best round.

# %%
chain = lambda x, y, z: torch.sin(x) * y + z  # noqa: E731
chain_compiled = torch.compile(chain, dynamic=True)  # inductor: compiled once, for every size
timings = {}
for n in tqdm(cfg.sizes, desc="sizes"):
    x, y, z = (torch.randn(n) for _ in range(3))
    chain_compiled(x, y, z)  # compile (or fetch from the cache) outside the clock
    timings |= bench.compare({
        ("torch.sin", n): lambda x=x: torch.sin(x),
        ("labops.sin", n): lambda x=x: torch.ops.labops.sin(x),
        ("eager chain", n): lambda x=x, y=y, z=z: chain(x, y, z),
        ("labops.sin_mul_add", n): lambda x=x, y=y, z=z: torch.ops.labops.sin_mul_add(x, y, z),
        ("compiled chain", n): lambda x=x, y=y, z=z: chain_compiled(x, y, z),
    }, rounds=cfg.rounds, repeats=cfg.repeats, cuda=False)

ms = {key: t.median_ms for key, t in timings.items()}
rows = []
for n in cfg.sizes:
    rows.append({"n": n, "torch.sin ms": ms["torch.sin", n], "labops.sin ms": ms["labops.sin", n],
                 "sin: op/eager": ms["labops.sin", n] / ms["torch.sin", n],
                 "eager chain ms": ms["eager chain", n], "fused op ms": ms["labops.sin_mul_add", n],
                 "compiled chain ms": ms["compiled chain", n],
                 "chain: eager/fused": ms["eager chain", n] / ms["labops.sin_mul_add", n]})
table(rows, title="median ms per call, one thread (sin: op/eager > 1: the C++ loop is slower; "
                  "chain: eager/fused > 1: the fused op is faster)")

# %% figure="time-per-element-op-vs-eager"
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
# log axis, labelled at 1, 2 and 5 times a power of ten, as plain numbers
one_two_five = plt.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "125" else "")
for ax, names, title in ((ax1, ("torch.sin", "labops.sin"), "sin(x)"),
                         (ax2, ("eager chain", "labops.sin_mul_add", "compiled chain"), "sin(x) * y + z")):
    for name in names:
        ax.plot(cfg.sizes, [ms[name, n] / n * 1e6 for n in cfg.sizes], marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="elements", ylabel="ns per element (lower is faster)", title=title)
    ax.yaxis.set_major_formatter(one_two_five)
    ax.yaxis.set_minor_formatter(one_two_five)
    ax.legend()
fig.tight_layout()
plt.show()

# %%
big = cfg.sizes[-1]
sin_speedup = ms["torch.sin", big] / ms["labops.sin", big]
fused_speedup = ms["eager chain", big] / ms["labops.sin_mul_add", big]
inductor_vs_fused = ms["labops.sin_mul_add", big] / ms["compiled chain", big]
print(f"At {big:,} elements: the article's sin as a C++ loop is {bench.compared(sin_speedup)} torch.sin "
      f"({1 / sin_speedup:.1f}x its time); the fused op is {bench.compared(fused_speedup)} the eager chain "
      f"({fused_speedup:.2f}x); inductor's fusion of the chain is {bench.compared(inductor_vs_fused)} "
      f"the hand-written fused op ({inductor_vs_fused:.2f}x).")
results.claim(f"re-writing torch.sin as a C++ loop does not make it faster ({big:,} elements)", sin_speedup,
              holds=bench.verdict(sin_speedup) != "faster", condition="speed-up over torch.sin < 1.25x",
              source="the article's example operator: sin", asserted=False)
results.claim(f"a fused sin(x) * y + z beats the eager chain of three ops ({big:,} elements)", fused_speedup,
              holds=bench.verdict(fused_speedup) == "faster", condition="speed-up >= 1.25x", asserted=False)

# %% [markdown]
# How to read it (with your own numbers above):
#
# * **Re-writing an operation PyTorch already has rarely pays.** ATen's `sin` is vectorised for your
#   CPU; the plain loop is not, and if the table shows it many times slower, that is why. Even a
#   vectorised re-write can at best match it, and then you maintain C++, a build, and
#   `-ffast-math`'s relaxed rules (it assumes no NaN or infinity) for nothing.
# * **Fusion pays when the steps are memory-bound.** The eager chain reads and writes memory three
#   times and allocates two temporaries; once the tensors no longer fit in the CPU's caches (from
#   about 10⁶ floats, 4 MB each), that traffic, not the arithmetic, sets the time. The fused loop
#   touches each element once. At small sizes the fixed cost of each call (dispatch, allocation)
#   dominates, and fusing saves little or nothing. If your fused op is not faster even at the largest
#   size, its loop is most likely bound by computing `sin`, not by memory: the compiler vectorised it
#   narrowly or not at all (glibc's vector `sin` exists on Linux only; see `-march=native` in
#   "Going further").
# * **The compiler can do the fusion for you.** If the compiled chain runs about as fast as the
#   hand-written op, `torch.compile` gave you the same gain without C++. A custom operator is then
#   worth it for what the compiler cannot write: an operation PyTorch lacks (a custom sampler, a
#   data structure, a call into another library), or a kernel tuned beyond what it generates.
#
# ## 6. The article's kernel on a GPU
#
# At `gpu` scale, with nvcc installed, the `.cu` file is built into the same extension, and the
# operators get CUDA kernels: the same `opcheck`, and `torch.sin` against the fixed kernel. Here
# it runs only when the build above included CUDA.

# %%
gpu_rows = []
if use_cuda:
    cuda_failed = []
    for x in opcheck_inputs():
        x = x.detach().to(device).requires_grad_(x.requires_grad)
        run = torch.library.opcheck(torch.ops.labops.sin.default, (x,), raise_exception=False)
        cuda_failed += [test for test, v in run.items() if v != "SUCCESS"]
    x = torch.randn(3, 1000, device=device)
    cuda_gap = (torch.ops.labops.sin(x) - torch.sin(x)).abs().max().item()
    results.claim("the fixed CUDA kernel passes opcheck and matches torch.sin", cuda_gap,
                  holds=not cuda_failed and cuda_gap <= 1e-5, condition="0 failed tests, max |difference| <= 1e-5",
                  source="the article's custom_kernel")
    for n in cfg.gpu_sizes:
        x = torch.randn(n, device=device)
        t = bench.compare({"torch.sin": lambda x=x: torch.sin(x), "labops.sin": lambda x=x: torch.ops.labops.sin(x)},
                          rounds=cfg.rounds, repeats=cfg.repeats, cuda=True)
        gpu_rows.append({"n": n, "torch.sin ms": t["torch.sin"].median_ms, "labops.sin ms": t["labops.sin"].median_ms})
    table(gpu_rows, title="CUDA: the fixed kernel against torch.sin, median ms per call")
else:
    print(f"skipped: the CUDA kernel was not built here ({cuda_problem or 'no GPU on this machine'}).")

# %% [markdown]
# ## 7. Exercises
#
# ### Exercise 1 — the backward of the fused operator
#
# `out = sin(x) * y + z`. Given `grad` (d loss / d out), return the three gradients
# `(d loss/dx, d loss/dy, d loss/dz)`. Python only: nothing recompiles. When the check says
# correct, the cell after it registers *your* formula for `labops::sin_mul_add` and runs gradcheck
# on it.
#
# <details><summary>Hint</summary>
#
# Differentiate one input at a time, the others held fixed: d/dx of sin(x)·y is cos(x)·y; d/dy is
# sin(x); d/dz is 1. Multiply each by `grad` (the chain rule).
# </details>

# %%
@checks.exercise
def my_sin_mul_add_backward(grad, x, y):
    # YOUR CODE HERE: return (grad_x, grad_y, grad_z)
    raise NotImplementedError


def backward_inputs(g):
    shape = tuple(torch.randint(1, 6, (2,), generator=g).tolist())
    return tuple(torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))


verdict = checks.check_function(my_sin_mul_add_backward, reference=custom_op.sin_mul_add_backward,
                                make_inputs=backward_inputs,
                                hint="three tensors, each grad times a partial derivative: "
                                     "d/dx sin(x)*y = cos(x)*y; d/dy = sin(x); d/dz = 1")
# checks.show_solution("my_sin_mul_add_backward")

# %%
if verdict:
    custom_op.register("labops::sin_mul_add", fake=sin_mul_add_fake, setup_context=sin_mul_add_setup_context,
                       backward=sin_mul_add_autograd_with(my_sin_mul_add_backward))
    print("gradcheck with your backward:", torch.autograd.gradcheck(torch.ops.labops.sin_mul_add, fused_inputs()))
else:
    print("labops::sin_mul_add keeps lablib's backward until your formula is correct.")

# %% [markdown]
# ### Exercise 2 — why fusion pays: count the bytes
#
# For float32 tensors of n elements (4 bytes each), how many bytes per element does each version
# read from and write to memory? The eager chain is `t1 = sin(x)`, `t2 = t1 * y`, `out = t2 + z`,
# each a separate pass; the fused op reads x, y and z once and writes out once. Answer as a tuple
# `(eager_bytes_per_element, fused_bytes_per_element)`.
#
# <details><summary>Hint</summary>
#
# Count, for each pass, the tensors it reads and the one it writes, at 4 bytes each.
# </details>

# %%
my_traffic = checks.answer("my_traffic", ...)  # YOUR ANSWER: (eager, fused) bytes per element
checks.check_value(my_traffic, (32, 16), name="my_traffic",
                   hint="sin: read x, write t1; mul: read t1 and y, write t2; add: read t2 and z, write out")
# checks.show_solution("my_traffic")

# %% [markdown]
# If the chain were limited only by memory traffic, the fused op would be at most (eager bytes /
# fused bytes) times faster; compare that bound with the speed-up you measured at the largest
# size, and say in a sentence what else the eager chain pays for (the facilitator key has an answer).

# %%
print(f"the fused op's speed-up at {big:,} elements: {fused_speedup:.2f}x")

# %% [markdown]
# ### Questions
#
# 1. Why does the fake kernel of `labops::sin` use `torch.empty(x.shape, ...)` and not
#    `torch.empty_like(x)`, and what would go wrong in a compiled model if it used the latter?
# 2. The build uses `-ffast-math`. What does it let the compiler assume, and what could it change in
#    the results of `sin_mul_add` for inputs holding NaN or infinity?
# 3. Your laptop has 8 cores. Would the gap between `labops.sin` and `torch.sin` shrink or grow with
#    `torch.set_num_threads(8)`, and why?
#
# ## Going further
#
# * **The `gpu` scale.** On a machine with CUDA and nvcc (the project's CUDA image has both), run
#   with `LAB_SCALE=gpu`: section 6 then builds `csrc/sin_op_cuda.cu` into the same extension and runs
#   `opcheck` and the timing on the GPU. The CUDA kernel is memory-bound: expect it to match
#   `torch.sin`, not beat it; the GPU version of exercise 2's fusion argument is where a custom
#   kernel wins.
# * **Packaging.** A JIT build is for development; to ship an operator, build it ahead of time with
#   `torch.utils.cpp_extension.CppExtension` / `CUDAExtension` in a `setup.py` (or
#   `pyproject.toml`), so users install a wheel and need no compiler. With `py_limited_api=True`
#   one wheel serves several Python versions.
# * **Triton.** For GPU kernels, `torch.library.triton_op` registers a Triton kernel written in
#   Python as an operator, which `torch.compile` can see into; often the quicker path than CUDA C++.
# * **Threads.** Remove `torch.set_num_threads(1)` and rerun section 5 on your own (idle) machine:
#   both `torch.sin` and the C++ loops use ATen's thread pool (`at::parallel_for`).
# * **`-march=native`.** Remove it from `FLAGS` (and restart the kernel): the fused loop then uses
#   the 128-bit vectors every x86-64 CPU has, and you can see how much of its speed came from wider ones.
# * The PyTorch tutorial "Custom C++ and CUDA Operators" (`cpp_custom_ops`) and the
#   `torch.library` documentation.

# %%
results.record({
    "build s": built.seconds, "build cached": built.cached, "cuda kernels built": use_cuda,
    "opcheck runs": len(opcheck_runs), "sin forward gap": sin_forward_gap, "fused backward gap": fused_backward_gap,
    "graph breaks": explained.graph_break_count,
    f"labops.sin / torch.sin time at {big}": 1 / sin_speedup,
    f"eager chain / fused time at {big}": fused_speedup,
    f"fused / compiled chain time at {big}": inductor_vs_fused,
    **{f"{name} ms at {n}": ms[name, n] for name in ("torch.sin", "labops.sin", "eager chain", "labops.sin_mul_add",
                                                     "compiled chain") for n in (cfg.sizes[0], big)},
})
