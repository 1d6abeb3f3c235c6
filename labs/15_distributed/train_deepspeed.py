"""ZeRO-3 with DeepSpeed: the same MLP, data and global batches as train_dist.py, trained by
DeepSpeed's engine, which partitions parameters, gradients and Adam's state over the ranks.

The article's `deepspeed.pt.deepspeed_light.DeepSpeedLight` no longer exists; the current API is
`deepspeed.initialize(model=..., optimizer=..., config=...)`, which returns an engine that does
forward, backward (`engine.backward(loss)`) and the optimizer step (`engine.step()`).

Install: `make deepspeed` adds it to the project's .venv (make test does too). By hand, in the
venv that has torch: DeepSpeed's setup.py imports torch, hence --no-build-isolation, and the
constraints keep pip from swapping torch for a CUDA build:

    DS_BUILD_OPS=0 .venv/bin/pip install -c constraints.txt --no-build-isolation -r requirements/deepspeed.txt

Run (2 ranks on the CPU, gloo), as train_dist.py: from the project's root, its environment active
(source .venv/bin/activate):

    export OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=lo   # one thread per rank; loopback (lo0 on macOS)
    torchrun --nproc-per-node=2 --master-addr=127.0.0.1 --master-port=29541 \\
        labs/15_distributed/train_deepspeed.py --steps 60 --out data/15_distributed/deepspeed

On a Linux CPU, DeepSpeed's first start compiles a shared-memory all-reduce (deepspeed_shm_comm,
a C++ extension, 50-90 s on 2 cores when measured) that only tensor-parallel inference uses: this script
skips it (see skip_shm_op). --shm-op builds it anyway, into data/cache/torch_extensions, from
where later starts load it.

Rank 0 writes <out>/deepspeed.json (losses, step times, per-rank bytes, the difference from plain
Adam in one process) and <out>/deepspeed.safetensors (the full trained parameters).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lablib.core import config
from lablib.core.cache import write_atomic
from lablib.methods import distributed

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_dist.py, also when a notebook loads this file
from train_dist import (  # noqa: E402
    add_training_args,
    build_model,
    check_paths,
    global_batches,
    load_digits,
    save_params,
)


def import_deepspeed():
    """Import DeepSpeed inside the ranks only (a notebook can read this file without it installed).
    It picks its accelerator on import (the CPU one where there is no GPU), and it would compile
    any C++ op into ~/.cache/torch_extensions: the project's data/ folder instead."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(config.data_dir() / "cache" / "torch_extensions"))
    try:
        import deepspeed
    except ImportError as e:
        raise SystemExit(f"{e}: DeepSpeed is not installed in {sys.executable}; `make deepspeed` installs it "
                         f"(see the top of {Path(__file__).name})") from None
    return deepspeed


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_args(p)  # --steps --warmup --batch --hidden --lr --seed --data, as train_dist.py
    p.add_argument("--out", required=True, help="folder under data/ for deepspeed.json and deepspeed.safetensors")
    p.add_argument("--shm-op", action="store_true", help="let DeepSpeed build (first start) or load its "
                   "shared-memory all-reduce for CPUs, which ZeRO training does not use")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.hidden < 1 or not args.lr > 0:
        p.error("--steps, --batch and --hidden must be >= 1, --warmup >= 0, --lr > 0")
    check_paths(p, args, ("out", "data"))
    return args


def skip_shm_op(deepspeed) -> None:
    """On a Linux CPU, deepspeed.init_distributed loads a C++ shared-memory all-reduce, compiling
    it the first time (ninja, a minute or more on 2 cores). Only tensor-parallel inference calls
    it (dist.inference_all_reduce); ZeRO's all-gathers and reduce-scatters go through
    torch.distributed (gloo). Marking the op incompatible makes DeepSpeed skip it, as it does on
    macOS and Windows. deepspeed.ops.__compatible_ops__ is DeepSpeed's table, probed once per
    process: an edit stays until the process ends."""
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def zero3_config(batch: int) -> dict:
    """DeepSpeed's whole configuration: ZeRO stage 3 in fp32, nothing offloaded."""
    return {
        "train_batch_size": batch,  # the global batch; DeepSpeed splits it: batch / ranks per rank
        "gradient_accumulation_steps": 1,
        # DeepSpeed clips the global gradient norm to 1.0 unless told otherwise: a different
        # optimizer from the plain Adam of train_dist.py. 0 turns clipping off.
        "gradient_clipping": 0.0,
        "zero_optimization": {
            "stage": 3,  # partition parameters, gradients and optimizer state over the ranks
            # By default tensors under 100,000 elements stay whole on every rank (cheaper than
            # gathering them): here that would be every bias and the first and last layers.
            # 0 partitions every tensor, as ZeRO-3's arithmetic and FSDP2 do.
            "stage3_param_persistence_threshold": 0,
        },
        "fp16": {"enabled": False},  # fp32 throughout (bf16 is the usual choice on GPUs)
        "bf16": {"enabled": False},
        "steps_per_print": 10**9,  # no progress lines from the engine; we print a summary
    }


