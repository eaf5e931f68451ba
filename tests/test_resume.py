"""Exact resume: a search, a retraining and a Once-for-All run killed with SIGKILL and resumed end where the
uninterrupted runs do, tensor for tensor (the EcoNAS evolution's: tests/test_econas.py)."""

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
        "trainer.enable_progress_bar=false", "+trainer.limit_train_batches=4"]


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


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every 20 ms); fails if it ended on its own first."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, f"the {what} finished before it could be killed"


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after the resume"


def _straight_then_killed(tmp_path, args: list[str], checkpoint: str, epochs: int, what: str):
    """Run ``args`` to the end in tmp_path/straight; run them again in tmp_path/killed, SIGKILLed once its
    ``checkpoint`` (relative to the run folder) holds 2 of ``epochs`` epochs, and resumed. Returns both folders and
    the resumed run."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = run_cli(*args, f"hydra.run.dir={straight}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    proc = start_cli(*args, f"hydra.run.dir={killed}", cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: _epochs_in(killed / checkpoint) >= 2, what)
    assert 2 <= _epochs_in(killed / checkpoint) < epochs, f"the {what} was not killed inside the epochs it was to run"
    resumed = run_cli(*args, f"hydra.run.dir={killed}", "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return straight, killed, resumed


def _epochs_in(checkpoint) -> int:
    return int(torch.load(checkpoint, weights_only=True, map_location="cpu")["epoch"]) + 1 if checkpoint.is_file() else 0


# retraining a cell: drop path, cutout, crop and flip draw random numbers every step
TRAIN = ["+experiment=train_quick", "genotype=DARTS_V2", "data=synthetic", "data.crop_padding=1", "data.flip=true",
         "train.C=8", "train.layers=3", "train.cutout=4", "train.drop_path_prob=0.3", "train.epochs=5", "seed=2",
         "trainer.enable_progress_bar=false"]


def test_killed_retraining_resumes_to_the_same_weights(tmp_path):
    straight, killed, _ = _straight_then_killed(tmp_path, TRAIN, "checkpoints/last.ckpt", 5, "retraining")
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    _same_tensors(a["state_dict"], b["state_dict"])
    assert a["optimizer_states"][0]["state"].keys() == b["optimizer_states"][0]["state"].keys()
    for k, state in a["optimizer_states"][0]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer_states"][0]["state"][k]["momentum_buffer"])
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["metrics"] == json.loads((straight / "summary.json").read_text())["metrics"]


# Once-for-All, the tiny network of tests/conftest.py through the command line; the kernel phase is long enough to
# be killed inside it, after one of its epochs
OFA = ["+experiment=ofa_quick", "data=synthetic", "data.synthetic_samples=48", "data.synthetic_classes=3",
       "data.batch_size=16", "data.crop_padding=1", "data.flip=true", "ofa.network.stem_channels=4",
       "ofa.network.first_channels=4", "ofa.network.widths=[4,8]", "ofa.network.strides=[1,2]",
       "ofa.network.acts=[relu,hswish]", "ofa.network.head_channels=16", "ofa.resolutions=[6,8]", "ofa.bn_calibration=1",
       "ofa.val_split=0.2", "ofa.epochs=[1,6,1,1,1,1]", "ofa.subnets=[1,1,2,2,2,2]", "ofa.constraint.flops=null",
       "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "seed=1"]


def test_killed_once_for_all_resumes_to_the_same_network(tmp_path):
    # killed inside the kernel phase, after two of its six epochs
    straight, killed, resumed = _straight_then_killed(tmp_path, OFA, "kernel/checkpoints/last.ckpt", 6, "Once-for-All run")
    assert "Phase full: finished before, skipped" in resumed.stdout
    a = torch.load(straight / "network.pt", weights_only=True)
    b = torch.load(killed / "network.pt", weights_only=True)
    assert a["phase"] == b["phase"] == "expand2" and a["config"] == b["config"]
    _same_tensors(a["state_dict"], b["state_dict"])
    # the resumed phase continued the very same random draws: its metrics equal the uninterrupted run's
    straight_kernel = json.loads((straight / "kernel" / "summary.json").read_text())["metrics"]
    assert json.loads((killed / "kernel" / "summary.json").read_text())["metrics"] == straight_kernel


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
