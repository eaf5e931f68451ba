"""What the experiment scripts share: running the darts_lite command line into a run folder, reading a finished
run's metrics.csv and config.yaml, describing the machine, running one measured case per process, and writing a
result as JSON plus the markdown generated from it.

A script imports it as ``from common import ...``: ``python experiments/X.py`` puts experiments/ on sys.path.
Nothing here imports torch at module level, so a script's ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"


# ---- runs of the command line ----------------------------------------------------------------------------------------
def run_darts_lite(folder: Path, overrides: Sequence[str], label: str) -> dict[str, Any]:
    """One ``python -m darts_lite OVERRIDES hydra.run.dir=FOLDER`` from the project root; returns its summary.json.

    A folder whose summary.json says done is read, not run again, and a folder with checkpoints/last.ckpt (a
    killed run) continues from it (``resume=true``): an interrupted study goes on where it stopped. The run's own
    output is hidden, W&B is offline; ``label`` prefixes the lines printed about it. Raises
    subprocess.CalledProcessError when the run fails.
    """
    folder = Path(folder).resolve()
    summary = folder / "summary.json"
    if summary.is_file():
        done = json.loads(summary.read_text())
        if done.get("status", "done") == "done":
            print(f"{label}: done before, read from {folder}", flush=True)
            return done
    cmd = [sys.executable, "-m", "darts_lite", *overrides, f"hydra.run.dir={folder}"]
    if (folder / "checkpoints" / "last.ckpt").is_file():
        cmd.append("resume=true")
    print(f"{label}: python {shlex.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "offline"}, stdout=subprocess.DEVNULL)
    print(f"{label}: {time.perf_counter() - start:.0f} s", flush=True)
    return json.loads(summary.read_text())


def run_in_folder(folder: Path, overrides: Sequence[str], resume_when: str) -> float:
    """``python -m darts_lite OVERRIDES hydra.run.dir=FOLDER`` from the project root with its output shown (W&B
    offline), with ``resume=true`` when ``FOLDER/resume_when`` exists (an interrupted run continues); its wall time
    in seconds (of this part). Raises subprocess.CalledProcessError when the run fails."""
    folder = Path(folder)
    cmd = [sys.executable, "-m", "darts_lite", *overrides, f"hydra.run.dir={folder}"]
    if (folder / resume_when).exists():
        cmd.append("resume=true")
    print(f"python {shlex.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "offline"})
    return time.perf_counter() - start


def read_metrics(folder: Path) -> list[dict[str, float]]:
    """The rows of a run's metrics.csv, each holding only the numbers it logged (the CSV logger leaves the other
    columns of a row empty), as floats."""
    rows = []
    with open(Path(folder) / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            values = {}
            for key, text in row.items():
                try:
                    values[key] = float(text)
                except (TypeError, ValueError):  # empty, or not a number
                    continue
            rows.append(values)
    return rows


def metrics_per_epoch(folder: Path, names: Iterable[str]) -> dict[str, dict[int, float]]:
    """{metric: {epoch: value}} of the metrics ``names`` from a run's metrics.csv; the last value logged for an epoch
    wins, and a metric never logged maps to {}."""
    out: dict[str, dict[int, float]] = {name: {} for name in names}
    for row in read_metrics(folder):
        if "epoch" not in row:
            continue
        for name, values in out.items():
            if name in row:
                values[int(row["epoch"])] = row[name]
    return out


def last_metrics(folder: Path) -> dict[str, float]:
    """The last value logged of every metric in a run's metrics.csv."""
    last: dict[str, float] = {}
    for row in read_metrics(folder):
        last.update(row)
    return last


def run_config(folder: Path) -> dict[str, Any]:
    """The resolved config a run wrote into its folder (config.yaml); {} when it has none."""
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        return {}
    import yaml  # omegaconf's dependency

    return yaml.safe_load(path.read_text()) or {}


