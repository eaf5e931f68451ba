"""BatchNorm calibration: statistics recomputed exactly, nothing else touched; val/acc_derived in a search run."""

import csv

import pytest
import pytorch_lightning as pl
import torch
from conftest import tiny_darts_args
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from darts_lite.data import SearchDataModule
from darts_lite.relax import GumbelRelaxation
from darts_lite.search import SearchModule
from darts_lite.spaces.nb201 import SearchNetwork as NB201SearchNetwork
from darts_lite.tricks import DerivedValidation, calibrate_bn, derived_accuracy, preserved_bn_statistics
from darts_lite.tricks.bn_calibration import argmax_cells


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.BatchNorm2d(3), nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5, affine=False), nn.ReLU(), nn.Dropout(0.5),
        nn.Conv2d(5, 4, 1), nn.BatchNorm2d(4, track_running_stats=False),
    )


def _inputs_of(net, batches):
    """Each BatchNorm's input for every batch, from an identical copy run in eval mode except the BNs."""
    seen = {i: [] for i, m in enumerate(net) if isinstance(m, nn.BatchNorm2d)}
    for x in batches:
        h = x
        for i, m in enumerate(net):
            if i in seen:
                seen[i].append(h.detach().clone())
                mean = h.mean(dim=(0, 2, 3), keepdim=True)
                var = h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
                h = (h - mean) / torch.sqrt(var + m.eps)
                if m.affine:
                    h = h * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)
            elif isinstance(m, nn.Dropout):
                continue  # eval mode: dropout is off during calibration
            else:
                h = m(h)
    return seen


def test_calibrated_statistics_equal_the_batch_statistics_computed_directly():
    net = _net()
    batches = [torch.randn(8, 3, 6, 6) * (i + 1) + i for i in range(3)]
    with torch.no_grad():
        net.train()
        for _ in range(5):  # stale statistics from "training"
            net(torch.randn(8, 3, 6, 6) * 7 - 2)
    net.train()
    used = calibrate_bn(net, [(x, None) for x in batches], k=3)
    assert used == 3
    for i, inputs in _inputs_of(net, batches).items():
        bn = net[i]
        if not bn.track_running_stats:
            assert bn.running_mean is None  # always uses the batch's statistics: nothing to calibrate
            continue
        means = torch.stack([h.mean(dim=(0, 2, 3)) for h in inputs]).mean(0)
        variances = torch.stack([h.var(dim=(0, 2, 3), unbiased=True) for h in inputs]).mean(0)
        assert torch.allclose(bn.running_mean, means, atol=1e-5), i
        assert torch.allclose(bn.running_var, variances, atol=1e-4), i
        assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 3
    assert all(m.training for m in net.modules())  # modes as before


def test_calibration_reads_only_k_batches_and_refuses_none():
    net = _net()
    calls = []

    def batches():
        for i in range(10):
            calls.append(i)
            yield torch.randn(4, 3, 6, 6), None

    assert calibrate_bn(net, batches(), k=2) == 2 and calls == [0, 1]
    with pytest.raises(ValueError, match="k >= 1"):
        calibrate_bn(net, batches(), k=0)
    with pytest.raises(ValueError, match="no batch"):
        calibrate_bn(net, [], k=2)


def test_preserved_statistics_are_restored():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with preserved_bn_statistics(net):
        calibrate_bn(net, [(torch.randn(8, 3, 6, 6) + 3, None)], k=1)
        assert not torch.equal(net[0].running_mean, before["0.running_mean"])
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_derived_accuracy_measures_the_argmax_cell_and_leaves_the_supernet_as_it_was():
    torch.manual_seed(0)
    net = NB201SearchNetwork(C=4, N=1, num_classes=4, relaxation="gumbel", track_running_stats=True)
    with torch.no_grad():
        net.alphas.normal_()
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 3, 8, 8))  # the supernet's own (sampled-cell) statistics
    before = {k: v.clone() for k, v in net.state_dict().items()}
    acc = derived_accuracy(net, [(x, y)], [(x, y)], k=1)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert net.training and isinstance(net.relaxation, GumbelRelaxation)
    # the same by hand: the argmax cell, BN statistics of this batch, eval mode
    with argmax_cells(net), preserved_bn_statistics(net):
        calibrate_bn(net, [(x, y)], k=1)
        net.eval()
        with torch.no_grad():
            logits = net(x)
        net.train()
        index = net.relaxation(net.alphas).index
    assert index == net.alphas.argmax(dim=-1).tolist()
    assert acc == pytest.approx(float((logits.argmax(-1) == y).float().mean()))


def test_a_gdas_search_logs_the_derived_accuracy_and_trains_exactly_as_without(tmp_path):
    def run(callbacks, logger=False):
        pl.seed_everything(0, verbose=False)
        module = SearchModule(network=tiny_darts_args(relaxation="gumbel", drop_path_prob=0.2), epochs=2, channels_last=False)
        dm = SearchDataModule(name="synthetic", batch_size=16, crop_padding=1, flip=True, seed=0,
                              synthetic_samples=64, synthetic_classes=4, synthetic_size=8)
        trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=logger, enable_checkpointing=False,
                             enable_progress_bar=False, num_sanity_val_steps=0, callbacks=callbacks,
                             use_distributed_sampler=False, enable_model_summary=False)
        trainer.fit(module, datamodule=dm)
        return module

    plain = run([])
    logger = CSVLogger(tmp_path, name="", version="")
    measured = run([DerivedValidation(batches=2)], logger=logger)
    for (name, a), b in zip(plain.state_dict().items(), measured.state_dict().values()):
        assert torch.equal(a, b), name  # augmentation, Gumbel draws and BN statistics untouched
    with open(tmp_path / "metrics.csv") as f:
        values = [float(r["val/acc_derived"]) for r in csv.DictReader(f) if r.get("val/acc_derived")]
    assert len(values) == 2 and all(0 <= v <= 1 for v in values)
    with pytest.raises(ValueError, match="search.bn_calibration"):
        DerivedValidation(batches=0)
