"""GDAS's search step with its products by the hard weight 1 (and NAS-Bench-201's added zeros) skipped, against
the same step with them computed, in one process.

A GDAS edge's weight of its sampled op is exactly 1.0 and the unsampled ops' weights exactly 0.0 (the hard
Gumbel-softmax rounds so); on the CPU the fused edges (``darts_lite.spaces.lean``) return the op's output as it is
and pass its gradient on as it is (a sampled skip connection its input; a sampled `none` its zeros, made without a
pass over its input or its gradient), and NAS-Bench-201's edges skip the addition of the zero weights. This script
builds the GDAS supernet of each space at its paper search size (DARTS: 8 cells, C=16; NAS-Bench-201: C=16, N=5;
batch 64 of 3x32x32, channels-last) and times its search step (the weight pass, then the architecture pass, as
AutoDL's GDAS scripts order them) alternating the two ways pair after pair (the products computed by making the
library's exact-1 and exact-0 checks answer no), with the same Gumbel draws both ways; it reports each way's
median, the median of the pairs' ratios, and whether both ways gave the same logits and gradients bit for bit.

    python experiments/unit_weights.py                      # about 3 minutes on 2 cores
    python experiments/unit_weights.py --pairs 2 --cases nb201_gdas   # a quick look

Writes experiments/results/unit_weights.json and .md.
"""

from __future__ import annotations

import time
from typing import Any

from common import RESULTS, alternating_cases_main, alternating_pairs, paper_supernet

RESULT = RESULTS / "unit_weights.md"
CASES = {"gdas": "GDAS, DARTS space (8 cells, C=16)", "nb201_gdas": "GDAS, NAS-Bench-201 (C=16, N=5)"}


def measure(case: str, pairs: int, batch: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from darts_lite.spaces import lean
    from darts_lite.spaces.supernet import frozen

    net, xs, ys = paper_supernet("darts" if case == "gdas" else "nb201", "gumbel", batch)
    weights, alphas = net.weight_parameters(), net.arch_parameters()
    checks = (lean._unit, lean._zero)

    def step(skip: bool, seed: int) -> tuple[float, list[torch.Tensor]]:
        lean._unit, lean._zero = checks if skip else (lambda w: False, lambda s: False)
        torch.manual_seed(seed)  # the same Gumbel draws both ways
        try:
            start = time.perf_counter()
            with frozen(alphas):
                logits = net(xs[0])
                F.cross_entropy(logits, ys[0]).backward()
            with frozen(weights):
                F.cross_entropy(net(xs[1]), ys[1]).backward()
            seconds = time.perf_counter() - start
        finally:
            lean._unit, lean._zero = checks
        out = [logits.detach(), *(p.grad.clone() for p in net.parameters() if p.grad is not None)]
        net.zero_grad(set_to_none=True)
        return seconds, out

    return {"case": case, **alternating_pairs(step, pairs, ("skipped", "computed"))}


def main() -> None:
    alternating_cases_main(
        __doc__, "unit_weights.py", CASES, measure, RESULT, "GDAS's search step without its products by 1 and sums with 0",
        "3x32x32, channels-last; a step: the weight pass, then the architecture pass; the two ways alternating in one "
        "process, the same Gumbel draws both ways",
        "products computed (s) | skipped (s) | skipped / computed (median of pairs)",
        "Skipped: a fused edge weighted by exactly 1 returns its op's output and passes its gradient on as they are "
        "(a sampled skip connection its input, a sampled `none` zeros made without reading its input or its gradient: "
        "since 2026-12-08), and NAS-Bench-201's edges do not add the unsampled ops' zero weights forward (darts_lite's "
        "default on the CPU). Computed: the same passes with the products and the sums run (the library's checks made "
        "to answer no).")


if __name__ == "__main__":
    main()
