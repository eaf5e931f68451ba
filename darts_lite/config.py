"""Checks on a composed config, run before anything is built or trained, and the resolvers the config files use.

Every group that builds an object names it with ``_target_``; its keys are checked against that object's
signature (``darts_lite.schema``): the data module, the supernet (space), the relaxation, the SearchModule, the
collapse guard, the Trainer. What is left here are the rules between groups (a proxy's resolution, the parts that
must fill a batch, second order under fp16, ...). Every problem found is reported at once, each as one line naming
the key, the value and what is allowed, so that a user fixes a config in one go.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from .data import DATASETS, READ_WHEN_BUILT, ImageDataModule, native_size, part_sizes, too_few_samples, train_class_counts
from .errors import ConfigError
from .schema import locate, node_problems, raise_problems, value_problem
from .spaces import get_space, parse_genotype, space_name

__all__ = ["ConfigError", "config_dir", "data_problems", "validate_search", "validate_select", "validate_train"]


def config_dir() -> str:
    """The config tree: `conf/` beside the package in a checkout, else the copy inside the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"darts_lite: no config tree found next to {here}; reinstall the package")


# ---- resolvers: what the config files derive (conf/proxy/econas.yaml, conf/space/*.yaml) -------------------
# Registered when this module is imported, which importing darts_lite does: before Hydra composes.


def _divide(value: int, divisor: int) -> int:
    """${darts_lite.divide:a,b}: a // b, for sizes that a proxy reduces."""
    if value_problem(int, value) or value_problem(int, divisor) or divisor < 1:
        raise ValueError(f"darts_lite.divide takes an integer and a divisor >= 1, got {value!r} and {divisor!r}")
    return value // divisor


def _native_size(*, _parent_: DictConfig) -> int:
    """${darts_lite.native_size:} inside the data group: the side of its dataset's images before any resize."""
    return native_size(_parent_.get("name"), _parent_.get("synthetic_size"))


for _name, _resolver in (("darts_lite.divide", _divide), ("darts_lite.native_size", _native_size),
                         ("darts_lite.space_name", space_name)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


# ---- reading values ------------------------------------------------------------------------------------------
def _get(cfg: DictConfig, key: str) -> Any:
    # a value that cannot be worked out reads as None here; the node checks report why
    return OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=False)


def _node(cfg: DictConfig, key: str) -> Any:
    """The config node at ``key`` (None when there is none)."""
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=False)
    except InterpolationResolutionError:
        return None


def _devices(cfg: DictConfig) -> int:
    """Processes that each take a weight batch per step, when the config says (else 1: "auto" is decided later)."""
    devices, nodes = _get(cfg, "trainer.devices"), _get(cfg, "trainer.num_nodes")
    count = len(devices) if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices) else devices
    count = count if isinstance(count, int) and not isinstance(count, bool) and count >= 1 else 1
    return count * (nodes if isinstance(nodes, int) and not isinstance(nodes, bool) and nodes >= 1 else 1)


def _seed_problems(cfg: DictConfig) -> list[str]:
    why = value_problem(int, _get(cfg, "seed"))
    return [f"seed={_get(cfg, 'seed')!r}: {why}"] if why else []


# ---- groups ----------------------------------------------------------------------------------------------------
# what the tasks give the data module themselves (the seed, how the task uses the images)
DATA_GIVEN = ("seed", "bilevel", "cutout", "val_split")


def data_problems(cfg: DictConfig, split: float | None | str = "retrain") -> list[str]:
    """Every problem of the data group (checked against its ``_target_``), of the proxy's divisors, and of the
    parts a step takes its batches from: with ``split`` a search's weight and architecture parts (pass the split),
    for retraining (the default) the whole training set as one part."""
    problems = _seed_problems(cfg)
    node = _node(cfg, "data")
    if node is None:
        return [*problems, "data: no data group; choose one, e.g. data=digits"]
    problems += node_problems(node, "data.", provided=DATA_GIVEN, nested=("train", "test"))
    if _get(cfg, "data.name") == "dataset":
        for which in ("train", "test"):
            sub = _node(cfg, f"data.{which}")
            problems += (node_problems(sub, f"data.{which}.") if OmegaConf.is_dict(sub) else
                         [f"data.{which}={sub!r}: must be a node whose _target_ builds your Dataset (data=dataset)"])
    problems += _proxy_problems(cfg)
    if not any(p.startswith("data.") for p in problems):
        problems += _part_problems(cfg, None if split == "retrain" else split)
    return problems


