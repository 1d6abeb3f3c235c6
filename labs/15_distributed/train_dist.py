"""Data-parallel training of a small MLP on the 8x8 digits, the way a real job runs: one process
per rank, started by torchrun, talking over torch.distributed (gloo on CPUs, NCCL on GPUs).

    # from the project's root, its environment active (source .venv/bin/activate); one thread
    # per rank, gloo's sockets on the loopback (lo0 on macOS)
    export OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=lo
    # 2 ranks on this machine; the modes run one after the other, from the same initial weights
    # and on the same global batches
    torchrun --nproc-per-node=2 --master-addr=127.0.0.1 --master-port=29531 \\
        labs/15_distributed/train_dist.py --mode single,manual,ddp,fsdp --out data/15_distributed/run

    # one process, no torchrun
    python labs/15_distributed/train_dist.py --mode single --out data/15_distributed/one

Modes (comma-separated, run in order):
  single  one process trains on the whole global batch (on rank 0 only, when there are several)
  manual  data parallelism by hand: each rank its slice of the batch, then an all-reduce of every
          gradient (allreduce_gradients below, a few lines of torch.distributed)
  ddp     DistributedDataParallel: the same, with bucketed all-reduces overlapped with backward
  fsdp    FSDP2 (fully_shard on each Linear and on the root): parameters, gradients and Adam's
          state sharded over the ranks (ZeRO-3)

Rank 0 writes <out>/summary.json (losses, step times and per-rank model-state bytes of every
mode) and <out>/<mode>.safetensors (the full trained parameters). --save-dcp saves the last mode's
model and optimizer with torch.distributed.checkpoint (each rank writes its own shard);
--load-dcp loads such a checkpoint into the first mode's model before training, whatever the
number of ranks that saved it. Every path must lie under the project's data/ folder.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lablib.core import compat, config
from lablib.core.cache import write_atomic
from lablib.data import datasets
from lablib.methods import distributed

MODES = ("single", "manual", "ddp", "fsdp")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", default="ddp", help=f"comma-separated modes, run in order: {', '.join(MODES)} (default ddp)")
    add_training_args(p)
    p.add_argument("--out", required=True, help="folder under data/ for summary.json and <mode>.safetensors")
    p.add_argument("--save-dcp", metavar="DIR", help="save the last mode's model and optimizer here (a new folder under data/)")
    p.add_argument("--load-dcp", metavar="DIR", help="load model and optimizer from this DCP checkpoint before training")
    p.add_argument("--backend", choices=("gloo", "nccl"), default=None,
                   help="default: nccl with CUDA and at least 2 GPUs (one per local rank), else gloo on the CPU")
    p.add_argument("--bf16", action="store_true", help="fsdp: bf16 parameters and fp32 gradient reductions (GPU)")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes):
        p.error(f"--mode must be a comma-separated list of {', '.join(MODES)}, got {args.mode!r}")
    if args.steps < 0 or args.warmup < 0 or args.batch < 1 or args.hidden < 1 or not args.lr > 0:
        p.error("--steps and --warmup must be >= 0, --batch and --hidden >= 1, --lr > 0")
    check_paths(p, args, ("out", "save_dcp", "load_dcp", "data"))
    if args.save_dcp is not None and args.save_dcp.exists() and any(args.save_dcp.iterdir()):
        p.error(f"--save-dcp {str(args.save_dcp)!r} is not empty: choose a new folder (old shards would mix with new ones)")
    if args.load_dcp is not None and not (args.load_dcp / ".metadata").is_file():
        p.error(f"--load-dcp {str(args.load_dcp)!r} is not a torch.distributed.checkpoint folder (no .metadata)")
    return args


def add_training_args(p: argparse.ArgumentParser) -> None:
    """The options this script shares with train_deepspeed.py: the model, the data, the schedule."""
    p.add_argument("--steps", type=int, default=60, help="optimizer steps (per mode in train_dist.py; default 60)")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the step times (default 5)")
    p.add_argument("--batch", type=int, default=256, help="global batch, split evenly over the ranks (default 256)")
    p.add_argument("--hidden", type=int, default=1024, help="width of the MLP's two hidden layers (default 1024)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and the batches, the same on every rank")
    p.add_argument("--data", metavar="FILE", help="the digits as prepared by save_digits (default: load them from scikit-learn)")


def check_paths(p: argparse.ArgumentParser, args: argparse.Namespace, names) -> None:
    """Every path option must lie under the project's data/ folder (made a Path); --data must exist."""
    data_root = config.data_dir().resolve()
    for name in names:
        value = getattr(args, name)
        if value is None:
            continue
        path = Path(value).resolve()
        if not path.is_relative_to(data_root):
            p.error(f"--{name.replace('_', '-')} {value!r} must lie under the project's data folder {data_root}")
        setattr(args, name, path)
    if getattr(args, "data", None) is not None and not args.data.is_file():
        p.error(f"--data {str(args.data)!r} is not a file")


