"""Once-for-All specialisation: cost tables (exact FLOPs, latency table origin), the accuracy predictor, the
constrained evolutionary search, and ``ofa.phase=specialise`` end to end with its refusals."""

from __future__ import annotations

import itertools
import json
import random

import pytest
import torch
from conftest import TINY_OFA, ofa_cfg, tiny_ofa_network

from darts_lite.errors import ConfigError
from darts_lite.evolve import GeneticEvolution
from darts_lite.measure import count_flops, million_multiply_adds
from darts_lite.ofa import OFANetwork
from darts_lite.ofa.costs import CostTableError, SubnetCosts, read_latency_table
from darts_lite.ofa.predictor import AccuracyPredictor, PredictorError, SubnetEncoding, load_predictor, rank_scores
from darts_lite.ofa.specialise import SubnetSpace, load_subnet
from darts_lite.ofa.task import check, run_ofa, save_network

SMALL = dict(TINY_OFA, ks_list=(3, 5), expand_list=(2, 3), depth_list=(1, 2))  # 2 units of 2 blocks: 2048 (setting, side)


def all_settings(net: OFANetwork, sides):
    n, units = len(net.blocks), len(net.units)
    for ks in itertools.product(net.ks_list, repeat=n):
        for e in itertools.product(net.expand_list, repeat=n):
            for d in itertools.product(net.depth_list, repeat=units):
                for side in sides:
                    yield {"ks": list(ks), "e": list(e), "d": list(d)}, side


# ---- costs ------------------------------------------------------------------------------------------------------
def test_part_flops_add_up_to_the_count_on_the_standalone_subnet():
    net = tiny_ofa_network()
    costs = SubnetCosts(net)
    rng = random.Random(0)
    for side in (6, 7, 8, 9):
        setting = net.sample_active_subnet(rng)
        counted = million_multiply_adds(count_flops(net.get_active_subnet(), (3, side, side)))
        assert costs.cost(setting, side, latency=False)["flops"] == pytest.approx(counted, rel=1e-9)


def test_smallest_cost_is_the_minimum_over_every_setting():
    torch.manual_seed(0)
    net = OFANetwork(**SMALL)
    costs = SubnetCosts(net)
    flops = min(costs.cost(s, side, latency=False)["flops"] for s, side in all_settings(net, (6, 8)))
    assert costs.smallest((6, 8), "flops") == pytest.approx(flops)
    costs.latency = {k: float(len(k) % 7 + 1) for k in costs.flops}  # a made-up table: no timing in a test
    latency = min(sum(costs.latency[k] for k, _, _ in costs.parts(s, side)) for s, side in all_settings(net, (6, 8)))
    assert costs.smallest((6, 8), "latency_ms") == pytest.approx(latency)


def test_the_latency_table_is_saved_reused_and_refused_from_elsewhere(tmp_path):
    net = tiny_ofa_network()
    path = tmp_path / "latency.json"
    costs = SubnetCosts(net, latency_table=path)
    setting = net.setting()
    first = costs.cost(setting, 8)["latency_ms"]
    assert costs.measured_now > 0 and first > 0
    costs.save()
    again = SubnetCosts(net, latency_table=path)
    assert again.cost(setting, 8)["latency_ms"] == pytest.approx(first) and again.measured_now == 0  # read, not measured
    data = json.loads(path.read_text())
    data["origin"]["machine"]["node"] = "another-host"
    path.write_text(json.dumps(data))
    with pytest.raises(CostTableError, match="measured on another-host.*do not carry over"):
        SubnetCosts(net, latency_table=path)
    data["origin"]["machine"] = costs.origin["machine"]
    path.write_text(json.dumps(data))
    with pytest.raises(CostTableError, match="another network \\(differs in widths\\)"):
        read_latency_table(path, SubnetCosts(OFANetwork(**dict(TINY_OFA, widths=(4, 12)))).origin)


