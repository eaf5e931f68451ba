"""The DARTS cell search space: mixed edges, search cells and the search network.

A search cell has two inputs (the outputs of the two previous cells), ``steps`` intermediate
nodes and one mixed edge from every earlier state to every node (2+3+4+5 = 14 edges for 4
nodes); its output concatenates the last ``multiplier`` nodes along channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...relax import EdgeWeights, make_relaxation
from ...schema import Allowed, Ge, Hint, Lt, checked
from ..batchnorm import compiled_batch_norms
from ..lean import pooling_readers, shared_pooling, weighted
from ..ops import (
    EdgeInput,
    FactorizedReduce,
    Identity,
    ReLUConvBN,
    Zero,
    channels_concatenated,
    channels_last_gradient,
    drop_active,
    drop_path,
    run_on,
    run_op,
    sliced,
)
from ..supernet import RecomputableEdge, Supernet, new_alphas
from .genotype import PRIMITIVES, Genotype
from .ops import channel_shuffle, make_op
from .pictures import edge_labels


def num_edges(steps: int) -> int:
    return sum(2 + i for i in range(steps))


def node_softmax(beta: torch.Tensor, steps: int) -> torch.Tensor:
    """Edge normalization's weights: beta [E] -> [E], a softmax over the incoming edges of each node."""
    parts, start = [], 0
    for node in range(steps):
        parts.append(torch.softmax(beta[start:start + node + 2], dim=-1))
        start += node + 2
    return torch.cat(parts)


