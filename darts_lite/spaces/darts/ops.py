"""The DARTS space's candidate ops (Liu et al., 2019; REFERENCE.md), built from the shared blocks of
``darts_lite.spaces.ops``: every op maps [B, C, H, W] to [B, C, H/stride, W/stride]; in search cells each pooling
op is followed by an affine-free BatchNorm. ``OPS`` maps each name to a factory, ``make_op`` builds one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..lean import PoolBN, depthwise_conv, norm_relu_conv
from ..ops import FactorizedReduce, Identity, Zero, _ReLUFirst, channel_shuffle, sliced  # noqa: F401 (channel_shuffle: its old home)


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise conv (``groups`` = channels): nn.Conv2d's module, parameters and output, run faster where it can.

    With stride s = dilation d > 1 and padding d * (k - 1) / 2 (dil_conv on a reduction edge) every tap of every
    output pixel reads a pixel whose row and column are multiples of s, so the conv equals the undilated stride-1
    conv of x[:, :, ::s, ::s] with padding (k - 1) / 2: the same products summed, and a backward pass several times
    faster on the CPU than the strided dilated one. A stride-1 conv with the padding that keeps the size (every
    separable and dilated conv of a normal cell) takes its input gradient as the same conv of the output gradient
    with the kernel flipped (``darts_lite.spaces.lean.depthwise_conv``): on the CPU oneDNN's depthwise forward,
    instead of the generic grouped backward it runs for dilated and 5x5 kernels; and, for those kernels, its weight
    gradient from darts_lite's compiled kernel (``darts_lite.spaces.native``).
    """

    @property
    def runs_as_conv2d(self) -> bool:
        """Whether forward is nn.Conv2d's (False where it runs the undilated conv of the subsampled input)."""
        s, d, (k, _) = self.stride[0], self.dilation[0], self.kernel_size
        return not (s > 1 and self.stride == self.dilation == (s, s) and self.kernel_size == (k, k) and k % 2
                    and self.padding == (d * (k - 1) // 2,) * 2 and self.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.runs_as_conv2d:
            s, k = self.stride[0], self.kernel_size[0]
            every = slice(None, None, s)
            x = sliced(x, slice(None), slice(None), every, every)
            if self.bias is None:
                return depthwise_conv(x, self.weight, ((k - 1) // 2,) * 2, (1, 1), self.groups)
            return F.conv2d(x, self.weight, self.bias, 1, (k - 1) // 2, 1, self.groups)
        if self.bias is None and self.stride == (1, 1) and self.padding_mode == "zeros" and isinstance(self.padding, tuple):
            return depthwise_conv(x, self.weight, self.padding, self.dilation, self.groups)
        return super().forward(x)


class DilConv(_ReLUFirst):
    """ReLU, depthwise k x k conv with dilation, 1x1 conv, BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            DepthwiseConv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two dilation-1 DilConv blocks; only the first carries the stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )

    @property
    def leading_activation(self) -> nn.Module:
        return self[0][0]

    def forward_rectified(self, x: torch.Tensor) -> torch.Tensor:
        """The output for ``x`` = relu(input): the first block without its ReLU, then the second block whole."""
        first, second = self.children()
        return second(first.forward_rectified(x))

    @property
    def final_bn(self) -> nn.Module | None:
        return self[1].final_bn

    def forward_unnormalised(self, x: torch.Tensor, rectified: bool = False) -> torch.Tensor:
        """Everything before the second block's BatchNorm (``rectified``: from an input already rectified), as the
        fused weighted sum runs it (``darts_lite.spaces.lean``): the first block's BatchNorm, the second's ReLU and
        its depthwise conv in one fused step that recomputes the ReLU's output in the backward pass."""
        first, second = self.children()
        h = first.forward_unnormalised(x, rectified)
        return second[2](norm_relu_conv(h, first.final_bn, second[0], second[1]))


def _pool_with_bn(pool: nn.Module, c: int, bn: bool) -> nn.Module:
    # search cells follow each pooling op with an affine-free BN (DARTS); evaluation cells do not
    return PoolBN(pool, nn.BatchNorm2d(c, affine=False)) if bn else pool


OpFactory = Callable[[int, int, bool, bool], nn.Module]

# name -> factory(C, stride, affine, pool_bn)
OPS: dict[str, OpFactory] = {
    "none": lambda C, stride, affine, pool_bn: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine, pool_bn: _pool_with_bn(nn.MaxPool2d(3, stride, 1), C, pool_bn),
    "avg_pool_3x3": lambda C, stride, affine, pool_bn: _pool_with_bn(
        nn.AvgPool2d(3, stride, 1, count_include_pad=False), C, pool_bn
    ),
    "skip_connect": lambda C, stride, affine, pool_bn: Identity() if stride == 1 else FactorizedReduce(C, C, affine),
    "sep_conv_3x3": lambda C, stride, affine, pool_bn: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine, pool_bn: SepConv(C, C, 5, stride, 2, affine),
    "sep_conv_7x7": lambda C, stride, affine, pool_bn: SepConv(C, C, 7, stride, 3, affine),
    "dil_conv_3x3": lambda C, stride, affine, pool_bn: DilConv(C, C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine, pool_bn: DilConv(C, C, 5, stride, 4, 2, affine),
}


def make_op(name: str, C: int, stride: int, affine: bool, pool_bn: bool = False) -> nn.Module:
    try:
        factory = OPS[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(OPS)}") from None
    return factory(C, stride, affine, pool_bn)


