"""Relaxations: how an edge turns its alphas into op weights. The only place DARTS and GDAS differ.

A relaxation is called with the alphas [E, O] of one cell type (E edges, O ops) and returns an ``EdgeWeights``:

- ``weights`` [E, O]: the multiplier of each op's output;
- ``index``: ``None`` when every op runs (softmax), else one op index per edge, the only op the edge computes
  (hard Gumbel);
- ``skip``: the coefficient of an auxiliary skip connection beside every edge, outside the op choice (DARTS-); 0
  for none. The supernet builds the skip branches when the relaxation's ``auxiliary_skip`` is True.

Any class that does this is a relaxation, also one of a user's own: the config selects it by import path,
``search.relaxation._target_=my_module.MyRelaxation``, with its keyword arguments as sibling keys (see
docs/extending.md). ``Relaxation`` is a base with the optional parts filled in:

- ``hard``: True when each edge computes a single op per forward pass (the supernet's graph changes every step:
  no ``torch.compile``, no perturbation-based selection);
- ``set_epoch(epoch, epochs)``: called at the start of every search epoch, for schedules (GDAS's temperature);
  returns the values to log as ``search/<name>``;
- ``trains_alphas``: False when the alphas do not steer the relaxation, so the search takes no architecture step
  (random search with weight sharing); the genotype then comes from a selection (``search.selection``);
- ``strengths(alphas)``: how strong each op of each edge is, [E, O], what the genotype rule ranks edges and ops by:
  the softmax of the alphas unless the relaxation weighs ops otherwise (FairDARTS's independent sigmoids).

The DARTS family beyond DARTS and GDAS (DrNAS, SNAS, FairDARTS, DARTS-) lives in ``darts_lite.methods``.

The built-in relaxations are registered by name in ``RELAXATIONS`` (``relaxation="gumbel"`` in Python).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch
import torch.nn.functional as F

from .registry import Registry
from .schema import Gt, Hint, checked

__all__ = ["RELAXATIONS", "AnnealedRelaxation", "EdgeWeights", "GumbelRelaxation", "Relaxation", "SoftmaxRelaxation",
           "linear_tau", "make_relaxation", "relaxation_class"]


@dataclass
class EdgeWeights:
    weights: torch.Tensor  # [E, O]
    index: list[int] | None = None  # per edge, the single op to run; None = run all
    skip: float = 0.0  # the auxiliary skip connection's coefficient on every edge (DARTS-); 0 = none


class Relaxation:
    """Base of a relaxation: subclasses define ``__call__(alphas [E, O]) -> EdgeWeights``."""

    hard: bool = False
    auxiliary_skip: bool = False  # True: the supernet builds a skip branch beside every edge, weighted by ``skip``
    trains_alphas: bool = True  # False: the search never updates the alphas (RSWS samples paths uniformly)

    def __call__(self, alphas: torch.Tensor) -> EdgeWeights:
        raise NotImplementedError

    def set_epoch(self, epoch: int, epochs: int) -> dict[str, float]:
        """Start of search epoch ``epoch`` (0-based) of ``epochs``: update schedules; the values to log."""
        return {}

    def strengths(self, alphas: torch.Tensor) -> torch.Tensor:
        """How strong each op of each edge is, [E, O] (no gradient needed): what the genotype rule ranks by."""
        return F.softmax(alphas, dim=-1)


RELAXATIONS: Registry[type] = Registry("relaxation")


@RELAXATIONS.register("softmax")
class SoftmaxRelaxation(Relaxation):
    """DARTS: a softmax over all ops of an edge; the edge outputs the weighted sum."""

    def __call__(self, alphas: torch.Tensor) -> EdgeWeights:
        return EdgeWeights(F.softmax(alphas, dim=-1))


def linear_tau(epoch: int, epochs: int, tau_max: float = 10.0, tau_min: float = 0.1) -> float:
    """GDAS's temperature: tau_max at epoch 0, tau_min at the last epoch (epochs - 1), linear between."""
    if epochs <= 1:
        return float(tau_max)
    epoch = min(max(epoch, 0), epochs - 1)
    return tau_max - (tau_max - tau_min) * epoch / (epochs - 1)


