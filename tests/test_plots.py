"""matplotlib plots: the alphas heatmap of every search, and the plots studies share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darts_lite import plots
from darts_lite.spaces.darts.genotype import PRIMITIVES
from darts_lite.spaces.darts.pictures import edge_labels

PNG = b"\x89PNG\r\n\x1a\n"


def test_alpha_heatmap_shows_every_value_labels_and_a_fixed_colour_scale(tmp_path):
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(14, len(PRIMITIVES)), dim=-1).requires_grad_()
    rows, cols = edge_labels(4), list(PRIMITIVES)
    fig = plots.alpha_heatmap(probs, rows, cols, "normal cell: softmax(alpha)")
    ax, colour_bar = fig.axes  # the heatmap and its colour bar
    assert colour_bar.get_ylabel() == "probability"
    assert [t.get_text() for t in ax.get_yticklabels()] == rows
    assert [t.get_text() for t in ax.get_xticklabels()] == cols
    assert ax.get_title() == "normal cell: softmax(alpha)"
    (image,) = ax.images
    assert np.allclose(image.get_array(), probs.detach().numpy()) and (image.norm.vmin, image.norm.vmax) == (0.0, 1.0)
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(texts) == 14 * len(PRIMITIVES)
    assert texts[(3, 5)].get_text() == f"{probs[3, 5].item():.2f}"
    for r in range(14):  # each edge's strongest op, and only it, in bold
        bold = [c for c in range(len(PRIMITIVES)) if texts[(r, c)].get_fontweight() == "bold"]
        assert bold == [int(probs[r].argmax())]

    files = plots.save_figure(fig, tmp_path / "alphas_normal", formats=("png", "svg"))
    assert [f.name for f in files] == ["alphas_normal.png", "alphas_normal.svg"]
    assert files[0].read_bytes()[:8] == PNG and b"<svg" in files[1].read_bytes()[:500]


def test_alpha_heatmap_shades_larger_probabilities_darker():
    fig = plots.alpha_heatmap([[0.0, 1.0], [0.25, 0.75]], ["a", "b"], ["x", "y"], "t")
    pixels = plots.figure_array(fig)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    image = fig.axes[0].images[0]
    darkness = [765 - sum(int(c) for c in image.to_rgba(v, bytes=True)[:3]) for v in (0.0, 0.25, 0.75, 1.0)]
    assert darkness == sorted(darkness) and darkness[0] < darkness[-1]


def test_alpha_heatmap_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="row labels"):
        plots.alpha_heatmap([[0.5, 0.5]], ["a", "b"], ["x", "y"], "t")
    with pytest.raises(ValueError, match="column labels"):
        plots.alpha_heatmap([[0.5, 0.5]], ["a"], ["x"], "t")
    with pytest.raises(ValueError, match="2-D"):
        plots.alpha_heatmap(torch.tensor([0.5, 0.5]), ["a"], ["x", "y"], "t")
    with pytest.raises(ValueError, match="different lengths"):
        plots.alpha_heatmap([[0.5, 0.5], [1.0]], ["a", "b"], ["x", "y"], "t")


def test_scatter_labels_of_close_points_do_not_cover_each_other():
    """Points almost on top of each other (as zero-cost proxies of equal speed-up and correlation are): each label
    stays beside its own point's height order and no two labels' boxes overlap, as drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    points = [(180.0, 0.085, "zc_jacob_cov"), (190.0, 0.075, "zc_nwot"), (170.0, -0.03, "zc_flops"),
              (1.1, 0.84, "c0r0s0e6@seed1"), (1.2, 0.80, "c2r0s0e6"), (900.0, 0.5, "alone")]
    fig = plots.scatter(points, "speed-up", "Spearman", "proxies", logx=True, ylim=(-1.05, 1.05))
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    ax = fig.axes[0]
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
    names = list(boxes)
    assert not [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if boxes[a].overlaps(boxes[b])]
    assert boxes["zc_jacob_cov"].y0 > boxes["zc_nwot"].y0  # the higher point's label stays above
    assert next(t for t in ax.texts if t.get_text() == "alone").xyann == (4, 4)  # a label with room keeps its place


def test_study_plots_scatter_and_curves(tmp_path):
    fig = plots.scatter([(2.0, 0.9, "c2r0s0e60"), (8.0, 0.6, "c4r4s0e60")], "speed-up", "Spearman", "proxies", logx=True)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.texts] == ["c2r0s0e60", "c4r4s0e60"]
    x = [0, 1, 2]
    fig = plots.curves({"best": (x, [0.5, 0.7, 0.8], [0.4, 0.6, 0.7], [0.6, 0.8, 0.9]), "median": (x, [0.3, 0.4, 0.5])},
                       "cycle", "accuracy", "evolution")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["best", "median"]
    assert len(ax.collections) == 1  # one band: the series given with low and high
    (png,) = plots.save_figure(fig, tmp_path / "sub" / "evolution.png")
    assert png.read_bytes()[:8] == PNG
