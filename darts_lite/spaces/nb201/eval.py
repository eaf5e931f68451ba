"""NAS-Bench-201's evaluation network: the genotype's cell in every position, the fixed stem, residual blocks and
head (the benchmark's network). A node read by several ops that start with a ReLU of it is rectified once for all
of them (``darts_lite.spaces.ops.EdgeInput``): the same outputs, one ReLU output kept instead of one per op."""

from __future__ import annotations

import torch
from torch import nn

from ..ops import EdgeInput, run_on
from .genotype import EDGES, NODES, Genotype
from .ops import _Macro, make_op


class EvalCell(nn.Module):
    """A genotype's cell: each edge runs its one op (affine BN with running statistics).

    forward: [B, C_in, H, W] -> [B, C_out, H, W].
    """

    def __init__(self, genotype: Genotype, c_in: int, c_out: int):
        super().__init__()
        self.ops = nn.ModuleList(make_op(op, c_in if j == 0 else c_out, c_out, 1) for op, j in genotype.edges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [EdgeInput(x)]
        for i in range(1, NODES):
            # a `none` edge is computed as zeros, so a node whose every input is `none` still has a value
            nodes.append(EdgeInput(sum(run_on(self.ops[e], nodes[j]) for e, (to, j) in enumerate(EDGES) if to == i)))
        return nodes[-1].x


class EvalNetwork(_Macro):
    """The network a genotype describes, as the benchmark trains it (C=16, N=5).

    forward: x [B, in_channels, H, W] -> logits [B, num_classes].
    """

    def __init__(self, genotype: Genotype | str, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.genotype = Genotype.parse(genotype) if isinstance(genotype, str) else genotype
        if not isinstance(self.genotype, Genotype):
            raise ValueError(f"genotype must be a NAS-Bench-201 Genotype or its text, got {type(genotype).__name__}")
        self._build(C, N, num_classes, in_channels)

    def _make_cell(self, c_in: int, c_out: int) -> nn.Module:
        return EvalCell(self.genotype, c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> logits [B, num_classes]."""
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h)
        return self._head(h)

    def num_parameters(self, auxiliary: bool = False) -> int:
        """Every weight (``auxiliary`` is accepted for the interface the evaluation networks share: this
        network has no auxiliary head)."""
        return sum(p.numel() for p in self.parameters())
