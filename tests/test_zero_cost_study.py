"""Zero-cost proxies in the proxy study: on NAS-Bench-201 cells, beside a training proxy and the reference; the
scores, their rank correlations with the reference's accuracies, the vote, and the inputs that are refused."""

from __future__ import annotations

import csv

import pytest
from conftest import compose_cfg

from darts_lite.econas.zero_cost_study import pairwise_wins
from darts_lite.errors import ConfigError

TINY = ["+experiment=proxy_study_zc_quick", "train.C=4", "data.batch_size=32", "study.architectures=5",
        "study.reference=c0r0s0e1", "study.bootstrap=20", "study.repeat=false", "+trainer.limit_train_batches=4"]


def _ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _hand_spearman(a, b):
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5


def test_pairwise_wins_is_the_majority_vote():
    # three proxies over four architectures: 0 beats everyone in all three, 3 loses to everyone in two of three
    scores = [[4, 3, 2, 1], [4, 2, 3, 1], [4, 1, 2, 3]]
    assert pairwise_wins(scores) == [3, 1, 2, 0]
    assert pairwise_wins([[1.0, float("nan")], [1.0, 0.0], [2.0, 0.0]]) == [1, 0]


def test_a_study_of_zero_cost_proxies_on_nb201_cells(tmp_path):
    from darts_lite.econas.archive import Archive, genotype_hash
    from darts_lite.econas.study import run_study
    from darts_lite.spaces import nb201

    cfg = compose_cfg(*TINY, "study.proxies=[c0r0s0e1n1,zc_synflow,zc_jacob_cov,zc_snip,zc_params,zc_vote]",
                      f"run_dir={tmp_path / 'run'}")
    summary = run_study(cfg)
    run = tmp_path / "run"
    rows = {r["setting"]: r for r in csv.DictReader(open(run / "proxy_study.csv"))}
    assert list(rows) == ["c0r0s0e1n1", "zc_synflow", "zc_jacob_cov", "zc_snip", "zc_params", "zc_vote"]
    genotypes = (run / "architectures.txt").read_text().splitlines()
    assert len(genotypes) == 5 and all(nb201.Genotype.parse(g) for g in genotypes)
    scores = {}
    for r in csv.DictReader(open(run / "zero_cost.csv")):
        scores.setdefault(r["proxy"], []).append(float(r["score"]))
    assert sorted(scores) == ["zc_jacob_cov", "zc_params", "zc_snip", "zc_synflow", "zc_vote"]
    assert all(len(v) == 5 for v in scores.values())
    # the vote is the pairwise majority of synflow, jacob_cov and snip
    assert scores["zc_vote"] == pairwise_wins([scores[f"zc_{n}"] for n in ("synflow", "jacob_cov", "snip")])
    # each row's Spearman is that of the proxy's scores with the reference's test accuracies
    archive = Archive(run / "archive.sqlite")
    ref = [archive.find(genotype_hash(nb201.Genotype.parse(g)), "c0r0s0e1", 0, 1)["test_acc"] for g in genotypes]
    archive.close()
    table = {t["setting"]: t for t in summary["table"]}
    for name in ("zc_params", "zc_synflow"):
        if len(set(ref)) > 1 and len(set(scores[name])) > 1:
            assert table[name]["spearman"] == pytest.approx(_hand_spearman(scores[name], ref), abs=1e-6)
    assert table["zc_params"]["speedup"] > 1 and table["zc_params"]["epochs"] == 0
    md = (run / "proxy_study.md").read_text()
    assert "sampled from the NAS-Bench-201 space" in md and "| zc_vote |" in md and "Rows `zc_<proxy>`" in md


@pytest.mark.parametrize("overrides,message", [
    (["study.proxies=[zc_nosuch,zc_snip]"], "zc_nosuch: no such zero-cost proxy; the zero-cost proxies are zc_synflow"),
    (["study.reference=zc_snip"], "the reference is a training setting"),
    (["study.proxies=[zc_snip,zc_snip]"], "listed twice"),
    (["train=darts"], "space=nb201 with train.space=darts"),
    (["study.reference=benchmark"], "study.reference=benchmark needs benchmark.path"),
    (["study.reference=benchmark", "benchmark.path=.", "study.repeat=true"], "the mean over its seeds"),
    (["study.reference=benchmark", "benchmark.path=.", "space=darts", "train=darts"], "cover the nb201 space"),
])
def test_bad_zero_cost_inputs_are_refused_before_anything_is_trained(overrides, message):
    from darts_lite.econas.study import check

    with pytest.raises(ConfigError) as e:
        check(compose_cfg(*TINY, *overrides))
    assert message in str(e.value)


