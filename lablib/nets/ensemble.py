"""K small models of one architecture trained at once: `Ensemble` stacks them
(`torch.func.stack_module_state`) and runs them with `vmap`, so K tiny models train in one step for
the price of one larger step; each member's loss touches only its own weights, and an element-wise
optimizer (SGD, Adam) then updates each member exactly as K separate optimizers would.
`member_batches` feeds them: one batch per member, each from its own data (and replay memory)."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from lablib.core.validate import batch, integer, labels, module, positive_int, real

__all__ = ["Ensemble", "member_batches"]


class Ensemble(nn.Module):
    """K models of one architecture, stacked and run together (torch.func.stack_module_state +
    vmap): forward(x) takes x of shape (K, B, ...), one batch per member (x.expand(K, ...) shares
    one), and returns (K, B, outputs). `params()` gives the stacked parameters by the
    single model's names (each of shape (K, ...)); `member(k)` a separate copy of member k."""

    def __init__(self, models):
        super().__init__()
        if isinstance(models, nn.Module) or not isinstance(models, (list, tuple)) or not models:
            raise TypeError(f"models must be a non-empty list of nn.Module, got {type(models).__name__}")
        for i, m in enumerate(models):
            module(f"models[{i}]", m)
        shapes = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in models]
        for i, s in enumerate(shapes[1:], start=1):
            if s != shapes[0]:
                raise ValueError(f"models[{i}] has other parameters than models[0]: all members need one architecture")
        if not shapes[0]:
            raise ValueError("models[0] has no parameters")
        params, buffers = stack_module_state(list(models))
        self.names = list(params)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach().clone()) for n in self.names])
        self.buffer_names = list(buffers)
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"buffer_{i}", buffers[n].clone())
        self._template = [copy.deepcopy(models[0])]  # in a list: not a submodule (its weights are not ours)
        self.size = len(models)

    def __len__(self) -> int:
        return self.size

    def params(self) -> dict[str, torch.Tensor]:
        """The stacked parameters, name -> (K, ...) tensor (the optimizer's leaves)."""
        return dict(zip(self.names, self.stacked, strict=True))

    def _buffers_dict(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, f"buffer_{i}") for i, n in enumerate(self.buffer_names)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 2 or x.shape[0] != self.size:
            raise ValueError(f"x must hold one batch per member, shape ({self.size}, B, ...), got {tuple(x.shape)}: "
                             f"for one batch shared by all, pass x.expand({self.size}, *x.shape)")
        base = self._template[0]

        def one(p, b, xi):
            return functional_call(base, (p, b), (xi,))

        return vmap(one)(self.params(), self._buffers_dict(), x)

    def member(self, k: int) -> nn.Module:
        """A separate copy of member k, with its current weights (a plain model)."""
        k = integer("k", k, -self.size, self.size - 1) % self.size
        model = copy.deepcopy(self._template[0])
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(self.params()[n][k])
            for n, b in model.named_buffers():
                if n in self.buffer_names:
                    b.copy_(self._buffers_dict()[n][k])
        return model


def member_batches(data, batch_size: int, seed: int = 0, replay=None,
                   replay_fraction: float = 0.5) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches for K members trained at once: yields (x, y) of shapes (K, B, ...) and (K, B).

    data: one (x, y) per member (its own task; sizes may differ; every x of one example shape).
    replay: None, or one (x, y) or None per member: a member with a buffer draws
        round(replay_fraction * B) of each batch from it, the rest from its data.
    Examples are drawn uniformly with replacement (seeded), each member from its own sets.
    """
    if not isinstance(data, (list, tuple)) or not data:
        raise TypeError(f"data must be a non-empty list of (x, y) pairs, one per member, got {type(data).__name__}")
    batch_size = positive_int("batch_size", batch_size)
    seed = integer("seed", seed, 0, 2**63 - 1)
    fraction = real("replay_fraction", replay_fraction, 0.0, 1.0)
    if replay is None:
        replay = [None] * len(data)
    if not isinstance(replay, (list, tuple)) or len(replay) != len(data):
        raise ValueError(f"replay must be None or a list of {len(data)} entries ((x, y) or None), one per member")

    def pair(name, p):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise TypeError(f"{name} must be a pair (x, y), got {type(p).__name__}")
        x = batch(f"{name} x", p[0])
        return x, labels(f"{name} y", p[1], len(x))

    sets = [pair(f"data[{i}]", p) for i, p in enumerate(data)]
    memories = [None if r is None else pair(f"replay[{i}]", r) for i, r in enumerate(replay)]
    shape = sets[0][0].shape[1:]
    named = [(f"data[{i}]", p) for i, p in enumerate(sets)] + [(f"replay[{i}]", m) for i, m in enumerate(memories) if m is not None]
    for name, (x, _) in named:
        if x.shape[1:] != shape:
            raise ValueError(f"{name} x has examples of shape {tuple(x.shape[1:])}, but data[0]'s are {tuple(shape)}: "
                             "every member's examples must have one shape")
    return _batches(sets, memories, batch_size, round(fraction * batch_size), seed)


def _batches(sets, memories, batch_size, n_old, seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        xs, ys = [], []
        for (x, y), memory in zip(sets, memories, strict=True):
            if memory is None:
                idx = torch.randint(0, len(x), (batch_size,), generator=g)
                xs.append(x[idx])
                ys.append(y[idx])
            else:
                idx = torch.randint(0, len(x), (batch_size - n_old,), generator=g)
                old = torch.randint(0, len(memory[0]), (n_old,), generator=g)
                xs.append(torch.cat([x[idx], memory[0][old]]))
                ys.append(torch.cat([y[idx], memory[1][old]]))
        yield torch.stack(xs), torch.stack(ys)
