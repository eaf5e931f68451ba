"""Pictures of DARTS cells (Graphviz DOT text: ``darts_lite.viz`` renders it) and the names of the edges."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...viz import FAMILY_COLOURS, dot_id, op_family, write_dot_pictures
from .genotype import Genotype, absent_states

INPUT_NAMES: tuple[str, str] = ("c_{k-2}", "c_{k-1}")
OUTPUT_NAME = "c_{k}"

_FIXED_REDUCTION_BRANCHES: tuple[tuple[int, str], ...] = (
    (0, "conv 1x3/3x1"),
    (1, "conv 1x3/3x1"),
    (0, "max_pool 3x3"),
    (1, "max_pool 3x3"),
)


def _state_name(j: int) -> str:
    return INPUT_NAMES[j] if j < 2 else str(j - 2)


def edge_labels(steps: int = 4) -> list[str]:
    """Names of the mixed edges in alphas row order.

    Rows run node by node; node k reads states 0..k+1, where states 0 and 1 are the cell inputs.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return [f"{_state_name(j)}->{node}" for node in range(steps) for j in range(node + 2)]


def _dot_header(title: str) -> list[str]:
    return [
        f"digraph {dot_id(title)} {{",
        "  rankdir=LR;",
        f'  label={dot_id(title)}; labelloc=t; fontsize=18; fontname="Helvetica";',
        '  node [style=filled, fontname="Helvetica", fontsize=12];',
        '  edge [fontname="Helvetica", fontsize=11];',
        *(f"  {dot_id(name)} [shape=box, fillcolor=darkseagreen2];" for name in INPUT_NAMES),
        # Same rank keeps both cell inputs stacked on the left instead of wherever dot likes.
        f"  {{ rank=source; {' '.join(dot_id(name) for name in INPUT_NAMES)} }}",
    ]


def cell_dot(pairs: Sequence[tuple[str, int]], concat: Sequence[int], title: str) -> str:
    """DOT source of one cell.

    ``pairs`` are (op, input state) pairs, two per intermediate node; ``concat`` lists the states
    joined into the cell output. Every pair becomes one edge labelled with its op and coloured by
    op family; every concatenated state gets one uncoloured edge into the output node. A ``none`` pair (an
    edge a sparse cell leaves out) draws nothing, nor does a node whose two pairs are ``none``.
    """
    pairs = [(str(op), int(j)) for op, j in pairs]
    if len(pairs) % 2:
        raise ValueError(f"a cell needs two (op, input) pairs per node, got {len(pairs)} pairs")
    steps = len(pairs) // 2
    for k, (op, j) in enumerate(pairs):
        if not 0 <= j < k // 2 + 2:
            raise ValueError(f"pair {k} ({op!r}, {j}): input out of range 0..{k // 2 + 1} for node {k // 2}")
    for c in concat:
        if not 0 <= c < steps + 2:
            raise ValueError(f"concat state {c} out of range 0..{steps + 1}")

    lines = _dot_header(title)
    absent = {state - 2 for state in absent_states(pairs)}  # nodes that keep no edge
    lines += [f"  {dot_id(str(node))} [shape=circle, fillcolor=lightblue];" for node in range(steps) if node not in absent]
    lines.append(f"  {dot_id(OUTPUT_NAME)} [shape=box, fillcolor=palegoldenrod];")
    lines.append(f"  {{ rank=sink; {dot_id(OUTPUT_NAME)} }}")
    for k, (op, j) in enumerate(pairs):
        if op == "none":
            continue
        colour = FAMILY_COLOURS[op_family(op)]
        lines.append(
            f"  {dot_id(_state_name(j))} -> {dot_id(str(k // 2))} "
            f"[label={dot_id(op)}, color={dot_id(colour)}, fontcolor={dot_id(colour)}];"
        )
    for c in concat:
        lines.append(f"  {dot_id(_state_name(c))} -> {dot_id(OUTPUT_NAME)} [color=gray50];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def fixed_reduction_dot(title: str) -> str:
    """DOT source of GDAS's fixed reduction cell.

    It has no searched edges, so the picture shows its four fixed stride-2 branches (factorised
    1x3/3x1 convs and 3x3 max pools on each input) concatenated into the output.
    """
    lines = _dot_header(title)
    lines.append(f"  {dot_id(OUTPUT_NAME)} [shape=box, fillcolor=palegoldenrod, label={dot_id(OUTPUT_NAME + ' (concat)')}];")
    lines.append(f"  {{ rank=sink; {dot_id(OUTPUT_NAME)} }}")
    for b, (src, op) in enumerate(_FIXED_REDUCTION_BRANCHES):
        branch = dot_id(f"branch{b}")
        colour = FAMILY_COLOURS[op_family(op)]
        lines.append(f"  {branch} [shape=box, fillcolor=lightblue, label={dot_id(op)}];")
        lines.append(f"  {dot_id(INPUT_NAMES[src])} -> {branch} [color={dot_id(colour)}];")
        lines.append(f"  {branch} -> {dot_id(OUTPUT_NAME)} [color=gray50];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_cell_pictures(
    genotype: Genotype, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")
) -> dict[str, list[Path]]:
    """Write a DARTS genotype's normal.dot and reduction.dot into ``out_dir`` and render each to ``formats``
    (see ``write_dot_pictures``)."""
    return write_dot_pictures(cell_dots(genotype), out_dir, formats)


def cell_dots(genotype: Genotype) -> dict[str, str]:
    """DOT source per picture of a DARTS genotype: {"normal": ..., "reduction": ...}."""
    reduction = (fixed_reduction_dot("reduction cell (fixed)") if genotype.fixed_reduction
                 else cell_dot(genotype.reduce, genotype.reduce_concat, "reduction cell"))
    return {"normal": cell_dot(genotype.normal, genotype.normal_concat, "normal cell"), "reduction": reduction}
