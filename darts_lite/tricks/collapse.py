"""Collapse instruments: watch a search for the drift to parameter-free cells and stop it early.

DARTS-like searches tend to collapse: the alphas move to skip connections and pooling, and the derived cell
has hardly any weights left. Two published rules stop a search before that, and ``CollapseGuard`` (a Lightning
callback) applies either of them while logging the measures the rules read:

    DARTS+      stop once the normal cell holds ``max_skips`` or more skip connections (Liang et al., 2019)
    DARTS-ES    stop when the dominant eigenvalue of the Hessian of the validation loss w.r.t. the alphas,
                averaged over a window of measurements, has grown beyond a ratio, and return the genotype of
                one window earlier (RobustDARTS, Zela et al., 2020)

The eigenvalue comes from power iteration on exact Hessian-vector products (double backward); a measurement
leaves the run exactly as it found it (weights, alphas, BatchNorm statistics, RNG streams, gradients, mode).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from ..decision import edge_decision, param_free_share
from ..errors import ConfigError
from ..schema import Ge, Gt, Hint, Le, checked
from ..spaces.supernet import frozen, no_recompute

log = logging.getLogger("darts_lite")

STOP_RULES = ("none", "darts_plus", "eigen")

# the op DARTS+ counts; every space of darts_lite names its identity op so
SKIP_OP = "skip_connect"


# ---- the dominant Hessian eigenvalue --------------------------------------------------------------
def hessian_eigenvalue(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int = 20, tol: float = 1e-2, seed: int = 0
) -> float:
    """The dominant eigenvalue (largest in magnitude, with its sign) of the Hessian of cross_entropy(net(x), y)
    w.r.t. all alphas (``net.arch_parameters()`` flattened and concatenated), by power iteration.

    x: [B, C, H, W], y: [B] class indices. Each iteration is one exact Hessian-vector product: the alpha
    gradient is taken once with its graph kept (create_graph) and differentiated again along the current
    vector. Stops after ``iters`` products or once the residual ||H v - value v|| is at most ``tol * |value|``
    (v of unit norm; then value is within that distance of an eigenvalue), warning when it had to stop
    short. The loss is the one the architecture step descends: train mode (BatchNorm on batch
    statistics, drop path on), autocast off, in the alphas' precision (fp32 in a run, under mixed precision
    too). Random draws (a Gumbel sample, drop path masks, the start vector) come from ``seed`` inside a forked
    RNG: the same inputs give the same value, and the run's RNG streams do not move. BatchNorm running
    statistics, train/eval mode and every ``.grad`` are left as they were.
    """
    value, residual, products = _power_iteration(net, x, y, iters, tol, seed)
    if tol > 0 and residual > tol and rank_zero_only.rank == 0:
        log.warning("the Hessian eigenvalue %.4g has not converged in %d products (relative residual %.2g, tolerance "
                    "%.2g): raise guard.eigen_iters", value, products, residual, tol)
    return value


def _power_iteration(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int, tol: float,
                     seed: int) -> tuple[float, float, int]:
    """(eigenvalue, relative residual ||H v - value v|| / |value|, products taken): see hessian_eigenvalue."""
    if iters < 1:
        raise ValueError(f"iters must be at least 1, got {iters}")
    alphas = list(net.arch_parameters())
    buffers = list(net.buffers())
    saved = [b.detach().clone() for b in buffers]
    was_training = net.training
    cuda = x.device if x.device.type == "cuda" else None
    try:
        with torch.random.fork_rng(devices=[cuda] if cuda is not None else []), \
                torch.autocast(device_type=x.device.type, enabled=False), frozen(net.weight_parameters()), \
                no_recompute():  # the gradient's graph is differentiated once per product
            # seed only the generators fork_rng restores (torch.manual_seed would also reseed other GPUs)
            torch.default_generator.manual_seed(seed)
            if cuda is not None:
                with torch.cuda.device(cuda):
                    torch.cuda.manual_seed(seed)
            net.train()
            # forward, not __call__: eager even after net.compile() (which compiles __call__), as a compiled
            # graph has no double backward
            loss = F.cross_entropy(net.forward(x.to(alphas[0].dtype)), y)
            grads = torch.autograd.grad(loss, alphas, create_graph=True, allow_unused=True, materialize_grads=True)
            g = torch.cat([gr.flatten() for gr in grads])
            if not g.requires_grad:  # the loss is at most linear in the alphas: the Hessian is zero
                return 0.0, 0.0, 0
            generator = torch.Generator(device=g.device).manual_seed(seed)
            v = torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
            v /= torch.linalg.vector_norm(v)
            value, residual, products = math.nan, math.inf, 0
            while products < iters:
                products += 1
                hv = torch.autograd.grad(g, alphas, grad_outputs=v, retain_graph=True, allow_unused=True,
                                         materialize_grads=True)
                hv = torch.cat([h.flatten() for h in hv])
                value = float(v @ hv)  # Rayleigh quotient: v has unit norm
                # the residual, not the change of the quotient: two eigenvalues of similar size and opposite
                # sign keep the quotient near a wrong value for many steps while the residual stays large
                norm = torch.linalg.vector_norm(hv)
                if norm == 0:
                    return 0.0, 0.0, products
                residual = float(torch.linalg.vector_norm(hv - value * v)) / abs(value) if value else math.inf
                if residual <= tol:
                    break
                v = hv / norm
            return value, residual, products
    finally:
        torch._foreach_copy_(buffers, saved)
        net.train(was_training)


# ---- the stop rules ---------------------------------------------------------------------------
def normal_cell(genotype: Any) -> tuple[tuple[str, int], ...]:
    """The (op, input) pairs of a genotype's normal cell: the first entry of ``genotype.cells()``."""
    return next(iter(genotype.cells().values()))


