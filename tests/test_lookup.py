"""The benchmark look-up against a small benchmark written here in the NATS-Bench topology format and read by the real
nats_bench package: the accuracies a search logs per epoch, the seeds' mean, the schedule, the CIFAR-10 validation
accuracy, an absent cell, and the errors a user can cause."""

from __future__ import annotations

import bz2
import csv
import pickle
import sys

import nats_bench
import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_cfg
from pytorch_lightning.loggers import CSVLogger

from darts_lite.data import SearchDataModule
from darts_lite.errors import ConfigError
from darts_lite.lookup import BenchmarkLookup, open_benchmark
from darts_lite.search import SearchModule

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ARCHS = [
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    BEST,
    "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|",
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
]
ABSENT = [
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|",
]
SEEDS = (777, 888)
HP_EPOCHS = {"12": 12, "200": 200}
# the evaluation sets the benchmark trains each dataset's cells for
EVAL_SETS = {"cifar10-valid": ("x-valid", "ori-test"), "cifar10": ("ori-test",),
             "cifar100": ("x-valid", "x-test", "ori-test"), "ImageNet16-120": ("x-valid", "x-test", "ori-test")}
_DATASET_SHIFT = {"cifar10-valid": 0.0, "cifar10": 1.0, "cifar100": -20.0, "ImageNet16-120": -30.0}
_SET_SHIFT = {"x-valid": 0.5, "x-test": 0.25, "ori-test": 0.75}


def made_up_acc(index: int, hp: str, dataset: str, seed: int, setname: str) -> float:
    """A made-up final accuracy (%), different for every arch, hp, dataset, seed and set; a multiple of 1/4 so that it
    and the mean of two seeds are exact in the float32 a logged metric passes through."""
    return (60.0 + 7 * index - (10.0 if hp == "12" else 0.0) + _DATASET_SHIFT[dataset] + _SET_SHIFT[setname]
            + (1.5 if seed == 888 else 0.0))


def mean_acc(index: int, hp: str, dataset: str, setname: str) -> float:
    return sum(made_up_acc(index, hp, dataset, s, setname) for s in SEEDS) / len(SEEDS)


# ---- a benchmark in the NATS-Bench topology format --------------------------------------------------
def _trial_state(index: int, arch: str, hp: str, dataset: str, seed: int) -> dict:
    """The state of one trained trial (what the benchmark pickles for a ResultsCount): per-epoch training curves keyed
    by epoch, evaluation curves keyed "<set>@<epoch>". Only the last epoch holds the made-up accuracy, so a reader
    of any other epoch would be caught."""
    epochs = HP_EPOCHS[hp]
    last = epochs - 1
    sets = EVAL_SETS[dataset]
    accs = {f"{s}@{e}": made_up_acc(index, hp, dataset, seed, s) - (0 if e == last else 30.0) for s in sets
            for e in range(epochs)}
    return {
        "name": dataset, "net_state_dict": None,
        "train_acc1es": {e: 90.0 if e == last else 50.0 for e in range(epochs)}, "train_acc5es": None,
        "train_losses": {e: 0.3 for e in range(epochs)}, "train_times": {e: 1.5 for e in range(epochs)},
        "arch_config": {"channel": 16, "num_cells": 5, "arch_str": arch,
                        "class_num": {"cifar100": 100, "ImageNet16-120": 120}.get(dataset, 10)},
        "params": 0.5, "flop": 80.0, "seed": seed, "epochs": epochs, "latency": [0.01],
        "eval_names": list(sets), "eval_acc1es": accs,
        "eval_losses": {k: 1.0 for k in accs}, "eval_times": {k: 0.25 for k in accs},
    }


def _arch_state(index: int, arch: str, hp: str) -> dict:
    """The state of one architecture under one hp (an ArchResults): every (dataset, seed) trial."""
    return {
        "arch_index": index, "arch_str": arch, "clear_net_done": False,
        "all_results": {(d, s): _trial_state(index, arch, hp, d, s) for d in EVAL_SETS for s in SEEDS},
        "dataset_seed": {d: list(SEEDS) for d in EVAL_SETS},
    }


def _dump(obj, path) -> None:
    with bz2.BZ2File(path, "wb") as f:  # the benchmark's files are bz2-compressed pickles
        pickle.dump(obj, f, protocol=4)


