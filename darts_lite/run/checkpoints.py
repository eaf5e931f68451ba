"""Checkpoints: written atomically, stamped with how their run was made, and checked before a run continues
from one (same task, space, network and data settings; a file that is not such a checkpoint is refused)."""

from __future__ import annotations

import errno
import logging
import pickle
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ..errors import CheckpointWriteFailed, ConfigError
from ..search import SearchModule
from ..torchfiles import first_line, read_torch_file, replace_atomically, weights_fit
from .folder import is_rank_zero

log = logging.getLogger("darts_lite")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its final name, then renames: a kill mid-write leaves the old one whole."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        save = super().save_checkpoint
        try:
            replace_atomically(path, lambda tmp: save(checkpoint, tmp, storage_options))
        except OSError as e:  # full disk, no permission, file size limit: say so, not a traceback
            raise CheckpointWriteFailed(_write_failure(path, e)) from e


def _write_failure(path: Path, error: OSError) -> str:
    """One message for a checkpoint that could not be written: why, and what is left on disk."""
    why = error.strerror or str(error)
    if error.errno is not None:
        why += f" ({errno.errorcode.get(error.errno, error.errno)})"
    kept = (f"the previous checkpoint {path} is whole (an earlier epoch's)" if path.is_file()
            else f"no checkpoint was written before ({path} does not exist)")
    return f"could not write the checkpoint {path}: {why}; {kept}"


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint to continue from (ckpt_path, or with resume=true the run folder's last.ckpt), checked
    against ``cfg`` before anything is built or written (see ``check_resume``); None for a fresh run."""
    path = _checkpoint_path(cfg)
    if path is not None:
        changed = check_resume(cfg, path)
        if changed and is_rank_zero():
            log.info("Resuming with changed settings (allowed on resume): %s", "; ".join(changed))
    return path


def _checkpoint_path(cfg: DictConfig) -> str | None:
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint file")
        return str(path)
    if cfg.get("resume"):
        last = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(
                f"resume=true: no checkpoint at {last}; pass the run folder to continue, e.g. "
                "`python -m darts_lite <same overrides> resume=true hydra.run.dir=runs/search/<run>`"
            )
        return str(last)
    return None


# ---- what a checkpoint was made by, and whether a run may continue from it ------------------------------------

RECORD_KEY = "darts_lite"
# raised when what a checkpoint holds changes its layout; a checkpoint of another format is refused with the version
# that wrote it. 2 (darts_lite 0.3): networks and relaxations are configs with _target_ in the hyper-parameters
RECORD_FORMAT = 2

# The settings that shape the network, the data or the algorithm are each task's ``fixed`` (darts_lite.run.tasks): a
# run continues from a checkpoint only under the same values. Everything else (epochs, learning rates, logger,
# progress bar, devices, precision, ...) may change on resume and is named in one line.
# inside the groups above, these change nothing a checkpoint holds: where data lives and how it is validated
FREE_INSIDE_FIXED = ("data.root", "data.download", "data.eval_batch_size", "data.val_on")
# never compared: where a run is and how it was started
NOT_SETTINGS = ("run_dir", "resume", "ckpt_path", "hydra")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as {dotted key: value}, without where the run is; for task=train the genotype is its
    text (a name, a file and the text of one cell are the same setting)."""
    from omegaconf import OmegaConf

    from ..train import resolve_genotype

    settings: dict[str, Any] = {}
    for key in cfg:
        if key in NOT_SETTINGS:
            continue
        node = cfg[key]
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        settings.update(_flatten({key: value}))
    if cfg.get("task") == "train" and cfg.get("genotype") is not None:
        settings["genotype"] = resolve_genotype(cfg.genotype).to_text()
    return settings


def _space_name(cfg: DictConfig) -> str:
    group = "space" if cfg.get("task") == "search" else "train"
    return str(cfg.get(group, {}).get("space" if group == "train" else "name", "darts"))


def _task_overrides() -> list[str]:
    """The command-line overrides of this run (none outside the command line), without the resume keys."""
    import re

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task
            if re.sub(r"^[+~]+", "", o).split("=", 1)[0] not in ("resume", "ckpt_path")]


def run_record(cfg: DictConfig) -> dict[str, Any]:
    """What a checkpoint of this run records about how it was made."""
    from .._version import __version__

    return {"format": RECORD_FORMAT, "version": __version__, "task": str(cfg.task), "space": _space_name(cfg),
            "settings": run_settings(cfg), "overrides": _task_overrides(), "run_dir": str(Path(cfg.run_dir).resolve())}


