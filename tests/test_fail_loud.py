"""Studies and evolutions fail fast and loud: the data is prepared once, in the driver, before any evaluation is
sent; a run whose evaluations fail stops with a non-zero exit code and the failures grouped by cause; fewer failures
are listed and the run goes on; a rerun with resume=true retries only what failed. Tiny networks on generated data."""

import csv
import dataclasses
import hashlib
import json
import os
import random
import threading
import time

import pytest
from conftest import TINY_ECONAS, compose_cfg, fake_cifar10, run_cli

from darts_lite import data as data_mod
from darts_lite.econas import build
from darts_lite.econas import evaluator as evaluator_module
from darts_lite.econas.archive import Archive
from darts_lite.econas.evaluator import Evaluator, Request
from darts_lite.econas.executor import Executor, worker_exception_line
from darts_lite.econas.settings import Base, resolve
from darts_lite.errors import RunFailed
from darts_lite.spaces import darts

STUDY = ["+experiment=proxy_study_quick", *TINY_ECONAS, "study.architectures=4", "study.reference=c0r0s0e2",
         "study.proxies=[c2r0s0e1]", "study.bootstrap=20", "study.repeat=false"]
EVOLUTION = ["+experiment=econas_quick", *TINY_ECONAS, "setting.name=c0r0s0e3", "evolution.initial=3",
             "evolution.promote=[2,1]", "evolution.parents=[1,1,1]", "evolution.tournament=2", "evolution.top=2",
             "evolution.cycles=1"]

# a training module that cannot train: the plug-in a user's broken recipe stands for
DIVERGING = '''
from darts_lite.train import TrainModule


class Diverging(TrainModule):
    def training_step(self, batch, batch_idx):
        raise FloatingPointError("the training loss became nan at epoch 0")
'''


