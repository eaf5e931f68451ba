"""Resource-aware search: cost tables against hand counts, the expected cost and its gradient, the penalty steering
the derived cell to the cheapest ops (and adding nothing at weight 0), the latency table's round trip, bad values."""

import json

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_cfg

from darts_lite.config import ConfigError, validate_search
from darts_lite.data import SearchDataModule
from darts_lite.search import SearchModule
from darts_lite.spaces import get_space
from darts_lite.tricks.resources import (
    LATENCY_FILE,
    LatencyTable,
    LatencyTableError,
    ResourcePenalty,
    arch_alphas,
    cost_table,
)

M = 1e6


def _darts(**kw):
    # layers=3: cell 0 normal (C=8, 8x8), cells 1 and 2 reduce (C=16 from 8x8 to 4x4, C=32 from 4x4 to 2x2)
    return get_space("darts").SearchNetwork(**{"C": 8, "layers": 3, "num_classes": 4, "in_channels": 3, **kw})


def _col(net, op):
    return net.primitives.index(op)


def _sep(C, HW, k):  # two (depthwise k x k + pointwise) blocks, at the output's size HW
    return 2 * (k * k * C * HW + C * C * HW)


def test_darts_flops_and_params_tables_equal_hand_counts():
    torch.manual_seed(0)
    net = _darts()
    flops, params = cost_table(net, (3, 8, 8), "flops"), cost_table(net, (3, 8, 8), "params")
    normal, reduce = flops.costs["normal"], flops.costs["reduce"]
    # normal edge 0 (c_{k-2} -> node 0) of the one normal cell: C=8 at 8x8
    assert normal[0, _col(net, "sep_conv_3x3")].item() == pytest.approx(_sep(8, 64, 3) / M)
    assert normal[0, _col(net, "dil_conv_5x5")].item() == pytest.approx((25 * 8 * 64 + 8 * 8 * 64) / M)
    for free in ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"):  # no multiply-adds (identity at stride 1)
        assert normal[0, _col(net, free)].item() == 0
    # reduce edge 0 is strided: summed over both reduction cells, each op at its output size
    assert reduce[0, _col(net, "sep_conv_3x3")].item() == pytest.approx((_sep(16, 16, 3) + _sep(32, 4, 3)) / M)
    # stride-2 skip_connect is a factorized reduce: two 1x1 convs C -> C/2 at the output size
    assert reduce[0, _col(net, "skip_connect")].item() == pytest.approx((16 * 16 * 16 + 32 * 32 * 4) / M)
    # reduce edge 2 (node 0 -> node 1) is not strided: 4x4 and 2x2
    assert reduce[2, _col(net, "sep_conv_5x5")].item() == pytest.approx((_sep(16, 16, 5) + _sep(32, 4, 5)) / M)
    # parameters: no affine BatchNorm in search cells
    assert params.costs["normal"][0, _col(net, "sep_conv_3x3")].item() == pytest.approx(2 * (9 * 8 + 8 * 8) / M)
    assert params.costs["reduce"][0, _col(net, "skip_connect")].item() == pytest.approx((16 * 16 + 32 * 32) / M)
    assert params.costs["normal"][3, _col(net, "skip_connect")].item() == 0
    # the fixed parts: everything the whole network has besides the mixed edges' ops
    assert params.fixed == pytest.approx(sum(p.numel() for p in net.weight_parameters()) / M
                                         - sum(c.sum().item() for c in params.costs.values()), rel=1e-5)
    assert params.fixed > 0 and flops.fixed > 0
    # the scale: every edge its costliest op
    assert flops.scale == pytest.approx(sum(c.max(-1).values.sum().item() for c in flops.costs.values()))


