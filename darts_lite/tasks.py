"""What `python -m darts_lite` runs: a search from a composed config, and the files it leaves.

A search run folder holds:
    config.yaml            the resolved config
    genotype.json          the final genotype (Genotype.parse reads it back)
    genotype.txt           the same in the DARTS text format
    genotype_history.jsonl the genotype and op probabilities after every epoch
    normal.dot/.png, reduction.dot/.png   cell pictures (PNG when graphviz's `dot` is installed)
    alphas.pt              the final alphas {"normal": [E, O], "reduce": [E, O]}
    metrics.csv            every logged metric, per epoch
    summary.json           the final genotype, metrics and wall time (a failed job of a sweep: its error)
    wandb_run_id.txt       with logger=wandb: the W&B run that resume=true continues
    checkpoints/last.ckpt  the full training state, rewritten every epoch
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import netrc
import os
import secrets
import string
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra.utils
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.plugins.io import TorchCheckpointIO

from .config import validate_search, validate_train
from .data import SearchDataModule, TrainDataModule
from .search import SearchModule
from .train import TrainModule, count_flops, resolve_genotype
from .viz import alpha_heatmap_svg, cell_dot, dot_to_svg, edge_labels, fixed_reduction_dot, write_cell_pictures

log = logging.getLogger("darts_lite")

_DATA_KEYS = (
    "name", "root", "batch_size", "eval_batch_size", "split", "sample_ratio", "resolution", "crop_padding",
    "flip", "download", "synthetic_samples", "synthetic_classes", "synthetic_size", "synthetic_channels", "val_on",
)
_SEARCH_KEYS = (
    "order", "epochs", "warmup_epochs", "lr", "lr_min", "momentum", "weight_decay", "grad_clip", "arch_lr",
    "arch_betas", "arch_weight_decay", "tau_max", "tau_min", "unrolled_eps", "hvp", "channels_last", "compile",
)


def build_datamodule(cfg: DictConfig) -> SearchDataModule:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    kwargs = {k: data[k] for k in _DATA_KEYS if k in data}
    if cfg.task == "train":
        return TrainDataModule(seed=cfg.seed, cutout=cfg.train.cutout, **kwargs)
    return SearchDataModule(seed=cfg.seed, **kwargs)


def build_search_module(cfg: DictConfig, dm: SearchDataModule) -> SearchModule:
    space = OmegaConf.to_container(cfg.space, resolve=True)
    network = dict(space, relaxation=cfg.search.relaxation, in_channels=dm.in_channels, num_classes=dm.num_classes)
    search = OmegaConf.to_container(cfg.search, resolve=True)
    return SearchModule(network=network, **{k: search[k] for k in _SEARCH_KEYS})


class SearchArtifacts(pl.Callback):
    """Writes the genotype after every epoch and the final files of a search into ``out_dir``."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)

    def on_train_start(self, trainer: pl.Trainer, module: SearchModule) -> None:
        # a resumed run repeats the epochs after its checkpoint: drop what a killed run wrote for them
        history = self.out_dir / "genotype_history.jsonl"
        if trainer.is_global_zero and history.is_file():
            kept = [line for line in history.read_text().splitlines()
                    if line and json.loads(line)["epoch"] < trainer.current_epoch]
            history.write_text("".join(line + "\n" for line in kept))

    def on_train_epoch_end(self, trainer: pl.Trainer, module: SearchModule) -> None:
        if not trainer.is_global_zero:
            return
        genotype = module.net.genotype()
        probs = {cell: p.tolist() for cell, p in module.net.op_probabilities().items()}
        record = {"epoch": trainer.current_epoch, "genotype": genotype.to_text(), "probs": probs}
        if module.net.tau is not None:
            record["tau"] = module.net.tau
        with open(self.out_dir / "genotype_history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        log.info("epoch %d genotype: %s", trainer.current_epoch, genotype.to_text())

    def on_fit_end(self, trainer: pl.Trainer, module: SearchModule) -> None:
        if trainer.is_global_zero:
            write_search_outputs(module, self.out_dir)


class WandbDashboard(pl.Callback):
    """Per epoch: op-probability heatmaps and cell pictures on the W&B run; at the end the genotype artifact."""

    def __init__(self, logger: Any, out_dir: Path):
        self.logger, self.out_dir = logger, Path(out_dir)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: SearchModule) -> None:
        if not trainer.is_global_zero:
            return
        import wandb

        net, genotype = module.net, module.net.genotype()
        payload: dict[str, Any] = {"trainer/global_step": trainer.global_step, "epoch": trainer.current_epoch}
        for cell, probs in net.op_probabilities().items():
            svg = alpha_heatmap_svg(probs, edge_labels(net.steps), list(net.primitives),
                                    f"{cell} cell, epoch {trainer.current_epoch}")
            payload[f"alphas/{cell}"] = wandb.Html(svg, inject=False)
        reduction = (fixed_reduction_dot("reduction cell (fixed)") if genotype.fixed_reduction
                     else cell_dot(genotype.reduce, genotype.reduce_concat, "reduction cell"))
        for name, source in (("normal", cell_dot(genotype.normal, genotype.normal_concat, "normal cell")),
                             ("reduction", reduction)):
            svg = dot_to_svg(source)
            if svg is not None:
                payload[f"cells/{name}"] = wandb.Html(svg, inject=False)
        payload["genotype"] = genotype.to_text()
        self.logger.experiment.log(payload)

    def on_fit_end(self, trainer: pl.Trainer, module: SearchModule) -> None:
        if not trainer.is_global_zero:
            return
        import wandb

        artifact = wandb.Artifact(f"genotype-{self.logger.experiment.id}", type="genotype",
                                  metadata={"genotype": module.net.genotype().to_text()})
        for name in ("genotype.json", "genotype.txt", "normal.dot", "reduction.dot", "alphas.pt"):
            if (self.out_dir / name).is_file():
                artifact.add_file(str(self.out_dir / name))
        self.logger.experiment.log_artifact(artifact)


