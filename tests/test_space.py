"""The DARTS search space: ops, cells, the search network, relaxations and genotype derivation."""

import pytest
import torch

from darts_lite import Genotype, SearchNetwork
from darts_lite.relax import GumbelRelaxation, SoftmaxRelaxation, linear_tau
from darts_lite.spaces.darts import FixedReductionCell, MixedEdge, reduction_indices
from darts_lite.spaces.darts.genotype import PRIMITIVES
from darts_lite.spaces.darts.ops import OPS, make_op
from darts_lite.spaces.ops import FactorizedReduce


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
def test_op_output_shapes(name, stride, size):
    op = make_op(name, 8, stride, affine=False, pool_bn=True)
    y = op(torch.randn(2, 8, size, size))
    expected = size if stride == 1 else (size + 1) // 2
    assert y.shape == (2, 8, expected, expected)


def test_none_op_is_zero_and_pool_has_affine_free_bn_in_search():
    assert torch.count_nonzero(make_op("none", 4, 2, False)(torch.randn(2, 4, 6, 6))) == 0
    pool = make_op("max_pool_3x3", 4, 1, affine=False, pool_bn=True)
    bns = [m for m in pool.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 1 and not bns[0].affine
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in make_op("avg_pool_3x3", 4, 1, True).modules())


def test_sep_conv_structure_matches_paper():
    # sep_conv_3x3: twice (ReLU, depthwise 3x3, 1x1, BN); only the first depthwise conv is strided
    op = make_op("sep_conv_3x3", 6, 2, affine=False)
    convs = [m for m in op.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (1, 1), (3, 3), (1, 1)]
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1), (1, 1)]
    assert convs[0].groups == 6 and convs[2].groups == 6
    dil = [m for m in make_op("dil_conv_5x5", 6, 1, False).modules() if isinstance(m, torch.nn.Conv2d)]
    assert dil[0].dilation == (2, 2) and dil[0].padding == (4, 4)


def test_factorized_reduce_halves():
    fr = FactorizedReduce(6, 8, affine=False)
    assert fr(torch.randn(2, 6, 8, 8)).shape == (2, 8, 4, 4)


@pytest.mark.parametrize("size", [6, 7])
def test_factorized_reduce_second_conv_sees_the_shifted_input(size):
    """conv_1 reads the even pixels x[::2, ::2], conv_2 the odd ones x[1::2, 1::2] (x[:, :, 1:, 1:] at stride 2)."""
    fr = FactorizedReduce(1, 2, affine=False).eval()  # eval: BN with its initial running stats is x / sqrt(1 + eps)
    with torch.no_grad():
        fr.conv_1.weight.fill_(1.0)
        fr.conv_2.weight.fill_(1.0)
    x = torch.arange(1.0, size * size + 1).view(1, 1, size, size)  # positive: the ReLU passes it unchanged
    y = fr(x) * (1 + fr.bn.eps) ** 0.5
    half = (size + 1) // 2
    assert y.shape == (1, 2, half, half)
    torch.testing.assert_close(y[0, 0], x[0, 0, ::2, ::2])
    odd = x[0, 0, 1::2, 1::2]  # an odd size leaves one fewer odd pixel per side: zero-padded at the far edge
    torch.testing.assert_close(y[0, 1, : odd.shape[0], : odd.shape[1]], odd)
    assert torch.count_nonzero(y[0, 1, odd.shape[0]:]) == 0 and torch.count_nonzero(y[0, 1, :, odd.shape[1]:]) == 0


def test_search_network_shapes_and_parameters():
    net = SearchNetwork(C=4, num_classes=5, layers=5, in_channels=1)
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 5)
    alphas = net.arch_parameters()
    assert [a.shape for a in alphas] == [(14, 8), (14, 8)]
    assert all(isinstance(a, torch.nn.Parameter) for a in alphas)
    names = dict(net.named_parameters())
    assert "alpha_normal" in names and "alpha_reduce" in names  # optimisers and checkpoints see them
    ids = {id(a) for a in alphas}
    assert not any(id(p) in ids for p in net.weight_parameters())
    assert len(net.weight_parameters()) + 2 == len(list(net.parameters()))
    assert reduction_indices(8) == (2, 5) and reduction_indices(5) == (1, 3)
    assert [c.reduction for c in net.cells] == [False, True, False, True, False]


def test_affine_switch_and_default_off():
    def cell_bn_affine(net):
        return {m.affine for c in net.cells for m in c.modules() if isinstance(m, torch.nn.BatchNorm2d)}

    assert cell_bn_affine(SearchNetwork(C=4, layers=3)) == {False}
    assert cell_bn_affine(SearchNetwork(C=4, layers=3, affine=True)) == {True, False}  # pool BN stays off


def test_softmax_edge_equals_weighted_sum_of_all_ops():
    torch.manual_seed(0)
    edge = MixedEdge(4, 1, PRIMITIVES, affine=False).eval()
    x = torch.randn(2, 4, 6, 6)
    w = torch.softmax(torch.randn(8), 0)
    expected = sum(wi * op(x) for wi, op in zip(w, edge.ops))
    torch.testing.assert_close(edge(x, w, None, 0.0), expected)


