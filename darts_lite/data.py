"""Datasets and the search DataModule.

Whole datasets are held as tensors on the training device and batches are sliced from them with
index tensors: no DataLoader workers, no per-step host-to-device copy. CIFAR-10 images as uint8
take 150 MB, well within any GPU. Augmentation (random crop with padding, horizontal flip) runs
on whole batches on the device.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from . import image_folder as folders
from .errors import ConfigError, DatasetUnavailable
from .schema import Allowed, Ge, Gt, Hint, Le, Lt, MinLen, OneOf, checked

log = logging.getLogger("darts_lite")

# "dataset": a user's own, any map-style torch Dataset given by _target_ (ImageDataModule's train and test);
# "folder": images kept one sub-folder per class under data.root (data=folder, data=imagenet)
DATASETS = ("cifar10", "cifar100", "digits", "synthetic", "dataset", "folder")
# the datasets whose classes, size and image side are known once they are read (when the data module is built)
READ_WHEN_BUILT = ("dataset", "folder")

# (classes, channels, native size) known before loading, so networks can be built first
_SHAPES = {"cifar10": (10, 3, 32), "cifar100": (100, 3, 32), "digits": (10, 1, 8)}

# what each label means, for the datasets that have names (the others' classes are called by their labels)
_CLASS_NAMES = {"cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")}

# images per class in scikit-learn's 1797 digits; with the fixed test split below they give the
# training set's size before anything is loaded, so a config is checked before a run starts
_DIGITS_PER_CLASS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def _digits_test_share(n: int) -> int:
    """Images of a class of ``n`` that go to the fixed digits test split (20%)."""
    return round(0.2 * n)


def native_size(name: str, synthetic_size: int | None = None) -> int:
    """Side of a dataset's images before any data.resolution resize."""
    if name == "synthetic":
        return synthetic_size
    if name in READ_WHEN_BUILT:
        raise ValueError(f"data={name}: the side of your images is known once they are read; set data.resolution")
    if name not in _SHAPES:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return _SHAPES[name][2]


def train_class_counts(name: str, synthetic_samples: int = 512, synthetic_classes: int = 4) -> tuple[int, ...]:
    """Training images per class, as load_dataset will return them (known without loading)."""
    if name == "cifar10":
        return (5000,) * 10
    if name == "cifar100":
        return (500,) * 100
    if name == "digits":
        return tuple(n - _digits_test_share(n) for n in _DIGITS_PER_CLASS)
    if name == "synthetic":  # labels are arange(samples) % classes
        return tuple(synthetic_samples // synthetic_classes + (c < synthetic_samples % synthetic_classes)
                     for c in range(synthetic_classes))
    if name in READ_WHEN_BUILT:
        raise ValueError(f"data={name}: the size of your dataset is known once it is read")
    raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def _kept_per_class(n: int, ratio: float) -> int:
    """Images of a class of ``n`` that a sample ratio keeps (at least one, so no class vanishes)."""
    return n if ratio >= 1 else max(1, round(ratio * n))


def _weight_share(n: int, split: float) -> int:
    return int(round(split * n))


def part_sizes(class_counts: tuple[int, ...], split: float | None, sample_ratio: float) -> tuple[int, int | None]:
    """(weight part, architecture part) the data module makes of a training set with these class
    counts; split=None (retraining): the whole sample trains the weights and the second is None."""
    n = sum(_kept_per_class(c, sample_ratio) for c in class_counts)
    if split is None:
        return n, None
    return _weight_share(n, split), n - _weight_share(n, split)


def too_few_samples(
    name: str, weight: int, arch: int | None, batch_size: int, split: float | None, sample_ratio: float, devices: int = 1
) -> str | None:
    """Why the parts cannot fill one batch per step, naming the keys to change; None when they can.

    The weight part must give every device its own batch; the architecture part is reused
    cyclically, so one batch of it is enough.
    """
    need = batch_size * devices
    weight_short, arch_short = weight < need, arch is not None and arch < batch_size
    if not (weight_short or arch_short):
        return None
    fixes = (["raise data.sample_ratio"] if sample_ratio < 1 else []) + ["lower data.batch_size"]
    per_device = f" on each of {devices} devices, {need} in all" if devices > 1 else ""
    if arch is None:
        return (f"data.sample_ratio={sample_ratio} leaves {weight} {name} training samples, fewer than one batch of "
                f"data.batch_size={batch_size}{per_device}; {' or '.join(fixes)}")
    if weight_short != arch_short:  # one part is short, the other has room: the split can move
        fixes.append(f"{'raise' if weight_short else 'lower'} data.split")
    return (
        f"data.sample_ratio={sample_ratio} and data.split={split} leave {weight} {name} training samples for the weights "
        f"and {arch} for the architecture; a step takes a batch of data.batch_size={batch_size} from each part"
        f"{' (from the weights' + per_device + ')' if per_device else ''}; {' or '.join(fixes)}"
    )


