"""Once-for-All on the quick setting: sub-networks for three FLOPs budgets taken from one network trained by
progressive shrinking, against the same sub-networks trained from scratch for as many epochs.

    python experiments/ofa_budgets.py                       # trains +experiment=ofa_quick first (~3 min), then
                                                            # specialises for 3 budgets and trains 3 x 2 from scratch
    python experiments/ofa_budgets.py --run runs/ofa/2026-11-30_19-00-00 --budgets 0.3,0.6,1.0 --seeds 0,1

Writes experiments/results/ofa_budgets.json and the .md made from it (tables, settings and the machine; what they
mean is for the docs to say). The trained network's run folder is kept in experiments/results/ofa_budgets_run/
(not in git) and reused by the next run of this script.

From scratch: the standalone sub-network (the same setting and input side) freshly initialised, trained with the
recipe of progressive shrinking's first phase (SGD, Nesterov momentum 0.9, weight decay 3e-5, cosine from lr 0.1)
for the epochs of all six phases together, on the same training images (the held-out validation part left out),
BatchNorm recalibrated like the Once-for-All sub-network's, then measured on the same test split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import RESULTS, machine, machine_text, write_result
from hydra import compose, initialize_config_dir

from darts_lite.__main__ import config_dir
from darts_lite.ofa import OFANetwork
from darts_lite.ofa.shrinking import resize, subnet_accuracy
from darts_lite.ofa.task import build_datamodule, run_ofa

RESULT = RESULTS / "ofa_budgets.md"  # and .json
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
    test = list(dm.test_dataloader())
    accuracy = subnet_accuracy(subnet, dm.train_dataloader(), test, ofa.bn_calibration, side)
    return {"seed": seed, "accuracy": accuracy, "train_s": round(time.perf_counter() - started, 1),
            "test_images": sum(len(y) for _, y in test)}


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``."""
    rows, epochs, seeds = result["rows"], result["epochs"], ",".join(map(str, result["seeds"]))
    test_images = rows[0]["scratch"][0]["test_images"] if rows and rows[0]["scratch"] else "?"
    shrinking = (f"progressive shrinking {result['shrinking_s']:.0f} s in this run" if result["shrinking_s"] is not None
                 else "the network trained before this run, reused")
    lines = [f"# Once-for-All: {len(rows)} budget{'s' * (len(rows) != 1)} from one network, against training from scratch", "",
             f"`{result['command']}`; {machine_text(result['machine'])}; one progressively shrunk network "
             f"(`+experiment=ofa_quick`, {epochs} epochs over {result['phases']} phases), digits test split "
             f"({test_images} images), every sub-network's BatchNorm recalibrated on training batches. From scratch: the "
             f"same standalone sub-network freshly initialised and trained {epochs} epochs (the first phase's recipe), "
             f"seeds {seeds}.", "",
             "| budget (M MACs) | chosen: FLOPs | side | depths | Once-for-All acc (no retraining) | predicted | "
             "from scratch acc | difference | specialisation (s) | from scratch (s) |",
             "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        scratch = " / ".join(f"{s['accuracy']:.4f}" for s in r["scratch"])
        train_s = " / ".join(f"{s['train_s']:.0f}" for s in r["scratch"])
        lines.append(f"| {r['budget']:g} | {r['flops']:.3f} | {r['resolution']} | {' '.join(map(str, r['setting']['d']))} | "
                     f"{r['accuracy']:.4f} | {r['predicted_accuracy']:.4f} | {scratch} | {r['difference']:+.4f} | "
                     f"{r['specialise_s']:.0f} | {train_s} |")
    lines += ["", f"Difference: Once-for-All's accuracy minus the mean from scratch. Times: {shrinking}; "
                  f"{result['wall_time_s']:.0f} s the whole script."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=RUN, help="an ofa_quick run folder (trained first when empty)")
    parser.add_argument("--budgets", default="0.3,0.6,1.0", help="FLOPs budgets, M multiply-adds")
    parser.add_argument("--seeds", default="0,1", help="seeds of the from-scratch trainings")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.time()
    shrinking_s = None
    if not (args.run / "network.pt").is_file():
        t = time.time()
        run_ofa(config(args.run, "ofa.constraint.flops=null", "resume=true" if args.run.exists() else "resume=false"))
        shrinking_s = round(time.time() - t, 1)
        print(f"progressive shrinking: {shrinking_s:.0f} s")
    cfg = config(args.run)
    epochs = sum(cfg.ofa.epochs)
    saved = torch.load(args.run / "network.pt", map_location="cpu", weights_only=True)
    rows = []
    for budget in budgets:
        t = time.time()
        record = run_ofa(config(args.run, "ofa.phase=specialise", f"ofa.constraint.flops={budget}"))["specialise"]
        specialise_s = round(time.time() - t, 1)
        scratch = [from_scratch(cfg, saved["config"], record["setting"], record["resolution"], s, epochs) for s in seeds]
        mean = sum(s["accuracy"] for s in scratch) / len(scratch)
        rows.append({"budget": budget, **{k: record[k] for k in ("flops", "latency_ms", "resolution", "setting",
                                                                  "accuracy", "predicted_accuracy")},
                     "scratch": scratch, "difference": record["accuracy"] - mean, "specialise_s": specialise_s})
        print(f"budget {budget}: once-for-all {record['accuracy']:.4f}, from scratch "
              + ", ".join(f"{s['accuracy']:.4f}" for s in scratch), flush=True)
    result = {"command": f"python experiments/ofa_budgets.py --budgets {args.budgets} --seeds {args.seeds}",
              "rows": rows, "epochs": epochs, "phases": len(cfg.ofa.epochs), "seeds": seeds, "machine": machine(),
              "shrinking_s": shrinking_s, "wall_time_s": round(time.time() - started)}
    write_result(RESULT, result, markdown(result))


if __name__ == "__main__":
    main()
