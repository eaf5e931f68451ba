"""The measured figures README.md and the docs show, each computed from a result file in experiments/results/.

A figure in a markdown page sits between two HTML comments, invisible on GitHub and on the docs site:

    a first-order step takes <!--fig:step.paper.darts1-->9.19 s<!--/fig--> here

and may be a number, a phrase or a whole table. The name after ``fig:`` is one of FIGURES below, each a function
of the result files that writes the text. Nothing between the comments is typed by hand:

    python experiments/figures.py            # rewrite every figure of README.md and docs/ from the result files
    python experiments/figures.py --check    # change nothing; exit 1 naming each figure that differs from its source

Run the first after an experiment has rewritten its result file; tests/test_figures.py runs the second in CI, so a
page cannot show a figure its result file does not hold. Figures taken from papers are labelled as such in the
prose and are not measured here.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
SPAN = re.compile(r"<!--fig:([\w.\-]+)-->(.*?)<!--/fig-->", re.S)


class Results:
    """The result files, read once each (a test points it at a changed copy)."""

    def __init__(self, folder: Path = RESULTS) -> None:
        self.folder = Path(folder)
        self._cache: dict[str, object] = {}

    def json(self, name: str):
        if name not in self._cache:
            path = self.folder / name
            if not path.is_file():
                raise FigureError(f"{path} is missing: run the experiment that writes it")
            self._cache[name] = json.loads(path.read_text())
        return self._cache[name]

    def case(self, name: str, algorithm: str, size: str) -> dict:
        """One case of a search-step benchmark file."""
        for c in self.json(name)["cases"]:
            if c["algorithm"] == algorithm and c["size"] == size:
                return c
        raise FigureError(f"{name} has no case {algorithm} at size {size}")

    def hvp(self, size: str, state: str) -> dict:
        for row in self.json("hvp_accuracy.json")["rows"]:
            if row["size"] == size and row["state"].startswith(state):
                return row
        raise FigureError(f"hvp_accuracy.json has no row {size} / {state}")


class FigureError(RuntimeError):
    """A figure cannot be made: an unknown name or a missing result file."""


@dataclass(frozen=True)
class Figure:
    name: str
    source: str  # the result file it is computed from (shown in errors and in the docs' list)
    make: Callable[[Results], str]


FIGURES: dict[str, Figure] = {}


def figure(name: str, source: str) -> Callable[[Callable[[Results], str]], Callable[[Results], str]]:
    def register(make: Callable[[Results], str]) -> Callable[[Results], str]:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} defined twice")
        FIGURES[name] = Figure(name, source, make)
        return make

    return register


def _x(ratio: float, digits: int = 2) -> str:
    return f"{ratio:.{digits}f}x"


def _x_span(ratios: list[float]) -> str:
    """The ratios' range: ``0.84x``, or ``0.86-0.87x``."""
    low, high = _x(min(ratios)), _x(max(ratios))
    return low if low == high else f"{low[:-1]}-{high}"


def _machine(m: dict) -> str:
    gpu = m.get("gpu")
    return (f"{m.get('cpu', 'CPU')}, {m.get('cores', '?')} cores, torch {m['torch']}"
            + (f", {gpu}" if gpu else ", no GPU") + f"; {m['date']}")


# ---- the search step (experiments/search_step_benchmark.py) ----------------------------------------------------------
STEP = "search_step_cpu.json"
TRICKS = "search_step_tricks_cpu.json"
RECOMPUTE_AB = "search_step_recompute_cpu.json"  # the default and recompute=none alternating, paper size

