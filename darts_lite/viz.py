"""Pictures of cells (Graphviz DOT, rendered by `dot` when installed) and alpha heatmaps (SVG)."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import torch

from .genotype import Genotype

_OP_COLOURS = {"conv": "#4c72b0", "pool": "#55a868", "skip": "#c44e52"}


def _family(op: str) -> str:
    if "conv" in op and op != "skip_connect":
        return "conv"
    return "pool" if "pool" in op else "skip"


def _state_name(j: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(j, str(j - 2))


def edge_labels(steps: int = 4) -> list[str]:
    """Names of the mixed edges in alphas row order: "c_{k-2}->0", "c_{k-1}->0", "c_{k-2}->1", ..."""
    return [f"{_state_name(j)}->{node}" for node in range(steps) for j in range(node + 2)]


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cell_dot(pairs: Sequence[tuple[str, int]], concat: Sequence[int], title: str) -> str:
    """DOT source of one cell: inputs, intermediate nodes, an edge per (op, input) pair, the concat."""
    steps = len(pairs) // 2
    lines = [
        f"digraph {_q(title)} {{",
        "  rankdir=LR;",
        f"  label={_q(title)}; labelloc=t; fontsize=20;",
        '  node [style=filled, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=12];',
        f'  {_q("c_{k-2}")} [fillcolor=darkseagreen2, shape=box];',
        f'  {_q("c_{k-1}")} [fillcolor=darkseagreen2, shape=box];',
    ]
    for node in range(steps):
        lines.append(f"  {_q(str(node))} [fillcolor=lightblue, shape=circle];")
    lines.append(f'  {_q("c_{k}")} [fillcolor=palegoldenrod, shape=box];')
    for k, (op, j) in enumerate(pairs):
        colour = _OP_COLOURS[_family(op)]
        lines.append(f"  {_q(_state_name(j))} -> {_q(str(k // 2))} [label={_q(op)}, color={_q(colour)}];")
    for c in concat:
        lines.append(f"  {_q(_state_name(c))} -> {_q('c_{k}')} [color=gray];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def fixed_reduction_dot(title: str) -> str:
    """DOT source of GDAS's fixed reduction cell: four stride-2 branches concatenated."""
    lines = [
        f"digraph {_q(title)} {{",
        "  rankdir=LR;",
        f"  label={_q(title)}; labelloc=t; fontsize=20;",
        '  node [style=filled, fontname="Helvetica"];',
        f'  {_q("c_{k-2}")} [fillcolor=darkseagreen2, shape=box];',
        f'  {_q("c_{k-1}")} [fillcolor=darkseagreen2, shape=box];',
        f'  {_q("c_{k}")} [fillcolor=palegoldenrod, shape=box, label="c_{{k}} (concat)"];',
    ]
    for b, (src, op) in enumerate(
        [("c_{k-2}", "conv 1x3/3x1"), ("c_{k-1}", "conv 1x3/3x1"), ("c_{k-2}", "max_pool 3x3"), ("c_{k-1}", "max_pool 3x3")]
    ):
        name = f"b{b}"
        colour = _OP_COLOURS["conv" if "conv" in op else "pool"]
        lines.append(f"  {name} [label={_q(op)}, fillcolor=lightblue, shape=box];")
        lines.append(f"  {_q(src)} -> {name} [color={_q(colour)}];")
        lines.append(f"  {name} -> {_q('c_{k}')} [color=gray];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_cell_pictures(
    genotype: Genotype, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")
) -> dict[str, list[Path]]:
    """Write normal.dot and reduction.dot into out_dir and render them with `dot` when it exists."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = {
        "normal": cell_dot(genotype.normal, genotype.normal_concat, "normal cell"),
        "reduction": fixed_reduction_dot("reduction cell (fixed)")
        if genotype.fixed_reduction
        else cell_dot(genotype.reduce, genotype.reduce_concat, "reduction cell"),
    }
    written: dict[str, list[Path]] = {"dot": [], "rendered": []}
    for name, source in sources.items():
        path = out_dir / f"{name}.dot"
        path.write_text(source)
        written["dot"].append(path)
    dot = shutil.which("dot")
    if dot is None:
        warnings.warn(
            f"graphviz's `dot` is not installed: wrote {', '.join(p.name for p in written['dot'])} in {out_dir} "
            "without pictures. Render them with `dot -Tpng normal.dot -o normal.png` after "
            "`apt-get install graphviz` or `conda install graphviz`.",
            stacklevel=2,
        )
        return written
    for path in written["dot"]:
        for fmt in formats:
            target = path.with_suffix(f".{fmt}")
            try:
                proc = subprocess.run([dot, f"-T{fmt}", str(path), "-o", str(target)], capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                warnings.warn(f"`dot` timed out rendering {path}", stacklevel=2)
                continue
            if proc.returncode != 0:
                warnings.warn(f"`dot` failed on {path}: {proc.stderr.strip()}", stacklevel=2)
                continue
            written["rendered"].append(target)
    return written


def alpha_heatmap_svg(
    probs: torch.Tensor | Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
) -> str:
    """A self-contained SVG heatmap of op probabilities: probs [edges x ops] in [0, 1]."""
    rows = probs.tolist() if isinstance(probs, torch.Tensor) else [list(r) for r in probs]
    cell_w, cell_h, left, top = 78, 22, 90, 110
    width, height = left + cell_w * len(col_labels) + 10, top + cell_h * len(rows) + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="Helvetica" font-size="11">',
        f'<text x="{left}" y="18" font-size="14">{escape(title)}</text>',
    ]
    for c, label in enumerate(col_labels):
        x = left + c * cell_w + cell_w / 2
        out.append(f'<text x="{x}" y="{top - 6}" transform="rotate(-40 {x} {top - 6})">{escape(label)}</text>')
    for r, (label, row) in enumerate(zip(row_labels, rows)):
        y = top + r * cell_h
        out.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        for c, p in enumerate(row):
            shade = int(255 * (1 - max(0.0, min(1.0, float(p)))))
            ink = "white" if shade < 110 else "black"
            x = left + c * cell_w
            out.append(
                f'<rect x="{x}" y="{y}" width="{cell_w}" height="{cell_h}" fill="rgb({shade},{shade},255)" stroke="white"/>'
            )
            out.append(f'<text x="{x + cell_w / 2}" y="{y + 15}" text-anchor="middle" fill="{ink}">{float(p):.2f}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
