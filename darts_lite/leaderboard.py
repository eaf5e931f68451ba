"""The leaderboard: every one-shot method darts_lite has, times seeds, on one space, in one command.

``task=leaderboard`` (``+experiment=leaderboard_quick`` on a CPU, ``+experiment=leaderboard`` on a GPU) runs one
search per method and seed, each composed as ``python -m darts_lite`` would compose it from this run's own
overrides plus the method's (``METHODS``) and ``leaderboard.methods``' extras, then gives each found cell its
accuracy: from the NATS-Bench look-up when ``benchmark.path`` is set (NAS-Bench-201 space), else by retraining it
(``task=train`` with the run's train group). Every job runs through the executor group (inline, local
subprocesses, SLURM) in its own folder, ``jobs/<method>/seed<k>/{search,train}``; a job that fails is a row with
its error, the others go on. The run folder gets:

    leaderboard.csv   one row per method and seed: method, seed, genotype, accuracy (%), accuracy_source
                      (benchmark | retrained), param_free_share, search_s, train_s, status, error
    leaderboard.md    mean +- std per method, best first, with the machine; the optimum of the benchmark where known
    leaderboard.png   each seed's accuracy and the mean, per method

A killed leaderboard continues with ``resume=true``: finished jobs are read back, not run again; an interrupted
search or retraining continues from its own last checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, RunFailed
from .registry import Registry
from .torchfiles import open_atomically, write_text_atomically

__all__ = ["CSV_COLUMNS", "METHODS", "NB201_OPTIMUM", "PAPERS_NB201", "check", "run_leaderboard"]

# the overrides that make each method a search (applied after the run's own; leaderboard.methods adds more)
METHODS: Registry = Registry("leaderboard method")
for _name, _overrides, _summary in (
    ("darts", ["search=darts"], "DARTS, first order"),
    ("darts_v2", ["search=darts_v2"], "DARTS, second order"),
    ("gdas", ["search=gdas"], "GDAS"),
    ("pc_darts", ["search=pc_darts"], "PC-DARTS: partial channels and edge normalization"),
    ("sdarts_rs", ["search=darts", "search.perturb=random"], "SDARTS, random smoothing"),
    ("sdarts_adv", ["search=darts", "search.perturb=adversarial"], "SDARTS, adversarial"),
    ("darts_pt", ["search=darts", "search.selection=perturbation"], "DARTS with perturbation-based selection"),
    ("drnas", ["search=drnas"], "DrNAS"),
    ("snas", ["search=snas"], "SNAS"),
    ("beta_darts", ["search=beta_darts"], "beta-DARTS"),
    ("fairdarts", ["search=fairdarts"], "FairDARTS"),
    ("darts_minus", ["search=darts_minus"], "DARTS-"),
    ("rsws", ["search=rsws"], "random search with weight sharing (the baseline)"),
):
    METHODS.register(_name, tuple(_overrides), summary=_summary)

# NAS-Bench-201 CIFAR-10 test accuracy (%) of the papers' searches (REFERENCE: NB201 Table 5, the DrNAS README, the
# methods' papers), shown beside a CIFAR-10 leaderboard on the NAS-Bench-201 space, labelled as the papers'
PAPERS_NB201 = {"darts": "54.30 +- 0.00", "darts_v2": "54.30 +- 0.00", "gdas": "93.61 +- 0.09", "pc_darts": "93.41 +- 0.30",
                "darts_pt": "88.11",
                "drnas": "94.36 +- 0.00", "snas": "92.77 +- 0.83", "beta_darts": "94.36 +- 0.00",
                "rsws": "84.07 +- 3.61"}
NB201_OPTIMUM = 94.37  # the best cell's CIFAR-10 test accuracy in the benchmark (%)

CSV_COLUMNS = ("method", "seed", "genotype", "accuracy", "accuracy_source", "param_free_share", "search_s", "train_s",
               "status", "error")
# a cell anyone can check a retraining recipe against before the searches start (the benchmark's ResNet-like cell)
_PROBE_GENOTYPES = {"nb201": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
                    "darts": "DARTS_V2"}


@dataclass
class Job:
    """One method and seed: its search config, and its retraining config without the genotype (None: the benchmark
    gives the accuracy). Picklable: the executor may run it in another process."""

    method: str
    seed: int
    folder: str
    search: Any  # DictConfig
    train: Any = None  # DictConfig, or None
    resume: bool = False
    row: dict[str, Any] = field(default_factory=dict)


# ---- configs -------------------------------------------------------------------------------------------------
def _run_overrides(cfg: DictConfig | None = None) -> list[str]:
    """This run's command-line overrides (+experiment=... included), without the keys each job sets itself: Hydra's
    record of the running app, else the ``hydra`` node of a config composed with it."""
    import re

    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        given = list(HydraConfig.get().overrides.task)
    elif cfg is not None and OmegaConf.select(cfg, "hydra.overrides.task") is not None:
        given = list(cfg.hydra.overrides.task)
    else:
        return []
    own = ("task", "seed", "resume", "ckpt_path", "run_dir", "genotype")
    return [o for o in given if re.sub(r"^[+~]+", "", o).split("=", 1)[0] not in own
            and not re.sub(r"^[+~]+", "", o).startswith(("leaderboard.", "hydra."))]


def _compose(overrides: list[str]) -> DictConfig:
    """The root config with ``overrides``, as the command line composes it (inside a run, or on its own)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    from .config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _methods(cfg: DictConfig) -> dict[str, list[str]]:
    """{method: its extra overrides}: the names of leaderboard.methods, each with leaderboard.overrides' list for it."""
    extra = cfg.leaderboard.get("overrides") or {}
    return {str(m): [str(o) for o in (extra.get(m) or [])] for m in cfg.leaderboard.methods}


