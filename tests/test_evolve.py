"""The evolution engine on a toy space: hierarchical promotion and aging, failures, baselines, budgets,
determinism and exact resumption. No training: candidates are tuples of ints, fitness a fixed function."""

import json
import random
import statistics
import zlib

import pytest

from darts_lite.evolve import (
    ALGORITHMS,
    DEFAULT_BUDGET,
    GeneticEvolution,
    HierarchicalEvolution,
    Moves,
    RandomSearch,
    RegularizedEvolution,
    StageRequest,
    stage_trainings,
)

VALUES = 5


def toy_moves(length):
    """Tuples of `length` ints in 0..4; a mutation changes one position to another value."""

    def mutate(candidate, rng):
        i = rng.randrange(length)
        values = list(candidate)
        values[i] = rng.choice([v for v in range(VALUES) if v != candidate[i]])
        return tuple(values)

    return Moves(sample=lambda rng: tuple(rng.randrange(VALUES) for _ in range(length)), mutate=mutate,
                 key=lambda c: ",".join(map(str, c)), to_state=list, from_state=tuple)


MOVES = toy_moves(6)


def fitness(candidate, stages):
    """Sum of the values, a small bonus per stage, and noise fixed by (key, stage): deterministic in every process."""
    noise = zlib.crc32(f"{MOVES.key(candidate)}@{stages}".encode()) % 1000 / 1000
    return sum(candidate) + 0.25 * stages + noise


def distance(a, b):
    return sum(x != y for x, y in zip(a, b))


class Recorder:
    """The evaluator: logs each batch, returns `fitness`, or None where `fails(request, cycle)` says so."""

    def __init__(self, fails=None):
        self.batches: list[list[StageRequest]] = []
        self.results: list[list] = []
        self.fails = fails or (lambda request, cycle: False)

    def __call__(self, requests):
        cycle = len(self.batches)
        out = [None if self.fails(r, cycle) else fitness(r.candidate, r.stages) for r in requests]
        self.batches.append(list(requests))
        self.results.append(out)
        return out

    def log(self):
        return [[(MOVES.key(r.candidate), r.stages) for r in batch] for batch in self.batches]


def _top(pool, count):
    """Hand sort: pool is {key: fitness}; the `count` best keys, ties by key."""
    return sorted(pool, key=lambda k: (-pool[k], k))[:count]


# ---- (a) hierarchical: cycles, promotion, aging, failures -----------------------------------------------------
def test_hierarchical_cycles_promote_the_top_of_each_pool():
    rec = Recorder()
    search = HierarchicalEvolution(MOVES, rec, seed=0)
    search.step()
    first = rec.batches[0]
    assert len(first) == 16 and all(r.stages == 1 for r in first)
    assert len({MOVES.key(r.candidate) for r in first}) == 16
    pool1 = {MOVES.key(r.candidate): f for r, f in zip(first, rec.results[0])}

    search.step()  # cycle 1: 8 promotions to stage 2, no stage-2 pool yet
    batch = rec.batches[1]
    assert [r.stages for r in batch] == [2] * 8 + [1] * 16
    assert [MOVES.key(r.candidate) for r in batch[:8]] == _top(pool1, 8)
    for child in batch[8:]:  # every parent came from pool 1, the only non-empty pool
        assert min(distance(child.candidate, r.candidate) for r in first) == 1
    pool2 = {MOVES.key(r.candidate): f for r, f in zip(batch[:8], rec.results[1][:8])}
    for key in pool2:
        del pool1[key]
    pool1.update({MOVES.key(r.candidate): f for r, f in zip(batch[8:], rec.results[1][8:])})

    search.step()  # cycle 2: top 8 of pool 1 to stage 2, then top 4 of pool 2 to stage 3, then 16 children
    batch = rec.batches[2]
    assert [r.stages for r in batch] == [2] * 8 + [3] * 4 + [1] * 16
    assert [MOVES.key(r.candidate) for r in batch[:8]] == _top(pool1, 8)
    assert [MOVES.key(r.candidate) for r in batch[8:12]] == _top(pool2, 4)
    assert {m.stage for m in search.population} == {1, 2, 3}
    assert [e["cycle"] for e in search.history] == [0, 1, 2]
    assert [e["evaluations"] for e in search.history] == [16, 40, 68]
    finals = rec.results[2][8:12]
    assert search.history[1]["best"] is None and search.history[2]["best"] == max(finals)
    assert search.history[2]["median"] == statistics.median(finals)
    assert [f for _, f, _ in search.best(10)] == sorted(finals, reverse=True)
    assert all(stages == 3 for _, _, stages in search.best(10))


