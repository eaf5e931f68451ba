"""darts_lite.spaces.native: the compiled depthwise weight gradient equals the convolution's backward (to rounding,
in any layout, channel count, size and thread count), is what a depthwise conv's backward returns, and falls back
to PyTorch's where it cannot be built; the compiled channels-last BatchNorm and its input gradient equal PyTorch's
bit for bit, and serve a supernet's fused edges."""

import logging
import os
import shutil
import stat

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from darts_lite.spaces import native
from darts_lite.spaces.darts.ops import DepthwiseConv2d

aten = torch.ops.aten
# the kernel is built with the machine's C compiler (CI's has one); without it only the fallback can be tested
needs_compiler = pytest.mark.skipif(shutil.which(native.compiler()[0]) is None,
                                    reason=f"no C compiler ({native.compiler()[0]}) to build the kernel with")


def _reference(grad, x, kernel, padding, dilation):
    c = x.shape[1]
    weight = torch.empty(c, 1, kernel, kernel, dtype=x.dtype)
    return aten.convolution_backward(grad, x, weight, None, [1, 1], [padding] * 2, [dilation] * 2, False, [0, 0], c,
                                     [False, True, False])[1]


def _pair(n, c, h, w, dtype=torch.float64, channels_last=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, grad = (torch.randn(n, c, h, w, dtype=dtype, generator=g) for _ in range(2))
    if channels_last:
        x, grad = x.contiguous(memory_format=torch.channels_last), grad.contiguous(memory_format=torch.channels_last)
    return x, grad


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache of this test's own, and the library looked up again before and after it."""
    monkeypatch.setenv("DARTS_LITE_CACHE", str(tmp_path / "cache"))
    native.reset()
    yield tmp_path / "cache" / "native"
    native.reset()


@needs_compiler
@pytest.mark.parametrize("kernel,dilation", [(5, 1), (3, 2), (5, 2), (7, 1)])
@pytest.mark.parametrize("channels", [1, 3, 4, 16, 36, 80])
def test_equals_the_convolution_backward_in_float64(kernel, dilation, channels):
    padding = dilation * (kernel - 1) // 2
    x, grad = _pair(3, channels, 9, 11)
    got = native.depthwise_weight_gradient(grad, x, kernel, padding, dilation)
    assert got is not None and native.status().startswith("ready")
    assert got.shape == (channels, 1, kernel, kernel) and got.dtype == torch.float64
    torch.testing.assert_close(got, _reference(grad, x, kernel, padding, dilation), rtol=1e-12, atol=1e-12)


@needs_compiler
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 4), c=st.integers(1, 70), h=st.integers(1, 12), w=st.integers(1, 12),
       kernel=st.sampled_from([1, 3, 5, 7]), dilation=st.integers(1, 3), channels_last=st.booleans(),
       threads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_any_size_layout_and_thread_count(n, c, h, w, kernel, dilation, channels_last, threads, seed):
    # sizes smaller than the padding (taps that read nothing), channel counts that divide no vector, NCHW input
    padding = dilation * (kernel - 1) // 2
    x, grad = _pair(n, c, h, w, channels_last=channels_last, seed=seed)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = native.depthwise_weight_gradient(grad, x, kernel, padding, dilation)
    finally:
        torch.set_num_threads(before)
    if kernel == 3 and dilation == 1:
        assert got is None  # oneDNN's depthwise kernel serves it
        return
    torch.testing.assert_close(got, _reference(grad, x, kernel, padding, dilation), rtol=1e-12, atol=1e-12)


@needs_compiler
@pytest.mark.parametrize("channels", [4, 16, 36])
def test_float32_to_rounding_and_the_same_bits_twice(channels):
    x, grad = _pair(8, channels, 16, 16, dtype=torch.float32)
    got = native.depthwise_weight_gradient(grad, x, 5, 4, 2)
    exact = _reference(grad.double(), x.double(), 5, 4, 2)
    torch.testing.assert_close(got.double(), exact, rtol=1e-5, atol=1e-4)
    assert torch.equal(got, native.depthwise_weight_gradient(grad, x, 5, 4, 2))


