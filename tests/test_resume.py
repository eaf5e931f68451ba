"""Exact resume: a search killed with SIGKILL and resumed ends where the uninterrupted run does, tensor for tensor, its
wall time and metrics rows carried over; checkpoint writes that fail; a run killed after its last checkpoint. Every
long task killed at a random moment: tests/test_chaos.py (the EcoNAS evolution at a chosen one: tests/test_econas.py)."""

import csv
import errno
import json
import os
import signal
import subprocess
import time

import pytest
import torch
from conftest import SMALL_DARTS, _cli, run_cli, start_cli

from darts_lite import Genotype
from darts_lite.errors import CheckpointWriteFailed

# GDAS on generated data: Gumbel sampling, augmentation and shuffling all draw random numbers
ARGS = ["+experiment=quickstart", "data=synthetic", "data.crop_padding=1", "data.flip=true", "search=gdas",
        "search.epochs=6", "search.warmup_epochs=1", "space.C=4", "space.layers=3", "seed=3",
        "trainer.enable_progress_bar=false", "+trainer.limit_train_batches=4", *SMALL_DARTS]


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


# retraining a cell: drop path, cutout, crop and flip draw random numbers every step
TRAIN = ["+experiment=train_quick", "genotype=DARTS_V2", "data=synthetic", "data.crop_padding=1", "data.flip=true",
         "train.C=8", "train.layers=3", "train.cutout=4", "train.drop_path_prob=0.3", "train.epochs=5", "seed=2",
         "trainer.enable_progress_bar=false"]


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
    with pytest.raises(CheckpointWriteFailed, match="disk full; the previous checkpoint"):
        io.save_checkpoint({"epoch": torch.tensor(2)}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no half-written file left behind

    def no_space(self, checkpoint, path, storage_options=None):
        open(path, "wb").write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", no_space)
    with pytest.raises(CheckpointWriteFailed) as e:
        io.save_checkpoint({"epoch": torch.tensor(2)}, target)
    assert str(e.value) == (f"could not write the checkpoint {target}: No space left on device (ENOSPC); the previous "
                            f"checkpoint {target} is whole (an earlier epoch's)")
    assert torch.load(target, weights_only=True)["epoch"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_checkpoint_too_large_for_the_disk_stops_the_run_with_one_message(tmp_path):
    """A file size limit below the checkpoint's size (as a full disk or a quota would): the run stops at the end
    of its first epoch with one line that says why and what is on disk, and how to continue; no traceback, no
    half-written file."""
    import resource

    cmd, env = _cli(*_args(tmp_path / "run"), "search.epochs=2")
    limit = 150_000  # above every other file the run writes (the pictures are about 50 kB), below its checkpoint
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (f"darts_lite: could not write the checkpoint {checkpoints / 'last.ckpt'}: File too large (EFBIG); no "
            "checkpoint was written before") in proc.stderr
    assert "Traceback" not in proc.stderr and "No checkpoint was written yet" in proc.stderr
    assert list(checkpoints.iterdir()) == []


def test_a_result_file_whose_write_fails_midway_keeps_its_previous_content(tmp_path, monkeypatch):
    """summary.json, genotype.json and every other result file darts_lite writes are replaced whole or not at all
    (torchfiles.write_text_atomically): a write that fails half-way (a full disk, a kill) raises, and leaves the
    previous file as it was and no temporary file behind."""
    from pathlib import Path
    from types import SimpleNamespace

    from darts_lite.run.folder import write_summary

    out = tmp_path / "run"
    out.mkdir()
    write_summary(SimpleNamespace(is_global_zero=True), out, {"status": "running", "epoch": 3})
    before = (out / "summary.json").read_text()
    real = Path.write_text

    def half_then_full_disk(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_summary(SimpleNamespace(is_global_zero=True), out, {"status": "done", "epoch": 50, "metrics": {}})
    monkeypatch.undo()
    assert (out / "summary.json").read_text() == before and json.loads(before)["status"] == "running"
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    # the tables (metrics.csv on resume, the archive's export, the studies' CSVs) go through one writer too
    from darts_lite.torchfiles import open_atomically

    with open_atomically(out / "table.csv") as f:
        csv.writer(f).writerows([["a", "b"], [1, 2]])
    with pytest.raises(KeyboardInterrupt), open_atomically(out / "table.csv") as f:
        csv.writer(f).writerow(["a", "b"])
        raise KeyboardInterrupt  # killed after the header
    assert (out / "table.csv").read_bytes() == b"a,b\r\n1,2\r\n"
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "table.csv"]


def test_a_run_killed_after_its_last_checkpoint_reports_the_same_metrics_on_resume(tmp_path):
    """Killed between its last epoch's checkpoint and its summary (found by experiments/chaos.py): resumed, it has no
    epoch left to run, and its summary reports the metrics the uninterrupted run reported (carried in the
    checkpoint), not an empty set."""
    run = tmp_path / "run"
    args = [*TRAIN, "train.epochs=2", f"hydra.run.dir={run}"]
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    reported = json.loads((run / "summary.json").read_text())["metrics"]
    assert {"val/acc", "train/loss"} <= set(reported)
    (run / "summary.json").unlink()  # as if the kill came before it was written
    again = run_cli(*args, "resume=true", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["metrics"] == reported


def test_an_epochs_metrics_row_lost_to_a_kill_after_its_checkpoint_comes_back_on_resume(tmp_path):
    """Lightning writes an epoch's checkpoint, then logs the epoch's aggregated metrics: a run killed between the two
    would resume at the next epoch with that row gone for good. The checkpoint carries the row's metrics and step, and
    the resumed run's metrics.csv gets it back as the uninterrupted run wrote it (every column, the step included)."""
    from darts_lite.run.loggers import csv_logger

    run = tmp_path / "run"
    done = run_cli(*_args(run, "search.epochs=2"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = run / "metrics.csv"
    written = list(csv.DictReader(open(metrics)))
    ends = [i for i, row in enumerate(written) if row["epoch"] == "1" and row.get("search/train_loss")]
    assert len(ends) == 1  # the last epoch's end-of-epoch row
    lost = written[ends[0]]
    with open(metrics, "w", newline="") as f:  # as the kill left the file: without that row
        out = csv.DictWriter(f, fieldnames=list(written[0]))
        out.writeheader()
        out.writerows(row for i, row in enumerate(written) if i != ends[0])

    csv_logger(out_dir=run, resume_from=str(run / "checkpoints" / "last.ckpt"))
    restored = list(csv.DictReader(open(metrics)))
    assert restored[-1] == lost
    assert sorted(map(tuple, (sorted(r.items()) for r in restored))) == sorted(map(tuple, (sorted(r.items()) for r in written)))

    # a file that has the row is left as it was
    csv_logger(out_dir=run, resume_from=str(run / "checkpoints" / "last.ckpt"))
    assert list(csv.DictReader(open(metrics))) == restored