def test_hierarchical_aging_drops_models_not_trained_for_max_age_cycles():
    search = HierarchicalEvolution(MOVES, Recorder(), seed=1, max_age=2, cycles=8)
    search.step()
    initial = {m.id for m in search.population}
    search.step()  # cycle 1: the 8 unpromoted initial models are 1 cycle old, still alive
    unpromoted = {m.id for m in search.population if m.id in initial and m.stage == 1}
    assert len(unpromoted) == 8
    search.step()  # cycle 2: those not promoted now were last trained at cycle 0 -> 2 - 0 >= max_age
    survivors = {m.id for m in search.population if m.id in unpromoted}
    assert all(m.stage == 2 and m.updated == 2 for m in search.population if m.id in survivors)  # promoted just now
    assert len(survivors) < len(unpromoted)
    while not search.done:
        search.step()
        last = search.cycle - 1  # the cycle just run
        assert all(last - m.updated < 2 for m in search.population)
        assert any(last - m.updated == 1 for m in search.population)  # one cycle untrained is not too old
    # without aging the same run keeps far more models
    keep = HierarchicalEvolution(MOVES, Recorder(), seed=1, max_age=100, cycles=8)
    keep.run()
    assert len(keep.population) > len(search.population) + 50


def test_failed_evaluations_are_dropped_and_the_search_goes_on():
    def fails(request, cycle):  # a quarter of the (candidate, stage) pairs cannot be trained, promotions included
        return zlib.crc32(f"{MOVES.key(request.candidate)}@{request.stages}".encode()) % 4 == 0

    rec = Recorder(fails)
    search = HierarchicalEvolution(MOVES, rec, seed=2, cycles=8)
    failed = set()
    for cycle in range(9):
        search.step()
        batch, results = rec.batches[cycle], rec.results[cycle]
        failed |= {(MOVES.key(r.candidate), r.stages) for r, f in zip(batch, results) if f is None}
        assert not failed & {(m.key, m.stage) for m in search.population}
        for stage in (1, 2, 3):  # exactly the successful requests of this cycle are alive with their new fitness
            fresh = sorted(f for r, f in zip(batch, results) if r.stages == stage and f is not None)
            assert sorted(m.fitness for m in search.population if m.stage == stage and m.updated == cycle) == fresh
    assert search.done and len(rec.batches) == 9
    assert {1, 2} <= {s for _, s in failed}  # failed children and failed promotions
    assert not {(MOVES.key(c), 3) for c, _, _ in search.best(1000)} & failed
    assert [len(b) for b in rec.batches[2:]] == [28] * 7 and search.history[-1]["evaluations"] == 16 + 24 + 7 * 28