class RunRecord(pl.Callback):
    """Puts the run's record (task, space, settings, overrides, darts_lite version) into every checkpoint."""

    def __init__(self, record: dict[str, Any]):
        self.record = record

    def on_save_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RECORD_KEY] = self.record


def is_fixed(key: str, task: str) -> bool:
    """Whether ``key`` is a setting a run of ``task`` must keep to continue from its checkpoints (its task entry's
    ``fixed`` keys and groups, less ``FREE_INSIDE_FIXED`` and its own ``free`` keys)."""
    from .tasks import TASKS

    entry = TASKS[task] if task in TASKS else None
    if entry is None or key in FREE_INSIDE_FIXED or key in entry.free:
        return False
    return any(key == f or key.startswith(f + ".") for f in entry.fixed)


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is a config value as a run record holds them: None, a bool, number or string, or a list of
    (or a mapping of strings to) such values."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if depth > 20:
        return False
    if isinstance(value, (list, tuple)):
        return all(_plain(v, depth + 1) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())


def record_problem(record: dict[str, Any]) -> str | None:
    """What makes ``record`` (a checkpoint's RECORD_KEY entry, a dict with settings) other than a run record as
    ``run_record`` writes it, or None: a field of another type, settings that are not plain config values. What
    reads a record compares and prints these fields, so a damaged one is refused before."""
    fields = {"task": str, "space": str, "run_dir": str, "version": str}
    wrong = [key for key, kind in fields.items() if key in record and not isinstance(record[key], kind)]
    overrides = record.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        wrong.append("overrides")
    if not _plain(record["settings"]):
        wrong.append("settings")
    return f"its run record ({', '.join(wrong)}) is not of the types darts_lite writes" if wrong else None


