"""Building blocks every space's ops are made of: ReLU-conv-BN, identity, zero, factorized reduction, drop path.

Each space's own candidate ops are in its package (``darts_lite.spaces.darts.ops``, ``darts_lite.spaces.nb201.ops``).
``affine`` switches the BatchNorm affine parameters: off in search (they would rescale the alphas), on in
evaluation.

The ops that begin with a ReLU of their input (``ReLUConvBN``, ``FactorizedReduce``, DARTS's ``DilConv`` and
``SepConv``) also have ``leading_activation`` (that first module) and ``forward_rectified(leading_activation(x))``,
the op's output from an input already rectified, so that a search edge can compute one ReLU for all of them
(``starts_with_relu``). Their modules, and so their state_dict keys, are the same either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` equal channel blocks: x [B, C, H, W] -> [B, C, H, W], input channel g * C/groups + i
    goes to output channel i * groups + g. Keeps a channels-last input channels-last (shuffled within each pixel's
    channels, one copy)."""
    b, c, h, w = x.shape
    if _channels_last(x):
        pixels = x.permute(0, 2, 3, 1).reshape(b, h, w, groups, c // groups)
        return pixels.transpose(3, 4).reshape(b, h, w, c).permute(0, 3, 1, 2)
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out channels-last (and not also contiguous, as a tensor of one channel or pixel is)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _keeps_layout(x: torch.Tensor) -> bool:
    """Whether a backward pass through ``x`` should be given gradients laid out as ``x`` (channels-last) by
    ``sliced`` and ``channels_last_gradient``: plain autograd, outside compilation and torch.func transforms."""
    return (x.requires_grad and torch.is_grad_enabled() and _channels_last(x) and not torch.compiler.is_compiling()
            and not torch._C._are_functorch_transforms_active())


class _Sliced(torch.autograd.Function):
    """``x[index]``, whose gradient is laid out as ``x``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, index: tuple) -> torch.Tensor:
        ctx.index, ctx.shape = index, x.shape
        ctx.layout = torch.channels_last if _channels_last(x) else torch.contiguous_format
        return x[index]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        full = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout).zero_()
        full[ctx.index] = grad
        return full, None

    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor, _: Any) -> torch.Tensor:
        return tangent[ctx.index]


def sliced(x: torch.Tensor, *index: slice) -> torch.Tensor:
    """``x[index]`` (basic slices), the same view. PyTorch's backward of a slice lays the input's gradient out
    contiguously whatever the input's layout, so behind a slice of a channels-last tensor (a factorized reduction's
    shifted pixels, PC-DARTS's channel part) every gradient upstream would be NCHW beside channels-last
    activations, where BatchNorm's and the elementwise kernels take a path several times slower; here a
    channels-last input gets a channels-last gradient, with the same values."""
    return _Sliced.apply(x, index) if _keeps_layout(x) else x[index]


def _to_channels_last(grad: torch.Tensor) -> torch.Tensor:
    return grad.contiguous(memory_format=torch.channels_last)


def channels_last_gradient(x: torch.Tensor) -> torch.Tensor:
    """``x``, whose gradient is made channels-last when ``x`` is (a global average pool's backward lays it out
    NCHW; see ``sliced`` for why that matters)."""
    if _keeps_layout(x):
        x.register_hook(_to_channels_last)
    return x


def channels_concatenated(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors, dim=1)`` (a cell's output), each part of it given a channels-last gradient when it is
    channels-last: the concatenation's backward hands each part a slice of the output's gradient, which a BatchNorm's
    backward reads several times slower than a whole tensor (``channels_last_gradient``)."""
    return torch.cat([channels_last_gradient(t) for t in tensors], dim=1)


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

    @property
    def final_bn(self) -> nn.Module | None:
        """The last module when it is a BatchNorm (``darts_lite.spaces.lean``), else None."""
        last = self[-1]
        return last if isinstance(last, nn.BatchNorm2d) else None

    def forward_unnormalised(self, x: torch.Tensor, rectified: bool = False) -> torch.Tensor:
        """Everything before ``final_bn`` (``rectified``: from an input already rectified)."""
        for module in list(self)[1 if rectified else 0:-1]:
            x = module(x)
        return x


def hooked(*modules: nn.Module) -> bool:
    """Whether calling any of ``modules`` would run a forward hook (its own or a global one): such a module must be
    called, not bypassed by a shared or fused computation."""
    return (bool(_module._global_forward_hooks or _module._global_forward_pre_hooks)
            or any(m._forward_hooks or m._forward_pre_hooks for m in modules))


def starts_with_relu(op: nn.Module) -> bool:
    """Whether ``op(x)`` equals ``op.forward_rectified(relu(x))``: its first module is a ReLU of its input, and
    neither the op nor that ReLU has forward hooks (which must see every call). Asked at every forward pass, so an
    op whose leading module was swapped for another activation, or that was hooked, is run whole."""
    activation = getattr(op, "leading_activation", None)
    return isinstance(activation, nn.ReLU) and not hooked(op, activation)


def run_op(op: nn.Module, x: torch.Tensor, rectified: bool = False) -> torch.Tensor:
    """``op(x)``, or ``op.forward_rectified(x)`` when ``x`` is already the rectified input (``EdgeInput``)."""
    return op.forward_rectified(x) if rectified else op(x)


class EdgeInput:
    """What ops read from one tensor ``x`` (a cell's input or a node's state): with ``share``, the ops that start with
    a ReLU of ``x`` (``starts_with_relu``) read one rectified ``x``, computed by the first of them; the others read
    ``x``. Calling it with an op gives (the tensor the op reads, whether it is the rectified one: see ``run_op``).

    A cell gives one to every edge leaving a state, and a network one to both cells that read a cell's output, so
    that a ReLU of a state is computed and kept for the backward pass once however many ops read it: the same
    outputs, and the same gradients up to the order in which they are summed.
    """

    def __init__(self, x: torch.Tensor, share: bool = True):
        self.x, self.share, self._rectified = x, share, None
        self._narrowed: dict[int, EdgeInput] = {}
        # the edges reading x, each with its weights [O], whose pooling ops run once for all of them
        # (darts_lite.spaces.lean.shared_pooling; set by a search cell), and the outputs computed for them so far
        self.readers: list[tuple[nn.Module, torch.Tensor]] = []
        self.pooled: dict[int, dict[nn.Module, torch.Tensor]] = {}

    @staticmethod
    def of(x: torch.Tensor | EdgeInput, share: bool = True) -> EdgeInput:
        """``x`` itself when it is an EdgeInput and ``share``, else a new one for its tensor."""
        if isinstance(x, EdgeInput):
            return x if share and x.share else EdgeInput(x.x, share)
        return EdgeInput(x, share)

    def __call__(self, op: nn.Module) -> tuple[torch.Tensor, bool]:
        if not (self.share and starts_with_relu(op)):
            return self.x, False
        if self._rectified is None:
            self._rectified = op.leading_activation(self.x)
        return self._rectified, True

    def rectify(self, ops: Iterable[nn.Module]) -> None:
        """Compute now the rectified input the first of ``ops`` that reads it would compute."""
        for op in ops:
            if self._rectified is not None:
                return
            self(op)

    def narrow(self, channels: int) -> EdgeInput:
        """The input's first ``channels`` channels (PC-DARTS's ops' part), one object for all edges asking for them."""
        if channels not in self._narrowed:
            part = self._narrowed[channels] = EdgeInput(sliced(self.x, slice(None), slice(channels)), self.share)
            part.readers = self.readers
        return self._narrowed[channels]


def run_on(op: nn.Module, x: torch.Tensor | EdgeInput) -> torch.Tensor:
    """``op(x)``, reading the rectified input ``x`` shares when ``op`` starts with a ReLU of it."""
    return run_op(op, *EdgeInput.of(x)(op))


def tensor_of(x: torch.Tensor | EdgeInput) -> torch.Tensor:
    """The tensor of ``x`` (an EdgeInput or a tensor)."""
    return x.x if isinstance(x, EdgeInput) else x


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


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The `none` op: zeros of shape [B, c_out, H/stride, W/stride] (c_out: the input's channels unless given); it
    contributes nothing to a weighted sum."""

    def __init__(self, stride: int, c_out: int | None = None):
        super().__init__()
        self.stride, self.c_out = stride, c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.reads_input(x):
            return self.zeros(x)
        if self.stride != 1:
            every = slice(None, None, self.stride)
            x = sliced(x, slice(None), slice(None), every, every)
        return x.mul(0.0)  # keeps the input's memory format (channels_last) and its place in the graph

    def reads_input(self, x: torch.Tensor) -> bool:
        """Whether ``forward(x)`` is computed from ``x`` (zeros of its own channels, times it) and so takes part in its
        gradient, rather than made anew (``zeros``)."""
        return self.c_out is None or self.c_out == x.shape[1]

    def zeros(self, x: torch.Tensor) -> torch.Tensor:
        """A tensor of zeros shaped and laid out as ``forward(x)``, made without reading ``x`` and outside the graph
        (``darts_lite.spaces.lean``: GDAS's sampled `none`)."""
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.reads_input(x):
            return torch.zeros_like(x)
        shape = list(x.shape)
        shape[1] = self.c_out
        return x.new_zeros(shape)


class FactorizedReduce(nn.Module):
    """Halve H and W: ReLU, then two 1x1 stride-2 convs (c_out // 2 channels and the rest), the second on the input
    shifted by one pixel (zero-padded on the right and bottom, so both halves have ceil(H/2) rows), concatenated,
    then BN. ``conv_bias``: the convs keep a bias (NAS-Bench-201's, when its BN has no affine parameters)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True, track_running_stats: bool = True,
                 conv_bias: bool = False):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=conv_bias)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=conv_bias)
        self.bn = nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats)

    @property
    def leading_activation(self) -> nn.Module:
        return self.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_rectified(self.relu(x))

    def forward_rectified(self, x: torch.Tensor) -> torch.Tensor:
        """The output for ``x`` = relu(input)."""
        return self.bn(self.forward_unnormalised(x, rectified=True))

    @property
    def final_bn(self) -> nn.Module:
        return self.bn

    def forward_unnormalised(self, x: torch.Tensor, rectified: bool = False) -> torch.Tensor:
        """Everything before ``bn`` (``rectified``: from an input already rectified)."""
        x = x if rectified else self.relu(x)
        return torch.cat([self.conv_1(x), self._shifted_conv(x)], dim=1)

    def _shifted_conv(self, x: torch.Tensor) -> torch.Tensor:
        """``conv_2`` of ``x`` shifted by one pixel. Its 1x1 stride-2 taps read the pixels at odd rows and columns, so
        it is the stride-1 conv of those pixels (one zero row or column appended where H or W is odd): the same
        products, with a quarter-size copy kept for the backward pass instead of a padded copy of the whole input.
        Run as the module on the padded input when ``conv_2`` is hooked or not a plain 1x1 stride-2 conv."""
        conv = self.conv_2
        if (type(conv) is not nn.Conv2d or hooked(conv) or conv.kernel_size != (1, 1) or conv.stride != (2, 2)
                or conv.padding != (0, 0) or conv.dilation != (1, 1) or conv.groups != 1):
            return conv(nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:])
        odd = sliced(x, slice(None), slice(None), slice(1, None, 2), slice(1, None, 2))
        rows, cols = (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2
        if odd.shape[-2:] != (rows, cols):
            odd = nn.functional.pad(odd, (0, cols - odd.shape[-1], 0, rows - odd.shape[-2]))
        layout = torch.channels_last if _channels_last(x) else torch.contiguous_format
        return nn.functional.conv2d(odd.contiguous(memory_format=layout), conv.weight, conv.bias)



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