def test_an_empty_stage_pool_takes_its_parents_from_the_nearest_one():
    # max_age=1 keeps only the models trained in the last cycle
    # cycle 3 fails every stage-1 model: at cycle 4 pool 1 is empty, its 6 parents come from pool 2
    rec = Recorder(lambda request, cycle: cycle == 3 and request.stages == 1)
    HierarchicalEvolution(MOVES, rec, seed=3, max_age=1, cycles=4).run()
    assert not [r for r in rec.batches[4] if r.stages == 2]  # nothing left to promote from pool 1
    pool2 = [r.candidate for r in rec.batches[3] if r.stages == 2]
    pool3 = [r.candidate for r in rec.batches[3] if r.stages == 3]
    children = [r.candidate for r in rec.batches[4] if r.stages == 1]
    assert len(children) == 16
    assert all(min(distance(c, p) for p in pool2) == 1 for c in children[:11])  # pools 1 and 2 -> pool 2
    assert all(min(distance(c, p) for p in pool3) == 1 for c in children[11:])
    # cycle 3 fails every promotion to stage 2: at cycle 4 pool 2 is empty between pools 1 and 3, and its parents
    # come from the more-trained pool 3
    rec = Recorder(lambda request, cycle: cycle == 3 and request.stages == 2)
    HierarchicalEvolution(MOVES, rec, seed=3, max_age=1, cycles=4).run()
    assert not [r for r in rec.batches[4] if r.stages == 3]
    pool3 = [r.candidate for r in rec.batches[3] if r.stages == 3]
    children = [r.candidate for r in rec.batches[4] if r.stages == 1]
    assert all(min(distance(c, p) for p in pool3) == 1 for c in children[6:])


def test_everything_failing_restarts_from_random_candidates():
    rec = Recorder(lambda request, cycle: cycle == 0)
    search = HierarchicalEvolution(MOVES, rec, seed=4, cycles=2)
    search.run()
    assert [len(b) for b in rec.batches] == [16, 16, 24]
    assert search.history[0]["best"] is None and len(search.population) > 0


def test_evaluate_must_return_one_result_per_request():
    search = HierarchicalEvolution(MOVES, lambda requests: [1.0], seed=0)
    with pytest.raises(ValueError, match="evaluate returned 1 results for 16 requests"):
        search.step()
    search = RandomSearch(MOVES, lambda requests: ["bad"] * len(requests), seed=0, budget=30)
    with pytest.raises(ValueError, match="evaluate returned 'bad'"):
        search.step()


def test_best_lists_each_candidate_once_with_its_best_final_fitness_ties_by_key():
    # 25 candidates, 40 models: the space runs out of unseen ones and some are trained twice, with other noise
    moves, seen = toy_moves(2), {}

    def evaluate(requests):
        out = []
        for r in requests:
            key = moves.key(r.candidate)
            out.append(float(sum(r.candidate)) + (0.5 if len(seen.get(key, [])) == 1 else 0.0))
            seen.setdefault(key, []).append(out[-1])
        return out

    search = RandomSearch(moves, evaluate, 0, budget=3 * 40, batch=8)
    search.run()
    assert any(len(v) > 1 for v in seen.values())
    expected = sorted(((max(v), k) for k, v in seen.items()), key=lambda t: (-t[0], t[1]))
    assert [(f, moves.key(c)) for c, f, _ in search.best(100)] == expected
    assert search.history[-1]["best"] == expected[0][0]
    assert search.history[-1]["median"] == statistics.median(f for f, _ in expected)


# ---- (b) evolution beats random search on the same budget ----------------------------------------------------
def test_evolution_beats_random_search_on_equal_budget():
    moves = toy_moves(12)  # optimum 48: room above what random search finds
    options = dict(cycles=20)
    budget = stage_trainings("hierarchical", **options)
    scores = {name: [] for name in ALGORITHMS}
    for seed in range(6):
        for name, search_type in ALGORITHMS.items():
            search = search_type(moves, Recorder(), seed, **(options if name == "hierarchical" else {"budget": budget}))
            search.run()
            assert search.stages_used <= budget
            scores[name].append(sum(search.best(1)[0][0]))
    # random search's ~190 full trainings find about 37 on average; evolution finds 5 to 8 more
    assert statistics.mean(scores["hierarchical"]) >= statistics.mean(scores["random"]) + 3
    assert statistics.mean(scores["regularized"]) >= statistics.mean(scores["random"]) + 3


