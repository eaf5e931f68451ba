"""Plots of runs and studies, drawn with matplotlib's object-oriented API (the Agg canvas: no display, no pyplot
state shared with a user's own figures).

Each function returns a ``Figure``; ``save_figure`` writes it as PNG (and SVG or PDF when asked) and
``wandb_image`` hands it to a W&B run as an image, the media panel's form with a step slider.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _as_matrix(probs: Any) -> np.ndarray:
    if hasattr(probs, "detach"):  # a torch tensor, possibly on a GPU or requiring grad
        probs = probs.detach().cpu().float().numpy()
    if isinstance(probs, (list, tuple)) and len({len(r) if isinstance(r, (list, tuple)) else -1 for r in probs}) > 1:
        raise ValueError("probs rows have different lengths")
    matrix = np.asarray(probs, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"probs must be 2-D [edges x ops], got shape {matrix.shape}")
    return matrix


def alpha_heatmap(probs: Any, row_labels: Sequence[str], col_labels: Sequence[str], title: str) -> Figure:
    """Op probabilities as a heatmap. probs: [edges, ops] in [0, 1] (tensor or nested list).

    The colour scale is fixed to [0, 1] (a colour bar shows it), so heatmaps of different epochs and runs
    compare by eye; every cell prints its value, each edge's strongest op in bold.
    """
    matrix = _as_matrix(probs)
    if len(row_labels) != matrix.shape[0]:
        raise ValueError(f"{len(row_labels)} row labels for {matrix.shape[0]} rows")
    if len(col_labels) != matrix.shape[1]:
        raise ValueError(f"{len(col_labels)} column labels for {matrix.shape[1]} columns")
    rows, cols = matrix.shape
    fig = Figure(figsize=(1.6 + 0.85 * cols, 1.4 + 0.36 * rows), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.nan_to_num(matrix, nan=0.0), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, label="probability", fraction=0.05, pad=0.02)
    ax.set_xticks(range(cols), labels=list(col_labels), rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(rows), labels=list(row_labels))
    ax.set_xlabel("op")
    ax.set_ylabel("edge")
    ax.set_title(title)
    for r in range(rows):
        finite = [v if math.isfinite(v) else -math.inf for v in matrix[r]]
        best = int(np.argmax(finite)) if cols else -1
        for c in range(cols):
            value = matrix[r, c]
            ink = "white" if math.isfinite(value) and value > 0.55 else "black"
            # inside the axes: the layout need not measure them (it measured every one, the heatmap's main cost)
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8, color=ink,
                    fontweight="bold" if c == best else "normal", in_layout=False)
    return fig


def scatter(points: Sequence[tuple[float, float, str]], xlabel: str, ylabel: str, title: str,
            logx: bool = False, ylim: tuple[float, float] | None = None) -> Figure:
    """One labelled point per (x, y, label), e.g. a proxy setting's rank correlation against its speed-up; labels
    of points close together are moved apart so that none covers another (``spread_labels``)."""
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for x, y, label in points:
        ax.scatter([x], [y], color="tab:blue")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if logx:
        ax.set_xscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    spread_labels(fig, ax)
    return fig


def spread_labels(fig: Figure, ax: Any) -> None:
    """Moves the axes' point labels (annotations in offset points), highest point first, down one label height at a
    time until none overlaps a label placed before it. Set the axes' limits and scales first: the overlap is
    measured as the figure will be drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()  # the constrained layout places the axes; positions are final from here
    labels = sorted((a for a in ax.texts if hasattr(a, "xyann")), key=lambda a: (-a.xy[1], a.xy[0]))
    placed: list[Any] = []
    for label in labels:
        for _ in range(len(labels)):
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            height_pt = box.height * 72 / fig.dpi
            label.xyann = (label.xyann[0], label.xyann[1] - height_pt - 1)
        placed.append(label.get_window_extent(renderer))


def curves(series: Mapping[str, tuple[Sequence[float], Sequence[float]] | tuple[Sequence[float], Sequence[float],
                                                                                 Sequence[float], Sequence[float]]],
           xlabel: str, ylabel: str, title: str) -> Figure:
    """Lines over a shared x axis: {label: (x, y)} or {label: (x, y, low, high)}, the band drawn shaded
    (a spread over seeds, a confidence interval)."""
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for label, values in series.items():
        x, y = values[0], values[1]
        (line,) = ax.plot(x, y, label=label)
        if len(values) == 4:
            ax.fill_between(x, values[2], values[3], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend()
    return fig


def leaderboard_figure(accuracies: Mapping[str, Sequence[float]], xlabel: str = "accuracy (%)",
                       title: str = "Leaderboard") -> Figure:
    """One row per method, best mean on top: each seed's accuracy as a dot, the mean as a bar."""
    methods = sorted(accuracies, key=lambda m: float(np.mean(accuracies[m])) if len(accuracies[m]) else -math.inf)
    fig = Figure(figsize=(6.4, 1.0 + 0.35 * max(len(methods), 1)), layout="constrained")
    ax = fig.add_subplot()
    every = [float(v) for m in methods for v in accuracies[m]]
    # the axis spans the values (not 0-100): methods a point apart must look a point apart
    low = min(every) if every else 0.0
    pad = max(0.5, 0.1 * ((max(every) - low) if every else 0.0))
    for y, method in enumerate(methods):
        values = list(accuracies[method])
        if values:
            ax.barh(y, float(np.mean(values)) - (low - pad), left=low - pad, color="#c6dbef", height=0.6,
                    label="mean over seeds" if y == 0 else None)
            ax.plot(values, [y] * len(values), "o", color="#08519c", markersize=4, label="one seed" if y == 0 else None)
    if every:
        ax.set_xlim(low - pad, max(every) + pad)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(range(len(methods)), labels=methods)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return fig


def save_figure(fig: Figure, path: str | Path, formats: Sequence[str] = ("png",), dpi: int = 120) -> list[Path]:
    """Write ``fig`` beside ``path`` once per format (``path``'s own suffix is replaced); returns the files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        fig.savefig(target, dpi=dpi, format=fmt)
        written.append(target)
        if fig.get_layout_engine() is not None:
            # the first format laid the figure out; the others reuse that layout instead of solving it again (no
            # engine at all: even a placeholder one makes matplotlib draw the figure twice per file)
            with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
                fig.set_layout_engine(None)
    return written


def figure_array(fig: Figure, dpi: int = 100) -> np.ndarray:
    """The rendered figure as an RGB array [height, width, 3] of uint8."""
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def wandb_image(fig: Figure, caption: str | None = None) -> Any:
    """``fig`` as a ``wandb.Image``: logged per step, W&B stores it under the run's ``media/images``."""
    import wandb

    return wandb.Image(figure_array(fig), caption=caption)
