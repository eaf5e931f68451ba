"""DDP search with 2 CPU processes (gloo), through the command line as users run it.

`strategy=ddp` re-launches the command once per extra rank, so it runs in a subprocess of its
own here, never inside the pytest process.
"""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SMALL_DARTS, run_cli

from darts_lite import SearchModule

# one worker runs the multi-process tests one after another: two DDP groups never race for ports or cores
pytestmark = pytest.mark.xdist_group("ddp")


# through the command line: the three with DDP's traps (GDAS's unused ops, second order's autograd.grad, which DDP
# does not all-reduce, SNAS's single-level step, whose one backward pass all-reduces the alphas with the weights);
# first-order DARTS on two ranks: tests/test_checkpoint_cells_ddp.py
@pytest.mark.parametrize("search", ["darts_v2", "gdas", "snas"])
def test_ddp_search_on_two_processes(tmp_path, search):
    run = tmp_path / "run"
    proc = run_cli("+experiment=quickstart", "data=synthetic", f"search={search}", "search.epochs=2",
                   "search.warmup_epochs=0", "space.C=4", "space.layers=3", "trainer=ddp", "trainer.accelerator=cpu",
                   "trainer.devices=2", "trainer.enable_progress_bar=false", "+trainer.limit_train_batches=2", *SMALL_DARTS,
                   f"hydra.run.dir={run}", cwd=tmp_path, isolated=True)  # DDP re-runs the command as rank 1
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (run / "train_ddp_process_1.log").is_file()  # a second rank really ran
    # alphas were compared across ranks after every step (SearchModule raises if they differ);
    # exactly one set of outputs, written once
    assert proc.stdout.count("Run folder:") == 1
    history = [json.loads(line) for line in (run / "genotype_history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert len(list(run.glob("genotype*.json"))) == 1 and (run / "checkpoints" / "last.ckpt").is_file()


RUN_FILES = """
from pathlib import Path
from hydra import compose, initialize_config_dir
from darts_lite.run import folder, loggers
from darts_lite.__main__ import config_dir

def write_run_files(run):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=quickstart", f"run_dir={run}"])
    folder.start_run(cfg)                           # config.yaml
    loggers.csv_logger(out_dir=run, resume_from=str(run / "epoch0.ckpt"))  # the metrics.csv rewrite of a resume
    loggers.wandb_run_id(run, resuming=False)       # wandb_run_id.txt
    return folder.is_rank_zero()
"""
RANK_KEYS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def _run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"epoch": 0}, run / "epoch0.ckpt")
    rows = "epoch,search/train_loss\n0,1.5\n1,1.2\n"  # a resume from epoch 0 keeps only the first row
    (run / "metrics.csv").write_text(rows)
    return run, rows


def _check_run_files(run, rows, writes):
    assert (run / "config.yaml").is_file() == writes and (run / "wandb_run_id.txt").is_file() == writes
    metrics = (run / "metrics.csv").read_text()
    assert (metrics.splitlines() == ["epoch,search/train_loss", "0,1.5"]) if writes else metrics == rows


def test_a_launched_rank_reads_its_rank_when_darts_lite_is_imported(tmp_path):
    """DDP re-runs the command once per extra rank into the same folder, before any Trainer tells the ranks apart:
    a fresh process started as local rank 1 (what the launcher does) keeps away from the run files."""
    run, rows = _run_folder(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in RANK_KEYS} | {"LOCAL_RANK": "1"}
    script = RUN_FILES + "import sys; print('rank zero:', write_run_files(Path(sys.argv[1])))"
    proc = subprocess.run([sys.executable, "-c", script, str(run)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank zero: False" in proc.stdout
    _check_run_files(run, rows, writes=False)


@pytest.mark.parametrize("rank_env,writes", [({}, True), ({"LOCAL_RANK": "1"}, False), ({"RANK": "1"}, False),
                                             ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False)])
def test_only_rank_zero_writes_run_files_before_the_trainer_exists(tmp_path, monkeypatch, rank_env, writes):
    """The same in this process, for every launcher's environment: Lightning's rank as its import reads it from the
    environment (lightning_fabric's own reading of it), then darts_lite's run files."""
    from lightning_fabric.utilities.rank_zero import _get_rank
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    run, rows = _run_folder(tmp_path)
    for key in (*RANK_KEYS, "PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # the run seeds every generator: put back after
        monkeypatch.delenv(key, raising=False)
    for key, value in rank_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(rank_zero_only, "rank", _get_rank() or 0)
    namespace = {}
    exec(RUN_FILES, namespace)
    py_rng, np_rng = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        assert namespace["write_run_files"](run) == writes
    random.setstate(py_rng), np.random.set_state(np_rng)
    _check_run_files(run, rows, writes)


def test_alpha_drift_across_ranks_is_caught():
    module = SearchModule(network=dict(C=4, layers=3))
    module.all_gather = lambda t: torch.stack([t, t])
    module._check_alphas_in_sync()  # identical: passes
    module.all_gather = lambda t: torch.stack([t, t + 1e-6])
    with pytest.raises(RuntimeError, match="alphas differ across ranks"):
        module._check_alphas_in_sync()
