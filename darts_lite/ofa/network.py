"""The Once-for-All network for small images: a MobileNetV3-style stack of inverted-residual blocks whose kernel
sizes, expand ratios and depths are elastic, and the standalone sub-network any setting of them makes.

    stem (3x3 conv, BN, h-swish) -> first block (3x3 depthwise, no expansion, fixed)
    -> units: up to max(depth_list) elastic blocks each; the first has the unit's stride and width, a unit at
       depth D runs its first D blocks
    -> head: 1x1 conv to widths[-1] * max(expand_list), BN, h-swish, global average pool, linear to
       head_channels, h-swish, dropout, linear classifier

A setting is {"ks": [one per block], "e": [one per block], "d": [one per unit]}, blocks counted at the largest
depth (the blocks a unit skips keep values that do not matter). Resolution is not part of the network: it takes
any input side (global pooling), and the training module draws the side per batch.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import torch
from torch import nn

from ..schema import Allowed, Ge, Gt, Lt, MinLen, checked
from .elastic import ElasticBlock, InvertedResidual, make_activation

# stem and first block at stride 1: on 32 px (CIFAR) the units see 32, 32, 16, 8, 8 px and end at 4 px;
# on 8 px digits they see 8, 8, 4 and end at 2 px
PRESETS: dict[str, dict[str, Any]] = {
    "cifar": dict(in_channels=3, stem_channels=16, first_channels=16, widths=(24, 40, 80, 112, 160),
                  strides=(1, 2, 2, 1, 2), acts=("relu", "relu", "hswish", "hswish", "hswish"), head_channels=1280),
    "digits": dict(in_channels=1, stem_channels=8, first_channels=8, widths=(12, 16, 24), strides=(1, 2, 2),
                   acts=("relu", "hswish", "hswish"), head_channels=96),
}


def _as_list(name: str, value: Any, length: int) -> list:
    """A value per position: a scalar for all, or a sequence of exactly ``length``."""
    if isinstance(value, (list, tuple)):
        if len(value) != length:
            raise ValueError(f"{name}={list(value)}: give one value or {length} (one per {'unit' if name == 'd' else 'block'})")
        return list(value)
    return [value] * length


class OFASubnet(nn.Module):
    """A standalone sub-network (plain layers, weights copied from the elastic network); ``setting`` says which.
    x [B, C, H, W] -> logits [B, num_classes]."""

    def __init__(self, stem: nn.Module, first: nn.Module, blocks: list[nn.Module], head: nn.Module, setting: dict):
        super().__init__()
        self.stem, self.first, self.blocks, self.head = stem, first, nn.Sequential(*blocks), head
        self.setting = setting

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.first(self.stem(x))))


class _Head(nn.Module):
    def __init__(self, channels: int, final_channels: int, head_channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.expand = nn.Conv2d(channels, final_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(final_channels)
        self.mix = nn.Linear(final_channels, head_channels, bias=False)
        self.act = make_activation("hswish")
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(head_channels, num_classes)
        nn.init.kaiming_normal_(self.expand.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.expand(x))).mean(dim=(2, 3))
        return self.classifier(self.dropout(self.act(self.mix(x))))


class OFANetwork(nn.Module):
    """The elastic network. ``OFANetwork(num_classes=10)`` is the CIFAR preset; ``OFANetwork.from_preset("digits")``
    the one for 8 px digits. widths, strides and acts: one per unit. x [B, in_channels, H, W] -> [B, num_classes]."""

    @checked
    def __init__(
        self,
        num_classes: Annotated[int, Ge(1)] = 10,
        in_channels: Annotated[int, Ge(1)] = 3,
        stem_channels: Annotated[int, Ge(1)] = 16,
        first_channels: Annotated[int, Ge(1)] = 16,
        widths: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1), Allowed("a list of channel counts >= 1, one per unit")
                          ] = PRESETS["cifar"]["widths"],
        strides: Annotated[Sequence[Literal[1, 2]], MinLen(1), Allowed("a list of strides 1 or 2, one per unit")
                           ] = PRESETS["cifar"]["strides"],
        acts: Annotated[Sequence[Literal["relu", "hswish"]], MinLen(1), Allowed("a list of relu or hswish, one per unit")
                        ] = PRESETS["cifar"]["acts"],
        head_channels: Annotated[int, Ge(1)] = 1280,
        stem_stride: Literal[1, 2] = 1,
        ks_list: Annotated[Sequence[Literal[3, 5, 7]], MinLen(1), Allowed("a non-empty list of kernel sizes 3, 5, 7")
                           ] = (3, 5, 7),
        expand_list: Annotated[Sequence[Annotated[float, Gt(0)]], MinLen(1), Allowed("a non-empty list of ratios > 0")
                               ] = (3, 4, 6),
        depth_list: Annotated[Sequence[Annotated[int, Ge(1)]], MinLen(1), Allowed("a non-empty list of depths >= 1")
                              ] = (2, 3, 4),
        dropout: Annotated[float, Ge(0), Lt(1)] = 0.1,
    ):
        super().__init__()
        self.config = dict(num_classes=num_classes, in_channels=in_channels, stem_channels=stem_channels,
                           first_channels=first_channels, widths=list(widths), strides=list(strides), acts=list(acts),
                           head_channels=head_channels, stem_stride=stem_stride, ks_list=list(ks_list),
                           expand_list=list(expand_list), depth_list=list(depth_list), dropout=dropout)
        self.ks_list = sorted(set(ks_list))
        self.expand_list = sorted(set(expand_list))
        self.depth_list = sorted(set(depth_list))
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_channels, 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(stem_channels), make_activation("hswish"))
        nn.init.kaiming_normal_(self.stem[0].weight, mode="fan_out")
        self.first = InvertedResidual(stem_channels, first_channels, 1, 3, stem_channels, "relu", expand=False)
        max_depth = self.depth_list[-1]
        units, channels = [], first_channels
        for width, stride, act in zip(widths, strides, acts):
            blocks = [ElasticBlock(channels if i == 0 else width, width, stride if i == 0 else 1, act, self.ks_list,
                                   self.expand_list) for i in range(max_depth)]
            units.append(nn.ModuleList(blocks))
            channels = width
        self.units = nn.ModuleList(units)
        self.head = _Head(channels, round(channels * self.expand_list[-1]), head_channels, num_classes, dropout)
        self.active_depth = [max_depth] * len(self.units)

    @classmethod
    def config_problems(cls, rules: Any) -> list[str]:
        v = rules.values
        if len(v["widths"]) == len(v["strides"]) == len(v["acts"]):
            return []
        return [f"{rules.key('widths')}, {rules.key('strides')}, {rules.key('acts')}: need one value per unit each; got "
                f"{len(v['widths'])}, {len(v['strides'])}, {len(v['acts'])}"]

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> OFANetwork:
        """A preset (``cifar``, ``digits``) with any argument overridden."""
        if name not in PRESETS:
            raise ValueError(f"preset {name!r}: must be one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # ---- the active setting -------------------------------------------------------------------------------
    @property
    def blocks(self) -> list[ElasticBlock]:
        """Every elastic block, unit by unit (the largest depth's count)."""
        return [block for unit in self.units for block in unit]

    def setting(self) -> dict[str, list]:
        """The active setting: {"ks": per block, "e": per block, "d": per unit}."""
        return {"ks": [b.active_ks for b in self.blocks], "e": [b.active_e for b in self.blocks],
                "d": list(self.active_depth)}

    def set_active_subnet(self, ks: int | Sequence[int] | None = None, e: float | Sequence[float] | None = None,
                          d: int | Sequence[int] | None = None) -> None:
        """Select a sub-network: each of ks, e (per block) and d (per unit) one value for all, a list, or None
        to keep the current. Values outside ks_list / expand_list / depth_list: one ValueError naming them all."""
        n = len(self.blocks)
        wanted = {"ks": None if ks is None else _as_list("ks", ks, n), "e": None if e is None else _as_list("e", e, n),
                  "d": None if d is None else _as_list("d", d, len(self.units))}
        allowed = {"ks": self.ks_list, "e": self.expand_list, "d": self.depth_list}
        problems = [f"{key}={value!r} is not one of {allowed[key]}" for key, values in wanted.items() if values is not None
                    for value in dict.fromkeys(values) if value not in allowed[key]]
        if problems:
            raise ValueError("unknown sub-network values: " + "; ".join(problems))
        for i, block in enumerate(self.blocks):
            if wanted["ks"] is not None:
                block.active_ks = wanted["ks"][i]
            if wanted["e"] is not None:
                block.active_e = wanted["e"][i]
        if wanted["d"] is not None:
            self.active_depth = list(wanted["d"])

    def set_max_net(self) -> None:
        """The largest sub-network: largest kernel, expand ratio and depth everywhere."""
        self.set_active_subnet(ks=self.ks_list[-1], e=self.expand_list[-1], d=self.depth_list[-1])

    def sample_active_subnet(self, rng: random.Random | None = None, ks_list: Sequence[int] | None = None,
                             expand_list: Sequence[float] | None = None,
                             depth_list: Sequence[int] | None = None) -> dict[str, list]:
        """Draw and select a setting uniformly per block and per unit, from the network's choices or the subsets
        given (a progressive-shrinking phase's); ``rng`` (default: Python's global generator). Returns it."""
        rng = rng or random
        ks_list, expand_list, depth_list = (list(self.ks_list if ks_list is None else ks_list),
                                            list(self.expand_list if expand_list is None else expand_list),
                                            list(self.depth_list if depth_list is None else depth_list))
        n = len(self.blocks)
        setting = {"ks": [rng.choice(ks_list) for _ in range(n)], "e": [rng.choice(expand_list) for _ in range(n)],
                   "d": [rng.choice(depth_list) for _ in self.units]}
        self.set_active_subnet(**setting)
        return setting

    # ---- forward, sub-networks and width sorting ----------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(self.stem(x))
        for unit, depth in zip(self.units, self.active_depth):
            for block in unit[:depth]:  # elastic depth: the first D blocks of the unit
                x = block(x)
        return self.head(x)

    def get_active_subnet(self) -> OFASubnet:
        """A standalone network of the active setting, weights copied (kernels through their transformation
        matrices, the first channels of each width); in eval mode its outputs equal this network's."""
        blocks = [block.to_static() for unit, depth in zip(self.units, self.active_depth) for block in unit[:depth]]
        subnet = OFASubnet(copy.deepcopy(self.stem), copy.deepcopy(self.first), blocks, copy.deepcopy(self.head),
                           self.setting())
        return subnet.train(self.training)

    @torch.no_grad()
    def reorder_channels(self, keep: Sequence[float] = ()) -> None:
        """Sort every block's hidden channels by L1 importance (before a width phase); the network's function is
        unchanged. ``keep``: expand ratios already trained, whose channel sets stay as they are."""
        for block in self.blocks:
            block.reorder_channels(keep)