def write_search_outputs(module: SearchModule, out_dir: Path) -> dict[str, Path]:
    net = module.net
    genotype = net.genotype()
    files = {"genotype.json": out_dir / "genotype.json", "genotype.txt": out_dir / "genotype.txt"}
    files["genotype.json"].write_text(genotype.to_json() + "\n")
    files["genotype.txt"].write_text(genotype.to_text() + "\n")
    probs = net.op_probabilities()
    torch.save({cell: p.cpu() for cell, p in probs.items()}, out_dir / "alphas.pt")
    files["alphas.pt"] = out_dir / "alphas.pt"
    for cell, p in probs.items():
        path = out_dir / f"alphas_{cell}.svg"
        path.write_text(alpha_heatmap_svg(p, edge_labels(net.steps), list(net.primitives), f"{cell} cell: softmax(alpha)"))
        files[path.name] = path
    pictures = write_cell_pictures(genotype, out_dir)
    for path in [*pictures["dot"], *pictures["rendered"]]:
        files[path.name] = path
    return files


def is_rank_zero() -> bool:
    """Whether this process is global rank 0, also before the Trainer exists.

    DDP launchers set RANK, LOCAL_RANK or SLURM_PROCID in each process's environment, and Lightning reads
    them into ``rank_zero_only.rank`` when it is imported (the Trainer later sets the true global rank).
    Lightning's own launcher on a second node sets only LOCAL_RANK and NODE_RANK, so the node counts too.
    """
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    node = int(os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK") or 0)
    return getattr(rank_zero_only, "rank", 0) == 0 and ("RANK" in os.environ or node == 0)


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


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _csv_logger(out_dir: Path, resume_from: str | None):
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


def _wandb_run_id(out_dir: Path, resuming: bool) -> str | None:
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
def _wandb_run_ends_with_the_job() -> Iterator[None]:
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


def _loggers(cfg: DictConfig, out_dir: Path, resume_from: str | None = None) -> list:
    loggers: list = []
    if cfg.logger.get("csv", True):
        loggers.append(_csv_logger(out_dir, resume_from))
    wb = cfg.logger.get("wandb")
    if wb:
        from pytorch_lightning.loggers import WandbLogger

        # never block on a login prompt: without credentials the run is recorded offline
        mode = wb.get("mode") or os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
        if mode == "offline" and is_rank_zero():
            log.info("W&B offline: sync later with `wandb sync %s/wandb/offline-run-*`", out_dir)
        name, group = _wandb_name_and_group(out_dir, wb)
        tags = [*(wb.get("tags") or []), cfg.task, str(OmegaConf.select(cfg, "search.algorithm", default=""))]
        # resume="allow": a new id starts a run, the id of a resumed run folder continues its W&B run
        loggers.append(WandbLogger(
            project=wb.get("project", "darts_lite"), entity=wb.get("entity"), save_dir=str(out_dir), mode=mode,
            tags=[t for t in tags if t], name=name, group=group, config=OmegaConf.to_container(cfg, resolve=True),
            id=_wandb_run_id(out_dir, resuming=resume_from is not None), resume="allow",
        ))
    return loggers


def _start(cfg: DictConfig) -> Path:
    out_dir = Path(cfg.run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():  # DDP re-runs this command once per extra rank, into the same folder
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return out_dir


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its final name, then renames: a kill mid-write leaves the old one whole."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            with open(tmp, "rb") as f:  # on disk before the rename, so a machine crash cannot leave it empty
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        if os.name == "posix":  # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def resume_checkpoint(cfg: DictConfig, out_dir: Path) -> str | None:
    """The checkpoint to continue from: ckpt_path, or with resume=true the run folder's last.ckpt."""
    from .config import ConfigError

    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint file")
        return str(path)
    if cfg.get("resume"):
        last = out_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(
                f"resume=true: no checkpoint at {last}; pass the run folder to continue, e.g. "
                "`python -m darts_lite <same overrides> resume=true hydra.run.dir=runs/search/<run>`"
            )
        return str(last)
    return None


def _trainer(cfg: DictConfig, out_dir: Path, callbacks: list, resume_from: str | None = None) -> pl.Trainer:
    # one file, last.ckpt, replaced (atomically) at the end of every epoch
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=out_dir / "checkpoints", filename="last", save_top_k=1, enable_version_counter=False
    )
    with warnings.catch_warnings():
        # the CSV file sits in the run folder beside Hydra's files on purpose
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
        if isinstance(kwargs.get("strategy"), dict):  # e.g. trainer=ddp: a strategy object with options
            kwargs["strategy"] = hydra.utils.instantiate(kwargs["strategy"])
        return pl.Trainer(
            **kwargs,
            logger=_loggers(cfg, out_dir, resume_from) or False,
            callbacks=[checkpoint, *callbacks],
            plugins=[AtomicCheckpointIO()],
            default_root_dir=str(out_dir),
            use_distributed_sampler=False,
        )


def _final_metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}


