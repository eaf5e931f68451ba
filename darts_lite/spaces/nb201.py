"""The NAS-Bench-201 cell search space (Dong & Yang, ICLR 2020).

A cell is a complete DAG on 4 nodes: node 0 is the cell input and node i (1..3) sums one edge from
every earlier node, so there are 6 edges, ordered ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2``; node 3 is
the cell output. Each edge picks one of 5 ops. All 15 cells of a network share one cell, so the
search network has a single alpha tensor [6, 5] and the space holds 5**6 = 15625 cells.

Network: 3x3 stem conv to C and BN; N cells at C, a residual block (stride 2, C -> 2C), N cells at
2C, another block, N cells at 4C; BN, ReLU, global average pool, linear classifier.

Where ``affine`` and ``track_running_stats`` apply follows the benchmark's published networks:
only the cells' ops take them; the stem, the residual blocks and the final BN always keep affine
BN with running statistics. With ``affine=False`` a cell conv carries a bias instead of the BN's shift.

Genotype text, the benchmark's own format: nodes 1..3 joined by ``+``, each node's edges as
``|op~j|`` in input order, e.g. the best CIFAR-10 cell
``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from torch import nn

from ..genotype import read_genotype_source
from ..relax import EdgeWeights, make_relaxation
from ..schema import Allowed, Ge, Hint, checked
from ..viz import FAMILY_COLOURS, op_family
from .ops import Identity, ReLUConvBN
from .supernet import Supernet, new_alphas

NAME = "nb201"

# Order matters: alpha columns follow it (REFERENCE: NAS-Bench-201 in detail).
PRIMITIVES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

# How the text of a genotype of this space begins (every node string opens with a pipe).
GENOTYPE_PREFIXES: tuple[str, ...] = ("|",)

NODES = 4  # node 0 is the cell input, node NODES-1 its output
# (node, input) per edge, in alpha row order
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NODES) for j in range(i))

Pair = tuple[str, int]

# A genotype is under 200 characters; the cap keeps hostile input from costing time or memory.
MAX_TEXT = 10_000


# ---- ops ---------------------------------------------------------------------------------------
class AvgPool(nn.Module):
    """3x3 average pool (padding not counted); a 1x1 ReLUConvBN first matches channels when C_in != C_out."""

    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.preprocess = (None if c_in == c_out
                           else ReLUConvBN(c_in, c_out, 1, 1, 0, affine, track_running_stats, conv_bias=not affine))
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x if self.preprocess is None else self.preprocess(x))


class Zero(nn.Module):
    """The `none` op: zeros of shape [B, C_out, H/stride, W/stride]; it contributes nothing to a sum."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.c_in == self.c_out:
            return x.mul(0.0)  # keeps the input's memory format (channels_last) and its place in the graph
        shape = list(x.shape)
        shape[1] = self.c_out
        return x.new_zeros(shape)


class FactorizedReduce(nn.Module):
    """skip_connect when the shape changes: stride 1, a 1x1 conv and BN; stride 2, ReLU and two 1x1 stride-2
    convs (C_out//2 and the rest), the second on the input shifted by one pixel, concatenated, then BN."""

    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"FactorizedReduce takes stride 1 or 2, got {stride}")
        self.stride = stride
        if stride == 2:
            self.relu = nn.ReLU(inplace=False)
            halves = (c_out // 2, c_out - c_out // 2)
            self.convs = nn.ModuleList(nn.Conv2d(c_in, c, 1, stride=2, bias=not affine) for c in halves)
        else:
            self.conv = nn.Conv2d(c_in, c_out, 1, bias=not affine)
        self.bn = nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return self.bn(self.conv(x))
        x = self.relu(x)
        # zero padding on the right and bottom keeps the shifted half the same size on odd inputs
        shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.convs[0](x), self.convs[1](shifted)], dim=1))


def make_op(name: str, c_in: int, c_out: int, stride: int, affine: bool = True, track_running_stats: bool = True) -> nn.Module:
    """One candidate op mapping [B, c_in, H, W] to [B, c_out, H/stride, W/stride]."""
    if name == "none":
        return Zero(c_in, c_out, stride)
    if name == "skip_connect":
        if stride == 1 and c_in == c_out:
            return Identity()
        return FactorizedReduce(c_in, c_out, stride, affine, track_running_stats)
    if name == "nor_conv_1x1":
        return ReLUConvBN(c_in, c_out, 1, stride, 0, affine, track_running_stats, conv_bias=not affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c_in, c_out, 3, stride, 1, affine, track_running_stats, conv_bias=not affine)
    if name == "avg_pool_3x3":
        return AvgPool(c_in, c_out, stride, affine, track_running_stats)
    raise ValueError(f"unknown op {name!r}; NAS-Bench-201 ops: {', '.join(PRIMITIVES)}")


