"""darts_lite.spaces.lean: ``w * op(x)`` through one fused step per op keeps less for the backward pass and gives
the plain product's output, gradients and BatchNorm statistics bit for bit; passes it cannot serve run plainly."""

import copy

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from darts_lite.spaces import lean
from darts_lite.spaces.darts.ops import make_op as darts_op
from darts_lite.spaces.darts.search import SearchNetwork
from darts_lite.spaces.lean import weighted
from darts_lite.spaces.nb201.ops import make_op as nb201_op

F32 = 4  # bytes


def _ops():
    """(name, a function making the op, its input channels): every op of both spaces that takes part, at both
    strides."""
    for stride in (1, 2):
        for name in ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
                     "dil_conv_5x5"):
            yield f"darts-{name}-{stride}", lambda n=name, s=stride: darts_op(n, 6, s, affine=False, pool_bn=True), 6
    for name in ("nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"):
        for track in (True, False):
            yield (f"nb201-{name}-{track}",
                   lambda n=name, t=track: nb201_op(n, 6, 6, 1, affine=False, track_running_stats=t), 6)
    yield "nb201-projection", lambda: nb201_op("skip_connect", 4, 6, 1, affine=False), 4
    yield "nb201-reduce", lambda: nb201_op("skip_connect", 6, 6, 2, affine=False), 6


OPS = list(_ops())


def _unique_saved_bytes(fn, module=None):
    """The bytes of the distinct storages autograd keeps for the backward pass of ``fn()`` (inputs included; the
    parameters and buffers of ``module``, which live anyway, left out)."""
    storages = {}
    own = set() if module is None else {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}

    def pack(t):
        if t.untyped_storage().data_ptr() not in own:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


@pytest.mark.parametrize("dtype,layout", [(torch.float32, torch.contiguous_format), (torch.float64, torch.contiguous_format),
                                          (torch.float32, torch.channels_last)], ids=["f32", "f64", "f32-nhwc"])
@pytest.mark.parametrize("name,op,c", OPS, ids=[o[0] for o in OPS])
def test_weighted_equals_the_plain_product_bit_for_bit(name, op, c, dtype, layout):
    torch.manual_seed(0)
    op = op().to(dtype).to(memory_format=layout).train()
    ops = {"plain": op, "lean": copy.deepcopy(op)}
    # odd sizes: the strided ops' ceil and the kernels' vector tails
    x0 = torch.randn(4, c, 9, 9, dtype=dtype).contiguous(memory_format=layout)
    g = torch.randn_like(ops["plain"](x0.clone()))
    ops["lean"].load_state_dict(ops["plain"].state_dict())  # the statistics the pass above moved, for both
    results = {}
    for mode, m in ops.items():
        x = x0.clone().requires_grad_()
        alphas = torch.randn(3, dtype=dtype, generator=torch.Generator().manual_seed(1), requires_grad=True)
        w = torch.softmax(alphas, 0)[1]
        out = weighted(m, x, w) if mode == "lean" else m(x) * w
        out.backward(g)
        grads = [p.grad for p in m.parameters()]
        results[mode] = [out.detach(), x.grad, alphas.grad, *grads, *m.buffers()]
    assert all(torch.equal(a, b) for a, b in zip(results["plain"], results["lean"], strict=True)), name


@pytest.mark.parametrize("name,op,c", [o for o in OPS if "sep_conv_3x3" in o[0] or "max_pool" in o[0]],
                         ids=[o[0] for o in OPS if "sep_conv_3x3" in o[0] or "max_pool" in o[0]])
def test_only_the_gradients_asked_for_are_computed(name, op, c, monkeypatch):
    # the weight step freezes the alphas: no normalised output is recomputed for a weight nobody asks the gradient of
    recomputed = []
    normalised = lean._normalised
    monkeypatch.setattr(lean, "_normalised", lambda *a: recomputed.append(1) or normalised(*a))
    torch.manual_seed(0)
    op = op().train()
    x0 = torch.randn(4, c, 8, 8)
    for x_grad, w_grad in ((True, False), (False, True)):
        results, recomputed[:] = {}, []
        for mode in ("plain", "lean"):
            x = x0.clone().requires_grad_(x_grad)
            w = torch.tensor(0.3, requires_grad=w_grad)
            op.zero_grad(set_to_none=True)
            out = weighted(op, x, w) if mode == "lean" else op(x) * w
            out.backward(torch.ones_like(out))
            results[mode] = [x.grad, w.grad, *[p.grad for p in op.parameters()]]
        for a, b in zip(results["plain"], results["lean"], strict=True):
            assert (a is None and b is None) or torch.equal(a, b)
        # a separable conv also recomputes its middle ReLU's input (its first BatchNorm's output) for its own weights
        assert len(recomputed) == (0 if not w_grad else 1) + ("sep_conv" in name)