# --- the process group ------------------------------------------------------------------------------

class Rank:
    """Who this process is: rank, world size, its device and the backend."""

    def __init__(self, backend: str | None):
        launched = "WORLD_SIZE" in os.environ  # torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.backend = backend or ("nccl" if gpus >= max(2, local_world) else "gloo")
        if self.backend == "nccl":
            if gpus < local_world:
                raise SystemExit(f"--backend nccl needs one GPU per local rank: {local_world} ranks, {gpus} GPUs")
            torch.cuda.set_device(self.local_rank)  # before init: NCCL binds each rank to its own GPU
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if launched:
            dist.init_process_group(self.backend)  # reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE from torchrun
        self.distributed = launched

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order (on every rank)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def allreduce_demo(ctx: Rank) -> float:
    """The collective everything here rests on: rank r holds r + 1; after all_reduce every rank
    holds 1 + 2 + ... + N."""
    t = torch.full((4,), float(ctx.rank + 1), device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t[0].item()


def allreduce_gradients(model: nn.Module, world: int) -> None:
    """Data parallelism by hand, after loss.backward(): add every gradient up over the ranks,
    then divide by their number, so each rank holds the gradient of the whole global batch."""
    for p in model.parameters():
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world


# --- model, data, one mode ------------------------------------------------------------------------------

def build_model(hidden: int, seed: int) -> nn.Sequential:
    """64 pixels -> hidden -> hidden -> 10 classes; the same initial weights on every rank (seeded)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def load_digits(path: Path | None = None):
    """((x_train, y_train), (x_test, y_test)), the 8x8 digits flattened to 64 pixels: from `path`
    (written by save_digits) when given, else from scikit-learn, whose import costs each rank
    seconds of start-up."""
    if path is not None:
        d = compat.torch_load(path)
        return (d["x_train"], d["y_train"]), (d["x_test"], d["y_test"])
    splits = datasets.digits(val=0.0, test=0.2, seed=0)
    return (splits.train.x.flatten(1), splits.train.y), (splits.test.x.flatten(1), splits.test.y)


def save_digits(path: Path) -> Path:
    """Prepare the data once for every rank of every launch (--data): a file of plain tensors."""
    (x, y), (x_test, y_test) = load_digits()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    torch.save({"x_train": x, "y_train": y, "x_test": x_test, "y_test": y_test}, tmp)
    os.replace(tmp, path)
    return path


def global_batches(n: int, batch: int, steps: int, seed: int):
    """The indices of each step's global batch: the same sequence on every rank (seeded)."""
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        yield torch.randint(0, n, (batch,), generator=g)


def shard_fsdp(model: nn.Module, ctx: Rank, bf16: bool) -> None:
    """FSDP2: each Linear becomes its own shard group (all-gathered just before it runs, freed after),
    then the root holds whatever is left. Each rank keeps 1/N of every parameter."""
    from torch.distributed.device_mesh import init_device_mesh

    fully_shard, MixedPrecisionPolicy = compat.fsdp2()
    mesh = init_device_mesh(ctx.device.type, (ctx.world,))
    extra = {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)} if bf16 else {}
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh, **extra)
    fully_shard(model, mesh=mesh, **extra)


