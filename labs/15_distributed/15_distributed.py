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
# # Lab 15 — Distributed training that really runs: torchrun, DDP, FSDP2, DeepSpeed ZeRO-3 and sharded checkpoints
#
# **Source:** two of the articles.
#
# * 《突破AI技术壁垒:从算法创新到生态重构的路径探索》 ("Breaking through AI's technical barriers: exploring
#   the path from algorithmic innovation to ecosystem reconstruction"), section 四 "算力优化:从硬件加速到分布式训练"
#   (compute optimisation: from hardware acceleration to distributed training), part 2 "分布式训练策略"
#   (distributed training strategy):
#
#   > 采用ZeRO-3优化器减少通信开销,DeepSpeed库可将千亿参数模型训练内存占用降低80%:
#   > ```python
#   > from deepspeed.pt.deepspeed_light import DeepSpeedLight
#   > model_engine, optimizer, _, _ = DeepSpeedLight.initialize(
#   > model=model,
#   > optimizer=optimizer,
#   > config_params={"zero_optimization": {"stage": 3}}
#   > )
#   > ```
#
#   > "Use the ZeRO-3 optimizer to reduce communication overhead; the DeepSpeed library can cut the
#   > training memory of a **100-billion-parameter** model by **80 %**."
#
# * 《AI探索者的技术实践:从兴趣驱动到系统化学习》 ("An AI explorer's practice: from curiosity to
#   systematic learning"), on hardware:
#
#   > 大规模训练:需构建分布式计算集群,建议采用4-8卡服务器节点,通过NCCL实现多卡通信
#
#   > "Large-scale training needs a distributed cluster: servers with **4–8 GPUs** per node, the GPUs
#   > talking to each other through **NCCL**."
#
# This lab runs distributed training for real, on the two CPU cores of a laptop: several processes
# started by `torchrun`, talking over `torch.distributed` (the gloo backend on CPUs; the same script
# uses NCCL on GPUs).
#
# **What you will measure**
#
# 1. the all-reduce, written here as a ring and checked, then run by real processes;
# 2. data parallelism (by hand and with `DistributedDataParallel`) against one process on the whole
#    batch: the same parameters, and the step time on 2 cores;
# 3. ZeRO's memory per rank as arithmetic (stages 0–3, 1 to 64 ranks), the article's "−80 %"
#    recomputed, then measured: DDP against FSDP2 (PyTorch's ZeRO-3), memory and step time;
# 4. a sharded checkpoint (`torch.distributed.checkpoint`) saved by 2 ranks and loaded by 1;
# 5. DeepSpeed's ZeRO-3 through today's API (`deepspeed.initialize`), the article's code corrected,
#    against FSDP2: memory per rank and the trained parameters;
# 6. the same script as two "nodes" meeting through a rendezvous, as on a cluster.
#
# **Objectives.** After this lab you can
#
# * explain the ring all-reduce and what it costs per rank, and use it to write DDP's bucketed
#   gradient average;
# * launch a training script on several processes with `torchrun` and say what `RANK`,
#   `WORLD_SIZE` and `LOCAL_RANK` are, and check that DDP computes what one process would;
# * compute the per-rank memory of ZeRO stages 0–3 for any model and number of ranks, and shard a
#   model with FSDP2 (`fully_shard`);
# * save and load a sharded model with `torch.distributed.checkpoint`, on a different number of ranks;
# * write the command lines that run the same script on a multi-node GPU cluster.
#
# **Prerequisites.** Lab 00 (setup); lab 04 (mixed precision) for the bf16 part of section 7. A
# training loop (forward, backward, optimizer step) and what Adam keeps per parameter. No GPU.
#
# **Time.** `smoke`: about 30 s; `cpu` (2 cores): about 1 min. Most of either is three or four
# launches of the training scripts, each paying a few seconds of process start-up; `smoke` skips
# the DeepSpeed launch. `gpu`: with 2 or more GPUs, a larger model on NCCL (a few minutes).
# DeepSpeed is an extra install (`make deepspeed`, about 20 s); without it section 6 says how to get
# it and the rest of the lab runs. Reading and the exercises: 45–60 min.
#
# Answers to the open questions and exercises: `docs/answers/15_distributed.md`.

# %%
import importlib.util
import json
import runpy
import shutil
import sys
import warnings

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from lablib import show, table
from lablib.core import bench, checks, config, env, launch, results, viz
from lablib.methods import distributed

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
MULTI_GPU = GPUS >= 2  # NCCL needs one GPU per rank
cfg = config.profile(
    smoke=dict(ranks=2, steps=6, warmup=2, batch=64, hidden=128, batches=(64, 256), timeout_s=240, deepspeed=False),
    cpu=dict(ranks=2, steps=40, warmup=5, batch=256, hidden=1024, batches=(64, 256, 1024), timeout_s=300, deepspeed=True),
    gpu=dict(ranks=min(GPUS, 8) if MULTI_GPU else 2, steps=100 if MULTI_GPU else 40, warmup=10 if MULTI_GPU else 5,
             batch=512 * min(GPUS, 8) if MULTI_GPU else 256, hidden=4096 if MULTI_GPU else 1024, batches=(64, 256, 1024),
             timeout_s=600, deepspeed=True),
)
torch.set_num_threads(1)  # one thread per process: the ranks below get one core each, and so does this kernel
config.seed_everything(0)
lab_dir = config.project_root() / "labs" / config.lab_name()  # the training script lives beside this notebook
script = lab_dir / "train_dist.py"
work = config.data_dir() / config.lab_name() / cfg.scale  # what the runs write: parameters, summaries, checkpoints
train_dist = runpy.run_path(str(script))  # the script's functions (its main() runs only under torchrun)
print(env.line())
print(f"{GPUS} GPU(s) here; the training script: {script.relative_to(config.project_root())}")
cfg

