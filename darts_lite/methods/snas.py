"""SNAS (Xie et al., ICLR 2019): stochastic NAS with a soft (concrete) Gumbel-softmax sample per edge.

The op weights of an edge are softmax((alpha + g) / lambda), g ~ Gumbel(0, 1) per op, drawn anew on every forward
pass (one sample per cell type, shared by its cells): every op runs, weighted by the sample, and the gradient
reaches every alpha (no hard one-hot, unlike GDAS). The alphas act as log-probabilities; a softmax is unchanged by
a shift of its row, so log-softmaxed and raw alphas give the same sample.

The temperature lambda is annealed per epoch as the SNAS code does: before epoch e (0-based) of E it is
lambda_min + (lambda_0 - lambda_min) * (1 - (e + 1) / E), never below lambda_min (the code hard-codes E = 150, its
search length; here E is the search's ``epochs``). Defaults: lambda_0 = 1, lambda_min = 0.03, the code's.
"""

from __future__ import annotations

from typing import Annotated

import torch

from ..relax import AnnealedRelaxation, EdgeWeights
from ..schema import Gt, Hint, checked

__all__ = ["SoftGumbelRelaxation", "snas_temperature"]


def snas_temperature(epoch: int, epochs: int, tau_max: float = 1.0, tau_min: float = 0.03) -> float:
    """SNAS's temperature for epoch ``epoch`` (0-based) of ``epochs``: linear from just below tau_max to tau_min at the
    last epoch, floored at tau_min."""
    fraction = 1.0 - (epoch + 1) / max(epochs, 1)
    return max(tau_min + (tau_max - tau_min) * fraction, tau_min)


class SoftGumbelRelaxation(AnnealedRelaxation):
    """SNAS: a soft Gumbel-softmax sample of each edge's alphas, every op weighted by it; temperature annealed."""

    @checked
    def __init__(self, tau_max: Annotated[float, Gt(0), Hint("the temperature the annealing starts from")] = 1.0,
                 tau_min: Annotated[float, Gt(0), Hint("the temperature of the last epoch")] = 0.03):
        super().__init__(tau_max, tau_min)

    def schedule(self, epoch: int, epochs: int) -> float:
        return snas_temperature(epoch, epochs, self.tau_max, self.tau_min)

    def __call__(self, alphas: torch.Tensor) -> EdgeWeights:
        return EdgeWeights(self.gumbel_softmax(alphas))
