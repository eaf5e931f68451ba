"""darts_lite.spaces.batchnorm.BatchNorm2d: nn.BatchNorm2d with darts_lite's compiled kernels in training mode, the
same values bit for bit (output, running statistics, num_batches_tracked, gradients of the input, weight and bias),
and nn.BatchNorm2d's own forward wherever the kernels do not serve."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from darts_lite.spaces import native
from darts_lite.spaces.batchnorm import BatchNorm2d, compiled_batch_norms
from darts_lite.spaces.darts.eval import EvalNetwork

served_here = pytest.mark.skipif(
    not (native.enabled() and torch.backends.cpu.get_cpu_capability() in native._BATCH_NORM_BUILDS
         and native._load() is not None),
    reason="the compiled BatchNorm does not serve on this machine (PyTorch's build, or no C compiler)")


def _pair(channels=12, **kwargs):
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(channels, **kwargs)
    if plain.affine:
        with torch.no_grad():
            plain.weight.normal_()
            plain.bias.normal_()
    return plain, compiled_batch_norms(copy.deepcopy(plain))


def _counting(monkeypatch):
    """How many times the compiled forward and gradients served."""
    calls = {"forward": 0, "backward": 0}
    forward, backward = native.batch_norm, native.batch_norm_gradients

    def counted_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        calls["forward"] += out is not None
        return out

    def counted_backward(*args, **kwargs):
        out = backward(*args, **kwargs)
        calls["backward"] += out is not None
        return out

    monkeypatch.setattr(native, "batch_norm", counted_forward)
    monkeypatch.setattr(native, "batch_norm_gradients", counted_backward)
    return calls


def _run(bn, x, grad):
    x = x.detach().requires_grad_()
    y = bn(x)
    y.backward(grad)
    params = [p.grad for p in (bn.weight, bn.bias) if p is not None]
    return [y.detach(), x.grad, *params, *(b.clone() for b in bn.buffers())]


@served_here
@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"momentum": 0.3, "eps": 1e-3},
                                    {"track_running_stats": False}, {"affine": False},
                                    {"affine": False, "track_running_stats": False}])
def test_the_same_bits_as_nn_batchnorm_over_steps(kwargs, monkeypatch):
    plain, compiled = _pair(**kwargs)
    assert type(compiled) is BatchNorm2d and (compiled.weight is not plain.weight or not plain.affine)
    assert compiled.state_dict().keys() == plain.state_dict().keys()
    calls = _counting(monkeypatch)
    for step in range(3):
        x = (torch.randn(6, 12, 5, 7) * (step + 1) + step).contiguous(memory_format=torch.channels_last)
        grad = torch.randn_like(x)
        for a, b in zip(_run(plain, x, grad), _run(compiled, x, grad)):
            assert torch.equal(a, b)
    assert calls == {"forward": 3, "backward": 3}
    if compiled.track_running_stats:
        assert int(compiled.num_batches_tracked) == 3


@served_here
def test_a_swapped_network_shares_its_parameters_and_follows_the_same_trajectory(monkeypatch):
    torch.manual_seed(0)
    net = EvalNetwork("DARTS_V2", C=8, layers=6, auxiliary=True, drop_path_prob=0.2).train()
    net = net.to(memory_format=torch.channels_last)
    swapped = [m for m in net.modules() if isinstance(m, BatchNorm2d)]
    assert swapped and not any(type(m) is nn.BatchNorm2d for m in net.modules())
    plain = copy.deepcopy(net)
    for m in plain.modules():
        if type(m) is BatchNorm2d:
            m.__class__ = nn.BatchNorm2d
    calls = _counting(monkeypatch)
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))
    optimisers = [torch.optim.SGD(n.parameters(), lr=0.1, momentum=0.9) for n in (net, plain)]
    for step in range(2):
        for n, opt in zip((net, plain), optimisers):
            torch.manual_seed(step)  # the same drop-path draws
            logits, aux = n(x)
            (F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)).backward()
            opt.step()
            opt.zero_grad()
        for (name, a), b in zip(net.state_dict().items(), plain.state_dict().values()):
            assert torch.equal(a, b), (step, name)
    # every BatchNorm in both steps but the auxiliary head's last, whose 1x1 maps are both layouts at once (PyTorch
    # takes its contiguous path there, the kernels do not serve it)
    assert calls["forward"] == 2 * (len(swapped) - 1) and calls["backward"] > 0


def test_where_the_kernels_do_not_serve_it_is_nn_batchnorm(monkeypatch):
    """Evaluation mode, NCHW, float64, autocast, forward-mode AD: the kernels are not asked, and the values are
    nn.BatchNorm2d's."""
    calls = _counting(monkeypatch)
    plain, compiled = _pair()
    x = torch.randn(4, 12, 6, 6)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain(x), compiled(x))  # NCHW
    assert torch.equal(plain.double()(x.double()), compiled.double()(x.double()))
    plain.float(), compiled.float()
    plain.eval(), compiled.eval()
    assert torch.equal(plain(cl), compiled(cl))
    plain.train(), compiled.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(plain(cl), compiled(cl))
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        tangent = torch.randn_like(cl)
        out_plain = fwAD.unpack_dual(plain(fwAD.make_dual(cl, tangent)))
        out_compiled = fwAD.unpack_dual(compiled(fwAD.make_dual(cl, tangent)))
        assert torch.equal(out_plain.primal, out_compiled.primal)
        assert torch.equal(out_plain.tangent, out_compiled.tangent)
    assert calls == {"forward": 0, "backward": 0}


