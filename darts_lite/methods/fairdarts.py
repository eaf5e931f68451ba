"""FairDARTS (Chu et al., ECCV 2020): ops weighted by independent sigmoids, pushed to 0 or 1 by the zero-one loss.

Each op of an edge is weighted by sigmoid(alpha_{e,o}) on its own (no softmax: ops cooperate instead of competing,
so a skip connection's early advantage does not starve the others). The zero-one loss

    L_01 = -w01 * mean over every alpha of (sigmoid(alpha) - 0.5)^2,   w01 = 10 (the code's aux_loss_weight)

joins the architecture loss and drives each weight away from 0.5. (The FairDARTS code also adds it to the weight
step's loss, where it changes nothing: it holds no weight.) The genotype ranks edges and ops by sigmoid(alpha).
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from ..regularizers import Regularizer
from ..relax import EdgeWeights, Relaxation
from ..schema import Ge, checked

__all__ = ["SigmoidRelaxation", "ZeroOneLoss", "zero_one_loss"]


class SigmoidRelaxation(Relaxation):
    """FairDARTS: each op weighted by sigmoid(alpha) independently; every op runs."""

    def __call__(self, alphas: torch.Tensor) -> EdgeWeights:
        return EdgeWeights(torch.sigmoid(alphas))

    def strengths(self, alphas: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(alphas)


def zero_one_loss(alphas: list[torch.Tensor]) -> torch.Tensor:
    """-mean((sigmoid(alpha) - 0.5)^2) over every alpha of every cell type."""
    s = torch.sigmoid(torch.cat([a.flatten() for a in alphas]))
    return -((s - 0.5) ** 2).mean()


class ZeroOneLoss(Regularizer):
    """FairDARTS's zero-one loss: -weight * mean over every alpha of (sigmoid(alpha) - 0.5)^2."""

    @checked
    def __init__(self, weight: Annotated[float, Ge(0)] = 10.0):
        self.weight = float(weight)

    def __call__(self, net: nn.Module) -> torch.Tensor:
        return self.weight * zero_one_loss(list(net.cell_alphas().values()))
