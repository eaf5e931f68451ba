"""Where the DARTS supernet's forward+backward step spends its time, and an A/B of the depthwise conv fast path.

    OMP_NUM_THREADS=1 python experiments/profile_step.py --batch 32             # torch.profiler tables
    OMP_NUM_THREADS=1 python experiments/profile_step.py --batch 32 --ab --reps 6

The step is nni_side_by_side.py's: the default SearchNetwork (paper size unless told otherwise), channels-last, a
random batch, cross-entropy, backward into every parameter. ``--ab`` times the step with DepthwiseConv2d's fast path
(B) and with every depthwise conv run as plain nn.Conv2d (A), alternating A and B in one process so that both see the
same machine load, and prints the largest output and gradient differences between the two.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from step_memory import add_size_arguments
from torch import nn
from torch.profiler import ProfilerActivity, profile

from darts_lite.spaces.darts.ops import DepthwiseConv2d
from darts_lite.spaces.darts.search import SearchNetwork


def build(args: argparse.Namespace):
    """(network, step) of the paper-size supernet; step() -> (logits, gradients) of one forward+backward."""
    torch.manual_seed(0)
    net = SearchNetwork(C=args.C, layers=args.layers, num_classes=10).to(memory_format=torch.channels_last).train()
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))

    def step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        for p in net.parameters():
            p.grad = None
        out = net(x)
        F.cross_entropy(out, y).backward()
        return out.detach(), [p.grad for p in net.parameters()]

    return net, step


def run_profile(step, rows: int) -> None:
    step()  # warm-up: the first step pays one-off allocations and kernel choices
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
    # the convolutions by weight shape: [C, 1, k, k] are the depthwise ones (a 5x5 row holds sep_conv_5x5's and
    # dil_conv_5x5's), [C, C, 1, 1] the pointwise ones
    convs = [e for e in prof.key_averages(group_by_input_shape=True)
             if e.key in ("aten::convolution_backward", "aten::mkldnn_convolution")]
    convs.sort(key=lambda e: -e.self_cpu_time_total)
    for e in convs[:rows]:
        weight = e.input_shapes[2] if e.key == "aten::convolution_backward" else e.input_shapes[1]
        print(f"{e.key:30s} {e.self_cpu_time_total / 1e3:9.1f} ms  {e.count:5d} calls  input {e.input_shapes[0]} weight {weight}")


def run_ab(step, reps: int) -> None:
    fast = DepthwiseConv2d.forward
    variants = {"A (nn.Conv2d)": nn.Conv2d.forward, "B (DepthwiseConv2d)": fast}
    results, times = {}, {name: [] for name in variants}
    for name, forward in variants.items():
        DepthwiseConv2d.forward = forward
        results[name] = step()  # also the warm-up of each variant
    (out_a, grads_a), (out_b, grads_b) = results.values()
    rel = max(((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item() for a, b in zip(grads_a, grads_b))
    print(f"max |logits A - B| {(out_a - out_b).abs().max().item():.3g}; max relative gradient difference {rel:.3g}")
    order = list(variants)
    for r in range(reps):
        for name in order if r % 2 == 0 else order[::-1]:
            DepthwiseConv2d.forward = variants[name]
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    DepthwiseConv2d.forward = fast
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name}: median {medians[name]:.3f} s over {reps} steps ({', '.join(f'{s:.2f}' for s in t)})")
    a, b = medians.values()
    print(f"B / A = {b / a:.3f}; {torch.get_num_threads()} threads, batch {len(out_a)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_arguments(parser)
    parser.add_argument("--ab", action="store_true", help="time the depthwise conv fast path against nn.Conv2d")
    parser.add_argument("--rows", type=int, default=30)
    args = parser.parse_args()
    _, step = build(args)
    if args.ab:
        run_ab(step, args.reps)
    else:
        run_profile(step, args.rows)


if __name__ == "__main__":
    main()
