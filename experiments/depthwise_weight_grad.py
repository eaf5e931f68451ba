"""The depthwise weight gradient: darts_lite's compiled kernel beside PyTorch's, per conv and per network.

    python experiments/depthwise_weight_grad.py                  # the shapes and the networks below, CPU
    python experiments/depthwise_weight_grad.py --reps 5 --rounds 1 --networks darts

Two parts, each alternating the two ways in one run:

- **per conv**: the weight gradient of every 5x5 and dilated depthwise conv shape the DARTS space's supernet
  (paper size: batch 64, C=16, 32 px, three stages), PC-DARTS's quarter channels and the retrained network
  (DARTS_V2 at C=36, batch 96) run, from ``darts_lite.spaces.native`` and from
  ``aten.convolution_backward`` (oneDNN's), channels-last float32 as the networks run them; median of ``--reps``
  calls each, alternating; and the largest difference from the float64 reference, relative to its largest value.
- **per network**: forward+backward of the supernets (DARTS softmax, PC-DARTS K=4 with edge normalisation, GDAS) at
  the paper's search size and of the retrained network (DARTS_V2, C=36, 20 cells, batch 96, auxiliary head), each
  in its own process with ``DARTS_LITE_NATIVE=1`` (the default) and ``=0`` (PyTorch's weight gradient), in
  ``--rounds`` rounds; median of ``--reps`` passes after a warm-up.

Writes results/depthwise_weight_grad.json and the .md made from it.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from typing import Any

from common import RESULTS, machine, machine_text, print_case, run_case, span, write_result

RESULT = RESULTS / "depthwise_weight_grad.md"  # and .json
# (where, batch, channels, pixels): the supernet's three stages, PC-DARTS's quarter of them, the retrained network's
SHAPES = [("supernet", 64, 16, 32), ("supernet", 64, 32, 16), ("supernet", 64, 64, 8),
          ("PC-DARTS K=4", 64, 4, 32), ("PC-DARTS K=4", 64, 8, 16), ("PC-DARTS K=4", 64, 16, 8),
          ("retrained", 96, 36, 32), ("retrained", 96, 72, 16), ("retrained", 96, 144, 8)]
CONVS = [(5, 1), (3, 2), (5, 2)]  # (kernel, dilation): sep_conv_5x5, dil_conv_3x3, dil_conv_5x5
NETWORKS = {
    "darts": "DARTS supernet (softmax), C=16, 8 cells, batch 64, 32 px",
    "pc_darts": "PC-DARTS supernet (K=4, edge normalisation), same size",
    "gdas": "GDAS supernet (one sampled op per edge), same size",
    "retrained": "retrained DARTS_V2, C=36, 20 cells, batch 96, 32 px, auxiliary head",
}


def _pytorch(grad: Any, x: Any, kernel: int, padding: int, dilation: int) -> Any:
    """PyTorch's weight gradient (oneDNN's on the CPU), as autograd asks for it."""
    import torch

    weight = torch.empty(x.shape[1], 1, kernel, kernel, dtype=x.dtype)
    return torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [padding] * 2, [dilation] * 2, False,
                                               [0, 0], x.shape[1], [False, True, False])[1]


def _compiled(grad: Any, x: Any, kernel: int, padding: int, dilation: int) -> Any:
    """darts_lite's compiled kernel's (exits if it is not in use)."""
    from darts_lite.spaces import native

    out = native.depthwise_weight_gradient(grad, x, kernel, padding, dilation)
    if out is None:
        raise SystemExit(f"the compiled kernel is not in use: {native.status()}")
    return out


def per_conv(reps: int) -> list[dict[str, Any]]:
    """Every shape in SHAPES with every conv in CONVS, in this process."""
    import torch

    rows = []
    for where, batch, channels, pixels in SHAPES:
        for kernel, dilation in CONVS:
            padding = dilation * (kernel - 1) // 2
            torch.manual_seed(0)
            x, grad = (torch.randn(batch, channels, pixels, pixels).contiguous(memory_format=torch.channels_last)
                       for _ in range(2))
            pytorch = functools.partial(_pytorch, grad, x, kernel, padding, dilation)
            compiled = functools.partial(_compiled, grad, x, kernel, padding, dilation)
            exact = _pytorch(grad.double(), x.double(), kernel, padding, dilation)
            scale = exact.abs().max().item()
            times: dict[str, list[float]] = {"pytorch": [], "compiled": []}
            pytorch(), compiled()  # warm-up
            for _ in range(reps):
                for name, fn in (("pytorch", pytorch), ("compiled", compiled)):
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
            rows.append({"where": where, "batch": batch, "channels": channels, "pixels": pixels, "kernel": kernel,
                         "dilation": dilation,
                         **{f"{name}_ms": statistics.median(t) * 1e3 for name, t in times.items()},
                         **{f"{name}_error": (fn().double() - exact).abs().max().item() / scale
                            for name, fn in (("pytorch", pytorch), ("compiled", compiled))}})
            print(rows[-1], flush=True)
    return rows


def one_network(network: str, reps: int) -> dict[str, Any]:
    """Forward+backward of ``network`` in this process (DARTS_LITE_NATIVE as the caller set it)."""
    import torch
    import torch.nn.functional as F
    from step_memory import measure_step

    from darts_lite import EvalNetwork
    from darts_lite.spaces import native
    from darts_lite.spaces.darts.search import SearchNetwork

    torch.manual_seed(0)
    if network == "retrained":
        net = EvalNetwork("DARTS_V2", C=36, layers=20, num_classes=10, auxiliary=True, drop_path_prob=0.2)
        batch = 96
    else:
        options = {"darts": {}, "pc_darts": {"partial_channels": 4, "edge_normalization": True},
                   "gdas": {"relaxation": "gumbel"}}[network]
        net, batch = SearchNetwork(C=16, layers=8, num_classes=10, **options), 64
    net = net.train().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        net.zero_grad(set_to_none=True)
        out = net(x)
        if isinstance(out, tuple):  # the retrained network's auxiliary head
            loss = F.cross_entropy(out[0], y) + 0.4 * F.cross_entropy(out[1], y)
        else:
            loss = F.cross_entropy(out, y)
        loss.backward()

    measured = measure_step(step, reps)
    return {"network": network, "native": native.status().split(":")[0], **measured}


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``."""
    settings = result["settings"]
    lines = [
        "# The depthwise weight gradient: darts_lite's compiled kernel beside PyTorch's",
        "",
        f"`{result['command']}`; {machine_text(result['machine'])}.",
        "",
        "## Per conv",
        "",
        f"Channels-last float32, median of {settings['reps']} calls each, alternating; error: the largest difference "
        "from the float64 reference over its largest value.",
        "",
        "| where | batch x C x px | conv | PyTorch (ms) | compiled (ms) | speed-up | error PyTorch / compiled |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    names = {(5, 1): "5x5", (3, 2): "3x3, dilation 2", (5, 2): "5x5, dilation 2"}
    for r in result["convs"]:
        lines.append(f"| {r['where']} | {r['batch']} x {r['channels']} x {r['pixels']} | "
                     f"{names[(r['kernel'], r['dilation'])]} | {r['pytorch_ms']:.3f} | {r['compiled_ms']:.3f} | "
                     f"{r['pytorch_ms'] / r['compiled_ms']:.1f}x | {r['pytorch_error']:.1e} / {r['compiled_error']:.1e} |")
    lines += [
        "",
        "## Per network",
        "",
        f"Forward+backward, median of {settings['reps']} passes after a warm-up, each network and way in its own "
        f"process, {settings['rounds']} rounds (ranges over the rounds); PyTorch's: `DARTS_LITE_NATIVE=0`.",
        "",
        "| network | PyTorch's (s) | compiled (s) | time, compiled / PyTorch's |",
        "| --- | ---: | ---: | ---: |",
    ]
    runs = result["networks"]
    for network in dict.fromkeys(r["network"] for r in runs):
        off = [r for r in runs if r["network"] == network and not r["compiled"]]
        on = [r for r in runs if r["network"] == network and r["compiled"]]
        lines.append(f"| {NETWORKS[network]} | {span([r['step_s'] for r in off], '.2f')} | "
                     f"{span([r['step_s'] for r in on], '.2f')} | "
                     f"{span([a['step_s'] / b['step_s'] for a, b in zip(on, off)], '.2f')}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="calls per conv and passes per network (medians)")
    parser.add_argument("--rounds", type=int, default=2, help="every network both ways once per round")
    parser.add_argument("--networks", default=",".join(NETWORKS), help=f"a comma-separated subset of {list(NETWORKS)}")
    parser.add_argument("--network", help=argparse.SUPPRESS)  # internal: one network in this process
    args = parser.parse_args()
    if args.network:
        print_case(one_network(args.network, args.reps))
        return
    networks = args.networks.split(",")
    unknown = sorted(set(networks) - set(NETWORKS))
    if unknown or args.rounds < 1 or args.reps < 1:
        parser.error(f"--networks: any of {', '.join(NETWORKS)}; --rounds and --reps >= 1; got {args.networks!r}, "
                     f"{args.rounds}, {args.reps}")
    convs = per_conv(args.reps)
    runs = []
    for round_ in range(args.rounds):
        for network in networks:
            for compiled in (False, True):
                env = {**os.environ, "DARTS_LITE_NATIVE": "1" if compiled else "0"}
                case = run_case([__file__, "--reps", str(args.reps), "--network", network], env=env)
                if case["native"] != ("ready" if compiled else "disabled (DARTS_LITE_NATIVE=0)"):
                    raise SystemExit(f"{network}: the kernel was {case['native']!r} where it was to be "
                                     f"{'used' if compiled else 'off'}")
                runs.append({"round": round_, "compiled": compiled, **case})
                print(runs[-1], flush=True)
    options = ["--reps", str(args.reps), "--rounds", str(args.rounds), "--networks", args.networks]
    result = {"command": f"python experiments/depthwise_weight_grad.py {' '.join(options)}",
              "settings": {"reps": args.reps, "rounds": args.rounds}, "machine": machine(),
              "convs": convs, "networks": runs}
    write_result(RESULT, result, markdown(result))


if __name__ == "__main__":
    main()
