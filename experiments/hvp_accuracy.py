"""Measurement: how far second-order DARTS's finite-difference Hessian-vector products are from the exact one.

The second-order architecture gradient is g = grad_a L_val(w') - xi * H v, with H v the mixed second
derivative of the training loss (alphas x weights) applied to v = grad_w' L_val(w'). `search.hvp=exact`
computes H v by automatic differentiation; `central` (the paper's) and `forward` by finite differences
with eps = unrolled_eps / ||v||. On a real supernet (ReLU, max pooling) the perturbed weights cross kinks,
so the finite differences are not derivatives there and their value depends on eps.

For each size and state, on a few batch pairs, this reports the relative differences from exact of
- the full architecture gradient: ||g_est - g_exact|| / ||g_exact||
- the second-order term alone: ||Hv_est - Hv_exact|| / ||Hv_exact||
at the published unrolled_eps = 0.01 and at 0.001 (eps / 10). Each estimator runs in the module's own
code path (darts_lite.bilevel.unrolled_architecture_gradients) on the same weights, alphas, batches and random draws.

Sizes: the quickstart's supernet (C=8, 5 cells, batch 64, scikit-learn's 8x8 digits) at initialisation
and after the quickstart's 3 weight-only warm-up epochs; the DARTS paper's (C=16, 8 cells, batch 64,
32x32, random images and labels) at initialisation. Then, in float64 at the quickstart size, a sweep of
eps down to where the finite differences stop crossing kinks and converge on exact.

    python experiments/hvp_accuracy.py                              # both sizes, 3 batch pairs each
    python experiments/hvp_accuracy.py --sizes quickstart --batches 5 --dtype float64 --no-eps-sweep
    python experiments/hvp_accuracy.py --paper-batch 32                # less memory

Writes experiments/results/hvp_accuracy.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
from pathlib import Path

import pytorch_lightning as pl
import torch

from darts_lite import SearchModule, bilevel
from darts_lite.data import SearchDataModule

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {
    "quickstart": dict(C=8, layers=5, batch=64, data="digits 8x8", lr=0.05, epochs=10, warmup=3),
    "paper": dict(C=16, layers=8, batch=64, data="random 3x32x32", lr=0.025, epochs=50, warmup=0),
}
ESTIMATES = [("central", 0.01), ("central", 0.001), ("forward", 0.01), ("forward", 0.001)]


def quickstart_states(batches: int):
    """Yields (state, module, weight optimiser, batch pairs) at initialisation and after the warm-up."""
    s = SIZES["quickstart"]

    def datamodule():
        return SearchDataModule(name="digits", batch_size=s["batch"], crop_padding=1, flip=False, seed=0)

    def module():
        return SearchModule(network=dict(C=s["C"], layers=s["layers"], num_classes=10, in_channels=1), order=2,
                            epochs=s["epochs"], warmup_epochs=s["warmup"], lr=s["lr"], arch_lr=3e-3)

    pl.seed_everything(0, verbose=False)
    m, dm = module(), datamodule()
    dm.setup()
    yield "init", m, fresh_sgd(m, s["lr"]), take(dm, batches)

    # the quickstart's warm-up: weight steps only, through the Trainer as a search runs them
    pl.seed_everything(0, verbose=False)
    m, dm = module(), datamodule()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=s["warmup"], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, use_distributed_sampler=False)
    trainer.fit(m, datamodule=dm)
    yield f"after {s['warmup']} warm-up epochs", m, trainer.optimizers[0], take(dm, batches)


def paper_states(batches: int):
    s = SIZES["paper"]
    torch.manual_seed(0)
    m = SearchModule(network=dict(C=s["C"], layers=s["layers"], num_classes=10), order=2, lr=s["lr"])
    pairs = []
    for _ in range(batches):
        pair = [(torch.randn(s["batch"], 3, 32, 32), torch.randint(0, 10, (s["batch"],))) for _ in range(2)]
        pairs.append(tuple(pair))
    yield "init", m, fresh_sgd(m, s["lr"]), pairs


def fresh_sgd(m: SearchModule, lr: float) -> torch.optim.SGD:
    """The weight optimiser of a search's first step (no momentum buffer yet)."""
    return torch.optim.SGD(m.net.weight_parameters(), lr=lr, momentum=0.9, weight_decay=3e-4)


def take(dm: SearchDataModule, n: int) -> list:
    dm.setup()
    it = iter(dm.train_dataloader())
    return [next(it) for _ in range(n)]


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().flatten().double() for t in tensors])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def measure(m: SearchModule, opt: torch.optim.SGD, pair, seed: int) -> dict:
    """Relative differences from exact of each estimate on one batch pair."""
    (x_w, y_w), (x_a, y_a) = pair
    x_w, x_a = m._layout(x_w), m._layout(x_a)
    alphas = m.net.arch_parameters()
    xi = opt.param_groups[0]["lr"]
    recorded = []
    exact_hvp = bilevel.exact_hvp

    def recording(*args):
        hv = exact_hvp(*args)
        recorded.append(flat(hv))
        return hv

    bilevel.exact_hvp = recording  # the unrolled step calls the module's function: record what it returns

    def arch_grad(hvp: str, unrolled_eps: float = 0.01) -> torch.Tensor:
        m.hparams.hvp, m.hparams.unrolled_eps = hvp, unrolled_eps
        torch.manual_seed(seed)  # same random draws for every estimator
        m._second_order_arch_grads(x_w, y_w, x_a, y_a, opt)
        return flat(a.grad for a in alphas)

    try:
        g_exact = arch_grad("exact")
    finally:
        bilevel.exact_hvp = exact_hvp
    hv_exact = recorded[-1]
    g_val = g_exact + xi * hv_exact  # grad_a L_val(w'), the same in every estimator's code path
    out = {"second_order_share": (xi * hv_exact.norm() / g_val.norm()).item(), "estimates": {}}
    for hvp, unrolled_eps in ESTIMATES:
        g = arch_grad(hvp, unrolled_eps)
        hv = (g_val - g) / xi
        out["estimates"][f"{hvp}@{unrolled_eps}"] = {"gradient": rel(g, g_exact), "term": rel(hv, hv_exact)}
    return out


