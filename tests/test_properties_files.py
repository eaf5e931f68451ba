"""Property-based tests of the readers of the files darts_lite writes (saved surrogates, latency tables, the
Once-for-All network, sub-network and predictor files, checkpoints and their run records) and of the NATS-Bench
benchmark it reads: a valid file reads back equal to what was written; any other content (any bytes, the file
truncated or with one byte changed, another reader's file, a field missing or of another type, nothing, a folder)
is refused with the reader's own error naming the file. Never another exception, never a file written or changed,
never code run (a pickle that would create a file must be refused and the file must not exist).

Every valid file is written once per module by the project's own writers, for tiny objects, so that the whole file
runs in seconds."""

from __future__ import annotations

import bz2
import copy
import io
import json
import os
import pickle
import random
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_OFA, compose_cfg, tiny_ofa_network
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import damaged_bytes, json_values, one_edit, one_field_changed, truncated
from test_lookup import ARCHS, _arch_state, mean_acc, write_benchmark
from test_properties import FIXED

from darts_lite.errors import ConfigError
from darts_lite.export import OFASubnetFile, TrainedNetwork, read_exportable
from darts_lite.lookup import BenchmarkLookup, open_benchmark, safe_pickle_load
from darts_lite.measure import this_machine
from darts_lite.ofa import OFANetwork
from darts_lite.ofa.costs import CostTableError, SubnetCosts, read_latency_table
from darts_lite.ofa.network import OFASubnet
from darts_lite.ofa.predictor import AccuracyPredictor, PredictorError, SubnetEncoding, load_predictor
from darts_lite.ofa.specialise import MAX_BLOCKS, load_subnet, save_subnet
from darts_lite.ofa.task import load_network, save_network
from darts_lite.run.checkpoints import (
    RECORD_KEY,
    AtomicCheckpointIO,
    RunRecord,
    check_resume,
    load_search_module,
    read_record,
    run_record,
)
from darts_lite.search import SearchModule
from darts_lite.spaces.darts import sample
from darts_lite.spaces.darts.genotype import PRIMITIVES
from darts_lite.surrogate.data import Table
from darts_lite.surrogate.models import GINSurrogate, Surrogate, SurrogateFileError, load_surrogate, make_surrogate
from darts_lite.surrogate.predict import load_model
from darts_lite.train import TrainModule
from darts_lite.tricks.resources import LatencyTable, LatencyTableError
from darts_lite.tricks.selection import FineTuner, PerturbationSelection, SelectionState

# fewer examples than the genotype readers': each reads a file, and a damaged torch file may still build a network
FILES = settings(FIXED, max_examples=30)
HEAVY = settings(FIXED, max_examples=15)  # readers that build a network from what they read, or read a large file

# the search checkpoint: its run record made from this config, its weights those of the NAS-Bench-201 supernet at its
# smallest (NB201_NET; no reader compares a record's settings with the weights beside it)
SEARCH = ["+experiment=nb201_quick", "data=synthetic", "trainer.enable_progress_bar=false"]
NB201_NET = dict(_target_="darts_lite.spaces.nb201.SearchNetwork", C=2, N=1, num_classes=3, in_channels=3)
NB201_CELL = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
SELECTION_OPTIONS = {"epochs": 1, "batches": None, "seed": 0, "alphas": "digest"}  # what a selection state is for
# what a damaged torch file may hold in place of any of its values
TORCH_LEAVES = json_values(max_leaves=4) | st.sampled_from([torch.zeros(3), torch.ones(2, 2), torch.tensor(7)])


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Torch on one thread for this module: its networks are tiny, and more threads only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the valid files, written once ----------------------------------------------------------------------------------
class Made:
    """The valid files (by kind), the objects written into them, and what reading them needs. (Not a dataclass:
    Hypothesis would print every field of it for a failing example.)"""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files: dict[str, Path] = {}
        self.objects: dict[str, Any] = {}  # what each file holds, as its writer was given it
        self.cfg: Any = None  # the composed search config the search checkpoint's record was made from
        self.origin: dict[str, Any] = {}  # the OFA latency table's origin (this machine, the tiny network)
        self.surrogates: dict[str, Surrogate] = {}

    def __repr__(self) -> str:
        return f"Made({self.folder})"

    def bytes(self, kind: str) -> bytes:
        return self.files[kind].read_bytes()


