"""``task=surrogate_search`` (``+experiment=surrogate_search``): benchmark search algorithms on a fitted surrogate.

Random search, regularized evolution, local search and the EcoNAS hierarchical evolution each get the same budget
of surrogate queries per seed; every query is one genotype's predicted accuracy (the hierarchical evolution's
stage-trainings are one query each, so a promotion re-queries its genotype). The algorithms are the engines of
``darts_lite.evolve`` (local search is a `Search` of that engine too), driven through one evaluator that answers
with the surrogate and stops answering when the budget is spent. The run folder gets:

    surrogate_search.csv     algorithm, queries, best_mean, best_min, best_max, then best per seed (fractions):
                             the best predicted accuracy among the first `queries` queries
    surrogate_search.png     the same, mean over seeds with the min-max band, in percent
    surrogate_zoo.csv        the published genotypes scored by the surrogate (predictions, not measured accuracies), in
                             the columns of task=surrogate_predict's predictions.csv
    surrogate_search.md      the final best per algorithm, the zoo table and the surrogate's version
    summary.json             the same numbers and the wall time
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import numbers
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..evolve import (
    EvaluateFn,
    HierarchicalEvolution,
    Moves,
    RandomSearch,
    RegularizedEvolution,
    Search,
    StageRequest,
    _FinalStageSearch,
)
from ..registry import Registry
from ..schema import Allowed, Ge, Hint, MinLen, OneOf, node_problems
from ..spaces.darts.genotype import Genotype
from ..torchfiles import open_atomically, write_text_atomically
from .predict import ZOO, prediction_rows, score, score_zoo, write_predictions, zoo_items

# the evaluated genotypes darts_lite ships (experiments/make_surrogate_data.py; how they were made: the .json beside)
SHIPPED_DATA = Path(__file__).resolve().parent / "data" / "digits_c0r0s0e2.csv"
NO_SURROGATE = (f"task=surrogate_search without surrogate.model or surrogate.data fits on the shipped data set {SHIPPED_DATA}, "
                "which is missing from this installation: reinstall darts_lite, or pass surrogate.model=PATH (a file saved "
                "by +experiment=surrogate, e.g. <run>/models/gin.json) or surrogate.data=PATH (a table of evaluated genotypes)")


class LocalSearch(_FinalStageSearch):
    """Best-improvement hill climbing over ``mutate()`` neighbours, with random restarts.

    Cycle 0 (and every restart) evaluates one random candidate; each later cycle evaluates `neighbours` distinct
    unseen neighbours of the current candidate and moves to the best of them if it beats the current one. After
    `patience` cycles in a row without a move the climb is stuck and restarts. The budget counts evaluations
    (stages=1: one query each); ``population`` holds the current candidate.

    Options: stages=1, neighbours=8, patience=2, budget=300.
    """

    name = "local"
    defaults: ClassVar[dict[str, Any]] = dict(stages=1, neighbours=8, patience=2, budget=300)

    def __init__(self, moves: Moves, evaluate: EvaluateFn, seed: int, **options: Any) -> None:
        super().__init__(moves, evaluate, seed, **options)
        self._stuck = 0

    @classmethod
    def _check(cls, options: dict[str, Any]) -> dict[str, Any]:
        checked = {}
        for name, minimum in (("stages", 1), ("neighbours", 1), ("patience", 1)):
            value = options[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
                raise ValueError(f"{cls.name} option {name}={value!r}: must be an integer >= {minimum}")
            checked[name] = int(value)
        budget = options["budget"]
        if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < checked["stages"]:
            raise ValueError(f"{cls.name} option budget={budget!r}: must be an integer >= {checked['stages']}")
        return {**checked, "budget": int(budget)}

    def _step(self) -> None:
        current = self._members[-1] if self._members else None
        if current is None or self._stuck >= self.options["patience"]:
            self._members, self._stuck = [], 0
            candidates = [self._child(None)][: self._affordable(1)]
            for candidate, fitness in zip(candidates, self._evaluate_new(candidates)):
                if fitness is not None:
                    self._add(candidate, self.final_stage, fitness)
            return
        candidates = [self._child(current) for _ in range(self._affordable(self.options["neighbours"]))]
        scored = [(fitness, i) for i, fitness in enumerate(self._evaluate_new(candidates)) if fitness is not None]
        best = max(scored, default=None)  # ties go to the later neighbour: deterministic for a seed
        if best is not None and best[0] > current.fitness:
            self._members, self._stuck = [], 0
            self._add(candidates[best[1]], self.final_stage, best[0])
        else:
            self._stuck += 1


class Queries:
    """The engines' evaluator: each request is one ``predict`` query while the budget lasts, None after it.

    ``values`` holds every answered query's predicted accuracy in order (at most `budget`)."""

    def __init__(self, predict: Callable[[list[Genotype]], Sequence[float]], budget: int) -> None:
        self.predict, self.budget = predict, budget
        self.values: list[float] = []
        self.best: Genotype | None = None  # the first genotype with the highest prediction so far
        self._top = -math.inf

    @property
    def left(self) -> int:
        return self.budget - len(self.values)

    def __call__(self, requests: list[StageRequest]) -> list[float | None]:
        asked = requests[: max(self.left, 0)]
        answers = [float(v) for v in self.predict([r.candidate for r in asked])] if asked else []
        if len(answers) != len(asked):
            raise ValueError(f"the surrogate gave {len(answers)} predictions for {len(asked)} genotypes")
        for request, value in zip(asked, answers):
            if self.best is None or value > self._top:
                self.best, self._top = request.candidate, value
            self.values.append(value)
        return [*answers, *([None] * (len(requests) - len(asked)))]


