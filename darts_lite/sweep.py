"""After a Hydra multirun: one table across its jobs, written into the sweep folder.

`summary.csv` and `summary.md` list each job's overrides, genotype, accuracy and wall time. For
retraining sweeps the Markdown adds mean and std of test accuracy per genotype (EcoNAS's habit of
retraining the top few with several seeds); for search sweeps, how often the jobs agree on each
edge of the derived cells. A job that failed is listed with its error (``write_job_failure``); the
multirun then prints the failures grouped by cause and exits with status 1 when all jobs failed or more
than the callback's ``max_failed_share`` of them (default 0: any failed job), else 0.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .spaces import parse_genotype
from .torchfiles import open_atomically, write_text_atomically


def _job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()), key=lambda p: p.name):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_file) if overrides_file.is_file() else []
        row: dict[str, Any] = {"job": job.name, "overrides": " ".join(str(o) for o in overrides)}
        summary_file = job / "summary.json"
        if summary_file.is_file():
            s = json.loads(summary_file.read_text())
            row.update(
                status=s.get("status", "done"), task=s.get("task", ""), genotype_spec=s.get("genotype_spec", ""),
                genotype=s.get("genotype", ""), val_acc=s.get("metrics", {}).get("val/acc"),
                wall_time_s=s.get("wall_time_s"), params=s.get("params"), error=s.get("error", ""),
            )
            for cell, measures in (s.get("decision") or {}).items():
                if cell != "uniform":
                    row.update({f"{cell}_{k}": v for k, v in measures.items() if k in _DECISION_COLUMNS})
        else:
            row.update(status="failed or unfinished")
        rows.append(row)
    return rows


# decision measures of a search job (darts_lite.decision), per cell type, as summary.csv columns
_DECISION_COLUMNS = ("max_prob", "margin", "entropy", "param_free_share")


def _decision_cells(rows: list[dict[str, Any]]) -> list[str]:
    """The cell types the jobs' decision measures name (DARTS: normal, reduce; NAS-Bench-201: cell), in order."""
    suffix = "_" + _DECISION_COLUMNS[0]
    return list(dict.fromkeys(k[: -len(suffix)] for r in rows for k in r if k.endswith(suffix)))


