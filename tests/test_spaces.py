"""Spaces as plug-ins: the registry, the interface every space module provides, genotypes of any space."""

import csv
import json
import random
from collections import Counter

import pytest
import torch
from conftest import run_cli

from darts_lite.spaces import INTERFACE, SPACES, get_space, parse_genotype, space_of

SEARCH_SIZES = {"darts": dict(C=4, layers=3), "nb201": dict(C=4, N=1)}
EVAL_SIZES = {"darts": dict(C=4, layers=3, auxiliary=False), "nb201": dict(C=4, N=1)}


BUILT_IN = ("darts", "nb201")


def test_registry_names_every_space_and_refuses_others():
    assert tuple(SPACES)[:2] == BUILT_IN
    for name in BUILT_IN:
        assert get_space(name).NAME == name
        assert space_of(get_space(name).SearchNetwork).NAME == name  # and a network knows its space
    with pytest.raises(ValueError, match="space 'nb301': unknown; spaces: darts, nb201"):
        get_space("nb301")
    with pytest.raises(ValueError, match="space 'darts_lite.relax': not a space module; it lacks NAME"):
        get_space("darts_lite.relax")


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_space_is_a_package_of_the_same_files(name):
    import importlib
    import pkgutil

    space = get_space(name)
    assert {m.name for m in pkgutil.iter_modules(space.__path__)} == {"ops", "search", "eval", "genotype", "pictures"}
    # and its interface classes come from those files
    assert space.SearchNetwork.__module__ == f"{space.__name__}.search"
    assert space.EvalNetwork.__module__ == f"{space.__name__}.eval"
    assert space.Genotype.__module__ == f"{space.__name__}.genotype"
    assert importlib.import_module(f"{space.__name__}.pictures").cell_dots is space.cell_dots


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_space_provides_the_interface(name):
    space = get_space(name)
    for attr in INTERFACE:
        assert hasattr(space, attr), f"{name} lacks {attr}"
    torch.manual_seed(0)
    net = space.SearchNetwork(num_classes=3, in_channels=1, relaxation="softmax", **SEARCH_SIZES[name])
    probs = net.op_probabilities()
    alphas = net.arch_parameters()
    assert len(probs) == len(alphas) and list(probs)[0] == list(net.genotype().cells())[0]
    for p, a in zip(probs.values(), alphas):
        assert p.shape == a.shape and len(net.edge_labels()) == a.shape[0] and a.shape[1] == len(net.primitives)
        assert torch.allclose(p.sum(-1), torch.ones(a.shape[0]))
    assert {id(p) for p in net.weight_parameters()}.isdisjoint(id(a) for a in alphas)
    assert len(net.weight_parameters()) + len(alphas) == len(list(net.parameters()))
    out = net(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in alphas)


@pytest.mark.parametrize("name", BUILT_IN)
def test_sampled_and_mutated_genotypes_are_valid_round_trip_and_build(name):
    space = get_space(name)
    rng = random.Random(0)
    seen = set()
    for _ in range(20):
        g = space.sample(rng)
        m = space.mutate(g, rng)
        assert m != g
        # exactly one (op, input) pair was replaced
        before = Counter((cell, pair) for cell, pairs in g.cells().items() for pair in pairs)
        after = Counter((cell, pair) for cell, pairs in m.cells().items() for pair in pairs)
        assert sum((before - after).values()) == 1 and sum((after - before).values()) == 1
        for genotype in (g, m):
            assert space.Genotype.parse(genotype.to_text()) == genotype
            assert parse_genotype(genotype.to_json()) == (space, genotype)
            assert parse_genotype(genotype.to_text()) == (space, genotype)
        seen.add(g.to_text())
    assert len(seen) > 15  # a sampler, not a constant
    net = space.EvalNetwork(g, num_classes=3, in_channels=1, **EVAL_SIZES[name])
    net.eval()
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    assert net.num_parameters() > 0
    assert all(source.startswith("digraph") for source in space.cell_dots(g).values())


