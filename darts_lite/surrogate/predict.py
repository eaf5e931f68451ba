"""Score genotypes with a saved surrogate (``task=surrogate_predict``): published cells, search run folders, genotype
JSON files and DARTS genotype text, each given a predicted accuracy.

    python -m darts_lite +experiment=surrogate_predict surrogate.model=runs/surrogate/<time>/models/gin.json \
        surrogate.predict=[DARTS_V2,runs/search/<time>]

With ``surrogate.predict=[]`` (the default) the whole published zoo is scored. The run folder gets:

    predictions.csv    source, name, genotype (DARTS text), predicted_accuracy (a fraction), model, version
    summary.json       the same rows, the surrogate's file and version, the wall time

Every number is the surrogate's prediction of an accuracy, never a measured one: the printed table says so in its
header, and every row names the model's version. ``score_zoo`` and ``write_predictions`` are shared with
``task=surrogate_search``, which scores the zoo the same way.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..schema import node_problems, raise_problems
from ..spaces.darts.genotype import Genotype, zoo
from ..torchfiles import open_atomically, write_text_atomically
from .encodings import FlatEncoding, GraphEncoding
from .encodings import problem as encoding_problem
from .models import Surrogate, load_surrogate

# every published genotype darts_lite knows that the encodings read (not FairDARTS's sparse cells), in its order
ZOO: tuple[str, ...] = tuple(name for name in zoo() if encoding_problem(Genotype.named(name)) is None)
# the search space whose genotypes each encoding reads: a surrogate predicts genotypes of that space only
ENCODING_SPACE = {FlatEncoding.name: "darts", GraphEncoding.name: "darts"}
# the derived genotype files a search run folder holds, in the order they are scored (label, file)
RUN_GENOTYPES = (("argmax", "genotype.json"), ("perturbation", "genotype_perturbation.json"))
COLUMNS = ("source", "name", "genotype", "predicted_accuracy", "model", "version")
_ZOO_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")  # what a zoo name looks like (and a path does not)


@dataclass(frozen=True)
class Item:
    """One genotype to score: where it came from (zoo, search_run, file, text), a name, the genotype."""

    source: str
    name: str
    genotype: Genotype


def surrogate_space(model: Surrogate) -> str:
    """The search space whose genotypes ``model`` predicts (read from its encoding)."""
    return ENCODING_SPACE.get(model.encoding, "unknown")


def load_model(path: Any, key: str, space: str = "darts") -> Surrogate:
    """The surrogate saved at ``path`` (the config key ``key`` named it); ConfigError, one message, for a missing
    or foreign file or a surrogate of another space than ``space``."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{key}={path!r}: give a surrogate saved by +experiment=surrogate, e.g. "
                          f"{key}=runs/surrogate/2026-11-30_14-00-00/models/gin.json")
    try:
        model = load_surrogate(path)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
    found = surrogate_space(model)
    if found != space:
        raise ConfigError(f"{key}={path}: a surrogate of the {found} space ({model.version}, encoding {model.encoding}); "
                          f"this run needs genotypes of the {space} space scored")
    return model


# ---- inputs ------------------------------------------------------------------------------------------------
def _darts(text: str, where: str) -> Genotype:
    """The darts-space genotype in ``text`` (DARTS text or JSON); ConfigError naming ``where`` otherwise."""
    from ..spaces import parse_genotype

    try:
        space, genotype = parse_genotype(text)
    except ValueError as e:
        raise ConfigError(f"{where}: not a genotype ({e})") from None
    if space.NAME != "darts":
        raise ConfigError(f"{where}: a genotype of the {space.NAME} space; the surrogates predict darts-space genotypes "
                          "(their encodings read DARTS cells)")
    why = encoding_problem(genotype)
    if why:
        raise ConfigError(f"{where}: {why}")
    return genotype


def _run_space(folder: Path) -> str | None:
    """The space a run folder's config.yaml names (None when it has none)."""
    config = folder / "config.yaml"
    if not config.is_file():
        return None
    try:
        space = OmegaConf.select(OmegaConf.load(config), "space.name", default=None)
    except Exception:  # an unreadable config names no space; the genotype file still says what it is
        return None
    return None if space is None else str(space)


def _run_items(folder: Path, spec: str) -> list[Item]:
    found = [(label, folder / name) for label, name in RUN_GENOTYPES if (folder / name).is_file()]
    if not found:
        raise ConfigError(f"{spec}: not a search run folder (no genotype.json in it; a search writes it when it ends, so "
                          "a search still running has none yet)")
    space = _run_space(folder)
    if space not in (None, "darts"):
        raise ConfigError(f"{spec}: a search run of the {space} space; the surrogates predict darts-space genotypes")
    return [Item("search_run", f"{spec.rstrip('/')}/{path.name}" if label != "argmax" else spec.rstrip("/"),
                 _darts(path.read_text(), f"{spec}: {path.name}")) for label, path in found]


def _is_text(spec: str) -> bool:
    return spec.lstrip().startswith(("Genotype(", "{", "|"))


