"""What the search networks of every space share: alphas initialised as the reference code does, the weights as
every other parameter, and the relaxation's temperature."""

from __future__ import annotations

import torch
from torch import nn

from ..relax import GumbelRelaxation, Relaxation

ALPHA_INITS = ("randn", "zeros")  # what new_alphas takes


def new_alphas(shape: tuple[int, ...], alpha_init: str) -> nn.Parameter:
    """Alphas of ``shape``: "randn" is the reference code's 1e-3 * N(0, 1), "zeros" the DARTS paper's text."""
    if alpha_init == "randn":
        return nn.Parameter(1e-3 * torch.randn(shape))
    if alpha_init == "zeros":
        return nn.Parameter(torch.zeros(shape))
    raise ValueError(f"alpha_init must be 'randn' or 'zeros', got {alpha_init!r}")


class Supernet(nn.Module):
    """Base of a space's SearchNetwork: it sets ``relaxation`` and defines ``arch_parameters()``."""

    relaxation: Relaxation

    def arch_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the alphas: what the weight optimiser trains."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    @property
    def tau(self) -> float | None:
        """The Gumbel temperature (None with the softmax relaxation)."""
        return self.relaxation.tau if isinstance(self.relaxation, GumbelRelaxation) else None

    @tau.setter
    def tau(self, value: float) -> None:
        if not isinstance(self.relaxation, GumbelRelaxation):
            raise AttributeError("tau applies to the gumbel relaxation only")
        self.relaxation.tau = float(value)
