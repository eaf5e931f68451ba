"""``w * op(x)`` for a mixed edge's weighted sum, keeping less for the backward pass (``recompute="cheap"``).

Summed plainly, ``op(x) * w`` keeps the op's output for the gradient of ``w``: for an op that ends with a BatchNorm
that is a second full-size tensor beside the BatchNorm's own input, and a pooling op keeps its output, its max
indices and its BatchNorm's output besides the edge's input, which the edge keeps anyway. Here each of those is one
autograd step that keeps only what is expensive to recompute:

* an op ending with an affine-free BatchNorm (ReLU-conv-BN, the separable and dilated convs, the factorized
  reduction, a 1x1 projection) keeps the BatchNorm's input and its batch statistics; the normalised output is
  recomputed from them in the backward pass (one multiply-add per element);
* a pooling op (with or without its BatchNorm) keeps nothing of its own: the pooling is rerun on the edge's input;
* inside a separable conv, the first block's BatchNorm, the second block's ReLU and its depthwise conv
  (``norm_relu_conv``) keep the BatchNorm's input and statistics; the ReLU's output, which the plain ops keep for the
  ReLU's and the convolution's backward, is recomputed from them.

The forward pass runs the same kernels as the plain ops (BatchNorm running statistics updated once, by the same
rule; under mixed precision the same casts as autocast), and the backward pass calls the same backward kernels with
the same arguments, so outputs and gradients are those of the plain sum bit for bit on the CPU, in float32, float64
and under bfloat16 autocast (tests/test_lean.py, test_recompute.py); on other devices, and in reduced precision, the
BatchNorm output is recomputed by the BatchNorm kernel the forward pass ran. A backward pass that builds its own
graph (``create_graph``, a Hessian) recomputes through plain ops and is exact there too.

An op takes part by having ``final_bn`` (its last module, an affine-free ``BatchNorm2d``) and
``forward_unnormalised(x, rectified)`` (everything before it), or by being a ``PoolBN``/pooling op; anything else,
and any op that has forward hooks or whose BatchNorm or pooling module has hooks or another forward, is summed
plainly (the hooks see every call).

GDAS's hard weights are exactly 1 for the sampled op and exactly 0 for the others (``one_hot - probs.detach() +
probs`` rounds so for every probability). On the CPU, where reading a weight costs nothing, a fused op weighted by
exactly 1 returns its output as it is and passes its gradient on as it is, and NAS-Bench-201's addition of the
unsampled ops' zero weights (``plus``) is skipped forward: no pass over the tensor for a product by 1 or a sum with
0 (the weights' gradients are still computed). A sampled skip connection is such an op (its output the input
itself); a sampled `none` makes its zeros, and its gradients, without a pass over its input or its output's gradient
(``_UnitZero``). The values are the products' bit for bit (a skipped +0 leaves a -0 where the sum would have +0; a
`none` of a non-finite input gives zeros where the product gives NaN).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
import torch.autograd.forward_ad as _forward_ad
from torch import nn

from . import native
from .native import depthwise_weight_gradient
from .ops import EdgeInput, Identity, Zero, _channels_last, drop_active, hooked, run_op

aten = torch.ops.aten
_BN_FORWARD = nn.modules.batchnorm._BatchNorm.forward


def _plain_bn(bn: nn.Module) -> bool:
    """Whether ``bn`` runs as an affine-free training-mode BatchNorm2d of the stock forward, without hooks."""
    return (isinstance(bn, nn.BatchNorm2d) and type(bn).forward is _BN_FORWARD and bn.training and not bn.affine
            and not hooked(bn))


def _bn_arguments(bn: nn.BatchNorm2d) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
    """(running mean, running var, momentum) for one training-mode pass of ``bn``, counting the pass as
    ``_BatchNorm.forward`` does."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    if bn.track_running_stats:
        return bn.running_mean, bn.running_var, factor
    return None, None, factor


def _normalised(h: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, eps: float,
                running: tuple[torch.Tensor | None, torch.Tensor | None]) -> torch.Tensor:
    """The training-mode BatchNorm output of ``h`` whose batch statistics were ``mean`` and ``invstd``, recomputed.
    On the CPU in float32 or float64: BatchNorm's own transform, ``x * invstd + (-mean * invstd)`` as one fused
    multiply-add per element (equal to the kernel's output bit for bit, tested); elsewhere (other devices, and the
    reduced precisions of mixed precision, whose kernel normalises with statistics more precise than those it
    returns) the kernel is run again as the forward pass ran it (with ``running``, the running statistics it was
    given, cloned: they are not updated twice)."""
    if h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64):
        shape = (1, -1) + (1,) * (h.dim() - 2)
        alpha = invstd.view(shape)
        return torch.addcmul((-mean * invstd).view(shape), h, alpha)
    running_mean, running_var = (None if t is None else t.clone() for t in running)
    return aten._batch_norm_impl_index(h, None, None, running_mean, running_var, True, 0.0, eps,
                                       torch.backends.cudnn.enabled)[0]