@pytest.mark.parametrize("name,op,c", [o for o in OPS if "skip_connect" not in o[0] or "-2" in o[0]],
                         ids=[o[0] for o in OPS if "skip_connect" not in o[0] or "-2" in o[0]])
def test_the_normalised_output_and_the_pooling_are_not_kept(name, op, c):
    op = op().train()
    x = torch.randn(4, c, 8, 8, requires_grad=True)
    w = torch.tensor(0.3, requires_grad=True)
    out, plain = _unique_saved_bytes(lambda: op(x) * w, op)
    _, lean = _unique_saved_bytes(lambda: weighted(op, x, w), op)
    size = out.numel() * F32
    if "pool" in name:
        # the pooled output (max: also its int64 indices) and the BatchNorm's output (DARTS), or the pooled output
        # alone (NAS-Bench-201's pooling has no BatchNorm): only the edge's input is kept
        expected = {"darts-max": 4 * size, "darts-avg": 2 * size, "nb201-avg": size}[name[:name.index("_")]]
    elif "sep_conv" in name:
        expected = 2 * size  # and the ReLU's output between its two blocks (recomputed from the first BatchNorm's input)
    else:
        expected = size  # the BatchNorm's output the product read
    assert plain - lean == expected, (plain, lean)


def test_a_supernet_keeps_less_by_default():
    nets = {}
    for recompute in ("none", "cheap"):
        torch.manual_seed(0)
        nets[recompute] = SearchNetwork(C=8, layers=3, num_classes=4, recompute=recompute)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
    kept = {r: _unique_saved_bytes(lambda n=n: F.cross_entropy(n(x), y))[1] for r, n in nets.items()}
    assert kept["cheap"] < 0.7 * kept["none"], kept  # 0.61x at the paper size (results/recompute_policies)


@pytest.mark.parametrize("name,op,c", [o for o in OPS if "conv_3x3" in o[0] or "pool" in o[0]],
                         ids=[o[0] for o in OPS if "conv_3x3" in o[0] or "pool" in o[0]])