for _size in ("quickstart", "paper", "proxy"):
    for _algo in ("darts1", "darts2", "darts2f", "darts2e", "gdas"):
        figure(f"step.{_size}.{_algo}", STEP)(
            lambda r, s=_size, a=_algo: f"{r.case(STEP, a, s)['step_s']:.2f} s")
        if _algo != "darts1":
            figure(f"step.{_size}.{_algo}.vs_darts1", STEP)(
                lambda r, s=_size, a=_algo: _x(r.case(STEP, a, s)["step_s"] / r.case(STEP, "darts1", s)["step_s"]))
        figure(f"memory.{_size}.{_algo}", STEP)(
            lambda r, s=_size, a=_algo: f"{r.case(STEP, a, s)['peak_mib'] / 1024:.1f} GiB")
    figure(f"fwd_bwd.{_size}.darts1_over_gdas", STEP)(
        lambda r, s=_size: _x(r.case(STEP, "darts1", s)["fwd_bwd_s"] / r.case(STEP, "gdas", s)["fwd_bwd_s"], 1))
    figure(f"step.{_size}.darts2e.vs_darts2", STEP)(
        lambda r, s=_size: _x(r.case(STEP, "darts2e", s)["step_s"] / r.case(STEP, "darts2", s)["step_s"], 1))
    figure(f"memory.{_size}.darts2e.vs_darts2", STEP)(
        lambda r, s=_size: _x(r.case(STEP, "darts2e", s)["peak_mib"] / r.case(STEP, "darts2", s)["peak_mib"], 1))
    for _trick in ("pc_darts", "sdarts_rs", "sdarts_adv", "resource", "checkpoint", "recompute_none"):
        figure(f"tricks.{_size}.{_trick}.step", TRICKS)(
            lambda r, s=_size, t=_trick: _x(r.case(TRICKS, t, s)["step_s"] / r.case(TRICKS, "darts1", s)["step_s"]))
        figure(f"tricks.{_size}.{_trick}.memory", TRICKS)(
            lambda r, s=_size, t=_trick: _x(r.case(TRICKS, t, s)["peak_mib"] / r.case(TRICKS, "darts1", s)["peak_mib"]))


def _alternating(r: Results, key: str) -> str:
    """recompute=none over the default, each recompute_none case over the default case run just before it: the
    span over the rounds."""
    cases = [c for c in r.json(RECOMPUTE_AB)["cases"] if c["size"] == "paper"]
    default = [c for c in cases if c["algorithm"] == "darts1"]
    none = [c for c in cases if c["algorithm"] == "recompute_none"]
    if not none or len(default) != len(none):
        raise FigureError(f"{RECOMPUTE_AB}: expected darts1 and recompute_none alternating at the paper size")
    return _x_span([n[key] / d[key] for d, n in zip(default, none)])


for _key, _name in (("step_s", "step"), ("peak_mib", "memory"), ("fwd_bwd_s", "fwd_bwd")):
    figure(f"recompute.paper.none.{_name}", RECOMPUTE_AB)(lambda r, k=_key: _alternating(r, k))


@figure("machine.search_step_recompute", RECOMPUTE_AB)
def _(r: Results) -> str:
    return _machine(r.json(RECOMPUTE_AB)["machine"])


@figure("machine.search_step", STEP)
def _(r: Results) -> str:
    return _machine(r.json(STEP)["machine"])


@figure("machine.search_step_tricks", TRICKS)
def _(r: Results) -> str:
    return _machine(r.json(TRICKS)["machine"])


# ---- the retraining step, one ReLU per state (experiments/retrain_step_memory.py) -----------------------------------
RETRAIN = "retrain_step_memory.json"


def _retrain_ratio(r: Results, key: str) -> str:
    """The shared case over the per-op case, every run against every run: their span."""
    cases = r.json(RETRAIN)["cases"]
    return _x_span([s[key] / o[key] for s in cases["shared"] for o in cases["per_op"]])


for _key, _name in (("peak_mib", "peak"), ("saved_mib", "kept"), ("step_s", "time")):
    figure(f"retrain.shared.{_name}", RETRAIN)(lambda r, k=_key: _retrain_ratio(r, k))


@figure("machine.retrain_step_memory", RETRAIN)
def _(r: Results) -> str:
    return _machine(r.json(RETRAIN)["machine"])


