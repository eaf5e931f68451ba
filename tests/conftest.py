"""Shared test set-up: under pytest-xdist each worker takes its share of the cores for torch's threads.

Also the helpers several test files use, imported as ``from conftest import compose_cfg, run_cli`` (tests/ has no
__init__.py, so pytest's default import mode puts tests/ on sys.path, in each xdist worker too). They import
darts_lite only when called, so this file loads even while a module they do not need is broken.
"""

from __future__ import annotations

import os
import random
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


def run_cli(*args, cwd, timeout=600, env=None) -> subprocess.CompletedProcess:
    """Runs `python -m darts_lite *args` in cwd to the end (with ``env``'s variables added); its stdout and stderr as
    text."""
    cmd, env = _cli(*args, env=env)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


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


# EcoNAS evaluations on generated data: C=4, 3 cells, 8 px, 4 classes
TINY_ECONAS = ["data=synthetic", "train.C=4", "train.layers=3", "data.batch_size=16"]

# a tiny Once-for-All network: two units of widths 4 and 8, 5 classes
TINY_OFA = dict(num_classes=5, in_channels=3, stem_channels=4, first_channels=4, widths=(4, 8), strides=(1, 2),
                acts=("relu", "hswish"), head_channels=16)


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
