"""Channels-last gradients: a slice (``sliced``), a channel shuffle and the global pool of a channels-last network
hand back gradients laid out channels-last, the same values as plain indexing, so that no BatchNorm or elementwise
kernel of the backward pass mixes an NCHW gradient with channels-last activations (the slow path on the CPU)."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from darts_lite import EvalNetwork
from darts_lite.spaces import ops as ops_module
from darts_lite.spaces.darts.search import SearchNetwork
from darts_lite.spaces.nb201 import SearchNetwork as NB201SearchNetwork
from darts_lite.spaces.ops import channel_shuffle, channels_last_gradient, sliced

CL = torch.channels_last
ALL = slice(None)
INDICES = {
    "odd pixels": (ALL, ALL, slice(1, None, 2), slice(1, None, 2)),
    "every second": (ALL, ALL, slice(None, None, 2), slice(None, None, 2)),
    "channel part": (ALL, slice(3)),
    "channel rest": (ALL, slice(3, None)),
}


def _channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=CL) and not t.is_contiguous()


@pytest.mark.parametrize("name", INDICES)
def test_a_slice_of_a_channels_last_tensor_has_a_channels_last_gradient_of_the_same_values(name):
    index = INDICES[name]
    torch.manual_seed(0)
    base = torch.randn(2, 8, 5, 6, dtype=torch.float64).contiguous(memory_format=CL)
    mine, plain = base.clone().requires_grad_(), base.clone().requires_grad_()
    out = sliced(mine, *index)
    assert torch.equal(out, plain[index]) and out.stride() == plain[index].stride()  # the same view
    grad = torch.randn(out.shape, dtype=torch.float64).contiguous(memory_format=CL)
    # (autograd.grad: a leaf's .grad would be laid out as the leaf whatever the backward pass made)
    (a,), (b,) = torch.autograd.grad(out, mine, grad), torch.autograd.grad(plain[index], plain, grad)
    assert torch.equal(a, b)
    assert _channels_last(a) and not _channels_last(b)  # PyTorch's own is NCHW


def test_a_slice_elsewhere_is_plain_indexing():
    x = torch.randn(2, 8, 5, 6, requires_grad=True)  # NCHW
    out = sliced(x, ALL, slice(2))
    assert out.grad_fn.name() == "SliceBackward0"
    with torch.no_grad():
        assert sliced(x.contiguous(memory_format=CL), ALL, slice(2)).grad_fn is None


def test_a_slice_under_forward_mode_and_double_backward_and_torch_func():
    import torch.autograd.forward_ad as fwAD

    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    tangent = torch.randn_like(x)
    index = INDICES["odd pixels"]
    with fwAD.dual_level():
        out = sliced(fwAD.make_dual(x, tangent), *index)
        assert torch.equal(fwAD.unpack_dual(out).tangent, tangent[index])
    # double backward: d/dx of <d(sum(y^3))/dx, v> through the slice, against plain indexing
    v = torch.randn_like(x)
    results = []
    for f in (lambda t: sliced(t, *index), lambda t: t[index]):
        (g,) = torch.autograd.grad(f(x).pow(3).sum(), x, create_graph=True)
        results.append(torch.autograd.grad((g * v).sum(), x)[0])
    assert torch.equal(*results)
    # torch.func transforms take plain indexing
    per_sample = torch.func.vmap(torch.func.grad(lambda t: sliced(t.unsqueeze(0), *index).pow(2).sum()))(x.detach())
    assert torch.equal(per_sample, torch.func.vmap(torch.func.grad(lambda t: t.unsqueeze(0)[index].pow(2).sum()))(x.detach()))


def test_the_channel_shuffle_keeps_channels_last_with_the_values_and_gradients_of_the_nchw_one():
    torch.manual_seed(0)
    nchw = torch.randn(2, 12, 3, 4, dtype=torch.float64, requires_grad=True)
    nhwc = nchw.detach().contiguous(memory_format=CL).requires_grad_()
    a, b = channel_shuffle(nchw, 4), channel_shuffle(nhwc, 4)
    assert torch.equal(a, b) and _channels_last(b)
    assert torch.equal(a[:, 1], nchw[:, 3]) and torch.equal(a[:, 4], nchw[:, 1])  # channel g * C/4 + i -> i * 4 + g
    grad = torch.randn(a.shape, dtype=torch.float64)
    (ga,), (gb,) = torch.autograd.grad(a, nchw, grad), torch.autograd.grad(b, nhwc, grad.contiguous(memory_format=CL))
    assert torch.equal(ga, gb) and _channels_last(gb)


def test_the_global_pool_hands_back_a_channels_last_gradient():
    x = torch.randn(2, 8, 4, 4).contiguous(memory_format=CL).requires_grad_()
    (plain,) = torch.autograd.grad(F.adaptive_avg_pool2d(x, 1).flatten(1).sum(), x)
    (mine,) = torch.autograd.grad(F.adaptive_avg_pool2d(channels_last_gradient(x * 1), 1).flatten(1).sum(), x)
    assert torch.equal(mine, plain) and torch.equal(mine, torch.full_like(x, 1 / 16))
    assert _channels_last(mine) and not _channels_last(plain)


class _BatchNormGradients(TorchDispatchMode):
    """The layouts of (gradient, input) of every BatchNorm backward of the passes it watches."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.native_batch_norm_backward.default:
            grad, x = args[0], args[1]
            self.seen.append((_channels_last(grad) or grad.is_contiguous(), _channels_last(x), tuple(x.shape),
                              grad.stride(), x.stride()))
        return func(*args, **(kwargs or {}))


