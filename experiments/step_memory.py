"""What the memory benchmarks measure of one training step (forward+backward), shared by
checkpoint_cells_memory.py, pc_darts_memory.py and nni_side_by_side.py.

Run each case in a process of its own, so that its peak is its own: on the CPU the process's max RSS growth over
the steps from just before the first one (the network and the batch already built), on a GPU the max allocated.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """The supernet and batch a memory benchmark measures; the defaults are the DARTS paper's search size."""
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)


def size_record(script: str, options: list[str], args: argparse.Namespace, rows: list[dict]) -> dict:
    """The part of a memory benchmark's result every such script writes: its command, the size measured (see
    add_size_arguments), the machine and the measured cases."""
    from common import machine

    return {
        "command": f"python experiments/{script} {' '.join(options)}",
        "settings": {"C": args.C, "layers": args.layers, "batch": args.batch, "size": args.size,
                     "relaxation": args.relaxation, "reps": args.reps},
        "machine": machine(),
        "cases": rows,
    }


def measure_step(step: Callable[[], None], reps: int, per_use: bool = True) -> dict:
    """Runs ``step`` once to warm up, once to count what autograd keeps for the backward pass, then ``reps`` times.

    per_use: count a tensor saved by several ops once per op (True) or each storage once (False).
    Returns step_s (median), peak_mib, saved_mib and measure (how the peak was taken).
    """
    import torch

    cuda = torch.cuda.is_available()
    rss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = len(saved) if per_use else storage.data_ptr()
        saved[key] = t.numel() * t.element_size() if per_use else storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_base)
    return {"step_s": statistics.median(times), "peak_mib": peak, "saved_mib": sum(saved.values()) / 2**20,
            "measure": "max allocated (CUDA)" if cuda else "max RSS growth (CPU)"}