def skip_connections(genotype: Any) -> int:
    """How many edges of the derived normal cell are skip connections."""
    return sum(op == SKIP_OP for op, _ in normal_cell(genotype))


def darts_plus_stop(genotype: Any, max_skips: int = 2) -> bool:
    """DARTS+: stop once the normal cell holds ``max_skips`` or more skip connections."""
    return skip_connections(genotype) >= max_skips


def eigen_window_means(eigenvalues: Sequence[float], window: int = 5) -> tuple[float, float] | None:
    """(earlier, latest) window means of the last ``2 * window`` measurements, None while there are fewer.

    With measurements l_0 .. l_i, mean(i) averages l_{i-window+1} .. l_i (the latest ``window``), and
    mean(i - window) the ``window`` just before them: two adjacent windows that share no measurement.
    """
    if len(eigenvalues) < 2 * window:
        return None
    latest = eigenvalues[-window:]
    earlier = eigenvalues[-2 * window:-window]
    return sum(earlier) / window, sum(latest) / window


def eigen_stop(eigenvalues: Sequence[float], window: int = 5, ratio: float = 0.75) -> bool:
    """DARTS-ES at the latest measurement i: stop when mean(i - window) / mean(i) < ratio.

    First possible at the ``2 * window``-th measurement (i = 2 * window - 1), when both windows are full. The
    ratio is read for a growing positive curvature: with mean(i) <= 0 the rule does not fire (no positive
    curvature to have grown); with mean(i - window) <= 0 < mean(i) it fires (the ratio is <= 0).
    """
    means = eigen_window_means(eigenvalues, window)
    if means is None:
        return False
    earlier, latest = means
    return latest > 0 and earlier < ratio * latest


