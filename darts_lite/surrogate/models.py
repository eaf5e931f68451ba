"""Surrogate models: fit on a table of evaluated genotypes, predict the accuracy (a fraction) of any genotype.

Three kinds, one interface (`Surrogate`: ``fit(table)``, ``predict(genotypes)``, ``save(path)``, ``load(path)``):

- ``lgbm``: gradient-boosted trees (LightGBM, the extra ``pip install "darts_lite[surrogates]"``) on the flat encoding;
- ``gin``: a graph isomorphism network in plain PyTorch on the graph encoding;
- ``forest``: a scikit-learn random forest on the flat encoding.

A saved model is one JSON file: its kind, a version string (``dl-gin-v1``: the model and its encoding; a change
to either gives a new version), the options, the hash of the table it was fitted on, its fit metrics and any
evaluation the caller recorded, and the model itself in a form that needs no pickle: LightGBM's own text model
format, the forest's tree arrays, the GIN's weights as numbers. Loading checks the format, kind and version first
and refuses anything else with one message. A surrogate's output is a prediction, never a measured accuracy.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import AllowInfNan
from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from ..schema import Ge, Gt, Hint, Le, node_problems
from ..spaces.darts.genotype import Genotype
from ..torchfiles import write_text_atomically
from .data import Table, require_learnable
from .encodings import FlatEncoding, GraphEncoding
from .metrics import scores

FORMAT = "darts_lite-surrogate"
MAX_FILE = 2_000_000_000  # bytes; a forest of a few hundred thousand genotypes stays far below


class SurrogateFileError(ConfigError):
    """A file given as a saved surrogate cannot be loaded by this darts_lite; the message says why."""


def lightgbm_available() -> bool:
    return importlib.util.find_spec("lightgbm") is not None


def _lightgbm() -> Any:
    if not lightgbm_available():
        raise ConfigError('the lgbm surrogate needs LightGBM: pip install "darts_lite[surrogates]" (or drop lgbm from '
                          "surrogate.models)")
    import lightgbm

    return lightgbm


class Surrogate:
    """A fitted (or loaded) accuracy predictor. ``predict(genotypes)`` is the one method a search needs."""

    kind: ClassVar[str]
    version: ClassVar[str]
    encoding: ClassVar[str]
    # the model's options: a frozen dataclass whose typed, constrained fields (darts_lite.schema) are the schema of
    # surrogate.<kind> and whose defaults are the model's
    Options: ClassVar[type]

    def __init__(self, seed: int = 0, **options: Any):
        problems = self.check_options(options)
        if problems:
            raise ConfigError("; ".join(problems))
        self.seed = int(seed)
        self.options = dataclasses.asdict(self.Options(**options))
        self.trained_on: dict[str, Any] | None = None  # data hash, rows, fit metrics: set by fit or load
        self.evaluation: dict[str, Any] = {}  # what the caller measured on held-out data, saved with the model

    @classmethod
    def check_options(cls, options: dict[str, Any], prefix: str = "") -> list[str]:
        """Problems of ``options`` as "name=value: what it must be" (unknown names included)."""
        return node_problems(options, prefix, target=cls.Options)

    # ---- fitting and predicting ---------------------------------------------------------------------------
    def fit(self, table: Table) -> Surrogate:
        """Fit on every row of ``table`` (accuracies as fractions); returns self."""
        require_learnable(table, f"the table the {self.kind} surrogate is fitted on")
        self._fit(table)
        fitted = self.predict(table.genotypes)
        self.trained_on = {"data_hash": table.data_hash(), "rows": len(table), "source": table.source,
                           "fit_metrics": scores(table.accuracies, fitted)}
        return self

    def predict(self, genotypes: Sequence[Genotype]) -> np.ndarray:
        """Predicted accuracies (fractions) [len(genotypes)], float64."""
        if not self._ready():
            raise ValueError(f"the {self.kind} surrogate is not fitted: call fit(table) or load a saved one")
        if len(genotypes) == 0:
            return np.zeros(0)
        return np.asarray(self._predict(list(genotypes)), dtype=np.float64).reshape(-1)

    def _ready(self) -> bool:
        raise NotImplementedError

    def _fit(self, table: Table) -> None:
        raise NotImplementedError

    def _predict(self, genotypes: list[Genotype]) -> np.ndarray:
        raise NotImplementedError

    def _payload(self) -> dict[str, Any]:
        raise NotImplementedError

    def _restore(self, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    # ---- files --------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model as one JSON file (see the module docstring); returns the path."""
        if self.trained_on is None:
            raise ValueError(f"the {self.kind} surrogate is not fitted; nothing to save")
        from .._version import __version__

        record = {"format": FORMAT, "kind": self.kind, "version": self.version, "encoding": self.encoding,
                  "options": self.options, "seed": self.seed, **self.trained_on, "evaluation": self.evaluation,
                  "darts_lite": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "model": self._payload()}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(record, allow_nan=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Surrogate:
        """A saved surrogate; called on a subclass, the file must hold that kind."""
        return load_surrogate(path, kind=None if cls is Surrogate else cls.kind)

    def describe(self) -> str:
        rows = self.trained_on["rows"] if self.trained_on else 0
        return f"{self.version} ({self.kind}, fitted on {rows} genotypes)"


def load_surrogate(path: str | Path, kind: str | None = None) -> Surrogate:
    """Read a file written by ``Surrogate.save``. Raises SurrogateFileError for a file that is not one, or holds
    another kind than ``kind`` or another version than this darts_lite writes."""
    path = Path(path)
    if path.is_dir():
        raise SurrogateFileError(f"surrogate file {path}: a folder, not a file")
    if not path.is_file():
        raise SurrogateFileError(f"surrogate file {path}: no such file")
    if path.stat().st_size > MAX_FILE:
        raise SurrogateFileError(f"surrogate file {path} is {path.stat().st_size} bytes, more than a saved surrogate is")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise SurrogateFileError(f"{path} is not a darts_lite surrogate file (not JSON text)") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise SurrogateFileError(f"{path} is not a darts_lite surrogate file (no format {FORMAT!r})")
    found = record.get("kind")
    if found not in MODELS:
        raise SurrogateFileError(f"{path} holds a surrogate of kind {found!r}, which this darts_lite does not know "
                                 f"(it knows {', '.join(MODELS)})")
    if kind is not None and found != kind:
        raise SurrogateFileError(f"{path} holds a {found} surrogate, not a {kind} one")
    cls = MODELS[found]
    if record.get("version") != cls.version:
        raise SurrogateFileError(f"{path} holds a {found} surrogate of version {record.get('version')!r}; this darts_lite "
                                 f"reads {cls.version} only: fit it again with +experiment=surrogate")
    try:
        model = cls(seed=record.get("seed", 0), **record.get("options", {}))
        model._restore(record["model"])
        model.trained_on = {k: record[k] for k in ("data_hash", "rows", "source", "fit_metrics")}
        kinds = {"data_hash": str, "rows": int, "source": str, "fit_metrics": dict}
        if not all(isinstance(record[k], kind) for k, kind in kinds.items()) \
                or not isinstance(record.get("evaluation") or {}, dict):
            raise ValueError("what it was fitted on (data_hash, rows, source, fit_metrics) or its evaluation is of "
                             "other types")
    except Exception as e:  # numpy's, torch's and LightGBM's own errors too: each means a damaged file
        raise SurrogateFileError(f"{path}: a damaged {cls.version} file ({type(e).__name__}: {e})") from None
    model.evaluation = record.get("evaluation") or {}
    return model


# ---- LightGBM ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LightGBMOptions:
    """The lightgbm surrogate's options (surrogate.lgbm)."""

    trees: Annotated[int, Ge(1), Hint("boosting rounds")] = 300
    learning_rate: Annotated[float, Gt(0), AllowInfNan(False)] = 0.05
    leaves: Annotated[int, Ge(2), Hint("leaves per tree")] = 15
    min_child_samples: Annotated[int, Ge(1), Hint("genotypes per leaf")] = 5


class LightGBMSurrogate(Surrogate):
    """Gradient-boosted regression trees (LightGBM) on the flat encoding."""

    kind = "lgbm"
    version = "dl-lgbm-v1"
    encoding = FlatEncoding.name
    Options = LightGBMOptions

    def __init__(self, seed: int = 0, **options: Any):
        super().__init__(seed, **options)
        self.booster: Any = None

    def _ready(self) -> bool:
        return self.booster is not None

    def _fit(self, table: Table) -> None:
        lgb = _lightgbm()
        params = {"objective": "regression", "learning_rate": self.options["learning_rate"],
                  "num_leaves": self.options["leaves"], "min_data_in_leaf": self.options["min_child_samples"],
                  "min_data_in_bin": 1, "feature_fraction": 0.8, "feature_fraction_seed": self.seed, "seed": self.seed,
                  "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbosity": -1}
        data = lgb.Dataset(FlatEncoding().encode(table.genotypes), table.accuracies, params={"verbosity": -1})
        self.booster = lgb.train(params, data, num_boost_round=self.options["trees"])

    def _predict(self, genotypes: list[Genotype]) -> np.ndarray:
        return self.booster.predict(FlatEncoding().encode(genotypes), num_threads=1)

    def _payload(self) -> dict[str, Any]:
        return {"booster": self.booster.model_to_string()}

    def _restore(self, payload: dict[str, Any]) -> None:
        text = payload["booster"]
        if not isinstance(text, str):
            raise ValueError("the booster is not LightGBM model text")
        why = booster_problem(text, FlatEncoding().width)
        if why:
            raise ValueError(why)
        self.booster = _lightgbm().Booster(model_str=text)
        if self.booster.num_feature() != FlatEncoding().width:
            raise ValueError(f"the booster reads {self.booster.num_feature()} features, the flat encoding has "
                             f"{FlatEncoding().width}")


# LightGBM's text model format, as far as the surrogate's regression boosters use it: the fields of each tree,
# per internal node (n - 1 values) or per leaf (n values), whole numbers or any number
_NODE_INTS = ("split_feature", "decision_type", "left_child", "right_child", "internal_count")
_NODE_FLOATS = ("split_gain", "threshold", "internal_value", "internal_weight")
_LEAF_FIELDS = {"leaf_value": False, "leaf_weight": False, "leaf_count": True}  # field -> whole numbers
_TREE_FIELDS = {"num_leaves", "num_cat", "is_linear", "shrinkage", *_NODE_INTS, *_NODE_FLOATS, *_LEAF_FIELDS}
_INT = re.compile(r"-?\d{1,10}")
_FLOAT = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|nan)", re.IGNORECASE)
_FEATURE_INFO = re.compile(r"none|\[[-+.\deEinfa]+:[-+.\deEinfa]+\]")
# what follows the trees: feature importances, the training parameters and the pandas categories line
_TAIL_LINE = re.compile(r"|end of trees|feature_importances:|[\w.-]+=\d+|parameters:|\[\w+: [ -Z^-~]*\]"
                        r"|end of parameters|pandas_categorical:[ -~]*")