def job_configs(cfg: DictConfig, base: list[str] | None = None) -> tuple[dict[tuple[str, int], DictConfig],
                                                                         DictConfig | None]:
    """The search config of every (method, seed), and one retraining config (None with the benchmark look-up), each
    composed from ``base`` (this run's overrides) as the command line would."""
    base = _run_overrides(cfg) if base is None else base
    searches = {}
    for method, extra in _methods(cfg).items():
        composed = _compose([*base, *METHODS[method], *extra, "task=search", "run_dir=."])
        for seed in cfg.leaderboard.seeds:  # the seed is a plain value: one composition per method serves them all
            job = composed.copy()
            OmegaConf.update(job, "seed", int(seed))
            searches[(method, int(seed))] = job
    train = None
    if cfg.benchmark.get("path") is None:
        space = str(cfg.space.name)
        train = _compose([*base, "task=train", f"genotype='{_PROBE_GENOTYPES.get(space, 'DARTS_V2')}'", "run_dir=."])
    return searches, train


def check(cfg: DictConfig, base: list[str] | None = None) -> None:
    """Every problem of the leaderboard's own keys and of every job's config, in one ConfigError. ``base``: the
    overrides the leaderboard's config was composed with (None: this run's command line)."""
    problems = []
    lb = cfg.get("leaderboard")
    if lb is None:
        raise ConfigError("leaderboard: no leaderboard node; use +experiment=leaderboard_quick or leaderboard")
    methods = lb.get("methods")
    if not OmegaConf.is_list(methods) or not methods or len(set(methods)) != len(methods):
        problems.append(f"leaderboard.methods={methods!r}: must be a non-empty list of distinct methods; methods: "
                        f"{METHODS.choices()}")
    else:
        problems += [f"leaderboard.methods: {m!r} is no method; methods: {METHODS.choices()}" for m in methods
                     if m not in METHODS]
    extra = lb.get("overrides")
    if extra is not None and not (OmegaConf.is_dict(extra) and all(
            v is None or (OmegaConf.is_list(v) and all(isinstance(o, str) for o in v)) for v in extra.values())):
        problems.append(f"leaderboard.overrides={extra!r}: must map a method to a list of overrides (strings)")
    elif extra is not None:
        problems += [f"leaderboard.overrides.{m}: {m!r} is no method; methods: {METHODS.choices()}" for m in extra
                     if m not in METHODS]
    seeds = lb.get("seeds")
    if not OmegaConf.is_list(seeds) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        problems.append(f"leaderboard.seeds={seeds!r}: must be a non-empty list of distinct integers")
    if problems:
        raise ConfigError("\n".join(problems))
    from .config import validate_search, validate_train

    searches, train = job_configs(cfg, base)
    per_method: dict[str, list[str]] = {}
    for (method, _), job in searches.items():
        if method in per_method:
            continue
        try:
            validate_search(job)
            per_method[method] = []
        except ConfigError as e:
            per_method[method] = _problem_lines(e)
    # a problem every method's search has (a data or space setting) is said once
    shared = set.intersection(*(set(p) for p in per_method.values())) if len(per_method) > 1 else set()
    problems += [f"every leaderboard method: {line}" for line in next(iter(per_method.values())) if line in shared]
    problems += [f"leaderboard method {method}: {line}" for method, lines in per_method.items() for line in lines
                 if line not in shared]
    if train is not None:
        try:
            validate_train(train)
        except ConfigError as e:
            problems += [f"leaderboard retraining: {line}" for line in _problem_lines(e)]
    if problems:
        raise ConfigError("\n".join(problems))


