"""Shared test set-up: under pytest-xdist each worker takes its share of the cores for torch's threads.

Also the helpers several test files use, imported as ``from conftest import compose_cfg, run_cli`` (tests/ has no
__init__.py, so pytest's default import mode puts tests/ on sys.path, in each xdist worker too). They import
darts_lite only when called, so this file loads even while a module they do not need is broken.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from darts_lite.ofa import OFANetwork
    from darts_lite.spaces.darts.search import SearchNetwork

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    # two workers each running torch on every core would contend for them and run slower than one
    _threads = max(1, (os.cpu_count() or 1) // _workers)
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)  # and the command-line runs the tests start


# ---- which tests share a worker ------------------------------------------------------------------------------------
_GROUP_MARK = re.compile(r'^pytestmark = pytest\.mark\.xdist_group\("([^"]+)"\)', re.MULTILINE)


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` as pytest-xdist documents it: the tests of a module whose ``pytestmark`` is
    ``pytest.mark.xdist_group("name")`` run on one worker, one group after another (the DDP tests never race for
    ports or cores; a module fixture is built once). xdist groups by a suffix it appends to the test ids in the
    workers, which pytest 9.2 no longer keeps (pytest-xdist issue 1386): every test would go its own way. This
    scheduler reads the group from the module's own line instead."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    groups: dict[str, str | None] = {}

    def module_group(nodeid: str) -> str | None:
        path = nodeid.split("::", 1)[0]
        if path not in groups:
            try:
                found = _GROUP_MARK.search((config.rootpath / path).read_text())
            except OSError:
                found = None
            groups[path] = found.group(1) if found else None
        return groups[path]

    class ModuleGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):  # xdist's own suffix, where pytest keeps it
                return nodeid.rsplit("@", 1)[-1]
            return module_group(nodeid) or nodeid

    return ModuleGroupScheduling(config, log)


# ---- configs and the command line ------------------------------------------------------------------------------
def compose_cfg(*overrides):
    """The root config with these overrides, composed as `python -m darts_lite ...` composes it."""
    from hydra import compose, initialize_config_dir

    from darts_lite.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _cli(*args, env=None) -> tuple[list[str], dict[str, str]]:
    """The command and environment of `python -m darts_lite *args`: W&B offline, Hydra's short error messages, and
    ``env``'s variables."""
    return [sys.executable, "-m", "darts_lite", *args], dict(os.environ, WANDB_MODE="offline", HYDRA_FULL_ERROR="0",
                                                             **(env or {}))


def run_cli(*args, cwd, timeout=600, env=None, isolated=False) -> subprocess.CompletedProcess:
    """Runs `python -m darts_lite *args` in cwd to the end (with ``env``'s variables added); its exit status, stdout
    and stderr as text.

    In this test process by default (torch, Lightning and Hydra are imported once, not once per run: seconds per run
    on a small machine), with what a run may change put back afterwards (see ``_in_process``); the output of the
    process's file descriptors is captured too, so what worker processes print is there as from a subprocess.
    ``isolated=True`` starts a real subprocess: for runs that must own the process (DDP, import-time settings).
    """
    if isolated:
        cmd, env = _cli(*args, env=env)
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return _in_process(list(args), cwd, env)