@dataclass(frozen=True)
class DownloadArchive:
    """Where a dataset's release file is downloaded from, how it is checked and what it holds."""

    filename: str
    url: str
    md5: str
    folder: str  # the folder the archive extracts to
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_bytes: int  # bytes before the pixels of a record; the last of them is the label we use


# The binary (not pickled) releases: records of label byte(s) then 3072 bytes R, G, B planes.
ARCHIVES = {
    "cifar10": DownloadArchive(
        "cifar-10-binary.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "c32a1d4ab5d03f1284b67883e8d87530",
        "cifar-10-batches-bin",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        ("test_batch.bin",),
        1,
    ),
    "cifar100": DownloadArchive(
        "cifar-100-binary.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "03b5dce01913d631647c71ecec9e9cb8",
        "cifar-100-binary",
        ("train.bin",),
        ("test.bin",),
        2,  # coarse label, fine label: we use the fine (100-class) label
    ),
}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _where_to_put(a: DownloadArchive, root: Path) -> str:
    return f"download {a.url} (md5 {a.md5}) and put {a.filename} in {root.resolve()}"


def _download(a: DownloadArchive, root: Path) -> Path:
    target = root / a.filename
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=a.filename, suffix=".part")
    os.close(fd)
    try:
        print(f"darts_lite: downloading {a.url} to {root.resolve()}", file=sys.stderr)
        with urllib.request.urlopen(a.url, timeout=60) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                done += len(chunk)
                if total:
                    print(f"\r  {done / 2**20:.0f} / {total / 2**20:.0f} MiB", end="", file=sys.stderr)
        print(file=sys.stderr)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise DatasetUnavailable(f"could not download {a.filename} ({e}); {_where_to_put(a, root)}") from None
    if _md5(Path(tmp)) != a.md5:
        Path(tmp).unlink(missing_ok=True)
        raise DatasetUnavailable(f"{a.filename} from {a.url} failed its md5 check (expected {a.md5}); try again")
    os.replace(tmp, target)  # atomic: a half-downloaded file never takes the final name
    return target


def _unsafe_member(member: tarfile.TarInfo, root: Path) -> str | None:
    """Why extracting ``member`` under ``root`` would be unsafe; None when it is a plain file or folder inside root."""
    if member.name.startswith(("/", "\\")) or Path(member.name).is_absolute():
        return "an absolute path"
    if ".." in Path(member.name).parts:
        return "'..' in its path"
    if member.issym() or member.islnk():
        return "a link"
    if not (member.isfile() or member.isdir()):
        return "a device, fifo or other special file"
    target = (root / member.name).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        return "a path outside the data folder"
    return None


def _extract(archive: Path, root: Path) -> None:
    """Extract a downloaded archive into ``root``, refusing anything that could write outside it.

    Pythons with tarfile's "data" filter (3.10.12+, 3.11.4+, 3.12+) use it; older ones check every
    member before anything is written, more strictly than the filter (no links at all: the CIFAR
    archives hold none).
    """
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            try:
                tar.extractall(root, filter="data")
            except tarfile.FilterError as e:
                raise DatasetUnavailable(f"{archive} holds an unsafe member ({e}); delete it and download it again") from None
            return
        members = tar.getmembers()
        for member in members:
            why = _unsafe_member(member, root)
            if why:
                raise DatasetUnavailable(
                    f"{archive} holds an unsafe member {member.name!r} ({why}); delete it and download it again"
                )
            member.mode &= 0o755  # as the data filter: no setuid/setgid/sticky bits, no group/other write
        tar.extractall(root, members=members)


