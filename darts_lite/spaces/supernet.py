"""What the search networks of every space share: alphas initialised as the reference code does, the weights as
every other parameter, and the relaxation's temperature."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from ..relax import EdgeWeights, Relaxation

ALPHA_INITS = ("randn", "zeros")  # what new_alphas takes


def new_alphas(shape: tuple[int, ...], alpha_init: str) -> nn.Parameter:
    """Alphas of ``shape``: "randn" is the reference code's 1e-3 * N(0, 1), "zeros" the DARTS paper's text."""
    if alpha_init == "randn":
        return nn.Parameter(1e-3 * torch.randn(shape))
    if alpha_init == "zeros":
        return nn.Parameter(torch.zeros(shape))
    raise ValueError(f"alpha_init must be 'randn' or 'zeros', got {alpha_init!r}")


def tracking_batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``module`` that keep running statistics (the others always use the batch's)."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def frozen(params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    """Stop autograd from computing gradients for ``params`` inside the block (saves backward work); restored on exit."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


@contextlib.contextmanager
def _bn_statistics_frozen(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with the batch's statistics as in training but leave their running ones alone."""
    bns = tracking_batchnorms(module)
    saved = [(bn, bn.momentum, bn.num_batches_tracked.clone()) for bn in bns]
    for bn in bns:
        bn.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for bn, momentum, count in saved:
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(count)


def checkpointed(cell: nn.Module, *args: Any) -> torch.Tensor:
    """``cell(*args)`` whose inner activations are recomputed in the backward pass instead of kept (non-reentrant
    ``torch.utils.checkpoint``): the output and every gradient are those of ``cell(*args)``.

    The recomputation draws the same random numbers (drop path masks: the RNG state is replayed), leaves the
    BatchNorm running statistics as the first pass left them (they are updated once), and uses the weights the
    first pass used, also when those were tensors substituted by ``torch.func.functional_call`` (the second
    order's unrolled and perturbed weights) and the backward runs after that call has returned.
    """
    names = [name for name, _ in cell.named_parameters()]
    weights = {name: functools.reduce(getattr, name.split("."), cell) for name in names}  # what forward sees now
    passes = [0]

    def run(*inputs: Any) -> torch.Tensor:
        passes[0] += 1
        if passes[0] == 1:
            return cell(*inputs)
        with _bn_statistics_frozen(cell):
            return functional_call(cell, weights, inputs, strict=False)

    return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True)


class Supernet(nn.Module):
    """Base of a space's SearchNetwork: it sets ``relaxation`` and defines ``arch_parameters()``.

    ``checkpoint_cells``: recompute each cell's inner activations in the backward pass (less memory, about one
    more forward pass of time); results are unchanged.

    ``edge_weight_transform``: None, or ``f(cell_type, EdgeWeights) -> EdgeWeights`` applied to the relaxation's
    output of each cell type ("normal", "reduce"; NB201: "cell") before the cells use it: how architecture
    selection fixes decided edges or removes one op from the supernet without touching the alphas.
    """

    relaxation: Relaxation
    checkpoint_cells: bool = False
    edge_weight_transform: Callable[[str, EdgeWeights], EdgeWeights] | None = None

    def relax(self, cell_type: str, alphas: torch.Tensor) -> EdgeWeights:
        """The op weights of ``cell_type``'s cells: the relaxation of ``alphas`` [E, O], then the transform if one is set."""
        ew = self.relaxation(alphas)
        return ew if self.edge_weight_transform is None else self.edge_weight_transform(cell_type, ew)

    def run_cell(self, cell: nn.Module, *args: Any) -> torch.Tensor:
        """``cell(*args)``, checkpointed when ``checkpoint_cells`` is on and a backward pass may follow."""
        if self.checkpoint_cells and self.training and torch.is_grad_enabled():
            return checkpointed(cell, *args)
        return cell(*args)

    def arch_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def cell_alphas(self) -> dict[str, torch.Tensor]:
        """The alphas [E, O] of each cell type by name ({"normal", "reduce"}; NAS-Bench-201: {"cell"}), the main
        cell first: the parameters themselves (other architecture parameters, such as edge betas, are not here)."""
        raise NotImplementedError

    def op_probabilities(self) -> dict[str, torch.Tensor]:
        """softmax(alpha) of each cell type, detached: what the heatmaps, the decision measures and the genotype read."""
        return {cell: torch.softmax(a.detach(), dim=-1) for cell, a in self.cell_alphas().items()}

    @property
    def relaxation_strengths(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The relaxation's ``strengths`` (alphas -> op weights the genotype rule ranks by), None for the softmax."""
        return getattr(self.relaxation, "strengths", None)

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the alphas: what the weight optimiser trains."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    @property
    def tau(self) -> float | None:
        """The relaxation's temperature, when it has one (GDAS's Gumbel), else None."""
        return getattr(self.relaxation, "tau", None)

    @tau.setter
    def tau(self, value: float) -> None:
        if getattr(self.relaxation, "tau", None) is None:
            raise AttributeError(f"the {type(self.relaxation).__name__} relaxation has no temperature")
        self.relaxation.tau = float(value)
