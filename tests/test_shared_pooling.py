"""One pooling per state: when every op of the edges runs (a softmax-like relaxation, no drop path), the edges leaving
a state run their pooling ops (and the BatchNorm after each) once for all of them
(``darts_lite.spaces.lean.shared_pooling``), in the plain and the default memory mode: the same outputs and
BatchNorm statistics bit for bit, the same gradients up to the order of their sums, and each edge's own pooling
wherever sharing could change a result (differing running statistics, hooks, drop path, a sampled op, edges
recomputed in regions of their own)."""

import copy
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_passes_up_to_sum_order
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from darts_lite.spaces import lean
from darts_lite.spaces.darts.search import SearchNetwork
from darts_lite.spaces.nb201 import SearchNetwork as NB201SearchNetwork
from darts_lite.spaces.nb201.genotype import EDGES
from darts_lite.spaces.supernet import RecomputableEdge

DARTS = dict(C=4, layers=3, num_classes=3)  # a normal and two reduction cells: stride-1 and stride-2 edges
NETWORKS = {
    "darts": (SearchNetwork, DARTS),
    "pc-darts": (SearchNetwork, dict(DARTS, partial_channels=2, edge_normalization=True)),
    "nb201": (NB201SearchNetwork, dict(C=4, N=1, num_classes=3)),
}
POOLS = ("max_pool2d_with_indices", "avg_pool2d")


def _network(name: str, **kw):
    cls, args = NETWORKS[name]
    torch.manual_seed(0)
    return cls(**args, **kw).double()


def _each_edge_pooling(net):
    """A copy of ``net`` whose edges each run their own pooling ops."""
    whole = copy.deepcopy(net)
    for m in whole.modules():
        if isinstance(m, RecomputableEdge):
            m.share_pooling = False
    return whole


def _x():
    torch.manual_seed(3)
    return torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,))


class _Calls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _forward_calls(net, x) -> Counter:
    torch.manual_seed(5)  # the same sample of a sampling relaxation
    with _Calls() as calls:
        net(x)
    return calls.calls


def _cells(net):
    return [c for c in net.cells if hasattr(c, "edges")]


def _sources(cell) -> list[int]:
    """Per edge of a search cell, the state it reads."""
    return list(cell._sources) if hasattr(cell, "_sources") else [j for _, j in EDGES]


@pytest.mark.parametrize("recompute", ["none", "cheap"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_each_state_is_pooled_once_by_each_pooling_op(name, recompute):
    net, (x, _) = _network(name, recompute=recompute), _x()
    shared, whole = _forward_calls(net, x), _forward_calls(_each_edge_pooling(net), x)
    cells = _cells(net)
    edges, states = sum(len(c.edges) for c in cells), sum(len(set(_sources(c))) for c in cells)
    kinds = [p for p in POOLS if whole[p]]
    assert kinds and states < edges
    for p in kinds:  # (PC-DARTS's stride-2 bypass max-pools in both)
        assert whole[p] - shared[p] == edges - states, p
    if name != "nb201":  # the DARTS space's pooling ops end with a BatchNorm: one per state and pooling op too
        assert whole["native_batch_norm"] - shared["native_batch_norm"] == len(kinds) * (edges - states)


@pytest.mark.parametrize("recompute", ["none", "cheap"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_outputs_statistics_and_gradients_are_those_of_each_edge_pooling_its_own(name, recompute):
    # the pooling's gradient is summed over the edges before its backward: equal to rounding; each edge's BatchNorm
    # counted and updated as its own pass would have
    shared = _network(name, recompute=recompute)
    assert_same_passes_up_to_sum_order(shared, _each_edge_pooling(shared), *_x())


def _pool_bns(edge):
    return [op[1] for op in edge.ops if isinstance(op, lean.PoolBN)]


@pytest.mark.parametrize("recompute", ["none", "cheap"])
def test_an_edge_whose_running_statistics_differ_pools_on_its_own(recompute):
    net, (x, y) = _network("darts", recompute=recompute), _x()
    pools = _forward_calls(copy.deepcopy(net), x)["max_pool2d_with_indices"]
    cell = _cells(net)[0]
    odd = _pool_bns(cell.edges[2])[0]  # the max pool of an edge reading s0 beside three others
    with torch.no_grad():
        odd.running_mean.add_(0.5)
    whole = _each_edge_pooling(net)
    assert _forward_calls(copy.deepcopy(net), x)["max_pool2d_with_indices"] == pools + 1
    for seed in (1, 2):
        for m in (net, whole):
            torch.manual_seed(seed)
            F.cross_entropy(m(x), y).backward()
    for (n, a), b in zip(net.named_buffers(), whole.buffers()):
        assert torch.equal(a, b), n
    # a state dict that makes them differ again (written in place: noticed without comparing every pass)
    state = net.state_dict()
    key = next(k for k, v in net.named_buffers() if v is _pool_bns(cell.edges[5])[1].running_var)
    state[key] = state[key] * 2
    net.load_state_dict(state)
    whole.load_state_dict(state)
    torch.manual_seed(3)
    assert torch.equal(net(x), whole(x))
    for (n, a), b in zip(net.named_buffers(), whole.buffers()):
        assert torch.equal(a, b), n


def test_a_hooked_pooling_op_drop_path_a_sampled_op_and_edge_regions_each_pool_their_own():
    x, _ = _x()
    net = _network("darts")
    edges = sum(len(c.edges) for c in _cells(net))
    calls = []
    _cells(net)[0].edges[0].ops[1].register_forward_hook(lambda *a: calls.append(1))
    counts = _forward_calls(net, x)
    assert calls == [1]  # the hooked op ran itself; the others still share
    assert _forward_calls(_each_edge_pooling(net), x)["max_pool2d_with_indices"] == edges
    assert counts["max_pool2d_with_indices"] < edges
    for kw in (dict(drop_path_prob=0.3), dict(relaxation="gumbel"), dict(recompute="pointwise")):
        other = _network("darts", **kw)
        got = _forward_calls(other, x)["max_pool2d_with_indices"]
        whole = _forward_calls(_each_edge_pooling(other), x)["max_pool2d_with_indices"]
        assert got == whole, kw


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, 1, 1), nn.AvgPool2d(3, 2, 1, count_include_pad=False)])
@pytest.mark.parametrize("with_bn", [True, False])
def test_the_fused_step_of_one_pooling_for_several_weights_is_twice_differentiable(pool, with_bn):
    bn = nn.BatchNorm2d(3, affine=False, track_running_stats=False).double() if with_bn else None
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    ws = [torch.randn((), dtype=torch.float64, requires_grad=True) for _ in range(3)]

    def fused(x, *ws):
        return lean._weighted(x, ws, pool, bn)

    def plain(x, *ws):
        h = pool(x) if bn is None else bn(pool(x))
        return tuple(h * w for w in ws)

    for a, b in zip(fused(x, *ws), plain(x, *ws)):
        assert torch.equal(a, b)
    torch.autograd.gradcheck(fused, (x, *ws))
    torch.autograd.gradgradcheck(fused, (x, *ws))
    # a product whose output no loss reads gets no gradient, and gives its weight none
    out = fused(x, *ws)
    (out[0].sum() + 2 * out[2].sum()).backward()
    assert ws[1].grad is None and ws[0].grad is not None and ws[2].grad is not None


def test_sharing_the_pooling_keeps_fewer_bytes_for_the_backward_pass():
    net, (x, _) = _network("darts"), _x()

    def kept(m) -> int:
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        torch.manual_seed(1)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(x)
        return sum(storages.values())

    assert kept(net) < kept(_each_edge_pooling(net))
