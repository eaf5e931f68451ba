"""The NAS-Bench-201 space: ops, networks (sizes against the benchmark's own), genotype text, moves, relaxations."""

import dataclasses
import json
import random

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from darts_lite.relax import GumbelRelaxation
from darts_lite.search import SearchModule
from darts_lite.spaces import nb201
from darts_lite.spaces.nb201 import ops as nb201_ops
from darts_lite.spaces.ops import Identity, ReLUConvBN

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"

# Parameter counts measured on the benchmark's reference implementation (its DARTS and GDAS search networks,
# which agree, with track_running_stats on or off; and its evaluation network), built at C=16, N=5 for 10
# classes unless noted. The search counts include the 30 alphas.
REFERENCE_SEARCH_PARAMS = {False: 1_692_856, True: 1_699_576}  # by affine
REFERENCE_EVAL_PARAMS = {(BEST, 10): 1_288_506, (BEST, 100): 1_294_356, (ALL_SKIP, 10): 73_306, (ALL_SKIP, 100): 79_156}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tiny(**kw) -> nb201.SearchNetwork:
    return nb201.SearchNetwork(**dict(dict(C=4, N=1, num_classes=3), **kw))


# ---- sizes and structure against the reference -------------------------------------------------
@pytest.mark.parametrize("affine", [False, True])
def test_search_network_size_matches_reference(affine):
    net = nb201.SearchNetwork(C=16, N=5, num_classes=10, affine=affine)
    assert _count(net) == REFERENCE_SEARCH_PARAMS[affine]
    assert sum(p.numel() for p in net.weight_parameters()) == REFERENCE_SEARCH_PARAMS[affine] - 30
    assert [a.shape for a in net.arch_parameters()] == [(6, 5)]


@pytest.mark.parametrize("arch, classes", sorted(REFERENCE_EVAL_PARAMS))
def test_eval_network_size_matches_reference(arch, classes):
    net = nb201.EvalNetwork(nb201.Genotype.parse(arch), C=16, N=5, num_classes=classes)
    assert net.num_parameters() == REFERENCE_EVAL_PARAMS[(arch, classes)]


def test_affine_and_running_stats_apply_to_cell_ops_only():
    net = nb201.SearchNetwork(C=4, N=1, affine=False, track_running_stats=False)
    in_cells = {id(m) for cell in net.cells if isinstance(cell, nb201.SearchCell) for m in cell.modules()}
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    cell_bns = [m for m in bns if id(m) in in_cells]
    other_bns = [m for m in bns if id(m) not in in_cells]
    assert cell_bns and all(not m.affine and not m.track_running_stats for m in cell_bns)
    # stem, 2 residual blocks x 2 convs, final BN
    assert len(other_bns) == 6 and all(m.affine and m.track_running_stats for m in other_bns)
    # a cell conv without BN affine carries a bias; the stem, block and shortcut convs never do
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert (m.bias is not None) == (id(m) in in_cells)
    with_affine = nb201.SearchNetwork(C=4, N=1, affine=True)
    assert all(m.bias is None for m in with_affine.modules() if isinstance(m, torch.nn.Conv2d))


def test_residual_block_and_ops_match_the_reference_shapes():
    block = nb201_ops.ResidualBlock(4, 8, 2)
    assert block(torch.randn(2, 4, 8, 8)).shape == (2, 8, 4, 4)
    assert [type(m) for m in block.shortcut] == [torch.nn.AvgPool2d, torch.nn.Conv2d]
    assert block.shortcut[1].bias is None and block.conv_a[1].stride == (2, 2) and block.conv_b[1].stride == (1, 1)
    # the pool matches channels with a 1x1 ReLUConvBN first when they differ, and only then
    pool = nb201_ops.make_op("avg_pool_3x3", 4, 8, 2)
    assert isinstance(pool.preprocess, ReLUConvBN) and pool(torch.randn(2, 4, 7, 7)).shape == (2, 8, 4, 4)
    assert nb201_ops.make_op("avg_pool_3x3", 4, 4, 1).preprocess is None
    # padding is not counted: a constant input stays constant at the borders
    assert torch.allclose(nb201_ops.make_op("avg_pool_3x3", 2, 2, 1)(torch.ones(1, 2, 5, 5)), torch.ones(1, 2, 5, 5))
    # none: zeros, strided like the other ops of its edge, with the output channels
    for c_out, stride, shape in ((4, 2, (2, 4, 4, 4)), (8, 1, (2, 8, 7, 7)), (8, 2, (2, 8, 4, 4))):
        z = nb201_ops.make_op("none", 4, c_out, stride)(torch.randn(2, 4, 7, 7))
        assert z.shape == shape and not z.any()
    skip = nb201_ops.make_op("skip_connect", 4, 8, 2)
    assert skip(torch.randn(2, 4, 7, 7)).shape == (2, 8, 4, 4)
    assert isinstance(nb201_ops.make_op("skip_connect", 4, 4, 1), Identity)
    with pytest.raises(ValueError, match="unknown op"):
        nb201_ops.make_op("sep_conv_3x3", 4, 4, 1)


