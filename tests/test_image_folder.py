"""Images kept one sub-folder per class (data=folder, data=imagenet): the scan, the two ways of reading (held in
memory, streamed by worker processes: the same batches), the crops and colour jitter, every bad input as one line,
and a search and an ImageNet-recipe retraining from the command line on generated folders."""

from __future__ import annotations

import colorsys
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from darts_lite import image_folder as folders
from darts_lite.data import DatasetUnavailable, ImageDataModule
from darts_lite.errors import ConfigError


def make_folder(root: Path, classes=("cat", "dog", "owl"), per_class=12, size=(12, 12), mode="RGB", layout="train_test",
                suffix=".png", seed=0, sizes=None) -> Path:
    """Generated images whose class is their dominant colour channel (learnable): ``layout`` "train_test" (a
    quarter of each class in test/), "train_val", "train_only" or "flat" (class folders in root)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        for i in range(per_class):
            held_out = i >= per_class * 3 // 4
            part = {"train_test": "test" if held_out else "train", "train_val": "val" if held_out else "train",
                    "train_only": "train", "flat": ""}[layout]
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            w, h = sizes[i % len(sizes)] if sizes else size
            a = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
            a[:, :, c % 3] += 150
            image = Image.fromarray(a)
            image.convert(mode).save(folder / f"{name}_{i}{suffix}")
    return root


def module(root, **kw) -> ImageDataModule:
    kw = {"batch_size": 4, "eval_batch_size": 5, "workers": 0, **kw}
    dm = ImageDataModule(name="folder", root=str(root), **kw)
    dm.setup()
    return dm


# ---- the scan ----------------------------------------------------------------------------------------------------
def test_layouts_classes_and_the_fixed_split(tmp_path):
    f = folders.scan_image_folder(make_folder(tmp_path / "a"))
    assert f.classes == ("cat", "dog", "owl") and (len(f.train), len(f.test)) == (27, 9)
    assert f.channels == 3 and f.native == 12 and f.layout == "train/ and test/"
    assert all(Path(p).parent.name == f.classes[y] for p, y in zip(f.train.paths, f.train.labels.tolist()))
    f = folders.scan_image_folder(make_folder(tmp_path / "v", layout="train_val"))
    assert f.layout == "train/ and val/" and len(f.test) == 9
    for layout in ("flat", "train_only"):
        f = folders.scan_image_folder(make_folder(tmp_path / layout, layout=layout, per_class=10), test_share=0.3)
        # a fixed 30% of each class: the same files every time, whatever the run's seed
        assert torch.bincount(f.test.labels).tolist() == [3, 3, 3] and len(f.train) == 21
        assert folders.scan_image_folder(tmp_path / layout, test_share=0.3).test.paths == f.test.paths
        assert not set(f.test.paths) & set(f.train.paths)


def test_grayscale_only_when_every_image_is(tmp_path):
    assert folders.scan_image_folder(make_folder(tmp_path / "g", mode="L")).channels == 1
    root = make_folder(tmp_path / "m", mode="L")
    Image.new("RGB", (12, 12), (200, 10, 10)).save(root / "train" / "cat" / "colour.png")
    assert folders.scan_image_folder(root).channels == 3
    dm = module(tmp_path / "g")
    assert dm.in_channels == 1 and dm.train_x.shape[1:] == (1, 12, 12) and dm.train_x.dtype == torch.uint8


def test_resolution_resizes_mixed_sizes_and_the_classes_reach_the_checkpoint_state(tmp_path):
    root = make_folder(tmp_path / "mixed", sizes=[(20, 14), (9, 9), (30, 40)])
    dm = module(root, resolution=16)
    assert dm.image_size == 16 and dm.train_x.shape[1:] == (3, 16, 16) and dm.test_x.shape[1:] == (3, 16, 16)
    state = dm.state_dict()
    assert state["classes"] == ["cat", "dog", "owl"] and state["image_size"] == 16 and state["in_channels"] == 3
    assert torch.allclose(torch.tensor(state["mean"]), dm.train_x.float().mean(dim=(0, 2, 3)))
    given = module(root, resolution=16, mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0])
    assert given.mean.flatten().tolist() == [1.0, 2.0, 3.0] and given.std.flatten().tolist() == [4.0, 5.0, 6.0]


def test_a_folder_larger_than_the_memory_limit_streams(tmp_path, caplog):
    root = make_folder(tmp_path / "f")  # 36 images: 1.7 MiB decoded at 128 px, 15 KiB at 12 px
    with caplog.at_level("INFO", logger="darts_lite"):
        assert module(root, resolution=128, memory_limit_mb=1).stream
    assert "streamed from disk" in caplog.text and "(2 MiB decoded > data.memory_limit_mb=1)" in caplog.text
    assert not module(root, memory_limit_mb=1).stream and module(root, stream=True).stream


# ---- bad input: one line each, before training -------------------------------------------------------------------
def test_every_bad_folder_is_one_clear_line(tmp_path):
    def problem(root, **kw):
        with pytest.raises((DatasetUnavailable, ConfigError)) as e:
            module(root, **kw)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "does not exist" in problem(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in problem(tmp_path / "file")
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("L", (8, 8)).save(loose / "a.png")
    assert "no class sub-folders (1 images lie in it directly" in problem(loose)
    empty = make_folder(tmp_path / "empty")
    (empty / "train" / "zebra").mkdir()
    assert "class folder" in problem(empty) and "zebra has no images" in problem(empty)
    broken = make_folder(tmp_path / "broken")
    (broken / "train" / "dog" / "broken.png").write_bytes(b"not an image at all")
    message = problem(broken)
    assert "broken.png cannot be read as an image" in message and "delete or replace it" in message
    mixed = make_folder(tmp_path / "sizes", sizes=[(20, 14), (9, 9)])
    message = problem(mixed)
    assert message.startswith("data.resolution=null: the images differ in size (2 sizes, e.g. 20x14") and "9x9" in message
    assert "not square" in problem(make_folder(tmp_path / "wide", size=(16, 12)))
    unknown = make_folder(tmp_path / "unknown")
    make_folder(unknown / "test", classes=("yak",), per_class=2, layout="flat")
    assert "class folders the training images do not: yak" in problem(unknown)
    assert "give both" in problem(make_folder(tmp_path / "stats"), mean=[0.0, 0.0, 0.0])
    assert "give 1 channels; the images have 3" in problem(tmp_path / "stats", mean=[0.0], std=[1.0])
    assert "needs data.stream=true" in problem(tmp_path / "stats", stream=False, random_resized_crop=True)
    with pytest.raises(ConfigError, match="for images read from a folder"):
        ImageDataModule(name="digits", stream=True)


def test_an_image_that_breaks_while_streaming_stops_the_run_with_its_name(tmp_path):
    """Streaming with known channels and side reads no headers up front: a file that is no image is found when its
    batch is decoded, and named in one line, not as a worker's traceback."""
    root = make_folder(tmp_path / "f")
    (root / "test" / "owl" / "zz.png").write_bytes(b"junk")
    dm = module(root, channels=3, resolution=12, stream=True, workers=1, mean=[0.0] * 3, std=[1.0] * 3)
    with pytest.raises(DatasetUnavailable) as e:
        list(dm.test_dataloader())
    assert "zz.png cannot be read as an image" in str(e.value) and "Traceback" not in str(e.value)