# ---- the Hessian-vector product's accuracy (experiments/hvp_accuracy.py) ---------------------------------------------
HVP = "hvp_accuracy.json"
for _size, _state in (("quickstart", "init"), ("quickstart", "after"), ("paper", "init")):
    figure(f"hvp.{_size}.{_state}.share", HVP)(
        lambda r, s=_size, st=_state: f"{100 * r.hvp(s, st)['second_order_share']:.0f}%")
    for _how in ("central", "forward"):
        for _eps in ("0.01", "0.001"):
            _tail = "" if _eps == "0.01" else ".eps_tenth"
            figure(f"hvp.{_size}.{_state}.{_how}{_tail}", HVP)(
                lambda r, s=_size, st=_state, h=_how, e=_eps:
                f"{100 * r.hvp(s, st)['estimates'][f'{h}@{e}']['gradient']['median']:.0f}%")
        figure(f"hvp.{_size}.{_state}.{_how}.term", HVP)(
            lambda r, s=_size, st=_state, h=_how: f"{100 * r.hvp(s, st)['estimates'][f'{h}@0.01']['term']['median']:.0f}%")


@figure("hvp.float64.central_best", HVP)
def _(r: Results) -> str:
    """The float64 eps sweep: the smallest central-difference error and the eps (x 1/|v|) it is reached at."""
    best = min(r.json(HVP)["eps_sweep"], key=lambda row: row["central"])
    return f"{best['central']:.0e} at eps = {best['unrolled_eps']:.0e}/‖v‖"


@figure("machine.hvp_accuracy", HVP)
def _(r: Results) -> str:
    m = r.json(HVP)["machine"]
    return f"torch {m['torch']}, {m['dtype']}, {m['threads']} threads; {m['date']}"


# ---- the quickstart over seeds (experiments/quickstart_seeds.py) --------------------------------------------------------
QUICK = "quickstart_seeds.json"


def _range(values: list[float], fmt: str, unit: str = "") -> str:
    lo, hi = f"{min(values):{fmt}}", f"{max(values):{fmt}}"
    return f"{lo}{unit}" if lo == hi else f"{lo}-{hi}{unit}"


@figure("quickstart.seeds", QUICK)
def _(r: Results) -> str:
    seeds = [str(run["seed"]) for run in r.json(QUICK)["runs"]]
    return ", ".join(seeds)


@figure("quickstart.wall_time", QUICK)
def _(r: Results) -> str:
    return _range([run["wall_time_s"] for run in r.json(QUICK)["runs"]], ".0f", " s")


@figure("quickstart.val_acc", QUICK)
def _(r: Results) -> str:
    return _range([100 * run["val_acc"] for run in r.json(QUICK)["runs"]], ".1f", "%")


for _cell in ("normal", "reduce"):
    for _measure, _fmt in (("max_prob", ".3f"), ("margin", ".3f")):
        figure(f"quickstart.{_cell}.{_measure}", QUICK)(
            lambda r, c=_cell, m=_measure, f=_fmt: _range([run[c][m] for run in r.json(QUICK)["runs"]], f))
    figure(f"quickstart.{_cell}.param_free_share", QUICK)(
        lambda r, c=_cell: _range([100 * run[c]["param_free_share"] for run in r.json(QUICK)["runs"]], ".0f", "%"))


@figure("machine.quickstart_seeds", QUICK)
def _(r: Results) -> str:
    return _machine(r.json(QUICK)["machine"])


# ---- parameter counts of the published cells (built here; tests/ assert the exact counts) ----------------------------
def _published_params(name: str, C: int, layers: int, imagenet: bool = False,
                      auxiliary: bool = False) -> Callable[[Results], str]:
    def make(_: Results) -> str:
        from darts_lite import EvalNetwork, Genotype

        if imagenet:
            net = EvalNetwork(Genotype.named(name), C=C, num_classes=1000, layers=layers, auxiliary=True,
                              dataset="imagenet")
        else:
            net = EvalNetwork(Genotype.named(name), C=C, num_classes=10, layers=layers, auxiliary=True)
        return f"{net.num_parameters(auxiliary=auxiliary) / 1e6:.{3 if auxiliary else 2}f}M"

    return make


