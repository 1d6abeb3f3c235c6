"""Reference answers for lab 17 (a custom operator in C++, registered with torch.library)."""

import torch


def my_sin_mul_add_backward(grad, x, y):
    # out = sin(x) * y + z: each input's gradient with the others held fixed, times grad
    return grad * torch.cos(x) * y, grad * torch.sin(x), grad.clone()


# eager: sin reads x, writes t1 (8 B); mul reads t1 and y, writes t2 (12 B); add reads t2 and z,
# writes out (12 B): 32 bytes per element. Fused: reads x, y, z, writes out: 16 bytes per element.
my_traffic = (32, 16)
