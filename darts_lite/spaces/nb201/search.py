"""NAS-Bench-201's supernet: 3N search cells sharing one alpha tensor [6, O] between the fixed stem, residual blocks
and head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import torch
from torch import nn

from ...relax import EdgeWeights, make_relaxation
from ...schema import Allowed, Ge, Hint, checked
from ..lean import plus, pooling_readers, shared_pooling, weighted
from ..ops import EdgeInput, Zero, channel_shuffle, sliced
from ..supernet import RecomputableEdge, Supernet, new_alphas
from .genotype import EDGES, NODES, PRIMITIVES, Genotype
from .ops import _Macro, make_op


class MixedEdge(RecomputableEdge):
    """All candidate ops of one edge; the relaxation decides which run and how they are weighted.

    The two convs (ReLU-conv-BN) share one ReLU of the edge's input when both run (``share_relu``; off only to
    compare with running each op whole): the same outputs, one rectified input kept for the backward pass. Given an
    ``EdgeInput`` (as the search cell gives every edge leaving a node), they share it with the other edges' convs too.

    ``auxiliary_skip`` (DARTS-): an identity branch beside the ops, outside the op choice; forward adds ``skip``
    times the input.

    ``partial_channels`` K > 1 (PC-DARTS): the ops are built for 1/K of the channels and see the first 1/K of the
    input; the other channels bypass them, and the two parts are concatenated and channel-shuffled in K groups.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, primitives: Sequence[str], affine: bool, track_running_stats: bool,
                 unsampled_weights: bool = True, auxiliary_skip: bool = False, partial_channels: int = 1):
        super().__init__()
        k = partial_channels
        if k > 1 and (c_in != c_out or stride != 1 or c_in % k):
            raise ValueError(f"partial channels need an edge that keeps its shape and channels divisible by {k}, not "
                             f"{c_in}->{c_out} at stride {stride}")
        self.partial_channels = k
        self._shape, self._primitives = (c_in, c_out, stride, affine, track_running_stats), tuple(primitives)
        self.ops = self.make_ops(k)
        self.unsampled_weights = unsampled_weights
        if auxiliary_skip and (c_in != c_out or stride != 1):
            raise ValueError(f"an auxiliary skip needs an edge that keeps its shape, not {c_in}->{c_out} at stride {stride}")
        self.auxiliary_skip = auxiliary_skip
        self.share_relu = True

    def make_ops(self, partial_channels: int) -> nn.ModuleList:
        c_in, c_out, stride, affine, track_running_stats = self._shape
        k = partial_channels
        return nn.ModuleList(make_op(p, c_in // k, c_out // k, stride, affine, track_running_stats) for p in self._primitives)

    def edge_forward(self, x: torch.Tensor | EdgeInput, weights: torch.Tensor, index: int | None,
                     skip: float = 0.0) -> torch.Tensor:
        """x: [B, C, H, W], or an ``EdgeInput`` of it shared with other edges; weights: [O]; index: the one op to
        run, or None for all; skip: the auxiliary skip's coefficient. Called as ``edge(...)``, which keeps what
        ``recompute`` says."""
        inputs = self.edge_inputs(x, index)
        ops_input, x = self.ops_input(inputs), inputs.x
        out = self._edge(ops_input, weights, index)
        if self.partial_channels > 1:
            bypass = sliced(x, slice(None), slice(ops_input.x.shape[1], None))
            out = channel_shuffle(torch.cat([out, bypass], dim=1), self.partial_channels)
        return out + skip * x if skip and self.auxiliary_skip else out

    def _edge(self, inputs: EdgeInput, weights: torch.Tensor, index: int | None) -> torch.Tensor:
        lean = self.lean()
        if index is not None:
            op = self.ops[index]
            inp, rectified = inputs(op)
            out = weighted(op, inp, weights[index], rectified, fuse=lean)
            if self.unsampled_weights and len(self.ops) > 1:
                # the benchmark's GDAS code adds the hard weights of the ops it did not run to the sum: each is
                # exactly 0 forward, and sends every element's gradient, summed, to its alpha
                out = plus(out, torch.cat([weights[:index], weights[index + 1:]]).sum(), lean)
            return out
        total = None
        for i, (op, w, runs) in enumerate(zip(self.ops, weights, self.live or (True,) * len(self.ops))):
            if isinstance(op, Zero) or not runs:
                # `none` adds exactly zero, and zero gradient to its weight (its alpha still learns via the softmax);
                # a pruned op's weight is 0 (DrNAS's progressive learning skips it likewise)
                continue
            out = shared_pooling(inputs, self, i, lean)  # a pooling op run once for every edge reading the input
            if out is None:
                inp, rectified = inputs(op)
                out = weighted(op, inp, w, rectified, fuse=lean)
            total = out if total is None else total + out
        return total


class SearchCell(nn.Module):
    """The 4-node DAG with a mixed edge on each of its 6 edges. forward: [B, C_in, H, W] -> [B, C_out, H, W]."""

    def __init__(self, c_in: int, c_out: int, primitives: Sequence[str], affine: bool, track_running_stats: bool,
                 unsampled_weights: bool = True, auxiliary_skip: bool = False, partial_channels: int = 1):
        super().__init__()
        # only edges from the cell input see c_in; the others read nodes already at c_out
        self.edges = nn.ModuleList(
            MixedEdge(c_in if j == 0 else c_out, c_out, 1, primitives, affine, track_running_stats, unsampled_weights,
                      auxiliary_skip, partial_channels)
            for _, j in EDGES
        )

    def forward(self, x: torch.Tensor, ew: EdgeWeights, edge_scale: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, C, H, W]; edge_scale: None, or [6] factors of the edges' outputs (edge normalization)."""
        # every edge leaving a node reads one EdgeInput of it: one ReLU of the node for all, and when every op runs one
        # pooling for all their pooling ops
        rows = ew.weights.unbind(0)
        readers = pooling_readers(self.edges, [j for _, j in EDGES], rows, ew)
        nodes = [readers(EdgeInput(x), 0)]
        for i in range(1, NODES):
            node = None
            for e, (to, j) in enumerate(EDGES):
                if to != i:
                    continue
                out = self.edges[e](nodes[j], rows[e], None if ew.index is None else ew.index[e], ew.skip)
                if edge_scale is not None:
                    out = out * edge_scale[e]
                node = out if node is None else node + out
            nodes.append(readers(EdgeInput(node), i))
        return nodes[-1].x


class SearchNetwork(Supernet, _Macro):
    """The NAS-Bench-201 supernet: 3N search cells sharing one alpha [6, O], two residual blocks.

    ``relaxation``: a registered name, "softmax" (DARTS: every op runs, weighted) or "gumbel" (GDAS: one hard
    sample per forward pass, shared by all cells; only the sampled op of each edge runs), a config with
    ``_target_``, or a relaxation object (``darts_lite.relax``).
    ``unsampled_weights`` (gumbel only): also add the zero hard weights of the ops not sampled to each edge's
    output, as the benchmark's GDAS code does (the GDAS paper's formula has only the sampled op's term):
    equal forward values, and a gradient on the unsampled ops' alphas from the sum of the node's gradient.

    forward: x [B, in_channels, H, W] -> logits [B, num_classes].
    """

    @checked
    def __init__(
        self,
        C: Annotated[int, Ge(1)] = 16,
        N: Annotated[int, Ge(1), Hint("cells per stage")] = 5,
        num_classes: Annotated[int, Ge(1)] = 10,
        in_channels: Annotated[int, Ge(1)] = 3,
        relaxation: Any = "softmax",
        affine: bool = False,
        track_running_stats: bool = True,
        alpha_init: Literal["randn", "zeros"] = "randn",
        primitives: Annotated[Sequence[str], Allowed(f"distinct ops from {', '.join(PRIMITIVES)}, at least one besides "
                                                     "none")] = PRIMITIVES,
        unsampled_weights: bool = True,
        checkpoint_cells: bool = False,
        partial_channels: Annotated[int, Ge(1), Hint("PC-DARTS's K; 1 = off")] = 1,
        edge_normalization: bool = False,
        recompute: Literal["none", "cheap", "convolutions", "pointwise"] = "cheap",
    ):
        super().__init__()
        self.checkpoint_cells = bool(checkpoint_cells)
        primitives = tuple(primitives)
        self.primitives = primitives
        self.affine, self.track_running_stats = affine, track_running_stats
        self.unsampled_weights = unsampled_weights
        self.partial_channels, self.edge_normalization = partial_channels, bool(edge_normalization)
        self.relaxation = make_relaxation(relaxation)
        self._build(C, N, num_classes, in_channels)

        self.alphas = new_alphas((len(EDGES), len(primitives)), alpha_init)
        # created after the alphas and only when asked for, so the alphas (and the RNG) are those of the plain network
        self.beta = new_alphas((len(EDGES),), alpha_init) if self.edge_normalization else None
        self.recompute = recompute  # reaches every edge

    @classmethod
    def config_problems(cls, rules: Any) -> list[str]:
        ops, problems = list(rules.values["primitives"]), []
        if not (len(ops) >= 2 and set(ops) <= set(PRIMITIVES) and len(set(ops)) == len(ops) and set(ops) != {"none"}):
            problems.append(f"{rules.key('primitives')}={ops}: must be distinct ops from {', '.join(PRIMITIVES)}, at least "
                            "one besides none")
        C, K = rules.values["C"], rules.values["partial_channels"]
        if C % K:
            divisors = ", ".join(str(d) for d in range(1, C + 1) if C % d == 0)
            problems.append(f"{rules.key('partial_channels')}={K}: must divide {rules.key('C')}={C} (each edge's ops get "
                            f"1/{K} of its channels, in stages of C, 2C and 4C channels); divisors of {C}: {divisors}")
        return problems

    def _make_cell(self, c_in: int, c_out: int) -> nn.Module:
        return SearchCell(c_in, c_out, self.primitives, self.affine, self.track_running_stats, self.unsampled_weights,
                          getattr(self.relaxation, "auxiliary_skip", False), self.partial_channels)

    # ---- parameters ----------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """The alphas: one [6, O] tensor shared by every cell; with edge normalization then the betas [6]."""
        return [self.alphas] if self.beta is None else [self.alphas, self.beta]

    def edge_scale(self) -> torch.Tensor | None:
        """Edge normalization's factors [6]: each node's incoming edges' betas softmaxed together; None when off."""
        if self.beta is None:
            return None
        out = torch.empty_like(self.beta)
        for i in range(1, NODES):
            into = [e for e, (to, _) in enumerate(EDGES) if to == i]
            out = out.index_copy(0, torch.tensor(into), torch.softmax(self.beta[into], dim=-1))
        return out

    def edge_probabilities(self) -> dict[str, torch.Tensor]:
        """Edge normalization's shares, {"cell": [6]} (detached); {} when it is off."""
        scale = self.edge_scale()
        return {} if scale is None else {"cell": scale.detach()}

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> logits [B, num_classes]."""
        ew = self.relax("cell", self.alphas)  # one sample per pass, shared by all cells, as GDAS does
        scale = self.edge_scale()
        extra = () if scale is None else (scale,)
        h = self.stem(x)
        for cell in self.cells:
            h = self.run_cell(cell, h, ew, *extra) if isinstance(cell, SearchCell) else cell(h)
        return self._head(h)

    # ---- architecture --------------------------------------------------------------------------
    def cell_alphas(self) -> dict[str, torch.Tensor]:
        """{"cell": the alphas [6, O]}, shared by every cell."""
        return {"cell": self.alphas}

    def mixed_edges(self):
        """("cell", alpha row, edge) of every mixed edge of every search cell."""
        for cell in self.cells:
            if isinstance(cell, SearchCell):
                for e, edge in enumerate(cell.edges):
                    yield "cell", e, edge

    @staticmethod
    def edge_labels() -> list[str]:
        """One label per alpha row: "node<-input"."""
        return [f"{i}<-{j}" for i, j in EDGES]

    def genotype(self) -> Genotype:
        """The cell the alphas select now (argmax per edge, `none` included)."""
        return Genotype.from_alphas(self.masked_alphas()["cell"], self.primitives)  # pruned ops are never chosen
