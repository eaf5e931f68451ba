"""The accuracy predictor of Once-for-All's specialisation: a small MLP from a sub-network's setting and input side
to its accuracy, fitted on sub-networks measured after BN calibration, so that an evolutionary search can score
thousands of settings without running any.

Encoding (fixed length): per block position of the largest depth, a one-hot of its kernel size and a one-hot of
its expand ratio, all zeros for a block its unit's depth skips (so depth is read from which blocks are zero);
then a one-hot of the input side. The predictor's file records the encoding's choices, its version, the fit's
held-out scores and the targets' scale; loading refuses a file of another version or encoding.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..torchfiles import is_state_dict, read_torch_file, weights_fit

PREDICTOR_VERSION = "dl-ofa-mlp-v1"
EPS = 1e-3  # accuracies are clamped to [EPS, 1 - EPS] before the logit


class PredictorError(ValueError):
    """A predictor file that cannot be used here."""


@dataclass(frozen=True)
class SubnetEncoding:
    """The choices a setting is encoded against: ks_list, expand_list, depth_list, blocks per unit, sides."""

    ks_list: tuple[int, ...]
    expand_list: tuple[float, ...]
    depth_list: tuple[int, ...]
    units: int
    sides: tuple[int, ...]

    @classmethod
    def of(cls, net: Any, sides: Sequence[int]) -> SubnetEncoding:
        """The encoding of an OFANetwork's choices and the input ``sides``."""
        return cls(tuple(net.ks_list), tuple(float(e) for e in net.expand_list), tuple(net.depth_list), len(net.units),
                   tuple(sorted(set(int(s) for s in sides))))

    @property
    def per_unit(self) -> int:
        return self.depth_list[-1]

    @property
    def size(self) -> int:
        return self.units * self.per_unit * (len(self.ks_list) + len(self.expand_list)) + len(self.sides)

    def vector(self, setting: dict[str, Sequence], side: int) -> list[float]:
        """The [size] encoding of ``setting`` ({"ks", "e": per block; "d": per unit}) at input ``side``."""
        out: list[float] = []
        nk, ne = len(self.ks_list), len(self.expand_list)
        for u, depth in enumerate(setting["d"]):
            for j in range(self.per_unit):
                i = u * self.per_unit + j
                block = [0.0] * (nk + ne)
                if j < depth:
                    block[self.ks_list.index(setting["ks"][i])] = 1.0
                    block[nk + self.expand_list.index(float(setting["e"][i]))] = 1.0
                out += block
        sides = [0.0] * len(self.sides)
        sides[self.sides.index(int(side))] = 1.0
        return out + sides

    def matrix(self, items: Sequence[tuple[dict[str, Sequence], int]]) -> torch.Tensor:
        """[len(items), size] encodings of (setting, side) pairs."""
        return torch.tensor([self.vector(s, side) for s, side in items], dtype=torch.float32).reshape(len(items), self.size)

    def to_dict(self) -> dict[str, Any]:
        return {"ks_list": list(self.ks_list), "expand_list": list(self.expand_list), "depth_list": list(self.depth_list),
                "units": self.units, "sides": list(self.sides)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SubnetEncoding:
        return cls(tuple(d["ks_list"]), tuple(float(e) for e in d["expand_list"]), tuple(d["depth_list"]), int(d["units"]),
                   tuple(d["sides"]))


class AccuracyPredictor(nn.Module):
    """MLP: [N, encoding.size] -> [N] predicted accuracy in (0, 1): the network regresses the standardised logit
    of the accuracy (mean and std kept as buffers), and the output goes back through the sigmoid."""

    def __init__(self, encoding: SubnetEncoding, hidden: int = 128, layers: int = 3):
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError(f"predictor hidden={hidden}, layers={layers}: both must be >= 1")
        self.encoding, self.hidden, self.layers = encoding, hidden, layers
        dims = [encoding.size] + [hidden] * layers
        body: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            body += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*body, nn.Linear(dims[-1], 1))
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))
        self.metrics: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(x).squeeze(-1) * self.std + self.mean)

    @torch.no_grad()
    def predict(self, items: Sequence[tuple[dict[str, Sequence], int]]) -> list[float]:
        """Predicted accuracy of each (setting, side); a prediction, not a measurement."""
        if not items:
            return []
        self.eval()
        return self(self.encoding.matrix(items)).tolist()

    def fit(self, items: Sequence[tuple[dict[str, Sequence], int]], accuracy: Sequence[float], epochs: int = 400,
            lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0) -> AccuracyPredictor:
        """Fit on measured (setting, side) -> accuracy: full-batch Adam on the mean squared error of standardised
        targets, cosine learning rate; seeded (same data and seed, same weights)."""
        if len(items) != len(accuracy) or len(items) < 2:
            raise ValueError(f"a predictor needs at least 2 measured sub-networks with one accuracy each; got "
                             f"{len(items)} settings and {len(accuracy)} accuracies")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for layer in self.body:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
            x = self.encoding.matrix(items)
            # regressed in logit space: predictions stay accuracies in (0, 1) however far a search extrapolates
            y = torch.logit(torch.tensor(list(accuracy), dtype=torch.float32).clamp(EPS, 1 - EPS))
            self.mean.fill_(float(y.mean()))
            self.std.fill_(max(float(y.std()), 1e-6))
            target = (y - self.mean) / self.std
            opt = torch.optim.Adam(self.body.parameters(), lr=lr, weight_decay=weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
            self.train()
            for _ in range(epochs):
                opt.zero_grad()
                loss = nn.functional.mse_loss(self.body(x).squeeze(-1), target)
                loss.backward()
                opt.step()
                sched.step()
        return self.eval()

    def save(self, path: str | Path, record: dict[str, Any] | None = None) -> Path:
        """A file ``load_predictor`` reads (weights-only torch format): version, encoding, sizes, weights, metrics,
        and ``record`` (what it was fitted on)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"version": PREDICTOR_VERSION, "encoding": self.encoding.to_dict(), "hidden": self.hidden,
                    "layers": self.layers, "state_dict": self.state_dict(), "metrics": self.metrics,
                    "record": record or {}}, path)
        return path


def load_predictor(path: str | Path, encoding: SubnetEncoding | None = None) -> tuple[AccuracyPredictor, dict[str, Any]]:
    """(predictor, record) from a file ``AccuracyPredictor.save`` wrote; PredictorError for another version, or
    another encoding than ``encoding`` when given, and for any file that is not such a file (read weights-only, its
    sizes checked against its weights before the predictor is built: see darts_lite.torchfiles)."""
    what = f"{path}: not an accuracy predictor file darts_lite wrote"
    saved = read_torch_file(path, str(path), PredictorError)
    version = saved.get("version")
    if version != PREDICTOR_VERSION:
        raise PredictorError(f"{path}: a predictor file of version {version!r}; this darts_lite reads {PREDICTOR_VERSION}. "
                             "Fit it again (delete the file: the next specialisation measures and fits a new one)")
    try:
        stored = _stored_encoding(saved["encoding"])
        hidden, layers, state = saved["hidden"], saved["layers"], saved["state_dict"]
        metrics, record = dict(saved.get("metrics") or {}), dict(saved.get("record") or {})
    except Exception as e:  # a key missing, or a value of another type than save writes
        raise PredictorError(f"{what} ({type(e).__name__}: {e})") from None
    if encoding is not None and stored != encoding:
        raise PredictorError(f"{path}: fitted for choices {stored.to_dict()}, this network and its sides are "
                             f"{encoding.to_dict()}")
    sizes = (hidden, layers)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes) or not is_state_dict(state) \
            or not 1 <= layers <= len(state) or hidden < 1:
        raise PredictorError(f"{what} (hidden={hidden!r}, layers={layers!r} and the weights do not go together)")
    weights_fit(lambda: AccuracyPredictor(stored, hidden, layers), state, str(path), PredictorError)
    model = AccuracyPredictor(stored, hidden, layers)
    model.load_state_dict(state)
    model.metrics = metrics
    return model.eval(), record


def _stored_encoding(d: Any) -> SubnetEncoding:
    """The SubnetEncoding a predictor file records; ValueError when a choice is not a number it can be."""
    if not isinstance(d, dict):
        raise ValueError(f"the encoding is a {type(d).__name__}")
    stored = SubnetEncoding.from_dict(d)
    counts = (*stored.ks_list, *stored.depth_list, stored.units, *stored.sides)
    if not (stored.ks_list and stored.expand_list and stored.depth_list and stored.sides) \
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in counts) \
            or not all(math.isfinite(e) and e > 0 for e in stored.expand_list):
        raise ValueError(f"the encoding's choices {d} are not lists of sizes >= 1")
    return stored


def rank_scores(predicted: Sequence[float], true: Sequence[float]) -> dict[str, float]:
    """Kendall tau, Spearman rho and RMSE of predictions against measured accuracies (ties: average ranks)."""
    from scipy.stats import kendalltau, spearmanr

    n = len(true)
    if n < 2 or len(set(predicted)) < 2 or len(set(true)) < 2:  # a constant side has no ranking
        rmse = math.sqrt(sum((p - t) ** 2 for p, t in zip(predicted, true)) / n) if n else math.nan
        return {"kendall_tau": math.nan, "spearman": math.nan, "rmse": rmse, "n": n}
    rmse = math.sqrt(sum((p - t) ** 2 for p, t in zip(predicted, true)) / n)
    return {"kendall_tau": float(kendalltau(predicted, true).statistic), "spearman": float(spearmanr(predicted, true).statistic),
            "rmse": rmse, "n": n}


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices of n items, a seeded shuffle; at least 2 on each side when n >= 4."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = min(max(2, round(test_fraction * n)), n - 2) if n >= 4 else 0
    return sorted(order[held:]), sorted(order[:held])
