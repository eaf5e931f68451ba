"""The command line as users run it: `python -m darts_lite +experiment=...` in a subprocess."""

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SMALL_DARTS, compose_cfg, run_cli
from hydra import compose, initialize_config_dir

from darts_lite import Genotype
from darts_lite.__main__ import config_dir
from darts_lite.config import ConfigError, validate_search


def test_quickstart_search_end_to_end(tmp_path):
    """The quickstart, shortened to 3 epochs of a 3-cell supernet: learns digits and leaves every promised file."""
    run = tmp_path / "run"
    proc = run_cli("+experiment=quickstart", "search.epochs=3", "search.warmup_epochs=1", "space.layers=3",
                   f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Genotype: Genotype(normal=[" in proc.stdout and str(run) in proc.stdout

    for name in ("config.yaml", "genotype.json", "genotype.txt", "genotype_history.jsonl", "metrics.csv",
                 "normal.dot", "reduction.dot", "alphas.pt", "op_probabilities.pt",
                 "alphas_normal.png", "alphas_reduce.png", "alphas_normal.svg",
                 "checkpoints/last.ckpt"):
        assert (run / name).is_file(), f"{name} missing from the run folder"
    if shutil.which("dot"):
        assert (run / "normal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    genotype = Genotype.parse((run / "genotype.json").read_text())
    assert Genotype.parse((run / "genotype.txt").read_text()) == genotype
    history = [json.loads(line) for line in (run / "genotype_history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert Genotype.parse(history[-1]["genotype"]) == genotype

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    val_acc = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
    assert len(val_acc) == 3
    # how decided the search is: per epoch in metrics.csv, at the end in summary.json and the printed lines
    per_epoch = [float(r["decision/normal/max_prob"]) for r in rows if r.get("decision/normal/max_prob")]
    assert len(per_epoch) == 3 and all(1 / 8 <= p <= 1 for p in per_epoch)
    decided = json.loads((run / "summary.json").read_text())["decision"]
    final = torch.load(run / "op_probabilities.pt", weights_only=True)["normal"]
    assert decided["normal"]["max_prob"] == pytest.approx(final.max(-1).values.mean().item(), rel=1e-5)
    alphas = torch.load(run / "alphas.pt", weights_only=True)  # the alphas themselves, of which those are the softmax
    torch.testing.assert_close(torch.softmax(alphas["normal"], -1), final)
    assert not torch.allclose(alphas["normal"].sum(-1), torch.ones(14))
    assert decided["normal"]["param_free_share"] == sum(op in ("skip_connect", "max_pool_3x3", "avg_pool_3x3")
                                                       for op, _ in genotype.normal) / 8
    assert "Decision: normal cell: largest op probability" in proc.stdout
    assert val_acc[-1] > 0.5, f"digits accuracy {val_acc} is not clearly above chance (0.1)"
    assert "C: 8" in (run / "config.yaml").read_text() and "${" not in (run / "config.yaml").read_text()


@pytest.mark.parametrize("experiment", ["quickstart", "darts", "darts_v2", "gdas", "gdas_frc"])
def test_experiments_compose_and_validate(experiment):
    cfg = compose_cfg(f"+experiment={experiment}")
    validate_search(cfg)
    assert cfg.task == "search"


def test_gdas_experiment_is_gdas_with_the_econas_proxy():
    cfg = compose_cfg("+experiment=gdas")
    assert cfg.search.relaxation._target_ == "darts_lite.relax.GumbelRelaxation" and cfg.search.epochs == 250
    assert cfg.data.name == "cifar10" and cfg.proxy.name.startswith("econas")
    assert cfg.space.C == 8 and cfg.data.resolution == 16  # channels and resolution halved
    assert cfg.space.layers == 8 and cfg.data.sample_ratio == 1.0  # depth and data kept
    assert cfg.data.batch_size > 64
    frc = compose_cfg("+experiment=gdas_frc")
    assert frc.space.fixed_reduction and frc.search.relaxation._target_ == "darts_lite.relax.GumbelRelaxation"
    assert compose_cfg("+experiment=darts_v2").search.order == 2


@pytest.mark.parametrize(
    "override,message",
    [
        ("search.epochs=-1", "search.epochs=-1"),
        ("search=gdas,search.relaxation.tau_min=20", "search.relaxation.tau_max=10.0: must be >= search.relaxation.tau_min"),
        ("+search.relaxation.temperature=2",
         "search.relaxation.temperature: unknown option of darts_lite.relax.SoftmaxRelaxation"),
        ("data.split=1.5", "data.split=1.5: must be in (0, 1)"),
        ("data.sample_ratio=0", "data.sample_ratio=0: must be in (0, 1]"),
        ("search.warmup_epochs=50", "search.warmup_epochs=50"),
        ("data.name=imagenet", "data.name='imagenet'"),
        ("search.hvp=backward", "search.hvp='backward': must be one of exact, central, forward"),
    ],
)
def test_bad_values_are_rejected_with_a_message(override, message):
    cfg = compose_cfg("+experiment=quickstart", *override.split(","))
    with pytest.raises(ConfigError) as info:
        validate_search(cfg)
    assert message in str(info.value)


def test_bad_value_on_the_command_line_exits_before_training(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("+experiment=quickstart", "search.epochs=-3", "data.split=0", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "search.epochs=-3" in proc.stderr and "data.split=0" in proc.stderr  # every problem at once
    assert "Traceback" not in proc.stderr
    assert not (run / "checkpoints").exists()


def test_unknown_experiment_or_option_is_one_message(tmp_path):
    for args, needle in [(["+experiment=nope"], "experiment/nope"), (["search=nope"], "search/nope")]:
        proc = run_cli(*args, cwd=tmp_path, timeout=120)
        assert proc.returncode != 0
        assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_configs_ship_in_the_wheel(tmp_path):
    """Installed from a wheel (no checkout beside it), the app still finds and composes its configs."""
    root = Path(__file__).resolve().parents[1]
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheel"), str(root)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("darts_lite-*.whl")
    site = tmp_path / "site"
    shutil.unpack_archive(wheel, site, format="zip")
    env = dict(os.environ, PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "from darts_lite.__main__ import config_dir; print(config_dir())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip() == str(site / "darts_lite" / "conf"), where.stderr
    proc = subprocess.run([sys.executable, "-m", "darts_lite", "+experiment=gdas", "--cfg", "job"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "_target_: darts_lite.relax.GumbelRelaxation" in proc.stdout and "name: econas_c2r2s0" in proc.stdout


def wandb_run_records(run_file: Path) -> list:
    """The run records (name, group, tags, id) of an offline W&B run file: a LevelDB-style log of protobufs."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunk, runs = run_file.read_bytes(), 32768, 7, b"", []  # 7: the ":W&B" file header
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if block - pos % block < 7 or (kind == 0 and length == 0):  # a block's zero padding
            pos += block - pos % block
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one split across blocks
            record = wandb_internal_pb2.Record.FromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "run":
                runs.append(record.run)
    return runs


def test_wandb_logger_runs_offline_without_credentials(tmp_path):
    run = tmp_path / "run"
    env_home = tmp_path / "home"
    env_home.mkdir()
    args = [sys.executable, "-m", "darts_lite", "+experiment=quickstart", "logger=wandb", "data=synthetic",
            "search.epochs=2", "search.warmup_epochs=1", "space.C=4", "space.layers=3", "+trainer.limit_train_batches=3",
            "logger.wandb.name=my-name", "logger.wandb.group=my-group", "logger.wandb.tags=[my-tag]", *SMALL_DARTS,
            f"hydra.run.dir={run}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")} | {"HOME": str(env_home)}
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and (run / "metrics.csv").is_file()
    # says how to upload later (darts_lite's own hint, not wandb's banner, which names one run only)
    assert f"W&B offline: sync later with `wandb sync {run}/wandb/offline-run-*`" in proc.stdout + proc.stderr
    (run_record,) = wandb_run_records(next(offline[0].glob("run-*.wandb")))
    assert (run_record.display_name, run_record.run_group) == ("my-name", "my-group")
    assert list(run_record.tags) == ["my-tag", "search", "darts"]
    run_id = (run / "wandb_run_id.txt").read_text().strip()
    assert run_record.run_id == run_id and offline[0].name.endswith(run_id)
    media = offline[0] / "files" / "media" / "images"
    for key in ("alphas/normal", "alphas/reduce", "cells/normal", "cells/reduction"):
        images = list(media.glob(f"{key}_*.png"))
        assert len(images) == 2, f"{key}: expected one image per epoch, got {images}"  # 2 epochs
        assert all(image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for image in images)
    assert (run / "alphas_normal.png").is_file() and (run / "alphas_reduce.png").is_file()
    record = next(offline[0].glob("run-*.wandb")).read_bytes()
    assert b"genotype-" in record and b"genotype.json" in record  # the final genotype artifact

    # resume=true continues the same W&B run: a second offline record under the same id
    resumed = subprocess.run([*args, "resume=true"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                             stdin=subprocess.DEVNULL, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (later,) = set((run / "wandb").glob("offline-run-*")) - set(offline)
    (resumed_record,) = wandb_run_records(next(later.glob("run-*.wandb")))
    assert resumed_record.run_id == run_id and resumed_record.display_name == "my-name"
    assert (run / "wandb_run_id.txt").read_text().strip() == run_id


def test_train_quick_retrains_a_published_cell_on_digits(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("+experiment=train_quick", "genotype=DARTS_V2", "train.epochs=4", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Parameters: 0.13M (without the auxiliary head)" in proc.stdout and "MACs" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics"]["val/acc"] > 0.8, summary["metrics"]
    assert 100_000 < summary["params"] < 200_000 and summary["flops"] > 0
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    ramp = [float(r["train/drop_path_prob"]) for r in rows if r.get("train/drop_path_prob")]
    assert ramp == pytest.approx([0.1 * e / 4 for e in range(4)])  # drop path ramps linearly per epoch
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_train_from_a_search_run_folder_and_bad_genotype(tmp_path):
    folder = tmp_path / "search_run"
    folder.mkdir()
    (folder / "genotype.json").write_text(Genotype.named("GDAS_V1").to_json())
    cfg = compose_cfg("+experiment=train_quick", f"genotype={folder}")
    from darts_lite.config import validate_train

    validate_train(cfg)
    proc = run_cli("+experiment=train_quick", "genotype=NOT_A_CELL", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "not a published name" in proc.stderr and "Traceback" not in proc.stderr


def test_genotype_text_on_the_command_line_as_the_retrain_guide_quotes_it():
    """docs/guides/retrain.md: genotype="\\"Genotype(...)\\"" (the shell passes the inner quotes on to Hydra)."""
    from darts_lite.config import validate_train

    text = Genotype.named("PC_DARTS").to_text()
    cfg = compose_cfg("+experiment=train_quick", f'genotype="{text}"')
    validate_train(cfg)
    assert Genotype.parse(cfg.genotype) == Genotype.named("PC_DARTS")
    guide = (Path(__file__).resolve().parents[1] / "docs" / "guides" / "retrain.md").read_text()
    assert 'genotype="\\"Genotype(normal=[' in guide  # test_docs.py composes that very command


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["genotype=GDAS_F1", "train.C=6"], "train.C=6: must be a multiple of 4 for a fixed-reduction genotype"),
        (["train.auxiliary=true"], "train.auxiliary=true: the auxiliary head needs a feature map of at least 8x8"),
        (["train.auxiliary=true", "train.network_dataset=imagenet", "data.resolution=32"], "at least 7x7"),
    ],
)
def test_bad_retraining_values_are_rejected_before_training(overrides, message):
    from darts_lite.config import validate_train

    with pytest.raises(ConfigError) as info:
        validate_train(compose_cfg("+experiment=train_quick", *overrides))
    assert message in str(info.value)
    # the same network at a size where the head fits is accepted
    validate_train(compose_cfg("+experiment=train_quick", "train.auxiliary=true", "data.resolution=32"))


def test_multirun_over_genotypes_ends_with_a_table(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "+experiment=train_quick", "genotype=DARTS_V2,GDAS_V1", "seed=0,1", "train.epochs=1",
                   "train.layers=3", "train.C=8", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    md = (sweep / "summary.md").read_text()
    assert "## Test accuracy per genotype" in md
    import statistics

    for name in ("DARTS_V2", "GDAS_V1"):
        accs = [float(r["val_acc"]) for r in rows if f"genotype={name}" in r["overrides"]]
        assert len(accs) == 2
        setting = "`+experiment=train_quick train.epochs=1 train.layers=3 train.C=8`"
        line = f"| {name} | {setting} | 2 | {statistics.mean(accs):.4f} | {statistics.stdev(accs):.4f} |"
        assert line in md, md


TINY_SEARCH = ["+experiment=quickstart", "data=synthetic", "space.C=4", "space.layers=3", "trainer.enable_progress_bar=false",
               "+trainer.limit_train_batches=3", *SMALL_DARTS]


def test_multirun_with_failing_jobs_runs_the_rest_and_lists_the_errors(tmp_path):
    """Job 0 has a bad value (ConfigError), job 1 diverges (FloatingPointError), job 2 is fine: the sweep runs all
    three, each job has its own W&B run, the table lists the errors, and the exit status says something failed."""
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", *TINY_SEARCH, "logger=wandb", "search.epochs=1", "search.warmup_epochs=0", "search.lr=-1,1e30,0.05",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "job 0 (" in proc.stderr and "search.lr=-1: must be > 0" in proc.stderr  # said when it happened
    assert "2 of 3 jobs failed or did not finish" in proc.stderr
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert [r["status"] for r in rows] == ["failed", "failed", "done"]
    assert rows[0]["error"].startswith("ConfigError: invalid config:") and "search.lr=-1: must be > 0" in rows[0]["error"]
    assert rows[1]["error"].startswith("FloatingPointError: the ") and " became " in rows[1]["error"]
    assert rows[2]["genotype"].startswith("Genotype(normal=") and rows[2]["error"] == ""
    md = (sweep / "summary.md").read_text()
    assert "| failed: ConfigError: invalid config: search.lr=-1: must be > 0 " in md
    assert "| failed: FloatingPointError: the " in md and "| done |" in md
    failed = json.loads((sweep / "1" / "summary.json").read_text())
    assert failed["status"] == "failed" and failed["task"] == "search"
    # jobs 1 and 2 started W&B runs: separate ones (an unfinished run would have been reused by the next job)
    ids = [(sweep / job / "wandb_run_id.txt").read_text().strip() for job in ("1", "2")]
    assert ids[0] != ids[1]
    for job, run_id in zip(("1", "2"), ids):
        assert [p.name.endswith(run_id) for p in (sweep / job / "wandb").glob("offline-run-*")] == [True]


def test_non_finite_loss_says_where_to_resume_without_a_traceback(tmp_path):
    # architecture steps start after one warm-up epoch (checkpointed); an absurd Adam rate then breaks the loss
    run = tmp_path / "run"
    proc = run_cli(*TINY_SEARCH, "search.epochs=2", "search.warmup_epochs=1", "search.arch_lr=1e30",
                   f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 1
    # search.py words it (the loss or the gradient norm "became nan/inf at epoch E, step S"); the CLI adds the rest
    assert "Traceback" not in proc.stderr and "darts_lite: the " in proc.stderr, proc.stderr[-3000:]
    assert re.search(r"became \S+ at epoch 1, step", proc.stderr)
    assert f"Last checkpoint (end of the last finished epoch): {run}/checkpoints/last.ckpt" in proc.stderr
    (command,) = [line.split("Continue from it with: ", 1)[1] for line in proc.stderr.splitlines()
                  if "Continue from it with: " in line]
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "darts_lite"] and args[-2:] == ["resume=true", f"hydra.run.dir={run}"]
    # the printed command really continues from that checkpoint: epoch 1 again, where it diverges again
    again = run_cli(*args[3:], cwd=tmp_path)
    assert again.returncode == 1 and re.search(r"became \S+ at epoch 1, step", again.stderr), again.stderr[-3000:]
    # and with a sane architecture rate added, as the message suggests, the resumed run finishes
    saner = run_cli(*args[3:], "search.arch_lr=3e-4", cwd=tmp_path)
    assert saner.returncode == 0, saner.stderr[-3000:]
    assert "architecture lr 1e+30 -> 0.0003" in saner.stdout + saner.stderr
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["epoch"] for r in rows if r.get("search/arch_loss")] == ["1"]  # epoch 0: warm-up; 1: resumed, alphas train

    # diverging in the first epoch: nothing to resume from, and it says so
    fresh = tmp_path / "fresh"
    proc = run_cli(*TINY_SEARCH, "search.epochs=2", "search.warmup_epochs=0", "search.lr=1e30", f"hydra.run.dir={fresh}",
                   cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.search(r"became \S+ at epoch 0, step", proc.stderr) and "No checkpoint was written yet" in proc.stderr
    assert not (fresh / "checkpoints" / "last.ckpt").exists()


def test_launcher_configs_compose():
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        local = compose(config_name="config", overrides=["hydra/launcher=local"], return_hydra_config=True)
        slurm = compose(config_name="config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert "joblib" in local.hydra.launcher._target_.lower() and local.hydra.launcher.n_jobs == 2
    assert "slurm" in slurm.hydra.launcher._target_.lower() and slurm.hydra.launcher.gpus_per_node == 1


def test_search_sweep_with_parallel_jobs_summarises_agreement(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "hydra/launcher=local", "+experiment=quickstart", "data=synthetic", "seed=0,1",
                   "search.epochs=2", "search.warmup_epochs=1", "space.C=4", "space.layers=3", "+trainer.limit_train_batches=3",
                   *SMALL_DARTS, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert ["seed=0" in rows[0]["overrides"], "seed=1" in rows[1]["overrides"]] == [True, True]
    assert all(r["status"] == "done" for r in rows)
    assert all(r["genotype"].startswith("Genotype(normal=") and float(r["wall_time_s"]) > 0 for r in rows)
    md = (sweep / "summary.md").read_text()
    assert "## Agreement between the searches, per edge" in md
    # how decided each job's search is, beside the agreement: the same numbers as the job's summary.json
    for row in rows:
        decided = json.loads((sweep / row["job"] / "summary.json").read_text())["decision"]
        for cell in ("normal", "reduce"):
            assert float(row[f"{cell}_max_prob"]) == pytest.approx(decided[cell]["max_prob"])
            assert f"| {row['job']} | {cell} | {decided[cell]['max_prob']:.3f} |" in md
    assert "## How decided each search is" in md


def test_edge_agreement_ignores_the_order_of_a_nodes_two_edges():
    from darts_lite.sweep import edge_agreement

    g = Genotype.named("DARTS_V2")
    swapped = Genotype(g.normal[1::-1] + g.normal[2:], g.normal_concat, g.reduce, g.reduce_concat)
    other = Genotype(g.normal[:6] + (("sep_conv_5x5", 3), ("dil_conv_3x3", 2)), g.normal_concat, g.reduce, g.reduce_concat)
    shares = edge_agreement([g, swapped, other])
    assert shares["reduce"] == [1.0] * 8
    assert shares["normal"][:6] == [1.0] * 6 and min(shares["normal"][6:]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "overrides,message",
    [
        # valid ratio, but 5 samples per part against batch 64: refused with the counts before training
        (["data.sample_ratio=0.01"], "data.sample_ratio=0.01 and data.split=0.5 leave 5 digits training samples for the "
                                     "weights and 5 for the architecture; a step takes a batch of data.batch_size=64"),
        (["data.split=0.02"], "leave 29 digits training samples for the weights and 1409 for the architecture"),
        (["trainer=ddp", "trainer.accelerator=cpu", "data.batch_size=400"], "on each of 2 devices, 800 in all"),
        (["data=synthetic", "data.synthetic_samples=20"], "leave 10 synthetic training samples for the weights"),
        (["data.eval_batch_size=0"], "data.eval_batch_size=0: must be null (= batch_size) or an integer >= 1"),
        (["data.eval_batch_size=-5"], "data.eval_batch_size=-5: must be null"),
        (["data.flip=yes"], "data.flip='yes': must be true or false"),
        (["data=synthetic", "data.synthetic_classes=0"], "data.synthetic_classes=0: must be an integer >= 2"),
        (["data=synthetic", "data.synthetic_size=2"], "data.synthetic_size=2: must be an integer >= 4"),
        (["space.stem_multiplier=0"], "space.stem_multiplier=0: must be an integer >= 1"),
        (["space.affine=2"], "space.affine=2: must be true or false"),
        (["search.channels_last=1"], "search.channels_last=1: must be true or false"),
        (["proxy=econas", "proxy.channels_divisor=0"], "proxy.channels_divisor=0: must be an integer >= 1"),
        (["proxy=econas", "proxy.resolution_divisor=4"], "proxy.resolution_divisor=4: takes the 8 px digits images to 2 px"),
    ],
)
def test_more_bad_values_are_rejected_before_training(overrides, message):
    with pytest.raises(ConfigError) as info:
        validate_search(compose_cfg("+experiment=quickstart", *overrides))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data.sample_ratio=0.02"], "data.sample_ratio=0.02 leaves 30 digits training samples, fewer than one batch of "
                                     "data.batch_size=64"),
        (["data.eval_batch_size=0"], "data.eval_batch_size=0: must be null"),
        (["train.auxiliary=1"], "train.auxiliary=1: must be true or false"),
    ],
)
def test_more_bad_retraining_values_are_rejected_before_training(overrides, message):
    from darts_lite.config import validate_train

    with pytest.raises(ConfigError) as info:
        validate_train(compose_cfg("+experiment=train_quick", *overrides))
    assert message in str(info.value)


def test_too_small_sample_ratio_exits_with_one_message(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("+experiment=quickstart", "data.sample_ratio=0.01", f"hydra.run.dir={run}", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "data.sample_ratio=0.01" in proc.stderr and "5 digits training samples" in proc.stderr
    assert "Traceback" not in proc.stderr and not (run / "checkpoints").exists()


def test_econas_proxy_divides_the_space_channels_and_the_native_resolution():
    from darts_lite.run.build import build_datamodule, build_search_module

    cfg = compose_cfg("data=digits", "proxy=econas")
    validate_search(cfg)
    assert cfg.space.C == 16 // 2 and cfg.data.resolution == 8 // 2  # digits are 8 px: reduced, never upsampled
    assert cfg.space.layers == 8 and cfg.data.sample_ratio == 1.0  # depth and data kept
    assert cfg.data.batch_size == 256 and cfg.data.crop_padding == 0  # an eighth of 4 px: no crop
    dm = build_datamodule(cfg, bilevel=True)
    dm.setup()
    (x, _), _ = next(iter(dm.train_dataloader()))
    assert x.shape == (256, 1, 4, 4)
    net = build_search_module(cfg, dm).net
    assert net.C == 8 and net(x[:4]).shape == (4, 10)  # the supernet runs on 4 px images
    # the divisors are what sets the sizes
    other = compose_cfg("data=digits", "proxy=econas", "proxy.channels_divisor=4", "proxy.resolution_divisor=1")
    assert (other.space.C, other.data.resolution, other.data.crop_padding) == (4, 8, 1)
    # with an experiment: its own space.C wins (set after the proxy), the resolution is still halved
    quick = compose_cfg("+experiment=quickstart", "proxy=econas")
    validate_search(quick)
    assert quick.data.resolution == 4 and quick.space.C == 8


def test_gdas_composes_to_the_same_proxy_sizes():
    for experiment in ("gdas", "gdas_frc"):
        cfg = compose_cfg(f"+experiment={experiment}")
        validate_search(cfg)
        assert (cfg.space.C, cfg.space.layers, cfg.data.resolution, cfg.data.crop_padding) == (8, 8, 16, 2)
        assert (cfg.data.batch_size, cfg.data.sample_ratio, cfg.search.lr) == (256, 1.0, 0.1)
