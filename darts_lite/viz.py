"""Pictures of darts_lite cells and alphas.

Cells are written as Graphviz DOT text, which needs nothing installed; the `dot` binary turns it
into PNG/PDF only when it is on PATH, so a missing Graphviz never stops a search run. Heatmaps of
alphas and study plots are drawn with matplotlib in ``darts_lite.plots``.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path

from .genotype import Genotype

INPUT_NAMES: tuple[str, str] = ("c_{k-2}", "c_{k-1}")
OUTPUT_NAME = "c_{k}"

# One colour per op family, so a glance at a cell shows how conv-heavy or skip-heavy it is.
FAMILY_COLOURS: dict[str, str] = {
    "conv": "#1f5fa8",
    "pool": "#2e8b57",
    "skip": "#c0392b",
    "other": "#7f7f7f",
}

_DOT_TIMEOUT_S = 60

_FIXED_REDUCTION_BRANCHES: tuple[tuple[int, str], ...] = (
    (0, "conv 1x3/3x1"),
    (1, "conv 1x3/3x1"),
    (0, "max_pool 3x3"),
    (1, "max_pool 3x3"),
)


def op_family(op: str) -> str:
    """The colour family of an op name: "conv", "pool", "skip" or "other" (e.g. ``none``)."""
    if op == "skip_connect" or op.startswith("skip"):
        return "skip"
    if "conv" in op:
        return "conv"
    if "pool" in op:
        return "pool"
    return "other"


def _state_name(j: int) -> str:
    return INPUT_NAMES[j] if j < 2 else str(j - 2)


def edge_labels(steps: int = 4) -> list[str]:
    """Names of the mixed edges in alphas row order.

    Rows run node by node; node k reads states 0..k+1, where states 0 and 1 are the cell inputs.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return [f"{_state_name(j)}->{node}" for node in range(steps) for j in range(node + 2)]


def _dot_id(text: str) -> str:
    # Always quote: names like c_{k-2} contain braces and dashes that bare DOT IDs reject.
    # Backslash first, or the backslashes added for quotes would be doubled again; newlines
    # become DOT's centred line break so a multi-line title cannot end the statement.
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r\n", "\n").replace("\n", "\\n")
    return f'"{body}"'


def _dot_header(title: str) -> list[str]:
    return [
        f"digraph {_dot_id(title)} {{",
        "  rankdir=LR;",
        f'  label={_dot_id(title)}; labelloc=t; fontsize=18; fontname="Helvetica";',
        '  node [style=filled, fontname="Helvetica", fontsize=12];',
        '  edge [fontname="Helvetica", fontsize=11];',
        *(f"  {_dot_id(name)} [shape=box, fillcolor=darkseagreen2];" for name in INPUT_NAMES),
        # Same rank keeps both cell inputs stacked on the left instead of wherever dot likes.
        f"  {{ rank=source; {' '.join(_dot_id(name) for name in INPUT_NAMES)} }}",
    ]


