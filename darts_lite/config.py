"""Checks on a composed config, run before anything is built or trained, and the resolvers the
config files use.

Every problem found is reported at once, each as one line naming the key, the value and what
is allowed, so that a user fixes a config in one go.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from .data import DATASETS, native_size, part_sizes, too_few_samples, train_class_counts
from .errors import ConfigError
from .relax import RELAXATIONS
from .spaces import SPACES, get_space, parse_genotype

__all__ = ["ConfigError", "config_dir", "data_problems", "validate_search", "validate_select", "validate_train"]


def config_dir() -> str:
    """The config tree: `conf/` beside the package in a checkout, else the copy inside the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"darts_lite: no config tree found next to {here}; reinstall the package")


# ---- resolvers: arithmetic the config files need (conf/proxy/econas.yaml) ------------------------
# Registered when this module is imported, which importing darts_lite does: before Hydra composes.


def _divide(value: int, divisor: int) -> int:
    """${darts_lite.divide:a,b}: a // b, for sizes that a proxy reduces."""
    if not (_is_int(value) and _is_int(divisor) and divisor >= 1):
        raise ValueError(f"darts_lite.divide takes an integer and a divisor >= 1, got {value!r} and {divisor!r}")
    return value // divisor


def _native_size(*, _parent_: DictConfig) -> int:
    """${darts_lite.native_size:} inside the data group: the side of its dataset's images before any resize."""
    return native_size(_parent_.get("name"), _parent_.get("synthetic_size"))


for _name, _resolver in (("darts_lite.divide", _divide), ("darts_lite.native_size", _native_size)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


def _get(cfg: DictConfig, key: str) -> Any:
    # a value that cannot be worked out reads as None here; _Checker reports why
    return OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=False)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _devices(cfg: DictConfig) -> int:
    """Processes that each take a weight batch per step, when the config says (else 1: "auto" is decided later)."""
    devices, nodes = _get(cfg, "trainer.devices"), _get(cfg, "trainer.num_nodes")
    count = len(devices) if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices) else devices
    count = count if _is_int(count) and count >= 1 else 1
    return count * (nodes if _is_int(nodes) and nodes >= 1 else 1)


