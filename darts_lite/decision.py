"""How decided a search's result is.

Per edge: the largest op probability and its margin over the second largest, and the entropy of the edge's
op distribution; per cell type: their means, against the uniform distribution's (1/ops, margin 0, log ops),
and the share of parameter-free ops (skip, pooling) in the derived cell, the quantity DARTS' collapse drives
to 1. One place computes these for the run's summary, its printed last lines, metrics.csv (every epoch) and
the sweep table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch


def is_parameter_free(op: str) -> bool:
    """Ops without weights: skip connections, pooling, none."""
    return op == "none" or "skip" in op or "pool" in op


def edge_decision(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """probs: [edges, ops], rows summing to 1. Returns max_prob, margin and entropy (nats), each [edges]."""
    probs = probs.detach().double()
    top = probs.topk(min(2, probs.shape[-1]), dim=-1).values
    margin = top[:, 0] - top[:, 1] if top.shape[-1] > 1 else top[:, 0]
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
    return {"max_prob": top[:, 0], "margin": margin, "entropy": entropy}


def param_free_share(pairs: Sequence[tuple[str, int]]) -> float:
    """The share of a derived cell's (op, input) pairs whose op has no weights."""
    return sum(is_parameter_free(op) for op, _ in pairs) / len(pairs) if pairs else float("nan")


def decision(probs: Mapping[str, torch.Tensor], genotype: Any = None) -> dict[str, Any]:
    """{cell: {max_prob, margin, entropy (means over edges), param_free_share, edges: {max_prob, margin}
    (per edge)}, "uniform": the same means for uniform alphas}. probs: {cell: [edges, ops]}; genotype: any space's
    (its ``cells()`` gives the derived pairs of each cell)."""
    out: dict[str, Any] = {}
    ops = None
    for cell, p in probs.items():
        ops = int((p > 0).sum(-1).max())  # the ops an edge still has (a pruned op's probability is 0)
        edges = edge_decision(p)
        out[cell] = {name: float(values.mean()) for name, values in edges.items()}
        if genotype is not None:
            pairs = genotype.cells().get(cell)
            if pairs:
                out[cell]["param_free_share"] = param_free_share(pairs)
        out[cell]["edges"] = {name: [round(float(v), 6) for v in edges[name]] for name in ("max_prob", "margin")}
    if ops:
        out["uniform"] = {"max_prob": 1 / ops, "margin": 0.0, "entropy": math.log(ops)}
    return out


def decision_metrics(measures: Mapping[str, Any]) -> dict[str, float]:
    """The per-cell means as flat metric names: decision/<cell>/<measure>."""
    return {f"decision/{cell}/{name}": value for cell, values in measures.items() if cell != "uniform"
            for name, value in values.items() if name != "edges"}


def cell_title(cell: str) -> str:
    """How people call a cell type: "normal cell", "reduce cell"; a space with one cell type names it "cell"."""
    return cell if cell == "cell" else f"{cell} cell"


def describe(measures: Mapping[str, Any]) -> str:
    """One line for people: how far each cell's alphas are from uniform."""
    uniform = measures.get("uniform", {})
    parts = []
    for cell, m in measures.items():
        if cell == "uniform":
            continue
        text = (f"{cell_title(cell)}: largest op probability {m['max_prob']:.3f} on average "
                f"(uniform {uniform.get('max_prob', 0):.3f}), "
                f"margin {m['margin']:.3f}, entropy {m['entropy']:.2f} of {uniform.get('entropy', 0):.2f} nats")
        if "param_free_share" in m:
            text += f", {m['param_free_share']:.0%} parameter-free ops in the derived cell"
        parts.append(text)
    return "; ".join(parts)
