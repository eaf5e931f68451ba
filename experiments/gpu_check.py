"""GPU readiness check: exercise darts_lite's GPU paths on a CUDA machine in minutes and leave a report.

    python experiments/gpu_check.py            # everything, about 8 minutes on one data-centre GPU
    python experiments/gpu_check.py --quick    # a smaller matrix, about 3 minutes
    python experiments/gpu_check.py --list     # the planned cases and their time limits
    python experiments/gpu_check.py --only 'step/paper/*,cli/*' --budget 900

What it checks, in this order:
  1. the machine: devices, driver, torch, CUDA, cuDNN and NCCL versions;
  2. a full search step (through the Trainer, as users run it) and the supernet's forward+backward, with peak
     memory (torch.cuda.max_memory_allocated), at the paper's supernet size and the EcoNAS proxy size, for DARTS
     first order, second order and GDAS, in 32-true, bf16-mixed and 16-mixed (first order only), with
     channels_last on and off; and at the paper size the memory modes beside first-order DARTS (whose default
     recomputes the cheap tensors: recompute=none, checkpointed cells, PC-DARTS); data on the device through the
     real data module; weights and alphas must stay finite;
  3. the command line end to end on synthetic CIFAR-shaped data (no download) with trainer=gpu: a 1-epoch GDAS
     search with the proxy, a 1-epoch second-order search, a 1-epoch retraining of DARTS_V2 at a reduced size,
     and a GDAS search killed after its first checkpoint and resumed, whose alphas must equal an uninterrupted
     run's;
  4. with more than one GPU: a GDAS search with trainer=ddp over all of them (NCCL);
  5. torch.compile (first-order DARTS, the only search that supports it), last: its compile time is the least
     predictable;
and estimates from the measured step times how long +experiment=gdas, darts and darts_v2 take on this GPU.

Every case has a time limit and the whole run a budget (8 minutes, 3 with --quick): a case that passes its
limit is stopped and reported as timed out, cases the budget no longer covers are reported as such, and the
others go on. The exit status is 0 only when every planned case passed. The report is written to
experiments/results/gpu_<device name>.md and .json.

Search-step cases run in a worker process, several per process (one torch import and CUDA start-up for all);
the worker reports each case's start and end to a file, so a case that hangs is killed with its worker and
the remaining cases go on in a fresh one. A case that fails also ends its worker, so a broken CUDA context
cannot fail the cases after it. Command-line cases are subprocesses of their own.

Without CUDA the script says so in one line and exits 0. For developing this script, --cpu-dry-run runs the
same machinery on the CPU at tiny sizes (trainer=cpu, 2 CPU processes for DDP, compile disabled) and writes
gpu_check_cpu_dryrun.md/.json: a test of the script, not a measurement of anything.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"

ALGORITHMS = {
    "darts1": dict(relaxation="softmax", order=1, label="DARTS 1st order"),
    "darts2": dict(relaxation="softmax", order=2, label="DARTS 2nd order"),
    "gdas": dict(relaxation="gumbel", order=1, label="GDAS"),
    # the memory modes: first-order DARTS with less kept for the backward pass, so that the GPU's peak memory of
    # each mode stands beside the plain step's (measured at the paper size only, channels_last, eager)
    "darts1_plain": dict(relaxation="softmax", order=1, module=dict(recompute="none"), memory_mode=True,
                         label="DARTS 1st order, recompute=none (every tensor autograd saves kept)"),
    "darts1_cells": dict(relaxation="softmax", order=1, module=dict(checkpoint_cells=True), memory_mode=True,
                         label="DARTS 1st order, checkpointed cells"),
    "pc_darts": dict(relaxation="softmax", order=1, network=dict(partial_channels=4, edge_normalization=True),
                     memory_mode=True, label="PC-DARTS (K=4, edge normalization)"),
}
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
# the experiments whose full searches are estimated, and the supernet size each one measures
EXPERIMENTS = ("gdas", "darts", "darts_v2")
SIZE_OF = {"paper": "darts", "proxy": "gdas"}
# tiny stand-ins for the dry run: the same two roles, CPU-sized
DRY_SIZES = {
    "paper": dict(C=4, layers=3, batch=8, resolution=8, crop_padding=1),
    "proxy": dict(C=4, layers=3, batch=16, resolution=4, crop_padding=0),
}
# Resumed alphas against an uninterrupted run's (raw alphas, from the final checkpoints), on the GPU.
# trainer=gpu turns on cuDNN autotuning, which can pick other kernels in the resumed process: sums run in
# another order and differ at float32 rounding (about 1e-7 relative), which a few steps hardly grow. A resume
# that replays the wrong random draws (Gumbel samples, augmentation) or restores the wrong optimiser state
# changes every later architecture step, each about arch_lr = 3e-4 (Adam), by a comparable amount. 1e-5 lies
# between the two; the report gives the measured difference. On the CPU the tests demand bit equality, and so
# does the dry run.
GPU_ALPHA_TOLERANCE = 1e-5
RESTART = 3  # a worker's exit status after a failed case: the parent continues in a fresh process
MIN_CASE_S = 5.0  # a case is started only with at least this much of the budget left


@dataclass(frozen=True)
class Mode:
    """Sizes of the run and time limits (seconds) per kind of case."""

    name: str
    budget_s: float
    warmup: int  # untimed search steps (cuDNN autotuning, compilation)
    steps: int  # timed search steps (median reported)
    fwd_bwd: int  # timed forward+backward passes, after one untimed
    step_limit_s: float
    compile_limit_s: float
    cli_limit_s: float
    resume_limit_s: float
    cli_steps: int  # steps per epoch of the command-line runs


FULL = Mode("full", 470, warmup=3, steps=10, fwd_bwd=5, step_limit_s=60, compile_limit_s=240, cli_limit_s=150,
            resume_limit_s=240, cli_steps=10)
QUICK = Mode("quick", 170, warmup=2, steps=5, fwd_bwd=3, step_limit_s=45, compile_limit_s=150, cli_limit_s=120,
             resume_limit_s=180, cli_steps=6)
DRY = Mode("cpu-dry-run", 900, warmup=1, steps=2, fwd_bwd=2, step_limit_s=120, compile_limit_s=120, cli_limit_s=240,
           resume_limit_s=400, cli_steps=2)


class CaseFailed(Exception):
    """A check of a case did not hold; data: what was measured before it failed."""

    def __init__(self, message: str, data: dict | None = None):
        super().__init__(message)
        self.data = data or {}


class CaseTimeout(Exception):
    """A case's subprocess outlived its deadline and was stopped."""


