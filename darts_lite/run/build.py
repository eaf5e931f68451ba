"""The objects of a run, built from a composed, validated config: each group names its class with ``_target_`` and
its keys are that class's arguments (``darts_lite.schema.build``); what a task adds itself is passed here."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from ..data import ImageDataModule
from ..lookup import BenchmarkLookup
from ..registry import load_path
from ..schema import build, parameters
from ..search import SearchModule
from ..spaces import parse_genotype
from ..train import TrainModule
from ..tricks import CollapseGuard


def _plain(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def build_datamodule(cfg: DictConfig, *, bilevel: bool, cutout: int = 0, val_split: float = 0.0,
                     **replace: Any) -> ImageDataModule:
    """The data group's data module: a search's weight/architecture split (``bilevel``), or the training images
    whole for retraining, with ``cutout`` and ``val_split`` held out. ``replace``: values that take the place of the
    group's (what a proxy setting decides)."""
    given = {"bilevel": True} if bilevel else {"bilevel": False, "cutout": cutout, "val_split": val_split}
    return build({**_plain(cfg.data), **replace}, "data", seed=cfg.seed, **given)


def network_config(cfg: DictConfig, dm: ImageDataModule) -> dict[str, Any]:
    """The supernet as SearchModule takes it: the space group (its _target_ and arguments; ``name`` is derived, not
    an argument) with the data's classes and input channels."""
    space = _plain(cfg.space)
    space.pop("name", None)
    return dict(space, in_channels=dm.in_channels, num_classes=dm.num_classes)


def build_search_module(cfg: DictConfig, dm: ImageDataModule) -> SearchModule:
    """The search group's SearchModule over the space group's supernet."""
    return build(cfg.search, "search", network=network_config(cfg, dm))


def build_guard(cfg: DictConfig) -> CollapseGuard | None:
    """The collapse guard the ``guard`` group asks for (``guard=collapse``), or None (``guard=none``)."""
    node = cfg.get("guard")
    return build(node, "guard") if node is not None and "_target_" in node else None


def build_lookup(cfg: DictConfig) -> BenchmarkLookup | None:
    """The NAS-Bench-201 benchmark look-up when ``benchmark.path`` is set; else None, and on the NAS-Bench-201 space
    one line saying how to switch it on."""
    bench = cfg.get("benchmark")
    if bench is None or bench.get("path") is None:
        if cfg.space.get("name") == "nb201":
            rank_zero_info("benchmark look-up off: with a NATS-Bench topology file, benchmark.path=<file or folder> "
                           "logs each epoch's cell's published accuracies (pip install \"darts_lite[nb201]\")")
        return None
    return build({"_target_": "darts_lite.lookup.BenchmarkLookup", **_plain(bench)}, "benchmark")


TRAIN_TARGET = "darts_lite.train.TrainModule"  # what a train group without _target_ (an older config) builds


def train_arguments(train: dict[str, Any]) -> dict[str, Any]:
    """The train group's node for its LightningModule: its ``_target_`` and the keys that are the target's arguments
    (its signature says which); the others size the evaluation network (the space's eval_network_options reads them)
    or are the task's (space, cutout)."""
    target = train.get("_target_", TRAIN_TARGET)
    taken = parameters(load_path(target))
    return {"_target_": target, **{k: v for k, v in train.items() if k in taken and k not in ("genotype", "network")}}


def build_train_module(cfg: DictConfig, dm: ImageDataModule, genotype: Any) -> TrainModule:
    """The train group's LightningModule for ``genotype``'s evaluation network, sized by the group's network keys."""
    train = _plain(cfg.train)
    space, _ = parse_genotype(genotype.to_text())
    network = dict(space.eval_network_options(train), num_classes=dm.num_classes, in_channels=dm.in_channels)
    return build(train_arguments(train), "train", genotype=genotype.to_text(), network=network)