for _name in ("DARTS_V2", "GDAS_V1", "GDAS_F1", "PC_DARTS", "P_DARTS"):
    figure(f"params.{_name}", "darts_lite (the network built)")(_published_params(_name, 36, 20))
for _name in ("FAIRDARTS_A", "FAIRDARTS_B"):  # FairDARTS's table counts the auxiliary head
    figure(f"params.{_name}.aux", "darts_lite (the network built)")(_published_params(_name, 36, 20, auxiliary=True))
figure("params.DARTS_V2.imagenet", "darts_lite (the network built)")(_published_params("DARTS_V2", 48, 14, True))


# ---- Once-for-All against training from scratch (experiments/ofa_budgets.py) ------------------------------------------
OFA = "ofa_budgets.json"


@figure("ofa.budgets", OFA)
def _(r: Results) -> str:
    return ", ".join(f"{row['budget']:g}" for row in r.json(OFA)["rows"])


for _name, _key in (("ofa.accuracy", "accuracy"), ("ofa.predicted", "predicted_accuracy")):
    figure(_name, OFA)(lambda r, k=_key: " / ".join(f"{row[k]:.3f}" for row in r.json(OFA)["rows"]))


@figure("ofa.scratch", OFA)
def _(r: Results) -> str:
    return " / ".join(f"{statistics.mean(s['accuracy'] for s in row['scratch']):.3f}" for row in r.json(OFA)["rows"])


# ---- collapse on the NB201 space (experiments/collapse_study.py) --------------------------------------------------------
COLLAPSE = "collapse_nb201.json"


def _last(run: dict, metric: str) -> float:
    values = run["per_epoch"].get(metric) or {}
    if not values:
        raise FigureError(f"{COLLAPSE}: seed {run['seed']} logged no {metric}")
    return values[max(values, key=int)]


def _collapse_runs(r: Results, algorithm: str) -> list[dict]:
    data = r.json(COLLAPSE)
    if algorithm not in data:
        raise FigureError(f"{COLLAPSE} has no algorithm {algorithm}")
    return data[algorithm]["runs"]


@figure("collapse.seeds", COLLAPSE)
def _(r: Results) -> str:
    seeds = sorted({run["seed"] for runs in r.json(COLLAPSE).values() for run in runs["runs"]})
    contiguous = seeds == list(range(seeds[0], seeds[-1] + 1))
    return f"{seeds[0]}-{seeds[-1]}" if contiguous and len(seeds) > 2 else ", ".join(map(str, seeds))


@figure("collapse.epochs", COLLAPSE)
def _(r: Results) -> str:
    run = _collapse_runs(r, "darts")[0]
    return str(1 + max(int(e) for e in run["per_epoch"]["val/acc"]))


for _algo in ("darts", "gdas"):
    for _metric, _key in (("val/acc", "val_acc"), ("val/acc_derived", "val_acc_derived")):
        figure(f"collapse.{_algo}.{_key}", COLLAPSE)(
            lambda r, a=_algo, m=_metric: f"{100 * statistics.mean(_last(x, m) for x in _collapse_runs(r, a)):.0f}%")
        figure(f"collapse.{_algo}.{_key}.per_seed", COLLAPSE)(
            lambda r, a=_algo, m=_metric: ", ".join(f"{100 * _last(x, m):.0f}" for x in _collapse_runs(r, a)) + "%")
    figure(f"collapse.{_algo}.param_free", COLLAPSE)(
        lambda r, a=_algo: f"{100 * statistics.mean(_last(x, 'guard/param_free_share') for x in _collapse_runs(r, a)):.0f}%")
    figure(f"collapse.{_algo}.wall", COLLAPSE)(
        lambda r, a=_algo: f"{statistics.mean(x['wall_time_s'] for x in _collapse_runs(r, a)):.0f} s")


