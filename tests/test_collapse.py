"""The collapse guard: the Hessian eigenvalue against the exact Hessian, a measurement that leaves the run as it was,
the DARTS+ and DARTS-ES stop rules alone and in real runs, the logged curves, and state that survives resume."""

from __future__ import annotations

import csv
import io

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import run_cli, tiny_darts_args
from pytorch_lightning.loggers import CSVLogger
from torch.func import functional_call

from darts_lite import Genotype, SearchModule, SearchNetwork
from darts_lite.data import SearchDataModule
from darts_lite.errors import ConfigError
from darts_lite.relax import GumbelRelaxation
from darts_lite.tricks import CollapseGuard, darts_plus_stop, eigen_stop, eigen_window_means, hessian_eigenvalue

# one worker runs this module's tests, so its module fixture (straight_run) is built once, not once per worker
pytestmark = pytest.mark.xdist_group("collapse")

# ---- the eigenvalue -----------------------------------------------------------------------------


def _tiny_net(seed: int, dtype=torch.float64, **kw) -> SearchNetwork:
    """A real DARTS supernet small enough for the exact Hessian (2 x 5 edges x 8 ops = 80 alphas), alphas ~ N(0, 1)
    so that the Hessian is far from the near-uniform start."""
    torch.manual_seed(seed)
    net = SearchNetwork(C=4, layers=3, steps=2, multiplier=2, num_classes=4, in_channels=3, **kw).to(dtype)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 1)
    return net


