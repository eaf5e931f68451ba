"""``task=ofa``: progressive shrinking, phase after phase, in one run folder.

    <run>/config.yaml             the resolved config
    <run>/<phase>/                one folder per phase (full, kernel, depth1, depth2, expand1, expand2):
        checkpoints/last.ckpt     the phase's training state, rewritten every epoch; the next phase starts from
                                  the finished one
        metrics.csv, summary.json the phase's metrics (val/acc_max, val/acc_min) and wall time
    <run>/network.pt              the trained network of the last finished phase: {"config", "state_dict", "phase"}
                                  (``load_network`` rebuilds it)
    <run>/summary.json            every phase's final metrics and the wall time
    <run>/specialise/             with ofa.constraint.flops or latency_ms: the sub-network of highest predicted
                                  accuracy within it (subnet.json, subnet.pt, front.png; see specialise.py)

``resume=true`` with the run folder skips finished phases, continues an interrupted one from its last epoch
and starts the rest. ``ofa.phase=NAME`` runs one phase; it needs the finished checkpoints of the phase before
it (and of ``full``, the distillation teacher) in the run folder. ``ofa.phase=specialise`` runs only the
specialisation, on the run folder's network.pt (another budget: another ``ofa.constraint``).
"""

from __future__ import annotations

import json
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from ..config import data_problems
from ..data import ImageDataModule, prepare_dataset
from ..errors import ConfigError
from ..run.build import build_datamodule as build_data
from ..run.checkpoints import changed_settings, read_record
from ..run.folder import FinalMetrics, WallClock, final_metrics, is_rank_zero, saved_callback_state, start_run, write_summary
from ..run.loggers import wandb_run_ends_with_the_job
from ..run.trainer import build_trainer
from ..schema import Allowed, Ge, Gt, Hint, Lt, MaxLen, MinLen, OneOf, node_problems
from ..torchfiles import read_torch_file, weights_fit, write_text_atomically
from .costs import CostTableError, SubnetCosts, read_latency_table
from .network import OFANetwork
from .shrinking import PHASE_NAMES, PHASES, Phase, ShrinkingModule
from .specialise import (
    constraints,
    latency_table_path,
    option_problems,
    saved_network,
    smallest_problems,
    specialise,
)

SPECIALISE = "specialise"  # ofa.phase value: the specialisation alone, on the run folder's network.pt

PER_PHASE = ("epochs", "lr", "subnets")  # lists with one value per phase, in PHASES' order


def _per_phase(item: Any, what: str) -> Any:
    """A list of one ``item`` per phase of PHASES, in their order."""
    n = len(PHASES)
    return Annotated[list[item], MinLen(n), MaxLen(n), Allowed(f"{n} {what}, one per phase ({', '.join(PHASE_NAMES)})")]


@dataclass(frozen=True)
class OFASettings:
    """The ofa group: progressive shrinking's phases and recipe (conf/ofa/*.yaml holds the defaults; network,
    constraint and specialise are nodes of their own: OFANetwork's arguments, Constraint, SpecialiseOptions)."""

    phase: Annotated[Annotated[str, OneOf(PHASE_NAMES, SPECIALISE)] | None,
                     Allowed(f"null (every phase) or one of {', '.join(PHASE_NAMES)}, or {SPECIALISE} (the search alone)")]
    epochs: _per_phase(Annotated[int, Ge(1)], "integers >= 1")
    lr: _per_phase(Annotated[float, Gt(0)], "numbers > 0")
    subnets: _per_phase(Annotated[int, Ge(1)], "integers >= 1 (sub-networks per step)")
    resolutions: Annotated[list[Annotated[int, Ge(4)]], MinLen(1),
                           Allowed("a list of input sides, each an integer >= 4")]
    lr_min: Annotated[float, Ge(0)]
    momentum: Annotated[float, Ge(0)]
    nesterov: bool
    weight_decay: Annotated[float, Ge(0)]
    grad_clip: Annotated[float, Gt(0)] | None
    kd_weight: Annotated[float, Ge(0)]
    bn_calibration: Annotated[int, Ge(1), Hint("training batches that recalibrate BatchNorm before a sub-network is "
                                               "measured")]
    val_split: Annotated[float, Ge(0), Lt(1), Hint("the share of the training images held out for validation (0: "
                                                   "validate on the test split)")]