@needs_compiler
def test_a_sliced_input_reads_its_own_values():
    # a partial-channel slice (PC-DARTS) of a channels-last tensor is not contiguous: it is copied first
    x, grad = _pair(2, 8, 10, 10)
    x = x[:, 2:6]
    assert not x.is_contiguous(memory_format=torch.channels_last)
    got = native.depthwise_weight_gradient(grad[:, :4], x, 5, 2, 1)
    torch.testing.assert_close(got, _reference(grad[:, :4].contiguous(), x.contiguous(), 5, 2, 1), rtol=1e-12,
                               atol=1e-12)


def test_a_plain_tensor_is_told_by_its_dispatch_keys_each_key_set_read_once():
    x = torch.randn(2, 3)
    seen = []
    torch.vmap(lambda row: seen.append(native._plain(row)) or row)(x)
    cases = [(x, True), (x.clone().requires_grad_(), True), (x._neg_view(), False), (x.to("meta"), False),
             (nn.Parameter(x), False), (x.to_sparse(), False)]
    for _ in range(2):  # the second time from the key sets already read
        assert [native._plain(t) for t in (t for t, _ in cases)] == [want for _, want in cases]
    assert seen == [False]  # torch.func's wrapper
    assert all(isinstance(bits, int) for bits in native._plain_key_sets)


@needs_compiler
def test_what_it_does_not_serve():
    x, grad = _pair(2, 4, 6, 6)
    assert native.depthwise_weight_gradient(grad, x, 3, 1, 1) is None  # undilated 3x3: oneDNN's
    assert native.depthwise_weight_gradient(grad.half(), x.half(), 5, 2, 1) is None
    assert native.depthwise_weight_gradient(grad, x.float(), 5, 2, 1) is None  # mixed dtypes
    assert native.depthwise_weight_gradient(grad[:, :, :5], x, 5, 2, 1) is None  # another size
    assert native.depthwise_weight_gradient(grad, x, 5, 1, 1) is None  # padding that does not keep the size
    assert native.depthwise_weight_gradient(grad[:0], x[:0], 5, 2, 1) is None  # nothing to sum
    with torch.enable_grad():  # a graph through it is wanted: PyTorch's ops build one
        assert native.depthwise_weight_gradient(grad.clone().requires_grad_(), x, 5, 2, 1) is None
    # torch.func's wrappers (a Hessian's vmap over backward passes) and tensor subclasses: PyTorch's
    seen = []
    torch.vmap(lambda g: seen.append(native.depthwise_weight_gradient(g, x, 5, 2, 1)) or g)(grad[None])
    assert seen == [None]
    conv = DepthwiseConv2d(4, 4, 5, 1, 2, groups=4, bias=False).double()
    out = conv(x.requires_grad_())
    rows = torch.autograd.grad(out, conv.weight, torch.stack([grad, 2 * grad]), is_grads_batched=True)[0]
    torch.testing.assert_close(rows[1], 2 * _reference(grad, x.detach(), 5, 2, 1), rtol=1e-12, atol=1e-12)
    assert native.depthwise_weight_gradient(nn.Parameter(grad, requires_grad=False), x, 5, 2, 1) is None


@needs_compiler
@pytest.mark.parametrize("kernel,dilation", [(5, 1), (3, 2)])
def test_a_depthwise_conv_backward_returns_it(monkeypatch, kernel, dilation):
    padding = dilation * (kernel - 1) // 2
    conv = DepthwiseConv2d(6, 6, kernel, 1, padding, dilation=dilation, groups=6, bias=False)
    x, grad = _pair(4, 6, 12, 12, dtype=torch.float32)
    conv(x.requires_grad_()).backward(grad)
    assert torch.equal(conv.weight.grad, native.depthwise_weight_gradient(grad, x.detach(), kernel, padding, dilation))
    # switched off: the convolution's backward, bit for bit as nn.Conv2d computes it
    monkeypatch.setenv("DARTS_LITE_NATIVE", "0")
    assert native.status() == "disabled (DARTS_LITE_NATIVE=0)"
    conv.weight.grad = None
    conv(x).backward(grad)
    plain = nn.Conv2d(6, 6, kernel, 1, padding, dilation=dilation, groups=6, bias=False)
    plain.load_state_dict(conv.state_dict())
    plain(x).backward(grad)
    assert torch.equal(conv.weight.grad, plain.weight.grad)