def config_value(cfg: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """``cfg``'s value at a dotted ``key`` ("search.epochs"), or ``default`` where the path does not exist."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def describe_search(cfg: Mapping[str, Any]) -> str:
    """A search run's settings as its config.yaml holds them, e.g. "first-order DARTS, digits at native size, C=8,
    5 cells, 12 epochs, 2 of warm-up"; "?" for what the config does not hold."""

    def get(key: str) -> Any:
        return config_value(cfg, key, "?")

    order = {1: "first-order ", 2: "second-order "}.get(config_value(cfg, "search.order"), "")
    resolution = config_value(cfg, "data.resolution")
    side = f"{resolution} px" if resolution else "native size"
    layers = config_value(cfg, "space.layers")
    cells = f"{layers} cells" if layers is not None else f"{get('space.N')} cells per stage"
    return (f"{order}{str(get('search.method')).upper()}, {get('data.name')} at {side}, C={get('space.C')}, {cells}, "
            f"{get('search.epochs')} epochs, {get('search.warmup_epochs')} of warm-up")


# ---- the machine -----------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or what the platform module knows where that file is missing."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine(threads: int | None = None) -> dict[str, Any]:
    """The machine a measurement ran on: date, host name, CPU model, cores, Python, torch, torch's threads (``threads``
    when the measured processes set their own), the device (cuda or cpu) and, with CUDA, the GPU's name. Imports
    torch."""
    import torch

    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "node": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": threads or torch.get_num_threads(), "device": "cuda" if cuda else "cpu",
    }
    if cuda:
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_text(info: Mapping[str, Any]) -> str:
    """One line of :func:`machine`'s record, as the result files print it."""
    return (f"{info['cpu']}, {info['cores']} cores, Python {info['python']}, torch {info['torch']} "
            f"({info['torch_threads']} threads), {info.get('gpu') or 'no GPU'}; {info['date']}")


def span(values: Sequence[float], fmt: str) -> str:
    """The values' range as the result files print it: ``low-high`` in format ``fmt``, one figure when both print
    alike."""
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if low == high else f"{low}-{high}"


def tree_commit(tree: Path) -> str:
    """The short commit of a checkout (``git rev-parse`` where the tree has its own ``.git``), else of the ``.commit``
    file a copied tree may carry, else "unknown"."""
    if Path(tree, ".git").exists():
        out = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()[:7]
    stamp = Path(tree, ".commit")
    return stamp.read_text().strip() if stamp.is_file() else "unknown"


# ---- one case per process --------------------------------------------------------------------------------------------
def run_case(argv: Sequence[str], python: str | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Runs ``python ARGV`` in a process of its own (so that its peak memory is its own) and returns the JSON object
    on the last line it prints (see :func:`print_case`). ``python``: the interpreter (this one by default); ``env``:
    the process's whole environment (this one's by default). Exits naming the command and the end of its error
    output when the case fails."""
    cmd = [python or sys.executable, *map(str, argv)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=None if env is None else dict(env), check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        raise SystemExit(f"{shlex.join(cmd)} failed (exit status {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def print_case(result: Mapping[str, Any]) -> None:
    """A case's side of :func:`run_case`: its result as one JSON line, the last it prints."""
    print(json.dumps(result), flush=True)


def both_ways_arguments(description: str, cases: Mapping[str, str], flag: str, reps_help: str) -> argparse.Namespace:
    """The command line of a script timing ``cases`` both ways (``alternating_runs``): ``--reps``, ``--rounds``,
    ``--cases`` (checked), and the internal ``--case`` with ``flag`` (the other way, ``args.other_way``) that run one
    case in a process; ``args.command`` is the command that reproduces the run, ``args.cases`` the list,
    ``args.flag`` the flag (for ``alternating_runs``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--reps", type=int, default=3, help=reps_help)
    parser.add_argument("--rounds", type=int, default=2, help="every case both ways once per round")
    parser.add_argument("--cases", default=",".join(cases), help=f"a comma-separated subset of {list(cases)}")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case in this process
    parser.add_argument(flag, dest="other_way", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.flag = flag
    if args.case:
        return args
    unknown = sorted(set(args.cases.split(",")) - set(cases))
    if unknown or args.rounds < 1 or args.reps < 1:
        parser.error(f"--cases: any of {', '.join(cases)}; --rounds and --reps >= 1; got {args.cases!r}, "
                     f"{args.rounds}, {args.reps}")
    script = Path(sys.argv[0]).name
    args.command = (f"python experiments/{script} --reps {args.reps} --rounds {args.rounds} --cases {args.cases}")
    args.cases = args.cases.split(",")
    return args


def alternating_runs(script: str | Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each case of ``script`` (``args`` from ``both_ways_arguments``) run both ways, in processes of its own
    (``--case CASE --reps REPS``, with ``args.flag`` first, then without), case after case, ``args.rounds`` times:
    the two ways of a case alternate, so a machine that drifts shows in both. Returns the cases' results in that
    order."""
    runs = []
    for _ in range(args.rounds):
        for case in args.cases:
            for other in (True, False):
                runs.append(run_case([script, "--reps", str(args.reps), "--case", case] + [args.flag] * other))
                print(runs[-1], flush=True)
    return runs