def cell_dot(pairs: Sequence[tuple[str, int]], concat: Sequence[int], title: str) -> str:
    """DOT source of one cell.

    ``pairs`` are (op, input state) pairs, two per intermediate node; ``concat`` lists the states
    joined into the cell output. Every pair becomes one edge labelled with its op and coloured by
    op family; every concatenated state gets one uncoloured edge into the output node.
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
    lines += [f"  {_dot_id(str(node))} [shape=circle, fillcolor=lightblue];" for node in range(steps)]
    lines.append(f"  {_dot_id(OUTPUT_NAME)} [shape=box, fillcolor=palegoldenrod];")
    lines.append(f"  {{ rank=sink; {_dot_id(OUTPUT_NAME)} }}")
    for k, (op, j) in enumerate(pairs):
        colour = FAMILY_COLOURS[op_family(op)]
        lines.append(
            f"  {_dot_id(_state_name(j))} -> {_dot_id(str(k // 2))} "
            f"[label={_dot_id(op)}, color={_dot_id(colour)}, fontcolor={_dot_id(colour)}];"
        )
    for c in concat:
        lines.append(f"  {_dot_id(_state_name(c))} -> {_dot_id(OUTPUT_NAME)} [color=gray50];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def fixed_reduction_dot(title: str) -> str:
    """DOT source of GDAS's fixed reduction cell.

    It has no searched edges, so the picture shows its four fixed stride-2 branches (factorised
    1x3/3x1 convs and 3x3 max pools on each input) concatenated into the output.
    """
    lines = _dot_header(title)
    lines.append(f"  {_dot_id(OUTPUT_NAME)} [shape=box, fillcolor=palegoldenrod, label={_dot_id(OUTPUT_NAME + ' (concat)')}];")
    lines.append(f"  {{ rank=sink; {_dot_id(OUTPUT_NAME)} }}")
    for b, (src, op) in enumerate(_FIXED_REDUCTION_BRANCHES):
        branch = _dot_id(f"branch{b}")
        colour = FAMILY_COLOURS[op_family(op)]
        lines.append(f"  {branch} [shape=box, fillcolor=lightblue, label={_dot_id(op)}];")
        lines.append(f"  {_dot_id(INPUT_NAMES[src])} -> {branch} [color={_dot_id(colour)}];")
        lines.append(f"  {branch} -> {_dot_id(OUTPUT_NAME)} [color=gray50];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _render(dot: str, source: Path, fmt: str) -> Path | None:
    target = source.with_suffix(f".{fmt}")
    # A list argv (no shell) keeps odd paths or format names from being interpreted.
    cmd = [dot, f"-T{fmt}", str(source), "-o", str(target)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_DOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        warnings.warn(f"`dot` took over {_DOT_TIMEOUT_S} s rendering {source} to {fmt}; skipped", stacklevel=3)
        return None
    except OSError as e:
        warnings.warn(f"could not run `dot` on {source}: {e}", stacklevel=3)
        return None
    if proc.returncode != 0:
        detail = proc.stderr.strip() or f"exit code {proc.returncode}"
        warnings.warn(f"`dot -T{fmt}` failed on {source}: {detail}", stacklevel=3)
        return None
    return target


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


def write_dot_pictures(
    sources: dict[str, str], out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")
) -> dict[str, list[Path]]:
    """Write each DOT source as ``<name>.dot`` into ``out_dir`` and render it to ``formats``.

    The .dot files are always written. Rendering needs Graphviz's `dot` on PATH; without it,
    or when `dot` fails, a warning explains what happened and the run carries on.
    Returns ``{"dot": [.dot paths], "rendered": [rendered picture paths]}``.
    """
    if isinstance(formats, str):  # ("png") is a string, and would otherwise render -Tp, -Tn, -Tg
        formats = (formats,)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, list[Path]] = {"dot": [], "rendered": []}
    for name, text in sources.items():
        path = out / f"{name}.dot"
        path.write_text(text)
        result["dot"].append(path)
    if not formats:
        return result

    dot = shutil.which("dot")
    if dot is None:
        written = ", ".join(p.name for p in result["dot"])
        first = result["dot"][0].stem if result["dot"] else "normal"
        warnings.warn(
            f"Graphviz `dot` was not found on PATH, so only the DOT sources were written ({written} in {out}). "
            f"Render them with e.g. `dot -Tpng {first}.dot -o {first}.png` once Graphviz is installed "
            "(`apt-get install graphviz` or `conda install graphviz`).",
            stacklevel=2,
        )
        return result
    for path in result["dot"]:
        for fmt in formats:
            target = _render(dot, path, fmt)
            if target is not None:
                result["rendered"].append(target)
    return result


def dot_to_png(source: str) -> bytes | None:
    """PNG bytes of DOT source via the `dot` binary; None when Graphviz is missing or fails."""
    dot = shutil.which("dot")
    if dot is None:
        return None
    try:
        proc = subprocess.run([dot, "-Tpng"], input=source.encode(), capture_output=True, timeout=_DOT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 and proc.stdout else None
