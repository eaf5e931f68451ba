"""Every measured figure README.md and the docs show agrees with the result file it comes from.

experiments/figures.py renders each figure span (<!--fig:NAME-->text<!--/fig-->) from experiments/results/;
these tests run its check on the real pages, plant disagreements to see them caught, and scan the prose
for measured-looking figures outside any span.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_figures():
    spec = importlib.util.spec_from_file_location("darts_lite_figures", ROOT / "experiments" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


figures = _load_figures()

# pages whose prose holds no measured figure outside a span (settings are written as code, papers' figures
# on a line that says so); a page joins the list once it is clean, and stays clean
CHECKED_PAGES = [
    "README.md",
    "docs/benchmarks.md",
    "docs/index.md",
    "docs/getting-started.md",
    "docs/concepts.md",
    "docs/guides/search.md",
    "docs/guides/leaderboard.md",
    "docs/guides/spaces.md",
    "docs/guides/retrain.md",
    "docs/guides/your-data.md",
    "docs/guides/export.md",
    "docs/guides/econas.md",
    "docs/guides/surrogate.md",
    "docs/guides/ofa.md",
    "docs/guides/sweeps.md",
    "docs/guides/dashboards.md",
    "docs/guides/resume.md",
    "docs/guides/multi-gpu.md",
    "docs/guides/gpu-check.md",
    "docs/configuration.md",
    "docs/extending.md",
]


def test_every_figure_shown_agrees_with_its_result_file():
    found = figures.check()
    assert not found, "figures that differ from their source (run python experiments/figures.py):\n" + "\n".join(
        map(str, found))


def test_every_picture_shown_is_its_result_file():
    found = figures.images()
    assert not found, "\n".join(map(str, found))


def test_a_picture_that_differs_is_caught_and_copied(tmp_path):
    results = tmp_path / "results"
    (tmp_path / "docs" / "img").mkdir(parents=True)
    results.mkdir()
    for name, source in figures.IMAGES.items():
        (results / source).write_bytes(b"png " + name.encode())
        (tmp_path / "docs" / "img" / name).write_bytes(b"png " + name.encode())
    first = next(iter(figures.IMAGES))
    (tmp_path / "docs" / "img" / first).write_bytes(b"an older picture")
    found = figures.images(tmp_path, figures.Results(results))
    assert [m.name for m in found] == [f"image {first}"]
    figures.images(tmp_path, figures.Results(results), write=True)
    assert figures.images(tmp_path, figures.Results(results)) == []


def test_the_pages_use_figures():
    """The check is not vacuous: the front page and the benchmarks page show rendered figures."""
    for page in ("README.md", "docs/benchmarks.md"):
        names = figures.SPAN.findall((ROOT / page).read_text())
        assert len(names) >= 8, page


def _page(names: list[str], results=None) -> str:
    """A page showing each figure as its source makes it now."""
    results = results or figures.Results()
    return "".join(f"- {name}: <!--fig:{name}-->{figures.FIGURES[name].make(results)}<!--/fig--> here\n" for name in names)


def test_a_figure_typed_over_is_caught_and_rewritten(tmp_path):
    page = tmp_path / "page.md"
    text = _page(["step.paper.darts1", "step.paper.gdas", "hvp.paper.init.central"])
    planted = re.sub(r"(<!--fig:step\.paper\.darts1-->)([^<]*)(<!--/fig-->)", r"\g<1>1.23 s\3", text, count=1)
    assert planted != text
    page.write_text(planted)

    found = figures.check([page])
    assert [(m.line, m.name, m.shown, m.unmade) for m in found] == [(1, "step.paper.darts1", "1.23 s", False)]
    assert found[0].source == figures.FIGURES["step.paper.darts1"].make(figures.Results())

    assert figures.update([page]) and page.read_text() == text  # rewritten from its source
    assert figures.check([page]) == []


def test_a_changed_result_file_is_caught(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "experiments" / "results", results)
    page = tmp_path / "page.md"
    page.write_text(_page(["step.paper.darts1", "step.paper.gdas", "fwd_bwd.paper.darts1_over_gdas"]))
    step = json.loads((results / "search_step_cpu.json").read_text())
    for case in step["cases"]:
        if case["algorithm"] == "gdas" and case["size"] == "paper":
            case["step_s"] *= 2
    (results / "search_step_cpu.json").write_text(json.dumps(step))

    assert figures.check([page]) == []
    found = {m.name for m in figures.check([page], figures.Results(results))}
    assert found == {"step.paper.gdas"}


def test_an_unknown_figure_or_missing_result_file_is_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("a step takes <!--fig:step.paper.nonesuch-->1 s<!--/fig-->\n\n"
                    "GDAS: <!--fig:step.paper.gdas-->2 s<!--/fig-->\n")
    found = figures.check([page], figures.Results(tmp_path / "no_results"))
    assert [(m.line, m.name, m.unmade) for m in found] == [(1, "step.paper.nonesuch", True),
                                                          (3, "step.paper.gdas", True)]
    assert "not defined" in found[0].source and "is missing" in found[1].source


def test_the_command_line_check_fails_on_a_disagreement(tmp_path, monkeypatch, capsys):
    page = tmp_path / "README.md"
    page.write_text("GDAS: <!--fig:step.paper.gdas-->0 s<!--/fig-->\n")
    monkeypatch.setattr(figures, "pages", lambda root=figures.ROOT: [page])
    assert figures.main(["--check"]) == 1
    assert "step.paper.gdas shows '0 s'" in capsys.readouterr().out
    assert page.read_text() == "GDAS: <!--fig:step.paper.gdas-->0 s<!--/fig-->\n"  # --check changes nothing


@pytest.mark.parametrize("page", CHECKED_PAGES)
def test_no_measured_figure_outside_a_span(page):
    found = figures.unmarked((ROOT / page).read_text())
    assert not found, (f"{page}: measured-looking figures not rendered from a result file "
                       f"(use a figure span; write settings as code; label papers' figures): {found}")


def test_every_docs_page_is_checked():
    pages = {str(p.relative_to(ROOT)) for p in figures.pages() if "docs/api/" not in str(p)}
    assert pages <= set(CHECKED_PAGES), sorted(pages - set(CHECKED_PAGES))


def test_the_scanner_finds_what_it_should():
    text = "\n".join([
        "A step takes 9.2 s on this machine.",                       # 1: measured
        "Its memory peaks at 8,855 MiB, 0.94x the other's.",         # 2: two
        "The mean largest probability ends at 0.273 here.",          # 3: a bare fraction
        "The paper: 3.3M parameters, 97.0% accuracy.",               # 4: labelled
        "Set `search.lr=0.025` and run `python x.py --time 5s`.",    # 5: code
        "It took <!--fig:step.paper.gdas-->2.42 s<!--/fig-->.",      # 6: a span
        "```", "took 12 s", "```",                                   # 7-9: a code block
        "See [the table](results/x_2.5x.md) and 12 cells, C=16, 32 px, 50 epochs.",  # 10: none
    ])
    assert figures.unmarked(text) == [(1, "9.2 s"), (2, "8,855 MiB"), (2, "0.94x"), (3, "0.273")]


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text) <= 6000, len(text)
    assert text.count("```bash") >= 2 and "pytest" in text and "+experiment=quickstart" in text


def _slug(heading: str) -> str:
    """The anchor the docs site (Python-Markdown's toc) gives a heading."""
    heading = re.sub(r"`|\*|<[^>]+>", "", heading).strip().lower()
    heading = re.sub(r"[^\w\s-]", "", heading)
    return re.sub(r"[\s-]+", "-", heading).strip("-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


@pytest.mark.parametrize("page", ["README.md", "experiments/README.md"])
def test_links_resolve(page):
    """Every relative link of the page points at a file that exists, and at a heading that exists."""
    path = ROOT / page
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"[a-z]+://|mailto:", link):
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        assert file.exists(), f"{page}: {link} points at a missing file"
        if anchor and file.suffix == ".md":
            assert anchor in _anchors(file), f"{page}: {link}: no heading #{anchor} in {file.relative_to(ROOT)}"


def test_the_experiments_index_lists_every_script():
    index = (ROOT / "experiments" / "README.md").read_text()
    scripts = sorted(p.name for p in (ROOT / "experiments").glob("*.py"))
    missing = [s for s in scripts if s not in index]
    assert not missing, missing


def test_every_result_file_shown_exists():
    """A page that names or includes a result file names one that exists."""
    for page in figures.pages():
        for name in re.findall(r"experiments/results/([\w.\-]+\.(?:md|json|png|csv))", page.read_text()):
            assert (ROOT / "experiments" / "results" / name).is_file(), f"{page}: {name}"