def _proxy_problems(cfg: DictConfig) -> list[str]:
    """The divisors of conf/proxy/econas.yaml, and what they make of the dataset's resolution."""
    problems = []
    for key, what in (("proxy.channels_divisor", "space.C"), ("proxy.resolution_divisor", "the dataset's image side")):
        value = _get(cfg, key)
        if value is not None and (value_problem(int, value) or value < 1):
            problems.append(f"{key}={value!r}: must be an integer >= 1 (the proxy divides {what} by it)")
    divisor, resolution, name = _get(cfg, "proxy.resolution_divisor"), _get(cfg, "data.resolution"), _get(cfg, "data.name")
    if (isinstance(divisor, int) and divisor > 1 and isinstance(resolution, int) and resolution < 4
            and name in DATASETS):
        native = native_size(name, _get(cfg, "data.synthetic_size"))
        problems.append(f"proxy.resolution_divisor={divisor}: takes the {native} px {name} images to {resolution} px, "
                        "below the 4 px the network needs; lower it or set data.resolution")
    return problems


def _part_problems(cfg: DictConfig, split: float | None) -> list[str]:
    """The weight (and architecture) parts must each fill a batch. Dataset sizes are known before loading, so
    this fails here and not after the Trainer started."""
    data = {k: _get(cfg, f"data.{k}") for k in ("name", "batch_size", "sample_ratio", "synthetic_samples",
                                                "synthetic_classes")}
    if data["name"] not in DATASETS or data["name"] in READ_WHEN_BUILT:
        return []  # a user's dataset or folder: its size is known once it is read (the data module checks then)
    counts = train_class_counts(data["name"], data["synthetic_samples"] or 512, data["synthetic_classes"] or 4)
    weight, arch = part_sizes(counts, split, data["sample_ratio"])
    problem = too_few_samples(data["name"], weight, arch, data["batch_size"], split, data["sample_ratio"], _devices(cfg))
    return [problem] if problem else []


# what darts_lite gives the Trainer itself, and why a config may not
TRAINER_GIVEN = {
    "max_epochs": "it follows the task's epochs (search.epochs, train.epochs)",
    "callbacks": "darts_lite adds the run's callbacks",
    "logger": "the logger group chooses the loggers",
    "plugins": "darts_lite writes checkpoints atomically",
    "default_root_dir": "the run folder is hydra.run.dir",
    "use_distributed_sampler": "the data modules shard their own batches",
}


def trainer_problems(cfg: DictConfig) -> list[str]:
    """The trainer group: pytorch_lightning.Trainer's arguments (names checked; Lightning checks the values)."""
    node = _node(cfg, "trainer")
    if node is None:
        return ["trainer: no trainer group; choose one, e.g. trainer=default"]
    problems = [f"trainer.{key}: set by darts_lite itself ({why}); remove it" for key, why in TRAINER_GIVEN.items()
                if key in node]
    return problems + node_problems(node, "trainer.", nested=(*TRAINER_GIVEN, "strategy"), types=False)


def logger_problems(cfg: DictConfig) -> list[str]:
    """The logger group: each key one logger's node (``_target_`` and its arguments), or null."""
    from .run.loggers import LOGGER_GIVEN

    nodes = _node(cfg, "logger")
    if nodes is None:
        return []
    if not OmegaConf.is_dict(nodes):
        return [f"logger={nodes!r}: must be a mapping of loggers, e.g. logger=csv or logger=wandb"]
    return [p for name, node in nodes.items() if node is not None
            for p in node_problems(node, f"logger.{name}.", provided=LOGGER_GIVEN)]


