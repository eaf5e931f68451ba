"""The surrogate: tables in every format, the encodings, the three models (fit, predict, save, load, refuse), the
metrics, the bad inputs, and task=surrogate end to end. Sizes are small: the whole file runs in seconds."""

from __future__ import annotations

import csv
import json
import math
import random

import numpy as np
import pytest
from conftest import compose_cfg
from sklearn.ensemble import RandomForestRegressor

from darts_lite import Genotype
from darts_lite.econas import Archive, genotype_hash
from darts_lite.errors import ConfigError
from darts_lite.spaces.darts import sample
from darts_lite.surrogate import (
    FlatEncoding,
    GraphEncoding,
    SurrogateDataError,
    SurrogateFileError,
    Table,
    genotype_from_nb301,
    genotype_to_nb301,
    heldout,
    kfold,
    load_surrogate,
    load_table,
    make_surrogate,
    nb301_result,
    write_table,
)
from darts_lite.surrogate.encodings import OPS
from darts_lite.surrogate.metrics import kendall_tau, scores, sparse_kendall_tau, top_k_hit_rate
from darts_lite.surrogate.models import GINSurrogate
from darts_lite.surrogate.task import REPORT_COLUMNS, check, run_surrogate

P = "NetworkSelectorDatasetInfo:darts:"
# a per-op score; pairs reading an intermediate state count 30% more, so the inputs matter too
OP_SCORE = dict(zip(OPS, [0.0, 0.1, -0.2, 0.5, 0.4, 0.3, 0.2]))
FAST = {"lgbm": {"trees": 60, "min_child_samples": 3}, "gin": {"epochs": 40, "hidden": 16}, "forest": {"trees": 20}}


def synthetic_accuracy(g: Genotype) -> float:
    total = sum(weight * OP_SCORE[op] * (1.3 if j >= 2 else 1.0)
                for cell, weight in (("normal", 1.0), ("reduce", 0.5)) for op, j in g.cells()[cell])
    return 0.80 + 0.02 * total


def synthetic_table(n: int, seed: int = 0) -> Table:
    rng = random.Random(seed)
    genotypes = [sample(rng) for _ in range(n)]
    return Table(genotypes, np.array([synthetic_accuracy(g) for g in genotypes]), "synthetic")


def swapped(g: Genotype, cell: str = "normal", node: int = 2) -> Genotype:
    """The same genotype with one node's two (op, input) pairs in the other order."""
    pairs = list(getattr(g, cell))
    pairs[2 * node], pairs[2 * node + 1] = pairs[2 * node + 1], pairs[2 * node]
    fields = {"normal": g.normal, "reduce": g.reduce, cell: tuple(pairs)}
    return Genotype(fields["normal"], g.normal_concat, fields["reduce"], g.reduce_concat)


@pytest.fixture(scope="module")
def table() -> Table:
    return synthetic_table(300)


# ---- metrics -----------------------------------------------------------------------------------------------
def test_metrics_on_known_rankings():
    true = np.array([0.90, 0.91, 0.92, 0.93, 0.94])
    assert kendall_tau(true, true * 2) == pytest.approx(1.0)
    assert kendall_tau(true, -true) == pytest.approx(-1.0)
    # predictions that differ from each other by under 0.05 percentage point are one value after rounding to 0.1%
    close = np.array([0.9000, 0.9001, 0.9002, 0.9003, 0.9004])
    assert sparse_kendall_tau(close, close[::-1].copy()) != sparse_kendall_tau(close, close)
    assert math.isnan(sparse_kendall_tau(close, close[::-1].copy()))  # all tied: no ranking at all
    assert sparse_kendall_tau(true, true + np.array([0, 0.0004, 0, 0.0004, 0])) == pytest.approx(1.0)
    assert kendall_tau(true, true + np.array([0, 0.02, 0, 0, 0])) < 1.0
    assert top_k_hit_rate(true, np.array([5, 4, 3, 2, 1.0]), 2) == 0.0
    assert top_k_hit_rate(true, np.array([1, 2, 3, 5, 4.0]), 2) == 1.0
    s = scores(true, true)
    assert s["r2"] == pytest.approx(1.0) and s["spearman"] == pytest.approx(1.0) and s["top_k_hit_rate"] == 1.0