# ---- (c) determinism -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALGORITHMS)
def test_same_seed_same_run_other_seed_other_run(name):
    def run(seed):
        rec = Recorder()
        search = ALGORITHMS[name](MOVES, rec, seed, **_small(name))
        search.run()
        return rec.log(), search.history, search.best(5)

    assert run(7) == run(7)
    assert run(7)[0] != run(8)[0]


# ---- (d) kill and resume ---------------------------------------------------------------------------------------
def _small(name):
    return {"hierarchical": dict(cycles=10, max_age=4), "regularized": dict(budget=300, population=12, sample_size=4,
                                                                            batch=8), "random": dict(budget=450)}[name]


@pytest.mark.parametrize("name", ALGORITHMS)
def test_resume_from_a_json_state_dict_equals_an_uninterrupted_run(name):
    def fails(request, cycle):
        return zlib.crc32(MOVES.key(request.candidate).encode()) % 7 == 0

    whole_rec = Recorder(fails)
    whole = ALGORITHMS[name](MOVES, whole_rec, 11, **_small(name))
    whole.run()
    assert len(whole_rec.batches) >= 8

    first_rec = Recorder(fails)
    first = ALGORITHMS[name](MOVES, first_rec, 11, **_small(name))
    for _ in range(5):
        first.step()
    saved = json.dumps(first.state_dict())

    second_rec = Recorder(fails)
    second = ALGORITHMS[name](MOVES, second_rec, 999, **_small(name))  # the state carries the random state
    second.load_state_dict(json.loads(saved))
    second.run()
    assert first_rec.log() + second_rec.log() == whole_rec.log()
    assert second.history == whole.history
    assert second.best(20) == whole.best(20)
    assert [(m.key, m.stage, m.fitness, m.updated) for m in second.population] == \
        [(m.key, m.stage, m.fitness, m.updated) for m in whole.population]
    assert json.loads(json.dumps(second.state_dict())) == json.loads(json.dumps(whole.state_dict()))


def test_resume_refuses_other_options_but_may_run_longer():
    search = HierarchicalEvolution(MOVES, Recorder(), 0, cycles=3)
    search.run()
    state = json.loads(json.dumps(search.state_dict()))
    with pytest.raises(ValueError, match="state was saved with promote=\\[8, 4\\].*promote=\\(6, 4\\)"):
        HierarchicalEvolution(MOVES, Recorder(), 0, cycles=3, promote=(6, 4)).load_state_dict(state)
    with pytest.raises(ValueError, match="saved by a 'hierarchical' search, this is 'random'"):
        RandomSearch(MOVES, Recorder(), 0).load_state_dict(state)
    longer = HierarchicalEvolution(MOVES, Recorder(), 0, cycles=5)
    longer.load_state_dict(state)
    longer.run()
    assert [e["cycle"] for e in longer.history] == list(range(6))


# ---- (e) budgets ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("search_type", [RandomSearch, RegularizedEvolution])
@pytest.mark.parametrize("budget", [96, 100])
def test_baselines_stop_at_their_budget(search_type, budget):
    rec = Recorder()
    search = search_type(MOVES, rec, 0, budget=budget, batch=10)
    search.run()
    requests = [r for batch in rec.batches for r in batch]
    assert all(r.stages == 3 for r in requests)
    assert 3 * len(requests) == search.stages_used == search.history[-1]["stages"] == budget // 3 * 3
    assert stage_trainings(search_type.name, budget=budget) == budget // 3 * 3
    if search_type is RegularizedEvolution:
        assert [len(b) for b in rec.batches] == [32] if budget == 96 else [33]  # the population of 48 is cut short
    with pytest.raises(RuntimeError, match="done"):
        search.step()


def test_regularized_keeps_the_youngest_population():
    rec = Recorder()
    search = RegularizedEvolution(MOVES, rec, 0, population=20, batch=8, sample_size=5, budget=3 * 60)
    search.run()
    assert [len(b) for b in rec.batches] == [20, 8, 8, 8, 8, 8]
    youngest = [MOVES.key(r.candidate) for batch in rec.batches for r in batch][-20:]
    assert [m.key for m in search.population] == youngest