# ---- the predictor ----------------------------------------------------------------------------------------------
def known_accuracy(setting, side):
    """A smooth function of the active blocks' kernels and widths and the side."""
    active = [i for u, d in enumerate(setting["d"]) for i in range(u * 4, u * 4 + d)]
    return 0.3 + 0.004 * sum(setting["ks"][i] + 2 * setting["e"][i] for i in active) + 0.01 * side  # in (0.5, 1)


def test_encoding_ignores_skipped_blocks_and_marks_the_side():
    net = tiny_ofa_network()
    enc = SubnetEncoding.of(net, (8, 6))
    a = {"ks": [3] * 8, "e": [3] * 8, "d": [2, 2]}
    b = {"ks": [3, 3, 7, 7, 3, 3, 5, 5], "e": [3, 3, 6, 6, 3, 3, 4, 4], "d": [2, 2]}
    assert enc.vector(a, 6) == enc.vector(b, 6) != enc.vector(a, 8)
    assert len(enc.vector(a, 6)) == enc.size == 2 * 4 * 6 + 2
    assert sum(enc.vector(b, 8)) == 4 * 2 + 1  # one kernel and one width per active block, one side


def test_the_predictor_learns_a_known_function_and_round_trips(tmp_path):
    net = tiny_ofa_network()
    enc = SubnetEncoding.of(net, (6, 8))
    rng = random.Random(0)
    items = [(net.sample_active_subnet(rng), rng.choice((6, 8))) for _ in range(160)]
    y = [known_accuracy(s, side) for s, side in items]
    model = AccuracyPredictor(enc, hidden=32, layers=2).fit(items[:120], y[:120], epochs=300, lr=3e-3, seed=1)
    scores = rank_scores(model.predict(items[120:]), y[120:])
    assert scores["kendall_tau"] > 0.7 and scores["rmse"] < 0.03
    assert all(0 < p < 1 for p in model.predict(items))
    path = model.save(tmp_path / "p.pt", {"made": "here"})
    same, record = load_predictor(path, enc)
    assert same.predict(items[:5]) == model.predict(items[:5]) and record == {"made": "here"}
    with pytest.raises(PredictorError, match="fitted for choices"):
        load_predictor(path, SubnetEncoding.of(net, (6, 7, 8)))
    saved = torch.load(path, weights_only=True)
    saved["version"] = "dl-ofa-mlp-v0"
    torch.save(saved, path)
    with pytest.raises(PredictorError, match="version 'dl-ofa-mlp-v0'"):
        load_predictor(path)


# ---- the constrained search -------------------------------------------------------------------------------------
def test_every_candidate_of_the_search_meets_the_constraint_and_it_climbs():
    net = tiny_ofa_network()
    costs = SubnetCosts(net)
    limit = 0.5 * (costs.smallest((6, 8), "flops") + costs.cost({"ks": [7] * 8, "e": [6] * 8, "d": [4, 4]}, 8,
                                                                 latency=False)["flops"])

    def flops(c):
        return costs.cost(c.setting(), c.side, latency=False)["flops"]

    space = SubnetSpace(net, (6, 8), feasible=lambda c: flops(c) <= limit)
    seen = []

    def evaluate(requests):
        seen.extend(r.candidate for r in requests)
        return [known_accuracy(r.candidate.setting(), r.candidate.side) for r in requests]

    search = GeneticEvolution(space.moves(), evaluate, 0, population=20, parents=5, generations=6)
    search.run()
    assert len(seen) == 20 + 6 * 15 and all(flops(c) <= limit for c in seen)
    history = [h["best"] for h in search.history]
    assert history[-1] > history[0]
    best = search.best(1)[0][0]
    randoms = [known_accuracy(c.setting(), c.side) for c in (space.sample(random.Random(i)) for i in range(110))]
    assert known_accuracy(best.setting(), best.side) >= max(randoms)


