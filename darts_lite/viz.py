"""Cell pictures as Graphviz DOT text, for every space: the colours of op families, quoting, and rendering.

Cells are written as DOT text, which needs nothing installed; the `dot` binary turns it into PNG/PDF only when it
is on PATH, so a missing Graphviz never stops a search run. What each space's cells look like is its own
(``darts_lite.spaces.darts.pictures``, ``darts_lite.spaces.nb201.pictures``); heatmaps of alphas and study plots are
drawn with matplotlib in ``darts_lite.plots``.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path

# One colour per op family, so a glance at a cell shows how conv-heavy or skip-heavy it is.
FAMILY_COLOURS: dict[str, str] = {
    "conv": "#1f5fa8",
    "pool": "#2e8b57",
    "skip": "#c0392b",
    "other": "#7f7f7f",
}

_DOT_TIMEOUT_S = 60

def op_family(op: str) -> str:
    """The colour family of an op name: "conv", "pool", "skip" or "other" (e.g. ``none``)."""
    if op == "skip_connect" or op.startswith("skip"):
        return "skip"
    if "conv" in op:
        return "conv"
    if "pool" in op:
        return "pool"
    return "other"


def dot_id(text: str) -> str:
    """``text`` as a quoted DOT ID."""
    # Always quote: names like c_{k-2} contain braces and dashes that bare DOT IDs reject.
    # Backslash first, or the backslashes added for quotes would be doubled again; newlines
    # become DOT's centred line break so a multi-line title cannot end the statement.
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r\n", "\n").replace("\n", "\\n")
    return f'"{body}"'


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
