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
results/pc_darts_memory.md.

``--ab-relu`` times the two ReLU settings on one network in one process, alternating step by step so that both
see the same machine load, and appends the ratio of the medians to results/pc_darts_memory.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from step_memory import add_size_arguments, measure_step

RESULTS = Path(__file__).parent / "results" / "pc_darts_memory.md"

# name -> (SearchNetwork keywords, share_relu)
CASES: dict[str, tuple[dict, bool]] = {
    "own ReLU per op": ({}, False),
    "shared ReLU (default)": ({}, True),
    "PC-DARTS K=4": ({"partial_channels": 4}, True),
    "PC-DARTS K=4 + edge normalization": ({"partial_channels": 4, "edge_normalization": True}, True),
}


def one_case(args: argparse.Namespace) -> dict:
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


def ab_relu(args: argparse.Namespace) -> str:
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
    return (f"Same process, alternating (`python experiments/pc_darts_memory.py --ab-relu --C {args.C} --layers "
            f"{args.layers} --batch {args.batch} --size {args.size} --reps {args.reps}`): shared ReLU {shared:.2f} s, "
            f"own ReLU per op {own:.2f} s per step (medians of {args.reps}): {shared / own:.2f}x the time.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_arguments(parser)
    parser.add_argument("--relaxation", default="softmax")
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--ab-relu", action="store_true", help="time shared vs own ReLU in one process, interleaved")
    args = parser.parse_args()
    if args.ab_relu:
        line = ab_relu(args)
        print(line)
        with RESULTS.open("a") as f:
            f.write("\n" + line + "\n")
        return
    if args.case:
        print(json.dumps(one_case(args)))
        return
    options = ["--C", str(args.C), "--layers", str(args.layers), "--batch", str(args.batch), "--size", str(args.size),
               "--relaxation", args.relaxation, "--reps", str(args.reps)]
    rows = []
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, *options, "--case", case], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    by = {r["case"]: r for r in rows}
    own, shared = by["own ReLU per op"], by["shared ReLU (default)"]
    pc = by["PC-DARTS K=4"]
    import torch

    def ratio(a: dict, b: dict, key: str) -> str:
        return f"{a[key] / b[key]:.2f}x"

    lines = [
        "# Shared ReLU and PC-DARTS: memory and time of the supernet's forward+backward",
        "",
        f"`python experiments/pc_darts_memory.py {' '.join(options)}`; {platform.node()}, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"one run, each case in its own process. Peak: {own['measure']} over the steps; step: median of {args.reps} "
        "first-order forward+backward passes after a warm-up.",
        "",
        "| case | kept for backward (MiB) | peak memory (MiB) | step (s) |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {r['case']} | {r['saved_mib']:.0f} | {r['peak_mib']:.0f} | {r['step_s']:.2f} |" for r in rows],
        "",
        f"Shared ReLU vs each op's own: {ratio(shared, own, 'saved_mib')} the tensors kept for backward, "
        f"{ratio(shared, own, 'peak_mib')} the peak memory, {ratio(shared, own, 'step_s')} the time.",
        f"PC-DARTS K=4 vs the plain (shared-ReLU) supernet: {ratio(pc, shared, 'saved_mib')} the tensors kept for "
        f"backward, {ratio(pc, shared, 'peak_mib')} the peak memory, {ratio(pc, shared, 'step_s')} the time "
        f"(the goal: at most 0.5x the peak memory).",
        "",
        '"Kept for backward" counts each saved storage once (the shared rectified input is saved by several',
        "convolutions), unlike results/checkpoint_cells_memory.md, which counts per use. Step times of separate",
        "processes move by several percent from run to run on a shared machine; `--ab-relu` (below, when run) times",
        "the two ReLU settings interleaved in one process, the better measure of the shared ReLU's time.",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
