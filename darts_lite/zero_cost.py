"""Zero-cost proxies: a score for an untrained network from one mini-batch, to rank architectures without training
them (Abdelfattah et al., ICLR 2021; REFERENCE.md, "Zero-cost proxies").

    score("synflow", net, x, y)              one proxy, a float (higher: predicted better)
    score_all(["snip", "nwot"], net, x, y)   several, {name: float}
    PROXIES                                  the registry of proxies (names, one-line summaries)

x is a batch [N, ...] in the network's input layout, y its class labels [N] (only the loss-based proxies read them:
snip, grasp, fisher, grad_norm; ``y=None`` is accepted by the others). The network comes back exactly as it went in:
weights, buffers (BatchNorm running statistics included), the training flag of every module, ``requires_grad`` and
``.grad`` of every parameter, dtype and device; torch's global random streams are not drawn from.

How a network is run (the choices where darts_lite's networks differ from the references'):
    mode        The references score freshly built networks in training mode: every BatchNorm normalises with the
                batch's statistics. Here every module is put in eval mode except the BatchNorms, which use the
                batch's statistics without reading or writing their running ones. The BatchNorms compute what the
                references' do, and nothing random runs: no dropout, no drop path, and no auxiliary head (the
                DARTS evaluation network runs it in training mode only).
    output      A network that returns a tuple (``(logits, aux_logits)``) is scored on its first element.
    weights     "Layers" are the modules ``nn.Conv1d/2d/3d`` (subclasses too: darts_lite's ``DepthwiseConv2d``) and
                ``nn.Linear``; their ``weight`` is what synflow, snip, grasp and grad_norm sum over, as the
                references' (which take Conv2d and Linear) do. Biases and BatchNorm parameters are not scored.
    loss        ``loss_fn(logits, y)``, by default cross-entropy averaged over the batch (the references' default).

Each proxy, as implemented (see each function for its choices):
    synflow     sum over layers of |theta * dR/dtheta|, R = sum of the output of a float64 copy with |weights|, on an
                all-ones input of one example, BatchNorms removed (as the zero-cost reference code scores it).
    nwot        log|det K|, K = sum over nn.ReLU calls of c c^T + (1 - c)(1 - c)^T, c the binary code of the output.
    jacob_cov   -sum_i log(l_i + k) + 1 / (l_i + k), l the eigenvalues of the correlation matrix of the per-example
                input gradients of the summed output, k = 1e-5.
    snip        sum over layers of |theta * dL/dtheta|.
    grasp       -sum over layers of theta * (H g), g = dL/dtheta, H the Hessian of L in the layers' weights; T = 1.
    fisher      sum over channels of every layer output a: 0.5 * mean over the batch of (sum over space of a dL/da)^2.
    grad_norm   sum over layers of ||dL/dW||_2.
    zen         log mean_n ||f(x_n) - f(x_n + 0.01 eps_n)||_1 + sum over BatchNorms of log sqrt(mean running var), on
                a copy with Gaussian weights and Gaussian x, eps; f the feature map the global pooling takes.
    params      number of parameters (the network's ``num_parameters()`` when it has one: without an auxiliary head).
    flops       ``darts_lite.measure.count_flops`` of one example of x's shape.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .measure import count_flops, counted_forward, module_device
from .registry import Registry, UnknownName

__all__ = ["PROXIES", "LossFn", "score", "score_all", "synflow_per_layer"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PROXIES: Registry[Callable[..., float]] = Registry("zero-cost proxy")

# the layers whose weights the parameter-wise proxies score, and whose outputs fisher reads
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_GLOBAL_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
# the proxies that take a loss and so need labels
_NEED_LABELS = frozenset({"snip", "grasp", "fisher", "grad_norm"})

JACOB_COV_K = 1e-5
ZEN_MIXUP = 1e-2


# ---- the entry points -------------------------------------------------------------------------------------------
def score(name: str, net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0,
          loss_fn: LossFn | None = None) -> float:
    """The zero-cost proxy ``name`` (one of ``PROXIES``) of ``net`` on the batch ``x`` [N, ...] with labels ``y``
    [N]. seed: seeds zen's Gaussian weights and inputs (the only proxy that draws random numbers). loss_fn:
    ``loss_fn(logits, y)`` for snip, grasp, fisher and grad_norm (default: cross-entropy, mean over the batch).

    ``net`` is left exactly as it was. An unknown name raises ``UnknownName`` (a ConfigError) listing the proxies;
    an empty batch or labels that do not match it raise ValueError."""
    if not isinstance(name, str) or name not in PROXIES:
        raise UnknownName(f"zero-cost proxy {name!r}: unknown; zero-cost proxies: {PROXIES.choices()}")
    proxy = PROXIES[name]
    if not isinstance(net, nn.Module):
        raise TypeError(f"zero-cost proxy {name}: net must be a torch.nn.Module, got {type(net).__name__}")
    x, y = _checked_batch(name, net, x, y)
    with _left_as_it_was(net):
        value = proxy(net, x, y, seed=seed, loss_fn=loss_fn or F.cross_entropy)
    return float(value)


def score_all(names: Iterable[str], net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
              seed: int = 0, loss_fn: LossFn | None = None) -> dict[str, float]:
    """{name: score(name, net, x, y)} for each of ``names``, in their order. Every name is checked before any
    proxy runs."""
    names = list(names)
    unknown = [n for n in names if not isinstance(n, str) or n not in PROXIES]
    if unknown:
        raise UnknownName(f"zero-cost proxies {', '.join(map(repr, unknown))}: unknown; zero-cost proxies: "
                          f"{PROXIES.choices()}")
    return {name: score(name, net, x, y, seed=seed, loss_fn=loss_fn) for name in names}


def _checked_batch(name: str, net: nn.Module, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x on the network's device in its floating dtype, y on its device; ValueError for what cannot be scored."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"zero-cost proxy {name}: x must be a tensor [N, ...], got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"zero-cost proxy {name}: the batch is empty (x has shape {list(x.shape)}); give at least "
                         "one example (two for jacob_cov)")
    if name in _NEED_LABELS and y is None:
        raise ValueError(f"zero-cost proxy {name} takes a loss: give the batch's labels y")
    if y is not None:
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"zero-cost proxy {name}: y must be a tensor of labels [N], got {type(y).__name__}")
        if y.dim() == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(f"zero-cost proxy {name}: y has shape {list(y.shape)} but x has {x.shape[0]} examples; "
                             "give one label per example")
    device = module_device(net)
    x = x.detach().to(device=device, dtype=_floating_dtype(net))
    return x, (y.detach().to(device) if y is not None else None)


def _floating_dtype(net: nn.Module) -> torch.dtype:
    """The dtype of the network's first floating-point parameter (or buffer): what its input must have."""
    for t in chain(net.parameters(), net.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


# ---- leaving the network as it was ------------------------------------------------------------------------------
@contextmanager
def _left_as_it_was(net: nn.Module) -> Iterator[None]:
    """Whatever a proxy does to ``net``, afterwards its parameters and buffers hold their old values (the same
    tensors, changed back in place only where their bits changed), every module its training flag, every parameter
    its requires_grad and its .grad (the very tensor, or None). While the proxy runs the parameters have no .grad,
    so that nothing accumulates into the caller's."""
    modes = [(m, m.training) for m in net.modules()]
    params = list(net.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    saved = [(t, t.detach().clone()) for t in chain(params, net.buffers())]
    for p in params:
        p.grad = None
    try:
        yield
    finally:
        with torch.no_grad():
            for t, old in saved:
                # torch.equal is False for NaN entries: those are copied back, which is harmless
                if not torch.equal(t, old):
                    t.copy_(old)
        for p, flag, grad in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = grad
        for m, mode in modes:
            m.training = mode


@contextmanager
def _batch_statistics(net: nn.Module) -> Iterator[None]:
    """Every module in eval mode but the BatchNorms, which normalise with the batch's statistics and neither read
    nor update their running ones (``track_running_stats`` off for the while). The caller restores the modes."""
    bns = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    tracking = [m.track_running_stats for m in bns]
    net.eval()
    for m in bns:
        m.train()
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, track in zip(bns, tracking):
            m.track_running_stats = track


def _logits(out: Any) -> torch.Tensor:
    """The logits of a network's output: the output, or its first element when it is a tuple (logits, aux)."""
    while isinstance(out, (tuple, list)):
        if not out:
            raise ValueError("the network returned an empty tuple; zero-cost proxies need its logits")
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the network returned {type(out).__name__}; zero-cost proxies need a tensor of logits")
    return out


def _layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the conv and linear layers, in module order."""
    return [(n, m) for n, m in net.named_modules() if isinstance(m, _LAYERS)]


def _layer_weights(net: nn.Module) -> list[torch.Tensor]:
    """The conv and linear weights (each once, should layers share one), switched to requiring gradients."""
    weights, seen = [], set()
    for _, m in _layers(net):
        if id(m.weight) not in seen:
            seen.add(id(m.weight))
            weights.append(m.weight)
            m.weight.requires_grad_(True)
    return weights


def _loss_gradients(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, create_graph: bool = False
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """(layer weights, dL/dW for each: None where W does not reach the loss), BatchNorms on batch statistics."""
    weights = _layer_weights(net)
    with torch.enable_grad(), _batch_statistics(net):
        loss = loss_fn(_logits(net(x)), y)
        grads = torch.autograd.grad(loss, weights, allow_unused=True, create_graph=create_graph) if weights else []
    return weights, list(grads)


def _total(values: Iterable[torch.Tensor]) -> float:
    """The sum of tensors' entries, accumulated in float64."""
    return float(sum((v.detach().double().sum() for v in values), torch.zeros((), dtype=torch.float64)))


# ---- the proxies --------------------------------------------------------------------------------------------------
def synflow_per_layer(net: nn.Module, x: torch.Tensor) -> tuple[float, dict[str, float]]:
    """(R, {layer name: sum of |theta * dR/dtheta| over its weight}): synflow's terms for the network of ``|weights|``
    on an all-ones input of one example of ``x``'s shape, in float64, BatchNorms removed. On a network without
    BatchNorm and biases each layer's sum equals R (synaptic flow is conserved layer by layer). The network is
    not touched: the work is done on a copy."""
    work = copy.deepcopy(net)
    # the reference scores a copy whose BatchNorms are bypassed: with them, a layer's |weights| would be rescaled by
    # statistics of the all-ones input and the flow would no longer be conserved
    for parent in list(work.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm):
                setattr(parent, child_name, nn.Identity())
    work.double().eval()  # eval: nothing random (dropout, drop path) and no auxiliary head
    with torch.no_grad():
        for t in chain(work.parameters(), work.buffers()):
            if t.is_floating_point():
                t.abs_()
    weights = _layer_weights(work)
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=module_device(work))
    with torch.enable_grad():
        R = _logits(work(ones)).sum()
        grads = (torch.autograd.grad(R, weights, allow_unused=True) if weights and R.requires_grad
                 else [None] * len(weights))
    flow = {id(w): _total([(w * g).abs()]) if g is not None else 0.0 for w, g in zip(weights, grads)}
    return float(R.detach()), {name: flow[id(m.weight)] for name, m in _layers(work)}


@PROXIES.register("synflow")
def _synflow(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None, **_: Any) -> float:
    """Synaptic flow (Tanaka et al., 2020): sum of |theta * dR/dtheta|, R the output sum of the |weights| network."""
    _, per_layer = synflow_per_layer(net, x)
    # a weight that several layers share is counted once
    first = {}
    for name, m in _layers(net):
        first.setdefault(id(m.weight), name)
    return sum(per_layer[name] for name in first.values())


@PROXIES.register("nwot")
def _nwot(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None, **_: Any) -> float:
    """NASWOT (Mellor et al., 2021): log|det K| of the examples' ReLU activation-pattern kernel."""
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError("zero-cost proxy nwot reads the binary codes of the network's nn.ReLU modules, and it has "
                         "none; use another proxy (or nn.ReLU modules rather than functional relu)")
    n = x.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64)
    calls = [0]

    def count(module: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        # output > 0 exactly where input > 0: the code is the same read on either side (and an in-place ReLU's
        # input is its output by the time the hook runs)
        where = out.device if out.device.type != "mps" else torch.device("cpu")  # mps has no float64
        c = (out.detach() > 0).reshape(n, -1).to(device=where, dtype=torch.float64)
        kernel.add_((c @ c.T + (1 - c) @ (1 - c).T).cpu())
        calls[0] += 1

    handles = [m.register_forward_hook(count) for m in relus]
    try:
        with torch.no_grad(), _batch_statistics(net):
            net(x)
    finally:
        for h in handles:
            h.remove()
    if not calls[0]:
        raise ValueError("zero-cost proxy nwot: none of the network's nn.ReLU modules ran in its forward pass")
    return float(torch.linalg.slogdet(kernel).logabsdet)


@PROXIES.register("jacob_cov")
def _jacob_cov(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None, **_: Any) -> float:
    """Jacobian covariance (Mellor et al., 2020): spread of the eigenvalues of the input-Jacobian correlations."""
    if x.shape[0] < 2:
        raise ValueError(f"zero-cost proxy jacob_cov correlates the examples' Jacobians: give at least 2 examples, "
                         f"got {x.shape[0]}")
    inp = x.clone().requires_grad_(True)
    with torch.enable_grad(), _batch_statistics(net):
        out = _logits(net(inp))
        (jac,) = torch.autograd.grad(out.sum(), inp, allow_unused=True)
    if jac is None:  # the output does not depend on the input
        return math.nan
    jacobians = jac.reshape(x.shape[0], -1).double().cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.corrcoef(jacobians)
    if not np.all(np.isfinite(corr)):
        # an example whose Jacobian is constant has no correlation: the references give NaN too
        return math.nan
    eig = np.linalg.eigvalsh(corr)
    k = JACOB_COV_K
    return float(-np.sum(np.log(eig + k) + 1.0 / (eig + k)))


@PROXIES.register("snip")
def _snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn: LossFn, **_: Any) -> float:
    """SNIP (Lee et al., 2019): sum of |theta * dL/dtheta| over conv and linear weights."""
    weights, grads = _loss_gradients(net, x, y, loss_fn)
    return _total((w * g).abs() for w, g in zip(weights, grads) if g is not None)


