"""The weight gradient of a depthwise convolution, from a small C kernel darts_lite compiles for itself.

On the CPU PyTorch takes a depthwise convolution's weight gradient from oneDNN, whose depthwise kernel serves only
undilated 3x3 convolutions: 5x5 and dilated ones (``sep_conv_5x5``, ``dil_conv_3x3``, ``dil_conv_5x5``) go through
its generic grouped convolution, several times slower (experiments/depthwise_weight_grad.py). ``_depthwise.c``
computes the same sums as dot products of contiguous channels-last rows. It is built at first use with the C
compiler (``$CC``, else the one Python was built with), cached under ``$DARTS_LITE_CACHE`` (default
``~/.cache/darts_lite``) by a hash of the source and the command, and loaded with ctypes; the call releases the GIL.

Where it cannot be used (no compiler, a build that fails, another dtype or device) ``depthwise_weight_gradient``
returns None and the caller takes PyTorch's: the results agree to rounding (the sums run in another order). Set
``DARTS_LITE_NATIVE=0`` to always take PyTorch's; ``status()`` says which is in use and why.
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
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("_depthwise.c")
_FUNCTIONS = {torch.float32: "darts_lite_depthwise_weight_grad_f32", torch.float64: "darts_lite_depthwise_weight_grad_f64"}
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
    return [*compiler(), "-O3", "-shared", "-fPIC", *(["-fopenmp"] if openmp else []), str(SOURCE), "-o", str(output)]


def _library_path() -> Path:
    """The built library's path: a name from the source, the command and the platform, so a changed source, another
    compiler or another machine type builds its own."""
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(" ".join(_command(Path("out"))).encode())
    key.update(f"{sys.platform} {platform.machine()}".encode())
    return cache_dir() / f"depthwise-{key.hexdigest()[:16]}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"


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
                log.info("building darts_lite's depthwise weight-gradient kernel: %s", path)
                _build(path)
                lib = ctypes.CDLL(str(path))
            for name in _FUNCTIONS.values():
                fn = getattr(lib, name)
                fn.restype = ctypes.c_int
                fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 8
        except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as e:
            _status = f"failed: {e}"
            log.warning("darts_lite could not build its depthwise weight-gradient kernel (%s); 5x5 and dilated "
                        "depthwise convolutions take PyTorch's weight gradient, slower on the CPU. "
                        "DARTS_LITE_NATIVE=0 takes it without trying.", e)
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


def _plain(t: torch.Tensor) -> bool:
    """Whether ``t`` is an ordinary dense CPU tensor whose memory the kernel may read: no subclass, no wrapper of
    torch.func's or of the autograd engine's batched backward (a Hessian's rows at once), no sparse layout."""
    if type(t) is not torch.Tensor or t.layout != torch.strided:
        return False
    keys = str(torch._C._dispatch_keys(t))  # "DispatchKeySet(CPU, ADInplaceOrView, ...)"
    names = {name.strip() for name in keys[keys.index("(") + 1:keys.rindex(")")].split(",")}
    return "CPU" in names and names <= _PLAIN_KEYS


def depthwise_weight_gradient(grad: torch.Tensor, x: torch.Tensor, kernel: int, padding: int,
                              dilation: int) -> torch.Tensor | None:
    """The weight gradient, [C, 1, k, k], of the stride-1 depthwise conv of ``x`` ([N, C, H, W]) with a k x k kernel,
    this dilation and the padding that keeps the size (``padding`` = dilation * (k - 1) / 2), given its output
    gradient ``grad``; None where the kernel does not serve it (see the module's text): the caller then takes
    PyTorch's. Either layout is read; other than channels-last, ``x`` and ``grad`` are copied to it first."""
    if not (enabled() and applies(kernel, dilation) and _plain(x) and _plain(grad) and x.dtype in _FUNCTIONS
            and grad.dtype == x.dtype and x.dim() == 4 and grad.shape == x.shape and x.numel() > 0
            and 2 * padding == dilation * (kernel - 1)
            and not (torch.is_grad_enabled() and (x.requires_grad or grad.requires_grad))):  # no graph through it
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
