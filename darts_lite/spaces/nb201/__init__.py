"""The NAS-Bench-201 cell search space (Dong & Yang, ICLR 2020) as a darts_lite space.

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

The parts live in this package, the same files as every space's: ``ops``, ``search`` (the supernet), ``eval``
(the evaluation network), ``genotype``, ``pictures``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Annotated, Any

from ...schema import Ge, value_problem
from .eval import EvalCell, EvalNetwork
from .genotype import EDGES, NODES, PRIMITIVES, Genotype
from .pictures import cell_dots
from .search import MixedEdge, SearchCell, SearchNetwork

NAME = "nb201"

# How the text of a genotype of this space begins (every node string opens with a pipe).
GENOTYPE_PREFIXES: tuple[str, ...] = ("|",)

__all__ = ["EDGES", "GENOTYPE_PREFIXES", "NAME", "NODES", "PRIMITIVES", "EvalCell", "EvalNetwork", "Genotype", "MixedEdge",
           "SearchCell", "SearchNetwork", "cell_dots", "check_train", "eval_network_options", "mutate", "sample"]


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


def eval_network_options(train: dict[str, Any]) -> dict[str, Any]:
    """EvalNetwork keyword arguments from the train config group: C, and N from ``train.layers``."""
    return {"C": train["C"], "N": train["layers"]}


def check_train(train: dict[str, Any], genotype: Genotype | None, image_size: int | None) -> list[str]:
    """Problems of the train group's network keys (``key=value: what it must be``)."""
    problems = []
    for key, hint in (("C", ""), ("layers", " (cells per stage)")):
        why = value_problem(Annotated[int, Ge(1)], train.get(key))
        if why:
            problems.append(f"train.{key}={train.get(key)!r}: {why}{hint}")
    if train.get("auxiliary") is not False:
        problems.append(f"train.auxiliary={train.get('auxiliary')!r}: NAS-Bench-201's network has no auxiliary head; "
                        "set train.auxiliary=false")
    if train.get("network_dataset") != "cifar":
        problems.append(f"train.network_dataset={train.get('network_dataset')!r}: NAS-Bench-201's network has one stem; "
                        "must be cifar")
    if value_problem(int, image_size) is None and image_size < 4:
        problems.append(f"data.resolution={image_size}: the two residual reductions need images of at least 4 px")
    return problems
