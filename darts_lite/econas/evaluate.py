"""One evaluation: a genotype's evaluation network trained under a setting, with the TrainModule and the
data module that ``task=train`` uses, and measured (per-epoch validation accuracy, test accuracy,
parameters, FLOPs, wall time).

An evaluation is a picklable ``EvalJob`` and a function of it, so an executor can run it in this process,
in a subprocess or on a cluster node. It keeps its own folder: ``checkpoints/last.ckpt``, rewritten every
epoch, lets it continue for more epochs of the same schedule (the hierarchical strategy's next stage) or
after it was killed, to the same result as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from ..measure import count_flops
from ..run.build import train_arguments
from ..run.checkpoints import AtomicCheckpointIO
from ..schema import build
from ..spaces import parse_genotype


@dataclass(frozen=True)
class EvalJob:
    """Everything a worker needs, as plain values.

    setting: Setting.values(); epochs: train until this many epochs of the setting's schedule (its ``epochs``)
    are done; start_from: a checkpoint of the same genotype, setting and seed at fewer epochs to continue from
    (ignored once this job's own folder has one); data / train: the data and train config groups.
    """

    genotype: str
    setting: dict[str, Any]
    seed: int
    epochs: int
    folder: str
    data: dict[str, Any]
    train: dict[str, Any]
    val_split: float = 0.1
    start_from: str | None = None
    trainer: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint(self) -> Path:
        return Path(self.folder) / "checkpoints" / "last.ckpt"


class _Record(pl.Callback):
    """Per-epoch validation accuracy and the training wall time; both travel in the checkpoint."""

    def __init__(self) -> None:
        self.val_accs: list[float] = []
        self.before_s, self.started = 0.0, time.time()

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.val_accs.append(float(trainer.callback_metrics["val/acc"]))

    def elapsed_s(self) -> float:
        return self.before_s + time.time() - self.started

    def state_dict(self) -> dict[str, Any]:
        return {"val_accs": list(self.val_accs), "elapsed_s": self.elapsed_s()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.val_accs = [float(v) for v in state["val_accs"]]
        self.before_s, self.started = float(state["elapsed_s"]), time.time()


def setting_datamodule(data: dict[str, Any], setting: dict[str, Any], seed: int, cutout: int, val_split: float) -> Any:
    """The data module an evaluation under ``setting`` (Setting.values()) trains on: the setting decides the batch,
    the sample ratio and the side (absolute: equal to the images' own, nothing is resized); a search's split and
    validation part do not apply to training an evaluation network."""
    node = {"_target_": "darts_lite.data.ImageDataModule", **{k: v for k, v in data.items() if k not in ("split", "val_on")}}
    node.update(batch_size=setting["batch_size"], sample_ratio=setting["sample_ratio"], resolution=setting["resolution"])
    return build(node, "data", seed=seed, bilevel=False, cutout=cutout, val_split=val_split)


def run_evaluation(job: EvalJob) -> dict[str, Any]:
    """Train and measure; returns a row of the evaluation archive (status "done"). Errors propagate: the
    executor turns them into a failed row."""
    space, genotype = parse_genotype(job.genotype)
    s = job.setting
    if not 1 <= job.epochs <= s["epochs"]:
        raise ValueError(f"epochs={job.epochs}: an evaluation trains 1..{s['epochs']} epochs of setting {s['name']}")
    pl.seed_everything(job.seed, workers=True, verbose=False)
    dm = setting_datamodule(job.data, s, job.seed, job.train.get("cutout", 0), job.val_split)
    network = dict(space.eval_network_options({**job.train, "C": s["channels"], "layers": s["layers"]}),
                   num_classes=dm.num_classes, in_channels=dm.in_channels)
    # compile: each evaluation is a new short-lived network, compiling it would cost more than it saves
    recipe = {**train_arguments(job.train), "epochs": s["epochs"], "lr": s["lr"], "compile": False}
    module = build(recipe, "train", genotype=genotype.to_text(), network=network)
    record = _Record()
    folder = Path(job.folder)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=folder / "checkpoints", filename="last", save_top_k=1,
                                              enable_version_counter=False)
    ckpt = str(job.checkpoint) if job.checkpoint.is_file() else job.start_from
    options = {"accelerator": "cpu", "devices": 1, **job.trainer}
    with warnings.catch_warnings(), _quiet_lightning():
        quiet = "does not have many workers|LeafSpec|smaller than the logging|dirpath has changed"
        warnings.filterwarnings("ignore", message=rf".*({quiet}).*")
        trainer = pl.Trainer(max_epochs=job.epochs, logger=False, callbacks=[checkpoint, record],
                             plugins=[AtomicCheckpointIO()], default_root_dir=str(folder), enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                             **options)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        tested = trainer.test(module, datamodule=dm, verbose=False)
    if len(record.val_accs) != job.epochs:
        raise RuntimeError(f"the evaluation recorded {len(record.val_accs)} validation accuracies for {job.epochs} epochs")
    shape = (dm.in_channels, dm.image_size, dm.image_size)
    return {
        "genotype": genotype.to_text(), "space": space.NAME, "setting": s["name"], "setting_values": s,
        "seed": job.seed, "epochs": job.epochs, "val_accs": record.val_accs, "val_acc": record.val_accs[-1],
        "test_acc": float(tested[0]["test/acc"]), "params": module.net.num_parameters(),
        "flops": count_flops(module.net, shape), "wall_time_s": record.elapsed_s(), "status": "done",
        "worker": socket.gethostname(),
    }


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's info messages off during an evaluation, as they were afterwards: thousands of evaluations'
    per-fit banners (GPU available, ...) would bury the driver's progress, and an evaluation run in the caller's
    process (executor=inline) must not silence the caller's own runs after it."""
    loggers = [logging.getLogger(f"{name}{sub}") for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")
               for sub in ("", ".utilities.rank_zero", ".accelerators.cuda")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)