class AnnealedRelaxation(Relaxation):
    """Base of a relaxation with a temperature ``tau`` that ``schedule`` anneals per epoch from ``tau_max`` towards
    ``tau_min``, and Gumbel-softmax samples of it (GDAS's hard ones, SNAS's soft ones)."""

    max_resamples = 100

    def __init__(self, tau_max: float, tau_min: float):
        self.tau_max, self.tau_min = float(tau_max), float(tau_min)
        self.tau = self.tau_max

    @classmethod
    def config_problems(cls, rules: Any) -> list[str]:
        v = rules.values
        if v["tau_max"] < v["tau_min"]:
            return [f"{rules.key('tau_max')}={v['tau_max']}: must be >= {rules.key('tau_min')}"]
        return []

    def schedule(self, epoch: int, epochs: int) -> float:
        """The temperature of epoch ``epoch`` (0-based) of ``epochs``."""
        raise NotImplementedError

    def set_epoch(self, epoch: int, epochs: int) -> dict[str, float]:
        self.tau = self.schedule(epoch, epochs)
        return {"tau": self.tau}

    def gumbel_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """softmax((logits + g) / tau) per row, g = -log(Exponential(1)) ~ Gumbel(0, 1). A zero draw of Exponential(1)
        gives inf noise: such samples are redrawn, as in GDAS."""
        for _ in range(self.max_resamples):
            gumbel = -torch.empty_like(logits).exponential_().log()
            probs = F.softmax((logits + gumbel) / self.tau, dim=-1)
            if torch.isfinite(gumbel).all() and torch.isfinite(probs).all():
                return probs
        raise FloatingPointError(
            f"Gumbel sampling gave non-finite weights {self.max_resamples} times; the alphas are "
            f"probably non-finite: {logits}"
        )


@RELAXATIONS.register("gumbel")
class GumbelRelaxation(AnnealedRelaxation):
    """GDAS: a hard Gumbel-softmax sample per edge; only the sampled op runs.

    probs = softmax((log_softmax(alpha) + g) / tau), g = -log(Exponential(1));
    weights = one_hot(argmax probs) - probs.detach() + probs, so the forward value of the sampled
    op's weight is exactly 1 while its gradient reaches every alpha of the edge through probs.

    tau falls linearly per epoch from tau_max (epoch 0) to tau_min (the last epoch): ``linear_tau``. The public
    code's tau_min is 0.1, the paper's text says 1.
    """

    hard = True

    @checked
    def __init__(self, tau_max: Annotated[float, Gt(0)] = 10.0,
                 tau_min: Annotated[float, Gt(0), Hint("the temperature of the last epoch")] = 0.1):
        super().__init__(tau_max, tau_min)

    def schedule(self, epoch: int, epochs: int) -> float:
        return linear_tau(epoch, epochs, self.tau_max, self.tau_min)

    def __call__(self, alphas: torch.Tensor) -> EdgeWeights:
        probs = self.gumbel_softmax(F.log_softmax(alphas, dim=-1))
        index = probs.argmax(dim=-1, keepdim=True)
        one_hot = torch.zeros_like(probs).scatter_(-1, index, 1.0)
        return EdgeWeights(one_hot - probs.detach() + probs, index.squeeze(-1).tolist())


def relaxation_class(spec: Any) -> Any:
    """The class a relaxation spec names (a registered name, or a config with ``_target_``); None when there is no
    spec or its class cannot be imported (a config check reports that)."""
    from .registry import load_path

    try:
        if isinstance(spec, str):
            return RELAXATIONS[spec]
        if isinstance(spec, dict) or hasattr(spec, "keys"):
            return load_path(spec.get("_target_"))
    except (ImportError, ValueError):
        return None
    return None if spec is None else type(spec)


def make_relaxation(spec: Any = "softmax") -> Any:
    """A relaxation from a registered name ("softmax", "gumbel"), a config ({"_target_": "pkg.Class", **kwargs}),
    or a relaxation object (returned as it is)."""
    if isinstance(spec, str):
        return RELAXATIONS[spec]()
    if isinstance(spec, dict) or hasattr(spec, "keys"):
        from .schema import build

        return build(dict(spec), "relaxation")
    if not callable(spec):
        raise TypeError(f"a relaxation is a name, a config with _target_ or a callable, not {spec!r}")
    return spec