# ---- the callback -----------------------------------------------------------------------------
class CollapseGuard(pl.Callback):
    """Per-epoch collapse measures, and an optional early stop by DARTS+ or DARTS-ES.

    Every epoch it logs (module.log_dict: metrics.csv and W&B curves) guard/param_free_share (mean over the
    derived cells of their share of parameter-free ops), guard/entropy (mean entropy of all edges' op
    distributions, nats), guard/skip_connections (in the normal cell) and, on measuring epochs,
    guard/eigenvalue (see hessian_eigenvalue).

    eigen_every: measure the eigenvalue after every ``eigen_every``-th epoch that trains the alphas (0: never).
    eigen_iters, eigen_tol: power iteration's most Hessian-vector products and relative tolerance.
    eigen_batch: how many validation images the loss is taken on: the first ``eigen_batch`` the validation
        dataloader yields, taken once when training starts. That loader is unshuffled and unaugmented (the
        architecture part, or the test split, in the data seed's order), so a resumed run, and every DDP
        rank, takes the very same images.
    stop: "none" (measure only), "darts_plus" or "eigen".
    max_skips: DARTS+ stops once the normal cell holds this many skip connections.
    eigen_window, eigen_ratio: DARTS-ES compares the mean of the latest ``eigen_window`` measurements with the
        mean of the ``eigen_window`` before them, and stops when earlier / latest < eigen_ratio; it then
        reports the genotype of the epoch that ended the earlier window.

    Warm-up epochs (module.hparams.warmup_epochs) train the weights only: the rules skip them. Their alphas
    are the initial ones, whose derived cell is a random draw (DARTS+ would stop on chance skip connections),
    and the eigenvalue of an untrained supernet is no baseline to measure growth from. Measurements start
    with the alphas' training, and the measures are still logged every epoch.

    Stopping is an ordinary Lightning stop after that epoch's logging (that epoch's checkpoint and files are
    still written); ``stopped`` then holds {"rule", "epoch", "reason"} and for "eigen" also
    {"rollback_epoch", "rollback_genotype"}. Its history (eigenvalues, genotypes, stopped) is in the checkpoint.
    """

    @checked
    def __init__(
        self,
        eigen_every: Annotated[int, Ge(0), Hint("0 = never")] = 1,
        eigen_iters: Annotated[int, Ge(1)] = 20,
        eigen_tol: Annotated[float, Ge(0)] = 1e-2,
        eigen_batch: Annotated[int, Ge(1)] = 64,
        stop: Literal["none", "darts_plus", "eigen"] = "none",
        max_skips: Annotated[int, Ge(1)] = 2,
        eigen_window: Annotated[int, Ge(1)] = 5,
        eigen_ratio: Annotated[float, Gt(0), Le(1)] = 0.75,
    ):
        self.eigen_every, self.eigen_iters, self.eigen_tol, self.eigen_batch = eigen_every, eigen_iters, eigen_tol, eigen_batch
        self.stop, self.max_skips = stop, max_skips
        self.eigen_window, self.eigen_ratio = eigen_window, float(eigen_ratio)
        self.eigenvalues: list[tuple[int, float]] = []  # (epoch, value) per measurement
        self.genotypes: dict[int, str] = {}  # epoch -> genotype text at its end
        self.stopped: dict[str, Any] | None = None
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._warned = False

    # ---- when -------------------------------------------------------------------------------
    @staticmethod
    def _warmup(module: pl.LightningModule) -> int:
        return int(getattr(module, "hparams", {}).get("warmup_epochs", 0) or 0)

    def measures_at(self, epoch: int, warmup_epochs: int = 0) -> bool:
        """Whether the eigenvalue is measured at the end of ``epoch``: the ``eigen_every``-th, 2 * ``eigen_every``-th,
        ... epoch that trains the alphas."""
        return self.eigen_every > 0 and epoch >= warmup_epochs and (epoch - warmup_epochs + 1) % self.eigen_every == 0

    @classmethod
    def config_problems(cls, rules: Any) -> list[str]:
        if rules.values["stop"] == "eigen" and rules.values["eigen_every"] == 0:
            return [f"{rules.key('stop')}=eigen: needs eigenvalues; set {rules.key('eigen_every')} to 1 or more"]
        return []

    # ---- hooks ------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # a resumed run repeats the epochs after its checkpoint: forget what it recorded for them
        start = trainer.current_epoch
        self.eigenvalues = [(e, v) for e, v in self.eigenvalues if e < start]
        self.genotypes = {e: g for e, g in self.genotypes.items() if e < start}
        if self.stopped is not None and self.stopped["epoch"] >= start:
            self.stopped = None
        if self.eigen_every:
            self._batch = self._take_batch(trainer, module)
        if self.stopped is not None:
            # the run was stopped before its checkpoint: resuming it takes the same decision again
            trainer.should_stop = True
            if trainer.is_global_zero:
                log.info("collapse guard: the run already stopped after epoch %d (%s)", self.stopped["epoch"],
                         self.stopped["reason"])

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        net = module.net
        genotype = net.genotype()
        self.genotypes[epoch] = genotype.to_text()
        entropies = torch.cat([edge_decision(p)["entropy"] for p in net.op_probabilities().values()])
        shares = [param_free_share(pairs) for pairs in genotype.cells().values()]
        metrics = {
            "guard/param_free_share": sum(shares) / len(shares),
            "guard/entropy": float(entropies.mean()),
            "guard/skip_connections": float(skip_connections(genotype)),
        }
        warmup = self._warmup(module)
        if self.measures_at(epoch, warmup):
            value = self._measure(trainer, module)
            self.eigenvalues.append((epoch, value))
            metrics["guard/eigenvalue"] = value
        module.log_dict(metrics, on_step=False, on_epoch=True)
        if self.stop == "none" or self.stopped is not None or epoch < warmup:
            return
        decided = self._decide(epoch, genotype)
        # every rank holds the same alphas and eigenvalues, so the same decision; rank 0's is sent to the others
        # so that no float noise can ever let one rank go on alone
        decided = trainer.strategy.broadcast(decided, src=0)
        if decided is not None:
            self.stopped = decided
            trainer.should_stop = True
            if trainer.is_global_zero:
                log.info("collapse guard (%s): stopping after epoch %d: %s", decided["rule"], epoch, decided["reason"])

    # ---- parts ------------------------------------------------------------------------------
    def _decide(self, epoch: int, genotype: Any) -> dict[str, Any] | None:
        if self.stop == "darts_plus":
            skips = skip_connections(genotype)
            if skips < self.max_skips:
                return None
            return {"rule": "darts_plus", "epoch": epoch,
                    "reason": f"the normal cell holds {skips} skip connections (guard.max_skips={self.max_skips}), "
                              "the sign of a collapse to parameter-free ops"}
        values = [v for _, v in self.eigenvalues]
        measured_now = bool(self.eigenvalues) and self.eigenvalues[-1][0] == epoch
        if not measured_now or not eigen_stop(values, self.eigen_window, self.eigen_ratio):
            return None
        earlier, latest = eigen_window_means(values, self.eigen_window)
        k = self.eigen_window
        rollback = self.eigenvalues[-1 - k][0]  # the last measurement of the earlier window
        return {"rule": "eigen", "epoch": epoch,
                "reason": f"the dominant Hessian eigenvalue grew from a mean of {earlier:.4g} over {k} measurements "
                          f"to {latest:.4g} over the next {k} (ratio {earlier / latest:.3f} < "
                          f"guard.eigen_ratio={self.eigen_ratio}); the genotype of epoch {rollback} is the one to keep",
                "rollback_epoch": rollback, "rollback_genotype": self.genotypes.get(rollback)}

    def _measure(self, trainer: pl.Trainer, module: pl.LightningModule) -> float:
        """The eigenvalue on the fixed batch, averaged over ranks (they measure the same images: equal up to float
        noise, and after the mean equal exactly)."""
        if self._batch is None:
            self._batch = self._take_batch(trainer, module)
        x, y = self._batch
        value, residual, products = _power_iteration(module.net, x, y, self.eigen_iters, self.eigen_tol, seed=0)
        if self.eigen_tol > 0 and residual > self.eigen_tol and not self._warned and trainer.is_global_zero:
            # once per run: the same network measured each epoch tends to converge alike every time
            log.warning("collapse guard: the Hessian eigenvalue at epoch %d has a relative residual of %.2g after %d "
                        "products (guard.eigen_tol=%g); raise guard.eigen_iters for a closer value (not repeated)",
                        trainer.current_epoch, residual, products, self.eigen_tol)
            self._warned = True
        mean = trainer.strategy.reduce(torch.tensor(value, dtype=torch.float64, device=module.device), reduce_op="mean")
        return float(mean)

    def _take_batch(self, trainer: pl.Trainer, module: pl.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys, n = [], [], 0
        for x, y in _validation_batches(trainer):
            xs.append(x)
            ys.append(y)
            n += len(y)
            if n >= self.eigen_batch:
                break
        if n < self.eigen_batch:
            raise ConfigError(
                f"guard.eigen_batch={self.eigen_batch} asks for more validation images than the {n} there are; "
                "lower guard.eigen_batch"
            )
        x, y = torch.cat(xs)[: self.eigen_batch], torch.cat(ys)[: self.eigen_batch]
        return x.to(module.device), y.to(module.device)

    # ---- resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # plain lists, dicts, numbers and strings: loadable with weights_only=True
        return {
            "eigenvalues": [[e, v] for e, v in self.eigenvalues],
            "genotypes": dict(self.genotypes),
            "stopped": None if self.stopped is None else dict(self.stopped),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.eigenvalues = [(int(e), float(v)) for e, v in state_dict.get("eigenvalues", [])]
        self.genotypes = {int(e): str(g) for e, g in state_dict.get("genotypes", {}).items()}
        stopped = state_dict.get("stopped")
        if stopped is not None and stopped.get("rule") != self.stop:
            # resumed under another rule (say guard.stop=none, to go on past the stop): its decision no longer holds
            stopped = None
        self.stopped = None if stopped is None else dict(stopped)


def _validation_batches(trainer: pl.Trainer) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None and hasattr(datamodule, "val_dataloader"):
        yield from datamodule.val_dataloader()
        return
    loaders = trainer.val_dataloaders
    if loaders is None:
        raise ConfigError("the collapse guard's eigenvalue needs validation data: fit with a datamodule or val_dataloaders")
    for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
        yield from loader
