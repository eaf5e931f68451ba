"""Tables of evaluated genotypes for the surrogate: read from the evaluation archive, a CSV or JSONL file, or
NAS-Bench-301 result JSON files, and the conversion between a Genotype and NAS-Bench-301's configuration keys.

Every loader gives a `Table`: one row per distinct genotype (duplicates averaged and reported), accuracies as
fractions in [0, 1]. A row that cannot be read is reported with its file and line and skipped; an accuracy out of
range for the declared unit stops the load, since it usually means the unit is wrong.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..econas.archive import Archive, genotype_hash
from ..errors import ConfigError
from ..spaces.darts.genotype import PRIMITIVES, Genotype
from ..torchfiles import open_atomically
from .encodings import problem as encoding_problem

UNITS = ("fraction", "percent")
METRICS = ("val_acc", "test_acc")
FORMATS = "an evaluation archive (SQLite), a .csv or .jsonl file with columns genotype and accuracy, a NAS-Bench-301 " \
          "result .json file or a folder of them"

NB301_PREFIX = "NetworkSelectorDatasetInfo:darts:"
# NAS-Bench-301 result files: the configuration, the validation accuracy of its (only) training run, in percent
NB301_CONFIG = "optimized_hyperparamater_config"
NB301_VAL = "val_accuracy"
NB301_TEST = "test_accuracy"

_SQLITE = b"SQLite format 3\x00"
_SHOWN = 10  # problems and duplicates listed one by one in a report; the rest are counted


class SurrogateDataError(ConfigError):
    """A table of evaluated genotypes cannot be used; the message says why and what to do."""


@dataclass
class Table:
    """Evaluated genotypes, one row per distinct genotype. accuracies: [n] fractions in [0, 1]."""

    genotypes: list[Genotype]
    accuracies: np.ndarray
    source: str = ""
    skipped: list[str] = field(default_factory=list)  # "file:line: why", rows left out
    duplicates: list[str] = field(default_factory=list)  # one line per genotype seen more than once

    def __post_init__(self) -> None:
        self.accuracies = np.asarray(self.accuracies, dtype=np.float64).reshape(-1)
        if len(self.genotypes) != len(self.accuracies):
            raise ValueError(f"{len(self.genotypes)} genotypes for {len(self.accuracies)} accuracies")

    def __len__(self) -> int:
        return len(self.genotypes)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Table:
        """The rows at ``indices`` (the reports stay with the whole table)."""
        idx = [int(i) for i in indices]
        return Table([self.genotypes[i] for i in idx], self.accuracies[idx], self.source)

    def data_hash(self) -> str:
        """sha256 of the rows (genotype hash and accuracy), independent of their order: what a model was fitted on."""
        lines = sorted(f"{genotype_hash(g)} {a:.6f}" for g, a in zip(self.genotypes, self.accuracies))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def report(self) -> list[str]:
        """Lines saying what was left out and what was averaged."""
        lines = [f"{len(self)} genotypes from {self.source}"]
        for what, items in (("rows skipped", self.skipped), ("genotypes seen more than once (accuracies averaged)",
                                                              self.duplicates)):
            if items:
                lines.append(f"{what}: {len(items)}")
                lines += [f"  {item}" for item in items[:_SHOWN]]
                if len(items) > _SHOWN:
                    lines.append(f"  ... and {len(items) - _SHOWN} more")
        return lines


def require_learnable(table: Table, what: str = "the table") -> None:
    """Raise SurrogateDataError when ``table`` has no rows or a single accuracy value: nothing to rank."""
    if len(table) == 0:
        why = f" ({len(table.skipped)} rows skipped: {table.skipped[0]}{' ...' if len(table.skipped) > 1 else ''})" \
            if table.skipped else ""
        raise SurrogateDataError(f"{what} from {table.source or 'the data'} has no usable rows{why}; give a file of "
                                 f"evaluated genotypes")
    values = np.unique(table.accuracies)
    if len(values) < 2:
        raise SurrogateDataError(f"{what} from {table.source or 'the data'}: all {len(table)} genotypes have the accuracy "
                                 f"{values[0]:.4f}; a surrogate learns from differences, give genotypes with "
                                 "different accuracies")


# ---- reading ---------------------------------------------------------------------------------------------
@dataclass
class _Raw:
    """A row as read, before duplicates are merged."""

    genotype: Genotype
    accuracy: float  # a fraction
    where: str


def _accuracy(value: Any, unit: str, where: str, column: str) -> tuple[float | None, str | None]:
    """(fraction, None), or (None, why the row is skipped); raises when a finite value is out of range."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        return None, f"{column} is missing"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, f"{column} {value!r} is not a number"
    if not math.isfinite(number):
        return None, f"{column} is {value} (a failed training?)"
    top = 1.0 if unit == "fraction" else 100.0
    if not 0.0 <= number <= top:
        hint = " the values look like percentages: set surrogate.accuracy_unit=percent" if unit == "fraction" and \
            number <= 100 else " (a fraction times 100 must lie in [0, 100])"
        raise SurrogateDataError(f"{where}: {column} {number} is outside [0, {top:g}] for accuracy_unit={unit};{hint}")
    return number / top, None


