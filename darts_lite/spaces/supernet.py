"""What the search networks of every space share: alphas initialised as the reference code does, the weights as
every other parameter, and the relaxation's temperature."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.autograd.forward_ad as _forward_ad
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from ..relax import EdgeWeights, Relaxation
from .ops import EdgeInput, Zero, tensor_of
from .widen import Widened, widen_op

ALPHA_INITS = ("randn", "zeros")  # what new_alphas takes
# what a mixed edge keeps for the backward pass (Supernet.recompute): "none" recomputes nothing; "cheap" (the default)
# recomputes the BatchNorm outputs its weighted sum reads and its pooling ops (darts_lite.spaces.lean); "convolutions"
# keeps every convolution's output and recomputes the rest; "pointwise" keeps only the 1x1 (ungrouped) convolutions'
# outputs. The last two are selective activation checkpointing (SELECTIVE)
RECOMPUTE = ("none", "cheap", "convolutions", "pointwise")
SELECTIVE = ("convolutions", "pointwise")


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
    """BatchNorm layers normalise with the batch's statistics as in training but leave their running ones alone.

    By attributes only, no tensor op (a selective recomputation must run exactly the ops of its first pass): a
    momentum of 0 keeps the running statistics ((1 - 0) * running + 0 * batch), and without its step count a layer
    does not count the pass."""
    bns = tracking_batchnorms(module)
    saved = [(bn, bn.momentum, bn.num_batches_tracked) for bn in bns]
    for bn in bns:
        bn.momentum, bn.num_batches_tracked = 0.0, None
    try:
        yield
    finally:
        for bn, momentum, count in saved:
            bn.momentum, bn.num_batches_tracked = momentum, count


# set while a checkpointed region runs (first pass and recomputation): the edges inside run as they are
_in_region: contextvars.ContextVar[bool] = contextvars.ContextVar("darts_lite_in_checkpointed_region", default=False)


@contextlib.contextmanager
def no_recompute() -> Iterator[None]:
    """Inside the block every edge keeps what autograd saves, whatever its ``recompute``: for passes whose graph is
    differentiated more than once (a Hessian by double backward), which a selective recomputation cannot serve."""
    token = _in_region.set(True)
    try:
        yield
    finally:
        _in_region.reset(token)


def _region(module: nn.Module, *args: Any, context_fn: Callable | None = None, **kwargs: Any) -> torch.Tensor:
    """``module(*args, **kwargs)`` under non-reentrant ``torch.utils.checkpoint`` (``context_fn``: the selective policy, or
    None to recompute everything): the output and every gradient are those of ``module(*args, **kwargs)``.

    The recomputation draws the same random numbers (drop path masks: the RNG state is replayed), leaves the
    BatchNorm running statistics as the first pass left them (they are updated once), and uses the weights the
    first pass used, also when those were tensors substituted by ``torch.func.functional_call`` (the second
    order's unrolled and perturbed weights) and the backward runs after that call has returned.
    """
    names = [name for name, _ in module.named_parameters()]
    weights = {name: functools.reduce(getattr, name.split("."), module) for name in names}  # what forward sees now
    passes = [0]

    def run(*inputs: Any, **named: Any) -> torch.Tensor:
        passes[0] += 1
        token = _in_region.set(True)
        try:
            if passes[0] == 1:
                return module(*inputs, **named)
            with _bn_statistics_frozen(module):
                return functional_call(module, weights, inputs, named, strict=False)
        finally:
            _in_region.reset(token)

    policy = {} if context_fn is None else {"context_fn": context_fn}
    return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True, **policy, **kwargs)


def checkpointed(cell: nn.Module, *args: Any) -> torch.Tensor:
    """``cell(*args)`` whose inner activations are all recomputed in the backward pass instead of kept (see
    ``_region``); its edges run as they are inside."""
    return _region(cell, *args)


def _keep_policy(keep: str) -> Callable:
    """The selective checkpointing policy of ``recompute=keep``: which op outputs a region keeps."""
    convolution = torch.ops.aten.convolution.default

    def policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        # args[8] of aten.convolution: groups (1 for a 1x1 conv, the channels for a depthwise one)
        if op is convolution and (keep == "convolutions" or args[8] == 1):
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return policy


_KEEP = {keep: _keep_policy(keep) for keep in SELECTIVE}  # recompute -> its policy


class RecomputableEdge(nn.Module):
    """Base of a space's mixed edge: ``recompute`` (one of RECOMPUTE, set by its supernet) decides what its
    forward pass keeps for the backward pass; the edge's own pass is ``edge_forward``.

    "cheap" (the default): the edge's weighted sum runs each op through ``darts_lite.spaces.lean.weighted`` (asked
    by ``edge_forward`` through ``lean()``): an op's BatchNorm output and a pooling op's outputs are recomputed in
    the backward pass instead of kept, by one fused autograd step per op. "convolutions" keeps only the outputs of
    the edge's convolutions and recomputes everything else (ReLU, BatchNorm, pooling, drop path, the weighted sum)
    in the backward pass, with PyTorch's selective activation checkpointing; "pointwise" keeps only the 1x1
    convolutions' outputs and recomputes the depthwise ones too.
    Outputs, gradients, BatchNorm statistics and random draws are those of the plain edge, bit for bit. Only
    while training with gradients on, outside a checkpointed cell and outside ``no_recompute()``.
    """

    recompute: str = "cheap"
    partial_channels: int = 1
    # False: the edge runs its pooling ops itself rather than once with the other edges reading its input
    # (``darts_lite.spaces.lean.shared_pooling``): what the edges recomputed in regions of their own do, to compare
    share_pooling: bool = True
    ops: nn.ModuleList
    # per op, whether it still runs: False for an op pruned from the edge (DrNAS's progressive learning), whose
    # weight is 0; None: every op runs
    live: tuple[bool, ...] | None = None

    def runs_in_region(self) -> bool:
        """Whether a call runs the edge's pass in a selectively checkpointed region of its own (see ``recompute``)."""
        return not (self.recompute in ("none", "cheap") or not (self.training and torch.is_grad_enabled())
                    or _in_region.get())

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self.runs_in_region():
            return self.edge_forward(*args, **kwargs)
        if isinstance(args[0], EdgeInput):
            # the ReLU of the input the edge's ops share with other edges' is computed here, before the region, as
            # the plain edge computes it first: the region reads it (kept once for all the edges reading it)
            self.edge_inputs(args[0], args[2])
        contexts = functools.partial(create_selective_checkpoint_contexts, _KEEP[self.recompute])
        return _region(self, *args, context_fn=contexts, **kwargs)

    def edge_inputs(self, x: torch.Tensor | EdgeInput, index: int | None) -> EdgeInput:
        """The ``EdgeInput`` the pass reads ``x`` through (``x`` itself when it is one and the edge shares its ReLU),
        with the rectified input its running ops share computed first, before any op: a pass creates its autograd
        nodes, and so sums its gradients, in the same order whether it runs plainly or in a recomputed region."""
        share = getattr(self, "share_relu", True)
        inputs = EdgeInput.of(x, share)
        if share:
            self.ops_input(inputs).rectify(self.running_ops(index))
        return inputs

    def ops_input(self, x: EdgeInput) -> EdgeInput:
        """What the edge's ops read of its input ``x``: all of it, or with partial channels its first 1/K."""
        k = self.partial_channels
        return x if k == 1 else x.narrow(x.x.shape[1] // k)

    def running_ops(self, index: int | None) -> list[nn.Module]:
        """The ops a pass runs: the sampled one (``index``), or every op but `none` and the pruned ones."""
        if index is not None:
            return [self.ops[index]]
        live = self.live or (True,) * len(self.ops)
        return [op for op, runs in zip(self.ops, live) if runs and not isinstance(op, Zero)]

    def edge_forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    def lean(self) -> bool:
        """Whether this pass sums its ops through ``darts_lite.spaces.lean.weighted``: recompute="cheap", training
        with gradients on, outside a checkpointed region and ``no_recompute()`` (those run the plain ops), not while
        being compiled and not under forward-mode AD."""
        return (self.recompute == "cheap" and self.training and torch.is_grad_enabled() and not _in_region.get()
                and not torch.compiler.is_compiling() and _forward_ad._current_level < 0)

    def make_ops(self, partial_channels: int) -> nn.ModuleList:
        """The edge's candidate ops, built for 1/``partial_channels`` of its channels."""
        raise NotImplementedError

    def set_partial_channels(self, k: int, widen: bool = True) -> list[Widened]:
        """Rebuild the ops for 1/k of the channels (k <= the current K). ``widen``: fill them from the current ops
        (``darts_lite.spaces.widen``; returns each parameter's widening); False: leave them as built, for weights
        that a checkpoint loads next. The new ops' own initialisation draws nothing from the run's random streams."""
        if k > self.partial_channels:
            raise ValueError(f"partial channels can only shrink (the ops widen): {self.partial_channels} -> {k}")
        reference = next(self.ops.parameters(), None)
        with torch.random.fork_rng(devices=[]):
            ops = self.make_ops(k)
        if reference is not None:
            ops.to(device=reference.device, dtype=reference.dtype)
            if any(p.dim() == 4 and p.shape[-1] > 1 and not p.is_contiguous()
                   and p.is_contiguous(memory_format=torch.channels_last) for p in self.ops.parameters()):
                ops.to(memory_format=torch.channels_last)
        ops.train(self.training)
        widened = [w for old, new in zip(self.ops, ops) for w in widen_op(old, new)] if widen else []
        self.ops, self.partial_channels = ops, k
        return widened


class Supernet(nn.Module):
    """Base of a space's SearchNetwork: it sets ``relaxation`` and defines ``arch_parameters()``.

    ``checkpoint_cells``: recompute each cell's inner activations in the backward pass (less memory, about one
    more forward pass of time); results are unchanged. ``recompute``: what each mixed edge keeps for the backward
    pass (``RecomputableEdge``; inside a checkpointed cell the cell's recomputation decides).

    ``edge_weight_transform``: None, or ``f(cell_type, EdgeWeights) -> EdgeWeights`` applied to the relaxation's
    output of each cell type ("normal", "reduce"; NB201: "cell") before the cells use it: how architecture
    selection fixes decided edges or removes one op from the supernet without touching the alphas.
    """

    relaxation: Relaxation
    checkpoint_cells: bool = False
    edge_weight_transform: Callable[[str, EdgeWeights], EdgeWeights] | None = None
    _recompute: str = "cheap"

    @property
    def recompute(self) -> str:
        """What each mixed edge keeps for the backward pass: "none" (everything autograd saves), "cheap" (the
        default), "convolutions" or "pointwise" (see ``RecomputableEdge``). Set on the supernet, it reaches every
        edge; "cheap" is also accepted by a supernet without such edges (its own edges run as they are)."""
        return self._recompute

    @recompute.setter
    def recompute(self, value: str) -> None:
        if value not in RECOMPUTE:
            raise ValueError(f"recompute must be one of {', '.join(RECOMPUTE)}, got {value!r}")
        edges = [m for m in self.modules() if isinstance(m, RecomputableEdge)]
        if value in SELECTIVE and not edges:
            raise ValueError(f"recompute={value!r}: {type(self).__name__} has no edge that can recompute (a subclass of "
                             "darts_lite.spaces.supernet.RecomputableEdge)")
        self._recompute = value
        for edge in edges:
            edge.recompute = value

    def relax(self, cell_type: str, alphas: torch.Tensor) -> EdgeWeights:
        """The op weights of ``cell_type``'s cells: the relaxation of ``alphas`` [E, O]; with pruned ops (``prune_ops``)
        the pruned ones' weights set to 0 and each edge's others renormalised to sum to 1; then the transform if one
        is set."""
        ew = self.relaxation(alphas)
        mask = self.op_mask(cell_type)
        if mask is not None:
            if ew.index is not None:
                raise RuntimeError(f"{type(self.relaxation).__name__} samples one op per edge; pruned ops need a "
                                   "relaxation that weighs every op")
            kept = ew.weights * mask
            ew = dataclasses.replace(ew, weights=kept / kept.sum(-1, keepdim=True))
        return ew if self.edge_weight_transform is None else self.edge_weight_transform(cell_type, ew)

    # ---- DrNAS's progressive learning: pruned ops, wider partial channels ---------------------------------------
    def mixed_edges(self) -> Iterator[tuple[str, int, RecomputableEdge]]:
        """Every mixed edge of every search cell: (its cell type, its alpha row, the edge)."""
        raise NotImplementedError

    def op_mask(self, cell_type: str) -> torch.Tensor | None:
        """[E, O] bool, True for the ops ``cell_type``'s edges still have; None when no op was pruned."""
        return getattr(self, f"op_mask_{cell_type}", None)

    def op_masks(self) -> dict[str, torch.Tensor]:
        """{cell type: its op mask} for the cell types with pruned ops ({} before any pruning)."""
        masks = {cell: self.op_mask(cell) for cell in self.cell_alphas()}
        return {cell: m for cell, m in masks.items() if m is not None}

    def op_mask_problem(self, masks: Any) -> str | None:
        """What keeps ``masks`` from being this supernet's op masks ({cell type: [E, O] bool, every edge with an op}),
        or None."""
        alphas = self.cell_alphas()
        if not isinstance(masks, dict):
            return f"op masks must be a mapping of cell types to bool tensors, not {type(masks).__name__}"
        for cell, mask in masks.items():
            if cell not in alphas or not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool \
                    or tuple(mask.shape) != tuple(alphas[cell].shape):
                shape = tuple(alphas[cell].shape) if cell in alphas else None
                return (f"an op mask for {cell!r} must be a bool tensor shaped as its alphas {shape}" if shape else
                        f"{cell!r} is not a cell type of this supernet ({', '.join(alphas)})")
            if not mask.any(-1).all():
                return f"the op mask of {cell!r} leaves an edge without any op"
        return None

    def set_op_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Prune by ``masks`` ({cell type: [E, O] bool}, True = kept): the relaxation's weights of the other ops are 0
        and their edges no longer run them. Kept with the module (a buffer outside the state_dict: a checkpoint
        carries it beside the weights, see ``SearchModule``)."""
        problem = self.op_mask_problem(masks)
        if problem:
            raise ValueError(problem)
        alphas = self.cell_alphas()
        for cell, mask in masks.items():
            self.register_buffer(f"op_mask_{cell}", mask.to(alphas[cell].device).clone(), persistent=False)
        rows = {cell: mask.tolist() for cell, mask in masks.items()}  # read where given (a module may be on "meta")
        for cell, e, edge in self.mixed_edges():
            if cell in rows:
                edge.live = tuple(bool(v) for v in rows[cell][e])

    def prune_ops(self, keep: int) -> dict[str, torch.Tensor]:
        """DrNAS's pruning: on each edge keep the ``keep`` ops of largest alpha among those it still has; the other
        alphas are set to 0 (the kept ones keep their values), and those ops are masked (``set_op_masks``). Returns
        the masks."""
        masks = {}
        with torch.no_grad():
            for cell, alphas in self.cell_alphas().items():
                if not 1 <= keep <= alphas.shape[-1]:
                    raise ValueError(f"keep={keep}: must be in 1..{alphas.shape[-1]} (the ops of an edge)")
                mask = self.op_mask(cell)
                ranked = alphas if mask is None else alphas.masked_fill(~mask, float("-inf"))
                top = ranked.topk(keep, dim=-1).indices
                masks[cell] = torch.zeros_like(alphas, dtype=torch.bool).scatter_(1, top, True)
                alphas.masked_fill_(~masks[cell], 0.0)
        self.set_op_masks(masks)
        return masks

    def masked_alphas(self) -> dict[str, torch.Tensor]:
        """``cell_alphas()`` with the pruned ops' entries at -inf: what the genotype and the op probabilities read (a
        softmax over it is the softmax of the kept ops, renormalised, as DrNAS reads them)."""
        out = {}
        for cell, alphas in self.cell_alphas().items():
            mask = self.op_mask(cell)
            out[cell] = alphas if mask is None else alphas.masked_fill(~mask, float("-inf"))
        return out

    def set_partial_channels(self, k: int, widen: bool = True) -> list[Widened]:
        """Every mixed edge rebuilt for 1/k of its channels (``RecomputableEdge.set_partial_channels``); the network's
        ``partial_channels`` becomes k. Returns the widened parameters (none with ``widen=False``)."""
        edges = [edge for _, _, edge in self.mixed_edges()]
        C = getattr(self, "C", None)
        if C is not None and C % k:
            raise ValueError(f"partial_channels={k} must divide C={C}")
        widened = [w for edge in edges for w in edge.set_partial_channels(k, widen)]
        self.partial_channels = k
        return widened

    def run_cell(self, cell: nn.Module, *args: Any) -> torch.Tensor:
        """``cell(*args)``, checkpointed when ``checkpoint_cells`` is on and a backward pass may follow."""
        if self.checkpoint_cells and self.training and torch.is_grad_enabled():
            # the cell recomputes its own ReLUs of its inputs: it is given tensors, not inputs shared with other cells
            return checkpointed(cell, *map(tensor_of, args))
        return cell(*args)

    def arch_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def cell_alphas(self) -> dict[str, torch.Tensor]:
        """The alphas [E, O] of each cell type by name ({"normal", "reduce"}; NAS-Bench-201: {"cell"}), the main
        cell first: the parameters themselves (other architecture parameters, such as edge betas, are not here)."""
        raise NotImplementedError

    def op_probabilities(self) -> dict[str, torch.Tensor]:
        """softmax(alpha) of each cell type, detached: what the heatmaps, the decision measures and the genotype read
        (over the kept ops only, once ops were pruned: a pruned op's probability is 0)."""
        return {cell: torch.softmax(a.detach(), dim=-1) for cell, a in self.masked_alphas().items()}

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
