"""What recomputing the cheap tensors of the DARTS supernet costs and saves: a study for the memory issue.

    python experiments/recompute_policies.py                 # paper size: C=16, 8 cells, batch 64, 32 px
    python experiments/recompute_policies.py --batch 32 --reps 2

The supernet's forward+backward (softmax relaxation, channels_last, as a search runs it) under four policies, each
in its own process (so that its peak is its own):

- ``plain``: darts_lite's default: autograd keeps what each op saves;
- ``cells``: ``checkpoint_cells=True``: only each cell's inputs are kept, the whole cell is recomputed in backward;
- ``sac_conv``: PyTorch's selective activation checkpointing (torch.utils.checkpoint with
  create_selective_checkpoint_contexts) around every mixed edge, keeping every convolution's output and
  recomputing the rest (ReLU, BatchNorm, pooling, the weighted sum) in backward;
- ``sac_pointwise``: the same, keeping only the outputs of the ungrouped (1x1) convolutions and recomputing the
  depthwise ones too.

The selective regions run every op under a Python dispatch mode: a cost per op, large beside a tiny network's
arithmetic and small beside the paper size's (results/recompute_policies.md has the paper size; a tiny run such
as ``--C 4 --layers 3 --batch 8 --size 8`` shows the other end).

The selective policies are built here, around darts_lite's edges, without changing darts_lite: they are the design
the memory issue proposes, measured before it is built. A recomputation leaves BatchNorm's running statistics
alone (momentum 0 and no step count during the recompute).

Per policy: the median time of ``--reps`` forward+backward passes after a warm-up, the peak (process max RSS growth
on the CPU, max allocated on a GPU), the bytes autograd keeps for backward outside recomputed regions, and whether
the gradients and BatchNorm buffers after the same passes are bit-identical to ``plain``'s. Writes
results/recompute_policies.json and the .md made from it.
"""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

from common import RESULTS, machine_text, print_case, run_case, write_result
from step_memory import add_size_arguments, measure_step, size_record

RESULT = RESULTS / "recompute_policies.md"  # and .json
POLICIES = {
    "plain": "autograd keeps what each op saves (the default)",
    "cells": "checkpoint_cells=True: each cell recomputed whole",
    "sac_conv": "selective, per edge: convolution outputs kept, the rest recomputed",
    "sac_pointwise": "selective, per edge: 1x1 convolution outputs kept, the rest recomputed",
}


def selective_edges(net: Any, keep_depthwise: bool) -> list[int]:
    """Wraps every mixed edge of ``net`` in selective activation checkpointing: convolution outputs kept (only the
    ungrouped ones unless ``keep_depthwise``), everything else recomputed in the backward pass. Returns a one-item
    list counting the bytes the policy has kept (the caller resets it)."""
    import functools

    import torch
    from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

    from darts_lite.spaces.darts.search import MixedEdge
    from darts_lite.spaces.supernet import tracking_batchnorms

    convolution = torch.ops.aten.convolution.default
    kept = [0]

    def policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        keep = op is convolution and (keep_depthwise or args[8] == 1)  # args[8]: groups
        if keep:
            kept[0] += ctx.op_output.numel() * ctx.op_output.element_size()
        return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE

    context = functools.partial(create_selective_checkpoint_contexts, policy)

    def wrap(edge: MixedEdge) -> None:
        inner = edge.forward
        bns = tracking_batchnorms(edge)

        def forward(*args: Any) -> torch.Tensor:
            if not (edge.training and torch.is_grad_enabled()):
                return inner(*args)
            passes = [0]

            def run(*inputs: Any) -> torch.Tensor:
                passes[0] += 1
                if passes[0] == 1:
                    return inner(*inputs)
                saved = [(bn, bn.momentum, bn.num_batches_tracked) for bn in bns]
                for bn in bns:  # attributes only: no tensor op, which the recompute would have to match
                    bn.momentum, bn.num_batches_tracked = 0.0, None
                try:
                    return inner(*inputs)
                finally:
                    for bn, momentum, count in saved:
                        bn.momentum, bn.num_batches_tracked = momentum, count

            return checkpoint(run, *args, use_reentrant=False, context_fn=context)

        edge.forward = forward

    for module in net.modules():
        if isinstance(module, MixedEdge):
            wrap(module)
    return kept


