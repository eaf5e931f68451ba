"""The proxy-ranking study: how far a reduced training setting keeps the ranking of architectures.

N architectures sampled from the space are each evaluated under a reference setting and under every proxy
setting; per proxy, the Spearman and Kendall rank correlations of its accuracies with the reference's (with
bootstrap confidence intervals over the architectures) and what it saves (measured wall time, and training
FLOPs = forward FLOPs x images x epochs). ``task=proxy_study`` writes to the run folder:

    proxy_study.csv   one row per proxy setting: setting, spearman, kendall, speedup, then the intervals and sizes
    proxy_study.md    the same as a table, with the machine and what was measured
    proxy_study.png   rank correlation against speed-up, one labelled point per setting
    architectures.txt the sampled genotypes, one per line (their space's text)
    archive.sqlite    every evaluation (unless archive=PATH names another)
    zero_cost.csv     with zero-cost proxies among the settings (``zc_synflow``, ...): every architecture's scores

The architectures come from the space of the space group (darts or nb201), their evaluation networks from the train
group. Zero-cost proxies score the untrained networks instead of training them (``zero_cost_study``). On the
NAS-Bench-201 space ``study.reference=benchmark`` takes the reference accuracies from the NATS-Bench file of
``benchmark.path`` (the first of ``benchmark.datasets``, ``benchmark.hp``'s training) instead of training: a study of
zero-cost proxies over hundreds of cells then trains nothing.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import platform
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from omegaconf import DictConfig
from torchmetrics.functional import kendall_rank_corrcoef, spearman_corrcoef

from ..errors import ConfigError
from ..schema import Allowed, Ge, Hint, MinLen, node_problems
from ..spaces import get_space
from ..torchfiles import open_atomically, write_text_atomically
from . import build, zero_cost_study
from .archive import genotype_hash
from .evaluator import Failures, Request, report_failures, stopped_on_failures
from .settings import Base, Setting, resolve_all

MIN_ARCHITECTURES = 3  # a rank correlation of two points is always +-1
BENCHMARK = "benchmark"  # study.reference: the NATS-Bench accuracies of benchmark.path
CSV_COLUMNS = ("setting", "spearman", "kendall", "speedup", "flops_speedup", "spearman_low", "spearman_high",
               "kendall_low", "kendall_high", "architectures", "mean_accuracy", "wall_time_s", "channels", "layers",
               "resolution", "sample_ratio", "epochs", "batch_size", "lr")


def rank_correlations(proxy: Sequence[float], reference: Sequence[float], bootstrap: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict[str, float]:
    """Spearman and Kendall (tau-b) correlation of two accuracy lists over the same architectures, and a
    percentile bootstrap interval of each (architectures resampled with replacement; resamples without any
    spread in either list are skipped). NaN where it is undefined."""
    x = torch.tensor(list(proxy), dtype=torch.float64)
    y = torch.tensor(list(reference), dtype=torch.float64)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} proxy accuracies for {len(y)} reference ones")
    out = {"spearman": _spearman(x, y), "kendall": _kendall(x, y)}
    g = torch.Generator().manual_seed(seed)
    draws: dict[str, list[float]] = {"spearman": [], "kendall": []}
    for _ in range(bootstrap):
        idx = torch.randint(0, len(x), (len(x),), generator=g)
        xs, ys = x[idx], y[idx]
        if xs.unique().numel() < 2 or ys.unique().numel() < 2:
            continue
        draws["spearman"].append(_spearman(xs, ys))
        draws["kendall"].append(_kendall(xs, ys))
    tail = (1 - level) / 2
    for name, values in draws.items():
        values = [v for v in values if not math.isnan(v)]
        if values:
            q = torch.tensor(values, dtype=torch.float64).quantile(torch.tensor([tail, 1 - tail], dtype=torch.float64))
            out[f"{name}_low"], out[f"{name}_high"] = float(q[0]), float(q[1])
        else:
            out[f"{name}_low"] = out[f"{name}_high"] = float("nan")
    return out


def _spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    if x.unique().numel() < 2 or y.unique().numel() < 2:
        return float("nan")
    return float(spearman_corrcoef(x, y))


def _kendall(x: torch.Tensor, y: torch.Tensor) -> float:
    if x.unique().numel() < 2 or y.unique().numel() < 2:
        return float("nan")
    return float(kendall_rank_corrcoef(x, y, variant="b"))


def sample_architectures(space_name: str, n: int, seed: int) -> list[Any]:
    """``n`` distinct genotypes drawn from the space with a seeded generator (same seed, same list)."""
    space = get_space(space_name)
    rng = random.Random(seed)
    out, seen = [], set()
    for _ in range(100 * n):
        g = space.sample(rng)
        key = genotype_hash(g)
        if key not in seen:
            seen.add(key)
            out.append(g)
            if len(out) == n:
                return out
    raise ConfigError(f"study.architectures={n}: the space gave only {len(out)} distinct genotypes")


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """The study group of task=proxy_study (conf/experiment/proxy_study*.yaml hold the defaults); the settings are
    resolved against the base recipe afterwards."""

    architectures: Annotated[int, Ge(MIN_ARCHITECTURES), Hint(f"a rank correlation needs at least {MIN_ARCHITECTURES} "
                                                               "architectures")]
    reference: Annotated[Any, Allowed("a setting name or node")]
    proxies: Annotated[list[Any], MinLen(1), Allowed("a non-empty list of proxy settings, e.g. [c4r4s0e60]")]
    metric: Literal["val_acc", "test_acc"]
    bootstrap: Annotated[int, Ge(0), Hint("0 = no intervals")]
    repeat: bool = False


def check(cfg: DictConfig) -> tuple[Base, Setting, list[Setting], list[str]]:
    """Every study key, before anything is trained; returns the base, the resolved reference and training proxy
    settings, and the zero-cost proxies' names."""
    build.check_common(cfg)
    st = cfg.get("study")
    if st is None:
        raise ConfigError("task=proxy_study needs a study group: use +experiment=proxy_study or proxy_study_quick")
    problems = node_problems(st, "study.", target=StudySettings)
    if problems:
        raise ConfigError("; ".join(problems))
    proxies = list(st.get("proxies"))
    zero_cost = zero_cost_study.zero_cost_names(proxies)
    if zero_cost_study.is_zero_cost(st.reference):
        raise ConfigError(f"study.reference={st.reference}: the reference is a training setting (a zero-cost proxy "
                          "is judged against it)")
    build.check_space(cfg, "study samples")
    base = build.base(cfg)
    training = [p for p in proxies if not zero_cost_study.is_zero_cost(p)]
    if st.reference == BENCHMARK:
        reference = benchmark_reference(cfg, base)
        return base, reference, resolve_all(training, base) if training else [], zero_cost
    settings = resolve_all([st.reference, *training], base)
    return base, settings[0], settings[1:], zero_cost