@pytest.mark.parametrize("options", [{}, dict(cycles=7), dict(stages=4, promote=(6, 4, 2), parents=(4, 4, 4, 4), cycles=9),
                                     dict(stages=1, promote=(), parents=(5,), cycles=3), dict(initial=4, cycles=5)])
def test_hierarchical_budget_matches_the_counted_requests(options):
    rec = Recorder()
    search = HierarchicalEvolution(MOVES, rec, 5, **options)
    search.run()
    counted = sum(len(b) for b in rec.batches)  # each request trains one stage: fresh to 1, or s-1 to s
    assert stage_trainings("hierarchical", **options) == counted == search.stages_used == search.history[-1]["stages"]


def test_default_budget_is_the_ecoNAS_plan():
    # cycle 0: 16; cycle 1: 8 promotions (no stage-2 pool yet) + 16 children; cycles 2..100: 8 + 4 + 16
    assert DEFAULT_BUDGET == stage_trainings("hierarchical") == 16 + (8 + 16) + 99 * (8 + 4 + 16)
    assert RegularizedEvolution.check_options()["budget"] == RandomSearch.check_options()["budget"] == DEFAULT_BUDGET


# ---- (f) bad options ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options, message", [
    ("hierarchical", dict(promote=(8,)), r"promote=\[8\]: needs 2 counts"),
    ("hierarchical", dict(stages=4), r"promote=\[8, 4\]: needs 3 counts"),
    ("hierarchical", dict(parents=(6, -1, 5)), r"parents=\[6, -1, 5\]: every count must be an integer >= 0"),
    ("hierarchical", dict(parents=(0, 0, 0)), r"parents=\[0, 0, 0\]: needs at least one parent"),
    ("hierarchical", dict(promote="84"), r"promote='84': must be a list of 2 integers"),
    ("hierarchical", dict(initial=-1), r"initial=-1: must be an integer >= 1"),
    ("hierarchical", dict(tournament=0), r"tournament=0: must be an integer >= 1"),
    ("hierarchical", dict(max_age=True), r"max_age=True: must be an integer >= 1"),
    ("hierarchical", dict(cycles=2.5), r"cycles=2.5: must be an integer >= 0"),
    ("hierarchical", dict(stages=0), r"stages=0: must be an integer >= 1"),
    ("hierarchical", dict(populaton=3), r"hierarchical: unknown option\(s\) populaton; options: stages, initial"),
    ("regularized", dict(sample_size=0), r"regularized option sample_size=0"),
    ("regularized", dict(population=-2), r"population=-2"),
    ("regularized", dict(budget=2), r"budget=2: must be an integer >= 3"),
    ("random", dict(batch=0), r"random option batch=0"),
    ("random", dict(tournament=3), r"random: unknown option\(s\) tournament"),
])
def test_bad_options_raise_a_clear_error(name, options, message):
    with pytest.raises(ValueError, match=message):
        ALGORITHMS[name](MOVES, Recorder(), 0, **options)
    with pytest.raises(ValueError, match=message):
        stage_trainings(name, **options)


def test_bad_algorithm_seed_and_k():
    with pytest.raises(ValueError, match="unknown evolution algorithm 'amoeba'; algorithms: hierarchical, regularized, random"):
        stage_trainings("amoeba")
    with pytest.raises(ValueError, match="seed='0': must be an integer"):
        RandomSearch(MOVES, Recorder(), "0")
    with pytest.raises(ValueError, match="k=-1"):
        RandomSearch(MOVES, Recorder(), 0).best(-1)


