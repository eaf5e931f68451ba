"""The bag of tricks on the quick search: what each switch does to the derived cell and to its retrained accuracy.

Runs `python -m darts_lite +experiment=quickstart` (first-order DARTS on the bundled digits, CPU) once per trick and
seed, then retrains each derived normal/reduction cell with `+experiment=train_quick genotype=<run folder>` (the
genotype perturbation-based selection chose, for that trick). Reports, per trick over the seeds: the share of skip
connections in the derived normal cell, the parameter-free share (skip, pooling), the retrained validation accuracy
and the search's wall time. Writes experiments/results/tricks_quick.md / .json and tricks_quick.png.

A run whose folder already holds summary.json is read, not repeated, and a killed run continues from its last
checkpoint, so an interrupted study continues (runs in experiments/results/tricks_runs/, or --runs DIR).

    python experiments/tricks_study.py                               # every trick, seeds 0,1,2
    python experiments/tricks_study.py --tricks darts,pc_darts --seeds 0
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from common import RESULTS, config_value, describe_search, run_config, run_darts_lite, write_result

# trick -> (label, the search's overrides on top of the quickstart)
TRICKS: dict[str, tuple[str, list[str]]] = {
    "darts": ("DARTS 1st order (no trick)", []),
    "pc_darts": ("PC-DARTS (K=4, edge normalization)", ["search.partial_channels=4", "search.edge_normalization=true"]),
    "sdarts_random": ("SDARTS random smoothing", ["search.perturb=random"]),
    "sdarts_adversarial": ("SDARTS adversarial", ["search.perturb=adversarial"]),
    "resource_flops": ("Resource-aware (FLOPs)", ["search.resource=flops", "search.resource_weight=1.0"]),
    "selection": ("Perturbation-based selection", ["search.selection=perturbation", "search.selection_epochs=1"]),
}
PARAM_FREE = ("skip_connect", "max_pool_3x3", "avg_pool_3x3")


def folders(trick: str, seed: int, runs: Path) -> tuple[Path, Path]:
    """The run folders of one trick and seed: its search, its retraining."""
    return runs / f"{trick}_seed{seed}", runs / f"{trick}_seed{seed}_train"


def one(trick: str, seed: int, runs: Path) -> dict:
    """One trick at one seed: its search, then its derived cell retrained (each run unless it finished before)."""
    overrides = TRICKS[trick][1]
    search_dir, train_dir = (folder.resolve() for folder in folders(trick, seed, runs))
    shared = ["logger=csv", "trainer.enable_progress_bar=false", f"seed={seed}"]
    summary = run_darts_lite(search_dir, ["+experiment=quickstart", *overrides, *shared], f"{trick} seed {seed} search")
    chosen = search_dir / "genotype_perturbation.json"
    genotype_file = chosen if trick == "selection" and chosen.is_file() else search_dir / "genotype.json"
    trained = run_darts_lite(train_dir, ["+experiment=train_quick", f"genotype={genotype_file}", *shared],
                             f"{trick} seed {seed} retrain")
    from darts_lite.spaces.darts.genotype import Genotype

    genotype = Genotype.parse(genotype_file.read_text())
    normal = [op for op, _ in genotype.normal]
    return {"seed": seed, "genotype": genotype.to_text(), "search_s": summary.get("wall_time_s"),
            "skip_share": sum(op == "skip_connect" for op in normal) / len(normal),
            "param_free_share": sum(op in PARAM_FREE for op in normal) / len(normal),
            "retrained_acc": trained["metrics"].get("val/acc"), "search_val_acc": summary["metrics"].get("val/acc")}


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def settings(search_dir: Path, train_dir: Path) -> dict[str, Any]:
    """The plain search's and the retraining's settings, as their runs' config.yaml hold them."""
    train = run_config(train_dir)
    return {"search": describe_search(run_config(search_dir)),
            "train_epochs": config_value(train, "train.epochs", "?")}


def markdown(results: dict[str, list[dict]], args: argparse.Namespace, how: dict[str, Any]) -> list[str]:
    """The result file's text: every number from ``results`` (what tricks_quick.json holds), the settings from the
    runs' config.yaml (``how``, see settings)."""
    tricks = "" if args.tricks == ",".join(TRICKS) else f" --tricks {args.tricks}"
    lines = ["# The bag of tricks on the quick search (digits, CPU)", "",
             f"`python experiments/tricks_study.py{tricks} --seeds {args.seeds}"
             f"{''.join(f' --seeds-for {s}' for s in args.seeds_for)}`: each trick's "
             f"`+experiment=quickstart` search ({how['search']}), then its "
             f"derived cell retrained by `+experiment=train_quick` ({how['train_epochs']} epochs). "
             "Mean over seeds (min-max).", "",
             "| trick | skip share (normal cell) | parameter-free share | retrained val. accuracy | search time (s) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for trick, rows in results.items():
        n = f"{len(rows)} seed{'s' * (len(rows) > 1)}"
        lines.append(f"| {TRICKS[trick][0]} ({n}) | {spread([r['skip_share'] for r in rows])} | "
                     f"{spread([r['param_free_share'] for r in rows])} | {spread([r['retrained_acc'] for r in rows])} | "
                     f"{statistics.mean(r['search_s'] for r in rows):.0f} |")
    lines += ["", "Derived cells:", ""]
    lines += [f"- {TRICKS[t][0]}, seed {r['seed']}: `{r['genotype']}`" for t, rows in results.items() for r in rows]
    return lines


def write(results: dict[str, list[dict]], args: argparse.Namespace, how: dict[str, Any]) -> None:
    """tricks_quick.json, the .md made from it, and the plot."""
    from darts_lite.plots import save_figure

    write_result(RESULTS / "tricks_quick.md", results, markdown(results, args, how), indent=1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(results)  # the short names: the labels of the table are too long for an axis
    for ax, key, title in ((axes[0], "skip_share", "skip share of the normal cell"),
                           (axes[1], "retrained_acc", "retrained validation accuracy")):
        for i, rows in enumerate(results.values()):
            values = [r[key] for r in rows]
            ax.scatter([i] * len(values), values, color="C0", alpha=0.6)
            ax.plot([i - 0.25, i + 0.25], [statistics.mean(values)] * 2, color="C3")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Tricks on the quick search (dots: seeds; line: mean)")
    fig.tight_layout()
    save_figure(fig, RESULTS / "tricks_quick.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tricks", default=",".join(TRICKS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--seeds-for", action="append", default=[], metavar="TRICK=SEEDS",
                   help="other seeds for one trick, e.g. selection=0 (its measuring takes ~8 min a seed on 2 cores)")
    p.add_argument("--runs", type=Path, default=RESULTS / "tricks_runs", help="where the run folders go")
    args = p.parse_args()
    tricks, seeds = args.tricks.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [t for t in tricks if t not in TRICKS]
    if unknown:
        sys.exit(f"unknown trick(s) {unknown}; choose from {', '.join(TRICKS)}")
    seeds_of = {t: seeds for t in tricks}
    for item in args.seeds_for:
        trick, _, values = item.partition("=")
        if trick not in TRICKS or not values:
            sys.exit(f"--seeds-for {item!r}: expected TRICK=SEEDS with TRICK one of {', '.join(TRICKS)}")
        seeds_of[trick] = [int(s) for s in values.split(",")]
    results = {t: [one(t, s, args.runs) for s in seeds_of[t]] for t in tricks}
    first = tricks[0]  # the settings every trick shares (its own switch aside)
    write(results, args, settings(*folders(first, seeds_of[first][0], args.runs)))


if __name__ == "__main__":
    main()
