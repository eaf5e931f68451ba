"""darts_lite's search steps and the papers' code's, alternating in one process: the time ratio pair by pair.

references_side_by_side.py runs each side in a process of its own, which its memory figures need; but this machine's
speed drifts from one process to the next by more than the few percent a change of darts_lite makes, and a ratio of
two processes run minutes apart carries that drift. Here one process builds both steps of a case (the reference from
its checkout, run on the CPU as that script runs it, and darts_lite's ``SearchModule.training_step`` under a
Trainer, with the same batches) and runs them in turn: the reference's i-th step just after darts_lite's in even
steps and just before it in odd ones. Each pair's ratio sees the machine as it was for both; the table gives each
side's median, the median of the pairs' ratios and their range, over ``--rounds`` processes per case. Time only:
both sides share the process's memory, its heap (blocks one side freed serve the other's next tensors) and caches,
which a step in a process of its own does not.

    python experiments/references_alternating.py --autodl /tmp/refs/AutoDL --cases gdas,nb201_gdas   # about 3 min
    python experiments/references_alternating.py --darts /tmp/refs/darts --pc-darts /tmp/refs/PC-DARTS \\
        --autodl /tmp/refs/AutoDL --cases darts1,gdas,pc_darts,nb201_darts1,nb201_gdas

Writes experiments/results/references_alternating.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from common import RESULTS, machine, machine_text, print_case, run_case, span, tree_commit, write_result
from references_side_by_side import BATCH, CASES, SIZE, ours, reference_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--darts", type=Path, help="a checkout of github.com/quark0/darts")
    p.add_argument("--pc-darts", type=Path, help="a checkout of github.com/yuhuixu1993/PC-DARTS")
    p.add_argument("--autodl", type=Path, help="a checkout of github.com/D-X-Y/AutoDL-Projects")
    p.add_argument("--cases", default="gdas,nb201_gdas")
    p.add_argument("--pairs", type=int, default=8, help="pairs of steps per process, after the warm-up pairs")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="processes per case")
    p.add_argument("--run", help=argparse.SUPPRESS)  # internal: one case in this process
    args = p.parse_args()
    folders = {"darts": args.darts, "pc_darts": args.pc_darts, "autodl": args.autodl}
    if args.run:
        print_case(ours(args.run, args.pairs, args.warmup, beside=reference_step(args.run, folders)))
        return
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    missing = sorted({CASES[c][2][0] for c in cases if c in CASES and folders[CASES[c][2][0]] is None})
    if unknown or missing:
        sys.exit(f"unknown cases {unknown} (cases: {', '.join(CASES)})" if unknown else
                 f"the cases need --{', --'.join(m.replace('_', '-') for m in missing)} (a checkout of each)")
    command = [__file__, "--pairs", args.pairs, "--warmup", args.warmup]
    for key, folder in folders.items():
        if folder is not None:
            command += [f"--{key.replace('_', '-')}", folder]
    rows = []
    for case in cases:
        print(f"{case} ...", flush=True)
        runs = [run_case([*command, "--run", case]) for _ in range(args.rounds)]
        rows.append({"case": case, "label": CASES[case][0], "runs": runs})
    repos = {key: tree_commit(folder) for key, folder in folders.items() if folder is not None}
    result = {"machine": machine(), "reference_commits": repos, "settings": vars(args) | {"batch": BATCH},
              "cases": rows}
    lines = [
        "# darts_lite beside the papers' code, alternating in one process",
        "",
        f"Machine: {machine_text(result['machine'])}. References: "
        + ", ".join(f"{k} {v}" for k, v in repos.items()) + " (run on the CPU, unchanged but for `.cuda()`).",
        f"Command: `python experiments/references_alternating.py --cases {args.cases} --pairs {args.pairs} --rounds "
        f"{args.rounds}` (batch {BATCH}, 3x{SIZE}x{SIZE}; per process {args.warmup} warm-up pair, then {args.pairs} "
        "pairs, the reference's step after darts_lite's in even pairs and before it in odd ones; each side's median "
        "per process, the ratios of all pairs).",
        "",
        "| step | darts_lite s | reference s | time ratio, median of the pairs (range) | pairs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratios = [mine / ref for run in r["runs"] for mine, ref in zip(run["times_s"], run["beside_s"])]
        lines.append(f"| {r['label']} | {span([run['step_s'] for run in r['runs']], '.2f')} | "
                     f"{span([statistics.median(run['beside_s']) for run in r['runs']], '.2f')} | "
                     f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {len(ratios)} |")
    write_result(RESULTS / "references_alternating.md", result, lines)


if __name__ == "__main__":
    main()
