"""Plug-ins from outside the package: the examples of docs/extending.md (and the dataset of
docs/guides/your-data.md), written into a temporary folder on PYTHONPATH and run end to end through
``python -m darts_lite`` (a search, then ``task=train`` on its genotype)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import run_cli

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = (DOCS / "extending.md", DOCS / "guides" / "your-data.md")  # the dataset example is on the second


def _files_of_the_page() -> dict[str, str]:
    """{relative path: source} of every code block of the pages that starts with `# <path>`."""
    files = {}
    text = "\n".join(page.read_text() for page in PAGES)
    for _lang, source in re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S):
        first = source.splitlines()[0]
        match = re.match(r"# (\S+\.(py|yaml))$", first)
        if match:
            files[match.group(1)] = source
    return files


@pytest.fixture()
def plugins(tmp_path):
    """The page's modules and config files in a temporary folder; the environment that puts them on PYTHONPATH."""
    for name, source in _files_of_the_page().items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    return tmp_path, env


def test_the_page_has_the_three_plug_ins():
    assert {"my_relaxation.py", "my_data.py", "my_space.py", "my_conf/space/chain.yaml"} <= set(_files_of_the_page())


def test_a_relaxation_and_a_dataset_of_ones_own_search_and_retrain(plugins):
    folder, env = plugins
    search = folder / "search"
    data = ["data=dataset", "data.train._target_=my_data.train_set", "data.test._target_=my_data.test_set",
            "data.batch_size=32"]
    proc = run_cli("+experiment=quickstart", *data, "search.relaxation._target_=my_relaxation.TemperedSoftmax",
                   "search.relaxation.start=2.0", "search.relaxation.end=0.5", "search.epochs=2", "search.warmup_epochs=0",
                   "space.C=4", "space.layers=3", f"hydra.run.dir={search}", cwd=folder, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [r for r in (search / "metrics.csv").read_text().splitlines()[1:] if r]
    header = (search / "metrics.csv").read_text().splitlines()[0].split(",")
    temps = [float(r.split(",")[header.index("search/temperature")]) for r in rows
             if r.split(",")[header.index("search/temperature")]]
    assert temps == pytest.approx([2.0, 0.5])  # the relaxation's own schedule, logged by the search
    config = (search / "config.yaml").read_text()
    assert "_target_: my_relaxation.TemperedSoftmax" in config and "_target_: my_data.train_set" in config
    # the found cell retrained on the same data, from the search's run folder
    train = folder / "train"
    proc = run_cli("+experiment=train_quick", *data, f"genotype={search}", "train.epochs=1", "train.C=8",
                   f"hydra.run.dir={train}", cwd=folder, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((train / "summary.json").read_text())
    assert summary["genotype"] == (search / "genotype.txt").read_text().strip() and 0 <= summary["metrics"]["val/acc"] <= 1


def test_a_space_of_ones_own_search_and_retrain(plugins):
    folder, env = plugins
    search = folder / "search"
    proc = run_cli("+experiment=quickstart", f"hydra.searchpath=[file://{folder / 'my_conf'}]", "space=chain",
                   "search.epochs=2", "search.warmup_epochs=1", f"hydra.run.dir={search}", cwd=folder, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    genotype = (search / "genotype.txt").read_text().strip()
    assert re.fullmatch(r"chain:\w+(,\w+){4}", genotype), genotype  # quickstart's 5 layers
    assert (search / "alphas_cell.png").is_file() and (search / "config.yaml").read_text().count("name: chain") == 1
    train = folder / "train"
    proc = run_cli("+experiment=train_quick", "train.space=my_space", f"genotype={search}", "train.epochs=1",
                   f"hydra.run.dir={train}", cwd=folder, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((train / "summary.json").read_text())["genotype"] == genotype


def test_bad_plug_ins_are_one_message_each(plugins):
    folder, env = plugins
    proc = run_cli("+experiment=quickstart", "search.relaxation._target_=my_relaxation.Nope", "data=dataset",
                   "data.train._target_=my_data.train_set", "search.relaxation.start=0", f"hydra.run.dir={folder / 'x'}",
                   cwd=folder, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "search.relaxation._target_='my_relaxation.Nope': cannot be imported (my_relaxation has no 'Nope')" in proc.stderr
    assert "data.test._target_: must be set (the config leaves it ???)" in proc.stderr
    proc = run_cli("+experiment=quickstart", "search.relaxation._target_=my_relaxation.TemperedSoftmax",
                   "search.relaxation.start=0", "search.relaxation.speed=3", f"hydra.run.dir={folder / 'x'}",
                   cwd=folder, env=env, timeout=300)
    assert proc.returncode == 2
    assert "search.relaxation.start=0: must be > 0" in proc.stderr
    assert "search.relaxation.speed: unknown option of my_relaxation.TemperedSoftmax; its options: start, end" in proc.stderr