def _genotype(text: Any, where: str) -> tuple[Genotype | None, str | None]:
    if isinstance(text, dict):
        text = json.dumps(text)
    if not isinstance(text, str) or not text.strip():
        return None, "genotype is missing"
    try:
        genotype = Genotype.parse(text)
    except ValueError as e:
        return None, f"genotype does not parse: {e}"
    why = encoding_problem(genotype)
    return (None, why) if why else (genotype, None)


def _read_csv(path: Path, unit: str) -> tuple[list[_Raw], list[str]]:
    rows, skipped = [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("genotype", "accuracy") if c not in (reader.fieldnames or [])]
        if missing:
            raise SurrogateDataError(f"{path}: no column {' or '.join(missing)} in the header {reader.fieldnames}; a CSV "
                                     "table needs the columns genotype (DARTS text or JSON) and accuracy")
        start = reader.line_num + 1
        for record in reader:
            where = f"{path}:{start}"  # the line the row starts on (a quoted field may span lines)
            start = reader.line_num + 1
            _collect(rows, skipped, where, record.get("genotype"), record.get("accuracy"), unit)
    return rows, skipped


def _read_jsonl(path: Path, unit: str) -> tuple[list[_Raw], list[str]]:
    rows, skipped = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                skipped.append(f"{where}: not JSON ({e.msg})")
                continue
            if not isinstance(record, dict):
                skipped.append(f"{where}: a JSON object with genotype and accuracy was expected")
                continue
            _collect(rows, skipped, where, record.get("genotype"), record.get("accuracy"), unit)
    return rows, skipped


def _collect(rows: list[_Raw], skipped: list[str], where: str, genotype: Any, accuracy: Any, unit: str,
             column: str = "accuracy") -> None:
    g, why = _genotype(genotype, where)
    if g is not None:
        acc, why = _accuracy(accuracy, unit, where, column)
    if why:
        skipped.append(f"{where}: {why}")
    else:
        rows.append(_Raw(g, acc, where))


def _read_archive(path: Path, setting: str | None, metric: str) -> tuple[list[_Raw], list[str], list[str]]:
    """Done evaluations of one setting, at that setting's full epochs (an evolution's stage trainings left out)."""
    with Archive(path) as archive:
        done = archive.rows(status="done")
    settings: dict[str, int] = {}
    for r in done:
        settings[r["setting"]] = settings.get(r["setting"], 0) + 1
    if setting is None and len(settings) > 1:
        listed = ", ".join(f"{name} ({n})" for name, n in sorted(settings.items()))
        raise SurrogateDataError(f"archive {path} holds evaluations of several settings: {listed}; choose one with "
                                 "surrogate.setting=NAME (accuracies of different settings are not comparable)")
    if setting is not None and setting not in settings:
        raise SurrogateDataError(f"archive {path} has no finished evaluation under setting {setting!r}; it holds "
                                 f"{', '.join(sorted(settings)) or 'none'}")
    chosen = [r for r in done if setting is None or r["setting"] == setting]
    full = max((r["epochs"] for r in chosen), default=0)
    notes = []
    partial = sum(r["epochs"] < full for r in chosen)
    if partial:
        notes.append(f"{partial} evaluations trained fewer than the setting's {full} epochs (evolution stages) left out")
    rows, skipped = [], []
    for r in chosen:
        if r["epochs"] == full:
            _collect(rows, skipped, f"{path}:id {r['id']}", r["genotype"], r[metric], "fraction", metric)
    return rows, skipped, notes