def _problem_lines(error: ConfigError) -> list[str]:
    """A ConfigError's problems, one per line, without its heading."""
    lines = [line.strip() for line in str(error).splitlines()]
    return [line for line in lines if line and line != "invalid config:"]


# ---- one job ---------------------------------------------------------------------------------------------------
def _done(folder: Path) -> dict[str, Any] | None:
    path = folder / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") == "done" else None


def _run_task(cfg: DictConfig, folder: Path, resume: bool) -> dict[str, Any]:
    """The task ``cfg`` names, in ``folder``: read back when it finished before, continued from its checkpoint when
    one is there and ``resume``, else started. What it prints goes to ``folder``/output.log."""
    import contextlib

    from .run.tasks import TASKS

    done = _done(folder)
    if done is not None:
        return done
    cfg = cfg.copy()
    with_ckpt = resume and (folder / "checkpoints" / "last.ckpt").is_file()
    OmegaConf.update(cfg, "run_dir", str(folder), force_add=True)
    OmegaConf.update(cfg, "resume", with_ckpt, force_add=True)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "output.log", "a") as log, contextlib.redirect_stdout(log):
        return TASKS[str(cfg.task)].runner()(cfg)


def _chosen_genotype_file(search_dir: Path, summary: dict[str, Any]) -> Path:
    """The genotype the method stands by: its selection's when it ran one after the search, else the argmax one."""
    selected = [k for k in summary if k.startswith("genotype_") and (search_dir / f"{k}.json").is_file()]
    return search_dir / f"{selected[0]}.json" if selected else search_dir / "genotype.json"


