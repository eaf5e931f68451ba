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
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..evolve import ALGORITHMS, Moves, Request, Search, stage_trainings
from ..spaces import get_space, parse_genotype
from . import build
from .archive import Archive, genotype_hash
from .evaluator import Request as EvalRequest
from .settings import Setting, resolve_all


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
    if cfg.space.name not in ("darts",):
        raise ConfigError(f"space={cfg.space.name}: EcoNAS trains evaluation networks of the darts space")
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
    top = ev.get("top")
    if not (isinstance(top, int) and top >= 1):
        raise ConfigError(f"evolution.top={top!r}: must be an integer >= 1 (the genotypes written for retraining)")
    setting = resolve_all([OmegaConf.to_container(cfg.setting, resolve=True)], build.base(cfg))[0]
    stages = options["stages"]
    if setting.epochs % stages:
        raise ConfigError(f"setting {setting.name}: its {setting.epochs} epochs do not split into evolution.stages={stages} "
                          "equal stages; choose a setting whose epochs are a multiple of the stages")
    return setting, algorithm, options, setting.epochs // stages


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

    def __call__(self, requests: list[Request]) -> list[float | None]:
        asks = [EvalRequest(r.candidate, self.setting, r.stages * self.stage_epochs,
                            after=(r.stages - 1) * self.stage_epochs if self.continues and r.stages > 1 else None)
                for r in requests]
        rows = self.evaluator.evaluate(asks, label=self.label)
        return [None if row is None else row["val_acc"] for row in rows]


def _state_name(algorithm: str, seed: int) -> str:
    return f"evolution/{algorithm}/seed{seed}"


def _fixed_config(cfg: DictConfig, setting: Setting, options: dict[str, Any], search: type[Search]) -> dict[str, Any]:
    """What a resumed search must share with the run it continues (options that only lengthen it may grow)."""
    fixed = {k: v for k, v in options.items() if k not in search.extendable}
    return json.loads(json.dumps({"setting": setting.values(), "options": fixed, "data": cfg.data.name,
                                  "val_split": float(cfg.evaluation.val_split), "space": cfg.space.name}))


def run_evolution(cfg: DictConfig) -> dict[str, Any]:
    from ..run.folder import start_run
    from ..run.loggers import wandb_experiment, wandb_run_ends_with_the_job

    setting, algorithm, options, stage_epochs = check(cfg)
    search_cls = ALGORITHMS[algorithm]
    archive = build.open_archive(cfg)
    name = _state_name(algorithm, cfg.seed)
    saved = archive.load_state(name)
    fixed = _fixed_config(cfg, setting, options, search_cls)
    if saved is not None and not cfg.get("resume"):
        raise ConfigError(f"archive {archive.path} already holds a {algorithm} search with seed {cfg.seed} (cycle "
                          f"{saved['search']['cycle']}); continue it with resume=true, or give another archive=PATH or seed")
    if saved is not None and saved["config"] != fixed:
        changed = sorted(k for k in fixed if saved["config"].get(k) != fixed[k])
        was = ", ".join(f"{k}={saved['config'].get(k)!r}" for k in changed)
        raise ConfigError(f"resume=true: the search in {archive.path} was made with other {', '.join(changed)} ({was}); "
                          "resume it with those, or start a new search with another archive=PATH")
    out_dir = start_run(cfg)
    evaluator = build.evaluator(cfg, archive)
    fitness = _Fitness(evaluator, setting, stage_epochs, continues=algorithm == "hierarchical")
    search = search_cls(space_moves(cfg.space.name), fitness, seed=cfg.seed, **options)
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

    with wandb_run_ends_with_the_job():
        run = wandb_experiment(cfg, out_dir, resuming=saved is not None)

        def after_cycle(s: Search) -> None:
            wall = spent_before + time.time() - started
            archive.save_state(name, {"config": fixed, "search": s.state_dict(), "wall_time_s": wall})
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
            fitness.label = f"cycle {s.cycle}: "

        while not search.done:
            cycle_label(search)
            search.step()
            after_cycle(search)
        wall = spent_before + time.time() - started
        top = write_top(out_dir, search, archive, setting, cfg.seed, int(cfg.evolution.top))
        archive.export_csv(out_dir / "evaluations.csv")
    archive.close()
    epochs = search.stages_used * stage_epochs
    summary = {"task": "econas", "status": "done", "search_algo": algorithm, "setting": setting.values(),
               "cycles": search.cycle, "evaluations": search.evaluations, "epochs_trained": epochs,
               "wall_time_s": wall, "top": top, "run_dir": str(out_dir), "archive": str(archive.path)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if top:
        print(f"\nTop {len(top)} (validation accuracy under {setting.name}; retrain each with the full recipe):")
        for t in top:
            print(f"  {t['rank']}. {t['accuracy']:.4f}  {t['genotype']}")
    else:
        print(f"\nNo model was trained through all {setting.epochs} epochs of {setting.name}: run more cycles "
              "(evolution.cycles, with resume=true)")
    print(f"Spent: {epochs} epochs of training under {setting.name} (GPU-epochs when run on GPUs), {wall:.0f} s here")
    if top:
        print(f"Retrain the best: python -m darts_lite +experiment=train genotype={out_dir.resolve()}/top/rank1.json")
    print(f"Run folder: {out_dir.resolve()}  (top.csv, top/, evolution.png, evolution.csv, evaluations.csv, archive)")
    return summary


def write_progress(out_dir: Path, search: Search, stage_epochs: int) -> None:
    """evolution.csv and evolution.png from the search's history (rewritten every cycle)."""
    from matplotlib.ticker import MaxNLocator

    from ..plots import curves, save_figure

    with open(out_dir / "evolution.csv", "w", newline="") as f:
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


def write_top(out_dir: Path, search: Search, archive: Archive, setting: Setting, seed: int, k: int) -> list[dict[str, Any]]:
    """top.csv and top/rank{i}.json of the best fully trained genotypes."""
    top = []
    folder = out_dir / "top"
    folder.mkdir(exist_ok=True)
    for rank, (genotype, accuracy, _) in enumerate(search.best(k), start=1):
        row = archive.find(genotype_hash(genotype), setting.name, seed, setting.epochs) or {}
        top.append({"rank": rank, "genotype": genotype.to_text(), "accuracy": accuracy, "epochs": setting.epochs,
                    "test_accuracy": row.get("test_acc"), "params": row.get("params"), "flops": row.get("flops"),
                    "setting": setting.name, "genotype_hash": genotype_hash(genotype)})
        (folder / f"rank{rank}.json").write_text(genotype.to_json() + "\n")
    with open(out_dir / "top.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["rank", "genotype", "accuracy", "epochs", "test_accuracy", "params", "flops",
                                               "setting", "genotype_hash"])
        writer.writeheader()
        writer.writerows(top)
    return top
