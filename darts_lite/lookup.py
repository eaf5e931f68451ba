"""Benchmark look-up for searches on the NAS-Bench-201 space.

With a NATS-Bench topology benchmark (the successor of NAS-Bench-201: the same 15625 cells, trained on CIFAR-10,
CIFAR-100 and ImageNet16-120), ``BenchmarkLookup`` looks up the cell the alphas derive after every training epoch and
logs its published accuracies beside the search metrics, so a search curve shows how good its cell really is:

    benchmark/<dataset>_test_acc    test accuracy after the benchmark's training (hp="200": 200 epochs)
    benchmark/<dataset>_valid_acc   validation accuracy, where the benchmark has one

Accuracies are in percent, as the benchmark stores them, each the mean over the benchmark's training seeds. CIFAR-10's
validation accuracy is the one of the benchmark's "cifar10-valid" training (on the train split only, validated on
the held-out half), since the "cifar10" training uses both splits and has no validation set.

The benchmark is read with the ``nats_bench`` package (``pip install nats_bench`` or the ``nb201`` extra): a folder
(the benchmark's per-architecture archive, read lazily) or a single pickle file (read whole at the start).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import pytorch_lightning as pl

from .errors import ConfigError
from .schema import Allowed, MinLen, OneOf, checked

log = logging.getLogger("darts_lite")

SPACE = "nb201"
HPS = ("12", "200")  # the benchmark's training schedules of the topology space, in epochs
DATASETS = ("cifar10", "cifar100", "ImageNet16-120", "cifar10-valid")
DEFAULT_DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
INSTALL_HINT = 'pip install nats_bench (or pip install "darts_lite[nb201]")'


def check_benchmark(path: str | Path) -> Path:
    """``path`` expanded, after checking that it exists and that the nats_bench package is installed."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"benchmark.path={path} does not exist: give a NATS-Bench topology benchmark "
                          "(the NATS-tss-v1_0-3ffb9-simple folder, or a single .pickle.pbz2 file)")
    try:
        import nats_bench  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"the benchmark look-up (benchmark.path={path}) needs the nats_bench package: {INSTALL_HINT}") from e
    return path


def open_benchmark(path: str | Path) -> Any:
    """The NATS-Bench topology API on ``path``: a folder is opened lazily (each architecture's file is read when it is
    first looked up), a file is read whole. Raises ConfigError when the path or the package is missing, or when a
    file is not a benchmark: one holding objects other than plain values (see ``safe_pickle_load``) included."""
    path = check_benchmark(path)
    import nats_bench

    guard_pickles()
    try:
        return nats_bench.create(str(path), "tss", fast_mode=path.is_dir(), verbose=False)
    except Exception as e:  # the package raises many kinds on a wrong file: each means the same to a user
        raise ConfigError(f"benchmark.path={path} could not be opened as a NATS-Bench topology benchmark "
                          f"({type(e).__name__}: {str(e)[:300]})") from None


# ---- reading the benchmark's pickles without running code -----------------------------------------------------------
# What a NATS-Bench file may hold besides dicts, lists, tuples, strings and numbers: the classes and functions the
# pickles name, each building a plain value. A pickle names any callable it likes, and unpickling calls it: anything
# not here is refused before it is called.
_PICKLE_GLOBALS = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    *(("builtins", name) for name in ("set", "frozenset", "list", "dict", "tuple", "int", "float", "complex", "str",
                                      "bool", "bytes", "bytearray", "slice")),
    *((module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
      for name in ("scalar", "_reconstruct")),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
}