# the algorithms benchmarked against a surrogate: the evolution engine's three and local search
ALGORITHMS: Registry[type[Search]] = Registry("surrogate-search algorithm")
for _search in (RandomSearch, RegularizedEvolution, LocalSearch, HierarchicalEvolution):
    ALGORITHMS.register(_search.name, _search)


def _engine(algorithm: str, moves: Moves, queries: Queries, seed: int, budget: int, options: dict[str, Any]) -> Search:
    if algorithm == "hierarchical":
        # cycles never end the run first: every cycle asks at least one query
        return HierarchicalEvolution(moves, queries, seed, **{**options, "cycles": budget})
    return ALGORITHMS[algorithm](moves, queries, seed, **{**options, "stages": 1, "budget": budget})


def check_options(algorithm: str, budget: int, options: dict[str, Any]) -> None:
    """ValueError naming the bad option of `algorithm` (the budget and the stages the benchmark sets are left out)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; algorithms: {ALGORITHMS.choices()}")
    if algorithm == "hierarchical":
        HierarchicalEvolution.check_options(**{**options, "cycles": budget})
    else:
        ALGORITHMS[algorithm].check_options(**{**options, "stages": 1, "budget": budget})


def search_curve(algorithm: str, predict: Callable[[list[Genotype]], Sequence[float]], budget: int, seed: int,
                 options: dict[str, Any] | None = None, moves: Moves | None = None) -> tuple[np.ndarray, Genotype | None]:
    """One run: (best predicted accuracy after each query, shape (budget,); the genotype with the best prediction).

    `predict` maps genotypes to predicted accuracies (a surrogate's ``predict``); `moves` default: the darts space."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 1:
        raise ValueError(f"budget={budget!r}: must be an integer >= 1 (surrogate queries per run)")
    options = dict(options or {})
    check_options(algorithm, budget, options)
    if moves is None:
        from ..econas.evolution import space_moves

        moves = space_moves("darts")
    queries = Queries(predict, budget)
    search = _engine(algorithm, moves, queries, seed, budget, options)
    while queries.left > 0 and not search.done:
        before = len(queries.values)
        search.step()
        if len(queries.values) == before:
            break  # nothing was asked: the engine has nothing left to do
    values = np.asarray(queries.values, dtype=float)
    return np.maximum.accumulate(values) if len(values) else values, queries.best


def benchmark(predict: Callable[[list[Genotype]], Sequence[float]], algorithms: Sequence[str], budget: int,
              seeds: Sequence[int], options: dict[str, dict[str, Any]] | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """{algorithm: best predicted accuracy so far, shape (len(seeds), budget)} for each algorithm and seed."""
    options = options or {}
    curves: dict[str, np.ndarray] = {}
    for algorithm in algorithms:
        rows = []
        for seed in seeds:
            started = time.time()
            curve, _ = search_curve(algorithm, predict, budget, int(seed), options.get(algorithm))
            rows.append(curve)
            if progress is not None:
                progress(f"{algorithm} seed {seed}: {len(curve)} queries, best {100 * curve[-1]:.2f}% predicted "
                         f"({time.time() - started:.1f} s)")
        curves[algorithm] = np.stack(rows)
    return curves


def write_curves(curves: dict[str, np.ndarray], seeds: Sequence[int], out_dir: Path) -> tuple[Path, Path]:
    """surrogate_search.csv and surrogate_search.png from `benchmark`'s curves."""
    from ..plots import curves as plot_curves
    from ..plots import save_figure

    csv_path = out_dir / "surrogate_search.csv"
    with open_atomically(csv_path) as f:
        writer = csv.writer(f)
        writer.writerow(["algorithm", "queries", "best_mean", "best_min", "best_max", *[f"best_seed{s}" for s in seeds]])
        for algorithm, runs in curves.items():
            for q in range(runs.shape[1]):
                column = runs[:, q]
                writer.writerow([algorithm, q + 1, f"{column.mean():.6f}", f"{column.min():.6f}", f"{column.max():.6f}",
                                 *[f"{v:.6f}" for v in column]])
    series = {}
    for algorithm, runs in curves.items():
        x = np.arange(1, runs.shape[1] + 1)
        series[algorithm] = (x, 100 * runs.mean(0), 100 * runs.min(0), 100 * runs.max(0))
    fig = plot_curves(series, "surrogate queries", "best predicted accuracy (%)",
                      f"Search on a surrogate: mean and min-max over {len(seeds)} seeds")
    png_path = save_figure(fig, out_dir / "surrogate_search.png")[0]
    return csv_path, png_path


# ---- the task ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SearchBenchmarkSettings:
    """The surrogate_search group (conf/experiment/surrogate_search.yaml holds the defaults); each algorithm's options
    are a node of their own, checked by the engine's check_options."""

    budget: Annotated[int, Ge(1), Hint("surrogate queries per run")]
    seeds: Annotated[list[int], MinLen(1), Allowed("a non-empty list of distinct integers")]
    algorithms: Annotated[list[Annotated[str, OneOf(ALGORITHMS)]], MinLen(1),
                          Allowed(f"a non-empty list of distinct algorithms from {ALGORITHMS.choices()}")]

    @classmethod
    def config_problems(cls, rules: Any) -> list[str]:
        v = rules.values
        return [f"{rules.key(key)}={v[key]!r}: must not repeat an entry" for key in ("seeds", "algorithms")
                if len(set(v[key])) != len(v[key])]


def check(cfg: DictConfig) -> dict[str, Any]:
    """The surrogate_search keys as a plain dict (plus "source": model | data), every one checked (all problems in one
    ConfigError); reads no file."""
    if cfg.get("surrogate_search") is None or cfg.get("surrogate") is None:
        raise ConfigError("task=surrogate_search needs the surrogate and surrogate_search keys: use +experiment=surrogate_search")
    opts = OmegaConf.to_container(cfg.surrogate_search, resolve=True)
    model, data = cfg.surrogate.get("model"), cfg.surrogate.get("data")
    if model and data:
        raise ConfigError(f"surrogate.model={model} and surrogate.data={data}: give one of them, a saved surrogate or a "
                          "table to fit one on")
    shipped = not model and not data
    if shipped:  # a small real table: genotypes trained on the digits (the .json beside it says how)
        if not SHIPPED_DATA.is_file():
            raise ConfigError(NO_SURROGATE)
        data = str(SHIPPED_DATA)
        cfg = OmegaConf.merge(cfg, {"surrogate": {"data": data, "accuracy_unit": "fraction", "setting": None}})
    problems = node_problems(opts, "surrogate_search.", target=SearchBenchmarkSettings, nested=tuple(ALGORITHMS))
    budget = opts.get("budget") if not any(p.startswith("surrogate_search.budget") for p in problems) else None
    algorithms = opts.get("algorithms") if isinstance(opts.get("algorithms"), list) else []
    for algorithm in ALGORITHMS:
        options = opts.get(algorithm) or {}
        if not isinstance(options, dict):
            problems.append(f"surrogate_search.{algorithm}={options!r}: must be a mapping of its options")
        elif budget is not None and algorithm in algorithms:
            try:
                check_options(algorithm, budget, options)
            except ValueError as e:
                problems.append(f"surrogate_search.{algorithm}: {e}")
    if data:
        from .models import MODELS
        from .task import check as check_fit

        fit = cfg.surrogate.get("fit")
        if fit not in MODELS:
            problems.append(f"surrogate.fit={fit!r}: must be one of {', '.join(MODELS)} (the model fitted on surrogate.data)")
            fit = "forest"  # the table's keys are still checked
        try:
            check_fit(OmegaConf.merge(cfg, {"surrogate": {"models": [fit]}}))
        except ConfigError as e:
            problems += [line.replace("surrogate.models:", "surrogate.fit:") for line in
                         str(e).removeprefix("invalid config:\n  ").split("\n  ")]
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return {**opts, "source": "model" if model else "shipped" if shipped else "data"}


def _surrogate(cfg: DictConfig, source: str, out_dir: Path) -> tuple[Any, str]:
    """The surrogate (loaded, or fitted on surrogate.data and saved into the run folder) and where it came from."""
    from .data import load_table
    from .models import load_surrogate, make_surrogate

    s = OmegaConf.to_container(cfg.surrogate, resolve=True)
    if source == "model":
        model = load_surrogate(s["model"])
        return model, f"loaded from {s['model']}"
    if source == "shipped":
        s.update(data=str(SHIPPED_DATA), accuracy_unit="fraction", setting=None)
        print(f"No surrogate.model or surrogate.data: fitting on the shipped data set {SHIPPED_DATA.name} (300 genotypes "
              "trained twice on the digits; see its .json)", flush=True)
    table = load_table(s["data"], s.get("accuracy_unit"), s.get("setting"), s["metric"])
    for line in table.report():
        print(line, flush=True)
    kind = s["fit"]
    started = time.time()
    model = make_surrogate(kind, int(cfg.seed), **(s.get(kind) or {})).fit(table)
    file = model.save(out_dir / "models" / f"{kind}.json")
    print(f"fitted {model.describe()} in {time.time() - started:.1f} s: {file}", flush=True)
    return model, f"fitted on {s['data']} ({len(table)} genotypes), saved as {file.relative_to(out_dir)}"


def run_surrogate_search(cfg: DictConfig) -> dict[str, Any]:
    """Fit or load the surrogate, run every algorithm for every seed, write the curves and the zoo scores. With
    ``logger=wandb`` the W&B run gets the plot (``surrogate_search/curve``), the curves, the final best per algorithm
    and the zoo's predictions as tables, and each algorithm's final mean."""
    from ..run.folder import start_run
    from ..run.loggers import wandb_experiment, wandb_run_ends_with_the_job

    opts = check(cfg)
    started = time.time()
    out_dir = start_run(cfg)
    with wandb_run_ends_with_the_job():
        run = wandb_experiment(cfg, out_dir, resuming=False)
        summary = _search_and_report(cfg, opts, out_dir, started)
        if run is not None:
            from .task import log_to_wandb

            with open(out_dir / "surrogate_search.csv", newline="") as f:
                reader = csv.DictReader(f)
                curve_rows = [{k: (v if k == "algorithm" else float(v)) for k, v in r.items()} for r in reader]
            final = [{"algorithm": a, **f} for a, f in summary["final_best_predicted"].items()]
            zoo = [{"name": name, "predicted_accuracy": v} for name, v in summary["zoo_predicted"].items()]
            log_to_wandb(run, {"surrogate_search/curves": (list(curve_rows[0]), curve_rows),
                               "surrogate_search/final": (["algorithm", "mean", "min", "max"], final),
                               "surrogate_search/zoo": (["name", "predicted_accuracy"], zoo)},
                         {"surrogate_search/curve": out_dir / "surrogate_search.png"},
                         {f"surrogate_search/{a}/best_mean": f["mean"] for a, f in summary["final_best_predicted"].items()})
    return summary


def _search_and_report(cfg: DictConfig, opts: dict[str, Any], out_dir: Path, started: float) -> dict[str, Any]:
    model, origin = _surrogate(cfg, opts["source"], out_dir)
    predict = model.predict
    seeds = [int(s) for s in opts["seeds"]]
    curves = benchmark(predict, opts["algorithms"], opts["budget"], seeds,
                       {a: opts.get(a) or {} for a in opts["algorithms"]}, progress=lambda w: print(w, flush=True))
    write_curves(curves, seeds, out_dir)
    items = zoo_items()  # scored as task=surrogate_predict scores them, into the same columns
    zoo_rows = prediction_rows(items, score(predict, items), model)
    write_predictions(zoo_rows, out_dir / "surrogate_zoo.csv")
    zoo = [(r["name"], r["predicted_accuracy"]) for r in zoo_rows]
    final = {a: {"mean": float(runs[:, -1].mean()), "min": float(runs[:, -1].min()), "max": float(runs[:, -1].max())}
             for a, runs in curves.items()}
    lines = ["# Search algorithms on a surrogate", "",
             f"Surrogate: {model.describe()}, {origin}. Every number below is the surrogate's PREDICTION of an accuracy, "
             "not a measured one; a search that wins here wins on the surrogate, which may be wrong where it saw few "
             "genotypes.", "",
             f"## Best predicted accuracy after {opts['budget']} queries ({len(seeds)} seeds: {seeds})", "",
             "| algorithm | mean | min | max |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {100 * f['mean']:.2f}% | {100 * f['min']:.2f}% | {100 * f['max']:.2f}% |" for a, f in final.items()]
    lines += ["", "The curves per query: `surrogate_search.csv`, `surrogate_search.png`.", "",
              "## Published genotypes, predicted by the surrogate", "", "| name | predicted accuracy |", "| --- | --- |"]
    lines += [f"| {name} | {100 * v:.2f}% (predicted) |" for name, v in zoo]
    write_text_atomically(out_dir / "surrogate_search.md", "\n".join(lines) + "\n")
    summary = {"task": "surrogate_search", "status": "done", "surrogate": model.version, "origin": origin,
               "budget": opts["budget"], "seeds": seeds, "final_best_predicted": final,
               "zoo_predicted": dict(zoo), "run_dir": str(out_dir), "wall_time_s": time.time() - started}
    write_text_atomically(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    print("\n".join(f"{a}: best predicted {100 * f['mean']:.2f}% (min {100 * f['min']:.2f}%, max {100 * f['max']:.2f}%)"
                    for a, f in final.items()))
    print("zoo (predicted): " + ", ".join(f"{name} {100 * v:.2f}%" for name, v in zoo if not math.isnan(v)))
    print(f"Run folder: {out_dir.resolve()}  (surrogate_search.md, surrogate_search.csv, surrogate_search.png, "
          "surrogate_zoo.csv)", flush=True)
    return summary


__all__ = ["ALGORITHMS", "NO_SURROGATE", "ZOO", "LocalSearch", "Queries", "benchmark", "check", "check_options",
           "run_surrogate_search", "score_zoo", "search_curve", "write_curves"]