def _nb301_files(path: Path) -> list[Path]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.json") if p.is_file())
    if not files:
        raise SurrogateDataError(f"{path}: a folder without .json files; {FORMATS} was expected")
    return files


def _read_nb301(path: Path, metric: str) -> tuple[list[_Raw], list[str]]:
    rows, skipped = [], []
    for file in _nb301_files(path):
        where = str(file)
        try:
            result = json.loads(file.read_text(encoding="utf-8"))
            config = result[NB301_CONFIG]
            accuracy = result["info"][0][NB301_VAL] if metric == "val_acc" else result[NB301_TEST]
        except json.JSONDecodeError as e:
            skipped.append(f"{where}: not JSON ({e.msg} at line {e.lineno})")
            continue
        except (KeyError, IndexError, TypeError):
            want = f"info[0].{NB301_VAL}" if metric == "val_acc" else NB301_TEST
            skipped.append(f"{where}: not a NAS-Bench-301 result (needs {NB301_CONFIG} and {want})")
            continue
        try:
            genotype = genotype_from_nb301(config)
        except ValueError as e:
            skipped.append(f"{where}: {e}")
            continue
        _collect(rows, skipped, where, genotype.to_text(), accuracy, "percent", metric)
    return rows, skipped


def _merge(raw: list[_Raw]) -> tuple[list[Genotype], list[float], list[str]]:
    """One row per genotype hash (a node's two inputs in either order are the same genotype), accuracies averaged."""
    groups: dict[str, list[_Raw]] = {}
    for r in raw:
        groups.setdefault(genotype_hash(r.genotype), []).append(r)
    genotypes, accuracies, duplicates = [], [], []
    for key, group in groups.items():
        values = [r.accuracy for r in group]
        genotypes.append(group[0].genotype)
        accuracies.append(float(np.mean(values)))
        if len(group) > 1:
            where = ", ".join(r.where for r in group[:4]) + (" ..." if len(group) > 4 else "")
            spread = "the same accuracy" if len(set(values)) == 1 else \
                f"accuracies {', '.join(f'{v:.4f}' for v in values[:6])}{' ...' if len(values) > 6 else ''}"
            duplicates.append(f"genotype {key[:12]} {len(group)} times ({where}): {spread}; mean {np.mean(values):.4f}")
    return genotypes, accuracies, duplicates


