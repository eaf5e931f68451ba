"""Specialisation: from the trained Once-for-All network, the sub-network of highest predicted accuracy under a
FLOPs or latency budget, taken out and measured, without retraining.

    1. measure ``samples`` sub-networks (setting and input side drawn at random, plus the largest and smallest),
       each a standalone copy with BatchNorm recalibrated on training batches, on the held-out validation images
    2. fit the accuracy predictor on them (held-out rank correlation reported, then refitted on all)
    3. price settings with the cost tables (FLOPs counted, latency measured here per part, see costs.py)
    4. evolve settings (darts_lite.evolve.GeneticEvolution: population, mutation, crossover) on predicted accuracy,
       every candidate within the constraint
    5. take the best out as a standalone network, recalibrate its BatchNorm, and measure it on the test split

Files, in ``<run>/specialise/``: ``measured.csv`` and ``predictor.pt`` (reused by later budgets while the network
and the measuring settings are the same), ``latency_table.json`` (unless ``ofa.specialise.latency_table`` names
another file); per budget, in ``<run>/specialise/<budget>/`` (e.g. ``flops-0.8``): ``subnet.json``, ``subnet.pt``
(the standalone weights and the data's normalisation; ``load_subnet`` rebuilds it, ``task=export`` exports it),
``candidates.csv``, ``front.png`` and ``summary.json``.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import AllowInfNan

from ..errors import ConfigError
from ..evolve import GeneticEvolution, Moves
from ..measure import count_flops, million_multiply_adds
from ..schema import Allowed, Ge, Gt, Hint, Le, Lt, MinLen, node_problems
from ..torchfiles import open_atomically, read_torch_file, weights_fit, write_text_atomically
from .costs import LATENCY_FILE, CostTableError, SubnetCosts, measured_latency
from .network import OFANetwork, OFASubnet
from .predictor import (
    PREDICTOR_VERSION,
    AccuracyPredictor,
    PredictorError,
    SubnetEncoding,
    load_predictor,
    rank_scores,
    split_indices,
)
from .shrinking import subnet_accuracy

KINDS = {"flops": "M multiply-adds", "latency_ms": "ms"}
MAX_BLOCKS = 512  # elastic blocks a saved network may make: far above any darts_lite trains (the cifar preset's 20)
MAX_TRIES = 200  # draws of a new candidate before a move gives up on meeting the constraint


@dataclass(frozen=True)
class Candidate:
    """A sub-network setting and its input side; blocks a unit's depth skips hold the smallest values, so two
    candidates that run the same network are equal."""

    ks: tuple[int, ...]
    e: tuple[float, ...]
    d: tuple[int, ...]
    side: int

    def setting(self) -> dict[str, list]:
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d)}

    def key(self) -> str:
        return json.dumps([list(self.ks), list(self.e), list(self.d), self.side])

    def to_state(self) -> list:
        return [list(self.ks), list(self.e), list(self.d), self.side]


class SubnetSpace:
    """Drawing, mutating and crossing candidates of ``net`` at ``sides``; ``feasible(candidate)`` (None: all) is the
    constraint every candidate a move returns meets."""

    def __init__(self, net: OFANetwork, sides: Sequence[int], mutate_prob: float = 0.1,
                 feasible: Callable[[Candidate], bool] | None = None):
        if not 0 < mutate_prob <= 1:
            raise ValueError(f"mutate_prob={mutate_prob}: must be in (0, 1]")
        self.ks_list, self.expand_list, self.depth_list = list(net.ks_list), list(net.expand_list), list(net.depth_list)
        self.units, self.per_unit = len(net.units), net.depth_list[-1]
        self.sides = sorted(set(int(s) for s in sides))
        self.mutate_prob = mutate_prob
        self.feasible = feasible or (lambda c: True)

    def canonical(self, ks: Sequence[int], e: Sequence[float], d: Sequence[int], side: int) -> Candidate:
        ks, e = list(ks), list(e)
        for u, depth in enumerate(d):
            for j in range(depth, self.per_unit):
                ks[u * self.per_unit + j], e[u * self.per_unit + j] = self.ks_list[0], self.expand_list[0]
        return Candidate(tuple(ks), tuple(e), tuple(d), int(side))

    def smallest(self) -> Candidate:
        n = self.units * self.per_unit
        return self.canonical([self.ks_list[0]] * n, [self.expand_list[0]] * n, [self.depth_list[0]] * self.units,
                              self.sides[0])

    def largest(self) -> Candidate:
        n = self.units * self.per_unit
        return self.canonical([self.ks_list[-1]] * n, [self.expand_list[-1]] * n, [self.depth_list[-1]] * self.units,
                              self.sides[-1])

    def _random(self, rng: random.Random) -> Candidate:
        n = self.units * self.per_unit
        return self.canonical([rng.choice(self.ks_list) for _ in range(n)], [rng.choice(self.expand_list) for _ in range(n)],
                              [rng.choice(self.depth_list) for _ in range(self.units)], rng.choice(self.sides))

    def sample(self, rng: random.Random) -> Candidate:
        """A uniformly drawn feasible candidate (the smallest one when none is drawn in MAX_TRIES)."""
        for _ in range(MAX_TRIES):
            c = self._random(rng)
            if self.feasible(c):
                return c
        return self.smallest()

    def mutate(self, parent: Candidate, rng: random.Random) -> Candidate:
        """Each value (kernel, expand ratio per block; depth per unit; the side) redrawn with mutate_prob; a
        feasible child that differs from the parent, or the parent when none is found in MAX_TRIES."""
        def redraw(values: Sequence, choices: Sequence) -> list:
            return [rng.choice(choices) if rng.random() < self.mutate_prob else v for v in values]

        for _ in range(MAX_TRIES):
            side = rng.choice(self.sides) if rng.random() < self.mutate_prob else parent.side
            child = self.canonical(redraw(parent.ks, self.ks_list), redraw(parent.e, self.expand_list),
                                   redraw(parent.d, self.depth_list), side)
            if child != parent and self.feasible(child):
                return child
        return parent

    def crossover(self, a: Candidate, b: Candidate, rng: random.Random) -> Candidate:
        """Each value from one of the two parents, drawn evenly; a feasible child, or ``a`` after MAX_TRIES."""
        def pick(x: Sequence, y: Sequence) -> list:
            return [rng.choice((p, q)) for p, q in zip(x, y)]

        for _ in range(MAX_TRIES):
            child = self.canonical(pick(a.ks, b.ks), pick(a.e, b.e), pick(a.d, b.d), rng.choice((a.side, b.side)))
            if self.feasible(child):
                return child
        return a

    def moves(self) -> Moves:
        return Moves(sample=self.sample, mutate=self.mutate, key=Candidate.key, to_state=Candidate.to_state,
                     from_state=lambda s: Candidate(tuple(s[0]), tuple(float(v) for v in s[1]), tuple(s[2]), int(s[3])),
                     crossover=self.crossover)


# ---- measuring -----------------------------------------------------------------------------------------------
def measure(net: OFANetwork, candidate: Candidate, calibration: Callable[[], Iterable[Any]], batches: Iterable[Any],
            k: int, seed: int) -> tuple[float, OFASubnet]:
    """(accuracy on ``batches``, the standalone sub-network) of ``candidate``, BatchNorm recalibrated on ``k``
    batches of ``calibration()`` at its side. The draws of the calibration batches come from ``seed``, and the
    caller's random streams do not move."""
    saved = net.setting()
    net.set_active_subnet(**candidate.setting())
    subnet = net.get_active_subnet()
    net.set_active_subnet(**saved)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        accuracy = subnet_accuracy(subnet, calibration(), batches, k, candidate.side)
    return accuracy, subnet