def _exact_dominant_eigenvalue(net: SearchNetwork, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    """The eigenvalue of largest magnitude of the full Hessian w.r.t. the concatenated alphas, in train mode, with the
    same random draws as hessian_eigenvalue (the generator seeded before the forward pass)."""
    names = {id(p): n for n, p in net.named_parameters()}
    alphas = net.arch_parameters()
    flat = torch.cat([a.detach().flatten() for a in alphas])

    def loss(v: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(seed)
        parts, start = {}, 0
        for a in alphas:
            parts[names[id(a)]] = v[start:start + a.numel()].view(a.shape)
            start += a.numel()
        return F.cross_entropy(functional_call(net, parts, (x,), strict=False), y)

    net.train()
    hessian = torch.autograd.functional.hessian(loss, flat, vectorize=True)
    values = torch.linalg.eigvalsh((hessian + hessian.T) / 2)
    return float(values[values.abs().argmax()])


# random draws that every HVP must replay
_GUMBEL = {"relaxation": {"_target_": "darts_lite.relax.GumbelRelaxation", "tau_max": 1.0}, "drop_path_prob": 0.3}


def _problem(seed: int, dtype=torch.float64, **kw):
    net = _tiny_net(seed, dtype, **kw)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return net, x, torch.arange(4)


@pytest.mark.parametrize("seed,dtype,kw,tol,rel,negative", [
    (2, torch.float64, {}, 1e-10, 1e-9, True),
    (3, torch.float64, _GUMBEL, 1e-10, 1e-9, False),
    (0, torch.float64, _GUMBEL, 1e-10, 1e-9, True),
    (2, torch.float32, {}, 1e-5, 1e-5, False),  # the precision of a run (another network: fp32 draws differ)
])
def test_eigenvalue_matches_the_exact_hessian(seed, dtype, kw, tol, rel, negative, caplog):
    net, x, y = _problem(seed, dtype, **kw)
    exact = _exact_dominant_eigenvalue(net, x, y)
    measured = hessian_eigenvalue(net, x, y, iters=500, tol=tol)
    assert "not converged" not in caplog.text
    assert measured == pytest.approx(exact, rel=rel)
    assert (measured < 0) == negative  # the largest magnitude keeps its sign; both signs are covered


def test_default_settings_converge_repeat_and_warn_when_short(caplog):
    net, x, y = _problem(2)
    # the default tolerance bounds the residual: against a fully converged estimate the value is much closer still
    converged = hessian_eigenvalue(net, x, y, iters=500, tol=1e-10)
    first, second = hessian_eigenvalue(net, x, y), hessian_eigenvalue(net, x, y)
    assert first == second and first == pytest.approx(converged, rel=1e-3)
    assert "not converged" not in caplog.text
    # two eigenvalues of similar size and opposite sign: 5 products are far from enough, and it says so
    net, x, y = _problem(0)
    hessian_eigenvalue(net, x, y, iters=5)
    assert "has not converged in 5 products" in caplog.text and "raise guard.eigen_iters" in caplog.text


@pytest.mark.parametrize("training", [True, False])
def test_a_measurement_leaves_the_run_as_it_was(training):
    net = _tiny_net(0, torch.float32, relaxation=GumbelRelaxation(tau_max=1.0), drop_path_prob=0.3)
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 4
    net.train(training)
    with_grad = net.weight_parameters()[0]
    with_grad.grad = torch.full_like(with_grad, 0.5)  # an accumulated gradient must stay as it is
    state = {k: v.clone() for k, v in net.state_dict().items()}  # alphas, weights, BN running statistics
    rng = torch.get_rng_state()
    hessian_eigenvalue(net, x, y, iters=5)
    assert net.training == training
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert torch.equal(with_grad.grad, torch.full_like(with_grad, 0.5))
    assert all(p.grad is None for p in net.parameters() if p is not with_grad)
    # the check means something: one plain training-mode pass does move the BN statistics
    net.train()
    net(x)
    assert any(not torch.equal(v, state[k]) for k, v in net.state_dict().items() if "running_mean" in k)


def test_a_compiled_network_is_measured_eagerly():
    net, x, y = _problem(2, torch.float32)
    eager = hessian_eigenvalue(net, x, y, iters=3)
    net.compile()  # search.compile: a compiled forward has no double backward
    assert hessian_eigenvalue(net, x, y, iters=3) == eager


# ---- the stop rules alone -----------------------------------------------------------------------


def test_darts_plus_counts_the_normal_cells_skip_connections_only():
    v2 = Genotype.named("DARTS_V2")  # 2 skips in the normal cell
    assert darts_plus_stop(v2, max_skips=2) and not darts_plus_stop(v2, max_skips=3)
    # one skip in the normal cell, nothing but skips in the reduction cell: the reduction cell does not count
    normal = (("skip_connect", 0), ("sep_conv_3x3", 1)) + (("sep_conv_3x3", 0), ("sep_conv_3x3", 1)) * 3
    g = Genotype(normal=normal, reduce=(("skip_connect", 0), ("skip_connect", 1)) * 4)
    assert darts_plus_stop(g, max_skips=1) and not darts_plus_stop(g, max_skips=2)


def _first_stop(values, window, ratio=0.75):
    """The measurement index at which the rule fires first, applying it after every measurement as the guard does."""
    return next((i for i in range(len(values)) if eigen_stop(values[: i + 1], window, ratio)), None)


def test_eigen_rule_compares_two_adjacent_windows():
    # window 2: mean(i) = (l[i-1] + l[i]) / 2; at i = 5: mean(3) = 4, mean(5) = 5.5, ratio 0.727 < 0.75
    values = [4.0, 4.0, 4.0, 4.0, 5.0, 6.0, 8.0, 8.0]
    assert _first_stop(values, 2) == 5
    assert eigen_window_means(values[:6], 2) == (4.0, 5.5)
    assert eigen_window_means(values[:3], 2) is None
    # the ratio must fall below the threshold: exactly 0.75 (3 -> 4) does not stop
    assert _first_stop([3.0, 3.0, 3.0, 3.0, 4.0, 4.0, 5.0], 2) is None
    # however steep the growth, the rule first fires once both windows are full: at the 2k-th measurement
    assert _first_stop([1.0, 10.0, 100.0, 1000.0, 1e4], 2) == 3
    assert _first_stop([1.0] * 9 + [100.0], 5) == 9 and _first_stop([1.0] * 8 + [100.0], 5) is None
    # no positive curvature to have grown: no stop; from non-positive to positive: stop
    assert _first_stop([-1.0, -1.0, -5.0, -5.0], 2) is None
    assert _first_stop([-1.0, -1.0, 1.0, 1.0], 2) == 3


# ---- the guard in real runs ---------------------------------------------------------------------

_SKIP_EDGES = (0, 1, 2, 3, 5, 6, 9, 10)  # edges from inputs 0 and 1 of each node: the ones kept on a tie


def _alphas_with_skips(net: SearchNetwork, n: int) -> torch.Tensor:
    """alpha_normal whose derived normal cell holds exactly n skip connections (sep_conv_3x3 elsewhere): a skip edge is
    more certain than a sep_conv edge, so the derivation keeps it."""
    alpha = torch.zeros_like(net.alpha_normal)
    alpha[:, net.primitives.index("sep_conv_3x3")] = 5.0
    for e in _SKIP_EDGES[:n]:
        alpha[e] = 0.0
        alpha[e, net.primitives.index("skip_connect")] = 6.0
    return alpha


class _AlphaSchedule(pl.Callback):
    """Sets the normal cell's alphas at the start of each epoch to hold schedule[epoch] skip connections."""

    def __init__(self, schedule):
        self.schedule, self.started = schedule, []

    def on_train_epoch_start(self, trainer, module):
        self.started.append(trainer.current_epoch)
        with torch.no_grad():
            module.net.alpha_normal.copy_(_alphas_with_skips(module.net, self.schedule[trainer.current_epoch]))


class _ScriptedEigenvalues(CollapseGuard):
    """A guard whose measurements are given per epoch: the callback's bookkeeping without the Hessian."""

    def __init__(self, values, **kw):
        super().__init__(**kw)
        self.values = values

    def _measure(self, trainer, module):
        return self.values[trainer.current_epoch]


def _module(epochs, warmup_epochs=0, frozen_alphas=False, **network):
    # with a zero architecture rate the alphas are exactly what the schedule sets, also after active epochs
    arch = dict(arch_lr=0.0, arch_weight_decay=0.0) if frozen_alphas else {}
    pl.seed_everything(0, verbose=False)  # the same initial network every time
    return SearchModule(network=tiny_darts_args(**network), epochs=epochs, warmup_epochs=warmup_epochs,
                        channels_last=False, **arch)


def _fit(module, epochs, callbacks, logger=False, ckpt_dir=None, ckpt_path=None):
    pl.seed_everything(0, verbose=False)
    dm = SearchDataModule(name="synthetic", batch_size=16, crop_padding=0, flip=False, seed=0,
                          synthetic_samples=64, synthetic_classes=4, synthetic_size=8)
    callbacks = list(callbacks)
    if ckpt_dir is not None:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1,
                                                      enable_version_counter=False))
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=logger, enable_checkpointing=ckpt_dir is not None,
        enable_progress_bar=False, num_sanity_val_steps=0, callbacks=callbacks, use_distributed_sampler=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer


