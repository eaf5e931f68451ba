"""NAS-Bench-201's genotype: one cell, 6 edges ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2``, each one of 5 ops, in the
benchmark's own text format: nodes 1..3 joined by ``+``, each node's edges as ``|op~j|`` in input order, e.g. the best
CIFAR-10 cell ``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...genotype import check_genotype_object, read_genotype_source

NAME = "nb201"

# Order matters: alpha columns follow it (REFERENCE: NAS-Bench-201 in detail).
PRIMITIVES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

NODES = 4  # node 0 is the cell input, node NODES-1 its output
# (node, input) per edge, in alpha row order
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NODES) for j in range(i))

Pair = tuple[str, int]

# A genotype is under 200 characters; the cap keeps hostile input from costing time or memory.
MAX_TEXT = 10_000


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
        check_genotype_object(data, {"space", "cell"}, "NAS-Bench-201 genotype JSON")
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