def test_the_fixed_reduction_cells_are_a_constant_outside_expected_and_derived():
    plain, frc = _darts(), _darts(fixed_reduction=True)
    a, b = cost_table(plain, (3, 8, 8), "flops"), cost_table(frc, (3, 8, 8), "flops")
    assert set(b.costs) == {"normal"} and torch.equal(a.costs["normal"], b.costs["normal"])
    # the fixed reduction cells' two conv branches count in the constant (their preprocessing is the same as the
    # searched reduction cells', already in the other's): 1x3 and 3x1 convs in 8 groups, then a 1x1
    def branch(C, H, W):
        return C * (C // 8) * 3 * H * (W // 2) + C * (C // 8) * 3 * (H // 2) * (W // 2) + C * C * (H // 2) * (W // 2)

    assert b.fixed == pytest.approx(a.fixed + (2 * branch(16, 8, 8) + 2 * branch(32, 4, 4)) / M, rel=1e-5)
    assert b.derived(frc.genotype()) == pytest.approx(sum(
        b.costs["normal"][[0, 2, 5, 9][k // 2] + j, frc.primitives.index(op)].item()
        for k, (op, j) in enumerate(frc.genotype().normal)))


def test_nb201_flops_and_params_tables_equal_hand_counts():
    net = get_space("nb201").SearchNetwork(C=4, N=1, num_classes=4, in_channels=3, relaxation="gumbel")
    flops, params = cost_table(net, (3, 8, 8), "flops"), cost_table(net, (3, 8, 8), "params")
    conv3 = net.primitives.index("nor_conv_3x3")
    # three cells (C=4 at 8x8, 8 at 4x4, 16 at 2x2); the convs carry a bias (no affine BN), free of multiply-adds
    assert flops.costs["cell"][4, conv3].item() == pytest.approx(3 * 9 * 16 * 64 / M)
    assert params.costs["cell"][4, conv3].item() == pytest.approx(((9 * 16 + 4) + (9 * 64 + 8) + (9 * 256 + 16)) / M)
    for free in ("none", "skip_connect", "avg_pool_3x3"):
        assert flops.costs["cell"][:, net.primitives.index(free)].abs().sum().item() == 0


def test_expected_cost_is_the_explicit_sum_and_its_gradient_matches():
    torch.manual_seed(1)
    net = _darts(relaxation="gumbel")
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()
    table = cost_table(net, (3, 8, 8), "flops")
    alphas = arch_alphas(net)
    explicit = sum(torch.softmax(alphas[t][e], -1)[o].item() * table.costs[t][e, o].item()
                   for t in alphas for e in range(14) for o in range(8))
    expected = table.expected(alphas)
    assert expected.item() == pytest.approx(explicit, rel=1e-5)
    grads = torch.autograd.grad(expected, list(alphas.values()))
    for (t, a), g in zip(alphas.items(), grads):
        p, c = torch.softmax(a.detach().double(), -1), table.costs[t].double()
        closed = p * (c - (p * c).sum(-1, keepdim=True))  # d/d alpha of sum_o p_o c_o
        assert torch.allclose(g.double(), closed, rtol=1e-4, atol=1e-9)
    # and a finite difference of the float64 expectation on a few entries
    a64 = {t: a.detach().double() for t, a in alphas.items()}
    costs64 = {t: c.double() for t, c in table.costs.items()}

    def f(al):
        return sum((torch.softmax(al[t], -1) * costs64[t]).sum() for t in al).item()

    for t, e, o in [("normal", 0, 4), ("reduce", 1, 3), ("reduce", 13, 7)]:
        plus, minus = {k: v.clone() for k, v in a64.items()}, {k: v.clone() for k, v in a64.items()}
        plus[t][e, o] += 1e-6
        minus[t][e, o] -= 1e-6
        fd = (f(plus) - f(minus)) / 2e-6
        assert grads[list(alphas).index(t)][e, o].item() == pytest.approx(fd, rel=1e-3, abs=1e-9)


def test_penalty_forms_and_the_derived_cost():
    net = _darts()
    pen = ResourcePenalty("flops", weight=2.0)
    table = pen.prepare(net, (3, 8, 8), log=lambda m: None)
    expected = pen.expected(net)
    assert pen.penalty(net).item() == pytest.approx(2.0 * expected.item() / table.scale)
    for target, excess in [(expected.item() / 2, 1.0), (expected.item() * 2, 0.0)]:
        hinge = ResourcePenalty("flops", weight=2.0, target=target)
        hinge.table = table
        assert hinge.penalty(net).item() == pytest.approx(2.0 * excess, abs=1e-6)
    # the derived cell's exact cost: the sum of its chosen entries, edges found from (node, input)
    genotype = net.genotype()
    starts = [0, 2, 5, 9]
    by_hand = sum(table.costs[t][starts[k // 2] + j, net.primitives.index(op)].item()
                  for t, pairs in genotype.cells().items() for k, (op, j) in enumerate(pairs))
    assert table.derived(genotype) == pytest.approx(by_hand)
    metrics = pen.metrics(net)
    assert set(metrics) == {"search/expected_flops", "search/derived_flops", "search/resource_penalty", "search/fixed_flops"}


def _fit(space="darts", relaxation="softmax", order=1, steps=2, **resource):
    pl.seed_everything(0, verbose=False)
    network = dict(C=8, layers=3) if space == "darts" else dict(C=4, N=1)
    target = f"darts_lite.spaces.{space}.SearchNetwork"
    module = SearchModule(network=dict(network, _target_=target, num_classes=4, in_channels=3, relaxation=relaxation),
                          order=order, epochs=1, channels_last=False, arch_lr=0.1, hvp="forward", **resource)
    dm = SearchDataModule(name="synthetic", batch_size=8, crop_padding=0, flip=False, seed=0, synthetic_samples=32,
                          synthetic_classes=4, synthetic_size=8)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=steps, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                         use_distributed_sampler=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    return module, trainer


def _cheapest(module):
    """The least cost any derived cell can have: per edge its cheapest op the derivation may choose."""
    table = module.resource.table
    allowed = [o for o, p in enumerate(module.net.primitives) if p != "none" or not hasattr(module.net, "alpha_normal")]
    return {t: c[:, allowed].min(-1).values for t, c in table.costs.items()}


@pytest.mark.parametrize("space,relaxation,order", [("darts", "softmax", 1), ("darts", "softmax", 2),
                                                    ("darts", "gumbel", 1), ("nb201", "gumbel", 1)])
def test_a_large_weight_drives_the_derived_cell_to_the_cheapest_ops(space, relaxation, order):
    module, trainer = _fit(space, relaxation, order, steps=3, resource="flops", resource_weight=1000.0)
    table, net = module.resource.table, module.net
    cheapest = _cheapest(module)
    for t, pairs in net.genotype().cells().items():
        for k, (op, j) in enumerate(pairs):
            edge = [0, 2, 5, 9][k // 2] + j if space == "darts" else k
            assert table.costs[t][edge, net.primitives.index(op)] == cheapest[t][edge], (t, k, op)
    plain, _ = _fit(space, relaxation, order, steps=1, resource="flops", resource_weight=0.0)
    assert plain.resource.table.derived(plain.net.genotype()) > table.derived(net.genotype())
    logged = trainer.callback_metrics
    assert logged["search/derived_flops"].item() == pytest.approx(table.derived(net.genotype()), rel=1e-5)
    assert logged["search/expected_flops"].item() < plain.resource.expected(plain.net).item()


@pytest.mark.parametrize("relaxation", ["softmax", "gumbel"])
def test_weight_zero_leaves_the_search_bit_identical(relaxation):
    plain, _ = _fit("darts", relaxation)
    measured, trainer = _fit("darts", relaxation, resource="flops", resource_weight=0.0)
    for a, b in zip(plain.net.parameters(), measured.net.parameters()):
        assert torch.equal(a, b)
    assert "search/expected_flops" in trainer.callback_metrics  # measured and logged all the same


def test_latency_table_round_trip_and_refusals(tmp_path):
    net = get_space("nb201").SearchNetwork(C=4, N=1, num_classes=4, in_channels=3)
    path, run = tmp_path / "mine.json", tmp_path / "run"
    lines = []
    first = ResourcePenalty("latency", weight=1.0, latency_table=str(path), repeats=2)
    table = first.prepare(net, (3, 8, 8), run_dir=run, log=lines.append)
    assert path.exists() and (run / LATENCY_FILE).exists() and any("timing" in m for m in lines)
    saved = LatencyTable.load(path)
    assert saved.origin["machine"]["threads"] == torch.get_num_threads() and saved.origin["network"]["C"] == 4
    assert all(v > 0 for v in saved.entries.values())
    conv = net.primitives.index("nor_conv_3x3")
    # reused: nothing timed again, the same costs
    lines.clear()
    again = ResourcePenalty("latency", latency_table=str(path), repeats=2).prepare(net, (3, 8, 8), log=lines.append)
    assert not any("timing" in m for m in lines) and torch.equal(again.costs["cell"], table.costs["cell"])
    assert again.costs["cell"][0, conv] > 0
    # another network on this machine: said so, its missing sizes measured
    wider = get_space("nb201").SearchNetwork(C=8, N=1, num_classes=4, in_channels=3)
    ResourcePenalty("latency", latency_table=str(path), repeats=2).prepare(wider, (3, 8, 8), log=lines.append)
    assert any("another network" in m for m in lines) and any("timing" in m for m in lines)
    # another machine: refused, by the loader and by the config check
    data = json.loads(path.read_text())
    data["origin"]["machine"]["node"] = "elsewhere"
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="measured on elsewhere"):
        LatencyTable.load(path)
    with pytest.raises(ConfigError, match="latencies do not carry over"):
        validate_search(compose_cfg("+experiment=quickstart", "search.resource=latency", f"search.resource_latency_table={path}"))


@pytest.mark.parametrize("override,message", [("search.resource=watts", "search.resource="),
                                              ("search.resource_weight=-1", "search.resource_weight"),
                                              ("search.resource_target=0", "search.resource_target")])
def test_bad_resource_settings_stop_before_training(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_search(compose_cfg("+experiment=quickstart", override))
    validate_search(compose_cfg("+experiment=quickstart", "search.resource=flops", "search.resource_weight=0.5",
                                "search.resource_target=0.2"))


@pytest.mark.parametrize("kwargs,message", [(dict(kind="watts"), "search.resource"),
                                            (dict(kind="flops", weight=-1.0), "search.resource_weight"),
                                            (dict(kind="params", target=0.0), "search.resource_target")])
def test_bad_resource_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResourcePenalty(**kwargs)
