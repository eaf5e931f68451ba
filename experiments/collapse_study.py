"""DARTS' collapse on the NAS-Bench-201 space, against GDAS: the same budget, several seeds, the collapse
instruments every epoch.

Runs `python -m darts_lite +experiment=nb201_quick` (digits, CPU) once per algorithm and seed with the
collapse guard measuring and never stopping (guard=collapse guard.stop=none guard.eigen_every=1), then reads
each run's metrics.csv: the share of parameter-free ops (none, skip, pooling) in the derived cell, the skip
connections in it, the mean entropy of the edges' op distributions, the dominant eigenvalue of the validation
loss's Hessian w.r.t. the alphas, and the validation accuracy. Writes a table (markdown and JSON) and plots
(PNG) into experiments/results/:

    collapse_nb201.md / .json, collapse_nb201_param_free.png, collapse_nb201_eigenvalue.png

A run whose folder already holds summary.json is read, not repeated: an interrupted study continues where it
stopped (runs in experiments/results/collapse_runs/, or --runs DIR).

    python experiments/collapse_study.py                       # darts and gdas, seeds 0,1,2
    python experiments/collapse_study.py --seeds 0 --epochs 6  # a shorter look
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
MEASURES = {
    "guard/param_free_share": "parameter-free share of the derived cell",
    "guard/skip_connections": "skip connections in the derived cell",
    "guard/entropy": "mean edge entropy (nats)",
    "guard/eigenvalue": "dominant Hessian eigenvalue (alphas)",
    "val/acc": "validation accuracy",
}
LABELS = {"darts": "DARTS (1st order)", "gdas": "GDAS"}


def run(algorithm: str, seed: int, epochs: int | None, runs: Path, extra: list[str]) -> Path:
    """One search; returns its run folder (reused when it already finished)."""
    folder = runs / f"{algorithm}_seed{seed}"
    if (folder / "summary.json").is_file():
        print(f"{algorithm} seed {seed}: done before, read from {folder}", flush=True)
        return folder
    cmd = [sys.executable, "-m", "darts_lite", "+experiment=nb201_quick", f"search={algorithm}", f"seed={seed}",
           "guard=collapse", "guard.stop=none", "guard.eigen_every=1", "logger=csv",
           "trainer.enable_progress_bar=false", f"hydra.run.dir={folder}", *extra]
    if epochs:
        cmd.append(f"search.epochs={epochs}")
    resume = folder / "checkpoints" / "last.ckpt"
    if resume.is_file():
        cmd.append("resume=true")  # a killed study continues the run from its last epoch
    print(f"{algorithm} seed {seed}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "offline"}, stdout=subprocess.DEVNULL)
    print(f"{algorithm} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    return folder


def _shown(folder: Path) -> str:
    """The run folder as the results name it: relative to the project when inside it."""
    try:
        return str(folder.resolve().relative_to(ROOT))
    except ValueError:
        return str(folder)


def per_epoch(folder: Path) -> dict[str, dict[int, float]]:
    """{metric: {epoch: value}} from a run's metrics.csv (the last value logged for an epoch wins)."""
    out: dict[str, dict[int, float]] = {m: {} for m in MEASURES}
    with open(folder / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            for metric in MEASURES:
                if row.get(metric) not in (None, ""):
                    out[metric][int(float(row["epoch"]))] = float(row[metric])
    return out


def aggregate(series: list[dict[int, float]]) -> dict[int, dict[str, float]]:
    """Per epoch over seeds: mean, min, max (epochs every seed measured)."""
    epochs = sorted(set.intersection(*(set(s) for s in series))) if series else []
    return {e: {"mean": statistics.mean(s[e] for s in series), "min": min(s[e] for s in series),
                "max": max(s[e] for s in series)} for e in epochs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithms", default="darts,gdas")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=None, help="search.epochs (default: the nb201_quick experiment's)")
    p.add_argument("--runs", type=Path, default=RESULTS / "collapse_runs", help="where the run folders go")
    p.add_argument("overrides", nargs="*", help="more Hydra overrides for every run")
    args = p.parse_args()
    algorithms, seeds = args.algorithms.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [a for a in algorithms if a not in LABELS]
    if unknown:
        sys.exit(f"unknown algorithm(s) {unknown}; choose from {', '.join(LABELS)}")

    results: dict[str, dict] = {}
    for algorithm in algorithms:
        runs = []
        for seed in seeds:
            folder = run(algorithm, seed, args.epochs, args.runs, args.overrides)
            summary = json.loads((folder / "summary.json").read_text())
            runs.append({"seed": seed, "folder": _shown(folder), "genotype": summary.get("genotype"),
                         "wall_time_s": summary.get("wall_time_s"), "per_epoch": per_epoch(folder)})
        curves = {m: aggregate([r["per_epoch"][m] for r in runs]) for m in MEASURES}
        results[algorithm] = {"runs": runs, "curves": curves}
    write(results, seeds)


def _final(curve: dict[int, dict[str, float]]) -> str:
    if not curve:
        return "-"
    last = curve[max(curve)]
    return f"{last['mean']:.3g} ({last['min']:.3g}-{last['max']:.3g})"


def write(results: dict[str, dict], seeds: list[int]) -> None:
    from darts_lite.plots import curves, save_figure

    RESULTS.mkdir(exist_ok=True)
    lines = ["# Collapse on the NAS-Bench-201 space: DARTS (1st order) and GDAS", "",
             f"`+experiment=nb201_quick` (digits, CPU), seeds {', '.join(map(str, seeds))}, the same budget for both; "
             "measured every epoch by `guard=collapse` (no stop). Last epoch: mean over seeds (min-max).", "",
             "| algorithm | " + " | ".join(MEASURES.values()) + " | wall time per run (s) |",
             "| --- |" + " ---: |" * (len(MEASURES) + 1)]
    for algorithm, r in results.items():
        wall = statistics.mean(x["wall_time_s"] for x in r["runs"] if x["wall_time_s"] is not None)
        lines.append(f"| {LABELS[algorithm]} | " + " | ".join(_final(r["curves"][m]) for m in MEASURES) + f" | {wall:.0f} |")
    lines += ["", "Derived cells:", ""]
    for algorithm, r in results.items():
        for x in r["runs"]:
            lines.append(f"- {LABELS[algorithm]}, seed {x['seed']}: `{x['genotype']}`")
    lines += ["", "Per epoch (mean over seeds):", "",
              "| algorithm | epoch | parameter-free share | skip connections | eigenvalue | val. accuracy |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for algorithm, r in results.items():
        c = r["curves"]
        for e in sorted(c["guard/param_free_share"]):
            cells = [f"{c[m][e]['mean']:.3g}" if e in c[m] else "-" for m in
                     ("guard/param_free_share", "guard/skip_connections", "guard/eigenvalue", "val/acc")]
            lines.append(f"| {LABELS[algorithm]} | {e} | " + " | ".join(cells) + " |")
    (RESULTS / "collapse_nb201.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "collapse_nb201.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    for metric, stem in (("guard/param_free_share", "param_free"), ("guard/eigenvalue", "eigenvalue")):
        series = {}
        for algorithm, r in results.items():
            curve = r["curves"][metric]
            xs = sorted(curve)
            series[LABELS[algorithm]] = (xs, [curve[e]["mean"] for e in xs], [curve[e]["min"] for e in xs],
                                         [curve[e]["max"] for e in xs])
        fig = curves(series, "epoch", MEASURES[metric],
                     f"NAS-Bench-201 space, digits: {MEASURES[metric]}\n(mean over seeds; band: min-max)")
        save_figure(fig, RESULTS / f"collapse_nb201_{stem}.png")
    print((RESULTS / "collapse_nb201.md").read_text())


if __name__ == "__main__":
    main()
