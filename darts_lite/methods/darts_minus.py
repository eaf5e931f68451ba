"""DARTS- (Chu et al., ICLR 2021): an auxiliary skip connection beside every edge, outside the architecture choice.

Each edge outputs beta * skip(x) + sum_o softmax(alpha)_o * o(x): skip is the identity on stride-1 edges and a
factorized reduction (1x1 convolutions, no BN affine) on the stride-2 edges of reduction cells, as the DARTS- code
builds it. The skip's advantage in the gradient flow then no longer has to be won by the skip_connect op, which
DARTS- shows is what drives DARTS's collapse. beta decays linearly over the search: before epoch e (0-based) of E it
is beta_0 * (1 - e / E), the code's linear decay (1 at the first epoch, 1/E at the last); ``decay="none"`` keeps
it at beta_0. The skip has no alpha and never enters the genotype.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F

from ..relax import EdgeWeights, Relaxation
from ..schema import Ge, checked

__all__ = ["AuxiliarySkipRelaxation", "skip_coefficient"]


def skip_coefficient(epoch: int, epochs: int, beta: float = 1.0, decay: str = "linear") -> float:
    """DARTS-'s beta before epoch ``epoch`` (0-based) of ``epochs``."""
    if decay == "none":
        return float(beta)
    return float(beta) * (1.0 - min(max(epoch, 0), epochs) / max(epochs, 1))


class AuxiliarySkipRelaxation(Relaxation):
    """DARTS-: softmax op weights plus an auxiliary skip connection on every edge, its coefficient decaying to 0."""

    auxiliary_skip = True  # the supernet builds the skip branches (darts_lite.spaces) when its relaxation says so

    @checked
    def __init__(self, beta: Annotated[float, Ge(0)] = 1.0, decay: Literal["linear", "none"] = "linear"):
        self.beta0, self.decay = float(beta), decay
        self.beta = self.beta0

    def set_epoch(self, epoch: int, epochs: int) -> dict[str, float]:
        self.beta = skip_coefficient(epoch, epochs, self.beta0, self.decay)
        return {"skip_beta": self.beta}

    def __call__(self, alphas: torch.Tensor) -> EdgeWeights:
        return EdgeWeights(F.softmax(alphas, dim=-1), skip=self.beta)