def benchmark_reference(cfg: DictConfig, base: Base) -> Setting:
    """The reference of ``study.reference=benchmark``, checked: the NAS-Bench-201 space, a benchmark file, no repeat.
    As a setting it is the base recipe (the benchmark's network, trained for ``benchmark.hp`` epochs): the size the
    zero-cost proxies score the cells at."""
    from ..lookup import check_benchmark

    if cfg.space.name != "nb201":
        raise ConfigError(f"study.reference=benchmark: the NATS-Bench accuracies cover the nb201 space, not "
                          f"space={cfg.space.name}")
    path = cfg.get("benchmark", {}).get("path")
    if not path:
        raise ConfigError("study.reference=benchmark needs benchmark.path: the NATS-Bench topology file or folder "
                          "(NATS-tss-v1_0-3ffb9-simple)")
    check_benchmark(path)
    if cfg.study.get("repeat"):
        raise ConfigError("study.repeat=true with study.reference=benchmark: the benchmark's accuracy is already the "
                          "mean over its seeds; set study.repeat=false")
    return Setting(BENCHMARK, base.channels, base.layers, base.resolution, 1.0, int(cfg.benchmark.hp), base.batch_size,
                   base.lr)


def benchmark_rows(cfg: DictConfig, genotypes: Sequence[Any]) -> list[dict | None]:
    """Each genotype's NATS-Bench accuracies as an evaluation row (test_acc, val_acc as fractions; no wall time or
    FLOPs: nothing was trained here); None for a cell the file does not hold (left out, as a failed evaluation)."""
    from ..lookup import BenchmarkLookup

    dataset = list(cfg.benchmark.datasets)[0]
    lookup = BenchmarkLookup(cfg.benchmark.path, hp=cfg.benchmark.hp, datasets=[dataset])
    rows: list[dict | None] = []
    for genotype in genotypes:
        found = lookup.lookup(genotype.to_text())
        metrics = {} if found is None else found[1]
        test = metrics.get(f"benchmark/{dataset}_test_acc")
        valid = metrics.get(f"benchmark/{dataset}_valid_acc")
        rows.append(None if test is None else {"test_acc": test / 100, "val_acc": (valid if valid is not None else test) / 100,
                                               "wall_time_s": math.nan, "flops": math.nan})
    return rows


