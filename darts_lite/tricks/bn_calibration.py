"""BatchNorm calibration: recompute a (sub)network's BatchNorm statistics on training batches before it is
measured, and the derived cell's validation accuracy inside the supernet that uses it.

A supernet's running statistics average over whatever ran during training: every op mixed (DARTS) or a
different sampled op per batch (GDAS). Measured with those statistics, one path through the supernet is
misjudged; with statistics recomputed for that path alone it is measured as it would run (Bag of Tricks for
NAS: BN calibration). ``calibrate_bn`` does this for any module; ``DerivedValidation`` logs
``val/acc_derived`` every epoch: each edge runs its most probable op (the argmax cell), BatchNorm
recalibrated on ``batches`` training batches, on the validation split. The supernet's own statistics, the
run's random streams and its training are left exactly as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ..relax import EdgeWeights
from ..spaces.supernet import tracking_batchnorms


@contextlib.contextmanager
def preserved_bn_statistics(module: nn.Module) -> Iterator[None]:
    """Restores every BatchNorm's running statistics (mean, var, batch count) on exit."""
    saved = [(bn, bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
             for bn in tracking_batchnorms(module)]
    try:
        yield
    finally:
        with torch.no_grad():
            for bn, mean, var, count in saved:
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                bn.num_batches_tracked.copy_(count)


def calibrate_bn(module: nn.Module, batches: Iterable[Any], k: int,
                 forward: Callable[[nn.Module, Any], Any] | None = None) -> int:
    """Reset the running statistics of every tracking BatchNorm in ``module`` and recompute them on the first
    ``k`` of ``batches``: afterwards running_mean is the mean over those batches of each batch's channel
    means, running_var the mean of each batch's unbiased channel variances (momentum None: an exact average,
    not an exponential one). Everything else runs in eval mode (no dropout, no drop path) without gradients;
    modes and momenta are restored. ``forward(module, batch)`` runs one batch (default: ``module(batch[0])``).
    Returns the number of batches used."""
    if k < 1:
        raise ValueError(f"BN calibration needs k >= 1 batches, got {k}")
    bns = tracking_batchnorms(module)
    modes = {m: m.training for m in module.modules()}
    momenta = {bn: bn.momentum for bn in bns}
    forward = forward or (lambda m, batch: m(batch[0]))
    used = 0
    try:
        module.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        with torch.no_grad():
            for batch in batches:
                forward(module, batch)
                used += 1
                if used == k:  # before the loader makes (and augments) one more
                    break
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for m, training in modes.items():
            m.train(training)
    if used == 0:
        raise ValueError("BN calibration got no batch: the loader is empty")
    return used


class _Argmax:
    """Each edge's most probable op, alone, with weight 1: the argmax cell (``none`` included where it wins)."""

    def __init__(self, tau: float | None):
        self.tau = tau  # kept for code that reads the relaxation's temperature

    def __call__(self, alphas: torch.Tensor) -> EdgeWeights:
        index = alphas.detach().argmax(dim=-1)
        weights = torch.zeros_like(alphas).scatter_(-1, index.unsqueeze(-1), 1.0)
        return EdgeWeights(weights, index.tolist())


@contextlib.contextmanager
def argmax_cells(net: nn.Module) -> Iterator[None]:
    """Within: the supernet ``net`` runs its argmax cells (each edge its most probable op)."""
    relaxation = net.relaxation
    net.relaxation = _Argmax(getattr(relaxation, "tau", None))
    try:
        yield
    finally:
        net.relaxation = relaxation


def derived_accuracy(net: nn.Module, train_batches: Iterable[Any], val_batches: Iterable[Any], k: int) -> float:
    """Validation accuracy of the argmax cells inside the supernet after BN calibration on ``k`` training
    batches; the supernet's statistics and modes are as before afterwards."""
    correct = total = 0
    with argmax_cells(net), preserved_bn_statistics(net):
        calibrate_bn(net, train_batches, k)
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                for x, y in val_batches:
                    correct += int((net(x).argmax(dim=-1) == y).sum())
                    total += len(y)
        finally:
            net.train(was_training)
    return correct / max(1, total)


class DerivedValidation(pl.Callback):
    """Logs ``val/acc_derived`` after every validation of a search (see the module docstring).

    batches: training batches (of the weight part) the BatchNorm statistics are recomputed on.
    """

    def __init__(self, batches: int = 10):
        if not isinstance(batches, int) or batches < 1:
            raise ValueError(f"search.bn_calibration={batches!r}: batches must be an integer >= 1 (0 = off)")
        self.batches = batches

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        dm = trainer.datamodule
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and module.device.type == "cuda" else []
        # the calibration batches draw augmentation from the run's generators: fork them, so a search with and
        # without this measure trains exactly the same
        with torch.random.fork_rng(devices=devices):
            train = ((x_w, y_w) for (x_w, y_w), _ in dm.train_dataloader())
            acc = derived_accuracy(module.net, train, dm.val_dataloader(), self.batches)
        module.log("val/acc_derived", acc, on_step=False, on_epoch=True, sync_dist=True)

