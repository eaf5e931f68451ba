"""Resource-aware search: a cost per (cell type, edge, op) of a search network, the supernet's expected cost
(differentiable in the alphas), the derived cell's exact cost, and the penalty SearchModule adds to the
architecture loss (``search.resource``).

Kinds and units:
    flops    millions of multiply-adds (MACs, what NAS papers call FLOPs; half of torch's FLOP count, see
             ``darts_lite.measure``) of one forward of the op alone at its real input size in this network, per
             image; only convolutions and matrix products count (pooling, BN and sums are free)
    params   millions of parameters of the op (search cells' BatchNorms have no affine parameters)
    latency  milliseconds per image (batch 1, eval mode, no gradient) on this machine: ``measure.latency_ms``, the
             median of a few timed runs after warm-up, per op and input size, in a look-up table saved as JSON with
             its origin

The table's entry [e, o] of a cell type sums op o of edge e over all the cells of that type: they share the
alphas, so the supernet's expected cost is sum_type sum_e sum_o softmax(alpha_type)[e, o] * cost_type[e, o]. That
is the expectation of the mixture (DARTS) and of the sampled cell (GDAS: a hard Gumbel-max sample picks op o with
probability softmax(alpha)[e, o] at any temperature). The derived cell's cost sums the genotype's (edge, op)
entries. Everything outside the mixed edges (stem, preprocessing, classifier; NAS-Bench-201's residual blocks;
the fixed reduction cells of GDAS-FRC) costs the same whatever the alphas: it is left out of expected and derived
and reported once as ``fixed`` (flops and params).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..measure import counted_forward, latency_ms, million_multiply_adds, module_device, this_machine
from ..registry import Registry
from ..relax import SoftmaxRelaxation
from ..spaces.ops import tensor_of
from ..torchfiles import write_text_atomically


@dataclass(frozen=True)
class ResourceKind:
    unit: str


# the costs a resource-aware search can weigh, each with its unit (search.resource; "none" is off)
RESOURCES: Registry[ResourceKind] = Registry("resource kind")
RESOURCES.register("flops", ResourceKind("M multiply-adds"), summary="multiply-adds of a forward pass of one image, in millions")
RESOURCES.register("params", ResourceKind("M parameters"), summary="weights, in millions")
RESOURCES.register("latency", ResourceKind("ms"), summary="milliseconds per forward pass, timed per op on this machine")
LATENCY_FILE = "latency_table.json"  # the table a latency search writes into its run folder


class LatencyTableError(ValueError):
    """A latency table that cannot be used here (unreadable, or measured on another machine)."""


# ---- what the supernet runs ----------------------------------------------------------------------
def arch_alphas(net: nn.Module) -> dict[str, torch.Tensor]:
    """The alphas [E, O] per cell type, by name (other architecture parameters, such as edge betas, are not costs)."""
    if not hasattr(net, "cell_alphas"):
        raise TypeError(f"{type(net).__name__} has no alphas a resource cost can weigh")
    return net.cell_alphas()


@dataclass
class _OpRun:
    cell_type: str
    edge: int
    op: int
    module: nn.Module
    shape_in: tuple[int, ...]  # [1, C, H, W]: what the op really receives (partial channels included)
    shape_out: tuple[int, ...]
    flops: float  # M multiply-adds

    def key(self, primitives: tuple[str, ...]) -> str:
        """Ops of one primitive with equal input and output sizes are the same computation."""
        def size(s: tuple[int, ...]) -> str:
            return "x".join(map(str, s[1:]))
        return f"{primitives[self.op]}|{size(self.shape_in)}->{size(self.shape_out)}"


def _cell_type(types: dict[str, torch.Tensor], cell: nn.Module) -> str:
    if "cell" in types:
        return "cell"
    return "reduce" if getattr(cell, "reduction", False) else "normal"


def op_flops(op: nn.Module, shape_in: tuple[int, ...], device: torch.device | None = None) -> tuple[float, tuple[int, ...]]:
    """(millions of multiply-adds, output shape) of one eval-mode forward of ``op`` alone on zeros of ``shape_in``
    [1, C, H, W] (torch's counter counts 2 FLOPs per multiply-add; two images run, for BatchNorms without running
    statistics). device: where the op runs (default: where its parameters are, else the CPU)."""
    flops, out = counted_forward(op, torch.zeros(2, *shape_in[1:], device=device or module_device(op)))
    return million_multiply_adds(flops, images=2), (1, *out.shape[1:])


def mixed_edge_runs(net: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[_OpRun], float]:
    """Every op but `none` of every mixed edge, with the input size it receives in ``net`` on one image of
    ``input_shape`` = (C, H, W): each edge's input is recorded in one forward of the whole network (eval mode, no
    gradient, all ops running as under the softmax); an edge with partial channels (PC-DARTS) gives its ops the
    first 1/K of them. Returns (runs, the whole network's M multiply-adds in that forward). The network's
    parameters, BatchNorm statistics and the random streams are left as they were."""
    types = arch_alphas(net)
    primitives = tuple(net.primitives)
    inputs: list[tuple[str, int, nn.Module, tuple[int, ...]]] = []
    handles = []
    for cell in net.cells:
        if not hasattr(cell, "edges"):
            continue  # a fixed cell (residual block, GDAS-FRC's reduction cell)
        cell_type = _cell_type(types, cell)
        for e, edge in enumerate(cell.edges):
            def record(module, args, cell_type=cell_type, e=e):
                inputs.append((cell_type, e, module, tuple(tensor_of(args[0]).shape)))  # a tensor or an EdgeInput
            handles.append(edge.register_forward_pre_hook(record))
    relaxation, transform = net.relaxation, net.__dict__.get("edge_weight_transform")
    param = next(net.parameters())
    try:
        net.relaxation = SoftmaxRelaxation()  # all ops run, no Gumbel draw
        net.edge_weight_transform = None
        # two images: BatchNorms without running statistics need more than one value per channel; .forward: not a
        # compiled network's call, which would compile for this shape
        flops, _ = counted_forward(net, torch.zeros(2, *input_shape, device=param.device, dtype=param.dtype),
                                   forward=net.forward)
        total = million_multiply_adds(flops, images=2)
    finally:
        for h in handles:
            h.remove()
        net.relaxation = relaxation
        if transform is None:
            net.__dict__.pop("edge_weight_transform", None)
        else:
            net.edge_weight_transform = transform
    runs = []
    for cell_type, e, edge, (_, c, h, w) in inputs:
        shape_in = (1, c // getattr(edge, "partial_channels", 1), h, w)
        for o, op in enumerate(edge.ops):
            if primitives[o] != "none":  # adds nothing: no cost of any kind
                flops, shape_out = op_flops(op, shape_in, param.device)
                runs.append(_OpRun(cell_type, e, o, op, shape_in, shape_out, flops))
    return runs, total


def op_params(op: nn.Module) -> float:
    """Millions of parameters of ``op``."""
    return sum(p.numel() for p in op.parameters()) / 1e6


# ---- latency look-up table -----------------------------------------------------------------------
def network_sizes(net: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The sizes that decide which ops at which input sizes a search network runs."""
    sizes: dict[str, Any] = {"network": f"{type(net).__module__}.{type(net).__name__}", "input": list(input_shape)}
    for name in ("C", "layers", "N", "steps", "multiplier", "fixed_reduction", "partial_channels"):
        value = getattr(net, name, None)
        if isinstance(value, (int, float, bool)):
            sizes[name] = value
    sizes["primitives"] = list(net.primitives)
    return sizes


@dataclass
class LatencyTable:
    """Milliseconds per op and input size (keys "op|CxHxW->CxHxW") with where they were measured."""

    origin: dict[str, Any]
    entries: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps({"origin": self.origin, "entries": self.entries}, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table ``save`` wrote; refuses one measured on another machine (LatencyTableError)."""
        problem = latency_table_problem(path)
        if problem:
            raise LatencyTableError(problem)
        data = json.loads(Path(path).read_text())
        return cls(dict(data["origin"]), {str(k): float(v) for k, v in data["entries"].items()})


def _describe(machine: dict[str, Any]) -> str:
    return (f"{machine.get('node')} ({machine.get('processor')}, torch {machine.get('torch')}, "
            f"{machine.get('threads')} threads)")


_OP_KEY = re.compile(r"[^|]+\|\d+(?:x\d+)*->\d+(?:x\d+)*")  # what _OpRun.key writes


def _milliseconds(value: Any) -> bool:
    """Whether ``value`` is a latency a table may hold: a finite number >= 0 (JSON lets a file hold NaN or true)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def latency_table_problem(path: str | Path) -> str | None:
    """Why the latency table at ``path`` cannot be used on this machine, or None when it can."""
    what = f"search.resource_latency_table={str(path)!r}"
    try:
        data = json.loads(Path(path).read_text())
        machine, entries = data["origin"]["machine"], data["entries"]
        if not isinstance(machine, dict):
            raise ValueError("origin.machine must say where the table was measured")
        if "version" in data["origin"]:  # the Once-for-All tables say which version wrote them; these never do
            raise ValueError(f"a table of another kind (version {data['origin']['version']!r}: a Once-for-All one?)")
        if not (isinstance(entries, dict)
                and all(_OP_KEY.fullmatch(k) and _milliseconds(v) for k, v in entries.items())):
            raise ValueError("entries must map op keys (op|CxHxW->CxHxW) to milliseconds (numbers >= 0)")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{what}: not a latency table darts_lite wrote ({type(e).__name__}: {e})"
    here = this_machine()
    if any(machine.get(k) != v for k, v in here.items()):
        return (f"{what}: measured on {_describe(machine)}, and this is {_describe(here)}; latencies do not carry "
                "over between machines. Point it at a table measured here, or set it to null to measure one "
                f"(written to the run folder as {LATENCY_FILE})")
    return None


# ---- the cost table ------------------------------------------------------------------------------
@dataclass
class CostTable:
    """Costs of one kind: ``costs[cell_type]`` [E, O] sums op o of edge e over the cells of that type."""

    kind: str
    costs: dict[str, torch.Tensor]
    primitives: tuple[str, ...]
    fixed: float | None = None  # the parts outside the mixed edges (flops, params); None for latency

    @property
    def unit(self) -> str:
        return RESOURCES[self.kind].unit

    @property
    def scale(self) -> float:
        """The most expensive single-path supernet: every edge its costliest op (the penalty's normaliser)."""
        total = sum(float(c.max(dim=-1).values.sum()) for c in self.costs.values())
        return total if total > 0 else 1.0

    def expected(self, alphas: dict[str, torch.Tensor]) -> torch.Tensor:
        """sum over cell types of (softmax(alpha) * cost).sum(): a 0-d tensor, differentiable in the alphas [E, O]."""
        total = None
        for cell_type, cost in self.costs.items():
            alpha = alphas[cell_type]
            term = (torch.softmax(alpha, dim=-1) * cost.to(alpha.device, alpha.dtype)).sum()
            total = term if total is None else total + term
        return total

    def derived(self, genotype: Any) -> float:
        """The exact cost of ``genotype``'s cells: the sum of its chosen (edge, op) entries."""
        total = 0.0
        for cell_type, pairs in genotype.cells().items():
            cost = self.costs[cell_type]
            for k, (op, j) in enumerate(pairs):
                # DARTS genotypes list two (op, input) pairs per node; node n's edges start after the 2+3+..
                # edges of nodes before it. NAS-Bench-201 lists one pair per edge, in edge order.
                edge = sum(2 + i for i in range(k // 2)) + j if hasattr(genotype, "normal") else k
                total += float(cost[edge, self.primitives.index(op)])
        return total


def cost_table(net: nn.Module, input_shape: tuple[int, ...], kind: str, latency: LatencyTable | None = None,
               log: Callable[[str], None] = print, repeats: int = 10) -> CostTable:
    """The ``kind`` cost table of search network ``net`` on images of ``input_shape`` (C, H, W).

    latency: entries already measured on this machine; the ops at input sizes it lacks are measured and added to it.
    """
    if kind not in RESOURCES:
        raise ValueError(f"resource kind must be one of {RESOURCES.choices()}, got {kind!r}")
    primitives = tuple(net.primitives)
    runs, total_flops = mixed_edge_runs(net, input_shape)
    costs = {t: torch.zeros(a.shape, dtype=torch.float64) for t, a in arch_alphas(net).items()}
    if kind == "latency":
        missing = {r.key(primitives): r for r in runs if r.key(primitives) not in latency.entries}
        if missing:
            log(f"resource: timing {len(missing)} ops at their input sizes ({repeats} runs each after warm-up) ...")
        for key, r in missing.items():
            latency.entries[key] = latency_ms(r.module, r.shape_in, repeats, device=next(net.parameters()).device)
    for r in runs:
        key = r.key(primitives)
        value = {"params": op_params(r.module), "flops": r.flops}[kind] if kind != "latency" else latency.entries[key]
        costs[r.cell_type][r.edge, r.op] += value
    fixed = None
    if kind == "flops":
        fixed = total_flops - sum(r.flops for r in runs)
    elif kind == "params":
        weights = sum(p.numel() for p in net.weight_parameters()) / 1e6
        fixed = weights - sum(op_params(r.module) for r in runs)
    return CostTable(kind, {t: c.float() for t, c in costs.items()}, primitives, fixed)


# ---- the penalty -----------------------------------------------------------------------------------
class ResourcePenalty:
    """The resource term of the architecture loss.

    kind: flops, params or latency (see the module docstring for units). weight: lambda >= 0.
    target: None: penalty = lambda * expected / scale, scale = the cost of the most expensive single-path supernet
    (``CostTable.scale``), so lambda is unit-free and the term lies in [0, lambda]; a positive number in the kind's
    unit: penalty = lambda * relu(expected / target - 1), zero once the expected cost is at or below the target.
    latency_table: a table file measured on this machine to reuse (entries it lacks are measured), or, if the file
    does not exist, where to save the one measured; None: measure and save into the run folder.
    """

    def __init__(self, kind: str, weight: float = 1.0, target: float | None = None, latency_table: str | None = None,
                 repeats: int = 10):
        if kind not in RESOURCES:
            raise ValueError(f"search.resource={kind!r}: must be one of none, {RESOURCES.choices()}")
        if not (isinstance(weight, (int, float)) and weight >= 0):
            raise ValueError(f"search.resource_weight={weight!r}: must be >= 0")
        if target is not None and not (isinstance(target, (int, float)) and target > 0):
            raise ValueError(f"search.resource_target={target!r}: must be null or > 0 ({RESOURCES[kind].unit})")
        self.kind, self.weight, self.target = kind, float(weight), None if target is None else float(target)
        self.latency_table, self.repeats = latency_table, repeats
        self.table: CostTable | None = None

    def prepare(self, net: nn.Module, input_shape: tuple[int, ...], run_dir: str | Path | None = None,
                log: Callable[[str], None] = print, share: Callable[[Any], Any] | None = None) -> CostTable:
        """Build the cost table once (later calls return it). share: under DDP, the strategy's broadcast, so every
        rank uses rank 0's table (latencies measured on each rank would differ and so would the alphas)."""
        if self.table is not None:
            return self.table
        latency = None
        if self.kind == "latency":
            latency = self._latency_table(net, input_shape, log)
        table = cost_table(net, input_shape, self.kind, latency, log, self.repeats)
        if latency is not None and run_dir is not None:
            latency.origin = {**latency.origin, "network": network_sizes(net, input_shape)}
            path = latency.save(Path(run_dir) / LATENCY_FILE)
            log(f"resource: latency table written to {path}")
            if self.latency_table is not None and not Path(self.latency_table).exists():
                latency.save(self.latency_table)
        fixed = "" if table.fixed is None else f", the fixed parts {table.fixed:.4g} more"
        log(f"resource: {self.kind} cost table ready: the searched cells cost up to {table.scale:.4g} {table.unit} (every "
            f"edge its costliest op){fixed}")
        if share is not None:
            table = share(table)
        self.table = table
        return table

    def _latency_table(self, net: nn.Module, input_shape: tuple[int, ...], log: Callable[[str], None]) -> LatencyTable:
        here = {"machine": this_machine(), "network": network_sizes(net, input_shape), "batch": 1,
                "repeats": self.repeats}
        path = self.latency_table
        if path is None or not Path(path).exists():
            return LatencyTable(here)
        table = LatencyTable.load(path)  # refuses another machine's
        if table.origin.get("network") != here["network"]:
            log(f"resource: {path} was measured for another network ({table.origin.get('network')}); its entries "
                "of equal op and input size are reused, the others measured now")
        return table

    def expected(self, net: nn.Module) -> torch.Tensor:
        """The supernet's expected cost (0-d, differentiable in the alphas)."""
        return self.table.expected(arch_alphas(net))

    def penalty(self, net: nn.Module) -> torch.Tensor:
        """The term added to the architecture loss (0-d)."""
        expected = self.expected(net)
        if self.target is None:
            return self.weight * expected / self.table.scale
        return self.weight * torch.relu(expected / self.target - 1.0)

    def metrics(self, net: nn.Module) -> dict[str, float]:
        """search/expected_<kind>, search/derived_<kind>, search/resource_penalty (and search/fixed_<kind>)."""
        with torch.no_grad():
            out = {f"search/expected_{self.kind}": float(self.expected(net)),
                   f"search/derived_{self.kind}": self.table.derived(net.genotype()),
                   "search/resource_penalty": float(self.penalty(net))}
        if self.table.fixed is not None:
            out[f"search/fixed_{self.kind}"] = self.table.fixed
        return out
