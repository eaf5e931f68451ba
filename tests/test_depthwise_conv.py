"""DepthwiseConv2d: nn.Conv2d's outputs and gradients, with a strided dilated conv run as the undilated conv of the
input's even pixels, and a stride-1 same-padded conv's input gradient as the conv of the output gradient with the
kernel flipped."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_darts_network
from torch import nn

from darts_lite.spaces import lean
from darts_lite.spaces.darts import ops
from darts_lite.spaces.darts.ops import DepthwiseConv2d


def _twins(c, kernel, stride, padding, dilation):
    torch.manual_seed(0)
    fast = DepthwiseConv2d(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False).double()
    plain = nn.Conv2d(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False).double()
    plain.load_state_dict(fast.state_dict())
    return fast, plain


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_dilated_conv_equals_nn_conv2d(monkeypatch, kernel, size, channels_last):
    fast, plain = _twins(4, kernel, 2, kernel - 1, 2)  # dil_conv on a reduction edge
    x = torch.randn(3, 4, size, size, dtype=torch.float64)
    if channels_last:
        x, fast, plain = x.contiguous(memory_format=torch.channels_last), fast.to(memory_format=torch.channels_last), \
            plain.to(memory_format=torch.channels_last)
    x_fast, x_plain = x.clone().requires_grad_(), x.clone().requires_grad_()
    dilations = []
    conv2d = F.conv2d

    def recording(*args):
        dilations.append(tuple(args[5]) if isinstance(args[5], (tuple, list)) else (args[5],) * 2)
        return conv2d(*args)

    monkeypatch.setattr(ops.F, "conv2d", recording)
    out = fast(x_fast)
    assert dilations == [(1, 1)]  # the undilated conv ran
    expected = plain(x_plain)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(expected)
    out.backward(g)
    expected.backward(g)
    torch.testing.assert_close(x_fast.grad, x_plain.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding,dilation", [(3, 1, 2, 2), (5, 2, 2, 1), (3, 2, 1, 1), (3, 2, 1, 2)])
def test_other_convs_run_as_nn_conv2d(kernel, stride, padding, dilation):
    fast, plain = _twins(4, kernel, stride, padding, dilation)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    assert torch.equal(fast(x), plain(x))


def test_the_supernet_computes_what_plain_convs_compute(monkeypatch):
    torch.manual_seed(0)
    net = tiny_darts_network().double()  # two reduction cells: 16 strided dil_conv edges
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (4,))
    results = []
    for forward in (DepthwiseConv2d.forward, nn.Conv2d.forward):
        monkeypatch.setattr(DepthwiseConv2d, "forward", forward)
        net.zero_grad()
        torch.manual_seed(1)
        out = net(x)
        F.cross_entropy(out, y).backward()
        results.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
    (out_fast, grads_fast), (out_plain, grads_plain) = results
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads_fast, grads_plain):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (5, 1), (3, 2), (5, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_same_padded_conv_takes_its_input_gradient_from_the_flipped_kernel(monkeypatch, kernel, dilation,
                                                                            channels_last):
    fast, plain = _twins(4, kernel, 1, dilation * (kernel - 1) // 2, dilation)  # a normal cell's sep/dil conv
    x = torch.randn(3, 4, 7, 9, dtype=torch.float64)
    if channels_last:
        x, fast, plain = x.contiguous(memory_format=torch.channels_last), fast.to(memory_format=torch.channels_last), \
            plain.to(memory_format=torch.channels_last)
    calls = []
    flipped = lean.depthwise_input_gradient
    monkeypatch.setattr(lean, "depthwise_input_gradient", lambda *args: calls.append(1) or flipped(*args))
    x_fast, x_plain = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = fast(x_fast), plain(x_plain)
    assert torch.equal(out, expected)  # the forward is the same conv
    g = torch.randn_like(expected)
    out.backward(g)
    expected.backward(g)
    assert calls == [1]
    torch.testing.assert_close(x_fast.grad, x_plain.grad, rtol=1e-12, atol=1e-12)  # summed in another order
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-12, atol=1e-12)


def test_the_flipped_input_gradient_is_twice_differentiable_and_forward_mode_runs_the_plain_conv():
    fast, plain = _twins(3, 3, 1, 2, 2)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w: lean.depthwise_conv(x, w, (2, 2), (2, 2), 3),
                                        (x, fast.weight))
    tangent = torch.randn_like(x)
    _, jvp = torch.func.jvp(fast, (x.detach(),), (tangent,))
    _, expected = torch.func.jvp(plain, (x.detach(),), (tangent,))
    torch.testing.assert_close(jvp, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding,dilation", [(3, 2, 1, 1), (5, 2, 2, 1), (3, 1, 1, 2), (3, 1, 0, 1)])
def test_strided_and_other_padded_convs_keep_the_convolution_backward(monkeypatch, kernel, stride, padding, dilation):
    fast, plain = _twins(4, kernel, stride, padding, dilation)
    monkeypatch.setattr(lean, "depthwise_input_gradient", lambda *args: pytest.fail("the flipped kernel ran"))
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    g = torch.autograd.grad(fast(x).sum(), x)[0]
    torch.testing.assert_close(g, torch.autograd.grad(plain(x).sum(), x)[0], rtol=1e-12, atol=1e-12)
