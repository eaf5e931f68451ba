"""experiments/gpu_check.py on a machine without CUDA: the one-line exit, the case runner (time limits, failures,
a fresh worker after each), the budget, the estimate arithmetic, and a CPU dry run's report."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


gpu_check = _load()
Case = gpu_check.Case


def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [proc.stdout.strip()] and "no CUDA device visible" in proc.stdout
    assert not out.exists()  # no report, no runs


FAKE_WORKER = """
import json, os, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
job = json.load(open(args["--worker-cases"]))
def emit(**event):
    with open(args["--worker-events"], "a") as f:
        f.write(json.dumps(event) + "\\n")
for case in job["cases"]:
    what = case["spec"]["do"]
    if what == "die before start":
        os._exit(5)
    emit(event="start", name=case["name"])
    if what == "hang":
        time.sleep(600)
    if what == "die":
        os._exit(7)
    if what == "fail":
        emit(event="end", name=case["name"], status="failed", error="broke on purpose", data={"pid": os.getpid()})
        sys.exit(RESTART)
    emit(event="end", name=case["name"], status="passed", data={"pid": os.getpid(), "device": job["device"]})
"""


def _worker_cases(*behaviours, limit=30.0):
    return [Case(f"step/{i}-{b}", "step", 1.0 if b == "hang" else limit, {"do": b}) for i, b in enumerate(behaviours)]


def _fake_worker(tmp_path):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER.replace("RESTART", str(gpu_check.RESTART)))
    return [sys.executable, str(script)]


def test_worker_cases_go_on_after_a_hang_a_failure_and_a_dead_worker(tmp_path):
    cases = _worker_cases("ok", "hang", "ok", "fail", "ok", "die", "ok", "die before start", "ok")
    shown = []
    results = gpu_check.run_worker_batch(cases, gpu_check.Budget(300), _fake_worker(tmp_path), tmp_path, dict(os.environ),
                                         shown.append, {"device": "cpu", "dry_run": True})
    assert [r["name"] for r in results] == [c.name for c in cases] and shown == results
    assert [r["status"] for r in results] == ["passed", "timeout", "passed", "failed", "passed", "failed", "passed",
                                              "failed", "passed"]
    assert "still running after 1 s" in results[1]["error"]
    assert results[3]["error"] == "broke on purpose"
    assert "ended with status 7 during this case" in results[5]["error"]
    assert "ended with status 5 before this case" in results[7]["error"]
    # every case after a hang, a failure or a dead worker ran in a fresh worker; the worker got its arguments
    pids = [r["data"]["pid"] for r in results if r["status"] == "passed"]
    assert len(set(pids)) == 5 and results[0]["data"]["device"] == "cpu"
    assert gpu_check.exit_status(results) == 1 and gpu_check.exit_status([results[0], results[2]]) == 0
    assert gpu_check.exit_status([]) == 1


def test_cases_the_budget_does_not_cover_are_reported_and_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "MIN_CASE_S", 0.2)
    # the hang's own limit (30 s) is beyond the budget: the budget stops it, and the case after never starts
    cases = [Case("step/hang", "step", 30.0, {"do": "hang"}), Case("step/ok", "step", 30.0, {"do": "ok"})]
    results = gpu_check.run_worker_batch(cases, gpu_check.Budget(1.5), _fake_worker(tmp_path), tmp_path, dict(os.environ),
                                         lambda r: None, {"device": "cpu", "dry_run": True})
    assert [r["status"] for r in results] == ["out of budget", "out of budget"]
    assert results[0]["limit_s"] < 2 and "not started" in results[1]["error"]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"  # a zombie has ended
    except (FileNotFoundError, IndexError):
        return False


SPAWNS_AND_SLEEPS = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(600)
"""


