"""Images kept one sub-folder per class: ``data=folder`` (any such folder) and ``data=imagenet`` (the ILSVRC layout).

A folder is scanned when the data module is built (its classes, channels and image side size the network built
before training): ``ROOT/train/<class>/<image>`` and ``ROOT/test/<class>/<image>`` (or ``val/``), or
``ROOT/<class>/<image>`` alone, split here into training and test images by a fixed seeded, per-class draw. Every
problem a user can make (a missing folder, a class without images, an unreadable image, sizes that differ without
``data.resolution``) is one ``DatasetUnavailable`` line before training starts.

Images are decoded with Pillow into uint8 tensors [C, side, side]: either all of them once, to be held in memory as
darts_lite holds its built-in datasets, or, for a folder too large for that (``data.stream``), a batch at a time in
DataLoader worker processes, every step. Streamed training images may take the Inception-style random resized
crop (ImageNet's recipe); it draws from (seed, epoch, image index) alone, so a resumed run decodes the same crops.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetUnavailable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# Pillow modes that hold one channel; a folder of nothing else is read as grayscale, any other mode makes it RGB
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
# the seed of the fixed split of a folder without test images: the split belongs to the data, not to a run
SPLIT_SEED = 1234


class FolderProblem(Exception):
    """Raised inside the scan; the data module turns it into DatasetUnavailable with the data key to change."""


@dataclass(frozen=True)
class FolderSplit:
    """One split's images: file paths (sorted by class, then path) and their labels."""

    paths: tuple[str, ...]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class ImageFolder:
    """What a scan found: the classes (sub-folder names, sorted), the two splits, and how they are read."""

    root: Path
    classes: tuple[str, ...]
    train: FolderSplit
    test: FolderSplit
    channels: int  # 1 (every image grayscale) or 3
    native: int | None  # the images' common side when they are all square and of one size, else None
    layout: str  # how the splits were found, for the info line
    sizes: dict[tuple[int, int], str] = field(default_factory=dict, compare=False, repr=False)  # size: one path

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _read_classes(folder: Path, where: str, classes: Sequence[str] | None = None) -> tuple[list[str], list[list[Path]]]:
    """The class sub-folders of ``folder`` and their images; ``classes``: the training classes a test folder must
    draw from."""
    subs = _class_folders(folder)
    if not subs:
        loose = _images_in(folder)
        hint = (f" ({len(loose)} images lie in it directly: move each into a sub-folder named after its class)"
                if loose else "")
        raise FolderProblem(f"{where} has no class sub-folders{hint}; keep the images one sub-folder per class: "
                            f"{where}/<class>/<image>")
    names, files = [], []
    for sub in subs:
        images = _images_in(sub)
        if not images:
            raise FolderProblem(f"class folder {where}/{sub.name} has no images ({', '.join(IMAGE_SUFFIXES)})")
        names.append(sub.name)
        files.append(images)
    if classes is not None:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise FolderProblem(f"{where} has class folders the training images do not: {', '.join(unknown[:5])}"
                                f"{' ...' if len(unknown) > 5 else ''}")
    return names, files


