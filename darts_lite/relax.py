"""Relaxations: how an edge turns its alphas into op weights. The only place DARTS and GDAS differ.

A relaxation maps alphas [E, O] (E edges, O ops) to an ``EdgeWeights``:
- ``weights`` [E, O]: the multiplier of each op's output;
- ``index``: ``None`` when every op runs (softmax), else one op index per edge, the only op the
  edge computes (hard Gumbel).

Adding PC-DARTS, SNAS or DrNAS should mean adding a relaxation here, not a new network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class EdgeWeights:
    weights: torch.Tensor  # [E, O]
    index: list[int] | None = None  # per edge, the single op to run; None = run all


class SoftmaxRelaxation:
    """DARTS: a softmax over all ops of an edge; the edge outputs the weighted sum."""

    name = "softmax"

    def __call__(self, alphas: torch.Tensor) -> EdgeWeights:
        return EdgeWeights(F.softmax(alphas, dim=-1))


class GumbelRelaxation:
    """GDAS: a hard Gumbel-softmax sample per edge; only the sampled op runs.

    probs = softmax((log_softmax(alpha) + g) / tau), g = -log(Exponential(1));
    weights = one_hot(argmax probs) - probs.detach() + probs, so the forward value of the sampled
    op's weight is exactly 1 while its gradient reaches every alpha of the edge through probs.
    """

    name = "gumbel"
    max_resamples = 100

    def __init__(self, tau: float = 10.0):
        self.tau = float(tau)

    def __call__(self, alphas: torch.Tensor) -> EdgeWeights:
        log_p = F.log_softmax(alphas, dim=-1)
        for _ in range(self.max_resamples):
            gumbel = -torch.empty_like(alphas).exponential_().log()
            probs = F.softmax((log_p + gumbel) / self.tau, dim=-1)
            index = probs.argmax(dim=-1, keepdim=True)
            one_hot = torch.zeros_like(probs).scatter_(-1, index, 1.0)
            weights = one_hot - probs.detach() + probs
            # a zero draw of Exponential(1) gives inf noise; such samples are redrawn, as in GDAS
            if torch.isfinite(gumbel).all() and torch.isfinite(weights).all():
                return EdgeWeights(weights, index.squeeze(-1).tolist())
        raise FloatingPointError(
            f"Gumbel sampling gave non-finite weights {self.max_resamples} times; the alphas are "
            f"probably non-finite: {alphas}"
        )


Relaxation = SoftmaxRelaxation | GumbelRelaxation

RELAXATIONS = {"softmax": SoftmaxRelaxation, "gumbel": GumbelRelaxation}


def make_relaxation(name: str, **kwargs) -> Relaxation:
    try:
        cls = RELAXATIONS[name]
    except KeyError:
        raise ValueError(f"unknown relaxation {name!r}; choose one of: {', '.join(RELAXATIONS)}") from None
    return cls(**kwargs) if cls is GumbelRelaxation else cls()


def linear_tau(epoch: int, epochs: int, tau_max: float = 10.0, tau_min: float = 0.1) -> float:
    """GDAS's temperature: tau_max at epoch 0, tau_min at the last epoch (epochs - 1), linear between."""
    if epochs <= 1:
        return float(tau_max)
    epoch = min(max(epoch, 0), epochs - 1)
    return tau_max - (tau_max - tau_min) * epoch / (epochs - 1)
