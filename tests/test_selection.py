"""Perturbation-based architecture selection (DARTS-PT): the edge-weight transform, the decisions, the files and
the two entry points (search.selection=perturbation, task=select)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import compose_cfg, run_cli

from darts_lite.config import ConfigError, validate_search, validate_select
from darts_lite.data import SearchDataModule
from darts_lite.run.checkpoints import RECORD_FORMAT
from darts_lite.search import SearchModule
from darts_lite.spaces import get_space
from darts_lite.tricks.selection import (
    CSV_COLUMNS,
    PerturbationSelection,
    SelectionTransform,
    expected_rows,
    perturbation_selection,
)

# one worker runs this module's tests, so its module fixture (searched) is built once, not once per worker
pytestmark = pytest.mark.xdist_group("selection")

OPS = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]  # a short op list keeps real selections quick
TINY = {"darts": dict(C=4, layers=3, num_classes=4), "nb201": dict(C=4, N=1, num_classes=4)}


def tiny_net(space: str = "darts", **kwargs):
    torch.manual_seed(0)
    net = get_space(space).SearchNetwork(**{**TINY[space], **kwargs})
    with torch.no_grad():  # alphas far from uniform, so that every op's weight differs
        for a in net.arch_parameters():
            a.normal_()
    return net.eval()


def first_cell_edge(net, space: str, edge: int, x: torch.Tensor):
    """The first search cell of ``net``, the input state of ``edge`` in it, and the cell type's weights function."""
    if space == "darts":
        cell = net.cells[0]
        s = net.stem(x)
        states = [cell.preprocess0(s), cell.preprocess1(s)]
        j = [j for node in range(cell.steps) for j in range(node + 2)][edge]
        assert j < 2  # an edge that reads a cell input, whose state needs no other edge
        return cell.edges[edge], states[j], "normal", net.alpha_normal
    from darts_lite.spaces.nb201 import EDGES

    assert EDGES[edge][1] == 0
    return net.cells[0].edges[edge], net.stem(x), "cell", net.alphas


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_the_transform_removes_exactly_one_op_and_a_decided_edge_runs_its_op_alone(space):
    net = tiny_net(space)
    edge = 1 if space == "darts" else 0
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        mixed, h, cell_type, alphas = first_cell_edge(net, space, edge, x)
        w = torch.softmax(alphas, -1)[edge]
        outputs = [op(h) for op in mixed.ops]
        transform = SelectionTransform()
        net.edge_weight_transform = transform
        removed = 2
        transform.removal = (cell_type, edge, removed)
        ew = net.relax(cell_type, alphas)
        by_hand = sum(w[k] * out for k, out in enumerate(outputs) if k != removed)
        got = mixed(h, ew.weights[edge], None, 0.0) if space == "darts" else mixed(h, ew.weights[edge], None)
        assert torch.allclose(got, by_hand, atol=1e-6)
        # the other edges and the other cell type are as the relaxation gives them
        plain = torch.softmax(alphas, -1)
        others = [e for e in range(len(plain)) if e != edge]
        assert torch.equal(ew.weights[others], plain[others])
        assert ew.weights[edge, removed] == 0 and torch.equal(ew.weights[edge, :removed], plain[edge, :removed])
        if space == "darts":
            assert torch.equal(net.relax("reduce", net.alpha_reduce).weights, torch.softmax(net.alpha_reduce, -1))

        transform.removal = None
        transform.decided[cell_type] = {edge: 3}
        ew = net.relax(cell_type, alphas)
        got = mixed(h, ew.weights[edge], None, 0.0) if space == "darts" else mixed(h, ew.weights[edge], None)
        assert torch.allclose(got, outputs[3], atol=1e-6)
        assert ew.weights[edge].tolist() == [1.0 if k == 3 else 0.0 for k in range(len(outputs))]


class Stub:
    """A measure with known numbers: removing the costly op of an edge (or a costly input of a node) costs most."""

    def __init__(self, selection_holder, costly_op, costly_edges):
        self.holder, self.costly_op, self.costly_edges = selection_holder, costly_op, costly_edges
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        removal = self.holder[0].transform.removal
        if removal is None:
            return 0.9
        cell, edge, op = removal
        if op is None:  # an edge removed: the more costly, the lower the accuracy
            return 0.8 - 0.1 * self.costly_edges[cell].get(edge, 0)
        return 0.5 if op == self.costly_op[cell][edge] else 0.85 - 0.001 * op


