"""A picture of a NAS-Bench-201 cell (Graphviz DOT text: ``darts_lite.viz`` renders it)."""

from __future__ import annotations

from ...viz import FAMILY_COLOURS, op_family
from .genotype import EDGES, NODES, Genotype

_NODE_NAMES = {0: "c_{k-1}", NODES - 1: "c_{k}"}


def cell_dots(genotype: Genotype) -> dict[str, str]:
    """{"cell": Graphviz DOT source}: input c_{k-1} (node 0), nodes 1 and 2, output c_{k} (node 3).

    Each edge is labelled with its op and coloured by op family; `none` edges are dashed grey, since
    they carry nothing. Names and ops are fixed strings of this module, so they need no escaping.
    """
    lines = [
        'digraph "cell" {',
        "  rankdir=LR;",
        '  label="NAS-Bench-201 cell"; labelloc=t; fontsize=18; fontname="Helvetica";',
        '  node [style=filled, fontname="Helvetica", fontsize=12];',
        '  edge [fontname="Helvetica", fontsize=11];',
    ]
    names = [_NODE_NAMES.get(i, str(i)) for i in range(NODES)]
    lines.append(f'  "{names[0]}" [shape=box, fillcolor=darkseagreen2];')
    lines += [f'  "{names[i]}" [shape=circle, fillcolor=lightblue];' for i in range(1, NODES - 1)]
    lines.append(f'  "{names[-1]}" [shape=box, fillcolor=palegoldenrod];')
    lines.append(f'  {{ rank=source; "{names[0]}" }}')
    lines.append(f'  {{ rank=sink; "{names[-1]}" }}')
    for (op, j), (i, _) in zip(genotype.edges, EDGES):
        if op == "none":
            style = 'color="gray70", fontcolor="gray50", style=dashed'
        else:
            colour = FAMILY_COLOURS[op_family(op)]
            style = f'color="{colour}", fontcolor="{colour}"'
        lines.append(f'  "{names[j]}" -> "{names[i]}" [label="{op}", {style}];')
    lines.append("}")
    return {"cell": "\n".join(lines) + "\n"}
