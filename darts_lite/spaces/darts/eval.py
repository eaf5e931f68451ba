"""Evaluation networks: a genotype's cell stacked into the network its paper trained.

Differences from the search network (DARTS, Sec. 3.2): every BN is affine, pooling ops have no
BN after them, each edge runs its one op, drop path zeroes whole non-identity branches during
training, and an auxiliary head (CIFAR: after cell 2*layers//3) adds a second loss.

As in the search network, a state read by several ops that start with a ReLU of it (a node read by two separable
convs, a cell's output read by the next two cells' preprocessing) is rectified once for all of them
(``darts_lite.spaces.ops.EdgeInput``): the same outputs, one ReLU output kept for the backward pass instead of one
per op.
"""

from __future__ import annotations

import torch
from torch import nn

from ..batchnorm import compiled_batch_norms
from ..ops import (
    EdgeInput,
    FactorizedReduce,
    Identity,
    ReLUConvBN,
    channels_concatenated,
    channels_last_gradient,
    drop_active,
    drop_path,
    run_on,
    tensor_of,
)
from .genotype import Genotype
from .ops import make_op
from .search import FixedReductionCell, cell_plan


class EvalCell(nn.Module):
    def __init__(self, pairs, concat, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(C_pp, C) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0)
        self.ops = nn.ModuleList()
        self.inputs = [j for _, j in pairs]
        self.live = [op != "none" for op, _ in pairs]
        for op, j in pairs:
            stride = 2 if reduction and j < 2 else 1
            self.ops.append(make_op(op, C, stride, affine=True, pool_bn=False))
        self.concat = list(concat)
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor | EdgeInput, s1: torch.Tensor | EdgeInput,
                drop_prob: float | torch.Tensor = 0.0) -> torch.Tensor:
        """s0, s1: the two previous cells' outputs (tensors, or ``EdgeInput``s shared with the other cell reading
        them). Every op reading a state reads one ``EdgeInput`` of it (one ReLU of the state for all of them)."""
        states: list[EdgeInput | None] = [EdgeInput(run_on(self.preprocess0, s0)),
                                          EdgeInput(run_on(self.preprocess1, s1))]
        for k in range(len(self.ops) // 2):
            node = None
            for e in (2 * k, 2 * k + 1):
                if not self.live[e]:
                    continue  # an edge left out (`none`): a sparse cell's node keeps one input or none
                h = run_on(self.ops[e], states[self.inputs[e]])
                if self.training and drop_active(drop_prob) and not isinstance(self.ops[e], Identity):
                    h = drop_path(h, drop_prob)
                node = h if node is None else node + h
            states.append(None if node is None else EdgeInput(node))
        return channels_concatenated([tensor_of(states[i]) for i in self.concat])


class _EvalFixedReductionCell(FixedReductionCell):
    """GDAS's fixed reduction cell with affine BN; drop path acts in training only."""

    def forward(self, s0, s1, drop_prob: float | torch.Tensor = 0.0):
        return super().forward(s0, s1, None, drop_prob if self.training else 0.0)


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier on an 8x8 (CIFAR) or 14x14 (ImageNet) feature map."""

    @staticmethod
    def min_input_size(imagenet: bool = False) -> int:
        """Smallest feature map side it takes: the 5x5 pooling must leave 2x2 for the 2x2 conv."""
        return 5 + (2 if imagenet else 3)

    def __init__(self, C: int, num_classes: int, imagenet: bool = False):
        super().__init__()
        layers = [
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2 if imagenet else 3, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
        ]
        # the DARTS ImageNet head has no BN after its last conv: published counts include that choice
        if not imagenet:
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=False))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class EvalNetwork(nn.Module):
    """A genotype's evaluation network (DARTS paper): CIFAR (one stem) or ImageNet (two stems, 224 px).

    forward(x) -> logits [B, num_classes] in eval mode; in training mode with ``auxiliary=True``
    it returns (logits, aux_logits). ``drop_path_prob`` is set per epoch by the trainer.
    """

    def __init__(
        self,
        genotype: Genotype | str,
        C: int = 36,
        num_classes: int = 10,
        layers: int = 20,
        auxiliary: bool = True,
        dataset: str = "cifar",
        drop_path_prob: float = 0.0,
        in_channels: int = 3,
        stem_multiplier: int = 3,
    ):
        super().__init__()
        if isinstance(genotype, str):
            genotype = Genotype.named(genotype) if genotype.isidentifier() else Genotype.parse(genotype)
        if dataset not in ("cifar", "imagenet"):
            raise ValueError(f"dataset must be 'cifar' or 'imagenet', got {dataset!r}")
        if layers < 3:
            raise ValueError(f"layers must be at least 3, got {layers}")
        self.genotype, self.dataset, self.layers = genotype, dataset, layers
        self.auxiliary = auxiliary
        # a 0-d buffer, not a float: the trainer changes it every epoch, and a compiled network
        # would otherwise treat it as a constant and recompile each time
        self.register_buffer("_drop_prob", torch.zeros(()), persistent=False)
        self.drop_path_prob = drop_path_prob
        imagenet = dataset == "imagenet"
        if imagenet:
            self.stem0 = nn.Sequential(
                nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C // 2),
                nn.ReLU(inplace=False),
                nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C),
            )
            # ReLU, strided 3x3 conv, BN: read by the first cell's preprocessing too, it shares the ReLU of s0
            self.stem1 = ReLUConvBN(C, C, 3, 2, 1)
            C_pp, C_p, reduction_prev = C, C, True
        else:
            C_stem = stem_multiplier * C
            self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
            C_pp, C_p, reduction_prev = C_stem, C_stem, False
        self.aux_index = 2 * layers // 3
        self.cells = nn.ModuleList()
        C_aux = None
        for i, (reduction, C_curr) in enumerate(cell_plan(C, layers)):
            if reduction and genotype.fixed_reduction:
                cell: nn.Module = _EvalFixedReductionCell(C_pp, C_p, C_curr, reduction_prev, affine=True)
                out = FixedReductionCell.multiplier * C_curr
            elif reduction:
                cell = EvalCell(genotype.reduce, genotype.reduce_concat, C_pp, C_p, C_curr, True, reduction_prev)
                out = cell.multiplier * C_curr
            else:
                cell = EvalCell(genotype.normal, genotype.normal_concat, C_pp, C_p, C_curr, False, reduction_prev)
                out = cell.multiplier * C_curr
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, out
            if i == self.aux_index:
                C_aux = out
        self.aux_head = AuxiliaryHead(C_aux, num_classes, imagenet) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)
        # training-mode BatchNorms through darts_lite's compiled kernels on the CPU, channels-last (the same values)
        compiled_batch_norms(self)

    def forward(self, x: torch.Tensor):
        # each cell's output is read by the next two cells: one EdgeInput, so one ReLU of it for both
        if self.dataset == "imagenet":
            s0 = EdgeInput(self.stem0(x))
            s1 = EdgeInput(run_on(self.stem1, s0))
        else:
            s0 = s1 = EdgeInput(self.stem(x))
        aux_logits = None
        drop = self._drop_prob if self.training and self._drop_on else 0.0
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, EdgeInput(cell(s0, s1, drop))
            if i == self.aux_index and self.aux_head is not None and self.training:
                aux_logits = self.aux_head(s1.x)
        logits = self.classifier(self.global_pooling(channels_last_gradient(s1.x)).flatten(1))
        return (logits, aux_logits) if aux_logits is not None else logits

    @staticmethod
    def aux_feature_size(image_size: int, dataset: str = "cifar") -> int:
        """Side of the feature map at the auxiliary head for square inputs of ``image_size``:
        halved (rounding up) by the two reduction cells, and by three strided stems on ImageNet."""
        size = image_size
        for _ in range(5 if dataset == "imagenet" else 2):
            size = -(-size // 2)
        return size

    @property
    def drop_path_prob(self) -> float:
        return float(self._drop_prob)

    @drop_path_prob.setter
    def drop_path_prob(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {p}")
        self._drop_prob.fill_(p)
        self._drop_on = p > 0.0

    def num_parameters(self, auxiliary: bool = False) -> int:
        """Parameter count; without the auxiliary head by default, as papers count."""
        aux = {id(p) for p in self.aux_head.parameters()} if self.aux_head is not None and not auxiliary else set()
        return sum(p.numel() for p in self.parameters() if id(p) not in aux)