def booster_problem(text: str, width: int) -> str | None:
    """Why ``text`` is not the model text LightGBM writes for a regression booster on ``width`` features (one tree
    per iteration, numerical splits), or None. LightGBM's parser trusts its input: a truncated text, or a child
    index or feature out of range, makes it read past its buffers and can abort the whole process. So every field it
    reads is checked here first: the header, each tree's fields and structure (each node reached once, from a node
    before it), the tree sizes it seeks by, and the lines after the trees."""
    if not text.isascii() or "\r" in text or "\x00" in text:
        return "the booster text holds characters LightGBM never writes"
    head, found, rest = text.partition("\nTree=")
    if not found:
        return "the booster text has no trees (a truncated file?)"
    header = dict(line.split("=", 1) for line in head.split("\n") if "=" in line)
    expected = {"num_class": "1", "num_tree_per_iteration": "1", "label_index": "0",
                "max_feature_idx": str(width - 1), "objective": "regression"}
    for key, value in expected.items():
        if header.get(key) != value:
            return f"the booster's {key} is {header.get(key)!r}, not {value} (a booster of another model)"
    names, infos = header.get("feature_names", "").split(" "), header.get("feature_infos", "").split(" ")
    if len(names) != width or len(infos) != width or not all(_FEATURE_INFO.fullmatch(i) for i in infos):
        return f"the booster does not describe {width} features"
    sizes = header.get("tree_sizes", "").split(" ")
    if not all(s.isdigit() and len(s) < 10 for s in sizes):
        return "the booster's tree_sizes are not sizes"
    body, start = "Tree=" + rest, 0
    for i, size in enumerate(int(s) for s in sizes):
        block = body[start:start + size]
        start += size
        if len(block) != size:
            return "the booster text ends before its trees do (a truncated file?)"
        why = _tree_problem(block, i, width)
        if why:
            return f"the booster's tree {i}: {why}"
    tail = body[start:].split("\n")
    if tail[0] != "end of trees" or not all(_TAIL_LINE.fullmatch(line) for line in tail):
        return "the booster text does not end as LightGBM ends it (end of trees, importances, parameters)"
    return None