class _Checker:
    def __init__(self, cfg: DictConfig):
        self.cfg, self.problems = cfg, []

    def __call__(self, key: str, ok: Callable[[Any], bool], allowed: str) -> None:
        try:
            value = OmegaConf.select(self.cfg, key, throw_on_missing=False)
        except InterpolationResolutionError as e:
            why = str(e).splitlines()[0].split("raised while resolving interpolation: ")[-1]
            self.problems.append(f"{key}: cannot be worked out ({why})")
            return
        try:
            good = ok(value)
        except TypeError:
            good = False
        if not good:
            self.problems.append(f"{key}={value!r}: {allowed}")

    def data(self) -> None:
        check = self
        check("seed", _is_int, "must be an integer")
        check("data.name", lambda v: v in DATASETS, f"must be one of {', '.join(DATASETS)}")
        check("data.root", lambda v: isinstance(v, str) and v != "", "must be a folder path")
        check("data.batch_size", lambda v: _is_int(v) and v >= 1, "must be an integer >= 1")
        check("data.eval_batch_size", lambda v: v is None or (_is_int(v) and v >= 1),
              "must be null (= data.batch_size) or an integer >= 1")
        check("data.split", lambda v: _is_num(v) and 0 < v < 1, "must be in (0, 1): the fraction of training data for weights")
        check("data.sample_ratio", lambda v: _is_num(v) and 0 < v <= 1, "must be in (0, 1]")
        check("data.resolution", lambda v: v is None or (_is_int(v) and v >= 4), "must be null or an integer >= 4")
        check("data.crop_padding", lambda v: _is_int(v) and v >= 0, "must be an integer >= 0")
        check("data.val_on", lambda v: v in ("arch", "test"), "must be arch or test")
        for key in ("data.flip", "data.download"):
            check(key, _is_bool, "must be true or false")
        if _get(self.cfg, "data.name") == "synthetic":
            check("data.synthetic_samples", lambda v: _is_int(v) and v >= 1, "must be an integer >= 1")
            check("data.synthetic_classes", lambda v: _is_int(v) and v >= 2, "must be an integer >= 2")
            check("data.synthetic_size", lambda v: _is_int(v) and v >= 4, "must be an integer >= 4, as data.resolution")
            check("data.synthetic_channels", lambda v: _is_int(v) and v >= 1, "must be an integer >= 1")
        self.proxy()

    def proxy(self) -> None:
        """The divisors of conf/proxy/econas.yaml, and what they make of the dataset's resolution."""
        check = self
        for key, what in (("proxy.channels_divisor", "space.C"), ("proxy.resolution_divisor", "the dataset's image side")):
            if _get(self.cfg, key) is not None:
                check(key, lambda v: _is_int(v) and v >= 1, f"must be an integer >= 1 (the proxy divides {what} by it)")
        divisor, resolution = _get(self.cfg, "proxy.resolution_divisor"), _get(self.cfg, "data.resolution")
        name = _get(self.cfg, "data.name")
        if _is_int(divisor) and divisor > 1 and _is_int(resolution) and resolution < 4 and name in DATASETS:
            native = native_size(name, _get(self.cfg, "data.synthetic_size"))
            self.problems.append(
                f"proxy.resolution_divisor={divisor}: takes the {native} px {name} images to {resolution} px, "
                "below the 4 px the network needs; lower it or set data.resolution"
            )

    def parts_fill_batches(self, split: float | None) -> None:
        """The weight and architecture parts must each fill a batch (split=None: retraining, one part).

        Dataset sizes are known before loading, so this fails here and not after the Trainer started.
        """
        data = {k: _get(self.cfg, f"data.{k}") for k in ("name", "batch_size", "sample_ratio", "synthetic_samples",
                                                          "synthetic_classes")}
        inputs = ("data.name", "data.batch_size", "data.split", "data.sample_ratio", "data.synthetic_samples",
                  "data.synthetic_classes")
        if any(p.startswith(inputs) for p in self.problems):
            return  # the sizes would be computed from values already reported as wrong
        counts = train_class_counts(data["name"], data["synthetic_samples"], data["synthetic_classes"])
        weight, arch = part_sizes(counts, split, data["sample_ratio"])
        problem = too_few_samples(data["name"], weight, arch, data["batch_size"], split, data["sample_ratio"],
                                  _devices(self.cfg))
        if problem:
            self.problems.append(problem)

    def space(self) -> None:
        """space.name, then the keys of that space's group as its module's SEARCH_CHECKS say."""
        self("space.name", lambda v: v in SPACES, f"must be one of {', '.join(SPACES)}")
        name = _get(self.cfg, "space.name")
        if name not in SPACES:
            return
        for key, ok, allowed in get_space(name).SEARCH_CHECKS:
            self(f"space.{key}", lambda v, ok=ok: ok(v, lambda other: _get(self.cfg, f"space.{other}")), allowed)

    def guard(self) -> None:
        """guard.name, and the collapse guard's options as its constructor checks them."""
        name = _get(self.cfg, "guard.name")
        self("guard.name", lambda v: v in (None, "none", "collapse"), "must be none or collapse")
        if name != "collapse":
            return
        from .tricks import CollapseGuard

        try:
            options = OmegaConf.to_container(self.cfg.guard, resolve=True)
            options.pop("name")
            CollapseGuard(**options)
        except ConfigError as e:
            self.problems.extend(str(e).split("; "))
        except TypeError as e:  # a key the guard does not take
            self.problems.append(f"guard: {e}")
            return
        epochs, warmup = _get(self.cfg, "search.epochs"), _get(self.cfg, "search.warmup_epochs")
        every, window = options.get("eigen_every"), options.get("eigen_window")
        if options.get("stop") == "eigen" and all(_is_int(v) and v > 0 for v in (epochs, every, window)) and _is_int(warmup):
            measured = max(epochs - warmup, 0) // every
            if measured < 2 * window:
                self.problems.append(
                    f"guard.stop=eigen: the rule compares two windows of guard.eigen_window={window} measurements, and "
                    f"{epochs - warmup} epochs after warm-up with guard.eigen_every={every} give {measured}; it could never "
                    "stop the search. Lower guard.eigen_window or guard.eigen_every, or search longer"
                )

    def resource(self) -> None:
        """search.resource*: the kind, lambda, target, and a latency table measured on another machine."""
        from .tricks.resources import RESOURCES, UNITS, latency_table_problem

        self("search.resource", lambda v: v in RESOURCES, f"must be one of {', '.join(RESOURCES)}")
        self("search.resource_weight", lambda v: _is_num(v) and v >= 0, "must be >= 0 (lambda of the resource penalty)")
        unit = UNITS.get(_get(self.cfg, "search.resource"), "the kind's unit")
        self("search.resource_target", lambda v: v is None or (_is_num(v) and v > 0), f"must be null or > 0 ({unit})")
        self("search.resource_latency_table", lambda v: v is None or (isinstance(v, str) and v != ""),
             "must be null or a file path")
        path = _get(self.cfg, "search.resource_latency_table")
        if _get(self.cfg, "search.resource") == "latency" and isinstance(path, str) and path and Path(path).exists():
            problem = latency_table_problem(path)
            if problem:
                self.problems.append(problem)

    def benchmark(self) -> None:
        """benchmark.*: a look-up needs the NAS-Bench-201 space, the file and the nats_bench package."""
        path = _get(self.cfg, "benchmark.path")
        if path is None:
            return
        if _get(self.cfg, "space.name") != "nb201":
            self.problems.append(f"benchmark.path={path}: the benchmark look-up holds NAS-Bench-201 cells; it needs "
                                 f"space=nb201, not space={_get(self.cfg, 'space.name')}")
        from .lookup import BenchmarkLookup, check_benchmark

        hp, datasets = _get(self.cfg, "benchmark.hp"), list(_get(self.cfg, "benchmark.datasets") or [])
        for check in (lambda: check_benchmark(path), lambda: BenchmarkLookup(path, hp, datasets)):
            try:
                check()
            except ConfigError as e:
                self.problems.extend(str(e).split("; "))

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError("invalid config:\n  " + "\n  ".join(self.problems))


