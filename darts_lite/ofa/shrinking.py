"""Progressive shrinking: the Once-for-All network trained in phases, each a ``ShrinkingModule`` run.

    full      the largest network alone
    kernel    kernel sizes elastic (all of ks_list)
    depth1    + depths elastic: the two largest of depth_list ({3, 4})
    depth2    + every depth ({2, 3, 4})
    expand1   + expand ratios elastic: the two largest of expand_list ({4, 6}); channels re-sorted first
    expand2   + every expand ratio ({3, 4, 6}); re-sorted within the widths expand1 trained

Each phase starts from the previous phase's final weights. Every step draws one input side from the
resolutions, then ``subnets`` settings from the phase's choices; each sub-network's loss (cross-entropy plus
``kd_weight`` x the soft cross-entropy against the full network of the first phase, frozen) is back-propagated
and the gradients add up before one optimiser step. The draws depend only on (seed, phase, step): a resumed
phase draws what the uninterrupted one would have.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..resume import Resumable
from ..tricks import calibrate_bn
from .network import OFANetwork


@dataclass(frozen=True)
class Phase:
    """A phase of progressive shrinking: how many of the largest values of each choice list it samples from
    (1 = the largest only, 0 = all)."""

    name: str
    kernel: int
    depth: int
    expand: int

    def choices(self, net: OFANetwork) -> dict[str, list]:
        """{"ks_list", "expand_list", "depth_list"} this phase samples from, on ``net``'s choices."""
        def top(values: list, n: int) -> list:
            return list(values) if n == 0 else list(values[-n:])

        return {"ks_list": top(net.ks_list, self.kernel), "expand_list": top(net.expand_list, self.expand),
                "depth_list": top(net.depth_list, self.depth)}


PHASES = (
    Phase("full", 1, 1, 1),
    Phase("kernel", 0, 1, 1),
    Phase("depth1", 0, 2, 1),
    Phase("depth2", 0, 0, 1),
    Phase("expand1", 0, 0, 2),
    Phase("expand2", 0, 0, 0),
)
PHASE_NAMES = tuple(p.name for p in PHASES)


def get_phase(name: str) -> Phase:
    if name not in PHASE_NAMES:
        raise ValueError(f"phase {name!r}: must be one of {', '.join(PHASE_NAMES)}")
    return PHASES[PHASE_NAMES.index(name)]