class _Counting(torch.nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op, self.calls = op, 0

    def forward(self, x):
        self.calls += 1
        return self.op(x)


def test_gumbel_runs_only_sampled_op_and_grads_reach_all_alphas():
    torch.manual_seed(0)
    net = SearchNetwork(C=4, layers=3, relaxation="gumbel", primitives=[p for p in PRIMITIVES if p != "none"])
    for cell in net.cells:
        for edge in cell.edges:
            edge.ops = torch.nn.ModuleList(_Counting(op) for op in edge.ops)
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    for cell in net.cells:
        for edge in cell.edges:
            assert sum(op.calls for op in edge.ops) == 1  # one op per edge, not seven
    for alpha in net.arch_parameters():
        assert alpha.grad is not None
        assert torch.count_nonzero(alpha.grad) == alpha.numel()  # every alpha of every edge


def test_gumbel_weights_are_hard_one_hot_with_soft_gradient():
    torch.manual_seed(1)
    alphas = torch.randn(14, 8, requires_grad=True)
    ew = GumbelRelaxation(tau_max=1.0)(alphas)
    assert torch.equal(ew.weights.detach().sum(-1), torch.ones(14))
    assert ew.weights.detach().max(-1).values.eq(1).all()
    assert ew.weights.detach().argmax(-1).tolist() == ew.index
    ew.weights[torch.arange(14), ew.index].sum().backward()
    assert torch.count_nonzero(alphas.grad) == alphas.numel()


def test_gumbel_resamples_non_finite_noise(monkeypatch):
    calls = {"n": 0}
    real = torch.Tensor.exponential_

    def flaky(self, *a, **k):
        calls["n"] += 1
        out = real(self, *a, **k)
        if calls["n"] == 1:
            out.view(-1)[0] = 0.0  # -log(0) = inf noise on the first draw
        return out

    monkeypatch.setattr(torch.Tensor, "exponential_", flaky)
    ew = GumbelRelaxation(tau_max=1.0)(torch.zeros(3, 4))
    assert calls["n"] == 2 and torch.isfinite(ew.weights).all()


def test_gumbel_sampling_follows_alphas():
    torch.manual_seed(0)
    relax = GumbelRelaxation(tau_max=0.5)
    alphas = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    counts = torch.bincount(torch.tensor([relax(alphas).index[0] for _ in range(4000)]), minlength=3)
    # argmax of (log p + Gumbel) samples exactly from p, whatever tau
    torch.testing.assert_close(counts / 4000.0, torch.tensor([0.7, 0.2, 0.1]), atol=0.03, rtol=0)


def test_softmax_relaxation():
    a = torch.randn(14, 8)
    ew = SoftmaxRelaxation()(a)
    assert ew.index is None
    torch.testing.assert_close(ew.weights, torch.softmax(a, -1))


def test_tau_schedule_endpoints():
    assert linear_tau(0, 250, 10, 0.1) == 10
    assert linear_tau(249, 250, 10, 0.1) == pytest.approx(0.1)
    assert linear_tau(124, 249, 10, 0.1) == pytest.approx(10 - 9.9 * 124 / 248)
    assert linear_tau(0, 1, 10, 0.1) == 10


def test_fixed_reduction_cell():
    cell = FixedReductionCell(12, 12, 8, reduction_prev=False, affine=False)
    y = cell(torch.randn(2, 12, 8, 8), torch.randn(2, 12, 8, 8))
    assert y.shape == (2, 32, 4, 4)
    net = SearchNetwork(C=8, layers=3, relaxation="gumbel", fixed_reduction=True)
    assert len(net.arch_parameters()) == 1 and net.alpha_reduce is None
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    g = net.genotype()
    assert g.fixed_reduction and g.reduce == ()
    with pytest.raises(ValueError, match="C=2: must be a multiple of 4 with fixed_reduction"):
        SearchNetwork(C=2, layers=3, fixed_reduction=True)


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    net = SearchNetwork(C=4, layers=3, drop_path_prob=0.5)
    x = torch.randn(4, 3, 8, 8)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    net.train()
    torch.manual_seed(1)
    a = net(x)
    torch.manual_seed(2)
    b = net(x)
    assert not torch.allclose(a, b)


def _alphas_for(choices, steps=4, ops=PRIMITIVES):
    """Hand-made alphas: for each node, {input: (op, strength)}; everything else small."""
    a = torch.zeros(sum(2 + i for i in range(steps)), len(ops))
    start = 0
    for node in range(steps):
        for j, (op, strength) in choices[node].items():
            a[start + j, ops.index(op)] = strength
        start += node + 2
    return a


def test_genotype_from_hand_made_alphas():
    normal = _alphas_for([
        {0: ("sep_conv_3x3", 5.0), 1: ("skip_connect", 4.0)},
        {2: ("dil_conv_3x3", 5.0), 0: ("max_pool_3x3", 3.0), 1: ("none", 9.0)},
        {3: ("sep_conv_5x5", 2.0), 1: ("avg_pool_3x3", 6.0)},
        {4: ("skip_connect", 3.0), 2: ("dil_conv_5x5", 4.0)},
    ])
    # `none` wins outright on an edge but is never chosen: the edge competes with its best real op
    normal[2 + 1, PRIMITIVES.index("sep_conv_3x3")] = 1.0
    g = Genotype.from_alphas(normal, normal.clone())
    assert g.normal == (
        ("sep_conv_3x3", 0), ("skip_connect", 1),
        ("dil_conv_3x3", 2), ("max_pool_3x3", 0),
        ("avg_pool_3x3", 1), ("sep_conv_5x5", 3),
        ("dil_conv_5x5", 2), ("skip_connect", 4),
    )
    assert g.normal_concat == (2, 3, 4, 5) and g.reduce == g.normal