def test_genotype_text_of_no_space_is_refused_with_the_formats():
    with pytest.raises(ValueError, match="not genotype text of any space"):
        parse_genotype("resnet18")
    with pytest.raises(ValueError, match="genotype JSON is not a genotype of any space"):
        parse_genotype('{"layers": 3}')
    # text that begins as one space's genotype is that space's to judge: its own message comes through
    with pytest.raises(ValueError, match="unknown op 'conv_9x9'"):
        parse_genotype("Genotype(normal=[('conv_9x9', 0), ('skip_connect', 1)], normal_concat=[2], reduce=[], reduce_concat=[])")
    with pytest.raises(ValueError, match="conv_9x9"):
        parse_genotype("|conv_9x9~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|")


def test_darts_cells_put_a_nodes_two_edges_in_input_order():
    g = get_space("darts").Genotype.named("DARTS_V2")
    normal = g.cells()["normal"]
    assert sorted(normal) == sorted(g.normal)
    assert all(normal[k][1] <= normal[k + 1][1] for k in range(0, len(normal), 2))


# ---- the NAS-Bench-201 space through the command line ------------------------------------------------------
@pytest.mark.parametrize("search", ["darts", "darts_v2", "gdas"])
def test_nb201_search_end_to_end_then_retrain_the_cell(tmp_path, search):
    run = tmp_path / "search"
    proc = run_cli("+experiment=nb201_quick", f"search={search}", "search.epochs=2", "search.warmup_epochs=1",
                   "+trainer.limit_train_batches=4", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb201 = get_space("nb201")
    genotype = nb201.Genotype.parse((run / "genotype.txt").read_text())
    assert nb201.Genotype.parse((run / "genotype.json").read_text()) == genotype
    assert f"Genotype: {genotype.to_text()}" in proc.stdout
    for name in ("cell.dot", "alphas_cell.png", "alphas.pt", "metrics.csv", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), f"{name} missing"
    assert torch.load(run / "alphas.pt")["cell"].shape == (6, 5)
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["decision"]) == {"cell", "uniform"} and 0 <= summary["decision"]["cell"]["param_free_share"] <= 1
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [float(r["decision/cell/max_prob"]) for r in rows if r.get("decision/cell/max_prob")]
    if search != "darts":
        return
    # the found cell retrains with its space's recipe; the DARTS recipe refuses it and names the option
    refused = run_cli("+experiment=train_quick", f"genotype={run}", f"hydra.run.dir={tmp_path / 'no'}", cwd=tmp_path)
    assert refused.returncode != 0
    assert "a nb201 cell, and train=darts retrains darts cells; add train=nb201" in refused.stderr
    retrain = tmp_path / "train"
    proc = run_cli("+experiment=train_quick", "train=nb201", f"genotype={run}", "train.epochs=1",
                   "+trainer.limit_train_batches=4", f"hydra.run.dir={retrain}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((retrain / "summary.json").read_text())
    assert summary["genotype"] == genotype.to_text()
    C, N = 16, 5  # train_quick's C and layers
    assert summary["params"] == nb201.EvalNetwork(genotype, C=C, N=N, num_classes=10, in_channels=1).num_parameters()


def test_sweep_summary_of_nb201_searches_names_their_cell(tmp_path):
    from darts_lite.sweep import write_sweep_summary

    nb201 = get_space("nb201")
    a = nb201.Genotype.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    b = nb201.mutate(a, random.Random(0))
    rows = [{"job": str(k), "overrides": f"seed={k}", "status": "done", "task": "search", "genotype": g.to_text(),
             "val_acc": 0.9, "wall_time_s": 10.0, "cell_max_prob": 0.4, "cell_margin": 0.1, "cell_entropy": 1.2,
             "cell_param_free_share": 1 / 6} for k, g in enumerate((a, a, b))]
    files = write_sweep_summary(tmp_path, rows)
    header = files["csv"].read_text().splitlines()[0].split(",")
    assert [c for c in header if c.startswith("cell_")] == ["cell_max_prob", "cell_margin", "cell_entropy",
                                                              "cell_param_free_share"]
    assert not any(c.startswith(("normal_", "reduce_")) for c in header)
    md = files["md"].read_text()
    shares = [1.0] * 6
    changed = next(k for k in range(6) if a.cells()["cell"][k] != b.cells()["cell"][k])
    shares[changed] = 2 / 3
    assert "- cell: " + ", ".join(f"{s:.2f}" for s in shares) in md
    assert "| 0 | cell | 0.400 | 0.100 | 1.200 | 0.17 |" in md
