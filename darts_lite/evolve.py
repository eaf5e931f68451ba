"""One evolution engine for every search over discrete candidates in darts_lite.

The engine knows candidates only through `Moves` (sample, mutate, key, to/from a JSON-able state) and fitness
only through an evaluator, ``evaluate(requests: list[StageRequest]) -> list[float | None]`` (higher is better;
``None``, NaN or an infinite value = the evaluation failed: the candidate is dropped and the search goes on).
It never trains, reads files or touches a database: the EcoNAS search, the surrogate benchmark and
Once-for-All each bring their own Moves and evaluator.

Four algorithms share one shape (`Search`): `HierarchicalEvolution` (EcoNAS's hierarchical proxy strategy),
`RegularizedEvolution` (aging evolution, Real et al. 2019), `RandomSearch` and `GeneticEvolution` (generations
of mutation and crossover, as Once-for-All's specialisation; it needs `Moves.crossover`). Each cycle makes exactly one
``evaluate`` call with a batch of requests; all randomness comes from one ``random.Random(seed)``, so a seed and
a deterministic evaluator fix the whole run, and ``state_dict()`` taken between cycles resumes it exactly.

Budgets are counted in stage-trainings: continuing a model by one stage costs 1, training a fresh model to
stage s costs s. `stage_trainings` tells what a run will use, so baselines can be given the same budget.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .registry import Registry

__all__ = [
    "ALGORITHMS", "DEFAULT_BUDGET", "EvaluateFn", "GeneticEvolution", "HierarchicalEvolution", "Member", "Moves", "RandomSearch",
    "RegularizedEvolution", "Search", "StageRequest", "stage_trainings",
]

# A new candidate whose key was seen before (living, evaluated or failed) is drawn again this many times at
# most, then accepted: small spaces can run out of unseen neighbours, and a search must never stall on that.
RETRIES = 8


@dataclass(frozen=True)
class Moves:
    """How the engine handles candidates of one kind (a search space's genotypes, a sub-network setting...)."""

    sample: Callable[[random.Random], Any]  # a random candidate
    mutate: Callable[[Any, random.Random], Any]  # a different candidate, one change away
    key: Callable[[Any], str]  # a canonical identity (equal candidates -> equal key)
    to_state: Callable[[Any], Any]  # JSON-able form (for state_dict)
    from_state: Callable[[Any], Any]  # back
    crossover: Callable[[Any, Any, random.Random], Any] | None = None  # a child mixing two parents (GeneticEvolution)


@dataclass(frozen=True)
class StageRequest:
    """Train/evaluate `candidate` to `stages` stages (stage s continues stage s-1's training; 1 = fresh)."""

    candidate: Any
    stages: int


EvaluateFn = Callable[[list[StageRequest]], Sequence[Any]]


@dataclass(frozen=True)
class Member:
    """A living model: its candidate, the stage it is trained to, its fitness there, the cycle it was last trained."""

    id: int
    candidate: Any
    key: str
    stage: int
    fitness: float
    updated: int


def _rank(member: Member) -> tuple[float, str, int]:
    # best first; equal fitness is broken by key, then by age, so no order depends on anything but the run
    return (-member.fitness, member.key, member.id)


# ---- option checks ---------------------------------------------------------------------------------------
def _integer(algorithm: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{algorithm} option {name}={value!r}: must be an integer >= {minimum}")
    return int(value)


def _integers(algorithm: str, name: str, value: Any, length: int, why: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{algorithm} option {name}={value!r}: must be a list of {length} integers >= 0 ({why})")
    counts = tuple(value)
    if len(counts) != length:
        raise ValueError(f"{algorithm} option {name}={list(counts)}: needs {length} counts ({why}), got {len(counts)}")
    for count in counts:
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
            raise ValueError(f"{algorithm} option {name}={list(counts)}: every count must be an integer >= 0 ({why})")
    return tuple(int(c) for c in counts)


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _fitness(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"evaluate returned {value!r}: each result must be a number (fitness, higher is better) or None")
    value = float(value)
    return value if math.isfinite(value) else None  # NaN cannot be ranked: a failed evaluation


# ---- the shared shape --------------------------------------------------------------------------------------
class Search:
    """One search run: `step()` runs one cycle (one ``evaluate`` call), `run()` steps until `done`.

    ``history`` holds one entry per cycle: {"cycle", "evaluations" (requests so far), "stages" (stage-trainings
    so far), "best", "median"}, best/median over the fitness of the distinct candidates evaluated at the final
    stage so far (None while there are none). Options are keyword arguments (see ``defaults``); a bad value
    raises ValueError naming the option.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    extendable: ClassVar[tuple[str, ...]] = ()  # options a resumed run may change: they only lengthen it

    def __init__(self, moves: Moves, evaluate: EvaluateFn, seed: int, **options: Any) -> None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seed={seed!r}: must be an integer")
        self.moves = moves
        self.options = self.check_options(**options)
        self.final_stage: int = self.options["stages"]
        self._evaluate = evaluate
        self._rng = random.Random(int(seed))
        self.cycle = 0  # the next cycle to run
        self.evaluations = 0
        self.stages_used = 0
        self.history: list[dict[str, Any]] = []
        self._members: list[Member] = []
        self._next_id = 0
        self._seen: set[str] = set()
        self._final: dict[str, tuple[Any, float]] = {}  # key -> (candidate, best final-stage fitness)

    # -- options
    @classmethod
    def check_options(cls, **options: Any) -> dict[str, Any]:
        """The defaults updated by `options`, checked; ValueError names the first bad option."""
        unknown = sorted(set(options) - set(cls.defaults))
        if unknown:
            raise ValueError(f"{cls.name}: unknown option(s) {', '.join(unknown)}; options: {', '.join(cls.defaults)}")
        return cls._check({**cls.defaults, **options})

    @classmethod
    def _check(cls, options: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def planned_stage_trainings(cls, options: Mapping[str, Any]) -> int:
        """The stage-trainings a run with these (checked) options uses when every evaluation succeeds."""
        raise NotImplementedError

    # -- running
    @property
    def done(self) -> bool:
        raise NotImplementedError

    def _step(self) -> None:
        raise NotImplementedError

    def step(self) -> None:
        """One cycle: build one batch of requests, evaluate it, update the population, append to history."""
        if self.done:
            raise RuntimeError(f"{self.name} search is done after {self.cycle} cycles; nothing left to step")
        self._step()
        values = [fitness for _, fitness in self._final.values()]
        self.history.append({"cycle": self.cycle, "evaluations": self.evaluations, "stages": self.stages_used,
                             "best": max(values) if values else None,
                             "median": statistics.median(values) if values else None})
        self.cycle += 1

    def run(self, on_cycle: Callable[[Search], None] | None = None) -> None:
        """Step until done; `on_cycle(self)` after each cycle (the place to save `state_dict()`)."""
        while not self.done:
            self.step()
            if on_cycle is not None:
                on_cycle(self)

    # -- results
    @property
    def population(self) -> list[Member]:
        """The living models, in the order they joined (a promoted model keeps its place)."""
        return list(self._members)

    def best(self, k: int) -> list[tuple[Any, float, int]]:
        """Top `k` (candidate, fitness, stages) among all candidates ever evaluated at the final stage (not only the
        living ones), best first, ties by key; a candidate evaluated there more than once counts with its best."""
        _integer(self.name, "k", k, 0)
        ranked = sorted(self._final.items(), key=lambda item: (-item[1][1], item[0]))
        return [(candidate, fitness, self.final_stage) for _, (candidate, fitness) in ranked[:k]]

    # -- helpers for the algorithms
    def _fresh(self, draw: Callable[[], Any]) -> Any:
        """A candidate from `draw()`, drawn again (up to RETRIES times) while its key was already seen."""
        candidate = draw()
        for _ in range(RETRIES):
            if self.moves.key(candidate) not in self._seen:
                break
            candidate = draw()
        self._seen.add(self.moves.key(candidate))
        return candidate

    def _tournament(self, pool: list[Member], size: int) -> Member:
        """The best of `size` distinct members drawn uniformly from `pool` (the whole pool if it is smaller)."""
        return min(self._rng.sample(pool, min(size, len(pool))), key=_rank)

    def _child(self, parent: Member | None) -> Any:
        # with no parent at all (every model failed) the search restarts from random candidates
        if parent is None:
            return self._fresh(lambda: self.moves.sample(self._rng))
        return self._fresh(lambda: self.moves.mutate(parent.candidate, self._rng))

    def _add(self, candidate: Any, stage: int, fitness: float) -> None:
        self._members.append(Member(self._next_id, candidate, self.moves.key(candidate), stage, fitness, self.cycle))
        self._next_id += 1

    def _evaluate_batch(self, requests: list[StageRequest], costs: list[int]) -> list[float | None]:
        """Fitness per request (None = failed); counts evaluations and stage-trainings, remembers final-stage ones."""
        if not requests:
            return []
        results = list(self._evaluate(list(requests)))
        if len(results) != len(requests):
            raise ValueError(f"evaluate returned {len(results)} results for {len(requests)} requests; it must return "
                             "one fitness (or None) per request, in order")
        fitness = [_fitness(value) for value in results]
        self.evaluations += len(requests)
        self.stages_used += sum(costs)
        for request, value in zip(requests, fitness):
            if value is not None and request.stages == self.final_stage:
                key = self.moves.key(request.candidate)
                if key not in self._final or value > self._final[key][1]:
                    self._final[key] = (request.candidate, value)
        return fitness

    # -- resuming
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (JSON-able): options, cycle, random state, population, history."""
        version, internal, gauss = self._rng.getstate()
        to_state = self.moves.to_state
        return {
            "algorithm": self.name,
            "options": {name: _jsonable(value) for name, value in self.options.items()},
            "cycle": self.cycle,
            "rng": [version, list(internal), gauss],
            "evaluations": self.evaluations,
            "stages_used": self.stages_used,
            "next_id": self._next_id,
            "population": [{"id": m.id, "candidate": to_state(m.candidate), "stage": m.stage, "fitness": m.fitness,
                            "updated": m.updated} for m in self._members],
            "final": [[to_state(candidate), fitness] for candidate, fitness in self._final.values()],
            "seen": sorted(self._seen),
            "history": [dict(entry) for entry in self.history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state_dict()`'s output; the options must match (only `extendable` ones may differ)."""
        if state.get("algorithm") != self.name:
            raise ValueError(f"state was saved by a {state.get('algorithm')!r} search, this is {self.name!r}")
        for name, value in self.options.items():
            saved = state["options"].get(name)
            if name not in self.extendable and _jsonable(value) != saved:
                raise ValueError(f"state was saved with {name}={saved!r}, this {self.name} search has {name}={value!r}; "
                                 f"resume with the same options (only {', '.join(self.extendable)} may change)")
        from_state, key = self.moves.from_state, self.moves.key
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self.cycle = state["cycle"]
        self.evaluations = state["evaluations"]
        self.stages_used = state["stages_used"]
        self._next_id = state["next_id"]
        self._members = []
        for m in state["population"]:
            candidate = from_state(m["candidate"])
            self._members.append(Member(m["id"], candidate, key(candidate), m["stage"], m["fitness"], m["updated"]))
        self._final = {}
        for saved, fitness in state["final"]:
            candidate = from_state(saved)
            self._final[key(candidate)] = (candidate, fitness)
        self._seen = set(state["seen"])
        self.history = [dict(entry) for entry in state["history"]]


# ---- EcoNAS: hierarchical proxy strategy -------------------------------------------------------------------
class HierarchicalEvolution(Search):
    """EcoNAS's hierarchical proxy strategy: models are trained in stages, and only the promising ones go on.

    Living models sit in stage pools 1..`stages`. Cycle 0 evaluates `initial` random candidates at stage 1.
    Every later cycle sends one batch: first the promotions (the top promote[i] models of pool i+1 by fitness,
    best first, continue one stage to i+2; pool 1's before pool 2's), then the children (parents[s-1] parents
    drawn by tournament from pool s, each mutated once). After it, promoted models move up with their new
    fitness, children join pool 1, failed ones are removed, and models not trained for `max_age` cycles
    (cycle - updated >= max_age) are dropped. An empty pool's parents come from the nearest non-empty pool
    (the more-trained one on a tie); with every pool empty, children are random candidates.

    Options: stages=3, initial=16, promote=(8, 4), parents=(6, 5, 5), tournament=5, max_age=10, cycles=100.
    tournament=5: the pools hold some 40-90 models in steady state with these settings, so a tournament of 5
    (about a tenth of a pool) keeps moderate selection pressure while 5-6 parents per pool stay diverse; a
    pool smaller than the tournament gives its best model.
    """

    name = "hierarchical"
    defaults: ClassVar[dict[str, Any]] = dict(stages=3, initial=16, promote=(8, 4), parents=(6, 5, 5), tournament=5,
                                              max_age=10, cycles=100)
    extendable = ("cycles",)

    @classmethod
    def _check(cls, options: dict[str, Any]) -> dict[str, Any]:
        n = cls.name
        stages = _integer(n, "stages", options["stages"], 1)
        checked = dict(
            stages=stages,
            initial=_integer(n, "initial", options["initial"], 1),
            promote=_integers(n, "promote", options["promote"], stages - 1,
                              f"one per promotion from stage i+1 to i+2, stages={stages}"),
            parents=_integers(n, "parents", options["parents"], stages, f"one per stage pool 1..{stages}"),
            tournament=_integer(n, "tournament", options["tournament"], 1),
            max_age=_integer(n, "max_age", options["max_age"], 1),
            cycles=_integer(n, "cycles", options["cycles"], 0),
        )
        if sum(checked["parents"]) < 1:
            raise ValueError(f"{n} option parents={list(checked['parents'])}: needs at least one parent per cycle")
        return checked

    @classmethod
    def planned_stage_trainings(cls, options: Mapping[str, Any]) -> int:
        """initial + per cycle the children and the promotions, the latter limited by what the pools hold (pool
        s+1 first has models at cycle s+1). Exact when every evaluation succeeds and aging never empties a pool
        that promotions need (so for promote non-increasing and sum(parents) >= promote[0], e.g. the defaults);
        otherwise an upper bound: `history[-1]["stages"]` is what a run used."""
        sizes = [options["initial"]] + [0] * (options["stages"] - 1)
        total = options["initial"]
        children = sum(options["parents"])
        for _ in range(options["cycles"]):
            moved = [min(count, sizes[i]) for i, count in enumerate(options["promote"])]
            for i, count in enumerate(moved):
                sizes[i] -= count
                sizes[i + 1] += count
            sizes[0] += children
            total += sum(moved) + children
        return total

    @property
    def done(self) -> bool:
        return self.cycle > self.options["cycles"]

    def pool(self, stage: int) -> list[Member]:
        """The living models trained to `stage`, in the order they joined."""
        return [m for m in self._members if m.stage == stage]

    def _source(self, pools: list[list[Member]], index: int) -> list[Member] | None:
        """Pool `index` (0-based) or the nearest non-empty one, the more-trained one on a tie; None if all are empty."""
        for distance in range(len(pools)):
            for i in (index + distance, index - distance):
                if 0 <= i < len(pools) and pools[i]:
                    return pools[i]
        return None

    def _step(self) -> None:
        if self.cycle == 0:
            candidates = [self._child(None) for _ in range(self.options["initial"])]
            for candidate, fitness in zip(candidates, self._evaluate_batch([StageRequest(c, 1) for c in candidates],
                                                                            [1] * len(candidates))):
                if fitness is not None:
                    self._add(candidate, 1, fitness)
            return
        stages = self.final_stage
        pools = [self.pool(s) for s in range(1, stages + 1)]
        promoted = [m for i, count in enumerate(self.options["promote"]) for m in sorted(pools[i], key=_rank)[:count]]
        parents: list[Member | None] = []
        for index, count in enumerate(self.options["parents"]):
            source = self._source(pools, index)
            parents += [self._tournament(source, self.options["tournament"]) if source else None for _ in range(count)]
        children = [self._child(parent) for parent in parents]
        requests = [StageRequest(m.candidate, m.stage + 1) for m in promoted] + [StageRequest(c, 1) for c in children]
        results = self._evaluate_batch(requests, [1] * len(requests))  # each request is one more stage of training
        moved = {m.id: fitness for m, fitness in zip(promoted, results)}
        members = []
        for m in self._members:
            if m.id not in moved:
                members.append(m)
            elif moved[m.id] is not None:
                members.append(dataclasses.replace(m, stage=m.stage + 1, fitness=moved[m.id], updated=self.cycle))
        self._members = members
        for candidate, fitness in zip(children, results[len(promoted):]):
            if fitness is not None:
                self._add(candidate, 1, fitness)
        self._members = [m for m in self._members if self.cycle - m.updated < self.options["max_age"]]


# the baselines' default budget: a default hierarchical run's, so defaults compare like with like
DEFAULT_BUDGET = HierarchicalEvolution.planned_stage_trainings(HierarchicalEvolution.check_options())


# ---- baselines: every model trained to the final stage, a budget in stage-trainings ------------------------
class _FinalStageSearch(Search):
    """Shared by the baselines: every request is a fresh model trained to `stages`, costing `stages` each; the run
    stops when the `budget` (stage-trainings) cannot pay for one more model, so it never overspends."""

    extendable = ("budget",)

    @classmethod
    def planned_stage_trainings(cls, options: Mapping[str, Any]) -> int:
        return options["budget"] // options["stages"] * options["stages"]

    @property
    def done(self) -> bool:
        return self.stages_used + self.final_stage > self.options["budget"]

    def _affordable(self, wanted: int) -> int:
        return min(wanted, (self.options["budget"] - self.stages_used) // self.final_stage)

    def _evaluate_new(self, candidates: list[Any]) -> list[float | None]:
        stages = self.final_stage
        return self._evaluate_batch([StageRequest(c, stages) for c in candidates], [stages] * len(candidates))


class RegularizedEvolution(_FinalStageSearch):
    """Aging evolution (Real et al. 2019) in batches: cycle 0 evaluates `population` random candidates; each later
    cycle `batch` children, each from a tournament of `sample_size` over the population, mutated once; then
    the oldest models leave until `population` remain. One evaluate() call per cycle.

    Options: stages=3, population=48, sample_size=12, batch=16, budget = what a default hierarchical run uses.
    sample_size/population = 1/4 as in the paper's main runs (100/25), scaled down to a budget of some 900
    fully trained models; population = 3 batches, so a model lives for three cycles of children.
    """

    name = "regularized"
    defaults: ClassVar[dict[str, Any]] = dict(stages=3, population=48, sample_size=12, batch=16, budget=DEFAULT_BUDGET)

    @classmethod
    def _check(cls, options: dict[str, Any]) -> dict[str, Any]:
        n = cls.name
        stages = _integer(n, "stages", options["stages"], 1)
        return dict(stages=stages, population=_integer(n, "population", options["population"], 1),
                    sample_size=_integer(n, "sample_size", options["sample_size"], 1),
                    batch=_integer(n, "batch", options["batch"], 1),
                    budget=_integer(n, "budget", options["budget"], stages))

    def _step(self) -> None:
        if self.cycle == 0:
            candidates = [self._child(None) for _ in range(self._affordable(self.options["population"]))]
        else:
            count = self._affordable(self.options["batch"])
            pool = self._members
            parents = [self._tournament(pool, self.options["sample_size"]) if pool else None for _ in range(count)]
            candidates = [self._child(parent) for parent in parents]
        for candidate, fitness in zip(candidates, self._evaluate_new(candidates)):
            if fitness is not None:
                self._add(candidate, self.final_stage, fitness)
        excess = len(self._members) - self.options["population"]
        if excess > 0:
            self._members = self._members[excess:]  # the oldest go, whatever their fitness


class RandomSearch(_FinalStageSearch):
    """Batches of `batch` random candidates trained to `stages` until the budget is used.

    Options: stages=3, batch=16, budget = what a default hierarchical run uses. It keeps no population.
    """

    name = "random"
    defaults: ClassVar[dict[str, Any]] = dict(stages=3, batch=16, budget=DEFAULT_BUDGET)

    @classmethod
    def _check(cls, options: dict[str, Any]) -> dict[str, Any]:
        n = cls.name
        stages = _integer(n, "stages", options["stages"], 1)
        return dict(stages=stages, batch=_integer(n, "batch", options["batch"], 1),
                    budget=_integer(n, "budget", options["budget"], stages))

    def _step(self) -> None:
        candidates = [self._child(None) for _ in range(self._affordable(self.options["batch"]))]
        self._evaluate_new(candidates)


class GeneticEvolution(Search):
    """Generations of a fixed-size population (the evolutionary search of Once-for-All's specialisation).

    Cycle 0 evaluates `population` random candidates. Each later cycle keeps the `parents` fittest living
    models and breeds `population - parents` children: round(mutation_share x that) by mutating a parent drawn
    uniformly, the rest by `Moves.crossover` of two distinct parents drawn uniformly; the children are evaluated
    (one evaluate() call) and the population becomes the parents plus the children that did not fail. A
    constraint belongs in the Moves: sample, mutate and crossover return only candidates that meet it.

    Options: stages=1, population=100, parents=25, mutation_share=0.5, generations=20 (cycles after the first).
    population 100, parents a quarter and half the children mutated are the values Once-for-All publishes for
    its search; they cost nothing with a predictor as the evaluator.
    """

    name = "genetic"
    defaults: ClassVar[dict[str, Any]] = dict(stages=1, population=100, parents=25, mutation_share=0.5, generations=20)
    extendable = ("generations",)

    @classmethod
    def _check(cls, options: dict[str, Any]) -> dict[str, Any]:
        n = cls.name
        population = _integer(n, "population", options["population"], 2)
        parents = _integer(n, "parents", options["parents"], 1)
        if parents >= population:
            raise ValueError(f"{n} option parents={parents}: must be below population={population} (room for children)")
        share = options["mutation_share"]
        if isinstance(share, bool) or not isinstance(share, numbers.Real) or not 0 <= share <= 1:
            raise ValueError(f"{n} option mutation_share={share!r}: must be a number in [0, 1]")
        return dict(stages=_integer(n, "stages", options["stages"], 1), population=population, parents=parents,
                    mutation_share=float(share), generations=_integer(n, "generations", options["generations"], 0))

    def __init__(self, moves: Moves, evaluate: EvaluateFn, seed: int, **options: Any) -> None:
        super().__init__(moves, evaluate, seed, **options)
        if moves.crossover is None and self._mutations() < self.options["population"] - self.options["parents"]:
            raise ValueError(f"{self.name} search with mutation_share={self.options['mutation_share']}: breeds children by "
                             "crossover, and these Moves have none (give Moves.crossover, or mutation_share=1)")

    def _mutations(self) -> int:
        return round(self.options["mutation_share"] * (self.options["population"] - self.options["parents"]))

    @classmethod
    def planned_stage_trainings(cls, options: Mapping[str, Any]) -> int:
        children = options["population"] - options["parents"]
        return options["stages"] * (options["population"] + options["generations"] * children)

    @property
    def done(self) -> bool:
        return self.cycle > self.options["generations"]

    def _step(self) -> None:
        stages = self.final_stage
        if self.cycle == 0 or not self._members:  # nothing survived: start again from random candidates
            children = [self._child(None) for _ in range(self.options["population"])]
            parents: list[Member] = []
        else:
            parents = sorted(self._members, key=_rank)[:self.options["parents"]]
            count = self.options["population"] - len(parents)
            mutations = min(count, self._mutations())
            children = [self._child(self._rng.choice(parents)) for _ in range(mutations)]
            for _ in range(count - mutations):
                if len(parents) == 1:
                    children.append(self._child(parents[0]))  # no second parent to cross with
                    continue
                a, b = self._rng.sample(parents, 2)
                children.append(self._fresh(lambda a=a, b=b: self.moves.crossover(a.candidate, b.candidate, self._rng)))
        results = self._evaluate_batch([StageRequest(c, stages) for c in children], [stages] * len(children))
        self._members = list(parents)
        for candidate, fitness in zip(children, results):
            if fitness is not None:
                self._add(candidate, stages, fitness)


# the algorithms a search over trained models chooses from (GeneticEvolution needs crossover, which not every
# Moves has: it is used by name where it applies)
ALGORITHMS: Registry[type[Search]] = Registry("evolution algorithm")
for _search in (HierarchicalEvolution, RegularizedEvolution, RandomSearch):
    ALGORITHMS.register(_search.name, _search)


def stage_trainings(algorithm: str, **options: Any) -> int:
    """The stage-trainings a run of `algorithm` with `options` uses, to give another algorithm the same budget.

    For the baselines it is exact (budget rounded down to whole models); for "hierarchical" see
    `HierarchicalEvolution.planned_stage_trainings` (exact for the EcoNAS plan when every evaluation succeeds).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown evolution algorithm {algorithm!r}; algorithms: {', '.join(ALGORITHMS)}")
    search = ALGORITHMS[algorithm]
    return search.planned_stage_trainings(search.check_options(**options))