@needs_compiler
def test_built_once_without_openmp_then_read_from_the_cache(own_cache, tmp_path, monkeypatch):
    # a compiler without OpenMP (Apple's clang): the second command, one thread
    compiler = tmp_path / "cc-without-openmp"
    compiler.write_text(f'#!/bin/sh\ncase "$*" in *-fopenmp*) echo "no OpenMP here" >&2; exit 1;; esac\n'
                        f'exec {" ".join(native.compiler())} "$@"\n')
    compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(compiler))
    x, grad = _pair(3, 16, 9, 9)
    got = native.depthwise_weight_gradient(grad, x, 5, 4, 2)
    built = list(own_cache.glob("kernels-*"))
    assert len(built) == 1 and native.status() == f"ready: {built[0]}"
    assert not list(own_cache.glob(".building-*"))  # no temporary file left
    torch.testing.assert_close(got, _reference(grad, x, 5, 4, 2), rtol=1e-12, atol=1e-12)

    native.reset()

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(native.subprocess, "run", no_compiler)
    assert torch.equal(native.depthwise_weight_gradient(grad, x, 5, 4, 2), got)
    # one thread doing every thread's rows in turn: PyTorch's BatchNorm values still
    if torch.backends.cpu.get_cpu_capability() in native._BATCH_NORM_BUILDS:
        _assert_batch_norm_is_pytorchs((6, 12, 7, 5), threads=2, seed=3)


@needs_compiler
def test_a_cached_file_that_does_not_load_is_built_again(own_cache):
    # a damaged file, or one built on another system, where this machine's library belongs
    path = native._library_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a library")
    x, grad = _pair(2, 4, 6, 6)
    got = native.depthwise_weight_gradient(grad, x, 5, 2, 1)
    assert native.status() == f"ready: {path}" and path.read_bytes()[:4] != b"not "
    torch.testing.assert_close(got, _reference(grad, x, 5, 2, 1), rtol=1e-12, atol=1e-12)


def test_without_a_compiler_pytorch_computes_it_and_the_user_is_told_once(own_cache, monkeypatch, caplog):
    monkeypatch.setenv("CC", os.path.join(str(own_cache), "no-such-compiler"))
    x, grad = _pair(2, 4, 8, 8, dtype=torch.float32)
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.depthwise_weight_gradient(grad, x, 5, 2, 1) is None
        assert native.depthwise_weight_gradient(grad, x, 5, 2, 1) is None  # not tried again
    assert native.status().startswith("failed: ") and "no-such-compiler" in native.status()
    warnings = [r for r in caplog.records if "could not build" in r.getMessage()]
    assert len(warnings) == 1 and "DARTS_LITE_NATIVE=0" in warnings[0].getMessage()
    # the backward pass takes the convolution's
    conv = DepthwiseConv2d(4, 4, 5, 1, 2, groups=4, bias=False)
    conv(x).backward(grad)
    torch.testing.assert_close(conv.weight.grad, _reference(grad, x, 5, 2, 1), rtol=0, atol=0)


def test_the_source_ships_with_the_package():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(__file__), "..", "setup.cfg"))
    assert native.SOURCE.name in cfg["options.package_data"]["darts_lite.spaces"]
    assert native.SOURCE.exists()


# ---- the channels-last BatchNorm ---------------------------------------------------------------------------------------
needs_fma_build = pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in native._BATCH_NORM_BUILDS,
                                     reason="PyTorch's CPU kernels here are not its AVX2 or AVX-512 build")


