"""darts_lite's DrNAS progressive learning beside DrNAS's own code: pruning, the masked Dirichlet sample, widening.

DrNAS's DARTS-space code (github.com/xiangning-chen/DrNAS) is read from a checkout in a scratch folder (``--ref``, the
repository's root) and run here on the CPU, beside darts_lite, from the same random state:

- pruning: DrNAS's ``utils.prune`` and ``SearchNetwork.prune_ops`` on the same alphas, twice (7 -> 4 -> 2 ops), give
  the same masks and the same alphas;
- the weights of a pruned edge: DrNAS's ``process_step_matrix(alphas, "dirichlet", mask)`` (one Dirichlet sample per
  row, masked and renormalised) and darts_lite's relaxation of the same alphas after the same seed;
- widening: a DrNAS ``MixedOp`` and a darts_lite ``MixedEdge`` with the same weights and statistics, widened from
  K=6 to K=4 after the same seed, on a normal edge (C=36, stride 1) and a reduction edge (C=72, stride 2): how many
  of their tensors are equal, which are not, and whether their outputs agree in training and in evaluation mode.

    git clone https://github.com/xiangning-chen/DrNAS /tmp/DrNAS
    python experiments/drnas_reference_check.py --ref /tmp/DrNAS     # seconds

DrNAS's ``utils`` imports torchvision, which is not installed beside this torch: the script puts an empty stand-in in
its place (nothing it is used for here needs it). Writes experiments/results/drnas_reference_check.json and .md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

from common import RESULTS, machine, machine_text, write_result


def _reference(ref: Path) -> types.SimpleNamespace:
    """DrNAS's DARTS-space modules from the checkout at ``ref``."""
    import darts_lite.spaces.darts.search  # noqa: F401  (first: what it imports looks for a real torchvision)

    for name in ("torchvision", "torchvision.transforms"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.path[:0] = [str(ref / "DARTS-space"), str(ref)]
    import genotypes
    import model_search
    import utils

    return types.SimpleNamespace(ops=list(genotypes.PRIMITIVES), MixedOp=model_search.MixedOp, prune=utils.prune,
                                 process=utils.process_step_matrix)


def _tensors(module):
    """Every parameter and buffer with at least one dimension, in module order, with its name."""
    out = []
    for prefix, m in module.named_modules():
        for name, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if t is not None and t.dim() > 0:
                out.append((f"{prefix}.{name}".lstrip("."), t))
    return out


def check_pruning(ref: types.SimpleNamespace) -> dict:
    import torch

    from darts_lite.spaces.darts.search import SearchNetwork

    torch.manual_seed(0)
    net = SearchNetwork(C=6, layers=3, num_classes=10, primitives=ref.ops,
                        relaxation={"_target_": "darts_lite.methods.drnas.DirichletRelaxation"})
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(torch.randn_like(a))
    theirs = {cell: a.detach().clone() for cell, a in net.cell_alphas().items()}
    masks_ref: dict = {cell: None for cell in theirs}
    rounds = []
    for keep in (4, 2):
        ours = net.prune_ops(keep)
        for cell in theirs:
            masks_ref[cell] = ref.prune(theirs[cell], keep, masks_ref[cell])
        rounds.append({"keep": keep,
                       "masks_equal": all(torch.equal(ours[c], masks_ref[c]) for c in theirs),
                       "alphas_equal": all(torch.equal(net.cell_alphas()[c].detach(), theirs[c]) for c in theirs)})
    samples = []
    for seed in range(3):
        torch.manual_seed(seed)
        a = ref.process(theirs["normal"], "dirichlet", masks_ref["normal"])
        torch.manual_seed(seed)
        b = net.relax("normal", net.alpha_normal.detach()).weights
        samples.append({"seed": seed, "equal": bool(torch.equal(a, b)), "max_abs_diff": float((a - b).abs().max())})
    return {"rounds": rounds, "samples": samples}


def check_widening(ref: types.SimpleNamespace, C: int, stride: int) -> dict:
    import torch

    from darts_lite.spaces.darts.search import MixedEdge

    torch.manual_seed(0)
    theirs = ref.MixedOp(C, stride, 6)
    ours = MixedEdge(C, stride, ref.ops, affine=False, partial_channels=6)
    a, b = _tensors(theirs._ops), _tensors(ours.ops)
    if [t.shape for _, t in a] != [t.shape for _, t in b]:
        raise SystemExit(f"the two edges' tensors differ in shape before widening (C={C}, stride {stride})")
    with torch.no_grad():
        for (_, x), (_, y) in zip(a, b):
            x.copy_(torch.rand_like(x) + 0.5)
            y.copy_(x)
    torch.manual_seed(123)
    theirs.wider(4)
    torch.manual_seed(123)
    ours.set_partial_channels(4)
    a, b = _tensors(theirs._ops), _tensors(ours.ops)
    differ = [{"darts_lite": nb, "drnas": na, "shape": list(x.shape), "entries": int((x != y).sum())}
              for (na, x), (nb, y) in zip(a, b) if not torch.equal(x, y)]
    x = torch.randn(4, C, 8, 8)
    w = torch.softmax(torch.randn(len(ref.ops)), -1)
    outputs = {}
    for mode in ("train", "eval"):
        theirs.train(mode == "train")
        ours.train(mode == "train")
        with torch.no_grad():
            diff = (theirs(x, w) - ours.edge_forward(x, w, None, 0.0)).abs().max()
        outputs[mode] = float(diff)
    return {"C": C, "stride": stride, "tensors": len(a), "equal": len(a) - len(differ), "differ": differ,
            "output_max_abs_diff": outputs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", type=Path, required=True, help="a checkout of github.com/xiangning-chen/DrNAS")
    p.add_argument("--name", default="drnas_reference_check")
    args = p.parse_args()
    commit = subprocess.run(["git", "-C", str(args.ref), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    ref = _reference(args.ref)
    result = {"machine": machine(), "reference_commit": commit or "unknown", "ops": ref.ops,
              "pruning": check_pruning(ref),
              "widening": [check_widening(ref, 36, 1), check_widening(ref, 72, 2)]}
    pr = result["pruning"]
    lines = [
        "# DrNAS's progressive learning beside DrNAS's code",
        "",
        f"Machine: {machine_text(result['machine'])}. DrNAS at commit {result['reference_commit'][:7]} (its DARTS-space "
        "code, run on the CPU in a scratch folder). Command: `python experiments/drnas_reference_check.py --ref PATH`.",
        "",
        "| check | result |",
        "| --- | --- |",
        *(f"| pruning to {r['keep']} ops per edge | masks {'equal' if r['masks_equal'] else 'DIFFER'}, alphas "
          f"{'equal' if r['alphas_equal'] else 'DIFFER'} |" for r in pr["rounds"]),
        *(f"| masked Dirichlet sample, seed {s['seed']} | {'equal' if s['equal'] else 'differs'} (largest difference "
          f"{s['max_abs_diff']:.2g}) |" for s in pr["samples"]),
        *(f"| widening K 6 -> 4, C={w['C']}, stride {w['stride']} | {w['equal']} of {w['tensors']} tensors equal; "
          f"output difference {w['output_max_abs_diff']['train']:.2g} (training mode), "
          f"{w['output_max_abs_diff']['eval']:.2g} (evaluation mode) |" for w in result["widening"]),
        "",
    ]
    for w in result["widening"]:
        for d in w["differ"]:
            lines.append(f"- C={w['C']}, stride {w['stride']}: `{d['darts_lite']}` (DrNAS `{d['drnas']}`), "
                         f"{d['entries']} of its {d['shape'][0]} entries differ.")
    if any(w["differ"] for w in result["widening"]):
        lines += ["", "The stride-2 skip connection (a factorized reduction: two 1x1 convolutions whose outputs are "
                  "concatenated, then one BatchNorm) is the one place the two differ: DrNAS's code indexes the "
                  "BatchNorm statistics of the second convolution's added channels as if they were the first one's; "
                  "darts_lite gives each added channel the statistics of the channel its convolution copied. Only "
                  "the running statistics differ, so training-mode outputs (batch statistics) agree."]
    write_result(RESULTS / f"{args.name}.md", result, lines)


if __name__ == "__main__":
    main()
