"""darts_lite's search steps beside the papers' own code, in one run: time and peak memory per step.

The references are checkouts in a scratch folder, run here on the CPU and never imported by darts_lite:

    git clone https://github.com/quark0/darts /tmp/refs/darts                 # DARTS (f276dd3)
    git clone https://github.com/yuhuixu1993/PC-DARTS /tmp/refs/PC-DARTS      # PC-DARTS (b74702f)
    git clone https://github.com/D-X-Y/AutoDL-Projects /tmp/refs/AutoDL       # GDAS, NAS-Bench-201 DARTS (f46486e)
    python experiments/references_side_by_side.py --darts /tmp/refs/darts --pc-darts /tmp/refs/PC-DARTS \\
        --autodl /tmp/refs/AutoDL                                            # 19-34 min on 2 cores

Their code is run as it is, but for ``.cuda()``: in a reference's process ``Tensor.cuda`` and ``Module.cuda`` return
their object unchanged, so that the code runs on the CPU (the only change). Each reference step is its training
script's loop body: DARTS and PC-DARTS, ``architect.step`` (first order, or unrolled for second-order DARTS) then
the weight step (gradient norm clipped at 5); AutoDL's NAS-Bench-201 scripts (GDAS, DARTS-V1), the weight step then
the architecture step. darts_lite's step is ``SearchModule.training_step`` under a Trainer, with the same step
order as the reference. Sizes: the DARTS paper's search (8 cells, C=16) and NAS-Bench-201's (C=16, 5 cells per
stage), batch 64 of 3x32x32, 10 classes, the same two batches alternating.

Each case runs in a process of its own: the median time of ``--reps`` steps after ``--warmup``, and the peak as the
process's max RSS growth over the steps from just before the first one (network, optimisers and batches built).
darts_lite runs before and after each reference run; ``--rounds R`` runs each reference R times between R+1 runs of
darts_lite (on a noisy machine a step's time moves by a third from one process to the next; the table then shows
the median of the 2R ratios of a darts_lite run to the reference run beside it):

    python experiments/references_side_by_side.py --autodl /tmp/refs/AutoDL --cases gdas,nb201_gdas --rounds 3 \
        --reps 5 --name references_gdas                                      # about 4 min on 2 cores

Writes experiments/results/references_side_by_side.json and .md.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import RESULTS, machine, machine_text, print_case, run_case, span, tree_commit, write_result

# case -> (label, darts_lite's settings, the reference: repository key and how it is built)
CASES = {
    "darts1": ("DARTS 1st order", dict(space="darts", relaxation="softmax", order=1), ("darts", 1)),
    "darts2": ("DARTS 2nd order", dict(space="darts", relaxation="softmax", order=2), ("darts", 2)),
    "gdas": ("GDAS, DARTS space", dict(space="darts", relaxation="gumbel", order=1, step_order="weights_first"),
             ("autodl", "nasnet_gdas")),
    "pc_darts": ("PC-DARTS (K=4, edge normalization)",
                 dict(space="darts", relaxation="softmax", order=1, partial_channels=4, edge_normalization=True),
                 ("pc_darts", 1)),
    "nb201_darts1": ("NB201 DARTS 1st order", dict(space="nb201", relaxation="softmax", order=1,
                                                   step_order="weights_first"), ("autodl", "DARTS-V1")),
    "nb201_gdas": ("NB201 GDAS", dict(space="nb201", relaxation="gumbel", order=1, step_order="weights_first"),
                   ("autodl", "GDAS")),
}
BATCH, SIZE, CLASSES = 64, 32, 10


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batches():
    import torch

    torch.manual_seed(0)
    return [(torch.randn(BATCH, 3, SIZE, SIZE), torch.randint(0, CLASSES, (BATCH,))) for _ in range(4)]


def _time_steps(step, reps: int, warmup: int) -> dict:
    """The steps timed from a baseline taken just before the first: median time, max RSS growth."""
    base = _rss_mib()
    times = []
    for i in range(warmup + reps):
        start = time.perf_counter()
        step(i)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times), "peak_mib": _rss_mib() - base, "times_s": times}


# ---- darts_lite ----------------------------------------------------------------------------------------------------
def ours(case: str, reps: int, warmup: int, beside: Callable[[int], None] | None = None) -> dict:
    """darts_lite's step of ``case`` under a Trainer: median time, peak (max RSS growth), the times. ``beside``: a step
    (the reference's, ``reference_step``) run and timed beside each of darts_lite's in this process, before it in odd
    steps and after it in even ones (its times in ``beside_s``; the peak then counts both)."""
    import pytorch_lightning as pl
    import torch

    from darts_lite import SearchModule

    _, s, _ = CASES[case]
    torch.manual_seed(0)
    if s["space"] == "darts":
        network = dict(C=16, layers=8, num_classes=CLASSES, in_channels=3, partial_channels=s.get("partial_channels", 1),
                       edge_normalization=s.get("edge_normalization", False))
    else:
        network = dict(_target_="darts_lite.spaces.nb201.SearchNetwork", C=16, N=5, num_classes=CLASSES, in_channels=3)
    module = SearchModule(network=network, relaxation=s["relaxation"], order=s["order"],
                          step_order=s.get("step_order", "arch_first"))
    batches = _batches()

    class Batches:
        def __len__(self):
            return warmup + reps

        def __iter__(self):
            for i in range(warmup + reps):
                yield batches[(2 * i) % 4], batches[(2 * i + 1) % 4]

    class Timer(pl.Callback):
        def __init__(self):
            self.times, self.beside, self.base = [], [], None

        def run_beside(self, i):
            start = time.perf_counter()
            beside(i)
            self.beside.append(time.perf_counter() - start)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.base is None:
                self.base = _rss_mib()
            if beside is not None and batch_idx % 2:
                self.run_beside(batch_idx)
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter() - self.t0)
            if beside is not None and not batch_idx % 2:
                self.run_beside(batch_idx)

    timer = Timer()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[timer])
    trainer.fit(module, train_dataloaders=Batches())
    times = timer.times[warmup:]
    out = {"step_s": statistics.median(times), "peak_mib": _rss_mib() - timer.base, "times_s": times}
    return out if beside is None else out | {"beside_s": timer.beside[warmup:]}


# ---- the references ------------------------------------------------------------------------------------------------
def _cpu_only() -> None:
    """``.cuda()`` returns its tensor or module unchanged: the references' only change, so that they run here."""
    import torch

    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self


def _darts_family(folder: Path, order: int) -> Callable[[int], None]:
    """quark0/darts (cnn/) or PC-DARTS: their Network and Architect, the loop body of their train_search.py."""
    import torch
    from torch import nn

    sys.path.insert(0, str(folder))
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import architect
    import model_search

    torch.manual_seed(0)
    criterion = nn.CrossEntropyLoss()
    model = model_search.Network(16, CLASSES, 8, criterion)
    optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    args = types.SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4, arch_weight_decay=1e-3)
    arch = architect.Architect(model, args)
    batches = _batches()

    def step(i: int) -> None:
        (x, y), (xv, yv) = batches[(2 * i) % 4], batches[(2 * i + 1) % 4]
        model.train()
        arch.step(x, y, xv, yv, 0.025, optimizer, unrolled=order == 2)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5)
        optimizer.step()

    return step


