"""The quickstart over seeds: wall time, validation accuracy and how decided the search ends, per seed.

Runs the README's main job, `python -m darts_lite +experiment=quickstart seed=S`, once per seed in its own
process (one after another: two torch jobs at once slow each other down) and reads each run's summary.json.
A run folder that already finished is read, not run again; an interrupted one resumes from its checkpoint.

    python experiments/quickstart_seeds.py                    # seeds 0, 1, 2 (about 2-4 minutes each on 2 cores)
    python experiments/quickstart_seeds.py --seeds 0 --out /tmp/qs

Writes experiments/results/quickstart_seeds.json and .md (the README and docs show figures from them), and the first
seed's alphas_normal.png and normal.png as quickstart_seeds_alphas_normal.png and quickstart_seeds_normal_cell.png.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from common import RESULTS, machine, machine_text, run_darts_lite, write_result

MEASURES = ("max_prob", "margin", "entropy", "param_free_share")


def run_seed(seed: int, folder: Path, extra: list[str]) -> dict:
    """The quickstart at one seed in ``folder`` (run unless it finished before); its row."""
    s = run_darts_lite(folder, ["+experiment=quickstart", f"seed={seed}", *extra], f"seed {seed}")
    d = s["decision"]
    return {
        "seed": seed,
        "run_dir": str(folder),
        "wall_time_s": s["wall_time_s"],
        "val_acc": s["metrics"]["val/acc"],
        "genotype": s["genotype"],
        "normal": {k: d["normal"][k] for k in MEASURES},
        "reduce": {k: d["reduce"][k] for k in MEASURES},
    }


def table(result: dict) -> str:
    lines = [
        "# The quickstart over seeds",
        "",
        f"Machine: {machine_text(result['machine'])}.",
        f"Command: `{result['command']} seed=S`, one seed at a time.",
        "",
        "| seed | wall time (s) | val. accuracy | normal max_prob | normal margin | normal param_free_share "
        "| reduce max_prob |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["runs"]:
        lines.append(f"| {r['seed']} | {r['wall_time_s']:.0f} | {100 * r['val_acc']:.1f}% | "
                     f"{r['normal']['max_prob']:.3f} | {r['normal']['margin']:.3f} | "
                     f"{r['normal']['param_free_share']:.2f} | {r['reduce']['max_prob']:.3f} |")
    s = result["summary"]
    lines += ["", f"Mean over seeds: wall time {s['wall_time_s_mean']:.0f} s, validation accuracy "
              f"{100 * s['val_acc_mean']:.1f}% (min {100 * s['val_acc_min']:.1f}%, max {100 * s['val_acc_max']:.1f}%), "
              f"normal max_prob {s['normal_max_prob_mean']:.3f}, normal margin {s['normal_margin_mean']:.3f}.", ""]
    return "\n".join(lines)


def summarise(runs: list[dict]) -> dict:
    accs = [r["val_acc"] for r in runs]
    return {
        "wall_time_s_mean": statistics.mean(r["wall_time_s"] for r in runs),
        "wall_time_s_max": max(r["wall_time_s"] for r in runs),
        "val_acc_mean": statistics.mean(accs),
        "val_acc_min": min(accs),
        "val_acc_max": max(accs),
        "normal_max_prob_mean": statistics.mean(r["normal"]["max_prob"] for r in runs),
        "normal_margin_mean": statistics.mean(r["normal"]["margin"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="runs/quickstart_seeds", help="run folders go here, one per seed")
    p.add_argument("--name", default="quickstart_seeds", help="writes results/<name>.json and .md")
    p.add_argument("overrides", nargs="*", help="more Hydra overrides for every run (e.g. search.epochs=3)")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out).resolve()
    runs = [run_seed(s, out / f"seed{s}", args.overrides) for s in seeds]
    result = {"machine": machine(), "command": " ".join(["python -m darts_lite +experiment=quickstart",
                                                        *args.overrides]),
              "runs": runs, "summary": summarise(runs)}
    write_result(RESULTS / f"{args.name}.md", result, table(result).splitlines())
    # the first seed's pictures, which the README and the docs show (experiments/figures.py copies them to docs/img)
    for picture, name in (("alphas_normal.png", "alphas_normal"), ("normal.png", "normal_cell")):
        if (out / f"seed{seeds[0]}" / picture).is_file():
            shutil.copyfile(out / f"seed{seeds[0]}" / picture, RESULTS / f"{args.name}_{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
