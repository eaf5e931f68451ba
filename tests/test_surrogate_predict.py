"""A saved surrogate put to use: scoring genotypes and search runs (task=surrogate_predict), pre-filtering the EcoNAS
evolution's candidates, and the surrogate tasks' W&B logging (offline). Small surrogates and tiny trainings only."""

from __future__ import annotations

import csv
import json
import random
import statistics
import time

import numpy as np
import pytest
from conftest import TINY_ECONAS, compose_cfg

from darts_lite.econas.evolution import Prefilter, check_prefilter, space_moves
from darts_lite.errors import ConfigError
from darts_lite.evolve import HierarchicalEvolution, StageRequest
from darts_lite.spaces.darts import sample
from darts_lite.spaces.darts.genotype import Genotype, zoo
from darts_lite.surrogate import Table, make_surrogate, write_table
from darts_lite.surrogate.predict import ZOO, load_model, resolve, run_surrogate_predict

# one worker runs this module's tests, so its module fixture (surrogate_file) is built once, not once per worker
pytestmark = pytest.mark.xdist_group("surrogate_predict")

# a known accuracy: a score per op, more for ops that read an intermediate state, the normal cell weighing double
OP_SCORE = {"none": 0.0, "max_pool_3x3": 0.1, "avg_pool_3x3": 0.1, "skip_connect": -0.2, "sep_conv_3x3": 0.5,
            "sep_conv_5x5": 0.4, "dil_conv_3x3": 0.3, "dil_conv_5x5": 0.2}


def true_accuracy(g: Genotype) -> float:
    return 0.80 + 0.02 * sum(weight * OP_SCORE[op] * (1.3 if j >= 2 else 1.0)
                             for cell, weight in (("normal", 1.0), ("reduce", 0.5)) for op, j in g.cells().get(cell, ()))


@pytest.fixture(scope="module")
def surrogate_file(tmp_path_factory):
    rng = random.Random(0)
    genotypes = [sample(rng) for _ in range(200)]
    model = make_surrogate("forest", seed=0, trees=30).fit(Table(genotypes, [true_accuracy(g) for g in genotypes], "known"))
    return model.save(tmp_path_factory.mktemp("surrogate") / "forest.json")


