"""recompute: the edges keep less for the backward pass and recompute the rest ("cheap", the default: BatchNorm
outputs and pooling by fused steps; "convolutions"/"pointwise": selective checkpointing); the outputs, gradients,
BatchNorm statistics and search trajectories are the plain supernet's (recompute="none"), bit for bit (the edges
recomputed in regions of their own each run their pooling ops: against the plain supernet doing so too)."""

import pytest
import torch
from conftest import compose_cfg, one_epoch_search, saved_bytes, seeded_step, small_darts_args

from darts_lite.errors import ConfigError
from darts_lite.search import SearchModule
from darts_lite.spaces.darts.search import SearchNetwork
from darts_lite.spaces.nb201 import SearchNetwork as NB201SearchNetwork
from darts_lite.spaces.supernet import RecomputableEdge, Supernet, no_recompute

# every op of each space; the DARTS cells with 2 nodes (5 edges: a normal and a reduction cell test all there is)
DARTS = dict(C=4, layers=3, num_classes=4, steps=2, multiplier=2)
NETWORKS = {
    "darts": (SearchNetwork, DARTS),  # without drop path: "cheap" fuses every op (a dropped op's output is summed plainly)
    "gdas": (SearchNetwork, dict(DARTS, relaxation="gumbel")),
    "darts-drop-path": (SearchNetwork, dict(DARTS, drop_path_prob=0.3)),
    "gdas-drop-path": (SearchNetwork, dict(DARTS, relaxation="gumbel", drop_path_prob=0.3)),
    "pc-darts": (SearchNetwork, dict(DARTS, partial_channels=2, edge_normalization=True)),
    "nb201-darts": (NB201SearchNetwork, dict(C=4, N=1, num_classes=4)),
    "nb201-gdas": (NB201SearchNetwork, dict(C=4, N=1, num_classes=4, relaxation="gumbel")),
    "nb201-untracked": (NB201SearchNetwork, dict(C=4, N=1, num_classes=4, track_running_stats=False)),
}
# float32 with both policies, float64 (where no rounding can hide a difference in the arithmetic) with the leaner one
CASES = ([(name, keep, torch.float32, False) for name in NETWORKS for keep in ("cheap", "convolutions", "pointwise")]
         + [(name, keep, torch.float64, False) for name in NETWORKS for keep in ("cheap", "pointwise")]
         + [(name, "cheap", torch.float32, True) for name in ("darts", "pc-darts", "nb201-darts")])


@pytest.mark.parametrize("name,keep,dtype,channels_last", CASES,
                         ids=[f"{n}-{k}-{str(d)[6:]}{'-nhwc' * c}" for n, k, d, c in CASES])
def test_outputs_gradients_and_bn_statistics_equal_the_plain_supernet(name, keep, dtype, channels_last):
    cls, kw = NETWORKS[name]
    layout = torch.channels_last if channels_last else torch.contiguous_format
    nets = []
    for recompute in ("none", keep):
        torch.manual_seed(0)
        nets.append(cls(recompute=recompute, **kw).to(dtype).to(memory_format=layout))
    plain, lean = nets
    for edge in plain.modules():
        if isinstance(edge, RecomputableEdge):
            edge.share_pooling = keep == "cheap"
    assert lean.recompute == keep and all(e.recompute == keep for e in lean.modules() if isinstance(e, RecomputableEdge))
    x, y = torch.randn(8, 3, 8, 8, dtype=dtype).contiguous(memory_format=layout), torch.randint(0, 4, (8,))
    for seed in (1, 2):
        assert torch.equal(seeded_step(plain, x, y, seed), seeded_step(lean, x, y, seed))
    for (n, a), b in zip(plain.named_parameters(), lean.parameters()):
        assert (a.grad is None) == (b.grad is None), n  # GDAS: an op sampled in neither step has none
        assert a.grad is None or torch.equal(a.grad, b.grad), n
    for (n, a), b in zip(plain.named_buffers(), lean.buffers()):
        assert torch.equal(a, b), n  # running statistics updated once per forward, not again in the recompute


def test_the_edges_keep_nothing_of_their_own_for_autograd_and_evaluation_is_plain():
    nets = []
    for recompute in ("none", "pointwise"):
        torch.manual_seed(0)
        nets.append(SearchNetwork(**DARTS, recompute=recompute))
    plain, lean = nets
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
    # what an edge keeps (its 1x1 convolutions' outputs) sits in the selective cache; autograd keeps the rest
    assert saved_bytes(lean, x, y) < 0.2 * saved_bytes(plain, x, y)
    with no_recompute():
        assert saved_bytes(lean, x, y) == saved_bytes(plain, x, y)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), lean.eval()(x))


