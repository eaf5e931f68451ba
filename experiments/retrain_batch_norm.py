"""The retraining step with the evaluation network's BatchNorms through darts_lite's compiled kernels, against
nn.BatchNorm2d (PyTorch's channels-last kernels), in one process.

The evaluation network swaps its ``nn.BatchNorm2d`` modules for ``darts_lite.spaces.batchnorm.BatchNorm2d`` when
built (the same values bit for bit). This script builds DARTS_V2 at the retraining recipe's size (20 cells, C=36,
auxiliary head, drop path 0.2, channels-last), then times forward+backward steps alternating the two classes on
the same modules (``__class__`` swapped between steps), pair after pair, per batch size; it reports each way's
median and the median of the pairs' ratios, and checks that both ways give the same logits and gradients bit for
bit in every pair.

    python experiments/retrain_batch_norm.py                     # about 5 minutes on 2 cores
    python experiments/retrain_batch_norm.py --batches 16 --pairs 2 --layers 8   # a quick look

Writes experiments/results/retrain_batch_norm.json and .md.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from common import RESULTS, alternating_pairs, alternating_pairs_cells, machine, machine_text, write_result

RESULT = RESULTS / "retrain_batch_norm.md"


def measure(batch: int, pairs: int, layers: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from darts_lite.spaces.batchnorm import BatchNorm2d
    from darts_lite.spaces.darts.eval import EvalNetwork

    torch.manual_seed(0)
    net = EvalNetwork("DARTS_V2", C=36, layers=layers, auxiliary=True, drop_path_prob=0.2).train()
    net = net.to(memory_format=torch.channels_last)
    norms = [m for m in net.modules() if type(m) is BatchNorm2d]
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step(compiled: bool, pair: int) -> tuple[float, list[torch.Tensor]]:
        for m in norms:
            m.__class__ = BatchNorm2d if compiled else nn.BatchNorm2d
        torch.manual_seed(0)  # the same drop-path draws both ways
        start = time.perf_counter()
        logits, aux = net(x)
        (F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)).backward()
        seconds = time.perf_counter() - start
        out = [logits.detach(), *(p.grad.clone() for p in net.parameters())]
        net.zero_grad(set_to_none=True)
        return seconds, out

    result = alternating_pairs(step, pairs, ("compiled", "pytorch"))
    return {"batch": batch, "batch_norms": len(norms), **result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="32,96", help="comma-separated batch sizes")
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--layers", type=int, default=20)
    args = p.parse_args()
    rows = [measure(int(b), args.pairs, args.layers) for b in args.batches.split(",")]
    result = {"machine": machine(), "settings": vars(args), "rows": rows}
    lines = [
        "# The retraining step: compiled BatchNorm kernels against PyTorch's",
        "",
        f"Machine: {machine_text(result['machine'])}.",
        f"Command: `python experiments/retrain_batch_norm.py --batches {args.batches} --pairs {args.pairs} "
        f"--layers {args.layers}` (DARTS_V2, C=36, {args.layers} cells, auxiliary head, drop path 0.2, 3x32x32, "
        "channels-last; forward+backward; the two ways alternating in one process).",
        "",
        "| batch | nn.BatchNorm2d (s) | compiled (s) | compiled / nn.BatchNorm2d (median of pairs) | same bits |",
        "| ---: | ---: | ---: | ---: | --- |",
        *(f"| {r['batch']} | {alternating_pairs_cells(r)}" for r in rows),
    ]
    write_result(RESULT, result, lines)


if __name__ == "__main__":
    main()
