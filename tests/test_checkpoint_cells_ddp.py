"""checkpoint_cells and recompute under DDP: 2 CPU processes (gloo) search with and without each and end with the
same alphas and weights, on both ranks, for first-order DARTS, second-order DARTS and GDAS: the plain supernet
(recompute=none), the default (recompute=cheap), checkpointed cells and recompute=pointwise.

`strategy="ddp"` re-launches the running command for rank 1, so the searches run in a script of their own in a
subprocess, never inside the pytest process. One launch runs all fifteen searches: the later Trainers find the process
group of the first one and reuse it, which keeps the test to one start-up of two processes.
"""

import os
import subprocess
import sys

import pytest
import torch

# one worker runs the multi-process tests one after another: two DDP groups never race for ports or cores
pytestmark = pytest.mark.xdist_group("ddp")

ALGORITHMS = {"darts": dict(order=1, relaxation="softmax"), "darts_v2": dict(order=2, relaxation="softmax"),
              "gdas": dict(order=1, relaxation="gumbel")}
# the plain supernet, the default (fused steps), checkpointed cells, edges that keep only their 1x1 convolutions' outputs
# (which each run their own pooling ops: against the plain supernet doing so too, "plain_each")
MODES = {"plain": dict(recompute="none"), "cheap": dict(), "cells": dict(recompute="none", checkpoint_cells=True),
         "recompute": dict(recompute="pointwise"), "plain_each": dict(recompute="none", own_pooling=True)}
REFERENCE = {"cheap": "plain", "cells": "plain", "recompute": "plain_each"}

SCRIPT = """
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy

from darts_lite.data import SearchDataModule
from darts_lite.search import SearchModule

out = Path(sys.argv[1])
algorithms, modes = {algorithms!r}, {modes!r}
for name, kw in algorithms.items():
    for mode, switch in modes.items():
        switch = dict(switch)
        own_pooling = switch.pop("own_pooling", False)
        pl.seed_everything(0, verbose=False)
        # a few ops of the DARTS list for time: pooling with its BN, the factorized reduction and dil_conv (which
        # share the edge's ReLU on reduction edges), the strided dilated conv's fast path; no drop path (under it
        # the default sums a dropped op's output plainly; checkpointed cells replay it: tests/test_checkpoint_cells.py)
        module = SearchModule(network=dict(C=4, layers=3, num_classes=4, relaxation=kw["relaxation"],
                                           primitives=("none", "max_pool_3x3", "skip_connect", "dil_conv_3x3"),
                                           **switch),
                              epochs=1, order=kw["order"], hvp="central", arch_lr=0.1, channels_last=False)
        for edge in module.net.modules():
            if own_pooling and hasattr(edge, "share_pooling"):
                edge.share_pooling = False
        initial = {{k: v.detach().clone() for k, v in module.net.named_parameters()}}
        # 64 images: 32 for the weights, 32 for the alphas, batches of 8 on each of 2 ranks = 2 steps
        dm = SearchDataModule(name="synthetic", batch_size=8, crop_padding=1, flip=True, seed=0, synthetic_samples=64,
                              synthetic_classes=4, synthetic_size=8)
        # find_unused_parameters: GDAS leaves the unsampled ops, and each level of the bilevel step the other
        # level's parameters, without gradient
        trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(find_unused_parameters=True,
                             process_group_backend="gloo"), max_epochs=1, limit_val_batches=0, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                             use_distributed_sampler=False, enable_model_summary=False)
        trainer.fit(module, datamodule=dm)
        assert trainer.global_step > 0
        assert module.net.checkpoint_cells == switch.get("checkpoint_cells", False)
        assert module.net.recompute == switch.get("recompute", "cheap")
        state = {{k: v.detach().clone() for k, v in module.net.state_dict().items()}}
        torch.save({{"state": state, "initial": initial, "steps": trainer.global_step}},
                   out / f"{{name}}-{{mode}}-rank{{trainer.global_rank}}.pt")
"""


# session scope: built once even when the worker runs test_ddp.py's tests between this module's
@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """{(algorithm, mode, rank): {"state", "initial", "steps"}} of the fifteen 2-rank searches."""
    tmp = tmp_path_factory.mktemp("ckpt_ddp")
    script = tmp / "search_ddp.py"
    script.write_text(SCRIPT.format(algorithms=ALGORITHMS, modes=MODES))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE",
                                                               "MASTER_ADDR", "MASTER_PORT")}
    env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), str(tmp)], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {(name, mode, rank): torch.load(tmp / f"{name}-{mode}-rank{rank}.pt")
            for name in ALGORITHMS for mode in MODES for rank in (0, 1)}


@pytest.mark.parametrize("mode", ["cheap", "cells", "recompute"])
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_a_memory_mode_follows_the_plain_trajectory_on_every_rank(runs, algorithm, mode):
    for rank in (0, 1):
        plain, lean = runs[algorithm, REFERENCE[mode], rank], runs[algorithm, mode, rank]
        assert plain["steps"] == lean["steps"] > 0
        for name, a in plain["state"].items():
            assert torch.allclose(a.float(), lean["state"][name].float(), rtol=0, atol=1e-6), (rank, name)
        # the search moved them: the comparison above is not one of untouched initial values
        for name in ("alpha_normal", "alpha_reduce", "cells.0.preprocess1.1.weight"):
            moved = (lean["state"][name] - lean["initial"][name]).abs().max()
            assert moved > 1e-3, (rank, name, moved)


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_both_ranks_hold_the_same_parameters(runs, algorithm):
    for mode in MODES:
        first, second = runs[algorithm, mode, 0], runs[algorithm, mode, 1]
        for name in first["initial"]:  # parameters only: each rank's BatchNorm statistics see its own batches
            assert torch.equal(first["state"][name], second["state"][name]), (mode, name)