def search_run(folder, genotype: Genotype, space: str = "darts", perturbation: Genotype | None = None):
    """A folder as a finished search leaves it (the files this task reads)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"task: search\nspace:\n  name: {space}\n")
    (folder / "genotype.json").write_text(genotype.to_json() + "\n")
    if perturbation is not None:
        (folder / "genotype_perturbation.json").write_text(perturbation.to_json() + "\n")
    return folder


# ---- task=surrogate_predict ----------------------------------------------------------------------------------
def test_scores_zoo_names_search_runs_files_and_text(surrogate_file, tmp_path, capsys):
    rng = random.Random(7)
    argmax, perturbed, in_file, as_text = (sample(rng) for _ in range(4))
    run = search_run(tmp_path / "runs" / "search" / "a", argmax, perturbation=perturbed)
    (tmp_path / "g.json").write_text(in_file.to_json())
    out = tmp_path / "out"
    # the text goes through Hydra's override parser as it would on the command line
    cfg = compose_cfg("+experiment=surrogate_predict", f"surrogate.model={surrogate_file}", f"run_dir={out}",
                      f'surrogate.predict=[pc-darts,{run},{tmp_path / "g.json"},"{as_text.to_text()}"]')
    summary = run_surrogate_predict(cfg)
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert list(rows[0]) == ["source", "name", "genotype", "predicted_accuracy", "model", "version"]
    assert [(r["source"], r["name"]) for r in rows] == [
        ("zoo", "PC_DARTS"), ("search_run", str(run)), ("search_run", f"{run}/genotype_perturbation.json"),
        ("file", str(tmp_path / "g.json")), ("text", "text 4")]
    genotypes = [Genotype.named("PC_DARTS"), argmax, perturbed, in_file, as_text]
    assert [Genotype.parse(r["genotype"]) for r in rows] == genotypes
    expected = load_model(str(surrogate_file), "surrogate.model").predict(genotypes)
    np.testing.assert_allclose([float(r["predicted_accuracy"]) for r in rows], expected, atol=1e-6)
    assert {(r["model"], r["version"]) for r in rows} == {("forest", "dl-forest-v1")}
    printed = capsys.readouterr().out
    assert "Predicted accuracy by the surrogate dl-forest-v1" in printed and "NOT measured accuracies" in printed
    assert summary["version"] == "dl-forest-v1" and len(summary["predictions"]) == 5


def test_with_no_inputs_the_whole_zoo_is_scored_as_surrogate_search_scores_it(surrogate_file, tmp_path):
    out = tmp_path / "out"
    run_surrogate_predict(compose_cfg("+experiment=surrogate_predict", f"surrogate.model={surrogate_file}", f"run_dir={out}"))
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["name"] for r in rows] == list(ZOO) and {r["source"] for r in rows} == {"zoo"}
    assert set(zoo()) - set(ZOO) == {"FAIRDARTS_A", "FAIRDARTS_B"}  # sparse cells: no encoding reads them
    # task=surrogate_search writes the zoo through the same function: same rows, same numbers
    from darts_lite.surrogate.benchmark import run_surrogate_search

    search = tmp_path / "search"
    run_surrogate_search(compose_cfg("+experiment=surrogate_search", f"surrogate.model={surrogate_file}", f"run_dir={search}",
                                     "surrogate_search.budget=5", "surrogate_search.seeds=[0]",
                                     "surrogate_search.algorithms=[random]"))
    assert (search / "surrogate_zoo.csv").read_text() == (out / "predictions.csv").read_text()


@pytest.mark.parametrize("what,message", [
    ("not_a_run", "not a search run folder (no genotype.json"),
    ("nb201_run", "a search run of the nb201 space; the surrogates predict darts-space genotypes"),
    ("nb201_text", "genotype text 1: a genotype of the nb201 space"),
    ("unknown_name", "DARTS_V9: unknown published genotype name; the zoo: DARTS_V1"),
    ("sparse_cell", "FAIRDARTS_A: the encodings take cells of two ops per node; the normal cell leaves an edge out"),
    ("missing_path", "no such file or folder"),
    ("missing_model", "surrogate.model: surrogate file"),
])
def test_bad_inputs_give_one_clear_message_and_leave_no_run_folder(what, message, surrogate_file, tmp_path):
    nb201_text = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    model, spec = str(surrogate_file), "DARTS_V2"
    if what == "not_a_run":
        (tmp_path / "empty").mkdir()
        spec = str(tmp_path / "empty")
    elif what == "nb201_run":
        spec = str(search_run(tmp_path / "nb", Genotype.named("DARTS_V2"), space="nb201"))
    elif what == "nb201_text":
        spec = f'"{nb201_text}"'
    elif what == "unknown_name":
        spec = "DARTS_V9"
    elif what == "sparse_cell":
        spec = "fairdarts_a"
    elif what == "missing_path":
        spec = str(tmp_path / "runs" / "nothing")
    else:
        model = str(tmp_path / "gone.json")
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as e:
        run_surrogate_predict(compose_cfg("+experiment=surrogate_predict", f"surrogate.model={model}", f"run_dir={out}",
                                          f"surrogate.predict=[{spec}]"))
    assert message in str(e.value) and str(e.value).count("\n") == 0
    assert not out.exists()


def test_every_bad_input_is_listed_and_a_surrogate_of_another_space_is_refused(surrogate_file, tmp_path):
    with pytest.raises(ConfigError) as e:
        resolve(["DARTS_V2", "NOPE", str(tmp_path / "missing")])
    assert e.value.args[0].splitlines()[1:] == ["  NOPE: unknown published genotype name; the zoo: " + ", ".join(ZOO),
                                                f"  {tmp_path / 'missing'}: no such file or folder"]
    with pytest.raises(ConfigError, match="a surrogate of the darts space .*needs genotypes of the nb201 space"):
        load_model(str(surrogate_file), "evolution.prefilter.model", space="nb201")
    with pytest.raises(ConfigError, match="surrogate.model=None: give a surrogate"):
        from darts_lite.surrogate.predict import check

        check(compose_cfg("+experiment=surrogate_predict"))


# ---- the pre-filter ------------------------------------------------------------------------------------------
def test_prefiltered_moves_choose_genotypes_of_higher_true_accuracy(surrogate_file):
    model = load_model(str(surrogate_file), "m")
    plain, filtered = space_moves("darts"), Prefilter(space_moves("darts"), model.predict, 4).moves
    draws = 150

    def true_values(moves, seed):
        rng = random.Random(seed)
        parents = [plain.sample(random.Random(100 + i)) for i in range(draws)]
        # a child's value as its gain over its parent: one change moves the accuracy little, so compare the gains
        return ([true_accuracy(moves.sample(rng)) for _ in range(draws)],
                [true_accuracy(moves.mutate(p, rng)) - true_accuracy(p) for p in parents])

    (base_sampled, base_gains), (sampled, gains) = true_values(plain, 1), true_values(filtered, 1)
    # the best predicted of 4 draws: clearly better than one draw (about one spread here), and the children it
    # picks improve on their parents where unfiltered ones do not on average (about 0.6 spread here)
    assert statistics.mean(sampled) > statistics.mean(base_sampled) + 0.5 * statistics.pstdev(base_sampled)
    assert statistics.mean(gains) > max(0.0, statistics.mean(base_gains)) + 0.3 * statistics.pstdev(base_gains)
    # the choice uses only the generator it is given: same seed, same genotypes; a factor of 1 changes nothing
    assert true_values(filtered, 1) == (sampled, gains)
    assert true_values(Prefilter(plain, model.predict, 1).moves, 1) == (base_sampled, base_gains)


def test_a_prefiltered_search_repeats_and_resumes_exactly(surrogate_file):
    model = load_model(str(surrogate_file), "m")
    options = dict(stages=2, initial=6, promote=(3,), parents=(3, 2), tournament=2, max_age=3, cycles=4)

    def run(cycles_before_resume=None):
        prefilter = Prefilter(space_moves("darts"), model.predict, 3)

        def evaluate(requests):
            results = [true_accuracy(r.candidate) - 0.01 * (2 - r.stages) for r in requests]
            prefilter.record(requests, results, search.cycle)
            return results

        search = HierarchicalEvolution(prefilter.moves, evaluate, seed=11, **options)
        if cycles_before_resume is not None:
            for _ in range(cycles_before_resume):
                search.step()
            state = json.loads(json.dumps(search.state_dict()))
            prefilter = Prefilter(space_moves("darts"), model.predict, 3)
            search = HierarchicalEvolution(prefilter.moves, evaluate, seed=11, **options)
            search.load_state_dict(state)
        search.run()
        return search, prefilter

    straight, prefilter = run()
    resumed, _ = run(cycles_before_resume=2)
    assert straight.history == resumed.history and straight.best(5) == resumed.best(5)
    # every new genotype trained was a pre-filter choice, recorded once with its prediction
    new = [r for r in prefilter.rows if r["stages"] == 1]
    assert len(new) == len(prefilter.rows) == 6 + 4 * 5
    for row in prefilter.rows:
        g = Genotype.parse(row["genotype"])
        assert row["predicted_accuracy"] == pytest.approx(float(model.predict([g])[0]))
        assert row["candidates_mean"] <= row["predicted_accuracy"] and row["candidates"] == 3


def test_prefilter_keys_are_checked_before_anything_runs():
    assert check_prefilter({}) == (None, 1)
    assert check_prefilter({"prefilter": {"model": "m.json", "factor": 1}}) == (None, 1)
    assert check_prefilter({"prefilter": {"model": "m.json", "factor": 5}}) == ("m.json", 5)
    with pytest.raises(ConfigError, match="evolution.prefilter.factor=0: must be an integer >= 1"):
        check_prefilter({"prefilter": {"model": "m.json", "factor": 0}})
    with pytest.raises(ConfigError, match="evolution.prefilter.k: unknown option"):
        check_prefilter({"prefilter": {"model": "m.json", "k": 2}})
    with pytest.raises(ValueError):
        Prefilter(space_moves("darts"), lambda g: [0.0] * len(g), 0)


TINY = ["+experiment=econas_quick", *TINY_ECONAS, "setting.name=c0r0s0e1", "evolution.stages=1", "evolution.initial=3",
        "evolution.promote=[]", "evolution.parents=[2]", "evolution.tournament=2", "evolution.cycles=1", "evolution.top=2"]


def test_econas_with_a_prefilter_end_to_end(surrogate_file, tmp_path, capsys):
    from darts_lite.tasks import run_econas

    run = tmp_path / "run"
    missing = compose_cfg(*TINY, f"run_dir={run}", f"evolution.prefilter.model={tmp_path / 'gone.json'}")
    with pytest.raises(ConfigError, match="evolution.prefilter.model: surrogate file .*gone.json: no such file"):
        run_econas(missing)
    assert not run.exists()  # refused before the archive or the run folder

    cfg = compose_cfg(*TINY, f"run_dir={run}", f"evolution.prefilter.model={surrogate_file}", "evolution.prefilter.factor=3")
    summary = run_econas(cfg)
    printed = capsys.readouterr().out
    assert "Pre-filter on: surrogate dl-forest-v1" in printed and "best predicted of 3 candidates" in printed
    model = load_model(str(surrogate_file), "m")
    rows = list(csv.DictReader(open(run / "prefilter.csv")))
    assert [(r["cycle"], r["move"]) for r in rows] == [("0", "sample")] * 3 + [("1", "mutate")] * 2
    predicted = model.predict([Genotype.parse(r["genotype"]) for r in rows])
    np.testing.assert_allclose([float(r["predicted_accuracy"]) for r in rows], predicted, atol=1e-9)
    assert all(0 <= float(r["val_acc"]) <= 1 for r in rows)  # what its training then measured
    top = list(csv.DictReader(open(run / "top.csv")))
    assert len(top) == 2 and all(float(t["predicted_accuracy"]) > 0.5 for t in top)
    assert summary["prefilter"]["factor"] == 3 and summary["evaluations"] == 5
    # another factor would choose other genotypes: the search refuses to resume with it
    with pytest.raises(ConfigError, match="prefilter"):
        run_econas(compose_cfg(*TINY, f"run_dir={run}", "resume=true", f"evolution.prefilter.model={surrogate_file}",
                                  "evolution.prefilter.factor=2"))


# ---- W&B ---------------------------------------------------------------------------------------------------
def logged_history(run_file) -> dict[str, object]:
    """{key: value} of every history row of an offline W&B run file (the last value of each key; a logged
    table's or image's fields flattened as "<key>/<field>").

    The file is a log of 32 KiB blocks; each piece of a record has a 7-byte header (checksum, length, type: 1 whole,
    2 first, 3 middle, 4 last piece), and a block's tail too short for a header is zero padding."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, pos, pieces, logged = run_file.read_bytes(), 32768, 7, b"", {}
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        room = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if room < 7 or (kind == 0 and length == 0):
            pos += room
            continue
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(pieces)
            pieces = b""
            if record.WhichOneof("record_type") == "history":
                logged.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                               for item in record.history.item})
    return logged


