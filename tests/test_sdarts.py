"""SDARTS: the weight step sees alphas within epsilon of the real ones; the alphas themselves are not changed."""

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import compose_cfg, tiny_darts_args

from darts_lite.config import ConfigError, validate_search
from darts_lite.data import SearchDataModule
from darts_lite.search import SearchModule
from darts_lite.tricks.perturb import adversarial_deltas


class _Seen(pl.Callback):
    """The alphas the network reads at every forward pass of the training steps, and the stored ones after each."""

    def __init__(self):
        self.forwards, self.after = [], []

    def on_fit_start(self, trainer, module):
        module.net.register_forward_pre_hook(
            lambda net, args: self.forwards.append([a.detach().clone() for a in net.arch_parameters()]))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.after.append([a.detach().clone() for a in module.net.arch_parameters()])


def _run(perturb, epsilon=0.05, steps=3, batches=2):
    pl.seed_everything(0, verbose=False)
    module = SearchModule(network=tiny_darts_args(), epochs=1, channels_last=False,
                          arch_lr=0.05, perturb=perturb, perturb_epsilon=epsilon, perturb_steps=steps)
    dm = SearchDataModule(name="synthetic", batch_size=16, crop_padding=0, flip=False, seed=0, synthetic_samples=64,
                          synthetic_classes=4, synthetic_size=8)
    seen = _Seen()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=batches, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                         callbacks=[seen], use_distributed_sampler=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    return module, seen


@pytest.mark.parametrize("perturb", ["random", "adversarial"])
def test_the_weight_step_sees_perturbed_alphas_within_epsilon_and_the_alphas_stay(perturb):
    plain, plain_seen = _run("none")
    smooth, seen = _run(perturb)
    # per batch: the architecture step's forward, (adversarial: 3 ascent forwards), the weight step's forward
    per_batch = 2 if perturb == "random" else 2 + 3
    assert len(seen.forwards) == 2 * per_batch
    for b in range(2):
        weight_view = seen.forwards[(b + 1) * per_batch - 1]
        for real, perturbed in zip(seen.after[b], weight_view):  # the weight step leaves the alphas as it found them
            delta = (perturbed - real).abs().max()
            assert 0.01 < delta <= 0.05 + 1e-7
    # the first architecture step comes before any perturbed weight step: both runs hold the same alphas after it,
    # so nothing of the perturbation stayed in them
    assert all(torch.equal(a, b) for a, b in zip(plain_seen.after[0], seen.after[0]))
    # while the weights did train under the perturbation
    w_plain = torch.cat([p.flatten() for p in plain.net.weight_parameters()])
    w_smooth = torch.cat([p.flatten() for p in smooth.net.weight_parameters()])
    assert not torch.equal(w_plain, w_smooth)


def test_the_adversarial_perturbation_raises_the_loss():
    module, _ = _run("adversarial", epsilon=0.5, steps=5, batches=1)
    torch.manual_seed(3)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    alphas = module.net.arch_parameters()
    saved = [a.detach().clone() for a in alphas]
    module.net.eval()
    with torch.no_grad():
        clean = F.cross_entropy(module.net(x), y)
    start = [torch.zeros_like(a) for a in saved]
    deltas = adversarial_deltas(module.net, alphas, saved, start, x, y, 0.5, steps=5)
    with torch.no_grad():
        for a, a0, d in zip(alphas, saved, deltas):
            a.copy_(a0 + d)
        attacked = F.cross_entropy(module.net(x), y)
        for a, a0 in zip(alphas, saved):
            a.copy_(a0)
    assert attacked > clean and all(d.abs().max() <= 0.5 + 1e-7 for d in deltas)


@pytest.mark.parametrize("override,message", [("search.perturb=gaussian", "search.perturb"),
                                              ("search.perturb_epsilon=-0.1", "search.perturb_epsilon"),
                                              ("search.perturb_steps=0", "search.perturb_steps")])
def test_bad_perturbation_settings_stop_before_training(override, message):
    cfg = compose_cfg("+experiment=quickstart", override)
    with pytest.raises(ConfigError, match=message):
        validate_search(cfg)
