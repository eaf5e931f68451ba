"""The run folder: created with the resolved config, written by rank 0 only, summarised in summary.json."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from ..torchfiles import write_text_atomically


def is_rank_zero() -> bool:
    """Whether this process is global rank 0, also before the Trainer exists.

    DDP launchers set RANK, LOCAL_RANK or SLURM_PROCID in each process's environment, and Lightning reads
    them into ``rank_zero_only.rank`` when it is imported (the Trainer later sets the true global rank).
    Lightning's own launcher on a second node sets only LOCAL_RANK and NODE_RANK, so the node counts too.
    """
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    node = int(os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK") or 0)
    return getattr(rank_zero_only, "rank", 0) == 0 and ("RANK" in os.environ or node == 0)


def start_run(cfg: DictConfig) -> Path:
    """Create the run folder, write the resolved config.yaml into it (rank 0) and seed every generator."""
    out_dir = Path(cfg.run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():  # DDP re-runs this command once per extra rank, into the same folder
        write_text_atomically(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return out_dir


class WallClock(pl.Callback):
    """Wall time of the whole run. It travels in the checkpoint, so a resumed run counts the time before its resume."""

    def __init__(self) -> None:
        self.before_s, self.started = 0.0, time.time()

    def elapsed_s(self) -> float:
        return self.before_s + time.time() - self.started

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": self.elapsed_s()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before_s = float(state_dict["elapsed_s"])


def _scalars(metrics: Any) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) and v.numel() == 1}


def saved_callback_state(checkpoint: Any, callback: type[pl.Callback]) -> dict[str, Any]:
    """The state ``callback`` (a callback class, e.g. ``FinalMetrics``, ``WallClock``) saved into ``checkpoint`` (a
    loaded checkpoint dict), or {} when there is none (a checkpoint of an older darts_lite, or a damaged one)."""
    callbacks = checkpoint.get("callbacks") if isinstance(checkpoint, dict) else None
    state = callbacks.get(callback.__qualname__) if isinstance(callbacks, dict) else None  # Lightning's state key
    return state if isinstance(state, dict) else {}


class FinalMetrics(pl.Callback):
    """The run's scalar metrics as they were when its checkpoint was written, carried in the checkpoint: a run killed
    after its last epoch's checkpoint, before its summary, has no epoch left to run when it resumes, and reports
    these (what the uninterrupted run reported) rather than nothing. Lightning writes a checkpoint before it logs the
    epoch's end-of-epoch metrics; a run killed between the two gets that row back from here on resume."""

    def __init__(self) -> None:
        self.trainer: pl.Trainer | None = None
        self.saved: dict[str, float] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        if self.trainer is None:
            return {"metrics": {}}
        # the step the loggers give the epoch's end-of-epoch row, logged just after the checkpoint is written: a run
        # killed in between restores that row from here (darts_lite.run.loggers.csv_logger)
        step = getattr(self.trainer.fit_loop.epoch_loop, "_batches_that_stepped", None)
        state: dict[str, Any] = {"metrics": _scalars(self.trainer.callback_metrics)}
        if isinstance(step, int):
            state["log_step"] = step - 1
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.saved = {str(k): float(v) for k, v in state_dict.get("metrics", {}).items()}


def final_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The scalar metrics the Trainer holds at the end of the run, as floats; for a resumed run that had no epoch
    left to run, those its checkpoint carries (``FinalMetrics``)."""
    metrics = _scalars(trainer.callback_metrics)
    if not metrics:
        metrics = next((dict(c.saved) for c in trainer.callbacks if isinstance(c, FinalMetrics)), {})
    return metrics


def write_summary(trainer: pl.Trainer, out_dir: Path, summary: dict[str, Any]) -> bool:
    """summary.json in the run folder, written by global rank 0; returns whether this process wrote it."""
    if not trainer.is_global_zero:
        return False
    write_text_atomically(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return True