def both_ways_rows(runs: Sequence[Mapping[str, Any]], labels: Mapping[str, str], key: str) -> list[str]:
    """A markdown row per case of ``alternating_runs``' results: its ``step_s`` span the other way (``key`` true),
    this way, and the span of this way's time over the other's, round by round."""
    lines = []
    for case in dict.fromkeys(r["case"] for r in runs):
        other = [r for r in runs if r["case"] == case and r[key]]
        this = [r for r in runs if r["case"] == case and not r[key]]
        lines.append(f"| {labels[case]} | {span([r['step_s'] for r in other], '.2f')} | "
                     f"{span([r['step_s'] for r in this], '.2f')} | "
                     f"{span([a['step_s'] / b['step_s'] for a, b in zip(this, other)], '.2f')}x |")
    return lines



def both_ways_step_section(settings: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], labels: Mapping[str, str],
                           key: str, what: str, whose: str) -> list[str]:
    """The "Per search step" section of a two-ways result file: its text (``what`` is timed, PyTorch's from
    ``whose``) and ``both_ways_rows``' table."""
    return [
        "",
        "### Per search step",
        "",
        f"Median of {settings['reps']} steps after a warm-up, each case and way in its own process, "
        f"{settings['rounds']} rounds (ranges over the rounds); PyTorch's: every {what} from {whose}, all else the "
        "same code.",
        "",
        f"| case | PyTorch's {what} (s) | compiled {what} (s) | time, compiled / PyTorch's |",
        "| --- | ---: | ---: | ---: |",
        *both_ways_rows(runs, labels, key),
    ]


def both_ways_main(script: str | Path, doc: str, cases: Mapping[str, str], flag: str, reps_help: str,
                   one_case: Callable[[str, int, bool], Mapping[str, Any]],
                   measure: Callable[[int], Mapping[str, Any]], result_file: Path,
                   markdown: Callable[[dict[str, Any]], list[str]]) -> None:
    """The whole run of a script timing its ``cases`` both ways: its command line (``both_ways_arguments``); in a
    case's own process, ``one_case(case, reps, other_way)`` printed; else ``measure(reps)``'s parts (in this
    process), the cases alternating (``alternating_runs``), and the result written with ``markdown``."""
    args = both_ways_arguments(doc.splitlines()[0], cases, flag, reps_help)
    if args.case:
        print_case(one_case(args.case, args.reps, args.other_way))
        return
    measured = measure(args.reps)
    runs = alternating_runs(script, args)
    result = {"command": args.command, "settings": {"reps": args.reps, "rounds": args.rounds}, "machine": machine(),
              **measured, "runs": runs}
    write_result(result_file, result, markdown(result))