@dataclass
class Case:
    """One check. run=None: a search-step case, run by the worker; else a function run in this process."""

    name: str
    section: str  # step | cli | ddp
    limit_s: float
    spec: dict = field(default_factory=dict)
    run: Callable[[dict, Deadline, Context], dict] | None = None


@dataclass
class Context:
    """What the command-line cases share: where runs go, their environment, the devices."""

    runs_dir: Path
    env: dict
    dry_run: bool
    mode: Mode
    gpus: int = 0


class Budget:
    """The whole run's time, counted from its start."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()


class Deadline:
    """One case's time: its own limit, or less when the budget ends first (then by_budget)."""

    def __init__(self, case_limit: float, budget: Budget):
        left = budget.remaining()
        self.limit = min(case_limit, left)
        self.by_budget = left < case_limit
        self.end = time.monotonic() + self.limit

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0


def _result(case: Case, status: str, seconds: float, error: str | None = None, data: dict | None = None,
            limit: float | None = None) -> dict:
    return {"name": case.name, "section": case.section, "status": status, "seconds": round(seconds, 2),
            "limit_s": round(case.limit_s if limit is None else limit, 1), "error": error, "data": data or {}}


def _out_of_budget(case: Case, why: str = "not started: the run's time budget was used up") -> dict:
    return _result(case, "out of budget", 0.0, why)


# ---- processes -----------------------------------------------------------------------------------------

def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a child and everything it started (DDP ranks): each child leads its own process group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _start(cmd: list[str], log: Path, cwd: Path, env: dict) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        f.write(f"$ {shlex.join(cmd)}\n".encode())
        f.flush()
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)


def run_process(cmd: list[str], deadline: Deadline, log: Path, cwd: Path, env: dict) -> tuple[int, str]:
    """Run cmd with its output in log; CaseTimeout (after stopping it) past the deadline. Returns (status, output)."""
    proc = _start(cmd, log, cwd, env)
    try:
        code = proc.wait(timeout=max(deadline.remaining(), 0.01))
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise CaseTimeout(f"still running after {deadline.limit:.0f} s, stopped: {shlex.join(cmd[1:])}") from None
    finally:
        _kill_group(proc)  # a no-op when it ended; on an interrupt it takes the child down too
    return code, log.read_text(errors="replace")


# ---- the case runner -----------------------------------------------------------------------------------

def run_parent_case(case: Case, budget: Budget, ctx: Context) -> dict:
    """A command-line case in this process: passed, failed, timeout or out of budget, never an exception."""
    if budget.remaining() < MIN_CASE_S:
        return _out_of_budget(case)
    deadline = Deadline(case.limit_s, budget)
    t0 = time.monotonic()
    try:
        data = case.run(case.spec, deadline, ctx)
        return _result(case, "passed", time.monotonic() - t0, data=data, limit=deadline.limit)
    except CaseTimeout as e:
        status = "out of budget" if deadline.by_budget else "timeout"
        return _result(case, status, time.monotonic() - t0, str(e), limit=deadline.limit)
    except CaseFailed as e:
        return _result(case, "failed", time.monotonic() - t0, str(e), e.data, limit=deadline.limit)
    except Exception:  # a bug in the check itself: reported like a failure, the other cases still run
        return _result(case, "failed", time.monotonic() - t0, traceback.format_exc(limit=-3), limit=deadline.limit)


def _read_events(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]  # a line still being written is read next time
    return [json.loads(line) for line in complete.splitlines() if line]


def run_worker_batch(cases: list[Case], budget: Budget, worker_cmd: list[str], work_dir: Path, env: dict,
                     on_result: Callable[[dict], None], worker_args: dict | None = None, poll_s: float = 0.05) -> list[dict]:
    """Run worker cases in order; each case's clock starts when the previous one ended (or its worker started).

    A case past its limit is killed with its worker; a worker that fails a case exits with RESTART; a worker
    that dies is charged to the case it was running (or about to run). Each of these starts a fresh worker
    for the cases left, so every round finishes at least one case and the loop ends.
    """
    pending, results = list(cases), []
    while pending:
        if budget.remaining() < MIN_CASE_S:
            for case in pending:
                results.append(_out_of_budget(case))
                on_result(results[-1])
            break
        round_no = len(list(work_dir.glob("worker*.cases.json"))) + 1  # unique over batches of one run
        cases_file = work_dir / f"worker{round_no}.cases.json"
        events = work_dir / f"worker{round_no}.events.jsonl"
        cases_file.write_text(json.dumps({**(worker_args or {}), "cases": [{"name": c.name, "spec": c.spec} for c in pending]}))
        log = work_dir / "worker.log"
        proc = _start([*worker_cmd, "--worker-cases", str(cases_file), "--worker-events", str(events)], log, work_dir, env)
        done, seen, mark, started, stop = 0, 0, time.monotonic(), False, False
        deadline = Deadline(pending[0].limit_s, budget)
        try:
            while done < len(pending) and not stop:
                exited = proc.poll() is not None  # before reading, so no event written before the exit is missed
                for event in _read_events(events)[seen:]:
                    seen += 1
                    if event["event"] == "start":
                        started = True
                        continue
                    res = _result(pending[done], event["status"], time.monotonic() - mark, event.get("error"),
                                  event.get("data"), limit=deadline.limit)
                    results.append(res)
                    on_result(res)
                    done, mark, started = done + 1, time.monotonic(), False
                    if done < len(pending):
                        # the next case's clock starts now; with too little budget left the next round says so
                        stop = budget.remaining() < MIN_CASE_S
                        deadline = Deadline(pending[done].limit_s, budget)
                if done == len(pending) or stop:
                    break
                if exited and proc.returncode == RESTART and not started:
                    break  # it failed its last case and stopped on purpose: go on in a fresh worker
                if exited or deadline.expired():
                    if exited:
                        status, error = "failed", (f"the worker process ended with status {proc.returncode} "
                                                   f"{'during' if started else 'before'} this case:\n{_tail(log)}")
                    else:
                        _kill_group(proc)
                        status = "out of budget" if deadline.by_budget else "timeout"
                        error = f"still running after {deadline.limit:.0f} s: stopped with its worker process"
                    res = _result(pending[done], status, time.monotonic() - mark, error, limit=deadline.limit)
                    results.append(res)
                    on_result(res)
                    done += 1
                    break
                time.sleep(poll_s)
        finally:
            _kill_group(proc)
        pending = pending[done:]
    return results