# ---- the data: prepared once, before anything is sent ----------------------------------------------------------
@pytest.mark.parametrize("experiment", [STUDY, EVOLUTION], ids=["study", "evolution"])
def test_without_its_dataset_a_run_stops_before_sending_anything(tmp_path, experiment):
    archive = tmp_path / "archive.sqlite"
    with Archive(archive) as a:  # an archive of earlier work, which the failed start must leave as it was
        a.save_state("earlier", {"cycle": 3})
    before = archive.read_bytes()
    r = run_cli(*experiment, "data=cifar10", f"data.root={tmp_path / 'no_cifar'}", "data.download=false",
                f"archive={archive}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    # the one line a search gives: the file, its md5 and the folder to put it in
    assert f"cifar10 is not in {tmp_path / 'no_cifar'}" in r.stderr and "c32a1d4ab5d03f1284b67883e8d87530" in r.stderr
    assert "Traceback" not in r.stderr and " to run (" not in r.stdout
    assert archive.read_bytes() == before and not (tmp_path / "evaluations").exists()
    assert not (tmp_path / "no_cifar").exists() and not (tmp_path / "run" / "summary.json").exists()


def test_once_for_all_without_its_dataset_stops_before_its_run_folder_is_written(tmp_path):
    r = run_cli("+experiment=ofa_quick", "data=cifar10", f"data.root={tmp_path / 'no_cifar'}", "data.download=false",
                f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and f"cifar10 is not in {tmp_path / 'no_cifar'}" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "no_cifar").exists()


def test_the_driver_downloads_once_and_hands_the_workers_a_prepared_folder(tmp_path, monkeypatch):
    served = tmp_path / "served" / "cifar-10-binary.tar.gz"
    served.parent.mkdir()
    fake_cifar10(served)
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    monkeypatch.setitem(data_mod.ARCHIVES, "cifar10",
                        dataclasses.replace(data_mod.ARCHIVES["cifar10"], url=served.as_uri(), md5=md5))
    downloads = []
    real = data_mod._download

    def slow_download(a, root):
        downloads.append(root)
        time.sleep(0.5)  # long enough for the second preparer to arrive while the first one downloads
        return real(a, root)

    monkeypatch.setattr(data_mod, "_download", slow_download)
    root = tmp_path / "data"
    # two drivers preparing the same folder at once: one downloads, the other waits for it and reads its file
    threads = [threading.Thread(target=data_mod.prepare_dataset, args=("cifar10", root)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert downloads == [root] and (root / "cifar10.pt").is_file()
    # the driver's data node for the workers: the absolute folder, no download
    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg(*STUDY, "data=cifar10", "data.root=data")
    node = build.prepare_data(cfg)
    assert node["root"] == str(root.resolve()) and node["download"] is False and downloads == [root]
    # a worker that finds the folder empty says so instead of downloading
    (root / "cifar10.pt").unlink()
    for f in (root / "cifar-10-binary.tar.gz", *(root / "cifar-10-batches-bin").iterdir()):
        f.unlink()
    with pytest.raises(data_mod.DatasetUnavailable, match="data.download is false"):
        data_mod.load_dataset("cifar10", node["root"], node["download"])
    assert downloads == [root]


# ---- failed evaluations -----------------------------------------------------------------------------------------
def test_a_study_whose_evaluations_all_fail_exits_1_with_the_causes(tmp_path):
    (tmp_path / "diverging.py").write_text(DIVERGING)
    run = tmp_path / "run"
    r = run_cli(*STUDY, "train._target_=diverging.Diverging", f"hydra.run.dir={run}", cwd=tmp_path, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    # it stopped once more than half of the first setting's 4 evaluations had failed: the 4th was never sent
    assert "c0r0s0e2: 3 of 4 evaluations failed (more than evaluation.max_failed_share=0.5 of them, 1 not run)" in r.stderr
    assert "3 x FloatingPointError: the training loss became nan at epoch 0" in r.stderr
    assert str(run / "failures.csv") in r.stderr and "resume=true" in r.stderr and "Traceback" not in r.stderr
    with open(run / "failures.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {row["setting"] for row in rows} == {"c0r0s0e2"}
    assert all("training_step" in row["error"] for row in rows)  # the whole error, with its traceback
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failures"]["failed"] == summary["failures"]["attempted"] == 3
    failed = Archive(run / "archive.sqlite").rows(status="failed")
    assert len(failed) == 3 and not (run / "proxy_study.csv").exists()


def test_a_partly_failed_study_finishes_lists_its_failures_and_a_rerun_retries_only_them(tmp_path, monkeypatch, capsys):
    from darts_lite.econas.study import run_study

    cfg = compose_cfg(*STUDY, f"run_dir={tmp_path / 'run'}")
    real = evaluator_module.run_evaluation
    doomed = []

    def flaky(job):  # the second architecture fails under every setting: 1 of 4 per setting, below the share
        genotypes = (tmp_path / "run" / "architectures.txt").read_text().splitlines()
        if job.genotype == genotypes[1]:
            doomed.append(job.setting["name"])
            raise RuntimeError(f"CUDA error: an illegal memory access was encountered ({job.setting['name']})")
        return real(job)

    monkeypatch.setattr(evaluator_module, "run_evaluation", flaky)
    summary = run_study(cfg)
    out = capsys.readouterr().out
    assert doomed == ["c0r0s0e2", "c2r0s0e1"] and summary["status"] == "done"
    assert summary["failures"]["failed"] == 2 and summary["failures"]["attempted"] == 8
    assert [c["count"] for c in summary["failures"]["causes"]] == [1, 1]  # two distinct first lines
    assert "Some evaluations failed" in out and "1 x RuntimeError: CUDA error" in out
    assert summary["table"][0]["architectures"] == 3  # the failed architecture is left out of the correlation
    assert len(list(csv.DictReader(open(tmp_path / "run" / "failures.csv")))) == 2
    # the cause fixed, the rerun trains the two failed evaluations only and keeps the failed rows beside them
    monkeypatch.setattr(evaluator_module, "run_evaluation", real)
    summary = run_study(compose_cfg(*STUDY, f"run_dir={tmp_path / 'run'}", "resume=true"))
    out = capsys.readouterr().out
    assert out.count("1 evaluation to run (3 found in the archive)") == 2 and "Some evaluations failed" not in out
    assert summary["failures"] == {"failed": 0, "attempted": 2, "causes": []}
    assert summary["table"][0]["architectures"] == 4 and not (tmp_path / "run" / "failures.csv").exists()
    archive = Archive(tmp_path / "run" / "archive.sqlite")
    assert len(archive.rows(status="done")) == 8 and len(archive.rows(status="failed")) == 2


def test_an_evolution_stopped_by_failures_resumes_its_cycle_to_the_uninterrupted_result(tmp_path, monkeypatch):
    from darts_lite.econas.evolution import run_evolution

    straight = run_evolution(compose_cfg(*EVOLUTION, f"run_dir={tmp_path / 'straight'}"))
    real = evaluator_module.run_evaluation
    calls = []

    def broken_after_cycle_0(job):  # cycle 0 trains 3 models; every later evaluation fails
        calls.append(job.genotype)
        if len(calls) > 3:
            raise OSError("No space left on device")
        return real(job)

    monkeypatch.setattr(evaluator_module, "run_evaluation", broken_after_cycle_0)
    cfg = compose_cfg(*EVOLUTION, f"run_dir={tmp_path / 'run'}")
    with pytest.raises(RunFailed) as e:
        run_evolution(cfg)
    # cycle 1 sends 5 evaluations; the third failure is more than half of them: the last 2 are not sent
    assert "cycle 1: 3 of 5 evaluations failed" in str(e.value) and len(calls) == 6
    assert "3 x OSError: No space left on device" in str(e.value)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failures"]["failed"] == 3
    archive = Archive(tmp_path / "run" / "archive.sqlite")
    assert archive.load_state("evolution/hierarchical/seed0")["search"]["cycle"] == 1  # the failed cycle not saved
    archive.close()
    monkeypatch.setattr(evaluator_module, "run_evaluation", real)
    resumed = run_evolution(compose_cfg(*EVOLUTION, f"run_dir={tmp_path / 'run'}", "resume=true"))
    assert resumed["top"] == straight["top"] and resumed["evaluations"] == straight["evaluations"]
    done = Archive(tmp_path / "run" / "archive.sqlite").rows(status="done")
    assert sorted(r["epochs"] for r in done) == [1] * 6 + [2] * 2  # nothing trained twice
    assert resumed["failures"] == {"failed": 0, "attempted": 5, "causes": []}


def test_a_batch_stops_as_soon_as_its_failures_pass_the_share(tmp_path, monkeypatch):
    setting = resolve("c0r0s0e1", Base(4, 3, 8, (64,) * 4, 16, 0.05, "synthetic"))
    genotypes = [darts.sample(random.Random(s)) for s in range(6)]
    sent = []

    def failing(job):
        sent.append(job.genotype)
        raise ValueError(f"bad {len(sent)}")

    monkeypatch.setattr(evaluator_module, "run_evaluation", failing)
    for share, expected in ((0.5, 4), (0.0, 1), (1.0, 6)):  # > 3 of 6, > 0 of 6, all 6
        sent.clear()
        ev = Evaluator(Archive(tmp_path / f"{share}.sqlite"), Executor("inline"), data={}, train={}, seed=0,
                       folder=tmp_path / "evaluations", max_failed_share=share, out=open(os.devnull, "w"))
        with pytest.raises(RunFailed, match=f"{expected} of 6 evaluations failed"):
            ev.evaluate([Request(g, setting, 1) for g in genotypes])
        assert len(sent) == expected == len(ev.failures) == len(ev.archive.rows(status="failed"))
        assert ev.failures.summary().count(" x ValueError: bad") == min(expected, 5)  # the five most frequent causes


def test_the_worker_s_own_exception_is_the_cause_of_a_failed_cluster_job():
    text = ("Job (task=0) failed during processing with trace:\n----------------------\n"
            "Traceback (most recent call last):\n  File \"x.py\", line 3, in f\n    raise KeyError(1)\nKeyError: 1\n\n"
            "During handling of the above exception, another exception occurred:\n\n"
            "Traceback (most recent call last):\n  File \"y.py\", line 9, in run\n    load()\n"
            "darts_lite.errors.DatasetUnavailable: cifar10 is not in /data and data.download is false\n"
            "----------------------\nYou can check full logs with 'job.stderr(0)'")
    assert worker_exception_line(text) == ("darts_lite.errors.DatasetUnavailable: cifar10 is not in /data and "
                                           "data.download is false")
    assert worker_exception_line("Job 12 has not produced any output (state: OUT_OF_MEMORY)") is None


# ---- sweeps: the same rule for their jobs ------------------------------------------------------------------------
def _sweep(tmp_path, errors):
    """A sweep folder whose jobs ended with these errors (None: done; "killed": no summary.json)."""
    from omegaconf import OmegaConf

    for i, error in enumerate(errors):
        job = tmp_path / str(i)
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create([f"seed={i}"]), job / ".hydra" / "overrides.yaml")
        if error != "killed":
            summary = {"task": "search", "status": "done"} if error is None else {"task": "search", "status": "failed",
                                                                                  "error": error}
            (job / "summary.json").write_text(json.dumps(summary))
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})


@pytest.mark.parametrize("share,errors,code", [
    (0.0, [None, "DatasetUnavailable: cifar10 is not in /d\nmore", None], 1),  # the default: any failed job
    (0.5, [None, "DatasetUnavailable: cifar10 is not in /d\nmore", None, "killed"], 0),  # 2 of 4: not more than half
    (0.5, ["RunFailed: cycle 0: 3 of 4 evaluations failed", None, "killed"], 1),  # 2 of 3
    (1.0, ["ConfigError: a", "ConfigError: a"], 1),  # all of them
])
def test_a_sweep_groups_its_failed_jobs_by_cause_and_exits_by_the_share(tmp_path, capsys, share, errors, code):
    from darts_lite.sweep import SweepSummary, write_job_failure

    config = _sweep(tmp_path, errors)
    callback = SweepSummary(max_failed_share=share)
    if code:
        with pytest.raises(SystemExit) as e:
            callback.on_multirun_end(config)
        assert e.value.code == code
    else:
        callback.on_multirun_end(config)
    err = capsys.readouterr().err
    failed = [e for e in errors if e is not None]
    assert f"{len(failed)} of {len(errors)} jobs failed or did not finish" in err
    for cause in {e.splitlines()[0] if e != "killed" else "no summary.json: killed" for e in failed}:
        count = sum(1 for e in failed if (e.splitlines()[0] if e != "killed" else "no summary.json: killed") == cause)
        assert f"  {count} x {cause}" in err
    assert ("max_failed_share" in err) == (code == 0)
    # a failed study's own summary (its failures by cause) survives the sweep's record of the failure
    job = tmp_path / "0"
    (job / "summary.json").write_text(json.dumps({"status": "failed", "failures": {"failed": 3}}))
    write_job_failure(job, "proxy_study", RunFailed("cycle 0: 3 of 4 evaluations failed"))
    record = json.loads((job / "summary.json").read_text())
    assert record["failures"] == {"failed": 3} and record["error"].startswith("RunFailed: cycle 0")


def test_a_failed_local_worker_is_reported_by_its_own_exception(tmp_path):
    import functools

    executor = Executor("local", folder=tmp_path / "submitit", max_parallel=1, poll_s=0.2, timeout_min=5)
    read = functools.partial(data_mod.load_dataset, "cifar10", download=False)
    (index, result, error), = executor.map(read, [str(tmp_path / "no_cifar")])
    assert result is None and error.startswith("darts_lite.errors.DatasetUnavailable: cifar10 is not in ")
    assert "(in the worker) FailedJobError" in error.splitlines()[1]
    assert evaluator_module.cause(error).endswith(f"put cifar-10-binary.tar.gz in {tmp_path / 'no_cifar'}")
