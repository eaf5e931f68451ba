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
        --autodl /tmp/refs/AutoDL --cases gdas,nb201_gdas,darts1,pc_darts,nb201_darts1,darts2   # about 40 min

Writes experiments/results/references_alternating.json and .md.
"""

from __future__ import annotations

import argparse
import statistics

from common import RESULTS, print_case, run_case, span, write_result
from references_side_by_side import (
    BATCH,
    CASES,
    SIZE,
    checked_cases,
    checkout_options,
    folders,
    machine_and_references,
    ours,
    record,
    reference_step,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    checkout_options(p)
    p.add_argument("--cases", default="gdas,nb201_gdas")
    p.add_argument("--pairs", type=int, default=8, help="pairs of steps per process, after the warm-up pairs")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="processes per case")
    p.add_argument("--run", help=argparse.SUPPRESS)  # internal: one case in this process
    args = p.parse_args()
    checkouts = folders(args)
    if args.run:
        # Lightning first: it asks whether torchvision is installed, which the DARTS family's references stub out
        import pytorch_lightning  # noqa: F401

        print_case(ours(args.run, args.pairs, args.warmup, beside=reference_step(args.run, checkouts)))
        return
    cases, options = checked_cases(args.cases, checkouts)
    command = [__file__, "--pairs", args.pairs, "--warmup", args.warmup, *options]
    rows = []
    for case in cases:
        print(f"{case} ...", flush=True)
        runs = [run_case([*command, "--run", case]) for _ in range(args.rounds)]
        rows.append({"case": case, "label": CASES[case][0], "runs": runs})
    result = record(args, checkouts, rows)
    lines = [
        "# darts_lite beside the papers' code, alternating in one process",
        "",
        machine_and_references(result),
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
