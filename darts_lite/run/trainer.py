"""The Lightning Trainer of a run: the config's trainer keys, the run's loggers, last.ckpt every epoch."""

from __future__ import annotations

import warnings
from pathlib import Path

import hydra.utils
import pytorch_lightning as pl
from omegaconf import DictConfig

from .checkpoints import AtomicCheckpointIO, RunRecord, run_record
from .folder import FinalMetrics
from .loggers import make_loggers


def build_trainer(cfg: DictConfig, out_dir: Path, callbacks: list, resume_from: str | None = None,
                  max_epochs: int | None = None) -> pl.Trainer:
    """The trainer group's Trainer (``_target_`` and its arguments; a strategy given as a node is built), writing into
    ``out_dir``: loggers from ``cfg.logger``, ``checkpoints/last.ckpt`` replaced atomically at the end of every epoch
    and stamped with the run's record, the task's epochs (``max_epochs``)."""
    # written when the epoch is over (after validation and every end-of-epoch hook), so that it holds the epoch's
    # metrics as the run reports them
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=out_dir / "checkpoints", filename="last", save_top_k=1, enable_version_counter=False,
        save_on_train_epoch_end=True,
    )
    with warnings.catch_warnings():
        # the CSV file sits in the run folder beside Hydra's files on purpose
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        return hydra.utils.instantiate(
            cfg.trainer,
            max_epochs=max_epochs,
            logger=make_loggers(cfg, out_dir, resume_from) or False,
            callbacks=[checkpoint, RunRecord(run_record(cfg)), FinalMetrics(), *callbacks],
            plugins=[AtomicCheckpointIO()],
            default_root_dir=str(out_dir),
            use_distributed_sampler=False,
            _convert_="all",
        )