# %% [markdown]
# ## 1. The problem: one model, more work than one worker can do
#
# Two walls stop single-device training. **Compute**: a training step's cost grows with the batch,
# so a model that must see millions of examples per hour needs more workers. **Memory**:
# training keeps, for every parameter, the weight, its gradient and the optimizer's state. With
# Adam in mixed precision that is 2 + 2 + 12 = 16 bytes per parameter (fp16 weights and gradients,
# an fp32 master copy and Adam's two fp32 moments; Rajbhandari et al., 2020), before a single
# activation is stored. For the article's model of 千亿 (10¹¹) parameters:

# %%
big = 100_000_000_000
need = distributed.zero_bytes(big, 1, 0, precision=distributed.MIXED_ADAM)
table({part: {"bytes per parameter": getattr(distributed.MIXED_ADAM, part) if part != "total" else distributed.MIXED_ADAM.total,
              "GB for 10¹¹ parameters": need[part] / 1e9} for part in need},
      title="Training state of a 100-billion-parameter model, mixed-precision Adam, one device")
print(f"{need['total'] / 1e12:.1f} TB of training state: an 80 GB GPU holds {80e9 / need['total']:.0%} of it.")

# %% [markdown]
# The compute wall, measured here: one training step of this lab's model (an MLP 64 → hidden →
# hidden → 10 on the 8×8 digits, defined in the training script) at growing batch sizes, in this
# process (on one CPU core, or on a GPU where the ranks below will use GPUs):

# %%
device = "cuda" if MULTI_GPU else "cpu"
model = train_dist["build_model"](cfg.hidden, 0).to(device)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
n_params = sum(p.numel() for p in model.parameters())


def one_step(batch):
    x, y = torch.randn(batch, 64, device=device), torch.randint(0, 10, (batch,), device=device)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


timings = bench.compare({b: one_step(b) for b in cfg.batches}, rounds=1, warmup=2, repeats=5)
table([{"batch": b, "step ms": t.median_ms, "ms per 100 examples": 100 * t.median_ms / b} for b, t in timings.items()],
      title=f"One training step of the {n_params:,}-parameter MLP, one process ({device})")

# %% [markdown]
# The time of a step grows with the batch; where the cost per example (last column) falls as the
# batch grows, a fixed overhead per step is being shared by more examples. **Data parallelism** splits each batch over N
# workers ("ranks"), each holding a full copy of the model: each rank computes the gradient of its
# slice, the ranks **add up** their gradients, and every copy takes the same optimizer step. The
# adding up is a collective operation, the **all-reduce**, and everything in this lab rests on it.
#
# **The article's code, and what is wrong with it.** Read it against what this lab measures:
#
# * `from deepspeed.pt.deepspeed_light import DeepSpeedLight` is from DeepSpeed's first releases
#   (2020). The `deepspeed.pt` package was later renamed (`deepspeed.runtime`, its engine class
#   `DeepSpeedEngine`); the import fails on any current DeepSpeed. `DeepSpeedLight` was the engine
#   *class*, built for you by the function `deepspeed.initialize(...)`; the four values unpacked
#   (engine, optimizer, data loader, learning-rate scheduler) are what that function returns. Today:
#   `engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config={...})`,
#   where `config_params=` survives as an old name of `config=`, and the config must also say the
#   batch size (`train_batch_size` or `train_micro_batch_size_per_gpu`) or DeepSpeed refuses it.
#   Section 6 is DeepSpeed's.
# * "ZeRO-3 … 减少通信开销" (*reduces communication overhead*) has it backwards: ZeRO-3 cuts
#   **memory** and *adds* communication (section 4 measures both).
# * "−80 %" is not a property of a 100-billion-parameter model: section 4 shows what it depends on.
#
# ## 2. The all-reduce, written in the lab
#
# Every rank r holds a tensor t_r; afterwards every rank must hold Σ_r t_r. Sending everything to
# rank 0 and back makes rank 0 receive N − 1 tensors and send N − 1: its link is the bottleneck,
# and it gets worse with every rank added. The **ring all-reduce** (what gloo and NCCL use for large
# tensors) puts the ranks in a ring and cuts each tensor into N chunks:
#
# 1. **reduce-scatter**, N − 1 steps: at step s, rank r sends its chunk (r − s) mod N to its right
#    neighbour, which adds it to its own copy of that chunk. After N − 1 steps rank r holds the
#    finished sum of one chunk, (r + 1) mod N;
# 2. **all-gather**, N − 1 steps: the finished chunks travel round the ring until every rank has
#    them all.
#
# All ranks send at the same time, so every link is busy and no link carries more than 2 (N − 1)
# chunks. This is the step the lab teaches, on a list with one tensor per rank:

# %%
def ring_allreduce(tensors):
    """Every rank gets the sum of all ranks' tensors (tensors[r] is rank r's), the way a ring does it."""
    n = len(tensors)
    chunks = [list(t.reshape(-1).tensor_split(n)) for t in tensors]  # chunks[rank][c]
    for s in range(n - 1):  # reduce-scatter
        sent = [chunks[r][(r - s) % n] for r in range(n)]  # every rank sends at once...
        for r in range(n):  # ...to its right neighbour, which adds the chunk to its own
            c, right = (r - s) % n, (r + 1) % n
            chunks[right][c] = chunks[right][c] + sent[r]
    for s in range(n - 1):  # all-gather: rank r starts with the finished chunk (r + 1) % n
        sent = [chunks[r][(r + 1 - s) % n] for r in range(n)]
        for r in range(n):
            chunks[(r + 1) % n][(r + 1 - s) % n] = sent[r]
    return [torch.cat(ch).reshape(tensors[0].shape) for ch in chunks]


print("3 ranks holding 1, 2, 3:", [t.tolist() for t in ring_allreduce([torch.full((5,), float(r + 1)) for r in range(3)])])

# %% [markdown]
# The check compares it with `lablib.methods.distributed.ring_allreduce`, the tested reference
# (itself tested against the plain sum), on random shapes and numbers of ranks, values and gradients:

# %%
def ring_inputs(g):
    n = int(torch.randint(1, 7, (1,), generator=g))
    shape = tuple(int(d) for d in torch.randint(1, 6, (int(torch.randint(1, 3, (1,), generator=g)),), generator=g))
    return ([torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_() for _ in range(n)],)


