"""Resource-aware search on the quickstart: the derived cell's multiply-adds as the penalty's weight grows.

Runs `python -m darts_lite +experiment=quickstart search.resource=flops search.resource_weight=W` once per weight
(weight 0 measures the costs and adds nothing: the plain search), then reads each run's metrics.csv for the last
epoch's search/derived_flops, search/expected_flops and val/acc, and the final genotype's op mix. Writes
experiments/results/resource_search.md. A run whose folder already holds summary.json is read, not repeated (runs
in runs/resource_search/, or --runs DIR).

    python experiments/resource_search.py                        # weights 0, 1, 10, seed 0
    python experiments/resource_search.py --weights 0 3 --seed 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
PARAM_FREE = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect")


def run(weight: float, seed: int, runs: Path) -> Path:
    """One search; returns its run folder."""
    folder = runs / f"w{weight:g}_seed{seed}"
    if (folder / "summary.json").is_file():
        print(f"weight {weight:g}: done before, read from {folder}", flush=True)
        return folder
    cmd = [sys.executable, "-m", "darts_lite", "+experiment=quickstart", "search.resource=flops",
           f"search.resource_weight={weight:g}", f"seed={seed}", "logger=csv", "trainer.enable_progress_bar=false",
           f"hydra.run.dir={folder}"]
    print(" ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "offline"}, stdout=subprocess.DEVNULL)
    return folder


def last_epoch(folder: Path) -> dict[str, float]:
    """The last value of each metric in the run's metrics.csv (rows hold some metrics each)."""
    last: dict[str, float] = {}
    with open(folder / "metrics.csv") as f:
        for row in csv.DictReader(f):
            last.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 10.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "resource_search")
    args = parser.parse_args()
    rows = []
    for weight in args.weights:
        folder = run(weight, args.seed, args.runs)
        metrics = last_epoch(folder)
        genotype = json.loads((folder / "genotype.json").read_text())
        ops = [op for cell in ("normal", "reduce") for op, _ in genotype.get(cell, [])]
        rows.append({"weight": weight, "derived_mmacs": metrics["search/derived_flops"],
                     "expected_mmacs": metrics["search/expected_flops"], "fixed_mmacs": metrics["search/fixed_flops"],
                     "val_acc": metrics.get("val/acc"), "param_free_share": sum(op in PARAM_FREE for op in ops) / len(ops),
                     "wall_s": json.loads((folder / "summary.json").read_text())["wall_time_s"],
                     "genotype": (folder / "genotype.txt").read_text().strip()})
        print(rows[-1], flush=True)
    machine = f"{platform.node()}, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    base = rows[0]["derived_mmacs"] if rows and rows[0]["weight"] == 0 else None
    lines = [
        "# Resource-aware search on the quickstart: derived cell's multiply-adds vs the penalty's weight", "",
        f"`python experiments/resource_search.py --weights {' '.join(f'{w:g}' for w in args.weights)} --seed {args.seed}`; "
        f"each run is `python -m darts_lite +experiment=quickstart search.resource=flops search.resource_weight=W "
        f"seed={args.seed}` (digits, 8x8 px, C=8, 5 cells, 12 epochs, 2 of warm-up); {machine}; one seed per weight.",
        "",
        "Costs in millions of multiply-adds per image of the searched cells' mixed edges in the supernet (the derived "
        "cell: its 8 chosen (edge, op) pairs per cell type, summed over the cells of each type); the fixed parts (stem, "
        f"preprocessing, classifier) add {rows[0]['fixed_mmacs']:.4f} M whatever the weight.",
        "",
        "| resource_weight | derived cells (M MACs) | vs weight 0 | expected, supernet (M MACs) | parameter-free ops in "
        "the derived cells | val/acc (supernet) | wall (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = f"{r['derived_mmacs'] / base:.2f}x" if base else "-"
        acc = "-" if r["val_acc"] is None else f"{r['val_acc']:.3f}"
        lines.append(f"| {r['weight']:g} | {r['derived_mmacs']:.4f} | {ratio} | {r['expected_mmacs']:.4f} | "
                     f"{r['param_free_share']:.0%} | {acc} | {r['wall_s']:.0f} |")
    lines += ["", "val/acc is the supernet's at the end of the search (one seed), not a retrained derived cell's: what the "
              "cheaper cells cost in accuracy once retrained is not measured here.",
              "", "Genotypes:", ""] + [f"- weight {r['weight']:g}: `{r['genotype']}`" for r in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "resource_search.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
