"""Channels-last max and average pooling: darts_lite's compiled kernels beside PyTorch's, per pooling and per step.

    python experiments/pooling_kernel.py                          # the shapes and the cases below, CPU
    python experiments/pooling_kernel.py --cases gdas --rounds 1

Two parts, each alternating the two ways in one run:

- **per pooling**: a DARTS pooling op's 3x3 max or average pool (padding 1, the average without the padding) of a
  channels-last float32 tensor at the shapes the searches run, stride 1 and 2; forward, as a mixed edge runs it
  (PyTorch's max pool writes an index per output beside it), and input gradient, as a mixed edge's backward pass
  runs it for a pooling op with its BatchNorm (the pooling run again for the BatchNorm's input, and PyTorch's max
  pool for its indices too; then the input gradient, darts_lite's finding the maxima in the input); median
  of ``--reps`` x 10 calls each, alternating; and whether the two gave the same bits (output, input gradient).
- **per supernet pass, in one process**: the DARTS supernet at paper size (batch 64, 32 px, channels-last), its
  weight pass (forward, backward into the weights) with the softmax relaxation and a GDAS step's two passes
  (weights, then alphas) with the Gumbel one, ``--reps`` x 3 times each way, the ways alternating pass by pass
  (PyTorch's: the four ``native`` pooling functions answering None): the median of each way and of the ratios of
  the pairs, which a machine's drift between processes does not reach.
- **per search step**: the search steps of references_side_by_side.py (``SearchModule.training_step`` under a
  Trainer, batch 64, 32 px: DARTS first order and GDAS in the DARTS space at paper size, DARTS first order in the
  NAS-Bench-201 space), each way in its own process, in ``--rounds`` rounds; PyTorch's way is darts_lite with the
  four ``native`` pooling functions answering None (every pooling PyTorch's, all else the same code). Median of
  ``--reps`` steps after a warm-up.

Writes results/pooling_kernel.json and the .md made from it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from common import RESULTS, alternating_call_medians, both_ways_main, both_ways_step_section, forward_backward_cells, machine_text

RESULT = RESULTS / "pooling_kernel.md"  # and .json
# (where, batch, channels, pixels, stride)
SHAPES = [("supernet", 64, 16, 32, 1), ("supernet", 64, 32, 16, 1), ("supernet", 64, 64, 8, 1),
          ("supernet, reduction", 64, 16, 32, 2), ("PC-DARTS K=4", 64, 4, 32, 1)]
CASES = {
    "darts1": "DARTS 1st order search step",
    "gdas": "GDAS search step",
    "nb201_darts1": "NB201 DARTS 1st order search step",
}
POOLINGS = ("max_pool2d", "avg_pool2d", "max_pool2d_input_gradient", "avg_pool2d_input_gradient")


def per_pooling(reps: int) -> list[dict[str, Any]]:
    """Median ms of each way per kind and shape, and whether they agree bit for bit."""
    rows = []
    for where, batch, channels, pixels, stride in SHAPES:
        for kind in ("max", "avg"):
            rows.append({"where": where, "kind": kind, "batch": batch, "channels": channels, "pixels": pixels,
                         "stride": stride, **_one_shape(kind, batch, channels, pixels, stride, reps)})
            print(rows[-1], flush=True)
    return rows


def _one_shape(kind: str, batch: int, channels: int, pixels: int, stride: int, reps: int) -> dict[str, Any]:
    import torch

    from darts_lite.spaces import native

    aten = torch.ops.aten
    torch.manual_seed(0)
    x = torch.randn(batch, channels, pixels, pixels).contiguous(memory_format=torch.channels_last)
    window = ([3, 3], [stride, stride], [1, 1])
    if kind == "max":
        def theirs() -> torch.Tensor:
            return aten.max_pool2d_with_indices(x, *window, [1, 1], False)[0]

        def their_gradient() -> torch.Tensor:  # the pooling again, for its output (the BatchNorm's) and indices
            indices = aten.max_pool2d_with_indices(x, *window, [1, 1], False)[1]
            return aten.max_pool2d_with_indices_backward(grad, x, *window, [1, 1], False, indices)

        def ours() -> torch.Tensor | None:
            return native.max_pool2d(x, *window, [1, 1], False)

        def our_gradient() -> torch.Tensor | None:  # the pooling again, for its output, then the input gradient
            native.max_pool2d(x, *window, [1, 1], False)
            return native.max_pool2d_input_gradient(grad, x, *window, [1, 1], False)
    else:
        def theirs() -> torch.Tensor:
            return aten.avg_pool2d(x, *window, False, False, None)

        def their_gradient() -> torch.Tensor:
            aten.avg_pool2d(x, *window, False, False, None)
            return aten.avg_pool2d_backward(grad, x, *window, False, False, None)

        def ours() -> torch.Tensor | None:
            return native.avg_pool2d(x, *window, False, False)

        def our_gradient() -> torch.Tensor | None:
            native.avg_pool2d(x, *window, False, False)
            return native.avg_pool2d_input_gradient(grad, x, *window, False, False)
    grad = torch.randn_like(theirs())
    if ours() is None or our_gradient() is None:
        raise SystemExit(f"darts_lite's pooling does not serve here: {native.status()}")
    same = torch.equal(theirs(), ours()) and torch.equal(their_gradient(), our_gradient())
    calls = {"pytorch_forward": theirs, "compiled_forward": ours, "pytorch_backward": their_gradient,
             "compiled_backward": our_gradient}
    return {"same_bits": same, **alternating_call_medians(calls, reps)}


def per_pass(reps: int) -> list[dict[str, Any]]:
    """Each way's median seconds per pass and the median ratio (compiled / PyTorch's) of the alternating pairs."""
    import torch

    from darts_lite.spaces import native
    from darts_lite.spaces.darts.search import SearchNetwork

    real = {name: getattr(native, name) for name in POOLINGS}
    rows = []
    for relaxation, label in (("softmax", "DARTS weight pass"), ("gumbel", "GDAS step (weight and alpha passes)")):
        torch.manual_seed(0)
        net = SearchNetwork(C=16, layers=8, num_classes=10, relaxation=relaxation).train()
        net = net.to(memory_format=torch.channels_last)
        batch = (torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (64,)))
        frozen_sets = [net.arch_parameters()] + ([net.weight_parameters()] if relaxation == "gumbel" else [])
        try:
            _timed_pass(net, batch, frozen_sets, 0, real, False), _timed_pass(net, batch, frozen_sets, 0, real, True)
            pairs = [(_timed_pass(net, batch, frozen_sets, seed, real, False),
                      _timed_pass(net, batch, frozen_sets, seed, real, True)) for seed in range(1, reps * 3 + 1)]
        finally:
            for name, call in real.items():
                setattr(native, name, call)
        rows.append({"pass": label, "pairs": pairs, "pytorch_s": statistics.median(a for a, _ in pairs),
                     "compiled_s": statistics.median(b for _, b in pairs),
                     "ratio": statistics.median(b / a for a, b in pairs)})
        print({k: v for k, v in rows[-1].items() if k != "pairs"}, flush=True)
    return rows


def _timed_pass(net: Any, batch: tuple[Any, Any], frozen_sets: list[Any], seed: int, real: dict[str, Any],
                compiled: bool) -> float:
    """Seconds of one forward+backward of ``net`` per set of frozen parameters, the poolings compiled or not."""
    import torch
    import torch.nn.functional as F

    from darts_lite.spaces import native
    from darts_lite.spaces.supernet import frozen

    for name, call in real.items():
        setattr(native, name, call if compiled else (lambda *args: None))
    start = time.perf_counter()
    for params in frozen_sets:
        net.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        with frozen(params):
            F.cross_entropy(net(batch[0]), batch[1]).backward()
    return time.perf_counter() - start


def one_case(case: str, reps: int, pytorch_pooling: bool) -> dict[str, Any]:
    """One search step case in this process, every pooling PyTorch's when ``pytorch_pooling``."""
    from references_side_by_side import ours

    from darts_lite.spaces import native

    if pytorch_pooling:
        for name in POOLINGS:
            setattr(native, name, lambda *args: None)
    return {"case": case, "pytorch_pooling": pytorch_pooling, "step_s": ours(case, reps, warmup=1)["step_s"]}


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``."""
    settings = result["settings"]
    lines = [
        "# Channels-last pooling: darts_lite's compiled kernels beside PyTorch's",
        "",
        f"`{result['command']}`; {machine_text(result['machine'])}.",
        "",
        "### Per pooling",
        "",
        f"3x3, padding 1 (the average without it), channels-last float32; median of {settings['reps'] * 10} calls "
        "each, alternating. Forward as a mixed edge runs it (PyTorch's max pool writes its indices too); backward "
        "as a fused pooling op with its BatchNorm runs it: the pooling again (the BatchNorm's input; PyTorch's max "
        "pool its indices too), then the input gradient (darts_lite's finds the maxima in the input). Same bits: "
        "output and input gradient equal to PyTorch's.",
        "",
        "| where | pool | batch x C x px, stride | forward PyTorch / compiled (ms) | speed-up "
        "| backward PyTorch / compiled (ms) | speed-up | same bits |",
        "| --- | --- | --- | --- | ---: | --- | ---: | --- |",
    ]
    for r in result["poolings"]:
        lines.append(f"| {r['where']} | {r['kind']} | {r['batch']} x {r['channels']} x {r['pixels']}, {r['stride']} | "
                     f"{forward_backward_cells(r)}")
    lines += [
        "",
        "### Per supernet pass, in one process",
        "",
        f"DARTS supernet at paper size, batch 64, 32 px; {settings['reps'] * 3} passes each way, alternating; "
        "medians, and the median of the pairs' ratios.",
        "",
        "| pass | PyTorch's pooling (s) | compiled pooling (s) | time, compiled / PyTorch's (pairs) |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {r['pass']} | {r['pytorch_s']:.3f} | {r['compiled_s']:.3f} | {r['ratio']:.3f}x |"
          for r in result["passes"]),
    ]
    lines += both_ways_step_section(settings, result["runs"], CASES, "pytorch_pooling", "pooling", "PyTorch's kernels")
    return lines


def main() -> None:
    both_ways_main(__file__, __doc__, CASES, "--pytorch-pooling",
                   "steps per case (median) after one warm-up; x10 calls per pooling", one_case,
                   lambda reps: {"poolings": per_pooling(reps), "passes": per_pass(reps)}, RESULT, markdown)


if __name__ == "__main__":
    main()
