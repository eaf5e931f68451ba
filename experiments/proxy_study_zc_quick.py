"""The proxy study that decides, on a CPU: zero-cost and training proxies against a reference that ranks NAS-Bench-201
cells consistently on the bundled digits.

Runs the command the README gives, `python -m darts_lite +experiment=proxy_study_zc_quick`, in one folder (an
interrupted study continues with resume=true: every finished evaluation is read back from its archive), then records
its proxy_study.csv with the machine and the wall time.

    python experiments/proxy_study_zc_quick.py                  # about ten minutes on 2 cores
    python experiments/proxy_study_zc_quick.py --out /tmp/zc -- study.architectures=12

Writes experiments/results/proxy_study_zc_quick.json and .md (the README and the EcoNAS guide show figures from them)
and proxy_study_zc_quick.png (the run's proxy_study.png).
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import sys
from pathlib import Path

from common import RESULTS, ROOT, machine, machine_text, run_in_folder, write_result

COMMAND = ["+experiment=proxy_study_zc_quick"]


def _number(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def read_rows(folder: Path) -> list[dict]:
    with open(folder / "proxy_study.csv", newline="") as f:
        return [{k: (v if k == "setting" else _number(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def table(result: dict) -> list[str]:
    def num(v: float, fmt: str) -> str:
        return "n/a" if v is None or math.isnan(v) else format(v, fmt)

    lines = ["# A proxy study that decides: NAS-Bench-201 cells on the digits", "",
             f"Machine: {machine_text(result['machine'])}.",
             f"Command: `python -m darts_lite {' '.join(result['command'])}` ({result['architectures']} architectures), "
             f"{result['wall_time_s'] / 60:.1f} min in all.", "",
             f"The reference (`{result['reference']}`) against itself under the next seed: Spearman "
             f"{num(result['self_spearman'], '.2f')}. Rows ranked by Spearman with the reference's test accuracy; "
             "95% bootstrap intervals over the architectures; speed-up: the reference's training time over the "
             "proxy's (training or scoring), measured here.", "",
             "| proxy | kind | Spearman [95% CI] | Kendall | speed-up |", "| --- | --- | ---: | ---: | ---: |"]
    for r in result["rows"]:
        kind = "reference again" if "@seed" in r["setting"] else (
            "zero-cost" if r["setting"].startswith("zc_") else "training")
        lines.append(f"| {r['setting']} | {kind} | {num(r['spearman'], '.2f')} [{num(r['spearman_low'], '.2f')}, "
                     f"{num(r['spearman_high'], '.2f')}] | {num(r['kendall'], '.2f')} | {num(r['speedup'], ',.0f')}x |")
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "proxy_study_zc_quick", help="the study's folder")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the result files go")
    parser.add_argument("overrides", nargs="*", help="extra overrides for the study (after --)")
    args = parser.parse_args(argv)
    wall = run_in_folder(args.out, [*COMMAND, *args.overrides], "archive.sqlite")
    rows = sorted(read_rows(args.out), key=lambda r: -(r["spearman"] if not math.isnan(r["spearman"]) else -9))
    again = next(r for r in rows if "@seed" in r["setting"])
    result = {"machine": machine(), "command": [*COMMAND, *args.overrides], "wall_time_s": wall,
              "reference": again["setting"].split("@")[0], "architectures": int(again["architectures"]),
              "self_spearman": again["spearman"], "rows": rows}
    write_result(args.results / "proxy_study_zc_quick.md", result, table(result))
    shutil.copyfile(args.out / "proxy_study.png", args.results / "proxy_study_zc_quick.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