# ---- encodings ---------------------------------------------------------------------------------------------
def test_encodings_ignore_the_order_of_a_nodes_inputs_and_tell_genotypes_apart():
    g = Genotype.named("DARTS_V2")
    other = swapped(swapped(g, "normal", 1), "reduce", 3)
    assert other != g  # the pairs are stored in another order ...
    flat, graph = FlatEncoding(), GraphEncoding()
    np.testing.assert_array_equal(flat.encode([g]), flat.encode([other]))  # ... and encode the same
    for a, b in zip(graph.encode([g]), graph.encode([other])):
        np.testing.assert_array_equal(a, b)
    rng = random.Random(1)
    many = [sample(rng) for _ in range(50)]
    codes = flat.encode(many)
    assert codes.shape == (50, flat.width) and len(flat.feature_names()) == flat.width
    assert len({row.tobytes() for row in codes}) == len({genotype_hash(x) for x in many})
    # per pair one input and one op; the op counts per cell sum to 8
    assert codes[:, :-1].sum(axis=1).tolist() == [2 * (2 * 8 + 8)] * 50


def test_graph_encoding_wires_ops_as_the_cell_computes():
    g = Genotype.named("DARTS_V2")  # normal node 5 (pairs 6, 7): skip_connect from state 0, dil_conv_3x3 from state 2
    x, adj = GraphEncoding().encode([g])
    x, adj = x[0], adj[0]
    pairs = g.cells()["normal"]
    assert pairs[6] == ("skip_connect", 0) and pairs[7] == ("dil_conv_3x3", 2)
    op_node = 2 + 7  # the dil_conv_3x3 of node 5 reads state 2: the two op nodes of node 2 (pairs 0, 1 -> nodes 2, 3)
    assert x[op_node, 2 + OPS.index("dil_conv_3x3")] == 1
    assert sorted(np.nonzero(adj[:, op_node])[0].tolist()) == [2, 3]
    assert np.nonzero(adj[:, 2 + 6])[0].tolist() == [0]  # skip_connect from input state 0
    assert adj[:, 10].sum() == 8 and x[10, 1] == 1  # the output sums every op node (concat 2..5)
    assert (x[11:, -1] == 1).all() and (x[:11, -1] == 0).all()  # the reduce cell's nodes say so
    fixed = Genotype.named("GDAS_F1")
    fx, fadj = GraphEncoding().encode([fixed])
    assert fx[0, 11:].sum() == 0 and fadj[0, 11:].sum() == 0 and FlatEncoding().encode([fixed])[0, -1] == 1


# ---- models ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lgbm", "gin", "forest"])
def test_a_fitted_surrogate_ranks_unseen_genotypes(kind, table):
    result = heldout(lambda: make_surrogate(kind, 0, **FAST[kind]), table, test_fraction=0.25, seed=0)
    assert result.scores["sparse_kendall_tau"] > 0.6, result.scores
    # the same model fitted on shuffled accuracies has nothing to learn: its ranking is no better than chance
    shuffled = Table(table.genotypes, np.random.default_rng(0).permutation(table.accuracies), "shuffled")
    control = heldout(lambda: make_surrogate(kind, 0, **FAST[kind]), shuffled, test_fraction=0.25, seed=0)
    assert abs(control.scores["kendall_tau"]) < 0.3, control.scores


def test_kfold_predicts_every_row_once(table):
    result = kfold(lambda: make_surrogate("lgbm", 0, **FAST["lgbm"]), table.subset(range(60)), folds=3, seed=0)
    assert len(result.folds) == 3 and not np.isnan(result.predictions).any()
    assert result.mean()["sparse_kendall_tau"] > 0.3


@pytest.mark.parametrize("kind", ["lgbm", "gin", "forest"])
def test_save_and_load_round_trip(kind, table, tmp_path):
    part = table.subset(range(80))
    model = make_surrogate(kind, 3, **FAST[kind]).fit(part)
    model.evaluation = {"heldout": {"sparse_kendall_tau": 0.5}}
    path = model.save(tmp_path / f"{kind}.json")
    loaded = load_surrogate(path)
    probe = [sample(random.Random(9)) for _ in range(20)]
    np.testing.assert_allclose(loaded.predict(probe), model.predict(probe), rtol=0, atol=1e-6)
    record = json.loads(path.read_text())
    assert record["version"] == f"dl-{kind}-v1" and record["kind"] == kind and record["rows"] == 80
    assert record["data_hash"] == part.data_hash() != table.subset(range(1, 81)).data_hash()
    assert set(record["fit_metrics"]) >= {"r2", "sparse_kendall_tau"} and loaded.evaluation == model.evaluation
    assert type(loaded).load(path).predict(probe[:1]).shape == (1,)


