"""Reference answers for lab 04 (mixed precision)."""

import torch
import torch.nn.functional as F

from lablib.nets import train


def my_clipped_step(model, x, y, opt, scaler, device, precision, max_norm):
    """The mixed-precision step with the gradient norm clipped to max_norm: unscale first."""
    with train.autocast(device, precision):
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)  # the true gradients, so that clipping sees their real norm
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(opt)  # knows the gradients are unscaled already: does not divide again
    scaler.update()
    return loss.detach()


def my_round_to_bf16(x):
    """fp32 -> bf16 -> fp32 with integer bit operations: round to nearest (ties to even), then
    keep the upper 16 bits (sign, 8 exponent bits, 7 mantissa bits). x.to(torch.bfloat16).float()
    gives the same."""
    bits = x.view(torch.int32)
    lowest_kept = (bits >> 16) & 1  # a tie goes to the neighbour whose last kept bit is 0
    rounded = bits + 0x7FFF + lowest_kept
    return (rounded & -65536).view(torch.float32)  # -65536 is 0xFFFF0000


def my_min_scale(grads):
    """The smallest power of two 2**k that keeps every non-zero gradient above zero in fp16."""
    nonzero = grads != 0
    k = 0
    while ((grads.float() * 2.0**k).half() == 0)[nonzero].any():
        k += 1
    return 2.0**k
