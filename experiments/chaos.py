"""Kill anywhere: every long task of darts_lite SIGKILLed at random moments, resumed, and compared with an
uninterrupted run of the same command.

    python experiments/chaos.py                       # every task, 3 kills each (about 15 minutes on 2 cores)
    python experiments/chaos.py --kills 5 --tasks search_gdas,evolution_local --seed 7

For each task: one uninterrupted run (its duration T, measured after start-up); then the same command in another
folder, SIGKILLed (the whole process group: the driver and every worker it started) at ``--kills`` moments drawn
uniformly from [0, T) of its work: started, killed at the first moment after it began its work, started again
(with ``resume=true`` once the task has left something to resume from, as a cluster's requeue script would) and
killed after the time to the next moment, and so on; then run to its end. Its outputs must equal the uninterrupted
run's: the final tensors (alphas, weights, optimiser state), genotypes, metrics rows (none lost, none twice), the
EcoNAS archive (every evaluation once; none that finished trained a second time: each is announced once over all
attempts), the selection's decisions, the surrogates' reports. A kill that comes after the run ended on its own is
not counted.

Writes experiments/results/chaos.json and .md (tasks x kills landed, all equal or not; the machine). The tests
(tests/test_chaos.py) run one random kill per task on the same tiny settings.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPERIMENTS = Path(__file__).resolve().parent
sys.path.insert(0, str(EXPERIMENTS))
from common import RESULTS, ROOT, machine, machine_text, write_result  # noqa: E402

# ---- the tasks, at sizes that run in seconds ---------------------------------------------------------------------
SEARCH = ["+experiment=quickstart", "data=synthetic", "data.crop_padding=1", "data.flip=true", "search.epochs=5",
          "search.warmup_epochs=1", "space.C=4", "space.layers=3", "seed=3", "trainer.enable_progress_bar=false",
          "+trainer.limit_train_batches=3"]
# a cell of 2 nodes and 4 candidate ops: a third of the default cell's time
SMALL_CELL = ["space.steps=2", "space.multiplier=2", "space.primitives=[none,skip_connect,sep_conv_3x3,max_pool_3x3]"]
SEARCH_CI = SMALL_CELL  # the tests' searches: the resume does not depend on the cell
TINY_ECONAS = ["data=synthetic", "train.C=4", "train.layers=3", "data.batch_size=16"]
# the table of evaluated genotypes darts_lite ships (300 DARTS-space cells trained on digits)
SURROGATE_TABLE = ROOT / "darts_lite" / "surrogate" / "data" / "digits_c0r0s0e2.csv"
# a quickstart-like search shrunk for the selection: the small cell (3 candidate ops besides none), a tenth of the digits
SELECT_SEARCH = ["+experiment=quickstart", "space.C=4", "space.layers=3", *SMALL_CELL, "data.sample_ratio=0.1",
                 "data.batch_size=32", "search.epochs=1", "search.warmup_epochs=0", "search.selection_epochs=1",
                 "search.selection_batches=2", "trainer.enable_progress_bar=false"]


@dataclass
class ChaosTask:
    """One long task: its command-line overrides (``{prepared}`` in one is replaced by the prepared input's path),
    the file whose presence makes a restart ``resume=true`` (None: the command itself continues, e.g. an archive's
    evaluations), how two finished folders are compared (the differences; [] when equal) and what the task needs
    prepared (``prepare(work) -> path``)."""

    name: str
    overrides: list[str]
    resume_when: str | None
    compare: Callable[[Path, Path], list[str]]
    prepare: Callable[[Path, Callable], str] | None = None
    evaluations: bool = False  # announces EcoNAS evaluations (checked: none trained twice)
    ci: list[str] = field(default_factory=list)  # added in the tests' one-kill runs, to fit the suite's time

    def args(self, folder: Path, prepared: str = "", ci: bool = False) -> list[str]:
        overrides = [*self.overrides, *(self.ci if ci else [])]
        return [o.replace("{prepared}", prepared) for o in overrides] + [f"hydra.run.dir={folder}"]

    def resumable(self, folder: Path) -> bool:
        return self.resume_when is not None and (folder / self.resume_when).exists()


# ---- comparisons: the differences between an uninterrupted folder (a) and a killed-and-resumed one (b) ----------
def _load(path: Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _same_tree(a: Any, b: Any, where: str) -> list[str]:
    """Tensors equal bit for bit, everything else equal, in nested dicts and lists."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
        return [] if ok else [f"{where} differs"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys differ ({sorted(set(a) ^ set(b))[:5]})"]
        return [d for k in a for d in _same_tree(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: {len(a)} entries against {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _same_tree(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} against {b!r}"]


def _same_files(a: Path, b: Path, *names: str) -> list[str]:
    out = []
    for name in names:
        if not (b / name).is_file():
            out.append(f"{name} missing")
        elif (a / name).read_bytes() != (b / name).read_bytes():
            out.append(f"{name} differs")
    return out


def _csv_rows(path: Path, drop: Sequence[str] = ()) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def _metric_rows(folder: Path, metric: str) -> list[tuple[str, str]]:
    return [(r["epoch"], r[metric]) for r in _csv_rows(folder / "metrics.csv") if r.get(metric)]


def compare_search(a: Path, b: Path) -> list[str]:
    out = _same_files(a, b, "genotype.json")
    out += _same_tree(_load(a / "alphas.pt"), _load(b / "alphas.pt"), "alphas")
    out += _same_training_state(a, b, "search/train_loss")
    history = [json.loads(line)["epoch"] for line in (b / "genotype_history.jsonl").read_text().splitlines()]
    expected = [json.loads(line)["epoch"] for line in (a / "genotype_history.jsonl").read_text().splitlines()]
    if history != expected:
        out.append(f"genotype_history.jsonl epochs {history}, expected {expected}")
    return out


def _same_training_state(a: Path, b: Path, loss: str) -> list[str]:
    """The last checkpoints' weights and optimiser states, and metrics.csv's per-epoch ``loss`` rows."""
    ca, cb = _load(a / "checkpoints" / "last.ckpt"), _load(b / "checkpoints" / "last.ckpt")
    out = _same_tree(ca["state_dict"], cb["state_dict"], "weights")
    out += _same_tree(ca["optimizer_states"], cb["optimizer_states"], "optimizer states")
    if _metric_rows(a, loss) != _metric_rows(b, loss):
        out.append("metrics.csv: the per-epoch training losses differ (a row lost or written twice?)")
    return out


def compare_train(a: Path, b: Path) -> list[str]:
    out = _same_training_state(a, b, "train/loss")
    sa, sb = (json.loads((f / "summary.json").read_text())["metrics"] for f in (a, b))
    if sa != sb:
        out.append(f"summary.json metrics {sb} against {sa}")
    return out


def compare_select(a: Path, b: Path) -> list[str]:
    out = _same_files(a, b, "selection.csv", "genotype_perturbation.json", "genotype.json")
    if (b / "selection_state.pt").exists():
        out.append("selection_state.pt left behind after the selection ended")
    return out


def _archive(folder: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{folder / 'archive.sqlite'}?mode=ro", uri=True) as conn:
        return sorted(conn.execute("SELECT genotype_hash, setting, seed, epochs, status, val_accs, val_acc, test_acc "
                                   "FROM evaluations").fetchall())


def compare_archive(a: Path, b: Path) -> list[str]:
    ra, rb = _archive(a), _archive(b)
    out = []
    keys = Counter(r[:4] for r in rb)
    twice = [k for k, n in keys.items() if n > 1]
    if twice:
        out.append(f"archive: {len(twice)} evaluations stored more than once")
    if ra != rb:
        out.append(f"archive: {len(set(ra) - set(rb))} rows of the uninterrupted run missing or different, "
                   f"{len(set(rb) - set(ra))} rows it does not have")
    return out


def compare_study(a: Path, b: Path) -> list[str]:
    out = compare_archive(a, b)
    timing = ("speedup", "wall_time_s")  # measured, not computed
    if _csv_rows(a / "proxy_study.csv", timing) != _csv_rows(b / "proxy_study.csv", timing):
        out.append("proxy_study.csv: correlations differ")
    return out


def compare_evolution(a: Path, b: Path) -> list[str]:
    return compare_archive(a, b) + _same_files(a, b, "top.csv")


def compare_ofa(a: Path, b: Path) -> list[str]:
    out = _same_tree(_load(a / "network.pt"), _load(b / "network.pt"), "network.pt")
    for phase in sorted(p.parent.name for p in a.glob("*/summary.json")):
        ma, mb = (json.loads((f / phase / "summary.json").read_text())["metrics"] for f in (a, b))
        if ma != mb:  # a resumed phase continues the very same random draws, so its metrics are the same
            out.append(f"{phase}/summary.json metrics {mb} against {ma}")
    return out


def compare_surrogate(a: Path, b: Path) -> list[str]:
    timing = ("fit_s",)
    out = []
    if _csv_rows(a / "surrogate_report.csv", timing) != _csv_rows(b / "surrogate_report.csv", timing):
        out.append("surrogate_report.csv differs")
    for model in sorted((a / "models").glob("*.json")):
        ma, mb = (json.loads(f.read_text()) for f in (model, b / "models" / model.name))
        for when in ("created", "fit_s"):  # when it was made, not what
            ma.pop(when, None), mb.pop(when, None)
        if ma != mb:
            out.append(f"models/{model.name} differs")
    return out


# ---- what some tasks need first ----------------------------------------------------------------------------------
def prepare_search_checkpoint(work: Path, finish: Callable) -> str:
    """A finished 1-epoch search to select from (made once per work folder): its checkpoint's path."""
    folder = work / "prepared_search"
    ckpt = folder / "checkpoints" / "last.ckpt"
    if not (folder / "summary.json").is_file():
        done = finish([*SELECT_SEARCH, f"hydra.run.dir={folder}"])
        if done.returncode != 0:
            raise RuntimeError(f"the search to select from failed:\n{done.stderr[-3000:]}")
    return str(ckpt)


TASKS: dict[str, ChaosTask] = {t.name: t for t in (
    ChaosTask("search_darts1", [*SEARCH, "search=darts"], "checkpoints/last.ckpt", compare_search, ci=SEARCH_CI),
    ChaosTask("search_darts2", [*SEARCH, "search=darts_v2", "search.epochs=4"], "checkpoints/last.ckpt", compare_search,
              ci=SEARCH_CI),
    ChaosTask("search_gdas", [*SEARCH, "search=gdas"], "checkpoints/last.ckpt", compare_search, ci=SEARCH_CI),
    ChaosTask("train", ["+experiment=train_quick", "genotype=DARTS_V2", "data=synthetic", "data.crop_padding=1",
                        "data.flip=true", "train.C=8", "train.layers=3", "train.cutout=4", "train.drop_path_prob=0.3",
                        "train.epochs=5", "seed=2", "trainer.enable_progress_bar=false"],
              "checkpoints/last.ckpt", compare_train, ci=["train.epochs=3"]),
    ChaosTask("select", [*SELECT_SEARCH, "task=select", "ckpt_path={prepared}", "search.selection_epochs=2"],
              "selection_state.pt", compare_select, prepare_search_checkpoint),
    ChaosTask("proxy_study", ["+experiment=proxy_study_quick", *TINY_ECONAS, "study.architectures=4",
                              "study.reference=c0r0s0e2", "study.proxies=[c2r0s0e1]", "study.bootstrap=20",
                              "study.repeat=false"], None, compare_study, evaluations=True),
    ChaosTask("evolution_local", ["+experiment=econas_quick", *TINY_ECONAS, "setting.name=c0r0s0e3",
                                  "evolution.initial=3", "evolution.promote=[2,1]", "evolution.parents=[1,1,1]",
                                  "evolution.tournament=2", "evolution.top=2", "evolution.cycles=1", "executor=local",
                                  "executor.max_parallel=2"],
              "archive.sqlite", compare_evolution, evaluations=True,
              # the tests: the first population only, 2 evaluations at once (each worker imports torch anew)
              ci=["evolution.initial=2", "evolution.cycles=0"]),
    ChaosTask("ofa", ["+experiment=ofa_quick", "data=synthetic", "data.synthetic_samples=48",
                      "data.synthetic_classes=3", "data.batch_size=16", "data.crop_padding=1", "data.flip=true",
                      "ofa.network.stem_channels=4", "ofa.network.first_channels=4", "ofa.network.widths=[4,8]",
                      "ofa.network.strides=[1,2]", "ofa.network.acts=[relu,hswish]", "ofa.network.head_channels=16",
                      "ofa.resolutions=[6,8]", "ofa.bn_calibration=1", "ofa.val_split=0.2", "ofa.epochs=[1,3,1,1,1,1]",
                      "ofa.subnets=[1,1,2,2,2,2]", "ofa.constraint.flops=null", "trainer.enable_progress_bar=false",
                      "+trainer.enable_model_summary=false", "seed=1"],
              "full/checkpoints/last.ckpt", compare_ofa),
    ChaosTask("surrogate", ["+experiment=surrogate", f"surrogate.data={SURROGATE_TABLE}", "surrogate.accuracy_unit=fraction",
                            "surrogate.models=[lgbm,forest]", "surrogate.folds=3",
                            "surrogate.learning_curve=[0.5,1.0]", "surrogate.lgbm.trees=30",
                            "surrogate.forest.trees=10"], None, compare_surrogate),
)}


# ---- running, killing, resuming ------------------------------------------------------------------------------------
def subprocess_finish(args: Sequence[str], log: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m darts_lite ARGS`` to its end, from the project root, W&B offline."""
    return subprocess.run([sys.executable, "-m", "darts_lite", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "offline"})


def start(args: Sequence[str], log: Path) -> subprocess.Popen:
    """``python -m darts_lite ARGS`` started in a session of its own (so that one signal reaches the driver and every
    worker it starts), its output into ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "darts_lite", *args], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "WANDB_MODE": "offline"})


def _began(folder: Path, since: float) -> bool:
    """Whether the run in ``folder`` started after ``since`` has begun its work (Hydra writes its config then)."""
    config = folder / ".hydra" / "config.yaml"
    try:
        return config.stat().st_mtime >= since
    except OSError:
        return False


FINISHED = re.compile(r"\] (\S+) e(\d+) ([0-9a-f]{8}): val ")


def announced(text: str) -> list[tuple[str, str, str]]:
    """The finished evaluations a run's output announces: (setting, epochs, genotype hash prefix)."""
    return FINISHED.findall(text)


@dataclass
class Outcome:
    task: str
    straight_s: float
    moments: list[float] = field(default_factory=list)  # the kills that landed, as fractions of straight_s
    ended_before_kill: int = 0
    attempts: int = 0
    resumed_with_flag: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return len(self.moments)

    @property
    def equal(self) -> bool:
        return not self.differences


def chaos(task: ChaosTask, work: Path, kills: int, rng: random.Random,
          finish: Callable[[Sequence[str]], subprocess.CompletedProcess] = subprocess_finish,
          say: Callable[[str], None] = print, ci: bool = False) -> Outcome:
    """One task: uninterrupted in work/straight, killed ``kills`` times and finished in work/killed; compared.
    ``finish`` runs a command to its end (a subprocess here; the tests run it in their own process); ``ci``: with
    the task's smaller settings for the tests."""
    work.mkdir(parents=True, exist_ok=True)
    prepared = task.prepare(work, finish) if task.prepare else ""
    straight, killed = work / "straight", work / "killed"
    done = finish(task.args(straight, prepared, ci))
    if done.returncode != 0:
        raise RuntimeError(f"{task.name}: the uninterrupted run failed:\n{done.stderr[-3000:]}")
    # its work, from when Hydra wrote its config (start-up, the imports, excluded) to its end
    outcome = Outcome(task.name, time.time() - (straight / ".hydra" / "config.yaml").stat().st_mtime)
    logs = [done.stdout]
    # the kills' moments spread over the run's work: sorted, each attempt killed that long after the previous moment
    moments = sorted(rng.uniform(0, outcome.straight_s) for _ in range(kills))
    for k, (moment, previous) in enumerate(zip(moments, [0.0, *moments])):
        args = task.args(killed, prepared, ci)
        if task.resumable(killed):
            args.append("resume=true")
            outcome.resumed_with_flag += 1
        log = work / f"attempt{k}.log"
        since = time.time()
        proc = start(args, log)
        outcome.attempts += 1
        while proc.poll() is None and not _began(killed, since):
            time.sleep(0.01)
        delay = moment - previous
        deadline = time.perf_counter() + delay
        while proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            outcome.moments.append(round(moment / outcome.straight_s, 3))
            say(f"{task.name}: killed {delay:.1f} s into attempt {k + 1} (at {moment:.1f} s of the run's "
                f"{outcome.straight_s:.1f} s)")
        else:
            outcome.ended_before_kill += 1
            say(f"{task.name}: attempt {k + 1} ended before its kill {delay:.1f} s in (exit status {proc.returncode})")
        logs.append(log.read_text())
        if proc.returncode not in (0, -signal.SIGKILL):
            outcome.differences.append(f"attempt {k} exited with {proc.returncode}: {logs[-1][-2000:]}")
            return outcome
        if proc.returncode == 0:
            break
    args = task.args(killed, prepared, ci) + (["resume=true"] if task.resumable(killed) else [])
    outcome.attempts += 1
    last = finish(args)
    logs.append(last.stdout)
    if last.returncode != 0:
        outcome.differences.append(f"the last attempt failed ({last.returncode}): {last.stderr[-2000:]}")
        return outcome
    outcome.differences += task.compare(straight, killed)
    if task.evaluations:
        twice = [k for k, n in Counter(e for text in logs[1:] for e in announced(text)).items() if n > 1]
        if twice:
            outcome.differences.append(f"{len(twice)} finished evaluations trained again after a kill: {twice[:3]}")
    return outcome


# ---- the study -------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=3, help="kills per task (default 3)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, of: " + ", ".join(TASKS))
    parser.add_argument("--seed", type=int, default=0, help="draws the kill moments")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "chaos", help="where the runs go")
    parser.add_argument("--out", type=Path, default=RESULTS / "chaos.md")
    args = parser.parse_args(argv)
    names = [n for n in args.tasks.split(",") if n]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        parser.error(f"unknown tasks {unknown}; known: {', '.join(TASKS)}")
    rng = random.Random(args.seed)
    outcomes = []
    started = time.perf_counter()
    for name in names:
        work = args.work / name
        if work.exists():  # a fresh start: the comparison is of this run's folders only
            import shutil

            shutil.rmtree(work)
        outcome = chaos(TASKS[name], work, args.kills, rng)
        say = "equal" if outcome.equal else "DIFFERENT: " + "; ".join(outcome.differences)
        print(f"{name}: {outcome.kills} kills landed, {outcome.attempts} attempts: {say}", flush=True)
        outcomes.append(outcome)
    info = machine()
    result = {"machine": info, "seed": args.seed, "kills_per_task": args.kills,
              "wall_time_s": round(time.perf_counter() - started, 1),
              "tasks": [{"task": o.task, "straight_s": round(o.straight_s, 2), "kills": o.kills, "moments": o.moments,
                         "ended_before_kill": o.ended_before_kill, "attempts": o.attempts,
                         "resumed_with_flag": o.resumed_with_flag, "equal": o.equal, "differences": o.differences}
                        for o in outcomes]}
    result["kills_total"] = sum(t["kills"] for t in result["tasks"])
    result["all_equal"] = all(t["equal"] for t in result["tasks"])
    md = ["# Kill anywhere: each long task SIGKILLed at random moments, resumed, compared", "",
          f"`python experiments/chaos.py --kills {args.kills} --seed {args.seed}`; {machine_text(info)}; "
          f"{result['wall_time_s'] / 60:.1f} min in all.", "",
          "| task | uninterrupted (s) | kills landed | at (fraction of the run) | attempts | same result |",
          "|---|---|---|---|---|---|"]
    for t in result["tasks"]:
        md.append(f"| {t['task']} | {t['straight_s']:.1f} | {t['kills']} | "
                  f"{', '.join(f'{m:.2f}' for m in t['moments']) or '-'} | {t['attempts']} | "
                  f"{'yes' if t['equal'] else 'NO: ' + '; '.join(t['differences'])} |")
    md += ["", f"{result['kills_total']} kills over {len(outcomes)} tasks; "
           f"{'every' if result['all_equal'] else 'NOT every'} resumed run ended equal to its uninterrupted run."]
    write_result(args.out, result, md)
    return 0 if result["all_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
