"""Memory and time of the DARTS supernet's forward+backward: each op's own ReLU vs the edge's shared ReLU, and
PC-DARTS's partial channels (K=4) with and without edge normalization.

    python experiments/pc_darts_memory.py                 # paper size: C=16, 8 cells, batch 64, 32 px
    python experiments/pc_darts_memory.py --batch 32 --reps 3
    python experiments/pc_darts_memory.py --ab-relu --batch 32 --reps 5   # shared vs own ReLU, one process, interleaved

Each case runs in its own process (so its peak is its own): the process's max RSS growth over its
forward+backward steps, from after the network and the batch were built (CPU; on a GPU, max allocated), and the
median time of ``--reps`` first-order steps (forward, cross-entropy, backward to weights and alphas) after a
warm-up step. Also the bytes the autograd graph keeps for the backward pass (saved tensors, each storage counted
once however many ops save it), which does not depend on the allocator. The "own ReLU" case runs every op of a
mixed edge whole (its own ReLU), as the supernet did before the edges shared one. Writes
results/pc_darts_memory.json and the .md made from it.

``--ab-relu`` times the two ReLU settings on one network in one process, alternating step by step so that both
see the same machine load, adds the medians to results/pc_darts_memory.json (key ab_relu) and appends their line
to the .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from common import RESULTS, machine, machine_text, print_case, run_case, write_result
from step_memory import add_size_arguments, measure_step, size_record

RESULT = RESULTS / "pc_darts_memory.md"  # and .json
PC_PEAK_GOAL = 0.5  # PC-DARTS K=4: at most this share of the plain supernet's peak memory

# name -> (SearchNetwork keywords, share_relu)
CASES: dict[str, tuple[dict, bool]] = {
    "own ReLU per op": ({}, False),
    "shared ReLU (default)": ({}, True),
    "PC-DARTS K=4": ({"partial_channels": 4}, True),
    "PC-DARTS K=4 + edge normalization": ({"partial_channels": 4, "edge_normalization": True}, True),
}


def one_case(args: argparse.Namespace) -> dict[str, Any]:
    """One case of CASES (``--case``), in this process, measured by measure_step."""
    import torch
    import torch.nn.functional as F

    from darts_lite.spaces.darts.search import MixedEdge, SearchNetwork

    kwargs, share_relu = CASES[args.case]
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    net = SearchNetwork(C=args.C, layers=args.layers, num_classes=10, relaxation=args.relaxation, **kwargs).to(device)
    for m in net.modules():
        if isinstance(m, MixedEdge):
            m.share_relu = share_relu
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def step() -> None:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()

    return {"case": args.case, **measure_step(step, args.reps, per_use=False)}


def ab_relu(args: argparse.Namespace) -> dict[str, Any]:
    """The two ReLU settings on one network in this process, alternating step by step: their median step times."""
    import torch
    import torch.nn.functional as F

    from darts_lite.spaces.darts.search import MixedEdge, SearchNetwork

    torch.manual_seed(0)
    net = SearchNetwork(C=args.C, layers=args.layers, num_classes=10, relaxation=args.relaxation)
    edges = [m for m in net.modules() if isinstance(m, MixedEdge)]
    x, y = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,))
    times: dict[bool, list[float]] = {True: [], False: []}
    for rep in range(args.reps + 1):  # the first round warms up
        for share in (rep % 2 == 0, rep % 2 == 1):
            for m in edges:
                m.share_relu = share
            net.zero_grad(set_to_none=True)
            start = time.perf_counter()
            F.cross_entropy(net(x), y).backward()
            if rep:
                times[share].append(time.perf_counter() - start)
    shared, own = statistics.median(times[True]), statistics.median(times[False])
    return {"command": f"python experiments/pc_darts_memory.py --ab-relu --C {args.C} --layers {args.layers} "
                       f"--batch {args.batch} --size {args.size} --reps {args.reps}",
            "machine": machine(), "reps": args.reps, "shared_s": shared, "own_s": own, "shared_vs_own": shared / own}


def ab_relu_line(ab: dict[str, Any]) -> str:
    """The line --ab-relu appends to the result file, every number from its record."""
    return (f"Same process, alternating (`{ab['command']}`; {machine_text(ab['machine'])}): shared ReLU "
            f"{ab['shared_s']:.2f} s, own ReLU per op {ab['own_s']:.2f} s per step (medians of {ab['reps']}): "
            f"{ab['shared_vs_own']:.2f}x the time.")


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``. The table starts at line 5: the docs include the file's
    lines by number."""
    rows, shared_own, pc_shared = result["cases"], result["shared_vs_own"], result["pc_vs_shared"]
    met = "met" if pc_shared["peak_mib"] <= result["pc_peak_goal"] else "NOT met"
    return [
        "# Shared ReLU and PC-DARTS: memory and time of the supernet's forward+backward",
        "",
        f"`{result['command']}`; {machine_text(result['machine'])}; one run, each case in its own process. "
        f"Peak: {rows[0]['measure']} over the steps; step: median of {result['settings']['reps']} "
        "first-order forward+backward passes after a warm-up.",
        "",
        "| case | kept for backward (MiB) | peak memory (MiB) | step (s) |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {r['case']} | {r['saved_mib']:.0f} | {r['peak_mib']:.0f} | {r['step_s']:.2f} |" for r in rows],
        "",
        f"Shared ReLU vs each op's own: {shared_own['saved_mib']:.2f}x the tensors kept for backward, "
        f"{shared_own['peak_mib']:.2f}x the peak memory, {shared_own['step_s']:.2f}x the time.",
        f"PC-DARTS K=4 vs the plain (shared-ReLU) supernet: {pc_shared['saved_mib']:.2f}x the tensors kept for "
        f"backward, {pc_shared['peak_mib']:.2f}x the peak memory, {pc_shared['step_s']:.2f}x the time "
        f"(goal: at most {result['pc_peak_goal']:g}x the peak memory: {met}).",
        "",
        '"Kept for backward" counts each saved storage once (the shared rectified input is saved by several',
        "convolutions), unlike results/checkpoint_cells_memory.md, which counts per use. `--ab-relu` times the two",
        "ReLU settings on one network in one process, alternating step by step; its line follows when it was run.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_arguments(parser)
    parser.add_argument("--relaxation", default="softmax")
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--ab-relu", action="store_true", help="time shared vs own ReLU in one process, interleaved")
    args = parser.parse_args()
    if args.ab_relu:
        ab = ab_relu(args)
        json_file = RESULT.with_suffix(".json")
        result = json.loads(json_file.read_text()) if json_file.is_file() else {}
        result["ab_relu"] = ab
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(result, indent=2) + "\n")
        line = ab_relu_line(ab)
        print(line)
        with RESULT.open("a") as f:
            f.write("\n" + line + "\n")
        return
    if args.case:
        print_case(one_case(args))
        return
    options = ["--C", str(args.C), "--layers", str(args.layers), "--batch", str(args.batch), "--size", str(args.size),
               "--relaxation", args.relaxation, "--reps", str(args.reps)]
    rows = []
    for case in CASES:
        rows.append(run_case([__file__, *options, "--case", case]))
        print(rows[-1], flush=True)
    by = {r["case"]: r for r in rows}
    own, shared, pc = by["own ReLU per op"], by["shared ReLU (default)"], by["PC-DARTS K=4"]
    keys = ("saved_mib", "peak_mib", "step_s")
    result = {
        **size_record("pc_darts_memory.py", options, args, rows),
        "shared_vs_own": {k: shared[k] / own[k] for k in keys},
        "pc_vs_shared": {k: pc[k] / shared[k] for k in keys},
        "pc_peak_goal": PC_PEAK_GOAL,
    }
    write_result(RESULT, result, markdown(result))


if __name__ == "__main__":
    main()
