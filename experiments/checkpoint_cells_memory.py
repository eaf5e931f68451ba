"""Memory and time of the DARTS supernet's forward+backward with and without ``checkpoint_cells``.

    python experiments/checkpoint_cells_memory.py                     # paper size: C=16, 8 cells, batch 64, 32 px
    python experiments/checkpoint_cells_memory.py --batch 32 --reps 2

Each case runs in its own process (so its peak is its own): the process's max RSS growth over its
forward+backward steps, from after the network and the batch were built (CPU; on a GPU, max allocated), and the
median time of ``--reps`` steps after a warm-up step.
Also the bytes the autograd graph keeps for the backward pass (saved tensors), which does not depend on the
allocator. Writes results/checkpoint_cells_memory.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

from step_memory import add_size_arguments, measure_step

RESULTS = Path(__file__).parent / "results" / "checkpoint_cells_memory.md"


def one_case(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from darts_lite.spaces.darts.search import SearchNetwork

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    net = SearchNetwork(C=args.C, layers=args.layers, num_classes=10, relaxation=args.relaxation,
                        checkpoint_cells=args.checkpoint).to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def step() -> None:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()

    return {"checkpoint": args.checkpoint, **measure_step(step, args.reps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_arguments(parser)
    parser.add_argument("--relaxation", default="softmax")
    parser.add_argument("--checkpoint", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_case(args)))
        return
    rows = []
    for flag in (False, True):
        cmd = [sys.executable, __file__, "--one", "--C", str(args.C), "--layers", str(args.layers), "--batch",
               str(args.batch), "--size", str(args.size), "--relaxation", args.relaxation, "--reps", str(args.reps)]
        out = subprocess.run(cmd + (["--checkpoint"] if flag else []), capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    plain, lean = rows
    import torch

    lines = [
        "# checkpoint_cells: memory and time of the supernet's forward+backward",
        "",
        f"`python experiments/checkpoint_cells_memory.py --C {args.C} --layers {args.layers} --batch {args.batch} "
        f"--size {args.size} --relaxation {args.relaxation} --reps {args.reps}`; {platform.node()}, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"one run, each case in its own process. Peak: {plain['measure']} over the steps.",
        "",
        "| checkpoint_cells | kept for backward (MiB) | peak memory (MiB) | step (s) |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {r['checkpoint']} | {r['saved_mib']:.0f} | {r['peak_mib']:.0f} | {r['step_s']:.2f} |" for r in rows],
        "",
        f"With checkpoint_cells: {lean['saved_mib'] / plain['saved_mib']:.2f}x the tensors kept for backward, "
        f"{lean['peak_mib'] / plain['peak_mib']:.2f}x the peak memory, {lean['step_s'] / plain['step_s']:.2f}x the time.",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