def _in_process(args: list[str], cwd, env: dict | None) -> subprocess.CompletedProcess:
    """`python -m darts_lite *args` as ``darts_lite.__main__.entry()`` in this process, in ``cwd`` (also first on
    sys.path, as `python -m` puts it), with W&B offline and ``env``'s variables. Put back afterwards: the working
    folder, sys.argv/sys.path, the environment, modules imported from ``cwd`` (a test's plug-ins) and what they
    registered, logging, warning filters, signal handlers, torch's random state, threads, default dtype and
    determinism, Python's and numpy's random state, Hydra's global state."""
    import contextlib
    import logging
    import signal
    import tempfile
    import warnings

    import numpy as np
    from hydra.core.global_hydra import GlobalHydra

    from darts_lite.__main__ import entry
    from darts_lite.registry import Registry

    cwd = os.path.abspath(cwd)
    # what a run's plug-ins add to darts_lite's registries (a space of one's own, say) is taken out again
    registries = {id(r): (r, dict(r._entries)) for name, module in list(sys.modules.items())
                  if name.startswith("darts_lite") for r in vars(module).values() if isinstance(r, Registry)}
    saved = dict(
        environ=dict(os.environ), cwd=os.getcwd(), argv=sys.argv[:], path=sys.path[:], modules=set(sys.modules),
        torch_rng=torch.get_rng_state(), threads=torch.get_num_threads(), dtype=torch.get_default_dtype(),
        deterministic=torch.are_deterministic_algorithms_enabled(), grad=torch.is_grad_enabled(),
        py_rng=random.getstate(), np_rng=np.random.get_state(),
        signals={s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)},
        loggers={name: (lg.level, lg.handlers[:], lg.propagate, lg.disabled)
                 for name, lg in [("", logging.getLogger()), *logging.root.manager.loggerDict.items()]
                 if isinstance(lg, logging.Logger)},
    )
    out_file, err_file = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    code = 0
    sys.stdout.flush(), sys.stderr.flush()
    fds = os.dup(1), os.dup(2)
    try:
        os.environ.update(WANDB_MODE="offline", HYDRA_FULL_ERROR="0", **(env or {}))
        os.chdir(cwd)
        sys.argv = [os.path.join(os.path.dirname(__import__("darts_lite").__file__), "__main__.py"), *args]
        sys.path.insert(0, cwd)
        GlobalHydra.instance().clear()
        os.dup2(out_file.fileno(), 1), os.dup2(err_file.fileno(), 2)
        with contextlib.redirect_stdout(out_file), contextlib.redirect_stderr(err_file), \
                warnings.catch_warnings():
            # Python's own warning filters, as a fresh process has them, shown on this stderr
            warnings.resetwarnings()
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: \
                sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
            try:
                entry()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001 - what the interpreter would print before exiting with 1
                import traceback

                traceback.print_exc()
                code = 1
            sys.stdout.flush(), sys.stderr.flush()
    finally:
        os.dup2(fds[0], 1), os.dup2(fds[1], 2)
        os.close(fds[0]), os.close(fds[1])
        GlobalHydra.instance().clear()
        os.chdir(saved["cwd"])
        sys.argv[:], sys.path[:] = saved["argv"], saved["path"]
        os.environ.clear()
        os.environ.update(saved["environ"])
        for registry, entries in registries.values():
            registry._entries.clear()
            registry._entries.update(entries)
        for name in set(sys.modules) - saved["modules"]:  # a test's plug-in modules, never a package's
            file = getattr(sys.modules[name], "__file__", None) or ""
            if file.startswith(cwd + os.sep) and "site-packages" not in file and not name.startswith("darts_lite"):
                del sys.modules[name]
        for name, (level, handlers, propagate, disabled) in saved["loggers"].items():
            lg = logging.getLogger(name or None)
            for handler in lg.handlers:
                if handler not in handlers:  # the run's own (its log file): closed, as at the end of a process
                    handler.close()
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate, lg.disabled = propagate, disabled
        for s, handler in saved["signals"].items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        torch.set_rng_state(saved["torch_rng"])
        torch.set_num_threads(saved["threads"])
        torch.set_default_dtype(saved["dtype"])
        torch.use_deterministic_algorithms(saved["deterministic"])
        torch.set_grad_enabled(saved["grad"])
        random.setstate(saved["py_rng"])
        np.random.set_state(saved["np_rng"])
    out_file.seek(0), err_file.seek(0)
    result = subprocess.CompletedProcess(["python", "-m", "darts_lite", *args], code, out_file.read(), err_file.read())
    out_file.close(), err_file.close()
    return result


def start_cli(*args, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) -> subprocess.Popen:
    """Starts `python -m darts_lite *args` in cwd and returns at once (to kill it, say); text output."""
    cmd, env = _cli(*args)
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=True)


# ---- tiny networks and configs -----------------------------------------------------------------------------------
def tiny_darts_network(**kw) -> SearchNetwork:
    """The DARTS supernet at C=4 with 3 cells (normal, reduction, reduction) and 3 classes."""
    from darts_lite.spaces.darts.search import SearchNetwork

    return SearchNetwork(C=4, layers=3, num_classes=3, **kw)


def tiny_darts_args(**kw) -> dict:
    """SearchModule's network= for a DARTS supernet at C=4 with 3 cells on the synthetic data (3 channels, 4 classes)."""
    return dict(C=4, layers=3, num_classes=4, in_channels=3, **kw)


# a DARTS supernet of 2 nodes (5 edges) and 4 candidate ops (none, a parameter-free op, a conv, a pooling): a third of
# the default cell's time, for tests whose subject (resume, DDP, a method's loop) does not depend on the cell's size
SMALL_OPS = ("none", "skip_connect", "sep_conv_3x3", "max_pool_3x3")
SMALL_DARTS = ["space.steps=2", "space.multiplier=2", f"space.primitives=[{','.join(SMALL_OPS)}]"]


def small_darts_args(**kw) -> dict:
    """``tiny_darts_args`` with that small cell."""
    return tiny_darts_args(**{"steps": 2, "multiplier": 2, "primitives": SMALL_OPS, **kw})

# EcoNAS evaluations on generated data: C=4, 3 cells, 8 px, 4 classes
TINY_ECONAS = ["data=synthetic", "train.C=4", "train.layers=3", "data.batch_size=16"]

# a tiny Once-for-All network: two units of widths 4 and 8, 5 classes
TINY_OFA = dict(num_classes=5, in_channels=3, stem_channels=4, first_channels=4, widths=(4, 8), strides=(1, 2),
                acts=("relu", "hswish"), head_channels=16)


