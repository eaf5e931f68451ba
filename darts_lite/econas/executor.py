"""Where evaluations run: in this process, in local subprocesses or as SLURM jobs, through submitit's
executors, with a bounded number in flight.

The driver hands over picklable jobs and gets back, in completion order, each job's result or the error
that ended it: a worker that raises, crashes or is pre-empted becomes a failed result, never a dead driver.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

EXECUTORS = ("inline", "local", "slurm")


class Executor:
    """Runs ``fn(job)`` for many jobs. name: inline (this process, one at a time: no start-up cost, what tests
    and small CPU studies use), local (submitit subprocesses on this machine), slurm (submitit jobs on a
    cluster: the folder must be on a file system the nodes share). max_parallel bounds the jobs in flight;
    slurm / local: the keyword arguments of submitit's ``update_parameters`` (timeout_min, partition, ...)."""

    def __init__(self, name: str = "inline", folder: str | Path = "submitit", max_parallel: int = 1,
                 poll_s: float = 1.0, **parameters: Any):
        if name not in EXECUTORS:
            raise ValueError(f"executor={name!r}: must be one of {', '.join(EXECUTORS)}")
        if not isinstance(max_parallel, int) or max_parallel < 1:
            raise ValueError(f"executor.max_parallel={max_parallel!r}: must be an integer >= 1")
        self.name, self.folder, self.max_parallel, self.poll_s = name, Path(folder), max_parallel, poll_s
        self.parameters = {k: v for k, v in parameters.items() if v is not None}

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[tuple[int, Any, str | None]]:
        """(index into jobs, result or None, error text or None), as each job ends."""
        if self.name == "inline":
            for i, job in enumerate(jobs):
                try:
                    yield i, fn(job), None
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # the evaluation's own error: recorded, the driver goes on
                    yield i, None, _describe(e, traceback.format_exc())
            return
        yield from self._submitit(fn, jobs)

    def _submitit(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[tuple[int, Any, str | None]]:
        import submitit

        executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.name)
        executor.update_parameters(**_submitit_parameters(self.name, self.parameters))
        waiting = list(range(len(jobs)))
        running: dict[int, Any] = {}
        try:
            while waiting or running:
                while waiting and len(running) < self.max_parallel:
                    i = waiting.pop(0)
                    running[i] = executor.submit(fn, jobs[i])
                finished = [i for i, job in running.items() if job.done()]
                if not finished:
                    time.sleep(self.poll_s)
                    continue
                for i in finished:
                    job = running.pop(i)
                    try:
                        yield i, job.result(), None
                    except Exception as e:  # raised in the worker (its traceback is in the message) or the worker died
                        yield i, None, _describe_worker_error(e)
        finally:
            for job in running.values():  # the driver stops (Ctrl-C, SIGTERM): do not leave orphans behind
                try:
                    job.cancel(check=False)
                except Exception:
                    pass


def _submitit_parameters(name: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    # submitit's AutoExecutor takes cluster-specific keys with the cluster's prefix (slurm_partition, ...)
    generic = {"timeout_min", "nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node", "mem_gb", "name"}
    out = {}
    for key, value in parameters.items():
        out[key if key in generic or key.startswith(f"{name}_") else f"{name}_{key}"] = value
    return out


def worker_exception_line(text: str) -> str | None:
    """The line naming the exception that ended a worker (``DatasetUnavailable: ...``) in the text of an error that
    carries the worker's traceback (submitit's FailedJobError); None when there is no traceback in it."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Traceback (most recent call last):"]
    if not starts:
        return None
    for line in lines[starts[-1] + 1:]:  # the frames are indented; the first line that is not names the exception
        if line.strip() and not line[0].isspace():
            return line.strip()
    return None


def _describe_worker_error(error: BaseException) -> str:
    """As _describe, with the worker's own exception line first when the error carries the worker's traceback, so
    that the first line says what went wrong (the failures are grouped by it) rather than that a job failed."""
    text = _describe(error)
    inner = worker_exception_line(str(error))
    return text if inner is None else f"{inner}\n(in the worker) {text}"


def _describe(error: BaseException, detail: str = "") -> str:
    """The error's type and message, then the last lines of ``detail`` (a traceback) when there is one."""
    text = f"{type(error).__name__}: {error}"
    tail = detail.strip().splitlines()[-20:]
    return text if not tail else text + "\n" + "\n".join(tail)
