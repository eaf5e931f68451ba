"""DrNAS (Chen et al., ICLR 2021): architecture search as learning a Dirichlet distribution over each edge's ops.

The op weights of an edge are a reparameterised sample of Dirichlet(beta), beta = elu(alpha) + 1 (positive for
every alpha), drawn anew on every forward pass; the gradient reaches the alphas through the sample (pathwise
derivative). One sample per cell type and pass, shared by every cell of that type, as the DrNAS code draws it.

Regularisation: the DrNAS scripts default to an L2 penalty on the alphas through the architecture Adam's weight
decay (``reg_scale`` 1e-3, darts_lite's ``search.arch_weight_decay``); their alternative, the KL divergence of
each edge's Dirichlet from the uniform Dirichlet(1), is ``DirichletKL`` (set ``search.arch_weight_decay=0`` with
it, as the scripts do). The genotype is the argmax of the alphas, which is the argmax of the Dirichlet mean.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Dirichlet, kl_divergence

from ..regularizers import Regularizer
from ..relax import EdgeWeights, Relaxation
from ..schema import Gt, checked

__all__ = ["DirichletKL", "DirichletRelaxation", "concentration"]


def concentration(alphas: torch.Tensor) -> torch.Tensor:
    """DrNAS's Dirichlet concentration elu(alpha) + 1, [E, O], every entry > 0."""
    return F.elu(alphas) + 1


class DirichletRelaxation(Relaxation):
    """DrNAS: each edge's op weights are a Dirichlet(elu(alpha) + 1) sample, redrawn every forward pass."""

    def __call__(self, alphas: torch.Tensor) -> EdgeWeights:
        return EdgeWeights(Dirichlet(concentration(alphas)).rsample())


class DirichletKL(Regularizer):
    """DrNAS's KL regulariser: scale * sum over every edge of KL(Dirichlet(elu(alpha) + 1) || Dirichlet(1))."""

    @checked
    def __init__(self, scale: Annotated[float, Gt(0)] = 1e-3):
        self.scale = float(scale)

    def __call__(self, net: nn.Module) -> torch.Tensor:
        total = None
        for alphas in net.cell_alphas().values():
            beta = concentration(alphas)
            kl = kl_divergence(Dirichlet(beta), Dirichlet(torch.ones_like(beta))).sum()
            total = kl if total is None else total + kl
        return self.scale * total