def _batch_norm(h: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None, momentum: float,
                eps: float) -> tuple[Any, ...]:
    """``aten._batch_norm_impl_index``'s (output, mean, invstd, reserve, implementation) for the training-mode
    affine-free BatchNorm of ``h``: the first three from darts_lite's kernel where it serves (the same values:
    ``darts_lite.spaces.native.batch_norm``), else all from PyTorch's."""
    computed = native.batch_norm(h, running_mean, running_var, momentum, eps)
    if computed is not None:
        return (*computed, h.new_empty(0, dtype=torch.uint8), 0)  # PyTorch's CPU kernel's empty reserve, index 0
    return aten._batch_norm_impl_index(h, None, None, running_mean, running_var, True, momentum, eps,
                                       torch.backends.cudnn.enabled)


def _batch_norm_input_gradient(impl: int, h: torch.Tensor, grad: torch.Tensor, running: tuple, mean: torch.Tensor,
                               invstd: torch.Tensor, eps: float, reserve: torch.Tensor) -> torch.Tensor:
    """The input gradient of that BatchNorm: from darts_lite's kernel where it serves (PyTorch's own CPU
    implementation, index 0, computes the same values), else PyTorch's."""
    if impl == 0:
        computed = native.batch_norm_input_gradient(grad, h, mean, invstd)
        if computed is not None:
            return computed
    return aten._batch_norm_impl_index_backward(impl, h, grad, None, *running, mean, invstd, True, eps,
                                                [True, False, False], reserve)[0]


