"""Datasets and the search DataModule: splits, EcoNAS knobs, augmentation, CIFAR download path."""

import dataclasses
import hashlib
import io
import tarfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import fake_cifar10

from darts_lite import data as data_mod
from darts_lite.config import ConfigError
from darts_lite.data import (
    DatasetUnavailable,
    SearchDataModule,
    TrainDataModule,
    augment,
    load_dataset,
    part_sizes,
    train_class_counts,
)


def _dm(**kw):
    dm = SearchDataModule(**{"name": "digits", "batch_size": 32, **kw})
    dm.setup()
    return dm


def test_digits_are_real_images_with_a_fixed_test_split():
    d = load_dataset("digits")
    x, y = d["train"]
    tx, ty = d["test"]
    assert x.shape[1:] == (1, 8, 8) and len(x) + len(tx) == 1797
    assert x.min() == 0 and x.max() == 16 and set(y.tolist()) == set(range(10))
    assert torch.equal(load_dataset("digits")["test"][1], ty)  # same test set every time


def test_split_is_disjoint_and_sized():
    dm = _dm(split=0.5)
    w, a = set(dm.weight_idx.tolist()), set(dm.arch_idx.tolist())
    assert not w & a and len(w) + len(a) == len(dm.train_y)
    assert abs(len(w) - len(a)) <= 1
    assert len(_dm(split=0.8).weight_idx) == round(0.8 * len(dm.train_y))


def test_sample_ratio_reduces_training_data_only():
    full, part = _dm(), _dm(sample_ratio=0.5)
    assert abs(len(part.train_y) - len(full.train_y) / 2) <= 10
    assert torch.bincount(part.train_y).min() >= 50  # stratified: every class keeps its share
    assert len(part.test_y) == len(full.test_y)


def test_resolution_resizes_train_and_test():
    dm = _dm(resolution=16)
    assert dm.image_size == 16 and dm.train_x.shape[-2:] == (16, 16) and dm.test_x.shape[-2:] == (16, 16)
    (xw, _), _ = next(iter(dm.train_dataloader()))
    assert xw.shape == (32, 1, 16, 16)


def test_batches_are_pairs_normalised_and_from_their_parts():
    dm = _dm(crop_padding=0, flip=False)
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.weight_idx) // 32
    (xw, yw), (xa, ya) = batches[0]
    assert xw.shape == xa.shape == (32, 1, 8, 8) and xw.dtype == torch.float32
    allx = torch.cat([b[0][0] for b in batches])
    assert abs(allx.mean().item()) < 0.1 and abs(allx.std().item() - 1) < 0.1
    # each weight batch comes from the weight part: its images match rows of the weight part
    wx = dm.normalise(dm.train_x[dm.weight_idx]).flatten(1)
    assert all((wx == row).all(1).any() for row in xw.flatten(1))


def test_shuffle_depends_on_seed_and_epoch_only():
    def first_labels(seed, epoch):
        dm = _dm(seed=seed, crop_padding=0, flip=False)
        dm.set_epoch(epoch)
        return next(iter(dm.train_dataloader()))[0][1]

    assert torch.equal(first_labels(0, 3), first_labels(0, 3))
    assert not torch.equal(first_labels(0, 3), first_labels(0, 4))
    loader = _dm(crop_padding=0, flip=False).train_dataloader()
    assert not torch.equal(next(iter(loader))[0][1], next(iter(loader))[0][1])  # each iter() is a new epoch


def test_augmentation_crops_and_flips_per_image():
    torch.manual_seed(0)
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    assert torch.equal(augment(x, 0, False), x)
    flips = [augment(x, 0, True) for _ in range(20)]
    assert all(torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(-1)) for f in flips for i in range(2))
    assert any(torch.equal(f[0], x[0].flip(-1)) for f in flips) and any(torch.equal(f[0], x[0]) for f in flips)
    crops = [augment(x, 1, False) for _ in range(30)]
    for c in crops:  # every crop is a shifted window of the zero-padded image
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
        for i in range(2):
            assert any(torch.equal(c[i], padded[i, :, dy:dy + 4, dx:dx + 4]) for dy in range(3) for dx in range(3))
    assert any(not torch.equal(c, x) for c in crops)


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"split": 1.0}, "split=1.0: must be in (0, 1)"),
        ({"split": 0}, "split=0: must be in (0, 1)"),
        ({"sample_ratio": 0}, "sample_ratio=0: must be in (0, 1]"),
        ({"sample_ratio": 1.5}, "sample_ratio=1.5: must be in (0, 1]"),
        ({"batch_size": 0}, "batch_size=0: must be an integer >= 1"),
        ({"eval_batch_size": 0}, "eval_batch_size=0: must be null (= batch_size) or an integer >= 1"),
        ({"eval_batch_size": -5}, "eval_batch_size=-5: must be null (= batch_size) or an integer >= 1"),
        ({"name": "mnist"}, "name='mnist': must be one of cifar10, cifar100, digits, synthetic, dataset, folder"),
    ],
)
def test_bad_arguments(kw, message):
    with pytest.raises(ValueError) as info:
        SearchDataModule(**kw)
    assert message in str(info.value)