def read_record(path: str | Path, how: str) -> dict[str, Any]:
    """The record of a checkpoint file, read without changing it; ConfigError for a file no run can continue
    from (truncated, foreign, no record, a newer format, a record damaged or of other types)."""
    kept = "The file was left as it is."
    if Path(path).is_dir():
        raise ConfigError(f"{how}: a folder, not a checkpoint file. {kept}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a truncated zip, a pickle of other objects, not a torch file at all
        # torch's own message for a pickle it refuses suggests unpickling the file with weights_only=False
        why = "not torch's format, or objects other than tensors and plain values in it" \
            if isinstance(e, pickle.UnpicklingError) else first_line(e)
        raise ConfigError(f"{how}: not a readable checkpoint ({why}); it may be truncated or not a checkpoint "
                          f"at all. {kept}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{how}: not a Lightning checkpoint (no state_dict). {kept}")
    record = checkpoint.get(RECORD_KEY)
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise ConfigError(f"{how}: the file holds no darts_lite run record: it was written by another program or by "
                          "darts_lite before 0.2, so nothing says which network and data it belongs to. Start a new "
                          f"run, or continue it with the darts_lite version that wrote it. {kept}")
    if record.get("format") != RECORD_FORMAT:
        raise ConfigError(f"{how}: the file was written by darts_lite {record.get('version')} (checkpoint format "
                          f"{record.get('format')}); this darts_lite reads format {RECORD_FORMAT}. Continue it with the "
                          f"version that wrote it. {kept}")
    problem = record_problem(record)
    if problem:
        raise ConfigError(f"{how}: {problem}: a damaged checkpoint or one of another program. {kept}")
    return record


def _show(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def changed_settings(record: dict[str, Any], cfg: DictConfig, task: str) -> tuple[list[str], list[str]]:
    """What differs between the settings a checkpoint's ``record`` holds and ``cfg``'s, each "key: old -> new":
    (the settings fixed for ``task``, the ones that may change). The one comparison every continuation makes: a
    resumed search, retraining or Once-for-All phase, and a selection on a finished search."""
    saved, now = dict(record["settings"]), run_settings(cfg)
    # records of 0.2.0 before spaces were plug-ins name the space beside the settings, not inside them
    saved.setdefault("space.name" if record.get("task") == "search" else "train.space", record.get("space", "darts"))
    fixed, free = [], []
    for key in sorted(set(saved) | set(now)):
        old, new = saved.get(key), now.get(key)
        if old != new:
            (fixed if is_fixed(key, task) else free).append(f"{key}: {_show(old)} -> {_show(new)}")
    return fixed, free


def check_resume(cfg: DictConfig, path: str) -> list[str]:
    """Compare the checkpoint at ``path`` with ``cfg`` before anything is built. Raises ConfigError naming every
    setting that would change the network or the data (each with both values) and the command that resumes as
    the run was made; returns the changes that may be made on resume, one "key: old -> new" each."""
    import shlex

    how = f"ckpt_path={path}" if cfg.get("ckpt_path") else f"resume=true ({path})"
    record = read_record(path, how)
    task, space = str(cfg.task), _space_name(cfg)
    if record.get("task") != task:
        raise ConfigError(f"{how}: a checkpoint of a task={record.get('task')} run; task={task} cannot "
                          "continue from it. The file was left as it is.")
    if record.get("space") != space:
        raise ConfigError(f"{how}: a checkpoint of a search in the {record.get('space')!r} space, not "
                          f"{space!r}. The file was left as it is.")
    fixed, free = changed_settings(record, cfg, task)
    if fixed:
        resume = ["resume=true", f"hydra.run.dir={record.get('run_dir')}"] \
            if cfg.get("resume") and not cfg.get("ckpt_path") else [f"ckpt_path={path}"]
        command = shlex.join(["python", "-m", "darts_lite", *record.get("overrides", []), *resume])
        lines = "\n".join(f"  {change.replace(' -> ', ' in the checkpoint, ', 1)} now" for change in fixed)
        raise ConfigError(f"{how}: cannot continue from this checkpoint: these settings differ from the checkpoint's and "
                          f"would change the network or the data:\n{lines}\nResume the run as it was made with:\n  "
                          f"{command}\n(epochs, learning rates, logger, progress bar and devices may change on resume). "
                          "The file was left as it is.")
    return free


def load_search_module(path: str | Path) -> SearchModule:
    """The SearchModule a search checkpoint holds, rebuilt from its own hyper-parameters (space, network) and
    loaded without unpickling code (``weights_only``); on the CPU. ConfigError naming the file for a file that is
    not such a checkpoint, and for hyper-parameters that name something other than a network, relaxation,
    regulariser or stage schedule class to build (what a ``_target_`` names is called: from a file, only those)."""
    path = Path(path).expanduser()
    what = f"search checkpoint {path}"
    checkpoint = read_torch_file(path, what)
    hp = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hp, dict) or not all(isinstance(k, str) for k in hp) or "state_dict" not in checkpoint:
        raise ConfigError(f"{what}: no state_dict and hyper-parameters of a search; not a search's checkpoint")
    target = _foreign_target(hp)
    if target is not None:
        raise ConfigError(f"{what}: its hyper-parameters name {target!r} to build, which is not a network, relaxation, "
                          "regulariser or stage schedule class; a checkpoint of another program, or a damaged one")

    def build() -> SearchModule:
        module = SearchModule(**hp)
        module.restore_progressive(checkpoint)  # a progressive search's later stages have wider ops
        return module

    weights_fit(build, checkpoint["state_dict"], what)
    try:
        module = build()
    except Exception as e:  # hyper-parameters this darts_lite's SearchModule does not take
        raise ConfigError(f"{what}: its hyper-parameters do not build a SearchModule ({first_line(e)})") from None
    module.load_state_dict(checkpoint["state_dict"])
    return module


def _foreign_target(node: Any, depth: int = 0) -> str | None:
    """The first ``_target_`` inside ``node`` (hyper-parameters, nested) that does not name a network (nn.Module),
    relaxation, regulariser or stage schedule class, or None. Importing the module it names is all that is done with it."""
    from ..methods.drnas import Progressive
    from ..registry import load_path
    from ..regularizers import Regularizer
    from ..relax import Relaxation

    if depth > 20:
        return "(nested too deep)"
    if isinstance(node, (list, tuple)):
        return next((t for t in (_foreign_target(v, depth + 1) for v in node) if t is not None), None)
    if not isinstance(node, dict):
        return None
    if "_target_" in node:
        path = node["_target_"]
        try:
            target = load_path(path)
        except Exception:  # not an import path, or nothing there: nothing it names can be built
            return str(path)
        if not (isinstance(target, type) and issubclass(target, (torch.nn.Module, Relaxation, Regularizer, Progressive))):
            return str(path)
    return next((t for t in (_foreign_target(v, depth + 1) for v in node.values()) if t is not None), None)