def test_the_forest_predicts_as_scikit_learn_from_its_saved_trees(table, tmp_path):
    part = table.subset(range(80))
    model = make_surrogate("forest", 5, trees=7, max_features=0.5).fit(part)
    reference = RandomForestRegressor(n_estimators=7, max_features=0.5, random_state=5, n_jobs=1)
    reference.fit(FlatEncoding().encode(part.genotypes), part.accuracies)
    probe = [sample(random.Random(4)) for _ in range(30)]
    expected = reference.predict(FlatEncoding().encode(probe))
    np.testing.assert_allclose(load_surrogate(model.save(tmp_path / "f.json")).predict(probe), expected, atol=1e-12)


def test_loading_refuses_other_files_with_one_message(table, tmp_path):
    path = make_surrogate("forest", 0, trees=2).fit(table.subset(range(30))).save(tmp_path / "forest.json")
    with pytest.raises(SurrogateFileError, match="holds a forest surrogate, not a gin one"):
        GINSurrogate.load(path)
    record = json.loads(path.read_text())
    cases = {
        "other_version.json": ({**record, "version": "dl-forest-v0"},
                               "version 'dl-forest-v0'; this darts_lite reads dl-forest-v1"),
        "other_kind.json": ({**record, "kind": "xgboost"}, "kind 'xgboost', which this darts_lite does not know"),
        "no_format.json": ({k: v for k, v in record.items() if k != "format"}, "not a darts_lite surrogate file"),
        "damaged.json": ({**record, "model": {"trees": [{"left": [1], "right": [0]}]}}, "damaged dl-forest-v1 file"),
        "loop.json": ({**record, "model": {"trees": [{"left": [0, -1], "right": [1, -1], "feature": [0, -2],
                                                      "threshold": [0.5, -2], "value": [0.9, 0.9]}]}}, "back up it"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(SurrogateFileError, match=message):
            load_surrogate(tmp_path / name)
    (tmp_path / "model.pt").write_bytes(b"\x80\x04\x95 a pickle")
    with pytest.raises(SurrogateFileError, match="not JSON"):
        load_surrogate(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="not fitted"):
        make_surrogate("gin").predict([Genotype.named("DARTS_V2")])


# ---- NAS-Bench-301 -----------------------------------------------------------------------------------------
def hand_made_nb301_config() -> dict:
    """A configuration as NAS-Bench-301 stores it: only the kept edges, nodes 3..5 with their inputs, and other
    hyperparameters beside them."""
    return {
        f"{P}edge_normal_0": "sep_conv_3x3", f"{P}edge_normal_1": "skip_connect",         # node 2: states 0, 1
        f"{P}inputs_node_normal_3": "0_2", f"{P}edge_normal_2": "dil_conv_3x3", f"{P}edge_normal_4": "max_pool_3x3",
        f"{P}inputs_node_normal_4": "1_3", f"{P}edge_normal_6": "sep_conv_5x5", f"{P}edge_normal_8": "avg_pool_3x3",
        f"{P}inputs_node_normal_5": "2_4", f"{P}edge_normal_11": "skip_connect", f"{P}edge_normal_13": "dil_conv_5x5",
        f"{P}edge_reduce_0": "max_pool_3x3", f"{P}edge_reduce_1": "max_pool_3x3",
        f"{P}inputs_node_reduce_3": "1_2", f"{P}edge_reduce_3": "sep_conv_3x3", f"{P}edge_reduce_4": "skip_connect",
        f"{P}inputs_node_reduce_4": "0_1", f"{P}edge_reduce_5": "avg_pool_3x3", f"{P}edge_reduce_6": "dil_conv_3x3",
        f"{P}inputs_node_reduce_5": "3_4", f"{P}edge_reduce_12": "sep_conv_5x5", f"{P}edge_reduce_13": "skip_connect",
        f"{P}layers": 8, f"{P}init_channels": 32, "OptimizerSelector:sgd:learning_rate": 0.025,
    }


EXPECTED_NB301 = Genotype(
    normal=(("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 0), ("max_pool_3x3", 2), ("sep_conv_5x5", 1),
            ("avg_pool_3x3", 3), ("skip_connect", 2), ("dil_conv_5x5", 4)),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 1), ("skip_connect", 2), ("avg_pool_3x3", 0),
            ("dil_conv_3x3", 1), ("sep_conv_5x5", 3), ("skip_connect", 4)))


def test_nb301_configuration_converts_both_ways():
    config = hand_made_nb301_config()
    assert genotype_from_nb301(config) == EXPECTED_NB301
    darts_keys = {k: v for k, v in config.items() if k.startswith(P + "edge_") or k.startswith(P + "inputs_")}
    assert genotype_to_nb301(EXPECTED_NB301) == darts_keys
    for g in [Genotype.named("DARTS_V2"), Genotype.named("PC_DARTS"), *(sample(random.Random(s)) for s in range(20))]:
        assert genotype_hash(genotype_from_nb301(genotype_to_nb301(g))) == genotype_hash(g)
    with pytest.raises(ValueError, match="inputs_node_normal_4 is '1_4'"):
        genotype_from_nb301({**config, f"{P}inputs_node_normal_4": "1_4"})
    with pytest.raises(ValueError, match="edge_reduce_12 is None"):
        genotype_from_nb301({k: v for k, v in config.items() if k != f"{P}edge_reduce_12"})
    with pytest.raises(ValueError, match="fixed reduction"):
        genotype_to_nb301(Genotype.named("GDAS_F1"))


def test_nb301_result_files_load_as_a_table(tmp_path):
    folder = tmp_path / "nb301"
    folder.mkdir()
    (folder / "result_0.json").write_text(json.dumps({"optimized_hyperparamater_config": hand_made_nb301_config(),
                                                      "info": [{"val_accuracy": 93.25, "train_loss": 0.1}],
                                                      "test_accuracy": 93.0, "runtime": 3000}))
    (folder / "result_1.json").write_text(json.dumps(nb301_result(Genotype.named("DARTS_V2"), 94.5, 94.1)))
    (folder / "result_2.json").write_text(json.dumps({"optimized_hyperparamater_config": {}, "info": [{"val_accuracy": 90}]}))
    (folder / "broken.json").write_text("{not json")
    t = load_table(folder)
    assert t.genotypes[0] == EXPECTED_NB301 and genotype_hash(t.genotypes[1]) == genotype_hash(Genotype.named("DARTS_V2"))
    np.testing.assert_allclose(t.accuracies, [0.9325, 0.945])
    assert any("result_2.json" in s and "edge_normal_0 is None" in s for s in t.skipped)
    assert any("broken.json" in s and "not JSON" in s for s in t.skipped)
    np.testing.assert_allclose(load_table(folder, metric="test_acc").accuracies, [0.930, 0.941])
    with pytest.raises(SurrogateDataError, match="which store accuracies as percents; leave surrogate.accuracy_unit unset"):
        load_table(folder, accuracy_unit="fraction")


# ---- tables and bad inputs ---------------------------------------------------------------------------------
def write_csv(path, rows) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["genotype", "accuracy"])
        writer.writerows(rows)
    return str(path)


