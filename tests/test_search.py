"""SearchModule under a real Trainer on generated data: warm-up, schedules, both orders, GDAS."""

import pytest
import pytorch_lightning as pl
import torch
from conftest import small_darts_args, tiny_darts_args

from darts_lite import SearchModule
from darts_lite.data import SearchDataModule
from darts_lite.search import frozen


def _fit(module, epochs, callbacks=(), **data):
    pl.seed_everything(0, verbose=False)
    dm = SearchDataModule(name="synthetic", batch_size=16, crop_padding=0, flip=False, seed=0,
                          synthetic_samples=128, synthetic_classes=4, synthetic_size=8, **data)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        num_sanity_val_steps=0, callbacks=list(callbacks), use_distributed_sampler=False, enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    return trainer


def _module(cell=tiny_darts_args, **kw):
    return SearchModule(network=cell(**kw.pop("network", {})), **kw)


def _small_module(**kw):
    """A supernet of 2 nodes and 4 ops, for tests of the training loop, which does not depend on the cell."""
    return _module(cell=small_darts_args, **kw)


class _Snapshots(pl.Callback):
    def __init__(self):
        self.alphas, self.tau, self.lr = [], [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx:
            return
        self.tau.append(module.net.tau)
        self.lr.append(module.optimizers()[0].optimizer.param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer, module):
        self.alphas.append([a.detach().clone() for a in module.net.arch_parameters()])


def test_warmup_leaves_alphas_unchanged_then_they_move():
    module = _module(epochs=3, warmup_epochs=2)
    before = [a.detach().clone() for a in module.net.arch_parameters()]
    weights_before = [p.detach().clone() for p in module.net.weight_parameters()]
    snaps = _Snapshots()
    _fit(module, 3, [snaps])
    for epoch in (0, 1):
        for a0, a in zip(before, snaps.alphas[epoch]):
            assert torch.equal(a0, a), f"alphas moved during warm-up epoch {epoch}"
    assert any(not torch.equal(a0, a) for a0, a in zip(before, snaps.alphas[2]))
    assert any(not torch.equal(w0, w) for w0, w in zip(weights_before, module.net.weight_parameters()))


def test_cosine_schedule_and_tau_schedule_per_epoch():
    module = _module(epochs=3, lr=0.1, lr_min=0.01,
                     network=dict(relaxation=dict(_target_="darts_lite.relax.GumbelRelaxation", tau_max=10.0, tau_min=0.1)))
    snaps = _Snapshots()
    _fit(module, 3, [snaps])
    assert snaps.tau == pytest.approx([10.0, 5.05, 0.1])
    assert snaps.lr == pytest.approx([0.1, 0.01 + 0.09 * 0.75, 0.01 + 0.09 * 0.25])


@pytest.mark.parametrize("order,relaxation", [(1, "softmax"), (2, "softmax"), (1, "gumbel")])
def test_search_trains_both_levels(order, relaxation):
    module = _small_module(epochs=2, order=order, arch_lr=0.01, network=dict(relaxation=relaxation))
    before = [a.detach().clone() for a in module.net.arch_parameters()]
    trainer = _fit(module, 2)
    assert all(not torch.equal(a0, a) for a0, a in zip(before, module.net.arch_parameters()))
    metrics = trainer.callback_metrics
    for key in ("search/train_loss", "search/arch_loss", "search/train_acc", "val/acc", "search/lr"):
        assert key in metrics and torch.isfinite(metrics[key])
    assert "alpha/normal/edge00/sep_conv_3x3" in metrics
    # manual optimisation: two optimizer steps per batch once the alphas train
    assert trainer.global_step == 2 * 2 * len(trainer.datamodule.train_dataloader())


def test_frozen_keeps_a_level_out_of_backward():
    net = _module(epochs=1).net
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
    with frozen(net.arch_parameters()):
        torch.nn.functional.cross_entropy(net(x), y).backward()
    assert all(a.grad is None for a in net.arch_parameters())
    assert all(p.grad is not None for p in net.weight_parameters() if p.requires_grad)
    assert all(a.requires_grad for a in net.arch_parameters())  # restored afterwards


def test_non_finite_loss_stops_with_message():
    module = _module(epochs=1, lr=1e30, grad_clip=None, momentum=0.0)
    with pytest.raises(FloatingPointError, match="loss became"):
        _fit(module, 1)


def test_non_finite_gradient_stops_before_the_weights_take_it():
    """A finite loss can still give an infinite gradient: the run stops before the step, weights intact."""
    module = _module(epochs=1, grad_clip=5.0)
    first = module.net.weight_parameters()[0]
    first.register_hook(lambda g: g * float("inf"))
    with pytest.raises(FloatingPointError, match="weight gradient norm became"):
        _fit(module, 1)
    assert all(torch.isfinite(p).all() for p in module.net.weight_parameters())


def test_weight_gradients_are_clipped_before_each_step():
    module = _module(epochs=2, warmup_epochs=1, grad_clip=1e-3)  # one epoch is fitted: weights only
    norms, clip = [], module.on_before_optimizer_step

    def clip_then_measure(optimizer):
        clip(optimizer)
        if optimizer is module.optimizers()[0].optimizer:
            grads = [p.grad for p in module.net.weight_parameters() if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).item())

    module.on_before_optimizer_step = clip_then_measure
    _fit(module, 1)
    assert norms and max(norms) < 1.001e-3


