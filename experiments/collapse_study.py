"""DARTS' collapse on the NAS-Bench-201 space, against GDAS: the same budget, several seeds, the collapse
instruments every epoch.

Runs `python -m darts_lite +experiment=nb201_quick` (digits, CPU) once per algorithm and seed with the
collapse guard measuring and never stopping (guard=collapse guard.stop=none guard.eigen_every=1), then reads
each run's metrics.csv: the share of parameter-free ops (none, skip, pooling) in the derived cell, the skip
connections in it, the mean entropy of the edges' op distributions, the dominant eigenvalue of the validation
loss's Hessian w.r.t. the alphas, and the validation accuracy. Writes a table (markdown and JSON) and plots
(PNG) into experiments/results/:

    collapse_nb201.md / .json, collapse_nb201_param_free.png, collapse_nb201_eigenvalue.png

A run whose folder already holds summary.json is read, not repeated, and a killed run continues from its last
checkpoint: an interrupted study continues where it stopped (runs in experiments/results/collapse_runs/, or
--runs DIR).

    python experiments/collapse_study.py                       # darts and gdas, seeds 0-5
    python experiments/collapse_study.py --seeds 0 --epochs 6  # a shorter look
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from common import RESULTS, ROOT, metrics_per_epoch, run_darts_lite, write_result

MEASURES = {
    "guard/param_free_share": "parameter-free share of the derived cell",
    "guard/skip_connections": "skip connections in the derived cell",
    "guard/entropy": "mean edge entropy (nats)",
    "guard/eigenvalue": "dominant Hessian eigenvalue (alphas)",
    "val/acc": "validation accuracy",
    # GDAS (search.bn_calibration): the argmax cell with BatchNorm statistics recomputed for it
    "val/acc_derived": "validation accuracy of the derived cell (BN recalibrated)",
}
LABELS = {"darts": "DARTS (1st order)", "gdas": "GDAS"}


def run(algorithm: str, seed: int, epochs: int | None, runs: Path, extra: list[str]) -> tuple[Path, dict]:
    """One search (or the one that finished before); returns its run folder and summary."""
    folder = runs / f"{algorithm}_seed{seed}"
    overrides = ["+experiment=nb201_quick", f"search={algorithm}", f"seed={seed}", "guard=collapse", "guard.stop=none",
                 "guard.eigen_every=1", "logger=csv", "trainer.enable_progress_bar=false", *extra]
    if epochs:
        overrides.append(f"search.epochs={epochs}")
    return folder, run_darts_lite(folder, overrides, f"{algorithm} seed {seed}")


def _shown(folder: Path) -> str:
    """The run folder as the results name it: relative to the project when inside it."""
    try:
        return str(folder.resolve().relative_to(ROOT))
    except ValueError:
        return str(folder)


def aggregate(series: list[dict[int, float]]) -> dict[int, dict[str, float]]:
    """Per epoch over seeds: mean, min, max (epochs every seed measured)."""
    epochs = sorted(set.intersection(*(set(s) for s in series))) if series else []
    return {e: {"mean": statistics.mean(s[e] for s in series), "min": min(s[e] for s in series),
                "max": max(s[e] for s in series)} for e in epochs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithms", default="darts,gdas")
    p.add_argument("--seeds", default="0,1,2,3,4,5")
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
            folder, summary = run(algorithm, seed, args.epochs, args.runs, args.overrides)
            runs.append({"seed": seed, "folder": _shown(folder), "genotype": summary.get("genotype"),
                         "wall_time_s": summary.get("wall_time_s"), "per_epoch": metrics_per_epoch(folder, MEASURES)})
        curves = {m: aggregate([r["per_epoch"][m] for r in runs]) for m in MEASURES}
        results[algorithm] = {"runs": runs, "curves": curves}
    write(results, seeds)


def _final(curve: dict[int, dict[str, float]]) -> str:
    if not curve:
        return "-"
    last = curve[max(curve)]
    return f"{last['mean']:.3g} ({last['min']:.3g}-{last['max']:.3g})"


def markdown(results: dict[str, dict], seeds: list[int]) -> list[str]:
    """The result file's text, every number from ``results`` (what collapse_nb201.json holds)."""
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
            last = {m: x["per_epoch"][m][max(x["per_epoch"][m])] for m in ("val/acc", "val/acc_derived")
                    if x["per_epoch"].get(m)}
            shown = ", ".join(f"{m} {v:.3f}" for m, v in last.items())
            lines.append(f"- {LABELS[algorithm]}, seed {x['seed']}: `{x['genotype']}` ({shown})")
    lines += ["", "Per epoch (mean over seeds):", "",
              "| algorithm | epoch | parameter-free share | skip connections | eigenvalue | val. accuracy |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for algorithm, r in results.items():
        c = r["curves"]
        for e in sorted(c["guard/param_free_share"]):
            cells = [f"{c[m][e]['mean']:.3g}" if e in c[m] else "-" for m in
                     ("guard/param_free_share", "guard/skip_connections", "guard/eigenvalue", "val/acc")]
            lines.append(f"| {LABELS[algorithm]} | {e} | " + " | ".join(cells) + " |")
    return lines


def write(results: dict[str, dict], seeds: list[int]) -> None:
    """collapse_nb201.json, the .md made from it, and the two plots."""
    from darts_lite.plots import curves, save_figure

    write_result(RESULTS / "collapse_nb201.md", results, markdown(results, seeds), indent=1)
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


if __name__ == "__main__":
    main()
