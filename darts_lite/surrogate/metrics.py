"""How well a surrogate predicts: R^2 and rank correlations on genotypes it was not fitted on.

Sparse Kendall tau (NAS-Bench-301): true and predicted accuracies rounded to 0.1 percentage point before Kendall
tau, so that differences below what a training run can resolve do not count as rank errors. The top-k hit rate
is the share of the k truly best genotypes that are among the k predicted best. The splits are seeded: K-fold
(every genotype predicted once by a model that did not see it), a held-out split, and a learning curve (nested
subsets of the training part, scored on the same held-out part).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold
from torchmetrics.functional.regression import kendall_rank_corrcoef, spearman_corrcoef

from .data import SurrogateDataError, Table

METRIC_NAMES = ("r2", "kendall_tau", "sparse_kendall_tau", "spearman", "top_k_hit_rate")


class Predictor(Protocol):
    def fit(self, table: Table) -> Any: ...

    def predict(self, genotypes: Sequence[Any]) -> np.ndarray: ...


Factory = Callable[[], Predictor]
Progress = Callable[[str], None]


def _tensors(true: Sequence[float], pred: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.as_tensor(np.asarray(true, dtype=np.float64))
    p = torch.as_tensor(np.asarray(pred, dtype=np.float64))
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"true and predicted accuracies must be two vectors of one length, got {tuple(t.shape)} and "
                         f"{tuple(p.shape)}")
    return t, p


def _constant(x: torch.Tensor) -> bool:
    return bool((x == x[0]).all()) if len(x) else True


def r2(true: Sequence[float], pred: Sequence[float]) -> float:
    t, p = _tensors(true, pred)
    return float(r2_score(t.numpy(), p.numpy())) if len(t) >= 2 else math.nan


def kendall_tau(true: Sequence[float], pred: Sequence[float]) -> float:
    """Kendall tau-b (ties in either ranking allowed); NaN when either side is constant."""
    t, p = _tensors(true, pred)
    if len(t) < 2 or _constant(t) or _constant(p):
        return math.nan
    return float(kendall_rank_corrcoef(p, t, variant="b"))


def sparse_kendall_tau(true: Sequence[float], pred: Sequence[float], decimals: int = 1) -> float:
    """Kendall tau-b of the accuracies (fractions) rounded to 0.1 percentage point (``decimals`` of a percent)."""
    t, p = _tensors(true, pred)
    return kendall_tau(torch.round(t * 100, decimals=decimals), torch.round(p * 100, decimals=decimals))


def spearman(true: Sequence[float], pred: Sequence[float]) -> float:
    t, p = _tensors(true, pred)
    if len(t) < 2 or _constant(t) or _constant(p):
        return math.nan
    return float(spearman_corrcoef(p, t))


def top_k_hit_rate(true: Sequence[float], pred: Sequence[float], k: int) -> float:
    """Share of the k genotypes of highest true accuracy that are among the k of highest prediction (k capped at n)."""
    t, p = _tensors(true, pred)
    k = min(int(k), len(t))
    if k < 1:
        return math.nan
    best_true = set(np.argsort(-t.numpy(), kind="stable")[:k].tolist())
    best_pred = set(np.argsort(-p.numpy(), kind="stable")[:k].tolist())
    return len(best_true & best_pred) / k


def scores(true: Sequence[float], pred: Sequence[float], top_k: int = 10) -> dict[str, float]:
    """Every metric of METRIC_NAMES for one set of predictions."""
    return {"r2": r2(true, pred), "kendall_tau": kendall_tau(true, pred), "sparse_kendall_tau": sparse_kendall_tau(true, pred),
            "spearman": spearman(true, pred), "top_k_hit_rate": top_k_hit_rate(true, pred, top_k)}


# ---- splits and evaluations ---------------------------------------------------------------------------------
def holdout_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): a seeded random split with round(n * test_fraction) rows to test."""
    if not 0 < test_fraction < 1:
        raise SurrogateDataError(f"surrogate.test_fraction={test_fraction}: must be in (0, 1)")
    n_test = int(round(n * test_fraction))
    if n_test < 2 or n - n_test < 2:
        raise SurrogateDataError(f"a held-out split of {n} genotypes with test_fraction={test_fraction} leaves {n_test} "
                                 f"to test and {n - n_test} to fit; both need at least 2: give more genotypes")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