def _pool(x: torch.Tensor, pool: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(output, max indices or None) of ``pool`` (an nn.MaxPool2d or nn.AvgPool2d) on ``x``: darts_lite's pooling
    kernel where it serves (no indices: ``_pool_backward`` finds the maxima again), else PyTorch's."""
    if isinstance(pool, nn.MaxPool2d):
        args = _max_args(pool)
        out = native.max_pool2d(x, *args)
        return (out, None) if out is not None else aten.max_pool2d_with_indices(x, *args)
    args = _avg_args(pool)
    out = native.avg_pool2d(x, *args[:5]) if args[5] is None else None
    return (out if out is not None else aten.avg_pool2d(x, *args)), None


def _pair(v: Any) -> list[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def _max_args(pool: nn.MaxPool2d) -> tuple[Any, ...]:
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return _pair(pool.kernel_size), _pair(stride), _pair(pool.padding), _pair(pool.dilation), pool.ceil_mode


def _avg_args(pool: nn.AvgPool2d) -> tuple[Any, ...]:
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return (_pair(pool.kernel_size), _pair(stride), _pair(pool.padding), pool.ceil_mode, pool.count_include_pad,
            pool.divisor_override)


def _pool_backward(grad: torch.Tensor, x: torch.Tensor, pool: nn.Module, indices: torch.Tensor | None) -> torch.Tensor:
    """The gradient of ``x`` through ``pool``, given its output's ``grad`` (and the max indices, where PyTorch's
    kernel pooled): darts_lite's kernel where it serves, else PyTorch's (finding the indices where none were kept)."""
    if isinstance(pool, nn.MaxPool2d):
        args = _max_args(pool)
        computed = native.max_pool2d_input_gradient(grad, x, *args)
        if computed is not None:
            return computed
        if indices is None:
            indices = aten.max_pool2d_with_indices(x, *args)[1]
        return aten.max_pool2d_with_indices_backward(grad, x, *args, indices)
    args = _avg_args(pool)
    computed = native.avg_pool2d_input_gradient(grad, x, *args[:5]) if args[5] is None else None
    return computed if computed is not None else aten.avg_pool2d_backward(grad, x, *args)


class _WeightedOp(torch.autograd.Function):
    """(w_1 * bn(pool(x)), ..., w_m * bn(pool(x))), with the pooling and the BatchNorm each optional (at least one
    present): one op's output weighted by each of m weights (m > 1: the edges sharing a pooling op, ``shared_pooling``).
    ``unit``: one weight, exactly 1.0 (``_unit``): the output is bn(pool(x)) itself and its gradient passes as it is,
    without the products by 1."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, pool: nn.Module | None, bn: nn.BatchNorm2d | None,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None, momentum: float, unit: bool,
                *ws: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = x if pool is None else _pool(x, pool)[0]
        ctx.pool, ctx.eps, ctx.unit, ctx.running = pool, None if bn is None else bn.eps, unit, None
        ctx.set_materialize_grads(False)
        if bn is None:
            ctx.save_for_backward(x, *ws)
            return (h,) if unit else _weighed(h, ws)
        y, mean, invstd, reserve, impl = _batch_norm(h, running_mean, running_var, momentum, bn.eps)
        # the BatchNorm's input is kept when it is what the op computed before it (a conv's output); after a pooling
        # the edge's input is kept instead and the pooling rerun
        ctx.impl, ctx.running = impl, (running_mean, running_var)
        ctx.save_for_backward(x, mean, invstd, reserve, *ws)
        return (y,) if unit else _weighed(y, ws)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        x, *saved = ctx.saved_tensors
        stats, ws = (saved[:3], saved[3:]) if ctx.eps is not None else ((), saved)
        pool, need_x, need_ws = ctx.pool, ctx.needs_input_grad[0], ctx.needs_input_grad[7:]
        if torch.is_grad_enabled():  # a graph of the backward pass is wanted (double backward): plain ops
            def plain(x: torch.Tensor, *ws: torch.Tensor) -> tuple[torch.Tensor, ...]:
                h = x if pool is None else pool(x)
                y = h if ctx.eps is None else _batch_normalised(h, ctx.eps)
                return tuple(y * w for w in ws)

            grad_x, *grad_ws = _replayed((need_x, *need_ws), (x, *ws), grads, plain)
            return (grad_x, None, None, None, None, None, None, *grad_ws)
        # as autograd does for the plain products: only the gradients asked for (the weight step freezes the alphas,
        # so no normalised output is recomputed there, and a pooling without a BatchNorm is not rerun)
        mean, invstd, reserve = stats or (None, None, None)
        asked = [need and g is not None for need, g in zip(need_ws, grads)]
        h, indices = x, None
        if pool is not None and (ctx.eps is not None or any(asked)):
            h, indices = _pool(x, pool)
        grad_ws = _weight_gradients(grads, asked, h, ctx.eps, mean, invstd, ctx.running)
        grad_x = None
        # a weight of exactly 1 passes the gradient as it is (a product of it would be the same tensor)
        grad_y = (grads[0] if ctx.unit and _dense(grads[0]) else _sum_of_products(grads, ws)) if need_x else None
        if grad_y is not None:
            if ctx.eps is not None:
                grad_y = _batch_norm_input_gradient(ctx.impl, h, grad_y, ctx.running, mean, invstd, ctx.eps, reserve)
            grad_x = grad_y if pool is None else _pool_backward(grad_y, x, pool, indices)
        return (grad_x, None, None, None, None, None, None, *grad_ws)


def _weight_gradients(grads: tuple[torch.Tensor | None, ...], asked: list[bool], h: torch.Tensor, eps: float | None,
                      mean: torch.Tensor | None, invstd: torch.Tensor | None, running: tuple) -> list[torch.Tensor | None]:
    """The gradient of each weight asked for, ``(grad_r * y).sum()``, y the op's output (``h`` itself without a
    BatchNorm, else its normalised ``h``): each product from darts_lite's kernel where it serves (y computed there,
    not written: ``native.times_normalised``, the same values), else y recomputed once (``_normalised``)."""
    y = h if eps is None else None
    out: list[torch.Tensor | None] = []
    for g, a in zip(grads, asked):
        if not a:
            out.append(None)
            continue
        product = None if y is not None else native.times_normalised(g, h, mean, invstd)
        if product is None:
            if y is None:
                y = _normalised(h, mean, invstd, eps, running)
            product = g * y
        out.append(product.sum())
    return out


def _weighed(y: torch.Tensor, ws: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """(y * w for w in ws), the last written over ``y`` (see ``_times``)."""
    return (*(y * w for w in ws[:-1]), _times(y, ws[-1]))


def _sum_of_products(grads: tuple[torch.Tensor | None, ...], ws: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
    """The gradient of y from the products y * w_r: the sum of grad_r * w_r, added last product first, as autograd
    sums the gradients of a tensor read by several products (tests/test_shared_pooling.py: bit for bit)."""
    total = None
    for g, w in reversed(list(zip(grads, ws))):
        if g is not None:
            total = g * w if total is None else total + g * w
    return total


def _times(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``fresh * other``, written over ``fresh`` (a tensor the caller made and nothing else holds) where the product
    has its dtype and its layout (``other`` a scalar tensor, or laid out as ``fresh``): the same values, and the same
    order for a sum over them, without a new tensor (on the CPU a new tensor costs more than the product)."""
    if torch.result_type(fresh, other) == fresh.dtype and (other.dim() == 0 or other.stride() == fresh.stride()):
        return fresh.mul_(other)
    return fresh * other


