"""Memory and time of the DARTS supernet's forward+backward with and without ``checkpoint_cells``.

    python experiments/checkpoint_cells_memory.py                     # paper size: C=16, 8 cells, batch 64, 32 px
    python experiments/checkpoint_cells_memory.py --batch 32 --reps 2

Each case runs in its own process (so its peak is its own): the process's max RSS growth over its
forward+backward steps, from after the network and the batch were built (CPU; on a GPU, max allocated), and the
median time of ``--reps`` steps after a warm-up step.
Also the bytes the autograd graph keeps for the backward pass (saved tensors), which does not depend on the
allocator. Writes results/checkpoint_cells_memory.json and the .md made from it.
"""

from __future__ import annotations

import argparse
from typing import Any

from common import RESULTS, machine_text, print_case, run_case, write_result
from step_memory import add_size_arguments, measure_step, size_record

RESULT = RESULTS / "checkpoint_cells_memory.md"  # and .json


def one_case(args: argparse.Namespace) -> dict[str, Any]:
    """One case, in this process: the supernet with or without checkpoint_cells, measured by measure_step."""
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


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``. The table starts at line 5: the docs include the file's
    lines by number."""
    rows, ratio = result["cases"], result["checkpoint_vs_plain"]
    return [
        "# checkpoint_cells: memory and time of the supernet's forward+backward",
        "",
        f"`{result['command']}`; {machine_text(result['machine'])}; one run, each case in its own process. "
        f"Peak: {rows[0]['measure']} over the steps; step: median of {result['settings']['reps']} forward+backward "
        "passes after a warm-up.",
        "",
        "| checkpoint_cells | kept for backward (MiB) | peak memory (MiB) | step (s) |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {r['checkpoint']} | {r['saved_mib']:.0f} | {r['peak_mib']:.0f} | {r['step_s']:.2f} |" for r in rows],
        "",
        f"With checkpoint_cells: {ratio['saved_mib']:.2f}x the tensors kept for backward, "
        f"{ratio['peak_mib']:.2f}x the peak memory, {ratio['step_s']:.2f}x the time.",
        "",
        '"Kept for backward": the bytes of the tensors autograd saves over one forward pass, counted per use (a tensor',
        "saved by two ops counts twice). The peak is the process's, gradients and recomputation included.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_arguments(parser)
    parser.add_argument("--relaxation", default="softmax")
    parser.add_argument("--checkpoint", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print_case(one_case(args))
        return
    options = ["--C", str(args.C), "--layers", str(args.layers), "--batch", str(args.batch), "--size", str(args.size),
               "--relaxation", args.relaxation, "--reps", str(args.reps)]
    rows = []
    for flag in (False, True):
        rows.append(run_case([__file__, "--one", *options, *(["--checkpoint"] if flag else [])]))
        print(rows[-1], flush=True)
    plain, lean = rows
    result = {
        **size_record("checkpoint_cells_memory.py", options, args, rows),
        "checkpoint_vs_plain": {k: lean[k] / plain[k] for k in ("saved_mib", "peak_mib", "step_s")},
    }
    write_result(RESULT, result, markdown(result))


if __name__ == "__main__":
    main()
