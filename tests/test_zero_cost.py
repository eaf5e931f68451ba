"""darts_lite.zero_cost: each proxy against an independent computation on a tiny network (closed forms, loops over
examples, finite differences), and every proxy on both spaces' evaluation networks leaving the network exactly as
it was."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from darts_lite.errors import ConfigError
from darts_lite.measure import count_flops
from darts_lite.zero_cost import PROXIES, score, score_all, synflow_per_layer

ALL = ["synflow", "nwot", "jacob_cov", "snip", "grasp", "fisher", "grad_norm", "zen", "params", "flops"]
NB201_BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def _conv_net(bias: bool = True, bn: bool = False, inplace: bool = False, seed: int = 0) -> nn.Sequential:
    """conv(2->3) [BN] ReLU, flatten, linear(48->3) on 2x4x4 inputs."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(2, 3, 3, padding=1, bias=bias)]
    if bn:
        layers.append(nn.BatchNorm2d(3))
    layers += [nn.ReLU(inplace=inplace), nn.Flatten(), nn.Linear(48, 3, bias=bias)]
    return nn.Sequential(*layers)


def _batch(n: int = 6, shape=(2, 4, 4), classes: int = 3, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


# ---- synflow ----------------------------------------------------------------------------------------------------
def test_synflow_is_conserved_layer_by_layer_and_sums_them():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(),
                        nn.Conv2d(4, 5, 3, stride=2, padding=1, bias=False), nn.ReLU(),
                        nn.Flatten(), nn.Linear(5 * 3 * 3, 2, bias=False))
    x = torch.randn(4, 3, 6, 6)
    # R written out: the |weights| network on one all-ones image in float64
    w = [m.weight.detach().double().abs() for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    h = F.relu(F.conv2d(torch.ones(1, 3, 6, 6, dtype=torch.float64), w[0], padding=1))
    h = F.relu(F.conv2d(h, w[1], stride=2, padding=1))
    R = float(F.linear(h.flatten(1), w[2]).sum())
    got_R, layers = synflow_per_layer(net, x)
    assert got_R == pytest.approx(R, rel=1e-12)
    assert list(layers) == ["0", "2", "5"]
    for value in layers.values():
        assert value == pytest.approx(R, rel=1e-10)
    assert score("synflow", net, x, None) == pytest.approx(3 * R, rel=1e-10)


def test_synflow_of_a_two_layer_linear_network_is_twice_its_closed_form_flow():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4, bias=False), nn.ReLU(), nn.Linear(4, 3, bias=False))
    a1, a2 = (np.abs(m.weight.detach().double().numpy()) for m in (net[0], net[2]))
    # R = 1^T |W2| |W1| 1; sum |W1 * dR/dW1| = sum_ij |W1|_ij (1^T |W2|)_i = R, and likewise for W2
    R = np.ones(3) @ a2 @ a1 @ np.ones(5)
    per_weight_1 = a1 * (np.ones(3) @ a2)[:, None]
    per_weight_2 = a2 * (a1 @ np.ones(5))[None, :]
    assert per_weight_1.sum() == pytest.approx(R) and per_weight_2.sum() == pytest.approx(R)
    assert score("synflow", net, torch.randn(7, 5)) == pytest.approx(2 * R, rel=1e-12)


def test_synflow_bypasses_batchnorm():
    with_bn = _conv_net(bn=True)
    bn = with_bn[1]
    with torch.no_grad():
        bn.weight.uniform_(-2, 2), bn.bias.uniform_(-1, 1), bn.running_var.uniform_(0.1, 5)
    without = nn.Sequential(*[m for m in with_bn if not isinstance(m, _BatchNorm)])
    x, _ = _batch()
    assert score("synflow", with_bn, x) == pytest.approx(score("synflow", without, x), rel=1e-12)


# ---- nwot ---------------------------------------------------------------------------------------------------------
def test_nwot_is_the_log_determinant_of_the_hamming_kernel_written_out():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 2))
    x = torch.randn(6, 4)
    W1, b1, W2, b2 = (t.detach().double().numpy() for t in (net[0].weight, net[0].bias, net[2].weight, net[2].bias))
    h1 = np.maximum(x.double().numpy() @ W1.T + b1, 0)
    h2 = np.maximum(h1 @ W2.T + b2, 0)
    codes = [h1 > 0, h2 > 0]
    K = np.zeros((6, 6))
    for i in range(6):
        for j in range(6):
            for c in codes:
                for unit in range(c.shape[1]):
                    K[i, j] += c[i, unit] == c[j, unit]  # units where both are on or both are off
    sign, logdet = np.linalg.slogdet(K)
    assert sign != 0
    assert score("nwot", net, x) == pytest.approx(logdet, rel=1e-12)


