"""The channels-last BatchNorm: darts_lite's compiled kernel beside PyTorch's, per BatchNorm and per search step.

    python experiments/batch_norm_kernel.py                          # the shapes and the cases below, CPU
    python experiments/batch_norm_kernel.py --cases pc_darts --rounds 1

Two parts, each alternating the two ways in one run:

- **per BatchNorm**: forward (training mode, no affine parameters, running statistics updated) and input gradient
  of a channels-last float32 tensor at the shapes the searches run (the DARTS supernet's three stages at paper size
  and a reduction cell's preprocessing, PC-DARTS's quarter channels, the retrained network's C=36 at batch 96),
  from ``darts_lite.spaces.native`` and from ``aten._batch_norm_impl_index`` and its backward; median of ``--reps``
  x 10 calls each, alternating; and whether the two gave the same bits (output, statistics, input gradient).
- **per search step**: the search steps of references_side_by_side.py (``SearchModule.training_step`` under a
  Trainer, the DARTS space at paper size, batch 64, 32 px: PC-DARTS with K=4 and edge normalisation, DARTS first
  order, GDAS), each way in its own process, in ``--rounds`` rounds; PyTorch's way is darts_lite with
  ``native.batch_norm`` and ``native.batch_norm_input_gradient`` answering None (so every BatchNorm is PyTorch's and
  all else the same code). Median of ``--reps`` steps after a warm-up.

Writes results/batch_norm_kernel.json and the .md made from it.
"""

from __future__ import annotations

from typing import Any

from common import RESULTS, alternating_call_medians, both_ways_main, both_ways_step_section, forward_backward_cells, machine_text

RESULT = RESULTS / "batch_norm_kernel.md"  # and .json
# (where, batch, channels, pixels)
SHAPES = [("supernet", 64, 16, 32), ("supernet", 64, 32, 16), ("supernet", 64, 64, 8),
          ("supernet, a reduction cell's input preprocessing", 64, 32, 32),
          ("PC-DARTS K=4", 64, 4, 32), ("PC-DARTS K=4", 64, 8, 16), ("PC-DARTS K=4", 64, 16, 8),
          ("retrained", 96, 36, 32)]
CASES = {
    "pc_darts": "PC-DARTS search step (K=4, edge normalisation)",
    "darts1": "DARTS 1st order search step",
    "gdas": "GDAS search step",
}


def per_batch_norm(reps: int) -> list[dict[str, Any]]:
    """Median ms of each way per shape, and whether they agree bit for bit."""
    rows = []
    for where, batch, channels, pixels in SHAPES:
        rows.append({"where": where, "batch": batch, "channels": channels, "pixels": pixels,
                     **_one_shape(batch, channels, pixels, reps)})
        print(rows[-1], flush=True)
    return rows


def _one_shape(batch: int, channels: int, pixels: int, reps: int) -> dict[str, Any]:
    import torch

    from darts_lite.spaces import native

    aten = torch.ops.aten
    torch.manual_seed(0)
    x = torch.randn(batch, channels, pixels, pixels).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    stats = [torch.zeros(channels), torch.ones(channels)]
    y, mean, invstd, reserve, impl = aten._batch_norm_impl_index(x, None, None, *stats, True, 0.1, 1e-5, False)
    ours = native.batch_norm(x, torch.zeros(channels), torch.ones(channels), 0.1, 1e-5)
    if ours is None:
        raise SystemExit(f"darts_lite's BatchNorm does not serve here: {native.status()}")
    their_grad = aten._batch_norm_impl_index_backward(impl, x, grad, None, *stats, mean, invstd, True, 1e-5,
                                                      [True, False, False], reserve)[0]
    our_grad = native.batch_norm_input_gradient(grad, x, mean, invstd)
    same = all(torch.equal(a, b) for a, b in zip((y, mean, invstd, their_grad), (*ours, our_grad)))
    calls = {
        "pytorch_forward": lambda: aten._batch_norm_impl_index(x, None, None, *stats, True, 0.1, 1e-5, False),
        "compiled_forward": lambda: native.batch_norm(x, *stats, 0.1, 1e-5),
        "pytorch_backward": lambda: aten._batch_norm_impl_index_backward(
            impl, x, grad, None, *stats, mean, invstd, True, 1e-5, [True, False, False], reserve),
        "compiled_backward": lambda: native.batch_norm_input_gradient(grad, x, mean, invstd),
    }
    return {"same_bits": same, **alternating_call_medians(calls, reps)}


def one_case(case: str, reps: int, pytorch_batch_norm: bool) -> dict[str, Any]:
    """One search step case in this process, every BatchNorm PyTorch's when ``pytorch_batch_norm``."""
    from references_side_by_side import ours

    from darts_lite.spaces import native

    if pytorch_batch_norm:
        native.batch_norm = lambda *args: None
        native.batch_norm_input_gradient = lambda *args: None
    return {"case": case, "pytorch_batch_norm": pytorch_batch_norm, "step_s": ours(case, reps, warmup=1)["step_s"]}


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``."""
    settings = result["settings"]
    lines = [
        "# The channels-last BatchNorm: darts_lite's compiled kernel beside PyTorch's",
        "",
        f"`{result['command']}`; {machine_text(result['machine'])}.",
        "",
        "### Per BatchNorm",
        "",
        f"Channels-last float32, training mode, no affine parameters; median of {settings['reps'] * 10} calls each, "
        "alternating; same bits: output, batch statistics and input gradient equal to PyTorch's.",
        "",
        "| where | batch x C x px | forward PyTorch / compiled (ms) | speed-up | input gradient PyTorch / compiled (ms) "
        "| speed-up | same bits |",
        "| --- | --- | --- | ---: | --- | ---: | --- |",
    ]
    for r in result["batch_norms"]:
        lines.append(f"| {r['where']} | {r['batch']} x {r['channels']} x {r['pixels']} | {forward_backward_cells(r)}")
    lines += both_ways_step_section(settings, result["runs"], CASES, "pytorch_batch_norm", "BatchNorm", "PyTorch's kernel")
    return lines


def main() -> None:
    both_ways_main(__file__, __doc__, CASES, "--pytorch-batch-norm",
                   "steps per case (median) after one warm-up; x10 calls per BatchNorm", one_case,
                   lambda reps: {"batch_norms": per_batch_norm(reps)}, RESULT, markdown)


if __name__ == "__main__":
    main()