def test_fp16_loss_scaling_does_not_shrink_weight_updates():
    """16-mixed on a GPU scales the loss: clipping must see the unscaled gradients (here: a CPU GradScaler)."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    def weight_change(plugins):
        pl.seed_everything(0, verbose=False)
        module = _module(epochs=2, warmup_epochs=1, channels_last=False)  # one epoch is fitted: weights only
        before = [p.detach().clone() for p in module.net.weight_parameters()]
        dm = SearchDataModule(name="synthetic", batch_size=16, crop_padding=0, flip=False, synthetic_samples=64,
                              synthetic_classes=4, synthetic_size=8)
        trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                             enable_model_summary=False, limit_val_batches=0, plugins=plugins)
        trainer.fit(module, datamodule=dm)
        return sum((p.detach() - q).norm() ** 2 for p, q in zip(module.net.weight_parameters(), before)).sqrt().item()

    full = weight_change([])
    scaled = weight_change([MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16))])
    assert 0.5 < scaled / full < 2.0  # clipping the scaled gradients would make this about 1 / 65536


def test_resuming_with_a_new_learning_rate_rebases_the_cosine_schedule(tmp_path):
    import math

    first = _small_module(epochs=4, lr=0.1, lr_min=0.001)
    trainer = _fit(first, 2)
    trainer.save_checkpoint(tmp_path / "last.ckpt")

    resumed, seen = _small_module(epochs=4, lr=0.01, lr_min=0.001, arch_lr=1e-4), _Snapshots()
    pl.seed_everything(0, verbose=False)
    dm = SearchDataModule(name="synthetic", batch_size=16, crop_padding=0, flip=False, seed=0,
                          synthetic_samples=128, synthetic_classes=4, synthetic_size=8)
    pl.Trainer(accelerator="cpu", max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               num_sanity_val_steps=0, callbacks=[seen], use_distributed_sampler=False, enable_model_summary=False,
               ).fit(resumed, datamodule=dm, ckpt_path=tmp_path / "last.ckpt")
    cosine = [0.001 + (0.01 - 0.001) * (1 + math.cos(math.pi * e / 4)) / 2 for e in (2, 3)]
    assert seen.lr == pytest.approx(cosine)  # the new rate's schedule, from the epoch reached
    assert resumed.optimizers()[1].optimizer.param_groups[0]["lr"] == 1e-4


def test_channels_last_layout_computes_the_same_function():
    torch.manual_seed(0)
    a = _module(channels_last=False)
    b = _module(channels_last=True)
    b.load_state_dict(a.state_dict())
    b.setup("fit")
    conv = next(m for m in b.net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 8, 8)
    a.eval(), b.eval()
    torch.testing.assert_close(b(x), a(x), rtol=1e-4, atol=1e-5)


def test_bf16_mixed_precision_search_runs_on_cpu():
    """The GPU mixed-precision path, as far as a CPU runs it: bf16 autocast, both orders."""
    for order in (1, 2):
        module = _module(epochs=1, order=order)
        pl.seed_everything(0, verbose=False)
        dm = SearchDataModule(name="synthetic", batch_size=16, crop_padding=0, flip=False, synthetic_samples=64,
                              synthetic_classes=4, synthetic_size=8)
        trainer = pl.Trainer(accelerator="cpu", max_epochs=1, precision="bf16-mixed", logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                             use_distributed_sampler=False, enable_model_summary=False)
        trainer.fit(module, datamodule=dm)
        assert torch.isfinite(trainer.callback_metrics["search/train_loss"])
        assert all(a.dtype == torch.float32 for a in module.net.arch_parameters())  # master weights stay fp32


def test_compile_is_refused_where_it_would_recompile_every_step():
    for kw in (dict(order=2), dict(network=dict(relaxation="gumbel"))):
        with pytest.raises(ValueError, match="first-order DARTS only"):
            _module(compile=True, **kw)


# ---- the reference loops' switches (search.step_order, search.zero_grad) ----------------------------------------
class _Batches(pl.Callback):
    """Every step's batch and the random-number state its step starts from."""

    def __init__(self):
        self.batches, self.rng = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches.append([[t.clone() for t in part] for part in batch])
        self.rng.append(torch.get_rng_state())