def one_case(args: argparse.Namespace) -> dict[str, Any]:
    """One policy, in this process."""
    import torch
    import torch.nn.functional as F

    from darts_lite.spaces.darts.search import SearchNetwork

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = SearchNetwork(C=args.C, layers=args.layers, num_classes=10, relaxation=args.relaxation,
                        checkpoint_cells=args.policy == "cells").to(device, memory_format=torch.channels_last)
    kept = [0]
    if args.policy.startswith("sac_"):
        kept = selective_edges(net, keep_depthwise=args.policy == "sac_conv")
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def step() -> None:
        kept[0] = 0
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()

    measured = measure_step(step, args.reps)
    # every policy made the same passes from the same start: the digest of the last one's gradients and of the
    # BatchNorm buffers all of them updated
    digest = hashlib.sha256()
    for t in [p.grad for p in net.parameters() if p.grad is not None] + list(net.buffers()):
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    # what the selective policy keeps is held in its own cache, beside what autograd saves
    measured["saved_mib"] += kept[0] / 2**20
    return {"policy": args.policy, "digest": digest.hexdigest(), "policy_kept_mib": kept[0] / 2**20, **measured}


def _span(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return format(low, fmt) if format(low, fmt) == format(high, fmt) else f"{low:{fmt}}-{high:{fmt}}"


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``: per policy the range over the rounds."""
    rows, rounds = result["cases"], result["rounds"]
    by = {p: [r for r in rows if r["policy"] == p] for p in dict.fromkeys(r["policy"] for r in rows)}
    plain = by["plain"]
    lines = [
        "# Recomputing the cheap tensors: memory and time of the supernet's forward+backward",
        "",
        f"`{result['command']}`; {machine_text(result['machine'])}; {rounds} rounds, each policy once per round in "
        f"its own process (ranges over the rounds). Peak: {plain[0]['measure']} over the passes; time: median of "
        f"{result['settings']['reps']} forward+backward passes after a warm-up; ratios: the same round's plain case. "
        "Softmax relaxation, channels_last.",
        "",
        "| policy | what is kept | kept for backward (MiB) | peak (MiB) | time (s) | peak vs plain | time vs plain | "
        "gradients and BN buffers |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for policy, runs in by.items():
        same = all(r["digest"] == p["digest"] for r, p in zip(runs, plain))
        lines.append(
            f"| {policy} | {POLICIES[policy]} | {_span([r['saved_mib'] for r in runs], '.0f')} | "
            f"{_span([r['peak_mib'] for r in runs], '.0f')} | {_span([r['step_s'] for r in runs], '.2f')} | "
            f"{_span([r['peak_mib'] / p['peak_mib'] for r, p in zip(runs, plain)], '.2f')}x | "
            f"{_span([r['step_s'] / p['step_s'] for r, p in zip(runs, plain)], '.2f')}x | "
            f"{'bit-identical to plain' if same else 'DIFFER from plain'} |")
    lines += [
        "",
        '"Kept for backward": the tensors autograd saves over one forward pass, counted per use, plus the outputs a',
        "selective policy keeps in its cache; a checkpointed region's inside is recomputed and not counted. The",
        "selective policies' regions run their ops under a Python dispatch mode (how PyTorch's selective checkpointing",
        "decides, op by op, what to keep): that cost is paid in the forward pass and again in the recomputation.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_arguments(parser)
    parser.add_argument("--relaxation", default="softmax")
    parser.add_argument("--policies", default=",".join(POLICIES), help="a comma-separated subset, plain first")
    parser.add_argument("--rounds", type=int, default=2, help="every policy once per round, rounds one after the other")
    parser.add_argument("--policy", help=argparse.SUPPRESS)  # internal: one policy in this process
    args = parser.parse_args()
    if args.policy:
        print_case(one_case(args))
        return
    policies = args.policies.split(",")
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown or policies[0] != "plain" or args.rounds < 1:
        parser.error(f"--policies: plain first, then any of {', '.join(POLICIES)}; --rounds >= 1; got "
                     f"{args.policies!r}, {args.rounds}")
    options = ["--C", str(args.C), "--layers", str(args.layers), "--batch", str(args.batch), "--size", str(args.size),
               "--relaxation", args.relaxation, "--reps", str(args.reps)]
    rows = []
    for round_ in range(args.rounds):
        for policy in policies:
            rows.append({"round": round_, **run_case([__file__, *options, "--policy", policy])})
            print({k: v for k, v in rows[-1].items() if k != "digest"}, flush=True)
    result = {**size_record("recompute_policies.py", options + ["--policies", args.policies, "--rounds",
                                                                 str(args.rounds)], args, rows),
              "rounds": args.rounds}
    write_result(RESULT, result, markdown(result))


if __name__ == "__main__":
    main()
