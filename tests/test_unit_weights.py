"""GDAS's hard weights are exactly 1 (the sampled op) and exactly 0 (the others). On the CPU the fused edges skip the
products by 1 and NAS-Bench-201's edges the sum with the zeros: the same values and gradients as computing them (the
supernets' equality with recompute="none" is tests/test_recompute.py's), fewer passes over the tensors."""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from darts_lite.relax import GumbelRelaxation
from darts_lite.spaces import lean
from darts_lite.spaces.darts.search import SearchNetwork
from darts_lite.spaces.nb201 import SearchNetwork as NB201SearchNetwork
from darts_lite.spaces.ops import Identity, ReLUConvBN, Zero

aten = torch.ops.aten


@settings(max_examples=300, deadline=None)
@given(p=st.floats(0.0, 1.0, width=32), double=st.booleans())
def test_the_hard_weights_arithmetic_is_exact(p, double):
    t = torch.tensor(p, dtype=torch.float64 if double else torch.float32)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    assert (one - t.detach() + t).item() == 1.0
    assert (zero - t.detach() + t).item() == 0.0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-3, 1.0, 30.0]), tau=st.floats(0.05, 20.0),
       double=st.booleans())
def test_gdas_samples_weights_of_exactly_one_and_zero(seed, scale, tau, double):
    g = torch.Generator().manual_seed(seed)
    alphas = (torch.randn(14, 8, generator=g, dtype=torch.float64 if double else torch.float32) * scale)
    relaxation = GumbelRelaxation()
    relaxation.tau = tau
    torch.manual_seed(seed)
    ew = relaxation(alphas.requires_grad_())
    index = torch.tensor(ew.index)[:, None]
    assert (ew.weights.gather(1, index) == 1).all()
    others = torch.ones_like(ew.weights, dtype=torch.bool).scatter_(1, index, False)
    assert (ew.weights[others] == 0).all()


def test_only_a_plain_cpu_scalar_of_exactly_one_or_zero_counts():
    assert lean._unit(torch.tensor(1.0)) and lean._unit(torch.tensor(1.0, dtype=torch.float64, requires_grad=True))
    assert not lean._unit(torch.tensor(1.0 + 2**-23)) and not lean._unit(torch.tensor(1.0 - 2**-24))
    assert not lean._unit(torch.tensor([1.0])) and not lean._unit(torch.tensor(0.0))
    assert lean._zero(torch.tensor(0.0)) and lean._zero(torch.tensor(-0.0)) and not lean._zero(torch.tensor(1e-30))
    assert not lean._zero(torch.zeros(1))
    torch.func.vmap(lambda w: (lean._unit(w), w)[1])(torch.ones(3))  # a batched scalar is not read: no error


class _Calls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func] += 1
        return func(*args, **(kwargs or {}))