def dcp_state(net: nn.Module, opt: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(net, opt)  # sharded entries stay sharded: no gather
    return {"model": model_sd, "optim": optim_sd}


def full_params(net: nn.Module, mode: str) -> dict[str, torch.Tensor]:
    """The full parameters on rank 0 (a gather for fsdp, which every rank must join)."""
    if mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(net, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    model = net.module if mode == "ddp" else net
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def run_mode(mode: str, args, ctx: Rank, data, first: bool, last: bool) -> dict | None:
    (x, y), _ = data
    if mode == "single" and ctx.rank != 0:
        return None  # rank 0 alone trains; the others wait at the barrier after this mode
    if mode != "single" and not ctx.distributed:
        raise SystemExit(f"--mode {mode} needs several processes: start the script with torchrun")
    rank, world = (0, 1) if mode == "single" else (ctx.rank, ctx.world)
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must be a multiple of the {world} ranks")
    per = args.batch // world
    model = build_model(args.hidden, args.seed).to(ctx.device)
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        # gradient_as_bucket_view: the gradients live in DDP's all-reduce buckets, not in a copy
        net = DDP(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
                  gradient_as_bucket_view=True)
    elif mode == "fsdp":
        shard_fsdp(model, ctx, args.bf16)
        net = model
    else:
        net = model
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    if first and args.load_dcp is not None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        state = dcp_state(net, opt)
        dcp.load(state, checkpoint_id=args.load_dcp)  # each rank reads the pieces of its own shard
        set_state_dict(net, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    losses, times, comm = [], [], []
    for idx in global_batches(len(x), args.batch, args.steps, args.seed):
        mine = idx[rank * per:(rank + 1) * per]  # this rank's slice of the global batch
        xb, yb = x[mine].to(ctx.device), y[mine].to(ctx.device)
        start = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(net(xb), yb)
        loss.backward()
        if mode == "manual":
            sync = time.perf_counter()
            allreduce_gradients(net, world)
            comm.append(time.perf_counter() - sync)
        opt.step()
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        losses.append(loss.detach().float())
    state_bytes = distributed.model_state_bytes(net, opt)
    loss_curve = torch.stack(losses).cpu() if losses else torch.zeros(0)
    if mode != "single":  # each rank's loss is on its slice: the global batch's loss is their mean
        loss_curve = loss_curve.to(ctx.device)
        dist.all_reduce(loss_curve, op=dist.ReduceOp.SUM)
        loss_curve = (loss_curve / world).cpu()
    params = full_params(net, mode)
    timed = times[args.warmup:]
    mine = {"step_ms": 1e3 * statistics.median(timed) if timed else None, "state_bytes": state_bytes,
            "allreduce_ms": 1e3 * statistics.median(comm[args.warmup:]) if comm[args.warmup:] else None}
    if last and args.save_dcp is not None:
        import torch.distributed.checkpoint as dcp

        dcp.save(dcp_state(net, opt), checkpoint_id=args.save_dcp)  # every rank writes its own shard
    per_rank = ctx.gather(mine) if mode != "single" else [mine]
    return {"loss": loss_curve.tolist(), "params": params, "per_rank": per_rank, "ranks": world}


@torch.no_grad()
def test_accuracy(params: dict, hidden: int, data) -> float:
    _, (x_test, y_test) = data
    model = build_model(hidden, 0)
    model.load_state_dict(params)
    return 100 * (model(x_test).argmax(1) == y_test).float().mean().item()


def save_params(params: dict, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    save_file({k: v.detach().cpu().float().contiguous() for k, v in params.items()}, str(tmp))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # an ordinary file, like the summary beside it
    os.replace(tmp, path)  # a reader never sees half a file


def say(line: str) -> None:
    """One line in one write: the ranks share the terminal, and print's separate newline could
    land after another rank's text."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))  # torchrun's ranks share the cores
    ctx = Rank(args.backend)
    try:
        summary = {"world": ctx.world, "backend": ctx.backend, "device": str(ctx.device), "torch": torch.__version__,
                   "args": {k: str(v) for k, v in vars(args).items()}, "modes": {}}
        if ctx.distributed:
            got = allreduce_demo(ctx)
            say(f"rank {ctx.rank}/{ctx.world} on {socket.gethostname()} (pid {os.getpid()}, {ctx.backend}, "
                f"{ctx.device}): all_reduce of {ctx.rank + 1} gave {got:g}")
            summary["allreduce"] = ctx.gather(got)
        data = load_digits(args.data)
        if ctx.rank == 0:
            args.out.mkdir(parents=True, exist_ok=True)
        for i, mode in enumerate(args.modes):
            result = run_mode(mode, args, ctx, data, first=i == 0, last=i == len(args.modes) - 1)
            if ctx.distributed:
                dist.barrier()  # the next mode starts together on every rank
            if ctx.rank != 0:
                continue
            save_params(result["params"], args.out / f"{mode}.safetensors")
            acc = test_accuracy(result["params"], args.hidden, data)
            n_params = sum(v.numel() for v in result["params"].values())
            summary["modes"][mode] = {"ranks": result["ranks"], "loss": result["loss"], "test_acc": acc,
                                      "n_params": n_params, "per_rank": result["per_rank"]}
            ms = [r["step_ms"] for r in result["per_rank"]]
            ms_text = "/".join(f"{m:.1f}" for m in ms) if all(m is not None for m in ms) else "-"
            mib = "/".join(f"{r['state_bytes']['total'] / 2**20:.2f}" for r in result["per_rank"])
            final = f"{result['loss'][-1]:.4f}" if result["loss"] else "-"
            say(f"{mode:>6} on {result['ranks']} rank(s): final loss {final}, test acc {acc:.1f} %, "
                f"median step {ms_text} ms, model state {mib} MiB per rank")
        if ctx.rank == 0:
            write_atomic(args.out / "summary.json", json.dumps(summary, indent=1) + "\n")
        return 0
    finally:
        if ctx.distributed and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
