"""The DARTS candidate operations as small nn.Modules (shared by search and evaluation cells).

Every op maps [B, C, H, W] to [B, C, H/stride, W/stride]. ``affine`` switches the BatchNorm
affine parameters: off in search (they would rescale the alphas), on in evaluation.

The ops that begin with a ReLU of their input (``ReLUConvBN``, ``DilConv``, ``SepConv``, ``FactorizedReduce``) also
have ``leading_activation`` (that first module) and ``forward_rectified(leading_activation(x))``, the op's output
from an input already rectified, so that a search edge can compute one ReLU for all of them (``starts_with_relu``).
Their modules, and so their state_dict keys, are the same either way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class _ReLUFirst(nn.Sequential):
    """A sequence whose first module is the ReLU of its input (``ReLUConvBN``, ``DilConv``)."""

    @property
    def leading_activation(self) -> nn.Module:
        return self[0]

    def forward_rectified(self, x: torch.Tensor) -> torch.Tensor:
        """The output for ``x`` = relu(input): every module but the leading ReLU."""
        for module in list(self)[1:]:
            x = module(x)
        return x


def starts_with_relu(op: nn.Module) -> bool:
    """Whether ``op(x)`` equals ``op.forward_rectified(relu(x))``: its first module is a ReLU of its input. Asked at
    every forward pass, so an op whose leading module was swapped for another activation is run whole."""
    return isinstance(getattr(op, "leading_activation", None), nn.ReLU)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` equal channel blocks: x [B, C, H, W] -> [B, C, H, W], input channel g * C/groups + i
    goes to output channel i * groups + g. Keeps a channels-last input channels-last."""
    b, c, h, w = x.shape
    out = x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out


class ReLUConvBN(_ReLUFirst):
    """ReLU, k x k conv, BN. ``conv_bias``: the conv keeps a bias (NAS-Bench-201's, when its BN has no affine
    parameters); ``track_running_stats`` as BatchNorm2d's."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True,
                 track_running_stats: bool = True, conv_bias: bool = False):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=conv_bias),
            nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats),
        )


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise conv (``groups`` = channels): nn.Conv2d's module, parameters and output, run faster where it can.

    With stride s = dilation d > 1 and padding d * (k - 1) / 2 (dil_conv on a reduction edge) every tap of every
    output pixel reads a pixel whose row and column are multiples of s, so the conv equals the undilated stride-1
    conv of x[:, :, ::s, ::s] with padding (k - 1) / 2: the same products summed, and a backward pass several times
    faster on the CPU than the strided dilated one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, d, (k, _) = self.stride[0], self.dilation[0], self.kernel_size
        if (s > 1 and self.stride == self.dilation == (s, s) and self.kernel_size == (k, k) and k % 2
                and self.padding == (d * (k - 1) // 2,) * 2 and self.padding_mode == "zeros"):
            return F.conv2d(x[:, :, ::s, ::s], self.weight, self.bias, 1, (k - 1) // 2, 1, self.groups)
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


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The `none` op: zeros, spatially strided like the other ops of its edge."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve H and W with two offset 1x1 stride-2 convs of c_out/2 channels each, then BN."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    @property
    def leading_activation(self) -> nn.Module:
        return self.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_rectified(self.relu(x))

    def forward_rectified(self, x: torch.Tensor) -> torch.Tensor:
        """The output for ``x`` = relu(input)."""
        a = self.conv_1(x)
        # the shifted view sees the odd pixels; pad back when H or W is odd so both halves align
        shifted = x[:, :, 1:, 1:]
        b = self.conv_2(shifted)
        if b.shape[-2:] != a.shape[-2:]:
            b = nn.functional.pad(b, (0, a.shape[-1] - b.shape[-1], 0, a.shape[-2] - b.shape[-2]))
        return self.bn(torch.cat([a, b], dim=1))


def _pool_with_bn(pool: nn.Module, c: int, bn: bool) -> nn.Module:
    # search cells follow each pooling op with an affine-free BN (DARTS); evaluation cells do not
    return nn.Sequential(pool, nn.BatchNorm2d(c, affine=False)) if bn else pool


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


def drop_active(drop_prob: float | torch.Tensor) -> bool:
    """Whether a drop path probability asks for dropping; a tensor is only ever passed when it does."""
    return isinstance(drop_prob, torch.Tensor) or drop_prob > 0.0


def drop_path(x: torch.Tensor, drop_prob: float | torch.Tensor) -> torch.Tensor:
    """Zero whole samples of a branch with probability drop_prob, rescaling the kept ones.

    x: [B, ...]. drop_prob: a float, or a 0-d tensor, which lets a compiled network keep one graph
    while the probability changes from epoch to epoch.
    """
    if not drop_active(drop_prob):
        return x
    keep = 1.0 - drop_prob
    mask = (torch.rand(x.size(0), *([1] * (x.dim() - 1)), device=x.device) < keep).to(x.dtype)
    return x * mask / keep
