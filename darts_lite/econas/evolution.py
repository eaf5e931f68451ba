"""EcoNAS's search (``task=econas``): evolution over the space's genotypes, each evaluated under a proxy setting
through the archive, with the hierarchical proxy strategy (``search_algo=hierarchical``: models trained in
stages, only the promising ones continued) or a baseline under the same budget (``regularized``, ``random``).

The engine is ``darts_lite.evolve``; here it meets the space (sample, mutate), the evaluations (a request for
stage s trains the model's setting schedule up to s x stage epochs, continuing stage s-1's weights) and the
archive, which keeps the engine's state after every cycle: a search killed at any point and run again with
``resume=true`` continues from its last cycle and retrains nothing the archive holds. The run folder gets:

    top.csv            rank, genotype (DARTS text), accuracy (validation, the fitness), epochs, then test accuracy, ...
    top/rank1.json...  the best genotypes, for ``+experiment=train genotype=<run folder>/top/rank1.json``
    evolution.png      best and median accuracy of the fully trained models per cycle
    evolution.csv      the same per cycle, with evaluations and epochs spent
    summary.json       the top genotypes, epochs and wall time spent
    prefilter.csv      with ``evolution.prefilter.model``: every new genotype the surrogate chose, its predicted
                       accuracy, the mean prediction of the candidates it beat, and the accuracy its training measured;
                       with ``evolution.prefilter.proxy``, the zero-cost score in place of the prediction

With ``evolution.prefilter.model=PATH`` (a surrogate saved by ``task=surrogate``) the search draws
``evolution.prefilter.factor`` candidates wherever it would draw one (a random genotype, a mutation of a parent) and
trains only the one the surrogate predicts best (`Prefilter`): the engine is unchanged and the choice uses the
engine's own random generator, so a seeded run repeats and a resumed one continues exactly. With
``evolution.prefilter.proxy=NAME`` a zero-cost proxy (``darts_lite.zero_cost``, or ``vote``) scores the candidates'
untrained networks instead, each initialised and fed one batch as its training would be (``ZeroCostScorer``): no
surrogate to fit first, the same choices on every run.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..evolve import ALGORITHMS, Moves, Search, StageRequest, stage_trainings
from ..schema import Allowed, Ge, Hint, MinLen, OneOf, node_problems, raise_problems, value_problem
from ..spaces import get_space, parse_genotype
from ..torchfiles import open_atomically, write_text_atomically
from ..zero_cost import PROXIES
from . import build
from .archive import Archive, ArchiveError, genotype_hash
from .evaluator import Failures, Request, report_failures, stopped_on_failures
from .settings import Setting, resolve_all
from .zero_cost_study import VOTE, ZeroCostScorer


def _options(algorithm: str, evolution: dict[str, Any]) -> dict[str, Any]:
    """The evolution keys ``algorithm`` reads: its engine options (the rest of the group belongs to the others)."""
    return {k: evolution[k] for k in ALGORITHMS[algorithm].defaults if k in evolution}


def check(cfg: DictConfig) -> tuple[Setting, str, dict[str, Any], int]:
    """(setting, algorithm, its options, epochs per stage), every key checked before anything is trained."""
    build.check_common(cfg)
    algorithm = cfg.get("search_algo")
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"search_algo={algorithm!r}: must be one of {', '.join(ALGORITHMS)}")
    if cfg.get("evolution") is None or cfg.get("setting") is None:
        raise ConfigError("task=econas needs the evolution and setting groups: use +experiment=econas or econas_quick")
    build.check_space(cfg, "evolution breeds")
    ev = OmegaConf.to_container(cfg.evolution, resolve=True)
    options = _options(algorithm, ev)
    if algorithm != "hierarchical" and options.get("budget") is None:
        try:
            options["budget"] = stage_trainings("hierarchical", **_options("hierarchical", ev))
        except ValueError as e:
            raise ConfigError(f"evolution: {e}") from None
    try:
        ALGORITHMS[algorithm].check_options(**options)
    except ValueError as e:
        raise ConfigError(f"evolution: {e}") from None
    check_prefilter(ev)
    why = value_problem(Annotated[int, Ge(1), Hint("the genotypes written for retraining")], ev.get("top"))
    if why:
        raise ConfigError(f"evolution.top={ev.get('top')!r}: {why}")
    setting = resolve_all([OmegaConf.to_container(cfg.setting, resolve=True)], build.base(cfg))[0]
    stages = options["stages"]
    if setting.epochs % stages:
        raise ConfigError(f"setting {setting.name}: its {setting.epochs} epochs do not split into evolution.stages={stages} "
                          "equal stages; choose a setting whose epochs are a multiple of the stages")
    return setting, algorithm, options, setting.epochs // stages


@dataclasses.dataclass(frozen=True)
class PrefilterSettings:
    """evolution.prefilter: a surrogate that chooses, of ``factor`` candidates, the one worth training."""

    model: Annotated[str, MinLen(1), Allowed("a surrogate file saved by +experiment=surrogate, e.g. "
                                             "runs/surrogate/2026-11-30_14-00-00/models/gin.json")] | None = None
    factor: Annotated[int, Ge(1), Hint("candidates drawn per genotype trained; 1 = off")] = 4
    proxy: Annotated[str, OneOf(PROXIES, (VOTE,)), Hint("a zero-cost proxy instead of a surrogate")] | None = None


def check_prefilter(ev: dict[str, Any]) -> tuple[str | None, int]:
    """(the surrogate file, factor) of ``evolution.prefilter``; (None, 1) when it is off. Reads no file."""
    prefilter = ev.get("prefilter") or {}
    if not isinstance(prefilter, dict):
        raise ConfigError(f"evolution.prefilter={prefilter!r}: must be a mapping with model and factor")
    raise_problems(node_problems(prefilter, "evolution.prefilter.", target=PrefilterSettings))
    model, factor = prefilter.get("model"), prefilter.get("factor", 4)
    if model and prefilter.get("proxy"):
        raise ConfigError(f"evolution.prefilter: model={model} and proxy={prefilter['proxy']}: one scorer chooses; "
                          "set the other to null")
    return (model, factor) if model and factor > 1 else (None, 1)


def zero_cost_prefilter(ev: dict[str, Any]) -> tuple[str | None, int]:
    """(the zero-cost proxy, factor) of ``evolution.prefilter``; (None, 1) when it has none or is off."""
    check_prefilter(ev)
    prefilter = ev.get("prefilter") or {}
    proxy, factor = prefilter.get("proxy"), prefilter.get("factor", 4)
    return (proxy, factor) if proxy and factor > 1 else (None, 1)


class Prefilter:
    """The space's moves with a surrogate in front: ``sample`` and ``mutate`` draw `factor` candidates each (with the
    engine's generator) and return the one of highest predicted accuracy, the first of them on a tie.

    ``moves`` is what the engine takes. ``record(requests, results, cycle)``, called with every evaluation batch,
    turns the choices that were trained into ``rows`` (a choice the engine drops as already seen is not trained)."""

    def __init__(self, moves: Moves, predict: Callable[[list[Any]], Sequence[float]], factor: int,
                 value: str = "predicted_accuracy") -> None:
        why = value_problem(Annotated[int, Ge(1)], factor)
        if why:
            raise ValueError(f"factor={factor!r}: {why}")
        self.base, self.predict, self.factor, self.value = moves, predict, factor, value
        self.columns = tuple(value if c == "predicted_accuracy" else c for c in PREFILTER_COLUMNS)
        self.moves = dataclasses.replace(moves, sample=self.sample, mutate=self.mutate)
        # id -> (the chosen object, its record) since the last evaluation: the engine asks to train the very object it
        # got, so identity tells a new genotype from a promotion of an equal one, and drops choices it discarded
        self._pending: dict[int, tuple[Any, dict[str, Any]]] = {}
        self.rows: list[dict[str, Any]] = []

    def sample(self, rng: random.Random) -> Any:
        return self._best([self.base.sample(rng) for _ in range(self.factor)], "sample")

    def mutate(self, parent: Any, rng: random.Random) -> Any:
        return self._best([self.base.mutate(parent, rng) for _ in range(self.factor)], "mutate")

    def _best(self, candidates: list[Any], move: str) -> Any:
        values = np.asarray(self.predict(candidates), dtype=np.float64).reshape(-1)
        if values.shape != (len(candidates),):
            raise ValueError(f"the surrogate gave {values.size} predictions for {len(candidates)} genotypes")
        best = int(np.argmax(values))  # the first of equal maxima: the choice depends on the draws only
        chosen = candidates[best]
        self._pending[id(chosen)] = (chosen, {"move": move, self.value: float(values[best]),
                                              "candidates_mean": float(values.mean()), "candidates": len(candidates)})
        return chosen

    def record(self, requests: Sequence[StageRequest], results: Sequence[float | None], cycle: int) -> None:
        """Rows for the requests that train a genotype this pre-filter chose (each once); forgets every other choice."""
        for request, result in zip(requests, results):
            chosen, choice = self._pending.pop(id(request.candidate), (None, None))
            if chosen is request.candidate:
                self.rows.append({"cycle": cycle, "genotype_hash": self.base.key(chosen), "genotype": chosen.to_text(),
                                  **choice, "stages": request.stages, "val_acc": result})
        self._pending.clear()


PREFILTER_COLUMNS = ("cycle", "genotype_hash", "genotype", "move", "predicted_accuracy", "candidates_mean", "candidates",
                     "stages", "val_acc")


def write_prefilter(out_dir: Path, prefilter: Prefilter) -> None:
    """Append the pre-filter's new rows to prefilter.csv (a resumed run continues the file)."""
    path = out_dir / "prefilter.csv"
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(prefilter.columns))
        if new:
            writer.writeheader()
        writer.writerows(prefilter.rows)
    prefilter.rows = []


