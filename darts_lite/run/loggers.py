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
from typing import Literal

import torch
from omegaconf import DictConfig, OmegaConf

from ..torchfiles import open_atomically, write_text_atomically
from .folder import FinalMetrics, is_rank_zero, saved_callback_state

log = logging.getLogger("darts_lite")


def _end_of_epoch_row(checkpoint: dict, kept: list[dict]) -> dict | None:
    """The checkpoint's epoch's end-of-epoch metrics row when metrics.csv lacks it, else None. Lightning writes the
    checkpoint of an epoch, then logs the epoch's aggregated metrics: a run killed between the two would lose that row
    for good, since the resumed run starts with the next epoch. The checkpoint carries the metrics (``FinalMetrics``)."""
    final = saved_callback_state(checkpoint, FinalMetrics)
    metrics, step = final.get("metrics"), final.get("log_step")
    if not isinstance(metrics, dict) or not isinstance(step, int) or isinstance(step, bool):
        return None  # a checkpoint without them (an older darts_lite's): nothing to add
    epoch = checkpoint["epoch"]
    rows = [row for row in kept if int(row["epoch"]) == epoch]
    missing = {str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and not any(row.get(str(k)) not in (None, "") for row in rows)}
    return {"epoch": epoch, "step": step, **missing} if missing else None


def csv_logger(run_config: dict | None = None, out_dir: Path = Path("."), resume_from: str | None = None):
    """metrics.csv in the run folder; a resumed run keeps the rows of the epochs its checkpoint holds."""
    from pytorch_lightning.loggers import CSVLogger

    metrics = out_dir / "metrics.csv"
    kept, header = [], []
    # only rank 0 owns the file: other DDP ranks deleting and rewriting it would race with it
    if resume_from and metrics.is_file() and is_rank_zero():
        checkpoint = torch.load(resume_from, map_location="cpu", weights_only=True)
        last_epoch = checkpoint["epoch"]
        with open(metrics, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            kept = [row for row in reader if row.get("epoch") and int(row["epoch"]) <= last_epoch]
        row = _end_of_epoch_row(checkpoint, kept)
        if row:
            kept.append(row)
            header = sorted(set(header) | set(row))  # Lightning's writer keeps its columns sorted
        metrics.unlink()
    # written through at every log call: rows of an epoch are on disk before a kill can take them
    logger = CSVLogger(save_dir=str(out_dir), name="", version="", flush_logs_every_n_steps=1)
    if not is_rank_zero():
        # Lightning's own rank check is the local rank until the Trainer sets up: on a second node's first
        # process, creating the writer now would clear rank 0's metrics.csv
        return logger
    writer = logger.experiment  # created now: it clears an existing metrics.csv, so write the kept rows after
    if kept:
        with open_atomically(metrics) as f:
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


def _wandb_name_and_group(out_dir: Path) -> tuple[str, str | None]:
    """The run's W&B name and group when logger.wandb gives none: a multirun is one W&B group (its sweep folder) and
    each job is named after its folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    name, group = out_dir.name, None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        group = Path(HydraConfig.get().sweep.dir).name
        name = f"{group}/{out_dir.name}"
    return name, group


def wandb_run_id(out_dir: Path, resuming: bool) -> str | None:
    """The W&B run id, kept in the run folder so that resume=true continues the same W&B run."""
    id_file = out_dir / "wandb_run_id.txt"
    if resuming and id_file.is_file():
        return id_file.read_text().strip()
    if not is_rank_zero():
        return None  # only rank 0 ever starts a W&B run (WandbLogger.experiment is rank-zero only)
    # W&B's own form (8 of [a-z0-9]); wandb.util.generate_id, which made it, is gone from recent wandb
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    write_text_atomically(id_file, run_id + "\n")
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


# what darts_lite gives every logger of the logger group itself: the run's resolved config (a plain dict), its folder,
# the checkpoint it resumes from
LOGGER_GIVEN = ("run_config", "out_dir", "resume_from")


def make_loggers(cfg: DictConfig, out_dir: Path, resume_from: str | None = None) -> list:
    """The loggers of the logger group: each key one logger (``_target_`` and its arguments), ``null`` for none."""
    from ..schema import build

    nodes = cfg.get("logger") or {}
    config = OmegaConf.to_container(cfg, resolve=True)
    return [build(node, f"logger.{name}", run_config=config, out_dir=out_dir, resume_from=resume_from)
            for name, node in nodes.items() if node is not None]


def wandb_logger(run_config: dict, out_dir: Path, resume_from: str | None = None, project: str = "darts_lite",
                 entity: str | None = None, mode: Literal["online", "offline", "disabled"] | None = None,
                 name: str | None = None, group: str | None = None, tags: list[str] | None = None):
    """A WandbLogger (offline without credentials) whose run is the run folder's: resume_from set, the W&B run of the
    run folder continues. ``name`` and ``group``: None for the run folder's name and, in a multirun, the sweep's."""
    from pytorch_lightning.loggers import WandbLogger

    # never block on a login prompt: without credentials the run is recorded offline
    mode = mode or os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
    if mode == "offline" and is_rank_zero():
        log.info("W&B offline: sync later with `wandb sync %s/wandb/offline-run-*`", out_dir)
    default_name, default_group = _wandb_name_and_group(out_dir)
    tags = [*(tags or []), str(run_config.get("task", "")), str((run_config.get("search") or {}).get("method", ""))]
    # resume="allow": a new id starts a run, the id of a resumed run folder continues its W&B run
    return WandbLogger(
        project=project, entity=entity, save_dir=str(out_dir), mode=mode, tags=[t for t in tags if t],
        name=name or default_name, group=group or default_group, config=run_config,
        id=wandb_run_id(out_dir, resuming=resume_from is not None), resume="allow",
    )


def _wandb_logger(cfg: DictConfig, out_dir: Path, resuming: bool):
    """The WandbLogger ``logger=wandb`` asks for, or None."""
    node = (cfg.get("logger") or {}).get("wandb")
    if not node:
        return None
    from ..schema import build

    return build(node, "logger.wandb", run_config=OmegaConf.to_container(cfg, resolve=True), out_dir=out_dir,
                 resume_from="resumed" if resuming else None)


def wandb_experiment(cfg: DictConfig, out_dir: Path, resuming: bool = False):
    """The W&B run of a task without a Trainer (a study, an evolution), or None without ``logger=wandb``;
    end it with ``wandb_run_ends_with_the_job``."""
    logger = _wandb_logger(cfg, out_dir, resuming)
    return None if logger is None else logger.experiment