def _storage_from_bytes(data: bytes) -> Any:
    """A tensor storage pickled by torch (the full benchmark's trained weights), read weights-only: torch's own
    ``torch.storage._load_from_bytes`` unpickles it with no such restriction."""
    import io

    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler that builds plain values only (``_PICKLE_GLOBALS``); ConfigError naming ``where`` for anything
    else a pickle asks for."""

    def __init__(self, file: Any, where: str):
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _storage_from_bytes
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise ConfigError(f"{self.where}: holds a {module}.{name} object, which no NATS-Bench file holds; darts_lite "
                          "reads only plain values from a benchmark's pickles (nothing in them is run)")


def safe_pickle_load(file_path: Any, ext: str = ".pbz2") -> Any:
    """What ``nats_bench.api_utils.pickle_load`` reads (the bz2-compressed pickle at ``file_path``, or at
    ``file_path + ext``), built by ``_PlainUnpickler``: no code a pickle names runs."""
    import bz2
    import os

    where = str(file_path) if os.path.isfile(str(file_path)) else str(file_path) + ext
    with bz2.BZ2File(where, "rb") as f:
        return _PlainUnpickler(f, f"benchmark file {where}").load()


def guard_pickles() -> None:
    """Make the nats_bench package read every benchmark file (the whole file, the folder's meta file, each
    architecture's file when it is looked up) with ``safe_pickle_load``: it reads them with ``pickle.load``, which
    runs whatever code a pickle names. Its modules hold the function under their own names: each is replaced."""
    import importlib

    for name in ("nats_bench", "nats_bench.api_utils", "nats_bench.api_topology", "nats_bench.api_size"):
        module = importlib.import_module(name)
        if hasattr(module, "pickle_load"):
            module.pickle_load = safe_pickle_load


class BenchmarkLookup(pl.Callback):
    """Logs the benchmark accuracies of the derived NAS-Bench-201 cell after every training epoch.

    path: a NATS-Bench topology benchmark folder or file. hp: its training schedule, "200" (epochs) or "12".
    datasets: which of the benchmark's datasets to report.

    Rank 0 opens the benchmark (once, at the start of training) and looks the cell up; the values are sent to every
    rank, so all ranks log the same numbers. ``last`` holds the latest look-up (epoch, genotype, index, metrics) and
    ``history`` the metrics per epoch, for a run summary.
    """

    @checked
    def __init__(
        self,
        path: Annotated[str | Path, Allowed("a NATS-Bench topology benchmark folder or .pickle.pbz2 file")],
        hp: Annotated[str | int, OneOf(HPS, (12, 200)), Allowed(f"one of {', '.join(HPS)} (the benchmark's training "
                                                                "epochs)")] = "200",
        datasets: Annotated[Sequence[Annotated[str, OneOf(DATASETS)]], MinLen(1),
                            Allowed(f"a non-empty list of {', '.join(DATASETS)}")] = DEFAULT_DATASETS,
    ):
        self.path, self.hp, self.datasets = Path(path), str(hp), list(datasets)
        self.api: Any = None
        self.last: dict[str, Any] | None = None
        self.history: dict[int, dict[str, float]] = {}
        self._warned: set[str] = set()

    # ---- hooks ------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        from .spaces import space_of

        space = space_of(module.net).NAME if hasattr(module, "net") else None
        if space != SPACE:
            raise ConfigError(f"the benchmark look-up (benchmark.path) covers the NAS-Bench-201 space only: set space={SPACE} "
                              f"or leave benchmark.path empty (the search runs space={space})")
        # every rank checks the path and the package, so that a mistake stops all of them, not rank 0 alone
        check_benchmark(self.path)
        if trainer.is_global_zero and self.api is None:
            self.api = open_benchmark(self.path)
        # a resumed run repeats the epochs after its checkpoint
        self.history = {e: m for e, m in self.history.items() if e < trainer.current_epoch}

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        found = None
        if trainer.is_global_zero:
            arch = module.net.genotype().to_text()
            found = self.lookup(arch)
            if found is not None:
                self.last = {"epoch": epoch, "genotype": arch, "index": found[0], "metrics": dict(found[1])}
        found = trainer.strategy.broadcast(found, src=0)
        if found is None or not found[1]:
            return
        metrics = found[1]
        self.history[epoch] = dict(metrics)
        module.log_dict(metrics, on_step=False, on_epoch=True)

    # ---- the look-up ------------------------------------------------------------------------
    def lookup(self, arch: str) -> tuple[int, dict[str, float]] | None:
        """(benchmark index, {"benchmark/<dataset>_test_acc": %, ...}) of the cell text ``arch``, or None (with one
        warning per run) when the benchmark does not hold it."""
        if self.api is None:
            self.api = open_benchmark(self.path)
        index = self.api.query_index_by_arch(arch)
        if index < 0:
            self._warn("absent", f"benchmark look-up: the cell {arch} is not in {self.path}; nothing is logged for it "
                                 "(not repeated)")
            return None
        metrics: dict[str, float] = {}
        missing = []
        for dataset in self.datasets:
            info = self._info(index, dataset)
            if info is None or info.get("test-accuracy") is None:
                missing.append(dataset)
                continue
            metrics[f"benchmark/{dataset}_test_acc"] = float(info["test-accuracy"])
            valid = info.get("valid-accuracy")
            if valid is None and dataset == "cifar10":
                # the cifar10 training uses the validation split too: the benchmark's CIFAR-10 validation accuracy
                # is that of its cifar10-valid training
                valid = (self._info(index, "cifar10-valid") or {}).get("valid-accuracy")
            if valid is not None:
                metrics[f"benchmark/{dataset}_valid_acc"] = float(valid)
        if missing:
            self._warn("missing", f"benchmark look-up: {self.path} has no hp={self.hp} results on {', '.join(missing)} "
                                  f"for the cell {arch} (index {index}); those are not logged (not repeated)")
        if index in getattr(self.api, "arch2infos_dict", {}):
            # a full archive holds the trained weights of every look-up: they are never used here
            self.api.clear_params(index, None)
        return index, metrics

    def _info(self, index: int, dataset: str) -> dict[str, Any] | None:
        try:
            # the mean over the benchmark's seeds (is_random=False), after the last training epoch
            return self.api.get_more_info(index, dataset, iepoch=None, hp=self.hp, is_random=False)
        except ConfigError:  # an architecture's file (read at its first look-up) holds objects it may not
            raise
        except (KeyError, ValueError):  # no results for this hp or dataset, or the index was never trained
            return None

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)