def save_subnet(path: str | Path, net: OFANetwork, setting: dict[str, list], side: int, subnet: OFASubnet,
                data: dict[str, Any] | None = None) -> None:
    """A sub-network of ``net`` as ``subnet.pt`` (weights_only loadable): the elastic network's arguments, the setting,
    the input side, the standalone weights and ``data``, the data module's record of the images it was measured on
    (their classes and normalisation: what task=export puts in front of it)."""
    torch.save({"config": net.config, "setting": setting, "resolution": side, "state_dict": subnet.state_dict(),
                "data": dict(data or {})}, path)


def load_subnet(path: str | Path) -> tuple[OFASubnet, dict[str, Any]]:
    """(standalone sub-network in eval mode, its record) from a ``subnet.pt`` the specialisation wrote; the record's
    ``data`` is missing from files written before it was kept. ConfigError naming the file for any other file (read
    weights-only; the network is built only after the weights were found to fit it)."""
    what = f"sub-network file {path}"
    saved = read_torch_file(path, what)
    build = subnet_builder(saved, what)
    weights_fit(build, saved["state_dict"], what)
    subnet = build()
    subnet.load_state_dict(saved["state_dict"])
    return subnet.eval(), {k: v for k, v in saved.items() if k != "state_dict"}


def subnet_builder(saved: dict[str, Any], what: str) -> Callable[[], OFASubnet]:
    """A builder of the standalone sub-network the contents of a ``subnet.pt`` describe (its elastic network's
    arguments and its setting), once they are known to be such; ConfigError naming ``what`` otherwise."""
    missing = [key for key in ("config", "setting", "state_dict") if key not in saved]
    if missing:
        raise ConfigError(f"{what}: no {', '.join(missing)}; not a subnet.pt the Once-for-All specialisation wrote")
    setting = saved["setting"]
    if not isinstance(setting, dict) or not set(setting) <= {"ks", "e", "d"}:
        raise ConfigError(f"{what}: its setting is not a sub-network setting ({{\"ks\", \"e\", \"d\"}})")
    elastic = saved_network(saved["config"], what)

    def build() -> OFASubnet:
        net = elastic()
        net.set_active_subnet(**setting)
        return net.get_active_subnet()

    return build