def space_moves(space_name: str) -> Moves:
    """The engine's moves over a space's genotypes: its sample and mutate, keyed by the archive's hash."""
    space = get_space(space_name)
    return Moves(sample=space.sample, mutate=space.mutate, key=genotype_hash, to_state=lambda g: g.to_text(),
                 from_state=lambda text: parse_genotype(text)[1])


class _Fitness:
    """The engine's evaluator: a request for stage s trains s x stage_epochs epochs of the setting's schedule,
    continuing the stage s-1 evaluation (the hierarchical strategy) or from scratch (the baselines)."""

    def __init__(self, evaluator, setting: Setting, stage_epochs: int, continues: bool):
        self.evaluator, self.setting, self.stage_epochs, self.continues = evaluator, setting, stage_epochs, continues
        self.label = ""
        self.cycle = 0
        self.prefilter: Prefilter | None = None

    def __call__(self, requests: list[StageRequest]) -> list[float | None]:
        asks = [Request(r.candidate, self.setting, r.stages * self.stage_epochs,
                        after=(r.stages - 1) * self.stage_epochs if self.continues and r.stages > 1 else None)
                for r in requests]
        rows = self.evaluator.evaluate(asks, label=self.label)
        results = [None if row is None else row["val_acc"] for row in rows]
        if self.prefilter is not None:
            self.prefilter.record(requests, results, self.cycle)
        return results


