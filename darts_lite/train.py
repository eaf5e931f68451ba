"""TrainModule: retrain a genotype's evaluation network with the DARTS paper's recipe.

Defaults are the paper's CIFAR-10 settings: SGD lr 0.025 with cosine decay to 0 over the epochs,
momentum 0.9, weight decay 3e-4, gradient norm clipped at 5, auxiliary loss weight 0.4, drop path
ramped linearly as drop_path_prob * epoch / epochs (cutout lives in the data module).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from .resume import Resumable
from .schema import Ge, Gt, Hint, Le, Lt, checked
from .spaces import SPACES, get_space, parse_genotype
from .spaces.darts.genotype import Genotype, zoo
from .speed import SpeedSwitches


def resolve_genotype(spec: Any) -> Any:
    """A genotype of any space from a zoo name, a genotype.json path, a search run folder, or its text or JSON."""
    from pathlib import Path

    if not isinstance(spec, str) and hasattr(spec, "cells"):
        return spec  # already a genotype
    text = str(spec).strip()
    prefixes = tuple(p for name in SPACES for p in get_space(name).GENOTYPE_PREFIXES)
    if text.startswith((*prefixes, "{")):
        return parse_genotype(text)[1]
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "genotype.json").is_file():
            raise ValueError(f"genotype={text!r}: the folder has no genotype.json; is it a search run folder?")
        path = path / "genotype.json"
    if path.is_file():
        return parse_genotype(path.read_text())[1]
    try:
        return Genotype.named(text)
    except ValueError:
        raise ValueError(
            f"genotype={text!r} is not a published name ({', '.join(_zoo_names())}), an existing genotype.json or "
            "run folder, or genotype text"
        ) from None


def _zoo_names() -> list[str]:
    return list(zoo())


class TrainModule(Resumable, SpeedSwitches, pl.LightningModule):
    """Trains the evaluation network of a genotype of any space (the space is read from the genotype).

    network: that space's EvalNetwork keyword arguments besides the genotype.
    """

    @checked
    def __init__(
        self,
        genotype: Any,
        network: dict[str, Any] | None = None,
        epochs: Annotated[int, Ge(1)] = 600,
        lr: Annotated[float, Gt(0)] = 0.025,
        lr_min: Annotated[float, Ge(0)] = 0.0,
        momentum: Annotated[float, Ge(0)] = 0.9,
        nesterov: bool = False,
        weight_decay: Annotated[float, Ge(0)] = 3e-4,
        grad_clip: Annotated[float, Gt(0)] | None = 5.0,
        auxiliary_weight: Annotated[float, Ge(0)] = 0.4,
        drop_path_prob: Annotated[float, Ge(0), Lt(1), Hint("ramped linearly: drop_path_prob * epoch / epochs")] = 0.2,
        channels_last: bool = True,
        compile: bool = False,
        label_smoothing: Annotated[float, Ge(0), Lt(1)] = 0.0,
        lr_schedule: Literal["cosine", "step"] = "cosine",
        lr_gamma: Annotated[float, Gt(0), Le(1), Hint("the lr is multiplied by it every lr_step epochs")] = 0.97,
        lr_step: Annotated[int, Ge(1)] = 1,
    ):
        super().__init__()
        genotype = resolve_genotype(genotype).to_text()  # stored as text: checkpoints stay loadable
        self.save_hyperparameters()
        space, parsed = parse_genotype(genotype)
        self.net = space.EvalNetwork(parsed, **(network or {}))
        n = self.net.classifier.out_features
        self.train_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes=n, top_k=5, average="micro") if n > 5 else None
        self.test_acc = MulticlassAccuracy(num_classes=n, average="micro")

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD(self.net.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay,
                              nesterov=hp.get("nesterov", False))
        if hp.get("lr_schedule", "cosine") == "step":  # ImageNet's recipe: lr * gamma ** (epoch // step)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.lr_step, gamma=hp.lr_gamma)
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=hp.epochs, eta_min=hp.lr_min)
        return [opt], [{"scheduler": sched, "interval": "epoch"}]

    def rebase_schedules(self, saved: dict[str, Any]) -> list[str]:
        """A step schedule resumed with another lr, gamma or step: the new rate at the epoch reached."""
        hp = self.hparams
        if hp.get("lr_schedule", "cosine") != "step":
            return super().rebase_schedules(saved)
        old = (saved.get("lr"), saved.get("lr_gamma"), saved.get("lr_step"))
        if old == (hp.lr, hp.lr_gamma, hp.lr_step):
            return []
        opt, sched = self.optimizers().optimizer, self.lr_schedulers()
        sched.base_lrs, sched.gamma, sched.step_size = [hp.lr] * len(opt.param_groups), hp.lr_gamma, hp.lr_step
        now = hp.lr * hp.lr_gamma ** (sched.last_epoch // hp.lr_step)
        for group in opt.param_groups:
            group["initial_lr"], group["lr"] = hp.lr, now
        return [f"weight lr {old[0]} x {old[1]} every {old[2]} epochs -> {hp.lr} x {hp.lr_gamma} every {hp.lr_step}: "
                f"{now:.4g} now"]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if self.hparams.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")

    def on_train_epoch_start(self) -> None:
        if not hasattr(self.net, "drop_path_prob"):
            return  # a network without drop path (NAS-Bench-201's)
        self.net.drop_path_prob = self.hparams.drop_path_prob * self.current_epoch / self.hparams.epochs
        self.log("train/drop_path_prob", self.net.drop_path_prob, on_step=False, on_epoch=True)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self(x)
        logits, aux = out if isinstance(out, tuple) else (out, None)
        smoothing = self.hparams.get("label_smoothing", 0.0)
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        if aux is not None:
            loss = loss + self.hparams.auxiliary_weight * F.cross_entropy(aux, y, label_smoothing=smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the training loss became {loss.item()} at epoch {self.current_epoch}")
        self.train_acc(logits.detach(), y)
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), on_step=False, on_epoch=True, sync_dist=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        if self.val_top5 is not None:
            self.val_top5(logits, y)
            self.log("val/acc_top5", self.val_top5, on_step=False, on_epoch=True)

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.test_acc(self(x), y)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
