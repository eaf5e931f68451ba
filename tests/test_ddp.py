"""DDP search with 2 CPU processes (gloo), through the command line as users run it.

`strategy=ddp` re-launches the command once per extra rank, so it runs in a subprocess of its
own here, never inside the pytest process.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from darts_lite import SearchModule


@pytest.mark.parametrize("search", ["darts", "darts_v2", "gdas"])
def test_ddp_search_on_two_processes(tmp_path, search):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "darts_lite", "+experiment=quickstart", "data=synthetic", f"search={search}",
         "search.epochs=2", "search.warmup_epochs=0", "space.C=4", "space.layers=3", "trainer=ddp",
         "trainer.accelerator=cpu", "trainer.devices=2", "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"],
        cwd=tmp_path, env=dict(os.environ, WANDB_MODE="offline"), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (run / "train_ddp_process_1.log").is_file()  # a second rank really ran
    # alphas were compared across ranks after every step (SearchModule raises if they differ);
    # exactly one set of outputs, written once
    assert proc.stdout.count("Run folder:") == 1
    history = [json.loads(line) for line in (run / "genotype_history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert len(list(run.glob("genotype*.json"))) == 1 and (run / "checkpoints" / "last.ckpt").is_file()


def test_alpha_drift_across_ranks_is_caught():
    module = SearchModule(network=dict(C=4, layers=3))
    module.all_gather = lambda t: torch.stack([t, t])
    module._check_alphas_in_sync()  # identical: passes
    module.all_gather = lambda t: torch.stack([t, t + 1e-6])
    with pytest.raises(RuntimeError, match="alphas differ across ranks"):
        module._check_alphas_in_sync()