def saved_network(config: Any, what: str) -> Callable[[], OFANetwork]:
    """A builder of ``OFANetwork(**config)`` for the arguments a file records, once they are known to be OFANetwork's
    (its schema) and to make at most MAX_BLOCKS elastic blocks; ConfigError naming ``what`` otherwise."""
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ConfigError(f"{what}: its config is a {type(config).__name__}, not OFANetwork's arguments")
    try:
        problems = node_problems(config, "", target=OFANetwork)
    except Exception as e:  # values no config holds (tensors, say) that the checks cannot even describe
        problems = [f"{type(e).__name__}: {e}"]
    if problems:
        raise ConfigError(f"{what}: its config is not OFANetwork's arguments ({'; '.join(problems)[:500]})")
    full = {name: p.default for name, p in inspect.signature(OFANetwork).parameters.items()} | config
    blocks = len(full["widths"]) * max(full["depth_list"])
    if blocks > MAX_BLOCKS:
        raise ConfigError(f"{what}: its config makes a network of {blocks} elastic blocks; darts_lite builds at most "
                          f"{MAX_BLOCKS} (a damaged file?)")
    return lambda: OFANetwork(**config)


# ---- options -------------------------------------------------------------------------------------------------
_Budget = Annotated[float, Gt(0), AllowInfNan(False)] | None


@dataclass(frozen=True)
class Constraint:
    """ofa.constraint: the budget a specialised sub-network must meet (null: no limit of that kind)."""

    flops: Annotated[_Budget, Allowed("null or a number > 0 (M multiply-adds)")]
    latency_ms: Annotated[_Budget, Allowed("null or a number > 0 (ms)")]


@dataclass(frozen=True)
class SpecialiseOptions:
    """ofa.specialise: the accuracy predictor and the evolutionary search (conf/ofa/*.yaml holds the defaults)."""

    samples: Annotated[int, Ge(8), Hint("sub-networks measured for the predictor")]
    test_fraction: Annotated[float, Gt(0), Lt(1)]
    hidden: Annotated[int, Ge(1)]
    layers: Annotated[int, Ge(1)]
    epochs: Annotated[int, Ge(1)]
    lr: Annotated[float, Gt(0)]
    population: Annotated[int, Ge(2)]
    parents: Annotated[int, Ge(1)]
    mutation_share: Annotated[float, Ge(0), Le(1)]
    mutate_prob: Annotated[float, Gt(0), Le(1)]
    generations: Annotated[int, Ge(0)]
    latency_batch: Annotated[int, Ge(1)]
    latency_table: Annotated[str, MinLen(1), Allowed("a file path")] | None

    @classmethod
    def config_problems(cls, rules: Any) -> list[str]:
        v = rules.values
        if v["parents"] < v["population"]:
            return []
        return [f"{rules.key('parents')}={v['parents']}: must be below {rules.key('population')}={v['population']}"]


def option_problems(ofa: dict[str, Any]) -> list[str]:
    """The problems of the ofa.constraint and ofa.specialise keys (no network needed)."""
    return [*node_problems(ofa.get("constraint") or {}, "ofa.constraint.", target=Constraint),
            *node_problems(ofa.get("specialise") or {}, "ofa.specialise.", target=SpecialiseOptions)]


def constraints(ofa: dict[str, Any]) -> dict[str, float]:
    """The constraints given: {kind: limit}."""
    return {k: float(v) for k, v in (ofa.get("constraint") or {}).items() if k in KINDS and v is not None}