def test_a_command_past_its_limit_is_stopped_with_its_children_and_the_next_case_runs(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    ctx = gpu_check.Context(runs_dir=tmp_path, env=dict(os.environ), dry_run=True, mode=gpu_check.DRY)

    def hangs(spec, deadline, ctx):
        gpu_check.run_process([sys.executable, "-c", SPAWNS_AND_SLEEPS, str(pid_file)], deadline, tmp_path / "hang.log",
                       tmp_path, ctx.env)

    def fails(spec, deadline, ctx):
        code, _ = gpu_check.run_process([sys.executable, "-c", "raise SystemExit(4)"], deadline, tmp_path / "f.log", tmp_path,
                                 ctx.env)
        raise gpu_check.CaseFailed(f"exit status {code}")

    def buggy(spec, deadline, ctx):
        return {}["no such key"]

    cases = [Case("cli/hangs", "cli", 3.0, {}, hangs), Case("cli/fails", "cli", 30.0, {}, fails),
             Case("cli/buggy", "cli", 30.0, {}, buggy), Case("cli/ok", "cli", 30.0, {}, lambda s, d, c: {"x": 1})]
    results = gpu_check.run_cases(cases, gpu_check.Budget(300), ctx, [], lambda r: None)
    assert [r["status"] for r in results] == ["timeout", "failed", "failed", "passed"]
    assert "still running after 3 s" in results[0]["error"] and results[1]["error"] == "exit status 4"
    assert "KeyError" in results[2]["error"] and results[3]["data"] == {"x": 1}
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the timed-out command's own child was left running"


def test_estimates_follow_the_experiment_configs():
    facts = {f["experiment"]: f for f in (gpu_check.experiment_facts(e) for e in gpu_check.EXPERIMENTS)}
    # CIFAR-10: 25k images per part; batch 256 (proxy) and 64 (paper); the configs' epochs
    assert (facts["gdas"]["size"], facts["gdas"]["algorithm"], facts["gdas"]["steps_per_epoch"], facts["gdas"]["epochs"]) \
        == ("proxy", "gdas", 97, 250)
    assert (facts["darts"]["size"], facts["darts"]["algorithm"], facts["darts"]["steps_per_epoch"]) == ("paper", "darts1", 390)
    assert facts["darts_v2"]["algorithm"] == "darts2" and facts["darts_v2"]["epochs"] == 50
    assert facts["darts"]["val_images"] == 25000 and facts["darts"]["precision"] == "32-true"

    e = gpu_check.estimate_search(step_s=0.5, fwd_bwd_s=0.3, batch=64, steps_per_epoch=390, epochs=50, val_images=25000)
    assert e["train_s"] == pytest.approx(0.5 * 390 * 50)
    assert e["val_s"] == pytest.approx(0.1 / 64 * 25000 * 50)  # forward ~ a third of forward+backward, per image
    assert e["total_s"] == pytest.approx(e["train_s"] + e["val_s"]) and e["gpu_hours"] == pytest.approx(e["total_s"] / 3600)

    def step(name, step_s, status="passed"):
        return {"name": name, "section": "step", "status": status, "data": {"step_s": step_s, "fwd_bwd_s": step_s / 2}}

    results = [step("step/paper/darts1/32-true/cl", 0.4), step("step/paper/darts1/bf16-mixed/cl", 0.2),
               step("step/paper/darts1/16-mixed/cl", 0.1, "failed"), step("step/proxy/gdas/32-true/cl", 0.05),
               step("step/paper/darts2/32-true/cl", 1.0, "timeout")]
    rows = gpu_check.estimates(results, [facts["gdas"], facts["darts"], facts["darts_v2"]])
    by = {(r["experiment"], r["setting"]): r for r in rows}
    # gdas: the configured setting is the fastest measured, one row; darts: configured and the faster bf16 row
    assert set(by) == {("gdas", "as configured"), ("darts", "as configured"), ("darts", "fastest measured"),
                       ("darts_v2", "as configured"), ("darts_v2", "fastest measured")}
    assert by["darts", "fastest measured"]["case"] == "step/paper/darts1/bf16-mixed/cl"  # a failed case is no candidate
    assert by["darts", "as configured"]["train_s"] == pytest.approx(0.4 * 390 * 50)
    assert by["gdas", "as configured"]["total_s"] == pytest.approx(0.05 * 97 * 250 + 0.025 / 3 / 256 * 25000 * 250)
    assert "missing" in by["darts_v2", "as configured"] and "train_s" not in by["darts_v2", "fastest measured"]


def test_cpu_dry_run_writes_a_marked_report_and_a_failing_case_fails_the_run(tmp_path, monkeypatch):
    """The real machinery at tiny sizes: two search-step cases in the worker, the kill-and-resume case through
    the command line, and one case that fails on purpose: reported, the others unaffected, exit status 1."""
    def broken(spec, deadline, ctx):
        raise gpu_check.CaseFailed("broken on purpose")

    real_plan = gpu_check.plan
    monkeypatch.setattr(gpu_check, "plan", lambda *a: [*real_plan(*a), Case("cli/broken", "cli", 30.0, {}, broken)])
    out, runs = tmp_path / "out", tmp_path / "runs"
    only = ("step/paper/darts1/32-true/cl,step/proxy/gdas/bf16-mixed/cl,step/paper/darts1_cells/32-true/cl,"
            "cli/search-drnas_progressive,cli/resume-gdas-proxy,cli/broken")
    code = gpu_check.main(["--cpu-dry-run", "--only", only, "--out", str(out), "--runs-dir", str(runs)])
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check_cpu_dryrun.json", "gpu_check_cpu_dryrun.md"]
    report = json.loads((out / "gpu_check_cpu_dryrun.json").read_text())
    assert report["kind"] == "cpu-dry-run" and "NOT GPU FIGURES" in report["note"]
    cases = {r["name"]: r for r in report["cases"]}
    assert list(cases) == only.split(",")
    assert {n: r["status"] for n, r in cases.items()} == {n: "passed" for n in cases} | {"cli/broken": "failed"}
    assert report["summary"]["counts"] == {"passed": 5, "failed": 1, "timeout": 0, "out of budget": 0}
    assert cases["cli/search-drnas_progressive"]["data"]["progressive_stage"] == 1
    assert report["summary"]["exit_status"] == 1 and report["runs_dir"] == str(runs) and runs.is_dir()

    for name in ("step/paper/darts1/32-true/cl", "step/proxy/gdas/bf16-mixed/cl"):
        d = cases[name]["data"]
        assert d["step_s"] > 0 and d["fwd_bwd_s"] > 0 and d["steps_timed"] == gpu_check.DRY.steps
        assert d["peak_step_mib"] is None and d["data_device"] == "cpu"  # no GPU memory to report on a CPU
    # a memory mode ran as such: its switch on the supernet, not on the plain step's
    modes = [(cases[name]["data"]["checkpoint_cells"], cases[name]["data"]["partial_channels"])
             for name in ("step/paper/darts1/32-true/cl", "step/paper/darts1_cells/32-true/cl")]
    assert modes == [(False, 1), (True, 1)]
    resume = cases["cli/resume-gdas-proxy"]["data"]
    assert resume["alpha_max_abs_diff"] == 0 and resume["tolerance"] == 0 and resume["same_genotype"]
    assert 1 <= resume["killed_after_epochs"] < resume["epochs"] == 3
    assert (runs / "resume-gdas-proxy-killed" / "genotype.json").is_file()

    darts = next(e for e in report["estimates"] if e["experiment"] == "darts" and e["setting"] == "as configured")
    step_s = cases["step/paper/darts1/32-true/cl"]["data"]["step_s"]
    assert darts["case"] == "step/paper/darts1/32-true/cl" and darts["train_s"] == pytest.approx(step_s * 390 * 50)

    md = (out / "gpu_check_cpu_dryrun.md").read_text()
    assert md.startswith("# GPU check: CPU DRY RUN (placeholder, no GPU figures)") and gpu_check.DRY_NOTE in md
    assert "| paper (C=4, 3 cells, batch 8, 8 px) | DARTS 1st order | 32-true | channels_last | no |" in md
    assert "| paper (C=4, 3 cells, batch 8, 8 px) | DARTS 1st order, checkpointed cells | 32-true |" in md
    assert "killed after" in md and "- **cli/broken**: failed: broken on purpose" in md
    assert "## Estimated full searches on this CPU (placeholder)" in md

    # the same report as a GPU run renders it: named after the device, with no dry-run marker
    report["kind"], report["note"] = "gpu", None
    report["machine"].update(devices=[{"index": 0, "name": "Some GPU 80GB", "capability": "9.0", "memory_gib": 80.0,
                                       "multiprocessors": 132}], driver="1.2", cudnn=1, nccl="2", bf16_supported=True)
    gpu_md = gpu_check.markdown(report)
    assert gpu_md.startswith("# GPU check: Some GPU 80GB\n") and "DRY RUN" not in gpu_md and "placeholder" not in gpu_md
    assert "| driver | 1.2 |" in gpu_md and "## Estimated full searches on this GPU" in gpu_md
    assert gpu_check.report_name(report["machine"], dry_run=False) == "gpu_Some_GPU_80GB"


def test_the_memory_modes_are_measured_at_the_paper_size_beside_the_plain_step():
    for quick, precisions in ((False, {"32-true", "bf16-mixed"}), (True, {"32-true"})):
        eager, compiled = gpu_check.step_matrix(quick)
        for algo in ("darts1_plain", "darts1_cells", "pc_darts"):
            cases = [c for c in eager + compiled if c[1] == algo]
            assert {c[2] for c in cases} == precisions and {(c[0], c[3], c[4]) for c in cases} == {("paper", True, False)}
            assert ("paper", "darts1", "32-true", True, False) in eager  # the plain step they are compared with
    names = [c.name for c in gpu_check.plan(gpu_check.DRY, False, True, 1, gpu_check.DRY_SIZES)]
    assert "step/paper/darts1_cells/bf16-mixed/cl" in names and not any("proxy/pc_darts" in n for n in names)