def test_csv_and_jsonl_tables_report_skipped_rows_and_average_duplicates(tmp_path):
    a, b, c = Genotype.named("DARTS_V2"), Genotype.named("PC_DARTS"), Genotype.named("P_DARTS")
    path = write_csv(tmp_path / "t.csv", [
        [a.to_text(), "93.0"], [swapped(a).to_text(), "94.0"],  # the same genotype twice (inputs swapped)
        [json.dumps(b.to_dict()), "92.5"], ["Genotype(normal=[('conv_9x9', 0)])", "90"], [c.to_text(), "nan"],
        [c.to_text(), "inf"],
        [c.to_text(), ""], [Genotype.named("GDAS_V1").to_text(), "91"]])
    t = load_table(path, accuracy_unit="percent")
    assert [genotype_hash(g) for g in t.genotypes] == [genotype_hash(g) for g in (a, b, Genotype.named("GDAS_V1"))]
    np.testing.assert_allclose(t.accuracies, [0.935, 0.925, 0.91])
    assert len(t.duplicates) == 1 and "t.csv:2, " in t.duplicates[0] and "t.csv:3" in t.duplicates[0]
    assert [s.split(": ", 1)[0].rsplit(":", 1)[1] for s in t.skipped] == ["5", "6", "7", "8"]
    assert "does not parse" in t.skipped[0] and "nan" in t.skipped[1] and "inf" in t.skipped[2]
    assert "missing" in t.skipped[3]
    report = "\n".join(t.report())
    assert "rows skipped: 4" in report and "genotypes seen more than once (accuracies averaged): 1" in report

    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(json.dumps({"genotype": a.to_text(), "accuracy": 0.9}) + "\n\nnot json\n"
                     + json.dumps({"genotype": b.to_dict(), "accuracy": 0.8}) + "\n")
    t = load_table(jsonl, accuracy_unit="fraction")
    assert t.genotypes == [a, b] and t.skipped == [f"{jsonl}:3: not JSON (Expecting value)"]


