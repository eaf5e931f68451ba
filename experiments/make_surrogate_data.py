"""The small real data set darts_lite ships for the surrogate benchmark: DARTS-space genotypes trained on the
bundled digits with the EcoNAS tools (the proxy study's quick recipe: C=8, 6 cells, 8 px, 2 epochs), each under
two seeds, written to darts_lite/surrogate/data/digits_c0r0s0e2.csv with how it was made beside it (.json).

    python experiments/make_surrogate_data.py                    # 300 genotypes x seeds 0, 1 (~40 min on 2 cores)
    python experiments/make_surrogate_data.py --architectures 20 --out /tmp/try.csv

Evaluations go through an EcoNAS archive (SQLite, --archive), so an interrupted run continues where it stopped and
nothing is trained twice. Accuracy is the test split's (360 images; the validation part holds 144); each row is one
training, so a genotype appears once per seed and the surrogate's reader averages them (and says so).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from darts_lite.__main__ import config_dir
from darts_lite.econas import build
from darts_lite.econas.evaluator import Request
from darts_lite.econas.settings import resolve
from darts_lite.econas.study import sample_architectures

OUT = Path(__file__).resolve().parents[1] / "darts_lite" / "surrogate" / "data" / "digits_c0r0s0e2.csv"
SETTING = "c0r0s0e2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architectures", type=int, default=300)
    parser.add_argument("--seeds", default="0,1", help="training seeds, comma-separated")
    parser.add_argument("--sample-seed", type=int, default=2026, help="seed of the genotypes' draw")
    parser.add_argument("--archive", default="experiments/results/surrogate_data/archive.sqlite")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.time()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=proxy_study_quick", f"study.reference={SETTING}",
                                                       f"seed={args.sample_seed}", f"archive={args.archive}",
                                                       "run_dir=experiments/results/surrogate_data"])
    archive = build.open_archive(cfg)
    setting = resolve(SETTING, build.base(cfg))
    genotypes = sample_architectures("darts", args.architectures, args.sample_seed)
    rows = []
    for seed in seeds:
        evaluator = build.evaluator(cfg, archive, seed=seed)
        results = evaluator.evaluate([Request(g, setting, setting.epochs) for g in genotypes], label=f"seed {seed}: ")
        for g, r in zip(genotypes, results):
            if r is not None:
                rows.append({"genotype": g.to_text(), "accuracy": round(r["test_acc"], 4), "val_accuracy": round(r["val_acc"], 4),
                             "seed": seed, "setting": SETTING, "epochs": setting.epochs,
                             "wall_time_s": round(r["wall_time_s"], 2)})
    archive.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    provenance = {
        "file": args.out.name,
        "rows": len(rows), "genotypes": args.architectures, "seeds": seeds, "failed": args.architectures * len(seeds) - len(rows),
        "accuracy": "fraction of the digits test split (360 images) right after training; val_accuracy: the 10% of the "
                    "training images held out",
        "setting": {"name": SETTING, "C": 8, "cells": 6, "image_side": 8, "epochs": setting.epochs, "batch": 64, "lr": 0.05,
                    "data": "scikit-learn digits (bundled)", "recipe": "+experiment=proxy_study_quick"},
        "genotypes_drawn": f"darts space, uniform, random.Random({args.sample_seed})",
        "command": shlex.join(["python", *sys.argv]),
        "machine": {"node": platform.node(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "training_time_s": round(sum(r["wall_time_s"] for r in rows), 1),
        "wall_time_s": round(time.time() - started, 1),
        "made": time.strftime("%Y-%m-%d"),
    }
    args.out.with_suffix(".json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"{len(rows)} rows -> {args.out} (and {args.out.with_suffix('.json').name}); {provenance['wall_time_s']:.0f} s")


if __name__ == "__main__":
    main()