# ---- reading: in memory and streamed give the same batches -----------------------------------------------------
@pytest.mark.parametrize("bilevel", [True, False])
def test_streamed_batches_equal_the_in_memory_ones(tmp_path, bilevel):
    root = make_folder(tmp_path / "f", sizes=[(14, 10), (12, 12)])
    kw = dict(resolution=12, bilevel=bilevel, crop_padding=2, flip=True, color_jitter=0.3, hue_jitter=0.1,
              cutout=0 if bilevel else 4, seed=3)
    memory, streamed = module(root, stream=False, **kw), module(root, stream=True, workers=2, **kw)
    assert torch.allclose(memory.mean, streamed.mean) and torch.allclose(memory.std, streamed.std)
    for dm_a, dm_b in ((memory, streamed),):
        for epoch in range(2):
            dm_a.epoch = dm_b.epoch = epoch
            torch.manual_seed(epoch)
            a = list(dm_a.train_dataloader())
            torch.manual_seed(epoch)
            b = list(dm_b.train_dataloader())
            assert len(a) == len(b) == len(memory.train_dataloader()) > 0
            for step_a, step_b in zip(a, b):
                for t_a, t_b in zip(torch.utils._pytree.tree_leaves(step_a), torch.utils._pytree.tree_leaves(step_b)):
                    assert torch.allclose(t_a, t_b, atol=1e-5)
        for which in ("val", "test"):
            a = list(getattr(memory, f"{which}_dataloader")())
            b = list(getattr(streamed, f"{which}_dataloader")())
            assert len(a) == len(b)
            for (xa, ya), (xb, yb) in zip(a, b):
                assert torch.equal(ya, yb) and torch.allclose(xa, xb, atol=1e-5)


