"""Search steps with an edge's alpha-gradient products from darts_lite's kernel, against the same steps with the
BatchNorm output recomputed and multiplied, in one process.

A fused edge keeps no output of its op's final BatchNorm; its alpha's gradient is the sum of its output gradient
times that output. ``darts_lite.spaces.native.times_normalised`` computes the products from the BatchNorm's input and
statistics in one pass, the output never written (the default where the kernel serves); the other way recomputes
the output (``lean._normalised``) and multiplies it by the gradient: a tensor more written and read back. This
script builds each supernet at its paper search size (batch 64 of 3x32x32, channels-last) and times its search step
(GDAS: the weight pass, then the architecture pass, as AutoDL's GDAS scripts order them; DARTS first order: the
architecture pass, then the weight pass), alternating the two ways pair after pair with the same random draws; it
reports each way's median, the median of the pairs' ratios, and whether both ways gave the same logits and
gradients bit for bit.

    python experiments/normalised_products.py                      # about 4 minutes on 2 cores
    python experiments/normalised_products.py --pairs 2 --cases gdas   # a quick look

Writes experiments/results/normalised_products.json and .md.
"""

from __future__ import annotations

import time
from typing import Any

from common import RESULTS, alternating_cases_main, alternating_pairs, paper_supernet

RESULT = RESULTS / "normalised_products.md"
CASES = {"gdas": "GDAS, DARTS space (8 cells, C=16)", "nb201_gdas": "GDAS, NAS-Bench-201 (C=16, N=5)",
         "darts1": "DARTS 1st order, DARTS space (8 cells, C=16)"}


def measure(case: str, pairs: int, batch: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from darts_lite.spaces import native
    from darts_lite.spaces.supernet import frozen

    net, xs, ys = paper_supernet("nb201" if case == "nb201_gdas" else "darts", "softmax" if case == "darts1" else "gumbel",
                                 batch)
    weights, alphas = net.weight_parameters(), net.arch_parameters()
    passes = [(alphas, 0), (weights, 1)] if case != "darts1" else [(weights, 1), (alphas, 0)]  # (frozen, batch)
    kernel = native.times_normalised

    def step(from_kernel: bool, seed: int) -> tuple[float, list[torch.Tensor]]:
        native.times_normalised = kernel if from_kernel else (lambda *args: None)
        torch.manual_seed(seed)  # the same draws both ways
        outputs = []
        try:
            start = time.perf_counter()
            for params, i in passes:
                with frozen(params):
                    logits = net(xs[i])
                    F.cross_entropy(logits, ys[i]).backward()
                outputs.append(logits.detach())
            seconds = time.perf_counter() - start
        finally:
            native.times_normalised = kernel
        out = [*outputs, *(p.grad.clone() for p in net.parameters() if p.grad is not None)]
        net.zero_grad(set_to_none=True)
        return seconds, out

    return {"case": case, **alternating_pairs(step, pairs, ("kernel", "recomputed"))}


def main() -> None:
    alternating_cases_main(
        __doc__, "normalised_products.py", CASES, measure, RESULT,
        "An edge's alpha-gradient products from the kernel, against the output recomputed",
        "3x32x32, channels-last; a step: both passes; the two ways alternating in one process, the same random draws "
        "both ways",
        "output recomputed (s) | products from the kernel (s) | kernel / recomputed (median of pairs)",
        "Kernel: `darts_lite.spaces.native.times_normalised` computes each product of an output gradient with its "
        "edge's BatchNorm output without writing the output (darts_lite's default where it serves). Recomputed: the "
        "BatchNorm output computed again as a tensor, then multiplied by the gradient (the kernel made to answer no).")


if __name__ == "__main__":
    main()