def relaxation_problems(cfg: DictConfig) -> list[str]:
    """search.relaxation: a node with the _target_ of a relaxation class and that class's arguments."""
    node = _node(cfg, "search.relaxation")
    if not OmegaConf.is_dict(node):
        return [f"search.relaxation={node!r}: must be a relaxation node, _target_ (its class) and its arguments, e.g. "
                "search.relaxation._target_=darts_lite.relax.SoftmaxRelaxation (search=darts and search=gdas set one)"]
    return node_problems(node, "search.relaxation.")


def regularizer_problems(cfg: DictConfig) -> list[str]:
    """search.regularizer: null, or a node with the _target_ of a regulariser class and that class's arguments."""
    node = _node(cfg, "search.regularizer")
    if node is None:
        return []
    if not OmegaConf.is_dict(node):
        return [f"search.regularizer={node!r}: must be null or a regulariser node, _target_ (its class) and its "
                "arguments, e.g. search.regularizer._target_=darts_lite.methods.beta_darts.BetaDecay"]
    return node_problems(node, "search.regularizer.")


def _guard_problems(cfg: DictConfig) -> list[str]:
    """guard: the collapse guard's node (guard=collapse), or no guard (guard=none: an empty group); a rule that
    could never stop the search in the epochs there are."""
    node = _node(cfg, "guard")
    if node is None or "_target_" not in node:
        return [] if node is None or len(node) == 0 else ["guard: has no _target_ (guard=collapse or guard=none)"]
    problems = node_problems(node, "guard.")
    if problems:
        return problems
    epochs, warmup = _get(cfg, "search.epochs"), _get(cfg, "search.warmup_epochs")
    every, window = node.get("eigen_every", 1), node.get("eigen_window", 5)
    if node.get("stop") == "eigen" and all(isinstance(v, int) and v > 0 for v in (epochs, every, window)) \
            and isinstance(warmup, int):
        measured = max(epochs - warmup, 0) // every
        if measured < 2 * window:
            problems.append(
                f"guard.stop=eigen: the rule compares two windows of guard.eigen_window={window} measurements, and "
                f"{epochs - warmup} epochs after warm-up with guard.eigen_every={every} give {measured}; it could never "
                "stop the search. Lower guard.eigen_window or guard.eigen_every, or search longer"
            )
    return problems


def _resource_problems(cfg: DictConfig) -> list[str]:
    """A latency table measured on another machine (the kind, lambda and target are SearchModule's arguments)."""
    from .tricks.resources import latency_table_problem

    path = _get(cfg, "search.resource_latency_table")
    if _get(cfg, "search.resource") == "latency" and isinstance(path, str) and path and Path(path).exists():
        problem = latency_table_problem(path)
        return [problem] if problem else []
    return []


def _benchmark_problems(cfg: DictConfig) -> list[str]:
    """benchmark.*: a look-up needs the NAS-Bench-201 space, the file and the nats_bench package."""
    path = _get(cfg, "benchmark.path")
    if path is None:
        return []
    problems = []
    if _get(cfg, "space.name") != "nb201":
        problems.append(f"benchmark.path={path}: the benchmark look-up holds NAS-Bench-201 cells; it needs "
                        f"space=nb201, not space={_get(cfg, 'space.name')}")
    from .lookup import BenchmarkLookup, check_benchmark

    try:
        check_benchmark(path)
    except ConfigError as e:
        problems.append(str(e))
    node = {"_target_": "darts_lite.lookup.BenchmarkLookup", **OmegaConf.to_container(_node(cfg, "benchmark"), resolve=True)}
    return problems + node_problems(node, "benchmark.", target=BenchmarkLookup)


# what a search gives its network and its SearchModule itself
NETWORK_GIVEN = ("relaxation", "in_channels", "num_classes")
SEARCH_GIVEN = ("network",)


