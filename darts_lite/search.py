"""SearchModule: bilevel architecture search (DARTS first/second order, GDAS) as a LightningModule.

Each training step takes a weight batch and an architecture batch. After ``warmup_epochs`` it
first updates the alphas on the architecture batch, then (always) the weights on the weight
batch, as the DARTS reference loop does.

Second order (DARTS eq. 7-8) follows REFERENCE.md to the formula:

    w'    = w - xi * (momentum * buf + grad_w L_train(w, a) + wd * w),   xi = current weight lr
    g_a   = grad_a L_val(w', a) - xi * H v,   H v = grad_a (grad_w L_train(w, a) . v),   v = grad_w' L_val(w', a)

H v, the mixed second derivative of the training loss applied to v, is taken by one of:

    exact     forward-over-reverse automatic differentiation at w (no eps)
    central   (grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps),  w+- = w +- eps v,  eps = 0.01 / ||v||
    forward   (grad_a L_train(w+, a) - grad_a L_train(w, a)) / eps

The unrolled and perturbed weights are plain tensors passed to ``torch.func.functional_call``:
the network is never copied, and BatchNorm running statistics are left as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch.func import functional_call
from torchmetrics.classification import MulticlassAccuracy

from .relax import linear_tau
from .rng import rng_states, set_rng_states
from .schedule import rebase_cosine
from .spaces import get_space
from .spaces.supernet import frozen
from .speed import SpeedSwitches
from .tricks.resources import ResourcePenalty

# the second order's Hessian-vector product: exact (autograd), or the finite differences central (the paper's), forward
HVP_ESTIMATORS = ("exact", "central", "forward")
# SDARTS: how the weight step perturbs the alphas
PERTURBATIONS = ("none", "random", "adversarial")


def _total_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 norm of all the tensors together, as one flat vector."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def _zeros_for_missing(inputs: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
    # GDAS leaves unsampled ops out of the graph: their gradient is zero, not missing
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]


class _RngSnapshot:
    """The RNG state at one moment, to replay the same random draws (drop path, Gumbel samples) later."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.device = device if device.type == "cuda" else None
        self.cuda = torch.cuda.get_rng_state(device) if self.device is not None else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.device is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