def run_job(job: Job) -> dict[str, Any]:
    """Search, then the accuracy of the cell found: a row of leaderboard.csv."""
    folder = Path(job.folder)
    search_dir = folder / "search"
    found = _run_task(job.search, search_dir, job.resume)
    genotype_file = _chosen_genotype_file(search_dir, found)
    from .train import resolve_genotype

    text = resolve_genotype(str(genotype_file)).to_text()
    cells = found.get("decision", {})
    shares = [v["param_free_share"] for k, v in cells.items() if isinstance(v, dict) and "param_free_share" in v]
    row = {"method": job.method, "seed": job.seed, "genotype": text, "param_free_share": shares[0] if shares else None,
           "search_s": round(float(found.get("wall_time_s", math.nan)), 1), "status": "done", "error": ""}
    if job.train is None:
        acc = (found.get("benchmark") or {}).get("benchmark/cifar10_test_acc")
        if acc is None:
            raise RunFailed(f"{job.method} seed {job.seed}: the search's cell {text} has no benchmark accuracy")
        return {**row, "accuracy": float(acc), "accuracy_source": "benchmark", "train_s": None}
    train = job.train.copy()
    OmegaConf.update(train, "genotype", str(genotype_file), force_add=True)
    trained = _run_task(train, folder / "train", job.resume)
    acc = trained.get("metrics", {}).get("val/acc")
    if acc is None:
        raise RunFailed(f"{job.method} seed {job.seed}: the retraining reported no test accuracy")
    return {**row, "accuracy": 100.0 * float(acc), "accuracy_source": "retrained",
            "train_s": round(float(trained.get("wall_time_s", math.nan)), 1)}