class ResidualBlock(nn.Module):
    """The reduction between stages: two ReLUConvBN 3x3 (the first with the stride) plus a shortcut.

    Shortcut: stride 2, a 2x2 average pool then a 1x1 conv (no BN); stride 1 with a channel change,
    a 1x1 ReLUConvBN; otherwise the identity. Always affine BN with running statistics.
    """

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"a residual block takes stride 1 or 2, got {stride}")
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        if stride == 2:
            self.shortcut: nn.Module | None = nn.Sequential(
                nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False)
            )
        elif c_in != c_out:
            self.shortcut = ReLUConvBN(c_in, c_out, 1, 1, 0)
        else:
            self.shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        return residual + self.conv_b(self.conv_a(x))


def _stages(C: int, N: int) -> list[tuple[int, bool]]:
    """(channels, is residual block) per layer: N cells at C, block, N at 2C, block, N at 4C."""
    return [(C, False)] * N + [(2 * C, True)] + [(2 * C, False)] * N + [(4 * C, True)] + [(4 * C, False)] * N


def _check_sizes(C: int, N: int, num_classes: int, in_channels: int) -> None:
    for name, value, least in (("C", C, 1), ("N", N, 1), ("num_classes", num_classes, 1), ("in_channels", in_channels, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


class _Macro(nn.Module):
    """Stem, stages and head shared by the search and the evaluation network; subclasses make the cells."""

    def _build(self, C: int, N: int, num_classes: int, in_channels: int) -> None:
        _check_sizes(C, N, num_classes, in_channels)
        self.C, self.N, self.num_classes = C, N, num_classes
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        c_prev = C
        for c, block in _stages(C, N):
            self.cells.append(ResidualBlock(c_prev, c, 2) if block else self._make_cell(c_prev, c))
            c_prev = c
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def _make_cell(self, c_in: int, c_out: int) -> nn.Module:
        raise NotImplementedError

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))


# ---- search network ----------------------------------------------------------------------------
class MixedEdge(nn.Module):
    """All candidate ops of one edge; the relaxation decides which run and how they are weighted."""

    def __init__(self, c_in: int, c_out: int, stride: int, primitives: Sequence[str], affine: bool, track_running_stats: bool,
                 unsampled_weights: bool = True):
        super().__init__()
        self.ops = nn.ModuleList(make_op(p, c_in, c_out, stride, affine, track_running_stats) for p in primitives)
        self.unsampled_weights = unsampled_weights

    def forward(self, x: torch.Tensor, weights: torch.Tensor, index: int | None) -> torch.Tensor:
        """x: [B, C, H, W]; weights: [O]; index: the one op to run, or None for all."""
        if index is not None:
            out = self.ops[index](x) * weights[index]
            if self.unsampled_weights and len(self.ops) > 1:
                # the benchmark's GDAS code adds the hard weights of the ops it did not run to the sum: each is
                # exactly 0 forward, and sends every element's gradient, summed, to its alpha
                out = out + torch.cat([weights[:index], weights[index + 1:]]).sum()
            return out
        total = None
        for op, w in zip(self.ops, weights):
            if isinstance(op, Zero):
                continue  # adds exactly zero, and zero gradient to its weight; its alpha still learns via the softmax
            out = op(x) * w
            total = out if total is None else total + out
        return total