def _assert_batch_norm_is_pytorchs(shape, threads, seed, momentum=0.1, eps=1e-5, tracked=True, affine=False):
    """The kernel's output, statistics, running statistics and input gradient against PyTorch's, bit for bit
    (``affine``: with a weight and a bias, and their gradients too)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(seed)
        x = (torch.randn(shape, generator=g) * (1 + seed) + seed).contiguous(memory_format=torch.channels_last)
        grad = torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last)
        c = shape[1]
        running = (torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5) if tracked else (None, None)
        mine = tuple(None if t is None else t.clone() for t in running)
        y, mean, invstd, reserve, impl = aten._batch_norm_impl_index(x, None, None, *running, True, momentum, eps, False)
        expected = aten._batch_norm_impl_index_backward(impl, x, grad, None, *running, mean, invstd, True, eps,
                                                        [True, False, False], reserve)[0]
        got = native.batch_norm(x, *mine, momentum, eps)
        assert got is not None
        for name, a, b in zip(("output", "mean", "invstd", "running mean", "running var"), (y, mean, invstd, *running),
                              (*got, *mine)):
            assert (a is None and b is None) or torch.equal(a, b), (name, shape, threads)
        got_grad = native.batch_norm_input_gradient(grad, x, mean, invstd)
        assert got_grad is not None and torch.equal(got_grad, expected), (shape, threads)
        assert _channels_last(got[0]) and _channels_last(got_grad)
        if affine:  # PyTorch's folding of the weight and bias into the transform, and the three gradients
            weight, bias = torch.randn(c, generator=g) * 2, torch.randn(c, generator=g)
            running = tuple(None if t is None else t.clone() for t in mine)
            y = aten.native_batch_norm(x, weight, bias, *running, True, momentum, eps)[0]
            got = native.batch_norm(x, *mine, momentum, eps, weight, bias)
            assert got is not None and torch.equal(got[0], y), ("affine output", shape, threads)
            assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(running, mine))
            expected = aten.native_batch_norm_backward(grad, x, weight, None, None, mean, invstd, True, eps,
                                                       [True, True, True])
            got = native.batch_norm_gradients(grad, x, mean, invstd, weight, True, True)
            for name, a, b in zip(("input", "weight", "bias"), expected, got):
                assert torch.equal(a, b), (f"affine {name} gradient", shape, threads)
            only_affine = native.batch_norm_gradients(grad, x, mean, invstd, weight, False, True)
            assert only_affine[0] is None and torch.equal(only_affine[1], expected[1])
    finally:
        torch.set_num_threads(previous)


def _channels_last(t):
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


@needs_compiler
@needs_fma_build
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 9), c=st.integers(2, 70), h=st.integers(1, 12), w=st.integers(2, 12), threads=st.integers(1, 3),
       seed=st.integers(0, 3), momentum=st.sampled_from([0.1, 0.01, 0.5]), tracked=st.booleans(),
       affine=st.booleans())
def test_the_batch_norm_is_pytorchs_bit_for_bit(n, c, h, w, threads, seed, momentum, tracked, affine):
    if n * h * w <= threads:  # PyTorch's kernel takes another path; the kernel does not serve it
        return
    _assert_batch_norm_is_pytorchs((n, c, h, w), threads, seed, momentum, tracked=tracked, affine=affine)


@needs_compiler
@needs_fma_build
@pytest.mark.parametrize("shape", [(64, 4, 32, 32), (64, 8, 16, 16), (64, 36, 8, 8), (16, 144, 4, 4),
                                   (8, 36, 32, 32), (8, 108, 32, 32)])
def test_the_batch_norm_of_the_networks_shapes(shape):
    _assert_batch_norm_is_pytorchs(shape, threads=2, seed=0, affine=True)


@needs_compiler
def test_the_batch_norm_under_pytorchs_avx2_build():
    """PyTorch picks its AVX2 kernels on a CPU without AVX-512 (ATEN_CPU_CAPABILITY=avx2 makes it here): the kernel
    computes their values too."""
    import subprocess
    import sys

    if not torch.backends.cpu.get_cpu_capability() == "AVX512":
        pytest.skip("this CPU cannot run PyTorch's AVX-512 build: its own build is tested above")
    code = ("import torch, test_native as t\nassert torch.backends.cpu.get_cpu_capability() == 'AVX2'\n"
            "for shape in [(8, 12, 5, 5), (4, 40, 3, 3), (64, 8, 16, 16), (5, 3, 3, 3)]:\n"
            "    t._assert_batch_norm_is_pytorchs(shape, threads=2, seed=1, affine=True)\nprint('same')")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    done = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__), env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("same"), done.stderr[-2000:]


@needs_compiler
def test_what_the_batch_norm_does_not_serve(monkeypatch):
    x, grad = _pair(4, 8, 6, 6, dtype=torch.float32)
    mean, invstd = torch.zeros(8), torch.ones(8)

    def served(x, grad=None):
        grad = x if grad is None else grad
        return (native.batch_norm(x, None, None, 0.1, 1e-5) is not None,
                native.batch_norm_input_gradient(grad, x, mean[:x.shape[1]], invstd[:x.shape[1]]) is not None)

    if torch.backends.cpu.get_cpu_capability() in native._BATCH_NORM_BUILDS:
        assert served(x) == (True, True)
    assert served(x.double()) == (False, False)
    assert served(x.contiguous()) == (False, False)  # NCHW: PyTorch's contiguous kernel
    assert served(x, grad.contiguous())[1] is False  # a gradient laid out otherwise
    one_channel = torch.randn(4, 1, 6, 6).contiguous(memory_format=torch.channels_last)  # both layouts at once
    assert served(one_channel) == (False, False)
    assert served(x[:1, :, :1, :1].contiguous(memory_format=torch.channels_last)) == (False, False)  # 1 pixel
    with torch.enable_grad():
        assert served(x.clone().requires_grad_())[0] is False  # a graph to build through it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert served(x) == (False, False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")  # PyTorch's build without FMA
    assert served(x) == (False, False)
    monkeypatch.undo()
    monkeypatch.setenv("DARTS_LITE_NATIVE", "0")
    assert served(x) == (False, False)


@needs_compiler
@needs_fma_build
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 9), c=st.integers(2, 40), h=st.integers(1, 9), w=st.integers(2, 9), threads=st.integers(1, 3),
       seed=st.integers(0, 3))
def test_a_gradient_times_the_normalised_input_is_the_recomputed_products(n, c, h, w, threads, seed):
    """``times_normalised``: grad * y for the BatchNorm output y, without writing y, equal bit for bit to the product
    with y recomputed (``lean._normalised``) and with the forward pass's own output."""
    from darts_lite.spaces import lean

    if n * h * w <= threads:
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(seed)
        x = (torch.randn(n, c, h, w, generator=g) * (1 + seed) - seed).contiguous(memory_format=torch.channels_last)
        grad = torch.randn(x.shape, generator=g).contiguous(memory_format=torch.channels_last)
        y, mean, invstd = aten._batch_norm_impl_index(x, None, None, None, None, True, 0.1, 1e-5, False)[:3]
        got = native.times_normalised(grad, x, mean, invstd)
        assert got is not None and _channels_last(got)
        assert _same_bits(got, grad * lean._normalised(x, mean, invstd, 1e-5, (None, None)))
        assert _same_bits(got, grad * y)
        assert torch.equal(got.sum(), (grad * y).sum())  # the same layout: the same order of the sum
        wider = torch.randn(n, c + 5, h, w, generator=g).contiguous(memory_format=torch.channels_last)
        part = wider[:, 2:c + 2]  # the channels' slice of a gradient of more channels (a partial edge's)
        got = native.times_normalised(part, x, mean, invstd)
        assert got is not None and _same_bits(got, part * y) and _channels_last(got)
    finally:
        torch.set_num_threads(previous)