def run_cases(cases: list[Case], budget: Budget, ctx: Context, worker_cmd: list[str],
              on_result: Callable[[dict], None], worker_args: dict | None = None) -> list[dict]:
    """Every case once, in order, whatever the others did; consecutive worker cases share a worker."""
    results: list[dict] = []
    i = 0
    while i < len(cases):
        if cases[i].run is None:
            j = i
            while j < len(cases) and cases[j].run is None:
                j += 1
            results += run_worker_batch(cases[i:j], budget, worker_cmd, ctx.runs_dir, ctx.env, on_result, worker_args)
            i = j
        else:
            results.append(run_parent_case(cases[i], budget, ctx))
            on_result(results[-1])
            i += 1
    return results


def exit_status(results: list[dict]) -> int:
    """0 when every case passed; a failure, a timeout or a case the budget did not cover gives 1."""
    return 0 if results and all(r["status"] == "passed" for r in results) else 1


# ---- search-step cases (in the worker) -----------------------------------------------------------------

def measure_step(spec: dict, device: str, dry_run: bool) -> dict:
    """Time search steps through the Trainer and the supernet's forward+backward; peak memory of each."""
    import gc

    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F

    from darts_lite import SearchModule
    from darts_lite.data import SearchDataModule

    cuda = device == "cuda"
    if spec["compile"]:
        import torch._dynamo

        torch._dynamo.reset()  # compile afresh: no cache or recompile count carried over from another case
        # the dry run keeps compile's code path but not its minutes of CPU compilation
        torch._dynamo.config.disable = dry_run
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def peak_mib() -> float | None:
        return torch.cuda.max_memory_allocated() / 2**20 if cuda else None

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            sync()
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            sync()
            self.times.append(time.perf_counter() - self.t0)

    dims, algo = spec["dims"], ALGORITHMS[spec["algorithm"]]
    n = spec["warmup"] + spec["steps"]
    pl.seed_everything(0, verbose=False)
    # the real data module on generated CIFAR-shaped images: kept on the device, augmented there
    dm = SearchDataModule(
        name="synthetic", batch_size=dims["batch"], eval_batch_size=dims["batch"], crop_padding=dims["crop_padding"],
        flip=True, download=False, synthetic_samples=2 * dims["batch"] * n, synthetic_classes=10,
        synthetic_size=dims["resolution"], synthetic_channels=3,
    )
    module = SearchModule(
        network=dict(C=dims["C"], layers=dims["layers"], num_classes=10, relaxation=algo["relaxation"],
                     **algo.get("network", {})),
        order=algo["order"], channels_last=spec["channels_last"], compile=spec["compile"], **algo.get("module", {}),
    )
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu", devices=1, precision=spec["precision"], benchmark=True if cuda else None,
        max_epochs=1, limit_train_batches=n, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    baseline = torch.cuda.memory_allocated() / 2**20 if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, datamodule=dm)
    if len(timer.times) != n:
        raise CaseFailed(f"{len(timer.times)} steps ran, {n} planned")
    data: dict[str, Any] = {
        "first_step_s": timer.times[0], "step_s": statistics.median(timer.times[spec["warmup"]:]),
        "steps_timed": len(timer.times) - spec["warmup"], "peak_step_mib": peak_mib(), "baseline_mib": baseline,
        "data_device": str(dm.device), "checkpoint_cells": module.net.checkpoint_cells, "recompute": module.net.recompute,
        "partial_channels": module.net.partial_channels,
    }
    if dm.device.type != device:
        raise CaseFailed(f"the training data stayed on {dm.device}, not on the {device} device", data)
    bad = [name for name, p in module.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise CaseFailed(f"non-finite values after {n} steps in {len(bad)} tensors, e.g. {bad[:3]}", data)

    net = module.net.train()
    x, y = dm.train_batch(dm.weight_idx[: dims["batch"]].to(dm.device))
    x = module._layout(x)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(spec["precision"])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(1 + spec["fwd_bwd"]):
        net.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        sync()
        times.append(time.perf_counter() - t0)
    data.update(fwd_bwd_s=statistics.median(times[1:]), peak_fwd_bwd_mib=peak_mib())
    if spec["compile"] and dry_run:
        data["note"] = "compile disabled in the CPU dry run"
    del trainer, module, dm, net
    return data


def worker_main(cases_file: Path, events_file: Path) -> int:
    """Run the cases of cases_file in order, writing a start and an end event for each to events_file."""
    job = json.loads(Path(cases_file).read_text())

    def emit(event: dict) -> None:
        with open(events_file, "a") as f:
            f.write(json.dumps(event) + "\n")

    for case in job["cases"]:
        emit({"event": "start", "name": case["name"]})
        try:
            data = measure_step(case["spec"], job["device"], job["dry_run"])
        except CaseFailed as e:
            emit({"event": "end", "name": case["name"], "status": "failed", "error": str(e), "data": e.data})
            return RESTART
        except Exception:
            emit({"event": "end", "name": case["name"], "status": "failed", "error": traceback.format_exc(limit=-4)})
            return RESTART
        emit({"event": "end", "name": case["name"], "status": "passed", "data": data})
    return 0


# ---- command-line cases (in this process, each run a subprocess) ---------------------------------------

def compose(experiment: str, overrides: list[str]):
    """The config `python -m darts_lite +experiment=... overrides` would run with."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from darts_lite.__main__ import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[f"+experiment={experiment}", *overrides])


def _darts_lite(spec: dict, ctx: Context, run: Path, *extra: str) -> list[str]:
    """The command of a case: the experiment on synthetic CIFAR-shaped data, sized to spec's steps per epoch."""
    side = 8 if ctx.dry_run else 32
    overrides = [*spec["overrides"], *_trainer_overrides(ctx, spec), "data=synthetic", "data.synthetic_channels=3",
                 "data.synthetic_classes=10", f"data.synthetic_size={side}", "data.eval_batch_size=500", "data.flip=true",
                 *_dry_run_overrides(ctx, spec)]
    cfg = compose(spec["experiment"], overrides)
    if cfg.proxy.name == "none":
        overrides.append(f"data.crop_padding={side // 8}")  # CIFAR's 4 px; a proxy scales it with the resolution
    samples = (2 if spec["task"] == "search" else 1) * cfg.data.batch_size * spec.get("devices", 1) * spec["steps"]
    return [sys.executable, "-m", "darts_lite", f"+experiment={spec['experiment']}", *overrides,
            f"data.synthetic_samples={samples}", "trainer.enable_progress_bar=false", f"hydra.run.dir={run}", *extra]


def _trainer_overrides(ctx: Context, spec: dict) -> list[str]:
    if spec.get("devices", 1) > 1:
        return ["trainer=ddp", f"trainer.devices={spec['devices']}", *(["trainer.accelerator=cpu"] if ctx.dry_run else [])]
    return ["trainer=cpu" if ctx.dry_run else "trainer=gpu"]


def _dry_run_overrides(ctx: Context, spec: dict) -> list[str]:
    """Dry run: CPU-sized networks and batches (8 px images; the proxy halves them to 4)."""
    if not ctx.dry_run:
        return []
    if spec["task"] == "train":
        return ["train.C=8", "train.layers=3", "train.auxiliary=false", "train.cutout=2", "data.batch_size=8"]
    return ["space.C=4", "space.layers=3", "data.batch_size=8", *spec.get("dry_run_overrides", [])]


SEARCH_FILES = ("config.yaml", "genotype.json", "genotype.txt", "genotype_history.jsonl", "alphas.pt", "metrics.csv",
                "summary.json", "checkpoints/last.ckpt")
TRAIN_FILES = ("config.yaml", "genotype.json", "metrics.csv", "summary.json", "checkpoints/last.ckpt")


def _check_run(run: Path, code: int, output: str, files: tuple[str, ...], ctx: Context) -> dict:
    if code != 0:
        raise CaseFailed(f"exit status {code}:\n" + "\n".join(output.splitlines()[-15:]))
    missing = [name for name in files if not (run / name).is_file()]
    if missing:
        raise CaseFailed(f"missing from the run folder: {', '.join(missing)}")
    if not ctx.dry_run and not re.search(r"GPU available: True.*used: True", output):
        raise CaseFailed("the run did not use the GPU (Lightning's 'GPU available: ..., used: ...' line says otherwise)")
    summary = json.loads((run / "summary.json").read_text())
    if summary.get("status") != "done":
        raise CaseFailed(f"summary.json status {summary.get('status')!r}")
    return summary


def _check_search(run: Path, code: int, output: str, epochs: int, ctx: Context) -> dict:
    from darts_lite import Genotype

    summary = _check_run(run, code, output, SEARCH_FILES, ctx)
    epochs_seen = [json.loads(line)["epoch"] for line in (run / "genotype_history.jsonl").read_text().splitlines()]
    if epochs_seen != list(range(epochs)):
        raise CaseFailed(f"genotype_history.jsonl holds epochs {epochs_seen}, expected 0..{epochs - 1}")
    genotype = Genotype.parse((run / "genotype.json").read_text())
    return {"genotype": genotype.to_text(), "run_wall_time_s": round(summary["wall_time_s"], 2),
            "val_acc": summary["metrics"].get("val/acc")}


def cli_search(spec: dict, deadline: Deadline, ctx: Context) -> dict:
    run = ctx.runs_dir / spec["id"]
    cmd = _darts_lite(spec, ctx, run, f"search.epochs={spec['epochs']}")
    code, output = run_process(cmd, deadline, run.with_suffix(".log"), ctx.runs_dir, ctx.env)
    data = _check_search(run, code, output, spec["epochs"], ctx)
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run / "config.yaml")
    data.update(C=cfg.space.C, layers=cfg.space.layers, batch=cfg.data.batch_size,
                resolution=cfg.data.resolution or cfg.data.synthetic_size,
                order=cfg.search.order, relaxation=cfg.search.relaxation._target_, command=_shown(cmd))
    for key, want in spec.get("expect", {}).items():
        if OmegaConf.select(cfg, key) != want:
            raise CaseFailed(f"the run's config has {key}={OmegaConf.select(cfg, key)!r}, expected {want!r}", data)
    if "final_stage" in spec:  # a progressive search: its last checkpoint is of the last stage
        import torch

        saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        stage = (saved.get("progressive") or {}).get("stage")
        data["progressive_stage"] = stage
        if stage != spec["final_stage"]:
            raise CaseFailed(f"the search ended in progressive stage {stage}, expected {spec['final_stage']}", data)
    if spec.get("devices", 1) > 1:
        if output.count("Run folder:") != 1:
            raise CaseFailed(f"'Run folder:' printed {output.count('Run folder:')} times; only rank 0 may write", data)
        ranks = [r for r in range(1, spec["devices"]) if not (run / f"train_ddp_process_{r}.log").is_file()]
        if ranks:
            raise CaseFailed(f"no log of rank(s) {ranks}: did every rank run?", data)
        # SearchModule all-gathers the alphas after every step and stops the run if any rank's differ
        data["alphas_equal_across_ranks"] = "checked after every step by SearchModule (a drift stops the run)"
    return data