def eps_sweep(seed: int = 0) -> list[dict]:
    """float64, quickstart size at initialisation, one batch pair: the finite differences against exact from
    the published eps down to where float64 rounding takes over. Once eps is below the distance to the nearest
    kink along v they converge on exact (central at O(eps^2), forward at O(eps)): exact is the derivative
    there, and the published eps is far above that point."""
    _, m, opt, pairs = next(quickstart_states(1))
    m.net.train()
    m.setup("fit")
    m.double()
    (x_w, y_w), (x_a, y_a) = pairs[0]
    x_w, x_a = m._layout(x_w.double()), m._layout(x_a.double())

    def arch_grad(hvp: str, unrolled_eps: float = 0.01) -> torch.Tensor:
        m.hparams.hvp, m.hparams.unrolled_eps = hvp, unrolled_eps
        torch.manual_seed(seed)
        m._second_order_arch_grads(x_w, y_w, x_a, y_a, opt)
        return flat(a.grad for a in m.net.arch_parameters())

    g_exact = arch_grad("exact")
    return [{"unrolled_eps": e, "central": rel(arch_grad("central", e), g_exact),
             "forward": rel(arch_grad("forward", e), g_exact)} for e in (10.0 ** -k for k in range(2, 12))]


def summarise(size: str, state: str, per_batch: list[dict]) -> dict:
    row = {"size": size, "state": state, "batches": len(per_batch),
           "second_order_share": statistics.median(b["second_order_share"] for b in per_batch), "estimates": {}}
    for key in per_batch[0]["estimates"]:
        for what in ("gradient", "term"):
            values = [b["estimates"][key][what] for b in per_batch]
            row["estimates"].setdefault(key, {})[what] = {"median": statistics.median(values), "max": max(values)}
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| size | state | second-order share | estimator | eps | full gradient: median (max) | "
        "second-order term: median (max) |",
        "| --- | --- | ---: | --- | --- | ---: | ---: |",
    ]
    for r in rows:
        s = SIZES[r["size"]]
        where = f"{r['size']} (C={s['C']}, {s['layers']} cells, batch {s['batch']}, {s['data']})"
        for key, e in r["estimates"].items():
            hvp, unrolled_eps = key.split("@")
            eps = f"{unrolled_eps}/‖v‖" + (" (published)" if float(unrolled_eps) == 0.01 else "")
            g, t = e["gradient"], e["term"]
            lines.append(
                f"| {where} | {r['state']} | {r['second_order_share']:.1%} | {hvp} | {eps} | "
                f"{g['median']:.1%} ({g['max']:.1%}) | {t['median']:.1%} ({t['max']:.1%}) |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="quickstart,paper")
    p.add_argument("--batches", type=int, default=3, help="batch pairs per size and state (median and max reported)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--paper-batch", type=int, default=64,
                   help="batch size at the paper size (hvp=exact at batch 64 peaks near 23 GB on CPU)")
    p.add_argument("--no-eps-sweep", dest="eps_sweep", action="store_false",
                   help="skip the float64 sweep of eps at the quickstart size")
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    SIZES["paper"]["batch"] = args.paper_batch
    states = {"quickstart": quickstart_states, "paper": paper_states}
    rows = []
    for size in args.sizes.split(","):
        if size not in states:
            raise SystemExit(f"unknown size {size!r}; sizes: {list(states)}")
        for state, m, opt, pairs in states[size](args.batches):
            print(f"measuring {size}, {state} ...", flush=True)
            m.net.train()
            m.setup("fit")  # channels_last, as a search runs
            if dtype == torch.float64:
                m.double()
                pairs = [tuple((x.double(), y) for x, y in pair) for pair in pairs]
                for buf in opt.state.values():
                    buf["momentum_buffer"] = buf["momentum_buffer"].double()
            per_batch = [measure(m, opt, pair, seed) for seed, pair in enumerate(pairs)]
            rows.append(summarise(size, state, per_batch) | {"per_batch": per_batch})
    sweep = eps_sweep() if args.eps_sweep else []
    info = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "dtype": args.dtype}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hvp_accuracy.json").write_text(json.dumps({"machine": info, "rows": rows, "eps_sweep": sweep}, indent=2) + "\n")
    md = "\n".join([
        "# Second-order DARTS: finite-difference Hessian-vector products against the exact one", "",
        f"torch {info['torch']}, {args.dtype}, {info['date']}; {args.batches} batch pairs per row (median and max).",
        "Relative differences from `search.hvp=exact`: of the full architecture gradient, and of the second-order "
        "term H v alone. Second-order share: ‖xi H v‖ / ‖grad_a L_val(w')‖ (exact), how much the term weighs in the "
        "gradient.", "",
        table(rows), "",
    ])
    if sweep:
        md += "\n".join([
            "## Where the finite differences become derivatives", "",
            "quickstart size at initialisation, float64, one batch pair: relative difference of the full architecture "
            "gradient from exact as eps shrinks.", "",
            "| unrolled_eps (eps = unrolled_eps / ‖v‖) | central | forward |", "| ---: | ---: | ---: |",
            *[f"| {r['unrolled_eps']:.0e} | {r['central']:.2e} | {r['forward']:.2e} |" for r in sweep], "",
        ])
    (RESULTS / "hvp_accuracy.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
