"""darts_lite.measure: the FLOP convention against hand counts, training mode and random streams left alone, and
the latency timer's warm-up, repeats and median on a fake clock (no real timing in a test)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from darts_lite import measure
from darts_lite.measure import count_flops, counted_forward, latency_ms, million_multiply_adds


def test_a_linear_layer_costs_two_flops_per_weight_and_its_bias_nothing():
    assert count_flops(nn.Linear(7, 3), (7,)) == 2 * 7 * 3
    assert count_flops(nn.Linear(7, 3, bias=False), (7,)) == 2 * 7 * 3
    assert million_multiply_adds(count_flops(nn.Linear(7, 3), (7,))) == 7 * 3 / 1e6


@pytest.mark.parametrize("stride, groups", [(1, 1), (2, 1), (1, 4)])
def test_a_convolution_costs_two_flops_per_multiply_add(stride, groups):
    conv = nn.Conv2d(4, 8, 3, stride=stride, padding=1, groups=groups)
    side = 10 // stride
    multiply_adds = 8 * (4 // groups) * 3 * 3 * side * side  # per output pixel: one k x k x C_in/groups dot product
    assert count_flops(conv, (4, 10, 10)) == 2 * multiply_adds


def test_only_convolutions_and_matrix_products_count_and_the_count_is_per_image():
    conv, fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 5)
    net = nn.Sequential(conv, nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)
    flops = 2 * (6 * 3 * 9 * 8 * 8 + 6 * 5)
    assert count_flops(net, (3, 8, 8)) == flops
    assert count_flops(net, (3, 8, 8), images=3) == flops
    assert million_multiply_adds(3 * flops, images=3) == million_multiply_adds(flops) == flops / 2e6


def test_batchnorms_without_running_statistics_need_two_images():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, affine=False, track_running_stats=False))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        count_flops(net, (3, 1, 1))
    assert count_flops(net, (3, 1, 1), images=2) == 2 * 3 * 4


@pytest.mark.parametrize("training", [True, False])
def test_counting_runs_in_eval_mode_without_gradients_and_restores_the_mode(training):
    seen = []

    class Probe(nn.Linear):
        def forward(self, x):
            seen.append((self.training, torch.is_grad_enabled()))
            return super().forward(x)

    probe = Probe(4, 2).train(training)
    flops, out = counted_forward(probe, torch.ones(3, 4))
    assert seen == [(False, False)] and probe.training is training
    assert flops == 2 * 3 * 4 * 2 and out.shape == (3, 2) and not out.requires_grad

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("broken")

    broken = Broken().train(training)
    with pytest.raises(RuntimeError, match="broken"):
        count_flops(broken, (4,))
    assert broken.training is training


def test_counted_forward_calls_what_it_is_given():
    net = nn.Linear(4, 2)
    called = []
    net.register_forward_pre_hook(lambda module, args: called.append("hook"))
    counted_forward(net, torch.ones(1, 4), forward=net.forward)  # forward itself: no hooks, as a compiled net's
    assert called == []
    counted_forward(net, torch.ones(1, 4))
    assert called == ["hook"]


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Timed(nn.Module):
    """Each call moves the fake clock on by its next duration and records how it was called."""

    def __init__(self, clock, durations):
        super().__init__()
        self.clock, self.durations, self.calls = clock, list(durations), []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled(), x.clone()))
        self.clock.now += self.durations[len(self.calls) - 1]
        return x


def test_latency_is_the_median_of_the_timed_runs_after_the_warm_up(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(measure, "time", SimpleNamespace(perf_counter=clock))
    # the warm-up runs are slow (first-call costs) and must not count; durations in seconds, exact in binary
    module = _Timed(clock, [8.0, 8.0, 0.5, 0.125, 0.25, 4.0, 0.375]).train()
    rng_before = torch.get_rng_state()
    assert latency_ms(module, (1, 3, 4, 4), repeats=5, warmup=2) == 375.0
    assert len(module.calls) == 7 and all(not training and not grad for training, grad, _ in module.calls)
    assert module.training  # restored
    assert all(torch.equal(x, module.calls[0][2]) and x.shape == (1, 3, 4, 4) for _, _, x in module.calls)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the input comes from a private generator


def test_latency_on_a_real_clock_is_positive():
    assert latency_ms(nn.Conv2d(3, 8, 3), (2, 3, 16, 16), repeats=3, warmup=1) > 0