def cli_train(spec: dict, deadline: Deadline, ctx: Context) -> dict:
    run = ctx.runs_dir / spec["id"]
    cmd = _darts_lite(spec, ctx, run)
    code, output = run_process(cmd, deadline, run.with_suffix(".log"), ctx.runs_dir, ctx.env)
    summary = _check_run(run, code, output, TRAIN_FILES, ctx)
    if "val/acc" not in summary["metrics"]:
        raise CaseFailed("summary.json has no val/acc: the test pass did not run")
    return {"params": summary["params"], "test_acc": summary["metrics"]["val/acc"],
            "run_wall_time_s": round(summary["wall_time_s"], 2), "command": _shown(cmd)}


def cli_resume(spec: dict, deadline: Deadline, ctx: Context) -> dict:
    """An uninterrupted search and one killed (SIGKILL) after its first checkpoint, then resumed: same alphas."""
    import torch

    epochs = spec["epochs"]
    straight, killed = ctx.runs_dir / f"{spec['id']}-straight", ctx.runs_dir / f"{spec['id']}-killed"
    cmd = _darts_lite(spec, ctx, straight, f"search.epochs={epochs}")
    code, output = run_process(cmd, deadline, straight.with_suffix(".log"), ctx.runs_dir, ctx.env)
    _check_search(straight, code, output, epochs, ctx)

    kill_cmd = _darts_lite(spec, ctx, killed, f"search.epochs={epochs}")
    proc = _start(kill_cmd, killed.with_suffix(".log"), ctx.runs_dir, ctx.env)
    history, ckpt = killed / "genotype_history.jsonl", killed / "checkpoints" / "last.ckpt"
    checkpointed = False
    try:
        while proc.poll() is None and not deadline.expired():
            checkpointed = ckpt.is_file() and history.is_file() and bool(history.read_text().strip())
            if checkpointed:
                break
            time.sleep(0.02)
    finally:
        finished = proc.poll() is not None
        _kill_group(proc)
    if finished:
        raise CaseFailed(f"the run to be killed ended (status {proc.returncode}) before its first checkpoint was "
                         "seen; give it more steps per epoch")
    if not checkpointed:
        raise CaseTimeout(f"no checkpoint within {deadline.limit:.0f} s: {_shown(kill_cmd)}")
    epochs_before = len(history.read_text().splitlines())
    if epochs_before >= epochs or (killed / "genotype.json").exists():
        raise CaseFailed("the run was killed only after it finished all epochs; give it more epochs")

    code, output = run_process([*kill_cmd, "resume=true"], deadline, killed.with_suffix(".log"), ctx.runs_dir, ctx.env)
    data = _check_search(killed, code, output, epochs, ctx)
    a = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    keys = sorted(k for k in a if k.startswith("net.alpha"))
    diff = max((a[k] - b[k]).abs().max().item() for k in keys)
    tolerance = 0.0 if ctx.dry_run else GPU_ALPHA_TOLERANCE
    straight_genotype = (straight / "genotype.json").read_text()
    data.update(killed_after_epochs=epochs_before, epochs=epochs, alpha_max_abs_diff=diff, tolerance=tolerance,
                same_genotype=straight_genotype == (killed / "genotype.json").read_text(), command=_shown(kill_cmd))
    if diff > tolerance:
        raise CaseFailed(f"resumed alphas differ from the uninterrupted run's by up to {diff:.3g} "
                         f"(tolerance {tolerance:g})", data)
    if ctx.dry_run and not data["same_genotype"]:
        raise CaseFailed("the resumed run's genotype differs from the uninterrupted run's", data)
    return data