@PROXIES.register("grasp")
def _grasp(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn: LossFn, **_: Any) -> float:
    """GraSP (Wang et al., 2020): -sum of theta * (H g) over conv and linear weights, g = dL/dtheta."""
    # the zero-cost reference uses temperature T = 1 (logits undivided) and the same batch for g and for H g; it
    # computes g with one forward pass and H g with a second: one pass gives the same numbers here, since nothing
    # random runs and the BatchNorms' running statistics are not updated between them
    weights, grads = _loss_gradients(net, x, y, loss_fn, create_graph=True)
    pairs = [(w, g) for w, g in zip(weights, grads) if g is not None]
    with torch.enable_grad():
        # z = g . dL/dtheta with g held fixed: its gradient is H g
        z = sum(((g.detach() * g).sum() for _, g in pairs), torch.zeros((), dtype=x.dtype, device=x.device))
        if not z.requires_grad:  # a loss linear in every weight has no curvature
            return 0.0
        hg = torch.autograd.grad(z, [w for w, _ in pairs], allow_unused=True)
    return -_total(w.detach() * h for (w, _), h in zip(pairs, hg) if h is not None)


@PROXIES.register("fisher")
def _fisher(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn: LossFn, **_: Any) -> float:
    """Fisher (Theis et al., 2018; Turner et al., 2020): per-channel 0.5 mean_n (sum_space a dL/da)^2, summed."""
    # a: the output of every conv and linear layer (the reference's choice: before the BatchNorm that follows a
    # darts_lite conv, and the logits for the classifier); each call of a layer is one term
    acts: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
        acts.append(out)
        # the rest of the network gets a copy, so that an in-place op after the layer (ReLU(inplace=True)) cannot
        # overwrite the activation whose gradient is asked for
        return out.clone()

    handles = [m.register_forward_hook(keep) for _, m in _layers(net)]
    try:
        with torch.enable_grad(), _batch_statistics(net):
            loss = loss_fn(_logits(net(x)), y)
            grads = torch.autograd.grad(loss, acts, allow_unused=True) if acts else []
    finally:
        for h in handles:
            h.remove()
    terms = []
    for a, g in zip(acts, grads):
        if g is None:
            continue
        per_channel = (a.detach() * g).flatten(2).sum(2) if a.dim() > 2 else a.detach() * g  # [N, channels]
        terms.append(0.5 * per_channel.double().pow(2).mean(0))
    return _total(terms)