def _fit_surrogates(folder: Path) -> dict[str, Surrogate]:
    rng = random.Random(0)
    genotypes = [sample(rng) for _ in range(12)]
    table = Table(genotypes, np.linspace(0.8, 0.9, 12), "twelve")
    options = {"forest": dict(trees=2), "gin": dict(epochs=2, hidden=4, layers=1),
               "lgbm": dict(trees=3, min_child_samples=2)}
    fitted = {}
    for kind, kw in options.items():
        fitted[kind] = make_surrogate(kind, 0, **kw).fit(table)
        fitted[kind].evaluation = {"heldout": {"sparse_kendall_tau": 0.5}}
        fitted[kind].save(folder / f"{kind}.json")
    return fitted


def _checkpoint(module: torch.nn.Module, record: dict[str, Any], path: Path) -> dict[str, Any]:
    """What a Lightning checkpoint of ``module`` holds with darts_lite's run record, written as the trainer writes it
    (AtomicCheckpointIO); returns it."""
    checkpoint = {"epoch": 0, "global_step": 1, "state_dict": module.state_dict(), "hparams_name": "kwargs",
                  "hyper_parameters": dict(getattr(module, "hparams", {}))}
    RunRecord(record).on_save_checkpoint(None, module, checkpoint)
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    return checkpoint


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Made:
    folder = tmp_path_factory.mktemp("valid_files")
    m = Made(folder)
    m.surrogates = _fit_surrogates(folder)
    for kind in m.surrogates:
        m.files[kind] = folder / f"{kind}.json"
        m.objects[kind] = json.loads(m.files[kind].read_text())

    net = tiny_ofa_network()
    costs = SubnetCosts(net, 1, folder / "latency_table.json")
    costs.latency = {"stem|8": 0.25, "head|2": 0.5}
    m.files["ofa_latency"], m.origin = costs.save(), costs.origin
    here = {"machine": this_machine(), "network": {"network": "darts_lite.spaces.nb201.SearchNetwork", "C": 2},
            "batch": 1, "repeats": 2}
    m.files["search_latency"] = LatencyTable(here, {"nor_conv_3x3|2x8x8->2x8x8": 0.125}).save(folder / "resource.json")
    for kind in ("ofa_latency", "search_latency"):
        m.objects[kind] = json.loads(m.files[kind].read_text())

    m.files["network"] = folder / "network.pt"
    save_network(net, "expand2", m.files["network"])
    net.set_active_subnet(ks=[3, 5, 3, 5, 7, 3, 5, 3], e=3, d=[2, 3])
    m.files["subnet"] = folder / "subnet.pt"
    save_subnet(m.files["subnet"], net, net.setting(), 8, net.get_active_subnet(),
                {"mean": [0.5] * 3, "std": [0.25] * 3, "image_size": 8, "in_channels": 3})
    predictor = AccuracyPredictor(SubnetEncoding.of(net, (6, 8)), hidden=8, layers=1)
    predictor.metrics = {"kendall_tau": 0.5}
    m.files["predictor"] = predictor.save(folder / "predictor.pt", {"samples": 8})

    m.cfg = compose_cfg(*SEARCH, f"run_dir={folder / 'run'}", "resume=true")
    record = run_record(m.cfg)
    torch.manual_seed(0)
    m.files["search"] = folder / "search.ckpt"
    _checkpoint(SearchModule(network=NB201_NET), record, m.files["search"])
    m.files["train"] = folder / "train.ckpt"
    train = TrainModule(NB201_CELL, network=dict(C=2, N=1, num_classes=3, in_channels=3))
    _checkpoint(train, {**record, "task": "train"}, m.files["train"])
    for kind in ("network", "subnet", "predictor", "search", "train"):
        m.objects[kind] = torch.load(m.files[kind], weights_only=True)

    net, tuner, selection = _selection_parts(0)
    selection.transform.decided, selection.transform.dropped = {"cell": {2: 3}}, {}
    selection.rows = [{"decision": 0, "phase": "operation", "cell": "cell", "edge": 2, "node": "", "candidate": 3,
                       "accuracy_removed": 0.25, "base_accuracy": 0.5, "chosen": 1}]
    tuner.epoch = 1
    m.files["selection"] = folder / "selection_state.pt"
    SelectionState(m.files["selection"], SELECTION_OPTIONS).save(1, net, tuner, selection)
    m.objects["selection"] = torch.load(m.files["selection"], weights_only=True)

    m.files["benchmark"] = write_benchmark(folder / "bench.pickle.pbz2", folder=False)
    m.objects["benchmark"] = {"meta_archs": ARCHS[:1], "arch2infos": {0: {"12": _arch_state(0, ARCHS[0], "12")}},
                              "evaluated_indexes": [0]}
    return m