def _split(names: list[str], files: list[list[Path]], test_share: float) -> tuple[FolderSplit, FolderSplit]:
    """A fixed per-class draw of ``test_share`` of each class's images for the test split (at least one of a class
    of two or more, never all of one)."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    train, test = ([], []), ([], [])
    for label, images in enumerate(files):
        order = torch.randperm(len(images), generator=g).tolist()
        n_test = min(len(images) - 1, max(1 if len(images) > 1 else 0, round(test_share * len(images))))
        chosen = set(order[:n_test])
        for i, path in enumerate(images):
            part = test if i in chosen else train
            part[0].append(str(path))
            part[1].append(label)
    return tuple(FolderSplit(tuple(p), torch.tensor(y, dtype=torch.int64)) for p, y in (train, test))


def _as_split(names: list[str], files: list[list[Path]], classes: Sequence[str]) -> FolderSplit:
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    for name, images in zip(names, files):
        paths += [str(p) for p in images]
        labels += [index[name]] * len(images)
    return FolderSplit(tuple(paths), torch.tensor(labels, dtype=torch.int64))


def _headers(paths: Sequence[str], progress: str) -> tuple[set[str], dict[tuple[int, int], str]]:
    """(Pillow modes, {size: one path of that size}) of every image, reading headers only."""
    from PIL import Image, UnidentifiedImageError

    modes: set[str] = set()
    sizes: dict[tuple[int, int], str] = {}
    report = _Progress(len(paths), progress)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                modes.add(im.mode)
                sizes.setdefault(im.size, path)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise FolderProblem(f"{path} cannot be read as an image ({_reason(e)}); delete or replace it") from None
        report.step(i + 1)
    return modes, sizes


def _reason(e: BaseException) -> str:
    text = str(e).split("\n")[0]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class _Progress:
    """A line on stderr every few seconds while a long pass over the images runs (nothing for a short one)."""

    def __init__(self, total: int, what: str, every_s: float = 5.0):
        self.total, self.what, self.every_s = total, what, every_s
        self.start = self.last = time.monotonic()

    def step(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s or (done == self.total and now - self.start >= self.every_s):
            self.last = now
            print(f"darts_lite: {self.what}: {done:,} / {self.total:,} images", file=sys.stderr, flush=True)


def scan_image_folder(root: str | Path, *, test_share: float = 0.2, channels: int | None = None,
                      read_headers: bool = True) -> ImageFolder:
    """The classes and splits of ``root`` (see the module's docstring). ``channels`` given (1 or 3) fixes how the
    images are read; otherwise, and whenever ``read_headers``, every image's header is read: to find its channels,
    its size and that it is an image at all."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FolderProblem(f"{root} is not a folder" if root.exists() else f"{root} does not exist")
    test_folder = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir():
        classes, files = _read_classes(root / "train", str(root / "train"))
        train = _as_split(classes, files, classes)
        if test_folder is not None:
            test = _as_split(*_read_classes(test_folder, str(test_folder), classes), classes)
            layout = f"train/ and {test_folder.name}/"
        else:
            train, test = _split(classes, files, test_share)
            layout = f"train/ only: a fixed {test_share:.0%} of each class held out for testing"
    else:
        classes, files = _read_classes(root, str(root))
        train, test = _split(classes, files, test_share)
        layout = f"one folder: a fixed {test_share:.0%} of each class held out for testing"
    if not len(test):
        raise FolderProblem(f"{root}: no test images (every class has a single image); add images or a test/ folder")
    native = None
    if channels is None or read_headers:
        modes, sizes = _headers(train.paths + test.paths, f"reading the headers of {root}")
        if channels is None:
            channels = 1 if modes <= _GRAY_MODES else 3
        if len(sizes) == 1:
            (w, h), = sizes
            native = w if w == h else None
    else:
        sizes = {}
    return ImageFolder(root, tuple(classes), train, test, channels, native, layout, sizes)


def size_problem(folder: ImageFolder) -> str | None:
    """Why the images need ``data.resolution`` (they differ in size, or are not square); None when they do not."""
    sizes = folder.sizes
    if not sizes:
        return "the images' sizes were not read"
    if folder.native is not None:
        return None
    if len(sizes) > 1:
        (a, pa), (b, pb) = list(sizes.items())[:2]
        return (f"the images differ in size ({len(sizes)} sizes, e.g. {a[0]}x{a[1]} ({pa}) and {b[0]}x{b[1]} ({pb}))")
    (w, h), = sizes
    return f"the images are {w}x{h}, not square"


# ---- decoding ------------------------------------------------------------------------------------------------
def centre_box(width: int, height: int, crop: float | None) -> tuple[float, float, float, float] | None:
    """The square of ``crop`` x the shorter side at the image's centre (ImageNet's test crop: 0.875, i.e. resize to
    256 and keep the central 224); None (crop=None): the whole image, squeezed to a square."""
    if crop is None:
        return None
    side = crop * min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def random_resized_box(width: int, height: int, rng: np.random.Generator, scale: tuple[float, float] = (0.08, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """The Inception crop: a box of a uniform share ``scale`` of the image's area and a log-uniform aspect ``ratio``,
    at a uniform place; after 10 draws that do not fit, the largest centred box of an aspect within ``ratio``."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return (left, top, left + w, top + h)
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return (left, top, left + w, top + h)


def decode(path: str, mode: str, side: int, *, crop: float | None = None,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """One image as uint8 [C, side, side]: converted to ``mode``, the box (a random resized crop when ``rng`` is
    given, else the centre crop ``crop`` or the whole image) resized to side x side (bilinear, antialiased when it
    shrinks). Raises the exception Pillow raises for an unreadable file."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert(mode)
        box = random_resized_box(*im.size, rng) if rng is not None else centre_box(*im.size, crop)
        if box is not None or im.size != (side, side):
            im = im.resize((side, side), Image.BILINEAR, box=box)
        a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


class _ReadFailed:
    """What a worker returns instead of a batch when an image cannot be read (the main process raises it as one
    line, not as a worker's traceback)."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason


@dataclass
class BatchReader(torch.utils.data.Dataset):
    """Item s: the images of step s's index lists decoded: a tuple of (uint8 [B, C, side, side], labels [B]) per
    list (a search step has two: the weight batch and the architecture batch). ``random_crop``: training images
    with the random resized crop drawn from (seed, epoch, image index), else the centre crop ``crop``."""

    split: FolderSplit
    mode: str
    side: int
    steps: Sequence[Sequence[torch.Tensor]]
    crop: float | None = None
    random_crop: bool = False
    seed: int = 0
    epoch: int = 0

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, s: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...] | _ReadFailed:
        parts = []
        for idx in self.steps[s]:
            images = []
            for i in idx.tolist():
                path = self.split.paths[i]
                rng = np.random.default_rng([self.seed, self.epoch, i]) if self.random_crop else None
                try:
                    images.append(decode(path, self.mode, self.side, crop=self.crop, rng=rng))
                except Exception as e:  # noqa: BLE001 - any failure to read one file is reported with its path
                    return _ReadFailed(path, _reason(e))
            parts.append((torch.from_numpy(np.stack(images)), self.split.labels[idx]))
        return tuple(parts)


def read_batches(reader: BatchReader, workers: int,
                 pin_memory: bool = False) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], ...]]:
    """The reader's items in order, decoded by ``workers`` processes (0: in this one); an unreadable image stops
    with DatasetUnavailable naming it."""
    # the loader draws its workers' base seed from its own generator, not from torch's global one: the training's
    # random stream (augmentation, drop path, Gumbel draws) stays what it is when the images are held in memory
    loader = torch.utils.data.DataLoader(reader, batch_size=None, shuffle=False, num_workers=workers,
                                         pin_memory=pin_memory, prefetch_factor=4 if workers else None,
                                         generator=torch.Generator().manual_seed(0))
    for item in loader:
        if isinstance(item, _ReadFailed):
            raise DatasetUnavailable(f"{item.path} cannot be read as an image ({item.reason}); delete or replace it")
        yield item


def read_all(split: FolderSplit, mode: str, side: int, crop: float | None, workers: int, what: str,
             indices: torch.Tensor | None = None, batch: int = 256) -> torch.Tensor:
    """Images of ``split`` (all, or ``indices``) decoded into one uint8 tensor [N, C, side, side], with progress."""
    idx = torch.arange(len(split)) if indices is None else indices
    chunks = [(c,) for c in idx.split(batch)]
    report = _Progress(len(idx), what)
    out, done = [], 0
    for (x, _), in read_batches(BatchReader(split, mode, side, chunks, crop=crop), workers):
        out.append(x)
        done += len(x)
        report.step(done)
    return torch.cat(out) if out else torch.empty(0, 1 if mode == "L" else 3, side, side, dtype=torch.uint8)


# ---- colour jitter on whole batches ---------------------------------------------------------------------------
def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of RGB x [B, 3, H, W] as [B, 1, H, W]."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], 1)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def color_jitter(x: torch.Tensor, strength: float, hue: float) -> torch.Tensor:
    """Per image: brightness, contrast and saturation each scaled by a factor uniform in [1 - strength,
    1 + strength], then the hue turned by a uniform share in [-hue, hue] of the colour circle, in that order.
    x: RGB [B, 3, H, W] with values 0..255 (kept in that range); a one-channel x gets brightness and contrast only."""
    if strength <= 0 and hue <= 0:
        return x
    b = x.shape[0]

    def factor() -> torch.Tensor:
        return torch.empty(b, 1, 1, 1, device=x.device).uniform_(max(0.0, 1 - strength), 1 + strength)

    if strength > 0:
        x = (x * factor()).clamp(0, 255)
        gray = _gray(x) if x.shape[1] == 3 else x
        mean = gray.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * factor() + mean).clamp(0, 255)
        if x.shape[1] == 3:
            gray = _gray(x)
            x = ((x - gray) * factor() + gray).clamp(0, 255)
    if hue > 0 and x.shape[1] == 3:
        hsv = _rgb_to_hsv(x / 255)
        shift = torch.empty(b, 1, 1, device=x.device).uniform_(-hue, hue)
        hsv = torch.stack(((hsv[:, 0] + shift) % 1.0, hsv[:, 1], hsv[:, 2]), 1)
        x = (_hsv_to_rgb(hsv) * 255).clamp(0, 255)
    return x


def describe(folder: ImageFolder, side: int, stream: bool, workers: int) -> str:
    """The info line a run prints about the folder it reads."""
    how = (f"streamed from disk by {workers} worker process{'es' if workers > 1 else ''}" if stream and workers else
           "streamed from disk" if stream else "held in memory")
    return (f"{folder.root}: {len(folder.classes)} classes, {len(folder.train):,} training and {len(folder.test):,} "
            f"test images ({folder.layout}), {'grayscale' if folder.channels == 1 else 'RGB'}, read at "
            f"{side}x{side}, {how}")


def estimated_bytes(folder: ImageFolder, side: int) -> int:
    """Memory the decoded images take as uint8 tensors."""
    return (len(folder.train) + len(folder.test)) * folder.channels * side * side
