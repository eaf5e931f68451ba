"""Kill anywhere, in CI: each long task of experiments/chaos.py (searches of first and second order and GDAS, a
retraining, a selection, a proxy study, an evolution with local worker processes, Once-for-All, a surrogate fit)
SIGKILLed once at a random moment of its work (the whole process group), started again as a requeue would, and
its result compared with the uninterrupted run's: tensors, archive rows, decisions, reports. The moment is random
on purpose; a failure prints the seed that draws it again (``python experiments/chaos.py --tasks NAME --seed S
--kills 1`` draws the same moment for a single task)."""

import importlib.util
import random
import sys
from pathlib import Path

import pytest
from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "experiments" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


chaos = _load()


@pytest.mark.parametrize("name", list(chaos.TASKS))
def test_a_task_killed_at_a_random_moment_ends_as_the_uninterrupted_run(name, tmp_path):
    seed = random.SystemRandom().randrange(10**6)
    said = []
    outcome = chaos.chaos(chaos.TASKS[name], tmp_path, kills=1, rng=random.Random(seed),
                          finish=lambda args: run_cli(*args, cwd=tmp_path), say=said.append, ci=True)
    assert outcome.equal, f"seed {seed}, {said}: {outcome.differences}"
    assert outcome.attempts == 2 and outcome.kills + outcome.ended_before_kill == 1


def test_the_comparisons_see_a_difference(tmp_path):
    """What the kill tests rely on: a changed tensor, a lost metrics row, a row stored twice are all reported."""
    import csv
    import sqlite3

    import torch

    a, b = tmp_path / "a", tmp_path / "b"
    for folder, value in ((a, 0.0), (b, 1e-7)):
        folder.mkdir()
        torch.save({"normal": torch.full((2, 3), value)}, folder / "alphas.pt")
    assert chaos._same_tree(torch.load(a / "alphas.pt"), torch.load(b / "alphas.pt"), "alphas") == ["alphas.normal differs"]

    for folder, epochs in ((a, [0, 1, 2]), (b, [0, 2])):
        with open(folder / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["epoch", "train/loss"])
            writer.writeheader()
            writer.writerows({"epoch": e, "train/loss": 1.0 / (e + 1)} for e in epochs)
    assert chaos._metric_rows(a, "train/loss") != chaos._metric_rows(b, "train/loss")

    for folder, rows in ((a, [("h1", "s", 0, 1)]), (b, [("h1", "s", 0, 1), ("h1", "s", 0, 1)])):
        with sqlite3.connect(folder / "archive.sqlite") as conn:
            conn.execute("CREATE TABLE evaluations (genotype_hash, setting, seed, epochs, status, val_accs, val_acc, "
                         "test_acc)")
            conn.executemany("INSERT INTO evaluations VALUES (?, ?, ?, ?, 'done', '[0.5]', 0.5, 0.5)", rows)
    assert any("stored more than once" in d for d in chaos.compare_archive(a, b))
    assert chaos.compare_archive(a, a) == []
    twice = "[1/2] c0r0s0e3 e1 0123abcd: val 0.5 test 0.5 (1.0 s); ~1 s left"
    assert chaos.announced(twice) == [("c0r0s0e3", "1", "0123abcd")]