def build_datamodule(cfg: DictConfig) -> ImageDataModule:
    """The training images (``ofa.val_split`` of them held out for validation), augmented, no cutout."""
    return build_data(cfg, bilevel=False, val_split=float(cfg.ofa.val_split))


def network_options(cfg: DictConfig, dm: ImageDataModule) -> dict[str, Any]:
    """OFANetwork arguments: the ofa.network keys, the data's classes and channels."""
    return dict(OmegaConf.to_container(cfg.ofa.network, resolve=True), num_classes=dm.num_classes,
                in_channels=dm.in_channels)


def check(cfg: DictConfig) -> dict[str, Any]:
    """Every ofa and data key checked before anything is built: one ConfigError listing each bad value.
    Returns the ofa group as plain values."""
    problems = data_problems(cfg)
    if cfg.get("ofa") is None:
        raise ConfigError("task=ofa needs the ofa group: use +experiment=ofa (CIFAR-10, GPU) or +experiment=ofa_quick")
    ofa = OmegaConf.to_container(cfg.ofa, resolve=True)
    problems += node_problems(ofa, "ofa.", target=OFASettings, nested=("network", "constraint", "specialise"))
    problems += node_problems(ofa.get("network") or {}, "ofa.network.", target=OFANetwork,
                              provided=("num_classes", "in_channels"))
    problems += option_problems(ofa)
    if ofa.get("phase") == SPECIALISE and not constraints(ofa):
        problems.append("ofa.phase=specialise: give a budget, ofa.constraint.flops=<M multiply-adds> or "
                        "ofa.constraint.latency_ms=<ms>")
    if cfg.get("ckpt_path"):
        problems.append(f"ckpt_path={cfg.ckpt_path!r}: task=ofa continues its phases with resume=true and "
                        "hydra.run.dir=<the run folder>, not from one checkpoint file")
    if not any(p.startswith(("data.", "ofa.network", "ofa.val_split")) for p in problems):
        net = OFANetwork(**network_options(cfg, build_datamodule(cfg)))
        problems += _budget_problems(cfg, ofa, net, problems)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return ofa


def _budget_problems(cfg: DictConfig, ofa: dict[str, Any], net: OFANetwork, problems: list[str]) -> list[str]:
    """Before any training: a FLOPs budget no sub-network meets (FLOPs do not depend on the weights), and a latency
    table measured on another machine or for another network."""
    if any(p.startswith(("ofa.constraint", "ofa.specialise", "ofa.resolutions")) for p in problems):
        return []
    out = []
    limits = constraints(ofa)
    costs = SubnetCosts(net, ofa["specialise"]["latency_batch"])
    if "flops" in limits:
        out += smallest_problems(costs, ofa["resolutions"], {"flops": limits["flops"]})
    if limits:
        try:
            run_dir = Path(cfg.run_dir)
        except InterpolationResolutionError:  # composed outside a Hydra run (the docs' checks): only a given table can be read
            run_dir = Path("unused-run-folder")
        path = latency_table_path(ofa, run_dir)
        if path.is_file():
            try:
                read_latency_table(path, costs.origin)
            except CostTableError as e:
                out.append(str(e))
    return out


def _phase_dir(out: Path, phase: Phase | str) -> Path:
    return out / (phase if isinstance(phase, str) else phase.name)


def last_checkpoint(out: Path, phase: Phase | str) -> Path:
    return _phase_dir(out, phase) / "checkpoints" / "last.ckpt"