def seeded_step(net, x, y, seed: int) -> torch.Tensor:
    """One forward+backward of ``net`` on (x, y) after ``torch.manual_seed(seed)`` (the same Gumbel sample and
    drop-path masks for two networks compared); returns the loss, detached."""
    import torch.nn.functional as F

    torch.manual_seed(seed)
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    return loss.detach()


def assert_same_passes_up_to_sum_order(net, other, x, y) -> None:
    """Two seeded forward+backward passes of ``net`` and ``other`` (a copy computing the same ops, some of them once
    for several readers): the same outputs and buffers bit for bit (the second pass sees the running statistics the
    first one updated), the same gradients up to the order of their sums."""
    import torch.nn.functional as F

    for seed in (1, 2):
        outs = []
        for m in (net, other):
            m.zero_grad(set_to_none=True)
            torch.manual_seed(seed)
            outs.append(m(x))
            F.cross_entropy(outs[-1], y).backward()
        assert torch.equal(*outs)
    for (n, a), b in zip(net.named_parameters(), other.parameters()):
        assert (a.grad is None) == (b.grad is None), n
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-13, msg=n)
    for (n, a), b in zip(net.named_buffers(), other.buffers()):
        assert torch.equal(a, b), n


def saved_bytes(net, x, y) -> int:
    """The bytes of the tensors autograd saves over one forward+backward of ``net`` on (x, y), counted per use
    (what a checkpointed region recomputes is not among them)."""
    import torch.nn.functional as F

    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(net(x), y).backward()
    return total[0]


def one_epoch_search(order: int, hvp: str, relaxation: str, **switches):
    """A one-epoch search (4 steps) on generated data with drop path, seeded: every op of the DARTS list in a cell
    of 2 nodes (the 4-node cell triples the time and tests nothing more), ``switches`` on the supernet (e.g.
    checkpoint_cells=True, or drop_path_prob=0.0); returns the SearchModule."""
    import pytorch_lightning as pl

    from darts_lite.data import SearchDataModule
    from darts_lite.search import SearchModule

    pl.seed_everything(0, verbose=False)
    network = tiny_darts_args(**{"steps": 2, "multiplier": 2, "relaxation": relaxation, "drop_path_prob": 0.2, **switches})
    module = SearchModule(network=network, epochs=1, order=order, hvp=hvp, channels_last=False)
    dm = SearchDataModule(name="synthetic", batch_size=16, crop_padding=1, flip=True, seed=0, synthetic_samples=64,
                          synthetic_classes=4, synthetic_size=8)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                         enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    return module


def tiny_ofa_network(seed: int = 0) -> OFANetwork:
    """A tiny network whose BatchNorm statistics and kernel transformations are not at their initial values."""
    from darts_lite.ofa import OFANetwork

    torch.manual_seed(seed)
    net = OFANetwork(**TINY_OFA)
    with torch.no_grad():
        for block in net.blocks:
            for k in (3, 5):
                block.dw.transform(k).add_(0.2 * torch.randn(k * k, k * k))
    rng = random.Random(seed)
    net.train()
    for _ in range(4):  # BatchNorm running statistics from a few sampled sub-networks
        net.sample_active_subnet(rng)
        net(torch.randn(8, 3, 8, 8))
    return net


def ofa_cfg(run_dir, *overrides):
    """`+experiment=ofa_quick` shrunk to a tiny network on 48 generated images of 3 classes, one epoch a phase."""
    tiny = ["+experiment=ofa_quick", "data=synthetic", "data.synthetic_samples=48", "data.synthetic_classes=3",
            "data.batch_size=16", "ofa.network.stem_channels=4", "ofa.network.first_channels=4",
            "ofa.network.widths=[4,8]", "ofa.network.strides=[1,2]", "ofa.network.acts=[relu,hswish]",
            "ofa.network.head_channels=16", "ofa.resolutions=[6,8]", "ofa.bn_calibration=1", "ofa.val_split=0.2",
            "ofa.epochs=[1,1,1,1,1,1]", "ofa.subnets=[1,1,2,2,2,2]", "trainer.enable_progress_bar=false",
            "+trainer.enable_model_summary=false", "ofa.constraint.flops=null", f"run_dir={run_dir}"]
    return compose_cfg(*tiny, *overrides)


# ---- data -------------------------------------------------------------------------------------------------------
def fake_cifar10(path, per_file=3):
    """A tiny archive in the CIFAR-10 binary layout at ``path``; returns the labels and images written."""
    import io
    import tarfile

    import numpy as np

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    labels, images = [], []
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            lab = rng.integers(0, 10, per_file, dtype=np.uint8)
            img = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
            labels.append(lab)
            images.append(img)
            raw = np.concatenate([lab[:, None], img], axis=1).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    path.write_bytes(buf.getvalue())
    return labels, images