checks.agrees(ring_allreduce, reference=distributed.ring_allreduce, make_inputs=ring_inputs, trials=8)

# %% [markdown]
# **What it costs.** Each rank sends N − 1 chunks in each phase, each 1/N of the tensor: 2 (N − 1) / N
# times the tensor's bytes, which tends to 2× however many ranks there are. Gathering on one rank
# and broadcasting back makes that rank send (and receive) N − 1 whole tensors. For this lab's
# model's gradients (4 bytes per parameter):

# %%
grad_bytes = 4 * n_params
table([{"ranks N": n, "ring: MB sent per rank": distributed.ring_traffic(n, grad_bytes) / 1e6,
        "via rank 0: MB rank 0 sends": (n - 1) * grad_bytes / 1e6} for n in (2, 4, 8, 64)],
      title=f"All-reduce of {grad_bytes / 1e6:.1f} MB of gradients")

# %% [markdown]
# ### The real thing: processes, `torchrun` and `torch.distributed`
#
# From here on the ranks are real processes. `torchrun` starts `--nproc-per-node` copies of a
# script and gives each one its identity in environment variables: `RANK` (0 … N − 1 across all
# machines), `WORLD_SIZE` (N), `LOCAL_RANK` (its number on this machine, which picks its GPU), and
# where to meet (`MASTER_ADDR`, `MASTER_PORT`). `dist.init_process_group("gloo")` reads them and
# connects the ranks. The collective in the script is one call:

# %%
show(train_dist["allreduce_demo"])

# %% [markdown]
# Data parallelism by hand is a loop over the parameters after `loss.backward()`: the script's
# `manual` mode does exactly this (each rank trains on its slice of the global batch):

# %%
show(train_dist["allreduce_gradients"])

# %% [markdown]
# `DistributedDataParallel` (mode `ddp`) does the same with two tricks: it packs the gradients
# into **buckets** of about 25 MB and all-reduces each bucket as soon as backward has filled it,
# *while* backward is still computing the earlier layers (communication overlapped with compute).
# Mode `fsdp` shards the model with FSDP2 (section 4); mode `single` trains one process on the
# whole global batch, the reference.
#
# **Why a script, not a notebook cell.** `torchrun` starts fresh Python processes that import the
# training code, and a function defined in a notebook cannot be imported by another process. So
# the workers live in `train_dist.py`, and `launch.torchrun` runs `python -m torch.distributed.run`
# as a subprocess, streams every rank's output here, and stops every rank if the cell is interrupted
# or a rank fails. Each launch costs a few seconds of start-up, so **one launch runs every mode**,
# one after the other, from the same initial weights and on the same global batches, and saves the
# last one as a sharded checkpoint (section 5). The same in a terminal, from the project's root:
#
# ```bash
# source .venv/bin/activate        # the project's environment: torchrun comes with torch
# export OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=lo   # one thread per rank; gloo on the loopback (lo0 on macOS)
# torchrun --nproc-per-node=2 --master-addr=127.0.0.1 --master-port=29531 labs/15_distributed/train_dist.py \
#     --mode single,manual,ddp,fsdp --out data/15_distributed/run --save-dcp data/15_distributed/dcp
# ```
#
# (`--save-dcp` refuses a folder that holds an earlier run's shards: delete `data/15_distributed/dcp`
# before running it again.)

# %%
shutil.rmtree(work, ignore_errors=True)  # this lab's own folder under data/: every run starts clean
digits = train_dist["save_digits"](work / "digits.pt")  # prepared once here: each rank then skips importing scikit-learn
settings = ["--steps", cfg.steps, "--warmup", cfg.warmup, "--batch", cfg.batch, "--hidden", cfg.hidden, "--data", digits]
main_run = launch.torchrun(script, "--mode", "single,manual,ddp,fsdp", *settings, "--out", work / "run",
                           "--save-dcp", work / "dcp", nproc=cfg.ranks, timeout_s=cfg.timeout_s)
summary = json.loads((work / "run" / "summary.json").read_text())
modes = summary["modes"]
params = {m: load_file(str(work / "run" / f"{m}.safetensors")) for m in modes}
expected = sum(range(1, summary["world"] + 1))
terms = " + ".join(map(str, range(1, summary["world"] + 1))) if summary["world"] <= 4 else f"1 + … + {summary['world']}"
print(f"\n{summary['world']} ranks on {summary['backend']} ({summary['device']}); all_reduce gave {summary['allreduce']} "
      f"({terms} = {expected}); the launch took {main_run.wall_s:.1f} s.")

# %% [markdown]
# ## 3. DDP computes what one process computes
#
# Each rank's loss is the mean over its slice of the global batch; the slices are equal, so the
# mean of the ranks' gradients is the gradient of the mean loss over the whole global batch: what
# one process computes on that batch. Not bit for bit: the additions happen in another order (each
# rank sums its own slice, then the ranks' sums are added), and float addition is not associative.

# %% figure="loss-single-ddp-fsdp"
# On a GPU the kernels for another batch shape may sum in another order too, and Adam amplifies
# tiny differences in its first steps: the tolerance is wider there.
tol = 1e-5 if summary["device"] == "cpu" else 1e-3
single_vs_ddp = distributed.max_difference(params["single"], params["ddp"])
manual_vs_ddp = distributed.max_difference(params["manual"], params["ddp"])
results.claim("DDP on the split batch = one process on the whole batch (max parameter difference)", single_vs_ddp,
              holds=single_vs_ddp <= tol, condition=f"<= {tol:g} after training",
              source="data parallelism computes the gradient of the global batch (DDP's contract)")
print(f"The hand-written all-reduce (mode manual) against DDP: max parameter difference {manual_vs_ddp:.3g}"
      + (" (bit-identical)." if manual_vs_ddp == 0 else "."))
loss = {m: modes[m]["loss"] for m in ("single", "ddp", "fsdp")}
fig = viz.lines({m: (list(range(1, len(v) + 1)), v) for m, v in loss.items()}, xlabel="step",
                ylabel="loss on the global batch", title="The same training, three ways")