def _state_name(algorithm: str, seed: int) -> str:
    return f"evolution/{algorithm}/seed{seed}"


def _fixed_config(cfg: DictConfig, setting: Setting, options: dict[str, Any], search: type[Search]) -> dict[str, Any]:
    """What a resumed search must share with the run it continues (options that only lengthen it may grow)."""
    fixed = {k: v for k, v in options.items() if k not in search.extendable}
    return json.loads(json.dumps({"setting": setting.values(), "options": fixed, "data": cfg.data.name,
                                  "val_split": float(cfg.evaluation.val_split), "space": cfg.space.name}))


def run_evolution(cfg: DictConfig, load_surrogate: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Run (or resume) the evolution ``cfg`` asks for. ``load_surrogate(path, key, space=)``: how the pre-filter's
    surrogate file is read (``darts_lite.surrogate.predict.load_model``; the task wiring passes it, so EcoNAS does
    not depend on the surrogate package); needed only with ``evolution.prefilter.model``."""
    from ..run.folder import start_run
    from ..run.loggers import wandb_experiment, wandb_run_ends_with_the_job

    setting, algorithm, options, stage_epochs = check(cfg)
    search_cls = ALGORITHMS[algorithm]
    model_path, factor = check_prefilter(OmegaConf.to_container(cfg.evolution, resolve=True))
    surrogate = None
    if model_path is not None:  # a missing or foreign file stops the run before the archive or run folder is touched
        if load_surrogate is None:
            raise ConfigError("evolution.prefilter.model: this caller of run_evolution gave no surrogate reader "
                              "(load_surrogate=darts_lite.surrogate.predict.load_model)")
        surrogate = load_surrogate(model_path, "evolution.prefilter.model", space=cfg.space.name)
    proxy, proxy_factor = zero_cost_prefilter(OmegaConf.to_container(cfg.evolution, resolve=True))
    data = build.prepare_data(cfg)  # a missing dataset stops the search here, before the archive is touched
    archive = build.open_archive(cfg)
    with contextlib.closing(archive), build.driver_lock(cfg, archive, "econas"):  # one driver per archive
        name = _state_name(algorithm, cfg.seed)
        saved = archive.load_state(name)
        if saved is not None and not (isinstance(saved.get("config"), dict) and isinstance(saved.get("search"), dict)
                                      and "cycle" in saved["search"]):
            raise ArchiveError(f"archive {archive.path}: the driver state {name!r} is damaged (it lacks the search's "
                               "config or state); nothing was changed. Delete it (sqlite3 shell: DELETE FROM driver_state "
                               f"WHERE name = '{name}') to start that search afresh, or restore the file from a copy.")
        fixed = _fixed_config(cfg, setting, options, search_cls)
        if surrogate is not None:  # another surrogate or factor would choose other genotypes: a resume must keep them
            fixed["prefilter"] = {"factor": factor, "version": surrogate.version,
                                  "sha256": hashlib.sha256(Path(model_path).read_bytes()).hexdigest()}
        if proxy is not None:  # another proxy or factor would choose other genotypes
            fixed["prefilter"] = {"factor": proxy_factor, "proxy": proxy}
        if saved is not None and not cfg.get("resume"):
            raise ConfigError(f"archive {archive.path} already holds a {algorithm} search with seed {cfg.seed} (cycle "
                              f"{saved['search']['cycle']}); continue it with resume=true, or give another archive=PATH or seed")
        if saved is not None and saved["config"] != fixed:
            changed = sorted(k for k in fixed if saved["config"].get(k) != fixed[k])
            was = ", ".join(f"{k}={saved['config'].get(k)!r}" for k in changed)
            raise ConfigError(f"resume=true: the search in {archive.path} was made with other {', '.join(changed)} ({was}); "
                              "resume it with those, or start a new search with another archive=PATH")
        out_dir = start_run(cfg)
        failures = Failures()
        evaluator = build.evaluator(cfg, archive, data, failures=failures)
        fitness = _Fitness(evaluator, setting, stage_epochs, continues=algorithm == "hierarchical")
        moves = space_moves(cfg.space.name)
        prefilter = None
        if surrogate is not None:
            prefilter = Prefilter(moves, surrogate.predict, factor)
            fitness.prefilter, moves = prefilter, prefilter.moves
            print(f"Pre-filter on: surrogate {surrogate.describe()} from {model_path}; every new genotype is the best "
                  f"predicted of {factor} candidates (prefilter.csv)", flush=True)
        if proxy is not None:
            scorer = ZeroCostScorer(setting, data, OmegaConf.to_container(cfg.train, resolve=True), cfg.seed,
                                    float(cfg.evaluation.val_split))
            prefilter = Prefilter(moves, scorer.predict(proxy), proxy_factor, value=f"zc_{proxy}")
            fitness.prefilter, moves = prefilter, prefilter.moves
            print(f"Pre-filter on: zero-cost proxy {proxy}; every new genotype is the best scored of {proxy_factor} "
                  "untrained candidates (prefilter.csv)", flush=True)
        search = search_cls(moves, fitness, seed=cfg.seed, **options)
        spent_before = 0.0
        if saved is not None:
            search.load_state_dict(saved["search"])
            spent_before = float(saved.get("wall_time_s", 0.0))
            print(f"Resuming the {algorithm} search at cycle {search.cycle} from {archive.path}", flush=True)
        started = time.time()
        planned = search_cls.planned_stage_trainings(search.options)
        print(f"EcoNAS {algorithm} search: setting {setting.name} (C={setting.channels}, {setting.layers} cells, "
              f"{setting.resolution} px, {setting.epochs} epochs in {options['stages']} stages of {stage_epochs}), "
              f"about {planned} stage-trainings = {planned * stage_epochs} epochs; archive {archive.path}", flush=True)

        # a cycle whose evaluations fail (more than evaluation.max_failed_share of them) stops the search before its state
        # is saved: resumed, it runs that cycle again, finding what finished in the archive and retrying what failed
        with wandb_run_ends_with_the_job(), stopped_on_failures(out_dir, archive, failures, "econas"):
            run = wandb_experiment(cfg, out_dir, resuming=saved is not None)

            def after_cycle(s: Search) -> None:
                wall = spent_before + time.time() - started
                archive.save_state(name, {"config": fixed, "search": s.state_dict(), "wall_time_s": wall})
                if prefilter is not None:
                    write_prefilter(out_dir, prefilter)
                h = s.history[-1]
                best = "n/a" if h["best"] is None else f"{h['best']:.4f}"
                median = "n/a" if h["median"] is None else f"{h['median']:.4f}"
                print(f"cycle {h['cycle']}: {h['evaluations']} evaluations, {h['stages'] * stage_epochs} epochs; "
                      f"best {best}, median {median} (fully trained); {wall:.0f} s", flush=True)
                write_progress(out_dir, s, stage_epochs)
                if run is not None:
                    run.log({k: v for k, v in {"evolution/best": h["best"], "evolution/median": h["median"],
                                              "evolution/epochs": h["stages"] * stage_epochs}.items() if v is not None},
                            step=h["cycle"])

            def cycle_label(s: Search) -> None:
                fitness.label, fitness.cycle = f"cycle {s.cycle}: ", s.cycle

            while not search.done:
                cycle_label(search)
                search.step()
                after_cycle(search)
            wall = spent_before + time.time() - started
            top = write_top(out_dir, search, archive, setting, cfg.seed, int(cfg.evolution.top),
                            predict=None if surrogate is None else surrogate.predict)
            archive.export_csv(out_dir / "evaluations.csv")
        archive.close()
        epochs = search.stages_used * stage_epochs
        summary = {"task": "econas", "status": "done", "search_algo": algorithm, "setting": setting.values(),
                   "cycles": search.cycle, "evaluations": search.evaluations, "epochs_trained": epochs,
                   "wall_time_s": wall, "top": top, "run_dir": str(out_dir), "archive": str(archive.path),
                   "failures": failures.as_dict(failures.write(out_dir / "failures.csv"))}
        if surrogate is not None:
            summary["prefilter"] = {"model": model_path, "version": surrogate.version, "factor": factor}
        if proxy is not None:
            summary["prefilter"] = {"proxy": proxy, "factor": proxy_factor}
        write_text_atomically(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        if top:
            print(f"\nTop {len(top)} (validation accuracy under {setting.name}; retrain each with the full recipe):")
            for t in top:
                print(f"  {t['rank']}. {t['accuracy']:.4f}  {t['genotype']}")
        else:
            print(f"\nNo model was trained through all {setting.epochs} epochs of {setting.name}: run more cycles "
                  "(evolution.cycles, with resume=true)")
        report_failures(failures, out_dir, archive)
        print(f"Spent: {epochs} epochs of training under {setting.name} (GPU-epochs when run on GPUs), {wall:.0f} s here")
        if top:
            print(f"Retrain the best: python -m darts_lite +experiment=train genotype={out_dir.resolve()}/top/rank1.json")
        extra = ", prefilter.csv" if prefilter is not None else ""
        print(f"Run folder: {out_dir.resolve()}  (top.csv, top/, evolution.png, evolution.csv, evaluations.csv{extra}, archive)")
        return summary


def write_progress(out_dir: Path, search: Search, stage_epochs: int) -> None:
    """evolution.csv and evolution.png from the search's history (rewritten every cycle)."""
    from matplotlib.ticker import MaxNLocator

    from ..plots import curves, save_figure

    with open_atomically(out_dir / "evolution.csv") as f:
        writer = csv.writer(f)
        writer.writerow(["cycle", "evaluations", "epochs", "best", "median"])
        for h in search.history:
            writer.writerow([h["cycle"], h["evaluations"], h["stages"] * stage_epochs, h["best"], h["median"]])
    points = [h for h in search.history if h["best"] is not None]
    if points:
        x = [h["cycle"] for h in points]
        fig = curves({"best": (x, [h["best"] for h in points]), "median": (x, [h["median"] for h in points])},
                     "cycle", "validation accuracy (fully trained models)", f"EcoNAS search ({search.name})")
        fig.axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))  # cycles are whole
        save_figure(fig, out_dir / "evolution.png")


