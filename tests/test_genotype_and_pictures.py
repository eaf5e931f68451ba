"""Genotype text/JSON round trips, hostile input, and the cell pictures."""

import shutil
import xml.etree.ElementTree as ET

import pytest

from darts_lite import Genotype, viz

DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)


def test_text_and_json_round_trip():
    g = Genotype.parse(DARTS_V2_TEXT)
    assert g.to_text() == DARTS_V2_TEXT
    assert Genotype.parse(g.to_json()) == g and Genotype.from_dict(g.to_dict()) == g
    old = Genotype.parse(DARTS_V2_TEXT.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 6)"))
    assert old == g
    assert g.normal[7] == ("dil_conv_3x3", 2) and g.reduce_concat == (2, 3, 4, 5)


@pytest.mark.parametrize(
    "text,where",
    [
        ("__import__('os').system('touch {marker}')", "unexpected character '.'"),
        ("Genotype(normal=open('{marker}', 'w'))", "expected a list or range(...) at position 16, got 'open'"),
        (DARTS_V2_TEXT.replace("'sep_conv_3x3', 0", "'conv_9x9', 0", 1), "normal[0]: unknown op 'conv_9x9'"),
        (DARTS_V2_TEXT.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 7)"), "normal[7]: input 7 out of range"),
        (DARTS_V2_TEXT.replace("('skip_connect', 0), ('dil_conv_3x3', 2)", "('skip_connect', 0)"), "normal: expected"),
        (DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "[2, 3, 4, 5+1]", 1), "unexpected character '+'"),
        (DARTS_V2_TEXT + "; import os", "unexpected character ';'"),
        ("Genotype(normal=[('sep_conv_3x3', 0)], evil=1)", "unknown field 'evil'"),
        ("{\"normal\": 5}", "normal: expected a list"),
        ("garbage", "expected 'Genotype'"),
    ],
)
def test_malformed_or_hostile_text_raises_value_error(text, where, tmp_path):
    marker = tmp_path / "executed"
    with pytest.raises(ValueError) as info:
        Genotype.parse(text.replace("{marker}", str(marker)))
    assert where in str(info.value)
    assert not marker.exists()


def test_fixed_reduction_genotype():
    g = Genotype(normal=Genotype.parse(DARTS_V2_TEXT).normal, fixed_reduction=True)
    assert Genotype.parse(g.to_text()) == g and Genotype.parse(g.to_json()) == g
    assert "reduce=[]" in g.to_text()


def test_edge_labels_in_alpha_row_order():
    labels = viz.edge_labels(4)
    assert len(labels) == len(set(labels)) == 14
    assert labels[:5] == ["c_{k-2}->0", "c_{k-1}->0", "c_{k-2}->1", "c_{k-1}->1", "0->1"]


def test_cell_dot_has_every_edge():
    g = Genotype.parse(DARTS_V2_TEXT)
    src = viz.cell_dot(g.normal, g.normal_concat, "normal")
    op_edges = [line for line in src.splitlines() if "->" in line and "label=" in line]
    concat_edges = [line for line in src.splitlines() if '-> "c_{k}"' in line]
    assert len(op_edges) == 8 and len(concat_edges) == 4
    assert '"1" -> "3" [label="dil_conv_3x3"' not in src and '"0" -> "3" [label="dil_conv_3x3"' in src


def test_write_cell_pictures(tmp_path):
    g = Genotype.parse(DARTS_V2_TEXT)
    out = viz.write_cell_pictures(g, tmp_path)
    assert {p.name for p in out["dot"]} == {"normal.dot", "reduction.dot"}
    if shutil.which("dot") is None:
        pytest.skip("graphviz not installed (CI installs it)")
    assert (tmp_path / "normal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "reduction.pdf").read_bytes()[:4] == b"%PDF"


def test_without_dot_still_writes_sources_and_says_how_to_render(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="dot -Tpng normal.dot -o normal.png"):
        out = viz.write_cell_pictures(Genotype.parse(DARTS_V2_TEXT), tmp_path)
    assert out["rendered"] == [] and (tmp_path / "normal.dot").is_file()
    assert not (tmp_path / "normal.png").exists()


def test_fixed_reduction_picture(tmp_path):
    g = Genotype(normal=Genotype.parse(DARTS_V2_TEXT).normal, fixed_reduction=True)
    viz.write_cell_pictures(g, tmp_path, formats=())
    assert "max_pool 3x3" in (tmp_path / "reduction.dot").read_text()


def test_alpha_heatmap_is_valid_svg():
    probs = [[0.1, 0.9], [0.5, 0.5], [1.0, 0.0]]
    svg = viz.alpha_heatmap_svg(probs, ["a", "b", "c"], ["x", "y<z"], "t & u")
    root = ET.fromstring(svg)
    rects = [e for e in root.iter() if e.tag.endswith("rect")]
    assert len(rects) == 6
    assert "0.90" in svg and "y&lt;z" in svg