def run_study(cfg: DictConfig) -> dict[str, Any]:
    """Sample, evaluate under every setting (through the archive: nothing is trained twice), correlate, write."""
    from ..run.folder import start_run
    from ..run.loggers import wandb_experiment, wandb_run_ends_with_the_job

    base, reference, proxies, zero_cost = check(cfg)
    data = build.prepare_data(cfg)  # a missing dataset stops the study here, before the archive or run folder is touched
    archive = build.open_archive(cfg)  # a foreign or corrupt file is refused before the run folder is touched
    with contextlib.closing(archive), build.driver_lock(cfg, archive, "proxy_study"):  # one driver per archive
        out_dir = start_run(cfg)
        st = cfg.study
        genotypes = sample_architectures(cfg.space.name, st.architectures, cfg.seed)
        write_text_atomically(out_dir / "architectures.txt", "".join(g.to_text() + "\n" for g in genotypes))
        failures = Failures()
        evaluator = build.evaluator(cfg, archive, data, failures=failures)
        repeat = bool(st.get("repeat", False))
        names = [p.name for p in proxies] + [zero_cost_study.PREFIX + n for n in zero_cost]
        print(f"Proxy study: {len(genotypes)} architectures of the {cfg.space.name} space x {1 + len(proxies) + repeat} "
              f"training settings (reference {reference.name}{' twice' if repeat else ''}; proxies {', '.join(names)}); "
              f"archive {archive.path}", flush=True)
        results: dict[str, list[dict | None]] = {}
        with wandb_run_ends_with_the_job(), stopped_on_failures(out_dir, archive, failures, "proxy_study"):
            run = wandb_experiment(cfg, out_dir, resuming=bool(cfg.get("resume")))
            if reference.name == BENCHMARK:
                results[reference.name] = benchmark_rows(cfg, genotypes)
                print(f"benchmark: {sum(r is not None for r in results[reference.name])} of {len(genotypes)} cells found in "
                      f"{cfg.benchmark.path}", flush=True)
            for setting in (proxies if reference.name == BENCHMARK else (reference, *proxies)):
                requests = [Request(g, setting, setting.epochs) for g in genotypes]
                results[setting.name] = evaluator.evaluate(requests, label=f"{setting.name}: ")
            compared = list(proxies)
            if repeat:  # the reference against itself under the next seed: the most any proxy can keep
                again = dataclasses.replace(reference, name=repeat_label(reference, cfg.seed + 1))
                requests = [Request(g, reference, reference.epochs) for g in genotypes]
                results[again.name] = build.evaluator(cfg, archive, data, seed=cfg.seed + 1, failures=failures).evaluate(
                    requests, label=f"{again.name}: ")
                compared.append(again)
            table = study_table(results, reference, compared, base, st.metric, st.bootstrap, cfg.seed, cfg.evaluation.val_split)
            if zero_cost:
                print(f"zero-cost: scoring {len(genotypes)} untrained networks with {', '.join(zero_cost)}", flush=True)
                scores = zero_cost_study.score_architectures(genotypes, zero_cost, reference, data, _plain(cfg.train), cfg.seed,
                                                             cfg.evaluation.val_split)
                zero_cost_study.write_scores(out_dir / "zero_cost.csv", genotypes, scores)
                table += zero_cost_rows(scores, results[reference.name], reference, st.metric, st.bootstrap, cfg.seed)
            files = write_study(out_dir, table, reference, len(genotypes), st.metric, cfg.space.name)
            archive.export_csv(out_dir / "evaluations.csv")
            if run is not None:
                import wandb

                from ..plots import wandb_image

                run.log({"proxy_study/table": wandb.Table(columns=list(CSV_COLUMNS),
                                                           data=[[r.get(c) for c in CSV_COLUMNS] for r in table]),
                         "proxy_study/plot": wandb_image(study_plot(table, st.metric), caption="rank correlation vs speed-up")})
        archive.close()
        summary = {"task": "proxy_study", "status": "done", "reference": reference.name, "architectures": len(genotypes),
                   "table": table, "files": [str(f) for f in files], "run_dir": str(out_dir),
                   "failures": failures.as_dict(failures.write(out_dir / "failures.csv"))}
        write_text_atomically(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        print((out_dir / "proxy_study.md").read_text())
        report_failures(failures, out_dir, archive)
        print(f"Run folder: {out_dir.resolve()}  (proxy_study.csv, proxy_study.md, proxy_study.png, archive)")
        return summary


def repeat_label(reference: Setting, seed: int) -> str:
    return f"{reference.name}@seed{seed}"


def study_table(results: dict[str, list[dict | None]], reference: Setting, proxies: Sequence[Setting], base: Base,
                metric: str, bootstrap: int, seed: int, val_split: float) -> list[dict[str, Any]]:
    """One row per proxy over the architectures both it and the reference evaluated (failed ones left out)."""
    ref_rows = results[reference.name]
    table = []
    for proxy in proxies:
        pairs = [(p, r) for p, r in zip(results[proxy.name], ref_rows) if p is not None and r is not None]
        row: dict[str, Any] = {"setting": proxy.name, "architectures": len(pairs)}
        if len(pairs) >= MIN_ARCHITECTURES:
            row.update(rank_correlations([p[metric] for p, _ in pairs], [r[metric] for _, r in pairs], bootstrap, seed))
        else:
            row.update({k: float("nan") for k in ("spearman", "kendall", "spearman_low", "spearman_high", "kendall_low",
                                                   "kendall_high")})
        proxy_time = sum(p["wall_time_s"] for p, _ in pairs)
        row["speedup"] = sum(r["wall_time_s"] for _, r in pairs) / proxy_time if proxy_time else float("nan")
        row["flops_speedup"] = (training_flops(reference, base, val_split, [r for _, r in pairs])
                                / max(1, training_flops(proxy, base, val_split, [p for p, _ in pairs])))
        row["mean_accuracy"] = sum(p[metric] for p, _ in pairs) / len(pairs) if pairs else float("nan")
        row["wall_time_s"] = proxy_time
        values = proxy.values()
        row.update({k: values[k] for k in ("channels", "layers", "resolution", "sample_ratio", "epochs", "batch_size", "lr")})
        table.append(row)
    return table


def zero_cost_rows(scores: dict[str, list[zero_cost_study.Scored]], reference_rows: Sequence[dict | None],
                   reference: Setting, metric: str, bootstrap: int, seed: int) -> list[dict[str, Any]]:
    """One study-table row per zero-cost proxy, over the architectures the reference evaluated and the proxy scored
    with a number: its rank correlations with the reference and the speed-up of scoring over training."""
    table = []
    for name, scored in scores.items():
        pairs = [(s, r) for s, r in zip(scored, reference_rows) if r is not None and not math.isnan(s.score)]
        row: dict[str, Any] = {"setting": zero_cost_study.PREFIX + name, "architectures": len(pairs)}
        if len(pairs) >= MIN_ARCHITECTURES:
            row.update(rank_correlations([s.score for s, _ in pairs], [r[metric] for _, r in pairs], bootstrap, seed))
        else:
            row.update({k: float("nan") for k in ("spearman", "kendall", "spearman_low", "spearman_high",
                                                   "kendall_low", "kendall_high")})
        seconds = sum(s.seconds for s, _ in pairs)
        row["speedup"] = sum(r["wall_time_s"] for _, r in pairs) / seconds if seconds else float("nan")
        row["flops_speedup"] = row["mean_accuracy"] = float("nan")
        row["wall_time_s"] = seconds
        values = reference.values()
        row.update({k: values[k] for k in ("channels", "layers", "resolution", "sample_ratio", "batch_size", "lr")})
        row["epochs"] = 0
        table.append(row)
    return table


def training_flops(setting: Setting, base: Base, val_split: float, rows: Sequence[dict]) -> float:
    """Forward FLOPs per image x training images x epochs, summed over the rows (the cost a GPU pays, roughly)."""
    images = setting.images(base) * (1 - val_split)
    return sum(r["flops"] * images * setting.epochs for r in rows)


def study_plot(table: Sequence[dict[str, Any]], metric: str):
    """Spearman against speed-up, one labelled point per setting, its 95% interval as a bar."""
    from matplotlib.ticker import FuncFormatter

    from ..plots import scatter

    rows = [r for r in table if not (math.isnan(r["speedup"]) or math.isnan(r["spearman"]))]
    fig = scatter([(r["speedup"], r["spearman"], r["setting"]) for r in rows],
                  "speed-up over the reference (measured wall time)", f"Spearman rank correlation ({metric})",
                  "Proxy settings: ranking kept vs time saved (bars: 95% intervals)", logx=True, ylim=(-1.05, 1.05))
    ax = fig.axes[0]
    for r in rows:
        if not (math.isnan(r.get("spearman_low", math.nan)) or math.isnan(r.get("spearman_high", math.nan))):
            ax.errorbar([r["speedup"]], [r["spearman"]], yerr=[[r["spearman"] - r["spearman_low"]],
                                                                 [r["spearman_high"] - r["spearman"]]],
                        fmt="none", ecolor="tab:blue", alpha=0.35, capsize=3)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    # 2x and 5x between the decades: 3x and 4x beside them would run into each other
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}x" if v in (2, 5, 20, 50) else ""))
    return fig


