"""FLOPs and latency of a module: the one place darts_lite counts and times a forward pass.

Units, for every figure the package reports:
    FLOPs               as torch counts them (``torch.utils.flop_counter.FlopCounterMode``): 2 per multiply-add of
                        convolutions and matrix products; BatchNorm, activations, pooling and additions count 0.
                        `count_flops` returns this integer for one image.
    M multiply-adds     what NAS papers and the configs call FLOPs (search.resource=flops, ofa.constraint.flops):
                        FLOPs / 2e6 (`million_multiply_adds`).
    latency             milliseconds of one forward of the given input shape (batch included), eval mode, no
                        gradient: the median of ``repeats`` timed runs after ``warmup`` untimed ones, CUDA
                        synchronised around each run on a GPU (`latency_ms`). Only comparable on one machine
                        (`this_machine`), which is why latency tables record it.

Every count and timing runs the module in eval mode without gradients and leaves its training mode as it was.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "counted_forward", "latency_ms", "million_multiply_adds", "module_device", "this_machine"]


def module_device(module: nn.Module) -> torch.device:
    """Where ``module``'s parameters are; the CPU for a module without parameters."""
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def counted_forward(module: nn.Module, x: torch.Tensor, forward: Callable[[torch.Tensor], Any] | None = None
                    ) -> tuple[int, Any]:
    """(FLOPs, output) of one eval-mode forward of ``x`` without gradients. forward: what to call instead of
    ``module`` itself (e.g. ``net.forward``, so a compiled network is not compiled again for this shape)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = (forward or module)(x)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops()), out


def count_flops(module: nn.Module, input_shape: tuple[int, ...], images: int = 1) -> int:
    """FLOPs of one image of ``input_shape`` (C, H, W) through ``module``, counted on ``images`` zero images at
    once on the module's device. More than one image lets BatchNorms without running statistics (search cells)
    run; torch counts every op in proportion to the batch, so the count per image does not depend on it."""
    flops, _ = counted_forward(module, torch.zeros(images, *input_shape, device=module_device(module)))
    return flops // images


def million_multiply_adds(flops: int, images: int = 1) -> float:
    """Millions of multiply-adds per image of a FLOP count over ``images`` images."""
    return flops / (2e6 * images)


def latency_ms(module: nn.Module, input_shape: tuple[int, ...], repeats: int = 10, warmup: int = 3,
               device: torch.device | None = None) -> float:
    """Median milliseconds of one forward of ``module`` on an input of ``input_shape`` (batch included), after
    ``warmup`` untimed runs. device: where it runs (default: where its parameters are). The input comes from a
    private generator, so the caller's random streams do not move."""
    device = device or module_device(module)
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = module.training
    module.eval()
    times = []
    try:
        with torch.no_grad():
            for k in range(warmup + repeats):
                # CUDA runs asynchronously: without a barrier on both sides the clock would time the launch only
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                module(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if k >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        module.train(was_training)
    return 1e3 * statistics.median(times)


def this_machine() -> dict[str, Any]:
    """What a latency depends on besides the module: the host, its processor, torch and its thread count."""
    return {"node": platform.node(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
