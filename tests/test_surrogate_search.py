"""The surrogate benchmark (task=surrogate_search): search algorithms driven by the evolution engine on a surrogate."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
from conftest import compose_cfg

from darts_lite.errors import ConfigError
from darts_lite.spaces.darts import sample
from darts_lite.spaces.darts.genotype import Genotype
from darts_lite.surrogate import Table, make_surrogate, write_table
from darts_lite.surrogate.benchmark import ALGORITHMS, ZOO, benchmark, check, run_surrogate_search, search_curve, write_curves

# a graded score per op: a mutation often helps a little, so a search that follows its parents climbs
OP_VALUE = {"sep_conv_3x3": 1.0, "sep_conv_5x5": 0.75, "dil_conv_3x3": 0.5, "dil_conv_5x5": 0.5}


def sep_share(g: Genotype) -> float:
    """The known optimum: every pair of both cells a sep_conv_3x3 gives 1.0. A random genotype scores about 0.39 +- 0.1,
    so random search's best over a few hundred draws stays near 0.65, while a search that keeps and mutates its good
    genotypes climbs well above that; one that ignores its parents does not."""
    pairs = [op for cell in g.cells().values() for op, _ in cell]
    return sum(OP_VALUE.get(op, 0.0) for op in pairs) / len(pairs)


class Stub:
    """A surrogate stand-in: predict = sep_share; counts the genotypes it was asked about."""

    def __init__(self) -> None:
        self.asked = 0

    def predict(self, genotypes):
        self.asked += len(genotypes)
        return np.array([sep_share(g) for g in genotypes])


def test_every_algorithm_improves_and_the_guided_ones_beat_random_search():
    curves = benchmark(Stub().predict, ALGORITHMS, 300, [0, 1, 2])
    for algorithm, runs in curves.items():
        assert runs.shape == (3, 300)
        assert np.all(np.diff(runs, axis=1) >= 0), algorithm  # best so far never drops
        assert np.all(runs[:, -1] > runs[:, 0]), algorithm
        assert np.all(runs <= 1.0)
    final = {a: runs[:, -1].mean() for a, runs in curves.items()}
    for algorithm in ("regularized", "local"):
        assert final[algorithm] >= final["random"] + 0.1, final
    # EcoNAS's promotions re-query genotypes it has seen (a stage-training is one query), so its lead is smaller
    assert final["hierarchical"] >= final["random"] + 0.02, final


def test_a_search_that_ignores_its_parents_does_not_beat_random_search():
    # the check above must be able to fail: with mutate() replaced by a fresh sample, local search is random search
    from dataclasses import replace

    from darts_lite.econas.evolution import space_moves

    broken = replace(space_moves("darts"), mutate=lambda g, rng: sample(rng))
    local = np.mean([search_curve("local", Stub().predict, 150, s, moves=broken)[0][-1] for s in range(3)])
    rand = np.mean([search_curve("random", Stub().predict, 150, s)[0][-1] for s in range(3)])
    assert local < rand + 0.1


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_budgets_are_respected_exactly_and_seeded_runs_repeat(algorithm):
    for budget in (1, 7, 45):
        stub = Stub()
        curve, best = search_curve(algorithm, stub.predict, budget, seed=3)
        assert stub.asked == budget and curve.shape == (budget,)
        assert sep_share(best) == pytest.approx(curve[-1])
    again = [search_curve(algorithm, Stub().predict, 60, seed=5)[0] for _ in range(2)]
    np.testing.assert_array_equal(again[0], again[1])
    other = [search_curve(algorithm, Stub().predict, 60, seed=s)[0] for s in (6, 7)]
    assert any(not np.array_equal(again[0], o) for o in other)


def test_curves_are_written_as_csv_and_png(tmp_path):
    curves = benchmark(Stub().predict, ["random", "local"], 12, [0, 4])
    csv_path, png_path = write_curves(curves, [0, 4], tmp_path)
    rows = list(csv.DictReader(open(csv_path)))
    assert [(r["algorithm"], r["queries"]) for r in rows] == [(a, str(q)) for a in ("random", "local") for q in range(1, 13)]
    last = rows[11]
    assert float(last["best_min"]) <= float(last["best_mean"]) <= float(last["best_max"])
    assert float(last["best_seed4"]) == pytest.approx(curves["random"][1, -1], abs=1e-6)
    assert png_path.read_bytes()[:4] == b"\x89PNG"


def test_bad_values_give_one_message():
    # neither model nor table: the shipped digits table
    assert check(compose_cfg("+experiment=surrogate_search"))["source"] == "shipped"
    with pytest.raises(ConfigError) as e:
        check(compose_cfg("+experiment=surrogate_search", "surrogate.model=m.json", "surrogate_search.budget=0",
                          "surrogate_search.algorithms=[random,bees]"))
    assert "surrogate_search.budget=0: must be an integer >= 1" in str(e.value)
    assert "surrogate_search.algorithms=['random', 'bees']" in str(e.value)
    with pytest.raises(ConfigError, match="give one of them"):
        check(compose_cfg("+experiment=surrogate_search", "surrogate.model=m.json", "surrogate.data=t.csv"))
    with pytest.raises(ConfigError, match="surrogate_search.local: local option neighbours=0"):
        check(compose_cfg("+experiment=surrogate_search", "surrogate.model=m.json", "surrogate_search.local.neighbours=0"))
    with pytest.raises(ConfigError) as e:
        check(compose_cfg("+experiment=surrogate_search", "surrogate.data=t.csv", "surrogate.fit=svm"))
    assert "surrogate.accuracy_unit=null" in str(e.value) and "surrogate.fit='svm'" in str(e.value)
    with pytest.raises(ValueError, match="budget=0"):
        search_curve("random", Stub().predict, 0, 0)
    with pytest.raises(ValueError, match="unknown algorithm 'bees'"):
        search_curve("bees", Stub().predict, 5, 0)


def synthetic_table(n: int) -> Table:
    rng = random.Random(0)
    genotypes = [sample(rng) for _ in range(n)]
    return Table(genotypes, np.array([0.8 + 0.1 * sep_share(g) for g in genotypes]), "synthetic")


@pytest.mark.parametrize("source", ["model", "data", "shipped"])
def test_task_end_to_end(source, tmp_path):
    table = synthetic_table(40)
    if source == "model":
        path = make_surrogate("forest", 0, trees=10).fit(table).save(tmp_path / "forest.json")
        given = [f"surrogate.model={path}"]
    elif source == "shipped":
        given = ["surrogate.fit=forest", "surrogate.forest.trees=10"]
    else:
        path = write_table(tmp_path / "table.csv", table.genotypes, table.accuracies)
        given = [f"surrogate.data={path}", "surrogate.accuracy_unit=fraction", "surrogate.fit=forest",
                 "surrogate.forest.trees=10"]
    run = tmp_path / "run"
    summary = run_surrogate_search(compose_cfg("+experiment=surrogate_search", *given, f"run_dir={run}",
                                               "surrogate_search.budget=20", "surrogate_search.seeds=[0,1]"))
    for name in ("surrogate_search.csv", "surrogate_search.png", "surrogate_zoo.csv", "surrogate_search.md", "summary.json"):
        assert (run / name).is_file(), name
    assert (run / "models" / "forest.json").is_file() == (source != "model")
    zoo = list(csv.DictReader(open(run / "surrogate_zoo.csv")))
    low = 0.3 if source == "shipped" else 0.7  # the shipped digits table's accuracies span 0.31-0.91
    assert [r["name"] for r in zoo] == list(ZOO) and all(low < float(r["predicted_accuracy"]) < 1 for r in zoo)
    assert "PREDICTION" in (run / "surrogate_search.md").read_text()
    assert set(json.loads((run / "summary.json").read_text())["final_best_predicted"]) == set(ALGORITHMS)
    assert summary["budget"] == 20
    if source == "shipped":
        assert "digits_c0r0s0e2.csv (300 genotypes)" in (run / "surrogate_search.md").read_text()