# ---- end to end: ofa.phase=specialise ---------------------------------------------------------------------------
SPEC = ["ofa.phase=specialise", "ofa.specialise.samples=10", "ofa.specialise.population=8", "ofa.specialise.parents=3",
        "ofa.specialise.generations=2", "ofa.specialise.epochs=50"]


def test_specialise_alone_writes_the_subnet_within_its_budget_and_reuses_the_predictor(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    net = OFANetwork(**dict(TINY_OFA, num_classes=3))  # as ofa_cfg's data: 3 classes
    save_network(net, "expand2", run / "network.pt")
    summary = run_ofa(ofa_cfg(run, *SPEC, "ofa.constraint.flops=0.05"))
    folder = run / "specialise" / "flops-0.05"
    record = json.loads((folder / "subnet.json").read_text())
    assert record["flops"] <= 0.05 and record["constraint"] == {"flops": 0.05, "latency_ms": None}
    for key in ("accuracy", "latency_ms", "predicted_accuracy", "setting", "resolution"):
        assert key in record
    assert summary["specialise"]["flops"] == record["flops"]
    for name in ("subnet.pt", "candidates.csv", "front.png", "summary.json"):
        assert (folder / name).is_file()
    assert (run / "specialise" / "latency_table.json").is_file() and (run / "specialise" / "measured.csv").is_file()
    subnet, saved = load_subnet(folder / "subnet.pt")  # the standalone weights: the same function as the elastic net's
    elastic = OFANetwork(**dict(TINY_OFA, num_classes=3))
    elastic.load_state_dict(net.state_dict())
    elastic.set_active_subnet(**saved["setting"])
    x = torch.randn(4, 3, saved["resolution"], saved["resolution"])
    reference = elastic.get_active_subnet()
    for (name, a), b in zip(subnet.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # the trained weights, as the elastic network's
    reference.load_state_dict(subnet.state_dict())  # and BatchNorm statistics: the calibrated ones
    torch.testing.assert_close(subnet(x), reference.eval()(x))
    side = saved["resolution"]
    assert million_multiply_adds(count_flops(subnet, (3, side, side))) == pytest.approx(record["flops"])
    capsys.readouterr()
    run_ofa(ofa_cfg(run, *SPEC, "ofa.constraint.flops=0.08"))  # another budget: the predictor is reused
    assert "predictor reused" in capsys.readouterr().out
    assert json.loads((run / "specialise" / "flops-0.08" / "subnet.json").read_text())["flops"] <= 0.08


def test_bad_budgets_and_missing_network_stop_before_anything_runs(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="ofa.constraint.flops=0.001: below the smallest sub-network's"):
        check(ofa_cfg(run, "ofa.constraint.flops=0.001"))
    with pytest.raises(ConfigError) as e:
        check(ofa_cfg(run, "ofa.constraint.latency_ms=-1", "ofa.specialise.parents=9", "ofa.specialise.population=8",
                      "+ofa.constraint.watts=3"))
    for part in ("ofa.constraint.latency_ms=-1", "ofa.specialise.parents=9", "ofa.constraint.watts: unknown option"):
        assert part in str(e.value)
    with pytest.raises(ConfigError, match="give a budget"):
        check(ofa_cfg(run, "ofa.phase=specialise"))
    with pytest.raises(ConfigError, match="network.pt, which does not exist"):
        run_ofa(ofa_cfg(run, *SPEC, "ofa.constraint.flops=0.05"))
    assert not run.exists()
    table = tmp_path / "elsewhere.json"
    table.write_text(json.dumps({"origin": {"version": "dl-ofa-latency-v1", "machine": {"node": "gpu-box"},
                                            "network": {}, "batch": 1}, "entries": {}}))
    with pytest.raises(ConfigError, match="measured on gpu-box"):
        check(ofa_cfg(run, "ofa.constraint.latency_ms=5", f"ofa.specialise.latency_table={table}"))
