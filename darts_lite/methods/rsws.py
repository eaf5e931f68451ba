"""Random search with weight sharing (RSWS; Li & Talwalkar, UAI 2019): the baseline every one-shot method must beat.

The search trains the supernet's weights with one architecture drawn uniformly at random per step: each edge runs
one op, every op equally likely (``UniformPathRelaxation``; the alphas are not trained). Then the sampling selection
(``search.selection=sampling``, ``sampling_selection``) draws ``search.selection_samples`` architectures uniformly
at random, scores each with the shared weights on one validation batch, as the NAS-Bench-201 reference script does,
and keeps the most accurate; its genotype is the run's genotype (genotype.json) and every candidate is a row of
selection.csv. In the DARTS space a drawn architecture picks two inputs per node and one op (not `none`) per input.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import cycle
from typing import Any

import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch import nn

from ..relax import EdgeWeights, Relaxation
from ..spaces import space_of
from ..tricks.selection import Batch, SelectionResult, validation_accuracy

__all__ = ["SAMPLING_COLUMNS", "UniformPathRelaxation", "random_architecture", "sampling_selection"]

SAMPLING_COLUMNS = ("sample", "genotype", "accuracy", "chosen")


class UniformPathRelaxation(Relaxation):
    """RSWS: each edge runs one op drawn uniformly at random, redrawn every forward pass; the alphas do not train."""

    hard = True
    trains_alphas = False

    def __call__(self, alphas: torch.Tensor) -> EdgeWeights:
        edges, ops = alphas.shape
        index = torch.randint(ops, (edges,), device=alphas.device)
        weights = torch.zeros(edges, ops, device=alphas.device, dtype=alphas.dtype).scatter_(1, index[:, None], 1.0)
        return EdgeWeights(weights, index.tolist())


class _FixedArchitecture:
    """``edge_weight_transform`` that makes every cell type run one drawn architecture: {cell type: per edge an op
    index or None (the edge is dropped)}."""

    def __init__(self, choice: dict[str, list[int | None]]):
        self.choice = choice

    def __call__(self, cell_type: str, ew: EdgeWeights) -> EdgeWeights:
        ops = self.choice[cell_type]
        weights = torch.zeros_like(ew.weights)
        for e, op in enumerate(ops):
            if op is not None:
                weights[e, op] = 1.0
        # a dropped edge runs its first op at weight 0: the cell's sum is as if the edge were absent
        return EdgeWeights(weights, [0 if op is None else op for op in ops], ew.skip)


def random_architecture(net: nn.Module, rng: random.Random) -> tuple[Any, dict[str, list[int | None]]]:
    """A uniformly drawn architecture of ``net``'s space: (its genotype, {cell type: per edge an op index or None})."""
    primitives = list(net.primitives)
    space = space_of(net).NAME
    alphas = net.cell_alphas()
    choice: dict[str, list[int | None]] = {}
    if space == "nb201":
        for cell, a in alphas.items():
            choice[cell] = [rng.randrange(len(primitives)) for _ in range(a.shape[0])]
    else:
        ops = [k for k, p in enumerate(primitives) if p != "none"]
        for cell in alphas:
            row: list[int | None] = []
            for node in range(net.steps):
                inputs = set(rng.sample(range(node + 2), 2))
                row += [rng.choice(ops) if j in inputs else None for j in range(node + 2)]
            choice[cell] = row
    # the genotype of the choice, by the space's own rule on alphas that spell it out
    fake = {}
    for cell, a in alphas.items():
        f = torch.zeros(a.shape)
        for e, op in enumerate(choice[cell]):
            if op is not None:
                f[e, op] = 10.0
        fake[cell] = f
    if space == "nb201":
        genotype = type(net.genotype()).from_alphas(fake["cell"], primitives)
    else:
        genotype = type(net.genotype()).from_alphas(fake["normal"], fake.get("reduce"), net.steps, net.multiplier,
                                                     primitives)
    return genotype, choice


def _batches(dm: Any) -> Iterator[Batch]:
    return cycle(list(dm.val_dataloader()))


def sampling_selection(module: nn.Module, dm: Any, seed: int = 0, samples: int | None = None, progress: bool = True,
                       device: str | torch.device | None = None) -> SelectionResult:
    """Draw ``samples`` architectures (default ``search.selection_samples``) uniformly at random, score each with the
    supernet's shared weights on one validation batch (the next one each time), keep the most accurate."""
    net = module.net
    samples = int(samples if samples is not None else module.hparams.get("selection_samples", 100))
    if samples < 1:
        raise ValueError(f"search.selection_samples={samples}: must be an integer >= 1")
    dm.setup()
    batches = _batches(dm)
    net.to(dm.train_x.device if device is None else device)
    rng = random.Random(seed)
    rows, genotypes, best = [], [], None
    transform = net.edge_weight_transform
    try:
        for k in range(samples):
            genotype, choice = random_architecture(net, rng)
            net.edge_weight_transform = _FixedArchitecture(choice)
            accuracy = validation_accuracy(net, [next(batches)])
            rows.append({"sample": k, "genotype": genotype.to_text(), "accuracy": accuracy, "chosen": 0})
            genotypes.append(genotype)
            if best is None or accuracy > rows[best]["accuracy"]:
                best = k
            if progress and (k + 1) % max(1, samples // 10) == 0:
                rank_zero_info(f"sampling selection: {k + 1}/{samples} architectures scored, best accuracy "
                               f"{rows[best]['accuracy']:.3f}")
    finally:
        net.edge_weight_transform = transform
    rows[best]["chosen"] = 1
    return SelectionResult(genotypes[best], rows, name="sampling", columns=SAMPLING_COLUMNS)
