"""Widening an op in place of a narrower one (DrNAS's progressive learning, ``Supernet.set_partial_channels``).

When a partial-channel supernet moves to a smaller K, each edge's ops are rebuilt for C/K' channels instead of C/K
and filled from the narrower ones: every channel the narrow op had keeps its weights, and each added channel is a
copy of a channel of the same layer drawn uniformly at random (DrNAS's net2wider, its ``*ChannelWider`` functions,
with the draws in the same order). Inside an op the copies follow the data: the 1x1 convolution after a depthwise
one reads its added input channels through the depthwise conv's copies, and a BatchNorm after convolutions copies
the statistics of the channels those convolutions copied (a factorized reduction's two convolutions each place their
channels in its own half). An op's first convolution draws the copies of its input channels on its own, as DrNAS's
code does: those added inputs are channels of the edge's input the narrow op never read.

A widening is described per tensor as ``(dim, source)`` pairs: the new tensor is the old one indexed by ``source``
along ``dim`` (``source[i]``: the old channel the new channel i copies; the first entries are 0, 1, ... n_old - 1).
The optimiser's momentum of a widened weight is widened by the same pairs (``widen_tensor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Widened", "widen_op", "widen_tensor"]

Source = tuple[int, torch.Tensor]  # (dim, the old index of every new position along it)


@dataclass
class Widened:
    """One parameter of a widened op: the narrow op's, the wide op's, and how the second was made from the first."""

    old: nn.Parameter
    new: nn.Parameter
    sources: tuple[Source, ...]


def widen_tensor(t: torch.Tensor, sources: Sequence[Source]) -> torch.Tensor:
    """``t`` indexed by each (dim, source) in turn: the widened copy of a narrow op's tensor (or of its momentum)."""
    for dim, source in sources:
        t = t.index_select(dim, source.to(t.device))
    return t


def _grown(n_old: int, n_new: int) -> torch.Tensor:
    """0..n_old-1, then n_new - n_old channels drawn uniformly from them (DrNAS: torch.randint, the global stream)."""
    if n_new < n_old:
        raise ValueError(f"an op can only be widened: {n_old} channels -> {n_new}")
    kept = torch.arange(n_old)
    return kept if n_new == n_old else torch.cat([kept, torch.randint(0, n_old, (n_new - n_old,))])


def _is_depthwise(conv: nn.Conv2d) -> bool:
    if conv.groups == 1:
        return False
    if conv.groups == conv.in_channels == conv.out_channels:
        return True
    raise ValueError(f"cannot widen a grouped convolution that is not depthwise ({conv})")


def widen_op(old: nn.Module, new: nn.Module) -> list[Widened]:
    """Fill ``new`` (the op ``old`` is, built for more channels) from ``old``, as the module docstring says; returns
    each parameter's widening, for the optimiser's state. Buffers (BatchNorm statistics) are widened too."""
    olds = dict(old.named_modules())
    widened: list[Widened] = []
    depthwise_out: torch.Tensor | None = None  # the copies of the last module, when it was a depthwise conv
    pending: list[tuple[torch.Tensor, int]] = []  # each conv since the last BatchNorm: (its output source, its old width)

    def fill(name: str, m_old: nn.Module, m_new: nn.Module, sources: tuple[Source, ...]) -> None:
        for attr, t_old in list(m_old.named_parameters(recurse=False)) + list(m_old.named_buffers(recurse=False)):
            t_new = getattr(m_new, attr)
            if t_old is None or t_new is None:
                continue
            src = tuple((d, s) for d, s in sources if d < t_old.dim()) if t_old.dim() else ()
            value = widen_tensor(t_old.detach(), src)
            if value.shape != t_new.shape:
                raise ValueError(f"{name}.{attr}: widened to {tuple(value.shape)}, the wide op has {tuple(t_new.shape)}")
            with torch.no_grad():
                t_new.copy_(value)
            if isinstance(t_old, nn.Parameter):
                widened.append(Widened(t_old, t_new, src))

    for name, m_new in new.named_modules():
        m_old = olds.get(name)
        if m_old is None or type(m_old) is not type(m_new):
            raise ValueError(f"cannot widen {type(old).__name__} into {type(new).__name__}: their modules differ at "
                             f"{name or 'the top'}")
        if isinstance(m_new, nn.Conv2d):
            depthwise = _is_depthwise(m_old)
            if depthwise:
                out = _grown(m_old.out_channels, m_new.out_channels)
                sources: tuple[Source, ...] = ((0, out),)
            else:
                grow_in = m_new.in_channels - m_old.in_channels
                tied = depthwise_out is not None and len(depthwise_out) == m_new.in_channels and grow_in > 0
                source_in = depthwise_out if tied else _grown(m_old.in_channels, m_new.in_channels)
                out = _grown(m_old.out_channels, m_new.out_channels)
                sources = ((1, source_in), (0, out))
            fill(name, m_old, m_new, sources)
            # a conv reading the previous conv's output starts the channels a BatchNorm will see; convs side by side on
            # one input (a factorized reduction's two) each add their part
            part = (out, m_old.out_channels)
            pending = [part] if depthwise or depthwise_out is not None else [*pending, part]
            depthwise_out = out if depthwise else None
        elif isinstance(m_new, nn.modules.batchnorm._BatchNorm):
            if pending and sum(n for _, n in pending) == m_old.num_features and \
                    sum(len(s) for s, _ in pending) == m_new.num_features:
                offsets = [sum(n for _, n in pending[:i]) for i in range(len(pending))]
                source = torch.cat([s + o for (s, _), o in zip(pending, offsets)])
            else:
                source = _grown(m_old.num_features, m_new.num_features)
            fill(name, m_old, m_new, ((0, source),))
            pending, depthwise_out = [], None
        elif any(True for _ in m_new.parameters(recurse=False)):
            raise ValueError(f"cannot widen {type(m_new).__name__} ({name}): only convolutions and BatchNorm layers")
    return widened
