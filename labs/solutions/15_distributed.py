"""Reference answers of lab 15 (distributed training): one function (or value) per exercise,
named as in the lab. Under LAB_SOLUTIONS=1 they replace the learner's stubs."""

import torch

from lablib.methods.distributed import ring_allreduce


def my_average_gradients(grads):
    """DDP's gradient averaging with one bucket: flatten each rank's gradients into one tensor,
    ring-all-reduce the buckets once, divide by the number of ranks, cut the bucket back."""
    names = list(grads[0])
    buckets = [torch.cat([g[k].reshape(-1) for k in names]) for g in grads]
    summed = ring_allreduce(buckets)
    sizes = [grads[0][k].numel() for k in names]
    out = []
    for bucket in summed:
        pieces = (bucket / len(grads)).split(sizes)
        out.append({k: p.reshape(grads[0][k].shape) for k, p in zip(names, pieces, strict=True)})
    return out


def my_zero_bytes(n_params, n_ranks, stage, precision):
    """Bytes per rank under ZeRO `stage`: a sharded part holds ceil(n_params / n_ranks) parameters;
    stage 1 shards the optimizer state, stage 2 also the gradients, stage 3 also the parameters."""
    shard = -(-n_params // n_ranks)
    out = {"params": (shard if stage >= 3 else n_params) * precision.params,
           "grads": (shard if stage >= 2 else n_params) * precision.grads,
           "optimizer": (shard if stage >= 1 else n_params) * precision.optimizer}
    out["total"] = out["params"] + out["grads"] + out["optimizer"]
    return out


# Stage 2 keeps the 2 bytes of fp16 weights on every rank and shards the other 14 bytes:
# 1 - (2 + 14 / N) / 16 >= 0.8  <=>  14 / N <= 1.2  <=>  N >= 11.67, so N = 12.
my_ranks_for_80 = 12