# ---- the whole leaderboard --------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(rows: list[dict[str, Any]], papers: bool = False, optimum: float | None = None) -> str:
    """leaderboard.md's table: per method mean +- std of the accuracy over its finished seeds, best first."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    lines = []
    header = "| rank | method | accuracy (%) | seeds | parameter-free share | search (s) |"
    rule = "| --- | --- | --- | --- | --- | --- |"
    if papers:
        header += " the paper's NB201 CIFAR-10 (%) |"
        rule += " --- |"
    stats = []
    for method, rs in by_method.items():
        done = [r for r in rs if r["status"] == "done"]
        mean, std = _mean_std([float(r["accuracy"]) for r in done])
        share, _ = _mean_std([float(r["param_free_share"]) for r in done if r.get("param_free_share") is not None])
        search, _ = _mean_std([float(r["search_s"]) for r in done if r.get("search_s") is not None])
        stats.append((method, mean, std, len(done), len(rs), share, search))
    stats.sort(key=lambda s: -s[1] if not math.isnan(s[1]) else math.inf)
    for rank, (method, mean, std, n, total, share, search) in enumerate(stats, 1):
        acc = f"{mean:.2f} +- {std:.2f}" if n else "failed"
        line = (f"| {rank} | {method} | {acc} | {n}" + (f" of {total}" if n < total else "") +
                f" | {share:.2f} | {search:.0f} |" if n else f"| {rank} | {method} | {acc} | 0 of {total} | - | - |")
        if papers:
            line += f" {PAPERS_NB201.get(method, '-')} |"
        lines.append(line)
    out = "\n".join([header, rule, *lines])
    if optimum is not None:
        out += f"\n\nThe benchmark's best cell: {optimum:.2f}%."
    return out


def write_files(out_dir: Path, rows: list[dict[str, Any]], cfg: DictConfig) -> dict[str, Path]:
    """leaderboard.csv, leaderboard.md and leaderboard.png in ``out_dir``."""
    from .measure import this_machine

    machine = this_machine()
    files = {name: out_dir / name for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.png")}
    with open_atomically(files["leaderboard.csv"]) as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in CSV_COLUMNS} for r in rows)
    nb201 = str(cfg.space.name) == "nb201"
    benchmark = cfg.benchmark.get("path") is not None
    papers = nb201 and str(cfg.data.name) == "cifar10"
    source = ("the NATS-Bench look-up (CIFAR-10 test accuracy, mean over the benchmark's seeds)" if benchmark else
              "retraining each found cell with the run's train group on its data, test split")
    text = [f"# Leaderboard: {len({r['method'] for r in rows})} methods x {len(cfg.leaderboard.seeds)} seeds",
            "", f"Space {cfg.space.name}, data {cfg.data.name}; accuracy from {source}.",
            f"Machine: {machine['node']} ({machine['processor']}, torch {machine['torch']}, {machine['threads']} threads).",
            "",
            table(rows, papers=papers, optimum=NB201_OPTIMUM if benchmark and nb201 else None)]
    if papers:
        text += ["", "The last column is the papers' figure (NB201 Table 5, the DrNAS README, the methods' papers), not "
                     "a darts_lite measurement."]
    failed = [r for r in rows if r["status"] != "done"]
    if failed:
        text += ["", "## Failed jobs", ""] + [f"- {r['method']} seed {r['seed']}: {r['error']}" for r in failed]
    write_text_atomically(files["leaderboard.md"], "\n".join(text) + "\n")
    _plot(rows, files["leaderboard.png"])
    return files


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    from .plots import leaderboard_figure, save_figure

    done = [r for r in rows if r["status"] == "done"]
    by_method: dict[str, list[float]] = {}
    for r in done:
        by_method.setdefault(r["method"], []).append(float(r["accuracy"]))
    save_figure(leaderboard_figure(by_method), path)


def run_leaderboard(cfg: DictConfig) -> dict[str, Any]:
    """Validate, run every (method, seed) job through the executor, write the three files; RunFailed (exit 1) when a
    job failed, after the files are written."""
    from .econas.build import build_executor, prepare_data
    from .run.folder import start_run

    check(cfg)
    out_dir = Path(cfg.run_dir)
    if (out_dir / "jobs").is_dir() and not cfg.get("resume"):
        raise ConfigError(f"{out_dir} holds a leaderboard already: continue it with resume=true (finished jobs are kept), "
                          "or choose another hydra.run.dir")
    prepare_data(cfg)  # a missing dataset stops the run here, once, not in every job
    searches, train = job_configs(cfg)
    out_dir = start_run(cfg)
    jobs = [Job(method, seed, str(out_dir / "jobs" / method / f"seed{seed}"), search, train, bool(cfg.get("resume")))
            for (method, seed), search in searches.items()]
    rows: list[dict[str, Any] | None] = [None] * len(jobs)
    executor = build_executor(cfg, out_dir / "submitit")
    print(f"Leaderboard: {len(jobs)} jobs ({len(_methods(cfg))} methods x {len(cfg.leaderboard.seeds)} seeds) in "
          f"{out_dir / 'jobs'}", flush=True)
    finished = 0
    for i, row, error in executor.map(run_job, jobs):
        job = jobs[i]
        finished += 1
        if error is not None:
            row = {"method": job.method, "seed": job.seed, "status": "failed", "error": error.strip().splitlines()[-1]}
            print(f"leaderboard [{finished}/{len(jobs)}] {job.method} seed {job.seed}: FAILED: {row['error']}", flush=True)
        else:
            took = f"search {row['search_s']:.0f} s" + (f", retraining {row['train_s']:.0f} s" if row.get("train_s") else "")
            print(f"leaderboard [{finished}/{len(jobs)}] {job.method} seed {job.seed}: {row['accuracy']:.2f}% "
                  f"({row['accuracy_source']}; {took}), {row['genotype']}", flush=True)
        rows[i] = row
        # written after every job: a killed leaderboard leaves a table of what finished
        files = write_files(out_dir, [r for r in rows if r is not None], cfg)
    done_rows = [r for r in rows if r is not None]
    summary = {"task": "leaderboard", "status": "done", "jobs": len(jobs),
               "failed": sum(r["status"] != "done" for r in done_rows), "run_dir": str(out_dir),
               "files": {k: str(v) for k, v in files.items()}}
    write_text_atomically(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    print((out_dir / "leaderboard.md").read_text())
    print(f"Run folder: {out_dir.resolve()}  (leaderboard.csv, leaderboard.md, leaderboard.png, jobs/)")
    if summary["failed"]:
        raise RunFailed(f"{summary['failed']} of {len(jobs)} leaderboard jobs failed (leaderboard.md lists them); "
                        f"the others are in the table. Retry the failed ones with resume=true hydra.run.dir={out_dir}")
    return summary