def test_bad_tables_give_one_clear_message(tmp_path):
    g = [sample(random.Random(s)) for s in range(6)]
    cases = [
        (write_csv(tmp_path / "empty.csv", []), "fraction", "has no usable rows"),
        (write_csv(tmp_path / "bad.csv", [["Genotype(", "0.9"]]), "fraction", r"no usable rows \(1 rows skipped: .*bad.csv:2"),
        (write_csv(tmp_path / "flat.csv", [[x.to_text(), "0.9"] for x in g]), "fraction",
         "all 6 genotypes have the accuracy 0.9000"),
        (write_csv(tmp_path / "percent.csv", [[g[0].to_text(), "93.1"]]), "fraction", "percent.csv:2: accuracy 93.1 is outside "
         r"\[0, 1\] for accuracy_unit=fraction; the values look like percentages"),
        (write_csv(tmp_path / "high.csv", [[g[0].to_text(), "193"]]), "percent", "outside \\[0, 100\\]"),
        (write_csv(tmp_path / "neg.csv", [[g[0].to_text(), "-0.1"]]), "fraction", "outside"),
        (write_csv(tmp_path / "unit.csv", [[g[0].to_text(), "0.9"]]), None, "surrogate.accuracy_unit is not set"),
        (str(tmp_path / "missing.csv"), "fraction", "no such file"),
    ]
    (tmp_path / "table.txt").write_text("x")
    cases.append((str(tmp_path / "table.txt"), "fraction", "cannot tell its format"))
    (tmp_path / "cols.csv").write_text("arch,acc\nx,1\n")
    cases.append((str(tmp_path / "cols.csv"), "fraction", "no column genotype or accuracy"))
    for path, unit, message in cases:
        with pytest.raises(SurrogateDataError, match=message):
            load_table(path, accuracy_unit=unit)
    small = Table(g, np.linspace(0.8, 0.9, 6), "six")
    with pytest.raises(SurrogateDataError, match="5-fold evaluation needs at least 10 genotypes .* has 6"):
        kfold(lambda: make_surrogate("forest", trees=2), small, folds=5)
    with pytest.raises(SurrogateDataError, match="all 6 genotypes have the accuracy"):
        make_surrogate("forest").fit(Table(g, np.full(6, 0.9), "flat"))
    assert issubclass(SurrogateDataError, ConfigError) and issubclass(SurrogateFileError, ConfigError)


