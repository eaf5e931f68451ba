"""task=export: a retrained network (and a Once-for-All sub-network) as a torch.export program on raw images, the
same logits as the trained network on normalised ones, the run's accuracy, loadable by plain torch at any batch size,
ONNX beside it; every file it cannot export refused in one line."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest
import torch
from conftest import TINY_OFA, compose_cfg, ofa_cfg

from darts_lite._version import __version__
from darts_lite.errors import ConfigError
from darts_lite.export import TrainedNetwork, check, read_exportable, run_export
from darts_lite.run.checkpoints import RECORD_KEY

# one worker runs this module's tests, so its module fixture (trained) is built once, not once per worker
pytestmark = pytest.mark.xdist_group("export")

TINY_TRAIN = ["+experiment=train_quick", "genotype=DARTS_V2", "train.epochs=2", "train.C=4", "train.layers=3",
              "+trainer.limit_train_batches=6", "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A DARTS_V2 network at C=4 with 3 cells retrained for two short epochs on digits, as the command line runs it
    (composed and run in this process)."""
    import pytorch_lightning as pl

    from darts_lite.tasks import run_train

    run = tmp_path_factory.mktemp("export") / "train"
    pl.seed_everything(0, verbose=False)
    with contextlib.redirect_stdout(io.StringIO()):
        run_train(compose_cfg(*TINY_TRAIN, f"run_dir={run}"))
    return run


