"""darts_lite's search steps beside darts_lite at another commit, in one run: time and peak memory per step.

The papers' code does not change, so a step's ratio to its reference (``references_side_by_side.py``) moves by
exactly the factor this measures: darts_lite now against darts_lite at an earlier commit, the same harness (that
script's ``ours`` side: ``SearchModule.training_step`` under a Trainer, the same cases, sizes and batches), each case
in a process of its own, the two trees alternating ``--rounds`` times so that a drifting machine shows as a spread.

    git worktree add /tmp/base 8223a08        # or: mkdir /tmp/base && git archive 8223a08 | tar x -C /tmp/base
    python experiments/steps_beside_commit.py --baseline /tmp/base      # about 25 min on 2 cores (2 rounds)
    python experiments/steps_beside_commit.py --baseline /tmp/base --cases gdas,nb201_gdas --rounds 3

``--current`` is the tree measured as now (this checkout by default: give a copy when you edit this one while it
runs). Each tree is put first on PYTHONPATH of its processes; both need what the harness passes (``step_order``).
Writes experiments/results/steps_beside_commit.json and .md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from common import RESULTS, machine, machine_text, run_case, span, tree_commit, write_result
from references_side_by_side import CASES

HARNESS = Path(__file__).with_name("references_side_by_side.py")


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, required=True, help="a tree of darts_lite at the commit to compare with")
    p.add_argument("--current", type=Path, default=Path(__file__).resolve().parents[1],
                   help="the tree measured as now (default: this checkout)")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two trees per case")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--name", default="steps_beside_commit")
    args = p.parse_args()
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown cases {unknown} (cases: {', '.join(CASES)})")
    for tree in (args.baseline, args.current):
        if not (tree / "darts_lite" / "__init__.py").is_file():
            raise SystemExit(f"{tree} is not a darts_lite tree (no darts_lite/__init__.py in it)")
    trees = {"baseline": args.baseline.resolve(), "current": args.current.resolve()}
    rows = []
    for case in cases:
        runs: dict[str, list[dict]] = {"baseline": [], "current": []}
        for r in range(args.rounds):
            for side, tree in trees.items():
                print(f"{case}: round {r + 1}/{args.rounds}, {side} ...", flush=True)
                runs[side].append(run_case([HARNESS, "--reps", args.reps, "--warmup", args.warmup, "--run",
                                            f"ours:{case}"], env=_env(tree)))
        rows.append({"case": case, "label": CASES[case][0], **runs})
    result = {"machine": machine(), "commits": {side: tree_commit(tree) for side, tree in trees.items()},
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "cases": rows}
    c = result["commits"]
    lines = [
        "# darts_lite's search steps beside an earlier commit",
        "",
        f"Machine: {machine_text(result['machine'])}. Baseline: darts_lite at {c['baseline']}; current: {c['current']}.",
        f"Command: `python experiments/steps_beside_commit.py --baseline TREE` ({args.rounds} rounds, the trees "
        f"alternating; each run the median of {args.reps} steps after {args.warmup} warm-up, in a process of its own; "
        "the harness and sizes of references_side_by_side.py).",
        "",
        "| step | baseline s / peak MiB | current s / peak MiB | time, current / baseline | memory, current / baseline |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        bt, ct = [x["step_s"] for x in row["baseline"]], [x["step_s"] for x in row["current"]]
        bm, cm = [x["peak_mib"] for x in row["baseline"]], [x["peak_mib"] for x in row["current"]]
        lines.append(f"| {row['label']} | {span(bt, '.2f')} / {span(bm, ',.0f')} | {span(ct, '.2f')} / "
                     f"{span(cm, ',.0f')} | {span([t / b for t in ct for b in bt], '.2f')} | "
                     f"{span([m / b for m in cm for b in bm], '.2f')} |")
    lines += ["", "Time and memory ratios: every current run against every baseline run (their span). A step's ratio "
              "to the papers' code (references_side_by_side.md) is the baseline's ratio times this one."]
    write_result(RESULTS / f"{args.name}.md", result, lines)


if __name__ == "__main__":
    main()