EVOLUTION = ["+experiment=econas_quick", "space=nb201", "train=nb201", "data=synthetic", "data.batch_size=16",
             "train.C=4", "train.layers=1", "setting.name=c0r0s0e1", "evolution.stages=1", "evolution.initial=3",
             "evolution.promote=[]", "evolution.parents=[2]", "evolution.tournament=2", "evolution.top=2",
             "evolution.prefilter.proxy=synflow", "evolution.prefilter.factor=3"]


def test_an_nb201_evolution_with_a_zero_cost_prefilter_repeats_and_resumes_exactly(tmp_path, capsys):
    from darts_lite.econas.settings import resolve_all
    from darts_lite.econas.zero_cost_study import ZeroCostScorer
    from darts_lite.spaces import nb201
    from darts_lite.tasks import run_econas

    straight = run_econas(compose_cfg(*EVOLUTION, "evolution.cycles=2", f"run_dir={tmp_path / 'straight'}"))
    assert "Pre-filter on: zero-cost proxy synflow; every new genotype is the best scored of 3" in capsys.readouterr().out
    run_econas(compose_cfg(*EVOLUTION, "evolution.cycles=1", f"run_dir={tmp_path / 'split'}"))
    resumed = run_econas(compose_cfg(*EVOLUTION, "evolution.cycles=2", "resume=true", f"run_dir={tmp_path / 'split'}"))
    assert resumed["top"] == straight["top"] and resumed["evaluations"] == straight["evaluations"] == 7
    rows = list(csv.DictReader(open(tmp_path / "straight" / "prefilter.csv")))
    assert rows == list(csv.DictReader(open(tmp_path / "split" / "prefilter.csv")))
    assert [(r["cycle"], r["move"]) for r in rows] == [("0", "sample")] * 3 + [("1", "mutate")] * 2 + [("2", "mutate")] * 2
    # each chosen cell's recorded score is its synflow score, at least the mean of the candidates it was chosen from
    cfg = compose_cfg(*EVOLUTION)
    from darts_lite.econas import build

    setting = resolve_all([dict(cfg.setting)], build.base(cfg))[0]
    scorer = ZeroCostScorer(setting, build.prepare_data(cfg), dict(cfg.train), 0, float(cfg.evaluation.val_split))
    chosen = [nb201.Genotype.parse(r["genotype"]) for r in rows]
    assert [float(r["zc_synflow"]) for r in rows] == pytest.approx(scorer.predict("synflow")(chosen), rel=1e-9)
    assert all(float(r["candidates_mean"]) <= float(r["zc_synflow"]) for r in rows)
    assert straight["prefilter"] == {"proxy": "synflow", "factor": 3}
    # another proxy would choose other genotypes: the search refuses to resume with it
    with pytest.raises(ConfigError, match="prefilter"):
        run_econas(compose_cfg(*EVOLUTION, "evolution.cycles=3", "resume=true", "evolution.prefilter.proxy=snip",
                               f"run_dir={tmp_path / 'split'}"))
    with pytest.raises(ConfigError, match="one scorer chooses"):
        run_econas(compose_cfg(*EVOLUTION, "evolution.prefilter.model=m.json", f"run_dir={tmp_path / 'x'}"))


def test_a_benchmark_reference_trains_nothing_and_leaves_out_cells_it_lacks(tmp_path):
    """study.reference=benchmark: the reference accuracies come from a NATS-Bench file (a generated one: made-up
    accuracies rising with the benchmark index); the fifth cell is not in it and is left out."""
    from test_lookup import expected_metrics, write_benchmark

    from darts_lite.econas.archive import Archive
    from darts_lite.econas.study import run_study, sample_architectures

    genotypes = sample_architectures("nb201", 5, 0)  # what the study draws with seed 0
    bench = write_benchmark(tmp_path / "bench", archs=[g.to_text() for g in genotypes[:4]])
    summary = run_study(compose_cfg(*TINY, "study.reference=benchmark", f"benchmark.path={bench}",
                                    "study.proxies=[zc_params,zc_synflow]", f"run_dir={tmp_path / 'run'}"))
    assert not Archive(tmp_path / "run" / "archive.sqlite").rows()  # nothing trained
    reference = [expected_metrics(i)["benchmark/cifar10_test_acc"] for i in range(4)]
    scores = {}
    for r in csv.DictReader(open(tmp_path / "run" / "zero_cost.csv")):
        scores.setdefault(r["proxy"], []).append(float(r["score"]))
    for row in summary["table"]:
        assert row["architectures"] == 4 and row["speedup"] != row["speedup"]  # NaN: the reference took no time here
        mine = scores[row["setting"]][:4]
        if len(set(mine)) > 1:
            assert row["spearman"] == pytest.approx(_hand_spearman(mine, reference), abs=1e-6)
    assert "Its accuracies are the NATS-Bench file's" in (tmp_path / "run" / "proxy_study.md").read_text()
