"""Training settings of an evaluation, named as EcoNAS names them.

A setting is how one architecture is trained: channels C, cells N, input side r, the share of the training
images s, epochs e, batch size and learning rate. EcoNAS names a reduced setting (a proxy) by reduction
factors of the full recipe: ``c{x}r{x}s{x}e{E}``, where x divides the channels, the resolution and the
training samples (0 = not reduced) and E is the number of epochs. darts_lite adds an optional ``n{x}``
that divides the cells, so the depth proxies that EcoNAS found harmful can be measured too. So on CIFAR-10
with the DARTS evaluation network (C=36, 20 cells, 32 px), ``c4r4s0e60`` is C=9, 8 px, all 50k images,
60 epochs, and ``c0r0s0e600`` is the full recipe.

A setting entry of the config is a name or a mapping with ``name`` and any of ``layers``, ``batch_size``,
``lr`` (values a name cannot carry); a name with a file ``conf/setting/NAME.yaml`` takes that file's values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError

_NAME = re.compile(r"^c(\d+)r(\d+)s(\d+)e(\d+)(?:n(\d+))?$")
MIN_SIDE = 4  # px: two reductions of the evaluation network leave a 1x1 map
# the fewest cells an evaluation network takes: DARTS's reduces at layers//3 and 2*layers//3; NAS-Bench-201's
# layers are cells per stage
MIN_LAYERS = {"darts": 3, "nb201": 1}


@dataclass(frozen=True)
class Base:
    """The full recipe the reduction factors divide: the train group's network and the dataset's images."""

    channels: int
    layers: int
    resolution: int
    class_counts: tuple[int, ...]  # training images per class
    batch_size: int
    lr: float
    dataset: str = "?"
    min_layers: int = 3  # the fewest cells the evaluation network takes (DARTS: 3; NAS-Bench-201: 1 per stage)


@dataclass(frozen=True)
class Setting:
    """One training setting, resolved against a Base."""

    name: str
    channels: int
    layers: int
    resolution: int
    sample_ratio: float
    epochs: int
    batch_size: int
    lr: float

    def values(self) -> dict[str, Any]:
        return asdict(self)

    def images(self, base: Base) -> int:
        """Training images one epoch reads (before any validation hold-out): what the data module keeps."""
        from ..data import part_sizes

        return part_sizes(base.class_counts, None, self.sample_ratio)[0]


def parse_name(name: str) -> tuple[int, int, int, int, int]:
    """(c, r, s, e, n) of ``c{x}r{x}s{x}e{E}[n{x}]``; ValueError saying the grammar otherwise."""
    m = _NAME.match(str(name).strip())
    if not m:
        raise ValueError(
            f"setting {name!r} is not a setting name: c{{x}}r{{x}}s{{x}}e{{E}} with x the reduction factor of channels, "
            "resolution and training samples (0 = not reduced) and E the epochs, optionally n{x} dividing the cells, "
            "e.g. c4r4s0e60"
        )
    c, r, s, e, n = (int(g) if g is not None else 0 for g in m.groups())
    if e < 1:
        raise ValueError(f"setting {name!r}: e{e} trains no epoch; E must be >= 1")
    return c, r, s, e, n


def _factor(x: int) -> int:
    return max(1, x)  # 0 and 1 both mean "not reduced"


def resolve(entry: str | Mapping[str, Any], base: Base, setting_dir: str | Path | None = None) -> Setting:
    """The Setting an entry names (see the module docstring); ValueError with what is wrong and what to do."""
    if isinstance(entry, DictConfig):
        entry = OmegaConf.to_container(entry, resolve=True)
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise ValueError(f"setting {entry!r}: give a name (c4r4s0e60) or a mapping with a name and layers/batch_size/lr")
    extra = set(entry) - {"name", "layers", "batch_size", "lr"}
    if extra:
        raise ValueError(f"setting {entry['name']!r}: unknown keys {sorted(extra)}; a setting may set layers, batch_size, lr")
    name = entry["name"].strip()
    values = dict(entry)
    file = None if setting_dir is None else Path(setting_dir) / f"{name}.yaml"
    if file is not None and file.is_file():
        stored = OmegaConf.to_container(OmegaConf.load(file), resolve=True)
        values = {**stored, **{k: v for k, v in entry.items() if v is not None}}
        name = str(values.get("name", name))
    elif file is not None and not _NAME.match(name):
        known = sorted(p.stem for p in file.parent.glob("*.yaml"))
        raise ValueError(f"unknown setting {name!r}: not a c{{x}}r{{x}}s{{x}}e{{E}} name and not one of {', '.join(known)}")
    c, r, s, e, n = parse_name(name)
    channels = base.channels // _factor(c)
    if channels < 1:
        raise ValueError(f"setting {name!r}: c{c} leaves {base.channels}//{c} = 0 channels")
    side = base.resolution // _factor(r)
    if side < MIN_SIDE:
        raise ValueError(f"setting {name!r}: r{r} makes {base.resolution} px images {side} px, under {MIN_SIDE} px; "
                         "use a smaller resolution factor")
    ratio = 1.0 / _factor(s)
    fewest = min(base.class_counts)
    if fewest / _factor(s) < 1:
        raise ValueError(f"setting {name!r}: s{s} keeps {fewest}/{s} < 1 image of the smallest {base.dataset} class; "
                         "use a smaller sample factor")
    layers = values.get("layers") or base.layers // _factor(n)
    if not isinstance(layers, int) or layers < base.min_layers:
        raise ValueError(f"setting {name!r}: {layers} cells; the evaluation network needs at least {base.min_layers} "
                         f"(the base has {base.layers})")
    batch_size = values.get("batch_size") or base.batch_size
    lr = values.get("lr") or base.lr
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"setting {name!r}: batch_size={batch_size!r} must be an integer >= 1")
    if not isinstance(lr, (int, float)) or lr <= 0:
        raise ValueError(f"setting {name!r}: lr={lr!r} must be a number > 0")
    return Setting(name, channels, layers, side, ratio, e, batch_size, float(lr))


def base_from_config(cfg: DictConfig) -> Base:
    """The full recipe of a composed config: the train group's C and layers, the data group's images and batch."""
    from ..data import READ_WHEN_BUILT, native_size, train_class_counts

    data = cfg.data
    if data.name in READ_WHEN_BUILT:  # a folder or dataset of the user's: its sizes are known once it is read
        from omegaconf import OmegaConf

        from ..schema import build

        node = {k: v for k, v in OmegaConf.to_container(data, resolve=True).items() if k not in ("split", "val_on")}
        dm = build(node, "data", bilevel=False)
        counts, side = dm.training_class_counts(), dm.image_size
    else:
        synthetic = {"synthetic_samples": data.get("synthetic_samples", 512),
                     "synthetic_classes": data.get("synthetic_classes", 4)}
        counts = train_class_counts(data.name, **synthetic)
        side = data.get("resolution") or native_size(data.name, data.get("synthetic_size"))
    space = str(cfg.train.get("space", "darts"))
    return Base(channels=int(cfg.train.C), layers=int(cfg.train.layers), resolution=int(side), class_counts=counts,
                batch_size=int(data.batch_size), lr=float(cfg.train.lr), dataset=str(data.name),
                min_layers=MIN_LAYERS.get(space, 1))


def setting_dir() -> Path:
    """conf/setting: the settings that have a file (batch size and learning rate beside the name)."""
    from ..config import config_dir

    return Path(config_dir()) / "setting"


def resolve_all(entries: Any, base: Base) -> list[Setting]:
    """Every entry resolved, or one ConfigError listing every bad entry."""
    settings, problems = [], []
    for entry in entries:
        try:
            settings.append(resolve(entry, base, setting_dir()))
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError("; ".join(problems))
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        raise ConfigError(f"settings {names}: a name appears twice")
    return settings
