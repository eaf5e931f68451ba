"""Shared test set-up: under pytest-xdist each worker takes its share of the cores for torch's threads."""

import os

import torch

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    # two workers each running torch on every core would contend for them and run slower than one
    _threads = max(1, (os.cpu_count() or 1) // _workers)
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)  # and the command-line runs the tests start
