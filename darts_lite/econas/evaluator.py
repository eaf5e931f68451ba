"""The driver's side of evaluations: look each one up in the archive, send the missing ones to the executor,
record every result (done or failed) as it arrives, and show progress.

A batch (a study's setting, an evolution's cycle) stops as soon as more than ``max_failed_share`` of the evaluations
it sent have failed, or all of them: ``RunFailed``, with the failures grouped by cause. Failed attempts stay in the
archive, so a rerun (``resume=true``) finds every finished evaluation there and tries the failed ones again."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RunFailed
from ..torchfiles import open_atomically, write_text_atomically
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


FAILURE_COLUMNS = ("batch", "setting", "seed", "epochs", "genotype_hash", "genotype", "cause", "error")


def cause(error: str) -> str:
    """The first line of an evaluation's error text: what the failures are grouped by."""
    lines = error.strip().splitlines()
    return lines[0].strip() if lines else "(no message)"


class Failures:
    """The evaluations a run sent that failed, kept for its report: counted by cause, listed in failures.csv.
    One object may serve several evaluators of a run (the study's second seed)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.attempted = 0  # evaluations sent (not found in the archive), failed or not

    def __len__(self) -> int:
        return len(self.rows)

    def causes(self) -> list[tuple[str, int]]:
        """(cause, count), the most frequent first, then in order of first appearance."""
        return Counter(r["cause"] for r in self.rows).most_common()

    def summary(self, limit: int = 5, width: int = 300) -> str:
        """A header and a line per cause (the ``limit`` most frequent) with its count."""
        lines = [f"Failures by cause ({len(self.rows)} of the {self.attempted} evaluations this run trained):"]
        causes = self.causes()
        for text, count in causes[:limit]:
            lines.append(f"  {count} x {text if len(text) <= width else text[:width - 3] + '...'}")
        if len(causes) > limit:
            lines.append(f"  ... and {len(causes) - limit} other causes ({sum(c for _, c in causes[limit:])} failures)")
        return "\n".join(lines)

    def as_dict(self, file: str | Path | None = None) -> dict[str, Any]:
        """What summary.json says of them."""
        out: dict[str, Any] = {"failed": len(self.rows), "attempted": self.attempted,
                               "causes": [{"cause": c, "count": n} for c, n in self.causes()]}
        if file is not None:
            out["file"] = str(file)
        return out

    def write(self, path: str | Path) -> Path | None:
        """failures.csv: every failure with its whole error text; without failures an earlier file is removed
        (it would describe failures a resumed run has since retried). Returns the path written, or None."""
        path = Path(path)
        if not self.rows:
            path.unlink(missing_ok=True)
            return None
        with open_atomically(path) as f:
            writer = csv.DictWriter(f, fieldnames=list(FAILURE_COLUMNS))
            writer.writeheader()
            writer.writerows(self.rows)
        return path


def _where(failures: Failures, out_dir: Path, archive: Archive) -> str:
    file = out_dir / "failures.csv"
    return (f"Full error texts: {file.resolve() if file.is_file() else 'failures.csv'} and the error column of the "
            f"archive {archive.path}.")


@contextlib.contextmanager
def stopped_on_failures(out_dir: Path, archive: Archive, failures: Failures, task: str) -> Iterator[None]:
    """A driver's evaluations inside: when they stop with RunFailed, the run folder gets failures.csv,
    evaluations.csv and a summary.json saying so (status "failed"), and RunFailed is raised again with the failures
    grouped by cause, where their whole errors are and how to continue once the cause is fixed."""
    try:
        yield
    except RunFailed as e:
        file = failures.write(out_dir / "failures.csv")
        archive.export_csv(out_dir / "evaluations.csv")
        summary = {"task": task, "status": "failed", "error": str(e), "run_dir": str(out_dir),
                   "archive": str(archive.path), "failures": failures.as_dict(file)}
        write_text_atomically(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        raise RunFailed(f"{e}.\n{failures.summary()}\n{_where(failures, out_dir, archive)}\nOnce the cause is fixed, "
                        f"run the same command with resume=true hydra.run.dir={out_dir.resolve()}: what finished is "
                        "kept, the failed evaluations are tried again.") from None


def report_failures(failures: Failures, out_dir: Path, archive: Archive) -> None:
    """At the end of a run that finished with some failed evaluations (no more than its max_failed_share): say so."""
    if failures:
        print(f"\nSome evaluations failed (too few to stop the run; summary.json lists them too).\n{failures.summary()}\n"
              f"{_where(failures, out_dir, archive)}", flush=True)


class Evaluator:
    """Evaluations through an archive and an executor. Each evaluation keeps its folder under ``folder``
    (beside the archive), named by genotype hash, setting, seed and epochs. ``max_failed_share``: the share of a
    batch's evaluations that may fail before the batch stops with RunFailed (all of them failing always stops it);
    ``failures``: where failures are kept (a new Failures unless one is shared)."""

    def __init__(self, archive: Archive, executor: Executor, data: dict[str, Any], train: dict[str, Any], seed: int,
                 folder: str | Path, val_split: float = 0.1, trainer: dict[str, Any] | None = None,
                 keep_checkpoints: bool = False, max_failed_share: float = 0.5, failures: Failures | None = None,
                 out=None):
        if not 0 <= max_failed_share <= 1:
            raise ValueError(f"max_failed_share={max_failed_share!r}: must be in [0, 1]")
        self.archive, self.executor, self.data, self.train = archive, executor, data, train
        self.seed, self.folder, self.val_split = seed, Path(folder), val_split
        self.trainer = trainer or {}
        self.keep_checkpoints, self.out = keep_checkpoints, out
        self.max_failed_share = max_failed_share
        self.failures = Failures() if failures is None else failures
        self.trained = 0  # evaluations this process ran (not found in the archive)

    def job_folder(self, key: str, setting: Setting, epochs: int) -> Path:
        return self.folder / key[:16] / f"{setting.name}_s{self.seed}_e{epochs}"

    def evaluate(self, requests: Sequence[Request], label: str = "") -> list[dict[str, Any] | None]:
        """The done row of each request (None: it failed; its failed row is in the archive). Raises RunFailed as
        soon as more than max_failed_share of the evaluations sent have failed, or all of them; the ones not yet
        finished are then not run (cancelled on a cluster)."""
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
        started, done, failed = time.time(), 0, 0
        self._say(f"{label}{len(jobs)} evaluation{'s' * (len(jobs) != 1)} to run ({len(requests) - len(jobs)} found in "
                  "the archive)")
        # closing: leaving the loop early closes the executor's generator, which cancels the jobs still in flight
        with contextlib.closing(self.executor.map(run_evaluation, jobs)) as finished:
            for j, result, error in finished:
                i, key, r = slots[j]
                done += 1
                self.trained += 1
                self.failures.attempted += 1
                if error is None:
                    row = {**result, "genotype_hash": key}
                    self.archive.add(row)
                    rows[i] = self.archive.find(key, r.setting.name, self.seed, r.epochs)
                    self._tidy(jobs[j], r)
                    what = f"val {row['val_acc']:.4f} test {row['test_acc']:.4f} ({row['wall_time_s']:.1f} s)"
                else:
                    failed += 1
                    self._failed(r, key, error, label)
                    what = "FAILED: " + cause(error)
                left = (time.time() - started) / done * (len(jobs) - done)
                self._say(f"{label}[{done}/{len(jobs)}] {r.setting.name} e{r.epochs} {key[:8]}: {what}; ~{left:.0f} s left")
                if failed == len(jobs) or failed > self.max_failed_share * len(jobs):
                    share = ("all of them" if failed == len(jobs)
                             else f"more than evaluation.max_failed_share={self.max_failed_share:g} of them")
                    rest = f", {len(jobs) - done} not run" if done < len(jobs) else ""
                    raise RunFailed(f"{label}{failed} of {len(jobs)} evaluations failed ({share}{rest}): the run stopped")
        return rows

    def _failed(self, r: Request, key: str, error: str, label: str) -> None:
        """A failed attempt: a failed row in the archive (kept; a rerun tries the evaluation again) and in failures."""
        genotype = r.genotype.to_text()
        self.archive.add({"genotype": genotype, "genotype_hash": key, "space": _space(r.genotype),
                          "setting": r.setting.name, "setting_values": r.setting.values(), "seed": self.seed,
                          "epochs": r.epochs, "status": "failed", "error": error})
        self.failures.rows.append({"batch": label.strip().rstrip(":"), "setting": r.setting.name, "seed": self.seed,
                                   "epochs": r.epochs, "genotype_hash": key, "genotype": genotype,
                                   "cause": cause(error), "error": error})

    def _tidy(self, job: EvalJob, request: Request) -> None:
        # a continued evaluation's earlier weights, and the weights of a finished schedule, are not needed again
        if self.keep_checkpoints:
            return
        if job.start_from is not None:
            shutil.rmtree(Path(job.start_from).parent, ignore_errors=True)
        if request.epochs >= request.setting.epochs:
            shutil.rmtree(Path(job.folder) / "checkpoints", ignore_errors=True)

    def _say(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)  # the stream of the moment unless one was given


def _space(genotype: Any) -> str:
    from ..spaces import parse_genotype

    return parse_genotype(genotype.to_text())[0].NAME