for line, style in zip(fig.axes[0].get_lines(), ("-", "--", ":"), strict=False):  # where the lines coincide, the styles still show
    line.set_linestyle(style)
    line.set_linewidth(2.5 if style == "-" else 1.5)
fig

# %% [markdown]
# **Is it faster?** The median step time of each mode after warm-up, per rank (on the 2 cores of a
# laptop the ranks are two processes on two cores; the `single` process has one core):

# %% figure="step-time-by-mode"
def step_ms(mode):
    return sum(r["step_ms"] for r in modes[mode]["per_rank"]) / len(modes[mode]["per_rank"])


times = {m: step_ms(m) for m in modes}
comm = sum(r["allreduce_ms"] for r in modes["manual"]["per_rank"]) / len(modes["manual"]["per_rank"])
table([{"mode": m, "ranks": modes[m]["ranks"], "examples per rank": cfg.batch // modes[m]["ranks"],
        "median step ms (mean of ranks)": times[m], "speed-up vs one process (> 1: faster)": times["single"] / times[m]} for m in modes],
      title=f"Step time, global batch {cfg.batch}")
ddp_ratio = times["ddp"] / times["single"]
results.claim("DDP step time / one-process step time", ddp_ratio, holds=ddp_ratio < 1,
              condition="< 1 (DDP faster)", asserted=False)
print(f"In mode manual, the all-reduce of the gradients alone takes {comm:.1f} ms of the {times['manual']:.1f} ms step "
      f"({comm / times['manual']:.0%}); the one-process step takes {times['single']:.1f} ms.")
viz.bars(times, ylabel="median ms per step", title="One step, each mode")

# %% [markdown]
# If DDP is not faster here, the arithmetic says why. Two ranks halve each rank's compute, but they
# add an all-reduce of every gradient (the manual mode's share above), sent through the loopback
# interface by the same two cores that compute; gloo copies each message through the kernel's
# socket buffers, where NCCL on GPUs moves it over NVLink at hundreds of GB/s. Data parallelism pays
# when compute per step is large against the gradient's size: a larger batch per rank (exercise 4),
# a bigger model with its work on GPUs, and fast links between them. This tiny model on 2 shared
# cores is the worst case, which is what makes it a good place to *see* the communication.
#
# ## 4. ZeRO: memory as arithmetic, then measured
#
# Plain data parallelism keeps N identical copies of everything. ZeRO (the **Z**ero **R**edundancy
# **O**ptimizer, Rajbhandari et al., 2020) removes the copies, in three stages: stage 1 shards the
# optimizer state over the N ranks (each updates only its 1/N of the weights, then the ranks
# exchange the result), stage 2 also the gradients (a reduce-scatter instead of an all-reduce: each
# rank gets only the summed chunk it updates), stage 3 also the parameters (each layer's weights are
# all-gathered just before it runs, and freed after). Per rank, with Ψ parameters and
# (params, grads, optimizer) bytes per parameter:
#
# | stage | params | grads | optimizer |
# | --- | --- | --- | --- |
# | 0 (DDP) | Ψ · p | Ψ · g | Ψ · o |
# | 1 | Ψ · p | Ψ · g | Ψ / N · o |
# | 2 | Ψ · p | Ψ / N · g | Ψ / N · o |
# | 3 (FSDP, DeepSpeed ZeRO-3) | Ψ / N · p | Ψ / N · g | Ψ / N · o |
#
# `distributed.zero_bytes` is this table. For the article's model with mixed-precision Adam:

# %%
ns = [1, 2, 4, 8, 16, 32, 64]
per_stage = {f"stage {s}": (ns, [distributed.zero_bytes(big, n, s, precision=distributed.MIXED_ADAM)["total"] / 1e9 for n in ns])
             for s in range(4)}
fig = viz.lines(per_stage, xlabel="ranks N", ylabel="GB per rank (params + grads + Adam)", logx=True,
                reference={"an 80 GB GPU": 80}, title="10¹¹ parameters, mixed-precision Adam: training state per rank")
fig.axes[0].set_yscale("log")
fig.axes[0].set_xticks(ns, [str(n) for n in ns])  # plain numbers of ranks, not powers of ten
fig.axes[0].minorticks_off()
fig

# %% [markdown]
# Only stage 3 brings the whole state under one GPU's memory, and it needs enough ranks to do it.
# The article's "−80 %" recomputed: stage 3's saving against plain data parallelism is 1 − 1/N,
# whatever the model's size:

# %%
savings = [{"ranks N": n, **{f"stage {s} saves": distributed.zero_saving(big, n, s, precision=distributed.MIXED_ADAM)
                             for s in (1, 2, 3)}} for n in (2, 4, 5, 8, 64)]
table(savings, title="Per-rank memory saved against DDP (mixed-precision Adam)")
n80 = next(n for n in range(1, 1000) if distributed.zero_saving(big, n, 3, precision=distributed.MIXED_ADAM) >= 0.8)
print(f"ZeRO-3 saves 80 % from N = {n80} ranks on: the article's figure is a statement about the number of GPUs "
      f"(at N = 64 it is {distributed.zero_saving(big, 64, 3):.1%}), not about DeepSpeed or a 100-billion-parameter model.")

# %% [markdown]
# **Measured.** The script measured each rank's training state after training, with
# `distributed.model_state_bytes` (a sharded parameter is a `DTensor`; its memory on a rank is its
# local shard, `.to_local()`). FSDP2 shards each `Linear` along its first dimension:

# %% figure="training-state-per-rank-by-mode"
ddp_state = modes["ddp"]["per_rank"][0]["state_bytes"]
fsdp_state = [r["state_bytes"] for r in modes["fsdp"]["per_rank"]]
world = modes["fsdp"]["ranks"]
table({"DDP (ZeRO-0), rank 0": {k: v / 2**20 for k, v in ddp_state.items()},
       **{f"FSDP2 (ZeRO-3), rank {r}": {k: v / 2**20 for k, v in s.items()} for r, s in enumerate(fsdp_state)},
       f"ZeRO-3 formula, N = {world}": {k: v / 2**20 for k, v in distributed.zero_bytes(n_params, world, 3).items()}},
      title="Training state per rank, MiB (fp32 Adam: 4 + 4 + 8 bytes per parameter)")
