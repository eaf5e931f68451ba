"""The cosine learning-rate schedule of both Lightning modules, re-based when a run resumes under other settings."""

from __future__ import annotations

import math
from typing import Any

import torch


def cosine_lr(lr: float, lr_min: float, epoch: int, epochs: int) -> float:
    """The rate of a cosine schedule from ``lr`` to ``lr_min`` over ``epochs`` at ``epoch``."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def rebase_cosine(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.CosineAnnealingLR,
                  saved: dict[str, Any], lr: float, lr_min: float, epochs: int) -> str | None:
    """A run resumed with another ``lr``, ``lr_min`` or ``epochs`` than its checkpoint's (``saved``, its hyper-
    parameters): the restored optimizer and schedule would keep the old ones (and a cosine past its end rises
    again), so set the new ones at the epoch reached. Returns what changed, or None (the state left exactly as
    it was restored)."""
    old = (saved.get("lr"), saved.get("lr_min"), saved.get("epochs"))
    if old == (lr, lr_min, epochs):
        return None
    scheduler.base_lrs, scheduler.eta_min, scheduler.T_max = [lr] * len(optimizer.param_groups), lr_min, epochs
    now = cosine_lr(lr, lr_min, scheduler.last_epoch, epochs)
    for group in optimizer.param_groups:
        group["initial_lr"], group["lr"] = lr, now
    return f"weight lr {old[0]} -> {lr}, cosine to {lr_min} over {epochs} epochs (was {old[1]} over {old[2]}): {now:.4g} now"