def _epochs_done(path: Path) -> int:
    """Epochs a phase checkpoint holds (it is written at the end of each epoch)."""
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]) + 1


def check_same_run(cfg: DictConfig, path: Path) -> None:
    """ConfigError unless the checkpoint at ``path`` is a task=ofa checkpoint made with the same network, data
    and seed as ``cfg`` (its record says; the file is not changed)."""
    record = read_record(path, f"phase checkpoint {path}")
    if record.get("task") != "ofa":
        raise ConfigError(f"{path}: a checkpoint of a task={record.get('task')} run, not of task=ofa. The file was left "
                          "as it is.")
    fixed, _ = changed_settings(record, cfg, "ofa")
    differ = [change.replace(" -> ", " in the checkpoint, ", 1) + " now" for change in fixed]
    if differ:
        command = shlex.join(["python", "-m", "darts_lite", *record.get("overrides", []), "resume=true",
                              f"hydra.run.dir={record.get('run_dir')}"])
        raise ConfigError(f"{path}: made with other settings that shape the network or the data:\n  " + "\n  ".join(differ)
                          + f"\nContinue the run as it was made with:\n  {command}\nThe file was left as it is.")


def _summary_from_checkpoint(phase: Phase, last: Path) -> dict[str, Any]:
    """The summary of a phase whose last checkpoint holds all its epochs: the metrics and the wall time that
    checkpoint carries (``darts_lite.run.folder.FinalMetrics``, ``WallClock``), as the finished phase reported them."""
    saved = read_torch_file(last, f"checkpoint {last}")
    metrics = saved_callback_state(saved, FinalMetrics).get("metrics")
    wall = saved_callback_state(saved, WallClock).get("elapsed_s")
    return {"phase": phase.name, "status": "done",
            "metrics": {str(k): float(v) for k, v in (metrics if isinstance(metrics, dict) else {}).items()
                        if isinstance(v, (int, float))},
            "wall_time_s": float(wall) if isinstance(wall, (int, float)) else 0.0}


def plan(cfg: DictConfig, ofa: dict[str, Any], out: Path) -> list[tuple[Phase, str]]:
    """(phase, "done" | "resume" | "start") for each phase to run, every checkpoint checked first: nothing is
    written when a phase could not run (a missing predecessor, a folder already used, another run's file)."""
    if ofa["phase"] == SPECIALISE:
        if not (out / "network.pt").is_file():
            raise ConfigError(f"ofa.phase=specialise searches the trained network {out / 'network.pt'}, which does not "
                              "exist: train it first (every phase: ofa.phase=null), with hydra.run.dir pointing at its run "
                              "folder")
        return []
    selected = PHASES if ofa["phase"] is None else (PHASES[PHASE_NAMES.index(ofa["phase"])],)
    steps = []
    for phase in selected:
        last = last_checkpoint(out, phase)
        if not last.is_file():
            steps.append((phase, "start"))
            continue
        if not cfg.get("resume"):
            raise ConfigError(f"{_phase_dir(out, phase)} already holds a checkpoint of phase {phase.name}; continue the run "
                              "with resume=true, or give a new hydra.run.dir")
        check_same_run(cfg, last)
        done = _epochs_done(last) >= ofa["epochs"][PHASES.index(phase)]
        steps.append((phase, "done" if done else "resume"))
    if cfg.get("resume") and all(action == "start" for _, action in steps):
        raise ConfigError(f"resume=true: no phase checkpoint in {out}; pass the run folder to continue, e.g. "
                          "`python -m darts_lite <same overrides> resume=true hydra.run.dir=runs/ofa/<run>`")
    planned = [phase.name for phase, _ in steps]
    for phase, action in steps:
        if action != "start" or phase.name == "full":
            continue
        index = PHASES.index(phase)
        needs = [PHASES[index - 1].name] + (["full"] if ofa["kd_weight"] > 0 else [])
        for name in dict.fromkeys(needs):
            if name in planned[:planned.index(phase.name)]:
                continue  # this run finishes it first
            _check_predecessor(cfg, ofa, out, phase.name, name)
    return steps


