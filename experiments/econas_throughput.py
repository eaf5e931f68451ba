"""EcoNAS's cost: evaluations per hour of the quick settings on this machine (measured), and the training
compute of the full study and search on CIFAR-10 (counted from FLOPs; GPU time only as an estimate).

    python experiments/econas_throughput.py                 # measures, then writes results/econas_throughput.md
    python experiments/econas_throughput.py --evaluations 3 --gpu-tflops 12

Measured: each quick setting's evaluations run inline, as the quick experiments run them, on freshly sampled
genotypes (an empty archive in a temporary folder), so the figure includes every per-evaluation cost
(building the network and data, the Lightning loop, validation each epoch, the test, FLOPs counting).
Counted: forward FLOPs per image of sampled genotypes' evaluation networks (torch's counter) x 3 for
forward+backward x training images x epochs; GPU-days = that / (the assumed sustained FLOP/s).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from darts_lite.data import train_class_counts
from darts_lite.econas import Archive, Base, Evaluator, Executor, Request, resolve
from darts_lite.econas.settings import setting_dir
from darts_lite.evolve import stage_trainings
from darts_lite.measure import count_flops
from darts_lite.spaces import darts

RESULTS = Path(__file__).parent / "results" / "econas_throughput.md"

# the quick experiments' recipes (conf/experiment/proxy_study_quick.yaml, econas_quick.yaml)
STUDY_QUICK = Base(8, 6, 8, train_class_counts("digits"), 64, 0.05, "digits")
EVOLVE_QUICK = Base(16, 5, 8, train_class_counts("digits"), 64, 0.05, "digits")
QUICK = [(STUDY_QUICK, name) for name in ("c0r0s0e5", "c2r0s0e5", "c0r2s0e5", "c0r0s4e5", "c0r0s0e2", "c0r0s0e5n2",
                                          "c2r2s0e2")] + [(EVOLVE_QUICK, "c2r0s0e6")]
CIFAR = Base(36, 20, 32, train_class_counts("cifar10"), 96, 0.025, "cifar10")
VAL_SPLIT = 0.1


def measure(evaluations: int) -> list[dict]:
    rows = []
    data = {"name": "digits", "download": False, "crop_padding": 1, "flip": False, "eval_batch_size": 256}
    train = {"auxiliary": False, "network_dataset": "cifar", "cutout": 0, "drop_path_prob": 0.1, "channels_last": False}
    for base, name in QUICK:
        setting = resolve(name, base)
        genotypes = [darts.sample(random.Random(1000 + i)) for i in range(evaluations)]
        with tempfile.TemporaryDirectory() as tmp:
            archive = Archive(Path(tmp) / "archive.sqlite")
            ev = Evaluator(archive, Executor("inline"), data=data, train=train, seed=0, folder=Path(tmp) / "evaluations",
                           val_split=VAL_SPLIT, out=open("/dev/null", "w"))
            started = time.time()
            done = ev.evaluate([Request(g, setting, setting.epochs) for g in genotypes])
            elapsed = time.time() - started
            archive.close()
        ok = [r for r in done if r is not None]
        rows.append({"setting": name, "C": setting.channels, "cells": setting.layers, "px": setting.resolution,
                     "epochs": setting.epochs, "s_per_eval": elapsed / len(genotypes),
                     "per_hour": 3600 * len(genotypes) / elapsed,
                     "test_acc": statistics.mean(r["test_acc"] for r in ok)})
        print(rows[-1], flush=True)
    return rows


def cifar_flops(samples: int) -> dict[str, float]:
    """Mean forward FLOPs per image of sampled genotypes' CIFAR-10 evaluation networks, per setting."""
    out = {}
    genotypes = [darts.sample(random.Random(i)) for i in range(samples)]
    for name in ("c0r0s0e600", "c4r4s0e60"):
        s = resolve(name, CIFAR, setting_dir())
        flops = []
        for g in genotypes:
            net = darts.EvalNetwork(g, C=s.channels, layers=s.layers, auxiliary=False, num_classes=10, in_channels=3)
            flops.append(count_flops(net, (3, s.resolution, s.resolution)))
        out[name] = statistics.mean(flops)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=4, help="evaluations per quick setting")
    parser.add_argument("--gpu-tflops", type=float, default=10.0,
                        help="assumed sustained training throughput of one GPU, TFLOP/s (an assumption, not a measurement)")
    parser.add_argument("--flops-samples", type=int, default=8)
    args = parser.parse_args()
    rows = measure(args.evaluations)
    flops = cifar_flops(args.flops_samples)
    images = 50_000 * (1 - VAL_SPLIT)
    per_hour = args.gpu_tflops * 1e12 * 3600

    def train_flops(name: str, epochs: int) -> float:
        return 3 * flops[name] * images * epochs  # forward + backward ~ 3 forwards

    full, proxy = train_flops("c0r0s0e600", 600), train_flops("c4r4s0e60", 60)
    study_models = 50
    search_stages = stage_trainings("hierarchical")  # the default plan: 16 initial, 100 cycles
    search = train_flops("c4r4s0e60", 20) * search_stages
    lines = [
        "# EcoNAS: throughput here, compute on CIFAR-10",
        "",
        f"`python experiments/econas_throughput.py --evaluations {args.evaluations} --gpu-tflops {args.gpu_tflops:g}`, "
        f"{platform.node()}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. One run; inline executor, digits, every per-evaluation cost included.",
        "",
        "## Measured: the quick settings on this machine",
        "",
        "| setting | C | cells | px | epochs | s per evaluation | evaluations per hour | mean test acc |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {r['setting']} | {r['C']} | {r['cells']} | {r['px']} | {r['epochs']} | {r['s_per_eval']:.1f} | "
          f"{r['per_hour']:.0f} | {r['test_acc']:.3f} |" for r in rows],
        "",
        "## Counted: training compute on CIFAR-10 (GPU time is an estimate)",
        "",
        f"Forward FLOPs per image, mean over {args.flops_samples} sampled genotypes (DARTS evaluation network, no "
        f"auxiliary head): full recipe C=36, 20 cells, 32 px: {flops['c0r0s0e600'] / 1e6:.0f} MFLOPs; "
        f"c4r4s0e60 (C=9, 8 px): {flops['c4r4s0e60'] / 1e6:.1f} MFLOPs. Training compute = 3 x forward x "
        f"{images:.0f} images x epochs. GPU-hours assume {args.gpu_tflops:g} TFLOP/s sustained: an assumption, and a "
        "lower bound of the time, since small separable convolutions (and 8 px images above all) use a GPU far below "
        "its peak.",
        "",
        "| job | training compute (PFLOP) | GPU-hours at the assumed rate (lower bound) |",
        "| --- | ---: | ---: |",
        f"| one architecture, full recipe (600 epochs) | {full / 1e15:.3g} | {full / per_hour:.3g} |",
        f"| one architecture, c4r4s0e60 | {proxy / 1e15:.3g} | {proxy / per_hour:.3g} |",
        f"| proxy study: {study_models} architectures, full reference + c4r4s0e60 | "
        f"{study_models * (full + proxy) / 1e15:.3g} | {study_models * (full + proxy) / per_hour:.3g} |",
        f"| hierarchical search, default plan ({search_stages} stage-trainings of 20 epochs) | {search / 1e15:.3g} | "
        f"{search / per_hour:.3g} |",
        "",
        "EcoNAS reports 8 GPU-days for its search: about 200 times the count above, which is how little of a GPU an "
        "8 px, 9-channel network uses. Plan a cluster run by the published figure, and by the first cycles' measured "
        "time (printed per cycle), not by FLOPs.",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