def test_random_resized_crops_are_inside_the_image_and_replayed_from_seed_epoch_and_index():
    rng = np.random.default_rng(0)
    for _ in range(300):
        w, h = (int(v) for v in rng.integers(5, 400, 2))
        seed = [int(rng.integers(1000)), int(rng.integers(5)), int(rng.integers(10**6))]
        box = folders.random_resized_box(w, h, np.random.default_rng(seed))
        assert box == folders.random_resized_box(w, h, np.random.default_rng(seed))
        left, top, right, bottom = box
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        bw, bh = right - left, bottom - top
        if (bw, bh) != (w, h) and not (bw == w or bh == h):  # not the fallback: area share and aspect as drawn
            assert 0.08 * w * h * 0.8 <= bw * bh <= w * h and 3 / 4 * 0.8 <= bw / bh <= 4 / 3 * 1.25
    # ImageNet's test crop: resize to 256, keep the central 224 = the central 0.875 of the shorter side
    assert folders.centre_box(500, 375, 0.875) == pytest.approx((85.9375, 23.4375, 414.0625, 351.5625))


def test_streamed_random_crops_repeat_for_the_same_epoch_and_change_with_it(tmp_path):
    root = make_folder(tmp_path / "f", sizes=[(40, 30), (36, 36)])
    dm = module(root, resolution=16, stream=True, random_resized_crop=True, workers=0, bilevel=False)

    def first_batch(epoch):
        dm.epoch = epoch
        torch.manual_seed(0)
        return next(iter(dm.train_dataloader()))[0]

    assert torch.equal(first_batch(0), first_batch(0)) and not torch.equal(first_batch(0), first_batch(1))