def _check_predecessor(cfg: DictConfig, ofa: dict[str, Any], out: Path, phase: str, name: str) -> None:
    path = last_checkpoint(out, name)
    teacher = name == "full" and PHASE_NAMES.index(phase) > 1
    why = (f"ofa.phase={phase} distils from the network of phase full" if teacher
           else f"ofa.phase={phase} starts from the final weights of the phase before it, {name}")
    epochs = ofa["epochs"][PHASE_NAMES.index(name)]
    if not path.is_file():
        found = "does not exist"
    else:
        check_same_run(cfg, path)
        done = _epochs_done(path)
        found = None if done >= epochs else f"holds {done} of the phase's {epochs} epochs: that phase did not finish"
    if found is not None:
        raise ConfigError(
            f"{why}, and {path} {found}. Run phase "
            f"{name} into this folder first (ofa.phase={name} hydra.run.dir={out}; resume=true continues it), or run "
            "every phase in order (ofa.phase=null)")


def _net_weights(path: Path) -> dict[str, torch.Tensor]:
    """The elastic network's weights in a phase checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


def phase_module(ofa: dict[str, Any], network: dict[str, Any], phase: Phase, seed: int) -> ShrinkingModule:
    """The ShrinkingModule of ``phase`` with the ofa group's values for it."""
    i = PHASES.index(phase)
    return ShrinkingModule(network, phase.name, epochs=ofa["epochs"][i], lr=ofa["lr"][i], subnets=ofa["subnets"][i],
                           lr_min=ofa["lr_min"], momentum=ofa["momentum"], nesterov=ofa["nesterov"],
                           weight_decay=ofa["weight_decay"], grad_clip=ofa["grad_clip"], kd_weight=ofa["kd_weight"],
                           resolutions=ofa["resolutions"], bn_calibration=ofa["bn_calibration"], seed=seed)


def save_network(net: OFANetwork, phase: str, path: Path) -> None:
    """The trained elastic network as a file ``load_network`` reads (weights_only loadable)."""
    torch.save({"config": net.config, "state_dict": net.state_dict(), "phase": phase}, path)


def load_network(path: str | Path) -> OFANetwork:
    """The OFANetwork in ``network.pt`` (or in a phase checkpoint's run folder file), in eval mode. ConfigError naming
    the file for any other file (read weights-only; the network is built only after the weights were found to fit
    it)."""
    what = f"Once-for-All network file {path}"
    saved = read_torch_file(path, what)
    missing = [key for key in ("config", "state_dict") if key not in saved]
    if missing:
        raise ConfigError(f"{what}: no {', '.join(missing)}; not a network.pt task=ofa wrote")
    build = saved_network(saved["config"], what)
    weights_fit(build, saved["state_dict"], what)
    net = build()
    net.load_state_dict(saved["state_dict"])
    return net.eval()


