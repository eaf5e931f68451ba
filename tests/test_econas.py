"""EcoNAS: settings, evaluations through the archive and an executor, the proxy study, the evolution driver
(one cycle, kill and resume), failed workers and the bad inputs. Tiny networks on generated data."""

import csv
import json
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import TINY_ECONAS, compose_cfg, run_cli, start_cli

from darts_lite.config import config_dir
from darts_lite.econas import evaluator as evaluator_module
from darts_lite.econas.archive import Archive, ArchiveError, genotype_hash
from darts_lite.econas.evaluate import EvalJob, run_evaluation
from darts_lite.econas.evaluator import Evaluator, Request
from darts_lite.econas.executor import Executor
from darts_lite.econas.settings import Base, parse_name, resolve
from darts_lite.errors import ConfigError
from darts_lite.spaces import darts
from darts_lite.spaces.darts.genotype import PRIMITIVES, Genotype

CIFAR = Base(channels=36, layers=20, resolution=32, class_counts=(5000,) * 10, batch_size=96, lr=0.025, dataset="cifar10")


# ---- settings ---------------------------------------------------------------------------------------------
def test_setting_names_parse_as_econas_names_them():
    s = resolve("c4r4s0e60", CIFAR)
    assert (s.channels, s.layers, s.resolution, s.sample_ratio, s.epochs) == (9, 20, 8, 1.0, 60)
    full = resolve("c0r0s0e600", CIFAR)
    assert (full.channels, full.layers, full.resolution, full.sample_ratio, full.epochs) == (36, 20, 32, 1.0, 600)
    deep = resolve("c2r2s2e30n4", CIFAR)
    assert (deep.channels, deep.layers, deep.resolution, deep.sample_ratio) == (18, 5, 16, 0.5)
    assert parse_name("c1r0s8e5") == (1, 0, 8, 5, 0)
    # a conf/setting file gives the batch and learning rate the name cannot carry
    from darts_lite.econas.settings import setting_dir

    paper = resolve("c4r4s0e60", CIFAR, setting_dir())
    assert (paper.batch_size, paper.lr) == (384, 0.1)
    assert resolve({"name": "c4r4s0e60", "lr": 0.2}, CIFAR, setting_dir()).lr == 0.2


@pytest.mark.parametrize("name,message", [
    ("c4r4e60", "not a c{x}r{x}s{x}e{E}"),
    ("c4r4s0e0", "trains no epoch"),
    ("c0r16s0e10", "under 4 px"),
    ("c0r0s6000e10", "< 1 image of the smallest cifar10 class"),
    ("c0r0s0e10n8", "at least 3"),
    ("c64r0s0e10", "0 channels"),
    ("nosuchsetting", "unknown setting 'nosuchsetting'"),
])
def test_bad_setting_names_are_refused_with_what_is_wrong(name, message):
    from darts_lite.econas.settings import setting_dir

    with pytest.raises(ValueError, match=None) as e:
        resolve(name, CIFAR, setting_dir())
    assert message in str(e.value) and name in str(e.value)


def test_sampled_and_mutated_genotypes_are_valid_distinct_and_seeded():
    for seed in range(200):
        rng = random.Random(seed)
        g = darts.sample(rng, fixed_reduction=seed % 2 == 1)
        assert g.fixed_reduction == (seed % 2 == 1)
        for pairs in g.cells().values():
            assert "none" not in {op for op, _ in pairs} and {op for op, _ in pairs} <= set(PRIMITIVES)
            for node in range(4):
                (_, a), (_, b) = pairs[2 * node:2 * node + 2]
                assert a != b and max(a, b) < node + 2  # two distinct earlier states
        child = darts.mutate(g, rng)
        assert genotype_hash(child) != genotype_hash(g)
        changed = 0
        for cell, pairs in g.cells().items():
            for node in range(4):
                before, after = Counter(pairs[2 * node:2 * node + 2]), Counter(child.cells()[cell][2 * node:2 * node + 2])
                changed += sum((before - after).values())
        assert changed == 1  # one input or one op of one node of one cell
        Genotype.parse(child.to_text())  # a valid genotype
    assert darts.sample(random.Random(7)) == darts.sample(random.Random(7))
    assert darts.sample(random.Random(7)) != darts.sample(random.Random(8))


# ---- one evaluation ---------------------------------------------------------------------------------------
def _job(tmp_path, epochs, folder, start_from=None, setting="c0r0s0e3"):
    base = Base(4, 3, 8, (64,) * 4, 16, 0.05, "synthetic")
    s = resolve(setting, base)
    data = {"name": "synthetic", "download": False, "crop_padding": 0, "flip": False, "eval_batch_size": 64}
    train = {"auxiliary": False, "network_dataset": "cifar", "cutout": 0, "drop_path_prob": 0.2, "channels_last": False}
    return EvalJob(Genotype.named("DARTS_V2").to_text(), s.values(), seed=0, epochs=epochs, folder=str(tmp_path / folder),
                   data=data, train=train, start_from=start_from)


