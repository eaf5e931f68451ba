"""Second-order DARTS: the finite-difference architecture gradient against exact double backward."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from darts_lite import PRIMITIVES, SearchModule


def _exact_unrolled_alpha_grad(net, opt, x_w, y_w, x_a, y_a):
    """d/d alpha of L_val(w'(alpha), alpha), with w' one SGD step, differentiated through by autograd."""
    group = opt.param_groups[0]
    xi, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
    names = {id(p): n for n, p in net.named_parameters()}
    weights, alphas = net.weight_parameters(), net.arch_parameters()
    buffers = {n: b.clone() for n, b in net.named_buffers()}

    def call(ws, x):
        state = dict(buffers)
        state.update({names[id(p)]: w for p, w in zip(weights, ws)})
        state.update({names[id(a)]: a for a in alphas})
        return functional_call(net, state, (x,))

    w = [p.detach().requires_grad_() for p in weights]
    g = torch.autograd.grad(F.cross_entropy(call(w, x_w), y_w), w, create_graph=True, allow_unused=True)
    unrolled = []
    for p, wi, gi in zip(weights, w, g):
        if gi is None:  # not in the graph (an op GDAS did not sample): SGD would not move it
            unrolled.append(wi)
            continue
        buf = opt.state.get(p, {}).get("momentum_buffer")
        d = gi + wd * wi + (mom * buf if buf is not None else 0)
        unrolled.append(wi - xi * d)
    return torch.autograd.grad(F.cross_entropy(call(unrolled, x_a), y_a), alphas)


def _smooth(module: torch.nn.Module) -> None:
    """Swap every ReLU for Softplus: with ReLU kinks a finite difference is not a derivative."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.ReLU):
                setattr(parent, name, torch.nn.Softplus(beta=2.0))


CASES = {
    "central": dict(hvp="central", network={}),
    "forward": dict(hvp="forward", network={}),
    # random forward passes: every pass on the training batch must replay the same draws
    "drop_path": dict(hvp="central", network=dict(drop_path_prob=0.3)),
    "gumbel": dict(hvp="central", network=dict(relaxation="gumbel")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_second_order_matches_double_backward(case):
    torch.manual_seed(0)
    hvp = CASES[case]["hvp"]
    # max pooling is not differentiable everywhere either; the other six ops are, once smoothed
    ops = [p for p in PRIMITIVES if p != "max_pool_3x3"]
    network = dict(C=4, layers=3, num_classes=3, in_channels=1, primitives=ops, **CASES[case]["network"])
    module = SearchModule(network=network, order=2, lr=0.1, hvp=hvp).double()
    net = module.net
    _smooth(net)
    with torch.no_grad():  # alphas away from uniform so the Hessian term is not negligible
        for a in net.arch_parameters():
            a.normal_(0, 0.5)
    x_w, x_a = torch.randn(8, 1, 6, 6, dtype=torch.float64), torch.randn(8, 1, 6, 6, dtype=torch.float64)
    y_w, y_a = torch.randint(0, 3, (8,)), torch.randint(0, 3, (8,))
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    F.cross_entropy(net(x_w), y_w).backward()
    opt.step()  # a non-zero momentum buffer, which the unrolled step must include
    opt.zero_grad()
    for a in net.arch_parameters():
        a.grad = None

    # the exact gradient draws its masks / samples in the same order as the module's first two passes
    torch.manual_seed(123)
    exact = _exact_unrolled_alpha_grad(net, opt, x_w, y_w, x_a, y_a)
    scale = max(e.abs().max().item() for e in exact)

    def error(eps: float) -> float:
        module.hparams.unrolled_eps = eps
        torch.manual_seed(123)
        module._second_order_arch_grads(x_w, y_w, x_a, y_a, opt)
        return max((a.grad - e).abs().max().item() for a, e in zip(net.arch_parameters(), exact))

    err_published, err_small = error(0.01), error(0.001)
    if hvp == "central":
        # the published eps = 0.01 / ||v|| is already close; a smaller eps converges on the exact
        # gradient at the central difference's O(eps^2) rate, so nothing but truncation separates them
        assert err_published < 2e-3 * scale
        assert err_small < 2e-5 * scale
        assert 50 < err_published / err_small
    else:
        # the forward difference converges at O(eps): ten times smaller eps, about ten times closer
        assert err_published < 2e-2 * scale
        assert err_small < 2e-3 * scale
        assert 7 < err_published / err_small < 13

    # and the Hessian term matters here: the first-order gradient at w is clearly different
    for a in net.arch_parameters():
        a.grad = None
    first = torch.autograd.grad(F.cross_entropy(net(x_a), y_a), net.arch_parameters())
    assert max((f - e).abs().max().item() for f, e in zip(first, exact)) > 1e-3 * max(
        e.abs().max().item() for e in exact
    )
