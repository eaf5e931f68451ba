"""``task=surrogate`` (``+experiment=surrogate surrogate.data=PATH``): fit every model of ``surrogate.models`` on a
table of evaluated genotypes, judge each on genotypes it did not see, and save it fitted on the whole table.

The run folder gets:

    surrogate_report.md             the data (rows read, skipped, averaged), the scores, the learning curve, the files
    surrogate_report.csv            one row per model: model, r2, kendall_tau, sparse_kendall_tau, spearman (held-out),
                                    then top_k_hit_rate, the K-fold means and spreads, sizes, times, version, file
    surrogate_scatter.png           predicted against true accuracy of the held-out genotypes, one panel per model
    surrogate_learning_curve.png    held-out sparse Kendall tau against the number of training genotypes
    surrogate_learning_curve.csv    the same numbers, every metric
    models/<kind>.json              each model fitted on every row, with its held-out and K-fold scores
    summary.json                    the scores, files and wall time

With ``logger=wandb`` the W&B run gets the report (``surrogate/report``, a table), the learning curve's numbers
(``surrogate/learning_curve_table``), both plots (``surrogate/scatter``, ``surrogate/learning_curve``) and each
model's held-out scores (``surrogate/<model>/<metric>``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..schema import Allowed, Ge, Gt, Hint, Le, Lt, MinLen, OneOf, node_problems, raise_problems
from ..torchfiles import open_atomically, write_text_atomically
from .data import FORMATS, METRICS, UNITS, Table, load_table, table_format
from .metrics import METRIC_NAMES, heldout, kfold, learning_curve
from .models import MODELS, lightgbm_available, make_surrogate

REPORT_COLUMNS = ("model", "r2", "kendall_tau", "sparse_kendall_tau", "spearman", "top_k_hit_rate")


@dataclasses.dataclass(frozen=True)
class SurrogateKeys:
    """The surrogate group, for every surrogate task (each reads its own keys; a key a task needs and the config lacks
    is reported by that task's check). The models' options are nodes of their own (their Options)."""

    data: Annotated[str, MinLen(1), Allowed(f"a table of evaluated genotypes: {FORMATS}")] | None = None
    accuracy_unit: Annotated[str, OneOf(UNITS)] | None = None
    setting: Annotated[str, MinLen(1), Allowed("a setting name such as c4r4s0e60")] | None = None
    metric: Annotated[str, OneOf(METRICS)] | None = None
    models: Annotated[list[Annotated[str, OneOf(MODELS)]], MinLen(1),
                      Allowed(f"a non-empty list of distinct kinds from {MODELS.choices()}")] | None = None
    folds: Annotated[int, Ge(2)] | None = None
    test_fraction: Annotated[float, Gt(0), Lt(1)] | None = None
    top_k: Annotated[int, Ge(1)] | None = None
    learning_curve: Annotated[list[Annotated[float, Gt(0), Le(1)]], MinLen(1),
                              Allowed("a non-empty list of fractions in (0, 1]")] | None = None
    model: Annotated[str, MinLen(1), Allowed("a surrogate file saved by +experiment=surrogate")] | None = None
    fit: Annotated[str, OneOf(MODELS), Hint("the model fitted on surrogate.data")] | None = None
    predict: Annotated[list[Annotated[str, MinLen(1)]] | str,
                       Allowed("a list of zoo names, search run folders, genotype files or genotype text ([] = the whole "
                               "zoo)")] | None = None

    @classmethod
    def config_problems(cls, rules: Any) -> list[str]:
        models = rules.values.get("models") or []
        if len(set(models)) != len(models):
            return [f"{rules.key('models')}={models!r}: must be a non-empty list of distinct kinds from {MODELS.choices()}"]
        return []


def check(cfg: DictConfig) -> dict[str, Any]:
    """The surrogate keys as a plain dict, every one checked (all problems in one ConfigError); reads no file."""
    if cfg.get("surrogate") is None:
        raise ConfigError("task=surrogate needs the surrogate keys: use +experiment=surrogate surrogate.data=PATH")
    opts = OmegaConf.to_container(cfg.surrogate, resolve=True)
    problems = node_problems(opts, "surrogate.", target=SurrogateKeys, nested=tuple(MODELS))
    data, unit, models = opts.get("data"), opts.get("accuracy_unit"), opts.get("models") or []
    if data is None:
        problems.append(f"surrogate.data=None: give the table of evaluated genotypes, surrogate.data=PATH: {FORMATS}")
    elif unit is None and isinstance(data, str) and data.lower().endswith((".csv", ".jsonl")):
        problems.append(f"surrogate.accuracy_unit=null: {data} is a CSV/JSONL table; say whether its accuracy column holds "
                        "fractions (0.93) or percentages (93.0): surrogate.accuracy_unit=fraction or percent")
    for key in ("metric", "models", "folds", "test_fraction", "top_k", "learning_curve"):
        if opts.get(key) is None and not any(p.startswith(f"surrogate.{key}") for p in problems):
            problems.append(f"surrogate.{key}: missing; task=surrogate needs it (+experiment=surrogate sets it)")
    if isinstance(models, list) and "lgbm" in models and not lightgbm_available():
        problems.append('surrogate.models: lgbm needs LightGBM: pip install "darts_lite[surrogates]", or leave lgbm out')
    for kind in MODELS:
        options = opts.get(kind) or {}
        if not isinstance(options, dict):
            problems.append(f"surrogate.{kind}={options!r}: must be a mapping of the {kind} model's options")
            continue
        problems += MODELS[kind].check_options(options, prefix=f"surrogate.{kind}.")
    raise_problems(problems)
    return opts


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _scatter(points: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    from matplotlib.figure import Figure

    from ..plots import save_figure

    fig = Figure(figsize=(4.2 * len(points), 4.2), layout="constrained")
    axes = fig.subplots(1, len(points), squeeze=False)[0]
    for ax, (label, (true, pred)) in zip(axes, points.items()):
        t, p = 100 * np.asarray(true), 100 * np.asarray(pred)
        ax.scatter(t, p, s=10, alpha=0.6)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="gray", linewidth=1, linestyle="--")
        ax.set_xlabel("true accuracy (%)")
        ax.set_ylabel("predicted accuracy (%)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def _markdown(table: Table, opts: dict[str, Any], rows: list[dict[str, Any]], curve: list[dict[str, Any]],
              test_rows: int, seed: int, read: str) -> str:
    lines = ["# Surrogate report", "", "## Data", ""] + [f"    {line}" for line in table.report()]
    acc = 100 * table.accuracies
    lines += ["", f"Accuracy read: {read}; {len(table)} genotypes, accuracies {acc.min():.2f}% to {acc.max():.2f}% "
              f"(mean {acc.mean():.2f}%).", "",
              "## Held-out scores", "",
              f"Fitted on {len(table) - test_rows} genotypes, scored on {test_rows} it never saw (seed {seed}); sparse Kendall "
              f"tau rounds true and predicted accuracies to 0.1 percentage point first; top-k: the share of the "
              f"{opts['top_k']} best held-out genotypes that the model also puts in its top {opts['top_k']}.", "",
              "| model | version | R^2 | Kendall tau | sparse Kendall tau | Spearman | top-k hit rate |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['version']} | " + " | ".join(_fmt(r[k]) for k in METRIC_NAMES) + " |")
    lines += ["", f"## {opts['folds']}-fold cross-validation", "",
              "Mean +- standard deviation over the folds; every genotype is predicted once by a model that did not see it.",
              "", "| model | R^2 | Kendall tau | sparse Kendall tau | Spearman | top-k hit rate |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(f"{_fmt(r[f'kfold_{k}_mean'])} +- {_fmt(r[f'kfold_{k}_std'])}"
                                                     for k in METRIC_NAMES) + " |")
    lines += ["", "## Learning curve", "", "Held-out sparse Kendall tau against the genotypes fitted on "
              "(`surrogate_learning_curve.png`, every metric in `surrogate_learning_curve.csv`).", "",
              "| model | " + " | ".join(str(p["train_rows"]) for p in curve if p["model"] == rows[0]["model"]) + " |",
              "| --- | " + " | ".join("---" for p in curve if p["model"] == rows[0]["model"]) + " |"]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(_fmt(p["sparse_kendall_tau"]) for p in curve if p["model"] == r["model"])
                     + " |")
    lines += ["", "## Files", "", "Each model in `models/` is fitted on all the genotypes and records its version, the hash "
              "of the table and these scores. Its outputs are predictions, not measured accuracies: state the model's "
              "version with any number it gives.", ""]
    lines += [f"- `{r['file']}`: {r['version']}" for r in rows]
    return "\n".join(lines) + "\n"


def log_to_wandb(run: Any, tables: dict[str, tuple[list[str], list[dict[str, Any]]]], images: dict[str, Path],
                 scalars: dict[str, float] | None = None) -> None:
    """Log ``tables`` ({key: (columns, rows)}) as wandb.Table, ``images`` (PNG files) as wandb.Image and ``scalars`` into
    the W&B run ``run`` of a task without a Trainer, in one step; the scalars also go into the run's summary."""
    import wandb

    payload: dict[str, Any] = {key: wandb.Table(columns=list(columns), data=[[r.get(c) for c in columns] for r in rows])
                               for key, (columns, rows) in tables.items()}
    payload.update({key: wandb.Image(str(path)) for key, path in images.items()})
    payload.update(scalars or {})
    run.log(payload)


def run_surrogate(cfg: DictConfig) -> dict[str, Any]:
    """Fit, judge and save every model of ``surrogate.models``; returns the summary. With ``logger=wandb`` the report
    table, the scatter and the learning curve go to W&B too (keys ``surrogate/...``)."""
    from ..run.folder import start_run
    from ..run.loggers import wandb_experiment, wandb_run_ends_with_the_job

    opts = check(cfg)
    started = time.time()
    table = load_table(opts["data"], opts.get("accuracy_unit"), opts.get("setting"), opts["metric"])
    for line in table.report():
        print(line, flush=True)
    out_dir = start_run(cfg)
    with wandb_run_ends_with_the_job():
        run = wandb_experiment(cfg, out_dir, resuming=False)
        summary, rows, columns, curve = _fit_and_report(cfg, opts, table, out_dir, started)
        if run is not None:
            scores = {f"surrogate/{r['model']}/{m}": r[m] for r in rows for m in METRIC_NAMES if not math.isnan(r[m])}
            log_to_wandb(run, {"surrogate/report": (columns, rows),
                               "surrogate/learning_curve_table": (["model", "fraction", "train_rows", *METRIC_NAMES], curve)},
                         {"surrogate/scatter": out_dir / "surrogate_scatter.png",
                          "surrogate/learning_curve": out_dir / "surrogate_learning_curve.png"}, scores)
    return summary


def _fit_and_report(cfg: DictConfig, opts: dict[str, Any], table: Table, out_dir: Path, started: float
                    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """Fit and judge every model, write the run folder; (summary, report rows, report columns, learning curve)."""
    seed, k = int(cfg.seed), opts["top_k"]
    rows: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    points: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind in opts["models"]:
        options = opts.get(kind) or {}

        def factory(kind: str = kind, options: dict = options) -> Any:
            return make_surrogate(kind, seed, **options)

        def progress(what: str, kind: str = kind) -> None:
            print(f"[{kind}] {what}", flush=True)

        progress(f"held-out: fitting on {len(table) - round(len(table) * opts['test_fraction'])} genotypes")
        held = heldout(factory, table, opts["test_fraction"], seed, k)
        progress("held-out: " + ", ".join(f"{name} {_fmt(v)}" for name, v in held.scores.items()))
        folds = kfold(factory, table, opts["folds"], seed, k,
                      progress=lambda w, kind=kind: progress(f"{opts['folds']}-fold: {w}"))
        progress(f"learning curve over {opts['learning_curve']} of the training part")
        for point in learning_curve(factory, table, opts["learning_curve"], opts["test_fraction"], seed, k, progress=progress):
            curve.append({"model": kind, **point})
        progress(f"fitting on all {len(table)} genotypes")
        fit_started = time.time()
        model = factory().fit(table)
        fit_s = time.time() - fit_started
        model.evaluation = {"heldout": held.scores, "kfold_mean": folds.mean(), "kfold_std": folds.std(),
                            "folds": opts["folds"], "test_fraction": opts["test_fraction"], "seed": seed, "top_k": k}
        file = model.save(out_dir / "models" / f"{kind}.json")
        points[f"{model.version}: sparse Kendall tau {_fmt(held.scores['sparse_kendall_tau'])}"] = (
            table.accuracies[held.test], held.predictions)
        rows.append({"model": kind, **held.scores, **{f"kfold_{m}_mean": v for m, v in folds.mean().items()},
                     **{f"kfold_{m}_std": v for m, v in folds.std().items()}, "train_rows": len(held.train),
                     "test_rows": len(held.test), "rows": len(table), "fit_s": round(fit_s, 3), "version": model.version,
                     "file": str(file.relative_to(out_dir))})

    columns = list(REPORT_COLUMNS) + [c for c in rows[0] if c not in REPORT_COLUMNS]
    with open_atomically(out_dir / "surrogate_report.csv") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    with open_atomically(out_dir / "surrogate_learning_curve.csv") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "fraction", "train_rows", *METRIC_NAMES])
        writer.writeheader()
        writer.writerows(curve)
    test_rows = rows[0]["test_rows"]
    fmt = table_format(opts["data"])
    source = "the archive" if fmt == "archive" else "the NAS-Bench-301 results"
    read = "the accuracy column" if fmt in ("csv", "jsonl") else f"{opts['metric']} of {source}"
    write_text_atomically(out_dir / "surrogate_report.md", _markdown(table, opts, rows, curve, test_rows, seed, read))
    _scatter(points, out_dir / "surrogate_scatter.png")
    from ..plots import curves, save_figure

    series = {kind: ([p["train_rows"] for p in curve if p["model"] == kind],
                     [p["sparse_kendall_tau"] for p in curve if p["model"] == kind]) for kind in opts["models"]}
    save_figure(curves(series, "training genotypes", "held-out sparse Kendall tau", "Surrogate learning curve"),
                out_dir / "surrogate_learning_curve.png")
    summary = {"task": "surrogate", "status": "done", "data": opts["data"], "rows": len(table),
               "skipped": len(table.skipped), "duplicates": len(table.duplicates),
               "models": {r["model"]: {k: r[k] for k in columns if k != "model"} for r in rows},
               "run_dir": str(out_dir), "wall_time_s": time.time() - started}
    write_text_atomically(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    print("\n" + "\n".join(f"{r['model']}: held-out sparse Kendall tau {_fmt(r['sparse_kendall_tau'])}, "
                           f"R^2 {_fmt(r['r2'])}" for r in rows))
    print(f"Run folder: {out_dir.resolve()}  (surrogate_report.md, surrogate_report.csv, surrogate_scatter.png, "
          "surrogate_learning_curve.png, models/)", flush=True)
    return summary, rows, columns, curve


__all__ = ["REPORT_COLUMNS", "check", "log_to_wandb", "run_surrogate"]