def _selection_parts(seed: int) -> tuple[torch.nn.Module, FineTuner, PerturbationSelection]:
    """A perturbation selection's supernet, fine-tuner and decisions on the smallest NAS-Bench-201 supernet."""
    from darts_lite.search import build_network

    torch.manual_seed(seed)
    net = build_network(NB201_NET)
    tuner = FineTuner(net, lambda epoch: [], 1, None, lr=0.01, momentum=0.9, weight_decay=3e-4, grad_clip=5.0)
    return net, tuner, PerturbationSelection(net, "nb201", measure=lambda: 0.0, progress=False)


def _restore_selection(m: Made, path: str) -> int:
    """task=select's resume: a fresh supernet, fine-tuner and selection restored from the state at ``path``."""
    return SelectionState(Path(path), SELECTION_OPTIONS).restore(*_selection_parts(1))


# ---- the readers --------------------------------------------------------------------------------------------------
def _a_surrogate(model: Any) -> None:
    assert isinstance(model, Surrogate) and model.predict([sample(random.Random(1))]).shape == (1,)


def _a_latency_dict(entries: Any) -> None:
    assert isinstance(entries, dict) and all(isinstance(k, str) and v >= 0 for k, v in entries.items())


def _a(kind: type) -> Callable[[Any], None]:
    """A check that what a reader gave is a ``kind`` (or a tuple whose first item is one)."""
    def check(found: Any) -> None:
        assert isinstance(found[0] if isinstance(found, tuple) else found, kind), repr(found)
    return check


def _an_exportable(found: Any) -> None:
    # what the reader accepts is exported: its network rebuilds, whatever the file's weights
    assert isinstance(found, (TrainedNetwork, OFASubnetFile))
    net, _ = found.network()
    assert isinstance(net, torch.nn.Module) and found.description()["network"]


@dataclass(frozen=True)
class Reader:
    """A reader under test: the valid file it reads, its call, the errors it documents, what it gives."""

    kind: str
    read: Callable[[Made, str], Any]
    errors: tuple[type[Exception], ...]
    gives: Callable[[Any], None]
    form: str  # "json", "torch" or "pickle": the damaged contents tried besides any bytes
    heavy: bool = False


READERS = {
    **{f"load_surrogate[{kind}]": Reader(kind, lambda m, p: load_surrogate(p), (SurrogateFileError,), _a_surrogate,
                                         "json") for kind in ("forest", "gin", "lgbm")},
    "GINSurrogate.load": Reader("gin", lambda m, p: GINSurrogate.load(p), (SurrogateFileError,), _a_surrogate, "json"),
    "load_model": Reader("lgbm", lambda m, p: load_model(p, "surrogate.model"), (ConfigError,), _a_surrogate, "json"),
    "read_latency_table": Reader("ofa_latency", lambda m, p: read_latency_table(p, m.origin), (CostTableError,),
                                 _a_latency_dict, "json"),
    "LatencyTable.load": Reader("search_latency", lambda m, p: LatencyTable.load(p), (LatencyTableError,),
                                lambda t: _a_latency_dict(t.entries), "json"),
    "load_network": Reader("network", lambda m, p: load_network(p), (ConfigError,), _a(OFANetwork), "torch"),
    "load_subnet": Reader("subnet", lambda m, p: load_subnet(p), (ConfigError,), _a(OFASubnet), "torch", heavy=True),
    "load_predictor": Reader("predictor", lambda m, p: load_predictor(p), (PredictorError,), _a(AccuracyPredictor),
                             "torch"),
    "read_record": Reader("search", lambda m, p: read_record(p, f"ckpt_path={p}"), (ConfigError,), _a(dict), "torch"),
    "check_resume": Reader("search", lambda m, p: check_resume(m.cfg, p), (ConfigError,), _a(list), "torch"),
    "load_search_module": Reader("search", lambda m, p: load_search_module(p), (ConfigError,), _a(SearchModule),
                                 "torch", heavy=True),
    "read_exportable[train]": Reader("train", lambda m, p: read_exportable(p), (ConfigError,), _an_exportable, "torch",
                                     heavy=True),
    "read_exportable[subnet]": Reader("subnet", lambda m, p: read_exportable(p), (ConfigError,), _an_exportable,
                                      "torch", heavy=True),
    "SelectionState.restore": Reader("selection", _restore_selection, (ConfigError,), _a(int), "torch"),
    "open_benchmark": Reader("benchmark", lambda m, p: open_benchmark(p), (ConfigError,), _a(object), "pickle",
                             heavy=True),
}