def resize(x: torch.Tensor, side: int | None) -> torch.Tensor:
    """x [B, C, H, W] resized to [B, C, side, side] (bilinear, antialiased when shrinking); None or equal: x."""
    if side is None or (x.shape[-1] == side and x.shape[-2] == side):
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=side < x.shape[-1])


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c p_c log softmax(logits)_c; logits and target_probs [B, classes]."""
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


@torch.no_grad()
def subnet_accuracy(subnet: nn.Module, calibration: Iterable[Any], batches: Iterable[Any], k: int,
                    side: int | None = None) -> float:
    """Accuracy of a standalone sub-network on ``batches`` of (x, y) at input ``side``, after its BatchNorm
    statistics are recomputed on ``k`` of the ``calibration`` batches (the elastic network's are an average over
    every sub-network trained, right for none). The sub-network is left calibrated and in eval mode."""
    calibrate_bn(subnet, ((resize(x, side), y) for x, y in calibration), k)
    subnet.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((subnet(resize(x, side)).argmax(dim=-1) == y).sum())
        total += len(y)
    return correct / max(1, total)


class ShrinkingModule(Resumable, pl.LightningModule):
    """One phase of progressive shrinking (see the module docstring).

    network: OFANetwork arguments. phase: a name of PHASES. resolutions: input sides drawn per training batch
    (None: the data's). teacher: built when the phase distils (not ``full``, kd_weight > 0); its weights come
    with ``start_from`` and then travel in the phase's checkpoints. Validation measures the phase's largest and
    smallest sub-networks (``val/acc_max``, ``val/acc_min``) at the largest resolution, each a standalone copy
    with BatchNorm recalibrated on ``bn_calibration`` training batches.
    """

    def __init__(
        self,
        network: dict[str, Any],
        phase: str = "full",
        epochs: int = 10,
        lr: float = 0.05,
        lr_min: float = 0.0,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 3e-5,
        grad_clip: float | None = None,
        subnets: int = 1,
        kd_weight: float = 1.0,
        resolutions: Sequence[int] | None = None,
        bn_calibration: int = 4,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False  # several sub-networks' gradients add up before one step
        self.phase = get_phase(phase)
        self.net = OFANetwork(**network)
        self.choices = self.phase.choices(self.net)
        self.teacher = None
        if self.phase.name != "full" and kd_weight > 0:
            self.teacher = OFANetwork(**network).requires_grad_(False).eval()
        n = self.net.config["num_classes"]
        self.val_acc = nn.ModuleDict({size: MulticlassAccuracy(num_classes=n, average="micro") for size in self.measured})
        self._subnets: dict[str, nn.Module] = {}

    @property
    def measured(self) -> tuple[str, ...]:
        """The sub-networks validated: the largest, and the smallest when the phase has more than one."""
        one = all(len(v) == 1 for v in self.choices.values())
        return ("max",) if one else ("max", "min")

    def extreme_setting(self, which: str) -> dict[str, Any]:
        """The phase's largest (``max``) or smallest (``min``) setting."""
        pick = max if which == "max" else min
        return {"ks": pick(self.choices["ks_list"]), "e": pick(self.choices["expand_list"]),
                "d": pick(self.choices["depth_list"])}

    def start_from(self, previous: dict[str, torch.Tensor] | None, teacher: dict[str, torch.Tensor] | None,
                   keep: Sequence[float] = ()) -> None:
        """Begin the phase: the previous phase's network weights, the full network's for the teacher; an expand
        phase then re-sorts the hidden channels (``keep``: the expand ratios the previous phase trained)."""
        if previous is not None:
            self.net.load_state_dict(previous)
        if self.teacher is not None:
            if teacher is None:
                raise ValueError(f"phase {self.phase.name} distils from the full network: give its weights")
            self.teacher.load_state_dict(teacher)
        if self.phase.expand != 1:
            self.net.reorder_channels(keep)

    def train(self, mode: bool = True) -> ShrinkingModule:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # a fixed target: its BatchNorm statistics must not move
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD(self.net.parameters(), lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov,
                              weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=hp.epochs, eta_min=hp.lr_min)
        return [opt], [{"scheduler": sched, "interval": "epoch"}]

    def _draws(self) -> random.Random:
        # a string seed is hashed deterministically: the same step of the same phase draws the same, resumed or not
        return random.Random(f"{self.hparams.seed}/{self.phase.name}/{self.global_step}")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        hp = self.hparams
        rng = self._draws()
        x = resize(x, rng.choice(list(hp.resolutions)) if hp.resolutions else None)
        soft = None
        if self.teacher is not None:
            with torch.no_grad():
                soft = F.softmax(self.teacher(x), dim=-1)
        opt = self.optimizers()
        opt.zero_grad()
        total = torch.zeros((), device=x.device)
        for _ in range(hp.subnets):
            if self.phase.name == "full":
                self.net.set_max_net()
            else:
                self.net.sample_active_subnet(rng, **self.choices)
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
            if soft is not None:
                loss = loss + hp.kd_weight * soft_cross_entropy(logits, soft)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the training loss became {loss.item()} in phase {self.phase.name}, "
                                         f"epoch {self.current_epoch}")
            self.manual_backward(loss)  # gradients of the sub-networks add up, as the paper's training
            total = total + loss.detach()
        if hp.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=hp.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        self.log("train/loss", total / hp.subnets, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/lr", opt.param_groups[0]["lr"], on_step=False, on_epoch=True)
        return total / hp.subnets

    def on_train_epoch_end(self) -> None:
        self.lr_schedulers().step()

    # ---- validation: standalone copies of the phase's extremes, BatchNorm recalibrated ---------------------
    def _side(self) -> int | None:
        return max(self.hparams.resolutions) if self.hparams.resolutions else None

    def on_validation_epoch_start(self) -> None:
        dm = self.trainer.datamodule
        saved = self.net.setting()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        # calibration batches are augmented with the run's generators: fork them, so validating changes no training draw
        with torch.random.fork_rng(devices=devices):
            for which in self.measured:
                self.net.set_active_subnet(**self.extreme_setting(which))
                subnet = self.net.get_active_subnet()
                batches = ((resize(x, self._side()), y) for x, y in dm.train_dataloader())
                calibrate_bn(subnet, batches, self.hparams.bn_calibration)
                self._subnets[which] = subnet.eval()
        self.net.set_active_subnet(**saved)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        x = resize(x, self._side())
        for which, subnet in self._subnets.items():
            self.val_acc[which](subnet(x), y)
            self.log(f"val/acc_{which}", self.val_acc[which], on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self._subnets = {}