def resolve(specs: Sequence[str]) -> list[Item]:
    """The genotypes ``specs`` name: zoo names (any case), search run folders (their genotype.json and, after a
    perturbation-based selection, genotype_perturbation.json), genotype files (JSON or DARTS text) and genotype text.
    Every bad spec is reported, one line each, in one ConfigError."""
    items: list[Item] = []
    problems: list[str] = []
    names = {name.upper(): name for name in zoo()}
    for n, spec in enumerate(specs, start=1):
        spec = str(spec)
        try:
            if _is_text(spec):
                items.append(Item("text", f"text {n}", _darts(spec, f"genotype text {n}")))
                continue
            key = spec.strip().upper().replace("-", "_")
            if key in names:
                items.append(Item("zoo", names[key], _darts(Genotype.named(names[key]).to_text(), names[key])))
                continue
            path = Path(spec).expanduser()
            if path.is_dir():
                items += _run_items(path, spec)
            elif path.is_file():
                items.append(Item("file", spec, _darts(path.read_text(errors="replace"), spec)))
            elif _ZOO_KEY.match(spec.strip()):
                raise ConfigError(f"{spec}: unknown published genotype name; the zoo: {', '.join(ZOO)}")
            else:
                raise ConfigError(f"{spec}: no such file or folder")
        except ConfigError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError("surrogate.predict: " + ("\n  ".join(["cannot score:", *problems]) if len(problems) > 1
                                                   else problems[0]))
    return items


def zoo_items() -> list[Item]:
    return [Item("zoo", name, Genotype.named(name)) for name in ZOO]


# ---- scoring -----------------------------------------------------------------------------------------------
def score(predict: Callable[[list[Genotype]], Sequence[float]], items: Sequence[Item]) -> list[float]:
    """Predicted accuracy (fraction) of each item, in one ``predict`` call."""
    values = [float(v) for v in predict([item.genotype for item in items])] if items else []
    if len(values) != len(items):
        raise ValueError(f"the surrogate gave {len(values)} predictions for {len(items)} genotypes")
    return values


def score_zoo(predict: Callable[[list[Genotype]], Sequence[float]]) -> list[tuple[str, float]]:
    """(name, predicted accuracy) of every published genotype, in ZOO order."""
    items = zoo_items()
    return [(item.name, value) for item, value in zip(items, score(predict, items))]


def prediction_rows(items: Sequence[Item], values: Sequence[float], model: Surrogate) -> list[dict[str, Any]]:
    """One row per item with the COLUMNS of predictions.csv."""
    return [{"source": item.source, "name": item.name, "genotype": item.genotype.to_text(), "predicted_accuracy": value,
             "model": model.kind, "version": model.version} for item, value in zip(items, values)]


def write_predictions(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """``rows`` (from ``prediction_rows``) as a CSV file with the COLUMNS; accuracies as fractions, 6 decimals."""
    with open_atomically(path) as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows({**r, "predicted_accuracy": f"{r['predicted_accuracy']:.6f}"} for r in rows)
    return path


def table_text(rows: Sequence[dict[str, Any]], model: Surrogate) -> str:
    """The printed table: a header that says these are predictions, then one line per row."""
    width = max([len("name")] + [len(r["name"]) for r in rows])
    lines = [f"Predicted accuracy by the surrogate {model.describe()}: predictions, NOT measured accuracies",
             f"{'source':<11} {'name':<{width}} {'predicted':>9}"]
    lines += [f"{r['source']:<11} {r['name']:<{width}} {100 * r['predicted_accuracy']:>8.2f}%" for r in rows]
    return "\n".join(lines)


# ---- the task ----------------------------------------------------------------------------------------------
def check(cfg: DictConfig) -> dict[str, Any]:
    """The surrogate_predict keys as {"model": path, "predict": [specs]}, checked; reads no file."""
    if cfg.get("surrogate") is None:
        raise ConfigError("task=surrogate_predict needs the surrogate keys: use +experiment=surrogate_predict "
                          "surrogate.model=PATH")
    from .task import SurrogateKeys

    opts = OmegaConf.to_container(cfg.surrogate, resolve=True)
    model, specs = opts.get("model"), opts.get("predict")
    problems = node_problems({"model": model, "predict": specs}, "surrogate.", target=SurrogateKeys)
    if model is None:
        problems.append("surrogate.model=None: give a surrogate saved by +experiment=surrogate, e.g. "
                        "surrogate.model=runs/surrogate/2026-11-30_14-00-00/models/gin.json")
    specs = [] if specs is None else [specs] if isinstance(specs, str) else specs
    raise_problems(problems)
    return {"model": model, "predict": specs}


def run_surrogate_predict(cfg: DictConfig) -> dict[str, Any]:
    """Load the surrogate, resolve the inputs (every problem before the run folder is made), score, write."""
    from ..run.folder import start_run

    opts = check(cfg)
    started = time.time()
    model = load_model(opts["model"], "surrogate.model")
    items = resolve(opts["predict"]) if opts["predict"] else zoo_items()
    out_dir = start_run(cfg)
    rows = prediction_rows(items, score(model.predict, items), model)
    write_predictions(rows, out_dir / "predictions.csv")
    digest = hashlib.sha256(Path(opts["model"]).read_bytes()).hexdigest()
    summary = {"task": "surrogate_predict", "status": "done", "surrogate": opts["model"], "surrogate_sha256": digest,
               "version": model.version, "fitted_on": model.trained_on, "note": "predicted accuracies, not measured ones",
               "predictions": rows, "run_dir": str(out_dir), "wall_time_s": time.time() - started}
    write_text_atomically(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(table_text(rows, model))
    print(f"Run folder: {out_dir.resolve()}  (predictions.csv, summary.json)", flush=True)
    return summary


__all__ = ["COLUMNS", "ENCODING_SPACE", "ZOO", "Item", "check", "load_model", "prediction_rows", "resolve",
           "run_surrogate_predict", "score", "score_zoo", "surrogate_space", "table_text", "write_predictions", "zoo_items"]
