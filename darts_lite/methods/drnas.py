"""DrNAS (Chen et al., ICLR 2021): architecture search as learning a Dirichlet distribution over each edge's ops.

The op weights of an edge are a reparameterised sample of Dirichlet(beta), beta = elu(alpha) + 1 (positive for
every alpha), drawn anew on every forward pass; the gradient reaches the alphas through the sample (pathwise
derivative). One sample per cell type and pass, shared by every cell of that type, as the DrNAS code draws it.

Regularisation: the DrNAS scripts default to an L2 penalty on the alphas through the architecture Adam's weight
decay (``reg_scale`` 1e-3, darts_lite's ``search.arch_weight_decay``); their alternative, the KL divergence of
each edge's Dirichlet from the uniform Dirichlet(1), is ``DirichletKL`` (set ``search.arch_weight_decay=0`` with
it, as the scripts do). The genotype is the argmax of the alphas, which is the argmax of the Dirichlet mean.

Progressive learning (``Progressive``, ``search=drnas_progressive``; DrNAS's DARTS-space script and its NAS-Bench-201
``train_search_progressive.py``): the search runs in stages. The supernet starts with partial channels (1/K of
each edge's channels through its ops, as PC-DARTS, without edge normalization); between two stages each edge keeps
only its ``keep_ops`` ops of largest alpha (the others' alphas set to 0, their weights masked out of the Dirichlet
sample, which is renormalised over the kept ops) and K shrinks, the ops widened by copying channels
(``darts_lite.spaces.widen``; the weights' momentum widened alike). Each stage trains the weights alone for its
first ``search.warmup_epochs`` epochs; the learning rate's cosine runs over the whole search; the architecture
optimiser carries on.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Dirichlet, kl_divergence

from ..regularizers import Regularizer
from ..relax import EdgeWeights, Relaxation
from ..schema import Allowed, Ge, Gt, checked

__all__ = ["DirichletKL", "DirichletRelaxation", "Progressive", "concentration", "network_problems"]

_Stages = Annotated[Sequence[Annotated[int, Ge(1)]], Allowed("a list of integers >= 1, one per stage")]


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


class Progressive:
    """DrNAS's progressive learning (see the module docstring): stage s runs ``stage_epochs[s]`` epochs with
    ``partial_channels[s]`` (K) and ``keep_ops[s]`` ops per edge. The first stage's K and op count are the
    supernet's own (``space.partial_channels``, its primitives); each later stage prunes ops (fewer or as many) and
    widens them (K smaller or equal). DrNAS's settings: DARTS space [25, 25] epochs, K [6, 4], ops [7, 4] (no
    `none`); NAS-Bench-201 [50, 50], K [4, 2], ops [5, 3]."""

    @checked
    def __init__(self, stage_epochs: _Stages = (25, 25), partial_channels: _Stages = (6, 4), keep_ops: _Stages = (7, 4)):
        self.stage_epochs = tuple(int(e) for e in stage_epochs)
        self.partial_channels = tuple(int(k) for k in partial_channels)
        self.keep_ops = tuple(int(n) for n in keep_ops)

    @classmethod
    def config_problems(cls, rules: Any) -> list[str]:
        v, key = rules.values, rules.key
        # each list's entries are integers >= 1 (their annotation); the rules between the lists:
        epochs, ks, keeps = (list(v[name]) for name in ("stage_epochs", "partial_channels", "keep_ops"))
        problems = []
        if not len(epochs) == len(ks) == len(keeps) >= 1:
            problems.append(f"{key('stage_epochs')}, {key('partial_channels')}, {key('keep_ops')}: one entry per stage "
                            f"each, got {len(epochs)}, {len(ks)} and {len(keeps)}")
        if any(b > a for a, b in zip(ks, ks[1:])):
            problems.append(f"{key('partial_channels')}={ks}: must not grow from stage to stage (the ops only widen)")
        if any(b > a for a, b in zip(keeps, keeps[1:])):
            problems.append(f"{key('keep_ops')}={keeps}: must not grow from stage to stage (pruned ops stay pruned)")
        if min(keeps) < 2:
            problems.append(f"{key('keep_ops')}={keeps}: every stage keeps at least 2 ops per edge (one op is no choice)")
        return problems

    @property
    def epochs(self) -> int:
        return sum(self.stage_epochs)

    def stage_of(self, epoch: int) -> int:
        """The stage epoch ``epoch`` (0-based) belongs to (the last one past the end)."""
        end = 0
        for stage, n in enumerate(self.stage_epochs):
            end += n
            if epoch < end:
                return stage
        return len(self.stage_epochs) - 1

    def stage_start(self, stage: int) -> int:
        """The first epoch of ``stage``."""
        return sum(self.stage_epochs[:stage])


def network_problems(stages: Progressive, network: Any, prefix: str) -> list[str]:
    """What keeps the supernet ``network`` describes (a space node: its ``_target_`` and arguments; ``prefix`` names its
    keys) from starting ``stages``: the first stage's K and op count are the supernet's, and every K divides its C."""
    from ..registry import load_path

    node = dict(network)
    try:
        defaults = inspect.signature(load_path(node["_target_"])).parameters
    except (KeyError, ImportError, AttributeError, ValueError, TypeError):
        return []  # the network's own check names the problem
    net = {name: node.get(name, p.default) for name, p in defaults.items()}
    problems = []
    if net.get("partial_channels") != stages.partial_channels[0]:
        problems.append(f"search.progressive.partial_channels={list(stages.partial_channels)}: the first stage's K is the "
                        f"supernet's own, {prefix}partial_channels={net.get('partial_channels')}")
    C = net.get("C")
    if isinstance(C, int) and any(C % k for k in stages.partial_channels):
        problems.append(f"search.progressive.partial_channels={list(stages.partial_channels)}: each must divide "
                        f"{prefix}C={C}")
    ops = len(net.get("primitives") or ())
    if stages.keep_ops[0] != ops:
        problems.append(f"search.progressive.keep_ops={list(stages.keep_ops)}: the first stage keeps every op of the "
                        f"space ({prefix}primitives has {ops})")
    return problems