def test_eval_batch_size_none_means_batch_size():
    assert SearchDataModule(batch_size=32, eval_batch_size=None).eval_batch_size == 32
    assert SearchDataModule(batch_size=32, eval_batch_size=7).eval_batch_size == 7


def test_batch_larger_than_a_part_is_a_config_error_with_the_counts():
    with pytest.raises(ConfigError) as info:
        _dm(batch_size=1024)
    msg = str(info.value)
    assert "leave 719 digits training samples for the weights and 719 for the architecture" in msg
    assert "data.batch_size=1024" in msg and "data.sample_ratio" in msg
    with pytest.raises(ConfigError, match="leaves 10 digits training samples"):
        TrainDataModule(name="digits", batch_size=32, sample_ratio=0.01).setup()


def test_weight_part_must_fill_a_batch_on_every_device():
    dm = _dm(batch_size=400)  # 719 weight samples: one batch, but not one on each of 2 devices
    dm.trainer = SimpleNamespace(world_size=2, global_rank=0, current_epoch=0,
                                 strategy=SimpleNamespace(root_device=torch.device("cpu")))
    with pytest.raises(ConfigError, match="on each of 2 devices, 800 in all"):
        dm.train_dataloader()


@pytest.mark.parametrize(
    "kw",
    [
        {"name": "digits", "split": 0.5, "sample_ratio": 1.0},
        {"name": "digits", "split": 0.8, "sample_ratio": 0.5},
        {"name": "digits", "split": 0.3, "sample_ratio": 0.013},
        {"name": "synthetic", "split": 0.5, "sample_ratio": 0.37, "synthetic_samples": 103, "synthetic_classes": 4},
    ],
)
def test_part_sizes_known_before_loading_match_the_loaded_ones(kw):
    """config.validate_* refuses too small parts from these predictions; they must be the real sizes."""
    counts = train_class_counts(kw["name"], kw.get("synthetic_samples", 512), kw.get("synthetic_classes", 4))
    dm = _dm(batch_size=1, **kw)
    assert part_sizes(counts, kw["split"], kw["sample_ratio"]) == (len(dm.weight_idx), len(dm.arch_idx))
    retrain = TrainDataModule(**{"batch_size": 1, **kw})
    retrain.setup()
    assert part_sizes(counts, None, kw["sample_ratio"]) == (len(retrain.weight_idx), None)


def test_ranks_get_disjoint_batches_with_equal_step_counts():
    seen = []
    for rank in (0, 1):
        dm = _dm(crop_padding=0, flip=False)
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, current_epoch=0,
                                     strategy=SimpleNamespace(root_device=torch.device("cpu")))
        batches = list(dm.train_dataloader())
        assert len(batches) == len(dm.weight_idx) // 64
        wx = dm.normalise(dm.train_x[dm.weight_idx]).flatten(1)
        rows = torch.cat([b[0][0] for b in batches]).flatten(1)
        seen.append({int((wx == r).all(1).nonzero()[0]) for r in rows})
    assert not seen[0] & seen[1]


def test_cifar_download_checksum_extract_and_parse(tmp_path, monkeypatch):
    served = tmp_path / "served" / "cifar-10-binary.tar.gz"
    served.parent.mkdir()
    labels, images = fake_cifar10(served)
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    archive = data_mod.ARCHIVES["cifar10"]
    monkeypatch.setitem(data_mod.ARCHIVES, "cifar10", dataclasses.replace(archive, url=served.as_uri(), md5=md5))
    root = tmp_path / "data"
    d = load_dataset("cifar10", root)
    x, y = d["train"]
    assert x.dtype == torch.uint8 and x.shape == (15, 3, 32, 32)
    assert y.tolist() == np.concatenate(labels[:5]).tolist()
    # pixel layout: 1024 R, then 1024 G, then 1024 B values, each plane row-major
    assert x[0, 1, 2, 3].item() == images[0][0, 1024 + 2 * 32 + 3]
    assert d["test"][1].tolist() == labels[5].tolist()
    assert (root / "cifar10.pt").is_file()  # cached for the next run
    assert torch.equal(load_dataset("cifar10", root, download=False)["train"][0], x)


def test_cifar_bad_checksum_leaves_no_file(tmp_path, monkeypatch):
    served = tmp_path / "cifar-10-binary.tar.gz"
    fake_cifar10(served)
    archive = data_mod.ARCHIVES["cifar10"]
    monkeypatch.setitem(data_mod.ARCHIVES, "cifar10", dataclasses.replace(archive, url=served.as_uri(), md5="0" * 32))
    root = tmp_path / "data"
    with pytest.raises(DatasetUnavailable, match="md5"):
        load_dataset("cifar10", root)
    assert list(root.iterdir()) == []


