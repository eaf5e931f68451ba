"""Exact resume, for every LightningModule of darts_lite: the random streams a run draws from and its learning-rate
schedules, saved into every checkpoint and restored (or re-based) when a run continues.

``Resumable`` is a mixin for a LightningModule. It puts ``rng_states()`` (torch, numpy, Python, CUDA) into each
checkpoint and restores them when training starts (after the Trainer's own set-up, which draws nothing the run
should see), so a run killed after epoch k and resumed draws what the uninterrupted run drew: drop path, Gumbel
samples, augmentation, cutout, sampled sub-networks. When the run continues under other learning rates or another
length than its checkpoint's, ``rebase_schedules`` sets the new ones at the epoch reached (the restored optimisers
and cosine schedule would keep the old ones, and a cosine past its end rises again); unchanged settings leave the
restored state exactly as it was. Subclasses with more than one schedule override ``rebase_schedules``.

What a checkpoint must share with the run that continues from it (the settings that shape the network, the data
or the algorithm) is checked before anything is built, in ``darts_lite.run.checkpoints``.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch

__all__ = ["Resumable", "cosine_lr", "rebase_cosine", "rng_states", "set_rng_states"]


# ---- random number generators -------------------------------------------------------------------------------
def rng_states() -> dict[str, Any]:
    """Every RNG a run draws from, as tensors and plain values (loadable with weights_only=True)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        # this process's device only: under DDP rank 0 writes the checkpoint and every rank reads it,
        # and the ranks' streams are the same (same seed, same draws), so each restores it to its own device
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        cuda = states["cuda"]
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, (list, tuple)) else cuda)


# ---- schedules ---------------------------------------------------------------------------------------------------
def cosine_lr(lr: float, lr_min: float, epoch: int, epochs: int) -> float:
    """The rate of a cosine schedule from ``lr`` to ``lr_min`` over ``epochs`` at ``epoch``."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def rebase_cosine(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.CosineAnnealingLR,
                  saved: dict[str, Any], lr: float, lr_min: float, epochs: int) -> str | None:
    """A run resumed with another ``lr``, ``lr_min`` or ``epochs`` than its checkpoint's (``saved``, its hyper-
    parameters): set the new ones at the epoch reached. Returns what changed, or None (the state left exactly as
    it was restored)."""
    old = (saved.get("lr"), saved.get("lr_min"), saved.get("epochs"))
    if old == (lr, lr_min, epochs):
        return None
    scheduler.base_lrs, scheduler.eta_min, scheduler.T_max = [lr] * len(optimizer.param_groups), lr_min, epochs
    now = cosine_lr(lr, lr_min, scheduler.last_epoch, epochs)
    for group in optimizer.param_groups:
        group["initial_lr"], group["lr"] = lr, now
    return f"weight lr {old[0]} -> {lr}, cosine to {lr_min} over {epochs} epochs (was {old[1]} over {old[2]}): {now:.4g} now"


# ---- the mixin -------------------------------------------------------------------------------------------------
class Resumable:
    """For a LightningModule whose first optimiser follows a cosine schedule from ``hparams.lr`` to ``hparams.lr_min``
    over ``hparams.epochs`` (see the module docstring). Mix it in before ``pl.LightningModule``; a subclass that
    defines these hooks itself calls ``super()``."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # applied when training starts, so nothing drawn while the trainer sets up shifts the streams
        self._pending_rng = checkpoint.get("rng_states")
        self._checkpoint_hparams = dict(checkpoint.get("hyper_parameters") or {})

    def on_train_start(self) -> None:
        pending, self._pending_rng = getattr(self, "_pending_rng", None), None
        if pending is not None:
            set_rng_states(pending)
        saved, self._checkpoint_hparams = getattr(self, "_checkpoint_hparams", None), None
        if saved:
            changed = self.rebase_schedules(saved)
            if changed:
                from pytorch_lightning.utilities.rank_zero import rank_zero_info

                rank_zero_info("resumed with a new schedule: " + "; ".join(changed))

    def rebase_schedules(self, saved: dict[str, Any]) -> list[str]:
        """Set the learning rates and schedule lengths the run has now where they differ from the checkpoint's
        hyper-parameters ``saved``; returns what changed (nothing: the restored state stays exactly as it was)."""
        optimizers, schedulers = self.optimizers(), self.lr_schedulers()
        first = optimizers[0] if isinstance(optimizers, (list, tuple)) else optimizers
        schedule = schedulers[0] if isinstance(schedulers, (list, tuple)) else schedulers
        hp = self.hparams
        changed = rebase_cosine(first.optimizer, schedule, saved, hp.lr, hp.lr_min, hp.epochs)
        return [changed] if changed else []
