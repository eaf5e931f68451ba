"""The quick leaderboard: every one-shot method x seeds on the NAS-Bench-201 space, on the bundled digits, on a CPU.

Runs the command the README gives, `python -m darts_lite +experiment=leaderboard_quick`, in one folder (an
interrupted run continues with resume=true: finished jobs are read back), then records its leaderboard.csv with the
machine and the wall time.

    python experiments/leaderboard_quick.py                         # about a quarter of an hour on 2 cores
    python experiments/leaderboard_quick.py --out /tmp/lb -- leaderboard.seeds=[0]

Writes experiments/results/leaderboard_quick.json and .md (the README and the leaderboard guide show figures from
them) and leaderboard_quick.png (the run's leaderboard.png).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
from pathlib import Path

from common import RESULTS, ROOT, machine, machine_text, run_in_folder, write_result

COMMAND = ["+experiment=leaderboard_quick"]


def summarise(rows: list[dict]) -> list[dict]:
    """Per method: mean and standard deviation of the accuracy over its seeds, and its seeds' values; best first."""
    methods: dict[str, list[dict]] = {}
    for r in rows:
        methods.setdefault(r["method"], []).append(r)
    out = []
    for method, rs in methods.items():
        acc = [float(r["accuracy"]) for r in rs]
        out.append({"method": method, "seeds": len(rs), "accuracy": acc, "mean": statistics.fmean(acc),
                    "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                    "param_free_share": statistics.fmean(float(r["param_free_share"]) for r in rs),
                    "search_s": statistics.fmean(float(r["search_s"]) for r in rs),
                    "train_s": statistics.fmean(float(r["train_s"]) for r in rs)})
    return sorted(out, key=lambda m: -m["mean"])


def table(result: dict) -> list[str]:
    lines = ["# The quick leaderboard", "", f"Machine: {machine_text(result['machine'])}.",
             f"Command: `python -m darts_lite {' '.join(result['command'])}` ({result['jobs']} jobs: "
             f"{len(result['methods'])} methods x {len(result['seeds'])} seeds), {result['wall_time_s'] / 60:.1f} min "
             "in all.", "",
             "| rank | method | accuracy (%) | per seed | parameter-free share | search (s) | retraining (s) |",
             "| ---: | --- | ---: | --- | ---: | ---: | ---: |"]
    for rank, m in enumerate(result["methods"], 1):
        seeds = ", ".join(f"{a:.1f}" for a in m["accuracy"])
        lines.append(f"| {rank} | {m['method']} | {m['mean']:.2f} +- {m['std']:.2f} | {seeds} | "
                     f"{m['param_free_share']:.2f} | {m['search_s']:.0f} | {m['train_s']:.0f} |")
    lines += ["", "Accuracy: each found cell retrained briefly on the digits' training split, measured on their test "
              "split. On 8x8 digits with searches of a few epochs every cell reaches a similar accuracy: the table "
              "shows that each method runs end to end and how its cells compare under one small budget, not how the "
              "methods rank on CIFAR-10.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "leaderboard_quick", help="the leaderboard's folder")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the result files go")
    parser.add_argument("extra", nargs="*", help="more overrides for the leaderboard (after --)")
    args = parser.parse_args(argv)
    folder = args.out.resolve()
    wall = run_in_folder(folder, [*COMMAND, *args.extra], "jobs")
    rows = list(csv.DictReader(open(folder / "leaderboard.csv")))
    failed = [r for r in rows if r["status"] != "done"]
    if failed:
        print(f"{len(failed)} jobs failed; see {folder / 'leaderboard.md'}", file=sys.stderr)
        return 1
    result = {"machine": machine(), "command": [*COMMAND, *args.extra], "jobs": len(rows), "wall_time_s": wall,
              "seeds": sorted({int(r["seed"]) for r in rows}), "rows": rows, "methods": summarise(rows)}
    write_result(args.results / "leaderboard_quick.md", result, table(result))
    shutil.copyfile(folder / "leaderboard.png", args.results / "leaderboard_quick.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
