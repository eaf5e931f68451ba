"""Freed memory kept by the process: the page faults of a CPU step, and what keeping the pages saves.

glibc's malloc hands a large block (a tensor of more than a few MiB) back to the kernel when it is freed, so the next
step's tensors are new pages again: the kernel zeroes each 4 KiB page on its first touch (a minor page fault).
Two environment variables, read by glibc when a process starts, keep freed memory in the process instead:

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 python -m darts_lite ...

(every block from the heap, never handed back below 64 GiB of free heap). This script runs each case both ways,
each in a process of its own (``--pages-kept``: the case's process starts again with those two variables), the two
ways alternating, ``--rounds`` times, and reports per step: time, minor page faults, system (kernel) CPU time, and
the process's peak memory. Cases, one step each (forward+backward, no optimiser):

- ``darts1``: a DARTS first-order search step at the paper's size (8 cells, C=16, batch 64, 3x32x32): the
  architecture pass, then the weight pass; ``gdas``: the same with GDAS's Gumbel sample (one op per edge);
- ``retrain``: a retraining step of DARTS_V2 at the paper's size (20 cells, C=36, batch 96, drop path 0.2).

All channels-last on the CPU.

    python experiments/allocator_pages.py                      # about 5 minutes on 2 cores
    python experiments/allocator_pages.py --cases gdas --reps 2 --rounds 1   # a quick look

Writes experiments/results/allocator_pages.json and .md.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from typing import Any

from common import RESULTS, both_ways_main, machine_text, span

RESULT = RESULTS / "allocator_pages.md"
KEPT = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(64 << 30)}
CASES = {
    "darts1": "DARTS 1st order search step (8 cells, C=16, batch 64)",
    "gdas": "GDAS search step (8 cells, C=16, batch 64)",
    "retrain": "DARTS_V2 retraining step (20 cells, C=36, batch 96)",
}


def _step(case: str):
    """The case's network and a function running one step of it."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    if case == "retrain":
        from darts_lite.spaces.darts.eval import EvalNetwork

        net = EvalNetwork("DARTS_V2", C=36, layers=20, auxiliary=False, drop_path_prob=0.2)
        net = net.train().to(memory_format=torch.channels_last)
        x = torch.randn(96, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (96,))

        def step(seed: int) -> None:
            torch.manual_seed(seed)
            F.cross_entropy(net(x), y).backward()
            net.zero_grad(set_to_none=True)
        return step

    from darts_lite.spaces.darts.search import SearchNetwork
    from darts_lite.spaces.supernet import frozen

    net = SearchNetwork(C=16, layers=8, num_classes=10, in_channels=3,
                        relaxation="gumbel" if case == "gdas" else "softmax")
    net = net.train().to(memory_format=torch.channels_last)
    batches = [(torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last),
                torch.randint(0, 10, (64,))) for _ in range(2)]
    weights, alphas = net.weight_parameters(), net.arch_parameters()

    def step(seed: int) -> None:
        torch.manual_seed(seed)
        for params, (x, y) in zip((weights, alphas), batches):  # the architecture pass, then the weight pass
            with frozen(params):
                F.cross_entropy(net(x), y).backward()
        net.zero_grad(set_to_none=True)
    return step


def one_case(case: str, reps: int, pages_kept: bool) -> dict[str, Any]:
    """One case in this process (started again with ``KEPT`` in its environment when ``pages_kept``)."""
    if pages_kept and any(os.environ.get(k) != v for k, v in KEPT.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **KEPT})  # glibc reads them at start
    step = _step(case)
    step(0)  # warm-up
    times, faults, system = [], [], []
    for rep in range(1, reps + 1):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        step(rep)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults.append(after.ru_minflt - before.ru_minflt)
        system.append(after.ru_stime - before.ru_stime)
    return {"case": case, "pages_kept": pages_kept, "step_s": statistics.median(times), "times_s": times,
            "minor_faults": statistics.median(faults), "system_s": statistics.median(system),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``."""
    settings, runs = result["settings"], result["runs"]
    lines = [
        "# Freed memory kept by the process: page faults per CPU step",
        "",
        f"`{result['command']}`; {machine_text(result['machine'])}.",
        "",
        f"Per step: the median of {settings['reps']} steps after a warm-up, each case and way in its own process, "
        f"{settings['rounds']} rounds, the ways alternating (ranges over the rounds). Kept: the process started with "
        "`" + " ".join(f"{k}={v}" for k, v in KEPT.items()) + "`; default: glibc's defaults. Faults: minor page "
        "faults per step; kernel: the system CPU time per step (both threads).",
        "",
        "| case | step, default (s) | step, kept (s) | kept / default | faults, default | faults, kept "
        "| kernel, default (s) | kernel, kept (s) | peak, default / kept (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for case in dict.fromkeys(r["case"] for r in runs):
        kept = [r for r in runs if r["case"] == case and r["pages_kept"]]
        default = [r for r in runs if r["case"] == case and not r["pages_kept"]]

        def cell(rows: list[dict[str, Any]], key: str, fmt: str) -> str:
            return span([r[key] for r in rows], fmt)

        lines.append(
            f"| {CASES[case]} | {cell(default, 'step_s', '.2f')} | {cell(kept, 'step_s', '.2f')} | "
            f"{span([k['step_s'] / d['step_s'] for k, d in zip(kept, default)], '.2f')}x | "
            f"{cell(default, 'minor_faults', ',.0f')} | {cell(kept, 'minor_faults', ',.0f')} | "
            f"{cell(default, 'system_s', '.2f')} | {cell(kept, 'system_s', '.2f')} | "
            f"{cell(default, 'peak_mib', ',.0f')} / {cell(kept, 'peak_mib', ',.0f')} |")
    return lines


def main() -> None:
    both_ways_main(__file__, __doc__, CASES, "--pages-kept", "steps per case (median) after one warm-up", one_case,
                   lambda reps: {}, RESULT, markdown)


if __name__ == "__main__":
    main()
