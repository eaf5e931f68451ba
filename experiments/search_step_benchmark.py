"""Benchmark: time one full search step and the supernet's forward+backward, record peak memory.

Cases: DARTS first order, DARTS second order (the paper's central difference, hvp=forward, and the
exact Hessian-vector product hvp=exact) and GDAS, at the DARTS paper's supernet size (8 cells, C=16,
batch 64, 32x32), at the EcoNAS-derived proxy of `+experiment=gdas` (8 cells, C=8, batch 256, 16x16)
and at the quickstart's (5 cells, C=8, batch 64, 1x8x8 as the digits).
A step is what users run: SearchModule.training_step under a real Trainer (architecture update, then
weight update). Each case runs in its own process so that its peak memory (max RSS on CPU, max
allocated on CUDA) is its own.

    python experiments/search_step_benchmark.py                 # all cases, CPU or GPU (auto)
    python experiments/search_step_benchmark.py --sizes proxy --steps 10
    python experiments/search_step_benchmark.py --algorithms darts1,pc_darts,sdarts_rs,sdarts_adv,resource,checkpoint \
        --sizes paper --steps 2 --name search_step_tricks       # the bag of tricks' rows

Writes experiments/results/<name>_<device>.json and .md (--name, default search_step) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, machine, machine_text, write_result

SIZES = {
    "quickstart": dict(C=8, layers=5, batch=64, resolution=8, channels=1),
    "paper": dict(C=16, layers=8, batch=64, resolution=32, channels=3),
    "proxy": dict(C=8, layers=8, batch=256, resolution=16, channels=3),
}
ALGORITHMS = {
    "darts1": dict(relaxation="softmax", order=1, label="DARTS 1st order"),
    "darts2": dict(relaxation="softmax", order=2, hvp="central", label="DARTS 2nd order, hvp=central (the paper's)"),
    "darts2f": dict(relaxation="softmax", order=2, hvp="forward", label="DARTS 2nd order, hvp=forward"),
    "darts2e": dict(relaxation="softmax", order=2, hvp="exact", label="DARTS 2nd order, hvp=exact"),
    "gdas": dict(relaxation="gumbel", order=1, label="GDAS"),
    # the bag of tricks: first-order DARTS with one switch each (python ... --algorithms darts1,pc_darts,...)
    "pc_darts": dict(relaxation="softmax", order=1, network=dict(partial_channels=4, edge_normalization=True),
                     label="PC-DARTS (K=4, edge normalization)"),
    "sdarts_rs": dict(relaxation="softmax", order=1, module=dict(perturb="random"), label="SDARTS random smoothing"),
    "sdarts_adv": dict(relaxation="softmax", order=1, module=dict(perturb="adversarial"), label="SDARTS adversarial"),
    "resource": dict(relaxation="softmax", order=1, module=dict(resource="flops", resource_weight=1.0),
                     label="resource-aware (FLOPs)"),
    "checkpoint": dict(relaxation="softmax", order=1, network=dict(checkpoint_cells=True),
                       label="checkpointed cells"),
    # the default recomputes the cheap tensors (search.recompute=cheap); this keeps every tensor autograd saves
    "recompute_none": dict(relaxation="softmax", order=1, network=dict(recompute="none"),
                           label="recompute=none (every tensor autograd saves kept)"),
}


def run_case(algorithm: str, size: str, device: str, steps: int, warmup: int) -> dict:
    """Runs in a fresh process: times training steps and forward+backward of one case."""
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F

    from darts_lite import SearchModule

    torch.manual_seed(0)
    s, a = SIZES[size], ALGORITHMS[algorithm]
    cuda = device == "cuda"
    module = SearchModule(
        network=dict(C=s["C"], layers=s["layers"], num_classes=10, in_channels=s["channels"], relaxation=a["relaxation"],
                     **a.get("network", {})),
        order=a["order"],
        hvp=a.get("hvp", "central"),
        **a.get("module", {}),
    )
    dev = torch.device(device)

    def batch():
        x = torch.randn(s["batch"], s["channels"], s["resolution"], s["resolution"], device=dev)
        return x, torch.randint(0, 10, (s["batch"],), device=dev)

    batches = [(batch(), batch()) for _ in range(2)]

    class Batches:
        def __len__(self):
            return warmup + steps

        def __iter__(self):
            for i in range(warmup + steps):
                yield batches[i % 2]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class StepTimer(pl.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sync()
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync()
            self.times.append(time.perf_counter() - self.t0)

    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer],
        limit_val_batches=0,
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, train_dataloaders=Batches())
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
        memory_measure = "max allocated (CUDA)"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
        memory_measure = "process max RSS growth during the steps (CPU)"

    # forward+backward of the supernet alone (weights and alphas), the cost GDAS cuts
    net = module.net.train()
    (x, y), _ = batches[0]
    x = module._layout(x)
    fb = []
    for _ in range(warmup + 3):
        sync()
        t0 = time.perf_counter()
        F.cross_entropy(net(x), y).backward()
        sync()
        fb.append(time.perf_counter() - t0)
    return {
        "algorithm": algorithm, "size": size, **s, "steps_timed": len(timer.times[warmup:]),
        "step_s": statistics.median(timer.times[warmup:]), "fwd_bwd_s": statistics.median(fb[warmup:]),
        "peak_mib": peak, "memory_measure": memory_measure,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| size | algorithm | step (s) | fwd+bwd (s) | peak memory (MiB) | step / DARTS-1 step | fwd+bwd / DARTS fwd+bwd |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        base = next((b for b in rows if b["size"] == r["size"] and b["algorithm"] == "darts1"), None)
        ratio = f"{r['step_s'] / base['step_s']:.2f}x" if base else "-"
        fb = f"{r['fwd_bwd_s'] / base['fwd_bwd_s']:.2f}x" if base else "-"
        lines.append(
            f"| {r['size']} (C={r['C']}, {r['layers']} cells, batch {r['batch']}, {r['resolution']}px) | "
            f"{ALGORITHMS[r['algorithm']]['label']} | {r['step_s']:.3f} | {r['fwd_bwd_s']:.3f} | {r['peak_mib']:.0f} | "
            f"{ratio} | {fb} |"
        )
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    out = []
    by = {(r["size"], r["algorithm"]): r for r in rows}
    if ("paper", "darts1") in by and ("paper", "gdas") in by:
        speedup = by["paper", "darts1"]["fwd_bwd_s"] / by["paper", "gdas"]["fwd_bwd_s"]
        out.append(f"GDAS forward+backward {speedup:.1f}x cheaper than DARTS at the paper size "
                   f"(target >= 3x): {'met' if speedup >= 3 else 'NOT met'}")
    for size in SIZES:
        for algo, how in (("darts2", "central difference, the paper's"), ("darts2f", "hvp=forward"),
                          ("darts2e", "hvp=exact")):
            if (size, "darts1") in by and (size, algo) in by:
                ratio = by[size, algo]["step_s"] / by[size, "darts1"]["step_s"]
                out.append(f"second-order step ({how}) {ratio:.2f}x a first-order step at the {size} size "
                           f"(target <= 2.5x): {'met' if ratio <= 2.5 else 'NOT met'}")
        if (size, "darts2") in by and (size, "darts2e") in by:
            exact, central = by[size, "darts2e"], by[size, "darts2"]
            ratio, memory = exact["step_s"] / central["step_s"], exact["peak_mib"] / central["peak_mib"]
            cheap = ratio <= 1 and memory <= 1
            out.append(f"hvp=exact step {ratio:.2f}x the time and {memory:.2f}x the peak memory of hvp=central at the "
                       f"{size} size (exact to be the default if at most as expensive in both): "
                       f"{'met' if cheap else 'NOT met'}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--sizes", default="quickstart,paper,proxy")
    p.add_argument("--algorithms", default="darts1,darts2,darts2f,darts2e,gdas")
    p.add_argument("--steps", type=int, default=3, help="timed steps per case (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--name", default="search_step", help="writes results/<name>_<device>.md and .json")
    p.add_argument("--case-timeout", type=float, default=900, help="seconds before a case's process counts as hung")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: ALGORITHM:SIZE in this process
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.case:
        algorithm, size = args.case.split(":")
        Path(args.json_out).write_text(json.dumps(run_case(algorithm, size, device, args.steps, args.warmup)))
        return

    rows = []
    for size in args.sizes.split(","):
        for algorithm in args.algorithms.split(","):
            if size not in SIZES or algorithm not in ALGORITHMS:
                sys.exit(f"unknown size {size!r} or algorithm {algorithm!r}; "
                         f"sizes: {list(SIZES)}, algorithms: {list(ALGORITHMS)}")
            print(f"running {algorithm} at the {size} size ...", flush=True)
            rows.append(run_in_process(algorithm, size, device, args))
    info = machine(args.threads or None)
    retried = [f"{r['algorithm']} at the {r['size']} size" for r in rows if r.get("retried")]
    md = [
        f"# Search step benchmark ({device})", "",
        f"Machine: {machine_text(info)}.",
        f"Median of {args.steps} steps after {args.warmup} warm-up; memory: {rows[0]['memory_measure']}.", "",
        table(rows), "", *[f"- {t}" for t in targets(rows)],
        *([f"- ran again after its first process hung (no result within {args.case_timeout:.0f} s): "
           + ", ".join(retried)] if retried else []), "",
    ]
    write_result(RESULTS / f"{args.name}_{device}.md", {"machine": info, "cases": rows}, md)


def run_in_process(algorithm: str, size: str, device: str, args: argparse.Namespace) -> dict:
    """One case in a fresh process (its peak memory its own). A process that gives no result within
    ``--case-timeout`` seconds is killed and the case run once more in a new one (a CPU thread pool can hang in a
    convolution's backward now and then); the row then says so."""
    for attempt in range(2):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [sys.executable, __file__, "--case", f"{algorithm}:{size}", "--json-out", out.name,
                   "--device", device, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--threads", str(args.threads)]
            try:
                subprocess.run(cmd, check=True, timeout=args.case_timeout)
            except subprocess.TimeoutExpired:
                print(f"{algorithm} at the {size} size: no result after {args.case_timeout:.0f} s, "
                      + ("running it again" if attempt == 0 else "giving up"), flush=True)
                continue
            return {**json.loads(Path(out.name).read_text()), **({"retried": True} if attempt else {})}
    sys.exit(f"{algorithm} at the {size} size hung twice (--case-timeout {args.case_timeout:.0f} s)")


if __name__ == "__main__":
    main()