def budget_label(limits: dict[str, float]) -> str:
    """The folder name of a budget, e.g. ``flops-0.8`` or ``flops-0.8_latency_ms-1.5``."""
    return "_".join(f"{k}-{v:g}" for k, v in sorted(limits.items())) or "unconstrained"


def latency_table_path(ofa: dict[str, Any], out: Path) -> Path:
    given = (ofa.get("specialise") or {}).get("latency_table")
    return Path(given) if given else out / "specialise" / LATENCY_FILE


def smallest_problems(costs: SubnetCosts, sides: Sequence[int], limits: dict[str, float]) -> list[str]:
    """A message per constraint below the cheapest sub-network's cost: no sub-network could meet it."""
    out = []
    for kind, limit in limits.items():
        least = costs.smallest(sides, kind)
        if limit < least:
            out.append(f"ofa.constraint.{kind}={limit:g}: below the smallest sub-network's {least:.4g} {KINDS[kind]} "
                       f"(kernel {costs.net.ks_list[0]}, expand {costs.net.expand_list[0]:g}, depth "
                       f"{costs.net.depth_list[0]}, side {min(sides)}); no sub-network meets it")
    return out


# ---- the specialisation --------------------------------------------------------------------------------------
def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _sample_candidates(space: SubnetSpace, n: int, seed: int) -> list[Candidate]:
    rng = random.Random(f"{seed}/specialise/measure")
    chosen, seen = [], set()
    for c in [space.largest(), space.smallest()] + [space._random(rng) for _ in range(50 * n)]:
        if c not in seen:
            seen.add(c)
            chosen.append(c)
        if len(chosen) == n:
            break
    return chosen