def _image_size(cfg: DictConfig) -> int | None:
    """Side of the images the network will see: data.resolution, else the dataset's own."""
    if _get(cfg, "data.resolution"):
        return _get(cfg, "data.resolution")
    name = _get(cfg, "data.name")
    return native_size(name, _get(cfg, "data.synthetic_size")) if name in DATASETS else None


def data_problems(cfg: DictConfig) -> list[str]:
    """Every invalid value of the data keys, as validate_train finds them (all the training images one part), for
    tasks that check their own keys (``task=ofa``)."""
    check = _Checker(cfg)
    check.data()
    check.parts_fill_batches(split=None)
    return check.problems


def validate_train(cfg: DictConfig) -> None:
    """Raise ConfigError listing every invalid value of a retraining config."""
    from .train import resolve_genotype

    check = _Checker(cfg)
    check.data()
    check("genotype", lambda v: v is not None, "set genotype=NAME|PATH|TEXT (a published name, genotype.json, run folder)")
    genotype = None
    if _get(cfg, "genotype") is not None:
        try:
            genotype = resolve_genotype(_get(cfg, "genotype"))
        except ValueError as e:
            check.problems.append(str(e))
    check("train.space", lambda v: v in SPACES, f"must be one of {', '.join(SPACES)}")
    if _get(cfg, "train.space") in SPACES:
        space = get_space(_get(cfg, "train.space"))
        genotype_space = space if genotype is None else parse_genotype(genotype.to_text())[0]
        if genotype_space is not space:
            check.problems.append(
                f"genotype={_get(cfg, 'genotype')!r}: a {genotype_space.NAME} cell, and train={space.NAME} retrains "
                f"{space.NAME} cells; add train={genotype_space.NAME} (its space's network and recipe)"
            )
        else:
            train = OmegaConf.to_container(cfg.train, resolve=True)
            check.problems.extend(space.check_train(train, genotype, _image_size(cfg)))
    for key in ("train.auxiliary", "train.nesterov", "train.channels_last", "train.compile"):
        check(key, _is_bool, "must be true or false")
    check("train.epochs", lambda v: _is_int(v) and v >= 1, "must be an integer >= 1")
    check("train.lr", lambda v: _is_num(v) and v > 0, "must be > 0")
    for key in ("train.lr_min", "train.momentum", "train.weight_decay", "train.auxiliary_weight"):
        check(key, lambda v: _is_num(v) and v >= 0, "must be >= 0")
    check("train.drop_path_prob", lambda v: _is_num(v) and 0 <= v < 1, "must be in [0, 1)")
    check("train.cutout", lambda v: _is_int(v) and v >= 0, "must be an integer >= 0")
    check("train.grad_clip", lambda v: v is None or (_is_num(v) and v > 0), "must be null or > 0")
    check("trainer.max_epochs", lambda v: v == _get(cfg, "train.epochs"), "must equal train.epochs (set train.epochs)")
    check.parts_fill_batches(split=None)
    check.raise_if_any()


