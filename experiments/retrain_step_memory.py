"""The evaluation network's training step (retraining) with one ReLU per state against one ReLU per op.

A state of an evaluation cell is read by several ops that start with a ReLU of it (DARTS_V2's normal cell reads each
of its two inputs with three separable convs, and a cell's output is read by the next two cells' preprocessing).
darts_lite rectifies such a state once for all of them (``darts_lite.spaces.ops.EdgeInput``); ``per_op`` is the
same network with a no-op forward hook on every ReLU, which makes each op compute and keep its own ReLU (a hooked
module must see every call): what the network did before. Same outputs; the step's time, peak memory and the
bytes autograd keeps are measured, each case in a process of its own, the two alternating ``--rounds`` times.

The step is the paper's retraining step on CIFAR-sized inputs (train mode, auxiliary head weighted 0.4, drop path,
channels-last as ``train.channels_last`` sets by default): forward, loss, backward.

    python experiments/retrain_step_memory.py                       # DARTS_V2, C=36, 20 cells, batch 96: ~4 min here
    python experiments/retrain_step_memory.py --C 16 --layers 8 --batch 32 --reps 2    # a quick look

Writes experiments/results/retrain_step_memory.json and .md.
"""

from __future__ import annotations

import argparse
from typing import Any

from common import RESULTS, machine, machine_text, print_case, run_case, span, write_result
from step_memory import measure_step

CASES = {"shared": "one ReLU per state (darts_lite's evaluation network)",
         "per_op": "one ReLU per op (every ReLU hooked: the network before)"}


def one_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from darts_lite import EvalNetwork

    torch.manual_seed(0)
    net = EvalNetwork(args.genotype, C=args.C, layers=args.layers, num_classes=10, auxiliary=True,
                      drop_path_prob=args.drop_path).train().to(memory_format=torch.channels_last)
    if case == "per_op":
        for m in net.modules():
            if isinstance(m, torch.nn.ReLU):
                m.register_forward_hook(lambda module, inputs, out: None)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))

    def step() -> None:
        net.zero_grad(set_to_none=True)
        logits, aux = net(x)
        (F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)).backward()

    return {"case": case, **measure_step(step, args.reps, per_use=False)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--genotype", default="DARTS_V2")
    p.add_argument("--C", type=int, default=36)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--batch", type=int, default=96)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--drop-path", type=float, default=0.2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two cases")
    p.add_argument("--run", choices=list(CASES), help=argparse.SUPPRESS)  # internal: one case in this process
    args = p.parse_args()
    if args.run:
        print_case(one_case(args.run, args))
        return
    options = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "run"]
    runs: dict[str, list[dict]] = {case: [] for case in CASES}
    for r in range(args.rounds):
        for case in CASES:
            print(f"round {r + 1}/{args.rounds}: {case} ...", flush=True)
            runs[case].append(run_case([__file__, *options, "--run", case]))
    result = {"command": "python experiments/retrain_step_memory.py " + " ".join(options), "machine": machine(),
              "settings": {k: v for k, v in vars(args).items() if k != "run"}, "cases": runs}
    shared, per_op = runs["shared"], runs["per_op"]
    lines = [
        "# The retraining step: one ReLU per state against one per op",
        "",
        f"Machine: {machine_text(result['machine'])}.",
        f"Command: `{result['command']}` ({args.genotype}, C={args.C}, {args.layers} cells, batch {args.batch}, "
        f"3x{args.size}x{args.size}, auxiliary head, drop path {args.drop_path}, channels-last; forward, loss, backward; "
        f"each run the median of {args.reps} steps in a process of its own, the cases alternating {args.rounds} times; "
        "peak: max RSS growth over the steps).",
        "",
        "| case | step (s) | peak (MiB) | kept for backward (MiB) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for case, label in CASES.items():
        rs = runs[case]
        lines.append(f"| {label} | {span([r['step_s'] for r in rs], '.2f')} | "
                     f"{span([r['peak_mib'] for r in rs], ',.0f')} | {span([r['saved_mib'] for r in rs], ',.0f')} |")
    lines += ["", f"Shared against per op: peak {span([s['peak_mib'] / o['peak_mib'] for s in shared for o in per_op], '.2f')}x, "
              f"kept {span([s['saved_mib'] / o['saved_mib'] for s in shared for o in per_op], '.2f')}x, "
              f"time {span([s['step_s'] / o['step_s'] for s in shared for o in per_op], '.2f')}x (every run against every run)."]
    write_result(RESULTS / "retrain_step_memory.md", result, lines)


if __name__ == "__main__":
    main()
