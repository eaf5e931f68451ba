"""The architecture step of bilevel search: DARTS's first order and its unrolled second order, with the three
Hessian-vector product estimators.

DARTS (Liu et al., 2019) trains the weights w on one part of the training data and the alphas a on another. Each
step first updates the alphas, then the weights. The architecture gradient is

    first order    g_a = grad_a L_val(w, a)

    second order   w'  = w - xi * (momentum * buf + grad_w L_train(w, a) + wd * w),   xi = the current weight lr
                   g_a = grad_a L_val(w', a) - xi * H v,   H v = grad_a (grad_w L_train(w, a) . v),   v = grad_w' L_val(w', a)

H v, the mixed second derivative of the training loss applied to v, is taken by one of (``HVP_ESTIMATORS``):

    exact     forward-over-reverse automatic differentiation at w (no eps)
    central   (grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps),  w+- = w +- eps v,  eps = 0.01 / ||v||   (the paper's)
    forward   (grad_a L_train(w+, a) - grad_a L_train(w, a)) / eps

The unrolled and perturbed weights are plain tensors passed to ``torch.func.functional_call``: the network is
never copied, and BatchNorm running statistics are left as they were. ``darts_lite.search.SearchModule`` runs
these inside its training step (with the weight step, SDARTS, the resource penalty, DDP and non-finite checks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .spaces.supernet import frozen, no_recompute

__all__ = ["HVP_ESTIMATORS", "RngSnapshot", "architecture_loss", "exact_hvp", "total_norm", "unrolled_architecture_gradients"]

HVP_ESTIMATORS = ("exact", "central", "forward")


def total_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 norm of all the tensors together, as one flat vector."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def _zeros_for_missing(inputs: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
    # GDAS leaves unsampled ops out of the graph: their gradient is zero, not missing
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]


class RngSnapshot:
    """The RNG state at one moment, to replay the same random draws (drop path, Gumbel samples) later."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.device = device if device.type == "cuda" else None
        self.cuda = torch.cuda.get_rng_state(device) if self.device is not None else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.device is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def architecture_loss(net: nn.Module, x_a: torch.Tensor, y_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First order: (L_val(w, a), logits) on the architecture batch. The caller runs it and back-propagates the loss
    (with anything it adds) into the alphas inside ``frozen(net.weight_parameters())``: no gradient work for the
    weights, and a checkpointed cell's recomputation in the backward pass sees the same frozen weights."""
    logits = net(x_a)
    return F.cross_entropy(logits, y_a), logits


def unrolled_architecture_gradients(
    net: nn.Module, weight_optimizer: torch.optim.SGD, x_w: torch.Tensor, y_w: torch.Tensor, x_a: torch.Tensor,
    y_a: torch.Tensor, hvp: str = "central", unrolled_eps: float = 0.01,
    check_finite: Callable[[torch.Tensor, str], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Second order: set each alpha's ``.grad`` to g_a of the module docstring; returns (L_val(w'), logits), detached.

    The Hessian-vector product takes passes on the training batch at w (or w +- eps v): they replay the unrolling
    pass's random draws (drop path masks, Gumbel samples), or the difference of two draws (divided by eps, for the
    finite differences) would swamp the Hessian term. All passes run in fp32 even under autocast: the finite
    difference at eps = 0.01 / ||v|| is below bf16's resolution, and exact keeps the same precision so that the
    estimators compare like with like.
    """
    if hvp not in HVP_ESTIMATORS:
        raise ValueError(f"hvp must be one of {', '.join(HVP_ESTIMATORS)}, got {hvp!r}")
    with torch.autocast(device_type=x_w.device.type, enabled=False):
        return _unrolled_fp32(net, weight_optimizer, x_w, y_w, x_a, y_a, hvp, unrolled_eps, check_finite)


def _unrolled_fp32(net, opt_w, x_w, y_w, x_a, y_a, hvp, unrolled_eps, check_finite):
    group = opt_w.param_groups[0]
    xi, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
    alphas, weights = net.arch_parameters(), net.weight_parameters()
    names = {id(p): n for n, p in net.named_parameters()}
    w_names = [names[id(p)] for p in weights]
    # these extra forward passes must not move BatchNorm running statistics: restore them after
    buffers = list(net.buffers())
    saved = [b.clone() for b in buffers]

    def call(w_tensors: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(net, dict(zip(w_names, w_tensors)), (x,), strict=False)

    def grads_or_zeros(loss: torch.Tensor, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return _zeros_for_missing(inputs, torch.autograd.grad(loss, inputs, allow_unused=True))

    w = [p.detach() for p in weights]
    rng = RngSnapshot(x_w.device)
    # 1. one virtual SGD step on the training batch, exactly as torch.optim.SGD would take it: per weight,
    # d = grad + wd * w (+ momentum * buffer once SGD has one), and a weight that gets no gradient (an op GDAS did
    # not sample) is left alone, as SGD skips it. With Nesterov momentum the real step adds the look-ahead; the
    # virtual step keeps the form above, as the reference code's does. The forward difference also needs
    # grad_alpha L_train(w), which this same pass gives almost for free; the others do not, so the alphas stay out
    # of their backward
    if hvp == "forward":
        raw = torch.autograd.grad(F.cross_entropy(net(x_w), y_w), [*weights, *alphas], allow_unused=True)
        g_at_w = _zeros_for_missing(alphas, raw[len(weights):])
        raw = raw[: len(weights)]
    else:
        with frozen(alphas):
            raw = torch.autograd.grad(F.cross_entropy(net(x_w), y_w), weights, allow_unused=True)
    used = [k for k, g in enumerate(raw) if g is not None]
    d = [raw[k] for k in used]
    torch._foreach_add_(d, [w[k] for k in used], alpha=wd)
    if momentum:
        bufs = [opt_w.state.get(weights[k], {}).get("momentum_buffer") for k in used]
        have = [i for i, b in enumerate(bufs) if b is not None]
        if have:
            torch._foreach_add_([d[i] for i in have], [bufs[i] for i in have], alpha=momentum)
    stepped = dict(zip(used, torch._foreach_add([w[k] for k in used], d, alpha=-xi)))
    # a weight SGD would skip stays as it is, as a leaf of its own (not a view of the parameter)
    unrolled = [(stepped[k] if k in stepped else w[k].clone()).requires_grad_() for k in range(len(w))]

    # 2. validation loss at the unrolled weights: gradient for alphas and v for the weights
    logits = call(unrolled, x_a)
    val_loss = F.cross_entropy(logits, y_a)
    if check_finite is not None:
        check_finite(val_loss, "architecture")
    grads = grads_or_zeros(val_loss, [*alphas, *unrolled])
    g_alpha, v = grads[: len(alphas)], grads[len(alphas):]

    # 3. H v on the training batch, with step 1's draws
    rng_after = RngSnapshot(x_w.device)
    rng.restore()
    if hvp == "exact":
        hv = exact_hvp(call, w, v, x_w, y_w, alphas)
    else:
        # central (g(w + eps v) - g(w - eps v)) / 2 eps, or forward (g(w + eps v) - g(w)) / eps
        eps = unrolled_eps / max(total_norm(v).item(), 1e-12)
        g_plus = grads_or_zeros(F.cross_entropy(call(torch._foreach_add(w, v, alpha=eps), x_w), y_w), alphas)
        if hvp == "forward":
            g_minus, step = g_at_w, eps
        else:
            rng.restore()
            g_minus = grads_or_zeros(F.cross_entropy(call(torch._foreach_add(w, v, alpha=-eps), x_w), y_w), alphas)
            step = 2 * eps
        hv = [(gp - gm) / step for gp, gm in zip(g_plus, g_minus)]
    for a, ga, h in zip(alphas, g_alpha, hv):
        a.grad = ga - xi * h
    rng_after.restore()  # the weight step draws afresh, not a replay of step 1's draws
    torch._foreach_copy_(buffers, saved)
    return val_loss.detach(), logits.detach()


def exact_hvp(call: Callable, w: list[torch.Tensor], v: list[torch.Tensor], x_w: torch.Tensor, y_w: torch.Tensor,
              alphas: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """grad_alpha (grad_w L_train(w, alpha) . v), each [E, O], by forward-over-reverse differentiation.

    The weights enter as dual tensors with tangent v: the forward pass and the backward pass to the alphas carry
    the tangents along, and the tangent of grad_alpha L_train(w) is the mixed second derivative applied to v, with
    no eps. This one pass takes about the time of central's two, but holds a tangent beside every saved activation
    (experiments/search_step_benchmark.py). A double backward through the unrolling pass measured slower and
    larger still: it keeps that pass's graph alive through step 2, and PyTorch takes the second derivative of a
    grouped (depthwise) convolution one channel group at a time.
    """
    # every edge keeps what autograd saves here: through a selective recomputation (search.recompute) this pass
    # runs, but its alpha gradients measured not bit-identical to the plain pass's (tests/test_recompute.py)
    with fwAD.dual_level(), no_recompute():
        dual = [fwAD.make_dual(wk, vk) for wk, vk in zip(w, v)]
        grads = torch.autograd.grad(F.cross_entropy(call(dual, x_w), y_w), alphas, allow_unused=True)
        # no gradient, or one that does not depend on the weights: its derivative along v is zero
        tangents = [None if g is None else fwAD.unpack_dual(g).tangent for g in grads]
    return _zeros_for_missing(alphas, tangents)
