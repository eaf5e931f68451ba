"""A BatchNorm2d whose training-mode pass runs darts_lite's compiled BatchNorm kernels where they serve.

PyTorch's channels-last BatchNorm kernels on the CPU process one pixel's channels per call: for the few channels of
a retrained DARTS network (C=36 and its multiples) they are several times slower than the same arithmetic a channel
group at a time, which ``darts_lite.spaces.native`` compiles (experiments/batch_norm_kernel.py). ``BatchNorm2d``
below is ``nn.BatchNorm2d`` with that kernel in training mode: the same output, batch statistics, running
statistics, ``num_batches_tracked`` and gradients (input, weight, bias) bit for bit, with or without affine
parameters (tests/test_batchnorm.py). Where the kernel does not serve (evaluation mode, another dtype, layout or
device, autocast, forward-mode AD, a compiled or exported graph, no compiler) it is ``nn.BatchNorm2d``'s own forward.
``compiled_batch_norms(module)`` swaps a network's ``nn.BatchNorm2d`` modules for it (parameters and buffers shared,
state-dict keys unchanged); the evaluation network does so when built, and the DARTS search cells for their input
preprocessing (the mixed edges' BatchNorms run fused with their ops instead: ``darts_lite.spaces.lean``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.autograd.forward_ad as _forward_ad
import torch.nn.functional as F
from torch import nn

from . import native
from .lean import _bn_arguments, _replayed

aten = torch.ops.aten


class _TrainingBatchNorm(torch.autograd.Function):
    """The training-mode BatchNorm of x with its affine parameters (or none: both None): darts_lite's kernels where
    they serve, else PyTorch's (``aten.native_batch_norm`` and its backward: what ``F.batch_norm`` runs on the CPU)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None, momentum: float,
                eps: float) -> torch.Tensor:
        computed = native.batch_norm(x, running_mean, running_var, momentum, eps, _detached(weight), _detached(bias))
        if computed is None:
            computed = aten.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        y, mean, invstd = computed
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, bias, mean, invstd = ctx.saved_tensors
        need = list(ctx.needs_input_grad[:3])
        if torch.is_grad_enabled():  # a graph of the backward pass is wanted (double backward): plain ops
            def plain(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
                return F.batch_norm(x, None, None, weight, bias, True, 0.0, ctx.eps)

            return (*_replayed(tuple(need), (x, weight, bias), grad, plain), None, None, None, None)
        computed = native.batch_norm_gradients(grad, x, mean, invstd, _detached(weight), need[0], need[1] or need[2])
        if computed is None:
            computed = aten.native_batch_norm_backward(grad, x, weight, None, None, mean, invstd, True, ctx.eps, need)
        dx, dweight, dbias = computed
        return (dx if need[0] else None, dweight if need[1] else None, dbias if need[2] else None,
                None, None, None, None)


def _detached(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()  # a Parameter is a subclass: the kernels read plain tensors


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode pass over a channels-last float32 CPU tensor, with or without affine
    parameters, runs darts_lite's compiled kernels (the same values bit for bit); otherwise ``nn.BatchNorm2d``'s
    forward."""

    def _kernel_serves(self, x: torch.Tensor) -> bool:
        return (self.training and x.dim() == 4 and native.batch_norm_takes(x)
                and all(native._vector(_detached(t), x.shape[1]) for t in (self.weight, self.bias))
                and _forward_ad._current_level < 0 and not torch.compiler.is_compiling()
                and not torch.jit.is_scripting())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._kernel_serves(x):
            return super().forward(x)
        self._check_input_dim(x)
        running_mean, running_var, momentum = _bn_arguments(self)
        return _TrainingBatchNorm.apply(x, self.weight, self.bias, running_mean, running_var, momentum, self.eps)


def compiled_batch_norms(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.BatchNorm2d`` in it (of that exact type) replaced by a ``BatchNorm2d`` that shares
    its parameters and buffers (the same state-dict keys and values); ``module`` itself where it is one."""
    if type(module) is nn.BatchNorm2d:
        swapped = BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, device=None)
        swapped.weight, swapped.bias = module.weight, module.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(swapped, name, getattr(module, name))
        swapped.train(module.training)
        return swapped
    for name, child in module.named_children():
        swapped = compiled_batch_norms(child)
        if swapped is not child:
            setattr(module, name, swapped)
    return module