def _pass(net, x, y, seed, computed, monkeypatch):
    """A seeded forward+backward of ``net`` (every parameter asking for its gradient); with ``computed`` the exact-1
    and exact-0 checks answer no, so that the products and sums run. -> (loss, gradients, aten calls)."""
    with monkeypatch.context() as m:
        if computed:
            m.setattr(lean, "_unit", lambda w: False)
            m.setattr(lean, "_zero", lambda s: False)
        net.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        with _Calls() as mode:
            loss = F.cross_entropy(net(x), y)
            loss.backward()
    return loss.detach(), [p.grad for p in net.parameters()], mode.calls


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_the_products_by_one_and_the_sums_with_zero_are_skipped_with_the_same_results(space, monkeypatch):
    torch.manual_seed(0)
    if space == "darts":
        net = SearchNetwork(C=4, layers=3, num_classes=4, steps=2, multiplier=2, relaxation="gumbel")
    else:
        net = NB201SearchNetwork(C=4, N=1, num_classes=4, relaxation="gumbel")
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
    edges = sum(len(cell.edges) for cell in net.cells if hasattr(cell, "edges"))
    for seed in (1, 2):
        skipped = _pass(net, x, y, seed, False, monkeypatch)
        computed = _pass(net, x, y, seed, True, monkeypatch)
        assert torch.equal(skipped[0], computed[0])
        for a, b in zip(skipped[1], computed[1]):
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b))
        muls = [sum(calls[op] for op in (aten.mul.Tensor, aten.mul_.Tensor)) for calls in (skipped[2], computed[2])]
        assert muls[0] < muls[1]
        if space == "nb201":  # every edge adds its unsampled ops' zero weights: none of those additions runs
            adds = [calls[aten.add.Tensor] for calls in (skipped[2], computed[2])]
            assert adds[0] <= adds[1] - edges


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_gradient_not_laid_out_densely_goes_through_the_product(channels_last, monkeypatch):
    # the op's output gradient arrives as a slice of the concatenation's: the product lays it out densely, as before
    layout = torch.channels_last if channels_last else torch.contiguous_format
    results = []
    for computed in (False, True):
        torch.manual_seed(0)
        op = ReLUConvBN(4, 4, 3, 1, 1, affine=False).to(memory_format=layout)
        x = torch.randn(6, 4, 8, 8).contiguous(memory_format=layout).requires_grad_()
        w = torch.ones((), requires_grad=True)
        with monkeypatch.context() as m:
            if computed:
                m.setattr(lean, "_unit", lambda w: False)
            out = lean.weighted(op, x, w, fuse=True)
            both = torch.cat([out, torch.randn(6, 3, 8, 8)], dim=1)
            (both * torch.randn_like(both)).sum().backward()
        results.append([out.detach(), x.grad, w.grad, op[1].weight.grad])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_plus_adds_a_value_that_is_not_zero_and_keeps_the_gradients():
    y = torch.randn(2, 3, 4, 4, requires_grad=True)
    for value in (0.5, 0.0, -0.0):
        s = torch.tensor(value, requires_grad=True)
        out = lean.plus(y, s, fuse=True)
        assert torch.equal(out, y + s) and torch.equal(lean.plus(y, s, fuse=False), y + s)
        g = torch.randn_like(y)
        got = torch.autograd.grad(out, (y, s), g)
        want = torch.autograd.grad(y + s, (y, s), g)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    # a skipped +0 leaves a -0 that the sum would have made +0: equal values
    z = torch.tensor([-0.0, 1.0])
    assert torch.equal(lean.plus(z, torch.tensor(0.0), fuse=True), z)
    assert lean.plus(z, torch.tensor(0.0), fuse=True)[0].signbit()


@settings(max_examples=40, deadline=None)
@given(op=st.sampled_from(["skip", "none", "none_stride2", "none_channels"]), channels_last=st.booleans(),
       double=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_a_sampled_skip_or_none_gives_the_products_values_without_passes_over_its_tensors(op, channels_last, double,
                                                                                         seed):
    # the edge's op weighted by GDAS's exact 1: fused, no product forward or backward (a `none` reads nothing at all),
    # the same output (values and layout) and the same gradients as the product (zeros for a `none`'s input)
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float64 if double else torch.float32
    module = {"skip": Identity(), "none": Zero(1), "none_stride2": Zero(2), "none_channels": Zero(1, 6)}[op]
    x0 = torch.randn(3, 4, 5, 5, generator=g, dtype=dtype)
    x0 = x0.contiguous(memory_format=torch.channels_last) if channels_last else x0
    results = []
    for fuse in (True, False):
        x, w = x0.clone().requires_grad_(), torch.ones((), dtype=dtype, requires_grad=True)
        with _Calls() as mode:
            out = lean.weighted(module, x, w, fuse=fuse)
            grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
            out.backward(grad.contiguous(memory_format=torch.channels_last) if channels_last else grad)
        results.append((out.detach(), x.grad, w.grad, mode.calls))
    (fused, fx, fw, calls), (plain, px, pw, _) = results
    assert torch.equal(fused, plain) and fused.stride() == plain.stride() and fused.dtype == plain.dtype
    if op == "none_channels":  # zeros of other channels than the input's: no gradient for it either way
        assert fx is None and px is None
    else:
        assert torch.equal(fx, px) and fx.stride() == px.stride()
    assert torch.equal(fw, pw) and fw.dtype == pw.dtype
    products = sum(calls[f] for f in (aten.mul.Tensor, aten.mul_.Tensor))
    assert products == calls[aten.sum.default] == (op == "skip")  # a skip's weight gradient: its gradient times x


def test_a_sampled_none_of_a_non_finite_input_gives_zeros():
    x = torch.tensor([[[[float("nan"), float("inf")]]]], requires_grad=True)
    w = torch.ones((), requires_grad=True)
    out = lean.weighted(Zero(1), x, w, fuse=True)
    assert torch.equal(out, torch.zeros_like(x)) and lean.weighted(Zero(1), x, w, fuse=False).isnan().any()
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x)) and w.grad.item() == 0.0
