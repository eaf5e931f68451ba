"""CPU kernels darts_lite compiles for itself: a depthwise convolution's weight gradient, the BatchNorm of
channels-last float32 tensors (training mode, with or without affine parameters) with its gradients and the
products of a gradient with its output (an alpha's gradient, ``times_normalised``), and channels-last max and
average pooling with their input gradients.

On the CPU PyTorch takes a depthwise convolution's weight gradient from oneDNN, whose depthwise kernel serves only
undilated 3x3 convolutions: 5x5 and dilated ones (``sep_conv_5x5``, ``dil_conv_3x3``, ``dil_conv_5x5``) go through
its generic grouped convolution, several times slower (experiments/depthwise_weight_grad.py). ``_native.c``
computes the same sums as dot products of contiguous channels-last rows. PyTorch's channels-last BatchNorm kernels
process a pixel's channels per call, several times slower than its NCHW ones for the few channels of PC-DARTS's
partial edges (and of a retrained network's C=36); ``_native.c`` computes the same values (the same partial sums
over the same rows, the same roundings: tested equal bit for bit) a channel group at a time. PyTorch's channels-last
max pooling writes a 64-bit index beside every output for its backward pass; ``_native.c`` pools without them and
finds each window's maximum again in the input for the gradient (the same values and gradients bit for bit, as its
average pooling's). The library is built at first use with the C compiler (``$CC``, else the one Python was built
with), cached under ``$DARTS_LITE_CACHE`` (default ``~/.cache/darts_lite``) by a hash of the source and the command,
and loaded with ctypes; the calls release the GIL.

Where they cannot be used (no compiler, a build that fails, another dtype, layout or device) the functions return
None and the caller takes PyTorch's: the weight gradient then agrees to rounding (its sums run in another order),
the BatchNorm and the poolings exactly. Set ``DARTS_LITE_NATIVE=0`` to always take PyTorch's; ``status()`` says
which is in use and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from .ops import _channels_last  # (a tensor of one channel or pixel is both layouts: PyTorch takes its contiguous path)

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("_native.c")
_FUNCTIONS = {torch.float32: "darts_lite_depthwise_weight_grad_f32", torch.float64: "darts_lite_depthwise_weight_grad_f64"}
_BATCH_NORM, _BATCH_NORM_BACKWARD = "darts_lite_batch_norm_f32", "darts_lite_batch_norm_backward_f32"
_TIMES_NORMALISED = "darts_lite_times_normalised_f32"
_POOLS = {"max": "darts_lite_max_pool_f32", "avg": "darts_lite_avg_pool_f32"}
_POOL_BACKWARDS = {"max": "darts_lite_max_pool_backward_f32", "avg": "darts_lite_avg_pool_backward_f32"}
# the BatchNorm kernels compute what PyTorch's channels-last ones compute where those were built with FMA: its x86-64
# AVX2 and AVX-512 builds (the one its dispatcher picked for this CPU; ATEN_CPU_CAPABILITY may change it)
_BATCH_NORM_BUILDS = ("AVX2", "AVX512")
# a thread per this many multiply-adds at least: below it, waking a thread costs more than it saves
_WORK_PER_THREAD = 1 << 18

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_status = "not built yet"


def enabled() -> bool:
    """Whether the kernel may be used (``DARTS_LITE_NATIVE`` is not 0, false or off)."""
    return os.environ.get("DARTS_LITE_NATIVE", "1").strip().lower() not in ("0", "false", "off", "no")


def status() -> str:
    """What the last call found: ``"ready: <library path>"``, ``"disabled ..."``, ``"failed: <why>"`` or
    ``"not built yet"``."""
    return _status if enabled() else "disabled (DARTS_LITE_NATIVE=0)"


def compiler() -> list[str]:
    """The C compiler's command: ``$CC``, else the one Python was built with, else ``cc``."""
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def cache_dir() -> Path:
    """Where built kernels are kept: ``$DARTS_LITE_CACHE/native``, default ``~/.cache/darts_lite/native``
    (``$XDG_CACHE_HOME`` in place of ``~/.cache`` where set)."""
    root = os.environ.get("DARTS_LITE_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "darts_lite")
    return Path(root) / "native"


def _command(output: Path, openmp: bool = True) -> list[str]:
    return [*compiler(), "-O3", "-shared", "-fPIC", *(["-fopenmp"] if openmp else []), str(SOURCE), "-o", str(output),
            "-lm"]


def _library_path() -> Path:
    """The built library's path: a name from the source, the command and the platform, so a changed source, another
    compiler or another machine type builds its own."""
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(" ".join(_command(Path("out"))).encode())
    key.update(f"{sys.platform} {platform.machine()}".encode())
    return cache_dir() / f"kernels-{key.hexdigest()[:16]}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"


def _build(path: Path) -> None:
    """Compile the kernel to ``path``, with OpenMP where the compiler has it (its threads are then PyTorch's own
    runtime's where that is GNU OpenMP, as in PyTorch's Linux wheels), else without (one thread): into a temporary
    file beside it, then renamed, so processes building at the same time each leave a whole library."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".building-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        for openmp in (True, False):
            done = subprocess.run(_command(Path(tmp), openmp), capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                break
        else:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"{' '.join(_command(path, False))} exited with {done.returncode}: "
                               f"{lines[-1] if lines else ''}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _opened(path: Path) -> ctypes.CDLL | None:
    """The library at ``path``, or None where it does not load."""
    try:
        return ctypes.CDLL(str(path))
    except OSError:
        return None


def _load() -> ctypes.CDLL | None:
    """The kernel's library, built if it is not in the cache; None (and ``status()`` says why) where it cannot be."""
    global _library, _status
    with _lock:
        if _library is not None or _status.startswith("failed"):
            return _library
        try:
            path = _library_path()
            lib = _opened(path) if path.exists() else None  # None: absent, or a file that does not load
            if lib is None:  # (a damaged file, or one built on another system: built again)
                log.info("building darts_lite's CPU kernels: %s", path)
                _build(path)
                lib = ctypes.CDLL(str(path))
            for name in _FUNCTIONS.values():
                fn = getattr(lib, name)
                fn.restype = ctypes.c_int
                fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 8
            forward, backward = getattr(lib, _BATCH_NORM), getattr(lib, _BATCH_NORM_BACKWARD)
            forward.restype = backward.restype = ctypes.c_int
            forward.argtypes = [ctypes.c_void_p] * 8 + [ctypes.c_long] * 2 + [ctypes.c_double] * 2 + [ctypes.c_long]
            backward.argtypes = [ctypes.c_void_p] * 8 + [ctypes.c_long] * 3
            product = getattr(lib, _TIMES_NORMALISED)
            product.restype, product.argtypes = ctypes.c_int, [ctypes.c_void_p] * 5 + [ctypes.c_long] * 4
            for kind, extra in (("max", 0), ("avg", 1)):  # the average pools take count_include_pad
                pool, pool_backward = getattr(lib, _POOLS[kind]), getattr(lib, _POOL_BACKWARDS[kind])
                pool.restype = pool_backward.restype = ctypes.c_int
                pool.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_long] * (13 + extra)
                pool_backward.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * (13 + extra)
        except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as e:
            _status = f"failed: {e}"
            log.warning("darts_lite could not build its CPU kernels (%s); 5x5 and dilated depthwise convolutions "
                        "take PyTorch's weight gradient, BatchNorms and poolings PyTorch's kernels, slower on the "
                        "CPU. DARTS_LITE_NATIVE=0 takes them without trying.", e)
            return None
        _library, _status = lib, f"ready: {path}"
        return lib


