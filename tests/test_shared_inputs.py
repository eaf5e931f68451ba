"""One ReLU per state: every edge leaving a node, and both cells reading a cell's output, read one rectified input
(``darts_lite.spaces.ops.EdgeInput``), in every relaxation and memory mode and in the evaluation networks; the same
outputs and gradients as each op computing its own, and exactly the duplicated ReLU outputs fewer bytes kept for the
backward pass."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_passes_up_to_sum_order

from darts_lite.spaces.darts.eval import EvalNetwork as DartsEvalNetwork
from darts_lite.spaces.darts.search import MixedEdge, SearchNetwork
from darts_lite.spaces.nb201 import MixedEdge as NB201MixedEdge
from darts_lite.spaces.nb201 import SearchNetwork as NB201SearchNetwork
from darts_lite.spaces.nb201.eval import EvalNetwork as NB201EvalNetwork

DARTS = dict(C=4, layers=3, num_classes=3)  # a normal and two reduction cells: stride-1 and stride-2 edges
NETWORKS = {
    "darts": (SearchNetwork, DARTS),
    "gdas": (SearchNetwork, dict(DARTS, relaxation="gumbel")),
    "gdas-fixed-reduction": (SearchNetwork, dict(DARTS, C=8, relaxation="gumbel", fixed_reduction=True)),
    "darts-drop-path": (SearchNetwork, dict(DARTS, drop_path_prob=0.3)),
    "pc-darts": (SearchNetwork, dict(DARTS, partial_channels=2, edge_normalization=True)),
    "nb201-darts": (NB201SearchNetwork, dict(C=4, N=1, num_classes=3)),
    "nb201-gdas": (NB201SearchNetwork, dict(C=4, N=1, num_classes=3, relaxation="gumbel")),
    "nb201-pc": (NB201SearchNetwork, dict(C=4, N=1, num_classes=3, partial_channels=2)),
}


def _network(name: str, **kw):
    cls, args = NETWORKS[name]
    torch.manual_seed(0)
    net = cls(**args, **kw).double()
    convs = [i for i, op in enumerate(net.primitives) if "conv" in op]
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 1.0)  # GDAS samples a varied architecture, in which several edges leaving a node run a conv
            if a.dim() == 2:
                a[:, convs] += 2.0
    return net


def _unshared(net):
    """A copy of ``net`` whose edges each compute their own ReLUs (the ops of an edge run whole)."""
    whole = copy.deepcopy(net)
    for m in whole.modules():
        if isinstance(m, (MixedEdge, NB201MixedEdge)):
            m.share_relu = False
    return whole


class _Relus:
    """Records the input of every F.relu call (kept alive, so that ids stay distinct)."""

    def __init__(self, monkeypatch):
        self.inputs, relu = [], F.relu

        def recording(x, *args, **kwargs):
            self.inputs.append(x)
            return relu(x, *args, **kwargs)

        monkeypatch.setattr(F, "relu", recording)

    def duplicated_bytes(self) -> int:
        """The bytes of the ReLU outputs computed again for an input already rectified in the pass (the same
        elements: another view of them counts, as PC-DARTS's edges each slice their input's channels)."""
        seen, extra = set(), 0
        for x in self.inputs:
            key = (x.untyped_storage().data_ptr(), x.storage_offset(), tuple(x.shape), x.stride())
            if key in seen:
                extra += x.numel() * x.element_size()
            seen.add(key)
        return extra


def _duplicated_in(relus: _Relus, run) -> int:
    """The bytes of ReLU outputs ``run()`` (from seed 1) computes again for an input already rectified."""
    relus.inputs.clear()
    torch.manual_seed(1)
    run()
    assert relus.inputs
    return relus.duplicated_bytes()


def _x(dtype=torch.float64):
    torch.manual_seed(3)
    return torch.randn(6, 3, 8, 8, dtype=dtype), torch.randint(0, 3, (6,))


@pytest.mark.parametrize("recompute", ["none", "cheap", "pointwise"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_no_tensor_is_rectified_twice_in_a_pass(name, recompute, monkeypatch):
    net, (x, y) = _network(name, recompute=recompute), _x()
    relus = _Relus(monkeypatch)
    assert _duplicated_in(relus, lambda: F.cross_entropy(net(x), y).backward()) == 0
    # the same network with each op computing its own ReLU rectifies states again (what the sharing saves)
    assert _duplicated_in(relus, lambda: _unshared(net)(x)) > 0


@pytest.mark.parametrize("name", list(NETWORKS))
def test_outputs_and_gradients_are_those_of_each_op_computing_its_own_relu(name):
    shared = _network(name)
    assert_same_passes_up_to_sum_order(shared, _unshared(shared), *_x())


def _kept_bytes(net, x, y, seed) -> int:
    """The bytes of the distinct storages autograd saves over one forward pass."""
    kept = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    torch.manual_seed(seed)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    return sum(kept.values())


@pytest.mark.parametrize("name", ["darts", "gdas", "pc-darts", "nb201-darts"])
def test_the_pass_keeps_exactly_the_duplicated_relu_outputs_fewer_bytes(name, monkeypatch):
    shared = _network(name)
    whole, (x, y) = _unshared(shared), _x()
    for m in shared.modules():  # the pooling ops each edge runs (tests/test_shared_pooling.py: what sharing them keeps)
        if isinstance(m, (MixedEdge, NB201MixedEdge)):
            m.share_pooling = False
    relus = _Relus(monkeypatch)
    kept_whole = _kept_bytes(whole, x, y, seed=1)
    duplicated = relus.duplicated_bytes()
    assert duplicated > 0 and _kept_bytes(shared, x, y, seed=1) == kept_whole - duplicated


# ---- the evaluation networks (retraining): one ReLU per state too ---------------------------------------------------
NB201_CELL = "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|nor_conv_3x3~0|skip_connect~1|nor_conv_1x1~2|"
EVAL_NETWORKS = {
    # DARTS_V2's cells read s0 and s1 with three separable convs each; the auxiliary head and drop path on
    "darts-v2": lambda: DartsEvalNetwork("DARTS_V2", C=8, layers=3, num_classes=3, auxiliary=True, drop_path_prob=0.3),
    "gdas-fixed-reduction": lambda: DartsEvalNetwork("GDAS_F1", C=8, layers=3, num_classes=3, auxiliary=False),
    "darts-imagenet": lambda: DartsEvalNetwork("PC_DARTS", C=8, layers=3, num_classes=3, auxiliary=False,
                                               dataset="imagenet"),
    "nb201": lambda: NB201EvalNetwork(NB201_CELL, C=4, N=1, num_classes=3),
}


def _eval_network(name: str):
    torch.manual_seed(0)
    return EVAL_NETWORKS[name]().double().train()


def _eval_unshared(net):
    """A copy of ``net`` with a forward hook on every ReLU: an op whose leading ReLU is hooked runs whole, so each op
    computes its own ReLU (a hook must see every call)."""
    whole = copy.deepcopy(net)
    for m in whole.modules():
        if isinstance(m, torch.nn.ReLU):
            m.register_forward_hook(lambda module, args, out: None)
    return whole


def _eval_x(name: str):
    torch.manual_seed(3)
    size = {"darts-v2": 32, "darts-imagenet": 16}.get(name, 8)  # DARTS_V2's auxiliary head needs 8x8 after 2 reductions
    return torch.randn(4, 3, size, size, dtype=torch.float64), torch.randint(0, 3, (4,))


def _loss(out, y):
    return sum(F.cross_entropy(o, y) for o in (out if isinstance(out, tuple) else (out,)))


@pytest.mark.parametrize("name", list(EVAL_NETWORKS))
def test_no_tensor_is_rectified_twice_in_an_evaluation_network(name, monkeypatch):
    net, (x, y) = _eval_network(name), _eval_x(name)
    relus = _Relus(monkeypatch)
    assert _duplicated_in(relus, lambda: _loss(net(x), y).backward()) == 0
    assert _duplicated_in(relus, lambda: _eval_unshared(net)(x)) > 0


@pytest.mark.parametrize("name", list(EVAL_NETWORKS))
def test_an_evaluation_network_gives_the_outputs_and_gradients_of_each_op_computing_its_own_relu(name):
    shared = _eval_network(name)
    whole, (x, y) = _eval_unshared(shared), _eval_x(name)
    for seed in (1, 2):  # drop path draws its masks from the seed; the second step reads updated BN statistics
        outs = []
        for net in (shared, whole):
            net.zero_grad(set_to_none=True)
            torch.manual_seed(seed)
            outs.append(net(x))
            _loss(outs[-1], y).backward()
        for a, b in zip(*(o if isinstance(o, tuple) else (o,) for o in outs)):
            assert torch.equal(a, b)
    for (n, a), b in zip(shared.named_parameters(), whole.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-13, msg=n)
    for a, b in zip(shared.buffers(), whole.buffers()):
        assert torch.equal(a, b)
    shared.eval(), whole.eval()
    with torch.no_grad():
        assert torch.equal(shared(x), whole(x))


@pytest.mark.parametrize("name", ["darts-v2", "nb201"])
def test_an_evaluation_network_keeps_exactly_the_duplicated_relu_outputs_fewer_bytes(name, monkeypatch):
    shared = _eval_network(name)
    whole, (x, y) = _eval_unshared(shared), _eval_x(name)
    relus = _Relus(monkeypatch)
    kept_whole = _kept_bytes(whole, x, y, seed=1)
    duplicated = relus.duplicated_bytes()
    assert duplicated > 0 and _kept_bytes(shared, x, y, seed=1) == kept_whole - duplicated
