"""Where a GDAS search step goes, against the sampled sub-network's own forward+backward (issue: the GDAS step).

A GDAS step is two passes through the supernet, each running one op per edge: the architecture pass (forward, then
backward into the alphas only: the weights frozen) and the weight pass (forward, backward into the weights: the
alphas frozen). The limit a GDAS pass can approach is the sampled sub-network alone: the same ops, the same
architecture, no Gumbel sample, no straight-through weights, no alphas. This script times, in one process and
alternating so that every part sees the same machine load:

- ``arch``: the architecture pass; ``weights``: the weight pass (each with a new Gumbel sample);
- ``subnet``: forward+backward into the weights of the supernet with that sampled architecture fixed (every edge
  runs its sampled op with a constant weight of 1: what the sub-network computes, in the same op code);

each repetition draws one architecture (a seed per repetition) and all three parts run that architecture, so the
ratios compare the same ops (architectures differ in cost: a parameter-free op is cheaper than a convolution);

at the DARTS paper's search size (8 cells, C=16, batch 64, 3x32x32, channels-last), and reports each part's median
and the ratios (arch + weights) / subnet and weights / subnet.

    python experiments/gdas_step_parts.py               # about 2 minutes on 2 cores
    python experiments/gdas_step_parts.py --reps 3 --C 8 --layers 5 --batch 16 --size 16   # a quick look

Writes experiments/results/gdas_step_parts.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import RESULTS, machine, machine_text, write_result


def measure(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from darts_lite.relax import EdgeWeights
    from darts_lite.spaces.darts.search import SearchNetwork
    from darts_lite.spaces.supernet import frozen

    torch.manual_seed(0)
    net = SearchNetwork(C=args.C, layers=args.layers, num_classes=10, in_channels=3, relaxation="gumbel").train()
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    net = net.to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    weights, alphas = net.weight_parameters(), net.arch_parameters()

    def sample(seed: int) -> dict:
        """The architecture the Gumbel sample under ``seed`` picks, fixed: every edge runs its op with weight 1."""
        torch.manual_seed(seed)
        with torch.no_grad():
            drawn = {cell: net.relax(cell, a) for cell, a in net.cell_alphas().items()}
        return {cell: EdgeWeights(torch.zeros_like(ew.weights).scatter_(1, torch.tensor(ew.index)[:, None], 1.0),
                                  list(ew.index)) for cell, ew in drawn.items()}

    def arch(seed: int) -> None:
        torch.manual_seed(seed)
        with frozen(weights):
            F.cross_entropy(net(x), y).backward()

    def weight(seed: int) -> None:
        torch.manual_seed(seed)
        with frozen(alphas):
            F.cross_entropy(net(x), y).backward()

    def fixed_architecture(seed: int, body) -> None:
        fixed = sample(seed)
        net.edge_weight_transform = lambda cell, ew: fixed[cell]
        try:
            with frozen(alphas):
                body()
        finally:
            net.edge_weight_transform = None

    def subnet(seed: int) -> None:
        fixed_architecture(seed, lambda: F.cross_entropy(net(x), y).backward())

    def subnet_forward(seed: int) -> None:
        fixed_architecture(seed, lambda: F.cross_entropy(net(x), y))

    def subnet_input_gradient(seed: int) -> None:
        """The sub-network's forward, then its backward with every weight frozen, into the input image only: the
        loss's gradient at every edge's output, which is what any architecture pass must compute (each edge's alpha
        gradient is its output's gradient times its op's output), without the alpha gradients themselves."""
        image = x.detach().requires_grad_()

        def body() -> None:
            with frozen(weights):
                torch.autograd.grad(F.cross_entropy(net(image), y), image)
        fixed_architecture(seed, body)

    # every repetition draws one architecture (its seed); every part runs that same architecture
    parts = {"arch": arch, "weights": weight, "subnet": subnet, "subnet_forward": subnet_forward,
             "subnet_input_gradient": subnet_input_gradient}
    times: dict[str, list[float]] = {name: [] for name in parts}
    for rep in range(args.warmup + args.reps):
        for name, part in parts.items():
            net.zero_grad(set_to_none=True)
            start = time.perf_counter()
            part(rep)
            if rep >= args.warmup:
                times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {"times_s": times, "median_s": med,
            "step_over_subnet": (med["arch"] + med["weights"]) / med["subnet"],
            "weights_over_subnet": med["weights"] / med["subnet"], "arch_over_subnet": med["arch"] / med["subnet"],
            "floor_over_subnet": (med["subnet_input_gradient"] + med["subnet"]) / med["subnet"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--name", default="gdas_step_parts")
    args = p.parse_args()
    result = {"machine": machine(), "settings": vars(args), **measure(args)}
    med = result["median_s"]
    lines = [
        "# The GDAS step in parts, against the sampled sub-network",
        "",
        f"Machine: {machine_text(result['machine'])}.",
        f"Command: `python experiments/gdas_step_parts.py` (C={args.C}, {args.layers} cells, batch {args.batch}, "
        f"3x{args.size}x{args.size}, channels-last; median of {args.reps} alternating repetitions after "
        f"{args.warmup} warm-up).",
        "",
        "| part | median (s) | / sub-network |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {med[name]:.3f} | {med[name] / med['subnet']:.2f} |" for name in med),
        f"| GDAS step (arch + weights) | {med['arch'] + med['weights']:.3f} | {result['step_over_subnet']:.2f} |",
        f"| floor of a GDAS step (subnet_input_gradient + subnet) | "
        f"{med['subnet_input_gradient'] + med['subnet']:.3f} | {result['floor_over_subnet']:.2f} |",
        "",
        "arch: the architecture pass (backward into the alphas, weights frozen); weights: the weight pass; subnet: "
        "forward+backward into the weights of the same supernet with that pass's sampled architecture fixed (each "
        "edge runs its sampled op, weight 1, no Gumbel sample); subnet_forward: its forward alone; "
        "subnet_input_gradient: its forward, then a backward with every weight frozen into the input image only. "
        "Each repetition draws one architecture; every part runs it.",
        "",
        "The floor: an architecture pass needs the loss's gradient at every edge's output (an edge's alpha gradient "
        "is that gradient times its op's output), so it runs the forward and every convolution's input gradient: "
        "at least subnet_input_gradient. A GDAS step (an architecture pass on one batch, a weight pass on another) "
        "costs at least subnet_input_gradient + subnet.",
    ]
    write_result(RESULTS / f"{args.name}.md", result, lines)


if __name__ == "__main__":
    main()
