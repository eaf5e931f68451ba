"""SearchModule: bilevel architecture search over a space's supernet as a LightningModule.

Each training step takes a weight batch and an architecture batch. After ``warmup_epochs`` it first updates the
alphas on the architecture batch (first order, or DARTS's unrolled second order: ``darts_lite.bilevel``, which
holds the algorithm), then (always) the weights on the weight batch, as the DARTS reference loop does
(``step_order=weights_first`` swaps the two, as the NAS-Bench-201 reference scripts do). ``single_level=True``
takes both updates from one forward and backward pass on the weight batch instead (SNAS's loop). Around that
step: SDARTS's perturbed alphas for the weight step (``darts_lite.tricks.perturb``), the method's regulariser on the
architecture loss (``darts_lite.regularizers``: beta-DARTS, FairDARTS, DrNAS's KL), the resource penalty of a
resource-aware search (``darts_lite.tricks.resources``), checks for non-finite losses and, under DDP, the averaging
of the architecture gradients and a check that every rank holds the same alphas.

The config's search group builds it (``_target_: darts_lite.search.SearchModule``); its arguments are the group's
keys, declared once in the signature below with their constraints (``darts_lite.schema``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torchmetrics.classification import MulticlassAccuracy

from .bilevel import HVP_ESTIMATORS, architecture_loss, total_norm, unrolled_architecture_gradients
from .errors import ConfigError
from .registry import load_path
from .regularizers import make_regularizer
from .relax import relaxation_class
from .resume import Resumable
from .schema import Allowed, Ge, Gt, Hint, Lt, MinLen, OneOf, build, checked
from .spaces import space_name
from .spaces.supernet import SELECTIVE, frozen
from .spaces.widen import Widened, widen_tensor
from .speed import SpeedSwitches
from .tricks.perturb import perturbed
from .tricks.resources import RESOURCES, ResourcePenalty
from .tricks.selection import SELECTIONS

__all__ = ["DEFAULT_NETWORK", "HVP_ESTIMATORS", "SearchModule", "build_network"]

# the supernet a ``network`` config without ``_target_`` builds: the DARTS space's
DEFAULT_NETWORK = "darts_lite.spaces.darts.SearchNetwork"

_Beta = Annotated[float, Ge(0), Lt(1)]


def build_network(network: dict[str, Any] | None, relaxation: Any = None) -> torch.nn.Module:
    """The supernet ``network`` describes ({"_target_": a SearchNetwork class, **its arguments}; no ``_target_``:
    the DARTS space's), with ``relaxation`` (a name or a config) in place of the one it names, if given."""
    kwargs = dict(network or {})
    target = kwargs.pop("_target_", DEFAULT_NETWORK)
    if relaxation is not None:
        kwargs["relaxation"] = relaxation
    return load_path(target)(**kwargs)


class SearchModule(Resumable, SpeedSwitches, pl.LightningModule):
    """Bilevel search over a search space's supernet.

    network: the supernet, as a config: {"_target_": a space's SearchNetwork class, **its arguments} (without
    ``_target_``: the DARTS space's). From the command line darts_lite builds it from the space group and the data.
    relaxation: how the supernet's edges mix their ops: a registered name ("softmax", "gumbel") or a config
    {"_target_": a relaxation class, **its arguments}; None keeps the network's.
    regularizer: None, or a config {"_target_": a regulariser class, **its arguments}: a term of the alphas added to
    every architecture loss (``darts_lite.regularizers``), logged as ``search/reg_loss``.
    method: the method's name (search=darts, gdas, ...), for the logs and dashboards.
    order: 1 (first-order DARTS, also GDAS) or 2 (unrolled, second-order DARTS) with the Hessian-vector product
    ``hvp`` (``darts_lite.bilevel``: "exact" by automatic differentiation; "central" the paper's finite difference,
    two extra passes; "forward" one extra pass). On ReLU/max-pool supernets the finite differences cross kinks and
    depend on eps: experiments/results/hvp_accuracy.md measures how far they are from exact.
    step_order: "arch_first" (DARTS's loop: the architecture step, then the weight step) or "weights_first" (the
    NAS-Bench-201 reference scripts of DARTS first order and GDAS). zero_grad: "none" (gradients set to None before
    each step: an op no gradient reached is left alone by both optimisers) or "fill" (zero-filled, as torch 1.x did:
    every op ever sampled keeps receiving momentum and weight decay, as in the reference scripts).
    single_level: False (bilevel: the alphas learn from the architecture batch) or True (single level, as SNAS's
    code: one forward and backward pass of the training loss on the weight batch gives the weights' and the alphas'
    gradients, from the same sampled op weights, and both optimisers step; the architecture batch is not read).
    arch_grad_clip: None, or the norm the alphas' gradient is clipped to before each architecture update (SNAS's
    code: 10); the weights' gradient is clipped at ``grad_clip``.
    channels_last: run convolutions in NHWC memory layout. compile: torch.compile the supernet (first order only).
    checkpoint_cells: recompute each cell's activations in the backward pass (less memory, same results).
    recompute: what each mixed edge keeps for the backward pass: "none" (what autograd saves), "cheap" (the
    default: the BatchNorm outputs the weighted sum reads and the pooling ops' outputs recomputed, by one fused step
    per op), "convolutions" (only the convolutions' outputs; ReLU, BatchNorm, pooling and the weighted sums
    recomputed) or "pointwise" (only the 1x1 convolutions' outputs): less memory, the same results
    (``darts_lite.spaces.supernet.RecomputableEdge``). "cheap" leaves the network's own setting as it is.
    perturb, perturb_epsilon, perturb_steps: SDARTS (``darts_lite.tricks.perturb``).
    resource, resource_weight, resource_target, resource_latency_table: a cost (flops, params, latency) whose
    expected value over the alphas joins the architecture loss (``darts_lite.tricks.resources``).
    bn_calibration: > 0 logs ``val/acc_derived`` every epoch (``darts_lite.tricks.bn_calibration``).
    selection, selection_epochs, selection_batches, selection_samples, selection_threshold: how the task chooses the
    final genotype after the search (``darts_lite.tricks.selection``; sampling: ``darts_lite.methods.rsws``;
    threshold: ``darts_lite.methods.fairdarts``).
    progressive: None, or a config {"_target_": darts_lite.methods.drnas.Progressive, ...}: DrNAS's progressive
    learning, the search in stages that prune ops and widen partial channels; ``warmup_epochs`` then counts from the
    start of each stage. One process only (not under DDP).
    """

    @checked
    def __init__(
        self,
        network: dict[str, Any] | None = None,
        relaxation: Annotated[str | dict[str, Any], Allowed("a relaxation name or a _target_ node")] | None = None,
        regularizer: Annotated[dict[str, Any], Allowed("null or a _target_ node")] | None = None,
        method: str = "darts",
        order: Literal[1, 2] = 1,
        epochs: Annotated[int, Ge(1)] = 50,
        warmup_epochs: Annotated[int, Ge(0), Hint("epochs that train the weights only")] = 0,
        lr: Annotated[float, Gt(0)] = 0.025,
        lr_min: Annotated[float, Ge(0)] = 0.001,
        momentum: Annotated[float, Ge(0)] = 0.9,
        nesterov: bool = False,
        weight_decay: Annotated[float, Ge(0)] = 3e-4,
        grad_clip: Annotated[float, Gt(0)] | None = 5.0,
        arch_lr: Annotated[float, Ge(0), Hint("0 leaves the alphas as they start")] = 3e-4,
        arch_betas: Annotated[tuple[_Beta, _Beta], Allowed("two numbers in [0, 1)")] = (0.5, 0.999),
        arch_weight_decay: Annotated[float, Ge(0)] = 1e-3,
        arch_grad_clip: Annotated[float, Gt(0), Hint("the alphas' gradient norm; null = unclipped")] | None = None,
        unrolled_eps: Annotated[float, Gt(0)] = 0.01,
        hvp: Literal["exact", "central", "forward"] = "central",
        step_order: Literal["arch_first", "weights_first"] = "arch_first",
        zero_grad: Literal["none", "fill"] = "none",
        single_level: bool = False,
        channels_last: bool = True,
        compile: bool = False,
        checkpoint_cells: bool = False,
        recompute: Literal["none", "cheap", "convolutions", "pointwise"] = "cheap",
        perturb: Literal["none", "random", "adversarial"] = "none",
        perturb_epsilon: Annotated[float, Ge(0), Hint("the L-inf radius of the alpha perturbation")] = 0.03,
        perturb_steps: Annotated[int, Ge(1)] = 7,
        resource: Annotated[str, OneOf(("none",), RESOURCES)] = "none",
        resource_weight: Annotated[float, Ge(0), Hint("lambda of the resource penalty")] = 1.0,
        resource_target: Annotated[float, Gt(0)] | None = None,
        resource_latency_table: Annotated[str, MinLen(1), Allowed("a file path")] | None = None,
        bn_calibration: Annotated[int, Ge(0), Hint("training batches for val/acc_derived; 0 = off")] = 0,
        selection: Annotated[str, OneOf(SELECTIONS)] = "argmax",
        selection_epochs: Annotated[int, Ge(0), Hint("fine-tuning epochs between two decisions")] = 5,
        selection_batches: Annotated[Annotated[int, Ge(1)] | None, Allowed("null (whole epochs) or an integer >= 1")] = None,
        selection_samples: Annotated[int, Ge(1), Hint("architectures the sampling selection scores")] = 100,
        selection_threshold: Annotated[float, Gt(0), Lt(1), Hint("the strength an op must reach to be kept")] = 0.85,
        progressive: Annotated[dict[str, Any], Allowed("null or a _target_ node")] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = build_network(network, relaxation)
        self.regularizer = make_regularizer(regularizer)
        self.progressive = None if progressive is None else build(dict(progressive), "progressive")
        self._stage = 0  # the progressive stage the supernet is in
        if checkpoint_cells:  # a switch of the supernet's (off unless the network or the search turns it on)
            self.net.checkpoint_cells = True
        if recompute != "cheap":  # likewise (the networks' default)
            self.net.recompute = recompute
        if compile and (order == 2 or getattr(self.net.relaxation, "hard", False)):
            raise ValueError(
                "compile works with first-order DARTS only: second order swaps in new weight tensors every step "
                "and GDAS samples a different graph every step, and either would recompile each time"
            )
        n = self.net.num_classes
        self.train_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.arch_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.resource = None if resource == "none" else ResourcePenalty(
            resource, resource_weight, resource_target, resource_latency_table)

    @classmethod
    def config_problems(cls, rules: Any) -> list[str]:
        """The rules between the arguments (each argument alone is checked by its annotation)."""
        v, key = rules.values, rules.key
        problems = []
        if v["warmup_epochs"] >= v["epochs"]:
            problems.append(f"{key('warmup_epochs')}={v['warmup_epochs']}: must be an integer in [0, {key('epochs')}): "
                            "with no epoch left after warm-up the alphas never train")
        if v["lr_min"] > v["lr"]:
            problems.append(f"{key('lr_min')}={v['lr_min']}: must be <= {key('lr')}")
        if v["compile"] and v["recompute"] in SELECTIVE:
            problems.append(f"{key('recompute')}={v['recompute']}: not together with {key('compile')}=true (a compiled "
                            "supernet decides itself what to keep for the backward pass)")
        if v["checkpoint_cells"] and v["recompute"] in SELECTIVE:
            problems.append(f"{key('recompute')}={v['recompute']}: choose it or {key('checkpoint_cells')}=true, not both "
                            "(a checkpointed cell recomputes its edges whole)")
        if v["single_level"]:
            if v["order"] == 2:
                problems.append(f"{key('single_level')}=true: not with {key('order')}=2 (the second order unrolls a weight "
                                "step to score the alphas on another batch; a single-level search has no other batch)")
            if v["perturb"] != "none":
                problems.append(f"{key('single_level')}=true: not with {key('perturb')}={v['perturb']} (SDARTS perturbs "
                                "the alphas the weight step sees, while a single-level step trains those same alphas)")
        relaxation = relaxation_class(v.get("relaxation"))
        hard = bool(getattr(relaxation, "hard", False))
        if v["compile"] and (v["order"] == 2 or hard):
            problems.append(f"{key('compile')}=true: works with first-order DARTS only (second order and GDAS change the "
                            "graph every step)")
        if not getattr(relaxation, "trains_alphas", True) and v["selection"] == "argmax":
            problems.append(f"{key('selection')}=argmax: the {relaxation.__name__} relaxation never trains the alphas, so "
                            "their argmax chooses nothing; use a selection that measures the supernet, e.g. "
                            f"{key('selection')}=sampling (search=rsws sets it)")
        if v["selection"] == "threshold":
            target = (v.get("network") or {}).get("_target_", DEFAULT_NETWORK)
            try:
                space = space_name(target)
            except ValueError:
                space = None  # the network's own check names the import problem
            if space == "nb201":
                problems.append(f"{key('selection')}=threshold: keeps or drops the edges of DARTS-space cells; a "
                                "NAS-Bench-201 cell keeps every edge (its `none` op is a candidate like the others)")
        if v.get("progressive") is not None:
            problems.extend(cls._progressive_problems(rules, hard))
        if v["selection"] == "perturbation" and hard:
            problems.append(f"{key('selection')}=perturbation: removes one op from a supernet that mixes every op; it needs "
                            "a relaxation that runs every op (DARTS's softmax), and the search uses "
                            f"{relaxation.__name__}, which samples one op per edge")
        return problems

    @staticmethod
    def _progressive_problems(rules: Any, hard: bool) -> list[str]:
        """What a progressive search needs of the other settings (its own arguments are checked by its class)."""
        v, key = rules.values, rules.key
        node = dict(v["progressive"])
        try:
            stages = build(node, key("progressive"))
        except ConfigError as e:
            return [line.strip() for line in str(e).splitlines()[1:]]
        problems = []
        if hard:
            problems.append(f"{key('progressive')}: pruned ops are masked out of a relaxation that weighs every op; "
                            "this one samples one op per edge")
        if stages.epochs != v["epochs"]:
            problems.append(f"{key('progressive')}.stage_epochs={list(stages.stage_epochs)}: must add up to "
                            f"{key('epochs')}={v['epochs']}")
        if v["warmup_epochs"] >= min(stages.stage_epochs):
            problems.append(f"{key('warmup_epochs')}={v['warmup_epochs']}: counts from the start of every stage; must be "
                            f"smaller than the shortest stage ({min(stages.stage_epochs)} epochs)")
        if v.get("network") is not None:  # from the command line the space group's node is checked the same way
            from .methods.drnas import network_problems

            problems.extend(network_problems(stages, {"_target_": DEFAULT_NETWORK, **v["network"]}, "network."))
        for name, ok, why in (("compile", not v["compile"], "recompiles"),
                              ("resource", v["resource"] == "none", "counts pruned ops"),
                              ("selection", v["selection"] in ("argmax", "threshold"), "does not see pruned ops")):
            if not ok:
                problems.append(f"{key(name)}={v[name]}: not with {key('progressive')} (the supernet changes between "
                                f"stages and the {name} {why})")
        return problems

    def configure_callbacks(self) -> list[pl.Callback]:
        """``val/acc_derived`` every epoch when ``bn_calibration`` > 0: the argmax cell inside the supernet, measured
        with BatchNorm statistics recomputed on that many training batches."""
        if not self.hparams.bn_calibration:
            return []
        from .tricks.bn_calibration import DerivedValidation

        return [DerivedValidation(self.hparams.bn_calibration)]

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
        # a relaxation the alphas do not steer (RSWS) takes no architecture step at all
        trains = getattr(self.net.relaxation, "trains_alphas", True)
        epoch = self.current_epoch
        if self.progressive is not None:  # DrNAS's warm-up starts again with every stage
            epoch -= self.progressive.stage_start(self.progressive.stage_of(epoch))
        return trains and epoch >= self.hparams.warmup_epochs

    # ---- training ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.progressive is not None and self.trainer.world_size > 1:
            raise ConfigError("search.progressive runs in one process: between stages the supernet's ops are rebuilt, "
                              "which DDP's gradient buckets cannot follow; use trainer.devices=1")
        super().setup(stage)

    def on_train_epoch_start(self) -> None:
        if self.progressive is not None:
            self._enter_stage(self.progressive.stage_of(self.current_epoch))
        # the relaxation's and the regulariser's schedules (GDAS's temperature, beta-DARTS's lambda) follow the epoch
        self._schedule_metrics = {}
        for part in (self.net.relaxation, self.regularizer):
            set_epoch = getattr(part, "set_epoch", None)
            if set_epoch is not None:
                self._schedule_metrics.update(set_epoch(self.current_epoch, self.hparams.epochs) or {})

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (x_w, y_w), (x_a, y_a) = batch
        x_w, x_a = self._layout(x_w), self._layout(x_a)
        if self.resource is not None:
            self._prepare_resource(x_a)
        if self.hparams.get("single_level", False):
            return self._single_level_step(x_w, y_w)
        arch_first = self.hparams.get("step_order", "arch_first") == "arch_first"
        if arch_first and self.arch_updates_active:
            self._architecture_step(x_w, y_w, x_a, y_a)
        loss = self._weight_step(x_w, y_w)
        if not arch_first and self.arch_updates_active:
            self._architecture_step(x_w, y_w, x_a, y_a)
        return loss

    @property
    def _set_to_none(self) -> bool:
        return self.hparams.get("zero_grad", "none") == "none"

    def _architecture_step(self, x_w, y_w, x_a, y_a) -> None:
        """One update of the alphas on the architecture batch (first order, or unrolled on the weight batch)."""
        opt_w, opt_a = self.optimizers()
        alphas = self.net.arch_parameters()
        opt_a.zero_grad(set_to_none=self._set_to_none)
        if self.hparams.order == 2:
            arch_loss, arch_logits = self._second_order_arch_grads(x_w, y_w, x_a, y_a, opt_w.optimizer)
            self._add_alpha_term_grads(alphas)
        else:
            with frozen(self._weights(opt_w)):
                arch_loss, arch_logits = architecture_loss(self.net, x_a, y_a)
                self._check_finite(arch_loss, "architecture")
                terms = self._alpha_terms()
                self.manual_backward(arch_loss if terms is None else arch_loss + terms)
            arch_loss, arch_logits = arch_loss.detach(), arch_logits.detach()
        opt_a.step()
        self.arch_acc(arch_logits, y_a)
        self.log("search/arch_loss", arch_loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log("search/arch_acc", self.arch_acc, on_step=False, on_epoch=True)

    def _single_level_step(self, x, y) -> torch.Tensor:
        """SNAS's step: one forward and backward pass of the training loss (plus the alphas' terms) on one batch, then
        the weights' and the alphas' updates; during warm-up the weights' update alone."""
        if not self.arch_updates_active:
            return self._weight_step(x, y)
        opt_w, opt_a = self.optimizers()
        opt_w.zero_grad(set_to_none=self._set_to_none)
        opt_a.zero_grad(set_to_none=self._set_to_none)
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self._check_finite(loss, "training")
        terms = self._alpha_terms()
        self.manual_backward(loss if terms is None else loss + terms)
        opt_w.step()  # clips the weights' gradients first: see on_before_optimizer_step
        opt_a.step()
        self._log_weight_step(logits.detach(), loss.detach(), y)
        return loss.detach()

    def _weight_step(self, x_w, y_w) -> torch.Tensor:
        """One SGD update of the weights on the weight batch (SDARTS perturbs the alphas it sees); the loss."""
        opt_w = self.optimizers()[0]
        alphas = self.net.arch_parameters()
        opt_w.zero_grad(set_to_none=self._set_to_none)
        hp = self.hparams
        with frozen(alphas), perturbed(self.net, hp.perturb, hp.perturb_epsilon, hp.perturb_steps, x_w, y_w):
            logits = self.net(x_w)
            loss = F.cross_entropy(logits, y_w)
            self._check_finite(loss, "weight")
            self.manual_backward(loss)
        opt_w.step()  # clips first: see on_before_optimizer_step
        self._log_weight_step(logits.detach(), loss.detach(), y_w)
        return loss.detach()

    def _log_weight_step(self, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        self.train_acc(logits, y)
        self.log("search/train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("search/train_acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)

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

    def _alpha_terms(self) -> torch.Tensor | None:
        """What the architecture loss adds to L_val: the method's regulariser and the resource penalty (None: nothing).
        The regulariser's value is logged as search/reg_loss."""
        terms = self._resource_penalty()
        if self.regularizer is not None:
            reg = self.regularizer(self.net)
            self._check_finite(reg, "regulariser")
            self.log("search/reg_loss", reg.detach(), on_step=False, on_epoch=True, sync_dist=True)
            terms = reg if terms is None else terms + reg
        return terms

    def _add_alpha_term_grads(self, alphas: Sequence[torch.nn.Parameter]) -> None:
        """Second order: the regulariser and the penalty depend on the alphas alone, so their gradient adds to the
        unrolled one as it is."""
        terms = self._alpha_terms()
        if terms is not None:
            for a, g in zip(alphas, torch.autograd.grad(terms, list(alphas), allow_unused=True)):
                if g is not None:
                    a.grad += g

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning calls this inside opt.step(), after a mixed-precision loss scaler has unscaled the
        # gradients: clipping before that would clip the scaled gradients and shrink every fp16 update
        # by the scale factor
        if optimizer is self.optimizers()[1].optimizer:
            if self.hparams.get("arch_grad_clip"):  # SNAS's code clips the alphas' gradient norm at 10
                torch.nn.utils.clip_grad_norm_(self.net.arch_parameters(), self.hparams.arch_grad_clip, foreach=True)
            return
        if optimizer is not self.optimizers()[0].optimizer:
            return
        weights = self._weights(optimizer)
        grads = [p.grad for p in weights if p.grad is not None]
        if not grads:
            return
        if self.hparams.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(weights, self.hparams.grad_clip, foreach=True)
        else:
            norm = total_norm(grads)
        # with an fp16 loss scaler an overflow is routine (the scaler skips that step); otherwise a
        # non-finite gradient would make the weights non-finite: stop before the step
        if getattr(self.trainer.precision_plugin, "scaler", None) is None and not torch.isfinite(norm):
            raise FloatingPointError(self._non_finite_message(f"weight gradient norm became {norm.item()}"))

    @staticmethod
    def _weights(opt_w: Any) -> list[torch.nn.Parameter]:
        """The supernet's weights as the weight optimiser holds them (``net.weight_parameters()``, which walks every
        module, costs milliseconds a call on a full supernet)."""
        return [p for group in opt_w.param_groups for p in group["params"]]

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
        """Set alpha.grad to the second-order architecture gradient (``darts_lite.bilevel``), averaged over DDP ranks;
        returns (L_val(w'), logits), detached."""
        loss, logits = unrolled_architecture_gradients(self.net, opt_w, x_w, y_w, x_a, y_a, self.hparams.hvp,
                                                       self.hparams.unrolled_eps, self._check_finite)
        self._all_reduce_arch_grads(self.net.arch_parameters())
        return loss, logits

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
        metrics.update({f"search/{k}": v for k, v in getattr(self, "_schedule_metrics", {}).items()})
        if self.progressive is not None:  # DrNAS's progressive learning: the stage (1, 2, ...) the epoch ran in
            metrics["search/stage"] = float(self._stage + 1)
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

    # ---- DrNAS's progressive learning ------------------------------------------------------------------------
    def _enter_stage(self, stage: int) -> None:
        """Move the supernet on to ``stage``: per stage passed, prune the ops, then widen the partial channels; the
        weight optimiser then holds the new parameters, the momentum of each widened one widened alike."""
        while self._stage < stage:
            s = self._stage + 1
            p = self.progressive
            self.net.prune_ops(p.keep_ops[s])
            widened = self.net.set_partial_channels(p.partial_channels[s]) \
                if p.partial_channels[s] != self.net.partial_channels else []
            self._swap_weights_in_optimizer(widened)
            self._stage = s
            rank_zero_info(f"progressive stage {s + 1}/{len(p.stage_epochs)} from epoch {self.current_epoch}: "
                           f"{p.keep_ops[s]} ops per edge, partial channels 1/{p.partial_channels[s]}")

    def _swap_weights_in_optimizer(self, widened: Sequence[Widened]) -> None:
        opt = self.optimizers()[0].optimizer
        by_old = {id(w.old): w for w in widened}
        for group in opt.param_groups:
            group["params"] = [by_old[id(q)].new if id(q) in by_old else q for q in group["params"]]
        for w in widened:
            state = opt.state.pop(w.old, None)
            if state:
                opt.state[w.new] = {name: widen_tensor(t, w.sources) if torch.is_tensor(t) and t.shape == w.old.shape
                                    else t for name, t in state.items()}
        if {id(q) for q in self._weights(opt)} != {id(q) for q in self.net.weight_parameters()}:
            raise RuntimeError("the weight optimiser does not hold the supernet's weights after widening")

    def restore_progressive(self, checkpoint: dict[str, Any]) -> None:
        """Put the supernet in the stage ``checkpoint`` was saved in (its partial channels and pruned ops), before its
        weights are loaded; nothing for a search without stages. ConfigError for a stage record that does not fit."""
        saved = checkpoint.get("progressive")
        if self.progressive is None or saved is None:
            return
        p = self.progressive
        stage, masks = (saved.get("stage"), saved.get("op_masks")) if isinstance(saved, dict) else (None, None)
        if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage < len(p.stage_epochs) \
                or not isinstance(masks, dict):
            raise ConfigError(f"the checkpoint's progressive stage record {saved!r} does not fit search.progressive "
                              f"({len(p.stage_epochs)} stages)")
        problem = self.net.op_mask_problem(masks)
        if problem:  # checked before anything changes
            raise ConfigError(f"the checkpoint's op masks do not fit the supernet: {problem}")
        if stage and p.partial_channels[stage] != self.net.partial_channels:
            self.net.set_partial_channels(p.partial_channels[stage], widen=False)
        self.net.set_op_masks(masks)
        self._stage = stage

    # ---- exact resume (darts_lite.resume.Resumable saves and restores the RNG streams) --------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["tau"] = self.net.tau  # recomputed from the epoch on resume; kept to read a checkpoint alone
        if self.progressive is not None:
            checkpoint["progressive"] = {"stage": self._stage,
                                         "op_masks": {c: m.cpu() for c, m in self.net.op_masks().items()}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.restore_progressive(checkpoint)  # before Lightning loads the weights, which may be of the wider ops
        super().on_load_checkpoint(checkpoint)
        if checkpoint.get("tau") is not None and self.net.tau is not None:
            self.net.tau = checkpoint["tau"]

    def rebase_schedules(self, saved: dict[str, Any]) -> list[str]:
        """The weights' cosine (Resumable's), and the architecture optimiser's constant rate."""
        changed = super().rebase_schedules(saved)
        if saved.get("arch_lr") != self.hparams.arch_lr:
            for group in self.optimizers()[1].optimizer.param_groups:
                group["lr"] = self.hparams.arch_lr
            changed.append(f"architecture lr {saved.get('arch_lr')} -> {self.hparams.arch_lr}")
        return changed

    # ---- validation --------------------------------------------------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), on_step=False, on_epoch=True, sync_dist=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
