"""Data and Lightning modules from a composed, validated config."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from ..data import SearchDataModule, TrainDataModule
from ..lookup import BenchmarkLookup
from ..search import SearchModule
from ..spaces import parse_genotype
from ..train import TrainModule
from ..tricks import CollapseGuard, DerivedValidation

# the data group's keys a data module takes, and the train group's keys TrainModule takes (besides the network)
DATA_KEYS = (
    "name", "root", "batch_size", "eval_batch_size", "split", "sample_ratio", "resolution", "crop_padding",
    "flip", "download", "synthetic_samples", "synthetic_classes", "synthetic_size", "synthetic_channels", "val_on",
)
_SEARCH_KEYS = (
    "order", "epochs", "warmup_epochs", "lr", "lr_min", "momentum", "nesterov", "weight_decay", "grad_clip", "arch_lr",
    "arch_betas", "arch_weight_decay", "tau_max", "tau_min", "unrolled_eps", "hvp", "channels_last", "compile",
    "perturb", "perturb_epsilon", "perturb_steps", "resource", "resource_weight", "resource_target", "resource_latency_table",
)
TRAIN_KEYS = ("epochs", "lr", "lr_min", "momentum", "nesterov", "weight_decay", "grad_clip", "auxiliary_weight",
               "drop_path_prob", "channels_last", "compile")


def build_datamodule(cfg: DictConfig) -> SearchDataModule:
    """The data of ``cfg.task``: the search split (weights / architecture) or the retraining data."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    kwargs = {k: data[k] for k in DATA_KEYS if k in data}
    if cfg.task == "train":
        return TrainDataModule(seed=cfg.seed, cutout=cfg.train.cutout, **kwargs)
    return SearchDataModule(seed=cfg.seed, **kwargs)


def build_search_module(cfg: DictConfig, dm: SearchDataModule) -> SearchModule:
    """The SearchModule of ``cfg.space.name``'s supernet: every other key of the space group is a SearchNetwork argument."""
    space = OmegaConf.to_container(cfg.space, resolve=True)
    name = space.pop("name")
    network = dict(space, relaxation=cfg.search.relaxation, in_channels=dm.in_channels, num_classes=dm.num_classes,
                   checkpoint_cells=bool(cfg.search.get("checkpoint_cells", False)))
    # PC-DARTS's keywords only when switched on: the other spaces' networks do not take them (config checks say so)
    for key, off in (("partial_channels", 1), ("edge_normalization", False)):
        if cfg.search.get(key, off) != off:
            network[key] = cfg.search[key]
    search = OmegaConf.to_container(cfg.search, resolve=True)
    return SearchModule(network=network, space=name, **{k: search[k] for k in _SEARCH_KEYS})


def build_guard(cfg: DictConfig) -> CollapseGuard | None:
    """The collapse guard the ``guard`` group asks for (``guard=collapse``), or None (``guard=none``)."""
    if "guard" not in cfg:
        return None
    guard = OmegaConf.to_container(cfg.guard, resolve=True)
    if guard.pop("name") == "none":
        return None
    return CollapseGuard(**guard)


def build_derived_validation(cfg: DictConfig) -> DerivedValidation | None:
    """``val/acc_derived`` every epoch when ``search.bn_calibration`` > 0 (the calibration batches), else None."""
    batches = cfg.search.get("bn_calibration", 0)
    return DerivedValidation(batches) if batches else None


def build_lookup(cfg: DictConfig) -> BenchmarkLookup | None:
    """The NAS-Bench-201 benchmark look-up when ``benchmark.path`` is set; else None, and on the NB201 space one
    line saying how to switch it on."""
    bench = cfg.get("benchmark")
    if bench is None or bench.get("path") is None:
        if cfg.space.get("name") == "nb201":
            rank_zero_info("benchmark look-up off: with a NATS-Bench topology file, benchmark.path=<file or folder> "
                           "logs each epoch's cell's published accuracies (pip install \"darts_lite[nb201]\")")
        return None
    return BenchmarkLookup(bench.path, bench.hp, list(bench.datasets))


def build_train_module(cfg: DictConfig, dm: TrainDataModule, genotype: Any) -> TrainModule:
    """The TrainModule of ``genotype``'s evaluation network, sized by the train group (its space reads the keys)."""
    train = OmegaConf.to_container(cfg.train, resolve=True)
    space, _ = parse_genotype(genotype.to_text())
    network = dict(space.eval_network_options(train), num_classes=dm.num_classes, in_channels=dm.in_channels)
    return TrainModule(genotype.to_text(), network=network, **{k: train[k] for k in TRAIN_KEYS})
