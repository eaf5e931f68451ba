"""EcoNAS's cost: evaluations per hour of the quick settings on this machine (measured), and the training
compute of the full study and search on CIFAR-10 (counted from FLOPs; GPU time only as an estimate).

    python experiments/econas_throughput.py                 # measures, then writes results/econas_throughput.json, .md
    python experiments/econas_throughput.py --evaluations 3 --gpu-tflops 12

Measured: each quick setting's evaluations run inline, as the quick experiments run them, on freshly sampled
genotypes (an empty archive in a temporary folder), so the figure includes every per-evaluation cost
(building the network and data, the Lightning loop, validation each epoch, the test, FLOPs counting).
Counted: forward FLOPs per image of sampled genotypes' evaluation networks (torch's counter) x 3 for
forward+backward x training images x epochs; GPU-days = that / (the assumed sustained FLOP/s).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import RESULTS, machine, machine_text, write_result

from darts_lite.data import train_class_counts
from darts_lite.econas import Archive, Base, Evaluator, Executor, Request, resolve
from darts_lite.econas.settings import setting_dir
from darts_lite.evolve import stage_trainings
from darts_lite.measure import count_flops
from darts_lite.spaces import darts

RESULT = RESULTS / "econas_throughput.md"  # and .json

# the quick experiments' recipes (conf/experiment/proxy_study_quick.yaml, econas_quick.yaml)
STUDY_QUICK = Base(8, 6, 8, train_class_counts("digits"), 64, 0.05, "digits")
EVOLVE_QUICK = Base(16, 5, 8, train_class_counts("digits"), 64, 0.05, "digits")
QUICK = [(STUDY_QUICK, name) for name in ("c0r0s0e5", "c2r0s0e5", "c0r2s0e5", "c0r0s4e5", "c0r0s0e2", "c0r0s0e5n2",
                                          "c2r2s0e2")] + [(EVOLVE_QUICK, "c2r0s0e6")]
CIFAR = Base(36, 20, 32, train_class_counts("cifar10"), 96, 0.025, "cifar10")
VAL_SPLIT = 0.1
CIFAR_TRAIN_IMAGES = 50_000
SEARCH_STAGE_EPOCHS = 20  # epochs a stage-training of the hierarchical search is counted at
PAPER_SEARCH_GPU_DAYS = 8  # the EcoNAS paper's search cost (Zhou et al., 2020), not measured here


def measure(evaluations: int) -> list[dict[str, Any]]:
    """Each quick setting's evaluations of freshly sampled genotypes, inline: time per evaluation, mean test acc."""
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


def cifar_flops(samples: int) -> dict[str, dict[str, Any]]:
    """Per CIFAR-10 setting: its network and epochs, and the mean forward FLOPs per image of sampled genotypes'
    evaluation networks (no auxiliary head)."""
    out = {}
    genotypes = [darts.sample(random.Random(i)) for i in range(samples)]
    for name in ("c0r0s0e600", "c4r4s0e60"):
        s = resolve(name, CIFAR, setting_dir())
        flops = []
        for g in genotypes:
            net = darts.EvalNetwork(g, C=s.channels, layers=s.layers, auxiliary=False, num_classes=10, in_channels=3)
            flops.append(count_flops(net, (3, s.resolution, s.resolution)))
        out[name] = {"C": s.channels, "cells": s.layers, "px": s.resolution, "epochs": s.epochs,
                     "flops": statistics.mean(flops)}
    return out