def run_ofa(cfg: DictConfig) -> dict[str, Any]:
    """Run the phases ``cfg.ofa`` asks for (all by default) into the run folder; returns the summary."""
    ofa = check(cfg)
    out = Path(cfg.run_dir)
    steps = plan(cfg, ofa, out)
    # every phase reads the data: a missing dataset stops the run before the run folder is touched
    prepare_dataset(cfg.data.name, cfg.data.get("root", "data"), bool(cfg.data.get("download", True)))
    if ofa["phase"] == SPECIALISE:  # the run folder's config.yaml stays the training's
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    else:
        start_run(cfg)
    dm = build_datamodule(cfg)
    network = network_options(cfg, dm)
    summary: dict[str, Any] = {"task": "ofa", "status": "done", "phases": {}, "run_dir": str(out), "wall_time_s": 0.0}
    if not steps and (out / "summary.json").is_file():  # the specialisation alone: the training's summary goes on
        summary = json.loads((out / "summary.json").read_text())
    finished: tuple[str, OFANetwork] | None = None
    for phase, action in steps:
        folder, last = _phase_dir(out, phase), last_checkpoint(out, phase)
        i = PHASES.index(phase)
        if action == "done":
            if (folder / "summary.json").is_file():
                done = json.loads((folder / "summary.json").read_text())
            else:  # killed after the phase's last checkpoint, before its summary: the checkpoint carries both
                done = _summary_from_checkpoint(phase, last)
                if is_rank_zero():
                    write_text_atomically(folder / "summary.json", json.dumps(done, indent=2) + "\n")
            summary["phases"][phase.name] = done.get("metrics", {})
            summary["wall_time_s"] += float(done.get("wall_time_s", 0.0))
            print(f"Phase {phase.name}: finished before, skipped", flush=True)
            continue
        pl.seed_everything(cfg.seed + i, workers=True, verbose=False)  # each phase its own stream, whatever ran before
        module = phase_module(ofa, network, phase, cfg.seed)
        if action == "start" and phase.name != "full":
            previous = PHASES[i - 1]
            teacher = _net_weights(last_checkpoint(out, "full")) if module.teacher is not None else None
            module.start_from(_net_weights(last_checkpoint(out, previous)), teacher,
                              keep=previous.choices(module.net)["expand_list"])
        choices = ", ".join(f"{k.removesuffix('_list')} {v}" for k, v in module.choices.items())
        print(f"Phase {phase.name} ({i + 1}/{len(PHASES)}): {choices}; {ofa['epochs'][i]} epochs, "
              f"{ofa['subnets'][i]} sub-network(s) per step" + (", resumed" if action == "resume" else ""), flush=True)
        clock = WallClock()
        trainer = build_trainer(cfg, folder, [clock], str(last) if action == "resume" else None,
                                max_epochs=ofa["epochs"][i])
        with wandb_run_ends_with_the_job(), warnings.catch_warnings():
            # the teacher is in eval mode on purpose: its BatchNorm statistics stay those of the full network
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
            trainer.fit(module, datamodule=dm, ckpt_path=str(last) if action == "resume" else None)
        metrics = final_metrics(trainer)
        phase_summary = {"phase": phase.name, "status": "done", "metrics": metrics, "wall_time_s": clock.elapsed_s()}
        write_summary(trainer, folder, phase_summary)
        summary["phases"][phase.name] = metrics
        summary["wall_time_s"] += clock.elapsed_s()
        shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("val/")}
        print(f"Phase {phase.name} done: {shown}", flush=True)
        finished = (phase.name, module.net)
    if not is_rank_zero():
        return summary
    if finished is None and steps:  # every phase was done before: the network file is the last phase's
        name = steps[-1][0].name
        finished = (name, OFANetwork(**network))
        finished[1].load_state_dict(_net_weights(last_checkpoint(out, name)))
    if finished is not None:
        save_network(finished[1], finished[0], out / "network.pt")
        summary["network"] = {"file": str(out / "network.pt"), "phase": finished[0]}
    if constraints(ofa):
        network_file = out / "network.pt"
        record = specialise(load_network(network_file), dm, ofa, out, cfg.seed, network_file,
                            log=lambda m: print(m, flush=True))
        summary["specialise"] = {k: record[k] for k in ("setting", "resolution", "flops", "latency_ms", "accuracy",
                                                        "predicted_accuracy", "constraint")}
    write_text_atomically(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"Run folder: {out.resolve()}  (network.pt, summary.json, one folder per phase with its checkpoints and "
          "metrics.csv" + (", specialise/ with the sub-network for the budget" if constraints(ofa) else "") + ")")
    sys.stdout.flush()
    return summary
