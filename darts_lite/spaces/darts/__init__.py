"""The DARTS cell space (Liu et al., 2019) as a darts_lite space: 8 candidate ops, cells of 4 intermediate
nodes with 14 mixed edges, a normal and a reduction cell type, the evaluation network of the paper.

The parts live in this package, the same files as every space's: the candidate ops (``ops``), the supernet
(``search``), the evaluation network (``eval``), the genotype in the DARTS reference code's text format
(``genotype``) and the cell pictures (``pictures``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Annotated, Any

from ...schema import Ge, value_problem
from .eval import AuxiliaryHead, EvalNetwork
from .genotype import PRIMITIVES, Genotype
from .pictures import cell_dots  # the DARTS cell pictures: {"normal", "reduction"}
from .search import FixedReductionCell, MixedEdge, SearchCell, SearchNetwork, num_edges, reduction_indices

NAME = "darts"
GENOTYPE_PREFIXES: tuple[str, ...] = ("Genotype(",)

__all__ = [
    "GENOTYPE_PREFIXES", "NAME", "PRIMITIVES", "EvalNetwork", "FixedReductionCell", "Genotype", "MixedEdge", "SearchCell",
    "SearchNetwork", "cell_dots", "check_train", "eval_network_options", "mutate", "num_edges", "reduction_indices",
    "sample",
]


# ---- random and evolutionary search ----------------------------------------------------------------
def _random_cell(rng: random.Random, steps: int, ops: list[str]) -> tuple[tuple[str, int], ...]:
    pairs = []
    for node in range(steps):
        for j in sorted(rng.sample(range(node + 2), 2)):  # two distinct inputs, as derivation keeps two edges
            pairs.append((rng.choice(ops), j))
    return tuple(pairs)


def sample(rng: random.Random, steps: int = 4, fixed_reduction: bool = False) -> Genotype:
    """A genotype drawn uniformly: per node two distinct inputs and a non-`none` op on each, both cell types
    (fixed_reduction: the normal cell only, with the fixed reduction cell)."""
    ops = [p for p in PRIMITIVES if p != "none"]
    concat = tuple(range(2, steps + 2))
    if fixed_reduction:
        return Genotype(_random_cell(rng, steps, ops), concat, fixed_reduction=True)
    return Genotype(_random_cell(rng, steps, ops), concat, _random_cell(rng, steps, ops), concat)


def mutate(genotype: Genotype, rng: random.Random) -> Genotype:
    """One change: in one searched cell, one pair gets another op, or another input that its node does not
    already read (the regularized-evolution moves on this space)."""
    cells = genotype.cells()
    name = rng.choice(sorted(cells))
    pairs = list(cells[name])
    k = rng.randrange(len(pairs))
    op, j = pairs[k]
    node = k // 2
    other = pairs[k ^ 1][1]  # the node's other input
    inputs = [i for i in range(node + 2) if i not in (j, other)]
    if inputs and rng.random() < 0.5:
        pairs[k] = (op, rng.choice(inputs))
    else:
        pairs[k] = (rng.choice([p for p in PRIMITIVES if p not in ("none", op)]), j)
    return Genotype(**{**_fields(genotype), name: tuple(pairs)})


def _fields(genotype: Genotype) -> dict[str, Any]:
    return {"normal": genotype.normal, "normal_concat": genotype.normal_concat, "reduce": genotype.reduce,
            "reduce_concat": genotype.reduce_concat, "fixed_reduction": genotype.fixed_reduction}


# ---- configuration -------------------------------------------------------------------------------
def eval_network_options(train: Mapping[str, Any]) -> dict[str, Any]:
    """EvalNetwork keyword arguments from the train config group (besides classes and input channels)."""
    return {"C": train["C"], "layers": train["layers"], "auxiliary": train["auxiliary"],
            "dataset": train["network_dataset"]}


def check_train(train: Mapping[str, Any], genotype: Genotype | None, image_size: int | None) -> list[str]:
    """Problems of the train group's network keys for this genotype (None: not known), as ``key=value: what it must be``."""
    problems = []
    C, layers = train.get("C"), train.get("layers")
    if value_problem(Annotated[int, Ge(2)], C) or C % 2:
        problems.append(f"train.C={C!r}: must be an even integer >= 2")
    elif genotype is not None and genotype.fixed_reduction and C % 4:
        problems.append(f"train.C={C!r}: must be a multiple of 4 for a fixed-reduction genotype (8-group convs)")
    why = value_problem(Annotated[int, Ge(3)], layers)
    if why:
        problems.append(f"train.layers={layers!r}: {why}")
    dataset = train.get("network_dataset")
    if dataset not in ("cifar", "imagenet"):
        problems.append(f"train.network_dataset={dataset!r}: must be cifar or imagenet")
    elif train.get("auxiliary") is True and value_problem(int, image_size) is None:
        need = AuxiliaryHead.min_input_size(dataset == "imagenet")
        got = EvalNetwork.aux_feature_size(image_size, dataset)
        if got < need:
            problems.append(
                f"train.auxiliary=true: the auxiliary head needs a feature map of at least {need}x{need} at cell "
                f"2*layers//3, and {image_size} px inputs give it {got}x{got}; set train.auxiliary=false or a larger "
                "data.resolution"
            )
    return problems
