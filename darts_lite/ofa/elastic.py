"""Elastic ops of the Once-for-All network: BatchNorm over the first C channels, a depthwise convolution whose
smaller kernels come from the largest one through learned transformation matrices, and the inverted-residual
block with elastic kernel size and expand ratio; beside them the plain (static) block a sub-network is made of.

A block's hidden channels for expand ratio e are the first ``round(in_channels * e)`` of its largest width, so
the channels that matter most must come first: ``ElasticBlock.reorder_channels`` sorts them by L1 importance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "hswish": nn.Hardswish}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r}: must be one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name](inplace=True)


def centre_crop(weight: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of kernels [C_out, C_in, K, K] (K - size even)."""
    start = (weight.shape[-1] - size) // 2
    return weight[..., start:start + size, start:start + size]


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm of a layer whose width is elastic: an input of C channels uses the first C of everything
    (affine parameters and running statistics; training updates only those C running statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative average, as nn.BatchNorm2d (calibrate_bn relies on it)
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or not self.track_running_stats
        # slices are views: F.batch_norm's in-place update of the running statistics lands in the full buffers
        mean = self.running_mean[:c] if self.track_running_stats else None
        var = self.running_var[:c] if self.track_running_stats else None
        weight = self.weight[:c] if self.affine else None
        bias = self.bias[:c] if self.affine else None
        return F.batch_norm(x, mean, var, weight, bias, use_batch, momentum, self.eps)


def copy_batchnorm(source: nn.BatchNorm2d, target: nn.BatchNorm2d) -> None:
    """Copy the first ``target.num_features`` channels of ``source`` (parameters, statistics, settings) into target."""
    c = target.num_features
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            if getattr(target, name) is not None:
                getattr(target, name).copy_(getattr(source, name)[:c])
        target.num_batches_tracked.copy_(source.num_batches_tracked)
    target.eps, target.momentum = source.eps, source.momentum


class ElasticDepthwiseConv(nn.Module):
    """Depthwise convolution with elastic kernel size and width.

    One [C, 1, K, K] weight holds the largest kernel. A smaller kernel k is made step by step down the kernel
    sizes: the centre of the current kernel, flattened per channel to k*k values v, becomes ``v @ T_k.T`` with
    ``T_k`` (k*k x k*k, parameter ``transform_k``) learned per layer and per size, shared by all channels and
    initialised to the identity. With ks_list (3, 5, 7): 5x5 = T_5 applied to the 7x7's centre, 3x3 = T_3
    applied to that 5x5's centre. Entry (i, j) of T_k weights centre position j (row-major) into position i.
    """

    def __init__(self, channels: int, ks_list: Sequence[int], stride: int = 1):
        super().__init__()
        self.ks_list = sorted(set(int(k) for k in ks_list))
        if any(k < 1 or k % 2 == 0 for k in self.ks_list):
            raise ValueError(f"ks_list={list(ks_list)}: kernel sizes must be odd and >= 1")
        self.stride = stride
        size = self.ks_list[-1]
        self.weight = nn.Parameter(torch.empty(channels, 1, size, size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        for k in self.ks_list[:-1]:
            self.register_parameter(f"transform_{k}", nn.Parameter(torch.eye(k * k)))

    def transform(self, k: int) -> torch.Tensor:
        """T_k: the [k*k, k*k] matrix that makes the k x k kernel from the next larger kernel's centre."""
        return getattr(self, f"transform_{k}")

    def kernel(self, ks: int, channels: int | None = None) -> torch.Tensor:
        """The [channels, 1, ks, ks] kernel of the first ``channels`` channels (None: all)."""
        if ks not in self.ks_list:
            raise ValueError(f"kernel size {ks}: must be one of {', '.join(map(str, self.ks_list))}")
        weight = self.weight[:channels]
        for smaller in reversed(self.ks_list):
            if smaller >= weight.shape[-1] or smaller < ks:
                continue
            centre = centre_crop(weight, smaller).reshape(weight.shape[0], smaller * smaller)
            weight = (centre @ self.transform(smaller).t()).reshape(weight.shape[0], 1, smaller, smaller)
        return weight

    def forward(self, x: torch.Tensor, ks: int) -> torch.Tensor:
        """x [B, C, H, W], C <= channels -> [B, C, H / stride, W / stride]."""
        c = x.shape[1]
        return F.conv2d(x, self.kernel(ks, c), None, self.stride, ks // 2, 1, c)


class InvertedResidual(nn.Module):
    """A plain MobileNetV3-style block: 1x1 expand (optional), k x k depthwise, 1x1 project, each with BatchNorm;
    the input added back when stride is 1 and the channels match. x [B, in, H, W] -> [B, out, H/s, W/s]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel_size: int, hidden: int, act: str,
                 expand: bool = True):
        super().__init__()
        if not expand and hidden != in_channels:
            raise ValueError(f"a block without expansion keeps its {in_channels} channels, got hidden={hidden}")
        self.expand = nn.Conv2d(in_channels, hidden, 1, bias=False) if expand else None
        self.bn1 = nn.BatchNorm2d(hidden) if expand else None
        self.dw = nn.Conv2d(hidden, hidden, kernel_size, stride, kernel_size // 2, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.act = make_activation(act)
        self.residual = stride == 1 and in_channels == out_channels
        for conv in (self.expand, self.dw, self.project):
            if conv is not None:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.act(self.bn1(self.expand(x)))
        y = self.bn3(self.project(self.act(self.bn2(self.dw(y)))))
        return x + y if self.residual else y


class ElasticBlock(nn.Module):
    """The inverted-residual block with elastic kernel size (``active_ks``) and expand ratio (``active_e``):
    hidden channels are the first ``round(in_channels * e)`` of the largest expand ratio's."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: str, ks_list: Sequence[int],
                 expand_list: Sequence[float]):
        super().__init__()
        self.in_channels, self.out_channels, self.stride, self.act_name = in_channels, out_channels, stride, act
        self.ks_list, self.expand_list = sorted(ks_list), sorted(expand_list)
        hidden = self.width(self.expand_list[-1])
        self.expand = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn1 = DynamicBatchNorm2d(hidden)
        self.dw = ElasticDepthwiseConv(hidden, ks_list, stride)
        self.bn2 = DynamicBatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.act = make_activation(act)
        self.residual = stride == 1 and in_channels == out_channels
        for conv in (self.expand, self.project):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out")
        self.active_ks, self.active_e = self.ks_list[-1], self.expand_list[-1]

    def width(self, e: float) -> int:
        """Hidden channels at expand ratio ``e``."""
        return max(1, round(self.in_channels * e))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in, H, W] -> [B, out, H / stride, W / stride] at the active kernel size and expand ratio."""
        h = self.width(self.active_e)
        y = self.act(self.bn1(F.conv2d(x, self.expand.weight[:h])))
        y = self.act(self.bn2(self.dw(y, self.active_ks)))
        y = self.bn3(F.conv2d(y, self.project.weight[:, :h]))
        return x + y if self.residual else y

    def importance(self) -> torch.Tensor:
        """[hidden] L1 norm of the projection weights that read each hidden channel: what dropping it would lose."""
        return self.project.weight.detach().abs().sum(dim=(0, 2, 3))

    @torch.no_grad()
    def reorder_channels(self, keep: Sequence[float] = ()) -> torch.Tensor:
        """Permute the hidden channels so that the more important come first; the block computes the same
        function (every layer touching them is permuted alike). ``keep``: expand ratios whose channel sets must
        stay the same (sub-networks already trained at those widths): channels are sorted only within the
        segments their widths bound. Returns the permutation [hidden] (new position -> old channel)."""
        hidden = self.width(self.expand_list[-1])
        importance = self.importance().tolist()
        bounds = sorted({self.width(e) for e in keep if self.width(e) < hidden} | {hidden})
        segment = [next(i for i, b in enumerate(bounds) if j < b) for j in range(hidden)]
        order = torch.tensor(sorted(range(hidden), key=lambda j: (segment[j], -importance[j])),
                             device=self.expand.weight.device)
        self.expand.weight.copy_(self.expand.weight[order])
        self.dw.weight.copy_(self.dw.weight[order])
        self.project.weight.copy_(self.project.weight[:, order])
        for bn in (self.bn1, self.bn2):
            for name in ("weight", "bias", "running_mean", "running_var"):
                tensor = getattr(bn, name)
                tensor.copy_(tensor[order])
        return order

    @torch.no_grad()
    def to_static(self) -> InvertedResidual:
        """A plain block with the active setting's weights copied (same outputs in eval mode)."""
        h, k = self.width(self.active_e), self.active_ks
        block = InvertedResidual(self.in_channels, self.out_channels, self.stride, k, h, self.act_name)
        block.to(self.expand.weight.device)
        block.expand.weight.copy_(self.expand.weight[:h])
        block.dw.weight.copy_(self.dw.kernel(k, h))
        block.project.weight.copy_(self.project.weight[:, :h])
        copy_batchnorm(self.bn1, block.bn1)
        copy_batchnorm(self.bn2, block.bn2)
        copy_batchnorm(self.bn3, block.bn3)
        return block