@pytest.mark.parametrize("order,hvp,relaxation", [(1, "central", "gumbel"), (2, "central", "softmax"),
                                                  (2, "exact", "softmax")])
def test_a_search_follows_the_same_trajectory_bit_for_bit(order, hvp, relaxation):
    plain = one_epoch_search(order, hvp, relaxation, recompute="none")
    lean = one_epoch_search(order, hvp, relaxation, recompute="convolutions")
    for (name, a), b in zip(plain.state_dict().items(), lean.state_dict().values()):
        assert torch.equal(a, b), name
    assert lean.net.recompute == "convolutions" and plain.net.recompute == "none"


@pytest.mark.parametrize("order,hvp,relaxation", [(1, "central", "gumbel"), (2, "central", "softmax"),
                                                  (2, "exact", "softmax")])
def test_the_default_search_follows_the_plain_trajectory_bit_for_bit(order, hvp, relaxation):
    # without drop path, so that every op's weighted output goes through the fused steps
    plain = one_epoch_search(order, hvp, relaxation, recompute="none", drop_path_prob=0.0)
    lean = one_epoch_search(order, hvp, relaxation, drop_path_prob=0.0)
    for (name, a), b in zip(plain.state_dict().items(), lean.state_dict().values()):
        assert torch.equal(a, b), name
    assert lean.net.recompute == "cheap" and plain.net.recompute == "none"


def test_the_search_config_sets_it_and_refuses_it_beside_checkpointed_cells():
    assert compose_cfg("+experiment=quickstart", "search.recompute=pointwise").search.recompute == "pointwise"
    assert SearchModule(network=small_darts_args(), recompute="pointwise").net.recompute == "pointwise"
    with pytest.raises(ConfigError, match="recompute=pointwise: choose it or checkpoint_cells=true, not both"):
        SearchModule(network=small_darts_args(), recompute="pointwise", checkpoint_cells=True)
    with pytest.raises(ConfigError, match="recompute=convolutions: not together with compile=true"):
        SearchModule(network=small_darts_args(), recompute="convolutions", compile=True)
    with pytest.raises(ValueError, match="recompute must be one of none, cheap, convolutions, pointwise, got 'all'"):
        SearchNetwork(C=4, layers=3).recompute = "all"
    with pytest.raises(ValueError, match="recompute='pointwise': Supernet has no edge that can recompute"):
        Supernet().recompute = "pointwise"  # a space of one's own whose edges do not subclass RecomputableEdge
    own = Supernet()
    own.recompute = "cheap"  # the default asks nothing of a space of one's own
    # the default goes beside checkpointed cells (inside them the edges run plainly) and compile (traced plainly)
    assert compose_cfg("+experiment=quickstart").search.recompute == "cheap"
    assert SearchModule(network=small_darts_args(), checkpoint_cells=True).net.recompute == "cheap"
    assert SearchModule(network=small_darts_args(), compile=True).net.recompute == "cheap"
    assert SearchModule(network=small_darts_args(), recompute="none").net.recompute == "none"


def test_the_collapse_guards_hessian_eigenvalue_is_the_plain_supernets():
    from darts_lite.tricks.collapse import hessian_eigenvalue

    values = []
    for recompute in ("none", "pointwise"):
        torch.manual_seed(0)
        net = SearchNetwork(**DARTS, recompute=recompute)
        x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
        values.append(hessian_eigenvalue(net, x, y, iters=3, tol=0.0))
    assert values[0] == values[1] and values[0] != 0.0


def test_an_edge_called_with_keywords_recomputes_the_same():
    torch.manual_seed(0)
    net = SearchNetwork(**DARTS, relaxation={"_target_": "darts_lite.methods.darts_minus.AuxiliarySkipRelaxation"},
                        recompute="pointwise")
    edge, h = net.cells[0].edges[0], torch.randn(2, 4, 8, 8, requires_grad=True)
    weights = torch.softmax(net.alpha_normal[0], -1)
    out = edge(h, weights, None, 0.0, skip=0.3)
    (grad,) = torch.autograd.grad(out.sum(), h)
    with no_recompute():
        plain = edge(h, weights, None, 0.0, skip=0.3)
        (plain_grad,) = torch.autograd.grad(plain.sum(), h)
    assert torch.equal(out, plain) and torch.equal(grad, plain_grad)