def test_an_evaluation_continued_for_more_epochs_equals_one_trained_straight_through(tmp_path):
    import logging

    rank_zero = logging.getLogger("lightning_fabric.utilities.rank_zero")
    before = rank_zero.level
    first = run_evaluation(_job(tmp_path, 1, "e1"))
    # an evaluation in the caller's process quiets Lightning while it runs, not after (the caller's runs still talk)
    assert rank_zero.level == before != logging.WARNING
    continued = run_evaluation(_job(tmp_path, 3, "e3", start_from=str(tmp_path / "e1/checkpoints/last.ckpt")))
    straight = run_evaluation(_job(tmp_path, 3, "straight"))
    assert len(first["val_accs"]) == 1 and continued["val_accs"][:1] == first["val_accs"]
    assert continued["val_accs"] == straight["val_accs"] and continued["test_acc"] == straight["test_acc"]
    assert continued["params"] == straight["params"] > 0 and continued["flops"] > 0 and continued["wall_time_s"] > 0
    assert 0 <= straight["test_acc"] <= 1


# ---- the evaluator: archive look-up, failed workers ---------------------------------------------------------
def _evaluator(tmp_path, executor=None):
    archive = Archive(tmp_path / "archive.sqlite")
    data = {"name": "synthetic", "download": False, "crop_padding": 0, "flip": False, "eval_batch_size": 64}
    train = {"auxiliary": False, "network_dataset": "cifar", "cutout": 0, "drop_path_prob": 0.0, "channels_last": False}
    return Evaluator(archive, executor or Executor("inline"), data=data, train=train, seed=0, folder=tmp_path / "evaluations",
                     out=open(os.devnull, "w"))


def test_a_failing_evaluation_is_a_failed_row_and_the_others_go_on(tmp_path, monkeypatch):
    ev = _evaluator(tmp_path)
    setting = resolve("c0r0s0e1", Base(4, 3, 8, (64,) * 4, 16, 0.05, "synthetic"))
    genotypes = [darts.sample(random.Random(s)) for s in range(3)]
    doomed = genotypes[1].to_text()
    real = evaluator_module.run_evaluation

    def flaky(job):
        if job.genotype == doomed:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(job)

    monkeypatch.setattr(evaluator_module, "run_evaluation", flaky)
    rows = ev.evaluate([Request(g, setting, 1) for g in genotypes])
    assert rows[0] is not None and rows[2] is not None and rows[1] is None
    failed = ev.archive.rows(status="failed")
    assert len(failed) == 1 and failed[0]["genotype_hash"] == genotype_hash(genotypes[1])
    assert "illegal memory access" in failed[0]["error"]
    # asked again: the done ones come from the archive (nothing trained), the failed one is tried again
    monkeypatch.setattr(evaluator_module, "run_evaluation", lambda job: pytest.fail(f"retrained {job.genotype}"))
    assert ev.evaluate([Request(genotypes[0], setting, 1), Request(genotypes[2], setting, 1)]) == [rows[0], rows[2]]


def test_a_crashed_worker_process_becomes_an_error_not_a_dead_driver(tmp_path):
    executor = Executor("local", folder=tmp_path / "submitit", max_parallel=2, poll_s=0.2, timeout_min=5)
    (index, result, error), = executor.map(os._exit, [3])  # the worker process dies without a word
    assert index == 0 and result is None and "has not produced any output" in error


# ---- the proxy study ---------------------------------------------------------------------------------------
def _hand_spearman(x, y):
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


def _hand_kendall_b(x, y):
    concordant = discordant = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx * dy > 0:
                concordant += 1
            else:
                discordant += 1
    return (concordant - discordant) / ((concordant + discordant + tx) * (concordant + discordant + ty)) ** 0.5


def test_rank_correlations_match_a_hand_computation_with_ties():
    from darts_lite.econas.study import rank_correlations

    x = [0.61, 0.70, 0.70, 0.52, 0.90, 0.33]
    y = [0.58, 0.75, 0.64, 0.64, 0.88, 0.40]
    out = rank_correlations(x, y, bootstrap=200, seed=1)
    assert out["spearman"] == pytest.approx(_hand_spearman(x, y), abs=1e-5)  # torchmetrics keeps an epsilon
    assert out["kendall"] == pytest.approx(_hand_kendall_b(x, y), abs=1e-6)  # computed in float32
    assert out["spearman_low"] <= out["spearman"] <= out["spearman_high"]
    assert rank_correlations(x, x, bootstrap=0)["spearman"] == pytest.approx(1.0)