# ---- search network ----------------------------------------------------------------------------
@pytest.mark.parametrize("relaxation", ["softmax", "gumbel"])
def test_search_forward_shapes_and_alpha_gradients(relaxation):
    torch.manual_seed(0)
    net = _tiny(relaxation=relaxation, in_channels=1)
    x = torch.randn(4, 1, 16, 16)
    torch.manual_seed(7)
    logits = net(x)
    assert logits.shape == (4, 3)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    grad = net.alphas.grad
    assert grad is not None and torch.isfinite(grad).all()
    # softmax: every edge's alphas learn through every op. gumbel: an edge learns through the probs of the
    # op it sampled, so every edge that did not sample `none` (whose output, zero, has no gradient)
    torch.manual_seed(7)
    sampled = net.relaxation(net.alphas).index
    learns = [True] * 6 if sampled is None else [nb201.PRIMITIVES[k] != "none" for k in sampled]
    assert any(learns)
    assert ((grad.abs().sum(dim=1) > 0).tolist()) == learns
    # channels_last input gives the same logits (the same Gumbel draw for both)
    net.eval()
    torch.manual_seed(1)
    nhwc = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.manual_seed(1)
    assert torch.allclose(nhwc, net(x), atol=1e-5)


def _op_calls(net: nb201.SearchNetwork) -> dict[int, list[int]]:
    """Per mixed edge, how often each op ran since the hooks were set."""
    calls: dict[int, list[int]] = {}
    for edge in net.modules():
        if isinstance(edge, nb201.MixedEdge):
            counts = calls.setdefault(id(edge), [0] * len(edge.ops))
            for k, op in enumerate(edge.ops):
                op.register_forward_hook(lambda *_, c=counts, k=k: c.__setitem__(k, c[k] + 1))
    return calls


def test_gumbel_runs_exactly_one_op_per_edge_and_softmax_all_but_none():
    torch.manual_seed(1)
    gumbel = _tiny(relaxation="gumbel")
    calls = _op_calls(gumbel)
    gumbel(torch.randn(2, 3, 8, 8))
    assert len(calls) == 3 * 6
    assert all(sum(c) == 1 for c in calls.values())
    # all cells share one sample: the same op index runs on edge e of every cell
    per_cell = [[c.index(1) for c in list(calls.values())[6 * k:6 * k + 6]] for k in range(3)]
    assert per_cell[0] == per_cell[1] == per_cell[2]

    softmax = _tiny()
    calls = _op_calls(softmax)
    softmax(torch.randn(2, 3, 8, 8))
    none = nb201.PRIMITIVES.index("none")
    assert all(c == [0 if k == none else 1 for k in range(5)] for c in calls.values())


def test_gumbel_edge_output_is_the_sampled_op_times_its_hard_weight():
    torch.manual_seed(2)
    edge = nb201.MixedEdge(4, 4, 1, nb201.PRIMITIVES, affine=False, track_running_stats=True, unsampled_weights=False)
    x = torch.randn(2, 4, 6, 6)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25], requires_grad=True)
    out = edge(x, weights, 3)
    assert torch.allclose(out, edge.ops[3](x) * 0.15)
    # as the benchmark's code: the other ops' weights are added (each is 0 for a hard Gumbel sample)
    edge.unsampled_weights = True
    assert torch.allclose(edge(x, weights, 3), edge.ops[3](x) * 0.15 + (0.1 + 0.2 + 0.3 + 0.25))
    expected = sum(op(x) * w for op, w in zip(edge.ops, weights))
    assert torch.allclose(edge(x, weights, None), expected, atol=1e-6)