def test_a_backward_pass_that_keeps_its_graph_differentiates_again_like_the_plain_ops(name, op, c):
    # GraSP (zero-cost proxies) differentiates a gradient once more: the fused steps replay plain ops for it
    torch.manual_seed(0)
    op = op().double().train()
    x = torch.randn(4, c, 7, 7, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    seconds = {}
    for mode in ("plain", "lean"):
        out = weighted(op, x, w) if mode == "lean" else op(x) * w
        # squared, so that the output's gradient depends on the output and the second derivatives are not trivial
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() ** 2
        grad_x, grad_w = torch.autograd.grad(loss, (x, w), create_graph=True)
        seconds[mode] = (*torch.autograd.grad(grad_w, (x, w), retain_graph=True),
                         *torch.autograd.grad(grad_x.square().sum(), (x, w)))
    for a, b in zip(seconds["plain"], seconds["lean"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_forward_mode_and_hooks_run_the_plain_ops():
    torch.manual_seed(0)
    net = SearchNetwork(C=4, layers=3, num_classes=4, steps=2, multiplier=2)
    edge = net.cells[0].edges[0]
    assert net.recompute == "cheap" and edge.lean()
    with fwAD.dual_level():
        assert not edge.lean()  # a custom step has no forward-mode rule; the plain ops have theirs
    with torch.no_grad():
        assert not edge.lean()
    assert not edge.eval().lean()
    edge.train()
    # a hook on an op's BatchNorm, on a pooling op or on a whole op sees its output: those ops are run plainly
    seen = []
    modules = (edge.ops[4][1][3], edge.ops[1], edge.ops[6])  # sep_conv_3x3's last BatchNorm, max_pool_3x3, dil_conv_3x3
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(o.shape)) for m in modules]
    try:
        net(torch.randn(2, 3, 8, 8))
    finally:
        for handle in handles:
            handle.remove()
    assert seen == [torch.Size([2, 4, 8, 8])] * 3


@pytest.mark.parametrize("part", ["first BatchNorm", "middle ReLU", "depthwise conv"])
def test_a_hook_inside_a_separable_conv_sees_its_module_run(part):
    # the fused middle of a separable conv (first block's BatchNorm, second block's ReLU and depthwise conv) is run as
    # its three modules when any of them is hooked, and gives the same output and gradients either way
    torch.manual_seed(0)
    op = darts_op("sep_conv_3x3", 6, 1, affine=False).double().train()
    hooked = copy.deepcopy(op)
    first, second = hooked
    module = {"first BatchNorm": first[3], "middle ReLU": second[0], "depthwise conv": second[1]}[part]
    seen = []
    module.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    x0 = torch.randn(4, 6, 7, 7, dtype=torch.float64)
    results = []
    for m in (op, hooked):
        x, w = x0.clone().requires_grad_(), torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
        out = weighted(m, x, w)
        out.square().sum().backward()
        results.append([out, x.grad, w.grad, *[p.grad for p in m.parameters()], *m.buffers()])
    assert seen == [torch.Size([4, 6, 7, 7])]
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


@pytest.mark.parametrize("name,op,c", OPS, ids=[o[0] for o in OPS])
def test_weighted_equals_the_plain_product_under_mixed_precision(name, op, c):
    # autocast (bfloat16 on the CPU): the convolutions read bfloat16 casts, the BatchNorms see bfloat16 inputs; the
    # fused steps cast as autocast does and recompute a bfloat16 BatchNorm output with the kernel the forward ran
    torch.manual_seed(0)
    op = op().train()
    x0, alphas0 = torch.randn(4, c, 9, 9), torch.randn(3)
    results = []
    for mode in ("plain", "lean"):
        m = copy.deepcopy(op)
        x, alphas = x0.clone().requires_grad_(), alphas0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            w = torch.softmax(alphas, 0)[1]
            out = weighted(m, x, w) if mode == "lean" else m(x) * w
        out.float().square().sum().backward()
        results.append([out, x.grad, alphas.grad, *[p.grad for p in m.parameters()], *m.buffers()])
    assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(*results, strict=True)), name


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("size", [8, 9])
@pytest.mark.parametrize("dtype,layout", [(torch.float32, torch.contiguous_format), (torch.float64, torch.contiguous_format),
                                          (torch.float32, torch.channels_last)], ids=["f32", "f64", "f32-nhwc"])
def test_the_factorized_reduction_keeps_a_quarter_copy_and_computes_the_padded_conv(dtype, layout, size, bias):
    # its second conv reads the odd rows and columns of the input: the same products as the 1x1 stride-2 conv of the
    # input shifted by a zero-padded pixel (the module run on the padded input, as a hook on it makes it run)
    from darts_lite.spaces.ops import FactorizedReduce

    torch.manual_seed(0)
    op = FactorizedReduce(6, 6, affine=False, conv_bias=bias).to(dtype).to(memory_format=layout).train()
    padded = copy.deepcopy(op)
    seen = []
    padded.conv_2.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    x0 = torch.randn(4, 6, size, size, dtype=dtype).contiguous(memory_format=layout)
    results, kept = [], []
    for m in (op, padded):
        x = x0.clone().requires_grad_()
        out, nbytes = _unique_saved_bytes(lambda m=m, x=x: m(x), m)
        out.square().sum().backward()
        results.append([out, x.grad, *[p.grad for p in m.parameters()], *m.buffers()])
        kept.append(nbytes)
    assert seen == [torch.Size([4, 6, size, size])]  # the hooked module ran, on the shifted input
    # the same products, summed in the order the kernel picks for each input's layout and stride: equal to rounding
    rtol, atol = (1e-4, 1e-4) if dtype == torch.float32 else (1e-12, 1e-14)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    assert results[0][0].is_contiguous(memory_format=layout)
    half = (size + 1) // 2
    elements = 4 * 6 * ((size + 1) ** 2 - half ** 2)  # a padded copy of the input, not a quarter-size one
    assert kept[1] - kept[0] == elements * x0.element_size()
