"""beta-DARTS (Ye et al., CVPR 2022): DARTS with the Beta-Decay regulariser on the architecture loss.

    L_arch = L_val + lambda(t) * L_beta,   L_beta = mean over edges e of log sum_o exp(alpha_{e,o})

The gradient of L_beta is each edge's softmax(alpha) over the number of edges: a decay of the softmax-activated
weights, which keeps them from running away (the paper's remedy for DARTS's collapse). lambda rises linearly with
the epoch: lambda(e) = lambda_start + (lambda_end - lambda_start) * e / E for epoch e (0-based) of E; the beta-DARTS
code writes 0 + 50 * e / 100 for its 100-epoch NAS-Bench-201 search, which this gives with E = 100. In the DARTS
space the mean runs over the edges of both cell types together (the code's DARTS-space script cannot run: it
applies logsumexp to the list of both).
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from ..regularizers import Regularizer
from ..schema import Ge, checked

__all__ = ["BetaDecay", "beta_decay"]


def beta_decay(alphas: list[torch.Tensor]) -> torch.Tensor:
    """L_beta: the mean over every edge (rows of the alphas [E, O] of each cell type) of logsumexp over its ops."""
    return torch.logsumexp(torch.cat(list(alphas)), dim=-1).mean()


class BetaDecay(Regularizer):
    """beta-DARTS: lambda(epoch) * mean over edges of logsumexp(alpha_e), lambda ramped linearly over the search."""

    @checked
    def __init__(self, lambda_start: Annotated[float, Ge(0)] = 0.0, lambda_end: Annotated[float, Ge(0)] = 50.0):
        self.lambda_start, self.lambda_end = float(lambda_start), float(lambda_end)
        self.weight = self.lambda_start

    def set_epoch(self, epoch: int, epochs: int) -> dict[str, float]:
        self.weight = self.lambda_start + (self.lambda_end - self.lambda_start) * epoch / max(epochs, 1)
        return {"beta_decay_lambda": self.weight}

    def __call__(self, net: nn.Module) -> torch.Tensor:
        return self.weight * beta_decay(list(net.cell_alphas().values()))