def test_search_network_api():
    net = _tiny(alpha_init="zeros")
    assert net.primitives == nb201.PRIMITIVES and net.num_classes == 3
    assert net.edge_labels() == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
    probs = net.op_probabilities()
    assert list(probs) == ["cell"] and probs["cell"].shape == (6, 5)
    assert torch.allclose(probs["cell"], torch.full((6, 5), 0.2)) and not probs["cell"].requires_grad
    # zero alphas: every row ties, and the argmax keeps the first column, `none`
    assert net.genotype().ops == ("none",) * 6
    ids = {id(p) for p in net.weight_parameters()}
    assert id(net.alphas) not in ids and len(ids) + 1 == len(list(net.parameters()))
    assert net.tau is None
    with pytest.raises(AttributeError):
        net.tau = 1.0
    gumbel = _tiny(relaxation=GumbelRelaxation(tau_max=5.0))
    assert gumbel.tau == 5.0
    gumbel.tau = 0.5
    assert gumbel.tau == 0.5 and gumbel.relaxation.tau == 0.5
    randn = _tiny()
    assert 0 < randn.alphas.abs().max() < 0.01


def test_primitives_subset_and_bad_options():
    net = _tiny(primitives=["skip_connect", "nor_conv_3x3"])
    assert net.alphas.shape == (6, 2) and net(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    assert set(net.genotype().ops) <= {"skip_connect", "nor_conv_3x3"}
    for bad, match in (
        (dict(primitives=["none", "sep_conv_3x3"]), "primitives=.*must be distinct ops from none, skip_connect"),
        (dict(primitives=["none"]), "at least one besides none"),
        (dict(primitives=["skip_connect", "skip_connect"]), "must be distinct ops"),
        (dict(alpha_init="ones"), "alpha_init='ones': must be one of randn, zeros"),
        (dict(relaxation="snas"), "relaxation 'snas': unknown; relaxations: softmax, gumbel"),
        (dict(N=0), "N=0: must be an integer >= 1"),
    ):
        with pytest.raises(ValueError, match=match):
            _tiny(**bad)


def test_functional_call_uses_the_alphas_it_is_given():
    """Second order swaps tensors in through functional_call: nothing may cache them elsewhere."""
    torch.manual_seed(3)
    net = _tiny()
    x = torch.randn(2, 3, 8, 8)
    alphas = torch.randn(6, 5, requires_grad=True)
    out = functional_call(net, {"alphas": alphas}, (x,), strict=False)
    assert not torch.allclose(out, net(x))
    torch.autograd.grad(out.sum(), alphas)  # the given tensor is in the graph


def _exact_alpha_grad(net, opt, x_w, y_w, x_a, y_a):
    """d/d alpha L_val(w - xi * (grad L_train(w) + wd * w + momentum * buf), alpha), by double backward."""
    group = opt.param_groups[0]
    names = {id(p): n for n, p in net.named_parameters()}
    weights = net.weight_parameters()
    buffers = {n: b.clone() for n, b in net.named_buffers()}

    def run(ws, x):
        return functional_call(net, {**buffers, **{names[id(p)]: w for p, w in zip(weights, ws)}, "alphas": net.alphas}, (x,))

    w = [p.detach().requires_grad_() for p in weights]
    grads = torch.autograd.grad(F.cross_entropy(run(w, x_w), y_w), w, create_graph=True, allow_unused=True)
    stepped = []
    for p, wi, g in zip(weights, w, grads):
        if g is None:  # an op the Gumbel sample left out: SGD does not move it
            stepped.append(wi)
            continue
        buf = opt.state[p].get("momentum_buffer")
        step = g + group["weight_decay"] * wi + (group["momentum"] * buf if buf is not None else 0.0)
        stepped.append(wi - group["lr"] * step)
    return torch.autograd.grad(F.cross_entropy(run(stepped, x_a), y_a), [net.alphas])[0]


@pytest.mark.parametrize("relaxation", ["softmax", "gumbel"])
def test_second_order_search_step_is_exact_with_channels_last(relaxation):
    torch.manual_seed(4)
    module = SearchModule(network=dict(_target_="darts_lite.spaces.nb201.SearchNetwork", C=4, N=1, num_classes=3,
                                       in_channels=1, relaxation=relaxation),
                          order=2, hvp="exact").double()
    net = module.net
    assert isinstance(net, nb201.SearchNetwork)
    with torch.no_grad():
        net.alphas.normal_(0, 0.5)
    x_w = torch.randn(6, 1, 8, 8, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x_a = torch.randn(6, 1, 8, 8, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    y_w, y_a = torch.randint(0, 3, (6,)), torch.randint(0, 3, (6,))
    net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    F.cross_entropy(net(x_w), y_w).backward()
    opt.step()  # a momentum buffer the virtual step must include
    opt.zero_grad()
    net.alphas.grad = None
    torch.manual_seed(5)
    exact = _exact_alpha_grad(net, opt, x_w, y_w, x_a, y_a)
    torch.manual_seed(5)
    module._second_order_arch_grads(x_w, y_w, x_a, y_a, opt)
    assert torch.allclose(net.alphas.grad, exact, rtol=1e-8, atol=1e-12 * exact.abs().max().item())
    # the unrolled step matters: the first-order gradient at w is clearly different
    torch.manual_seed(5)
    F.cross_entropy(net(x_w), y_w)  # the same draw as the unrolling pass used
    first = torch.autograd.grad(F.cross_entropy(net(x_a), y_a), [net.alphas])[0]
    assert (first - exact).abs().max() > 1e-3 * exact.abs().max()


# ---- genotype ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [BEST, ALL_SKIP, "|none~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|none~1|skip_connect~2|"])
def test_genotype_text_and_json_round_trip(text):
    g = nb201.Genotype.parse(text)
    assert g.to_text() == text and str(g) == text
    assert nb201.Genotype.parse(g.to_json()) == g
    assert nb201.Genotype.from_dict(json.loads(g.to_json())) == g
    assert hash(nb201.Genotype.parse(text)) == hash(g)
    cells = g.cells()
    assert list(cells) == ["cell"] and [j for _, j in cells["cell"]] == [0, 0, 1, 0, 1, 2]


def test_genotype_cells_follow_edge_order():
    g = nb201.Genotype.parse(BEST)
    assert g.cells()["cell"] == (
        ("nor_conv_3x3", 0), ("nor_conv_3x3", 0), ("nor_conv_3x3", 1),
        ("skip_connect", 0), ("nor_conv_3x3", 1), ("nor_conv_3x3", 2),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.edges = ()


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("   ", "empty"),
    ("__import__('os')", "3 nodes"),
    ("|sep_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "input must be 0"),
    ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", "input must be 0"),
    ("|none~0|+|none~0|none~x|+|none~0|none~1|none~2|", "must be a number"),
    ("|none~0|+|none~0|none~1|", "3 nodes"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|", "3 nodes"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "2 input edges"),
    ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end"),
    ("|none~0|+|none~0 none~1|+|none~0|none~1|none~2|", "2 input edges"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "op~input"),
    ('{"cell": [["none", 0]]}', "6 edges"),
    ('{"cell": 5}', "needs 'cell'"),
    ('{"space": "darts", "cell": []}', "space"),
    ('{"normal": []}', "unknown keys"),
    ("{not json", "malformed"),
    ("|" * 20000, "characters long"),
])
def test_bad_genotype_text_is_rejected(text, match):
    with pytest.raises(ValueError, match=match):
        nb201.Genotype.parse(text)


def test_genotype_rejects_bad_pairs_and_non_strings():
    with pytest.raises(ValueError, match="string"):
        nb201.Genotype.parse(None)
    with pytest.raises(ValueError, match="input must be 1"):
        nb201.Genotype((("none", 0), ("none", 0), ("none", 0), ("none", 0), ("none", 1), ("none", 2)))
    with pytest.raises(ValueError, match="input must be"):
        nb201.Genotype((("none", 0), ("none", 0), ("none", True), ("none", 0), ("none", 1), ("none", 2)))


def test_from_alphas_takes_the_raw_argmax_including_none():
    alphas = torch.zeros(6, 5)
    picks = [0, 1, 2, 3, 4, 0]  # none wins two edges
    for e, k in enumerate(picks):
        alphas[e, k] = 1.0
    g = nb201.Genotype.from_alphas(alphas)
    assert g.ops == tuple(nb201.PRIMITIVES[k] for k in picks)
    assert g.to_text() == "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"
    # the search network derives the same from its own alphas
    net = _tiny()
    with torch.no_grad():
        net.alphas.copy_(alphas)
    assert net.genotype() == g
    with pytest.raises(ValueError, match=r"\[6, 5\]"):
        nb201.Genotype.from_alphas(torch.zeros(5, 5))


def test_sample_and_mutate_give_valid_genotypes():
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        g = nb201.sample(rng)
        assert nb201.Genotype.parse(g.to_text()) == g
        seen.add(g)
        child = nb201.mutate(g, rng)
        assert isinstance(child, nb201.Genotype) and nb201.Genotype.parse(str(child)) == child
        assert sum(a != b for a, b in zip(g.edges, child.edges)) == 1
    assert len(seen) > 190  # 15625 cells: 200 draws almost never repeat
    ops_drawn = {op for g in seen for op in g.ops}
    assert ops_drawn == set(nb201.PRIMITIVES)


# ---- evaluation network and pictures -----------------------------------------------------------
@pytest.mark.parametrize("arch", [
    BEST,
    # node 1 receives only `none`: it is zeros, and the nodes after it still compute
    "|none~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|",
    # the output node receives only `none`: every cell outputs zeros, the residual blocks carry on
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|none~1|none~2|",
])
def test_eval_network_runs(arch):
    torch.manual_seed(6)
    net = nb201.EvalNetwork(arch, C=4, N=1, num_classes=7, in_channels=1)
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert net.classifier.out_features == 7
    with pytest.raises(ValueError):
        nb201.EvalNetwork(arch.replace("~0", "~5", 1), C=4, N=1)


def test_cell_dots():
    g = nb201.Genotype.parse("|none~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")
    dots = nb201.cell_dots(g)
    assert list(dots) == ["cell"]
    dot = dots["cell"]
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert dot.count("->") == 6 and dot.count("style=dashed") == 2
    assert '"c_{k-1}" -> "2" [label="nor_conv_3x3"' in dot
    assert '"2" -> "c_{k}" [label="nor_conv_1x1"' in dot


def _reference_style_gdas_logits(net: nb201.SearchNetwork, x: torch.Tensor) -> torch.Tensor:
    """The benchmark's GDAS node sum written out: per edge, sampled op(x) * hardwt + every other op's hardwt."""
    ew = net.relaxation(net.alphas)
    h = net.stem(x)
    for cell in net.cells:
        if not isinstance(cell, nb201.SearchCell):
            h = cell(h)
            continue
        nodes = [h]
        for i in range(1, nb201.NODES):
            node = 0
            for e, (to, j) in enumerate(nb201.EDGES):
                if to == i:
                    w, k = ew.weights[e], ew.index[e]
                    node = node + sum(w[o] * op(nodes[j]) if o == k else w[o] for o, op in enumerate(cell.edges[e].ops))
            nodes.append(node)
        h = nodes[-1]
    return net._head(h)


def test_gdas_unsampled_weights_follow_the_benchmark_code_or_the_paper():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))

    def alpha_grad(net, forward):
        net.alphas.grad = None
        torch.manual_seed(1)  # the same Gumbel draw in every pass
        logits = forward(x)
        F.cross_entropy(logits, y).backward()
        return logits.detach(), net.alphas.grad.clone()

    code = nb201.SearchNetwork(C=4, N=1, relaxation="gumbel", unsampled_weights=True)
    with torch.no_grad():  # mostly convolutions sampled: a draw of `none` edges alone would leave no gradient at all
        code.alphas[:, nb201.PRIMITIVES.index("nor_conv_3x3")] += 2.0
    paper = nb201.SearchNetwork(C=4, N=1, relaxation="gumbel", unsampled_weights=False)
    paper.load_state_dict(code.state_dict())
    out_code, g_code = alpha_grad(code, code)
    out_ref, g_ref = alpha_grad(code, lambda x: _reference_style_gdas_logits(code, x))
    out_paper, g_paper = alpha_grad(paper, paper)
    torch.testing.assert_close(out_code, out_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(g_code, g_ref, rtol=1e-5, atol=1e-8)
    assert torch.equal(out_code, out_paper)  # the added weights are exactly zero forward
    assert (g_code - g_paper).abs().max() > 1e-3 * g_paper.abs().max()  # but not in the gradient
