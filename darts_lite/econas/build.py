"""The EcoNAS tasks' shared parts from a composed config: the base recipe, the data (prepared once, in the driver),
the archive and its driver lock, the executor and the evaluator, each checked before anything is trained."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from omegaconf import DictConfig, OmegaConf

from ..data import ARCHIVES, prepare_dataset
from ..errors import ConfigError
from ..schema import Ge, Gt, Hint, Le, Lt, node_problems, raise_problems, value_problem
from .archive import Archive, DriverLock
from .evaluator import Evaluator, Failures
from .executor import EXECUTORS, Executor
from .settings import Base, base_from_config


def check_space(cfg: DictConfig, what: str) -> None:
    """The space group's cells are trained by the train group's recipe: both must name the same space. ``what``:
    what the task does with the cells ("samples", "breeds")."""
    train_space = cfg.train.get("space", "darts")
    if cfg.space.name != train_space:
        raise ConfigError(f"space={cfg.space.name} with train.space={train_space}: the {what} cells of the space "
                          f"group and trains them with the train group; choose train={cfg.space.name}")


def base(cfg: DictConfig) -> Base:
    try:
        return base_from_config(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def archive_path(cfg: DictConfig) -> Path:
    """``archive=PATH``, or archive.sqlite in the run folder."""
    path = cfg.get("archive")
    return Path(path).expanduser() if path else Path(cfg.run_dir) / "archive.sqlite"


@dataclass(frozen=True)
class EvaluationSettings:
    """The evaluation group of the EcoNAS tasks: how each evaluation validates and what it keeps."""

    val_split: Annotated[float, Gt(0), Lt(1), Hint("the held-out share of the training images that validates each "
                                                   "epoch")]
    keep_checkpoints: bool = False
    max_failed_share: Annotated[float, Ge(0), Le(1), Hint("the share of a cycle's or a setting's evaluations that may "
                                                          "fail before the run stops (all failing always stops it)")] = 0.5


def check_common(cfg: DictConfig) -> None:
    """The executor and evaluation keys: one ConfigError listing every bad value."""
    problems = []
    ex = cfg.get("executor")
    if ex is None or ex.get("name") not in EXECUTORS:
        problems.append(f"executor={None if ex is None else ex.get('name')!r}: must be one of {', '.join(EXECUTORS)}")
    else:
        why = value_problem(Annotated[int, Ge(1)], ex.get("max_parallel"))
        if why:
            problems.append(f"executor.max_parallel={ex.get('max_parallel')!r}: {why}")
    evaluation = cfg.get("evaluation")
    problems += node_problems(evaluation if evaluation is not None else {}, "evaluation.", target=EvaluationSettings)
    raise_problems(problems)


def open_archive(cfg: DictConfig) -> Archive:
    return Archive(archive_path(cfg))


def driver_lock(cfg: DictConfig, archive: Archive, task: str) -> DriverLock:
    """The driver lock of ``archive`` for this run (``task``, its run folder), to hold while the driver runs
    (``with build.driver_lock(...):``): a second study or search on the same archive is refused at its start, naming
    this one, and one whose archive cannot be written stops there, before anything is trained. Only drivers take it:
    the workers return their rows to the driver, and readers (a surrogate's data, a script) open the archive freely."""
    return DriverLock(archive.path, task=task, run_dir=str(Path(cfg.run_dir).resolve()))


def prepare_data(cfg: DictConfig) -> dict[str, Any]:
    """Make the data group's dataset ready once, here in the driver, before any evaluation is sent (a missing
    dataset stops the run now, with the message a search gives, not once per evaluation), and return the data
    node the workers get: the dataset's folder as an absolute path and no download, so a worker only reads what
    was prepared. A dataset of the user's own (data=dataset) is read once here, so a bad item stops the run too."""
    data: dict[str, Any] = OmegaConf.to_container(cfg.data, resolve=True)
    name = data.get("name")
    if name in ARCHIVES:
        root = Path(str(data.get("root", "data"))).expanduser()
        prepare_dataset(name, root, bool(data.get("download", True)))
        data.update(root=str(root.resolve()), download=False)
    elif name == "folder":  # the workers may start elsewhere: the folder as an absolute path
        data.update(root=str(Path(str(data["root"])).expanduser().resolve()))
    elif name == "dataset":
        from ..schema import build as build_node

        build_node({k: v for k, v in data.items() if k not in ("split", "val_on")}, "data", bilevel=False)
    return data


def build_executor(cfg: DictConfig, folder: Path) -> Executor:
    """The executor group's executor (inline without one), its submitit files under ``folder``."""
    ex: dict[str, Any] = OmegaConf.to_container(cfg.executor, resolve=True) if cfg.get("executor") else {}
    name = ex.pop("name", "inline")
    max_parallel = ex.pop("max_parallel", 1)
    return Executor(name, folder=folder, max_parallel=max_parallel, **ex)


def evaluator(cfg: DictConfig, archive: Archive, data: dict[str, Any], seed: int | None = None,
              failures: Failures | None = None) -> Evaluator:
    """The evaluator over ``archive``: evaluation folders beside it, the executor of the executor group, the
    data node ``prepare_data`` returned, the run's seed unless another is given, ``failures`` shared with the
    run's other evaluators if given."""
    root = archive.path.parent
    executor = build_executor(cfg, root / "submitit")
    train = OmegaConf.to_container(cfg.train, resolve=True)
    trainer = {k: cfg.trainer[k] for k in ("accelerator", "precision", "deterministic") if k in cfg.trainer}
    return Evaluator(archive, executor, data=data, train=train,
                     seed=cfg.seed if seed is None else seed,
                     folder=root / "evaluations", val_split=float(cfg.evaluation.val_split), trainer=trainer,
                     keep_checkpoints=bool(cfg.evaluation.get("keep_checkpoints", False)),
                     max_failed_share=float(cfg.evaluation.get("max_failed_share", 0.5)), failures=failures)