def fit_predictor(net: OFANetwork, dm: Any, sides: Sequence[int], sp: dict[str, Any], bn_batches: int, seed: int,
                  folder: Path, network_file: Path | None, costs: SubnetCosts, log: Callable[[str], None] = print
                  ) -> tuple[AccuracyPredictor, list[dict[str, Any]]]:
    """The accuracy predictor and its measured sub-networks: reused from ``folder`` when they were made from the
    same network file with the same measuring settings, measured and fitted otherwise. ``costs``: the run's cost
    tables (the measured rows record their FLOPs)."""
    encoding = SubnetEncoding.of(net, sides)
    record = {"network": _file_hash(network_file) if network_file and network_file.is_file() else None,
              "samples": sp["samples"], "sides": list(encoding.sides), "bn_calibration": bn_batches, "seed": seed,
              "hidden": sp["hidden"], "layers": sp["layers"], "epochs": sp["epochs"], "lr": sp["lr"],
              "test_fraction": sp["test_fraction"]}
    path, table = folder / "predictor.pt", folder / "measured.csv"
    if path.is_file() and table.is_file() and record["network"] is not None:
        try:
            predictor, saved = load_predictor(path, encoding)
        except PredictorError as e:
            log(f"Specialise: {e}; measuring again")
        else:
            if saved == record:
                rows = [json.loads(r["row"]) for r in csv.DictReader(table.open())]
                log(f"Specialise: predictor reused from {path} ({len(rows)} measured sub-networks; held-out Kendall tau "
                    f"{predictor.metrics.get('kendall_tau', float('nan')):.3f})")
                return predictor, rows
    space = SubnetSpace(net, sides)
    candidates = _sample_candidates(space, sp["samples"], seed)
    val = list(dm.val_dataloader())
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i, c in enumerate(candidates):
        accuracy, _ = measure(net, c, dm.train_dataloader, val, bn_batches, seed + i)
        rows.append({"setting": c.setting(), "side": c.side, "accuracy": accuracy, **costs.cost(c.setting(), c.side,
                                                                                               latency=False)})
        if (i + 1) % max(1, len(candidates) // 10) == 0 or i + 1 == len(candidates):
            spent = time.perf_counter() - start
            log(f"Specialise: measured {i + 1}/{len(candidates)} sub-networks ({spent:.0f} s, ~"
                f"{spent / (i + 1) * (len(candidates) - i - 1):.0f} s left)")
    items = [(r["setting"], r["side"]) for r in rows]
    accuracy = [r["accuracy"] for r in rows]
    train, held = split_indices(len(rows), sp["test_fraction"], seed)
    options = dict(epochs=sp["epochs"], lr=sp["lr"], seed=seed)
    probe = AccuracyPredictor(encoding, sp["hidden"], sp["layers"]).fit([items[i] for i in train],
                                                                        [accuracy[i] for i in train], **options)
    scores = rank_scores(probe.predict([items[i] for i in held]), [accuracy[i] for i in held])
    predictor = AccuracyPredictor(encoding, sp["hidden"], sp["layers"]).fit(items, accuracy, **options)
    predictor.metrics = {**scores, "measured": len(rows)}
    folder.mkdir(parents=True, exist_ok=True)
    predictor.save(path, record)
    with open_atomically(table) as f:
        writer = csv.DictWriter(f, fieldnames=["side", "flops", "accuracy", "row"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"side": r["side"], "flops": f"{r['flops']:.6g}", "accuracy": f"{r['accuracy']:.6g}",
                             "row": json.dumps(r)})
    log(f"Specialise: predictor {PREDICTOR_VERSION} fitted on {len(rows)} measured sub-networks; on {scores['n']} held out: "
        f"Kendall tau {scores['kendall_tau']:.3f}, Spearman {scores['spearman']:.3f}, RMSE {scores['rmse']:.4f}")
    return predictor, rows


def specialise(net: OFANetwork, dm: Any, ofa: dict[str, Any], out: Path, seed: int, network_file: Path | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the specialisation (module docstring) for the constraints of ``ofa`` into ``out``/specialise; returns
    the subnet.json record. ConfigError when a constraint is below the smallest sub-network's cost or the latency
    table cannot be used."""
    sp = ofa["specialise"]
    sides = sorted(set(ofa["resolutions"]))
    limits = constraints(ofa)
    folder = out / "specialise"
    net = net.eval()
    try:
        costs = SubnetCosts(net, sp["latency_batch"], latency_table_path(ofa, out))
    except CostTableError as e:
        raise ConfigError(str(e)) from e
    problems = smallest_problems(costs, sides, limits)
    if problems:
        raise ConfigError("; ".join(problems))
    if costs.measured_now:
        log(f"Specialise: latency of {costs.measured_now} parts measured on this machine (batch {costs.batch})")
    started = time.perf_counter()
    predictor, measured = fit_predictor(net, dm, sides, sp, ofa["bn_calibration"], seed, folder, network_file,
                                       costs, log)

    def feasible(c: Candidate) -> bool:
        if not limits:
            return True
        cost = costs.cost(c.setting(), c.side, latency="latency_ms" in limits)
        return all(cost[k] <= v for k, v in limits.items())

    space = SubnetSpace(net, sides, sp["mutate_prob"], feasible)
    before = costs.measured_now

    def evaluate(requests: list) -> list[float]:
        return predictor.predict([(r.candidate.setting(), r.candidate.side) for r in requests])

    search = GeneticEvolution(space.moves(), evaluate, seed, population=sp["population"], parents=sp["parents"],
                              mutation_share=sp["mutation_share"], generations=sp["generations"])

    def progress(s: GeneticEvolution) -> None:
        g = s.cycle - 1
        if g == 0 or s.done or g % max(1, sp["generations"] // 5) == 0:
            log(f"Specialise [{budget_label(limits)}]: generation {g}/{sp['generations']}, best predicted accuracy "
                f"{s.history[-1]['best']:.4f} ({s.evaluations} candidates)")

    search.run(progress)
    if costs.measured_now > before:
        log(f"Specialise: latency of {costs.measured_now - before} more parts measured")
    costs.save()
    ranked = search.best(10 ** 9)
    best, predicted, _ = ranked[0]
    if not feasible(best):  # only the smallest can stand in for an unmet draw; the check above makes it feasible
        raise ConfigError(f"no sub-network within {limits} was found")
    val = list(dm.val_dataloader())
    val_accuracy, _ = measure(net, best, dm.train_dataloader, val, ofa["bn_calibration"], seed)
    test_accuracy, subnet = measure(net, best, dm.train_dataloader, list(dm.test_dataloader()), ofa["bn_calibration"], seed)
    cost = costs.cost(best.setting(), best.side)
    counted = million_multiply_adds(count_flops(subnet, (net.config["in_channels"], best.side, best.side)))
    whole = measured_latency(subnet, best.side, net.config["in_channels"], sp["latency_batch"])
    budget = folder / budget_label(limits)
    budget.mkdir(parents=True, exist_ok=True)
    record = {
        "setting": best.setting(), "resolution": best.side,
        "flops": counted, "latency_ms": cost["latency_ms"], "latency_ms_measured": whole,
        "accuracy": test_accuracy, "val_accuracy": val_accuracy, "predicted_accuracy": predicted,
        "constraint": {k: limits.get(k) for k in KINDS},
        "units": {"flops": KINDS["flops"], "latency_ms": f"ms per batch of {sp['latency_batch']} on this machine"},
        "accuracy_note": "accuracy: the test split, measured after BatchNorm calibration on training batches; "
                         "predicted_accuracy: the predictor's, not a measurement",
        "predictor": {"version": PREDICTOR_VERSION, **predictor.metrics},
        "search": {"candidates": len(ranked), "generations": sp["generations"], "population": sp["population"],
                   "wall_time_s": round(time.perf_counter() - started, 2)},
        "network_file": str(network_file) if network_file else None,
    }
    write_text_atomically(budget / "subnet.json", json.dumps(record, indent=2) + "\n")
    save_subnet(budget / "subnet.pt", net, best.setting(), best.side, subnet, dm.state_dict())
    _write_candidates(budget / "candidates.csv", ranked, costs, "latency_ms" in limits)
    from ..plots import save_figure

    save_figure(front_plot(ranked, measured, costs, limits, best, predicted, test_accuracy), budget / "front.png")
    write_text_atomically(budget / "summary.json", json.dumps({"task": "ofa", "part": "specialise", **record}, indent=2) + "\n")
    log(f"Specialise [{budget_label(limits)}]: side {best.side}, d {best.d}; {counted:.4g} {KINDS['flops']}, "
        f"{cost['latency_ms']:.3g} ms (table), {whole:.3g} ms (measured); predicted {predicted:.4f}, measured test "
        f"accuracy {test_accuracy:.4f} (val {val_accuracy:.4f}). Files: {budget}")
    return record


def _write_candidates(path: Path, ranked: list, costs: SubnetCosts, latency: bool) -> None:
    with open_atomically(path) as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "predicted_accuracy", "flops", "latency_ms", "side", "d", "ks", "e"])
        for i, (c, fitness, _) in enumerate(ranked, 1):
            cost = costs.cost(c.setting(), c.side, latency=latency)
            writer.writerow([i, f"{fitness:.6g}", f"{cost['flops']:.6g}",
                             f"{cost['latency_ms']:.6g}" if latency else "", c.side, " ".join(map(str, c.d)),
                             " ".join(map(str, c.ks)), " ".join(f"{v:g}" for v in c.e)])


def front_plot(ranked: list, measured: list[dict[str, Any]], costs: SubnetCosts, limits: dict[str, float],
               best: Candidate, predicted: float, accuracy: float):
    """Predicted accuracy against cost of the searched candidates, the measured sub-networks the predictor learnt
    from, the constraint and the chosen sub-network (predicted and measured)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kind = "latency_ms" if "latency_ms" in limits and "flops" not in limits else "flops"
    latency = kind == "latency_ms"
    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = [costs.cost(c.setting(), c.side, latency=latency)[kind] for c, _, _ in ranked]
    ys = [f for _, f, _ in ranked]
    ax.scatter(xs, ys, s=8, color="0.65", label=f"searched candidates (predicted, {len(ranked)})")
    front, top = [], -math.inf
    for x, y in sorted(zip(xs, ys)):
        if y > top:
            front.append((x, y))
            top = y
    ax.plot([p[0] for p in front], [p[1] for p in front], color="0.3", linewidth=1, label="predicted front")
    mx = [costs.cost(r["setting"], r["side"], latency=latency)[kind] for r in measured]
    ax.scatter(mx, [r["accuracy"] for r in measured], s=10, color="tab:blue", alpha=0.6,
               label=f"measured sub-networks (validation, {len(measured)})")
    x = costs.cost(best.setting(), best.side, latency=latency)[kind]
    ax.scatter([x], [predicted], marker="*", s=160, facecolors="none", edgecolors="tab:red", label="chosen, predicted")
    ax.scatter([x], [accuracy], marker="*", s=160, color="tab:red", label="chosen, measured (test)")
    if kind in limits:
        ax.axvline(limits[kind], color="tab:red", linestyle="--", linewidth=1, label=f"constraint {limits[kind]:g}")
    ax.set_xlabel(f"{'latency' if latency else 'FLOPs'} ({KINDS[kind]})")
    ax.set_ylabel("accuracy")
    ax.set_title("Once-for-All specialisation: accuracy against cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


__all__ = ["MAX_BLOCKS", "Candidate", "SubnetSpace", "constraints", "fit_predictor", "front_plot", "load_subnet",
           "measure", "option_problems", "save_subnet", "saved_network", "specialise", "subnet_builder"]