# ---- jacob_cov ----------------------------------------------------------------------------------------------------
def test_jacob_cov_from_jacobians_taken_one_example_at_a_time():
    net = _conv_net()
    x, _ = _batch(n=5)
    rows = []
    for i in range(5):
        xi = x[i:i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xi).sum(), xi)
        rows.append(g.flatten().double().numpy())
    eig = np.linalg.eigvals(np.corrcoef(np.stack(rows))).real
    k = 1e-5
    expected = -np.sum(np.log(eig + k) + 1 / (eig + k))
    assert score("jacob_cov", net, x) == pytest.approx(expected, rel=1e-6)


def test_jacob_cov_of_a_network_that_ignores_its_input_is_nan_and_needs_two_examples():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x * 0.0)

    assert math.isnan(score("jacob_cov", Constant(), torch.randn(4, 3)))
    with pytest.raises(ValueError, match="at least 2 examples"):
        score("jacob_cov", _conv_net(), _batch(n=1)[0])


# ---- snip, grad_norm, fisher --------------------------------------------------------------------------------------
def test_snip_grad_norm_and_fisher_of_a_linear_classifier_in_closed_form():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3).double()
    x, y = _batch(n=8, shape=(5,), dtype=torch.float64)
    W, b, X = lin.weight.detach().numpy(), lin.bias.detach().numpy(), x.numpy()
    logits = X @ W.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    G = (p - np.eye(3)[y.numpy()]) / 8  # dL/dlogits of the mean cross-entropy
    dW = G.T @ X
    assert score("snip", lin, x, y) == pytest.approx(np.abs(W * dW).sum(), rel=1e-10)
    assert score("grad_norm", lin, x, y) == pytest.approx(np.sqrt((dW ** 2).sum()), rel=1e-10)
    fisher = (0.5 * ((logits * G) ** 2).mean(0)).sum()  # the activation of a linear layer is its output
    assert score("fisher", lin, x, y) == pytest.approx(fisher, rel=1e-10)


def test_snip_grad_norm_and_fisher_of_a_conv_net_against_a_functional_forward():
    net = _conv_net(inplace=True)  # fisher must read the conv output before the in-place ReLU overwrites it
    x, y = _batch()
    W1, b1, W2, b2 = (t.detach().clone().requires_grad_(True) for t in (net[0].weight, net[0].bias, net[3].weight,
                                                                          net[3].bias))
    a1 = F.conv2d(x, W1, b1, padding=1)
    a2 = F.linear(F.relu(a1).flatten(1), W2, b2)
    a1.retain_grad(), a2.retain_grad()
    F.cross_entropy(a2, y).backward()
    snip = (W1 * W1.grad).abs().sum() + (W2 * W2.grad).abs().sum()
    grad_norm = W1.grad.norm() + W2.grad.norm()
    fisher = (0.5 * (a1 * a1.grad).sum((2, 3)).pow(2).mean(0)).sum() + (0.5 * (a2 * a2.grad).pow(2).mean(0)).sum()
    for name, expected in (("snip", snip), ("grad_norm", grad_norm), ("fisher", fisher)):
        assert score(name, net, x, y) == pytest.approx(expected.item(), rel=1e-5), name


def test_loss_proxies_run_batchnorm_on_batch_statistics_as_a_network_in_training_mode():
    net = _conv_net(bn=True)
    with torch.no_grad():
        net[1].running_mean.uniform_(-3, 3), net[1].running_var.uniform_(0.01, 9)
    net.eval()
    x, y = _batch()
    reference = copy.deepcopy(net).train()
    F.cross_entropy(reference(x), y).backward()
    layers = [m for m in reference if isinstance(m, (nn.Conv2d, nn.Linear))]
    snip = sum((m.weight * m.weight.grad).abs().sum().item() for m in layers)
    assert score("snip", net, x, y) == pytest.approx(snip, rel=1e-5)
    custom = score("snip", net, x, y, loss_fn=lambda logits, labels: 2 * F.cross_entropy(logits, labels))
    assert custom == pytest.approx(2 * snip, rel=1e-5)