class SearchCell(nn.Module):
    """The 4-node DAG with a mixed edge on each of its 6 edges. forward: [B, C_in, H, W] -> [B, C_out, H, W]."""

    def __init__(self, c_in: int, c_out: int, primitives: Sequence[str], affine: bool, track_running_stats: bool,
                 unsampled_weights: bool = True):
        super().__init__()
        # only edges from the cell input see c_in; the others read nodes already at c_out
        self.edges = nn.ModuleList(
            MixedEdge(c_in if j == 0 else c_out, c_out, 1, primitives, affine, track_running_stats, unsampled_weights)
            for _, j in EDGES
        )

    def forward(self, x: torch.Tensor, ew: EdgeWeights) -> torch.Tensor:
        nodes = [x]
        for i in range(1, NODES):
            node = None
            for e, (to, j) in enumerate(EDGES):
                if to != i:
                    continue
                out = self.edges[e](nodes[j], ew.weights[e], None if ew.index is None else ew.index[e])
                node = out if node is None else node + out
            nodes.append(node)
        return nodes[-1]


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
    ):
        super().__init__()
        self.checkpoint_cells = bool(checkpoint_cells)
        primitives = tuple(primitives)
        self.primitives = primitives
        self.affine, self.track_running_stats = affine, track_running_stats
        self.unsampled_weights = unsampled_weights
        self.relaxation = make_relaxation(relaxation)
        self._build(C, N, num_classes, in_channels)

        self.alphas = new_alphas((len(EDGES), len(primitives)), alpha_init)

    @classmethod
    def config_problems(cls, rules: Any) -> list[str]:
        ops = list(rules.values["primitives"])
        if len(ops) >= 2 and set(ops) <= set(PRIMITIVES) and len(set(ops)) == len(ops) and set(ops) != {"none"}:
            return []
        return [f"{rules.key('primitives')}={ops}: must be distinct ops from {', '.join(PRIMITIVES)}, at least one besides "
                "none"]

    def _make_cell(self, c_in: int, c_out: int) -> nn.Module:
        return SearchCell(c_in, c_out, self.primitives, self.affine, self.track_running_stats, self.unsampled_weights)

    # ---- parameters ----------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """The alphas: one [6, O] tensor shared by every cell."""
        return [self.alphas]

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> logits [B, num_classes]."""
        ew = self.relax("cell", self.alphas)  # one sample per pass, shared by all cells, as GDAS does
        h = self.stem(x)
        for cell in self.cells:
            h = self.run_cell(cell, h, ew) if isinstance(cell, SearchCell) else cell(h)
        return self._head(h)

    # ---- architecture --------------------------------------------------------------------------
    def cell_alphas(self) -> dict[str, torch.Tensor]:
        """{"cell": the alphas [6, O]}, shared by every cell."""
        return {"cell": self.alphas}

    @staticmethod
    def edge_labels() -> list[str]:
        """One label per alpha row: "node<-input"."""
        return [f"{i}<-{j}" for i, j in EDGES]

    def genotype(self) -> Genotype:
        """The cell the alphas select now (argmax per edge, `none` included)."""
        return Genotype.from_alphas(self.alphas, self.primitives)


# ---- genotype ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Genotype:
    """One NAS-Bench-201 cell: an (op, input node) pair per edge, in the order ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2``."""

    edges: tuple[Pair, ...]

    def __post_init__(self) -> None:
        edges = self.edges
        if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence):
            raise ValueError(f"a genotype needs a sequence of {len(EDGES)} (op, input) pairs, got {edges!r}")
        if len(edges) != len(EDGES):
            raise ValueError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(edges)} (op, input) pairs")
        pairs = []
        for k, (pair, (node, j)) in enumerate(zip(edges, EDGES)):
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"edge {k} ({node}<-{j}): expected an (op, input) pair, got {pair!r}")
            op, inp = pair
            if op not in PRIMITIVES:
                raise ValueError(f"edge {k} ({node}<-{j}): unknown op {op!r}; NAS-Bench-201 ops: {', '.join(PRIMITIVES)}")
            if isinstance(inp, bool) or not isinstance(inp, int) or inp != j:
                raise ValueError(f"edge {k} ({node}<-{j}): input must be {j}, got {inp!r} (node {node} reads nodes 0..{node - 1} "
                                 "in order)")
            pairs.append((str(op), int(inp)))
        object.__setattr__(self, "edges", tuple(pairs))

    def cells(self) -> dict[str, tuple[Pair, ...]]:
        """{"cell": the 6 (op, input) pairs in edge order}."""
        return {"cell": self.edges}

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(op for op, _ in self.edges)

    # ---- derivation ----------------------------------------------------------------------------
    @classmethod
    def from_alphas(cls, alphas: torch.Tensor, primitives: Sequence[str] = PRIMITIVES) -> Genotype:
        """alphas [6, O] -> the argmax op of each raw row, `none` included (ties: the first column)."""
        a = alphas.detach().float().cpu()
        if a.shape != (len(EDGES), len(primitives)):
            raise ValueError(f"alphas must be [{len(EDGES)}, {len(primitives)}], got {list(a.shape)}")
        best = a.argmax(dim=-1).tolist()
        return cls(tuple((primitives[b], j) for b, (_, j) in zip(best, EDGES)))

    # ---- text and JSON -------------------------------------------------------------------------
    def to_text(self) -> str:
        """The benchmark's string: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        nodes = []
        for i in range(1, NODES):
            nodes.append("|" + "|".join(f"{op}~{j}" for (op, j), (to, _) in zip(self.edges, EDGES) if to == i) + "|")
        return "+".join(nodes)

    __str__ = to_text

    def to_dict(self) -> dict[str, Any]:
        return {"space": NAME, "cell": [[op, j] for op, j in self.edges]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> Genotype:
        if not isinstance(data, dict):
            raise ValueError(f"genotype JSON must be an object, got {type(data).__name__}")
        unknown = set(data) - {"space", "cell"}
        if unknown:
            raise ValueError(f"NAS-Bench-201 genotype JSON has unknown keys: {sorted(unknown)} (expected 'cell')")
        if data.get("space", NAME) != NAME:
            raise ValueError(f"genotype JSON is of space {data['space']!r}, not {NAME!r}")
        raw = data.get("cell")
        if not isinstance(raw, list):
            raise ValueError(f"genotype JSON needs 'cell': a list of {len(EDGES)} [op, input] pairs")
        pairs = []
        for k, p in enumerate(raw):
            if not (isinstance(p, list) and len(p) == 2):
                raise ValueError(f"cell[{k}]: expected [op, input], got {p!r}")
            pairs.append((p[0], p[1]))
        return cls(tuple(pairs))

    @classmethod
    def parse(cls, text: str) -> Genotype:
        """Read the benchmark's string or the JSON ``to_json`` writes. Raises ValueError saying what is wrong."""
        s = read_genotype_source(text, MAX_TEXT)
        if isinstance(s, dict):
            return cls.from_dict(s)
        if not s:
            raise ValueError("genotype text is empty; expected e.g. '|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...|'")
        nodes = s.split("+")
        if len(nodes) != NODES - 1:
            raise ValueError(f"expected {NODES - 1} nodes joined by '+', got {len(nodes)} in {_short(s)}")
        pairs: list[Pair] = []
        for i, node in enumerate(nodes, start=1):
            if len(node) < 2 or not (node.startswith("|") and node.endswith("|")):
                raise ValueError(f"node {i}: {_short(node)} must start and end with '|' (e.g. '|nor_conv_3x3~0|')")
            items = node[1:-1].split("|")
            if len(items) != i:
                raise ValueError(f"node {i} has {i} input edges (from nodes 0..{i - 1}), got {len(items)} in {_short(node)}")
            for j, item in enumerate(items):
                op, sep, inp = item.partition("~")
                if not sep:
                    raise ValueError(f"node {i}, edge {j}: expected 'op~input', got {_short(item)}")
                if not (inp.isascii() and inp.isdigit()):
                    raise ValueError(f"node {i}, edge {j}: input index must be a number, got {_short(inp)}")
                if op not in PRIMITIVES:
                    raise ValueError(f"node {i}, edge {j}: unknown op {_short(op)}; NAS-Bench-201 ops: {', '.join(PRIMITIVES)}")
                if int(inp) != j:
                    raise ValueError(f"node {i}, edge {j}: input must be {j}, got {int(inp)} (node {i} lists inputs 0..{i - 1} "
                                     "in order)")
                pairs.append((op, j))
        return cls(tuple(pairs))


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


# ---- evaluation network ------------------------------------------------------------------------
class EvalCell(nn.Module):
    """A genotype's cell: each edge runs its one op (affine BN with running statistics).

    forward: [B, C_in, H, W] -> [B, C_out, H, W].
    """

    def __init__(self, genotype: Genotype, c_in: int, c_out: int):
        super().__init__()
        self.ops = nn.ModuleList(make_op(op, c_in if j == 0 else c_out, c_out, 1) for op, j in genotype.edges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for i in range(1, NODES):
            # a `none` edge is computed as zeros, so a node whose every input is `none` still has a value
            nodes.append(sum(self.ops[e](nodes[j]) for e, (to, j) in enumerate(EDGES) if to == i))
        return nodes[-1]


class EvalNetwork(_Macro):
    """The network a genotype describes, as the benchmark trains it (C=16, N=5).

    forward: x [B, in_channels, H, W] -> logits [B, num_classes].
    """

    def __init__(self, genotype: Genotype | str, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.genotype = Genotype.parse(genotype) if isinstance(genotype, str) else genotype
        if not isinstance(self.genotype, Genotype):
            raise ValueError(f"genotype must be a NAS-Bench-201 Genotype or its text, got {type(genotype).__name__}")
        self._build(C, N, num_classes, in_channels)

    def _make_cell(self, c_in: int, c_out: int) -> nn.Module:
        return EvalCell(self.genotype, c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> logits [B, num_classes]."""
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h)
        return self._head(h)

    def num_parameters(self, auxiliary: bool = False) -> int:
        """Every weight (``auxiliary`` is accepted for the interface the evaluation networks share: this
        network has no auxiliary head)."""
        return sum(p.numel() for p in self.parameters())


# ---- random and evolutionary moves -------------------------------------------------------------
def sample(rng: random.Random, primitives: Sequence[str] = PRIMITIVES) -> Genotype:
    """A cell drawn uniformly from the space: each edge's op independently and uniformly."""
    return Genotype(tuple((rng.choice(tuple(primitives)), j) for _, j in EDGES))


def mutate(genotype: Genotype, rng: random.Random, primitives: Sequence[str] = PRIMITIVES) -> Genotype:
    """Change one edge's op to a different one.

    As the benchmark's regularized evolution does: a node uniformly, then one of its input edges
    uniformly, then a new op uniformly among the others.
    """
    if len(set(primitives)) < 2:
        raise ValueError(f"mutation needs at least two ops, got {list(primitives)}")
    node = rng.randrange(1, NODES)
    j = rng.randrange(node)
    e = EDGES.index((node, j))
    current = genotype.edges[e][0]
    op = rng.choice([p for p in primitives if p != current])
    edges = list(genotype.edges)
    edges[e] = (op, j)
    return Genotype(tuple(edges))


# ---- pictures ----------------------------------------------------------------------------------
_NODE_NAMES = {0: "c_{k-1}", NODES - 1: "c_{k}"}


def cell_dots(genotype: Genotype) -> dict[str, str]:
    """{"cell": Graphviz DOT source}: input c_{k-1} (node 0), nodes 1 and 2, output c_{k} (node 3).

    Each edge is labelled with its op and coloured by op family; `none` edges are dashed grey, since
    they carry nothing. Names and ops are fixed strings of this module, so they need no escaping.
    """
    lines = [
        'digraph "cell" {',
        "  rankdir=LR;",
        '  label="NAS-Bench-201 cell"; labelloc=t; fontsize=18; fontname="Helvetica";',
        '  node [style=filled, fontname="Helvetica", fontsize=12];',
        '  edge [fontname="Helvetica", fontsize=11];',
    ]
    names = [_NODE_NAMES.get(i, str(i)) for i in range(NODES)]
    lines.append(f'  "{names[0]}" [shape=box, fillcolor=darkseagreen2];')
    lines += [f'  "{names[i]}" [shape=circle, fillcolor=lightblue];' for i in range(1, NODES - 1)]
    lines.append(f'  "{names[-1]}" [shape=box, fillcolor=palegoldenrod];')
    lines.append(f'  {{ rank=source; "{names[0]}" }}')
    lines.append(f'  {{ rank=sink; "{names[-1]}" }}')
    for (op, j), (i, _) in zip(genotype.edges, EDGES):
        if op == "none":
            style = 'color="gray70", fontcolor="gray50", style=dashed'
        else:
            colour = FAMILY_COLOURS[op_family(op)]
            style = f'color="{colour}", fontcolor="{colour}"'
        lines.append(f'  "{names[j]}" -> "{names[i]}" [label="{op}", {style}];')
    lines.append("}")
    return {"cell": "\n".join(lines) + "\n"}


# ---- configuration -------------------------------------------------------------------------------
def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def eval_network_options(train: dict[str, Any]) -> dict[str, Any]:
    """EvalNetwork keyword arguments from the train config group: C, and N from ``train.layers``."""
    return {"C": train["C"], "N": train["layers"]}


def check_train(train: dict[str, Any], genotype: Genotype | None, image_size: int | None) -> list[str]:
    """Problems of the train group's network keys (``key=value: what it must be``)."""
    problems = []
    if not (_int(train.get("C")) and train["C"] >= 1):
        problems.append(f"train.C={train.get('C')!r}: must be an integer >= 1")
    if not (_int(train.get("layers")) and train["layers"] >= 1):
        problems.append(f"train.layers={train.get('layers')!r}: must be an integer >= 1 (cells per stage)")
    if train.get("auxiliary") is not False:
        problems.append(f"train.auxiliary={train.get('auxiliary')!r}: NAS-Bench-201's network has no auxiliary head; "
                        "set train.auxiliary=false")
    if train.get("network_dataset") != "cifar":
        problems.append(f"train.network_dataset={train.get('network_dataset')!r}: NAS-Bench-201's network has one stem; "
                        "must be cifar")
    if _int(image_size) and image_size < 4:
        problems.append(f"data.resolution={image_size}: the two residual reductions need images of at least 4 px")
    return problems