def reset() -> None:
    """Forget the loaded library and any failure, so the next call looks again (after changing ``$CC`` or
    ``$DARTS_LITE_CACHE``)."""
    global _library, _status
    with _lock:
        _library, _status = None, "not built yet"


def applies(kernel: int, dilation: int) -> bool:
    """Whether a depthwise conv of this kernel size and dilation takes its weight gradient from the kernel: all but
    the undilated 3x3 one, which oneDNN's depthwise kernel computes faster."""
    return not (kernel == 3 and dilation == 1) and kernel >= 1 and dilation >= 1


# the dispatch keys of an ordinary dense CPU tensor
_PLAIN_KEYS = frozenset({"CPU", "ADInplaceOrView", "AutogradCPU", "AutocastCPU"})
# a dispatch key set's bits -> whether its keys are those of a plain tensor (a handful of sets: read once each)
_plain_key_sets: dict[int, bool] = {}


def _plain(t: torch.Tensor) -> bool:
    """Whether ``t`` is an ordinary dense CPU tensor whose memory the kernel may read: no subclass, no wrapper of
    torch.func's or of the autograd engine's batched backward (a Hessian's rows at once), no sparse layout."""
    if type(t) is not torch.Tensor or t.layout != torch.strided:
        return False
    keys = torch._C._dispatch_keys(t)
    bits = keys.raw_repr()
    plain = _plain_key_sets.get(bits)
    if plain is None:
        text = str(keys)  # "DispatchKeySet(CPU, ADInplaceOrView, ...)"
        names = {name.strip() for name in text[text.index("(") + 1:text.rindex(")")].split(",")}
        plain = _plain_key_sets[bits] = "CPU" in names and names <= _PLAIN_KEYS
    return plain