@needs_compiler
def test_what_the_product_with_the_normalised_input_does_not_serve():
    x, grad = _pair(4, 8, 6, 6, dtype=torch.float32)
    mean, invstd = torch.zeros(8), torch.ones(8)
    if torch.backends.cpu.get_cpu_capability() in native._BATCH_NORM_BUILDS:
        assert native.times_normalised(grad, x, mean, invstd) is not None
    assert native.times_normalised(grad.contiguous(), x, mean, invstd) is None  # laid out otherwise
    assert native.times_normalised(grad[:, :, :3], x[:, :, :3].clone(), mean, invstd) is None  # rows of rows
    assert native.times_normalised(grad.double(), x.double(), mean.double(), invstd.double()) is None
    with torch.enable_grad():
        assert native.times_normalised(grad.clone().requires_grad_(), x, mean, invstd) is None


@needs_compiler
@needs_fma_build
def test_a_supernets_fused_edges_take_it_with_the_plain_supernets_values(monkeypatch):
    """PC-DARTS's quarter-channel ops (the shapes the kernel is fastest for), fused (recompute="cheap"), against the
    plain supernet's nn.BatchNorm2d (PyTorch's kernel): the same outputs, gradients and running statistics."""
    from conftest import seeded_step

    from darts_lite.spaces import lean
    from darts_lite.spaces.darts.search import SearchNetwork

    calls = {"forward": 0, "backward": 0, "product": 0}
    forward, backward, product = native.batch_norm, native.batch_norm_input_gradient, native.times_normalised

    def counted_forward(*args):
        out = forward(*args)
        calls["forward"] += out is not None
        return out

    def counted_backward(*args):
        out = backward(*args)
        calls["backward"] += out is not None
        return out

    def counted_product(*args):
        out = product(*args)
        calls["product"] += out is not None
        return out

    monkeypatch.setattr(lean.native, "batch_norm", counted_forward)
    monkeypatch.setattr(lean.native, "batch_norm_input_gradient", counted_backward)
    monkeypatch.setattr(lean.native, "times_normalised", counted_product)
    nets = []
    for recompute in ("none", "cheap"):
        torch.manual_seed(0)
        nets.append(SearchNetwork(C=8, layers=3, num_classes=4, steps=2, multiplier=2, partial_channels=4,
                                  edge_normalization=True, recompute=recompute).to(memory_format=torch.channels_last))
    plain, fused = nets
    x = torch.randn(8, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (8,))
    for seed in (1, 2):
        assert torch.equal(seeded_step(plain, x, y, seed), seeded_step(fused, x, y, seed))
    assert calls["forward"] > 0 and calls["backward"] > 0 and calls["product"] > 0  # (the alphas' gradients)
    for (name, a), b in zip(plain.named_parameters(), fused.parameters()):
        assert (a.grad is None) == (b.grad is None) and (a.grad is None or torch.equal(a.grad, b.grad)), name
    for (name, a), b in zip(plain.named_buffers(), fused.buffers()):
        assert torch.equal(a, b), name


