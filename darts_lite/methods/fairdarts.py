"""FairDARTS (Chu et al., ECCV 2020): ops weighted by independent sigmoids, pushed to 0 or 1 by the zero-one loss.

Each op of an edge is weighted by sigmoid(alpha_{e,o}) on its own (no softmax: ops cooperate instead of competing,
so a skip connection's early advantage does not starve the others). The zero-one loss

    L_01 = -w01 * mean over every alpha of (sigmoid(alpha) - 0.5)^2,   w01 = 10 (the code's aux_loss_weight)

joins the architecture loss and drives each weight away from 0.5. (The FairDARTS code also adds it to the weight
step's loss, where it changes nothing: it holds no weight.) The genotype ranks edges and ops by sigmoid(alpha).

Threshold selection (``search.selection=threshold``, ``threshold_selection``; the FairDARTS script's default, its
``threshold_sparse``): per node the two strongest edges, as the top-2 rule, each keeping its strongest op only if
that op's sigmoid is at least ``search.selection_threshold`` (0.85). A node may end with one input or none: the
genotype marks a left-out edge ``none``, and the cell concatenates only the nodes that kept an edge. DARTS space only.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import nn

from ..errors import ConfigError
from ..regularizers import Regularizer
from ..relax import EdgeWeights, Relaxation
from ..schema import Ge, checked
from ..tricks.selection import SelectionResult

__all__ = ["THRESHOLD_COLUMNS", "SigmoidRelaxation", "ZeroOneLoss", "threshold_selection", "zero_one_loss"]

THRESHOLD_COLUMNS = ("cell", "node", "input", "op", "strength", "kept")  # selection.csv: one row per chosen edge


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


def threshold_selection(module: nn.Module, dm: Any = None, seed: int = 0, threshold: float | None = None,
                        **kwargs: Any) -> SelectionResult:
    """FairDARTS's threshold selection on a searched DARTS-space supernet (``module.net``): the top-2 rule's edges,
    each kept only if its op's strength (the relaxation's: sigmoid(alpha) for FairDARTS) reaches ``threshold``
    (default ``search.selection_threshold``). selection.csv gets one row per edge the top-2 rule chose: its cell,
    node (state index), input, op, strength and whether it is kept. Needs no data: ``dm`` and ``seed`` are unused."""
    net = module.net
    if threshold is None:
        threshold = module.hparams.get("selection_threshold", 0.85)
    threshold = float(threshold)
    try:
        genotype = net.genotype(threshold=threshold)
    except TypeError:
        raise ConfigError(f"search.selection=threshold: {type(net).__qualname__}.genotype takes no threshold; the "
                          "threshold selection keeps or drops edges of DARTS-space cells") from None
    except ValueError as e:
        raise ConfigError(f"search.selection_threshold={threshold}: {e}") from None
    chosen = net.genotype()
    rows = []
    for cell, alphas in net.cell_alphas().items():
        strengths = net.relaxation_strengths(alphas.detach()).float().cpu()
        for k, (op, j) in enumerate(getattr(chosen, cell)):
            node = k // 2
            edge = sum(i + 2 for i in range(node)) + j
            rows.append({"cell": cell, "node": node + 2, "input": j, "op": op,
                         "strength": float(strengths[edge, net.primitives.index(op)]),
                         "kept": int(getattr(genotype, cell)[k][0] != "none")})
    return SelectionResult(genotype, rows, name="threshold", columns=THRESHOLD_COLUMNS)