def reduction_indices(layers: int) -> tuple[int, ...]:
    """Cells at 1/3 and 2/3 of the depth reduce (halve H, W; double C)."""
    return tuple(sorted({layers // 3, 2 * layers // 3}))


def cell_plan(C: int, layers: int) -> list[tuple[bool, int]]:
    """(whether it reduces, its channels C_curr) of each cell of a network of ``layers`` cells that starts at C
    channels: the search and the evaluation networks stack their cells by it."""
    reductions, plan = reduction_indices(layers), []
    for i in range(layers):
        C = 2 * C if i in reductions else C
        plan.append((i in reductions, C))
    return plan


class MixedEdge(RecomputableEdge):
    """All candidate ops of one edge; the relaxation decides which run and how they are weighted.

    The ops that begin with a ReLU of the edge's input (sep_conv, dil_conv, the stride-2 skip_connect) share one
    ReLU when several run (``share_relu``; off only to compare with running each op whole): one rectified input
    kept for the backward pass instead of one per op, with the same outputs and gradients. Given an ``EdgeInput``
    (as the search cell gives every edge leaving a state), they share it with the other edges' ops too.

    ``partial_channels`` K > 1 (PC-DARTS): the ops are built for C/K channels and see the first C/K channels of the
    input; the other channels bypass them (max-pooled 2x2 when the edge has stride 2), and the two parts are
    concatenated and channel-shuffled in K groups.

    ``auxiliary_skip`` (DARTS-): a skip branch beside the ops, outside the op choice, on the whole input: the
    identity, or a factorized reduction on a stride-2 edge; forward adds ``skip`` times its output.
    """

    def __init__(self, C: int, stride: int, primitives: Sequence[str], affine: bool, partial_channels: int = 1,
                 share_relu: bool = True, auxiliary_skip: bool = False):
        super().__init__()
        if partial_channels < 1 or C % partial_channels:
            raise ValueError(f"partial_channels={partial_channels} must be a positive divisor of the edge's {C} channels")
        self.partial_channels, self.stride, self.share_relu = partial_channels, stride, share_relu
        self.C, self._primitives, self._affine = C, tuple(primitives), affine
        self.ops = self.make_ops(partial_channels)
        # ops whose output drop path may zero: not `none` (already zero) and not the identity
        self._droppable = [not isinstance(op, (Zero, Identity)) for op in self.ops]
        # after the ops, so that the ops start as the plain supernet's do
        self.auxiliary = (Identity() if stride == 1 else FactorizedReduce(C, C, affine=False)) if auxiliary_skip else None

    def make_ops(self, partial_channels: int) -> nn.ModuleList:
        return nn.ModuleList(make_op(p, self.C // partial_channels, self.stride, self._affine, pool_bn=True)
                             for p in self._primitives)

    def edge_forward(self, x: torch.Tensor | EdgeInput, weights: torch.Tensor, index: int | None, drop_prob: float,
                     skip: float = 0.0) -> torch.Tensor:
        """x: [B, C, H, W], or an ``EdgeInput`` of it shared with other edges; weights: [O]; index: the one op to
        run, or None for all; skip: the auxiliary skip's coefficient -> [B, C, H/stride, W/stride]. Called as
        ``edge(...)``, which keeps what ``recompute`` says."""
        inputs = self.edge_inputs(x, index)
        out = self._edge(inputs, weights, index, drop_prob)
        if skip and self.auxiliary is not None:
            out = out + skip * self.auxiliary(inputs.x)
        return out

    def _edge(self, inputs: EdgeInput, weights: torch.Tensor, index: int | None, drop_prob: float) -> torch.Tensor:
        ops_input = self.ops_input(inputs)
        out = self._mixed(ops_input, weights, index, drop_prob)
        if self.partial_channels == 1:
            return out
        bypass = sliced(inputs.x, slice(None), slice(ops_input.x.shape[1], None))
        if self.stride == 2:
            # ceil_mode matches the strided ops' ceil(H/2) on odd sizes; on even sizes it is PC-DARTS's 2x2 max pool
            bypass = F.max_pool2d(bypass, 2, 2, ceil_mode=True)
        return channel_shuffle(torch.cat([out, bypass], dim=1), self.partial_channels)

    def _mixed(self, inputs: EdgeInput, weights: torch.Tensor, index: int | None, drop_prob: float) -> torch.Tensor:
        lean, drops = self.lean(), drop_active(drop_prob)
        if index is not None:
            op = self.ops[index]
            inp, rectified = inputs(op)
            if drops and self._droppable[index]:
                return drop_path(run_op(op, inp, rectified), drop_prob) * weights[index]
            return weighted(op, inp, weights[index], rectified, fuse=lean)
        total = None
        live = self.live or (True,) * len(self.ops)
        for i, (op, w, droppable, runs) in enumerate(zip(self.ops, weights, self._droppable, live)):
            if isinstance(op, Zero) or not runs:
                # `none` contributes exactly zero to the sum (its alpha still gets gradient via softmax); a pruned
                # op's weight is 0 (DrNAS's progressive learning skips it likewise)
                continue
            out = shared_pooling(inputs, self, i, lean)  # a pooling op run once for every edge reading the input
            if out is None:
                inp, rectified = inputs(op)
                if drops and droppable:
                    out = drop_path(run_op(op, inp, rectified), drop_prob) * w
                else:
                    out = weighted(op, inp, w, rectified, fuse=lean)
            total = out if total is None else total + out
        return total


class SearchCell(nn.Module):
    def __init__(
        self,
        steps: int,
        multiplier: int,
        C_pp: int,
        C_p: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        primitives: Sequence[str],
        affine: bool,
        partial_channels: int = 1,
        auxiliary_skip: bool = False,
    ):
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        self.preprocess0 = FactorizedReduce(C_pp, C, affine) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, affine)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine)
        # the preprocessing's BatchNorms run darts_lite's compiled kernels (the edges' run fused with their ops)
        compiled_batch_norms(self.preprocess0), compiled_batch_norms(self.preprocess1)
        self.edges = nn.ModuleList()
        self._sources: list[int] = []  # per edge, the state it reads
        for node in range(steps):
            for j in range(node + 2):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedEdge(C, stride, primitives, affine, partial_channels,
                                            auxiliary_skip=auxiliary_skip))
                self._sources.append(j)

    def forward(self, s0: torch.Tensor | EdgeInput, s1: torch.Tensor | EdgeInput, ew: EdgeWeights, drop_prob: float = 0.0,
                edge_scale: torch.Tensor | None = None) -> torch.Tensor:
        """s0, s1: the two previous cells' outputs (tensors, or ``EdgeInput``s shared with the other cell reading
        them); edge_scale: None, or [E] factors of the edges' outputs (edge normalization) -> [B, multiplier * C, H', W'].
        Every edge leaving a state reads one ``EdgeInput`` of it (one ReLU of the state for all their ops, and when
        every op runs, one pooling for all their pooling ops: ``darts_lite.spaces.lean.shared_pooling``)."""
        rows = ew.weights.unbind(0)
        readers = pooling_readers(self.edges, self._sources, rows, ew, drop_prob)
        states = [readers(EdgeInput(run_on(self.preprocess0, s0)), 0), readers(EdgeInput(run_on(self.preprocess1, s1)), 1)]
        e = 0
        for _ in range(self.steps):
            node = None
            for h in states:
                idx = None if ew.index is None else ew.index[e]
                out = self.edges[e](h, rows[e], idx, drop_prob, ew.skip)
                if edge_scale is not None:
                    out = out * edge_scale[e]
                node = out if node is None else node + out
                e += 1
            states.append(readers(EdgeInput(node), len(states)))
        return channels_concatenated([s.x for s in states[-self.multiplier:]])


class FixedReductionCell(nn.Module):
    """GDAS's hand-designed reduction cell: four stride-2 branches concatenated (output 4C).

    On each input: ReLU, 1x3 conv (stride (1,2)), 3x1 conv (stride (2,1)), both with 8 groups,
    BN, ReLU, 1x1 conv, BN; and on each input a 3x3 stride-2 max pool followed by BN.
    """

    multiplier = 4

    def __init__(self, C_pp: int, C_p: int, C: int, reduction_prev: bool, affine: bool, drop_prob: float = 0.0):
        super().__init__()
        if C % 8:
            raise ValueError(f"the fixed reduction cell uses 8-group convs; its channel count {C} must be a multiple of 8")
        self.reduction = True
        self.preprocess0 = FactorizedReduce(C_pp, C, affine) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, affine)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine)
        self.convs = nn.ModuleList(self._conv_branch(C, affine) for _ in range(2))
        self.pools = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), nn.BatchNorm2d(C, affine=affine)) for _ in range(2)
        )
        compiled_batch_norms(self)  # every BatchNorm through darts_lite's compiled kernels (the same values)

    @staticmethod
    def _conv_branch(C: int, affine: bool) -> nn.Module:
        return nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, 3), stride=(1, 2), padding=(0, 1), groups=8, bias=False),
            nn.Conv2d(C, C, (3, 1), stride=(2, 1), padding=(1, 0), groups=8, bias=False),
            nn.BatchNorm2d(C, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, 1, bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )

    def forward(
        self, s0: torch.Tensor | EdgeInput, s1: torch.Tensor | EdgeInput, ew: EdgeWeights | None = None,
        drop_prob: float | torch.Tensor = 0.0,
    ) -> torch.Tensor:
        s0, s1 = run_on(self.preprocess0, s0), run_on(self.preprocess1, s1)
        branches = [self.convs[0](s0), self.convs[1](s1), self.pools[0](s0), self.pools[1](s1)]
        if drop_active(drop_prob):
            branches = [drop_path(b, drop_prob) for b in branches]
        return channels_concatenated(branches)