def test_moves_are_the_only_view_of_candidates():
    # the engine never looks inside a candidate: an opaque object with its own moves searches just as well
    class Box:
        def __init__(self, value):
            self.value = value

    moves = Moves(sample=lambda rng: Box(rng.randrange(1000)), mutate=lambda b, rng: Box((b.value + rng.choice((-1, 1))) % 1000),
                  key=lambda b: str(b.value), to_state=lambda b: b.value, from_state=Box)
    search = HierarchicalEvolution(moves, lambda requests: [-abs(r.candidate.value - 500) for r in requests], 0, cycles=20)
    before = random.getstate()
    search.run(on_cycle=lambda s: json.dumps(s.state_dict()))
    assert random.getstate() == before  # all randomness comes from the search's own generator
    assert search.best(1)[0][1] > -5


# ---- (f) genetic: generations of mutation and crossover -------------------------------------------------------
def _crossover(a, b, rng):
    return tuple(rng.choice(pair) for pair in zip(a, b))


GENETIC_MOVES = Moves(sample=MOVES.sample, mutate=MOVES.mutate, key=MOVES.key, to_state=list, from_state=tuple,
                      crossover=_crossover)


def test_genetic_keeps_the_fittest_parents_and_breeds_mutations_and_crossovers():
    rec = Recorder()
    search = GeneticEvolution(GENETIC_MOVES, rec, 3, population=12, parents=4, mutation_share=0.5, generations=3)
    search.run()
    assert [len(b) for b in rec.batches] == [12, 8, 8, 8]
    assert all(r.stages == 1 for batch in rec.batches for r in batch)
    assert search.evaluations == GeneticEvolution.planned_stage_trainings(search.options) == 12 + 3 * 8
    # generation 1's parents: the 4 fittest of generation 0; its 4 mutants are one change from a parent, and each
    # crossover child takes every position from one of the parents
    first = {MOVES.key(r.candidate): v for r, v in zip(rec.batches[0], rec.results[0])}
    parents = [tuple(int(v) for v in k.split(",")) for k in _top(first, 4)]
    children = [r.candidate for r in rec.batches[1]]
    assert all(min(distance(c, p) for p in parents) == 1 for c in children[:4])
    assert all(all(any(c[i] == p[i] for p in parents) for i in range(6)) for c in children[4:])
    assert len(search.population) == 12
    assert search.best(1)[0][1] == max(v for batch in rec.results for v in batch)


def test_genetic_climbs_above_random_search_on_equal_evaluations():
    moves = toy_moves(12)
    moves = Moves(moves.sample, moves.mutate, moves.key, list, tuple, crossover=_crossover)
    genetic, random_ = [], []
    for seed in range(4):
        g = GeneticEvolution(moves, Recorder(), seed, population=20, parents=5, generations=8)
        g.run()
        r = RandomSearch(moves, Recorder(), seed, stages=1, batch=20, budget=g.evaluations)
        r.run()
        genetic.append(sum(g.best(1)[0][0]))
        random_.append(sum(r.best(1)[0][0]))
    assert statistics.mean(genetic) >= statistics.mean(random_) + 4


def test_genetic_resumes_exactly_and_refuses_moves_without_crossover():
    def run(steps_first):
        rec = Recorder()
        search = GeneticEvolution(GENETIC_MOVES, rec, 5, population=10, parents=3, generations=4)
        for _ in range(steps_first):
            search.step()
        again = GeneticEvolution(GENETIC_MOVES, rec, 0, population=10, parents=3, generations=4)
        again.load_state_dict(json.loads(json.dumps(search.state_dict())))
        again.run()
        return rec.log(), again.history

    assert run(2) == run(0)
    with pytest.raises(ValueError, match="crossover"):
        GeneticEvolution(MOVES, Recorder(), 0, population=10, parents=3)
    GeneticEvolution(MOVES, Recorder(), 0, population=10, parents=3, mutation_share=1).run()  # mutation only: fine
    with pytest.raises(ValueError, match="parents=10: must be below population=10"):
        GeneticEvolution(GENETIC_MOVES, Recorder(), 0, population=10, parents=10)