def _wall_and_machine(prefix: str, name: str) -> None:
    """``PREFIX.wall`` (the run's wall time in minutes) and ``machine.PREFIX`` of a study's result file."""
    figure(f"{prefix}.wall", name)(lambda r: f"{r.json(name)['wall_time_s'] / 60:.0f} min")
    figure(f"machine.{prefix}", name)(lambda r: _machine(r.json(name)["machine"]))


# ---- the quick leaderboard (experiments/leaderboard_quick.py) ---------------------------------------------------------
LEADERBOARD = "leaderboard_quick.json"


@figure("leaderboard.table", LEADERBOARD)
def _(r: Results) -> str:
    rows = ["| method | accuracy (%) |", "| --- | ---: |"]
    rows += [f"| {m['method']} | {m['mean']:.1f} +- {m['std']:.1f} |" for m in r.json(LEADERBOARD)["methods"]]
    return "\n" + "\n".join(rows) + "\n"


@figure("leaderboard.range", LEADERBOARD)
def _(r: Results) -> str:
    means = [m["mean"] for m in r.json(LEADERBOARD)["methods"]]
    return f"{min(means):.1f}-{max(means):.1f}%"


@figure("leaderboard.std", LEADERBOARD)
def _(r: Results) -> str:
    stds = [m["std"] for m in r.json(LEADERBOARD)["methods"]]
    return f"{min(stds):.1f}-{max(stds):.1f} points"


@figure("leaderboard.shape", LEADERBOARD)
def _(r: Results) -> str:
    data = r.json(LEADERBOARD)
    return f"{len(data['methods'])} methods x {len(data['seeds'])} seeds"


_wall_and_machine("leaderboard", LEADERBOARD)


# ---- the proxy study that decides (experiments/proxy_study_zc_quick.py) -----------------------------------------------
ZC = "proxy_study_zc_quick.json"


def _zc_rows(r: Results) -> list[dict]:
    return r.json(ZC)["rows"]


def _zc_kind(setting: str) -> str:
    return "reference, next seed" if "@seed" in setting else ("zero-cost" if setting.startswith("zc_") else "training")


@figure("zc.table", ZC)
def _(r: Results) -> str:
    """The reference again, the best training proxy, the best zero-cost proxy, the vote and params."""
    rows = _zc_rows(r)
    training = [x for x in rows if _zc_kind(x["setting"]) == "training"]
    zero_cost = [x for x in rows if x["setting"].startswith("zc_") and x["setting"] not in ("zc_vote", "zc_params")]
    keep = [x for x in rows if "@seed" in x["setting"]] + training[:1] + zero_cost[:1] + [
        x for x in rows if x["setting"] in ("zc_vote", "zc_params")]
    keep.sort(key=lambda x: -x["spearman"])
    lines = ["| proxy | Spearman [95% CI] | speed-up |", "| --- | ---: | ---: |"]
    lines += [f"| {x['setting']} | {x['spearman']:.2f} [{x['spearman_low']:.2f}, {x['spearman_high']:.2f}] | "
              f"{x['speedup']:,.0f}x |" for x in keep]
    return "\n" + "\n".join(lines) + "\n"


@figure("zc.self", ZC)
def _(r: Results) -> str:
    return f"{r.json(ZC)['self_spearman']:.2f}"


@figure("zc.shape", ZC)
def _(r: Results) -> str:
    data = r.json(ZC)
    return f"{data['architectures']} cells, {len(data['rows']) - 1} proxies"


@figure("zc.best_zero_cost", ZC)
def _(r: Results) -> str:
    best = next(x for x in _zc_rows(r) if x["setting"].startswith("zc_"))
    return f"{best['setting']} ({best['spearman']:.2f})"


_wall_and_machine("zc", ZC)


# ---- the EcoNAS archive under load (experiments/archive_load.py) --------------------------------------------------------
ARCHIVE_LOAD = "archive_load.json"


def _load_case(r: Results, name: str) -> dict:
    return next(c for c in r.json(ARCHIVE_LOAD)["cases"] if c["case"] == name)


@figure("archive.returned", ARCHIVE_LOAD)
def _(r: Results) -> str:
    return f"{_load_case(r, 'through the driver')['submitted']} results"


