"""NAS-Bench-201's candidate ops and the fixed parts of its networks: the stem, the residual blocks between the
stages and the head (``_Macro``), shared by the search and the evaluation network. Where ``affine`` and
``track_running_stats`` apply follows the benchmark's published networks: only the cells' ops take them; the stem, the
residual blocks and the final BN always keep affine BN with running statistics. With ``affine=False`` a cell conv
carries a bias instead of the BN's shift."""

from __future__ import annotations

import torch
from torch import nn

from ..ops import FactorizedReduce, Identity, ReLUConvBN, Zero, channels_last_gradient
from .genotype import PRIMITIVES


class AvgPool(nn.Module):
    """3x3 average pool (padding not counted); a 1x1 ReLUConvBN first matches channels when C_in != C_out."""

    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.preprocess = (None if c_in == c_out
                           else ReLUConvBN(c_in, c_out, 1, 1, 0, affine, track_running_stats, conv_bias=not affine))
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x if self.preprocess is None else self.preprocess(x))

    @property
    def pool_only(self) -> nn.Module | None:
        """The pooling, when it is the whole op (``darts_lite.spaces.lean``)."""
        return self.pool if self.preprocess is None else None


class ChannelProjection(nn.Module):
    """skip_connect at stride 1 between different channel counts: a 1x1 conv and BN (no ReLU)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=not affine)
        self.bn = nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    @property
    def final_bn(self) -> nn.Module:
        return self.bn

    def forward_unnormalised(self, x: torch.Tensor, rectified: bool = False) -> torch.Tensor:
        if rectified:
            raise ValueError("a channel projection does not start with a ReLU")
        return self.conv(x)


def make_op(name: str, c_in: int, c_out: int, stride: int, affine: bool = True, track_running_stats: bool = True) -> nn.Module:
    """One candidate op mapping [B, c_in, H, W] to [B, c_out, H/stride, W/stride]."""
    if name == "none":
        return Zero(stride, c_out)
    if name == "skip_connect":
        if stride == 1:
            return Identity() if c_in == c_out else ChannelProjection(c_in, c_out, affine, track_running_stats)
        if stride != 2:
            raise ValueError(f"skip_connect takes stride 1 or 2, got {stride}")
        return FactorizedReduce(c_in, c_out, affine, track_running_stats, conv_bias=not affine)
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
        return self.classifier(self.global_pooling(channels_last_gradient(self.lastact(x))).flatten(1))
