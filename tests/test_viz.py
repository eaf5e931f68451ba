"""Cell pictures (DOT text, rendering through Graphviz when present); heatmaps and plots: test_plots.py."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from darts_lite import viz
from darts_lite.spaces.darts import pictures
from darts_lite.spaces.darts.genotype import PRIMITIVES, Genotype

# DARTS second-order cells, written out here so the test does not depend on the zoo.
V2_NORMAL = [
    ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 1), ("skip_connect", 0),
    ("skip_connect", 0), ("dil_conv_3x3", 2),
]  # fmt: skip
V2_REDUCE = [
    ("max_pool_3x3", 0), ("max_pool_3x3", 1),
    ("skip_connect", 2), ("max_pool_3x3", 1),
    ("max_pool_3x3", 0), ("skip_connect", 2),
    ("skip_connect", 2), ("max_pool_3x3", 1),
]  # fmt: skip


def _text(pairs: list[tuple[str, int]]) -> str:
    return "[" + ", ".join(f"('{op}', {j})" for op, j in pairs) + "]"


V2_TEXT = (
    f"Genotype(normal={_text(V2_NORMAL)}, normal_concat=[2, 3, 4, 5], reduce={_text(V2_REDUCE)}, reduce_concat=[2, 3, 4, 5])"
)

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="graphviz `dot` not installed (CI installs it)")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_EDGE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)" \[(.*)\];$')
_ATTR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _edges(src: str) -> list[tuple[str, str, dict[str, str]]]:
    out = []
    for line in src.splitlines():
        m = _EDGE.match(line)
        if m:
            out.append((m.group(1), m.group(2), dict(_ATTR.findall(m.group(3)))))
    return out


def _state(j: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(j, str(j - 2))


@pytest.fixture
def v2() -> Genotype:
    return Genotype.parse(V2_TEXT)


# ---- edge labels -------------------------------------------------------------------------------


def test_edge_labels_follow_alpha_row_order():
    labels = pictures.edge_labels(4)
    assert labels == [
        "c_{k-2}->0", "c_{k-1}->0",
        "c_{k-2}->1", "c_{k-1}->1", "0->1",
        "c_{k-2}->2", "c_{k-1}->2", "0->2", "1->2",
        "c_{k-2}->3", "c_{k-1}->3", "0->3", "1->3", "2->3",
    ]  # fmt: skip
    assert len(set(labels)) == 14
    assert pictures.edge_labels() == labels
    assert len(pictures.edge_labels(2)) == 5 and pictures.edge_labels(0) == []
    with pytest.raises(ValueError):
        pictures.edge_labels(-1)


# ---- cell_dot ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["normal", "reduce"])
def test_cell_dot_has_one_edge_per_pair_and_per_concat(v2, cell):
    pairs, concat = getattr(v2, cell), getattr(v2, f"{cell}_concat")
    src = pictures.cell_dot(pairs, concat, f"{cell} cell")
    edges = _edges(src)
    op_edges = [e for e in edges if "label" in e[2]]
    concat_edges = [e for e in edges if e[1] == "c_{k}"]
    assert len(edges) == 12 and len(op_edges) == 8 and len(concat_edges) == 4

    want = Counter((_state(j), str(k // 2), op) for k, (op, j) in enumerate(pairs))
    assert Counter((a, b, attrs["label"]) for a, b, attrs in op_edges) == want
    assert sorted(a for a, _, _ in concat_edges) == ["0", "1", "2", "3"]
    assert all("label" not in attrs for _, _, attrs in concat_edges)
    assert "rankdir=LR" in src and f'label="{cell} cell"' in src


def test_cell_dot_specific_endpoints(v2):
    edges = {(a, b, attrs["label"]) for a, b, attrs in _edges(pictures.cell_dot(v2.normal, v2.normal_concat, "n"))
             if "label" in attrs}
    # pair 7 is ('dil_conv_3x3', 2): state 2 is intermediate node 0, feeding node 3
    assert ("0", "3", "dil_conv_3x3") in edges
    assert ("c_{k-2}", "3", "skip_connect") in edges and ("c_{k-2}", "2", "skip_connect") in edges
    assert not any(b == "3" and a == "1" for a, b, _ in edges)
    reduce_edges = [(a, b, attrs.get("label")) for a, b, attrs in _edges(pictures.cell_dot(v2.reduce, v2.reduce_concat, "r"))]
    assert reduce_edges.count(("0", "1", "skip_connect")) == 1
    assert ("c_{k-1}", "3", "max_pool_3x3") in reduce_edges


def test_cell_dot_colours_by_op_family(v2):
    src = pictures.cell_dot(v2.normal, v2.normal_concat, "n")
    colours = {attrs["label"]: attrs["color"] for _, _, attrs in _edges(src) if "label" in attrs}
    assert colours["sep_conv_3x3"] == colours["dil_conv_3x3"]
    assert colours["sep_conv_3x3"] != colours["skip_connect"]
    pool = {
        attrs["color"]
        for _, _, attrs in _edges(pictures.cell_dot(V2_REDUCE, (2, 3, 4, 5), "r"))
        if attrs.get("label") == "max_pool_3x3"
    }
    assert len(pool) == 1 and pool.isdisjoint(colours.values())
    assert [viz.op_family(p) for p in PRIMITIVES] == ["other", "pool", "pool", "skip", "conv", "conv", "conv", "conv"]


def test_cell_dot_escapes_title():
    title = 'my "best" cell \\ v2\nline two'
    src = pictures.cell_dot(V2_NORMAL, (2, 3, 4, 5), title)
    assert 'digraph "my \\"best\\" cell \\\\ v2\\nline two" {' in src
    # every line is a full statement: the title's newline must not split one
    assert all(line.rstrip().endswith((";", "{", "}")) for line in src.splitlines())
    if HAS_DOT:
        proc = subprocess.run(["dot", "-Tsvg"], input=src, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "best" in proc.stdout


def test_cell_dot_rejects_malformed_cells():
    with pytest.raises(ValueError, match="two"):
        pictures.cell_dot(V2_NORMAL[:3], (2,), "odd")
    with pytest.raises(ValueError, match="out of range"):
        pictures.cell_dot([("sep_conv_3x3", 2), ("sep_conv_3x3", 0)], (2,), "forward reference")
    with pytest.raises(ValueError, match="concat"):
        pictures.cell_dot(V2_NORMAL, (2, 6), "missing node")


# ---- fixed reduction cell ----------------------------------------------------------------------


def test_fixed_reduction_dot_has_four_branches():
    src = pictures.fixed_reduction_dot("fixed")
    edges = _edges(src)
    into_output = [a for a, b, _ in edges if b == "c_{k}"]
    from_inputs = Counter(a for a, b, _ in edges if a.startswith("c_{k-"))
    assert len(into_output) == 4 and from_inputs == {"c_{k-2}": 2, "c_{k-1}": 2}
    assert src.count('label="conv 1x3/3x1"') == 2 and src.count('label="max_pool 3x3"') == 2


def test_fixed_reduction_genotype_writes_fixed_picture(v2, tmp_path):
    g = Genotype(normal=v2.normal, fixed_reduction=True)
    out = pictures.write_cell_pictures(g, tmp_path, formats=())
    assert out == {"dot": [tmp_path / "normal.dot", tmp_path / "reduction.dot"], "rendered": []}
    reduction = (tmp_path / "reduction.dot").read_text()
    assert reduction == pictures.fixed_reduction_dot("reduction cell (fixed)")
    assert "max_pool 3x3" in reduction and "conv 1x3/3x1" in reduction
    assert (tmp_path / "normal.dot").read_text() == pictures.cell_dot(v2.normal, v2.normal_concat, "normal cell")


@needs_dot
def test_fixed_reduction_picture_renders(v2, tmp_path):
    g = Genotype(normal=v2.normal, fixed_reduction=True)
    out = pictures.write_cell_pictures(g, tmp_path, formats=("png",))
    assert out["rendered"] == [tmp_path / "normal.png", tmp_path / "reduction.png"]
    assert (tmp_path / "reduction.png").read_bytes()[:8] == PNG_MAGIC


# ---- write_cell_pictures -----------------------------------------------------------------------


def test_write_cell_pictures_writes_dot_sources(v2, tmp_path):
    out_dir = tmp_path / "run" / "pictures"  # created on demand
    out = pictures.write_cell_pictures(v2, out_dir, formats=())
    assert out["dot"] == [out_dir / "normal.dot", out_dir / "reduction.dot"] and out["rendered"] == []
    assert (out_dir / "reduction.dot").read_text() == pictures.cell_dot(v2.reduce, v2.reduce_concat, "reduction cell")


@needs_dot
def test_write_cell_pictures_renders_png_and_pdf(v2, tmp_path):
    out = pictures.write_cell_pictures(v2, str(tmp_path))
    names = sorted(p.name for p in out["rendered"])
    assert names == ["normal.pdf", "normal.png", "reduction.pdf", "reduction.png"]
    for stem in ("normal", "reduction"):
        assert (tmp_path / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"


def _assert_one_how_to_render_warning(record) -> None:
    messages = [str(w.message) for w in record]
    assert len(messages) == 1, messages
    msg = messages[0]
    assert "dot -Tpng normal.dot -o normal.png" in msg
    assert "apt-get install graphviz" in msg and "conda install graphviz" in msg
    assert "normal.dot" in msg and "reduction.dot" in msg


def test_missing_dot_warns_once_with_render_command(v2, tmp_path, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name, *a, **k: None)
    with pytest.warns(UserWarning) as record:
        out = pictures.write_cell_pictures(v2, tmp_path)
    _assert_one_how_to_render_warning(record)
    assert out["rendered"] == [] and len(out["dot"]) == 2
    assert (tmp_path / "normal.dot").is_file() and (tmp_path / "reduction.dot").is_file()
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.pdf"))


def test_dot_absent_from_path(v2, tmp_path, monkeypatch):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.warns(UserWarning) as record:
        out = pictures.write_cell_pictures(v2, tmp_path / "out")
    _assert_one_how_to_render_warning(record)
    assert out["rendered"] == [] and all(p.is_file() for p in out["dot"])


def _put_fake_dot_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    bin_dir = tmp_path / "fake_bin"
    bin_dir.mkdir()
    script = bin_dir / "dot"
    # A Python script, so the fake needs nothing from PATH (tests also run with PATH emptied).
    script.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.mark.skipif(os.name != "posix", reason="the fake `dot` relies on a shebang line")
def test_failing_dot_warns_with_stderr(v2, tmp_path, monkeypatch):
    _put_fake_dot_on_path(tmp_path, monkeypatch, 'sys.stderr.write("Error: syntax error in line 3\\n")\nsys.exit(2)')
    with pytest.warns(UserWarning, match="syntax error in line 3") as record:
        out = pictures.write_cell_pictures(v2, tmp_path / "out", formats=("png",))
    assert len(record) == 2  # one per cell, each saying what dot said
    assert out["rendered"] == [] and all(p.is_file() for p in out["dot"])


@pytest.mark.skipif(os.name != "posix", reason="the fake `dot` relies on a shebang line")
def test_hanging_dot_times_out_with_warning(v2, tmp_path, monkeypatch):
    monkeypatch.setattr(viz, "_DOT_TIMEOUT_S", 0.2)
    _put_fake_dot_on_path(tmp_path, monkeypatch, "time.sleep(5)")
    with pytest.warns(UserWarning, match="took over"):
        out = pictures.write_cell_pictures(v2, tmp_path / "out", formats=("png",))
    assert out["rendered"] == []


@needs_dot
def test_unknown_format_warns_and_keeps_other_formats(v2, tmp_path):
    with pytest.warns(UserWarning, match="nosuchformat"):
        out = pictures.write_cell_pictures(v2, tmp_path, formats=("nosuchformat", "png"))
    assert sorted(p.name for p in out["rendered"]) == ["normal.png", "reduction.png"]

