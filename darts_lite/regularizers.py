"""Regularisers: terms a method adds to the architecture loss. With the relaxation, what tells the DARTS family
apart (beta-DARTS's Beta-Decay, FairDARTS's zero-one loss, DrNAS's Dirichlet KL).

A regulariser is called with the supernet and returns a scalar tensor that depends on the architecture parameters
only; the search adds it to the validation loss of every architecture step:

    L_arch = L_val(w, alpha) + R(alpha)

First order back-propagates the sum; second order adds grad_alpha R to the unrolled gradient (R holds no weights,
so its unrolled and plain gradients are the same). Nothing is added to the weight step: the weights' gradient of a
function of the alphas alone is zero.

The config selects one by import path, ``search.regularizer._target_=pkg.module.Class`` with its keyword arguments
as sibling keys (``search=beta_darts`` and ``search=fairdarts`` set theirs); ``search.regularizer=null`` is none.
``Regularizer`` is a base with the optional part filled in: ``set_epoch(epoch, epochs)``, called at the start of
every search epoch, for schedules (beta-DARTS's lambda); it returns the values to log as ``search/<name>``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Regularizer", "make_regularizer", "regularizer_class"]


class Regularizer:
    """Base of a regulariser: subclasses define ``__call__(net) -> scalar tensor`` (a function of the alphas)."""

    def __call__(self, net: nn.Module) -> torch.Tensor:
        raise NotImplementedError

    def set_epoch(self, epoch: int, epochs: int) -> dict[str, float]:
        """Start of search epoch ``epoch`` (0-based) of ``epochs``: update schedules; the values to log."""
        return {}


def regularizer_class(spec: Any) -> Any:
    """The class a regulariser spec names (a config with ``_target_``); None without a spec or when the class cannot be
    imported (the config check reports that)."""
    from .registry import load_path

    if spec is None:
        return None
    if isinstance(spec, dict) or hasattr(spec, "keys"):
        try:
            return load_path(spec.get("_target_"))
        except (ImportError, ValueError):
            return None
    return type(spec)


def make_regularizer(spec: Any) -> Any:
    """None (no regulariser), a config ({"_target_": "pkg.Class", **kwargs}), or a callable (returned as it is)."""
    if spec is None:
        return None
    if isinstance(spec, dict) or hasattr(spec, "keys"):
        from .schema import build

        return build(dict(spec), "regularizer")
    if not callable(spec):
        raise TypeError(f"a regulariser is a config with _target_ or a callable, not {spec!r}")
    return spec