def _torch_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _bz2_pickle(value: Any) -> bytes:
    return bz2.compress(pickle.dumps(value, protocol=4))


def other_contents(m: Made, reader: Reader) -> st.SearchStrategy[bytes]:
    """What may stand in the file ``reader`` reads instead of a valid one of its kind (see the module docstring)."""
    valid = m.bytes(reader.kind)
    others = [m.bytes(kind) for kind in sorted(m.files) if kind != reader.kind]
    choices = [damaged_bytes(valid), st.sampled_from(others)]
    if reader.form == "json":
        obj = m.objects[reader.kind]
        choices += [one_edit(valid.decode()).map(str.encode), json_values().map(lambda v: json.dumps(v).encode()),
                    one_field_changed(obj).map(lambda v: json.dumps(v).encode())]
        if reader.kind == "lgbm":  # LightGBM's own text inside the JSON, damaged: what LightGBM's parser is given
            booster = obj["model"]["booster"]
            choices.append(st.one_of(one_edit(booster), truncated(booster.encode()).map(bytes.decode)).map(
                lambda text: json.dumps({**obj, "model": {"booster": text}}).encode()))
    elif reader.form == "torch":
        choices += [one_field_changed(m.objects[reader.kind], TORCH_LEAVES).map(_torch_bytes)]
    else:
        choices += [one_field_changed(m.objects[reader.kind]).map(_bz2_pickle), json_values().map(_bz2_pickle)]
    return st.one_of(choices)


def snapshot(folder: str | Path) -> dict[str, bytes]:
    """Every file in ``folder`` (recursively) and its bytes."""
    root = Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@contextmanager
def untouched(folder: str | Path) -> Iterator[None]:
    """Runs the block in an empty working folder; fails if a file appears there or a file of ``folder`` (the one
    whose file is read) appears, disappears or changes (test_properties' ``nothing_written``, for a folder too)."""
    before, cwd = snapshot(folder), os.getcwd()
    with tempfile.TemporaryDirectory() as empty:
        os.chdir(empty)
        try:
            yield
        finally:
            os.chdir(cwd)
            assert os.listdir(empty) == [] and snapshot(folder) == before, os.listdir(empty)


def read_or_refuse(m: Made, reader: Reader, path: str) -> Any:
    """``reader`` on ``path``, in ``untouched``: what it gives, or None after one of its documented errors, whose
    message names the file."""
    try:
        with untouched(Path(path).parent):
            return reader.read(m, path)
    except reader.errors as e:
        message = str(e)
        # names the file, says what is wrong in a few lines, and never advises unpickling what it refused
        assert path in message and len(message) < 3000 and "weights_only=False" not in message, message
        return None


def _with_content(content: bytes, name: str, act: Callable[[str], Any]) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(content)
        return act(path)


# ---- a valid file reads back equal ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["forest", "gin", "lgbm"])
def test_a_saved_surrogate_reads_back_equal(made, kind):
    original, path = made.surrogates[kind], str(made.files[kind])
    probe = [sample(random.Random(i)) for i in range(5)]
    loaded = [read_or_refuse(made, READERS[f"load_surrogate[{kind}]"], path), type(original).load(path),
              Surrogate.load(path), load_model(path, "surrogate.model")]
    for model in loaded:
        assert type(model) is type(original) and model.options == original.options and model.seed == original.seed
        assert model.trained_on == original.trained_on and model.evaluation == original.evaluation
        assert json.dumps(model._payload()) == json.dumps(original._payload())
        np.testing.assert_array_equal(model.predict(probe), original.predict(probe))