def test_colour_jitter_hsv_against_colorsys_and_its_ranges():
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    hsv = folders._rgb_to_hsv(x)
    for b, i, j in ((0, 0, 0), (1, 4, 6), (0, 2, 3), (1, 1, 5)):
        expected = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
        assert torch.allclose(hsv[b, :, i, j], torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(folders._hsv_to_rgb(hsv), x, atol=1e-12)
    images = torch.rand(64, 3, 4, 4) * 255
    torch.manual_seed(0)
    out = folders.color_jitter(images, 0.4, 0.2)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 255 and not torch.allclose(out, images)
    assert torch.equal(folders.color_jitter(images, 0.0, 0.0), images)
    # brightness alone (contrast and saturation factors of a constant grey image change nothing): within 1 +- 0.4
    grey = torch.full((200, 3, 2, 2), 100.0)
    scale = folders.color_jitter(grey, 0.4, 0.0)[:, 0, 0, 0] / 100
    assert scale.min() >= 0.6 - 1e-6 and scale.max() <= 1.4 + 1e-6 and scale.std() > 0.15


# ---- from the command line -----------------------------------------------------------------------------------
def test_search_on_a_folder(tmp_path, caplog):
    """A search on a generated folder, as `python -m darts_lite +experiment=quickstart data=folder data.root=...`
    runs it (composed and run in this process: the command line's own path is tested with the ImageNet recipe)."""
    from conftest import compose_cfg

    from darts_lite.tasks import run_search

    root = make_folder(tmp_path / "imgs", mode="L", layout="flat", per_class=16, size=(10, 10))
    cfg = compose_cfg("+experiment=quickstart", "data=folder", f"data.root={root}", "data.batch_size=8", "space.C=4",
                      "space.layers=3", "search.epochs=1", "search.warmup_epochs=0", "trainer.enable_progress_bar=false",
                      "logger=csv", f"run_dir={tmp_path / 'run'}")
    with caplog.at_level("INFO", logger="darts_lite"):
        summary = run_search(cfg)
    assert "3 classes, 39 training and 9 test images (one folder: a fixed 20% of each class held out" in caplog.text
    assert "grayscale, read at 10x10, held in memory" in caplog.text
    assert summary["classes"] == ["cat", "dog", "owl"] and summary["genotype"].startswith("Genotype(")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["classes"] == ["cat", "dog", "owl"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["ImageDataModule"]
    assert state["classes"] == ["cat", "dog", "owl"] and state["in_channels"] == 1 and state["image_size"] == 10
    assert state["dtype"] == "uint8"


def test_imagenet_recipe_on_a_tiny_ilsvrc_folder(tmp_path):
    """+experiment=imagenet_mobile on the standard layout (train/<wnid>/, val/<wnid>/, JPEGs of many sizes), shrunk:
    streamed by a worker process with the random resized crop and colour jitter, the step schedule (lr x 0.97 per
    epoch) and label smoothing. (C=8: at C=4 the first cell's 1x1 stride-2 convs have 2 output channels, and torch
    2.13's CPU kernel for that shape in channels_last corrupts the heap on one thread.)"""
    wnids = ("n01440764", "n01443537", "n01484850")
    root = make_folder(tmp_path / "imagenet", classes=wnids, per_class=8, layout="train_val", suffix=".JPEG",
                       sizes=[(50, 40), (33, 61), (48, 48)])
    proc = run_cli("+experiment=imagenet_mobile", f"data.root={root}", "data.resolution=32", "data.batch_size=4",
                   "data.eval_batch_size=6", "data.workers=1", "train.C=8", "train.layers=3", "train.epochs=2",
                   "train.auxiliary=false", "trainer.enable_progress_bar=false", "logger=csv",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("3 classes, 18 training and 6 test images (train/ and val/), RGB, read at 32x32, streamed from disk"
            in proc.stdout + proc.stderr)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["classes"] == list(wnids)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    lrs = sorted({float(r["train/lr"]) for r in rows if r.get("train/lr")}, reverse=True)
    assert lrs == pytest.approx([0.1, 0.097])
    assert summary["status"] == "done"
    # a model out: the exported program, fed the test images as the data module decodes them, scores the run's accuracy
    from conftest import compose_cfg

    from darts_lite.export import run_export

    run_export(compose_cfg("task=export", f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
                           f"run_dir={tmp_path / 'export'}"))
    card = json.loads((tmp_path / "export" / "model.json").read_text())
    assert card["classes"] == list(wnids)
    program = torch.export.load(str(tmp_path / "export" / "model.pt2")).module()
    f = folders.scan_image_folder(root)
    x = torch.from_numpy(np.stack([folders.decode(p, "RGB", 32, crop=0.875) for p in f.test.paths]))
    predicted = program(x).argmax(1)
    assert (predicted == f.test.labels).float().mean().item() == pytest.approx(summary["metrics"]["val/acc"], abs=1e-6)


def test_label_smoothing_and_the_step_schedule_in_the_training_module():
    from darts_lite.train import TrainModule

    m = TrainModule("DARTS_V2", network={"C": 4, "num_classes": 5, "layers": 3, "auxiliary": False}, epochs=4,
                    lr=0.1, lr_schedule="step", lr_gamma=0.5, lr_step=2, label_smoothing=0.1)
    (opt,), (sched,) = m.configure_optimizers()
    rates = []
    for _ in range(4):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.05])
    logits, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    target = torch.full((6, 5), 0.1 / 5).scatter(1, y[:, None], 0.9 + 0.1 / 5)
    expected = -(target * logits.log_softmax(1)).sum(1).mean()
    m.forward = lambda x: logits
    m.log = lambda *a, **k: None
    m.optimizers = lambda: opt
    assert torch.allclose(m.training_step((torch.zeros(6, 3, 8, 8), y), 0), expected)


def test_econas_reads_a_folders_class_counts_and_side(tmp_path):
    """The EcoNAS tasks size their proxy settings from the data's class counts and image side: for a folder they are
    read from it (built-in datasets know theirs beforehand)."""
    from conftest import compose_cfg

    from darts_lite.econas.settings import base_from_config

    root = make_folder(tmp_path / "f", per_class=8, layout="flat")
    base = base_from_config(compose_cfg("+experiment=proxy_study_quick", "data=folder", f"data.root={root}",
                                        "data.resolution=16"))
    assert base.class_counts == (6, 6, 6) and base.resolution == 16  # 8 a class, a fixed 2 held out for testing
    assert base_from_config(compose_cfg("+experiment=proxy_study_quick")).class_counts == (
        ImageDataModule(name="digits").training_class_counts())