def test_cifar_missing_offline_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset("cifar100", tmp_path, download=False)
    msg = str(info.value)
    assert "cifar-100-binary.tar.gz" in msg and str(tmp_path.resolve()) in msg and "md5" in msg


def test_synthetic_is_learnable_shape():
    dm = SearchDataModule(name="synthetic", batch_size=8, synthetic_samples=64, synthetic_classes=4,
                          synthetic_size=8, synthetic_channels=3)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (4, 3, 8)
    dm.setup()
    assert dm.train_x.shape == (64, 3, 8, 8) and set(dm.train_y.tolist()) == {0, 1, 2, 3}


def test_crop_padding_is_black_not_the_mean_colour():
    """The reference pipeline pads the raw image with zeros and normalises afterwards."""
    dm = SearchDataModule("synthetic", batch_size=64, crop_padding=4, flip=False, synthetic_size=8)
    dm.setup()
    dm.train_x = torch.full_like(dm.train_x, 5.0)  # every pixel the same bright value
    x, _ = dm.train_batch(torch.arange(64))
    black = ((0 - dm.mean) / dm.std).view(-1)
    for c in range(x.shape[1]):
        values = torch.unique(x[:, c])
        assert len(values) == 2  # the image's value and the padding's: some crops show padding
        assert torch.isclose(values, black[c]).any()


def _hostile_archive(path, kind):
    """A gzipped tar whose first member is harmless and whose second would write outside the data folder."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-bin/readme.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        bad = tarfile.TarInfo({"dotdot": "cifar-10-batches-bin/../../escaped.txt", "absolute": str(path.parent / "abs.txt"),
                               "symlink": "cifar-10-batches-bin/link", "hardlink": "cifar-10-batches-bin/hard"}[kind])
        if kind == "symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, "../../outside"
        elif kind == "hardlink":
            bad.type, bad.linkname = tarfile.LNKTYPE, "/etc/passwd"
        else:
            bad.size = 4
        tar.addfile(bad, io.BytesIO(b"evil") if bad.isfile() else None)
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_extract_without_the_tar_data_filter_refuses_hostile_members(tmp_path, monkeypatch, kind):
    """Pythons before 3.10.12 / 3.11.4 have no tarfile data filter: the fallback checks every member first."""
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive, root = tmp_path / "served" / "evil.tar.gz", tmp_path / "sandbox" / "data"
    archive.parent.mkdir()
    root.mkdir(parents=True)
    _hostile_archive(archive, kind)
    with pytest.raises(DatasetUnavailable, match="unsafe member") as info:
        data_mod._extract(archive, root)
    assert "delete it and download it again" in str(info.value)
    # nothing was written, not even the harmless member before the hostile one
    assert list(root.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["sandbox", "served"]
    assert list((tmp_path / "sandbox").iterdir()) == [root]


def test_cifar_extracts_through_the_fallback_too(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = tmp_path / "data" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    labels, _ = fake_cifar10(archive)
    a = data_mod.ARCHIVES["cifar10"]
    monkeypatch.setitem(data_mod.ARCHIVES, "cifar10", dataclasses.replace(a, md5=hashlib.md5(archive.read_bytes()).hexdigest()))
    d = load_dataset("cifar10", archive.parent, download=False)
    assert d["train"][1].tolist() == np.concatenate(labels[:5]).tolist()


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="this Python's tarfile has no data filter")
def test_extract_with_the_tar_data_filter_refuses_an_escaping_member(tmp_path):
    archive, root = tmp_path / "evil.tar.gz", tmp_path / "sandbox" / "data"
    root.mkdir(parents=True)
    _hostile_archive(archive, "dotdot")
    with pytest.raises(DatasetUnavailable, match="unsafe member"):
        data_mod._extract(archive, root)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "sandbox" / "escaped.txt").exists()


def test_search_validates_on_the_architecture_part_unless_told_otherwise():
    kw = dict(batch_size=16, eval_batch_size=50, synthetic_samples=128, crop_padding=0, flip=False)
    dm = SearchDataModule("synthetic", **kw)
    xs, ys = zip(*dm.val_dataloader())
    assert torch.equal(torch.cat(ys), dm.train_y[dm.arch_idx])
    torch.testing.assert_close(torch.cat(xs), dm.normalise(dm.train_x[dm.arch_idx]))  # unaugmented
    test = SearchDataModule("synthetic", val_on="test", **kw)
    assert torch.equal(torch.cat([y for _, y in test.val_dataloader()]), test.test_y)
    with pytest.raises(ValueError, match="val_on"):
        SearchDataModule("synthetic", val_on="train")
