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

from typing import Annotated, Any

import torch
import torch.nn.functional as F

from ..relax import EdgeWeights, Relaxation
from ..schema import Gt, Hint, checked

__all__ = ["SoftGumbelRelaxation", "snas_temperature"]


def snas_temperature(epoch: int, epochs: int, tau_max: float = 1.0, tau_min: float = 0.03) -> float:
    """SNAS's temperature for epoch ``epoch`` (0-based) of ``epochs``: linear from just below tau_max to tau_min at the
    last epoch, floored at tau_min."""
    fraction = 1.0 - (epoch + 1) / max(epochs, 1)
    return max(tau_min + (tau_max - tau_min) * fraction, tau_min)


class SoftGumbelRelaxation(Relaxation):
    """SNAS: a soft Gumbel-softmax sample of each edge's alphas, every op weighted by it; temperature annealed."""

    max_resamples = 100

    @checked
    def __init__(self, tau_max: Annotated[float, Gt(0), Hint("the temperature the annealing starts from")] = 1.0,
                 tau_min: Annotated[float, Gt(0), Hint("the temperature of the last epoch")] = 0.03):
        self.tau_max, self.tau_min = float(tau_max), float(tau_min)
        self.tau = self.tau_max

    @classmethod
    def config_problems(cls, rules: Any) -> list[str]:
        v = rules.values
        if v["tau_max"] < v["tau_min"]:
            return [f"{rules.key('tau_max')}={v['tau_max']}: must be >= {rules.key('tau_min')}"]
        return []

    def set_epoch(self, epoch: int, epochs: int) -> dict[str, float]:
        self.tau = snas_temperature(epoch, epochs, self.tau_max, self.tau_min)
        return {"tau": self.tau}

    def __call__(self, alphas: torch.Tensor) -> EdgeWeights:
        for _ in range(self.max_resamples):
            gumbel = -torch.empty_like(alphas).exponential_().log()
            weights = F.softmax((alphas + gumbel) / self.tau, dim=-1)
            # a zero draw of Exponential(1) gives inf noise: redraw
            if torch.isfinite(gumbel).all() and torch.isfinite(weights).all():
                return EdgeWeights(weights)
        raise FloatingPointError(f"Gumbel sampling gave non-finite weights {self.max_resamples} times; the alphas are "
                                 f"probably non-finite: {alphas}")
