"""Genotypes as model inputs: a flat one-hot vector for tree models and a graph (ops as nodes, DAG adjacency) for
the GIN. Both read ``Genotype.cells()``, where a node's two (op, input) pairs come in input order, so a genotype
and the same genotype with a node's two inputs swapped encode identically.

Both encodings take DARTS cells of ``steps`` nodes (4) that concatenate every intermediate state; a genotype with
the fixed reduction cell encodes its reduce cell as absent (zeros) and says so in a flag.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..spaces.darts.genotype import PRIMITIVES, Genotype

STEPS = 4
OPS: tuple[str, ...] = tuple(p for p in PRIMITIVES if p != "none")
CELLS = ("normal", "reduce")


def problem(genotype: Genotype, steps: int = STEPS) -> str | None:
    """Why ``genotype`` cannot be encoded (None: it can)."""
    if genotype.steps != steps:
        return f"the encodings take cells of {steps} nodes; this genotype has {genotype.steps}"
    for cell, pairs in genotype.cells().items():
        if any(op == "none" for op, _ in pairs):
            return (f"the encodings take cells of two ops per node; the {cell} cell leaves an edge out (`none`, a sparse "
                    "cell such as FairDARTS's threshold selection gives)")
    full = list(range(2, steps + 2))
    for cell in CELLS:
        concat = list(getattr(genotype, f"{cell}_concat"))
        if concat != full and not (cell == "reduce" and genotype.fixed_reduction):
            return f"the encodings take cells that concatenate states {full}; {cell}_concat is {concat}"
    return None


def _check(genotypes: Sequence[Genotype], steps: int) -> None:
    for n, g in enumerate(genotypes):
        why = problem(g, steps)
        if why:
            raise ValueError(f"genotype {n}: {why}")


class FlatEncoding:
    """Per cell, per node, its two (input, op) pairs in input order, each as a one-hot input (``steps + 1`` slots)
    and a one-hot op (7); then the count of each op in the cell (a summary a tree splits on at once); last a
    fixed-reduction flag. ``encode`` gives [n, width] float32."""

    name = "flat-v1"

    def __init__(self, steps: int = STEPS):
        self.steps = steps
        self.pair_width = steps + 1 + len(OPS)
        self.cell_width = 2 * steps * self.pair_width + len(OPS)
        self.width = len(CELLS) * self.cell_width + 1

    def encode(self, genotypes: Sequence[Genotype]) -> np.ndarray:
        _check(genotypes, self.steps)
        out = np.zeros((len(genotypes), self.width), dtype=np.float32)
        for row, g in enumerate(genotypes):
            cells = g.cells()
            for c, name in enumerate(CELLS):
                if name not in cells:
                    continue
                base = c * self.cell_width
                counts = base + 2 * self.steps * self.pair_width
                for p, (op, j) in enumerate(cells[name]):
                    start = base + p * self.pair_width
                    out[row, start + j] = 1.0
                    out[row, start + self.steps + 1 + OPS.index(op)] = 1.0
                    out[row, counts + OPS.index(op)] += 1.0
            out[row, -1] = float(g.fixed_reduction)
        return out

    def feature_names(self) -> list[str]:
        names = []
        for cell in CELLS:
            for p in range(2 * self.steps):
                prefix = f"{cell}_node{p // 2 + 2}_pair{p % 2}"
                names += [f"{prefix}_input{j}" for j in range(self.steps + 1)] + [f"{prefix}_{op}" for op in OPS]
            names += [f"{cell}_count_{op}" for op in OPS]
        return names + ["fixed_reduction"]


def _producers(base: int, state: int) -> list[int]:
    """The graph nodes whose sum is ``state`` of the cell starting at node ``base``: an input node, or the two op
    nodes of an intermediate node."""
    return [base + state] if state < 2 else [base + 2 + 2 * (state - 2), base + 3 + 2 * (state - 2)]


class GraphEncoding:
    """Both cells as one graph of ``2 * (2 * steps + 3)`` nodes: per cell its two input states, one node per kept
    (op, input) pair, and the output. An op node is fed by the state it reads (an input node, or the two op nodes
    of an intermediate state); the output by the op nodes of the states it concatenates. Node features: input,
    output, the op (one-hot over 7), reduce cell. ``encode`` gives (features [n, N, 10], adjacency [n, N, N] with
    adjacency[b, u, v] = 1 for an edge u -> v), float32."""

    name = "graph-v1"

    def __init__(self, steps: int = STEPS):
        self.steps = steps
        self.cell_nodes = 2 * steps + 3
        self.nodes = len(CELLS) * self.cell_nodes
        self.features = 2 + len(OPS) + 1

    def encode(self, genotypes: Sequence[Genotype]) -> tuple[np.ndarray, np.ndarray]:
        _check(genotypes, self.steps)
        x = np.zeros((len(genotypes), self.nodes, self.features), dtype=np.float32)
        adj = np.zeros((len(genotypes), self.nodes, self.nodes), dtype=np.float32)
        for b, g in enumerate(genotypes):
            cells = g.cells()
            for c, name in enumerate(CELLS):
                if name not in cells:
                    continue
                base = c * self.cell_nodes
                output = base + self.cell_nodes - 1
                reduce_flag = float(name == "reduce")
                for s in (0, 1):
                    x[b, base + s, 0] = 1.0
                    x[b, base + s, -1] = reduce_flag
                x[b, output, 1] = 1.0
                x[b, output, -1] = reduce_flag

                for p, (op, j) in enumerate(cells[name]):
                    node = base + 2 + p
                    x[b, node, 2 + OPS.index(op)] = 1.0
                    x[b, node, -1] = reduce_flag
                    for u in _producers(base, j):
                        adj[b, u, node] = 1.0
                for state in getattr(g, f"{name}_concat"):
                    for u in _producers(base, state):
                        adj[b, u, output] = 1.0
        return x, adj


__all__ = ["CELLS", "OPS", "STEPS", "FlatEncoding", "GraphEncoding", "problem"]