def _metrics(logger: CSVLogger) -> dict[int, dict[str, str]]:
    """metrics.csv's guard columns by epoch (the non-empty cells of every row of that epoch)."""
    rows: dict[int, dict[str, str]] = {}
    with open(f"{logger.log_dir}/metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get("epoch"):
                rows.setdefault(int(float(row["epoch"])), {}).update(
                    {k: v for k, v in row.items() if k.startswith("guard/") and v != ""})
    return rows


def test_darts_plus_stops_at_the_epoch_of_the_second_skip_and_ignores_warmup(tmp_path):
    # epoch 0 trains the weights only: its two skips are the initial alphas' and must not count
    schedule = {0: 2, 1: 0, 2: 1, 3: 2, 4: 3, 5: 3}
    module = _module(6, warmup_epochs=1, frozen_alphas=True)
    guard = CollapseGuard(eigen_every=0, stop="darts_plus", max_skips=2)
    logger = CSVLogger(tmp_path, name="", version="")
    trainer = _fit(module, 6, [_AlphaSchedule(schedule), guard], logger=logger)
    assert guard.stopped["rule"] == "darts_plus" and guard.stopped["epoch"] == 3
    assert trainer.current_epoch == 4  # epochs 0..3 ran, none after the stop
    assert sorted(guard.genotypes) == [0, 1, 2, 3]
    last = module.net.genotype()
    assert last.to_text() == guard.genotypes[3] and sum(op == "skip_connect" for op, _ in last.cells()["normal"]) == 2
    assert "2 skip connections" in guard.stopped["reason"]
    metrics = _metrics(logger)
    assert sorted(metrics) == [0, 1, 2, 3]
    assert [float(metrics[e]["guard/skip_connections"]) for e in range(4)] == [2, 0, 1, 2]
    for e in range(4):
        assert 0 <= float(metrics[e]["guard/param_free_share"]) <= 1 and float(metrics[e]["guard/entropy"]) >= 0
        assert "guard/eigenvalue" not in metrics[e]
    # the share is the mean over both cells: the normal cell's 2 of 8 skips add 1/8 to epoch 1's
    assert float(metrics[3]["guard/param_free_share"]) == pytest.approx(float(metrics[1]["guard/param_free_share"]) + 1 / 8)


def test_eigenvalue_measured_on_the_right_epochs_and_the_run_unchanged(tmp_path):
    # gumbel and drop path draw from the RNG every step: a measurement that moved the streams (or the BN
    # statistics, or left gradients) would change the run's final state
    network = dict(relaxation="gumbel", drop_path_prob=0.2)
    plain = _module(3, warmup_epochs=1, **network)
    _fit(plain, 3, [])
    guarded = _module(3, warmup_epochs=1, **network)
    guard = CollapseGuard(eigen_every=2, eigen_iters=4, eigen_tol=0.0, eigen_batch=16, stop="eigen", eigen_window=5)
    logger = CSVLogger(tmp_path, name="", version="")
    _fit(guarded, 3, [guard], logger=logger)
    for (name, a), b in zip(plain.state_dict().items(), guarded.state_dict().values()):
        assert torch.equal(a, b), name
    # every 2nd epoch that trains the alphas: warm-up epoch 0 does not count, so epoch 2 (not 1)
    assert [e for e, _ in guard.eigenvalues] == [2]
    metrics = _metrics(logger)
    assert sorted(metrics) == [0, 1, 2] and [e for e in metrics if "guard/eigenvalue" in metrics[e]] == [2]
    value = guard.eigenvalues[0][1]
    assert float(metrics[2]["guard/eigenvalue"]) == pytest.approx(value, rel=1e-6) and value != 0
    assert guard.stopped is None  # one measurement cannot fill two windows


# measurements 0..4 at epochs 1..5 (epoch 0 is warm-up). Window 2: at measurement 3 (epoch 4) mean(1) / mean(3) =
# 4 / 5 = 0.8 goes on; at measurement 4 (epoch 5) mean(2) / mean(4) = 4 / 6 < 0.75 stops, and measurement 2
# (epoch 3) ended the earlier window
_EIGEN = {1: 4.0, 2: 4.0, 3: 4.0, 4: 6.0, 5: 6.0, 6: 8.0}
_GUARD = dict(eigen_every=1, eigen_batch=16, stop="eigen", eigen_window=2, eigen_ratio=0.75)
_SCHEDULE = {e: e for e in range(7)}  # a different genotype every epoch: epoch e holds e skip connections


def _scripted_run(epochs, ckpt_dir=None, ckpt_path=None):
    schedule, guard = _AlphaSchedule(_SCHEDULE), _ScriptedEigenvalues(_EIGEN, **_GUARD)
    module = _module(7, warmup_epochs=1, frozen_alphas=True)
    trainer = _fit(module, epochs, [schedule, guard], ckpt_dir=ckpt_dir, ckpt_path=ckpt_path)
    return trainer, module, schedule, guard


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("straight")
    return (*_scripted_run(7, ckpt_dir=ckpt), ckpt / "last.ckpt")


def test_eigen_stop_in_a_run_reports_the_genotype_one_window_earlier(straight_run):
    trainer, module, _, guard, _ = straight_run
    assert guard.stopped["rule"] == "eigen" and guard.stopped["epoch"] == 5 and trainer.current_epoch == 6
    assert [e for e, _ in guard.eigenvalues] == [1, 2, 3, 4, 5]
    assert guard.stopped["rollback_epoch"] == 3
    rollback = Genotype.parse(guard.stopped["rollback_genotype"])
    assert sum(op == "skip_connect" for op, _ in rollback.cells()["normal"]) == 3
    assert module.net.genotype().to_text() == guard.genotypes[5] != guard.stopped["rollback_genotype"]
    assert "4 over 2 measurements to 6" in guard.stopped["reason"]


def test_a_resumed_run_takes_the_same_decision(straight_run, tmp_path):
    *_, straight, straight_ckpt = straight_run
    # killed after epoch 3 (the rollback epoch): measurements 0..2 and the genotypes of epochs 0..3 live only in the
    # checkpoint, and without them the resumed run could not fill its windows by epoch 5
    _scripted_run(4, ckpt_dir=tmp_path / "split")
    _, _, schedule, resumed = _scripted_run(7, ckpt_dir=tmp_path / "resumed", ckpt_path=str(tmp_path / "split" / "last.ckpt"))
    assert schedule.started == [4, 5]
    assert resumed.stopped == straight.stopped
    assert resumed.eigenvalues == straight.eigenvalues and resumed.genotypes == straight.genotypes
    # resuming the stopped run's own checkpoint trains no further epoch and keeps the decision
    _, _, schedule, again = _scripted_run(7, ckpt_dir=tmp_path / "again", ckpt_path=str(straight_ckpt))
    assert schedule.started == [] and again.stopped == straight.stopped


def test_state_dict_round_trip_through_a_weights_only_load():
    guard = CollapseGuard(eigen_every=1, stop="eigen")
    guard.eigenvalues = [(2, 0.5), (3, -0.25)]
    guard.genotypes = {2: Genotype.named("DARTS_V1").to_text(), 3: Genotype.named("DARTS_V2").to_text()}
    guard.stopped = {"rule": "eigen", "epoch": 3, "reason": "grew", "rollback_epoch": 2,
                     "rollback_genotype": guard.genotypes[2]}
    buffer = io.BytesIO()
    torch.save(guard.state_dict(), buffer)
    buffer.seek(0)
    restored = CollapseGuard(eigen_every=1, stop="eigen")
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert (restored.eigenvalues, restored.genotypes, restored.stopped) == (guard.eigenvalues, guard.genotypes, guard.stopped)
    # resumed under another rule (to go on past the stop), the old decision is dropped, the history kept
    other = CollapseGuard(eigen_every=1, stop="none")
    other.load_state_dict(guard.state_dict())
    assert other.stopped is None and other.eigenvalues == guard.eigenvalues


@pytest.mark.parametrize("kw,key", [
    (dict(stop="sometimes"), "guard.stop"), (dict(eigen_every=-1), "guard.eigen_every"),
    (dict(eigen_iters=0), "guard.eigen_iters"), (dict(eigen_batch=0), "guard.eigen_batch"),
    (dict(max_skips=0), "guard.max_skips"), (dict(eigen_window=0), "guard.eigen_window"),
    (dict(eigen_ratio=1.5), "guard.eigen_ratio"), (dict(eigen_tol=-1.0), "guard.eigen_tol"),
    (dict(stop="eigen", eigen_every=0), "guard.eigen_every"),
])
def test_bad_options_are_refused_naming_the_key(kw, key):
    # built from Python the guard names its argument; from a config the key (guard.*, test below)
    with pytest.raises(ConfigError, match=r"CollapseGuard: .*\b" + key.split(".")[-1]):
        CollapseGuard(**kw)


def test_an_eigen_batch_larger_than_the_validation_data_stops_before_training():
    module = _module(1)
    with pytest.raises(ConfigError, match="guard.eigen_batch=1000 .* than the 32 there are"):
        _fit(module, 1, [CollapseGuard(eigen_every=1, eigen_batch=1000)])


# ---- through the command line ------------------------------------------------------------------------------
def test_guard_group_through_the_command_line(tmp_path):
    import csv as _csv
    import json as _json

    def cli(*args):
        return run_cli(*args, cwd=tmp_path)

    run = tmp_path / "run"
    proc = cli("+experiment=nb201_quick", "guard=collapse", "search.epochs=3", "search.warmup_epochs=1", "space.N=1",
               "+trainer.limit_train_batches=5", "guard.eigen_iters=3", "guard.eigen_batch=16", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _json.loads((run / "summary.json").read_text())
    assert summary["stopped"] is None  # guard.stop=none: measures only, every epoch runs
    rows = list(_csv.DictReader(open(run / "metrics.csv")))
    for metric in ("guard/param_free_share", "guard/entropy", "guard/skip_connections"):
        assert len([r for r in rows if r.get(metric)]) == 3, metric
    eigen = [(int(r["epoch"]), float(r["guard/eigenvalue"])) for r in rows if r.get("guard/eigenvalue")]
    assert [e for e, _ in eigen] == [1, 2]  # after each epoch that trained the alphas, none during warm-up
    # a rule that could never fire is refused before anything runs, as a bad value is
    refused = cli("+experiment=nb201_quick", "guard=collapse", "guard.stop=eigen", "search.epochs=6",
                  f"hydra.run.dir={tmp_path / 'no'}")
    assert refused.returncode != 0
    assert ("guard.stop=eigen: the rule compares two windows of guard.eigen_window=5 measurements, and 4 epochs after "
            "warm-up with guard.eigen_every=1 give 4") in refused.stderr
    bad = cli("+experiment=nb201_quick", "guard=collapse", "guard.stop=sometimes", f"hydra.run.dir={tmp_path / 'no'}")
    assert "guard.stop='sometimes': must be one of none, darts_plus, eigen" in bad.stderr