def _check_pc_darts(check: _Checker, cfg: DictConfig) -> None:
    """search.partial_channels (K dividing space.C) and search.edge_normalization: PC-DARTS, darts space only.
    A missing key reads as off."""
    k, norm = _get(cfg, "search.partial_channels"), _get(cfg, "search.edge_normalization")
    if k is not None and not (_is_int(k) and k >= 1):
        check.problems.append(f"search.partial_channels={k!r}: must be an integer >= 1 (1 = off)")
        k = None
    if norm is not None and not _is_bool(norm):
        check.problems.append(f"search.edge_normalization={norm!r}: must be true or false")
        norm = None
    on = [f"search.partial_channels={k}"] * (k not in (None, 1)) + ["search.edge_normalization=true"] * (norm is True)
    space = _get(cfg, "space.name")
    if on and space in SPACES and space != "darts":
        check.problems.append(f"{', '.join(on)}: PC-DARTS applies to the darts space only, not space={space}; "
                              "set search.partial_channels=1 search.edge_normalization=false")
        return
    C = _get(cfg, "space.C")
    if k not in (None, 1) and space == "darts" and _is_int(C) and C % k:
        check.problems.append(
            f"search.partial_channels={k}: must divide space.C={C} (each edge's ops get 1/{k} of its channels, in cells "
            f"of C, 2C and 4C channels); divisors of {C}: {', '.join(str(d) for d in range(1, C + 1) if C % d == 0)}"
        )


def validate_search(cfg: DictConfig) -> None:
    """Raise ConfigError listing every invalid value of a search config."""
    check = _Checker(cfg)
    check.data()
    is_int, is_num = _is_int, _is_num

    check.space()
    for key in ("search.nesterov", "search.channels_last", "search.compile", "search.checkpoint_cells"):
        check(key, _is_bool, "must be true or false")

    check("search.relaxation", lambda v: v in RELAXATIONS, f"must be one of {', '.join(RELAXATIONS)}")
    check("search.order", lambda v: v in (1, 2), "must be 1 or 2")
    check("search.hvp", lambda v: v in ("exact", "central", "forward"), "must be one of exact, central, forward")
    check("search.epochs", lambda v: is_int(v) and v >= 1, "must be an integer >= 1")
    check(
        "search.warmup_epochs",
        lambda v: is_int(v) and 0 <= v < _get(cfg, "search.epochs"),
        "must be an integer in [0, search.epochs): with no epoch left after warm-up the alphas never train",
    )
    for key in ("search.lr", "search.arch_lr", "search.unrolled_eps"):
        check(key, lambda v: is_num(v) and v > 0, "must be > 0")
    for key in ("search.lr_min", "search.weight_decay", "search.arch_weight_decay", "search.momentum"):
        check(key, lambda v: is_num(v) and v >= 0, "must be >= 0")
    check("search.lr_min", lambda v: v <= _get(cfg, "search.lr"), "must be <= search.lr")
    check("search.grad_clip", lambda v: v is None or (is_num(v) and v > 0), "must be null or > 0")
    check(
        "search.arch_betas", lambda v: len(v) == 2 and all(is_num(b) and 0 <= b < 1 for b in v), "must be two numbers in [0, 1)"
    )
    check("search.perturb", lambda v: v in ("none", "random", "adversarial"), "must be one of none, random, adversarial")
    check("search.perturb_epsilon", lambda v: is_num(v) and v >= 0, "must be >= 0 (the L-inf radius of the alpha perturbation)")
    check("search.perturb_steps", lambda v: is_int(v) and v >= 1, "must be an integer >= 1")
    check.resource()
    check("search.bn_calibration", lambda v: is_int(v) and v >= 0,
          "must be an integer >= 0 (training batches for val/acc_derived; 0 = off)")
    _check_selection(check, cfg)
    check("search.tau_min", lambda v: is_num(v) and v > 0, "must be > 0")
    check("search.tau_max", lambda v: is_num(v) and v >= _get(cfg, "search.tau_min"), "must be >= search.tau_min")
    _check_pc_darts(check, cfg)

    check("trainer.max_epochs", lambda v: v == _get(cfg, "search.epochs"), "must equal search.epochs (set search.epochs)")
    check.guard()
    check.benchmark()
    check.parts_fill_batches(split=_get(cfg, "data.split"))
    if _get(cfg, "search.compile") and (_get(cfg, "search.order") == 2 or _get(cfg, "search.relaxation") == "gumbel"):
        check.problems.append(
            "search.compile=true: works with first-order DARTS only (second order and GDAS change the graph every step)"
        )
    precision = str(_get(cfg, "trainer.precision"))
    if _get(cfg, "search.order") == 2 and precision.startswith("16"):
        check.problems.append(
            f"trainer.precision={precision!r}: second order takes gradients with torch.autograd.grad, which "
            "fp16 loss scaling does not cover; use bf16-mixed or 32-true"
        )
    check.raise_if_any()