def stubbed_selection(net, seed, costly_op, costly_edges, tunes):
    holder = []
    stub = Stub(holder, costly_op, costly_edges)
    selection = PerturbationSelection(net, "darts", stub, lambda: tunes.append(1), seed=seed, progress=False)
    holder.append(selection)
    return selection, stub


def test_decisions_keep_the_op_and_the_inputs_whose_removal_costs_most():
    net = tiny_net()
    gen = torch.Generator().manual_seed(1)
    # per cell type and edge, a non-`none` op (columns 1..7) whose removal costs most
    costly_op = {cell: (torch.randint(1, 8, (14,), generator=gen)).tolist() for cell in ("normal", "reduce")}
    # the larger the number, the more an edge's removal costs: node 1 of the normal cell keeps inputs 0 and 2
    # (edges 2, 4), node 2 inputs 1 and 3 (edges 6, 8), node 3 inputs 0 and 4 (edges 9, 13); node 0 has only two
    costly_edges = {"normal": {2: 2, 4: 1, 6: 2, 8: 3, 13: 1, 9: 2}, "reduce": {3: 1, 4: 2, 5: 2, 8: 1, 12: 3, 11: 1}}
    kept_inputs = {"normal": [[0, 1], [0, 2], [1, 3], [0, 4]], "reduce": [[0, 1], [1, 2], [0, 3], [2, 3]]}
    tunes = []
    alphas = [a.detach().clone() for a in net.arch_parameters()]
    selection, stub = stubbed_selection(net, 0, costly_op, costly_edges, tunes)
    genotype = selection.run()

    prims = net.primitives
    starts = [0, 2, 5, 9]
    for cell, pairs in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        for node in range(4):
            inputs = sorted(j for _, j in pairs[2 * node:2 * node + 2])
            assert inputs == kept_inputs[cell][node], (cell, node)
            for op, j in pairs[2 * node:2 * node + 2]:
                assert op == prims[costly_op[cell][starts[node] + j]]
    # one fine-tuning between two decisions: 14 op decisions and 3 topology decisions
    assert selection.num_decisions == 17 and len(tunes) == 16
    # the CSV rows: 7 candidates (no `none`) on 14 edges, and 3 + 4 + 5 inputs, per cell type
    assert len(selection.rows) == 2 * (14 * 7 + 12) == expected_rows(net, "darts")
    assert all(set(row) == set(CSV_COLUMNS) for row in selection.rows)
    for cell in ("normal", "reduce"):
        chosen = [r for r in selection.rows if r["phase"] == "topology" and r["cell"] == cell and r["chosen"]]
        assert sorted(r["node"] for r in chosen) == [1, 1, 2, 2, 3, 3]
        ops = [r for r in selection.rows if r["phase"] == "operation" and r["cell"] == cell]
        assert sum(r["chosen"] for r in ops) == 14 and {r["candidate"] for r in ops} == set(prims) - {"none"}
    # the alphas were never touched, and the supernet is left without the transform
    assert all(torch.equal(a, b) for a, b in zip(alphas, net.arch_parameters()))
    assert net.edge_weight_transform is None


def test_the_edge_order_is_random_and_reproducible_by_seed():
    net = tiny_net()
    costly_op = {cell: [1] * 14 for cell in ("normal", "reduce")}

    def order(seed):
        selection, _ = stubbed_selection(net, seed, costly_op, {"normal": {}, "reduce": {}}, [])
        selection.run()
        return [(r["cell"], r["edge"]) for r in selection.rows if r["phase"] == "operation" and r["chosen"]]

    first = order(3)
    assert first == order(3) and first != order(4)
    assert sorted(e for c, e in first if c == "normal") == list(range(14))
    assert first[:2] == [("normal", first[0][1]), ("reduce", first[1][1])]  # each decision: one edge of each cell type


def test_nb201_has_no_topology_step_and_none_is_a_candidate():
    net = tiny_net("nb201")
    holder = []
    costly = {"cell": [0, 3, 1, 2, 4, 3]}  # edge 0 keeps `none`
    stub = Stub(holder, costly, {})
    selection = PerturbationSelection(net, "nb201", stub, None, seed=0, progress=False)
    holder.append(selection)
    genotype = selection.run()
    assert genotype.ops == tuple(net.primitives[k] for k in costly["cell"])
    assert len(selection.rows) == 6 * 5 == expected_rows(net, "nb201")
    assert {r["phase"] for r in selection.rows} == {"operation"}