def test_archive_tables_take_one_setting_at_its_full_epochs(tmp_path):
    path = tmp_path / "archive.sqlite"
    rng = random.Random(0)
    genotypes = [sample(rng) for _ in range(5)]
    with Archive(path) as archive:
        for n, g in enumerate(genotypes):
            for seed in (0, 1):
                archive.add({"genotype": g.to_text(), "genotype_hash": genotype_hash(g), "setting": "c2r0s0e6", "seed": seed,
                             "epochs": 6, "val_acc": 0.5 + 0.05 * n + 0.01 * seed, "test_acc": 0.4, "status": "done"})
            archive.add({"genotype": g.to_text(), "genotype_hash": genotype_hash(g), "setting": "c2r0s0e6", "seed": 0,
                         "epochs": 2, "val_acc": 0.1, "status": "done"})  # an evolution stage, not the full training
        archive.add({"genotype": genotypes[0].to_text(), "genotype_hash": genotype_hash(genotypes[0]), "setting": "c0r0s0e5",
                     "seed": 0, "epochs": 5, "val_acc": 0.99, "status": "done"})
    with pytest.raises(SurrogateDataError, match=r"several settings: c0r0s0e5 \(1\), c2r0s0e6 \(15\); choose one"):
        load_table(path)
    t = load_table(path, setting="c2r0s0e6")
    assert t.genotypes == genotypes
    np.testing.assert_allclose(t.accuracies, [0.505 + 0.05 * n for n in range(5)])  # the two seeds averaged
    assert len(t.duplicates) == 5 and any("5 evaluations trained fewer than the setting's 6 epochs" in s for s in t.skipped)
    with pytest.raises(SurrogateDataError, match="no finished evaluation under setting 'c9'"):
        load_table(path, setting="c9")


# ---- the task ----------------------------------------------------------------------------------------------
def test_task_checks_every_key_before_reading_anything():
    with pytest.raises(ConfigError) as e:
        check(compose_cfg("+experiment=surrogate", "surrogate.data=t.csv", "surrogate.models=[lgbm,svm]",
                          "surrogate.folds=1", "surrogate.test_fraction=1.5", "surrogate.gin.epochs=0",
                          "+surrogate.forest.depth=3"))
    message = str(e.value)
    for expected in ("surrogate.accuracy_unit=null: t.csv is a CSV/JSONL table", "surrogate.models=['lgbm', 'svm']",
                     "surrogate.folds=1", "surrogate.test_fraction=1.5", "surrogate.gin.epochs=0",
                     "surrogate.forest.depth: unknown option"):
        assert expected in message, message
    with pytest.raises(ConfigError, match="surrogate.data=None: give the table"):
        check(compose_cfg("+experiment=surrogate"))
    with pytest.raises(ConfigError, match="needs the surrogate keys"):
        check(compose_cfg("+experiment=surrogate", "~surrogate"))


def test_task_end_to_end_on_a_small_csv(tmp_path):
    t = synthetic_table(48, seed=3)
    data = write_table(tmp_path / "table.csv", t.genotypes + t.genotypes[:2], [*t.accuracies, *t.accuracies[:2]])
    run = tmp_path / "run"
    cfg = compose_cfg("+experiment=surrogate", f"surrogate.data={data}", "surrogate.accuracy_unit=fraction", f"run_dir={run}",
                      "surrogate.folds=3", "surrogate.learning_curve=[0.5,1.0]", "surrogate.lgbm.trees=30",
                      "surrogate.gin.epochs=15", "surrogate.gin.hidden=8", "surrogate.forest.trees=10")
    summary = run_surrogate(cfg)
    for name in ("surrogate_report.md", "surrogate_report.csv", "surrogate_scatter.png", "surrogate_learning_curve.png",
                 "surrogate_learning_curve.csv", "summary.json", "config.yaml"):
        assert (run / name).is_file(), name
    assert (run / "surrogate_scatter.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(run / "surrogate_report.csv")))
    assert [r["model"] for r in rows] == ["lgbm", "gin", "forest"]
    assert list(rows[0])[:len(REPORT_COLUMNS)] == list(REPORT_COLUMNS)
    assert all(-1 <= float(r["sparse_kendall_tau"]) <= 1 and r["test_rows"] == "10" for r in rows)
    curve = list(csv.DictReader(open(run / "surrogate_learning_curve.csv")))
    assert [(r["model"], r["train_rows"]) for r in curve] == [(m, n) for m in ("lgbm", "gin", "forest") for n in ("19", "38")]
    report = (run / "surrogate_report.md").read_text()
    assert "48 genotypes from" in report and "dl-gin-v1" in report
    assert "genotypes seen more than once (accuracies averaged): 2" in report
    for r in rows:
        model = load_surrogate(run / r["file"])
        assert model.trained_on["rows"] == 48 and model.evaluation["heldout"]["r2"] == pytest.approx(float(r["r2"]))
        np.testing.assert_allclose(model.predict(t.genotypes[:3]).shape, (3,))
    assert summary["rows"] == 48 and summary["duplicates"] == 2
