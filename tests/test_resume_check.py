"""Resuming under other settings: what would change the network or the data is refused in one message, with
the command that resumes as the run was made; epochs and learning rates may change; the file stays as it was."""

from __future__ import annotations

import csv
import hashlib
import math
import re

import pytest
import torch
from conftest import SMALL_DARTS, compose_cfg, run_cli

from darts_lite.errors import ConfigError
from darts_lite.run.checkpoints import RECORD_KEY, resume_checkpoint

# one worker runs this module's tests, so its module fixture (search_run) is built once, not once per worker
pytestmark = pytest.mark.xdist_group("resume_check")

ARGS = ["+experiment=quickstart", "data=synthetic", "search.epochs=2", "search.warmup_epochs=1", "space.C=4",
        "space.layers=3", "trainer.enable_progress_bar=false", *SMALL_DARTS]


def _cli(run, *extra, cwd):
    return run_cli(*ARGS, f"hydra.run.dir={run}", *extra, cwd=cwd)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    where = tmp_path_factory.mktemp("resume_check")
    run = where / "run"
    done = _cli(run, cwd=where)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def _cfg(run, *overrides, base=ARGS):
    return compose_cfg(*base, *overrides, f"run_dir={run}")


def test_the_checkpoint_records_task_space_settings_and_version(search_run):
    record = torch.load(search_run / "checkpoints" / "last.ckpt", weights_only=True)[RECORD_KEY]
    assert (record["task"], record["space"], record["format"]) == ("search", "darts", 2) and record["version"]
    assert record["settings"]["space.C"] == 4 and record["settings"]["data.name"] == "synthetic"
    assert record["overrides"] == ARGS and record["run_dir"] == str(search_run.resolve())


@pytest.mark.parametrize("override,message", [
    ("space.C=8", "space.C: 4 in the checkpoint, 8 now"),
    ("space.layers=4", "space.layers: 3 in the checkpoint, 4 now"),
    ("data=digits", "data.name: 'synthetic' in the checkpoint, 'digits' now"),
    ("data.resolution=8", "data.resolution: null in the checkpoint, 8 now"),
    ("search=gdas", "search.relaxation._target_: 'darts_lite.relax.SoftmaxRelaxation' in the checkpoint, "
                    "'darts_lite.relax.GumbelRelaxation' now"),
    ("seed=5", "seed: 0 in the checkpoint, 5 now"),
])
def test_a_setting_that_shapes_the_network_or_data_is_refused(search_run, override, message):
    last = search_run / "checkpoints" / "last.ckpt"
    before = _sha(last)
    with pytest.raises(ConfigError) as info:
        resume_checkpoint(_cfg(search_run, override, "resume=true"))
    text = str(info.value)
    assert message in text and "Resume the run as it was made with:" in text
    assert f"resume=true hydra.run.dir={search_run.resolve()}" in text and "space.C=4" in text
    assert _sha(last) == before


def test_epochs_and_learning_rates_may_change_and_are_named(search_run):
    changed = resume_checkpoint(_cfg(search_run, "search.epochs=3", "search.lr=0.01", "resume=true"))
    assert changed == str(search_run / "checkpoints" / "last.ckpt")
    from darts_lite.run.checkpoints import check_resume

    free = check_resume(_cfg(search_run, "search.epochs=3", "search.lr=0.01", "resume=true"), changed)
    assert "search.epochs: 2 -> 3" in free and "search.lr: 0.05 -> 0.01" in free


def test_a_checkpoint_of_another_task_or_a_broken_file_is_refused(search_run, tmp_path):
    last = search_run / "checkpoints" / "last.ckpt"
    before = _sha(last)
    train = ["+experiment=train_quick", "genotype=DARTS_V2"]
    with pytest.raises(ConfigError, match="a checkpoint of a task=search run; task=train cannot continue from it"):
        resume_checkpoint(_cfg(tmp_path / "t", f"ckpt_path={last}", base=train))
    assert _sha(last) == before

    state = torch.load(last, weights_only=True)
    cases = {
        "truncated.ckpt": (last.read_bytes()[: last.stat().st_size // 2], "not a readable checkpoint"),
        "text.ckpt": (b"not a checkpoint\n", "not a readable checkpoint"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.ckpt")
    torch.save({k: v for k, v in state.items() if k != RECORD_KEY}, tmp_path / "norecord.ckpt")
    torch.save({**state, RECORD_KEY: {**state[RECORD_KEY], "format": 99, "version": "9.0"}}, tmp_path / "newer.ckpt")
    cases |= {"foreign.ckpt": (None, "not a Lightning checkpoint"), "norecord.ckpt": (None, "holds no darts_lite run record"),
              "newer.ckpt": (None, "was written by darts_lite 9.0 (checkpoint format 99)")}
    for name, (_, message) in cases.items():
        path = tmp_path / name
        kept = _sha(path)
        with pytest.raises(ConfigError, match=re.escape(message)):
            resume_checkpoint(_cfg(search_run, f"ckpt_path={path}"))
        assert _sha(path) == kept, f"{name} was changed by the refusal"


def test_cli_refuses_in_one_message_and_resumes_a_longer_run(search_run, tmp_path):
    last = search_run / "checkpoints" / "last.ckpt"
    before, config_before = _sha(last), (search_run / "config.yaml").read_text()
    refused = _cli(search_run, "space.C=8", "resume=true", cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "space.C: 4 in the checkpoint, 8 now" in refused.stderr and "size mismatch" not in refused.stderr
    assert _sha(last) == before and (search_run / "config.yaml").read_text() == config_before

    resumed = _cli(search_run, "search.epochs=3", "search.lr=0.01", "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = resumed.stdout + resumed.stderr
    assert "Resuming with changed settings (allowed on resume):" in output and "search.epochs: 2 -> 3" in output
    rows = [r for r in csv.DictReader(open(search_run / "metrics.csv")) if r.get("search/train_loss")]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # the run went on for the added epoch
    # the cosine schedule re-based on the new rate and length at the epoch reached: 0.01 to 0.001 over 3 epochs
    lr = [float(r["search/lr"]) for r in csv.DictReader(open(search_run / "metrics.csv")) if r.get("search/lr")]
    assert lr[-1] == pytest.approx(0.001 + (0.01 - 0.001) * (1 + math.cos(math.pi * 2 / 3)) / 2, rel=1e-5)


def test_a_longer_run_or_a_new_rate_rebases_the_cosine_schedule_at_the_epoch_reached():
    from darts_lite.resume import cosine_lr, rebase_cosine

    weight = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([weight], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.001)
    for _ in range(2):
        opt.step()
        sched.step()
    saved = {"lr": 0.1, "lr_min": 0.001, "epochs": 4}
    before = opt.param_groups[0]["lr"]
    assert rebase_cosine(opt, sched, saved, 0.1, 0.001, 4) is None and opt.param_groups[0]["lr"] == before
    assert "over 8 epochs" in rebase_cosine(opt, sched, saved, 0.05, 0.001, 8)
    for epoch in range(2, 9):  # from here on the schedule is the new one, to its new end and not back up
        assert opt.param_groups[0]["lr"] == pytest.approx(cosine_lr(0.05, 0.001, epoch, 8), rel=1e-9), epoch
        opt.step()
        sched.step()
