"""darts_lite's DARTS supernet beside NNI 3.0's, one forward+backward step each: time and peak memory.

    python -m venv /tmp/nni-venv && /tmp/nni-venv/bin/pip install torch==2.13.0 pytorch_lightning nni==3.0
    python experiments/nni_side_by_side.py --nni-python /tmp/nni-venv/bin/python

NNI is never a dependency of darts_lite: its case runs under the interpreter given by ``--nni-python`` (a virtual
environment that sees this torch and adds nni). Both supernets are the paper's size (C=16, 8 cells, 4 nodes, the
DARTS ops, CIFAR-sized 32 px input, batch 64 by default) with each framework's defaults otherwise: darts_lite's search
runs convolutions channels-last (search.channels_last, on by default) and its BatchNorm affine-free; NNI's
``nni.nas.hub.pytorch.DARTS`` space made differentiable by ``nni.nas.strategy.DARTS().mutate_model``. A step is the
weight step's work: forward, cross-entropy, backward into every parameter (alphas included, as each framework's
first-order step does).

Each case runs in its own process, so its peak is its own: the process's max RSS growth over its steps from after
the network and the batch were built (CPU), and the median time of ``--reps`` steps after a warm-up step; also the
bytes autograd keeps for the backward pass (saved tensors, per use), which does not depend on the allocator.
Writes results/nni_side_by_side.json and the .md made from it (both whole), or ``--out`` and the .json beside it: the
.md keeps earlier runs below the newest table (whose lines 5-16 the search guide includes), so write a new run
elsewhere and merge it by hand. ``--threads`` sets each case's torch threads (torch's default otherwise).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, machine, machine_text, print_case, run_case, write_result
from step_memory import add_size_arguments, measure_step

RESULT = RESULTS / "nni_side_by_side.md"  # and .json
CASES = {
    "darts_lite": "darts_lite, defaults (channels_last)",
    "darts_lite_nn_conv": "darts_lite, defaults, depthwise convs as nn.Conv2d (before 2026-11-30)",
    "darts_lite_nchw": "darts_lite, channels_last off",
    "darts_lite_checkpoint": "darts_lite, checkpoint_cells=True",
    "nni": "NNI 3.0 DARTS, defaults",
}


def build(case: str, args: argparse.Namespace):
    """(network, parameters that train) of ``case``."""
    import torch

    if case == "nni":
        import warnings

        warnings.filterwarnings("ignore")
        from nni.nas.hub.pytorch import DARTS as DartsSpace
        from nni.nas.strategy import DARTS as DartsStrategy

        strategy = DartsStrategy()
        net = strategy.mutate_model(DartsSpace(width=args.C, num_cells=args.layers, dataset="cifar"))
        alphas = list(strategy._arch_parameters.values())
        return net, [*net.parameters(), *alphas]
    from darts_lite.spaces.darts.search import SearchNetwork

    if case == "darts_lite_nn_conv":
        # the step as it was before DepthwiseConv2d's fast path (the strided dilated convs run as such)
        from torch import nn

        from darts_lite.spaces.darts.ops import DepthwiseConv2d

        DepthwiseConv2d.forward = nn.Conv2d.forward
    net = SearchNetwork(C=args.C, layers=args.layers, num_classes=10, checkpoint_cells=case == "darts_lite_checkpoint")
    if case != "darts_lite_nchw":
        net = net.to(memory_format=torch.channels_last)
    return net, list(net.parameters())


def one_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One case of CASES, in this process (for "nni": under the interpreter that has nni), measured by measure_step."""
    import torch
    import torch.nn.functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net, params = build(case, args)
    net.train()
    x = torch.randn(args.batch, 3, args.size, args.size)
    if case.startswith("darts_lite") and case != "darts_lite_nchw":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))

    def step() -> None:
        for p in params:
            p.grad = None
        F.cross_entropy(net(x), y).backward()

    measured = measure_step(step, args.reps)
    alphas_with_grad = sum(1 for p in params if p.grad is not None)
    return {"case": case, **measured,
            "weights": sum(p.numel() for p in net.parameters()), "with_grad": alphas_with_grad,
            "params": len(params), "torch": torch.__version__, "threads": torch.get_num_threads()}


# the supernet's goals against NNI (issue 29): (what, case, measure, at most this ratio to NNI's)
GOALS = [("defaults: time", "darts_lite", "step_s", 0.6),
         ("defaults: peak memory", "darts_lite", "peak_mib", 0.7),
         ("checkpoint_cells: peak memory", "darts_lite_checkpoint", "peak_mib", 0.4),
         ("checkpoint_cells: time", "darts_lite_checkpoint", "step_s", 1.0)]


def goals(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal of GOALS with the measured ratio to NNI's and whether it was met."""
    out = []
    for what, case, key, goal in GOALS:
        ratio = rows[case][key] / rows["nni"][key]
        out.append({"what": what, "case": case, "measure": key, "ratio": ratio, "goal": goal, "met": ratio <= goal})
    return out


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``. The table starts at line 5 and the goals end at line 16:
    the docs include the file's lines by number."""
    rows = result["cases"]
    nni = rows["nni"]
    return [
        "# darts_lite beside NNI 3.0: the DARTS supernet's forward+backward",
        "",
        f"`{result['command']}`; {machine_text(result['machine'])}; one run, each case in its own process, one after "
        f"the other. Peak: {nni['measure']} over the steps; step: median of {result['settings']['reps']} steps after a "
        "warm-up.",
        "",
        "| case | parameters | kept for backward (MiB) | peak memory (MiB) | step (s) | time vs NNI | peak vs NNI |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {CASES[c]} | {r['weights']:,} | {r['saved_mib']:.0f} | {r['peak_mib']:.0f} | {r['step_s']:.2f} | "
          f"{r['step_s'] / nni['step_s']:.2f}x | {r['peak_mib'] / nni['peak_mib']:.2f}x |" for c, r in rows.items()],
        "",
        *[f"- {g['what']} {g['ratio']:.2f}x NNI's (goal <= {g['goal']}x): {'met' if g['met'] else 'NOT met'}"
          for g in result["goals"]],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nni-python", default=sys.executable, help="an interpreter that imports nni==3.0 and this torch")
    add_size_arguments(parser)
    parser.add_argument("--threads", type=int, default=0, help="torch threads of each case (0: torch's default)")
    parser.add_argument("--out", type=Path, default=RESULT,
                        help="where to write the table (default: %(default)s); the .json goes beside it")
    parser.add_argument("--one", choices=list(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print_case(one_case(args.one, args))
        return
    shared = ["--C", str(args.C), "--layers", str(args.layers), "--batch", str(args.batch), "--size", str(args.size),
              "--reps", str(args.reps), "--threads", str(args.threads)]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}  # each case sees this project, none of this environment
    rows = {}
    for case in CASES:
        python = args.nni_python if case == "nni" else sys.executable
        rows[case] = run_case([__file__, "--one", case, *shared], python=python, env=env)
        print(rows[case], flush=True)
    result = {
        "command": f"python experiments/nni_side_by_side.py --nni-python <venv with nni==3.0> --C {args.C} "
                   f"--layers {args.layers} --batch {args.batch} --size {args.size} --reps {args.reps}"
                   f"{f' --threads {args.threads}' if args.threads else ''}",
        "settings": {"C": args.C, "layers": args.layers, "batch": args.batch, "size": args.size, "reps": args.reps,
                     "threads": args.threads},
        "machine": machine(threads=rows["nni"]["threads"]),
        "cases": rows,
        "goals": goals(rows),
    }
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