def test_a_two_setting_study_on_generated_data(tmp_path, capsys):
    from darts_lite.econas.study import run_study

    cfg = compose_cfg("+experiment=proxy_study_quick", *TINY_ECONAS, "study.architectures=4", "study.reference=c0r0s0e2",
                      "study.proxies=[c2r0s0e1]", "study.bootstrap=50", f"run_dir={tmp_path / 'run'}")
    summary = run_study(cfg)
    run = tmp_path / "run"
    with open(run / "proxy_study.csv") as f:
        rows = list(csv.DictReader(f))
    # a row per proxy, then the reference against itself under the next seed
    assert [r["setting"] for r in rows] == ["c2r0s0e1", "c0r0s0e2@seed1"]
    assert list(rows[0])[:4] == ["setting", "spearman", "kendall", "speedup"]
    assert (run / "proxy_study.png").stat().st_size > 1000 and "| c2r0s0e1 |" in (run / "proxy_study.md").read_text()
    # the correlation is the one of the archive's accuracies, architecture by architecture
    archive = Archive(run / "archive.sqlite")
    genotypes = (run / "architectures.txt").read_text().splitlines()
    acc = {s: [archive.find(genotype_hash(Genotype.parse(g)), s, 0, e)["test_acc"] for g in genotypes]
           for s, e in (("c0r0s0e2", 2), ("c2r0s0e1", 1))}
    assert len(archive.rows(status="done")) == 12 and {r["seed"] for r in archive.rows(setting="c0r0s0e2")} == {0, 1}
    table = summary["table"][0]
    if len(set(acc["c0r0s0e2"])) > 1 and len(set(acc["c2r0s0e1"])) > 1:
        assert table["spearman"] == pytest.approx(_hand_spearman(acc["c2r0s0e1"], acc["c0r0s0e2"]), abs=1e-6)
        assert float(rows[0]["kendall"]) == pytest.approx(_hand_kendall_b(acc["c2r0s0e1"], acc["c0r0s0e2"]), abs=1e-5)
    assert table["speedup"] > 0 and table["flops_speedup"] > 2  # half the epochs and half the channels
    archive.close()
    # run again: every evaluation is found in the archive, none is trained
    capsys.readouterr()
    run_study(cfg)
    assert " to run (" not in capsys.readouterr().out


@pytest.mark.parametrize("overrides,message", [
    (["study.architectures=2"], "at least 3 architectures"),
    (["study.proxies=[c2r2e3]"], "not a c{x}r{x}s{x}e{E}"),
    (["study.proxies=[c0r4s0e3]"], "under 4 px"),
    (["study.proxies=[c0r0s500e3]"], "< 1 image of the smallest"),
    (["study.reference=nosuch"], "unknown setting 'nosuch'"),
    (["executor.max_parallel=0"], "executor.max_parallel=0"),
    (["evaluation.val_split=1.5"], "evaluation.val_split=1.5"),
])
def test_bad_study_inputs_are_refused_before_anything_is_trained(overrides, message):
    from darts_lite.econas.study import check

    cfg = compose_cfg("+experiment=proxy_study_quick", *TINY_ECONAS, *overrides)
    with pytest.raises(ConfigError) as e:
        check(cfg)
    assert message in str(e.value)


def test_a_corrupt_or_foreign_archive_is_refused_and_left_as_it_was(tmp_path):
    from darts_lite.econas.study import run_study

    foreign = tmp_path / "theirs.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE results (x INTEGER)")
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database\n")
    for path in (foreign, text):
        before = path.read_bytes()
        cfg = compose_cfg("+experiment=proxy_study_quick", *TINY_ECONAS, "study.proxies=[c2r0s0e1]", f"archive={path}",
                          f"run_dir={tmp_path / 'run'}")
        with pytest.raises(ArchiveError, match=str(path)):
            run_study(cfg)
        assert path.read_bytes() == before
    assert not (tmp_path / "run").exists()


# ---- the evolution -----------------------------------------------------------------------------------------
EVOLUTION = ["+experiment=econas_quick", *TINY_ECONAS, "setting.name=c0r0s0e3", "evolution.initial=3", "evolution.promote=[2,1]",
             "evolution.parents=[1,1,1]", "evolution.tournament=2", "evolution.top=2"]


def _archive_rows(path):
    with Archive(path) as archive:
        return sorted((r["genotype_hash"], r["setting"], r["epochs"], tuple(r["val_accs"]), r["test_acc"])
                      for r in archive.rows(status="done"))