@pytest.fixture(scope="module")
def exported(trained):
    """The export of that run: (its run folder, what it printed)."""
    out = trained.parent / "exported"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_export(compose_cfg("task=export", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", f"run_dir={out}"))
    return out, printed.getvalue()


def digits_data():
    """The digits data module as the retraining built it (its test split raw, its normalisation)."""
    from darts_lite.data import ImageDataModule

    dm = ImageDataModule(name="digits", bilevel=False, seed=0)
    dm.setup()
    return dm


def test_the_program_is_the_trained_network_behind_its_normalisation_with_the_runs_accuracy(trained, exported):
    from darts_lite.train import TrainModule

    out, stdout = exported
    saved = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    module = TrainModule(**saved["hyper_parameters"])
    module.load_state_dict(saved["state_dict"])
    net = module.net.eval()
    dm = digits_data()
    program = torch.export.load(out / "model.pt2").module()
    with torch.no_grad():
        got, want = program(dm.test_x), net(dm.normalise(dm.test_x))
    assert got.shape == (len(dm.test_y), 10)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got - want).abs().max()
    # the accuracy the run measured on the test split, from the raw test images
    accuracy = (got.argmax(dim=1) == dm.test_y).double().mean().item()
    train_summary = json.loads((trained / "summary.json").read_text())
    assert accuracy == pytest.approx(train_summary["metrics"]["val/acc"], abs=1e-6)

    card = json.loads((out / "model.json").read_text())
    assert card["accuracy"]["value"] == pytest.approx(train_summary["metrics"]["val/acc"])
    assert card["accuracy"]["split"] == "test" and card["genotype"] == train_summary["genotype"]
    assert card["classes"] == [str(i) for i in range(10)]
    assert card["input"]["shape"] == [1, 8, 8] and card["input"]["dtype"] == "float32" and "0..16" in card["input"]["values"]
    assert card["normalisation"]["mean"] == pytest.approx(dm.mean.flatten().tolist())
    assert card["normalisation"]["std"] == pytest.approx(dm.std.flatten().tolist())
    assert card["versions"] == {"darts_lite": __version__, "torch": torch.__version__}
    assert any("torch.export.load('model.pt2').module()" in line for line in card["how_to_load"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["kind"] == "train" and "model.pt2" in summary["files"]
    assert (out / "config.yaml").is_file()
    assert f"Run folder: {out.resolve()}" in stdout and "Accuracy: " in stdout


def test_the_program_runs_in_plain_torch_at_any_batch_size(exported, tmp_path):
    out, _ = exported
    images = [torch.rand(n, 1, 8, 8) * 16 for n in (1, 7)]
    torch.save(images, tmp_path / "images.pt")
    script = (
        "import sys, torch\n"
        f"model = torch.export.load({str(out / 'model.pt2')!r}).module()\n"
        f"images = torch.load({str(tmp_path / 'images.pt')!r}, weights_only=True)\n"
        "with torch.no_grad():\n"
        f"    torch.save([model(x) for x in images], {str(tmp_path / 'logits.pt')!r})\n"
        "assert 'darts_lite' not in sys.modules, sorted(m for m in sys.modules if m.startswith('darts_lite'))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    program = torch.export.load(out / "model.pt2").module()
    with torch.no_grad():
        want = [program(x) for x in images]
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    logits = torch.load(tmp_path / "logits.pt", weights_only=True)
    assert [tuple(x.shape) for x in logits] == [(1, 10), (7, 10)]
    for got, expected in zip(logits, want):
        assert torch.equal(got, expected)


def test_the_onnx_file_gives_the_programs_logits(exported):
    pytest.importorskip("onnxscript")  # the onnx extra (in dev): without it no model.onnx is written
    ort = pytest.importorskip("onnxruntime")
    out, _ = exported
    assert json.loads((out / "model.json").read_text())["files"]["onnx"] == "model.onnx"
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (given,), (returned,) = session.get_inputs(), session.get_outputs()
    assert given.name == "images" and returned.name == "logits" and not isinstance(given.shape[0], int)
    program = torch.export.load(out / "model.pt2").module()
    x = digits_data().test_x
    for batch in (x[:1], x):
        got = torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])
        with torch.no_grad():
            assert torch.allclose(got, program(batch), rtol=1e-4, atol=1e-5)


def test_an_older_checkpoint_reads_its_data_again_and_without_onnx_one_line_says_how_to_get_it(
        trained, exported, tmp_path, monkeypatch, capsys):
    saved = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    del saved["ImageDataModule"]  # as checkpoints were written before the data module kept its record
    old = tmp_path / "old.ckpt"
    torch.save(saved, old)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the onnx extra were not installed
    summary = run_export(compose_cfg("task=export", f"ckpt_path={old}", f"run_dir={tmp_path / 'out'}"))
    printed = capsys.readouterr().out
    assert "Normalisation: not in the checkpoint" in printed
    (line,) = [line for line in printed.splitlines() if line.startswith("model.onnx")]
    assert 'onnxscript not installed; pip install "darts_lite[onnx]"' in line
    assert not summary["onnx"]["written"] and not (tmp_path / "out" / "model.onnx").exists()
    card, before = (json.loads((folder / "model.json").read_text()) for folder in (tmp_path / "out", exported[0]))
    assert card["normalisation"]["mean"] == pytest.approx(before["normalisation"]["mean"])
    assert card["normalisation"]["std"] == pytest.approx(before["normalisation"]["std"])
    assert card["classes"] == before["classes"] and card["input"] == before["input"]


def _with_record(saved: dict, path, **changes):
    saved = dict(saved, **{RECORD_KEY: dict(saved[RECORD_KEY], **changes)})
    torch.save(saved, path)
    return path


def test_what_cannot_be_exported_is_refused_in_one_line(trained, tmp_path):
    from darts_lite.ofa import OFANetwork
    from darts_lite.ofa.task import save_network

    ckpt = trained / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    save_network(OFANetwork(**TINY_OFA), "expand2", tmp_path / "network.pt")
    cases = {
        None: "ckpt_path=null: task=export takes a retrained network",
        tmp_path / "missing.ckpt": "missing.ckpt: no such file; task=export takes",
        tmp_path / "notes.txt": "notes.txt: not a readable checkpoint (not a torch file, a truncated one",
        tmp_path / "list.pt": "list.pt: not a checkpoint (the file holds a list)",
        _with_record(saved, tmp_path / "search.ckpt", task="search"):
            f"the checkpoint of a search, whose supernet mixes every candidate op and is not a network to deploy; retrain "
            f"the cell it found (python -m darts_lite +experiment=train genotype={tmp_path})",
        _with_record(saved, tmp_path / "phase.ckpt", task="ofa"): "a phase checkpoint of a Once-for-All run",
        _with_record(saved, tmp_path / "econas.ckpt", task="econas"): "econas.ckpt: a checkpoint of a task=econas run;",
        _with_record(saved, tmp_path / "future.ckpt", format=99): "checkpoint format 99); this darts_lite reads format",
        tmp_path / "network.pt": "network.pt: the elastic Once-for-All network (network.pt), which holds every sub-network",
    }
    cfg = compose_cfg("task=export")
    for path, message in cases.items():
        cfg.ckpt_path = None if path is None else str(path)
        with pytest.raises(ConfigError) as e:
            check(cfg)
        assert message in str(e.value) and "\n" not in str(e.value), (path, str(e.value))
    cfg.ckpt_path = str(ckpt)
    assert isinstance(check(cfg), TrainedNetwork)


def test_a_once_for_all_subnet_exports_with_the_normalisation_it_was_measured_with(tmp_path, capsys):
    from omegaconf import OmegaConf

    from darts_lite.ofa import OFANetwork
    from darts_lite.ofa.shrinking import resize
    from darts_lite.ofa.specialise import load_subnet
    from darts_lite.ofa.task import build_datamodule, run_ofa, save_network

    run = tmp_path / "ofa"
    run.mkdir()
    save_network(OFANetwork(**dict(TINY_OFA, num_classes=3)), "expand2", run / "network.pt")
    spec = ["ofa.phase=specialise", "ofa.specialise.samples=10", "ofa.specialise.population=8",
            "ofa.specialise.parents=3", "ofa.specialise.generations=2", "ofa.specialise.epochs=20", "ofa.constraint.flops=0.05"]
    cfg = ofa_cfg(run, *spec)
    run_ofa(cfg)
    subnet_file = run / "specialise" / "flops-0.05" / "subnet.pt"
    out = tmp_path / "exported"
    summary = run_export(compose_cfg("task=export", f"ckpt_path={subnet_file}", f"run_dir={out}"))
    assert summary["kind"] == "ofa"
    dm = build_datamodule(cfg)
    dm.setup()
    subnet, record = load_subnet(subnet_file)
    assert record["data"]["mean"] == pytest.approx(dm.mean.flatten().tolist())
    program = torch.export.load(out / "model.pt2").module()
    with torch.no_grad():
        got = program(dm.test_x)
        want = subnet(resize(dm.normalise(dm.test_x), record["resolution"]))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    measured = json.loads((subnet_file.parent / "subnet.json").read_text())["accuracy"]
    assert (got.argmax(dim=1) == dm.test_y).double().mean().item() == pytest.approx(measured)
    card = json.loads((out / "model.json").read_text())
    assert card["accuracy"]["value"] == pytest.approx(measured) and card["resolution"] == record["resolution"]
    assert card["input"]["shape"] == [3, 8, 8] and card["classes"] == ["0", "1", "2"]
    if summary["onnx"]["written"]:  # the resize inside, in ONNX too (checked against the program when written)
        assert summary["onnx"]["max_abs_difference"] < 1e-4
    # a subnet.pt from before it kept its data: read again as the run's config.yaml says
    old = dict(torch.load(subnet_file, weights_only=True))
    del old["data"]
    torch.save(old, subnet_file)
    with pytest.raises(ConfigError, match="no config.yaml of its Once-for-All run is two folders up"):
        read_exportable(subnet_file).data()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    again = read_exportable(subnet_file).data()
    assert again["mean"] == pytest.approx(record["data"]["mean"]) and again["std"] == pytest.approx(record["data"]["std"])

