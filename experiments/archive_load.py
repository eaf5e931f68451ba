"""The EcoNAS evaluation archive under load: the rows per second it takes when many results arrive at once, checked
for lost and duplicated rows, and what the driver spends per result through the Evaluator.

    python experiments/archive_load.py                    # --workers 8 --rows 4000; 2.7 min here, 80 s of it the
                                                          # 8 local workers starting (torch imported in each)
    python experiments/archive_load.py --workers 16 --rows 20000 --compare-rows 0 --local-jobs 0 --folder /scratch/me

Each case writes a new archive in a temporary folder under --folder (default: the system's temporary folder), on
that folder's disk, with the archive's own settings (rollback journal, every write a durable transaction):

    through the driver  --workers processes return their share of --rows at once over a queue; the driver adds
                        each as it arrives: the architecture of darts_lite (workers never write the archive)
    one writer          for comparison, one process adds --compare-rows rows one after another, nothing else running
    workers writing     for comparison, --workers processes each add their share of --compare-rows straight to the
                        archive at once (SQLite's file lock serialises them): what sharing an archive costs
    evaluator, inline   Evaluator.evaluate over --evaluations requests whose evaluation is a trivial function:
                        the driver's time per result (look-up, hashing, recording, progress line)
    evaluator, local    the same through the local executor (submitit subprocesses, --workers at once) with
                        --local-jobs requests: a worker's start-up included

Every --workers-th evaluation is returned by every worker (a done evaluation is stored once) and each worker also
returns one failed attempt (failed attempts are all kept); after each case the archive must hold exactly the
expected rows, each once, and pass SQLite's integrity check. Writes results/archive_load.json and the .md made
from it.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import RESULTS, machine, machine_text, write_result

RESULT = RESULTS / "archive_load.md"  # and .json
SETTING = "c0r0s0e2"


# ---- the rows -----------------------------------------------------------------------------------------------------
def make_row(k: int, worker: int, status: str = "done") -> dict[str, Any]:
    """Evaluation ``k`` as a worker returns it (a realistic row: genotype text, hash, per-epoch accuracies, ...)."""
    rng = random.Random(k)
    genotype = f"Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1)], normal_concat=[2], note={k})"
    row = {"genotype": genotype, "genotype_hash": f"{k:064x}", "space": "darts", "setting": SETTING,
           "setting_values": {"name": SETTING, "channels": 8, "layers": 6, "resolution": 8, "sample_ratio": 1.0,
                              "epochs": 2, "batch_size": 64, "lr": 0.05},
           "seed": 0, "epochs": 2, "status": status, "worker": f"w{worker}"}
    if status == "done":
        row.update(val_accs=[rng.random(), rng.random()], test_acc=rng.random(), params=rng.randrange(10 ** 6),
                   flops=rng.randrange(10 ** 9), wall_time_s=rng.random() * 10)
    else:
        row["error"] = f"RuntimeError: the worker failed on evaluation {k}\nTraceback (most recent call last):\n  ..."
    return row


def worker_rows(worker: int, workers: int, per_worker: int) -> list[dict[str, Any]]:
    """Worker ``worker``'s results: ``per_worker`` evaluations, every ``workers``-th of them one every worker returns,
    then a failed attempt at evaluation 0."""
    out = []
    for i in range(per_worker):
        k = i if i % workers == 0 else (worker + 1) * 10 ** 7 + i
        out.append(make_row(k, worker))
    out.append(make_row(0, worker, "failed"))
    return out


def expected(workers: int, per_worker: int) -> Counter:
    keys: Counter = Counter()
    for w in range(workers):
        for r in worker_rows(w, workers, per_worker):
            key = (r["genotype_hash"], r["status"])
            if r["status"] == "failed" or key not in keys:
                keys[key] += 1
    return keys


def check(path: Path, want: Counter) -> dict[str, int]:
    """The archive holds exactly the rows ``want`` counts, each once, and SQLite finds it whole; raises otherwise."""
    from darts_lite.econas import Archive

    with Archive(path) as archive:  # opening runs SQLite's integrity check too
        rows = archive.rows()
    got = Counter((r["genotype_hash"], r["status"]) for r in rows)
    lost = sum((want - got).values())
    duplicated = sum((got - want).values())
    if lost or duplicated or len({r["id"] for r in rows}) != len(rows):
        raise SystemExit(f"{path}: {lost} rows lost, {duplicated} duplicated")
    conn = sqlite3.connect(path)
    try:
        if conn.execute("PRAGMA integrity_check").fetchall() != [("ok",)]:
            raise SystemExit(f"{path}: SQLite's integrity check failed")
    finally:
        conn.close()
    return {"rows": len(rows), "lost": lost, "duplicated": duplicated}


# ---- the cases ------------------------------------------------------------------------------------------------------
def one_writer(folder: Path, rows: int) -> dict[str, Any]:
    from darts_lite.econas import Archive

    path = folder / "one_writer.sqlite"
    results = worker_rows(0, 1, rows)[:rows]
    with Archive(path) as archive:
        started = time.perf_counter()
        for r in results:
            archive.add(r)
        seconds = time.perf_counter() - started
    return {"case": "one writer", "seconds": seconds, "submitted": rows,
            **check(path, Counter((r["genotype_hash"], r["status"]) for r in results))}


def _send(worker: int, workers: int, per_worker: int, queue, start) -> None:
    rows = worker_rows(worker, workers, per_worker)  # made before the start: the workers return them at once
    start.wait()
    for r in rows:
        queue.put(r)
    queue.put(None)


def _write(worker: int, workers: int, per_worker: int, path: Path, start) -> None:
    from darts_lite.econas import Archive

    rows = worker_rows(worker, workers, per_worker)
    start.wait()
    with Archive(path) as archive:
        for r in rows:
            archive.add(r)


def many_workers(folder: Path, workers: int, rows: int, through_driver: bool) -> dict[str, Any]:
    """--workers processes returning their rows at the same moment, to the driver or straight to the archive."""
    from darts_lite.econas import Archive

    per_worker = rows // workers
    path = folder / ("through_driver.sqlite" if through_driver else "workers_writing.sqlite")
    Archive(path).close()  # created before the workers fork: nothing holds it open across the fork
    ctx = multiprocessing.get_context("fork")
    start, queue = ctx.Barrier(workers + 1), ctx.Queue()
    target, args = (_send, (queue, start)) if through_driver else (_write, (path, start))
    procs = [ctx.Process(target=target, args=(w, workers, per_worker, *args)) for w in range(workers)]
    for p in procs:
        p.start()
    start.wait()
    started = time.perf_counter()
    if through_driver:
        with Archive(path) as archive:
            ended = 0
            while ended < workers:
                row = queue.get(timeout=600)
                if row is None:
                    ended += 1
                else:
                    archive.add(row)
    for p in procs:
        p.join()
    seconds = time.perf_counter() - started
    if any(p.exitcode for p in procs):
        raise SystemExit(f"a worker failed: exit codes {[p.exitcode for p in procs]}")
    return {"case": "through the driver" if through_driver else "workers writing", "seconds": seconds,
            "submitted": workers * (per_worker + 1), **check(path, expected(workers, per_worker))}


def trivial_evaluation(job) -> dict[str, Any]:
    """An evaluation that trains nothing: the row a worker would return, at once."""
    import socket

    rng = random.Random(job.genotype)
    accs = [rng.random() for _ in range(job.epochs)]
    return {"genotype": job.genotype, "space": "darts", "setting": job.setting["name"], "setting_values": job.setting,
            "seed": job.seed, "epochs": job.epochs, "val_accs": accs, "val_acc": accs[-1], "test_acc": rng.random(),
            "params": 1000, "flops": 10 ** 6, "wall_time_s": 0.0, "status": "done",
            "worker": socket.gethostname()}


def through_evaluator(folder: Path, executor_name: str, requests: int, workers: int) -> dict[str, Any]:
    """Evaluator.evaluate over ``requests`` distinct genotypes, each evaluation ``trivial_evaluation``."""
    from darts_lite.econas import Archive, Base, Evaluator, Executor, Request, resolve
    from darts_lite.econas import evaluator as evaluator_module
    from darts_lite.spaces import darts

    setting = resolve(SETTING, Base(8, 6, 8, (64,) * 10, 64, 0.05, "synthetic"))
    genotypes, seen = [], set()
    rng = random.Random(0)
    while len(genotypes) < requests:
        g = darts.sample(rng)
        if g.to_text() not in seen:
            seen.add(g.to_text())
            genotypes.append(g)
    path = folder / f"evaluator_{executor_name}.sqlite"
    archive = Archive(path)
    executor = (Executor("inline") if executor_name == "inline" else
                Executor("local", folder=folder / "submitit", max_parallel=workers, timeout_min=10))
    real = evaluator_module.run_evaluation
    evaluator_module.run_evaluation = trivial_evaluation
    try:
        with open(os.devnull, "w") as quiet:
            ev = Evaluator(archive, executor, data={}, train={}, seed=0, folder=folder / f"evaluations_{executor_name}",
                           out=quiet)
            cpu, started = time.process_time(), time.perf_counter()
            rows = ev.evaluate([Request(g, setting, setting.epochs) for g in genotypes])
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            again = time.perf_counter()
            found = ev.evaluate([Request(g, setting, setting.epochs) for g in genotypes])  # all in the archive now
            lookup = time.perf_counter() - again
    finally:
        evaluator_module.run_evaluation = real
        archive.close()
    if any(r is None for r in rows) or found != rows:
        raise SystemExit(f"evaluator, {executor_name}: {sum(r is None for r in rows)} of {requests} evaluations failed")
    return {"case": f"evaluator, {executor_name}", "seconds": seconds, "driver_cpu_s": cpu, "submitted": requests,
            "lookup_seconds": lookup,
            **check(path, Counter((r["genotype_hash"], "done") for r in rows))}


# ---- the record -------------------------------------------------------------------------------------------------------
def file_system(folder: Path) -> str:
    """The type of the file system holding ``folder`` (/proc/mounts: the longest mount point above it)."""
    folder = folder.resolve()
    best, kind = "", "unknown"
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and (str(folder) + "/").startswith(parts[1].rstrip("/") + "/") and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return kind


def markdown(result: dict[str, Any]) -> list[str]:
    """The result file's text, every number from ``result``."""
    s = result["settings"]
    lines = [
        "# The evaluation archive under load",
        "",
        f"`{result['command']}`; {machine_text(result['machine'])}. Archives on {result['file_system']} "
        f"({result['folder']}), SQLite {result['sqlite']}, rollback journal, every row a durable transaction. One run; "
        "the disk was shared with other work, so take the rates as an order of magnitude.",
        "",
        "| case | rows submitted | rows stored | lost | duplicated | seconds | rows per second | ms per row |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in result["cases"]:
        if c["case"].startswith("evaluator"):
            continue
        lines.append(f"| {c['case']} | {c['submitted']} | {c['rows']} | {c['lost']} | {c['duplicated']} | "
                     f"{c['seconds']:.1f} | {c['rows_per_s']:.0f} | {c['ms_per_row']:.1f} |")
    lines += [
        "",
        f"Through the driver: {s['workers']} processes return {s['rows'] // s['workers']} rows each at the same moment "
        "and the driver records them as they arrive, as darts_lite's drivers do (workers never write the archive); "
        f"workers writing: the same with {s['compare_rows'] // s['workers']} rows each, every process writing the archive "
        f"itself. In both, one evaluation in {s['workers']} is returned by every process (stored once) and each "
        "process also returns one failed attempt (all kept); rows per second count the rows submitted. One writer: "
        "one process adding rows alone, the baseline.",
        "",
    ]
    ev = [c for c in result["cases"] if c["case"].startswith("evaluator")]
    if ev:
        lines += ["The driver's cost per result through `Evaluator.evaluate`, the evaluation itself a trivial function:",
                  "",
                  "| executor | results | lost | duplicated | wall ms per result | driver CPU ms per result | ms per result "
                  "found in the archive |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c in ev:
            lines.append(f"| {c['case'].split(', ')[1]} | {c['submitted']} | {c['lost']} | {c['duplicated']} | "
                         f"{c['ms_per_row']:.1f} | "
                         f"{1000 * c['driver_cpu_s'] / c['submitted']:.1f} | "
                         f"{1000 * c['lookup_seconds'] / c['submitted']:.1f} |")
        lines += ["", "Inline: the driver's own work per result (genotype hash, archive look-up, recording the row, "
                  "the progress line). Local: each result also pays a submitit subprocess's start (Python, torch and "
                  "darts_lite imported) and the executor's 1 s poll; a real evaluation's training takes far longer "
                  "than either."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=8, help="processes returning results at once")
    parser.add_argument("--rows", type=int, default=4000, help="rows the workers return through the driver, in all")
    parser.add_argument("--compare-rows", type=int, default=1000,
                        help="rows of the two comparison cases, one writer and workers writing (0: skip them)")
    parser.add_argument("--evaluations", type=int, default=400, help="requests through the Evaluator, inline")
    parser.add_argument("--local-jobs", type=int, default=None,
                        help="requests through the Evaluator on the local executor (default: --workers; 0: skip)")
    parser.add_argument("--folder", type=Path, default=None, help="where the archives are written (its disk is measured)")
    args = parser.parse_args()
    local_jobs = args.workers if args.local_jobs is None else args.local_jobs
    if args.workers < 1 or args.rows < args.workers or 0 < args.compare_rows < args.workers:
        parser.error("--workers must be >= 1, and --rows and --compare-rows (unless 0) at least --workers")
    cases = []
    with tempfile.TemporaryDirectory(dir=args.folder, prefix="archive_load_") as tmp:
        folder = Path(tmp)
        compare = [lambda: one_writer(folder, args.compare_rows),
                   lambda: many_workers(folder, args.workers, args.compare_rows, through_driver=False)]
        for run in (lambda: many_workers(folder, args.workers, args.rows, through_driver=True),
                    *(compare if args.compare_rows else []),
                    lambda: through_evaluator(folder, "inline", args.evaluations, args.workers),
                    *([lambda: through_evaluator(folder, "local", local_jobs, args.workers)] if local_jobs else [])):
            case = run()
            case["rows_per_s"] = case["submitted"] / case["seconds"]
            case["ms_per_row"] = 1000 * case["seconds"] / case["submitted"]
            print(case, flush=True)
            cases.append(case)
        fs = file_system(folder)
    result = {
        "command": f"python experiments/archive_load.py --workers {args.workers} --rows {args.rows} --compare-rows "
                   f"{args.compare_rows} --evaluations {args.evaluations} --local-jobs {local_jobs}",
        "settings": {"workers": args.workers, "rows": args.rows, "compare_rows": args.compare_rows,
                     "evaluations": args.evaluations, "local_jobs": local_jobs},
        "machine": machine(), "sqlite": sqlite3.sqlite_version, "folder": str(args.folder or tempfile.gettempdir()),
        "file_system": fs, "cases": cases,
    }
    write_result(RESULT, result, markdown(result))


if __name__ == "__main__":
    main()