def load_table(path: str | Path, accuracy_unit: str | None = None, setting: str | None = None,
               metric: str = "val_acc") -> Table:
    """Read a table of evaluated genotypes from ``path``; the format is told by the file.

    - an evaluation archive (SQLite, ``darts_lite.econas.Archive``): done evaluations of ``setting`` (needed when it
      holds several), at the setting's full epochs; ``metric`` val_acc or test_acc; accuracies are fractions.
    - ``.csv`` / ``.jsonl``: columns ``genotype`` (DARTS text or darts_lite JSON) and ``accuracy``, whose unit
      ``accuracy_unit`` ("fraction" or "percent") must say.
    - a NAS-Bench-301 result ``.json`` file or a folder of them: the configuration keys and ``info[0].val_accuracy``
      (``metric=test_acc``: ``test_accuracy``), in percent.

    Raises SurrogateDataError for a missing file, an unknown format, a wrong unit, or a table without two different
    accuracies; unreadable rows are skipped and listed in ``Table.skipped``.
    """
    path = Path(path)
    if metric not in METRICS:
        raise SurrogateDataError(f"surrogate.metric={metric!r}: must be one of {', '.join(METRICS)}")
    if accuracy_unit is not None and accuracy_unit not in UNITS:
        raise SurrogateDataError(f"surrogate.accuracy_unit={accuracy_unit!r}: must be fraction or percent")
    if not path.exists():
        raise SurrogateDataError(f"surrogate.data={path}: no such file or folder; give {FORMATS}")
    kind = table_format(path)
    if kind in ("archive", "nb301") and accuracy_unit is not None and accuracy_unit != _FIXED_UNIT[kind]:
        raise SurrogateDataError(f"surrogate.accuracy_unit={accuracy_unit}: {path} is {_FORMAT_NAME[kind]}, which store "
                                 f"accuracies as {_FIXED_UNIT[kind]}s; leave surrogate.accuracy_unit unset (null)")
    if kind in ("csv", "jsonl") and accuracy_unit is None:
        raise SurrogateDataError(f"surrogate.accuracy_unit is not set: say whether the accuracy column of {path} holds "
                                 "fractions (0.93) or percentages (93.0) with surrogate.accuracy_unit=fraction or percent")
    if kind != "archive" and setting is not None:
        raise SurrogateDataError(f"surrogate.setting={setting}: only an evaluation archive has settings, and {path} is "
                                 f"{_FORMAT_NAME[kind]}")
    notes: list[str] = []
    if kind == "archive":
        raw, skipped, notes = _read_archive(path, setting, metric)
    elif kind == "nb301":
        raw, skipped = _read_nb301(path, metric)
    else:
        raw, skipped = (_read_csv if kind == "csv" else _read_jsonl)(path, accuracy_unit)
    genotypes, accuracies, duplicates = _merge(raw)
    table = Table(genotypes, np.array(accuracies), str(path), skipped + notes, duplicates)
    require_learnable(table)
    return table


_FIXED_UNIT = {"archive": "fraction", "nb301": "percent"}  # the unit each format defines
_FORMAT_NAME = {"archive": "an evaluation archive", "nb301": "NAS-Bench-301 results", "csv": "a CSV file",
                "jsonl": "a JSONL file"}


def table_format(path: str | Path) -> str:
    """'archive', 'csv', 'jsonl' or 'nb301' for an existing ``path`` (an SQLite file is an archive whatever its name)."""
    path = Path(path)
    if path.is_dir():
        return "nb301"
    with open(path, "rb") as f:
        head = f.read(len(_SQLITE))
    if head == _SQLITE:
        return "archive"
    suffix = path.suffix.lower()
    if suffix in (".csv", ".jsonl", ".json"):
        return {"csv": "csv", "jsonl": "jsonl", "json": "nb301"}[suffix[1:]]
    raise SurrogateDataError(f"surrogate.data={path}: cannot tell its format from the name; give {FORMATS}")