@FILES
@given(evaluation=st.dictionaries(st.text(max_size=10), json_values(max_leaves=5), max_size=4))
def test_what_a_surrogate_records_beside_its_model_reads_back_equal(made, evaluation):
    model = copy.copy(made.surrogates["forest"])
    model.evaluation = evaluation
    with tempfile.TemporaryDirectory() as folder:
        loaded = load_surrogate(model.save(Path(folder) / "forest.json"))
    assert loaded.evaluation == evaluation and loaded.trees[0]["left"].tolist() == model.trees[0]["left"].tolist()


_MS = st.floats(0, 1e4, allow_nan=False, allow_infinity=False)
_TINY_NET: list[OFANetwork] = []


def tiny_net() -> OFANetwork:
    """One tiny OFA network for the module (a cost table reads only its configuration)."""
    if not _TINY_NET:
        _TINY_NET.append(OFANetwork(**TINY_OFA))
    return _TINY_NET[0]


@FILES
@given(entries=st.dictionaries(st.text(max_size=20), _MS, max_size=8))
def test_a_once_for_all_latency_table_reads_back_equal(entries):
    with tempfile.TemporaryDirectory() as folder:
        costs = SubnetCosts(tiny_net(), 1, Path(folder) / "latency_table.json")
        costs.latency = dict(entries)
        path = costs.save()
        assert read_latency_table(path, costs.origin) == entries
        assert SubnetCosts(tiny_net(), 1, path).latency == entries


_SIZE = st.lists(st.integers(1, 64), min_size=3, max_size=3).map(lambda s: "x".join(map(str, s)))


@FILES
@given(entries=st.dictionaries(st.builds("{}|{}->{}".format, st.sampled_from(PRIMITIVES), _SIZE, _SIZE), _MS,
                               max_size=8),
       repeats=st.integers(1, 50))
def test_a_resource_latency_table_reads_back_equal(entries, repeats):
    origin = {"machine": this_machine(), "network": {"C": 4, "primitives": list(PRIMITIVES)}, "batch": 1,
              "repeats": repeats}
    with tempfile.TemporaryDirectory() as folder:
        table = LatencyTable.load(LatencyTable(origin, entries).save(Path(folder) / "latency_table.json"))
    assert table.origin == origin and table.entries == entries


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_once_for_all_files_read_back_equal(made):
    saved = made.objects["network"]
    net = read_or_refuse(made, READERS["load_network"], str(made.files["network"]))
    assert net.config == saved["config"] and _same_weights(net.state_dict(), saved["state_dict"]) and not net.training
    subnet, record = read_or_refuse(made, READERS["load_subnet"], str(made.files["subnet"]))
    saved = made.objects["subnet"]
    assert _same_weights(subnet.state_dict(), saved["state_dict"]) and not subnet.training
    assert record == {k: v for k, v in saved.items() if k != "state_dict"}
    predictor, record = read_or_refuse(made, READERS["load_predictor"], str(made.files["predictor"]))
    saved = made.objects["predictor"]
    assert record == {"samples": 8} and predictor.metrics == {"kendall_tau": 0.5}
    assert predictor.encoding.to_dict() == saved["encoding"]
    assert _same_weights(predictor.state_dict(), saved["state_dict"])


@FILES
@given(record=st.dictionaries(st.text(max_size=10), json_values(max_leaves=5), max_size=4))
def test_what_a_predictor_file_records_reads_back_equal(made, record):
    predictor, _ = load_predictor(made.files["predictor"])
    with tempfile.TemporaryDirectory() as folder:
        again, found = load_predictor(predictor.save(Path(folder) / "p.pt", record))
    assert found == record and _same_weights(again.state_dict(), predictor.state_dict())


@FILES
@given(settings_=st.dictionaries(st.text(min_size=1, max_size=12), json_values(max_leaves=4), max_size=6),
       overrides=st.lists(st.text(max_size=12), max_size=3))
def test_a_checkpoints_run_record_reads_back_equal(made, settings_, overrides):
    record = {**run_record(made.cfg), "settings": settings_, "overrides": overrides}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.ckpt"
        _checkpoint(torch.nn.Linear(1, 1), record, path)
        assert read_record(path, f"ckpt_path={path}") == record