def compute(settings: dict[str, dict[str, Any]], gpu_tflops: float) -> list[dict[str, Any]]:
    """The training compute of the CIFAR-10 jobs (3 x forward FLOPs x training images x epochs) and its GPU-hours at
    the assumed sustained rate."""
    images = CIFAR_TRAIN_IMAGES * (1 - VAL_SPLIT)

    def train_flops(name: str, epochs: int | None = None) -> float:
        s = settings[name]
        return 3 * s["flops"] * images * (epochs or s["epochs"])  # forward + backward ~ 3 forwards

    full, proxy = train_flops("c0r0s0e600"), train_flops("c4r4s0e60")
    study_models = 50
    search_stages = stage_trainings("hierarchical")  # the default plan
    jobs = [(f"one architecture, full recipe ({settings['c0r0s0e600']['epochs']} epochs)", full),
            ("one architecture, c4r4s0e60", proxy),
            (f"proxy study: {study_models} architectures, full reference + c4r4s0e60", study_models * (full + proxy)),
            (f"hierarchical search, default plan ({search_stages} stage-trainings of {SEARCH_STAGE_EPOCHS} epochs)",
             train_flops("c4r4s0e60", SEARCH_STAGE_EPOCHS) * search_stages)]
    return [{"job": job, "flops": total, "pflop": total / 1e15, "gpu_hours": total / (gpu_tflops * 1e12 * 3600)}
            for job, total in jobs]


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``."""
    s, full, proxy = result["settings"], result["cifar"]["c0r0s0e600"], result["cifar"]["c4r4s0e60"]
    search = result["compute"][-1]
    return [
        "# EcoNAS: throughput here, compute on CIFAR-10",
        "",
        f"`{result['command']}`; {machine_text(result['machine'])}. One run; inline executor, digits, every "
        "per-evaluation cost included.",
        "",
        "## Measured: the quick settings on this machine",
        "",
        "| setting | C | cells | px | epochs | s per evaluation | evaluations per hour | mean test acc |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {r['setting']} | {r['C']} | {r['cells']} | {r['px']} | {r['epochs']} | {r['s_per_eval']:.1f} | "
          f"{r['per_hour']:.0f} | {r['test_acc']:.3f} |" for r in result["measured"]],
        "",
        "## Counted: training compute on CIFAR-10 (GPU time is an estimate)",
        "",
        f"Forward FLOPs per image, mean over {s['flops_samples']} sampled genotypes (DARTS evaluation network, no "
        f"auxiliary head): full recipe C={full['C']}, {full['cells']} cells, {full['px']} px: "
        f"{full['flops'] / 1e6:.0f} MFLOPs; c4r4s0e60 (C={proxy['C']}, {proxy['cells']} cells, {proxy['px']} px): "
        f"{proxy['flops'] / 1e6:.1f} MFLOPs. Training compute = 3 x forward x {s['training_images']:.0f} images x "
        f"epochs. GPU-hours = training compute / {s['gpu_tflops']:g} TFLOP/s sustained: an assumed rate, not a "
        "measurement.",
        "",
        "| job | training compute (PFLOP) | GPU-hours at the assumed rate |",
        "| --- | ---: | ---: |",
        *[f"| {c['job']} | {c['pflop']:.3g} | {c['gpu_hours']:.3g} |" for c in result["compute"]],
        "",
        f"For comparison, the EcoNAS paper reports {result['paper_search_gpu_days']:g} GPU-days for its search: "
        f"{result['paper_search_gpu_days'] * 24 / search['gpu_hours']:.0f}x the search's GPU-hours counted above.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=4, help="evaluations per quick setting")
    parser.add_argument("--gpu-tflops", type=float, default=10.0,
                        help="assumed sustained training throughput of one GPU, TFLOP/s (an assumption, not a measurement)")
    parser.add_argument("--flops-samples", type=int, default=8)
    args = parser.parse_args()
    rows = measure(args.evaluations)
    cifar = cifar_flops(args.flops_samples)
    result = {
        "command": f"python experiments/econas_throughput.py --evaluations {args.evaluations} "
                   f"--gpu-tflops {args.gpu_tflops:g} --flops-samples {args.flops_samples}",
        "settings": {"evaluations": args.evaluations, "gpu_tflops": args.gpu_tflops, "flops_samples": args.flops_samples,
                     "val_split": VAL_SPLIT, "training_images": CIFAR_TRAIN_IMAGES * (1 - VAL_SPLIT)},
        "machine": machine(),
        "measured": rows,
        "cifar": cifar,
        "compute": compute(cifar, args.gpu_tflops),
        "paper_search_gpu_days": PAPER_SEARCH_GPU_DAYS,
    }
    write_result(RESULT, result, markdown(result))


if __name__ == "__main__":
    main()
