"""The driver's side of evaluations: look each one up in the archive, send the missing ones to the executor,
record every result (done or failed) as it arrives, and show progress."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .archive import Archive, genotype_hash
from .evaluate import EvalJob, run_evaluation
from .executor import Executor
from .settings import Setting


@dataclass(frozen=True)
class Request:
    """Train ``genotype`` under ``setting`` until ``epochs`` epochs of its schedule are done; ``after``: the epochs
    of an earlier evaluation of the same genotype, setting and seed whose weights and schedule it continues."""

    genotype: Any
    setting: Setting
    epochs: int
    after: int | None = None


class Evaluator:
    """Evaluations through an archive and an executor. Each evaluation keeps its folder under ``folder``
    (beside the archive), named by genotype hash, setting, seed and epochs."""

    def __init__(self, archive: Archive, executor: Executor, data: dict[str, Any], train: dict[str, Any], seed: int,
                 folder: str | Path, val_split: float = 0.1, trainer: dict[str, Any] | None = None,
                 keep_checkpoints: bool = False, out=sys.stdout):
        self.archive, self.executor, self.data, self.train = archive, executor, data, train
        self.seed, self.folder, self.val_split = seed, Path(folder), val_split
        self.trainer = trainer or {}
        self.keep_checkpoints, self.out = keep_checkpoints, out
        self.trained = 0  # evaluations this process ran (not found in the archive)

    def job_folder(self, key: str, setting: Setting, epochs: int) -> Path:
        return self.folder / key[:16] / f"{setting.name}_s{self.seed}_e{epochs}"

    def evaluate(self, requests: Sequence[Request], label: str = "") -> list[dict[str, Any] | None]:
        """The done row of each request (None: it failed; its failed row is in the archive)."""
        rows: list[dict[str, Any] | None] = [None] * len(requests)
        jobs, slots = [], []
        for i, r in enumerate(requests):
            key = genotype_hash(r.genotype)
            found = self.archive.find(key, r.setting.name, self.seed, r.epochs)
            if found is not None:
                rows[i] = found
                continue
            start = None
            if r.after is not None:
                start = self.job_folder(key, r.setting, r.after) / "checkpoints" / "last.ckpt"
                if not start.is_file():  # the earlier stage's weights were removed or never written
                    start = None
            if r.after is not None and start is None:
                # without the earlier weights the continuation trains from scratch to the same epochs (same schedule)
                self._say(f"{label}no checkpoint of {key[:8]} at {r.after} epochs: training {r.epochs} epochs from the start")
            jobs.append(EvalJob(genotype=r.genotype.to_text(), setting=r.setting.values(), seed=self.seed, epochs=r.epochs,
                                folder=str(self.job_folder(key, r.setting, r.epochs)), data=self.data, train=self.train,
                                val_split=self.val_split, start_from=None if start is None else str(start),
                                trainer=self.trainer))
            slots.append((i, key, r))
        if not jobs:
            return rows
        started, done = time.time(), 0
        self._say(f"{label}{len(jobs)} evaluations to run ({len(requests) - len(jobs)} found in the archive)")
        for j, result, error in self.executor.map(run_evaluation, jobs):
            i, key, r = slots[j]
            done += 1
            self.trained += 1
            if error is None:
                row = {**result, "genotype_hash": key}
                self.archive.add(row)
                rows[i] = self.archive.find(key, r.setting.name, self.seed, r.epochs)
                self._tidy(jobs[j], r)
                what = f"val {row['val_acc']:.4f} test {row['test_acc']:.4f} ({row['wall_time_s']:.1f} s)"
            else:
                self.archive.add({"genotype": r.genotype.to_text(), "genotype_hash": key, "space": _space(r.genotype),
                                  "setting": r.setting.name, "setting_values": r.setting.values(), "seed": self.seed,
                                  "epochs": r.epochs, "status": "failed", "error": error})
                what = "FAILED: " + error.splitlines()[0]
            left = (time.time() - started) / done * (len(jobs) - done)
            self._say(f"{label}[{done}/{len(jobs)}] {r.setting.name} e{r.epochs} {key[:8]}: {what}; ~{left:.0f} s left")
        return rows

    def _tidy(self, job: EvalJob, request: Request) -> None:
        # a continued evaluation's earlier weights, and the weights of a finished schedule, are not needed again
        if self.keep_checkpoints:
            return
        if job.start_from is not None:
            shutil.rmtree(Path(job.start_from).parent, ignore_errors=True)
        if request.epochs >= request.setting.epochs:
            shutil.rmtree(Path(job.folder) / "checkpoints", ignore_errors=True)

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def _space(genotype: Any) -> str:
    from ..spaces import parse_genotype

    return parse_genotype(genotype.to_text())[0].NAME