def write_benchmark(path, archs=ARCHS, folder=True):
    """A benchmark of ``archs`` (their list index is their benchmark index) with hp "12" and "200" results.

    folder: the per-architecture archive read lazily: meta.pickle.pbz2 ({"meta_archs": arch strings}) and one
    <index:06d>.pickle.pbz2 per arch ({hp: arch state}). Otherwise one file holding meta_archs, arch2infos
    ({index: {hp: arch state}}) and evaluated_indexes."""
    per_arch = {i: {hp: _arch_state(i, a, hp) for hp in HP_EPOCHS} for i, a in enumerate(archs)}
    if folder:
        path.mkdir()
        _dump({"meta_archs": list(archs)}, path / "meta.pickle.pbz2")
        for i, hps in per_arch.items():
            _dump(hps, path / f"{i:06d}.pickle.pbz2")
    else:
        _dump({"meta_archs": list(archs), "arch2infos": per_arch, "evaluated_indexes": list(per_arch)}, path)
    return path


def expected_metrics(index: int, hp: str = "200") -> dict[str, float]:
    return {
        "benchmark/cifar10_test_acc": mean_acc(index, hp, "cifar10", "ori-test"),
        "benchmark/cifar10_valid_acc": mean_acc(index, hp, "cifar10-valid", "x-valid"),
        "benchmark/cifar100_test_acc": mean_acc(index, hp, "cifar100", "x-test"),
        "benchmark/cifar100_valid_acc": mean_acc(index, hp, "cifar100", "x-valid"),
        "benchmark/ImageNet16-120_test_acc": mean_acc(index, hp, "ImageNet16-120", "x-test"),
        "benchmark/ImageNet16-120_valid_acc": mean_acc(index, hp, "ImageNet16-120", "x-valid"),
    }


@pytest.fixture(params=[True, False], ids=["folder", "file"])
def bench_path(request, tmp_path):
    return write_benchmark(tmp_path / ("bench" if request.param else "bench.pickle.pbz2"), folder=request.param)


# ---- the file and the look-up -----------------------------------------------------------------------
def test_the_package_reads_the_written_benchmark(bench_path):
    api = nats_bench.create(str(bench_path), "tss", fast_mode=bench_path.is_dir(), verbose=False)
    assert len(api) == len(ARCHS) and api.query_index_by_arch(BEST) == 1 and api.query_index_by_arch(ABSENT[0]) == -1
    info = api.get_more_info(1, "cifar100", hp="200", is_random=False)
    assert info["test-accuracy"] == mean_acc(1, "200", "cifar100", "x-test")
    assert info["valid-accuracy"] == mean_acc(1, "200", "cifar100", "x-valid")
    assert api.get_more_info(1, "cifar100", hp="200", is_random=888)["test-accuracy"] == made_up_acc(1, "200", "cifar100",
                                                                                                     888, "x-test")
    assert "cifar10-valid" in api.query_info_str_by_arch(BEST, "200")


@pytest.mark.parametrize("hp", ["200", "12", 12])
def test_lookup_gives_the_seed_mean_of_the_last_epoch(bench_path, hp):
    lookup = BenchmarkLookup(bench_path, hp=hp)
    for index, arch in enumerate(ARCHS):
        found_index, metrics = lookup.lookup(arch)
        assert found_index == index
        assert metrics == expected_metrics(index, str(hp))


def test_lookup_reports_the_chosen_datasets_only(bench_path):
    lookup = BenchmarkLookup(bench_path, datasets=["cifar100", "cifar10-valid"])
    _, metrics = lookup.lookup(BEST)
    assert metrics == {
        "benchmark/cifar100_test_acc": mean_acc(1, "200", "cifar100", "x-test"),
        "benchmark/cifar100_valid_acc": mean_acc(1, "200", "cifar100", "x-valid"),
        "benchmark/cifar10-valid_test_acc": mean_acc(1, "200", "cifar10-valid", "ori-test"),
        "benchmark/cifar10-valid_valid_acc": mean_acc(1, "200", "cifar10-valid", "x-valid"),
    }


# ---- in a search -------------------------------------------------------------------------------------
class _CellSchedule(pl.Callback):
    """Sets the alphas at the start of each epoch so that the derived cell is schedule[epoch]."""

    def __init__(self, schedule):
        self.schedule = schedule

    def on_train_epoch_start(self, trainer, module):
        net = module.net
        alphas = torch.zeros_like(net.alphas)
        for edge, cell in enumerate(self.schedule[trainer.current_epoch].strip("|").replace("|+|", "|").split("|")):
            alphas[edge, net.primitives.index(cell.split("~")[0])] = 5.0
        with torch.no_grad():
            net.alphas.copy_(alphas)