def _tree_problem(block: str, index: int, width: int) -> str | None:
    """Why one tree's text (``Tree=<index>``, its fields, a blank line) is not one LightGBM can read, or None."""
    lines = block.split("\n")
    if lines[0] != f"Tree={index}" or "" not in lines[1:]:
        return "not a tree's text"
    end = lines.index("", 1)
    fields = dict(line.split("=", 1) for line in lines[1:end] if "=" in line)
    if len(fields) != end - 1 or not set(fields) <= _TREE_FIELDS or any(lines[end:]):
        return "fields LightGBM does not write"
    leaves = int(fields["num_leaves"]) if _INT.fullmatch(fields.get("num_leaves", "")) else 0
    if leaves < 1 or fields.get("num_cat") != "0" or fields.get("is_linear", "0") != "0":
        return "not a tree of numerical splits with at least one leaf"
    if "leaf_value" not in fields or (leaves > 1 and not {"left_child", "right_child", "split_feature",
                                                          "threshold"} <= set(fields)):
        return "a field it needs is missing"
    if "shrinkage" in fields and not _FLOAT.fullmatch(fields["shrinkage"]):
        return "its shrinkage is not a number"
    values: dict[str, list[str]] = {}
    for key in (*_NODE_INTS, *_NODE_FLOATS, *_LEAF_FIELDS):
        if key in fields:
            values[key] = fields[key].split(" ") if fields[key] else []
            if leaves == 1 and key != "leaf_value" and not values[key]:
                continue  # a tree of one leaf: LightGBM writes (and reads) its leaf value only
            whole = key in _NODE_INTS or _LEAF_FIELDS.get(key, False)
            if len(values[key]) != (leaves if key in _LEAF_FIELDS else leaves - 1) \
                    or not all((_INT if whole else _FLOAT).fullmatch(v) for v in values[key]):
                return f"its {key} is not {leaves if key in _LEAF_FIELDS else leaves - 1} numbers"
    if leaves == 1:
        return None
    left, right, feature = ([int(v) for v in values[k]] for k in ("left_child", "right_child", "split_feature"))
    decisions = [int(v) for v in values.get("decision_type", [])]
    # a decision type: bit 0 categorical (never here), bit 1 default left, bits 2-3 the missing-value rule (0-2)
    if any(not 0 <= d < 16 or d & 1 or d >> 2 > 2 for d in decisions) or any(not 0 <= f < width for f in feature):
        return "a split reads a feature or a decision rule the booster does not have"
    reached = [0] * (2 * leaves - 1)  # internal nodes 0..n-2, then leaves n-1..2n-2
    for node in range(leaves - 1):
        for child in (left[node], right[node]):
            if child >= 0 and not node < child < leaves - 1 or child < 0 and ~child >= leaves:
                return "a child points outside the tree or back up it"
            reached[child if child >= 0 else leaves - 1 + ~child] += 1
    if reached[1:] != [1] * (2 * leaves - 2):
        return "its nodes are not each reached once"
    return None