def test_one_evolution_cycle_promotes_and_breeds(tmp_path):
    from darts_lite.econas.evolution import run_evolution

    cfg = compose_cfg(*EVOLUTION, "evolution.cycles=1", f"run_dir={tmp_path / 'run'}")
    summary = run_evolution(cfg)
    run = tmp_path / "run"
    rows = Archive(run / "archive.sqlite").rows(status="done")
    by_epochs = sorted(r["epochs"] for r in rows)
    # cycle 0: 3 models one stage (1 epoch); cycle 1: the top 2 continue to 2 epochs, 3 children one stage
    assert by_epochs == [1] * 6 + [2] * 2
    firsts = sorted((r for r in rows if r["epochs"] == 1 and r["id"] <= 3), key=lambda r: -r["val_acc"])
    promoted = {r["genotype_hash"] for r in rows if r["epochs"] == 2}
    assert promoted == {r["genotype_hash"] for r in firsts[:2]} or len({r["val_acc"] for r in firsts}) < 3
    for r in rows:
        if r["epochs"] == 2:  # continued from its one-stage weights: the first epoch's accuracy is the same
            first = next(f for f in rows if f["genotype_hash"] == r["genotype_hash"] and f["epochs"] == 1)
            assert r["val_accs"][0] == first["val_accs"][0]
    state = Archive(run / "archive.sqlite").load_state("evolution/hierarchical/seed0")
    assert state["search"]["cycle"] == 2 and summary["evaluations"] == 8
    assert (run / "evolution.csv").is_file() and (run / "top.csv").is_file()


def test_a_killed_evolution_resumes_to_the_same_archive_and_top(tmp_path):
    args = [*EVOLUTION, "evolution.cycles=1"]
    straight = run_cli(*args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed_dir = tmp_path / "killed"
    killed = start_cli(*args, f"hydra.run.dir={killed_dir}", cwd=tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None:  # kill it in cycle 1, after some evaluations
        db = killed_dir / "archive.sqlite"
        if db.is_file() and len(_try_rows(db)) >= 4:  # cycle 0 holds 3
            break
        time.sleep(0.2)
    assert killed.poll() is None, "the run ended before it could be killed"
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate()
    done_before = len(_try_rows(killed_dir / "archive.sqlite"))
    resumed = run_cli(*args, "resume=true", f"hydra.run.dir={killed_dir}", cwd=tmp_path)
    out = resumed.stdout
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming the hierarchical search at cycle" in out
    trained_after = len([line for line in out.splitlines() if "] c0r0s0e3 e" in line])
    assert trained_after == len(_try_rows(killed_dir / "archive.sqlite")) - done_before  # nothing was trained twice
    assert _archive_rows(killed_dir / "archive.sqlite") == _archive_rows(tmp_path / "straight" / "archive.sqlite")
    assert (killed_dir / "top.csv").read_text() == (tmp_path / "straight" / "top.csv").read_text()
    # started again without resume=true, the search refuses to replace what the archive holds
    again = run_cli(*args, f"hydra.run.dir={killed_dir}", cwd=tmp_path)
    assert again.returncode == 2 and "continue it with resume=true" in again.stderr


def _try_rows(db):
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT id FROM evaluations WHERE status='done'").fetchall()
    except sqlite3.Error:
        return []


@pytest.mark.parametrize("overrides,message", [
    (["search_algo=annealing"], "search_algo='annealing'"),
    (["evolution.promote=[2]"], "promote"),
    (["setting.name=c0r0s0e4"], "do not split into evolution.stages=3"),
    (["setting.name=c0r0s0"], "not a c{x}r{x}s{x}e{E}"),
])
def test_bad_evolution_inputs_are_refused_before_anything_is_trained(overrides, message):
    from darts_lite.econas.evolution import check

    with pytest.raises(ConfigError) as e:
        check(compose_cfg(*EVOLUTION, *overrides))
    assert message in str(e.value)


def test_the_baselines_get_the_hierarchical_budget():
    from darts_lite.econas.evolution import check
    from darts_lite.evolve import stage_trainings

    _, algorithm, options, stage_epochs = check(compose_cfg(*EVOLUTION, "search_algo=random"))
    hierarchical = check(compose_cfg(*EVOLUTION))[2]
    assert algorithm == "random" and stage_epochs == 1
    assert options["budget"] == stage_trainings("hierarchical", **hierarchical)
    assert json.dumps(options)  # plain values


def test_the_paper_defaults_compose():
    cfg = compose_cfg("+experiment=econas")
    assert cfg.setting.name == "c4r4s0e60" and cfg.search_algo == "hierarchical" and cfg.data.name == "cifar10"
    assert (cfg.evolution.initial, list(cfg.evolution.promote), list(cfg.evolution.parents), cfg.evolution.max_age,
            cfg.evolution.cycles, cfg.evolution.stages) == (16, [8, 4], [6, 5, 5], 10, 100, 3)
    study = compose_cfg("+experiment=proxy_study")
    assert study.study.architectures == 50 and study.study.reference == "c0r0s0e600"
    assert Path(config_dir(), "setting", "c4r4s0e60.yaml").is_file()