@dataclass
class Heldout:
    """A held-out evaluation: the fitted model's scores on the test rows and its predictions [len(test)]."""

    scores: dict[str, float]
    train: np.ndarray
    test: np.ndarray
    predictions: np.ndarray


def heldout(factory: Factory, table: Table, test_fraction: float = 0.2, seed: int = 0, top_k: int = 10) -> Heldout:
    """Fit a new model on a seeded (1 - test_fraction) part of ``table`` and score it on the rest."""
    train, test = holdout_split(len(table), test_fraction, seed)
    model = factory()
    model.fit(table.subset(train))
    pred = np.asarray(model.predict(table.subset(test).genotypes), dtype=np.float64)
    return Heldout(scores(table.accuracies[test], pred, top_k), train, test, pred)


@dataclass
class KFoldResult:
    """Per-fold scores, their mean and standard deviation, and the out-of-fold prediction of every row [n]."""

    folds: list[dict[str, float]]
    predictions: np.ndarray

    def mean(self) -> dict[str, float]:
        return {k: float(np.nanmean([f[k] for f in self.folds])) for k in METRIC_NAMES}

    def std(self) -> dict[str, float]:
        return {k: float(np.nanstd([f[k] for f in self.folds])) for k in METRIC_NAMES}


def kfold(factory: Factory, table: Table, folds: int = 5, seed: int = 0, top_k: int = 10,
          progress: Progress | None = None) -> KFoldResult:
    """Fit ``folds`` new models, each on all rows but one seeded fold, and score each on its fold."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise SurrogateDataError(f"surrogate.folds={folds!r}: must be an integer >= 2")
    if len(table) < 2 * folds:
        raise SurrogateDataError(f"{folds}-fold evaluation needs at least {2 * folds} genotypes (two per fold, to rank), "
                                 f"and the table has {len(table)}; lower surrogate.folds or give more genotypes")
    out = np.full(len(table), np.nan)
    results = []
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    for n, (train, test) in enumerate(splitter.split(np.arange(len(table)))):
        if progress:
            progress(f"fold {n + 1}/{folds}")
        model = factory()
        model.fit(table.subset(train))
        out[test] = model.predict(table.subset(test).genotypes)
        results.append(scores(table.accuracies[test], out[test], top_k))
    return KFoldResult(results, out)


def learning_curve(factory: Factory, table: Table, fractions: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
                   test_fraction: float = 0.2, seed: int = 0, top_k: int = 10,
                   progress: Progress | None = None) -> list[dict[str, Any]]:
    """Scores on one held-out part for models fitted on growing nested parts of the rest: one dict per fraction,
    {"fraction", "train_rows", **scores}. A part too small to fit (under 4 rows or one accuracy value) is left out."""
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise SurrogateDataError(f"surrogate.learning_curve: {f!r} is not a fraction in (0, 1]")
    train, test = holdout_split(len(table), test_fraction, seed)
    order = np.random.default_rng(seed + 1).permutation(train)  # nested: each part extends the smaller ones
    points = []
    for f in sorted(set(float(x) for x in fractions)):
        size = max(1, int(round(f * len(train))))
        part = table.subset(order[:size])
        if size < 4 or len(np.unique(part.accuracies)) < 2:
            continue
        if progress:
            progress(f"{size} training genotypes")
        model = factory()
        model.fit(part)
        pred = model.predict(table.subset(test).genotypes)
        points.append({"fraction": f, "train_rows": size, **scores(table.accuracies[test], pred, top_k)})
    return points


__all__ = ["METRIC_NAMES", "Heldout", "KFoldResult", "heldout", "holdout_split", "kendall_tau", "kfold", "learning_curve",
           "r2", "scores", "sparse_kendall_tau", "spearman", "top_k_hit_rate"]