def validate_search(cfg: DictConfig) -> None:
    """Raise ConfigError listing every invalid value of a search config."""
    problems = data_problems(cfg, split=_get(cfg, "data.split"))
    space = _node(cfg, "space")
    problems += (["space: no space group; choose one, e.g. space=darts"] if space is None
                 else node_problems(space, "space.", provided=NETWORK_GIVEN, nested=("name",)))
    problems += relaxation_problems(cfg) + regularizer_problems(cfg)
    search = _node(cfg, "search")
    problems += (["search: no search group; choose one, e.g. search=darts"] if search is None
                 else node_problems(search, "search.", provided=SEARCH_GIVEN, nested=("relaxation", "regularizer")))
    problems += trainer_problems(cfg) + logger_problems(cfg) + _guard_problems(cfg) + _resource_problems(cfg)
    problems += _benchmark_problems(cfg) + _progressive_problems(cfg)
    precision = str(_get(cfg, "trainer.precision"))
    if _get(cfg, "search.order") == 2 and precision.startswith("16"):
        problems.append(f"trainer.precision={precision!r}: second order takes gradients with torch.autograd.grad, which "
                        "fp16 loss scaling does not cover; use bf16-mixed or 32-true")
    raise_problems(problems)


def _progressive_problems(cfg: DictConfig) -> list[str]:
    """A progressive search (search.progressive) starts from the space's supernet: its K and ops must be the first
    stage's (the node's own values are checked with the search group)."""
    node, space = _node(cfg, "search.progressive"), _node(cfg, "space")
    if node is None or space is None:
        return []
    from .methods.drnas import network_problems
    from .schema import build

    try:
        stages = build(node, "search.progressive")
    except ConfigError:
        return []  # reported with the search group
    return network_problems(stages, OmegaConf.to_container(space, resolve=True), "space.")


# ---- retraining ------------------------------------------------------------------------------------------------
def _image_size(cfg: DictConfig) -> int | None:
    """Side of the images the network will see: data.resolution, else the dataset's own."""
    if _get(cfg, "data.resolution"):
        return _get(cfg, "data.resolution")
    name = _get(cfg, "data.name")
    return native_size(name, _get(cfg, "data.synthetic_size")) if name in DATASETS and name not in READ_WHEN_BUILT else None


def _check(problems: list[str], cfg: DictConfig, key: str, annotation: Any) -> None:
    why = value_problem(annotation, _get(cfg, key))
    if why:
        problems.append(f"{key}={_get(cfg, key)!r}: {why}")


def validate_train(cfg: DictConfig) -> None:
    """Raise ConfigError listing every invalid value of a retraining config."""
    from .train import resolve_genotype

    problems = data_problems(cfg)
    # the recipe's space first: a space of one's own (train.space=my_package.my_space) is registered by it, and its
    # genotypes can be read from then on
    train_space, space = _get(cfg, "train.space"), None
    try:
        space = get_space(train_space)
    except ConfigError as e:
        problems.append(f"train.space={train_space!r}: {e}")
    genotype = None
    if _get(cfg, "genotype") is None:
        problems.append("genotype=None: set genotype=NAME|PATH|TEXT (a published name, genotype.json, run folder)")
    else:
        try:
            genotype = resolve_genotype(_get(cfg, "genotype"))
        except ValueError as e:
            problems.append(str(e))
    if space is not None:
        genotype_space = space if genotype is None else parse_genotype(genotype.to_text())[0]
        if genotype_space is not space:
            problems.append(
                f"genotype={_get(cfg, 'genotype')!r}: a {genotype_space.NAME} cell, and train={space.NAME} retrains "
                f"{space.NAME} cells; add train={genotype_space.NAME} (its space's network and recipe)"
            )
        else:
            train = OmegaConf.to_container(cfg.train, resolve=True)
            problems.extend(space.check_train(train, genotype, _image_size(cfg)))
    from .run.build import train_arguments
    from .schema import parameters

    # the train group: its LightningModule's node (its _target_'s arguments), the evaluation network's keys (checked
    # by the space above) and the task's cutout
    train = OmegaConf.to_container(cfg.train, resolve=True) if OmegaConf.is_dict(cfg.get("train")) else {}
    try:
        problems += node_problems(train_arguments(train), "train.", provided=("genotype", "network"))
    except ImportError as e:
        problems.append(f"train._target_={train.get('_target_')!r}: cannot be imported ({e})")
    _check(problems, cfg, "train.auxiliary", bool)
    _check(problems, cfg, "train.cutout", parameters(ImageDataModule)["cutout"].annotation)
    problems += trainer_problems(cfg) + logger_problems(cfg)
    raise_problems(problems)


