"""Channels-last gradients: search steps and a retraining pass with darts_lite's layout-keeping slices, pool and
concatenation beside PyTorch's own (whose backward hands NCHW or sliced gradients to channels-last activations).

    python experiments/channels_last_gradients.py                     # the cases below, CPU
    python experiments/channels_last_gradients.py --cases darts1,gdas --rounds 1

Cases: the search steps of references_side_by_side.py (``SearchModule.training_step`` under a Trainer: DARTS first
order, GDAS, PC-DARTS with K=4 and edge normalisation; the DARTS space at the paper's search size, batch 64, 32 px)
and forward+backward of the retrained network (DARTS_V2, C=36, 20 cells, batch 96, auxiliary head). Each case runs
both ways in its own process, alternating, in ``--rounds`` rounds; PyTorch's way is darts_lite with
``darts_lite.spaces.ops._keeps_layout`` answering False (plain slicing, the hook-free pool and concatenation), so
everything else is the same code. Median of ``--reps`` steps after a warm-up.

Beside them, the kernel the layouts matter most to: the BatchNorm backward (training mode, input gradient) of a
channels-last activation given a channels-last gradient, an NCHW one and a channel slice of a 4x wider channels-last
one, at the supernet's three stage shapes; median of ``--reps`` x 10 calls each, alternating.

Writes results/channels_last_gradients.json and the .md made from it.
"""

from __future__ import annotations

import statistics
from typing import Any

from common import RESULTS, both_ways_main, both_ways_rows, machine_text

RESULT = RESULTS / "channels_last_gradients.md"  # and .json
CASES = {
    "darts1": "DARTS 1st order search step",
    "gdas": "GDAS search step",
    "pc_darts": "PC-DARTS search step (K=4, edge normalisation)",
    "retrained": "retrained DARTS_V2 forward+backward (C=36, 20 cells, batch 96)",
}


SHAPES = [(64, 16, 32), (64, 32, 16), (64, 64, 8)]  # (batch, channels, pixels): the supernet's three stages


def batchnorm_backward(reps: int) -> list[dict[str, Any]]:
    """Median ms of the BatchNorm backward of a channels-last float32 activation per gradient layout."""
    import time

    import torch

    aten, cl = torch.ops.aten, torch.channels_last
    rows = []
    for batch, channels, pixels in SHAPES:
        torch.manual_seed(0)
        x = torch.randn(batch, channels, pixels, pixels).contiguous(memory_format=cl)
        mean, var = torch.zeros(channels), torch.ones(channels)
        _, save_mean, invstd, reserve, impl = aten._batch_norm_impl_index(x, None, None, mean, var, True, 0.1, 1e-5,
                                                                          False)
        wide = torch.randn(batch, 4 * channels, pixels, pixels).contiguous(memory_format=cl)
        grads = {"channels_last": wide[:, :channels].contiguous(memory_format=cl),
                 "nchw": wide[:, :channels].contiguous(), "slice": wide[:, :channels]}
        times: dict[str, list[float]] = {k: [] for k in grads}
        for _ in range(reps * 10 + 1):
            for name, grad in grads.items():
                start = time.perf_counter()
                aten._batch_norm_impl_index_backward(impl, x, grad, None, mean, var, save_mean, invstd, True, 1e-5,
                                                     [True, False, False], reserve)
                times[name].append(time.perf_counter() - start)
        rows.append({"batch": batch, "channels": channels, "pixels": pixels,
                     **{f"{k}_ms": 1e3 * statistics.median(v[1:]) for k, v in times.items()}})
    return rows


def one_case(case: str, reps: int, pytorch_layouts: bool) -> dict[str, Any]:
    """One case in this process, with PyTorch's gradient layouts when ``pytorch_layouts``."""
    from darts_lite.spaces import ops

    if pytorch_layouts:
        ops._keeps_layout = lambda x: False
    if case == "retrained":
        from depthwise_weight_grad import one_network

        step_s = one_network("retrained", reps)["step_s"]
    else:
        from references_side_by_side import ours

        step_s = ours(case, reps, warmup=1)["step_s"]
    return {"case": case, "pytorch_layouts": pytorch_layouts, "step_s": step_s}


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``."""
    settings = result["settings"]
    lines = [
        "# Channels-last gradients beside PyTorch's layouts",
        "",
        f"`{result['command']}`; {machine_text(result['machine'])}.",
        "",
        "### BatchNorm backward per gradient layout",
        "",
        f"Channels-last float32 activation, training mode, input gradient; median of {settings['reps'] * 10} calls "
        "each, alternating.",
        "",
        "| batch x C x px | channels-last gradient (ms) | NCHW gradient (ms) | channel slice of a wider one (ms) |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {r['batch']} x {r['channels']} x {r['pixels']} | {r['channels_last_ms']:.2f} | {r['nchw_ms']:.2f} "
          f"({r['nchw_ms'] / r['channels_last_ms']:.1f}x) | {r['slice_ms']:.2f} ({r['slice_ms'] / r['channels_last_ms']:.1f}x) |"
          for r in result["batchnorm_backward"]),
        "",
        "### Steps",
        "",
        f"Median of {settings['reps']} steps after a warm-up, each case and way in its own process, "
        f"{settings['rounds']} rounds (ranges over the rounds). PyTorch's layouts: the same code with plain slicing and "
        "no gradient hooks at the global pool and the cells' concatenation.",
        "",
        "| case | PyTorch's layouts (s) | channels-last gradients (s) | time, channels-last / PyTorch's |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += both_ways_rows(result["runs"], CASES, "pytorch_layouts")
    return lines


def main() -> None:
    both_ways_main(__file__, __doc__, CASES, "--pytorch-layouts", "steps per case (median), after one warm-up step",
                   one_case, lambda reps: {"batchnorm_backward": batchnorm_backward(reps)}, RESULT, markdown)


if __name__ == "__main__":
    main()