# ---- channels-last max and average pooling ----------------------------------------------------------------------------
def _pool_case(n, c, h, w, seed, ties=False, nans=0):
    """A channels-last float32 input (with repeated values, or some NaNs) and an output gradient of its pooling."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    if ties:  # few distinct values: windows with several maxima (the first must win), and +0 beside -0
        x = (x * 2).round() / 2 * torch.where(torch.rand(x.shape, generator=g) < 0.5, -1.0, 1.0)
    flat = x.view(-1)
    flat[torch.randint(0, flat.numel(), (nans,), generator=g)] = float("nan")
    return x.contiguous(memory_format=torch.channels_last), g


def _same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.contiguous().view(torch.int32),
                                                                      b.contiguous().view(torch.int32))


def _assert_pooling_is_pytorchs(x, g, kind, kernel, stride, padding, ceil_mode, count_include_pad, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        window = ([kernel[0], kernel[1]], [stride[0], stride[1]], [padding[0], padding[1]])
        if kind == "max":
            y, indices = aten.max_pool2d_with_indices(x, *window, [1, 1], ceil_mode)
            grad = torch.randn(y.shape, generator=g).contiguous(memory_format=torch.channels_last)
            expected = aten.max_pool2d_with_indices_backward(grad, x, *window, [1, 1], ceil_mode, indices)
            got = native.max_pool2d(x, *window, [1, 1], ceil_mode)
            got_grad = native.max_pool2d_input_gradient(grad, x, *window, [1, 1], ceil_mode)
        else:
            y = aten.avg_pool2d(x, *window, ceil_mode, count_include_pad, None)
            grad = torch.randn(y.shape, generator=g).contiguous(memory_format=torch.channels_last)
            expected = aten.avg_pool2d_backward(grad, x, *window, ceil_mode, count_include_pad, None)
            got = native.avg_pool2d(x, *window, ceil_mode, count_include_pad)
            got_grad = native.avg_pool2d_input_gradient(grad, x, *window, ceil_mode, count_include_pad)
        # one channel or pixel is both layouts at once: not served (an output of one pixel is, from such an input)
        assert (got is not None) == _channels_last(x), native.status()
        assert (got_grad is not None) == (_channels_last(x) and _channels_last(grad)), native.status()
        if got is not None:
            assert _same_bits(got, y), (kind, x.shape, kernel, stride, padding, ceil_mode)
        if got_grad is not None:
            assert _same_bits(got_grad, expected) and _channels_last(got_grad), (kind, x.shape, kernel, stride, padding)
    finally:
        torch.set_num_threads(previous)


@needs_compiler
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 4), c=st.integers(1, 21), h=st.integers(1, 11), w=st.integers(1, 11),
       kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       pad=st.tuples(st.integers(0, 2), st.integers(0, 2)), ceil_mode=st.booleans(), count_include_pad=st.booleans(),
       kind=st.sampled_from(["max", "avg"]), threads=st.integers(1, 3), seed=st.integers(0, 9), ties=st.booleans(),
       nans=st.sampled_from([0, 0, 1, 5]))
def test_the_poolings_are_pytorchs_bit_for_bit(n, c, h, w, kernel, stride, pad, ceil_mode, count_include_pad, kind,
                                               threads, seed, ties, nans):
    """Any size, window, stride, padding (up to half the window, as PyTorch allows), either rounding of the output
    size, the padding counted or not, 1-3 threads; maxima tied (the first wins, +0 against -0) and NaNs (taken)."""
    padding = tuple(min(p, k // 2) for p, k in zip(pad, kernel))
    if any(size + 2 * p < k for size, p, k in zip((h, w), padding, kernel)):
        return  # a window larger than the padded input: PyTorch refuses it
    x, g = _pool_case(n, c, h, w, seed, ties, nans if kind == "max" else 0)
    _assert_pooling_is_pytorchs(x, g, kind, kernel, stride, padding, ceil_mode, count_include_pad, threads)


@needs_compiler
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("shape,stride", [((64, 16, 32, 32), 1), ((64, 16, 32, 32), 2), ((64, 4, 32, 32), 1),
                                          ((64, 64, 8, 8), 1), ((16, 36, 7, 7), 2)])
def test_the_poolings_of_the_networks_shapes(kind, shape, stride):
    """The DARTS ops' 3x3 pools (padding 1, the average without it) at the searches' shapes; ties among the maxima."""
    x, g = _pool_case(*shape, seed=1, ties=True, nans=3 if kind == "max" else 0)
    _assert_pooling_is_pytorchs(x, g, kind, (3, 3), (stride, stride), (1, 1), False, False, threads=2)


@needs_compiler
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 3), c=st.sampled_from([8, 9, 12, 15, 16, 17, 24, 31, 32, 40]), h=st.integers(3, 13),
       w=st.integers(3, 13), stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pad=st.tuples(st.integers(0, 1), st.integers(0, 1)), ceil_mode=st.booleans(), count_include_pad=st.booleans(),
       kind=st.sampled_from(["max", "avg"]), threads=st.integers(1, 3), seed=st.integers(0, 9), ties=st.booleans(),
       nans=st.sampled_from([0, 1, 4]), infinities=st.sampled_from([0, 3]))
def test_the_3x3_poolings_vectors_are_pytorchs_bit_for_bit(n, c, h, w, stride, pad, ceil_mode, count_include_pad,
                                                            kind, threads, seed, ties, nans, infinities):
    """3x3 windows of 8 channels or more take the whole-vector path (16 lanes, or 8 below 16 channels; 4 output pixels
    at a time, then 1): any image from 3x3, the channels past the last whole vector, both strides and paddings; tied
    maxima (+0 against -0), NaNs (a vector holding one is computed again lane by lane: the last NaN wins) and
    infinities of both signs among the values."""
    x, g = _pool_case(n, c, h, w, seed, ties, nans)
    flat = x.permute(0, 2, 3, 1).reshape(-1)  # the channels-last storage
    spots = torch.randint(0, flat.numel(), (infinities,), generator=g)
    flat[spots] = torch.where(torch.rand(infinities, generator=g) < 0.5, float("-inf"), float("inf"))
    _assert_pooling_is_pytorchs(x, g, kind, (3, 3), stride, pad, ceil_mode, count_include_pad, threads)


@needs_compiler
def test_what_the_poolings_do_not_serve(monkeypatch):
    x, _ = _pool_case(2, 8, 6, 6, seed=0)
    window = ([3, 3], [1, 1], [1, 1])

    def served(x, dilation=(1, 1), window=window, grad=None):
        grad = torch.ones_like(x) if grad is None else grad
        return (native.max_pool2d(x, *window, dilation, False) is not None,
                native.avg_pool2d(x, *window, False, False) is not None,
                native.max_pool2d_input_gradient(grad, x, *window, dilation, False) is not None,
                native.avg_pool2d_input_gradient(grad, x, *window, False, False) is not None)

    assert served(x) == (True,) * 4
    assert served(x.double()) == (False,) * 4
    assert served(x.contiguous()) == (False,) * 4  # NCHW: PyTorch's contiguous kernels
    assert served(x, grad=torch.ones_like(x).contiguous())[2:] == (False, False)  # a gradient laid out otherwise
    assert served(x, dilation=(2, 2))[::2] == (False, False)
    assert served(x, window=([3, 3], [1, 1], [2, 2])) == (False,) * 4  # more padding than PyTorch allows
    with torch.enable_grad():
        assert served(x.clone().requires_grad_()) == (False,) * 4  # a graph to build through it
    monkeypatch.setenv("DARTS_LITE_NATIVE", "0")
    assert served(x) == (False,) * 4


@needs_compiler
@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_a_supernets_fused_pooling_ops_take_them_with_the_plain_supernets_values(monkeypatch, space):
    """The pooling ops of a supernet's fused edges (recompute="cheap": DARTS's pools with their BatchNorm, shared by
    the edges reading a state; NAS-Bench-201's average pool alone) pool with the kernels, and the network's outputs,
    gradients and running statistics are the plain supernet's (PyTorch's pooling modules) bit for bit."""
    from conftest import seeded_step

    from darts_lite.spaces import lean

    calls = dict.fromkeys(("max_pool2d", "avg_pool2d", "max_pool2d_input_gradient", "avg_pool2d_input_gradient"), 0)

    def counted(name, real):
        def call(*args):
            out = real(*args)
            calls[name] += out is not None
            return out
        return call

    for name in calls:
        monkeypatch.setattr(lean.native, name, counted(name, getattr(native, name)))
    nets = []
    for recompute in ("none", "cheap"):
        torch.manual_seed(0)
        if space == "darts":
            from darts_lite.spaces.darts.search import SearchNetwork

            net = SearchNetwork(C=8, layers=3, num_classes=4, steps=2, multiplier=2, recompute=recompute)
        else:
            from darts_lite.spaces.nb201.search import SearchNetwork

            net = SearchNetwork(C=8, N=1, num_classes=4, recompute=recompute)
        nets.append(net.to(memory_format=torch.channels_last))
    plain, fused = nets
    x = torch.randn(8, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (8,))
    for seed in (1, 2):
        assert torch.equal(seeded_step(plain, x, y, seed), seeded_step(fused, x, y, seed))
    expected = {"avg_pool2d", "avg_pool2d_input_gradient"} | ({"max_pool2d", "max_pool2d_input_gradient"}
                                                              if space == "darts" else set())
    assert {name for name, n in calls.items() if n} == expected, calls
    for (name, a), b in zip(plain.named_parameters(), fused.parameters()):
        assert (a.grad is None) == (b.grad is None) and (a.grad is None or torch.equal(a.grad, b.grad)), name
    for (name, a), b in zip(plain.named_buffers(), fused.buffers()):
        assert torch.equal(a, b), name