def _shown(cmd: list[str]) -> str:
    """A command as a user would type it: `python -m darts_lite ...`, without this run's folder."""
    return shlex.join(["python", *[c for c in cmd[1:] if not c.startswith("hydra.run.dir=")]])


# ---- the plan ------------------------------------------------------------------------------------------

def step_name(size: str, algorithm: str, precision: str, channels_last: bool, compiled: bool) -> str:
    return f"step/{size}/{algorithm}/{precision}/{'cl' if channels_last else 'nchw'}{'/compile' if compiled else ''}"


def step_matrix(quick: bool) -> tuple[list[tuple], list[tuple]]:
    """(eager, compiled) cases as (size, algorithm, precision, channels_last, compiled)."""
    searches = [a for a in ALGORITHMS if not ALGORITHMS[a].get("memory_mode")]
    eager = [(size, algo, precision, cl, False)
             for size in ("paper", "proxy") for algo in searches for precision in PRECISIONS for cl in (True, False)
             # fp16 loss scaling does not cover second order's autograd.grad: the config checks refuse it
             if not (precision == "16-mixed" and ALGORITHMS[algo]["order"] == 2)]
    memory = [("paper", algo, precision, True, False) for algo in ALGORITHMS if ALGORITHMS[algo].get("memory_mode")
              for precision in (("32-true",) if quick else ("32-true", "bf16-mixed"))]
    compiled = [("paper", "darts1", "bf16-mixed", True, True)]
    if quick:
        # channels_last as configured; all precisions at the paper size and for GDAS at its proxy size
        eager = [c for c in eager if c[3] and (c[0] == "paper" or c[1] == "gdas" or c[2] == "32-true")]
        eager.append(("paper", "darts1", "32-true", False, False))
    eager += memory
    if not quick:
        # the precision the experiments run at; first-order DARTS runs at the paper size only
        compiled.append(("paper", "darts1", "32-true", True, True))
    return eager, compiled


def search_sizes(dry_run: bool) -> dict[str, dict]:
    """The two supernet sizes: +experiment=darts (paper) and +experiment=gdas (EcoNAS proxy), read from the configs."""
    from darts_lite.data import native_size

    sizes = {}
    for label, experiment in SIZE_OF.items():
        if dry_run:
            sizes[label] = dict(DRY_SIZES[label], experiment=experiment)
            continue
        cfg = compose(experiment, [])
        sizes[label] = dict(C=cfg.space.C, layers=cfg.space.layers, batch=cfg.data.batch_size,
                            resolution=cfg.data.resolution or native_size(cfg.data.name),
                            crop_padding=cfg.data.crop_padding, experiment=experiment)
    return sizes