def alternating_call_medians(calls: Mapping[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """The median milliseconds of each of ``calls`` (keyed ``<name>_ms``) over ``reps`` x 10 rounds, every round
    calling each once in turn, after 2 rounds of warm-up."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(reps * 10 + 2):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    return {f"{name}_ms": 1e3 * statistics.median(ts) for name, ts in times.items()}


def alternating_pairs(step: Callable[[bool, int], tuple[float, Sequence[Any]]], pairs: int,
                      names: tuple[str, str]) -> dict[str, Any]:
    """Two ways of one computation timed in one process, pair after pair: ``step(way, pair)`` runs the first way
    (``way`` True) or the second and returns (seconds, the tensors it computed); each way runs first in half the
    pairs, after one warm-up of each. -> times per way (keyed by ``names``), the pairs' ratios (first / second),
    medians, and whether the two ways computed the same tensors bit for bit in every pair."""
    import torch

    step(True, 0), step(False, 0)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    same = True
    for i in range(pairs):
        got = {}
        for way in ((True, False) if i % 2 == 0 else (False, True)):
            seconds, got[way] = step(way, i + 1)
            times[names[0] if way else names[1]].append(seconds)
        same = same and len(got[True]) == len(got[False]) and all(
            torch.equal(a, b) for a, b in zip(got[True], got[False]))
    ratios = [a / b for a, b in zip(times[names[0]], times[names[1]])]
    return {"times_s": times, "ratios": ratios, "same_bits": same, "median_ratio": statistics.median(ratios),
            "median_s": {name: statistics.median(ts) for name, ts in times.items()}}


def alternating_pairs_cells(result: Mapping[str, Any]) -> str:
    """An ``alternating_pairs`` result's cells of a markdown row: the second way's median (s), the first way's, the
    median of the pairs' ratios (first / second) with their range, and whether the bits were the same."""
    first, second = result["median_s"]
    ratios = result["ratios"]
    return (f"{result['median_s'][second]:.3f} | {result['median_s'][first]:.3f} | {result['median_ratio']:.3f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f}) | {'yes' if result['same_bits'] else 'NO'} |")


def paper_supernet(space: str, relaxation: str, batch: int) -> tuple[Any, list[Any], list[Any]]:
    """A search supernet at its paper search size in training mode, channels-last (DARTS space: 8 cells, C=16;
    ``space="nb201"``: C=16, N=5), seeded with 0, and two batches of ``batch`` 3x32x32 images and labels: (network,
    [x_0, x_1], [y_0, y_1]), what unit_weights.py and normalised_products.py time their steps on."""
    import torch

    torch.manual_seed(0)
    if space == "nb201":
        from darts_lite.spaces.nb201 import SearchNetwork

        net = SearchNetwork(C=16, N=5, num_classes=10, in_channels=3, relaxation=relaxation)
    else:
        from darts_lite.spaces.darts.search import SearchNetwork

        net = SearchNetwork(C=16, layers=8, num_classes=10, in_channels=3, relaxation=relaxation)
    net = net.train().to(memory_format=torch.channels_last)
    xs = [torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last) for _ in range(2)]
    ys = [torch.randint(0, 10, (batch,)) for _ in range(2)]
    return net, xs, ys


def alternating_cases_main(doc: str, script: str, cases: Mapping[str, str],
                           measure: Callable[[str, int, int], dict[str, Any]], result_file: Path, title: str,
                           setting: str, header: str, note: str) -> None:
    """The command line and the result file of a script timing two ways of search steps with ``alternating_pairs``
    (unit_weights.py, normalised_products.py): ``--cases`` (keys of ``cases``, their row labels), ``--pairs``,
    ``--batch``; ``measure(case, pairs, batch)`` gives a row (``alternating_pairs``'s result with its ``case``). The
    markdown: ``title``, the machine, the command with ``setting`` after it, a table whose ``header`` names the two
    ways' columns, their ratio's and the bits' (``alternating_pairs_cells``), then ``note``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(cases))
    p.add_argument("--pairs", type=int, default=12)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    unknown = [c for c in args.cases.split(",") if c not in cases]
    if unknown:
        p.error(f"unknown cases {unknown} (cases: {', '.join(cases)})")
    rows = [measure(case, args.pairs, args.batch) for case in args.cases.split(",")]
    result = {"machine": machine(), "settings": vars(args), "rows": rows}
    lines = [
        f"# {title}",
        "",
        f"Machine: {machine_text(result['machine'])}.",
        f"Command: `python experiments/{script} --cases {args.cases} --pairs {args.pairs} --batch {args.batch}` "
        f"({setting}).",
        "",
        f"| step | {header} | same bits |",
        "| --- | ---: | ---: | ---: | --- |",
        *(f"| {cases[r['case']]} | {alternating_pairs_cells(r)}" for r in rows),
        "",
        note,
    ]
    write_result(result_file, result, lines)


def forward_backward_cells(row: Mapping[str, Any]) -> str:
    """A per-call row's last markdown cells: forward and backward, PyTorch's / compiled ms and speed-up, and whether
    the bits agreed (``alternating_call_medians`` of the calls pytorch_ and compiled_ forward and backward)."""
    return (f"{row['pytorch_forward_ms']:.3f} / {row['compiled_forward_ms']:.3f} | "
            f"{row['pytorch_forward_ms'] / row['compiled_forward_ms']:.1f}x | "
            f"{row['pytorch_backward_ms']:.3f} / {row['compiled_backward_ms']:.3f} | "
            f"{row['pytorch_backward_ms'] / row['compiled_backward_ms']:.1f}x | "
            f"{'yes' if row['same_bits'] else 'no'} |")

# ---- result files ----------------------------------------------------------------------------------------------------
def write_result(markdown_file: Path, result: Mapping[str, Any], markdown: Sequence[str], indent: int = 2,
                 echo: bool = True) -> Path:
    """Writes ``result`` as JSON beside ``markdown_file`` (the same name, suffix .json) and ``markdown``, the lines
    made from that same record, into ``markdown_file``; prints the markdown when ``echo``. Returns the JSON file.

    Every number of the markdown is to come from ``result``, so that the two cannot disagree and a figure of the
    docs can be taken from the JSON (experiments/figures.py). Values JSON does not know (paths) are written as text.
    """
    markdown_file = Path(markdown_file)
    json_file = markdown_file.with_suffix(".json")
    markdown_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(result, indent=indent, default=str) + "\n")
    text = "\n".join(markdown) + "\n"
    markdown_file.write_text(text)
    if echo:
        print(text, end="", flush=True)
    return json_file