def _replayed(need: tuple[bool, ...], inputs: tuple[torch.Tensor, ...], grad: Any, plain: Any) -> tuple[torch.Tensor | None, ...]:
    """The gradients of ``plain(*inputs)`` (a tensor, whose gradient is ``grad``, or a tuple of them, with a tuple of
    gradients, None for an output that got none) for the inputs ``need`` marks, through plain, differentiable ops
    whose graph a double backward differentiates again (``plain`` does not touch the running statistics)."""
    with torch.enable_grad():
        out = plain(*inputs)
        pairs = [(o, g) for o, g in (zip(out, grad) if isinstance(out, tuple) else [(out, grad)]) if g is not None]
        wanted = [t for t, n in zip(inputs, need) if n]
        grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], create_graph=True,
                                         allow_unused=True) if pairs and wanted else [None] * len(wanted))
    return tuple(next(grads) if n else None for n in need)


def _batch_normalised(h: torch.Tensor, eps: float) -> torch.Tensor:
    """The differentiable training-mode, affine-free BatchNorm of ``h`` with its batch's statistics."""
    return torch.batch_norm(h, None, None, None, None, True, 0.0, eps, torch.backends.cudnn.enabled)


class _NormReLUConv(torch.autograd.Function):
    """conv(relu(bn(h))) for an affine-free training-mode BatchNorm and a bias-free convolution, keeping the
    BatchNorm's input and statistics (which its own backward needs) instead of the ReLU's output: that output, which the
    ReLU's and the convolution's backward read, is recomputed from them in the backward pass."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, bn: nn.BatchNorm2d, conv: nn.Conv2d,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None, momentum: float) -> torch.Tensor:
        y, mean, invstd, reserve, impl = _batch_norm(h, running_mean, running_var, momentum, bn.eps)
        ctx.eps, ctx.impl, ctx.running, ctx.conv = bn.eps, impl, (running_mean, running_var), _conv_args(conv)
        # under mixed precision the convolution reads its input and weight cast as autocast casts them
        ctx.cast = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else None
        ctx.save_for_backward(h, weight, mean, invstd, reserve)
        stride, padding, dilation, _, _, groups = ctx.conv
        with torch.autocast(h.device.type, enabled=False):  # F.conv2d: a lighter call than aten.convolution's op packet
            return torch.nn.functional.conv2d(_cast(torch.relu_(y), ctx.cast), _cast(weight, ctx.cast), None, stride,
                                              padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, weight, mean, invstd, reserve = ctx.saved_tensors
        need_h, need_weight = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # a graph of the backward pass is wanted (double backward): plain ops
            def plain(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
                return aten.convolution(torch.relu(_batch_normalised(h, ctx.eps)), weight, None, *ctx.conv)

            return (*_replayed((need_h, need_weight), (h, weight), grad, plain), None, None, None, None, None)
        r = torch.relu_(_normalised(h, mean, invstd, ctx.eps, ctx.running))  # a tensor of its own: rectified in place
        # the calls autograd makes for the plain ops, with the same arguments: the convolution's (and the casts'),
        # the ReLU's, the BatchNorm's; a same-padded depthwise conv's input gradient as DepthwiseConv2d computes it
        stride, padding, dilation, _, _, groups = ctx.conv
        if ctx.cast is None and _flipped_input_gradient(r, weight, stride, padding, dilation, groups):
            grad_r, grad_weight = _flipped_backward(grad, r, weight, ctx.conv, need_h, need_weight)
        else:
            grad_r, grad_weight, _ = aten.convolution_backward(grad, _cast(r, ctx.cast), _cast(weight, ctx.cast), None,
                                                               *ctx.conv, [need_h, need_weight, False])
        grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
        grad_h = None
        if need_h:
            grad_r = grad_r.to(r.dtype)
            grad_y = aten.threshold_backward(grad_r, r, 0)
            grad_h = _batch_norm_input_gradient(ctx.impl, h, grad_y, ctx.running, mean, invstd, ctx.eps, reserve)
        return grad_h, grad_weight, None, None, None, None, None


def _flipped_input_gradient(x: torch.Tensor, weight: torch.Tensor, stride: Any, padding: Any, dilation: Any,
                            groups: int) -> bool:
    """Whether the conv of ``x`` with these arguments takes its input gradient from ``depthwise_input_gradient``: a
    stride-1 depthwise conv (one filter per channel) of an odd square kernel with the padding that keeps the size, on
    the CPU."""
    k = weight.shape[-1]
    return (x.device.type == "cpu" and groups > 1 and tuple(weight.shape[:3]) == (groups, 1, k) and k % 2 == 1
            and tuple(stride) == (1, 1) and dilation[0] == dilation[1]
            and tuple(padding) == (dilation[0] * (k - 1) // 2,) * 2)


def depthwise_input_gradient(grad: torch.Tensor, weight: torch.Tensor, padding: Any, dilation: Any,
                             groups: int) -> torch.Tensor:
    """The input gradient of a stride-1, same-padded depthwise conv: the same conv of the output gradient with the
    kernel flipped (each input pixel sums the output pixels whose window reads it, times the tap that reads it: the
    products of the convolution's backward, summed by the forward kernel). On the CPU oneDNN runs this backward
    with its depthwise kernel only for undilated 3x3 kernels; dilated and 5x5 ones go through its generic grouped
    convolution, several times slower than the depthwise forward this calls."""
    return torch.nn.functional.conv2d(grad, weight.flip(-2, -1), None, 1, padding, dilation, groups)


def _flipped_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, conv: tuple[Any, ...], need_x: bool,
                      need_weight: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(input gradient, weight gradient), those asked for, of a same-padded depthwise conv of ``x`` with ``conv`` (the
    arguments ``_conv_args`` gives): the input's from ``depthwise_input_gradient``, the weight's from
    ``darts_lite.spaces.native`` for 5x5 and dilated kernels (else, or where it is not built, the convolution's
    backward)."""
    _, padding, dilation, _, _, groups = conv
    grad_x = depthwise_input_gradient(grad, weight, padding, dilation, groups) if need_x else None
    grad_weight = None
    if need_weight:
        grad_weight = depthwise_weight_gradient(grad, x, weight.shape[-1], padding[0], dilation[0])
        if grad_weight is None:  # an undilated 3x3 kernel, or the compiled kernel unavailable: PyTorch's
            grad_weight = aten.convolution_backward(grad, x, weight, None, *conv, [False, True, False])[1]
    return grad_x, grad_weight


class _DepthwiseConv(torch.autograd.Function):
    """A stride-1, same-padded, bias-free depthwise conv whose input gradient is ``depthwise_input_gradient``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int], dilation: tuple[int, int],
                groups: int) -> torch.Tensor:
        ctx.conv = ([1, 1], list(padding), list(dilation), False, [0, 0], groups)  # as _conv_args gives them
        ctx.save_for_backward(x, weight)
        return torch.nn.functional.conv2d(x, weight, None, 1, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_weight = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # a graph of the backward pass is wanted (double backward): plain ops
            def plain(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
                return aten.convolution(x, weight, None, *ctx.conv)

            return (*_replayed((need_x, need_weight), (x, weight), grad, plain), None, None, None)
        return (*_flipped_backward(grad, x, weight, ctx.conv, need_x, need_weight), None, None, None)


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int], dilation: tuple[int, int],
                   groups: int) -> torch.Tensor:
    """``F.conv2d(x, weight, None, 1, padding, dilation, groups)``; for a same-padded depthwise conv on the CPU whose
    pass takes gradients by reverse mode without autocast, with its input gradient from ``depthwise_input_gradient``
    (equal to the convolution's backward up to the order of its sums; every memory mode computes it so)."""
    if (_flipped_input_gradient(x, weight, (1, 1), padding, dilation, groups) and torch.is_grad_enabled()
            and (x.requires_grad or weight.requires_grad) and _forward_ad._current_level < 0
            and not torch.compiler.is_compiling() and not torch.is_autocast_enabled(x.device.type)):
        return _DepthwiseConv.apply(x, weight, tuple(padding), tuple(dilation), groups)
    return torch.nn.functional.conv2d(x, weight, None, 1, padding, dilation, groups)


def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``t`` as autocast casts an input of a lower-precision op to ``dtype`` (None: autocast off): a float tensor
    other than float64 becomes ``dtype``."""
    if dtype is None or not t.is_floating_point() or t.dtype in (torch.float64, dtype):
        return t
    return t.to(dtype)


def _conv_args(conv: nn.Conv2d) -> tuple[Any, ...]:
    """(stride, padding, dilation, transposed, output_padding, groups): ``aten.convolution``'s (and its backward's)
    arguments for a 2-d convolution, as ``F.conv2d`` passes them."""
    return list(conv.stride), list(conv.padding), list(conv.dilation), False, [0, 0], conv.groups


def _plain_conv(conv: nn.Module) -> bool:
    """Whether ``conv`` runs as ``F.conv2d`` with its own weight, no bias, zero padding given in pixels, no hooks."""
    return (isinstance(conv, nn.Conv2d) and conv.bias is None and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple) and (type(conv) is nn.Conv2d or getattr(conv, "runs_as_conv2d", False))
            and not hooked(conv))


def norm_relu_conv(h: torch.Tensor, bn: nn.Module, relu: nn.Module, conv: nn.Module) -> torch.Tensor:
    """``conv(relu(bn(h)))`` (a separable conv's middle), as one fused step keeping ``h`` and the BatchNorm's
    statistics instead of the ReLU's output when the three are plain modules (an affine-free training-mode
    BatchNorm, ``nn.ReLU``, a bias-free convolution, none hooked) and the pass takes gradients by reverse mode;
    else the three modules run. Equal to them bit for bit on the CPU (tests/test_lean.py)."""
    if (_plain_bn(bn) and type(relu) is nn.ReLU and not hooked(relu) and _plain_conv(conv) and torch.is_grad_enabled()
            and _forward_ad._current_level < 0 and not torch.compiler.is_compiling()):
        running_mean, running_var, momentum = _bn_arguments(bn)
        return _NormReLUConv.apply(h, conv.weight, bn, conv, running_mean, running_var, momentum)
    return conv(relu(bn(h)))


class PoolBN(nn.Sequential):
    """A pooling op followed by an affine-free BatchNorm (the DARTS space's search-cell pooling)."""

    @property
    def pool(self) -> nn.Module:
        return self[0]

    @property
    def final_bn(self) -> nn.Module:
        return self[1]

    def forward_unnormalised(self, x: torch.Tensor, rectified: bool = False) -> torch.Tensor:
        return self[0](x)


def weighted(op: nn.Module, x: torch.Tensor, w: torch.Tensor, rectified: bool = False, fuse: bool = True) -> torch.Tensor:
    """``run_op(op, x, rectified) * w`` with the same output and gradients; with ``fuse`` (an edge's ``lean()``)
    keeping less for the backward pass where ``op`` takes part (see the module's text); other ops are summed plainly."""
    if fuse and not hooked(op):
        pool, bn = _pool_parts(op)
        if pool is not None and not rectified and (bn is None or _plain_bn(bn)):
            return _weighted(x, (w,), pool, bn, _unit(w))[0]
        bn = getattr(op, "final_bn", None)
        if bn is not None and _plain_bn(bn):
            return _weighted(op.forward_unnormalised(x, rectified), (w,), None, bn, _unit(w))[0]
        if type(op) is Identity and not rectified and _unit(w):
            return _weighted(x, (w,), None, None, True)[0]
        if type(op) is Zero and _unit(w):
            return _UnitZero.apply(x, w, op)
    return run_op(op, x, rectified) * w


def _pool_parts(op: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    """(the pooling, its BatchNorm or None) of a pooling op whose pooling can be rerun, else (None, None)."""
    if isinstance(op, PoolBN):
        pool, bn = op.pool, op.final_bn
    elif isinstance(op, (nn.MaxPool2d, nn.AvgPool2d)):
        pool, bn = op, None
    else:
        pool, bn = getattr(op, "pool_only", None), None
    return (pool, bn) if _stock_pool(pool) else (None, None)


def _stock_pool(pool: nn.Module | None) -> bool:
    return type(pool) in (nn.MaxPool2d, nn.AvgPool2d) and not hooked(pool) and not getattr(pool, "return_indices", False)


def _weighted(x: torch.Tensor, ws: tuple[torch.Tensor, ...], pool: nn.Module | None,
              bn: nn.BatchNorm2d | None, unit: bool = False) -> tuple[torch.Tensor, ...]:
    running_mean, running_var, momentum = (None, None, 0.0) if bn is None else _bn_arguments(bn)
    return _WeightedOp.apply(x, pool, bn, running_mean, running_var, momentum, unit, *ws)


def _exactly(t: torch.Tensor, value: float) -> bool:
    """Whether ``t`` holds exactly ``value``, asked only where reading it costs nothing: a plain 0-dim CPU tensor
    outside torch.func's transforms (on a GPU the answer is no, without a synchronisation)."""
    return (t.dim() == 0 and t.device.type == "cpu" and type(t) is torch.Tensor
            and not torch._C._are_functorch_transforms_active() and t.item() == value)


def _unit(w: torch.Tensor) -> bool:
    """Whether ``w`` is exactly 1.0 (``_exactly``). GDAS's weight of the sampled op is (1 - p) + p (``one_hot -
    probs.detach() + probs``), which rounds to exactly 1 for every p in [0, 1]: ``y * w`` is then ``y`` and ``g * w``
    is ``g``, bit for bit."""
    return _exactly(w, 1.0)


def _zero(s: torch.Tensor) -> bool:
    """Whether ``s`` is exactly 0.0 (``_exactly``): a sum of GDAS's weights of the ops not sampled, each (0 - p) + p,
    exactly 0."""
    return _exactly(s, 0.0)


def _dense(t: torch.Tensor | None) -> bool:
    """Whether ``t`` is laid out densely (contiguous or channels-last), as a product ``t * w`` would be: such a
    ``t`` can stand for the product, strides and all, in the kernels that read it."""
    return t is not None and (t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last))


class _UnitZero(torch.autograd.Function):
    """``zero(x) * w`` for the `none` op ``zero`` and a ``w`` that is exactly 1 (GDAS's sampled `none`): zeros made
    without reading ``x``; backward, zeros for ``x`` (made, not computed: a parameter upstream gets a gradient of
    zeros, as the product gives it, which momentum and weight decay step with) and 0 for ``w``. The product's gradients
    are the output's gradient times zeros and its sum times zeros, and its output ``x`` times 0: the same values
    wherever ``x`` and that gradient are finite (at most the sign of a zero differs)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, zero: Zero) -> torch.Tensor:
        ctx.set_materialize_grads(False)
        ctx.reads_x = zero.reads_input(x)
        ctx.x = dict(size=x.shape, dtype=x.dtype, device=x.device,
                     memory_format=torch.channels_last if _channels_last(x) else torch.contiguous_format)
        ctx.w = dict(size=w.shape, dtype=w.dtype, device=w.device)
        return zero.zeros(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        if grad is None:
            return None, None, None
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x = torch.empty(**ctx.x).zero_() if need_x and ctx.reads_x else None
        return grad_x, torch.zeros(**ctx.w) if need_w else None, None


class _PlusZero(torch.autograd.Function):
    """``y + s`` for an ``s`` that is exactly 0: ``y`` itself (a view of it) forward; backward, ``y``'s gradient
    unchanged and ``s``'s the sum of it, as autograd's for the sum."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        ctx.set_materialize_grads(False)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return grad, grad.sum() if grad is not None and ctx.needs_input_grad[1] else None


def plus(y: torch.Tensor, s: torch.Tensor, fuse: bool) -> torch.Tensor:
    """``y + s`` (``s`` a 0-dim tensor) with the same values and gradients; with ``fuse`` (an edge's ``lean()``) and
    an ``s`` that is exactly 0 on the CPU (NAS-Bench-201's GDAS adds the zero weights of the ops it did not run),
    without the addition's pass over ``y``: the values differ at most in the sign of a zero (-0 + 0 is +0)."""
    if fuse and _dense(y) and _zero(s):
        return _PlusZero.apply(y, s)
    return y + s


# ---- pooling ops shared by the edges reading one state ---------------------------------------------------------------
def pooling_readers(edges: Sequence[nn.Module], sources: Sequence[int], rows: Sequence[torch.Tensor], ew: Any,
                  drop_prob: float | torch.Tensor = 0.0) -> Any:
    """A search cell's ``readers(state, j)``: gives the ``EdgeInput`` of its state ``j`` its readers (each edge whose
    source is j, with its weights ``rows[e]``) when their pooling ops may run once for all of them
    (``shared_pooling``): every op runs (no sampled index), no drop path (a mask per op), every edge shares (its
    ``share_pooling`` and ``share_relu``) and none runs in a recomputed region of its own (whose pass cannot hand
    outputs to another's), not while being compiled; else leaves it as it is."""
    share = (ew.index is None and not drop_active(drop_prob) and not torch.compiler.is_compiling()
             and all(getattr(edge, "share_pooling", True) and getattr(edge, "share_relu", True)
                     and not edge.runs_in_region() for edge in edges))

    def readers(state: EdgeInput, j: int) -> EdgeInput:
        if share:
            state.readers = [(edge, rows[e]) for e, (edge, source) in enumerate(zip(edges, sources)) if source == j]
        return state

    return readers


def shared_pooling(inputs: EdgeInput, edge: nn.Module, index: int, fuse: bool) -> torch.Tensor | None:
    """``edge``'s weighted output of its op ``index`` when that op is a pooling op (with its affine-free BatchNorm,
    or alone) that every edge reading ``inputs`` (``inputs.readers``, set by a search cell) runs alike: the first edge
    to ask computes the pooling, and its BatchNorm, once for all of them and weighs it by each edge's weight (one
    fused step keeping nothing of its own with ``fuse``, else the plain modules and products). The same outputs,
    BatchNorm statistics (each edge's BatchNorm updated as its own pass would have: their statistics must be equal
    beforehand), and gradients up to the order of their sums; None where the op is not shared (the edge runs it)."""
    if not inputs.readers:
        return None
    if index not in inputs.pooled:
        inputs.pooled[index] = _pooled_together(inputs, edge, index, fuse)
    return inputs.pooled[index].pop(edge, None)


def _pooled_together(inputs: EdgeInput, edge: nn.Module, index: int, fuse: bool) -> dict[nn.Module, torch.Tensor]:
    """{reader: its weighted output} of the readers of ``inputs`` whose op ``index`` runs as ``edge``'s does (none
    when fewer than two)."""
    signature = _pooling_signature(edge, index)
    if signature is None:
        return {}
    first = edge.ops[index]
    group = [(reader, w) for reader, w in inputs.readers
             if _pooling_signature(reader, index) == signature and _same_statistics(first, reader.ops[index])]
    if len(group) < 2 or group[0][0] is not edge:
        return {}
    ws = tuple(w[index] for _, w in group)
    pool, bn = _pool_parts(first)
    if fuse and (bn is None or _plain_bn(bn)):
        outputs = _weighted(inputs.x, ws, pool, bn)
    else:
        y = run_op(first, inputs.x)
        outputs = tuple(y * w for w in ws)
    if bn is not None and bn.training:  # (in evaluation mode a BatchNorm leaves its statistics as they are)
        _copy_statistics(bn, [r.ops[index].final_bn for r, _ in group[1:]])
    return {r: out for (r, _), out in zip(group, outputs)}


def _pooling_signature(edge: nn.Module, index: int) -> tuple | None:
    """What decides op ``index``'s output on ``edge`` from the input its ops read, and how its pass computes it (fused
    or plain: ``edge.lean()``), when it is a shareable pooling op (a stock pooling, alone or with an affine-free
    BatchNorm of the stock forward, nothing hooked), else None."""
    ops, live = edge.ops, edge.live
    if index >= len(ops) or (live is not None and not live[index]):
        return None
    op = ops[index]
    pool, bn = _pool_parts(op)
    if pool is None or hooked(op):
        return None
    args = _max_args(pool) if isinstance(pool, nn.MaxPool2d) else _avg_args(pool)
    if bn is None:
        return type(op), type(pool), args, edge.partial_channels, edge.lean()
    if type(bn) is not nn.BatchNorm2d or bn.affine or hooked(bn):
        return None
    return (type(op), type(pool), args, edge.partial_channels, edge.lean(), bn.num_features, bn.eps, bn.momentum,
            bn.training, bn.track_running_stats)


def _statistics(bn: nn.Module | None) -> list[torch.Tensor]:
    return [] if bn is None else [t for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked) if t is not None]


# reader's BatchNorm -> (the BatchNorm whose statistics it was made equal to, both buffers' versions then): equal still
# while neither was written since, which spares a comparison (a device synchronisation on a GPU) every pass
_synced: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _stamp(a: nn.Module, b: nn.Module) -> tuple:
    return tuple(t._version for t in _statistics(a)), tuple(t._version for t in _statistics(b))


def _same_statistics(first: nn.Module, op: nn.Module) -> bool:
    """Whether the BatchNorms of two pooling ops hold equal running statistics and step counts (or neither has any)."""
    a, b = _pool_parts(first)[1], _pool_parts(op)[1]
    if a is b:
        return True
    mine, theirs = _statistics(a), _statistics(b)
    if len(mine) != len(theirs):
        return False
    stamp = _synced.get(b)
    if stamp is not None and stamp[0]() is a and stamp[1] == _stamp(a, b):
        return True
    same = all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(mine, theirs))
    if same:
        _synced[b] = (weakref.ref(a), _stamp(a, b))
    return same


def _copy_statistics(bn: nn.Module, others: list[nn.Module]) -> None:
    """Give ``others`` the running statistics and step count ``bn``'s pass left (they held ``bn``'s before it)."""
    source = _statistics(bn)
    for other in others:
        with torch.no_grad():
            for t, s in zip(_statistics(other), source):
                t.copy_(s)
        _synced[other] = (weakref.ref(bn), _stamp(bn, other))
