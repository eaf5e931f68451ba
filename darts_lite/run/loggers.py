"""The loggers of a run: metrics.csv, kept across a resume, and Weights & Biases beside it when configured.

W&B never waits on a login prompt: without credentials it records offline in the run folder. Its run id
is kept in ``wandb_run_id.txt``, so ``resume=true`` continues the same W&B run.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import netrc
import os
import secrets
import string
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .folder import is_rank_zero

log = logging.getLogger("darts_lite")


def csv_logger(out_dir: Path, resume_from: str | None):
    """metrics.csv in the run folder; a resumed run keeps the rows of the epochs its checkpoint holds."""
    from pytorch_lightning.loggers import CSVLogger

    metrics = out_dir / "metrics.csv"
    kept, header = [], []
    # only rank 0 owns the file: other DDP ranks deleting and rewriting it would race with it
    if resume_from and metrics.is_file() and is_rank_zero():
        last_epoch = torch.load(resume_from, map_location="cpu", weights_only=True)["epoch"]
        with open(metrics, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            kept = [row for row in reader if row.get("epoch") and int(row["epoch"]) <= last_epoch]
        metrics.unlink()
    # written through at every log call: rows of an epoch are on disk before a kill can take them
    logger = CSVLogger(save_dir=str(out_dir), name="", version="", flush_logs_every_n_steps=1)
    if not is_rank_zero():
        # Lightning's own rank check is the local rank until the Trainer sets up: on a second node's first
        # process, creating the writer now would clear rank 0's metrics.csv
        return logger
    writer = logger.experiment  # created now: it clears an existing metrics.csv, so write the kept rows after
    if kept:
        with open(metrics, "w", newline="") as f:
            csv_writer = csv.DictWriter(f, fieldnames=header)
            csv_writer.writeheader()
            csv_writer.writerows(kept)
        writer.metrics_keys = sorted(header)  # append under the same columns
    return logger


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _wandb_name_and_group(out_dir: Path, wb: DictConfig) -> tuple[str, str | None]:
    """logger.wandb.name/group when set; else a multirun is one W&B group (its sweep folder) and each job
    is named after its folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    name, group = out_dir.name, None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        group = Path(HydraConfig.get().sweep.dir).name
        name = f"{group}/{out_dir.name}"
    return wb.get("name") or name, wb.get("group") or group


def wandb_run_id(out_dir: Path, resuming: bool) -> str | None:
    """The W&B run id, kept in the run folder so that resume=true continues the same W&B run."""
    id_file = out_dir / "wandb_run_id.txt"
    if resuming and id_file.is_file():
        return id_file.read_text().strip()
    if not is_rank_zero():
        return None  # only rank 0 ever starts a W&B run (WandbLogger.experiment is rank-zero only)
    # W&B's own form (8 of [a-z0-9]); wandb.util.generate_id, which made it, is gone from recent wandb
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    id_file.write_text(run_id + "\n")
    return run_id


@contextlib.contextmanager
def wandb_run_ends_with_the_job() -> Iterator[None]:
    """Finishes the W&B run when the job ends, marked failed if it raised: WandbLogger reuses a live
    ``wandb.run``, so the next job of an in-process multirun would otherwise log into this one."""
    try:
        yield
    except Exception:
        _finish_wandb(exit_code=1)
        raise
    _finish_wandb(exit_code=0)


def _finish_wandb(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")  # not imported: no W&B run to end
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def make_loggers(cfg: DictConfig, out_dir: Path, resume_from: str | None = None) -> list:
    """The loggers ``cfg.logger`` asks for: CSV (default on) and W&B (``logger=wandb``)."""
    loggers: list = []
    if cfg.logger.get("csv", True):
        loggers.append(csv_logger(out_dir, resume_from))
    wandb_logger = _wandb_logger(cfg, out_dir, resuming=resume_from is not None)
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    return loggers


def _wandb_logger(cfg: DictConfig, out_dir: Path, resuming: bool):
    """The WandbLogger ``logger=wandb`` asks for (offline without credentials), or None."""
    wb = cfg.logger.get("wandb")
    if not wb:
        return None
    from pytorch_lightning.loggers import WandbLogger

    # never block on a login prompt: without credentials the run is recorded offline
    mode = wb.get("mode") or os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
    if mode == "offline" and is_rank_zero():
        log.info("W&B offline: sync later with `wandb sync %s/wandb/offline-run-*`", out_dir)
    name, group = _wandb_name_and_group(out_dir, wb)
    tags = [*(wb.get("tags") or []), cfg.task, str(OmegaConf.select(cfg, "search.method", default=""))]
    # resume="allow": a new id starts a run, the id of a resumed run folder continues its W&B run
    return WandbLogger(
        project=wb.get("project", "darts_lite"), entity=wb.get("entity"), save_dir=str(out_dir), mode=mode,
        tags=[t for t in tags if t], name=name, group=group, config=OmegaConf.to_container(cfg, resolve=True),
        id=wandb_run_id(out_dir, resuming=resuming), resume="allow",
    )


def wandb_experiment(cfg: DictConfig, out_dir: Path, resuming: bool = False):
    """The W&B run of a task without a Trainer (a study, an evolution), or None without ``logger=wandb``;
    end it with ``wandb_run_ends_with_the_job``."""
    logger = _wandb_logger(cfg, out_dir, resuming)
    return None if logger is None else logger.experiment
