"""Second-order DARTS: the architecture gradient of every estimator against exact double backward.

The reference differentiates L_val(w'(alpha), alpha) through the unrolled SGD step by plain autograd.
`hvp=exact` must equal it to float tolerance on a real (ReLU, max-pool) network; the finite differences
converge on it at their truncation order only where the network is smooth, so they are checked on a
smoothed one.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from darts_lite import PRIMITIVES, SearchModule
from darts_lite.search import HVP_ESTIMATORS


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


def _problem(hvp, network, primitives=PRIMITIVES, smooth=False, channels_last=False):
    """A float64 module two steps into training (a non-zero momentum buffer), with alphas away from
    uniform so that the Hessian term is not negligible; returns (module, opt, batches, exact gradient)."""
    torch.manual_seed(0)
    network = dict(dict(C=4, layers=3, num_classes=3, in_channels=1, primitives=list(primitives)), **network)
    module = SearchModule(network=network, order=2, lr=0.1, hvp=hvp).double()
    net = module.net
    if smooth:
        _smooth(net)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 0.5)
    x_w, x_a = torch.randn(8, 1, 6, 6, dtype=torch.float64), torch.randn(8, 1, 6, 6, dtype=torch.float64)
    y_w, y_a = torch.randint(0, 3, (8,)), torch.randint(0, 3, (8,))
    if channels_last:
        net.to(memory_format=torch.channels_last)
        x_w, x_a = (x.contiguous(memory_format=torch.channels_last) for x in (x_w, x_a))
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    F.cross_entropy(net(x_w), y_w).backward()
    opt.step()  # a non-zero momentum buffer, which the unrolled step must include
    opt.zero_grad()
    for a in net.arch_parameters():
        a.grad = None
    # the exact gradient draws its masks / samples in the same order as the module's first two passes
    torch.manual_seed(123)
    exact = _exact_unrolled_alpha_grad(net, opt, x_w, y_w, x_a, y_a)
    return module, opt, (x_w, y_w, x_a, y_a), exact


def _max_error(module, exact) -> float:
    return max((a.grad - e).abs().max().item() for a, e in zip(module.net.arch_parameters(), exact))


def _assert_hessian_term_matters(module, x_a, y_a, exact) -> None:
    """The first-order gradient at w is clearly different, so agreement above is not by default."""
    net = module.net
    for a in net.arch_parameters():
        a.grad = None
    first = torch.autograd.grad(F.cross_entropy(net(x_a), y_a), net.arch_parameters())
    scale = max(e.abs().max().item() for e in exact)
    assert max((f - e).abs().max().item() for f, e in zip(first, exact)) > 1e-3 * scale


EXACT_CASES = {
    "softmax": dict(network={}),
    # random forward passes: the HVP pass must replay the unrolling pass's draws
    "drop_path": dict(network=dict(drop_path_prob=0.3)),
    # GDAS: unsampled ops are out of the graph; their weights get no gradient and no tangent
    "gumbel": dict(network=dict(relaxation="gumbel")),
    # the NHWC layout that training uses, with GDAS's fixed reduction cell (grouped convs, max pools)
    "channels_last_fixed_reduction": dict(network=dict(relaxation="gumbel", fixed_reduction=True, C=8),
                                          channels_last=True),
}


@pytest.mark.parametrize("case", sorted(EXACT_CASES))
def test_exact_hvp_matches_double_backward_on_a_relu_network(case):
    """No smoothing and every op, max pool included: exact is the derivative wherever one exists."""
    kw = EXACT_CASES[case]
    module, opt, (x_w, y_w, x_a, y_a), exact = _problem("exact", kw["network"], channels_last=kw.get("channels_last", False))
    buffers = [b.clone() for b in module.net.buffers()]
    torch.manual_seed(123)
    module._second_order_arch_grads(x_w, y_w, x_a, y_a, opt)
    rng_after_exact = torch.get_rng_state()
    scale = max(e.abs().max().item() for e in exact)
    assert _max_error(module, exact) < 1e-10 * scale  # float64 rounding, nothing else
    # BatchNorm running statistics as they were
    assert all(torch.equal(b, b0) for b, b0 in zip(module.net.buffers(), buffers))
    # and the weight step that follows draws the same random numbers as under the paper's estimator
    module.hparams.hvp = "central"
    torch.manual_seed(123)
    module._second_order_arch_grads(x_w, y_w, x_a, y_a, opt)
    assert torch.equal(torch.get_rng_state(), rng_after_exact)
    _assert_hessian_term_matters(module, x_a, y_a, exact)


@pytest.mark.parametrize("hvp", HVP_ESTIMATORS)
def test_second_order_runs_in_fp32_under_autocast(hvp):
    """The finite differences are below bf16's resolution, and exact keeps the same precision: under bf16
    autocast every estimator gives the fp32 gradient."""
    module, opt, batches, _ = _problem(hvp, {})
    module.float()
    x_w, y_w, x_a, y_a = batches
    x_w, x_a = x_w.float(), x_a.float()
    grads = []
    for autocast in (False, True):
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            module._second_order_arch_grads(x_w, y_w, x_a, y_a, opt)
        grads.append([a.grad.clone() for a in module.net.arch_parameters()])
    for fp32, under_bf16 in zip(*grads):
        torch.testing.assert_close(under_bf16, fp32)


def test_unknown_hvp_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="hvp='backward': must be one of exact, central, forward"):
        SearchModule(order=2, hvp="backward")
    assert HVP_ESTIMATORS == ("exact", "central", "forward")


FD_CASES = {
    "central": dict(hvp="central", network={}),
    "forward": dict(hvp="forward", network={}),
    # random forward passes: every pass on the training batch must replay the same draws
    "drop_path": dict(hvp="central", network=dict(drop_path_prob=0.3)),
    "gumbel": dict(hvp="central", network=dict(relaxation="gumbel")),
}


@pytest.mark.parametrize("case", sorted(FD_CASES))
def test_finite_differences_converge_on_double_backward_where_smooth(case):
    hvp = FD_CASES[case]["hvp"]
    # max pooling is not differentiable everywhere either; the other six ops are, once smoothed
    ops = [p for p in PRIMITIVES if p != "max_pool_3x3"]
    module, opt, (x_w, y_w, x_a, y_a), exact = _problem(hvp, FD_CASES[case]["network"], primitives=ops, smooth=True)
    scale = max(e.abs().max().item() for e in exact)

    def error(eps: float) -> float:
        module.hparams.unrolled_eps = eps
        torch.manual_seed(123)
        module._second_order_arch_grads(x_w, y_w, x_a, y_a, opt)
        return _max_error(module, exact)

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
    _assert_hessian_term_matters(module, x_a, y_a, exact)