def test_a_search_checkpoint_reads_back_equal(made):
    path = str(made.files["search"])
    saved = made.objects["search"]
    assert read_or_refuse(made, READERS["read_record"], path) == saved[RECORD_KEY]
    assert read_or_refuse(made, READERS["check_resume"], path) == []  # the same settings: nothing changed
    module = read_or_refuse(made, READERS["load_search_module"], path)
    assert dict(module.hparams) == saved["hyper_parameters"] and _same_weights(module.state_dict(), saved["state_dict"])


def test_an_exportable_file_reads_back_equal(made):
    found = read_or_refuse(made, READERS["read_exportable[train]"], str(made.files["train"]))
    saved = made.objects["train"]
    assert isinstance(found, TrainedNetwork) and found.genotype == NB201_CELL and found.record == saved[RECORD_KEY]
    net, side = found.network()
    weights = {k.removeprefix("net."): v for k, v in saved["state_dict"].items() if k.startswith("net.")}
    assert side is None and _same_weights(net.state_dict(), weights)
    found = read_or_refuse(made, READERS["read_exportable[subnet]"], str(made.files["subnet"]))
    assert isinstance(found, OFASubnetFile) and found.description()["resolution"] == 8
    net, side = found.network()
    assert side == 8 and _same_weights(net.state_dict(), made.objects["subnet"]["state_dict"])


def test_a_selection_state_reads_back_equal(made):
    net, tuner, selection = _selection_parts(1)
    assert SelectionState(made.files["selection"], SELECTION_OPTIONS).restore(net, tuner, selection) == 1
    saved = made.objects["selection"]
    assert all(torch.equal(v, saved["net"][k]) for k, v in net.state_dict().items())
    assert selection.state_dict() == saved["selection"] and tuner.epoch == 1


def test_a_benchmark_reads_back_equal(made, tmp_path):
    for path in (made.files["benchmark"], write_benchmark(tmp_path / "bench", folder=True)):
        api = read_or_refuse(made, READERS["open_benchmark"], str(path))
        assert len(api) == len(ARCHS) and api.query_index_by_arch(ARCHS[1]) == 1
        info = api.get_more_info(1, "cifar100", hp="200", is_random=False)
        assert info["test-accuracy"] == mean_acc(1, "200", "cifar100", "x-test")


def test_a_benchmark_pickle_of_plain_values_numpy_values_and_tensors_reads_back_equal(tmp_path):
    # what a full NATS-Bench archive may hold beside the accuracies: numpy numbers and the trained weights
    written = {"meta_archs": ARCHS[:1], "weights": {"w": torch.arange(6.0).reshape(2, 3)}, "flop": np.float64(1.5),
               "curve": np.arange(3), "seeds": {777, 888}, "pair": ("cifar10", 777)}
    path = tmp_path / "arch.pickle.pbz2"
    path.write_bytes(_bz2_pickle(written))
    read = safe_pickle_load(path)
    assert torch.equal(read.pop("weights")["w"], written.pop("weights")["w"])
    assert read.pop("curve").tolist() == written.pop("curve").tolist() and read == written


# ---- any other content is refused -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n, r in READERS.items() if not r.heavy])
@FILES
@given(data=st.data())
def test_any_other_content_is_refused_with_the_readers_error(made, name, data):
    _refused_or_valid(made, name, data)


@pytest.mark.parametrize("name", [n for n, r in READERS.items() if r.heavy])
@HEAVY
@given(data=st.data())
def test_any_other_content_of_a_heavy_file_is_refused_with_the_readers_error(made, name, data):
    _refused_or_valid(made, name, data)


def _refused_or_valid(made: Made, name: str, data: Any) -> None:
    """Any content in the reader's file: refused with its error, or (a change that leaves a valid file, a byte of a
    weight, say) read as a valid object of its kind."""
    reader = READERS[name]
    content = data.draw(other_contents(made, reader), label="content")
    def act(path: str) -> None:
        found = read_or_refuse(made, reader, path)
        if found is not None:
            reader.gives(found)

    _with_content(content, made.files[reader.kind].name, act)


@pytest.mark.parametrize("name", list(READERS))
def test_a_folder_or_an_empty_file_in_place_of_the_file_is_refused(made, name, tmp_path):
    reader = READERS[name]
    folder = tmp_path / made.files[reader.kind].name
    folder.mkdir()
    (folder / "inside.txt").write_text("a file in the folder\n")
    assert read_or_refuse(made, reader, str(folder)) is None
    assert _with_content(b"", made.files[reader.kind].name, lambda p: read_or_refuse(made, reader, p)) is None