class SearchModule(SpeedSwitches, pl.LightningModule):
    """Bilevel search over a search space's supernet.

    space: the registered space (``darts_lite.spaces.SPACES``) whose SearchNetwork is searched.
    network: keyword arguments of that SearchNetwork (C, layers, relaxation, ...).
    order: 1 (first-order DARTS, also GDAS) or 2 (unrolled, second-order DARTS).
    hvp: how the second order takes its Hessian-vector product (see HVP_ESTIMATORS). "exact" by automatic
    differentiation; "central" the paper's finite difference (two extra passes, error O(eps^2) on smooth
    networks); "forward" one extra pass (error O(eps)). On ReLU/max-pool supernets the finite differences
    cross kinks and depend on eps: experiments/results/hvp_accuracy.md measures how far they are from exact.
    channels_last: run convolutions in NHWC memory layout (on this project's CPU benchmark a
    paper-size supernet's forward+backward took half the time; on GPUs it pays with mixed precision).
    perturb: SDARTS (Chen & Hsieh, 2020): the weight step sees the alphas plus delta, |delta| <= perturb_epsilon
    element-wise: "random" draws delta uniformly, "adversarial" takes perturb_steps projected sign-gradient steps
    (step 2 * epsilon / steps, from a random start) that raise the weight batch's loss; "none" is plain DARTS. The
    alphas themselves are restored exactly before anything else reads them.
    resource: "none", or a cost (flops, params, latency) whose expected value over the alphas, weighted by
    resource_weight and hinged at resource_target when one is set, joins the architecture loss (see
    ``darts_lite.tricks.resources``); resource_latency_table: a latency table file to reuse or write.
    """

    def __init__(
        self,
        network: dict[str, Any] | None = None,
        order: int = 1,
        epochs: int = 50,
        warmup_epochs: int = 0,
        lr: float = 0.025,
        lr_min: float = 0.001,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 3e-4,
        grad_clip: float | None = 5.0,
        arch_lr: float = 3e-4,
        arch_betas: Sequence[float] = (0.5, 0.999),
        arch_weight_decay: float = 1e-3,
        tau_max: float = 10.0,
        tau_min: float = 0.1,
        unrolled_eps: float = 0.01,
        hvp: str = "central",
        channels_last: bool = True,
        compile: bool = False,
        space: str = "darts",
        perturb: str = "none",
        perturb_epsilon: float = 0.03,
        perturb_steps: int = 7,
        resource: str = "none",
        resource_weight: float = 1.0,
        resource_target: float | None = None,
        resource_latency_table: str | None = None,
    ):
        super().__init__()
        if perturb not in PERTURBATIONS:
            raise ValueError(f"perturb must be one of {', '.join(PERTURBATIONS)}, got {perturb!r}")
        if not perturb_epsilon >= 0:
            raise ValueError(f"perturb_epsilon must be >= 0, got {perturb_epsilon!r}")
        if perturb_steps < 1:
            raise ValueError(f"perturb_steps must be >= 1, got {perturb_steps!r}")
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        if hvp not in HVP_ESTIMATORS:
            raise ValueError(f"hvp must be one of {', '.join(HVP_ESTIMATORS)}, got {hvp!r}")
        if compile and (order == 2 or (network or {}).get("relaxation") == "gumbel"):
            raise ValueError(
                "compile works with first-order DARTS only: second order swaps in new weight tensors every step "
                "and GDAS samples a different graph every step, and either would recompile each time"
            )
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = get_space(space).SearchNetwork(**(network or {}))
        n = self.net.num_classes
        self.train_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.arch_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.resource = None if resource == "none" else ResourcePenalty(
            resource, resource_weight, resource_target, resource_latency_table)



    # ---- optimisers --------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        opt_w = torch.optim.SGD(self.net.weight_parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay,
                                nesterov=hp.get("nesterov", False))
        opt_a = torch.optim.Adam(
            self.net.arch_parameters(), lr=hp.arch_lr, betas=tuple(hp.arch_betas), weight_decay=hp.arch_weight_decay
        )
        # stepped once per epoch by on_train_epoch_end: epoch e trains at the cosine value of e
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_w, T_max=hp.epochs, eta_min=hp.lr_min)
        return [opt_w, opt_a], [{"scheduler": sched, "interval": "epoch"}]

    @property
    def arch_updates_active(self) -> bool:
        return self.current_epoch >= self.hparams.warmup_epochs

    # ---- training ----------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        if self.net.tau is not None:
            hp = self.hparams
            self.net.tau = linear_tau(self.current_epoch, hp.epochs, hp.tau_max, hp.tau_min)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (x_w, y_w), (x_a, y_a) = batch
        x_w, x_a = self._layout(x_w), self._layout(x_a)
        opt_w, opt_a = self.optimizers()
        weights, alphas = self.net.weight_parameters(), self.net.arch_parameters()
        if self.resource is not None:
            self._prepare_resource(x_a)

        if self.arch_updates_active:
            opt_a.zero_grad(set_to_none=True)
            if self.hparams.order == 2:
                arch_loss, arch_logits = self._second_order_arch_grads(x_w, y_w, x_a, y_a, opt_w.optimizer)
                self._add_resource_grads(alphas)
            else:
                with frozen(weights):
                    arch_logits = self.net(x_a)
                    arch_loss = F.cross_entropy(arch_logits, y_a)
                    self._check_finite(arch_loss, "architecture")
                    penalty = self._resource_penalty()
                    self.manual_backward(arch_loss if penalty is None else arch_loss + penalty)
            opt_a.step()
            self.arch_acc(arch_logits.detach(), y_a)
            self.log("search/arch_loss", arch_loss.detach(), on_step=False, on_epoch=True, sync_dist=True)
            self.log("search/arch_acc", self.arch_acc, on_step=False, on_epoch=True)

        opt_w.zero_grad(set_to_none=True)
        with frozen(alphas), self._perturbed(alphas, x_w, y_w):
            logits = self.net(x_w)
            loss = F.cross_entropy(logits, y_w)
            self._check_finite(loss, "weight")
            self.manual_backward(loss)
        opt_w.step()  # clips first: see on_before_optimizer_step
        self.train_acc(logits.detach(), y_w)
        self.log("search/train_loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("search/train_acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss.detach()

    # ---- resource-aware search ------------------------------------------------------------------
    def _prepare_resource(self, x: torch.Tensor) -> None:
        """The cost table, built once from the images' size x [B, C, H, W] (under DDP rank 0's, for all ranks)."""
        if self.resource.table is None:
            many = self.trainer.world_size > 1
            self.resource.prepare(self.net, tuple(x.shape[1:]), self.trainer.default_root_dir if self.trainer.is_global_zero
                                  else None, log=rank_zero_info, share=self.trainer.strategy.broadcast if many else None)

    def _resource_penalty(self) -> torch.Tensor | None:
        """The resource term of the architecture loss, or None when there is none (weight 0 adds nothing at all)."""
        return self.resource.penalty(self.net) if self.resource is not None and self.resource.weight > 0 else None

    def _add_resource_grads(self, alphas: Sequence[torch.nn.Parameter]) -> None:
        """Second order: the penalty depends on the alphas alone, so its gradient adds to the unrolled one as it is."""
        penalty = self._resource_penalty()
        if penalty is not None:
            for a, g in zip(alphas, torch.autograd.grad(penalty, list(alphas), allow_unused=True)):
                if g is not None:
                    a.grad += g

    @contextlib.contextmanager
    def _perturbed(self, alphas: Sequence[torch.nn.Parameter], x: torch.Tensor, y: torch.Tensor) -> Iterator[None]:
        """Inside: the alphas plus SDARTS's delta (see ``perturb``); on exit exactly the alphas they were."""
        kind, eps = self.hparams.get("perturb", "none"), float(self.hparams.get("perturb_epsilon", 0.0))
        if kind == "none" or eps == 0:
            yield
            return
        saved = [a.detach().clone() for a in alphas]
        deltas = [torch.empty_like(a).uniform_(-eps, eps) for a in saved]
        if kind == "adversarial":
            deltas = self._adversarial_deltas(alphas, saved, deltas, x, y, eps)
        with torch.no_grad():
            for a, a0, d in zip(alphas, saved, deltas):
                a.copy_(a0 + d)
        try:
            yield
        finally:
            with torch.no_grad():
                for a, a0 in zip(alphas, saved):
                    a.copy_(a0)

    def _adversarial_deltas(self, alphas: Sequence[torch.nn.Parameter], saved: list[torch.Tensor],
                            deltas: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, eps: float) -> list[torch.Tensor]:
        """Projected sign-gradient ascent of the weight batch's loss over delta in the eps box, in eval mode (no
        BatchNorm statistics updated, no drop path); gradients reach the alphas only."""
        steps = int(self.hparams.get("perturb_steps", 7))
        size = 2 * eps / steps
        was_training = self.net.training
        self.net.eval()
        try:
            for _ in range(steps):
                with torch.no_grad():
                    for a, a0, d in zip(alphas, saved, deltas):
                        a.copy_(a0 + d)
                with torch.enable_grad():
                    for a in alphas:
                        a.requires_grad_(True)
                    loss = F.cross_entropy(self.net(x), y)
                    grads = torch.autograd.grad(loss, list(alphas), allow_unused=True)
                    for a in alphas:
                        a.requires_grad_(False)
                deltas = [d if g is None else (d + size * g.sign()).clamp(-eps, eps) for d, g in zip(deltas, grads)]
        finally:
            self.net.train(was_training)
        return deltas

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning calls this inside opt.step(), after a mixed-precision loss scaler has unscaled the
        # gradients: clipping before that would clip the scaled gradients and shrink every fp16 update
        # by the scale factor
        if optimizer is not self.optimizers()[0].optimizer:
            return
        grads = [p.grad for p in self.net.weight_parameters() if p.grad is not None]
        if not grads:
            return
        if self.hparams.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.net.weight_parameters(), self.hparams.grad_clip, foreach=True)
        else:
            norm = _total_norm(grads)
        # with an fp16 loss scaler an overflow is routine (the scaler skips that step); otherwise a
        # non-finite gradient would make the weights non-finite: stop before the step
        if getattr(self.trainer.precision_plugin, "scaler", None) is None and not torch.isfinite(norm):
            raise FloatingPointError(self._non_finite_message(f"weight gradient norm became {norm.item()}"))

    def _check_finite(self, loss: torch.Tensor, which: str) -> None:
        ok = torch.isfinite(loss.detach()).float()
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # every rank must stop together: a rank that raised alone would leave the others
            # waiting in the next collective
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if not ok.item():
            what = f"{which} loss became {loss.item()}" if not torch.isfinite(loss) else f"{which} loss on another rank"
            raise FloatingPointError(self._non_finite_message(what))

    def _non_finite_message(self, what: str) -> str:
        return (
            f"the {what} at epoch {self.current_epoch}, step {self.global_step}: stopped before the weights took "
            "a non-finite value. Lower the learning rate (search.lr, search.arch_lr) or keep gradient clipping on "
            "(search.grad_clip). Checkpoints written so far hold finite states."
        )

    def _second_order_arch_grads(self, x_w, y_w, x_a, y_a, opt_w: torch.optim.SGD):
        """Set alpha.grad to the second-order DARTS architecture gradient; returns (L_val(w'), logits).

        The Hessian-vector product takes passes on the training batch at w (or w +- eps v): they replay
        the unrolling pass's random draws (drop path masks, Gumbel samples), or the difference of two
        draws (divided by eps, for the finite differences) would swamp the Hessian term. All passes run
        in fp32 even under autocast: the finite difference at eps = 0.01 / ||v|| is below bf16's
        resolution, and exact keeps the same precision so that the estimators compare like with like.
        """
        with torch.autocast(device_type=x_w.device.type, enabled=False):
            return self._second_order_fp32(x_w, y_w, x_a, y_a, opt_w)

    def _second_order_fp32(self, x_w, y_w, x_a, y_a, opt_w: torch.optim.SGD):
        group = opt_w.param_groups[0]
        xi, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        alphas, weights = self.net.arch_parameters(), self.net.weight_parameters()
        names = {id(p): n for n, p in self.net.named_parameters()}
        w_names = [names[id(p)] for p in weights]
        # these extra forward passes must not move BatchNorm running statistics: restore them after
        buffers = list(self.net.buffers())
        saved = [b.clone() for b in buffers]

        def call(w_tensors: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.net, dict(zip(w_names, w_tensors)), (x,), strict=False)

        def grads_or_zeros(loss: torch.Tensor, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
            return _zeros_for_missing(inputs, torch.autograd.grad(loss, inputs, allow_unused=True))

        w = [p.detach() for p in weights]
        hvp = self.hparams.hvp
        rng = _RngSnapshot(x_w.device)
        # 1. one virtual SGD step on the training batch, exactly as torch.optim.SGD would take it:
        # per weight, d = grad + wd * w (+ momentum * buffer once SGD has one), and a weight that gets
        # no gradient (an op GDAS did not sample) is left alone, as SGD skips it. With search.nesterov the real
        # step adds the momentum look-ahead; the virtual step keeps the form above, as the reference code's does.
        # The forward difference also needs grad_alpha L_train(w), which this same pass gives
        # almost for free; the others do not, so the alphas stay out of their backward
        if hvp == "forward":
            raw = torch.autograd.grad(F.cross_entropy(self.net(x_w), y_w), [*weights, *alphas], allow_unused=True)
            g_at_w = _zeros_for_missing(alphas, raw[len(weights):])
            raw = raw[: len(weights)]
        else:
            with frozen(alphas):
                raw = torch.autograd.grad(F.cross_entropy(self.net(x_w), y_w), weights, allow_unused=True)
        used = [k for k, g in enumerate(raw) if g is not None]
        d = [raw[k] for k in used]
        torch._foreach_add_(d, [w[k] for k in used], alpha=wd)
        if momentum:
            bufs = [opt_w.state.get(weights[k], {}).get("momentum_buffer") for k in used]
            have = [i for i, b in enumerate(bufs) if b is not None]
            if have:
                torch._foreach_add_([d[i] for i in have], [bufs[i] for i in have], alpha=momentum)
        stepped = dict(zip(used, torch._foreach_add([w[k] for k in used], d, alpha=-xi)))
        # a weight SGD would skip stays as it is, as a leaf of its own (not a view of the parameter)
        unrolled = [(stepped[k] if k in stepped else w[k].clone()).requires_grad_() for k in range(len(w))]

        # 2. validation loss at the unrolled weights: gradient for alphas and v for the weights
        logits = call(unrolled, x_a)
        val_loss = F.cross_entropy(logits, y_a)
        self._check_finite(val_loss, "architecture")
        grads = grads_or_zeros(val_loss, [*alphas, *unrolled])
        g_alpha, v = grads[: len(alphas)], grads[len(alphas):]

        # 3. H v on the training batch, with step 1's draws
        rng_after = _RngSnapshot(x_w.device)
        rng.restore()
        if hvp == "exact":
            hv = self._exact_hvp(call, w, v, x_w, y_w, alphas)
        else:
            # central (g(w + eps v) - g(w - eps v)) / 2 eps, or forward (g(w + eps v) - g(w)) / eps
            eps = self.hparams.unrolled_eps / max(_total_norm(v).item(), 1e-12)
            g_plus = grads_or_zeros(F.cross_entropy(call(torch._foreach_add(w, v, alpha=eps), x_w), y_w), alphas)
            if hvp == "forward":
                g_minus, step = g_at_w, eps
            else:
                rng.restore()
                g_minus = grads_or_zeros(F.cross_entropy(call(torch._foreach_add(w, v, alpha=-eps), x_w), y_w), alphas)
                step = 2 * eps
            hv = [(gp - gm) / step for gp, gm in zip(g_plus, g_minus)]
        for a, ga, h in zip(alphas, g_alpha, hv):
            a.grad = ga - xi * h
        rng_after.restore()  # the weight step draws afresh, not a replay of step 1's draws
        torch._foreach_copy_(buffers, saved)
        self._all_reduce_arch_grads(alphas)
        return val_loss.detach(), logits.detach()

    @staticmethod
    def _exact_hvp(call, w: list[torch.Tensor], v: list[torch.Tensor], x_w, y_w, alphas) -> list[torch.Tensor]:
        """grad_alpha (grad_w L_train(w, alpha) . v), each [E, O], by forward-over-reverse differentiation.

        The weights enter as dual tensors with tangent v: the forward pass and the backward pass to the
        alphas carry the tangents along, and the tangent of grad_alpha L_train(w) is the mixed second
        derivative applied to v, with no eps. This one pass takes about the time of central's two, but
        holds a tangent beside every saved activation (experiments/search_step_benchmark.py). A double
        backward through the unrolling pass measured slower and larger still: it keeps that pass's graph
        alive through step 2, and PyTorch takes the second derivative of a grouped (depthwise) convolution
        one channel group at a time.
        """
        with fwAD.dual_level():
            dual = [fwAD.make_dual(wk, vk) for wk, vk in zip(w, v)]
            grads = torch.autograd.grad(F.cross_entropy(call(dual, x_w), y_w), alphas, allow_unused=True)
            # no gradient, or one that does not depend on the weights: its derivative along v is zero
            tangents = [None if g is None else fwAD.unpack_dual(g).tangent for g in grads]
        return _zeros_for_missing(alphas, tangents)

    def _all_reduce_arch_grads(self, alphas: Sequence[torch.nn.Parameter]) -> None:
        # gradients taken with torch.autograd.grad bypass DDP's reducer; average them by hand so
        # every rank applies the same architecture update
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for a in alphas:
                dist.all_reduce(a.grad, op=dist.ReduceOp.SUM)
                a.grad /= dist.get_world_size()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.trainer.world_size > 1:
            self._check_alphas_in_sync()

    def _check_alphas_in_sync(self) -> None:
        """Under DDP every rank must hold the same alphas; a drift would end in several genotypes."""
        mine = torch.cat([a.detach().flatten() for a in self.net.arch_parameters()])
        every = self.all_gather(mine)  # [world_size, n]
        if not torch.equal(every.min(0).values, every.max(0).values):
            raise RuntimeError(
                f"alphas differ across ranks at step {self.global_step} (max difference "
                f"{(every.max(0).values - every.min(0).values).abs().max().item():.3g}); architecture gradients "
                "were not averaged over ranks"
            )

    def on_train_epoch_end(self) -> None:
        sched = self.lr_schedulers()
        opt_w, opt_a = self.optimizers()
        metrics = {
            "search/lr": opt_w.optimizer.param_groups[0]["lr"],
            "search/arch_lr": opt_a.optimizer.param_groups[0]["lr"],
            "search/arch_active": float(self.arch_updates_active),
        }
        if self.net.tau is not None:
            metrics["search/tau"] = self.net.tau
        if self.resource is not None and self.resource.table is not None:
            metrics.update(self.resource.metrics(self.net))
        for cell, probs in self.net.op_probabilities().items():
            for e, row in enumerate(probs.tolist()):
                for op, p in zip(self.net.primitives, row):
                    metrics[f"alpha/{cell}/edge{e:02d}/{op}"] = p
        # PC-DARTS's edge normalization: each edge's share of its node (softmax of the betas over the node's inputs)
        for cell, shares in getattr(self.net, "edge_probabilities", dict)().items():
            for e, p in enumerate(shares.tolist()):
                metrics[f"beta/{cell}/edge{e:02d}"] = p
        self.log_dict(metrics, on_step=False, on_epoch=True)
        sched.step()

    # ---- exact resume ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # GDAS samples, drop path and augmentation draw from these: a resumed run continues the same streams
        checkpoint["rng_states"] = rng_states()
        checkpoint["tau"] = self.net.tau  # recomputed from the epoch on resume; kept to read a checkpoint alone

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # applied when training starts, so nothing drawn while the trainer sets up shifts the streams
        self._pending_rng = checkpoint.get("rng_states")
        self._checkpoint_hparams = dict(checkpoint.get("hyper_parameters") or {})
        if checkpoint.get("tau") is not None and self.net.tau is not None:
            self.net.tau = checkpoint["tau"]

    def on_train_start(self) -> None:
        if getattr(self, "_pending_rng", None) is not None:
            set_rng_states(self._pending_rng)
            self._pending_rng = None
        if getattr(self, "_checkpoint_hparams", None):
            self._apply_changed_learning_rates(self._checkpoint_hparams)
            self._checkpoint_hparams = None

    def _apply_changed_learning_rates(self, saved: dict[str, Any]) -> None:
        """Resumed with other learning rates or another length than the checkpoint's (say, a lower rate after
        a divergence, or more epochs): the restored optimisers and schedule would keep the old ones (and a
        cosine past its end rises again), so set the new ones, the schedule re-based at the epoch reached.
        Unchanged settings leave the restored state exactly as it was."""
        hp = self.hparams
        opt_w, opt_a = (o.optimizer for o in self.optimizers())
        changed = []
        weight = rebase_cosine(opt_w, self.lr_schedulers(), saved, hp.lr, hp.lr_min, hp.epochs)
        if weight:
            changed.append(weight)
        if saved.get("arch_lr") != hp.arch_lr:
            for group in opt_a.param_groups:
                group["lr"] = hp.arch_lr
            changed.append(f"architecture lr {saved.get('arch_lr')} -> {hp.arch_lr}")
        if changed:
            rank_zero_info("resumed with a new schedule: " + "; ".join(changed))

    # ---- validation --------------------------------------------------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), on_step=False, on_epoch=True, sync_dist=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