def write_table(path: str | Path, genotypes: Iterable[Genotype], accuracies: Iterable[float]) -> Path:
    """Write a CSV table (genotype in the DARTS text format, accuracy as a fraction) that ``load_table`` reads back
    with ``accuracy_unit="fraction"``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_atomically(path) as f:
        writer = csv.writer(f)
        writer.writerow(["genotype", "accuracy"])
        for g, a in zip(genotypes, accuracies):
            writer.writerow([g.to_text(), f"{float(a):.6f}"])
    return path


# ---- NAS-Bench-301 configurations --------------------------------------------------------------------------
# Its DARTS cells: 4 intermediate nodes numbered 2..5, 14 edges numbered node by node (node 2: edges 0-1 from
# states 0, 1; node 3: edges 2-4; node 4: edges 5-8; node 5: edges 9-13). Only the two edges a node keeps are set.
_NB301_STEPS = 4
_NB301_OPS = tuple(p for p in PRIMITIVES if p != "none")


def _edge_start(node: int) -> int:
    """Index of the first edge into state ``node`` (2..5)."""
    return sum(range(2, node))


def genotype_to_nb301(genotype: Genotype) -> dict[str, str]:
    """NAS-Bench-301's configuration keys for a DARTS genotype: ``edge_{cell}_{K}`` = op of edge K for each kept
    edge, ``inputs_node_{cell}_{N}`` = "i_j" for nodes 3..5 (node 2 always reads states 0 and 1)."""
    if genotype.fixed_reduction or genotype.steps != _NB301_STEPS:
        raise ValueError("NAS-Bench-301 holds DARTS cells of 4 nodes with a searched reduction cell; this genotype "
                         + ("uses the fixed reduction cell" if genotype.fixed_reduction else f"has {genotype.steps} nodes"))
    config: dict[str, str] = {}
    for cell, pairs in genotype.cells().items():
        for k in range(_NB301_STEPS):
            (op_a, i), (op_b, j) = pairs[2 * k], pairs[2 * k + 1]
            node = k + 2
            if "none" in (op_a, op_b):
                raise ValueError(f"{cell} node {node} leaves an edge out (`none`); NAS-Bench-301 cells keep two per node")
            if i == j:
                raise ValueError(f"{cell} node {node} reads state {i} twice; NAS-Bench-301 cells read two distinct states")
            config[f"{NB301_PREFIX}edge_{cell}_{_edge_start(node) + i}"] = op_a
            config[f"{NB301_PREFIX}edge_{cell}_{_edge_start(node) + j}"] = op_b
            if node > 2:
                config[f"{NB301_PREFIX}inputs_node_{cell}_{node}"] = f"{i}_{j}"
    for cell in ("normal", "reduce"):
        if list(getattr(genotype, f"{cell}_concat")) != [2, 3, 4, 5]:
            raise ValueError(f"{cell}_concat is {list(getattr(genotype, f'{cell}_concat'))}; NAS-Bench-301 cells "
                             "concatenate states 2, 3, 4, 5")
    return config


def genotype_from_nb301(config: Mapping[str, Any]) -> Genotype:
    """The darts_lite Genotype of a NAS-Bench-301 configuration (its other hyperparameters are ignored). Raises
    ValueError naming the key that is missing or wrong."""
    if not isinstance(config, Mapping):
        raise ValueError(f"a NAS-Bench-301 configuration is a JSON object, got {type(config).__name__}")
    cells: dict[str, list[tuple[str, int]]] = {}
    for cell in ("normal", "reduce"):
        pairs: list[tuple[str, int]] = []
        for node in range(2, 2 + _NB301_STEPS):
            if node == 2:
                inputs = [0, 1]
            else:
                key = f"{NB301_PREFIX}inputs_node_{cell}_{node}"
                text = config.get(key)
                parts = text.split("_") if isinstance(text, str) else []
                if len(parts) != 2 or not all(p.isdigit() for p in parts):
                    raise ValueError(f"{key} is {text!r}; expected 'i_j', the two states node {node} reads")
                inputs = sorted(int(p) for p in parts)
                if inputs[0] == inputs[1] or inputs[1] >= node:
                    raise ValueError(f"{key} is {text!r}; node {node} reads two distinct states of 0..{node - 1}")
            for j in inputs:
                key = f"{NB301_PREFIX}edge_{cell}_{_edge_start(node) + j}"
                op = config.get(key)
                if op not in _NB301_OPS:
                    raise ValueError(f"{key} is {op!r}; expected one of {', '.join(_NB301_OPS)}")
                pairs.append((op, j))
            for j in range(node):
                key = f"{NB301_PREFIX}edge_{cell}_{_edge_start(node) + j}"
                if j not in inputs and key in config:
                    raise ValueError(f"{key} is set, but node {node} reads states {inputs[0]} and {inputs[1]}")
        cells[cell] = pairs
    return Genotype(normal=tuple(cells["normal"]), reduce=tuple(cells["reduce"]))


def nb301_result(genotype: Genotype, val_accuracy: float, test_accuracy: float | None = None) -> dict[str, Any]:
    """A NAS-Bench-301 result record for ``genotype`` (accuracies in percent), as ``load_table`` reads it."""
    result: dict[str, Any] = {NB301_CONFIG: genotype_to_nb301(genotype), "info": [{NB301_VAL: float(val_accuracy)}]}
    if test_accuracy is not None:
        result[NB301_TEST] = float(test_accuracy)
    return result


__all__ = ["METRICS", "NB301_PREFIX", "UNITS", "SurrogateDataError", "Table", "genotype_from_nb301", "genotype_to_nb301",
           "load_table", "nb301_result", "require_learnable", "table_format", "write_table"]
