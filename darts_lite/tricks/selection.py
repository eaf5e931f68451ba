"""Perturbation-based architecture selection (DARTS-PT, Wang et al., ICLR 2021) on a trained supernet.

The argmax of the alphas says which op an edge weights most, not which op the supernet relies on. Selection by
perturbation asks the supernet instead:

1. Operations: the edges of each cell type in a random (seeded) order. For the current edge, remove each
   candidate op in turn (its weight set to 0 in the mixed sum, the others as they are) and measure the supernet's
   validation accuracy; keep the op whose removal lowers it most. From then on that edge runs its op alone
   (weight 1, the others 0). One decision takes one edge of every cell type (normal, then reduction); the
   supernet's weights (never the alphas) are fine-tuned between decisions.
2. Topology (DARTS space): per node with more than two inputs (nodes in a random order), remove each input edge in
   turn (all its weights 0) and keep the two whose removal lowers the accuracy most. NAS-Bench-201 has no such
   step: every edge stays, and `none` is one of its candidate ops. In the DARTS space `none` is no candidate (a
   genotype has no place for it, and its weight multiplies zeros).

Everything goes through ``Supernet.edge_weight_transform``: the alphas are never edited. Accuracy is measured as
the selection paper's code does, with the supernet in train mode (BatchNorm normalises with each batch's own
statistics), without gradients, without drop path; the running statistics are left as they were. The fine-tuning
follows the same code: SGD on the weight part at a tenth of the search's learning rate (momentum, weight decay
and clipping as in the search), cosine-annealed to the search's lr_min over all fine-tuning epochs in the DARTS
space, constant in NAS-Bench-201; ``epochs`` epochs between two decisions (5 there).
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from ..relax import EdgeWeights
from ..resume import rng_states, set_rng_states
from ..spaces import get_space, space_of
from ..spaces.supernet import frozen
from ..torchfiles import open_atomically, read_torch_file, replace_atomically, weights_fit, write_text_atomically
from .bn_calibration import preserved_bn_statistics

# how the final genotype is chosen (search.selection); each entry but argmax runs after the search:
# (search module, data module, seed=...) -> SelectionResult, its options read from the module's hyper-parameters
SELECTIONS: Registry = Registry("selection")
SELECTIONS.register("argmax", "darts_lite.tricks.selection:argmax_genotype",
                    summary="each edge's strongest op, each node's strongest inputs (the space's rule)")
SELECTIONS.register("perturbation", "darts_lite.tricks.selection:perturbation_after_search",
                    summary="DARTS-PT: remove each op in turn on the trained supernet, keep the one the accuracy needs most")
SELECTIONS.register("sampling", "darts_lite.methods.rsws:sampling_selection",
                    summary="RSWS: score architectures drawn at random with the shared weights, keep the most accurate")
SELECTIONS.register("threshold", "darts_lite.methods.fairdarts:threshold_selection",
                    summary="FairDARTS: the top-2 rule's edges, each kept only if its op's strength reaches a threshold")
# how the run's messages call each selection that runs after a search
SELECTION_TITLES = {"perturbation": "perturbation-based selection", "sampling": "sampling selection",
                    "threshold": "threshold selection"}
CSV_COLUMNS = ("decision", "phase", "cell", "edge", "node", "candidate", "accuracy_removed", "base_accuracy", "chosen")
DEFAULT_EPOCHS = 5  # fine-tuning epochs between two decisions (the selection paper's interval)
STATE_FORMAT = 1  # of selection_state.pt, what a resumed task=select continues from

Batch = tuple[torch.Tensor, torch.Tensor]


def argmax_genotype(module: Any, *args: Any, **kwargs: Any) -> Any:
    """The genotype the search's alphas give by its space's rule (what every search writes as genotype.json)."""
    return module.net.genotype()


# ---- the transform -------------------------------------------------------------------------------------------
class SelectionTransform:
    """``edge_weight_transform`` of a supernet under selection: decided edges run their op alone (weight 1),
    dropped edges contribute nothing, and ``removal`` = (cell type, edge, op) zeroes one op's weight of one edge
    (op None: the whole edge) while a candidate is measured. Weights [E, O] in, weights [E, O] out."""

    def __init__(self) -> None:
        self.decided: dict[str, dict[int, int]] = {}
        self.dropped: dict[str, set[int]] = {}
        self.removal: tuple[str, int, int | None] | None = None

    def __call__(self, cell_type: str, ew: EdgeWeights) -> EdgeWeights:
        decided, dropped = self.decided.get(cell_type, {}), self.dropped.get(cell_type, set())
        removal = self.removal if self.removal is not None and self.removal[0] == cell_type else None
        if not (decided or dropped or removal):
            return ew
        if ew.index is not None:
            raise ValueError("perturbation selection mixes every op of an edge: it needs the softmax relaxation")
        w = ew.weights
        # a mask and a constant, not in-place writes: the weights may still carry a graph to the alphas
        keep, fixed = torch.ones_like(w), torch.zeros_like(w)
        for e, op in decided.items():
            keep[e] = 0.0
            fixed[e, op] = 1.0
        for e in dropped:
            keep[e] = 0.0
            fixed[e] = 0.0
        if removal is not None:
            _, e, op = removal
            if op is None:
                keep[e], fixed[e] = 0.0, 0.0
            else:
                keep[e, op], fixed[e, op] = 0.0, 0.0
        return EdgeWeights(w * keep + fixed, ew.index, ew.skip)


# ---- the cell layout a selection needs -----------------------------------------------------------------------
@dataclass
class _Layout:
    space: str
    cells: list[str]  # cell types, the normal cell first
    labels: list[str]  # one per edge, in alpha row order
    node_of: list[int]  # per edge, the node it feeds
    input_of: list[int]  # per edge, the state it reads
    candidates: list[int]  # op columns a decision chooses among
    nodes: dict[int, list[int]] = field(default_factory=dict)  # topology: node -> its input edges (> 2 of them)


def _layout(net: nn.Module, space: str) -> _Layout:
    primitives = list(net.primitives)
    cells = list(net.op_probabilities())
    labels = list(net.edge_labels())
    if space == "nb201":
        from ..spaces.nb201 import EDGES

        node_of, input_of = [i for i, _ in EDGES], [j for _, j in EDGES]
        return _Layout(space, cells, labels, node_of, input_of, list(range(len(primitives))))
    node_of, input_of = [], []
    for node in range(net.steps):
        for j in range(node + 2):
            node_of.append(node)
            input_of.append(j)
    nodes = {k: [e for e, n in enumerate(node_of) if n == k] for k in range(net.steps)}
    candidates = [k for k, p in enumerate(primitives) if p != "none"]
    return _Layout(space, cells, labels, node_of, input_of, candidates, {k: es for k, es in nodes.items() if len(es) > 2})


# ---- the decisions -------------------------------------------------------------------------------------------
class PerturbationSelection:
    """The decisions of a selection on ``net`` (a space's SearchNetwork, softmax relaxation).

    measure(): the supernet's validation accuracy as it runs now (the transform is installed while it is called).
    fine_tune(): trains the supernet's weights between two decisions (None: no fine-tuning).
    seed: the random order of the edges and nodes.
    """

    def __init__(self, net: nn.Module, space: str, measure: Callable[[], float],
                 fine_tune: Callable[[], None] | None = None, seed: int = 0, progress: bool = True):
        if getattr(net.relaxation, "hard", False):
            raise ValueError("perturbation selection needs a supernet whose edges mix every op (DARTS's softmax); this "
                             f"one samples one op per edge ({type(net.relaxation).__name__})")
        self.net, self.space, self.measure, self.fine_tune = net, space, measure, fine_tune
        self.layout = _layout(net, space)
        self.seed, self.progress = seed, progress
        self.transform = SelectionTransform()
        self.rows: list[dict[str, Any]] = []

    @property
    def num_decisions(self) -> int:
        """One per edge (each deciding that edge in every cell type), then one per node with more than two inputs."""
        return len(self.layout.labels) + len(self.layout.nodes)

    def run(self, start: int = 0, after_decision: Callable[[int], None] | None = None) -> Any:
        """Take every decision; returns the resulting genotype of the space. The rows are in ``self.rows``.

        start: decisions already taken (their choices restored with ``load_state_dict``): the run goes on from the
        next one. after_decision(d): called after decision d and the fine-tuning that follows it (a resumable
        selection saves its state there)."""
        layout, rng = self.layout, random.Random(self.seed)
        edge_order = {cell: rng.sample(range(len(layout.labels)), len(layout.labels)) for cell in layout.cells}
        node_order = {cell: rng.sample(sorted(layout.nodes), len(layout.nodes)) for cell in layout.cells}
        steps: list[Callable[[], str]] = []
        for i in range(len(layout.labels)):
            steps.append(lambda i=i: "; ".join(self._decide_op(cell, edge_order[cell][i], i + 1) for cell in layout.cells))
        for t in range(len(layout.nodes)):
            d = len(layout.labels) + t + 1
            steps.append(lambda t=t, d=d: "; ".join(self._decide_node(cell, node_order[cell][t], d) for cell in layout.cells))
        previous = self.net.edge_weight_transform
        self.net.edge_weight_transform = self.transform
        try:
            for d, step in enumerate(steps, start=1):
                if d <= start:
                    continue
                said = step()
                if self.progress:
                    rank_zero_info(f"perturbation selection: decision {d} of {len(steps)}: {said}")
                if d < len(steps) and self.fine_tune is not None:
                    self.fine_tune()
                if after_decision is not None:
                    after_decision(d)
        finally:
            self.net.edge_weight_transform = previous
        return self.genotype()

    def state_dict(self) -> dict[str, Any]:
        """The choices taken so far and their rows (plain values, loadable with weights_only=True)."""
        return {"decided": {c: dict(es) for c, es in self.transform.decided.items()},
                "dropped": {c: sorted(es) for c, es in self.transform.dropped.items()}, "rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The choices of ``state_dict``; ValueError for choices this supernet cannot hold (cell types, edges, ops)."""
        decided = {c: {int(e): int(op) for e, op in es.items()} for c, es in state["decided"].items()}
        dropped = {c: {int(e) for e in es} for c, es in state["dropped"].items()}
        rows = [dict(r) for r in state["rows"]]
        edges, ops = len(self.layout.labels), len(self.net.primitives)
        for c in {*decided, *dropped}:
            if c not in self.layout.cells:
                raise ValueError(f"cell type {c!r}: this supernet has {', '.join(self.layout.cells)}")
        if any(not 0 <= e < edges or not 0 <= op < ops for es in decided.values() for e, op in es.items()) or any(
                not 0 <= e < edges for es in dropped.values() for e in es):
            raise ValueError(f"a decision names an edge or an op this supernet does not have ({edges} edges, {ops} ops)")
        self.transform.decided, self.transform.dropped, self.rows = decided, dropped, rows

    def _accuracy(self, removal: tuple[str, int, int | None] | None) -> float:
        self.transform.removal = removal
        try:
            return float(self.measure())
        finally:
            self.transform.removal = None

    def _decide_op(self, cell: str, edge: int, decision: int) -> str:
        layout, primitives = self.layout, self.net.primitives
        base = self._accuracy(None)
        accuracies = [self._accuracy((cell, edge, op)) for op in layout.candidates]
        # the first of equal accuracies wins: a stable choice, as the selection paper's strict comparison makes it
        best = layout.candidates[min(range(len(accuracies)), key=lambda k: accuracies[k])]
        self.transform.decided.setdefault(cell, {})[edge] = best
        for op, acc in zip(layout.candidates, accuracies):
            self.rows.append({"decision": decision, "phase": "operation", "cell": cell, "edge": edge,
                              "node": layout.node_of[edge], "candidate": primitives[op], "accuracy_removed": acc,
                              "base_accuracy": base, "chosen": op == best})
        return f"{cell} edge {layout.labels[edge]}: {primitives[best]} (accuracy {base:.4f}, without it " \
               f"{min(accuracies):.4f})"

    def _decide_node(self, cell: str, node: int, decision: int) -> str:
        layout = self.layout
        edges = layout.nodes[node]
        base = self._accuracy(None)
        accuracies = {e: self._accuracy((cell, e, None)) for e in edges}
        # the selection paper's code drops, one at a time, the edge whose removal hurts least until two remain;
        # the measures do not change in between, so that keeps the two whose removal hurts most (ties: the
        # lower input)
        kept = sorted(sorted(edges, key=lambda e: accuracies[e])[:2])
        self.transform.dropped.setdefault(cell, set()).update(e for e in edges if e not in kept)
        for e in edges:
            self.rows.append({"decision": decision, "phase": "topology", "cell": cell, "edge": e, "node": node,
                              "candidate": layout.labels[e], "accuracy_removed": accuracies[e], "base_accuracy": base,
                              "chosen": e in kept})
        return f"{cell} node {node}: inputs {', '.join(layout.labels[e] for e in kept)} (accuracy {base:.4f})"

    def genotype(self) -> Any:
        """The genotype of the decisions taken (every edge decided, every node's topology chosen)."""
        layout, primitives = self.layout, self.net.primitives
        space = get_space(self.space)
        decided = self.transform.decided
        missing = [(cell, e) for cell in layout.cells for e in range(len(layout.labels)) if e not in decided.get(cell, {})]
        if missing:
            raise RuntimeError(f"selection is not finished: {len(missing)} edges undecided")
        if self.space == "nb201":
            return space.Genotype(tuple((primitives[decided["cell"][e]], layout.input_of[e])
                                        for e in range(len(layout.labels))))
        cells = {}
        for cell in layout.cells:
            dropped = self.transform.dropped.get(cell, set())
            cells[cell] = tuple((primitives[decided[cell][e]], layout.input_of[e])
                                for e in range(len(layout.labels)) if e not in dropped)
        steps, multiplier = self.net.steps, self.net.multiplier
        concat = tuple(range(2 + steps - multiplier, steps + 2))
        if "reduce" not in cells:
            return space.Genotype(normal=cells["normal"], normal_concat=concat, fixed_reduction=True)
        return space.Genotype(cells["normal"], concat, cells["reduce"], concat)


# ---- measuring and fine-tuning a supernet --------------------------------------------------------------------
def validation_accuracy(net: nn.Module, batches: Iterable[Batch]) -> float:
    """Top-1 accuracy of ``net`` on ``batches`` (x [B, C, H, W], y [B]) in train mode (each batch's BatchNorm
    statistics), without gradients or drop path; running statistics, mode and drop path are restored."""
    device = next(net.parameters()).device
    was_training, drop = net.training, getattr(net, "drop_path_prob", None)
    correct = total = 0
    with preserved_bn_statistics(net), torch.no_grad():
        net.train()
        if drop is not None:
            net.drop_path_prob = 0.0
        try:
            for x, y in batches:
                x, y = x.to(device), y.to(device)
                correct += int((net(x).argmax(dim=-1) == y).sum())
                total += len(y)
        finally:
            net.train(was_training)
            if drop is not None:
                net.drop_path_prob = drop
    if total == 0:
        raise ValueError("perturbation selection: the validation data is empty")
    return correct / total


class FineTuner:
    """One call: ``epochs`` epochs (each at most ``max_batches`` batches) of SGD on the supernet's weights, the
    alphas untouched. The learning rate starts at ``lr`` and, with ``total_epochs``, follows a cosine to
    ``lr_min`` over that many epochs (the whole selection); without, it stays."""

    def __init__(self, net: nn.Module, batches: Callable[[int], Iterable[Batch]], epochs: int, max_batches: int | None,
                 lr: float, momentum: float, weight_decay: float, grad_clip: float | None,
                 lr_min: float | None = None, total_epochs: int | None = None):
        self.net, self.batches, self.epochs, self.max_batches = net, batches, epochs, max_batches
        self.grad_clip = grad_clip
        self.weights = net.weight_parameters()
        self.optimizer = torch.optim.SGD(self.weights, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.scheduler = None
        if total_epochs and lr_min is not None:
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=total_epochs,
                                                                        eta_min=min(lr_min, lr))
        self.epoch = 0

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "epoch": self.epoch,
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def __call__(self) -> None:
        device = next(self.net.parameters()).device
        was_training = self.net.training
        self.net.train()
        try:
            with frozen(self.net.arch_parameters()):
                for _ in range(self.epochs):
                    for k, (x, y) in enumerate(self.batches(self.epoch)):
                        if self.max_batches is not None and k >= self.max_batches:
                            break
                        self.optimizer.zero_grad(set_to_none=True)
                        loss = F.cross_entropy(self.net(x.to(device)), y.to(device))
                        if not torch.isfinite(loss):
                            raise FloatingPointError(f"perturbation selection: the fine-tuning loss became {loss.item()}")
                        loss.backward()
                        if self.grad_clip:
                            nn.utils.clip_grad_norm_(self.weights, self.grad_clip)
                        self.optimizer.step()
                    self.epoch += 1
                    if self.scheduler is not None:
                        self.scheduler.step()
        finally:
            self.net.train(was_training)


def weight_batches(dm: Any, seed: int, epoch: int) -> Iterator[Batch]:
    """The weight part of a SearchDataModule in an order of its own per fine-tuning epoch (seed, epoch), augmented
    as in the search; full batches only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + 500_009 + epoch)
    perm = torch.randperm(len(dm.weight_idx), generator=g)
    bs = dm.batch_size
    for s in range(len(perm) // bs):
        yield dm.train_batch(dm.weight_idx[perm[s * bs:(s + 1) * bs]].to(dm.train_x.device))


# ---- the whole selection -------------------------------------------------------------------------------------
@dataclass
class SelectionResult:
    genotype: Any
    rows: list[dict[str, Any]]
    name: str = "perturbation"  # the selection's name: its files are genotype_<name>.json/.txt
    columns: tuple[str, ...] = CSV_COLUMNS

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """selection.csv (one row per measured candidate) and genotype_<name>.json/.txt in ``out_dir``."""
        out = Path(out_dir)
        json_name, text_name = f"genotype_{self.name}.json", f"genotype_{self.name}.txt"
        files = {"selection.csv": out / "selection.csv", json_name: out / json_name, text_name: out / text_name}
        with open_atomically(files["selection.csv"]) as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        write_text_atomically(files[json_name], self.genotype.to_json() + "\n")
        write_text_atomically(files[text_name], self.genotype.to_text() + "\n")
        return files


def check_selection_options(epochs: Any, batches: Any) -> list[str]:
    """Problems with the fine-tuning options, one line each (empty: fine)."""
    problems = []
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        problems.append(f"search.selection_epochs={epochs!r}: must be an integer >= 0 (fine-tuning epochs between two "
                        "decisions; 0 = none)")
    if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 1):
        problems.append(f"search.selection_batches={batches!r}: must be null (whole epochs) or an integer >= 1")
    return problems


def perturbation_selection(module: nn.Module, dm: Any, epochs: int = DEFAULT_EPOCHS, batches: int | None = None,
                           seed: int = 0, progress: bool = True, device: str | torch.device | None = None,
                           state_path: str | Path | None = None, resume: bool = False) -> SelectionResult:
    """Select a genotype from ``module`` (a trained SearchModule) by perturbation on ``dm``'s data (a
    SearchDataModule: fine-tuning on its weight part, accuracy on its validation data). Fine-tunes the
    supernet's weights in place; the alphas are left as they were.

    epochs: fine-tuning epochs between two decisions; batches: at most this many batches per epoch (None: all).
    device: where the supernet runs (None: where the data module holds its data).
    state_path: after every decision the selection's state (choices, rows, supernet weights, fine-tuning optimiser
    and schedule, random streams) is written there atomically; with ``resume`` and such a file, the selection goes
    on after its last decision and ends where an uninterrupted one does (a file made from other alphas or other
    options is refused). The file is removed when the selection is done.
    """
    problems = check_selection_options(epochs, batches)
    if problems:
        raise ValueError("; ".join(problems))
    net, hp = module.net, module.hparams
    space = space_of(net).NAME
    dm.setup()
    val = dm.val_dataloader()  # also moves the data module's tensors where a trainer put the supernet
    net.to(dm.train_x.device if device is None else device)
    if net.num_classes != dm.num_classes:
        raise ValueError(f"the supernet has {net.num_classes} classes and the data {dm.num_classes}")
    layout = _layout(net, space)
    intervals = len(layout.labels) + len(layout.nodes) - 1
    tuner = None
    if epochs > 0:
        cosine = space == "darts"  # the selection paper's DARTS-space code anneals; its NAS-Bench-201 code does not
        tuner = FineTuner(net, lambda e: weight_batches(dm, seed, e), epochs, batches, lr=hp.lr / 10,
                          momentum=hp.momentum, weight_decay=hp.weight_decay, grad_clip=hp.get("grad_clip"),
                          lr_min=hp.lr_min if cosine else None, total_epochs=epochs * intervals if cosine else None)
    selection = PerturbationSelection(net, space, lambda: validation_accuracy(net, val), tuner, seed, progress)
    if state_path is None:
        return SelectionResult(selection.run(), selection.rows)
    state = SelectionState(Path(state_path), {"epochs": epochs, "batches": batches, "seed": seed,
                                              "alphas": _alphas_digest(net)})
    start = state.restore(net, tuner, selection) if resume else 0
    if progress and start:
        rank_zero_info(f"perturbation selection: resuming after decision {start} of {selection.num_decisions} "
                       f"({state.path})")
    genotype = selection.run(start, lambda d: state.save(d, net, tuner, selection))
    result = SelectionResult(genotype, selection.rows)
    state.path.unlink(missing_ok=True)
    return result


def _alphas_digest(net: nn.Module) -> str:
    """sha256 of the supernet's alphas: which search a selection state belongs to."""
    digest = hashlib.sha256()
    for p in net.arch_parameters():
        digest.update(p.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class SelectionState:
    """A selection's progress on disk (``path``), for ``options`` (fine-tuning epochs, batches, seed, alphas)."""

    path: Path
    options: dict[str, Any]

    def save(self, decisions: int, net: nn.Module, tuner: FineTuner | None, selection: PerturbationSelection) -> None:
        state = {"format": STATE_FORMAT, "decisions": decisions, "options": self.options, "net": net.state_dict(),
                 "tuner": None if tuner is None else tuner.state_dict(), "selection": selection.state_dict(),
                 "rng": rng_states()}
        replace_atomically(self.path, lambda tmp: torch.save(state, tmp))  # a kill mid-write leaves the previous whole

    def restore(self, net: nn.Module, tuner: FineTuner | None, selection: PerturbationSelection) -> int:
        """Loads the saved progress into net, tuner and selection; the decisions taken (0: nothing saved yet)."""
        if not self.path.exists():
            return 0
        state = read_torch_file(self.path, f"resume=true: the selection state {self.path} (remove it to select from "
                                           "the start)")
        try:
            decisions, options = int(state["decisions"]), state["options"]
            fmt = state.get("format")
        except Exception as e:  # a torch file, but not a selection state
            raise ConfigError(f"resume=true: {self.path} is not a readable selection state ({type(e).__name__}: {e}); "
                              "remove it to select from the start") from None
        if fmt != STATE_FORMAT:
            raise ConfigError(f"resume=true: {self.path} has selection state format {fmt!r}, this darts_lite reads "
                              f"{STATE_FORMAT}; remove it to select from the start")
        changed = [f"{k}: {options.get(k)!r} in the state, {v!r} now" for k, v in self.options.items()
                   if options.get(k) != v]
        if changed:
            what = "; ".join("alphas: another search's checkpoint" if c.startswith("alphas") else c for c in changed)
            raise ConfigError(f"resume=true: {self.path} was saved by another selection ({what}); give the same "
                              "ckpt_path and options, or another run folder")
        if not 0 < decisions <= selection.num_decisions:
            raise ConfigError(f"resume=true: {self.path} says {decisions} decisions of {selection.num_decisions} were "
                              "taken; remove it to select from the start")
        weights = state.get("net")
        weights_fit(lambda: net, weights, f"resume=true: the selection state {self.path} (remove it to select from "
                    "the start)")
        if any(weights[k].dtype != v.dtype for k, v in net.state_dict().items()):
            raise ConfigError(f"resume=true: {self.path} holds supernet weights of other types; remove it to select "
                              "from the start")
        rng = rng_states()
        try:
            selection.load_state_dict(state["selection"])
            if tuner is not None:
                tuner.load_state_dict(state["tuner"])
            set_rng_states(state["rng"])
            net.load_state_dict(weights)  # last: checked above, so the supernet is never left half-restored
        except Exception as e:  # a torch file of the right form whose parts are damaged or another program's
            set_rng_states(rng)
            raise ConfigError(f"resume=true: {self.path} is not a readable selection state ({type(e).__name__}: "
                              f"{str(e)[:300]}); remove it to select from the start") from None
        return decisions


def perturbation_after_search(module: nn.Module, dm: Any, seed: int = 0, **kwargs: Any) -> SelectionResult:
    """``perturbation_selection`` with the search's own options (``search.selection_epochs``, ``selection_batches``)."""
    hp = module.hparams
    return perturbation_selection(module, dm, epochs=hp.selection_epochs, batches=hp.selection_batches, seed=seed, **kwargs)


def expected_rows(net: nn.Module, space: str) -> int:
    """How many rows a selection on ``net`` writes: edges x candidate ops, plus each topology node's inputs, per cell type."""
    layout = _layout(net, space)
    per_cell = len(layout.labels) * len(layout.candidates) + sum(len(es) for es in layout.nodes.values())
    return per_cell * len(layout.cells)


def selection_device(accelerator: Any) -> torch.device:
    """Where task=select runs: the GPU when the trainer's accelerator allows one and there is one, else the CPU."""
    wants_gpu = str(accelerator) in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")