# ---- random forest ----------------------------------------------------------------------------------------
_TREE_KEYS = ("left", "right", "feature", "threshold", "value")


def _tree_predict(tree: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Walk every row of x [n, features] down one tree (go left when x[feature] <= threshold, as scikit-learn)."""
    node = np.zeros(len(x), dtype=np.int64)
    rows = np.arange(len(x))
    while True:
        inner = tree["left"][node] >= 0
        if not inner.any():
            return tree["value"][node]
        r, n = rows[inner], node[inner]
        go_left = x[r, tree["feature"][n]] <= tree["threshold"][n]
        node[inner] = np.where(go_left, tree["left"][n], tree["right"][n])


@dataclasses.dataclass(frozen=True)
class ForestOptions:
    """The forest surrogate's options (surrogate.forest)."""

    trees: Annotated[int, Ge(1)] = 100
    min_samples_leaf: Annotated[int, Ge(1)] = 1
    max_features: Annotated[float, Gt(0), Le(1), Hint("the share of features per split")] = 0.5


class ForestSurrogate(Surrogate):
    """A scikit-learn random forest on the flat encoding; saved as its trees' arrays and predicted from them."""

    kind = "forest"
    version = "dl-forest-v1"
    encoding = FlatEncoding.name
    Options = ForestOptions

    def __init__(self, seed: int = 0, **options: Any):
        super().__init__(seed, **options)
        self.trees: list[dict[str, np.ndarray]] = []

    def _ready(self) -> bool:
        return bool(self.trees)

    def _fit(self, table: Table) -> None:
        from sklearn.ensemble import RandomForestRegressor

        forest = RandomForestRegressor(n_estimators=self.options["trees"], min_samples_leaf=self.options["min_samples_leaf"],
                                       max_features=float(self.options["max_features"]), random_state=self.seed, n_jobs=1)
        forest.fit(FlatEncoding().encode(table.genotypes), table.accuracies)
        self.trees = [{"left": t.tree_.children_left.astype(np.int64), "right": t.tree_.children_right.astype(np.int64),
                       "feature": t.tree_.feature.astype(np.int64), "threshold": t.tree_.threshold.astype(np.float64),
                       "value": t.tree_.value[:, 0, 0].astype(np.float64)} for t in forest.estimators_]

    def _predict(self, genotypes: list[Genotype]) -> np.ndarray:
        x = FlatEncoding().encode(genotypes)
        return np.mean([_tree_predict(t, x) for t in self.trees], axis=0)

    def _payload(self) -> dict[str, Any]:
        return {"trees": [{k: t[k].tolist() for k in _TREE_KEYS} for t in self.trees]}

    def _restore(self, payload: dict[str, Any]) -> None:
        width = FlatEncoding().width
        trees = []
        for t in payload["trees"]:
            tree = {k: np.asarray(t[k], dtype=np.float64 if k in ("threshold", "value") else np.int64) for k in _TREE_KEYS}
            size = len(tree["left"])
            if any(len(v) != size or v.ndim != 1 for v in tree.values()) or size == 0:
                raise ValueError("a tree's arrays differ in length")
            inner = tree["left"] >= 0
            parents = np.nonzero(inner)[0]
            children = np.concatenate([tree["left"][inner], tree["right"][inner]])
            # a child comes after its parent (so a walk down always ends) and inside the tree
            if (children <= np.concatenate([parents, parents])).any() or (children >= size).any():
                raise ValueError("a tree's child points outside the tree or back up it")
            if (tree["feature"][inner] < 0).any() or (tree["feature"][inner] >= width).any():
                raise ValueError("a tree reads a feature the flat encoding does not have")
            trees.append(tree)
        if not trees:
            raise ValueError("the forest has no trees")
        self.trees = trees


# ---- GIN --------------------------------------------------------------------------------------------------
class GIN(nn.Module):
    """A graph isomorphism network over dense graphs: x [B, N, F], adjacency [B, N, N] -> prediction [B].

    Each layer: h <- MLP((1 + eps) h + sum of the neighbours' h), neighbours in both directions of an edge; the
    readout concatenates the sum over nodes after every layer (Xu et al., 2019)."""

    def __init__(self, in_features: int, hidden: int = 32, layers: int = 3):
        super().__init__()
        self.embed = nn.Linear(in_features, hidden)
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
                                  for _ in range(layers))
        self.eps = nn.Parameter(torch.zeros(layers))
        self.head = nn.Sequential(nn.Linear(hidden * (layers + 1), hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        neighbours = adjacency + adjacency.transpose(1, 2)
        h = self.embed(x)
        readout = [h.sum(dim=1)]
        for eps, mlp in zip(self.eps, self.mlps):
            h = torch.relu(mlp((1 + eps) * h + neighbours @ h))
            readout.append(h.sum(dim=1))
        return self.head(torch.cat(readout, dim=-1)).squeeze(-1)


@dataclasses.dataclass(frozen=True)
class GINOptions:
    """The gin surrogate's options (surrogate.gin)."""

    hidden: Annotated[int, Ge(1), Hint("features per node")] = 32
    layers: Annotated[int, Ge(1), Hint("message-passing rounds")] = 3
    epochs: Annotated[int, Ge(1)] = 200
    lr: Annotated[float, Gt(0), AllowInfNan(False)] = 0.003
    batch_size: Annotated[int, Ge(1)] = 32
    weight_decay: Annotated[float, Ge(0), AllowInfNan(False)] = 0.0001


class GINSurrogate(Surrogate):
    """A GIN on the graph encoding, trained with Adam (cosine learning rate) on standardised accuracies."""

    kind = "gin"
    version = "dl-gin-v1"
    encoding = GraphEncoding.name
    Options = GINOptions

    def __init__(self, seed: int = 0, **options: Any):
        super().__init__(seed, **options)
        self.net: GIN | None = None
        self.mean, self.std = 0.0, 1.0

    def _new_net(self) -> GIN:
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, the caller's generator left as it was
            torch.manual_seed(self.seed)
            return GIN(GraphEncoding().features, self.options["hidden"], self.options["layers"])

    def _ready(self) -> bool:
        return self.net is not None

    def _fit(self, table: Table) -> None:
        x, adj = (torch.from_numpy(a) for a in GraphEncoding().encode(table.genotypes))
        y = torch.as_tensor(table.accuracies, dtype=torch.float64)
        self.mean, self.std = float(y.mean()), float(y.std()) or 1.0
        target = ((y - self.mean) / self.std).float()
        net = self._new_net()
        epochs, batch = self.options["epochs"], self.options["batch_size"]
        opt = torch.optim.Adam(net.parameters(), lr=self.options["lr"], weight_decay=self.options["weight_decay"])
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        generator = torch.Generator().manual_seed(self.seed)
        net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(y), generator=generator).split(batch):
                loss = nn.functional.mse_loss(net(x[idx], adj[idx]), target[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            schedule.step()
        self.net = net.eval()

    @torch.no_grad()
    def _predict(self, genotypes: list[Genotype]) -> np.ndarray:
        out = []
        for start in range(0, len(genotypes), 1024):
            x, adj = (torch.from_numpy(a) for a in GraphEncoding().encode(genotypes[start:start + 1024]))
            out.append(self.net(x, adj).double() * self.std + self.mean)
        return torch.cat(out).numpy()

    def _payload(self) -> dict[str, Any]:
        state = {k: {"shape": list(v.shape), "values": v.detach().cpu().flatten().tolist()}
                 for k, v in self.net.state_dict().items()}
        return {"state": state, "mean": self.mean, "std": self.std}

    def _restore(self, payload: dict[str, Any]) -> None:
        saved = payload["state"]
        if not isinstance(saved, dict) or len(saved) < self.options["layers"]:
            raise ValueError("the weights are not those of a GIN with these options (fewer than its layers)")
        # the shapes the options give, on the meta device: options far larger than the weights saved with them (a
        # damaged or hostile file) take no memory before they are refused
        with torch.device("meta"):
            expected = GIN(GraphEncoding().features, self.options["hidden"], self.options["layers"]).state_dict()
        if set(saved) != set(expected):
            raise ValueError(f"the weights are not those of a GIN with these options (keys {sorted(saved)[:4]} ...)")
        for key, tensor in expected.items():
            if list(saved[key]["shape"]) != list(tensor.shape) or len(saved[key]["values"]) != tensor.numel():
                raise ValueError(f"weight {key} has shape {saved[key]['shape']} and {len(saved[key]['values'])} "
                                 f"values, expected {list(tensor.shape)}")
        net = self._new_net()
        state = {key: torch.tensor(saved[key]["values"], dtype=torch.float32).reshape(tensor.shape)
                 for key, tensor in expected.items()}
        mean, std = float(payload["mean"]), float(payload["std"])
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise ValueError(f"the accuracies' mean {mean} and standard deviation {std} are not numbers")
        net.load_state_dict(state)
        self.net = net.eval()
        self.mean, self.std = mean, std


MODELS: Registry[type[Surrogate]] = Registry("surrogate model")
MODELS.register("lgbm", LightGBMSurrogate, summary="gradient-boosted trees (LightGBM) on the flat encoding")
MODELS.register("gin", GINSurrogate, summary="a graph isomorphism network on the cell graph, in plain PyTorch")
MODELS.register("forest", ForestSurrogate, summary="a random forest (scikit-learn) on the flat encoding")


def make_surrogate(kind: str, seed: int = 0, **options: Any) -> Surrogate:
    """A new, unfitted surrogate of ``kind`` (lgbm, gin, forest)."""
    if kind not in MODELS:
        raise ConfigError(f"surrogate model {kind!r}: must be one of {MODELS.choices()}")
    if kind == "lgbm":
        _lightgbm()
    return MODELS[kind](seed=seed, **options)


__all__ = ["FORMAT", "GIN", "MODELS", "ForestSurrogate", "GINSurrogate", "LightGBMSurrogate", "Surrogate",
           "SurrogateFileError", "booster_problem", "lightgbm_available", "load_surrogate", "make_surrogate"]