def zero3_bytes(engine) -> dict[str, int]:
    """Bytes of training state this rank holds, in the keys of distributed.model_state_bytes:
    params (its partition of every parameter, param.ds_tensor, plus any full copy still held in
    param.data: between gathers that is an empty placeholder, except for "persistent" small
    tensors), grads (DeepSpeed's flat buffer of this rank's gradient partition) and optimizer
    (Adam's m and v over the flat fp32 partition; 0-d steps left out). In fp32 the optimizer
    steps the partition itself: there is no separate master copy."""
    params = list(engine.module.parameters())
    zero = engine.optimizer  # DeepSpeedZeroOptimizer_Stage3, wrapping our torch.optim.Adam
    out = {"params": sum((p.ds_tensor.numel() + p.data.numel()) * p.ds_tensor.element_size() for p in params),
           "grads": zero.grad_partitions_flat_buffer.numel() * zero.grad_partitions_flat_buffer.element_size(),
           "optimizer": sum(v.numel() * v.element_size() for s in zero.optimizer.state.values()
                            for v in s.values() if isinstance(v, torch.Tensor) and v.ndim > 0)}
    out["total"] = out["params"] + out["grads"] + out["optimizer"]
    return out


def reference_adam(args, data) -> tuple[dict, list[float]]:
    """Plain Adam in one process on each whole global batch: what ZeRO-3 must reproduce."""
    (x, y), _ = data
    model = build_model(args.hidden, args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    losses = []
    for idx in global_batches(len(x), args.batch, args.steps, args.seed):
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {k: v.detach() for k, v in model.state_dict().items()}, losses


def main(argv=None) -> int:
    args = parse_args(argv)
    deepspeed = import_deepspeed()
    from deepspeed.accelerator import get_accelerator

    if "WORLD_SIZE" not in os.environ:
        raise SystemExit("start this script with torchrun (see its docstring); --nproc-per-node=1 for one rank")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))  # torchrun's ranks share the cores
    # Torch 2.13 flags the two collectives ZeRO-3 calls on every step as deprecated (renamed
    # *_single), one FutureWarning per call: silence those two messages, nothing else. (DeepSpeed's
    # own logger already shows only warnings and errors.)
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` "
                            r"is deprecated", category=FutureWarning)
    if not args.shm_op:
        skip_shm_op(deepspeed)
    start = time.perf_counter()
    deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name())  # gloo on CPU
    init_s = time.perf_counter() - start  # with --shm-op: loading the op, compiling it the first time
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        if args.batch % world:
            raise SystemExit(f"--batch {args.batch} must be a multiple of the {world} ranks")
        per = args.batch // world
        device = torch.device(get_accelerator().device_name(int(os.environ.get("LOCAL_RANK", 0))))
        data = load_digits(args.data)
        (x, y), _ = data
        model = build_model(args.hidden, args.seed)  # the same initial weights as train_dist.py
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)  # a plain torch optimizer: nothing to compile
        start = time.perf_counter()
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=zero3_config(args.batch))
        initialize_s = time.perf_counter() - start

        losses, times = [], []
        for idx in global_batches(len(x), args.batch, args.steps, args.seed):
            mine = idx[rank * per:(rank + 1) * per]  # this rank's slice of the global batch
            xb, yb = x[mine].to(device), y[mine].to(device)
            start = time.perf_counter()
            loss = F.cross_entropy(engine(xb), yb)  # parameters all-gathered layer by layer, then freed
            engine.backward(loss)  # gradients reduce-scattered: each rank keeps its partition's average
            engine.step()  # Adam on this rank's partition only (and zeroes the gradients)
            times.append(time.perf_counter() - start)
            losses.append(loss.detach().float())

        curve = torch.stack(losses).to(device)
        dist.all_reduce(curve)  # each rank's loss is on its slice: the global loss is their mean
        curve = (curve / world).cpu().tolist()
        timed = times[args.warmup:]
        mine_info = {"rank": rank, "state_bytes": zero3_bytes(engine), "init_distributed_s": init_s,
                     "initialize_s": initialize_s, "step_ms": 1e3 * statistics.median(timed) if timed else None,
                     "partition_numel": sum(p.ds_tensor.numel() for p in engine.module.parameters())}
        per_rank = [None] * world
        dist.all_gather_object(per_rank, mine_info)
        # every rank joins the gather; rank 0 copies the full tensors out
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            params = {k: v.detach().cpu().clone() for k, v in engine.module.state_dict().items()} if rank == 0 else None

        if rank == 0:
            ref_params, ref_losses = reference_adam(args, data)
            n_params = sum(v.numel() for v in params.values())
            summary = {"world": world, "deepspeed": deepspeed.__version__, "torch": torch.__version__,
                       "accelerator": get_accelerator()._name, "backend": dist.get_backend(),
                       "config": zero3_config(args.batch), "args": {k: str(v) for k, v in vars(args).items()},
                       "n_params": n_params,  # the ZeRO arithmetic for fp32 Adam: 4 + 4 + 8 bytes per parameter
                       "full_state_bytes": distributed.zero_bytes(n_params, 1, 0)["total"],
                       "zero3_formula_bytes": distributed.zero_bytes(n_params, world, 3)["total"],
                       "loss": curve, "reference_loss": ref_losses, "per_rank": per_rank,
                       "max_diff_vs_single": distributed.max_difference(params, ref_params)}
            args.out.mkdir(parents=True, exist_ok=True)
            save_params(params, args.out / "deepspeed.safetensors")
            write_atomic(args.out / "deepspeed.json", json.dumps(summary, indent=1) + "\n")
            mib = "/".join(f"{r['state_bytes']['total'] / 2**20:.2f}" for r in per_rank)
            ms = "/".join(f"{r['step_ms']:.1f}" if r["step_ms"] is not None else "-" for r in per_rank)
            print(f"deepspeed ZeRO-3 on {world} rank(s): final loss {curve[-1]:.4f}, "
                  f"median step {ms} ms, model state {mib} MiB "
                  f"per rank (full {summary['full_state_bytes'] / 2**20:.2f}), max |diff| vs one-process Adam "
                  f"{summary['max_diff_vs_single']:.3g}", flush=True)
        return 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