def _read_records(path: Path, label_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    raw = np.fromfile(path, dtype=np.uint8)
    record = label_bytes + 3072
    if raw.size % record:
        raise DatasetUnavailable(f"{path} is not a CIFAR binary file (size {raw.size} is not a multiple of {record})")
    raw = raw.reshape(-1, record)
    labels = torch.from_numpy(raw[:, label_bytes - 1].astype(np.int64))
    images = torch.from_numpy(raw[:, label_bytes:].copy()).view(-1, 3, 32, 32)
    return images, labels


@contextlib.contextmanager
def _folder_lock(root: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the folder ``root`` (flock on the folder itself: no lock file is left behind), so
    that processes preparing the same data folder at once (several drivers, DDP ranks, a sweep's jobs) take turns.
    Where the platform has no flock the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # Windows: one process at a time is the user's business there
        yield
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"darts_lite: waiting for another process preparing {what} in {root.resolve()}", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _cifar_cache(name: str, root: Path, download: bool) -> Path:
    """The file of a CIFAR dataset's tensors under ``root``, made on first use: the release file found there (md5
    checked) or downloaded, extracted and read. Two processes asking at once take turns; the second finds the
    first's file. DatasetUnavailable (nothing created) when it is missing and ``download`` is false."""
    a = ARCHIVES[name]
    cache = root / f"{name}.pt"
    if cache.is_file():
        return cache
    folder = root / a.folder

    def extracted() -> bool:
        return all((folder / f).is_file() for f in a.train_files + a.test_files)

    if not download and not extracted() and not (root / a.filename).is_file():
        raise DatasetUnavailable(f"{name} is not in {root.resolve()} and data.download is false; {_where_to_put(a, root)}")
    root.mkdir(parents=True, exist_ok=True)
    with _folder_lock(root, name):
        if cache.is_file():  # made by the process that held the lock before this one
            return cache
        if not extracted():
            archive = root / a.filename
            if archive.is_file():
                if _md5(archive) != a.md5:
                    raise DatasetUnavailable(f"{archive} fails its md5 check (expected {a.md5}); delete it and run again")
            elif download:
                archive = _download(a, root)
            else:  # another process removed it meanwhile
                raise DatasetUnavailable(f"{name} is not in {root.resolve()} and data.download is false; "
                                         f"{_where_to_put(a, root)}")
            _extract(archive, root)
        splits = {}
        for split, files in (("train", a.train_files), ("test", a.test_files)):
            parts = [_read_records(folder / f, a.label_bytes) for f in files]
            splits[split] = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
        tmp = cache.with_suffix(".pt.part")
        torch.save({**splits, "num_classes": _SHAPES[name][0]}, tmp)
        os.replace(tmp, cache)  # atomic: a reader sees the whole file or none
    return cache


def _load_cifar(name: str, root: Path, download: bool) -> dict:
    return torch.load(_cifar_cache(name, root, download), weights_only=True)


def prepare_dataset(name: str, root: str | Path = "data", download: bool = True) -> Path | None:
    """Make a built-in dataset ready to be read by many processes without a download: what a driver calls once
    before it sends out evaluations. CIFAR: its verified tensor file under ``root`` (downloaded if allowed and
    needed); DatasetUnavailable with the one-line message a search gives when it cannot be had. The bundled and
    generated datasets need nothing (None)."""
    if name in ARCHIVES:
        return _cifar_cache(name, Path(root), download)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return None


def _load_digits() -> dict:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32)).unsqueeze(1)  # [1797, 1, 8, 8], values 0..16
    y = torch.from_numpy(d.target.astype(np.int64))
    # a fixed stratified 80/20 split, the same in every run whatever the seed
    g = torch.Generator().manual_seed(1234)
    test_idx = []
    for c in range(10):
        idx = (y == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        test_idx.append(idx[: _digits_test_share(len(idx))])
    test = torch.cat(test_idx)
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[test] = False
    return {"train": (x[mask], y[mask]), "test": (x[test], y[test]), "num_classes": 10}


def _make_synthetic(samples: int, classes: int, size: int, channels: int) -> dict:
    """Each class a fixed random pattern; samples are the pattern plus noise (content independent of seed)."""
    g = torch.Generator().manual_seed(4321)
    patterns = torch.randn(classes, channels, size, size, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % classes
        y = y[torch.randperm(n, generator=g)]
        return patterns[y] + 0.8 * torch.randn(n, channels, size, size, generator=g), y

    return {"train": draw(samples), "test": draw(max(classes, samples // 4)), "num_classes": classes}


# a user's dataset is read whole into tensors, as darts_lite's own; this many images at most, so that a mistake (a
# dataset of a million images) stops with a message instead of filling the memory
MAX_DATASET_IMAGES = 2_000_000


def _dataset_problem(which: str, why: str) -> DatasetUnavailable:
    return DatasetUnavailable(f"data.{which}: {why}; it must build a map-style torch Dataset whose items are (image tensor "
                              "[C, H, W], int label), see docs/extending.md")


def read_dataset(dataset: Any, which: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """A map-style Dataset of (image [C, H, W], int label) read whole: (x [N, C, H, W] float32 or uint8, y [N]
    int64). DatasetUnavailable names the first item that is not such a pair, or a shape that differs."""
    try:
        n = len(dataset)
    except TypeError:
        raise _dataset_problem(which, f"{type(dataset).__name__} has no len(), so it is not a map-style Dataset") from None
    if n == 0:
        raise _dataset_problem(which, "the dataset is empty")
    if n > MAX_DATASET_IMAGES:
        raise _dataset_problem(which, f"{n} images, more than the {MAX_DATASET_IMAGES} darts_lite reads into memory")
    images, labels, shape = [], [], None
    for i in range(n):
        item = dataset[i]
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise _dataset_problem(which, f"item {i} is a {type(item).__name__}, not an (image, label) pair")
        x, y = item
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.is_complex():
            raise _dataset_problem(which, f"item {i}'s image is {type(x).__name__}"
                                   f"{' of shape ' + str(list(x.shape)) if isinstance(x, torch.Tensor) else ''}, "
                                   "not a tensor [C, H, W]")
        if shape is None:
            shape = tuple(x.shape)
        elif tuple(x.shape) != shape:
            raise _dataset_problem(which, f"item {i}'s image is {list(x.shape)}, item 0's {list(shape)}: every image must "
                                   "have the same shape (resize them in the dataset)")
        if isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point():
            y = int(y.item())
        if isinstance(y, bool) or not isinstance(y, int) or y < 0:
            raise _dataset_problem(which, f"item {i}'s label is {y!r}, not an integer >= 0")
        images.append(x if x.dtype == torch.uint8 else x.float())
        labels.append(y)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _build_dataset(node: Any, which: str) -> Any:
    """The Dataset the config node ``data.train`` / ``data.test`` builds (its _target_ and arguments)."""
    if node is None:
        raise _dataset_problem(which, "not set (data=dataset needs data.train._target_ and data.test._target_)")
    if not (isinstance(node, dict) and "_target_" in node):
        return node  # a Dataset object, from Python
    from .schema import build

    try:
        return build(node, f"data.{which}")
    except ConfigError:
        raise
    except Exception as e:
        raise _dataset_problem(which, f"building it failed ({type(e).__name__}: {e})") from None


def load_user_datasets(train: Any, test: Any) -> dict:
    """{"train": (x, y), "test": (x, y), "num_classes": int} from a user's two datasets (configs or Datasets); the
    classes are the labels 0..max, the same channels and size in both."""
    x, y = read_dataset(_build_dataset(train, "train"), "train")
    tx, ty = read_dataset(_build_dataset(test, "test"), "test")
    if tx.shape[1:] != x.shape[1:]:
        raise _dataset_problem("test", f"its images are {list(tx.shape[1:])} and the training images {list(x.shape[1:])}")
    classes = int(max(y.max(), ty.max())) + 1
    missing = sorted(set(range(classes)) - set(y.tolist()))
    if missing:
        raise _dataset_problem("train", f"no training image of class {missing[0]} (labels run 0..{classes - 1}; "
                               f"{len(missing)} classes have none)")
    return {"train": (x, y), "test": (tx, ty), "num_classes": classes}


def load_dataset(name: str, root: str | Path = "data", download: bool = True, **synthetic: int) -> dict:
    """{"train": (x, y), "test": (x, y), "num_classes": int}; x [N, C, H, W] uint8 (CIFAR) or float, y int64."""
    if name in ARCHIVES:
        return _load_cifar(name, Path(root), download)
    if name == "digits":
        return _load_digits()
    if name == "synthetic":
        return _make_synthetic(**synthetic)
    raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def augment(x: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, each image its own draw. x [B, C, H, W]."""
    if padding > 0:
        b, _, h, w = x.shape
        padded = F.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=x.device)
        rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(b, h, w)
        cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(b, h, w)
        batch = torch.arange(b, device=x.device).view(b, 1, 1).expand(b, h, w)
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mirror = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(mirror.view(-1, 1, 1, 1), x.flip(-1), x)
    return x


class _TrainBatches:
    """One epoch per iter(): pairs of (weight batch, architecture batch), sliced on the device."""

    def __init__(self, dm: ImageDataModule):
        self.dm = dm

    def __len__(self) -> int:
        return self.dm.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]:
        dm = self.dm
        epoch = dm.current_epoch()
        # the order depends only on (seed, epoch): a resumed run replays the same batches
        g = torch.Generator().manual_seed(dm.seed * 1_000_003 + epoch)
        rank, world = dm.rank_and_world()
        w_perm = torch.randperm(len(dm.weight_idx), generator=g)
        a_perm = torch.randperm(len(dm.arch_idx), generator=g)
        bs, steps = dm.batch_size, dm.steps_per_epoch
        w_perm = w_perm[: steps * bs * world].view(steps, world, bs)[:, rank]
        a_needed = steps * bs * world
        a_perm = a_perm.repeat(math.ceil(a_needed / len(a_perm)))[:a_needed].view(steps, world, bs)[:, rank]
        yield from dm.train_steps([dm.weight_idx[w_perm], dm.arch_idx[a_perm]])


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero one size x size square per image, centred uniformly in the image and clipped at its border."""
    if size <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device)
    top, left = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return x * (~inside).unsqueeze(1).to(x.dtype)


class _PlainBatches:
    """One epoch per iter(): shuffled training batches (x, y) with augmentation and cutout."""

    def __init__(self, dm: ImageDataModule):
        self.dm = dm

    def __len__(self) -> int:
        return self.dm.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        dm = self.dm
        g = torch.Generator().manual_seed(dm.seed * 1_000_003 + dm.current_epoch())
        rank, world = dm.rank_and_world()
        bs, steps = dm.batch_size, dm.steps_per_epoch
        perm = torch.randperm(len(dm.weight_idx), generator=g)[: steps * bs * world].view(steps, world, bs)[:, rank]
        for (x, y), in dm.train_steps([dm.weight_idx[perm]]):
            yield cutout(x, dm.cutout), y


class _EvalBatches:
    """Unaugmented batches in order: the test split, or (search, val_on="arch") the architecture part."""

    def __init__(self, dm: ImageDataModule, x: torch.Tensor, y: torch.Tensor):
        self.dm, self.x, self.y = dm, x, y

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.dm.eval_batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.y), self.dm.eval_batch_size):
            sl = slice(start, start + self.dm.eval_batch_size)
            yield self.dm.normalise(self.x[sl]), self.y[sl]


class _StreamedEvalBatches:
    """Unaugmented batches in order, decoded from a streamed folder's files by the worker processes."""

    def __init__(self, dm: ImageDataModule, split: folders.FolderSplit, idx: torch.Tensor):
        self.dm, self.split, self.idx = dm, split, idx

    def __len__(self) -> int:
        return math.ceil(len(self.idx) / self.dm.eval_batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        dm, f = self.dm, self.dm._folder
        steps = [(c,) for c in self.idx.split(dm.eval_batch_size)]
        reader = folders.BatchReader(self.split, f.mode, dm.image_size, steps, crop=dm.eval_crop)
        for (x, y), in folders.read_batches(reader, dm.workers, pin_memory=dm.device.type == "cuda"):
            yield dm.normalise(x.to(dm.device, non_blocking=True)), y.to(dm.device)


def _rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


class ImageDataModule(pl.LightningDataModule):
    """A dataset's training images, split for a bilevel search or kept whole for retraining, and its test split.

    bilevel=True (a search): the training images split into a weight part (``split`` of them) and an architecture
    part; each training step yields ((x_w, y_w), (x_a, y_a)), x [batch_size, C, H, W] float, normalised.
    ``val_on``: what the per-epoch validation reads: "arch", the architecture part (as the DARTS reference code's
    search does: the test split stays unseen), or "test", the test split.

    bilevel=False (retraining): every training image trains the weights; each step yields (x, y), augmented and
    with ``cutout``. ``val_split``: 0 validates every epoch on the test split (the DARTS retraining recipe); a share
    in (0, 1) holds that much of the training images out as the validation split (what an architecture search may
    read), and the test split is only the test loader's.

    name="folder": images kept one sub-folder per class under ``root`` (see ``darts_lite.image_folder``), read in
    ``channels`` (null: 1 when every image is grayscale, else 3) at ``resolution`` (null: their common side), the
    whole image squeezed to a square or, with ``eval_crop``, its centre square of that share of the shorter side.
    They are decoded once and held like the built-in datasets, or with ``stream`` (null: when they would take more
    than ``memory_limit_mb``) decoded by ``workers`` processes every step, where ``random_resized_crop`` may crop
    the training images. ``color_jitter``/``hue_jitter`` jitter training images of any dataset on the device;
    ``mean``/``std`` replace the per-channel statistics otherwise computed on the training images (a sample of
    them when streaming).

    The config's data group builds it (``_target_: darts_lite.data.ImageDataModule``); the task adds ``seed``,
    ``bilevel`` and, for retraining, ``cutout`` and ``val_split``.
    """

    @checked
    def __init__(
        self,
        name: Annotated[str, OneOf(DATASETS)] = "digits",
        root: Annotated[str, MinLen(1), Allowed("a folder path")] = "data",
        batch_size: Annotated[int, Ge(1)] = 64,
        eval_batch_size: Annotated[Annotated[int, Ge(1)] | None, Allowed("null (= batch_size) or an integer >= 1")] = None,
        split: Annotated[float, Gt(0), Lt(1), Hint("the fraction of the training images that trains the weights")] = 0.5,
        sample_ratio: Annotated[float, Gt(0), Le(1)] = 1.0,
        resolution: Annotated[int, Ge(4)] | None = None,
        crop_padding: Annotated[int, Ge(0)] = 4,
        flip: bool = True,
        download: bool = True,
        synthetic_samples: Annotated[int, Ge(1)] = 512,
        synthetic_classes: Annotated[int, Ge(2)] = 4,
        synthetic_size: Annotated[int, Ge(4), Hint("as resolution")] = 8,
        synthetic_channels: Annotated[int, Ge(1)] = 3,
        val_on: Literal["arch", "test"] = "arch",
        train: Any = None,
        test: Any = None,
        seed: int = 0,
        bilevel: bool = True,
        cutout: Annotated[int, Ge(0)] = 0,
        val_split: Annotated[float, Ge(0), Lt(1)] = 0.0,
        channels: Literal[1, 3] | None = None,
        test_split: Annotated[float, Gt(0), Lt(1), Hint("the share of each class a folder without test images "
                                                          "holds out for testing")] = 0.2,
        stream: bool | None = None,
        memory_limit_mb: Annotated[int, Ge(1)] = 4096,
        workers: Annotated[int, Ge(0)] = 2,
        random_resized_crop: bool = False,
        color_jitter: Annotated[float, Ge(0), Lt(1)] = 0.0,
        hue_jitter: Annotated[float, Ge(0), Le(0.5)] = 0.0,
        eval_crop: Annotated[float, Gt(0), Le(1)] | None = None,
        mean: Annotated[list[float], MinLen(1)] | None = None,
        std: Annotated[list[Annotated[float, Gt(0)]], MinLen(1)] | None = None,
    ):
        super().__init__()
        self.bilevel, self.val_on, self.cutout, self.val_split = bilevel, val_on, cutout, val_split
        self.name, self.root, self.download = name, root, download
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.split, self.sample_ratio, self.resolution = split, sample_ratio, resolution
        self.crop_padding, self.flip, self.seed = crop_padding, flip, seed
        self.synthetic = dict(samples=synthetic_samples, classes=synthetic_classes, size=synthetic_size,
                              channels=synthetic_channels)
        self._data = None
        self.stream, self.workers, self._folder = False, workers, None
        self.color_jitter, self.hue_jitter, self.eval_crop = color_jitter, hue_jitter, eval_crop
        self.random_resized_crop = random_resized_crop
        self._given_stats = self._given_statistics(mean, std)
        if name != "folder" and (random_resized_crop or stream or channels is not None):
            raise ConfigError(f"data.random_resized_crop, data.stream and data.channels are for images read from a "
                              f"folder (data=folder, data=imagenet), not name={name}")
        if name != "dataset" and (train is not None or test is not None):
            raise ConfigError(f"data.train and data.test are for data=dataset (a dataset of your own), not name={name}")
        if name == "folder":
            # images in class sub-folders: scanned now, as their classes, channels and side size the network
            self._folder, native, self.stream = self._scan_folder(root, channels, resolution, test_split, stream,
                                                                 memory_limit_mb)
            self.num_classes, self.in_channels = len(self._folder.classes), self._folder.channels
        elif name == "dataset":
            # a user's dataset: read now, as its classes, channels and size size the network built before training
            self._data = load_user_datasets(train, test)
            x = self._data["train"][0]
            self.num_classes, self.in_channels, native = self._data["num_classes"], x.shape[1], x.shape[-1]
            if x.shape[-2] != x.shape[-1] and resolution is None:
                raise ConfigError(f"data.resolution=null: the dataset's images are {x.shape[-2]}x{x.shape[-1]}; set "
                                  "data.resolution to the side to resize them to (the networks take square images)")
        elif name == "synthetic":
            self.num_classes, self.in_channels, native = synthetic_classes, synthetic_channels, synthetic_size
        else:
            self.num_classes, self.in_channels, native = _SHAPES[name]
        self.image_size = resolution or native
        if self._given_stats is not None and len(self._given_stats[0]) != self.in_channels:
            raise ConfigError(f"data.mean and data.std give {len(self._given_stats[0])} channels; the images have "
                              f"{self.in_channels}")
        self.epoch = 0
        self.device = torch.device("cpu")
        self._loaded = False

    @staticmethod
    def _given_statistics(mean: list[float] | None, std: list[float] | None) -> tuple[list, list] | None:
        """(mean, std) given in the config, checked to come together and to agree; None: computed from the data."""
        if (mean is None) != (std is None):
            raise ConfigError("data.mean and data.std: give both (per channel) or neither (computed on the training "
                              "images)")
        if mean is None:
            return None
        if len(mean) != len(std):
            raise ConfigError(f"data.mean has {len(mean)} values and data.std {len(std)}; give one per channel")
        return list(mean), list(std)

    def _scan_folder(self, root: str, channels: int | None, resolution: int | None, test_split: float,
                     stream: bool | None, memory_limit_mb: int) -> tuple[folders.ImageFolder, int, bool]:
        """(the folder's scan, the side its images are read at, whether they stream from disk); every problem of
        the folder as one line."""
        try:
            found = folders.scan_image_folder(root, test_share=test_split, channels=channels,
                                              read_headers=channels is None or resolution is None)
        except folders.FolderProblem as e:
            raise DatasetUnavailable(f"data.root={root}: {e}") from None
        side = resolution or found.native
        if side is None:
            raise ConfigError(f"data.resolution=null: {folders.size_problem(found)}; set data.resolution to the side "
                              "to resize them to (the networks take square images)")
        need = folders.estimated_bytes(found, side)
        if stream is None:
            stream = self.random_resized_crop or need > memory_limit_mb * 2**20
        elif not stream and self.random_resized_crop:
            raise ConfigError("data.random_resized_crop=true crops each image anew every epoch, which needs "
                              "data.stream=true (or null)")
        if _rank_zero():
            log.info("data=folder: %s%s", folders.describe(found, side, stream, self.workers),
                     f" ({need / 2**20:,.0f} MiB decoded > data.memory_limit_mb={memory_limit_mb})"
                     if stream and need > memory_limit_mb * 2**20 else "")
        return found, side, stream

    # ---- loading -----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._loaded:
            return
        if self._folder is not None and self.stream:
            self._setup_stream()
            return
        if self._folder is not None:
            f = self._folder
            side = self.image_size
            self._data = {
                "train": (folders.read_all(f.train, f.mode, side, self.eval_crop, self.workers,
                                           f"decoding the training images of {f.root}"), f.train.labels),
                "test": (folders.read_all(f.test, f.mode, side, self.eval_crop, self.workers,
                                          f"decoding the test images of {f.root}"), f.test.labels),
                "num_classes": len(f.classes), "classes": f.classes}
        data = self._data or load_dataset(self.name, self.root, self.download, **self.synthetic)
        self._data = None  # the tensors live on in the module's own attributes
        train_x, train_y = data["train"]
        test_x, test_y = data["test"]
        if self.resolution is not None and self.resolution != train_x.shape[-1]:
            train_x, test_x = self._resize(train_x), self._resize(test_x)
        g = torch.Generator().manual_seed(self.seed)
        keep = self._stratified_sample(train_y, self.sample_ratio, g)
        train_x, train_y = train_x[keep], train_y[keep]
        perm = torch.randperm(len(train_y), generator=g)
        self.weight_idx, self.arch_idx = self._partition(perm)
        self._check_part_sizes(devices=1)
        # normalise with the statistics of the images used for training
        self.mean, self.std = self._statistics(train_x)
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y
        self.classes = tuple(data.get("classes") or _CLASS_NAMES.get(self.name) or map(str, range(self.num_classes)))
        self._loaded = True

    def _statistics(self, train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std [1, C, 1, 1]: the config's, else those of ``train_x`` (the training images)."""
        if self._given_stats is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in self._given_stats)
            return mean, std
        xf = train_x.float()
        return xf.mean(dim=(0, 2, 3)).view(1, -1, 1, 1), xf.std(dim=(0, 2, 3)).clamp_min(1e-6).view(1, -1, 1, 1)

    # images of a streamed folder whose statistics normalise it (unless data.mean/data.std give them)
    STATISTICS_SAMPLE = 2000

    def _setup_stream(self) -> None:
        """A folder read from disk every step: only the file lists and labels are held; the statistics come from a
        seeded sample of the training images."""
        f = self._folder
        g = torch.Generator().manual_seed(self.seed)
        keep = self._stratified_sample(f.train.labels, self.sample_ratio, g)
        self.train_files = folders.FolderSplit(tuple(f.train.paths[i] for i in keep.tolist()), f.train.labels[keep])
        self.test_files = f.test
        self.train_y, self.test_y = self.train_files.labels, f.test.labels
        perm = torch.randperm(len(self.train_y), generator=g)
        self.weight_idx, self.arch_idx = self._partition(perm)
        self._check_part_sizes(devices=1)
        if self._given_stats is None:
            sample = torch.randperm(len(self.train_y), generator=torch.Generator().manual_seed(self.seed))
            x = folders.read_all(self.train_files, f.mode, self.image_size, self.eval_crop, self.workers,
                                 f"reading {self.STATISTICS_SAMPLE} images of {f.root} for their statistics",
                                 indices=sample[: self.STATISTICS_SAMPLE])
        else:
            x = torch.empty(0)
        self.mean, self.std = self._statistics(x)
        self.train_x = self.test_x = None
        self.classes = f.classes
        self._loaded = True

    def _partition(self, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight part, held-out part): a search's architecture part, or retraining's validation split."""
        if self.bilevel:
            n_weight = _weight_share(len(perm), self.split)
            return perm[:n_weight], perm[n_weight:]
        held_out = int(round(self.val_split * len(perm)))
        return perm[held_out:], perm[:held_out]

    def _check_part_sizes(self, devices: int) -> None:
        """ConfigError when a part cannot fill a batch: config.validate_* predicts this from the known
        dataset sizes, this catches it from the real ones (e.g. for users of the Python API)."""
        split = self.split if self.bilevel else None
        arch = None if split is None else len(self.arch_idx)
        problem = too_few_samples(self.name, len(self.weight_idx), arch, self.batch_size, split, self.sample_ratio, devices)
        if problem:
            raise ConfigError(problem)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        size = self.resolution
        out = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=size < x.shape[-1], align_corners=False)
        return out.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else out

    @staticmethod
    def _stratified_sample(y: torch.Tensor, ratio: float, g: torch.Generator) -> torch.Tensor:
        if ratio >= 1:
            return torch.arange(len(y))
        keep = []
        for c in torch.unique(y):
            idx = (y == c).nonzero().squeeze(1)
            keep.append(idx[torch.randperm(len(idx), generator=g)[: _kept_per_class(len(idx), ratio)]])
        return torch.cat(keep).sort().values

    def training_class_counts(self) -> tuple[int, ...]:
        """Training images per class before ``sample_ratio``: read when the module was built for a folder or a
        dataset of the user's, known beforehand for the built-in datasets."""
        if self._folder is not None:
            labels = self._folder.train.labels
        elif self._data is not None:
            labels = self._data["train"][1]
        else:
            return train_class_counts(self.name, self.synthetic["samples"], self.synthetic["classes"])
        return tuple(torch.bincount(labels, minlength=self.num_classes).tolist())

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the data (Lightning stores it under the module's class name): the input the
        network expects and how it was normalised, so that an exported network (task=export) takes raw images as
        this module reads them. Empty before the data is read."""
        if not self._loaded:
            return {}
        return {"name": self.name, "image_size": self.image_size, "in_channels": self.in_channels,
                "num_classes": self.num_classes, "classes": list(self.classes), "dtype": self._image_dtype(),
                "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def _image_dtype(self) -> str:
        """The dtype of the images as this module reads them, before normalisation: uint8 (CIFAR, folders) or float32."""
        x = self.train_x if self.train_x is not None else None
        return "uint8" if x is None or x.dtype == torch.uint8 else str(x.dtype).removeprefix("torch.")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: a resumed run reads its data again (its statistics come out the same)."""

    # ---- placement and batches ---------------------------------------------------------------
    def rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            return trainer.global_rank, trainer.world_size
        return 0, 1

    @property
    def steps_per_epoch(self) -> int:
        _, world = self.rank_and_world()
        return len(self.weight_idx) // (self.batch_size * world)

    def _to_training_device(self) -> None:
        trainer = getattr(self, "trainer", None)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        if device != self.device:
            for key in ("train_x", "train_y", "test_x", "test_y", "mean", "std"):
                if getattr(self, key) is not None:  # a streamed folder holds no images
                    setattr(self, key, getattr(self, key).to(device))
            self.device = device

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def train_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._augmented(self.train_x[idx], self.train_y[idx])

    def _augmented(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # crop and flip before normalising, so the padding is black as in the reference pipeline
        # (pad the image, then convert and normalise), not the mean colour
        x = augment(x.float(), self.crop_padding, self.flip)
        if self.color_jitter or self.hue_jitter:
            x = folders.color_jitter(x, self.color_jitter, self.hue_jitter)
        return self.normalise(x), y

    def train_steps(self, parts: list[torch.Tensor]) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], ...]]:
        """Per step s, one augmented, normalised batch per part: parts[k][s] indexes the training images (a search
        passes its weight and architecture parts, retraining one)."""
        if not self.stream:
            idx = [p.to(self.device) for p in parts]
            for s in range(len(parts[0])):
                yield tuple(self.train_batch(p[s]) for p in idx)
            return
        f = self._folder
        steps = [tuple(p[s] for p in parts) for s in range(len(parts[0]))]
        reader = folders.BatchReader(self.train_files, f.mode, self.image_size, steps, crop=self.eval_crop,
                                     random_crop=self.random_resized_crop, seed=self.seed, epoch=self.current_epoch())
        for batches in folders.read_batches(reader, self.workers, pin_memory=self.device.type == "cuda"):
            yield tuple(self._augmented(x.to(self.device, non_blocking=True), y.to(self.device)) for x, y in batches)

    def eval_batches(self, which: str) -> _EvalBatches | _StreamedEvalBatches:
        """Unaugmented batches of the held-out part of the training images ("held_out") or the test split."""
        if self.stream:
            split, idx = ((self.train_files, self.arch_idx) if which == "held_out" else
                          (self.test_files, torch.arange(len(self.test_files))))
            return _StreamedEvalBatches(self, split, idx)
        if which == "held_out":
            idx = self.arch_idx.to(self.device)
            return _EvalBatches(self, self.train_x[idx], self.train_y[idx])
        return _EvalBatches(self, self.test_x, self.test_y)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def current_epoch(self) -> int:
        """The epoch to shuffle for: the trainer's when attached (right after a resume too), else a counter."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.current_epoch
        self.epoch += 1
        return self.epoch - 1

    def train_dataloader(self) -> _TrainBatches | _PlainBatches:
        self.setup()
        self._to_training_device()
        self._check_part_sizes(devices=self.rank_and_world()[1])
        return _TrainBatches(self) if self.bilevel else _PlainBatches(self)

    def _validates_on_held_out_part(self) -> bool:
        """Whether validation reads the held-out part of the training images (arch_idx) rather than the test split."""
        return self.val_on == "arch" if self.bilevel else bool(self.val_split)

    def val_dataloader(self) -> _EvalBatches | _StreamedEvalBatches:
        self.setup()
        self._to_training_device()
        return self.eval_batches("held_out" if self._validates_on_held_out_part() else "test")

    def test_dataloader(self) -> _EvalBatches | _StreamedEvalBatches:
        self.setup()
        self._to_training_device()
        return self.eval_batches("test")


class SearchDataModule(ImageDataModule):
    """The data of a search from Python: an ``ImageDataModule`` with ``bilevel=True`` (the same arguments)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, bilevel=True, **kwargs)


class TrainDataModule(ImageDataModule):
    """The data of a retraining from Python: an ``ImageDataModule`` with ``bilevel=False``, cutout 16 unless given
    (``split`` and ``val_on``, which only a search reads, may be given and change nothing)."""

    def __init__(self, *args: Any, cutout: int = 16, **kwargs: Any):
        super().__init__(*args, bilevel=False, cutout=cutout, **kwargs)