def write_job_failure(job_dir: str | Path, task: str, error: BaseException) -> Path:
    """Records a failed job of a multirun as its summary.json, which the sweep table reads back. What a failed
    run wrote there itself (a study's failures by cause) is kept."""
    path = Path(job_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {}
    if path.is_file():
        try:
            earlier = json.loads(path.read_text())
        except ValueError:
            earlier = None
        if isinstance(earlier, dict) and earlier.get("status") == "failed":
            record = earlier
    record.update(task=task, status="failed", error=f"{type(error).__name__}: {error}", run_dir=str(job_dir))
    write_text_atomically(path, json.dumps(record, indent=2) + "\n")
    return path


def failure_causes(rows: list[dict[str, Any]], width: int = 300) -> str:
    """The failed jobs grouped by cause (their error's first line), the most frequent first, a line each with the
    jobs and their overrides."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        lines = str(r.get("error") or "").strip().splitlines()
        groups[lines[0] if lines else "no summary.json: killed, or still running"].append(r)
    out = []
    for cause, jobs in sorted(groups.items(), key=lambda item: -len(item[1])):
        text = cause if len(cause) <= width else cause[:width - 3] + "..."
        out.append(f"  {len(jobs)} x {text}: " + "; ".join(f"job {r['job']} ({r['overrides']})" for r in jobs))
    return "\n".join(out)


def _md_cell(text: str, limit: int = 300) -> str:
    """One table cell: a multi-line error on one line, pipes escaped, a tensor dump cut (summary.csv keeps it whole)."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def edge_agreement(genotypes: list[Any]) -> dict[str, list[float]]:
    """Per cell type and per (op, input) position of ``cells()`` (a canonical order in every space), the share
    of genotypes that pick the most common choice. Genotypes of one space."""
    out: dict[str, list[float]] = {}
    names = list(dict.fromkeys(name for g in genotypes for name in g.cells()))
    for name in names:
        cells = [g.cells()[name] for g in genotypes if g.cells().get(name)]
        if not cells:
            continue
        out[name] = [Counter(c[k] for c in cells).most_common(1)[0][1] / len(cells) for k in range(len(cells[0]))]
    return out


def _setting(overrides: str) -> str:
    """A job's overrides without its seed and genotype: the jobs to average over share it."""
    return " ".join(o for o in overrides.split() if not o.startswith(("seed=", "genotype=")))


def write_sweep_summary(sweep_dir: str | Path, rows: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    """Writes summary.csv and summary.md from the jobs' folders (or from ``rows`` already read from them)."""
    sweep_dir = Path(sweep_dir)
    rows = _job_rows(sweep_dir) if rows is None else rows
    cells = _decision_cells(rows)
    columns = ["job", "overrides", "status", "task", "genotype_spec", "val_acc", "wall_time_s", "params", "genotype",
               *(f"{cell}_{k}" for cell in cells for k in _DECISION_COLUMNS), "error"]
    with open_atomically(sweep_dir / "summary.csv") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def fmt(v: Any, spec: str = "") -> str:
        return "-" if v is None or v == "" else format(v, spec)

    md = [f"# Sweep summary: {sweep_dir}", "", "| job | overrides | status | test/val acc | wall time (s) | genotype |",
          "| --- | --- | --- | ---: | ---: | --- |"]
    for r in rows:
        status = f"failed: {_md_cell(r['error'])}" if r.get("error") else r["status"]
        md.append(f"| {r['job']} | `{r['overrides']}` | {status} | {fmt(r.get('val_acc'), '.4f')} | "
                  f"{fmt(r.get('wall_time_s'), '.0f')} | `{r.get('genotype', '')}` |")
    done = [r for r in rows if r["status"] == "done"]
    trains = [r for r in done if r.get("task") == "train" and r.get("val_acc") is not None]
    if trains:
        # one row per genotype (however it was named) and setting; the seeds are what varies within
        by: dict[tuple[str, str], list[float]] = defaultdict(list)
        label: dict[str, str] = {}
        for r in trains:
            key = (r["genotype"] or r["genotype_spec"], _setting(r["overrides"]))
            label.setdefault(key[0], r["genotype_spec"] or r["genotype"])
            by[key].append(r["val_acc"])
        md += ["", "## Test accuracy per genotype", "", "| genotype | other overrides | jobs | mean | std |",
               "| --- | --- | ---: | ---: | ---: |"]
        for (text, setting), accs in sorted(by.items(), key=lambda kv: -statistics.mean(kv[1])):
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            md.append(f"| {label[text]} | `{setting}` | {len(accs)} | {statistics.mean(accs):.4f} | {std:.4f} |")
    parsed = [parse_genotype(r["genotype"]) for r in done if r.get("task") == "search" and r.get("genotype")]
    searches = [g for space, g in parsed if space is parsed[0][0]]  # agreement within the first job's space
    if len(searches) > 1:
        md += ["", "## Agreement between the searches, per edge", "",
               "Share of jobs choosing the most common (op, input) at each position (pairs 2k, 2k+1 feed node k).", ""]
        for cell, shares in edge_agreement(searches).items():
            md.append(f"- {cell}: " + ", ".join(f"{s:.2f}" for s in shares) + f" (mean {statistics.mean(shares):.2f})")
    decided = [r for r in done if r.get("task") == "search" and any(r.get(f"{c}_max_prob") is not None for c in cells)]
    if decided:
        md += ["", "## How decided each search is", "",
               "Means over edges of the largest op probability and its margin over the second, the entropy (nats) "
               "and the share of parameter-free ops in the derived cell.", "",
               "| job | cell | largest p | margin | entropy | parameter-free |", "| --- | --- | ---: | ---: | ---: | ---: |"]
        for r in decided:
            for cell in cells:
                if r.get(f"{cell}_max_prob") is not None:
                    md.append(f"| {r['job']} | {cell} | {r[f'{cell}_max_prob']:.3f} | {r[f'{cell}_margin']:.3f} | "
                              f"{r[f'{cell}_entropy']:.3f} | {fmt(r.get(f'{cell}_param_free_share'), '.2f')} |")
    write_text_atomically(sweep_dir / "summary.md", "\n".join(md) + "\n")
    return {"csv": sweep_dir / "summary.csv", "md": sweep_dir / "summary.md"}


class SweepSummary(Callback):
    """Hydra callback: writes the summary when a multirun ends (registered in conf/hydra/default.yaml).

    The jobs catch their own errors (darts_lite.__main__) so that one failure does not stop the sweep
    before this runs; the exit status then comes from here. Hydra reports an exception raised by a
    callback as a warning only, but lets SystemExit through, so this ends the process with status 1.
    """

    def __init__(self, max_failed_share: float = 0.0) -> None:
        if not 0 <= max_failed_share <= 1:
            raise ValueError(f"hydra.callbacks.sweep_summary.max_failed_share={max_failed_share!r}: must be in [0, 1]")
        self.max_failed_share = max_failed_share

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        rows = _job_rows(Path(config.hydra.sweep.dir))
        files = write_sweep_summary(config.hydra.sweep.dir, rows)
        print(files["md"].read_text())
        print(f"Sweep summary: {files['md']} and {files['csv']}")
        sys.stdout.flush()
        not_done = [r for r in rows if r["status"] != "done"]
        if not not_done:
            return
        stop = len(not_done) == len(rows) or len(not_done) > self.max_failed_share * len(rows)
        print(f"darts_lite: {len(not_done)} of {len(rows)} jobs failed or did not finish (see {files['md']})"
              + ("" if stop else f", no more than hydra.callbacks.sweep_summary.max_failed_share={self.max_failed_share:g} "
                 "of them") + ":\n" + failure_causes(not_done), file=sys.stderr)
        if stop:
            sys.exit(1)