def _check_selection(check: _Checker, cfg: DictConfig, relaxation: Any = None) -> None:
    """search.selection and the fine-tuning keys of perturbation-based selection."""
    from .tricks.selection import SELECTIONS, check_selection_options

    check("search.selection", lambda v: v in SELECTIONS, f"must be one of {', '.join(SELECTIONS)}")
    if _get(cfg, "search.selection") != "perturbation" and _get(cfg, "task") != "select":
        return
    check.problems.extend(check_selection_options(_get(cfg, "search.selection_epochs"), _get(cfg, "search.selection_batches")))
    relaxation = _get(cfg, "search.relaxation") if relaxation is None else relaxation
    if relaxation not in (None, "softmax"):
        check.problems.append(f"search.selection=perturbation: removes one op from a supernet that mixes every op; it needs "
                              f"the softmax relaxation (DARTS), and the search uses {relaxation!r}")


def _select_checkpoint_problems(cfg: DictConfig, path: Any) -> list[str]:
    """What stops task=select from using the checkpoint at ckpt_path: missing, unreadable, not a search's, another
    space's, or a search whose data was split differently (selection measures on the search's held-out part)."""
    from .run.checkpoints import FREE_INSIDE_FIXED, read_record, run_settings

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
    saved, now = record["settings"], run_settings(cfg)
    # where the data lives, how it is batched and augmented may change; what splits it may not
    free = (*FREE_INSIDE_FIXED, "data.batch_size", "data.crop_padding", "data.flip")
    differ = [f"{key}: {saved.get(key)!r} in the checkpoint, {now.get(key)!r} now"
              for key in sorted(set(saved) | set(now))
              if (key == "seed" or key.startswith("data.")) and key not in free and saved.get(key) != now.get(key)]
    if differ:
        return [f"{how}: the search split its data otherwise, and selection must measure on that search's held-out "
                "part; set these as the search had them: " + "; ".join(differ)]
    return []


def validate_select(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of a task=select config: the data and selection keys, and ckpt_path (a
    readable search checkpoint of ``space.name`` whose data split matches the config's)."""
    check = _Checker(cfg)
    check.data()
    check("space.name", lambda v: v in SPACES, f"must be one of {', '.join(SPACES)}")
    path = _get(cfg, "ckpt_path")
    if not path:
        check.problems.append("ckpt_path=null: task=select needs the checkpoint of a finished search, e.g. "
                              "ckpt_path=runs/search/<run>/checkpoints/last.ckpt")
        _check_selection(check, cfg)
    else:
        problems = _select_checkpoint_problems(cfg, path)
        check.problems.extend(problems)
        relaxation = None
        if not problems:
            import torch

            hp = torch.load(Path(str(path)).expanduser(), map_location="cpu", weights_only=True, mmap=True).get(
                "hyper_parameters") or {}
            relaxation = (hp.get("network") or {}).get("relaxation", "softmax")
        _check_selection(check, cfg, relaxation)
    check.parts_fill_batches(split=_get(cfg, "data.split"))
    check.raise_if_any()