def _plain(node: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def write_study(out_dir: Path, table: Sequence[dict[str, Any]], reference: Setting, n: int, metric: str,
                space: str = "darts") -> list[Path]:
    from ..plots import save_figure

    csv_path = out_dir / "proxy_study.csv"
    with open_atomically(csv_path) as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows([{k: _cell(r.get(k)) for k in CSV_COLUMNS} for r in table])
    md = out_dir / "proxy_study.md"
    write_text_atomically(md, study_markdown(table, reference, n, metric, space))
    png = save_figure(study_plot(table, metric), out_dir / "proxy_study.png")
    return [csv_path, md, *png]


_SPACE_NAMES = {"darts": "DARTS", "nb201": "NAS-Bench-201"}


def _cell(v: Any) -> Any:
    return round(v, 6) if isinstance(v, float) and not math.isnan(v) else ("" if isinstance(v, float) else v)


def _share(ratio: float) -> str:
    return "all" if ratio >= 1 else f"{ratio:g} of the"


def study_markdown(table: Sequence[dict[str, Any]], reference: Setting, n: int, metric: str, space: str = "darts") -> str:
    def num(v: float, fmt: str = ".3f") -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    r = reference
    lines = [
        "# Proxy study",
        "",
        f"{n} architectures sampled from the {_SPACE_NAMES.get(space, space)} space; reference setting `{r.name}` "
        f"(C={r.channels}, {r.layers} cells, "
        f"{r.resolution} px, {_share(r.sample_ratio)} training images, {r.epochs} epochs, batch {r.batch_size}, lr {r.lr:g}). "
        + ("Its accuracies are the NATS-Bench file's (the mean over the benchmark's seeds): nothing was trained for "
           "it here, so the speed-ups are n/a. " if r.name == BENCHMARK else "")
        + f"Rank correlations of `{metric}` with the reference's, 95% bootstrap intervals over the architectures; "
        "speed-up: the reference's measured wall time over the proxy's (same architectures), and training FLOPs "
        "(forward FLOPs x images x epochs)."
        + (" Rows `zc_<proxy>`: zero-cost proxies, each untrained network of the reference setting scored from one "
           "training batch; their speed-up is the reference's training time over the scoring time."
           if any(t["setting"].startswith(zero_cost_study.PREFIX) for t in table) else "")
        + (f" The row `{reference.name}@seed<k>` is the reference trained again under the next seed: the rank "
           "consistency of the reference with itself, the most a proxy can reach." if any("@seed" in t["setting"] for t in table)
           else ""),
        "",
        f"Machine: {platform.node() or 'unknown'}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads{', CUDA' if torch.cuda.is_available() else ''}.",
        "",
        "| setting | C | cells | px | samples | epochs | Spearman [95% CI] | Kendall [95% CI] | speed-up (time) "
        "| speed-up (FLOPs) | mean acc | n |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        lines.append(
            f"| {t['setting']} | {t['channels']} | {t['layers']} | {t['resolution']} | {t['sample_ratio']:g} | {t['epochs']} | "
            f"{num(t['spearman'])} [{num(t['spearman_low'], '.2f')}, {num(t['spearman_high'], '.2f')}] | "
            f"{num(t['kendall'])} [{num(t['kendall_low'], '.2f')}, {num(t['kendall_high'], '.2f')}] | "
            f"{num(t['speedup'], '.1f')}x | {num(t['flops_speedup'], '.1f')}x | {num(t['mean_accuracy'], '.4f')} | "
            f"{t['architectures']} |"
        )
    return "\n".join(lines) + "\n"