def _fit(tmp_path, callbacks, epochs, space="nb201", logger=False):
    pl.seed_everything(0, verbose=False)
    if space == "nb201":
        network = dict(C=4, N=1, num_classes=10, in_channels=1)
    else:
        network = dict(C=4, layers=3, num_classes=10, in_channels=1)
    # a zero architecture rate keeps the alphas exactly as the schedule sets them
    network["_target_"] = f"darts_lite.spaces.{space}.SearchNetwork"
    module = SearchModule(network=network, epochs=epochs, arch_lr=0.0, arch_weight_decay=0.0,
                          channels_last=False)
    dm = SearchDataModule(name="digits", root=str(tmp_path / "data"), batch_size=64, crop_padding=0, flip=False, seed=0)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_train_batches=2, limit_val_batches=1, log_every_n_steps=1, callbacks=list(callbacks),
                         use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)
    return module


def _benchmark_rows(logger: CSVLogger) -> dict[int, dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    with open(f"{logger.log_dir}/metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get("epoch"):
                rows.setdefault(int(float(row["epoch"])), {}).update(
                    {k: float(v) for k, v in row.items() if k.startswith("benchmark/") and v != ""})
    return rows


def test_a_search_logs_each_epochs_cell_and_warns_once_for_absent_cells(bench_path, tmp_path, caplog):
    schedule = [BEST, ARCHS[2], ABSENT[0], ABSENT[1]]
    lookup = BenchmarkLookup(bench_path)
    logger = CSVLogger(tmp_path / "logs", name="", version="")
    module = _fit(tmp_path, [_CellSchedule(schedule), lookup], len(schedule), logger=logger)
    assert module.net.genotype().to_text() == ABSENT[1]  # the schedule held: every epoch derived the cell it set
    rows = _benchmark_rows(logger)
    assert rows[0] == expected_metrics(1) and rows[1] == expected_metrics(2)
    assert rows.get(2, {}) == {} and rows.get(3, {}) == {}  # absent cells log nothing
    assert lookup.history == {0: expected_metrics(1), 1: expected_metrics(2)}
    assert lookup.last == {"epoch": 1, "genotype": ARCHS[2], "index": 2, "metrics": expected_metrics(2)}
    warnings = [r for r in caplog.records if "is not in" in r.getMessage()]
    assert len(warnings) == 1 and ABSENT[0] in warnings[0].getMessage()


# ---- errors ------------------------------------------------------------------------------------------
def test_a_missing_benchmark_stops_the_run_with_one_clear_message(tmp_path):
    with pytest.raises(ConfigError, match=r"benchmark.path=.*nope does not exist"):
        _fit(tmp_path, [BenchmarkLookup(tmp_path / "nope")], 1)


def test_a_missing_package_says_how_to_install_it(bench_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nats_bench", None)  # makes `import nats_bench` fail
    with pytest.raises(ConfigError, match=r"needs the nats_bench package: pip install nats_bench \(or pip install "
                                          r"\"darts_lite\[nb201\]\"\)"):
        open_benchmark(bench_path)


def test_a_file_that_is_no_benchmark_is_refused(tmp_path):
    bad = tmp_path / "model.pth"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ConfigError, match="could not be opened as a NATS-Bench topology benchmark"):
        open_benchmark(bad)


def test_another_space_is_refused(bench_path, tmp_path):
    lookup = BenchmarkLookup(bench_path)
    with pytest.raises(ConfigError, match="covers the NAS-Bench-201 space only: set space=nb201.*space=darts"):
        _fit(tmp_path, [lookup], 1, space="darts")
    assert lookup.api is None  # refused before the benchmark is read


@pytest.mark.parametrize("kw,message", [
    (dict(hp="90"), "hp='90': must be one of 12, 200"),
    (dict(datasets=["cifar10", "svhn"]), r"datasets=\['cifar10', 'svhn'\]: must be a non-empty list of cifar10"),
    (dict(datasets=[]), r"datasets=\[\]: must be a non-empty list"),
])
def test_bad_settings_are_refused(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):
        BenchmarkLookup(tmp_path, **kw)


def test_config_checks_refuse_a_lookup_outside_nb201_or_without_its_file(tmp_path):
    from darts_lite.config import validate_search

    folder = tmp_path / "bench"
    folder.mkdir()
    ok = compose_cfg("+experiment=nb201_quick", f"benchmark.path={folder}")
    validate_search(ok)  # the file is only opened when the search starts
    darts = compose_cfg("+experiment=quickstart", f"benchmark.path={folder}")
    with pytest.raises(ConfigError, match="it needs space=nb201, not space=darts"):
        validate_search(darts)
    missing = compose_cfg("+experiment=nb201_quick", f"benchmark.path={tmp_path / 'no'}", "benchmark.hp=100")
    with pytest.raises(ConfigError, match="does not exist") as e:
        validate_search(missing)
    assert "benchmark.hp=100: must be one of 12, 200" in str(e.value)