@figure("archive.lost", ARCHIVE_LOAD)
def _(r: Results) -> str:
    cases = r.json(ARCHIVE_LOAD)["cases"]
    lost, twice = sum(c["lost"] for c in cases), sum(c["duplicated"] for c in cases)
    return "none lost or duplicated" if lost == twice == 0 else f"{lost} lost, {twice} duplicated"


@figure("archive.driver", ARCHIVE_LOAD)
def _(r: Results) -> str:
    c = _load_case(r, "through the driver")
    return f"{c['rows_per_s']:.0f} rows per second ({c['ms_per_row']:.1f} ms a row)"


@figure("archive.one_writer", ARCHIVE_LOAD)
def _(r: Results) -> str:
    return f"{_load_case(r, 'one writer')['rows_per_s']:.0f} rows per second"


@figure("archive.inline", ARCHIVE_LOAD)
def _(r: Results) -> str:
    c = _load_case(r, "evaluator, inline")
    return f"{1000 * c['driver_cpu_s'] / c['submitted']:.1f} ms of CPU ({c['ms_per_row']:.1f} ms of wall time)"


figure("machine.archive", ARCHIVE_LOAD)(lambda r: _machine(r.json(ARCHIVE_LOAD)["machine"]))


# ---- kill anywhere (experiments/chaos.py) -----------------------------------------------------------------------------
CHAOS = "chaos.json"


@figure("chaos.table", CHAOS)
def _(r: Results) -> str:
    lines = ["| task | kills | at (share of the run) | same result |", "| --- | ---: | --- | --- |"]
    lines += [f"| {t['task']} | {t['kills']} | {', '.join(f'{m:.2f}' for m in t['moments']) or '-'} | "
              f"{'yes' if t['equal'] else 'no'} |" for t in r.json(CHAOS)["tasks"]]
    return "\n" + "\n".join(lines) + "\n"


@figure("chaos.summary", CHAOS)
def _(r: Results) -> str:
    data = r.json(CHAOS)
    same = "every resumed run ended equal" if data["all_equal"] else "NOT every resumed run ended equal"
    return f"{data['kills_total']} kills over {len(data['tasks'])} tasks; {same}"


_wall_and_machine("chaos", CHAOS)


# ---- figures written by hand -----------------------------------------------------------------------------------------
# A measurement in prose: a number with a unit of time, memory, speed or share, or a fraction with two or more decimals
MEASURED = re.compile(r"(?<![\w.=/-])(?<!= )\d[\d,]*(?:\.\d+)?\s?(?:s|ms|min|minutes|hours|GPU-hours|GPU-days|%|x|MiB|GiB|"
                      r"GB|MB|PFLOP|M)(?![\w/])(?!\s\d)|(?<![\w.=/-])(?<!= )\d+\.\d{2,}(?![\w.])")
# a line that says its figures come from a paper (or its published code), not from this machine
FROM_PAPERS = re.compile(r"\bpapers?:|\(papers?\b|\bpublished\b|\breported\b|\bthe authors\b", re.I)
_HIDDEN = (re.compile(r"```.*?```", re.S), re.compile(r"`[^`\n]*`"), SPAN, re.compile(r"<!--.*?-->", re.S),
           re.compile(r"\]\([^)]*\)"), re.compile(r"^--8<--.*$", re.M),
           re.compile(r"\b\d+% (?=(?:bootstrap|confidence)\b)"))  # a confidence level is a setting


def unmarked(text: str) -> list[tuple[int, str]]:
    """(line, text) of each measured-looking figure in a page that is neither a figure span nor on a line that
    labels its figures as a paper's; code, links and snippet includes are not prose."""
    for pattern in _HIDDEN:  # blanked with the same number of lines, so line numbers stay right
        text = pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if FROM_PAPERS.search(line):
            continue
        out += [(number, m.group(0).strip()) for m in MEASURED.finditer(line)]
    return out