def _saved_relaxation_class(hparams: dict[str, Any]) -> Any:
    """The relaxation class a search checkpoint's hyper-parameters name (a registered name or a _target_ node)."""
    from .relax import relaxation_class

    spec = hparams.get("relaxation") or (hparams.get("network") or {}).get("relaxation", "softmax")
    return relaxation_class(spec)


# ---- selection on a finished search ----------------------------------------------------------------------------
def _select_checkpoint_problems(cfg: DictConfig, path: Any) -> list[str]:
    """What stops task=select from using the checkpoint at ckpt_path: missing, unreadable, not a search's, another
    space's, or a search whose data was split differently (selection measures on the search's held-out part)."""
    from .run.checkpoints import changed_settings, read_record

    how = f"ckpt_path={path}"
    if not Path(str(path)).expanduser().is_file():
        return [f"{how}: no such file; task=select needs the checkpoint of a finished search, e.g. "
                "ckpt_path=runs/search/<run>/checkpoints/last.ckpt"]
    try:
        record = read_record(Path(str(path)).expanduser(), how)
    except ConfigError as e:
        return [str(e)]
    if record.get("task") != "search":
        return [f"{how}: a checkpoint of a task={record.get('task')} run; task=select needs a search's checkpoint "
                "(runs/search/<run>/checkpoints/last.ckpt)"]
    space = _get(cfg, "space.name")
    if record.get("space") != space:
        return [f"{how}: a checkpoint of a search in the {record.get('space')!r} space, and space={space!r}; add "
                f"space={record.get('space')} (the network itself comes from the checkpoint)"]
    fixed, _ = changed_settings(record, cfg, "select")
    differ = [change.replace(" -> ", " in the checkpoint, ", 1) + " now" for change in fixed]
    if differ:
        return [f"{how}: the search split its data otherwise, and selection must measure on that search's held-out "
                "part; set these as the search had them: " + "; ".join(differ)]
    return []


def validate_select(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of a task=select config: the data and selection keys, and ckpt_path (a
    readable search checkpoint of ``space.name`` whose data split matches the config's)."""
    from .search import SearchModule

    problems = data_problems(cfg, split=_get(cfg, "data.split"))
    selection = {k: _get(cfg, f"search.{k}") for k in ("selection_epochs", "selection_batches")}
    problems += node_problems(selection, "search.", target=SearchModule)
    path = _get(cfg, "ckpt_path")
    if not path:
        problems.append("ckpt_path=null: task=select needs the checkpoint of a finished search, e.g. "
                        "ckpt_path=runs/search/<run>/checkpoints/last.ckpt")
    else:
        found = _select_checkpoint_problems(cfg, path)
        problems += found
        if not found:
            import torch

            hp = torch.load(Path(str(path)).expanduser(), map_location="cpu", weights_only=True, mmap=True).get(
                "hyper_parameters") or {}
            relaxation = _saved_relaxation_class(hp)
            if getattr(relaxation, "hard", False):
                problems.append(f"ckpt_path={path}: perturbation-based selection removes one op from a supernet that mixes "
                                f"every op, and this search used {relaxation.__name__}, which samples one op per edge")
    raise_problems(problems)


def relaxation_of(cfg: DictConfig) -> Any:
    """The class search.relaxation._target_ names (None when it cannot be imported)."""
    try:
        return locate(_get(cfg, "search.relaxation._target_"))
    except ImportError:
        return None