def _graph_through(*tensors: torch.Tensor) -> bool:
    """Whether autograd would build a graph through a call reading ``tensors`` (a kernel call has none: PyTorch's
    ops then serve)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def depthwise_weight_gradient(grad: torch.Tensor, x: torch.Tensor, kernel: int, padding: int,
                              dilation: int) -> torch.Tensor | None:
    """The weight gradient, [C, 1, k, k], of the stride-1 depthwise conv of ``x`` ([N, C, H, W]) with a k x k kernel,
    this dilation and the padding that keeps the size (``padding`` = dilation * (k - 1) / 2), given its output
    gradient ``grad``; None where the kernel does not serve it (see the module's text): the caller then takes
    PyTorch's. Either layout is read; other than channels-last, ``x`` and ``grad`` are copied to it first."""
    if not (enabled() and applies(kernel, dilation) and _plain(x) and _plain(grad) and x.dtype in _FUNCTIONS
            and grad.dtype == x.dtype and x.dim() == 4 and grad.shape == x.shape and x.numel() > 0
            and 2 * padding == dilation * (kernel - 1)
            and not _graph_through(x, grad)):
        return None
    lib = _library or _load()
    if lib is None:
        return None
    n, c, h, w = x.shape
    x = x.contiguous(memory_format=torch.channels_last)
    grad = grad.contiguous(memory_format=torch.channels_last)
    out = x.new_empty((c, 1, kernel, kernel))
    threads = max(1, min(torch.get_num_threads(), n * h * w * c * kernel * kernel // _WORK_PER_THREAD))
    code = getattr(lib, _FUNCTIONS[x.dtype])(x.data_ptr(), grad.data_ptr(), out.data_ptr(), n, h, w, c, kernel,
                                             dilation, padding, threads)
    return out if code == 0 else None


def _vector(t: torch.Tensor | None, channels: int) -> bool:
    return t is None or (_plain(t) and t.dtype == torch.float32 and t.shape == (channels,) and t.is_contiguous())


def batch_norm_takes(x: torch.Tensor) -> bool:
    """Whether the BatchNorm kernels compute PyTorch's values for ``x`` (a graph through the call aside): a plain
    channels-last float32 CPU tensor of more rows (pixels) than threads (PyTorch's kernel takes another path for
    fewer), on a PyTorch build whose CPU kernels are AVX2 or AVX-512, outside autocast."""
    return (enabled() and x.dtype == torch.float32 and _plain(x) and _channels_last(x) and x.numel() > 0
            and x.numel() // x.shape[1] > torch.get_num_threads()
            and torch.backends.cpu.get_cpu_capability() in _BATCH_NORM_BUILDS and not torch.is_autocast_enabled("cpu"))


def _batch_norm_serves(x: torch.Tensor) -> bool:
    """``batch_norm_takes(x)``, with no graph to be built through the call."""
    return batch_norm_takes(x) and not _graph_through(x)


def _pointer(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None, momentum: float,
               eps: float, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(output, batch mean, 1/sqrt(batch variance + eps)) of the training-mode BatchNorm of ``x``, with the affine
    ``weight`` and ``bias`` where given, updating the running statistics given (either may be None) as
    ``torch.batch_norm`` does with this ``momentum``: the values of ``aten._batch_norm_impl_index``'s first three
    outputs, bit for bit. None where the kernel does not serve (see ``_batch_norm_serves``): the caller then runs
    PyTorch's."""
    c = x.shape[1] if x.dim() == 4 else 0
    if not (_batch_norm_serves(x) and all(_vector(t, c) for t in (running_mean, running_var, weight, bias))
            and not _graph_through(*(t for t in (weight, bias) if t is not None))):
        return None
    lib = _library or _load()
    if lib is None:
        return None
    y, mean, invstd = torch.empty_like(x), x.new_empty(c), x.new_empty(c)
    code = getattr(lib, _BATCH_NORM)(x.data_ptr(), y.data_ptr(), mean.data_ptr(), invstd.data_ptr(),
                                     _pointer(running_mean), _pointer(running_var), _pointer(weight), _pointer(bias),
                                     x.numel() // c, c, momentum, eps, torch.get_num_threads())
    return (y, mean, invstd) if code == 0 else None


def batch_norm_gradients(grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
                         weight: torch.Tensor | None = None, input_gradient: bool = True,
                         affine_gradients: bool = False) -> tuple[torch.Tensor | None, ...] | None:
    """(input gradient, weight gradient, bias gradient) of the training-mode BatchNorm of ``x`` whose batch
    statistics were ``mean`` and ``invstd``, with the affine ``weight`` where given, given its output gradient
    ``grad`` (laid out as ``x``): each asked for (``input_gradient``; ``affine_gradients``: the last two), the others
    None; the values of ``aten.native_batch_norm_backward``'s, bit for bit. None where the kernel does not serve."""
    c = x.shape[1] if x.dim() == 4 else 0
    if not (_batch_norm_serves(x) and grad.shape == x.shape and grad.dtype == x.dtype and _plain(grad)
            and _channels_last(grad) and all(_vector(t, c) for t in (mean, invstd, weight))
            and not _graph_through(grad)):
        return None
    lib = _library or _load()
    if lib is None:
        return None
    dx = torch.empty_like(x) if input_gradient else None
    dweight, dbias = (x.new_empty(c), x.new_empty(c)) if affine_gradients else (None, None)
    code = getattr(lib, _BATCH_NORM_BACKWARD)(x.data_ptr(), grad.data_ptr(), mean.data_ptr(), invstd.data_ptr(),
                                              _pointer(weight), _pointer(dx), _pointer(dweight), _pointer(dbias),
                                              x.numel() // c, c, torch.get_num_threads())
    return (dx, dweight, dbias) if code == 0 else None


def batch_norm_input_gradient(grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor,
                              invstd: torch.Tensor) -> torch.Tensor | None:
    """The input gradient of the training-mode BatchNorm of ``x`` without affine parameters whose batch statistics
    were ``mean`` and ``invstd``, given its output gradient ``grad`` (laid out as ``x``): the value of
    ``aten._batch_norm_impl_index_backward``'s, bit for bit. None where the kernel does not serve."""
    computed = batch_norm_gradients(grad, x, mean, invstd)
    return None if computed is None else computed[0]


def times_normalised(grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor,
                     invstd: torch.Tensor) -> torch.Tensor | None:
    """``grad * y``, y the output of the training-mode BatchNorm of ``x`` without affine parameters whose batch
    statistics were ``mean`` and ``invstd`` (``x * invstd + (-mean * invstd)``, one fused multiply-add per element, as
    the forward pass computed it): the values of ``grad * darts_lite.spaces.lean._normalised(x, ...)`` bit for bit,
    laid out as ``x``, without writing y. ``grad`` is laid out as ``x``, or is its channels' slice of a channels-last
    gradient of more channels (PC-DARTS's partial edges). None where the kernel does not serve."""
    c = x.shape[1] if x.dim() == 4 else 0
    if not (_batch_norm_serves(x) and grad.shape == x.shape and grad.dtype == x.dtype and _plain(grad)
            and all(_vector(t, c) for t in (mean, invstd)) and not _graph_through(grad)):
        return None
    _, _, h, w = grad.shape
    pixel = grad.stride(3)  # the values between two pixels' channel 0
    if grad.stride()[:3] != (h * w * pixel, 1, w * pixel) or pixel < c:
        return None
    lib = _library or _load()
    if lib is None:
        return None
    out = torch.empty_like(x)
    code = getattr(lib, _TIMES_NORMALISED)(x.data_ptr(), grad.data_ptr(), mean.data_ptr(), invstd.data_ptr(),
                                           out.data_ptr(), x.numel() // c, c, pixel, torch.get_num_threads())
    return out if code == 0 else None


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """The output size of a pooling (dilation 1) along a dimension of ``size``, as PyTorch computes it: in ceil mode
    the last window must start inside the image or its left padding."""
    out = (size + 2 * padding - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool_geometry(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                   dilation: Sequence[int], ceil_mode: bool) -> tuple[int, ...] | None:
    """(N, H, W, C, OH, OW, kh, kw, sh, sw, ph, pw) of a 2-d pooling of ``x`` the pooling kernels serve: a plain
    channels-last float32 tensor with no graph to be built through the call, dilation 1, padding at most half the
    window (PyTorch refuses more) and a non-empty output; else None."""
    if not (enabled() and x.dtype == torch.float32 and x.dim() == 4 and _plain(x) and _channels_last(x)
            and not _graph_through(x)):
        return None
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if tuple(dilation) != (1, 1) or min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0 or 2 * ph > kh or 2 * pw > kw:
        return None
    n, c, h, w = x.shape
    oh, ow = pool_output_size(h, kh, sh, ph, ceil_mode), pool_output_size(w, kw, sw, pw, ceil_mode)
    if min(n, c, h, w, oh, ow) < 1:
        return None
    return n, h, w, c, oh, ow, kh, kw, sh, sw, ph, pw


def _pool_threads(n: int, rows: int) -> int:
    return max(1, min(torch.get_num_threads(), rows, n // _WORK_PER_THREAD + 1))


def max_pool2d(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
               dilation: Sequence[int], ceil_mode: bool) -> torch.Tensor | None:
    """``F.max_pool2d(x, ...)`` bit for bit, without the index of each maximum that PyTorch's CPU kernel writes
    beside it (``max_pool2d_input_gradient`` finds them again); None where the kernel does not serve (see
    ``_pool_geometry``): the caller then runs PyTorch's."""
    return _pooled("max", x, _pool_geometry(x, kernel, stride, padding, dilation, ceil_mode), ())


def avg_pool2d(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
               ceil_mode: bool, count_include_pad: bool) -> torch.Tensor | None:
    """``F.avg_pool2d(x, ...)`` (no divisor override) bit for bit; None where the kernel does not serve."""
    return _pooled("avg", x, _pool_geometry(x, kernel, stride, padding, (1, 1), ceil_mode), (int(count_include_pad),))


def _pooled(kind: str, x: torch.Tensor, geometry: tuple[int, ...] | None, extra: tuple[int, ...]) -> torch.Tensor | None:
    lib = None if geometry is None else _library or _load()
    if lib is None:
        return None
    n, h, w, c, oh, ow = geometry[:6]
    y = torch.empty((n, c, oh, ow), dtype=x.dtype, memory_format=torch.channels_last)
    code = getattr(lib, _POOLS[kind])(x.data_ptr(), y.data_ptr(), *geometry, *extra,
                                      _pool_threads(y.numel() * geometry[6] * geometry[7], n * oh))
    return y if code == 0 else None


def _pool_gradient_serves(grad: torch.Tensor, x: torch.Tensor, geometry: tuple[int, ...] | None) -> bool:
    return (geometry is not None and grad.dtype == x.dtype and grad.shape == (geometry[0], geometry[3], *geometry[4:6])
            and _plain(grad) and _channels_last(grad) and not _graph_through(grad))


def max_pool2d_input_gradient(grad: torch.Tensor, x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int],
                              padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool) -> torch.Tensor | None:
    """The gradient of ``x`` through ``F.max_pool2d(x, ...)`` given its output's ``grad`` (channels-last), bit for bit
    PyTorch's, each window's maximum found again in ``x``; None where the kernel does not serve."""
    return _pool_gradient("max", grad, x, _pool_geometry(x, kernel, stride, padding, dilation, ceil_mode), ())


def avg_pool2d_input_gradient(grad: torch.Tensor, x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int],
                              padding: Sequence[int], ceil_mode: bool, count_include_pad: bool) -> torch.Tensor | None:
    """The gradient of ``x`` through ``F.avg_pool2d(x, ...)`` (no divisor override) given its output's ``grad``
    (channels-last), bit for bit PyTorch's; None where the kernel does not serve. Only ``x``'s shape, dtype and
    layout are read."""
    return _pool_gradient("avg", grad, x, _pool_geometry(x, kernel, stride, padding, (1, 1), ceil_mode),
                          (int(count_include_pad),))


def _pool_gradient(kind: str, grad: torch.Tensor, x: torch.Tensor, geometry: tuple[int, ...] | None,
                   extra: tuple[int, ...]) -> torch.Tensor | None:
    if not _pool_gradient_serves(grad, x, geometry):
        return None
    lib = _library or _load()
    if lib is None:
        return None
    gx = torch.empty_like(x, memory_format=torch.channels_last)
    code = getattr(lib, _POOL_BACKWARDS[kind])(x.data_ptr(), grad.data_ptr(), gx.data_ptr(), *geometry, *extra,
                                               _pool_threads(grad.numel() * geometry[6] * geometry[7], geometry[0]))
    return gx if code == 0 else None