@PROXIES.register("grad_norm")
def _grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn: LossFn, **_: Any) -> float:
    """Gradient norm: sum over conv and linear layers of the Euclidean norm of dL/dW."""
    _, grads = _loss_gradients(net, x, y, loss_fn)
    return _total(g.double().norm() for g in grads if g is not None)


def _pre_pooling_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The feature map the network pools globally before its classifier: the input of the last adaptive pooling
    module that runs in the forward pass (darts_lite's ``global_pooling``); without one, the input of the last
    nn.Linear that runs (a classifier on flattened features: the same entries); without either, the output."""
    calls: list[tuple[bool, torch.Tensor]] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        calls.append((isinstance(module, _GLOBAL_POOLS), inputs[0]))

    handles = [m.register_forward_pre_hook(record) for m in net.modules() if isinstance(m, (*_GLOBAL_POOLS, nn.Linear))]
    try:
        out = _logits(net(x))
    finally:
        for h in handles:
            h.remove()
    pooled = [t for is_pool, t in calls if is_pool]
    if pooled:
        return pooled[-1]
    return calls[-1][1] if calls else out


def _gaussian_init(net: nn.Module, generator: torch.Generator) -> None:
    """Zen-NAS's initialisation: conv and linear weights N(0, 1) and biases 0; BatchNorm and GroupNorm scales 1 and
    shifts 0. Drawn on the CPU from ``generator`` in module order, so a seed gives the same weights on any device."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, _LAYERS):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (_BatchNorm, nn.GroupNorm)) and m.weight is not None:
                m.weight.fill_(1.0)
                if m.bias is not None:
                    m.bias.zero_()


@PROXIES.register("zen")
def _zen(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None, *, seed: int = 0, **_: Any) -> float:
    """Zen-score (Lin et al., 2021): log of the feature map's response to a small input change, plus BN scales."""
    generator = torch.Generator().manual_seed(seed)
    work = copy.deepcopy(net)
    _gaussian_init(work, generator)
    bns = [m for m in work.modules() if isinstance(m, _BatchNorm)]
    # the reference scores freshly built networks in training mode: their BatchNorms start from reset running
    # statistics and update them (with their momentum) in both forward passes, after which it reads running_var
    work.eval()
    for m in bns:
        m.train()
        if m.track_running_stats:
            m.reset_running_stats()
    # Gaussian inputs of x's shape, as the paper: the score does not look at the data
    dtype, device = x.dtype, x.device
    x1 = torch.randn(x.shape, generator=generator).to(device=device, dtype=dtype)
    eps = torch.randn(x.shape, generator=generator).to(device=device, dtype=dtype)
    with torch.no_grad():
        f1 = _pre_pooling_features(work, x1)
        f2 = _pre_pooling_features(work, x1 + ZEN_MIXUP * eps)
        delta = (f1 - f2).abs().reshape(x.shape[0], -1).double().sum(1).mean()
        bn_term = sum((torch.log(torch.sqrt(m.running_var.double().mean())) for m in bns if m.running_var is not None),
                      torch.zeros((), dtype=torch.float64, device=device))
    return float(torch.log(delta) + bn_term)


@PROXIES.register("params")
def _params(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None, **_: Any) -> float:
    """Number of parameters (an evaluation network's ``num_parameters()``: without its auxiliary head)."""
    counter = getattr(net, "num_parameters", None)
    if callable(counter):
        return float(counter())
    return float(sum(p.numel() for p in net.parameters()))


@PROXIES.register("flops")
def _flops(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None, **_: Any) -> float:
    """FLOPs of one example (``darts_lite.measure.count_flops``: 2 per multiply-add)."""
    shape = tuple(x.shape[1:])
    if x.dtype == torch.get_default_dtype():
        return float(count_flops(net, shape))
    # count_flops feeds zeros of the default dtype: a float64 network needs its own
    flops, _ = counted_forward(net, torch.zeros((1, *shape), dtype=x.dtype, device=x.device))
    return float(flops)