def plan(mode: Mode, quick: bool, dry_run: bool, gpus: int, sizes: dict[str, dict]) -> list[Case]:
    eager, compiled = step_matrix(quick)

    def step_case(size, algo, precision, cl, comp) -> Case:
        spec = dict(size=size, dims=sizes[size], algorithm=algo, precision=precision, channels_last=cl, compile=comp,
                    warmup=mode.warmup, steps=mode.steps, fwd_bwd=mode.fwd_bwd)
        return Case(step_name(size, algo, precision, cl, comp), "step", mode.compile_limit_s if comp else mode.step_limit_s,
                    spec)

    steps = mode.cli_steps
    cases = [step_case(*c) for c in eager]
    cases += [
        Case("cli/search-gdas-proxy", "cli", mode.cli_limit_s, dict(
            id="search-gdas-proxy", task="search", experiment="gdas", overrides=[], epochs=1, steps=steps,
            expect={} if dry_run else {"space.C": sizes["proxy"]["C"], "data.resolution": sizes["proxy"]["resolution"]},
        ), cli_search),
        Case("cli/search-darts_v2", "cli", mode.cli_limit_s, dict(
            id="search-darts_v2", task="search", experiment="darts_v2", overrides=[], epochs=1, steps=steps,
            expect={"search.order": 2},
        ), cli_search),
        Case("cli/train-DARTS_V2", "cli", mode.cli_limit_s, dict(
            id="train-DARTS_V2", task="train", experiment="train", steps=steps,
            # a reduced size: 8 cells of C=16 instead of the recipe's 20 of C=36
            overrides=["genotype=DARTS_V2", "train.epochs=1", *([] if dry_run else ["train.C=16", "train.layers=8"])],
        ), cli_train),
        # DrNAS's progressive learning on the device: ops pruned and widened between two stages of one epoch each (2
        # steps: what it checks is the change of stage, not a time)
        Case("cli/search-drnas_progressive", "cli", mode.cli_limit_s, dict(
            id="search-drnas_progressive", task="search", experiment="drnas_progressive", epochs=2, steps=2,
            overrides=["search.warmup_epochs=0", "search.progressive.stage_epochs=[1,1]"],
            dry_run_overrides=["space.C=12"], final_stage=1,
        ), cli_search),
        Case("cli/resume-gdas-proxy", "cli", mode.resume_limit_s, dict(
            id="resume-gdas-proxy", task="search", experiment="gdas", overrides=[], epochs=3, steps=max(steps // 2, 2),
        ), cli_resume),
    ]
    devices = 2 if dry_run else gpus
    if devices > 1:
        cases.append(Case(f"ddp/search-gdas-proxy-{devices}", "ddp", mode.resume_limit_s, dict(
            id=f"ddp-search-gdas-{devices}", task="search", experiment="gdas", overrides=[], epochs=2,
            steps=max(steps // 2, 2), devices=devices,
        ), cli_search))
    cases += [step_case(*c) for c in compiled]
    return cases


def select(cases: list[Case], only: str | None) -> list[Case]:
    if not only:
        return cases
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    chosen = [c for c in cases if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    if not chosen:
        raise SystemExit(f"gpu_check: no case matches --only {only!r}; the cases are:\n  "
                         + "\n  ".join(c.name for c in cases))
    return chosen


# ---- estimates -----------------------------------------------------------------------------------------

def estimate_search(step_s: float, fwd_bwd_s: float, batch: int, steps_per_epoch: int, epochs: int,
                    val_images: int) -> dict[str, float]:
    """Seconds of a full search: every step at the measured step time, and one validation pass per epoch.

    Validation is one forward pass per image of the validation part, estimated as a third of the measured
    forward+backward per image (a backward pass costs about two forward passes).
    """
    train_s = step_s * steps_per_epoch * epochs
    val_s = fwd_bwd_s / 3 / batch * val_images * epochs
    return {"train_s": train_s, "val_s": val_s, "total_s": train_s + val_s, "gpu_hours": (train_s + val_s) / 3600}


def experiment_facts(experiment: str) -> dict:
    """Steps per epoch and epochs of a full search, from its config and the dataset's known size."""
    from darts_lite.data import part_sizes, train_class_counts

    cfg = compose(experiment, [])
    weight, arch = part_sizes(train_class_counts(cfg.data.name), cfg.data.split, cfg.data.sample_ratio)
    algorithm = "gdas" if cfg.search.relaxation._target_.endswith("GumbelRelaxation") else f"darts{cfg.search.order}"
    return {
        "experiment": experiment, "size": "proxy" if cfg.proxy.name != "none" else "paper", "algorithm": algorithm,
        "epochs": cfg.search.epochs, "warmup_epochs": cfg.search.warmup_epochs, "batch": cfg.data.batch_size,
        "weight_images": weight, "steps_per_epoch": weight // cfg.data.batch_size,
        # the search validates on the architecture part (val_on=arch) or on CIFAR's 10k test images
        "val_images": arch if cfg.data.val_on == "arch" else 10_000,
        "precision": str(cfg.trainer.precision), "channels_last": bool(cfg.search.channels_last),
        "compile": bool(cfg.search.compile),
    }


def estimates(results: list[dict], facts: list[dict]) -> list[dict]:
    """Per experiment: the search as configured, and with the fastest setting measured for its size and algorithm."""
    steps = {r["name"]: r for r in results if r["section"] == "step" and r["status"] == "passed"}
    rows = []
    for f in facts:
        configured = step_name(f["size"], f["algorithm"], f["precision"], f["channels_last"], f["compile"])
        same = [r for r in steps.values() if r["name"].startswith(f"step/{f['size']}/{f['algorithm']}/")]
        fastest = min(same, key=lambda r: r["data"]["step_s"], default=None)
        for setting, r in (("as configured", steps.get(configured)), ("fastest measured", fastest)):
            row = {**f, "setting": setting, "case": r["name"] if r else configured}
            if r is None:
                row["missing"] = "not measured (the case did not pass or was not run)"
            else:
                row.update(step_s=r["data"]["step_s"], fwd_bwd_s=r["data"]["fwd_bwd_s"],
                           **estimate_search(r["data"]["step_s"], r["data"]["fwd_bwd_s"], f["batch"],
                                             f["steps_per_epoch"], f["epochs"], f["val_images"]))
            rows.append(row)
            if setting == "as configured" and r is not None and fastest is r:
                break  # the configured setting is the fastest: one row says it
    return rows


# ---- the machine and the report ------------------------------------------------------------------------

def machine_info(dry_run: bool) -> dict:
    import pytorch_lightning as pl
    import torch

    info: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "lightning": pl.__version__, "cpu": _cpu_name(), "cores": os.cpu_count(), "devices": [],
    }
    if dry_run:
        return info
    info["cudnn"] = torch.backends.cudnn.version()
    try:
        version = torch.cuda.nccl.version()  # a tuple; an int in older torch
        info["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    except Exception:  # a build without NCCL
        info["nccl"] = None
    info["driver"] = _driver_version()
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        info["devices"].append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                                "memory_gib": round(p.total_memory / 2**30, 1), "multiprocessors": p.multi_processor_count})
    info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def _driver_version() -> str | None:
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except subprocess.TimeoutExpired:
            pass
    try:
        return re.search(r"Kernel Module\s+([\d.]+)", Path("/proc/driver/nvidia/version").read_text()).group(1)
    except (OSError, AttributeError):
        return None


def report_name(info: dict, dry_run: bool) -> str:
    if dry_run:
        return "gpu_check_cpu_dryrun"
    return "gpu_" + re.sub(r"[^A-Za-z0-9.-]+", "_", info["devices"][0]["name"]).strip("_")


DRY_NOTE = ("CPU DRY RUN, NOT GPU FIGURES: tiny networks on the CPU (trainer=cpu, compile disabled, DDP over 2 CPU "
            "processes). It checks this script's machinery; every time, memory and estimate below is a placeholder "
            "that says nothing about any GPU.")


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def markdown(report: dict) -> str:
    info, dry = report["machine"], report["kind"] == "cpu-dry-run"
    s = report["summary"]
    title = "GPU check: CPU DRY RUN (placeholder, no GPU figures)" if dry else f"GPU check: {info['devices'][0]['name']}"
    lines = [f"# {title}", ""]
    if dry:
        lines += [f"> {DRY_NOTE}", ""]
    counts = ", ".join(f"{n} {k}" for k, n in s["counts"].items() if n)
    lines += [
        f"`{report['command']}` on {info['date']}: {s['cases']} cases, {counts}; {s['total_s']:.0f} s of a "
        f"{report['settings']['budget_s']:.0f} s budget; exit status {s['exit_status']}.", "",
        "## Machine", "", "| | |", "| --- | --- |",
    ]
    for d in info["devices"]:
        lines.append(f"| device {d['index']} | {d['name']} (compute capability {d['capability']}, {d['memory_gib']} GiB, "
                     f"{d['multiprocessors']} SMs) |")
    if not dry:
        lines.append(f"| driver | {info.get('driver') or 'unknown'} |")
        lines.append(f"| CUDA, cuDNN, NCCL | {info['cuda']}, {info.get('cudnn')}, {info.get('nccl')}; "
                     f"bf16 supported: {info.get('bf16_supported')} |")
    lines += [f"| torch, Lightning, Python | {info['torch']}, {info['lightning']}, {info['python']} |",
              f"| CPU | {info['cpu']}, {info['cores']} cores |", ""]

    st = report["settings"]
    lines += [
        "## Search step and supernet forward+backward", "",
        f"A step is SearchModule.training_step under a Trainer (architecture update, then weight update) on the real "
        f"data module with synthetic CIFAR-shaped data on the device: median of {st['steps']} steps after "
        f"{st['warmup']} untimed (the first step's time, cuDNN autotuning or compilation included, is in the JSON). "
        f"fwd+bwd: the supernet alone, median of {st['fwd_bwd']}. Peak: torch.cuda.max_memory_allocated during the "
        "steps and during the forward+backward passes.", "",
        "| size | algorithm | precision | layout | compile | step (s) | fwd+bwd (s) | peak step (MiB) | "
        "peak fwd+bwd (MiB) | status |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["cases"]:
        if r["section"] != "step":
            continue
        _, size, algo, precision, layout, *comp = r["name"].split("/")
        dims, d = report["sizes"][size], r["data"]
        lines.append(
            f"| {size} (C={dims['C']}, {dims['layers']} cells, batch {dims['batch']}, {dims['resolution']} px) | "
            f"{ALGORITHMS[algo]['label']} | {precision} | {'channels_last' if layout == 'cl' else 'NCHW'} | "
            f"{'yes' if comp else 'no'} | {_f(d.get('step_s'))} | {_f(d.get('fwd_bwd_s'))} | "
            f"{_f(d.get('peak_step_mib'), '.0f')} | {_f(d.get('peak_fwd_bwd_mib'), '.0f')} | {r['status']} |")

    lines += ["", "## Command line end to end", "",
              f"`python -m darts_lite` with {'trainer=cpu' if dry else 'trainer=gpu'} on synthetic CIFAR-shaped data "
              f"(10 classes, {'3x8x8 in the dry run' if dry else '3x32x32'}; no download), each in a subprocess of its "
              "own. The resume case kills a GDAS search (SIGKILL) after its first checkpoint, resumes it and compares "
              "its alphas with an uninterrupted run's (CUDA RNG states travel in the checkpoint).", "",
              "| case | status | time (s) | limit (s) | result |", "| --- | --- | ---: | ---: | --- |"]
    for r in report["cases"]:
        if r["section"] in ("cli", "ddp"):
            lines.append(f"| {r['name']} | {r['status']} | {r['seconds']:.0f} | {r['limit_s']:.0f} | {_cli_result(r)} |")
    commands = [(r["name"], r["data"]["command"]) for r in report["cases"] if r["data"].get("command")]
    if commands:
        lines += ["", "Commands (run folder left out):", ""] + [f"- {n}: `{c}`" for n, c in commands]
    if report["ddp"]:
        lines += ["", report["ddp"]]

    lines += ["", "## Estimated full searches on this " + ("CPU (placeholder)" if dry else "GPU"), "",
              "Steps per epoch from the experiment's config and CIFAR-10's 50k training images (25k per part): "
              "training = step time x steps per epoch x epochs; validation (the 25k architecture part, once per "
              "epoch) = a third of the measured forward+backward per image, a backward pass costing about two "
              "forward passes. Checkpoints and logging are not counted.", "",
              "| experiment | setting | case | steps/epoch x epochs | step (s) | training (h) | validation (h) | "
              "total (h) |", "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for e in report["estimates"]:
        if "missing" in e:
            lines.append(f"| {e['experiment']} | {e['setting']} | {e['case']} | {e['steps_per_epoch']} x {e['epochs']} | "
                         f"- | - | - | {e['missing']} |")
        else:
            lines.append(f"| {e['experiment']} | {e['setting']} | {e['case']} | {e['steps_per_epoch']} x {e['epochs']} | "
                         f"{e['step_s']:.3f} | {e['train_s'] / 3600:.2f} | {e['val_s'] / 3600:.2f} | "
                         f"{e['total_s'] / 3600:.2f} |")

    problems = [r for r in report["cases"] if r["status"] != "passed"]
    lines += ["", "## Problems", ""]
    lines += [f"- **{r['name']}**: {r['status']}: " + (r["error"] or "").strip().replace("\n", "\n  ") for r in problems] \
        or ["None: every case passed."]
    if report.get("runs_dir"):
        lines += ["", f"Run folders and logs kept in `{report['runs_dir']}`."]
    return "\n".join(lines) + "\n"


def _cli_result(r: dict) -> str:
    d = r["data"]
    if r["status"] != "passed":
        return (r["error"] or "").strip().splitlines()[0] if r["error"] else "-"
    if "alpha_max_abs_diff" in d:
        return (f"killed after {d['killed_after_epochs']} of {d['epochs']} epochs, resumed; alphas max abs difference "
                f"{d['alpha_max_abs_diff']:.3g} (tolerance {d['tolerance']:g}); same genotype: {d['same_genotype']}")
    if "params" in d:
        return f"{d['params'] / 1e6:.2f}M parameters, test accuracy {d['test_acc']:.3f}, {d['run_wall_time_s']:.0f} s in the run"
    extra = "; alphas equal across ranks: checked every step" if "alphas_equal_across_ranks" in d else ""
    return (f"C={d['C']}, {d['layers']} cells, batch {d['batch']}, {d['resolution']} px; "
            f"{d['run_wall_time_s']:.0f} s in the run{extra}")


# ---- main ----------------------------------------------------------------------------------------------

def _progress(total: int) -> Callable[[dict], None]:
    count = [0]

    def show(r: dict) -> None:
        count[0] += 1
        d = r["data"]
        what = ""
        if r["section"] == "step" and "step_s" in d:
            what = f"step {d['step_s']:.3f} s, fwd+bwd {_f(d.get('fwd_bwd_s'))} s"
            if d.get("peak_step_mib") is not None:
                what += f", peak {d['peak_step_mib']:.0f} MiB"
        elif r["status"] != "passed" and r["error"]:
            what = r["error"].strip().splitlines()[-1][:160]
        print(f"[{count[0]:2d}/{total}] {r['name']:<40} {r['status']:<13} {r['seconds']:6.1f} s  {what}", flush=True)

    return show


def main(argv: list[str] | None = None, worker_cmd: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller matrix in about 3 minutes")
    p.add_argument("--budget", type=float, help="seconds for the whole run (default 470, --quick 170)")
    p.add_argument("--only", help="comma-separated patterns of case names to run, e.g. 'step/paper/*,cli/*'")
    p.add_argument("--list", action="store_true", help="print the planned cases and exit")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the report goes (default experiments/results)")
    p.add_argument("--runs-dir", type=Path, help="where the runs' folders and logs go (default: a temporary folder)")
    p.add_argument("--keep-runs", action="store_true", help="keep the runs' folders even when every case passed")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="for developing this script: the same machinery at tiny sizes on the CPU; no GPU figures")
    p.add_argument("--worker-cases", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--worker-events", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker_cases:
        return worker_main(args.worker_cases, args.worker_events)

    import torch

    dry = args.cpu_dry_run
    if not dry and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device visible (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
              "nothing to check.")
        return 0
    started = time.monotonic()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the checkout's darts_lite, as the subprocesses get it
    mode = DRY if dry else (QUICK if args.quick else FULL)
    budget = Budget(args.budget or (QUICK.budget_s if args.quick else mode.budget_s))
    gpus = 0 if dry else torch.cuda.device_count()
    sizes = search_sizes(dry)
    cases = select(plan(mode, args.quick, dry, gpus, sizes), args.only)
    if args.list:
        for c in cases:
            print(f"{c.name:<42} limit {c.limit_s:4.0f} s")
        return 0

    info = machine_info(dry)
    print(f"gpu_check ({'CPU DRY RUN, not GPU figures' if dry else mode.name}): {len(cases)} cases, budget "
          f"{budget.seconds:.0f} s")
    for d in info["devices"]:
        print(f"  device {d['index']}: {d['name']}, compute capability {d['capability']}, {d['memory_gib']} GiB")
    print(f"  driver {info.get('driver')}, torch {info['torch']}, CUDA {info['cuda']}, cuDNN {info.get('cudnn')}, "
          f"NCCL {info.get('nccl')}, Lightning {info['lightning']}", flush=True)

    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="darts_lite_gpu_check_"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="1", WANDB_MODE="offline")
    ctx = Context(runs_dir=runs_dir, env=env, dry_run=dry, mode=mode, gpus=gpus)
    worker_cmd = worker_cmd or [sys.executable, str(Path(__file__).resolve())]
    worker_args = {"device": "cpu" if dry else "cuda", "dry_run": dry}
    show = _progress(len(cases))
    try:
        results = run_cases(cases, budget, ctx, worker_cmd, show, worker_args)
    except KeyboardInterrupt:
        print("gpu_check: interrupted; no report written", file=sys.stderr)
        return 130

    code = exit_status(results)
    keep = args.keep_runs or code != 0
    statuses = ("passed", "failed", "timeout", "out of budget")
    report = {
        "kind": "cpu-dry-run" if dry else "gpu", "note": DRY_NOTE if dry else None,
        "command": shlex.join(["python", "experiments/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": info,
        "settings": {"mode": mode.name, "quick": args.quick, "budget_s": budget.seconds, "warmup": mode.warmup,
                     "steps": mode.steps, "fwd_bwd": mode.fwd_bwd, "only": args.only,
                     "gpu_alpha_tolerance": GPU_ALPHA_TOLERANCE},
        "sizes": sizes, "cases": results,
        "estimates": estimates(results, [experiment_facts(e) for e in EXPERIMENTS]),
        "ddp": None if gpus > 1 or dry else f"DDP: not run, {gpus} GPU visible (it needs two or more).",
        "runs_dir": str(runs_dir) if keep else None,
        "summary": {"cases": len(results), "counts": {s: sum(r["status"] == s for r in results) for s in statuses},
                    "total_s": time.monotonic() - started, "exit_status": code},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = report_name(info, dry)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(report))
    if not keep:
        shutil.rmtree(runs_dir, ignore_errors=True)
    counts = ", ".join(f"{n} {k}" for k, n in report["summary"]["counts"].items() if n)
    print(f"gpu_check: {len(results)} cases: {counts}; report {args.out / name}.md (exit status {code})"
          + (f"; runs kept in {runs_dir}" if keep else ""))
    return code


if __name__ == "__main__":
    sys.exit(main())
