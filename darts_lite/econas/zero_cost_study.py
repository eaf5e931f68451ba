"""Zero-cost proxies in the proxy study: each sampled architecture's untrained evaluation network, built as the
reference setting would train it, scored from one training batch (``darts_lite.zero_cost``); the scores are ranked
against the reference's accuracies as a training proxy's accuracies are, with the same intervals and a speed-up
measured the same way (the reference's training wall time over the scoring time, both on this machine).

A study's proxy list names them ``zc_<proxy>`` (``zc_synflow``, ``zc_nwot``, ...) beside its training settings, and
``zc_vote``: the vote of synflow, jacob_cov and snip (Abdelfattah et al., ICLR 2021), here as an architecture's
number of pairwise wins (it beats another when a majority of the three proxies score it higher). A score that is
not a number (jacob_cov of a network whose output does not depend on its input) leaves that architecture out of
that proxy's row, as a failed evaluation is left out of a training proxy's.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..torchfiles import open_atomically
from .settings import Setting

PREFIX = "zc_"
VOTE = "vote"
VOTERS = ("synflow", "jacob_cov", "snip")


def is_zero_cost(entry: Any) -> bool:
    """Whether a proxy entry of the study names a zero-cost proxy (``zc_<name>``)."""
    return isinstance(entry, str) and entry.startswith(PREFIX)


def zero_cost_names(entries: Sequence[Any]) -> list[str]:
    """The zero-cost proxies among the study's proxy entries, without their prefix; ConfigError naming every unknown
    one with the names there are."""
    from ..zero_cost import PROXIES

    names = [e[len(PREFIX):] for e in entries if is_zero_cost(e)]
    unknown = [n for n in names if n != VOTE and n not in PROXIES]
    if unknown:
        known = ", ".join(PREFIX + n for n in (*PROXIES, VOTE))
        raise ConfigError(f"study.proxies: {', '.join(PREFIX + n for n in unknown)}: no such zero-cost proxy; "
                          f"the zero-cost proxies are {known}")
    if len(set(names)) != len(names):
        raise ConfigError("study.proxies: a zero-cost proxy is listed twice")
    return names


@dataclass(frozen=True)
class Scored:
    """One architecture's score under one proxy, and the seconds it took."""

    score: float
    seconds: float


class ZeroCostScorer:
    """Scores genotypes' untrained evaluation networks at a setting's channels, cells and resolution, each
    initialised as its training would be (seeded with ``seed``), on one training batch of the setting's size: the
    first batch of epoch 0 under ``seed`` of the data module the evaluations use (the setting's sample ratio and
    resolution), read once and the same for every genotype. The same genotypes always get the same scores; torch's
    global random stream is left as it was."""

    def __init__(self, setting: Setting, data: dict[str, Any], train: dict[str, Any], seed: int, val_split: float):
        self.setting, self.data, self.train, self.seed, self.val_split = setting, data, train, seed, val_split
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._shape: tuple[int, int] | None = None

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._batch is None:
            from .evaluate import setting_datamodule

            dm = setting_datamodule(self.data, self.setting.values(), self.seed, self.train.get("cutout", 0),
                                    self.val_split)
            state = torch.random.get_rng_state()
            torch.manual_seed(self.seed)
            self._batch = next(iter(dm.train_dataloader()))
            torch.random.set_rng_state(state)
            self._shape = (dm.num_classes, dm.in_channels)
        return self._batch

    def network(self, genotype: Any) -> torch.nn.Module:
        """The genotype's evaluation network at the setting, as its training would initialise it."""
        from ..spaces import parse_genotype

        self.batch()
        space, parsed = parse_genotype(genotype.to_text())
        options = dict(space.eval_network_options({**self.train, "C": self.setting.channels,
                                                   "layers": self.setting.layers}),
                       num_classes=self._shape[0], in_channels=self._shape[1])
        state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        net = space.EvalNetwork(parsed, **options)
        torch.random.set_rng_state(state)
        return net

    def scores(self, genotypes: Sequence[Any], names: Sequence[str]) -> dict[str, list[Scored]]:
        """{proxy: one Scored per genotype}; ``names`` may include ``vote`` (synflow, jacob_cov and snip's)."""
        from ..zero_cost import score

        x, y = self.batch()
        needed = [n for n in names if n != VOTE] + [v for v in VOTERS if VOTE in names and v not in names]
        out: dict[str, list[Scored]] = {n: [] for n in needed}
        for genotype in genotypes:
            net = self.network(genotype)
            for name in needed:
                start = time.perf_counter()
                value = score(name, net, x, y, seed=self.seed)
                out[name].append(Scored(value, time.perf_counter() - start))
        if VOTE in names:
            wins = pairwise_wins([[s.score for s in out[v]] for v in VOTERS])
            seconds = [sum(out[v][i].seconds for v in VOTERS) for i in range(len(genotypes))]
            out[VOTE] = [Scored(float(w), t) for w, t in zip(wins, seconds)]
        return {n: out[n] for n in names}

    def predict(self, name: str):
        """A pre-filter's scorer: candidates -> their ``name`` scores (a NaN scores lowest)."""
        def scores(candidates: Sequence[Any]) -> list[float]:
            values = [s.score for s in self.scores(candidates, [name])[name]]
            return [-math.inf if math.isnan(v) else v for v in values]
        return scores


def score_architectures(genotypes: Sequence[Any], names: Sequence[str], reference: Setting, data: dict[str, Any],
                        train: dict[str, Any], seed: int, val_split: float) -> dict[str, list[Scored]]:
    """{proxy: one Scored per genotype} of the reference setting's untrained networks (``ZeroCostScorer``)."""
    return ZeroCostScorer(reference, data, train, seed, val_split).scores(genotypes, names)


def pairwise_wins(scores: Sequence[Sequence[float]]) -> list[int]:
    """Per architecture, the number of others it beats: i beats j when more than half of the score lists rank i
    above j (a NaN beats nothing and is beaten by nothing)."""
    n, voters = len(scores[0]), len(scores)
    wins = [0] * n
    for i in range(n):
        for j in range(n):
            if i != j and sum(s[i] > s[j] for s in scores) * 2 > voters:
                wins[i] += 1
    return wins


def write_scores(path: Path, genotypes: Sequence[Any], scores: dict[str, list[Scored]]) -> Path:
    """zero_cost.csv: one row per architecture and proxy (architecture index, genotype, proxy, score, seconds)."""
    with open_atomically(path) as f:
        writer = csv.writer(f)
        writer.writerow(["architecture", "genotype", "proxy", "score", "seconds"])
        for name, scored in scores.items():
            for i, (genotype, s) in enumerate(zip(genotypes, scored)):
                writer.writerow([i, genotype.to_text(), PREFIX + name, repr(s.score), f"{s.seconds:.6f}"])
    return path