def test_selection_on_a_real_supernet_fine_tunes_weights_not_alphas(tmp_path):
    torch.manual_seed(0)
    dm = SearchDataModule(name="synthetic", batch_size=8, synthetic_samples=48, synthetic_classes=4, synthetic_size=8,
                          seed=0)
    module = SearchModule(network=dict(C=4, layers=3, steps=2, multiplier=2, num_classes=4, primitives=OPS), lr=0.05)
    alphas = [a.detach().clone() for a in module.net.arch_parameters()]
    weights = [p.detach().clone() for p in module.net.weight_parameters()]
    result = perturbation_selection(module, dm, epochs=1, batches=1, seed=0, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(alphas, module.net.arch_parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(weights, module.net.weight_parameters()))
    files = result.write(tmp_path)
    rows = list(csv.DictReader(open(files["selection.csv"])))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == expected_rows(module.net, "darts") == 2 * (5 * 3 + 3)
    assert all(0 <= float(r["accuracy_removed"]) <= 1 for r in rows)
    saved = get_space("darts").Genotype.parse(files["genotype_perturbation.json"].read_text())
    assert saved == result.genotype and len(saved.normal) == 4
    # a decision keeps the op whose removal gave the lowest accuracy
    for group in _groups(rows).values():
        best = min(float(r["accuracy_removed"]) for r in group)
        assert float(next(r for r in group if r["chosen"] == "True")["accuracy_removed"]) == best


def _groups(rows):
    groups = {}
    for r in rows:
        if r["phase"] == "operation":
            groups.setdefault((r["cell"], r["edge"]), []).append(r)
    return groups


# ---- entry points ----------------------------------------------------------------------------------------------
# a quickstart shrunk to seconds: 2 nodes per cell, 3 candidate ops besides `none`, a tenth of the digits
SEARCH = ["+experiment=quickstart", "space.C=4", "space.layers=3", "space.steps=2", "space.multiplier=2",
          f"space.primitives=[{','.join(OPS)}]", "data.sample_ratio=0.1", "data.batch_size=32",
          "search.epochs=1", "search.warmup_epochs=0", "search.selection_epochs=1", "search.selection_batches=1",
          "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A 1-epoch quickstart-like search with search.selection=perturbation: its run folder."""
    from darts_lite.tasks import run_search

    run = tmp_path_factory.mktemp("search") / "run"
    summary = run_search(compose_cfg(*SEARCH, "search.selection=perturbation", f"run_dir={run}"))
    return run, summary


def test_search_with_perturbation_selection_writes_both_genotypes(searched):
    run, summary = searched
    for name in ("genotype.json", "genotype_perturbation.json", "genotype_perturbation.txt", "selection.csv"):
        assert (run / name).is_file(), name
    Genotype = get_space("darts").Genotype
    saved = json.loads((run / "summary.json").read_text())
    assert Genotype.parse(saved["genotype"]) == Genotype.parse((run / "genotype.json").read_text())
    assert Genotype.parse(saved["genotype_perturbation"]) == Genotype.parse((run / "genotype_perturbation.txt").read_text())
    assert len(list(csv.DictReader(open(run / "selection.csv")))) == 2 * (5 * 3 + 3)


def test_task_select_on_a_search_checkpoint(searched, tmp_path):
    from darts_lite.tasks import run_select

    run, _ = searched
    out = tmp_path / "select"
    summary = run_select(compose_cfg(*SEARCH, "task=select", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                                     f"run_dir={out}"))
    assert summary["task"] == "select"
    for name in ("genotype.json", "genotype.txt", "genotype_perturbation.json", "selection.csv", "summary.json"):
        assert (out / name).is_file(), name
    Genotype = get_space("darts").Genotype
    # the argmax genotype is the search's own: same checkpoint, same alphas
    assert Genotype.parse((out / "genotype.json").read_text()) == Genotype.parse((run / "genotype.json").read_text())
    assert Genotype.parse(summary["genotype_perturbation"]) == Genotype.parse((out / "genotype_perturbation.json").read_text())


class _Stop(Exception):
    pass


def test_a_stopped_selection_resumes_after_its_last_decision_to_the_same_result(searched, tmp_path, monkeypatch):
    """Stopped right after its third decision was saved (fine-tuning drew random augmentations in between),
    task=select with resume=true takes the remaining decisions only and ends as the uninterrupted one: same rows,
    same genotype; its state file is gone once the selection is done. Another checkpoint's state is refused."""
    from darts_lite.tasks import run_select
    from darts_lite.tricks import selection as selection_module

    run, _ = searched
    args = [*SEARCH, "task=select", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "search.selection_epochs=2"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run_select(compose_cfg(*args, f"run_dir={straight}"))
    assert not (straight / "selection_state.pt").exists()

    real_save = selection_module.SelectionState.save

    def save_then_stop(self, decisions, *a):
        real_save(self, decisions, *a)
        if decisions == 3:
            raise _Stop

    monkeypatch.setattr(selection_module.SelectionState, "save", save_then_stop)
    with pytest.raises(_Stop):
        run_select(compose_cfg(*args, f"run_dir={stopped}"))
    assert torch.load(stopped / "selection_state.pt", weights_only=True)["decisions"] == 3
    monkeypatch.setattr(selection_module.SelectionState, "save", real_save)
    taken = []
    monkeypatch.setattr(selection_module.PerturbationSelection, "_decide_op",
                        lambda self, cell, edge, d, real=selection_module.PerturbationSelection._decide_op:
                        taken.append(d) or real(self, cell, edge, d))
    run_select(compose_cfg(*args, f"run_dir={stopped}", "resume=true"))
    assert taken and min(taken) == 4  # decisions 1-3 came from the state, not measured again
    assert (stopped / "selection.csv").read_text() == (straight / "selection.csv").read_text()
    assert (stopped / "genotype_perturbation.json").read_text() == (straight / "genotype_perturbation.json").read_text()
    assert not (stopped / "selection_state.pt").exists()

    # a state saved from other options is refused, in one message that names the file
    monkeypatch.setattr(selection_module.SelectionState, "save", save_then_stop)
    with pytest.raises(_Stop):
        run_select(compose_cfg(*args, f"run_dir={stopped}"))
    with pytest.raises(ConfigError, match=r"selection_state.pt was saved by another selection \(epochs: 2 in the state, 1"):
        run_select(compose_cfg(*args, f"run_dir={stopped}", "resume=true", "search.selection_epochs=1"))


def test_select_refuses_another_space_and_another_split(searched):
    run, _ = searched
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(ConfigError, match=r"in the 'darts' space, and space='nb201'; add space=darts"):
        validate_select(compose_cfg("+experiment=quickstart", "data.sample_ratio=0.1", "task=select", ckpt, "space=nb201"))
    with pytest.raises(ConfigError, match=r"split its data otherwise.*data.split: 0.5 in the checkpoint, 0.7 now"):
        validate_select(compose_cfg(*SEARCH, "task=select", ckpt, "data.split=0.7"))


def test_select_refuses_missing_unreadable_and_non_search_checkpoints(tmp_path):
    base = [*SEARCH, "task=select"]
    with pytest.raises(ConfigError, match="needs the checkpoint of a finished search"):
        validate_select(compose_cfg(*base))
    with pytest.raises(ConfigError, match="no such file"):
        validate_select(compose_cfg(*base, f"ckpt_path={tmp_path / 'nothing.ckpt'}"))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        validate_select(compose_cfg(*base, f"ckpt_path={garbage}"))
    trained = tmp_path / "train.ckpt"
    record = {"format": RECORD_FORMAT, "task": "train", "space": "darts", "settings": {}}
    torch.save({"state_dict": {}, "darts_lite": record}, trained)
    with pytest.raises(ConfigError, match="a checkpoint of a task=train run; task=select needs a search's checkpoint"):
        validate_select(compose_cfg(*base, f"ckpt_path={trained}"))


@pytest.mark.parametrize("override,message", [
    ("search.selection=best", "search.selection='best': must be one of argmax, perturbation"),
    ("search.selection_epochs=-1", "search.selection_epochs=-1: must be an integer >= 0"),
    ("search.selection_batches=0", "search.selection_batches=0: must be null"),
])
def test_bad_selection_values_are_one_message(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate_search(compose_cfg("+experiment=quickstart", "search.selection=perturbation", override))


def test_gumbel_search_with_perturbation_selection_is_refused():
    with pytest.raises(ConfigError, match="needs a relaxation that runs every op"):
        validate_search(compose_cfg("+experiment=quickstart", "search=gdas", "search.selection=perturbation"))


def test_missing_checkpoint_on_the_command_line_exits_with_one_message(tmp_path):
    proc = run_cli("+experiment=quickstart", "task=select", f"ckpt_path={tmp_path / 'missing.ckpt'}",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "missing.ckpt: no such file" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "selection.csv").exists()