class SearchNetwork(Supernet):
    """The DARTS search supernet: stem, ``layers`` search cells, global pool, linear classifier.

    All normal cells share ``alpha_normal`` [14, 8] and all reduction cells ``alpha_reduce``
    (absent with ``fixed_reduction=True``, GDAS-FRC). ``relaxation``: a registered name, "softmax" (DARTS) or
    "gumbel" (GDAS; one sample per forward pass, shared by all cells of a type), a config with ``_target_``, or a
    relaxation object (``darts_lite.relax``).

    PC-DARTS (Xu et al., 2020): ``partial_channels`` K > 1 sends 1/K of each edge's channels through its ops and
    lets the rest bypass them (K must divide C); ``edge_normalization`` adds ``beta_normal`` / ``beta_reduce`` [14],
    softmaxed over each node's incoming edges, which scale the edges' outputs and weigh in the genotype's choice of
    each node's two inputs.

    forward: x [B, in_channels, H, W] -> logits [B, num_classes].
    """

    @checked
    def __init__(
        self,
        C: Annotated[int, Ge(2), Hint("initial channels, even")] = 16,
        num_classes: Annotated[int, Ge(1)] = 10,
        layers: Annotated[int, Ge(3), Hint("reductions sit at layers//3 and 2*layers//3")] = 8,
        steps: Annotated[int, Ge(1)] = 4,
        multiplier: Annotated[int, Ge(1)] = 4,
        stem_multiplier: Annotated[int, Ge(1), Hint("the stem's channels are it times C")] = 3,
        in_channels: Annotated[int, Ge(1)] = 3,
        relaxation: Any = "softmax",
        affine: bool = False,
        drop_path_prob: Annotated[float, Ge(0), Lt(1)] = 0.0,
        fixed_reduction: bool = False,
        primitives: Annotated[Sequence[str], Allowed(f"distinct ops from {', '.join(PRIMITIVES)}, at least one besides "
                                                     "none")] = PRIMITIVES,
        alpha_init: Literal["randn", "zeros"] = "randn",
        checkpoint_cells: bool = False,
        partial_channels: Annotated[int, Ge(1), Hint("PC-DARTS's K; 1 = off")] = 1,
        edge_normalization: bool = False,
        recompute: Literal["none", "cheap", "convolutions", "pointwise"] = "cheap",
    ):
        super().__init__()
        self.checkpoint_cells = bool(checkpoint_cells)
        self.C, self.num_classes, self.layers = C, num_classes, layers
        self.steps, self.multiplier = steps, multiplier
        self.primitives = tuple(primitives)
        self.fixed_reduction = fixed_reduction
        self.drop_path_prob = drop_path_prob
        self.partial_channels, self.edge_normalization = partial_channels, bool(edge_normalization)
        self.relaxation = make_relaxation(relaxation)

        C_curr = stem_multiplier * C
        # the stem BN keeps its affine parameters: it sits before any alpha, so it cannot rescale them
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_pp, C_p = C_curr, C_curr
        self.cells = nn.ModuleList()
        reduction_prev = False
        for reduction, C_curr in cell_plan(C, layers):
            if reduction and fixed_reduction:
                cell: nn.Module = FixedReductionCell(C_pp, C_p, C_curr, reduction_prev, affine)
                out = FixedReductionCell.multiplier * C_curr
            else:
                cell = SearchCell(steps, multiplier, C_pp, C_p, C_curr, reduction, reduction_prev, primitives, affine,
                                  partial_channels, auxiliary_skip=getattr(self.relaxation, "auxiliary_skip", False))
                out = multiplier * C_curr
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, out
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

        shape = (num_edges(steps), len(primitives))
        self.alpha_normal = new_alphas(shape, alpha_init)
        self.alpha_reduce = None if fixed_reduction else new_alphas(shape, alpha_init)
        # created after the alphas and only when asked for, so the alphas (and the RNG) are those of the plain network
        self.beta_normal = self.beta_reduce = None
        if self.edge_normalization:
            self.beta_normal = new_alphas(shape[:1], alpha_init)
            self.beta_reduce = None if fixed_reduction else new_alphas(shape[:1], alpha_init)
        self.recompute = recompute  # reaches every edge

    @classmethod
    def config_problems(cls, rules: Any) -> list[str]:
        """The rules between the arguments (each alone is checked by its annotation)."""
        v, key = rules.values, rules.key
        C, K, problems = v["C"], v["partial_channels"], []
        if C % 2:
            problems.append(f"{key('C')}={C}: must be an even integer >= 2")
        elif v["fixed_reduction"] and C % 4:
            problems.append(f"{key('C')}={C}: must be a multiple of 4 with {key('fixed_reduction')}")
        if v["multiplier"] > v["steps"]:
            problems.append(f"{key('multiplier')}={v['multiplier']}: must be in 1..{key('steps')}")
        ops = list(v["primitives"])
        if not (len(ops) >= 2 and set(ops) <= set(PRIMITIVES) and len(set(ops)) == len(ops) and set(ops) != {"none"}):
            problems.append(f"{key('primitives')}={ops}: must be distinct ops from {', '.join(PRIMITIVES)}, at least one "
                            "besides none")
        if C % K:
            divisors = ", ".join(str(d) for d in range(1, C + 1) if C % d == 0)
            problems.append(f"{key('partial_channels')}={K}: must divide {key('C')}={C} (each edge's ops get 1/{K} of its "
                            f"channels, in cells of C, 2C and 4C channels); divisors of {C}: {divisors}")
        return problems

    # ---- parameters --------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """The alphas [alpha_normal, alpha_reduce], each [edges, ops], then with edge normalization the betas
        [beta_normal, beta_reduce], each [edges] (the reduce ones absent with the fixed reduction cell)."""
        params = (self.alpha_normal, self.alpha_reduce, self.beta_normal, self.beta_reduce)
        return [p for p in params if p is not None]

    # ---- forward -----------------------------------------------------------------------------
    def edge_weights(self) -> tuple[EdgeWeights, EdgeWeights | None]:
        normal = self.relax("normal", self.alpha_normal)
        reduce = None if self.alpha_reduce is None else self.relax("reduce", self.alpha_reduce)
        return normal, reduce

    def edge_scales(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Edge normalization's factors (normal, reduce), each [E] summing to 1 per node; (None, None) when off."""
        return tuple(None if b is None else node_softmax(b, self.steps) for b in (self.beta_normal, self.beta_reduce))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> logits [B, num_classes]."""
        normal, reduce = self.edge_weights()
        scale_normal, scale_reduce = self.edge_scales()
        drop = self.drop_path_prob if self.training else 0.0
        # each cell's output is read by the next two cells: one EdgeInput, so one ReLU of it for both
        s0 = s1 = EdgeInput(self.stem(x))
        for cell in self.cells:
            scale = scale_reduce if cell.reduction else scale_normal
            extra = () if scale is None else (scale,)  # the fixed reduction cell takes no scale
            s0, s1 = s1, EdgeInput(self.run_cell(cell, s0, s1, reduce if cell.reduction else normal, drop, *extra))
        return self.classifier(self.global_pooling(channels_last_gradient(s1.x)).flatten(1))

    # ---- architecture ------------------------------------------------------------------------
    def cell_alphas(self) -> dict[str, torch.Tensor]:
        """{"normal": alpha_normal, "reduce": alpha_reduce}, each [E, O] (no "reduce" with the fixed reduction cell)."""
        out = {"normal": self.alpha_normal}
        if self.alpha_reduce is not None:
            out["reduce"] = self.alpha_reduce
        return out

    def edge_probabilities(self) -> dict[str, torch.Tensor]:
        """Edge normalization's softmax(beta) over each node's incoming edges: {"normal": [E], "reduce": [E]}
        (detached; no "reduce" with the fixed reduction cell); {} when edge normalization is off."""
        scales = dict(zip(("normal", "reduce"), self.edge_scales()))
        return {cell: s.detach() for cell, s in scales.items() if s is not None}

    def mixed_edges(self):
        """(cell type, alpha row, edge) of every mixed edge of every search cell."""
        for cell in self.cells:
            if isinstance(cell, SearchCell):
                for e, edge in enumerate(cell.edges):
                    yield ("reduce" if cell.reduction else "normal"), e, edge

    def edge_labels(self) -> list[str]:
        """One label per alpha row, "input->node" (c_{k-2}, c_{k-1} the cell inputs, 0.. the intermediate nodes)."""
        return edge_labels(self.steps)

    def genotype(self, threshold: float | None = None) -> Genotype:
        """The discrete cell pair the alphas select now (two strongest non-`none` edges per node, argmax op; strength
        the relaxation's, a softmax unless it says otherwise); with edge normalization an edge's strength is its
        node-softmaxed beta times its strongest non-`none` op weight. ``threshold`` (FairDARTS's threshold
        selection): a chosen edge whose op's strength is below it is left out (``Genotype.cell_from_alphas``)."""
        with torch.no_grad():
            scale_normal, scale_reduce = self.edge_scales()
        alphas = self.masked_alphas()  # pruned ops (progressive learning) are never chosen
        return Genotype.from_alphas(
            alphas["normal"], alphas.get("reduce"), self.steps, self.multiplier, self.primitives,
            normal_scale=scale_normal, reduce_scale=scale_reduce, strengths=self.relaxation_strengths,
            threshold=threshold,
        )