# ---- pictures: docs/img/<name> is a copy of a result file ------------------------------------------------------------
IMAGES = {
    "alphas_normal.png": "quickstart_seeds_alphas_normal.png",
    "normal_cell.png": "quickstart_seeds_normal_cell.png",
    "collapse_nb201_param_free.png": "collapse_nb201_param_free.png",
    "tricks_quick.png": "tricks_quick.png",
    "proxy_study_quick.png": "proxy_study_quick.png",
    "leaderboard_quick.png": "leaderboard_quick.png",
    "proxy_study_zc_quick.png": "proxy_study_zc_quick.png",
}


def images(root: Path = ROOT, results: Results | None = None, write: bool = False) -> list[Mismatch]:
    """The pictures of docs/img that differ from the result file they copy (copied again with ``write``)."""
    folder = (results or Results()).folder
    out = []
    for name, source in IMAGES.items():
        shown, made = root / "docs" / "img" / name, folder / source
        if not made.is_file():
            out.append(Mismatch(shown, 0, f"image {name}", name, f"cannot be copied: {made} is missing", True))
        elif not shown.is_file() or shown.read_bytes() != made.read_bytes():
            if write:
                shown.write_bytes(made.read_bytes())
            out.append(Mismatch(shown, 0, f"image {name}", name, f"a copy of {made.name}"))
    return out


# ---- the pages ---------------------------------------------------------------------------------------------------------
def pages(root: Path = ROOT) -> list[Path]:
    """README.md and every page of the docs site."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


@dataclass(frozen=True)
class Mismatch:
    page: Path
    line: int
    name: str
    shown: str
    source: str  # what the result file says, or why it cannot be made
    unmade: bool = False  # the figure is unknown or its result file cannot give it

    def __str__(self) -> str:
        if self.unmade:
            return f"{self.page}:{self.line}: figure {self.name} ({self.shown!r}) {self.source}"
        return f"{self.page}:{self.line}: figure {self.name} shows {self.shown!r}, its source says {self.source!r}"


def render(text: str, results: Results, page: Path = Path("?")) -> tuple[str, list[Mismatch]]:
    """The page with every figure made from its source, and the figures that differed (or could not be made)."""
    mismatches: list[Mismatch] = []

    def one(m: re.Match) -> str:
        name, shown = m.group(1), m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        fig = FIGURES.get(name)
        if fig is None:
            mismatches.append(Mismatch(page, line, name, shown, "is not defined in experiments/figures.py", True))
            return m.group(0)
        try:
            made = fig.make(results)
        except (FigureError, KeyError, ZeroDivisionError) as e:
            mismatches.append(Mismatch(page, line, name, shown, f"cannot be made from {fig.source}: {e}", True))
            return m.group(0)
        if made != shown:
            mismatches.append(Mismatch(page, line, name, shown, made))
        return f"<!--fig:{name}-->{made}<!--/fig-->"

    return SPAN.sub(one, text), mismatches


def check(paths: Iterable[Path] | None = None, results: Results | None = None) -> list[Mismatch]:
    """Every figure of the pages that differs from its source; changes nothing."""
    results = results or Results()
    out: list[Mismatch] = []
    for path in paths if paths is not None else pages():
        out += render(path.read_text(), results, path)[1]
    return out


def update(paths: Iterable[Path] | None = None, results: Results | None = None) -> list[Mismatch]:
    """Rewrite the figures of the pages from their sources; returns what changed (and what could not be made)."""
    results = results or Results()
    out: list[Mismatch] = []
    for path in paths if paths is not None else pages():
        text = path.read_text()
        new, changed = render(text, results, path)
        if new != text:
            path.write_text(new)
        out += changed
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a figure differs from its source")
    args = p.parse_args(argv)
    found = check() + images() if args.check else update() + images(write=True)
    for m in found:
        print(m if args.check or m.unmade else f"{m.page}:{m.line}: {m.name}: {m.shown!r} -> {m.source!r}")
    return 1 if (args.check and found) or any(m.unmade for m in found) else 0


if __name__ == "__main__":
    sys.exit(main())