def _autodl(folder: Path, kind: str) -> Callable[[int], None]:
    """AutoDL-Projects' supernets and the loop body of its NAS-Bench-201 scripts (weights, then architecture)."""
    import torch
    from torch import nn

    sys.path.insert(0, str(folder))
    from xautodl.models.cell_operations import SearchSpaceNames
    from xautodl.models.cell_searchs import NASNetworkGDAS, TinyNetworkDarts, TinyNetworkGDAS

    torch.manual_seed(0)
    if kind == "nasnet_gdas":  # the DARTS space: 3 stages of N=2 cells and 2 reductions (8 cells)
        net = NASNetworkGDAS(16, 2, 4, 4, 3, CLASSES, SearchSpaceNames["darts"], False, True)
    else:
        cls = TinyNetworkGDAS if kind == "GDAS" else TinyNetworkDarts
        net = cls(16, 5, 4, CLASSES, SearchSpaceNames["nas-bench-201"], False, True)
    if hasattr(net, "set_tau"):
        net.set_tau(10)
    w_opt = torch.optim.SGD(net.get_weights(), 0.025, momentum=0.9, weight_decay=5e-4, nesterov=True)
    a_opt = torch.optim.Adam(net.get_alphas(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    criterion = nn.CrossEntropyLoss()
    batches = _batches()
    net.train()

    def step(i: int) -> None:
        (x, y), (xa, ya) = batches[(2 * i) % 4], batches[(2 * i + 1) % 4]
        w_opt.zero_grad()
        _, logits = net(x)
        criterion(logits, y).backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5)
        w_opt.step()
        a_opt.zero_grad()
        _, logits = net(xa)
        criterion(logits, ya).backward()
        a_opt.step()

    return step


def reference_step(case: str, folders: dict) -> Callable[[int], None]:
    """The reference's step of ``case`` (``step(i)``: the i-th, on the batches darts_lite's i-th step reads), built
    from its checkout in ``folders``, its ``.cuda()`` calls made no-ops in this process."""
    _cpu_only()
    repo, how = CASES[case][2]
    if repo == "autodl":
        return _autodl(folders["autodl"], how)
    return _darts_family(folders["darts"] / "cnn" if repo == "darts" else folders["pc_darts"], how)


def reference(case: str, folders: dict, reps: int, warmup: int) -> dict:
    return _time_steps(reference_step(case, folders), reps, warmup)


def checkout_options(p: argparse.ArgumentParser) -> None:
    """The references' checkouts on the command line: --darts, --pc-darts, --autodl (``folders(args)``)."""
    p.add_argument("--darts", type=Path, help="a checkout of github.com/quark0/darts")
    p.add_argument("--pc-darts", type=Path, help="a checkout of github.com/yuhuixu1993/PC-DARTS")
    p.add_argument("--autodl", type=Path, help="a checkout of github.com/D-X-Y/AutoDL-Projects")


def folders(args: argparse.Namespace) -> dict[str, Path | None]:
    return {"darts": args.darts, "pc_darts": args.pc_darts, "autodl": args.autodl}


def checked_cases(names: str, checkouts: dict[str, Path | None]) -> tuple[list[str], list[Any]]:
    """The cases named (comma-separated; exits naming unknown ones, or the checkouts they need and were not given),
    and the command-line options that pass ``checkouts`` on to a case's process."""
    cases = names.split(",")
    unknown = [c for c in cases if c not in CASES]
    missing = sorted({CASES[c][2][0] for c in cases if c in CASES and checkouts[CASES[c][2][0]] is None})
    if unknown or missing:
        sys.exit(f"unknown cases {unknown} (cases: {', '.join(CASES)})" if unknown else
                 f"the cases need --{', --'.join(m.replace('_', '-') for m in missing)} (a checkout of each)")
    options: list[Any] = []
    for key, folder in checkouts.items():
        if folder is not None:
            options += [f"--{key.replace('_', '-')}", folder]
    return cases, options


def record(args: argparse.Namespace, checkouts: dict[str, Path | None], rows: list[dict]) -> dict[str, Any]:
    """A run's result: the machine, the references' commits, the settings, the cases' rows."""
    repos = {key: tree_commit(folder) for key, folder in checkouts.items() if folder is not None}
    return {"machine": machine(), "reference_commits": repos, "settings": vars(args) | {"batch": BATCH}, "cases": rows}


def machine_and_references(result: dict[str, Any]) -> str:
    """The markdown line naming the machine and the references' commits of a ``record``."""
    return (f"Machine: {machine_text(result['machine'])}. References: "
            + ", ".join(f"{k} {v}" for k, v in result["reference_commits"].items())
            + " (run on the CPU, unchanged but for `.cuda()`).")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    checkout_options(p)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="runs of each reference, darts_lite run before and after "
                   "each (a noisy machine: the ratios of every run to its neighbours, and their median)")
    p.add_argument("--name", default="references_side_by_side")
    p.add_argument("--run", help=argparse.SUPPRESS)  # internal: SIDE:CASE in this process
    args = p.parse_args()
    checkouts = folders(args)
    if args.run:
        side, case = args.run.split(":")
        print_case(ours(case, args.reps, args.warmup) if side == "ours"
                   else reference(case, checkouts, args.reps, args.warmup))
        return
    cases, options = checked_cases(args.cases, checkouts)
    common = [__file__, "--reps", args.reps, "--warmup", args.warmup, *options]
    rows = []
    for case in cases:  # darts_lite before and after each run of its reference, so that a drifting machine shows
        print(f"{case} ...", flush=True)
        ours_runs, references = [run_case([*common, "--run", f"ours:{case}"])], []
        for _ in range(args.rounds):
            references.append(run_case([*common, "--run", f"reference:{case}"]))
            ours_runs.append(run_case([*common, "--run", f"ours:{case}"]))
        rows.append({"case": case, "label": CASES[case][0], "ours": ours_runs, "references": references})
    result = record(args, checkouts, rows)

    # the command as run, but for the checkouts' folders (the papers' commits are listed instead)
    options = "".join(f" --{key} {value}" for key, value in (("cases", args.cases), ("rounds", args.rounds),
                                                            ("name", args.name))
                      if value != p.get_default(key))
    lines = [
        "# darts_lite beside the papers' code",
        "",
        machine_and_references(result),
        f"Command: `python experiments/references_side_by_side.py{options}` (batch {BATCH}, 3x{SIZE}x{SIZE}; median of "
        f"{args.reps} steps after {args.warmup} warm-up; memory: max RSS growth over the steps; darts_lite measured "
        "before and after each run of its reference; each ratio: a darts_lite run's to the reference run beside it).",
        "",
        "| step | darts_lite s / peak MiB | reference s / peak MiB | time ratio | memory ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        o, refs = r["ours"], r["references"]
        # each reference run against darts_lite's runs just before and just after it
        pairs = [(mine, ref) for i, ref in enumerate(refs) for mine in o[i:i + 2]]
        times = [mine["step_s"] / ref["step_s"] for mine, ref in pairs]
        memory = [mine["peak_mib"] / ref["peak_mib"] for mine, ref in pairs]
        time_text = span(times, ".2f") + (f" (median {statistics.median(times):.2f})" if len(refs) > 1 else "")
        lines.append(f"| {r['label']} | {span([x['step_s'] for x in o], '.2f')} / "
                     f"{span([x['peak_mib'] for x in o], ',.0f')} | {span([x['step_s'] for x in refs], '.2f')} / "
                     f"{span([x['peak_mib'] for x in refs], ',.0f')} | {time_text} | {span(memory, '.2f')} |")
    write_result(RESULTS / f"{args.name}.md", result, lines)


if __name__ == "__main__":
    main()
