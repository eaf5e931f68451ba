"""Once-for-All on the quick setting: sub-networks for three FLOPs budgets taken from one network trained by
progressive shrinking, against the same sub-networks trained from scratch for as many epochs.

    python experiments/ofa_budgets.py                       # trains +experiment=ofa_quick first (~3 min), then
                                                            # specialises for 3 budgets and trains 3 x 2 from scratch
    python experiments/ofa_budgets.py --run runs/ofa/2026-11-30_19-00-00 --budgets 0.3,0.6,1.0 --seeds 0,1

Writes experiments/results/ofa_budgets.md and .json. The trained network's run folder is kept in
experiments/results/ofa_budgets_run/ (not in git) and reused by the next run of this script.

From scratch: the standalone sub-network (the same setting and input side) freshly initialised, trained with the
recipe of progressive shrinking's first phase (SGD, Nesterov momentum 0.9, weight decay 3e-5, cosine from lr 0.1)
for the epochs of all six phases together, on the same training images (the held-out validation part left out),
BatchNorm recalibrated like the Once-for-All sub-network's, then measured on the same test split.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from darts_lite.__main__ import config_dir
from darts_lite.ofa import OFANetwork
from darts_lite.ofa.shrinking import resize, subnet_accuracy
from darts_lite.ofa.task import build_datamodule, run_ofa

RESULTS = Path(__file__).parent / "results"
RUN = RESULTS / "ofa_budgets_run"


def config(run: Path, *overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=["+experiment=ofa_quick", f"run_dir={run}",
                                                        "trainer.enable_progress_bar=false", *overrides])


def from_scratch(cfg, network: dict, setting: dict, side: int, seed: int, epochs: int) -> dict:
    """Train the standalone sub-network of ``setting`` from a fresh initialisation; its test accuracy."""
    torch.manual_seed(seed)
    net = OFANetwork(**network)
    net.set_active_subnet(**setting)
    subnet = net.get_active_subnet().train()
    dm = build_datamodule(cfg)
    dm.setup()
    lr, ofa = cfg.ofa.lr[0], cfg.ofa
    opt = torch.optim.SGD(subnet.parameters(), lr=lr, momentum=ofa.momentum, nesterov=ofa.nesterov,
                          weight_decay=ofa.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=ofa.lr_min)
    started = time.perf_counter()
    for _ in range(epochs):
        subnet.train()
        for x, y in dm.train_dataloader():
            opt.zero_grad()
            F.cross_entropy(subnet(resize(x, side)), y).backward()
            opt.step()
        sched.step()
    accuracy = subnet_accuracy(subnet, dm.train_dataloader(), list(dm.test_dataloader()), ofa.bn_calibration, side)
    return {"seed": seed, "accuracy": accuracy, "train_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=RUN, help="an ofa_quick run folder (trained first when empty)")
    parser.add_argument("--budgets", default="0.3,0.6,1.0", help="FLOPs budgets, M multiply-adds")
    parser.add_argument("--seeds", default="0,1", help="seeds of the from-scratch trainings")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.time()
    if not (args.run / "network.pt").is_file():
        t = time.time()
        run_ofa(config(args.run, "ofa.constraint.flops=null", "resume=true" if args.run.exists() else "resume=false"))
        print(f"progressive shrinking: {time.time() - t:.0f} s")
    cfg = config(args.run)
    epochs = sum(cfg.ofa.epochs)
    saved = torch.load(args.run / "network.pt", map_location="cpu", weights_only=True)
    rows = []
    for budget in budgets:
        record = run_ofa(config(args.run, "ofa.phase=specialise", f"ofa.constraint.flops={budget}"))["specialise"]
        scratch = [from_scratch(cfg, saved["config"], record["setting"], record["resolution"], s, epochs) for s in seeds]
        rows.append({"budget": budget, **{k: record[k] for k in ("flops", "latency_ms", "resolution", "setting",
                                                                  "accuracy", "predicted_accuracy")},
                     "scratch": scratch})
        print(f"budget {budget}: once-for-all {record['accuracy']:.4f}, from scratch "
              + ", ".join(f"{s['accuracy']:.4f}" for s in scratch), flush=True)
    machine = f"{platform.node()}, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    result = {"rows": rows, "epochs": epochs, "seeds": seeds, "machine": machine, "wall_time_s": round(time.time() - started)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ofa_budgets.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Once-for-All: three budgets from one network, against training from scratch", "",
             f"`python experiments/ofa_budgets.py --budgets {args.budgets} --seeds {args.seeds}`; {machine}; one "
             f"progressively shrunk network (`+experiment=ofa_quick`, {epochs} epochs over six phases), digits test split "
             "(360 images), every sub-network's BatchNorm recalibrated on training batches. From scratch: the same "
             f"standalone sub-network freshly initialised and trained {epochs} epochs (the first phase's recipe), "
             f"seeds {args.seeds}.", "",
             "| budget (M MACs) | chosen: FLOPs | side | depths | Once-for-All acc (no retraining) | predicted | "
             "from scratch acc | difference |",
             "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        mean = sum(s["accuracy"] for s in r["scratch"]) / len(r["scratch"])
        scratch = " / ".join(f"{s['accuracy']:.4f}" for s in r["scratch"])
        lines.append(f"| {r['budget']:g} | {r['flops']:.3f} | {r['resolution']} | {' '.join(map(str, r['setting']['d']))} | "
                     f"{r['accuracy']:.4f} | {r['predicted_accuracy']:.4f} | "
                     f"{scratch} | {r['accuracy'] - mean:+.4f} |")
    (RESULTS / "ofa_budgets.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