@served_here
def test_double_backward_through_the_compiled_batchnorm():
    """A gradient penalty (create_graph=True) differentiates the backward pass again: the same second-order
    gradients as nn.BatchNorm2d's (to rounding: the replayed backward is PyTorch's differentiable one)."""
    plain, compiled = _pair(8)
    x = torch.randn(5, 8, 4, 4, dtype=torch.float32).contiguous(memory_format=torch.channels_last)
    results = []
    for bn in (plain, compiled):
        xi = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad((bn(xi) ** 3).sum(), xi, create_graph=True)
        gx.pow(2).sum().backward()
        results.append((gx.detach(), xi.grad, bn.weight.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@served_here
def test_the_darts_search_cells_preprocessing_runs_it_and_the_edges_stay_fused(monkeypatch):
    """The search cells' input preprocessing (ReLU-conv-BN, the factorized reduction; GDAS's fixed reduction cell
    whole) runs the compiled BatchNorm, the mixed edges' BatchNorms stay nn.BatchNorm2d (fused with their ops); a
    search step's gradients and statistics are those of the same network with nn.BatchNorm2d everywhere."""
    from darts_lite.spaces.darts.search import SearchNetwork

    torch.manual_seed(0)
    net = SearchNetwork(C=8, layers=3, num_classes=4, relaxation="gumbel").to(memory_format=torch.channels_last)
    for cell in net.cells:
        assert all(type(m) is BatchNorm2d for p in (cell.preprocess0, cell.preprocess1) for m in p.modules()
                   if isinstance(m, nn.BatchNorm2d))
        assert all(type(m) is nn.BatchNorm2d for m in cell.edges.modules() if isinstance(m, nn.BatchNorm2d))
    frc = SearchNetwork(C=8, layers=3, num_classes=4, fixed_reduction=True)
    assert not any(type(m) is nn.BatchNorm2d for m in frc.cells[1].modules())
    plain = copy.deepcopy(net)
    for m in plain.modules():
        if type(m) is BatchNorm2d:
            m.__class__ = nn.BatchNorm2d
    from darts_lite.spaces import batchnorm

    served = []
    apply = batchnorm._TrainingBatchNorm.apply
    monkeypatch.setattr(batchnorm._TrainingBatchNorm, "apply", lambda *args: served.append(args[0].shape) or apply(*args))
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (8,))
    for n in (net, plain):
        torch.manual_seed(1)  # the same Gumbel sample
        F.cross_entropy(n(x), y).backward()
    assert len(served) == 2 * len(net.cells) == len([m for m in net.modules() if type(m) is BatchNorm2d])
    for (name, a), b in zip(net.named_parameters(), plain.parameters()):
        assert (a.grad is None) == (b.grad is None) and (a.grad is None or torch.equal(a.grad, b.grad)), name
    for (name, a), b in zip(net.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name
