"""Resource-aware search on the quickstart: the derived cell's multiply-adds as the penalty's weight grows.

Runs `python -m darts_lite +experiment=quickstart search.resource=flops search.resource_weight=W` once per weight
(weight 0 measures the costs and adds nothing: the plain search), then reads each run's metrics.csv for the last
epoch's search/derived_flops, search/expected_flops and val/acc, and the final genotype's op mix. Writes
experiments/results/resource_search.json and the .md made from it. A run whose folder already holds summary.json
is read, not repeated, and a killed one continues from its last checkpoint (runs in runs/resource_search/, or
--runs DIR).

    python experiments/resource_search.py                        # weights 0, 1, 10, seed 0
    python experiments/resource_search.py --weights 0 3 --seed 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, describe_search, last_metrics, machine, machine_text, run_config, run_darts_lite, write_result

RESULT = RESULTS / "resource_search.md"  # and .json
PARAM_FREE = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect")


def run(weight: float, seed: int, runs: Path) -> Path:
    """One search (or the one that finished before); returns its run folder."""
    folder = runs / f"w{weight:g}_seed{seed}"
    run_darts_lite(folder, ["+experiment=quickstart", "search.resource=flops", f"search.resource_weight={weight:g}",
                            f"seed={seed}", "logger=csv", "trainer.enable_progress_bar=false"], f"weight {weight:g}")
    return folder


def row(weight: float, folder: Path) -> dict[str, Any]:
    """What the result file shows of one finished run."""
    metrics = last_metrics(folder)
    genotype = json.loads((folder / "genotype.json").read_text())
    ops = [op for cell in ("normal", "reduce") for op, _ in genotype.get(cell, [])]
    return {"weight": weight, "derived_mmacs": metrics["search/derived_flops"],
            "expected_mmacs": metrics["search/expected_flops"], "fixed_mmacs": metrics["search/fixed_flops"],
            "val_acc": metrics.get("val/acc"), "param_free_share": sum(op in PARAM_FREE for op in ops) / len(ops),
            "wall_s": json.loads((folder / "summary.json").read_text())["wall_time_s"],
            "genotype": (folder / "genotype.txt").read_text().strip()}


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``. The table starts at line 7: the docs include the file's
    lines by number."""
    rows, seed = result["rows"], result["settings"]["seed"]
    base = rows[0]["derived_mmacs"] if rows and rows[0]["weight"] == 0 else None
    fixed = sorted({round(r["fixed_mmacs"], 4) for r in rows})
    fixed_text = f"{fixed[0]:.4f} M in every run" if len(fixed) == 1 else f"{fixed[0]:.4f}-{fixed[-1]:.4f} M"
    lines = [
        "# Resource-aware search on the quickstart: derived cell's multiply-adds vs the penalty's weight", "",
        f"`{result['command']}`; each run is `python -m darts_lite +experiment=quickstart search.resource=flops "
        f"search.resource_weight=W seed={seed}` ({result['search']}); {machine_text(result['machine'])}; "
        "one seed per weight.",
        "",
        "Costs in millions of multiply-adds per image of the searched cells' mixed edges in the supernet (the derived "
        "cell: its chosen (edge, op) pairs per cell type, summed over the cells of each type); the fixed parts (stem, "
        f"preprocessing, classifier) add {fixed_text}.",
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
    lines += ["", "val/acc: the supernet's at the end of the search, not a retrained derived cell's.",
              "", "Genotypes:", ""] + [f"- weight {r['weight']:g}: `{r['genotype']}`" for r in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 10.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "resource_search")
    args = parser.parse_args()
    rows, folders = [], []
    for weight in args.weights:
        folders.append(run(weight, args.seed, args.runs))
        rows.append(row(weight, folders[-1]))
        print(rows[-1], flush=True)
    result = {
        "command": f"python experiments/resource_search.py --weights {' '.join(f'{w:g}' for w in args.weights)} "
                   f"--seed {args.seed}",
        "settings": {"weights": args.weights, "seed": args.seed},
        "search": describe_search(run_config(folders[0])),
        "machine": machine(),
        "rows": rows,
    }
    write_result(RESULT, result, markdown(result))


if __name__ == "__main__":
    main()