def write_top(out_dir: Path, search: Search, archive: Archive, setting: Setting, seed: int, k: int,
              predict: Callable[[list[Any]], Sequence[float]] | None = None) -> list[dict[str, Any]]:
    """top.csv and top/rank{i}.json of the best fully trained genotypes; with `predict` (the pre-filter's surrogate)
    also each one's predicted accuracy beside the measured one."""
    top = []
    folder = out_dir / "top"
    folder.mkdir(exist_ok=True)
    best = search.best(k)
    predicted = [float(v) for v in predict([g for g, _, _ in best])] if predict is not None and best else []
    for rank, (genotype, accuracy, _) in enumerate(best, start=1):
        row = archive.find(genotype_hash(genotype), setting.name, seed, setting.epochs) or {}
        top.append({"rank": rank, "genotype": genotype.to_text(), "accuracy": accuracy, "epochs": setting.epochs,
                    "test_accuracy": row.get("test_acc"), "params": row.get("params"), "flops": row.get("flops"),
                    "setting": setting.name, "genotype_hash": genotype_hash(genotype)})
        if predicted:
            top[-1]["predicted_accuracy"] = predicted[rank - 1]
        write_text_atomically(folder / f"rank{rank}.json", genotype.to_json() + "\n")
    with open_atomically(out_dir / "top.csv") as f:
        writer = csv.DictWriter(f, fieldnames=["rank", "genotype", "accuracy", "epochs", "test_accuracy", "params", "flops",
                                               "setting", "genotype_hash", *(["predicted_accuracy"] if predicted else [])])
        writer.writeheader()
        writer.writerows(top)
    return top