# ---- grasp --------------------------------------------------------------------------------------------------------
def test_grasp_against_a_hessian_vector_product_by_finite_differences():
    net = _conv_net(bn=True).double()
    x, y = _batch(dtype=torch.float64)
    train = copy.deepcopy(net).train()
    names = ["0.weight", "4.weight"]  # conv and linear weights; biases and BN parameters stay fixed
    theta = [dict(train.named_parameters())[n].detach().clone() for n in names]

    def gradient(weights):
        weights = [w.clone().requires_grad_(True) for w in weights]
        logits = torch.func.functional_call(train, dict(zip(names, weights)), (x,))
        return torch.autograd.grad(F.cross_entropy(logits, y), weights)

    g = gradient(theta)
    eps = 1e-5
    plus = gradient([t + eps * gi for t, gi in zip(theta, g)])
    minus = gradient([t - eps * gi for t, gi in zip(theta, g)])
    hg = [(p - m) / (2 * eps) for p, m in zip(plus, minus)]
    expected = -sum(float((t * h).sum()) for t, h in zip(theta, hg))
    assert score("grasp", net, x, y) == pytest.approx(expected, rel=1e-5)


# ---- zen ----------------------------------------------------------------------------------------------------------
def _zen_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def test_zen_is_deterministic_per_seed_and_independent_of_weights_running_statistics_and_data():
    net, (x, y) = _zen_net(), _batch(shape=(3, 8, 8))
    first = score("zen", net, x, y)
    assert score("zen", net, x, y) == first and score("zen", net, x, y, seed=0) == first
    assert score("zen", net, x, y, seed=1) != first
    other = _zen_net(seed=5)  # other weights and running statistics: Zen-NAS re-initialises both
    with torch.no_grad():
        other[1].running_var.uniform_(0.1, 9)
    assert score("zen", other, x, y) == pytest.approx(first, rel=1e-6)
    assert score("zen", net, 3 * x + 1, y) == pytest.approx(first, rel=1e-6)  # Gaussian inputs of x's shape


def test_zen_is_the_log_feature_difference_plus_the_batchnorm_scales_written_out():
    net, (x, _) = _zen_net(), _batch(shape=(3, 8, 8))
    seen: dict[str, list[torch.Tensor]] = {"bn1": [], "bn4": [], "pool": [], "conv": []}

    def recorder(key):
        def hook(module, inputs):
            seen[key].append(module.weight.detach().clone() if key == "conv" else inputs[0].detach().clone())
        return hook

    # hooks are copied with the network: these record what the proxy's copy sees
    for key, module in (("conv", net[0]), ("bn1", net[1]), ("bn4", net[4]), ("pool", net[6])):
        module.register_forward_pre_hook(recorder(key))
    value = score("zen", net, x)
    assert all(len(v) == 2 for v in seen.values())
    # the copy's conv weights are redrawn from N(0, 1): not the original's (which are of scale 1/sqrt(27))
    drawn = seen["conv"][0]
    assert not torch.equal(drawn, net[0].weight.detach()) and 0.7 < float(drawn.std()) < 1.3
    f1, f2 = seen["pool"]
    delta = (f1 - f2).abs().flatten(1).sum(1).double().mean()
    bn_term = 0.0
    for first, second in (seen["bn1"], seen["bn4"]):
        # running_var from its reset value 1 after two training-mode passes, momentum 0.1 (unbiased batch variance)
        v1 = first.transpose(0, 1).flatten(1).double().var(1, unbiased=True)
        v2 = second.transpose(0, 1).flatten(1).double().var(1, unbiased=True)
        running = 0.9 * (0.9 * 1.0 + 0.1 * v1) + 0.1 * v2
        bn_term += math.log(math.sqrt(float(running.mean())))
    assert value == pytest.approx(math.log(float(delta)) + bn_term, rel=1e-6)
    # the second input is the first plus 1% noise
    x1, x2 = seen["bn1"][0], seen["bn1"][1]
    assert x1.shape == (6, 4, 8, 8) and not torch.equal(x1, x2)


# ---- params and flops ---------------------------------------------------------------------------------------------
def test_params_counts_numel_and_flops_is_count_flops_of_one_example():
    net, (x, y) = _zen_net(), _batch(shape=(3, 8, 8))
    assert score("params", net, x, y) == sum(p.numel() for p in net.parameters())
    assert score("flops", net, x, y) == count_flops(net, (3, 8, 8))
    assert score("flops", copy.deepcopy(net).double(), x, y) == count_flops(net, (3, 8, 8))
    darts = _darts_net()
    assert score("params", darts, x, y) == darts.num_parameters() < sum(p.numel() for p in darts.parameters())


# ---- both spaces' evaluation networks -----------------------------------------------------------------------------
def _darts_net():
    from darts_lite.spaces.darts.eval import EvalNetwork

    torch.manual_seed(0)
    # the auxiliary head would fail on an 8x8 input in training mode: the proxies must not run it
    return EvalNetwork("DARTS_V2", C=4, num_classes=3, layers=3, auxiliary=True, drop_path_prob=0.3)


def _nb201_net():
    from darts_lite.spaces.nb201.eval import EvalNetwork

    torch.manual_seed(0)
    return EvalNetwork(NB201_BEST, C=4, N=1, num_classes=3)