share = max(s["total"] for s in fsdp_state) / ddp_state["total"]
results.claim("FSDP2 per-rank model state / DDP's", share, holds=share <= 0.55, condition="<= 0.55 (ZeRO-3: 1/N + padding)",
              source="DeepSpeed ZeRO-3 cuts training memory by 80 % (article; 1 - 1/N at N = 5)")
ddp_vs_fsdp = distributed.max_difference(params["ddp"], params["fsdp"])
same_tol = 1e-6 if summary["device"] == "cpu" else 1e-3  # NCCL's reduce-scatter may add in another order than its all-reduce
results.claim("FSDP2 and DDP end with the same parameters (max difference)", ddp_vs_fsdp, holds=ddp_vs_fsdp <= same_tol,
              condition=f"<= {same_tol:g}")
fsdp_ratio = times["fsdp"] / times["ddp"]
results.claim("FSDP2 step time / DDP step time", fsdp_ratio, holds=fsdp_ratio > 1, condition="> 1 (ZeRO-3 costs time)",
              source="采用ZeRO-3优化器减少通信开销 (ZeRO-3 'reduces communication overhead', article)", asserted=False)
viz.grouped_bars({"DDP": {k: ddp_state[k] / 2**20 for k in ("params", "grads", "optimizer")},
                  "FSDP2": {k: fsdp_state[0][k] / 2**20 for k in ("params", "grads", "optimizer")}},
                 ylabel="MiB on rank 0", title="What one rank holds")

# %% [markdown]
# Read the rows against the formula's: stage 0 is 16 bytes per parameter on every rank, stage 3
# the same divided by N. Where a layer's rows do not divide evenly by N (the 10-row output layer on
# 4 or 8 ranks), FSDP2's ranks hold shares that differ by a row. The activations and the layer
# being all-gathered are not in these numbers:
# stage 3 also holds one full layer at a time while it computes, which is why FSDP wraps each
# layer (here each `Linear`) separately.
#
# And the time: FSDP2 all-gathers every layer's weights in the forward pass, again in the backward
# pass (they were freed in between), and reduce-scatters the gradients: about 1.5 times the bytes
# of DDP's all-reduce per step (the ZeRO paper's 3Ψ against 2Ψ), and less of it overlapped with
# compute on a CPU. ZeRO-3 buys memory with communication; the article's "减少通信开销" is the
# opposite of what it does. The claim above reports the ratio measured here.
#
# ## 5. Checkpointing a sharded model
#
# Two ways to save what FSDP2 trained:
#
# * **a full state dict**: gather every parameter to rank 0 and save one file (what the script did
#   for `fsdp.safetensors`, with `get_model_state_dict(..., StateDictOptions(full_state_dict=True,
#   cpu_offload=True))`). Simple, and it needs the whole model in one process's memory: for the
#   article's 10¹¹ parameters, 400 GB of fp32 weights (1.6 TB with Adam's state) on one machine.
# * **`torch.distributed.checkpoint` (DCP)**: every rank writes its own shard, in parallel, plus a
#   `.metadata` file that says which piece of which tensor is where. Loading **reshards**: the
#   loader asks for the pieces *its* shards need, for any number of ranks.
#
# The script saved the FSDP2 model and its Adam state with DCP on 2 ranks:

# %%
files = sorted((work / "dcp").iterdir())
table([{"file": f.name, "KiB": f.stat().st_size / 1024} for f in files], title="The DCP checkpoint, written by the ranks")
print(f"fsdp.safetensors (the gathered full parameters): {(work / 'run' / 'fsdp.safetensors').stat().st_size / 1024:.0f} KiB")

# %% [markdown]
# Here it is loaded into **one** process, this notebook, with no process group at all: a fresh
# model with other initial weights and a fresh Adam, then `dcp.load` fills them in place from the
# ranks' shards. (DCP would warn that it is loading without a process group; the cell silences that
# one warning, since one process is the point.)

# %%
fresh = train_dist["build_model"](cfg.hidden, 123)
fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
model_sd, optim_sd = get_state_dict(fresh, fresh_opt)
state = {"model": model_sd, "optim": optim_sd}
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")  # one process, on purpose
    dcp.load(state, checkpoint_id=work / "dcp")