def _hand_written_loop(net, batches, weights_first, lr=0.025, momentum=0.9, wd=3e-4):
    """First-order DARTS in a dozen lines, in either order: the loop the switches must reproduce."""
    opt_w = torch.optim.SGD(net.weight_parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    opt_a = torch.optim.Adam(net.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)

    def weight_step(x, y):
        opt_w.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
        opt_w.step()

    def arch_step(x, y):
        opt_a.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt_a.step()

    for (x_w, y_w), (x_a, y_a) in batches:
        if weights_first:
            weight_step(x_w, y_w)
            arch_step(x_a, y_a)
        else:
            arch_step(x_a, y_a)
            weight_step(x_w, y_w)


def test_step_order_weights_first_is_the_reference_loop():
    import copy

    pl.seed_everything(0, verbose=False)
    module = _small_module(epochs=1, step_order="weights_first", channels_last=False, lr_min=0.025)
    start = copy.deepcopy(module.net)
    batches = _Batches()
    _fit(module, 1, [batches])
    found = dict(module.net.named_parameters())
    for weights_first, agrees in ((True, True), (False, False)):
        net = copy.deepcopy(start).train()
        _hand_written_loop(net, batches.batches, weights_first)
        diff = max((p - found[n]).abs().max().item() for n, p in net.named_parameters())
        assert (diff < 1e-5) == agrees, (weights_first, diff)


def test_zero_grad_fill_keeps_moving_every_op_once_sampled():
    """GDAS samples one op per edge: with zero_grad=none an op not sampled in a step stands still; with fill (torch
    1.x's zero_grad) every op that ever had a gradient keeps taking momentum and weight decay."""

    class Moved(pl.Callback):
        def __init__(self):
            self.before, self.moved = None, []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.before = {n: p.detach().clone() for n, p in module.net.named_parameters() if "alpha" not in n}

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.moved.append({n for n, p in module.net.named_parameters()
                               if n in self.before and not torch.equal(p, self.before[n])})

    gumbel = dict(relaxation=dict(_target_="darts_lite.relax.GumbelRelaxation"))
    for fill in (False, True):
        moved = Moved()
        _fit(_module(epochs=1, zero_grad="fill" if fill else "none", network=gumbel), 1, [moved])
        ever = set()
        stood_still = False
        for step in moved.moved:
            stood_still |= bool(ever - step)  # moved in an earlier step, not in this one
            ever |= step
        assert stood_still != fill, (fill, [len(m) for m in moved.moved])


def test_single_level_takes_both_updates_from_one_pass_on_the_weight_batch():
    """search.single_level (SNAS's loop): the weights' and the alphas' gradients come from one forward and backward
    pass of the training loss on the weight batch, through one sample of the soft Gumbel weights; the architecture
    batch is never read. Reproduced by a hand-written loop that sees the weight batches only."""
    import copy

    pl.seed_everything(0, verbose=False)
    snas = dict(relaxation=dict(_target_="darts_lite.methods.snas.SoftGumbelRelaxation"))
    module = _small_module(epochs=2, single_level=True, channels_last=False, lr_min=0.025, network=snas)
    start = copy.deepcopy(module.net)
    batches = _Batches()
    _fit(module, 1, [batches])  # the first of two epochs: 4 steps
    net = copy.deepcopy(start).train()
    net.relaxation.set_epoch(0, 2)
    opt_w = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    opt_a = torch.optim.Adam(net.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    for ((x, y), _), rng in zip(batches.batches, batches.rng):
        torch.set_rng_state(rng)
        opt_w.zero_grad()
        opt_a.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
        opt_w.step()
        opt_a.step()
    found = dict(module.net.named_parameters())
    assert len(batches.batches) == 4
    for name, p in net.named_parameters():
        torch.testing.assert_close(found[name], p, rtol=0, atol=1e-6, msg=name)
    moved = [not torch.equal(a, b) for a, b in zip(module.net.arch_parameters(), start.arch_parameters())]
    assert all(moved)


def test_single_level_is_refused_with_the_second_order_and_sdarts():
    from darts_lite.errors import ConfigError

    with pytest.raises(ConfigError, match="single_level=true: not with order=2"):
        _small_module(single_level=True, order=2)
    with pytest.raises(ConfigError, match="single_level=true: not with perturb=random"):
        _small_module(single_level=True, perturb="random")


def test_arch_grad_clip_bounds_the_alphas_gradient_at_each_update():
    """search.arch_grad_clip (SNAS's code: 10, search=snas sets it): the alphas' gradient norm at every architecture
    update is at most the clip; unclipped it is not."""
    from conftest import compose_cfg

    class Norms(pl.Callback):
        def __init__(self):
            self.norms = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            # the weight step leaves the alphas' gradient as the architecture update used it
            grads = torch.cat([a.grad.flatten() for a in module.net.arch_parameters()])
            self.norms.append(torch.linalg.vector_norm(grads).item())

    for clip in (None, 1e-4):
        norms = Norms()
        _fit(_small_module(epochs=1, arch_grad_clip=clip), 1, [norms])
        assert len(norms.norms) == 4
        assert all(n <= 1e-4 * (1 + 1e-5) for n in norms.norms) == (clip is not None), norms.norms
    assert compose_cfg("+experiment=quickstart", "search=snas").search.arch_grad_clip == 10.0
