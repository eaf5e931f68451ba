"""What recomputing the cheap tensors costs and saves: the supernet's memory modes side by side.

    python experiments/recompute_policies.py                 # paper size: C=16, 8 cells, batch 64, 32 px
    python experiments/recompute_policies.py --batch 32 --reps 2 --rounds 1

The DARTS supernet's forward+backward (softmax relaxation, channels_last, as a search runs it) under five policies,
each in its own process (so that its peak is its own), in ``--rounds`` rounds one after the other:

- ``plain``: ``recompute="none"``: autograd keeps what each op saves;
- ``cheap``: ``recompute="cheap"``, darts_lite's default: each op's BatchNorm output, each pooling op's outputs and
  each separable conv's middle ReLU output are recomputed in backward by fused autograd steps
  (``darts_lite.spaces.lean``);
- ``cells``: ``checkpoint_cells=True``: only each cell's inputs are kept, the whole cell is recomputed in backward;
- ``convolutions``: ``recompute="convolutions"``: each mixed edge keeps its convolutions' outputs and recomputes the
  rest (ReLU, BatchNorm, pooling, the weighted sum) in backward (PyTorch's selective activation checkpointing);
- ``pointwise``: ``recompute="pointwise"``: the same, keeping only the 1x1 convolutions' outputs and recomputing
  the depthwise ones too;
- ``plain_each`` and ``cheap_each``: ``plain`` and ``cheap`` with each edge running its own pooling ops
  (``share_pooling=False``; by default the edges leaving a state pool it once for all of them,
  ``darts_lite.spaces.lean.shared_pooling``), as the regions of one edge each (``convolutions``, ``pointwise``) do.

The selective regions run every op under a Python dispatch mode: a cost per op, large beside a tiny network's
arithmetic and small beside the paper size's (results/recompute_policies.md has the paper size; a tiny run such
as ``--C 4 --layers 3 --batch 8 --size 8`` shows the other end).

Per policy: the median time of ``--reps`` forward+backward passes after a warm-up, the peak (process max RSS growth
on the CPU, max allocated on a GPU), the bytes kept for backward (what autograd saves outside recomputed regions
plus what the selective policy keeps), and whether the gradients and BatchNorm buffers after the same passes are
bit-identical to ``plain``'s. Writes results/recompute_policies.json and the .md made from it.
"""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

from common import RESULTS, machine_text, print_case, run_case, span, write_result
from step_memory import add_size_arguments, measure_step, size_record

RESULT = RESULTS / "recompute_policies.md"  # and .json
POLICIES = {
    "plain": "recompute=none: autograd keeps what each op saves",
    "cheap": "recompute=cheap (the default): per op, BatchNorm output, pooling, sep conv's middle ReLU recomputed",
    "cells": "checkpoint_cells=True: each cell recomputed whole",
    "convolutions": "recompute=convolutions: per edge, convolution outputs kept, the rest recomputed",
    "pointwise": "recompute=pointwise: per edge, 1x1 convolution outputs kept, the rest recomputed",
    "plain_each": "plain, each edge pooling its own",
    "cheap_each": "cheap, each edge pooling its own",
}
SELECTIVE = ("convolutions", "pointwise")  # the selective checkpointing policies


def reference(policy: str) -> str:
    """The policy whose gradients and BatchNorm buffers ``policy``'s equal bit for bit: the plain pass pooling as it
    does (each edge its own in the selective regions, which cannot share)."""
    return "plain_each" if policy.endswith("_each") or policy in SELECTIVE else "plain"


def _count_kept() -> list[int]:
    """A one-item list counting the bytes of the outputs the edges' selective policies keep (the caller resets it):
    darts_lite's policies, each wrapped to count what it keeps."""
    from torch.utils.checkpoint import CheckpointPolicy

    from darts_lite.spaces import supernet

    kept = [0]

    def counting(policy: Any) -> Any:
        def count(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
            decision = policy(ctx, op, *args, **kwargs)
            if decision == CheckpointPolicy.MUST_SAVE:
                kept[0] += ctx.op_output.numel() * ctx.op_output.element_size()
            return decision

        return count

    supernet._KEEP.update({keep: counting(policy) for keep, policy in supernet._KEEP.items()})
    return kept


def one_case(args: argparse.Namespace) -> dict[str, Any]:
    """One policy, in this process."""
    import torch
    import torch.nn.functional as F

    from darts_lite.spaces.darts.search import SearchNetwork

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = args.policy.removesuffix("_each")
    net = SearchNetwork(C=args.C, layers=args.layers, num_classes=10, relaxation=args.relaxation,
                        checkpoint_cells=policy == "cells",
                        recompute=policy if policy in ("cheap", *SELECTIVE) else "none")
    net = net.to(device, memory_format=torch.channels_last)
    if args.policy.endswith("_each"):
        for edge in net.modules():
            if hasattr(edge, "share_pooling"):
                edge.share_pooling = False
    kept = _count_kept() if args.policy in SELECTIVE else [0]
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
        ref = reference(policy)
        same = ref in by and all(r["digest"] == p["digest"] for r, p in zip(runs, by[ref]))
        equal = (f"bit-identical to {ref}" if same else f"DIFFER from {ref}") if ref in by else f"({ref} not measured)"
        lines.append(
            f"| {policy} | {POLICIES[policy]} | {span([r['saved_mib'] for r in runs], '.0f')} | "
            f"{span([r['peak_mib'] for r in runs], '.0f')} | {span([r['step_s'] for r in runs], '.2f')} | "
            f"{span([r['peak_mib'] / p['peak_mib'] for r, p in zip(runs, plain)], '.2f')}x | "
            f"{span([r['step_s'] / p['step_s'] for r, p in zip(runs, plain)], '.2f')}x | "
            f"{equal} |")
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
