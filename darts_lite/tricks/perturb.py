"""SDARTS (Chen & Hsieh, ICML 2020): the weight step sees perturbed alphas, which smooths the validation loss
landscape around the alphas the search reaches.

``perturbed(net, kind, epsilon, steps, x, y)`` is a context: inside it the alphas hold alpha + delta,
|delta| <= epsilon element-wise: "random" draws delta uniformly (random smoothing), "adversarial" takes ``steps``
projected sign-gradient steps (step 2 * epsilon / steps, from a random start) that raise the loss of the batch
(x, y); on exit the alphas are exactly what they were. ``SearchModule`` wraps its weight step in it
(``search.perturb``, ``search.perturb_epsilon``, ``search.perturb_steps``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

PERTURBATIONS = ("none", "random", "adversarial")

__all__ = ["PERTURBATIONS", "adversarial_deltas", "perturbed"]


@contextlib.contextmanager
def perturbed(net: nn.Module, kind: str, epsilon: float, steps: int, x: torch.Tensor, y: torch.Tensor) -> Iterator[None]:
    """Inside: ``net``'s alphas plus SDARTS's delta; on exit exactly the alphas they were ("none" or epsilon 0:
    nothing changes)."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"perturb must be one of {', '.join(PERTURBATIONS)}, got {kind!r}")
    eps = float(epsilon)
    if kind == "none" or eps == 0:
        yield
        return
    alphas = net.arch_parameters()
    saved = [a.detach().clone() for a in alphas]
    deltas = [torch.empty_like(a).uniform_(-eps, eps) for a in saved]
    if kind == "adversarial":
        deltas = adversarial_deltas(net, alphas, saved, deltas, x, y, eps, steps)
    with torch.no_grad():
        for a, a0, d in zip(alphas, saved, deltas):
            a.copy_(a0 + d)
    try:
        yield
    finally:
        with torch.no_grad():
            for a, a0 in zip(alphas, saved):
                a.copy_(a0)


def adversarial_deltas(net: nn.Module, alphas: Sequence[nn.Parameter], saved: list[torch.Tensor],
                       deltas: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, eps: float,
                       steps: int = 7) -> list[torch.Tensor]:
    """Projected sign-gradient ascent of the batch's loss over delta in the eps box, from ``deltas``, in eval mode
    (no BatchNorm statistics updated, no drop path); gradients reach the alphas only. The alphas are left at
    saved + the last delta tried; ``perturbed`` restores them."""
    size = 2 * eps / steps
    was_training = net.training
    net.eval()
    try:
        for _ in range(steps):
            with torch.no_grad():
                for a, a0, d in zip(alphas, saved, deltas):
                    a.copy_(a0 + d)
            with torch.enable_grad():
                for a in alphas:
                    a.requires_grad_(True)
                loss = F.cross_entropy(net(x), y)
                grads = torch.autograd.grad(loss, list(alphas), allow_unused=True)
                for a in alphas:
                    a.requires_grad_(False)
            deltas = [d if g is None else (d + size * g.sign()).clamp(-eps, eps) for d, g in zip(deltas, grads)]
    finally:
        net.train(was_training)
    return deltas