# name: (network, whether PyTorch's own slices, pool and concatenation would mix layouts there)
NETWORKS = {
    "darts": (lambda: SearchNetwork(C=4, layers=3, num_classes=3), True),
    "gdas": (lambda: SearchNetwork(C=4, layers=3, num_classes=3, relaxation="gumbel"), True),
    "gdas-fixed-reduction": (lambda: SearchNetwork(C=8, layers=3, num_classes=3, relaxation="gumbel",
                                                   fixed_reduction=True), True),
    "pc-darts": (lambda: SearchNetwork(C=8, layers=3, num_classes=3, partial_channels=4, edge_normalization=True), True),
    "nb201": (lambda: NB201SearchNetwork(C=4, N=1, num_classes=3), False),
    "nb201-pc": (lambda: NB201SearchNetwork(C=8, N=1, num_classes=3, partial_channels=2), True),
    "retrain": (lambda: EvalNetwork("DARTS_V2", C=4, layers=3, num_classes=3, auxiliary=False), True),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_every_batchnorm_of_a_channels_last_network_gets_a_channels_last_gradient(name, monkeypatch):
    """And the gradients are those of plain slicing (float64: the BatchNorm kernels of the two layouts sum in
    different orders, so float32 would differ in the last bits)."""
    grads = []
    for keep in (True, False):
        if not keep:
            monkeypatch.setattr(ops_module, "_keeps_layout", lambda x: False)
        torch.manual_seed(0)
        build, mixes = NETWORKS[name]
        net = build().to(torch.float64).to(memory_format=CL).train()
        x = torch.randn(4, 3, 16, 16, dtype=torch.float64).contiguous(memory_format=CL)
        watch = _BatchNormGradients()
        torch.manual_seed(1)
        with watch:
            F.cross_entropy(net(x), torch.tensor([0, 1, 2, 0])).backward()
        if keep:
            assert watch.seen
            mixed = [s for s in watch.seen if s[1] and not _channels_last_strides(s[3], s[2])]
            assert not mixed, mixed[:3]
        else:  # what the test guards against: PyTorch's slices, pool and concatenation hand NCHW or sliced gradients
            assert any(s[1] and not _channels_last_strides(s[3], s[2]) for s in watch.seen) == mixes
        grads.append([p.grad for p in net.parameters()])
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def _channels_last_strides(stride: tuple, shape: tuple) -> bool:
    return torch.empty_strided(shape, stride).is_contiguous(memory_format=CL)


@pytest.mark.parametrize("op", ["zero", "strided dilated conv", "strided dilated conv with bias"])
def test_an_ops_strided_read_hands_back_a_channels_last_gradient(op):
    from torch import nn

    from darts_lite.spaces.darts.ops import DepthwiseConv2d
    from darts_lite.spaces.ops import Zero

    torch.manual_seed(0)
    if op == "zero":
        module, plain = Zero(2), lambda t: t[:, :, ::2, ::2].mul(0.0)
    else:
        module = DepthwiseConv2d(6, 6, 3, 2, 2, dilation=2, groups=6, bias=op.endswith("bias")).double()
        reference = nn.Conv2d(6, 6, 3, 2, 2, dilation=2, groups=6, bias=module.bias is not None).double()
        reference.load_state_dict(module.state_dict())
        plain = reference
    x = torch.randn(2, 6, 9, 8, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    out = module(x)
    grad = torch.randn(out.shape, dtype=torch.float64).contiguous(memory_format=CL)
    (mine,), (theirs,) = torch.autograd.grad(out, x, grad), torch.autograd.grad(plain(x), x, grad)
    torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-14)
    assert _channels_last(mine)