def logged_history_holding(run_file, keys, timeout: float = 60.0) -> dict[str, object]:
    """``logged_history`` of ``run_file`` once it holds every key of ``keys`` (or when ``timeout`` seconds have
    passed): W&B's service process writes the file, and on a loaded machine its last records can land after the
    job that logged them has returned."""
    deadline = time.monotonic() + timeout
    while True:
        logged = logged_history(run_file)
        if all(key in logged for key in keys) or time.monotonic() > deadline:
            return logged
        time.sleep(0.5)


def test_surrogate_tasks_log_their_report_and_plots_to_wandb_offline(surrogate_file, tmp_path, monkeypatch):
    from darts_lite.surrogate.benchmark import run_surrogate_search
    from darts_lite.surrogate.task import run_surrogate

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    rng = random.Random(3)
    genotypes = [sample(rng) for _ in range(30)]
    data = write_table(tmp_path / "table.csv", genotypes, [true_accuracy(g) for g in genotypes])
    fit = tmp_path / "fit"
    run_surrogate(compose_cfg("+experiment=surrogate", "logger=wandb", f"surrogate.data={data}", f"run_dir={fit}",
                              "surrogate.accuracy_unit=fraction", "surrogate.models=[forest]", "surrogate.forest.trees=5",
                              "surrogate.folds=2", "surrogate.learning_curve=[1.0]"))
    search = tmp_path / "search"
    run_surrogate_search(compose_cfg("+experiment=surrogate_search", "logger=wandb", f"surrogate.model={surrogate_file}",
                                     f"run_dir={search}", "surrogate_search.budget=5", "surrogate_search.seeds=[0]",
                                     "surrogate_search.algorithms=[random,local]"))
    for folder, tables, images in ((fit, ["surrogate/report", "surrogate/learning_curve_table"],
                                    ["surrogate/scatter", "surrogate/learning_curve"]),
                                   (search, ["surrogate_search/curves", "surrogate_search/final", "surrogate_search/zoo"],
                                    ["surrogate_search/curve"])):
        (offline,) = (folder / "wandb").glob("offline-run-*")
        media = offline / "files" / "media"
        for key in images:
            (image,) = media.glob(f"images/{key}_*.png")
            assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for key in tables:
            (table,) = media.glob(f"table/{key}_*.table.json")
            assert json.loads(table.read_text())["data"], key
        logged = logged_history_holding(next(offline.glob("run-*.wandb")),
                                        [f"{key}/_type" for key in tables + images])
        # media are logged as references to the files above ("<key>/_type", "<key>/path", ... once flattened)
        assert [logged.get(f"{key}/_type") for key in tables] == ["table-file"] * len(tables)
        assert [logged.get(f"{key}/_type") for key in images] == ["image-file"] * len(images)
    report = json.loads(next((fit / "wandb").glob("offline-run-*/files/media/table/surrogate/report_*.table.json")).read_text())
    rows = list(csv.DictReader(open(fit / "surrogate_report.csv")))
    assert report["columns"][:4] == ["model", "r2", "kendall_tau", "sparse_kendall_tau"]
    assert report["data"][0][3] == pytest.approx(float(rows[0]["sparse_kendall_tau"]))
    final = json.loads(next((search / "wandb").glob("offline-run-*/files/media/table/surrogate_search/final_*.table.json"))
                       .read_text())
    expected = json.loads((search / "summary.json").read_text())["final_best_predicted"]
    assert [(row[0], pytest.approx(row[1])) for row in final["data"]] == [(a, f["mean"]) for a, f in expected.items()]
    logged = logged_history_holding(next((search / "wandb").glob("offline-run-*/run-*.wandb")),
                                    ["surrogate_search/local/best_mean"])
    assert logged["surrogate_search/local/best_mean"] == pytest.approx(expected["local"]["mean"])


def test_requests_from_other_moves_are_not_recorded(surrogate_file):
    # promotions (a genotype trained further) and genotypes the pre-filter did not choose leave no row
    prefilter = Prefilter(space_moves("darts"), load_model(str(surrogate_file), "m").predict, 2)
    chosen = prefilter.moves.sample(random.Random(0))
    requests = [StageRequest(sample(random.Random(5)), 1), StageRequest(chosen, 1), StageRequest(chosen, 2)]
    prefilter.record(requests, [0.5, 0.6, 0.7], 0)
    assert [(r["genotype"], r["val_acc"]) for r in prefilter.rows] == [(chosen.to_text(), 0.6)]