set_state_dict(fresh, fresh_opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
reloaded = distributed.max_difference({k: v.detach() for k, v in fresh.state_dict().items()}, params["fsdp"])
results.claim("DCP checkpoint from 2 ranks, loaded on 1: parameters (max difference from the gathered ones)", reloaded,
              holds=reloaded == 0, condition="== 0 (bit-identical)")
adam = fresh_opt.state[next(iter(fresh.parameters()))]
print(f"Adam's state came back too: step {int(adam['step'])} (trained {cfg.steps}), first-layer moments of shape "
      f"{tuple(adam['exp_avg'].shape)} (whole, though each rank saved half); per-process state now "
      f"{distributed.model_state_bytes(fresh, fresh_opt)['total'] / 2**20:.2f} MiB (weights and Adam's state: no "
      "gradients until the first backward).")

# %% [markdown]
# To **resume** a run, on any number of ranks, the script loads a checkpoint into its first mode
# before training (`--load-dcp`): for example on 1 rank,
#
# ```bash
# torchrun --nproc-per-node=1 labs/15_distributed/train_dist.py --mode fsdp --load-dcp data/15_distributed/dcp --out data/15_distributed/resumed
# ```
#
# A real training job saves a DCP checkpoint every few hundred steps (with the data loader's
# position and the step number), because on hundreds of GPUs something fails every few hours.
#
# ## 6. DeepSpeed ZeRO-3, with today's API
#
# The article's DeepSpeed line, corrected (section 1): `deepspeed.initialize` builds the engine
# from the model, an optimizer and a config dict. `train_deepspeed.py` trains the same MLP, from the
# same initial weights, on the same global batches as `train_dist.py`, with ZeRO stage 3:

# %%
ds_script = lab_dir / "train_deepspeed.py"
train_ds = runpy.run_path(str(ds_script))  # its functions; DeepSpeed itself is imported only inside the ranks
have_deepspeed = importlib.util.find_spec("deepspeed") is not None
show(train_ds["zero3_config"])
if not have_deepspeed:
    print(f"DeepSpeed is not installed in this kernel's Python ({sys.executable}): `make deepspeed` adds it to "
          ".venv (about 20 s; nothing is compiled). Then rerun this section.")

# %% [markdown]
# Three settings in that config decide whether the comparison with FSDP2 is fair, and each was
# found by measuring:
#
# * `gradient_clipping: 0.0`: DeepSpeed clips the gradient norm at 1.0 unless told otherwise, which
#   is a different optimizer from the plain Adam of `train_dist.py`: once a gradient's norm passes
#   1.0, the two runs drift apart;
# * `stage3_param_persistence_threshold: 0`: by default ZeRO-3 keeps every tensor under 100,000
#   elements whole on every rank, to save the communication; with `hidden` = 1024 that is the first
#   and last layers and every bias, and each rank would hold more than half;
# * a plain `torch.optim.Adam`: DeepSpeed's own CPU Adam is a C++ extension compiled at the first
#   run.
#
# One more cost is hidden in the start-up. On a Linux CPU, DeepSpeed compiles a shared-memory
# all-reduce (a C++ extension; 50–90 s on 2 cores when this lab was written) the first time it starts, though ZeRO
# training never calls it (only tensor-parallel inference does); the script marks it unavailable
# (`skip_shm_op`), so nothing is compiled. On GPUs, DeepSpeed's fused CUDA kernels are compiled
# on first use the same way, unless they were built when it was installed (`DS_BUILD_OPS=1`).

# %%
if have_deepspeed and cfg.deepspeed:
    ds_env = None if MULTI_GPU else {"DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}  # NCCL needs a GPU per rank
    ds_run = launch.torchrun(ds_script, "--steps", cfg.steps, "--warmup", cfg.warmup, "--batch", cfg.batch,
                             "--hidden", cfg.hidden, "--data", digits, "--out", work / "deepspeed",
                             nproc=cfg.ranks, env=ds_env, timeout_s=cfg.timeout_s)
    ds = json.loads((work / "deepspeed" / "deepspeed.json").read_text())
    ds_params = load_file(str(work / "deepspeed" / "deepspeed.safetensors"))
    ds_state = [r["state_bytes"] for r in ds["per_rank"]]
    table({"DDP (ZeRO-0), rank 0": {k: v / 2**20 for k, v in ddp_state.items()},
           "FSDP2, rank 0": {k: v / 2**20 for k, v in fsdp_state[0].items()},
           **{f"DeepSpeed ZeRO-3, rank {r}": {k: v / 2**20 for k, v in s.items()} for r, s in enumerate(ds_state)}},
          title=f"Training state per rank, MiB (DeepSpeed {ds['deepspeed']}, {ds['world']} ranks, {ds['backend']})")
    ds_share = max(s["total"] for s in ds_state) / ddp_state["total"]
    results.claim("DeepSpeed ZeRO-3 per-rank model state / DDP's", ds_share, holds=ds_share <= 0.55,
                  condition="<= 0.55 (ZeRO-3: 1/N)", source="DeepSpeed ZeRO-3 cuts training memory by 80 % (article)")
    ds_vs_fsdp = distributed.max_difference(params["fsdp"], ds_params) if ds["world"] == world else float("nan")
    results.claim("DeepSpeed ZeRO-3 and FSDP2 end with the same parameters (max difference)", ds_vs_fsdp,
                  holds=ds_vs_fsdp <= same_tol, condition=f"<= {same_tol:g}")
    ds_ms = sum(r["step_ms"] for r in ds["per_rank"]) / len(ds["per_rank"])
    ds_ratio = ds_ms / times["fsdp"]
    results.claim("DeepSpeed ZeRO-3 step time / FSDP2 step time", ds_ratio, holds=ds_ratio <= 1.25,
                  condition="<= 1.25 (about as fast)", asserted=False)
    print(f"DeepSpeed's launch took {ds_run.wall_s:.1f} s (FSDP2's four modes shared one launch of "
          f"{main_run.wall_s:.1f} s); its ZeRO-3 step: {ds_ms:.1f} ms against FSDP2's {times['fsdp']:.1f} ms.")
elif have_deepspeed:
    print(f"At `{cfg.scale}` scale DeepSpeed does not run (cfg.deepspeed is False: its launch would double this "
          "scale's time); `cpu` and `gpu` run it.")

# %% [markdown]
# If the parameters agree, DeepSpeed's ZeRO-3 and FSDP2 are two implementations of the same idea
# (the table's per-rank bytes are the ZeRO formula of section 4 both times), and the choice between
# them is practical: FSDP2 is part of PyTorch (no extra install, `torch.compile` and DTensor
# work with it); DeepSpeed brings its own engine, launcher and config, offloading to CPU and NVMe
# (ZeRO-Offload, ZeRO-Infinity), and fused kernels. Neither changes the arithmetic: the "−80 %" is
# 1 − 1/N with N = 5.
#
# ## 7. Beyond one machine
#
# On a cluster, one `torchrun` runs on each machine ("node"), and they find each other through a
# **rendezvous**: one endpoint (host:port) that every node knows, where they agree on who is
# rank 0 … N − 1. Here two `torchrun` launchers on this machine play two nodes of one rank each,
# meeting through the c10d rendezvous on 127.0.0.1 (`launch.torchrun_nodes`): the same DDP
# training, with gloo.

# %%
small = {"steps": min(cfg.steps, 40), "batch": min(cfg.batch, 256), "hidden": min(cfg.hidden, 1024)}  # gloo runs on the CPU
node_settings = ["--mode", "ddp", "--backend", "gloo", "--warmup", 1, "--data", digits,
                 *[a for k, v in small.items() for a in (f"--{k}", v)]]
nodes = launch.torchrun_nodes(script, *node_settings, "--out", work / "nodes", nnodes=2, nproc=1, timeout_s=cfg.timeout_s)
if summary["backend"] == "gloo" and summary["world"] == 2 and all(cfg[k] == v for k, v in small.items()):
    one_node = params["ddp"]  # the same settings ran on one node of 2 ranks in section 2
else:  # the main run used NCCL or another world size: a one-node gloo run of 2 ranks to compare with
    launch.torchrun(script, *node_settings, "--out", work / "one_node", nproc=2, timeout_s=cfg.timeout_s)
    one_node = load_file(str(work / "one_node" / "ddp.safetensors"))
two_nodes = load_file(str(work / "nodes" / "ddp.safetensors"))
across = distributed.max_difference(one_node, two_nodes)
results.claim("2 nodes x 1 rank = 1 node x 2 ranks (max parameter difference)", across, holds=across <= 1e-6,
              condition="<= 1e-6")
print(f"The two launchers took {max(n.wall_s for n in nodes):.1f} s.")

# %% [markdown]
# The rendezvous decided the ranks and the ranks connected over TCP; nothing in the training script
# knows how many machines it runs on, and the claim compares the result with the one-node run.
# (Run by hand as two launchers, a node whose partner, the host of the rendezvous store, exits
# first may print a TCPStore "Connection was likely closed" warning with a stack trace at shutdown;
# if both launchers exit with code 0, training finished and the warning is harmless.)
#
# **On a real cluster**, the third article's setting: 2 nodes of 8 GPUs, NCCL. On every node:
#
# ```bash
# export NCCL_SOCKET_IFNAME=eth0   # the network interface between the nodes (ip addr shows it)
# export NCCL_DEBUG=WARN           # INFO prints the topology NCCL found: NVLink, InfiniBand, sockets
# torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=node0.cluster:29500 \
#     --rdzv-id=job-42 labs/15_distributed/train_dist.py --mode fsdp --bf16 --out data/15_distributed/cluster
# ```
#
# What changes on GPUs, all in the script already:
#
# * **the backend**: `nccl` (the script picks it when there is one GPU per local rank); gloo works
#   on GPUs too but copies through the CPU;
# * **one GPU per rank**: `torch.cuda.set_device(LOCAL_RANK)` before `init_process_group`, the model
#   moved to `cuda:LOCAL_RANK`, and `DDP(model, device_ids=[LOCAL_RANK])`; FSDP2's mesh is
#   `init_device_mesh("cuda", (world,))`;
# * **mixed precision with FSDP2**: `fully_shard(layer, mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16,
#   reduce_dtype=torch.float32))` (`--bf16`): the all-gathered weights and the compute in bf16 (half
#   the bytes to all-gather), the gradient reduction and Adam's update in fp32 (lab 04 shows why the
#   update needs fp32);
# * **the network**: inside a node, NVLink; between nodes, InfiniBand or RoCE. NCCL picks the
#   fastest path it finds; `NCCL_SOCKET_IFNAME` keeps its bootstrap off the wrong interface.

# %%
if summary["backend"] == "nccl":
    print(f"This run used NCCL on {summary['world']} GPUs (sections 2–5).")
elif GPUS == 1:
    print("One GPU here: NCCL needs one GPU per rank, so the runs above used gloo on the CPU.")
else:
    print(f"No GPU here ({summary['backend']} on the CPU); on a machine with 2 or more GPUs, LAB_SCALE=gpu runs NCCL.")

# %% [markdown]
# ## 8. Exercises
#
# **Exercise 1 (the taught step, as DDP does it).** DDP does not all-reduce each gradient on its
# own: a message has a fixed cost (start-up, synchronisation), so it packs the gradients into a
# **bucket**, one flat tensor, and all-reduces that. Write `my_average_gradients(grads)`: `grads`
# holds one dict (parameter name → gradient) per rank; flatten each rank's gradients into one
# bucket, all-reduce the buckets with the lab's `ring_allreduce` (one call), divide by the number of
# ranks, and cut each rank's bucket back into a dict of tensors of the original shapes. Every rank
# gets its own dict.
#
# <details><summary>Hint</summary>
#
# `names = list(grads[0])`; a bucket is `torch.cat([g[k].reshape(-1) for k in names])`. After the
# all-reduce, `bucket.split([grads[0][k].numel() for k in names])` gives the pieces back in order;
# `.reshape(grads[0][k].shape)` each.
# </details>

# %%
@checks.exercise
def my_average_gradients(grads):
    # YOUR CODE HERE
    raise NotImplementedError


def gradient_inputs(g):
    """1-4 ranks, each with gradients of the same three shapes (a matrix, a vector, a scalar)."""
    n = int(torch.randint(1, 5, (1,), generator=g))
    rows, width = (int(torch.randint(1, 5, (1,), generator=g)) for _ in range(2))
    shapes = {"weight": (rows, 3), "bias": (width,), "scale": ()}
    return ([{k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in shapes.items()} for _ in range(n)],)


checks.check_function(my_average_gradients, reference=distributed.average_gradients,
                      make_inputs=gradient_inputs, trials=6,
                      hint="one flat bucket per rank (torch.cat of the flattened gradients), "
                           "ring_allreduce once, / N, split back")
# checks.show_solution("my_average_gradients")

# %% [markdown]
# **Exercise 2 (ZeRO's arithmetic).** Write `my_zero_bytes(n_params, n_ranks, stage, precision)`: the
# dict `{"params", "grads", "optimizer", "total"}` of bytes one rank holds, as in section 4's table.
# A sharded part holds ⌈n_params / n_ranks⌉ parameters (the last shard is padded to the size of the
# others); `precision.params`, `precision.grads`, `precision.optimizer` are the bytes per parameter.
#
# <details><summary>Hint</summary>
#
# `shard = -(-n_params // n_ranks)` is the ceiling. The parameters are sharded from stage 3 on, the
# gradients from stage 2, the optimizer state from stage 1.
# </details>

# %%
@checks.exercise
def my_zero_bytes(n_params, n_ranks, stage, precision):
    # YOUR CODE HERE
    raise NotImplementedError


def zero_inputs(g):
    n_params = int(torch.randint(1, 10**9, (1,), generator=g))
    n_ranks, stage = int(torch.randint(1, 65, (1,), generator=g)), int(torch.randint(0, 4, (1,), generator=g))
    return n_params, n_ranks, stage, (distributed.FP32_ADAM, distributed.MIXED_ADAM)[int(torch.randint(0, 2, (1,), generator=g))]


checks.check_function(my_zero_bytes, reference=lambda n, r, s, p: distributed.zero_bytes(n, r, s, precision=p),
                      make_inputs=zero_inputs, trials=10,
                      hint="shard = ceil(n_params / n_ranks); stage k shards the last k of "
                      "(params, grads, optimizer) counted from the optimizer")
# checks.show_solution("my_zero_bytes")

# %% [markdown]
# **Exercise 3 (ZeRO-2 and the article's figure).** With mixed-precision Adam and a 10¹¹-parameter
# model, from how many ranks N on does ZeRO **stage 2** save at least 80 % of the per-rank memory?
# Work it out on paper first (which bytes does stage 2 shard, which does it not?), then check with
# `distributed.zero_saving`. And stage 1?

# %%
my_ranks_for_80 = checks.answer("my_ranks_for_80", ...)  # replace ... with your N

stage2_n80 = next(n for n in range(1, 10**4) if distributed.zero_saving(big, n, 2, precision=distributed.MIXED_ADAM) >= 0.8)
checks.check_value(my_ranks_for_80, stage2_n80, name="my_ranks_for_80",
                   hint="which of the 16 bytes per parameter does stage 2 keep whole on every rank? "
                        "Solve 1 - (kept + sharded / N) / 16 >= 0.8 for N")

# %% [markdown]
# **Exercise 4 (open).** (a) A larger batch: `cfg["batch"], cfg["steps"] = 2048, 15`, then rerun
# from the launch cell of section 2 through section 3. Is DDP faster than one process now? Predict
# first from section 1's step times and the manual mode's all-reduce time, which does not depend
# on the batch. (b) Section 4's table for N = 4 ranks: how many MiB would each FSDP2 rank hold, and how many
# bytes would each rank send per step in DDP's ring all-reduce? (c) Why does FSDP2 wrap each
# `Linear` separately instead of the whole model once? What would the peak memory of a rank be if
# it wrapped only the root?
#
# ## Record
#
# This cell saves the claims above with the other figures worth keeping and your exercises' verdicts.

# %%
metrics = {"ranks": summary["world"], "backend": summary["backend"], "parameters": n_params,
           "one-process step ms": times["single"], "manual step ms": times["manual"], "DDP step ms": times["ddp"],
           "FSDP2 step ms": times["fsdp"], "manual all-reduce ms": comm,
           "DDP model state MiB per rank": ddp_state["total"] / 2**20,
           "FSDP2 model state MiB per rank": max(s["total"] for s in fsdp_state) / 2**20,
           "manual vs DDP max difference": manual_vs_ddp, "final loss (DDP)": modes["ddp"]["loss"][-1],
           "test accuracy % (DDP)": modes["ddp"]["test_acc"], "main launch wall s": main_run.wall_s,
           "two-node launch wall s": max(n.wall_s for n in nodes), "ZeRO-3 ranks for 80 %": n80}
if have_deepspeed and cfg.deepspeed:
    metrics |= {"DeepSpeed ZeRO-3 model state MiB per rank": max(s["total"] for s in ds_state) / 2**20,
                "DeepSpeed step ms": ds_ms, "DeepSpeed launch wall s": ds_run.wall_s}
results.record(metrics, notes=f"MLP 64-{cfg.hidden}-{cfg.hidden}-10 on the digits, Adam 1e-3, {cfg.steps} steps, global batch "
                              f"{cfg.batch}, {summary['world']} ranks ({summary['backend']}), one thread per rank; step times are "
                              f"medians after {cfg.warmup} warm-up steps.")

# %% [markdown]
# ## Going further
#
# * **GPU scale.** With 2 or more GPUs, `LAB_SCALE=gpu` runs the same launches on NCCL, one rank per
#   GPU (up to 8), with a 4096-wide model and a batch of 512 per GPU, where compute per step is large
#   against the gradient's size: compare DDP's step with one GPU's there. With one GPU, NCCL cannot
#   run two ranks; the lab says so and stays on gloo. The `--bf16` option (FSDP2 with
#   `MixedPrecisionPolicy`) is for GPUs: add it to the launch's arguments.
# * **Other parallelisms.** Data parallelism (this lab) copies the model; **tensor parallelism**
#   splits each layer's matrices over GPUs (Megatron-LM; `torch.distributed.tensor.parallel`),
#   **pipeline parallelism** splits the layers into stages (`torch.distributed.pipelining`). Large
#   models combine all three with FSDP over a 2-D or 3-D `DeviceMesh`.
# * **Activation memory**, which ZeRO does not shard: activation checkpointing
#   (`torch.utils.checkpoint`) recomputes activations in the backward pass instead of keeping them.
# * **Read more.** Rajbhandari et al. (2020), *ZeRO: Memory Optimizations Toward Training Trillion
#   Parameter Models*; Li et al. (2020), *PyTorch Distributed: Experiences on Accelerating Data
#   Parallel Training* (DDP's buckets and overlap); Zhao et al. (2023), *PyTorch FSDP*; the PyTorch
#   tutorials "Getting Started with Fully Sharded Data Parallel (FSDP2)" and "Getting Started with
#   Distributed Checkpoint (DCP)"; Patarasuk & Yuan (2009), *Bandwidth optimal all-reduce algorithms
#   for clusters of workstations* (the ring).