class _Marker:
    """Unpickled by a reader that runs a pickle's code, it creates the file ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("name", [n for n, r in READERS.items() if r.form != "json"])
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(made, name, tmp_path):
    reader = READERS[name]
    marker = tmp_path / "code_ran"
    evil = {**made.objects[reader.kind], "config": _Marker(str(marker)), "extra": _Marker(str(marker))}
    content = _bz2_pickle(evil) if reader.form == "pickle" else _torch_bytes(evil)
    assert not marker.exists()
    assert _with_content(content, made.files[reader.kind].name, lambda p: read_or_refuse(made, reader, p)) is None
    assert not marker.exists()


# ---- what the tests found, fixed: one example each ------------------------------------------------------------------
def _refused(made: Made, name: str, content: bytes, match: str) -> None:
    reader = READERS[name]

    def act(path: str) -> None:
        with pytest.raises(reader.errors, match=match):
            reader.read(made, path)

    _with_content(content, made.files[reader.kind].name, act)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_a_damaged_lightgbm_model_is_refused_before_lightgbm_reads_it(made):
    # LightGBM's parser reads past its buffers on these: before the fix, a truncated booster aborted the process
    record = made.objects["lgbm"]
    booster = record["model"]["booster"]
    at = booster.index("left_child=") + len("left_child=")
    child = booster[at:].split(" ")[0]
    cases = {
        booster[:len(booster) // 2]: "ends before its trees do",
        booster[:at] + "9" * len(child) + booster[at + len(child):]: "tree 0: a child points outside the tree",
        booster.replace("num_class=1", "num_class=0"): "num_class",  # LightGBM divides by it
        booster.replace("\nTree=1\n", "\nTree=1\nbroken line\n"): "tree 1",
    }
    for text, message in cases.items():
        _refused(made, "load_surrogate[lgbm]", _json({**record, "model": {"booster": text}}), message)


def test_gin_options_far_larger_than_the_saved_weights_are_refused_before_the_network_is_built(made):
    record = made.objects["gin"]
    huge = {**record, "options": {**record["options"], "hidden": 10 ** 7}}  # a 40 TB layer, never allocated
    _refused(made, "load_surrogate[gin]", _json(huge), "has shape")
    nan = {**record, "model": {**record["model"], "mean": float("nan")}}
    _refused(made, "load_surrogate[gin]", json.dumps(nan).encode(), "not numbers")


def test_surrogate_values_numpy_cannot_hold_are_refused(made):
    record = made.objects["forest"]
    tree = record["model"]["trees"][0]
    overflow = {**record, "model": {"trees": [{**tree, "left": [10 ** 30] * len(tree["left"])}]}}
    _refused(made, "load_surrogate[forest]", _json(overflow), "OverflowError")
    _refused(made, "load_surrogate[forest]", _json({**record, "evaluation": [1]}), "other types")


def test_latency_tables_of_another_kind_or_with_values_that_are_no_latencies_are_refused(made):
    ofa, search = made.objects["ofa_latency"], made.objects["search_latency"]
    _refused(made, "LatencyTable.load", made.bytes("ofa_latency"), "another kind")
    for value in (float("nan"), -1.0, True):
        _refused(made, "read_latency_table", _json({**ofa, "entries": {"stem|8": value}}), "not a latency table")
        _refused(made, "LatencyTable.load", _json({**search, "entries": {"nor_conv_3x3|2x8x8->2x8x8": value}}),
                 "not a latency table")


def test_once_for_all_files_of_other_types_or_sizes_are_refused_before_a_network_is_built(made):
    for name, kind in (("load_network", "network"), ("load_subnet", "subnet"), ("read_exportable[subnet]", "subnet")):
        saved = made.objects[kind]
        _refused(made, name, b"PK\x03\x04 not a zip", "not a readable")
        _refused(made, name, _torch_bytes({**saved, "config": "x"}), "config")
        _refused(made, name, _torch_bytes({**saved, "config": {**saved["config"], "widths": [4, 10 ** 6]}}), "weights")
        deep = {**saved["config"], "depth_list": [1, 2, 10 ** 5]}
        _refused(made, name, _torch_bytes({**saved, "config": deep}), f"at most {MAX_BLOCKS}")
    _refused(made, "load_subnet", _torch_bytes({**made.objects["subnet"], "setting": [1]}), "setting")
    _refused(made, "read_exportable[subnet]", _torch_bytes({**made.objects["subnet"], "resolution": "8"}), "resolution")


def test_a_predictor_file_of_other_types_is_refused_with_the_predictor_error(made):
    saved = made.objects["predictor"]
    _refused(made, "load_predictor", _torch_bytes({**saved, "encoding": 3}), "encoding")
    _refused(made, "load_predictor", _torch_bytes({**saved, "hidden": "8"}), "hidden")
    _refused(made, "load_predictor", _torch_bytes({**saved, "hidden": 10 ** 9}), "weights")


def test_a_run_record_of_other_types_is_refused_before_it_is_compared(made):
    saved = made.objects["search"]
    record = saved[RECORD_KEY]
    for changed in ({**record, "overrides": 5}, {**record, "settings": {"seed": torch.zeros(2)}},
                    {**record, "settings": {1: 2}}, {**record, "task": ["search"]}):
        content = _torch_bytes({**saved, RECORD_KEY: changed})
        for name in ("read_record", "check_resume", "read_exportable[train]"):
            _refused(made, name, content, "damaged")
    # a record without its run folder, of other settings: the command to resume with says so, no KeyError
    other = {k: v for k, v in record.items() if k != "run_dir"} | {"settings": {**record["settings"], "seed": 7}}
    _refused(made, "check_resume", _torch_bytes({**saved, RECORD_KEY: other}), "seed: 7 in the checkpoint, 0 now")


def test_a_search_checkpoint_naming_a_callable_to_build_is_refused_and_nothing_is_called(made, tmp_path):
    saved = made.objects["search"]
    marker = tmp_path / "code_ran"
    for target in ("builtins.open", "subprocess.Popen", "os.system", "no.such.module"):
        network = {"_target_": target, "file": str(marker), "mode": "w", "args": ["touch", str(marker)]}
        hp = {**saved["hyper_parameters"], "network": network}
        _refused(made, "load_search_module", _torch_bytes({**saved, "hyper_parameters": hp}), "not a network")
        relaxation = {**saved["hyper_parameters"], "relaxation": {"_target_": target, "file": str(marker)}}
        _refused(made, "load_search_module", _torch_bytes({**saved, "hyper_parameters": relaxation}), "not a network")
    assert not marker.exists()
    _refused(made, "load_search_module", _torch_bytes({**saved, "hyper_parameters": {**saved["hyper_parameters"],
                                                                                      "epochs": "x"}}), "SearchModule")


def test_a_train_checkpoint_whose_network_cannot_be_rebuilt_is_refused_when_it_is_read(made):
    saved = made.objects["train"]
    hp = saved["hyper_parameters"]
    _refused(made, "read_exportable[train]", _torch_bytes({**saved, "hyper_parameters": "x"}), "hyper-parameters")
    _refused(made, "read_exportable[train]", _torch_bytes({**saved, "hyper_parameters": {**hp, "genotype": "|x~0|"}}),
             "genotype does not parse")
    wide = {**hp, "network": {**hp["network"], "C": 10 ** 6}}
    _refused(made, "read_exportable[train]", _torch_bytes({**saved, "hyper_parameters": wide}), "weights")


def test_a_benchmark_pickle_that_would_run_code_is_refused_in_either_layout(made, tmp_path):
    marker = tmp_path / "code_ran"
    bench = write_benchmark(tmp_path / "bench", archs=ARCHS[:2], folder=True)
    (bench / "000001.pickle.pbz2").write_bytes(_bz2_pickle({"200": _Marker(str(marker))}))
    lookup = BenchmarkLookup(bench)
    assert lookup.lookup(ARCHS[0])[0] == 0  # the architectures whose files are sound are looked up
    with pytest.raises(ConfigError, match=r"000001.pickle.pbz2: holds a \w+.open object"):
        lookup.lookup(ARCHS[1])  # the file is read when the architecture is first looked up
    (bench / "meta.pickle.pbz2").write_bytes(_bz2_pickle({"meta_archs": [_Marker(str(marker))]}))
    with pytest.raises(ConfigError, match=r"meta.pickle.pbz2: holds a \w+.open object"):
        open_benchmark(bench)
    assert not marker.exists()