def _used(net: nn.Module) -> nn.Module:
    """Running statistics away from their initial values, some gradients set, some parameters frozen, training mode
    with some submodules in eval mode: everything a proxy must leave as it found it."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
    net.train()
    for k, p in enumerate(net.parameters()):
        if k % 3 == 0:
            p.grad = torch.randn(p.shape, generator=g)
        if k % 7 == 1:
            p.requires_grad_(False)
    for k, m in enumerate(net.modules()):
        if k % 5 == 2:
            m.eval()
    return net


def _state(net: nn.Module) -> dict:
    return {"tensors": {n: t.detach().clone() for n, t in [*net.named_parameters(), *net.named_buffers()]},
            "training": [m.training for m in net.modules()],
            "requires_grad": [p.requires_grad for p in net.parameters()],
            "grads": [(p.grad, None if p.grad is None else p.grad.clone()) for p in net.parameters()],
            "dtypes": [(t.dtype, t.device) for t in net.state_dict().values()]}


def _assert_unchanged(net: nn.Module, before: dict, proxy: str) -> None:
    after = _state(net)
    assert before["tensors"].keys() == after["tensors"].keys(), proxy
    for name, t in before["tensors"].items():
        assert torch.equal(t, after["tensors"][name]), (proxy, name)
    assert before["training"] == after["training"], proxy
    assert before["requires_grad"] == after["requires_grad"], proxy
    assert before["dtypes"] == after["dtypes"], proxy
    for p, (grad, value) in zip(net.parameters(), before["grads"]):
        assert p.grad is grad, proxy  # None stays None, and a gradient is the very tensor it was
        if grad is not None:
            assert torch.equal(p.grad, value), proxy


@pytest.mark.parametrize("make", [_darts_net, _nb201_net], ids=["darts", "nb201"])
def test_every_proxy_gives_a_finite_float_and_leaves_the_evaluation_network_as_it_was(make):
    net = _used(make())
    x, y = _batch(n=6, shape=(3, 8, 8))
    before, rng = _state(net), torch.get_rng_state()
    values = score_all(ALL, net, x, y)
    assert list(values) == ALL
    for name, value in values.items():
        assert isinstance(value, float) and math.isfinite(value), (name, value)
    _assert_unchanged(net, before, "score_all")
    assert torch.equal(torch.get_rng_state(), rng)  # nothing drew from torch's global stream
    for name in ALL:  # each proxy alone, and twice: the same number (drop path and dropout are off)
        assert score(name, net, x, y) == values[name], name
        _assert_unchanged(net, before, name)


def test_a_caller_without_gradients_gets_the_same_scores():
    net, (x, y) = _zen_net(), _batch(shape=(3, 8, 8))
    expected = score_all(ALL, net, x, y)
    with torch.no_grad():
        assert score_all(ALL, net, x, y) == expected


def test_a_network_returning_logits_and_auxiliary_logits_is_scored_on_the_logits():
    class WithAux(nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            logits = self.body(x)
            return logits, 5 * logits + 1

    body, (x, y) = _zen_net(), _batch(shape=(3, 8, 8))
    wrapped = WithAux(copy.deepcopy(body))
    for name in ALL:
        assert score(name, wrapped, x, y) == pytest.approx(score(name, body, x, y), rel=1e-9), name


# ---- errors -------------------------------------------------------------------------------------------------------
def test_every_proxy_is_registered_with_a_summary():
    assert list(PROXIES) == ALL
    assert all(PROXIES.summary(name) for name in PROXIES)


def test_an_unknown_name_lists_the_proxies():
    net, (x, y) = _conv_net(), _batch()
    with pytest.raises(ConfigError, match="zero-cost proxy 'synflw': unknown; zero-cost proxies: " + ", ".join(ALL)):
        score("synflw", net, x, y)
    with pytest.raises(ConfigError, match="'nope': unknown; zero-cost proxies: synflow, nwot"):
        score_all(["snip", "nope"], net, x, y)


def test_what_cannot_be_scored_says_why():
    net, (x, y) = _conv_net(), _batch()
    with pytest.raises(ValueError, match="the batch is empty"):
        score("snip", net, x[:0], y[:0])
    with pytest.raises(ValueError, match="nwot reads the binary codes .* has none"):
        score("nwot", nn.Sequential(nn.Flatten(), nn.Linear(32, 3)), x, y)
    with pytest.raises(ValueError, match="snip takes a loss: give the batch's labels y"):
        score("snip", net, x, None)
    with pytest.raises(ValueError, match="one label per example"):
        score("grasp", net, x, y[:2])
