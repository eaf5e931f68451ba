"""Exact resume: a search killed with SIGKILL and resumed ends where the uninterrupted one does."""

import csv
import json
import signal
import subprocess
import time

import torch
from conftest import run_cli, start_cli

from darts_lite import Genotype

# GDAS on generated data: Gumbel sampling, augmentation and shuffling all draw random numbers
ARGS = ["+experiment=quickstart", "data=synthetic", "data.crop_padding=1", "data.flip=true", "search=gdas",
        "search.epochs=6", "search.warmup_epochs=1", "space.C=4", "space.layers=3", "seed=3",
        "trainer.enable_progress_bar=false"]


def _args(run, *extra):
    return [*ARGS, f"hydra.run.dir={run}", *extra]


def test_killed_search_resumes_to_the_same_result(tmp_path):
    straight = tmp_path / "straight"
    done = run_cli(*_args(straight), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = start_cli(*_args(killed), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = killed / "genotype_history.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 3 and (killed / "checkpoints/last.ckpt").is_file():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the search finished before it could be killed"
    epochs_before_kill = len(history.read_text().splitlines())
    assert epochs_before_kill < 6
    assert not (killed / "genotype.json").exists()
    # the wall time so far travels in the checkpoint; make it unmistakable so the summary must have added it
    ckpt_path = killed / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt_path, weights_only=True)
    assert state["callbacks"]["WallClock"]["elapsed_s"] > 0
    state["callbacks"]["WallClock"]["elapsed_s"] = 1e6
    torch.save(state, ckpt_path)

    resumed = run_cli(*_args(killed, "resume=true"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # summary.json's wall time covers the whole run, not just the part after the resume
    assert 1e6 < json.loads((killed / "summary.json").read_text())["wall_time_s"] < 1e6 + 600

    ckpt = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert {"rng_states", "tau", "optimizer_states", "lr_schedulers"} <= set(ckpt)
    assert len(ckpt["optimizer_states"]) == 2 and "net.alpha_normal" in ckpt["state_dict"]
    a = torch.load(straight / "alphas.pt", weights_only=True)
    b = torch.load(killed / "alphas.pt", weights_only=True)
    for cell in a:
        assert torch.equal(a[cell], b[cell]), f"{cell} alphas differ after resume"
    assert Genotype.parse((killed / "genotype.json").read_text()) == Genotype.parse((straight / "genotype.json").read_text())
    epochs = [json.loads(line)["epoch"] for line in (killed / "genotype_history.jsonl").read_text().splitlines()]
    assert epochs == list(range(6))

    def losses(run):
        rows = csv.DictReader(open(run / "metrics.csv"))
        return [(r["epoch"], r["search/train_loss"]) for r in rows if r.get("search/train_loss")]

    # metrics.csv keeps the epochs before the kill and continues with the same numbers
    assert losses(killed) == losses(straight) and len(losses(straight)) == 6


def test_resume_without_a_checkpoint_says_what_to_do(tmp_path):
    proc = run_cli(*_args(tmp_path / "new", "resume=true"), cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "no checkpoint at" in proc.stderr and "hydra.run.dir=" in proc.stderr


def test_interrupted_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    import pytest
    from pytorch_lightning.plugins.io import TorchCheckpointIO

    from darts_lite.run.checkpoints import AtomicCheckpointIO

    io, target = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": torch.tensor(1)}, target)

    def dies_mid_write(self, checkpoint, path, storage_options=None):
        open(path, "wb").write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"epoch": torch.tensor(2)}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no half-written file left behind
