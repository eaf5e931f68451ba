"""The surrogate data set darts_lite ships, measured: how well its two trainings of a genotype agree, and how well
surrogates fitted on it rank genotypes they did not see.

Reads darts_lite/surrogate/data/digits_c0r0s0e2.csv (made by experiments/make_surrogate_data.py; its provenance in
the .json beside it), compares each genotype's seed-0 and seed-1 accuracies, then runs
`python -m darts_lite +experiment=surrogate surrogate.data=<that csv> surrogate.accuracy_unit=fraction` (all three
models; a finished run folder is read, not run again) and takes its held-out and K-fold scores.

    python experiments/surrogate_digits.py                 # about a minute on 2 cores

Writes experiments/results/surrogate_digits.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from common import RESULTS, ROOT, machine, machine_text, run_darts_lite, write_result

DATA = ROOT / "darts_lite" / "surrogate" / "data" / "digits_c0r0s0e2.csv"
SCORES = ("r2", "kendall_tau", "sparse_kendall_tau", "spearman")


def seed_agreement(rows: list[dict]) -> dict:
    """The accuracies' spread, and the rank agreement between the two seeds of each genotype."""
    from darts_lite.surrogate.metrics import kendall_tau, spearman

    by_genotype: dict[str, dict[int, dict]] = defaultdict(dict)
    for row in rows:
        by_genotype[row["genotype"]][int(row["seed"])] = row
    pairs = [(g[0], g[1]) for g in by_genotype.values() if 0 in g and 1 in g]
    accuracy = [float(r["accuracy"]) for r in rows]
    out = {
        "rows": len(rows), "genotypes": len(by_genotype), "pairs": len(pairs),
        "accuracy": {"min": min(accuracy), "max": max(accuracy), "mean": statistics.mean(accuracy),
                     "std": statistics.pstdev(accuracy)},
    }
    for column in ("accuracy", "val_accuracy"):
        a = [float(p[0][column]) for p in pairs]
        b = [float(p[1][column]) for p in pairs]
        out[f"seeds_{column}"] = {"spearman": spearman(a, b), "kendall_tau": kendall_tau(a, b)}
    return out


def markdown(result: dict) -> list[str]:
    s, f, data = result["seeds"], result["fit"], result["data"]
    acc = s["accuracy"]
    lines = [
        "# The shipped surrogate data set: genotypes trained on the digits",
        "",
        f"Machine: {machine_text(result['machine'])}.",
        "",
        f"`{data['file']}`: {s['rows']} rows, {s['genotypes']} genotypes, seeds {', '.join(map(str, data['seeds']))}; "
        f"made by `{data['command']}` (setting `{data['setting']}`, {data['training_time_s'] / 60:.0f} min of "
        f"training on {data['machine']}).",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| test accuracy: min / mean / max (std) | {acc['min']:.2f} / {acc['mean']:.2f} / {acc['max']:.2f} "
        f"({acc['std']:.2f}) |",
        f"| seed 0 vs seed 1, test accuracy: Spearman / Kendall tau | {s['seeds_accuracy']['spearman']:.2f} / "
        f"{s['seeds_accuracy']['kendall_tau']:.2f} |",
        f"| seed 0 vs seed 1, validation accuracy: Spearman / Kendall tau | {s['seeds_val_accuracy']['spearman']:.2f} / "
        f"{s['seeds_val_accuracy']['kendall_tau']:.2f} |",
        "",
        f"Surrogates fitted on it: `{f['command']}` ({f['wall_time_s']:.0f} s, all three models; "
        f"{f['train_rows']} genotypes fitted, {f['test_rows']} held out, the two seeds of a genotype averaged).",
        "",
        "| model | held-out R^2 | Kendall tau | sparse Kendall tau | Spearman | 5-fold sparse Kendall tau |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in f["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in SCORES)
                     + f" | {m['kfold_sparse_kendall_tau_mean']:.3f} +- {m['kfold_sparse_kendall_tau_std']:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "surrogate_digits", help="the surrogate run's folder")
    args = p.parse_args(argv)

    with open(DATA, newline="") as f:
        rows = list(csv.DictReader(f))
    provenance = json.loads(DATA.with_suffix(".json").read_text())
    m = provenance.get("machine", {})
    data = {"file": str(DATA.relative_to(ROOT)), "seeds": provenance["seeds"], "setting": provenance["setting"]["name"],
            "command": provenance["command"], "training_time_s": provenance["training_time_s"],
            "machine": ", ".join(str(m[k]) for k in ("node", "processor", "torch") if k in m)
            + (f", {m['threads']} thread(s)" if "threads" in m else "")}

    overrides = ["+experiment=surrogate", f"surrogate.data={DATA}", "surrogate.accuracy_unit=fraction"]
    summary = run_darts_lite(args.run, overrides, "surrogate fit")
    models = summary["models"]
    first = next(iter(models.values()))
    fit = {"command": "python -m darts_lite " + " ".join(overrides).replace(str(DATA), data["file"]),
           "wall_time_s": summary["wall_time_s"], "train_rows": first["train_rows"], "test_rows": first["test_rows"],
           "models": {name: {k: v for k, v in r.items() if k in SCORES or k.startswith("kfold_")}
                      for name, r in models.items()}}
    result = {"machine": machine(), "data": data, "seeds": seed_agreement(rows), "fit": fit}
    write_result(RESULTS / "surrogate_digits.md", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