def run_search(cfg: DictConfig) -> dict[str, Any]:
    """Validate ``cfg``, search, write the run folder; returns a summary (genotype, metrics, files)."""
    validate_search(cfg)
    out_dir = _start(cfg)
    ckpt = resume_checkpoint(cfg, out_dir)
    dm = build_datamodule(cfg)
    module = build_search_module(cfg, dm)
    clock = WallClock()
    trainer = _trainer(cfg, out_dir, [SearchArtifacts(out_dir), clock], ckpt)
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            trainer.callbacks.append(WandbDashboard(logger, out_dir))
    with _wandb_run_ends_with_the_job():
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        return _search_summary(trainer, module, out_dir, clock)


def _search_summary(trainer: pl.Trainer, module: SearchModule, out_dir: Path, clock: WallClock) -> dict[str, Any]:
    metrics = _final_metrics(trainer)
    genotype = module.net.genotype()
    summary = {"task": "search", "status": "done", "genotype": genotype.to_text(), "metrics": metrics,
               "run_dir": str(out_dir), "wall_time_s": clock.elapsed_s()}
    if trainer.is_global_zero:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nGenotype: {genotype.to_text()}")
        shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("val/", "search/train", "search/arch_acc"))}
        print(f"Final metrics: {shown}")
        print(f"Run folder: {out_dir.resolve()}  (genotype.json, genotype.txt, normal/reduction pictures, "
              "metrics.csv, checkpoints/last.ckpt)")
        sys.stdout.flush()
    return summary


_TRAIN_KEYS = ("epochs", "lr", "lr_min", "momentum", "weight_decay", "grad_clip", "auxiliary_weight", "drop_path_prob",
               "channels_last", "compile")


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """Retrain ``cfg.genotype`` in its evaluation network; prints its size, writes the run folder."""
    validate_train(cfg)
    genotype = resolve_genotype(cfg.genotype)
    out_dir = _start(cfg)
    ckpt = resume_checkpoint(cfg, out_dir)
    dm = build_datamodule(cfg)
    t = cfg.train
    network = dict(C=t.C, layers=t.layers, auxiliary=t.auxiliary, dataset=t.network_dataset, num_classes=dm.num_classes,
                   in_channels=dm.in_channels)
    module = TrainModule(genotype.to_text(), network=network, **{k: t[k] for k in _TRAIN_KEYS})
    params = module.net.num_parameters()
    flops = count_flops(module.net, (dm.in_channels, dm.image_size, dm.image_size))
    size = {"params": params, "params_with_aux": module.net.num_parameters(auxiliary=True), "flops": flops,
            "macs": flops // 2}
    print(f"Genotype: {genotype.to_text()}")
    print(f"Parameters: {params / 1e6:.2f}M (without the auxiliary head); "
          f"{flops / 2e6:.1f}M MACs ({flops / 1e6:.1f}M FLOPs) per {dm.image_size}x{dm.image_size} image")
    if is_rank_zero():
        (out_dir / "genotype.json").write_text(genotype.to_json() + "\n")
    clock = WallClock()
    trainer = _trainer(cfg, out_dir, [clock], ckpt)
    with _wandb_run_ends_with_the_job():
        for logger in trainer.loggers:
            logger.log_hyperparams({"model/" + k: v for k, v in size.items()})
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        metrics = _final_metrics(trainer)
        summary = {"task": "train", "status": "done", "genotype": genotype.to_text(), "genotype_spec": str(cfg.genotype),
                   **size, "metrics": metrics, "run_dir": str(out_dir), "wall_time_s": clock.elapsed_s()}
        _write_train_summary(trainer, summary, out_dir)
    return summary


def _write_train_summary(trainer: pl.Trainer, summary: dict[str, Any], out_dir: Path) -> None:
    metrics = summary["metrics"]
    if trainer.is_global_zero:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        acc = metrics.get("val/acc")
        print(f"Test accuracy: {acc:.4f}" if acc is not None else "Test accuracy: not measured")
        print(f"Run folder: {out_dir.resolve()}  (summary.json, metrics.csv, checkpoints/last.ckpt)")
        sys.stdout.flush()
