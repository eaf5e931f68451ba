"""The leaderboard (task=leaderboard): every job's config checked before anything runs, the three files, a failed
job listed while the others finish, resume=true reading finished jobs back and retrying the rest, and the
benchmark look-up in place of retraining."""

from __future__ import annotations

import csv
import itertools
import json

import pytest
from conftest import compose_cfg, run_cli

from darts_lite.errors import ConfigError
from darts_lite.leaderboard import METHODS, check, table

# tiny searches and retrainings on generated data: one epoch of two steps each
TINY = ["+experiment=leaderboard_quick", "data=synthetic", "space.C=4", "search.epochs=1", "search.warmup_epochs=0",
        "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "train.C=4", "train.epochs=1",
        "++leaderboard.overrides.rsws=['search.selection_samples=3']"]


def test_the_quick_leaderboard_lists_every_method_darts_lite_has():
    cfg = compose_cfg("+experiment=leaderboard_quick")
    assert list(cfg.leaderboard.methods) == list(METHODS) and len(cfg.leaderboard.seeds) >= 2
    assert set(compose_cfg("+experiment=leaderboard").leaderboard.methods) == set(METHODS)


def test_every_problem_of_the_leaderboard_and_its_jobs_at_once(tmp_path):
    cfg = compose_cfg(*TINY, "leaderboard.methods=[darts,nas_by_hand,darts]", "leaderboard.seeds=[0,0]")
    with pytest.raises(ConfigError) as info:
        check(cfg, base=TINY)
    assert "leaderboard.methods=['darts', 'nas_by_hand', 'darts']: must be a non-empty list of distinct" in str(info.value)
    assert "leaderboard.seeds=[0, 0]: must be a non-empty list of distinct integers" in str(info.value)
    # a job's own config is checked as its command line would be, before any job runs
    overrides = [*TINY, "leaderboard.methods=[darts,gdas]", "++leaderboard.overrides.gdas=['search.epochs=-1']",
                 "train.epochs=0"]
    with pytest.raises(ConfigError) as info:
        check(compose_cfg(*overrides), base=overrides)
    assert "leaderboard method gdas: search.epochs=-1" in str(info.value)
    assert "leaderboard method darts" not in str(info.value)
    assert "leaderboard retraining: train.epochs=0" in str(info.value)


def test_a_leaderboard_ranks_its_methods_lists_a_failure_and_resumes(tmp_path):
    run = tmp_path / "board"
    # darts_v2 diverges on purpose (an absurd architecture rate): a failed row, the other jobs go on
    args = [*TINY, "leaderboard.methods=[darts,darts_v2,rsws]", "leaderboard.seeds=[0,1]", f"hydra.run.dir={run}"]
    proc = run_cli(*args, "leaderboard.overrides.darts_v2=['search.arch_lr=1e30']", cwd=tmp_path, timeout=900)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "2 of 6 leaderboard jobs failed" in proc.stderr and "resume=true" in proc.stderr
    rows = list(csv.DictReader(open(run / "leaderboard.csv")))
    assert list(rows[0]) == ["method", "seed", "genotype", "accuracy", "accuracy_source", "param_free_share", "search_s",
                             "train_s", "status", "error"]
    assert sorted((r["method"], r["seed"], r["status"]) for r in rows) == sorted(
        (m, s, "failed" if m == "darts_v2" else "done") for m, s in itertools.product(("darts", "darts_v2", "rsws"), "01"))
    for r in rows:
        if r["status"] == "done":
            assert r["accuracy_source"] == "retrained" and 0 <= float(r["accuracy"]) <= 100
            assert r["genotype"].count("~") == 6 and float(r["search_s"]) > 0 and float(r["train_s"]) > 0
            # the row's accuracy is the retraining's test accuracy, its genotype the one the search stood by
            job = run / "jobs" / r["method"] / f"seed{r['seed']}"
            trained = json.loads((job / "train" / "summary.json").read_text())
            assert float(r["accuracy"]) == pytest.approx(100 * trained["metrics"]["val/acc"])
            chosen = "genotype_sampling.txt" if r["method"] == "rsws" else "genotype.txt"
            assert (job / "search" / chosen).read_text().strip() == r["genotype"]
        else:
            assert "FloatingPointError" in r["error"] or "became" in r["error"]
    md = (run / "leaderboard.md").read_text()
    assert "## Failed jobs" in md and "darts_v2 seed 0" in md and "| darts_v2 | failed | 0 of 2 |" in md
    assert (run / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the same command again without resume=true is refused: the folder holds a leaderboard
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 2 and "resume=true" in again.stderr
    # resumed with a sane rate: finished jobs are read back, not run again; the failed ones run to the end
    finished = {p: p.stat().st_mtime_ns for p in run.glob("jobs/*/seed*/*/summary.json")}
    resumed = run_cli(*args, "resume=true", cwd=tmp_path, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    rows = list(csv.DictReader(open(run / "leaderboard.csv")))
    assert len(rows) == 6 and all(r["status"] == "done" for r in rows)
    assert "## Failed jobs" not in (run / "leaderboard.md").read_text()


def test_the_benchmark_gives_the_accuracy_in_place_of_retraining(tmp_path):
    from test_lookup import mean_acc, write_benchmark

    ops = ("skip_connect", "nor_conv_3x3")
    cells = ["|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*c) for c in itertools.product(ops, repeat=6)]
    bench = write_benchmark(tmp_path / "bench", archs=cells)
    run = tmp_path / "board"
    proc = run_cli(*TINY, "leaderboard.methods=[gdas]", "leaderboard.seeds=[0]", f"benchmark.path={bench}",
                   f"space.primitives=[{','.join(ops)}]", f"hydra.run.dir={run}", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = list(csv.DictReader(open(run / "leaderboard.csv")))
    assert row["accuracy_source"] == "benchmark" and not (run / "jobs" / "gdas" / "seed0" / "train").exists()
    assert float(row["accuracy"]) == pytest.approx(mean_acc(cells.index(row["genotype"]), "200", "cifar10", "ori-test"))
    assert "The benchmark's best cell: 94.37%." in (run / "leaderboard.md").read_text()


def test_the_table_ranks_by_mean_and_shows_the_papers_figures_labelled():
    rows = [{"method": "gdas", "seed": s, "accuracy": a, "param_free_share": 0.5, "search_s": 10.0, "status": "done"}
            for s, a in ((0, 90.0), (1, 92.0))]
    rows += [{"method": "darts", "seed": 0, "accuracy": 95.0, "param_free_share": 1.0, "search_s": 5.0, "status": "done"},
             {"method": "darts", "seed": 1, "status": "failed", "error": "boom"}]
    text = table(rows, papers=True)
    lines = text.splitlines()
    assert "the paper's NB201 CIFAR-10 (%)" in lines[0]
    assert lines[2] == "| 1 | darts | 95.00 +- 0.00 | 1 of 2 | 1.00 | 5 | 54.30 +- 0.00 |"
    assert lines[3] == "| 2 | gdas | 91.00 +- 1.41 | 2 | 0.50 | 10 | 93.61 +- 0.09 |"
