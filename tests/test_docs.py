"""The documentation stays true: docs/configuration.md matches conf/, and the commands and Python examples in
docs/ compose and run. Reads the markdown directly: mkdocs is not needed here (CI builds the site separately)."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from darts_lite import Genotype
from darts_lite.__main__ import config_dir

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONF = ROOT / "conf"
CONFIG_PAGE = DOCS / "configuration.md"

# Files that commands in the docs name as examples of a user's own runs. The test creates them (a search run
# folder with its genotype.json) in a temporary working directory, so those commands are validated in full,
# genotype resolution included.
EXAMPLE_FILES = {
    "runs/search/2026-11-24_20-30-00/genotype.json": "the search run folder the Retrain and Resume guides use",
    "runs/search/2026-11-25_09-00-00/genotype.json": "a NAS-Bench-201 search run folder (Search spaces guide)",
    "NATS-tss-v1_0-3ffb9-simple/meta.pickle.pbz2": "the benchmark folder of the look-up (a config check wants it to exist)",
    "runs/search/2026-11-24_20-30-00/checkpoints/last.ckpt": "the finished search task=select selects from",
    "runs/train/2026-11-24_21-00-00/checkpoints/last.ckpt": "the finished retraining task=export exports",
    "runs/ofa/2026-11-30_16-00-00/specialise/flops-0.6/subnet.pt": "the Once-for-All sub-network task=export exports",
}
NB201_EXAMPLE = "runs/search/2026-11-25_09-00-00/genotype.json"


# ---- conf/ ---------------------------------------------------------------------------------------------------
def _package(path: Path) -> str:
    """Where a config file's keys land: its `# @package` header, else its group path (Hydra's default)."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        match = re.match(r"#\s*@package\s+(\S+)", line)
        if match:
            return "" if match.group(1) == "_global_" else match.group(1)
    return ".".join(path.relative_to(CONF).parent.parts)


def _leaf_keys(node: object, prefix: str) -> set[str]:
    """Dotted keys of a YAML mapping's leaves (a list or an empty mapping is a leaf: its value is the setting)."""
    if isinstance(node, dict) and node:
        keys: set[str] = set()
        for key, value in node.items():
            keys |= _leaf_keys(value, f"{prefix}.{key}" if prefix else str(key))
        return keys
    return {prefix}


def plugin_arguments() -> dict[str, bool]:
    """The keys of conf/ that are arguments of a class a node nested inside a group names with _target_ (a
    relaxation's, a dataset's): {dotted key: whether the line that sets it carries a comment}. Such keys belong to
    their class, documented by the option file that sets them, not by a row of the configuration page."""
    found: dict[str, bool] = {}

    def walk(node: object, prefix: str, depth: int, lines: list[str]) -> None:
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.", depth + 1, lines)
            elif depth >= 2 and "_target_" in node and key != "_target_":
                commented = any(re.match(rf"^\s*{re.escape(str(key))}:.*#", line) for line in lines)
                found[f"{prefix}{key}"] = found.get(f"{prefix}{key}", False) or commented

    for path in sorted(CONF.rglob("*.yaml")):
        text = path.read_text()
        data = yaml.safe_load(text) or {}
        data.pop("defaults", None)
        package = _package(path)
        walk({package: data} if package else data, "", 0, text.splitlines())
    return found


def conf_keys_and_options() -> tuple[set[str], set[str]]:
    """Every dotted key any file of conf/ sets (defaults lists excluded) and every `group=option`."""
    keys: set[str] = set()
    options: set[str] = set()
    for path in sorted(CONF.rglob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        data.pop("defaults", None)
        if data:  # an option without keys (guard=none) sets none
            keys |= {k for k in _leaf_keys(data, _package(path)) if k}
        if path != CONF / "config.yaml":
            options.add(f"{path.relative_to(CONF).parent.as_posix()}={path.stem}")
    return keys, options


# ---- docs/configuration.md -----------------------------------------------------------------------------------
_FIRST_CELL = re.compile(r"^\|\s*`([^`]+)`\s*\|")
_KEY = re.compile(r"^[A-Za-z_]\w*(\.\w+)*$")
_OPTION = re.compile(r"^\+?[\w/]+=\w+$")


def _conf_tables():
    """docs/hooks/conf_tables.py, the mkdocs hook that makes the page's generated tables (not a package module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("conf_tables", DOCS / "hooks" / "conf_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documented_keys_and_options(page: Path = CONFIG_PAGE) -> tuple[list[str], list[str], list[str]]:
    """From the page's tables, as the site shows them (its generated tables included): the keys and `group=option`s
    in first cells, and first cells that are neither."""
    keys, options, unknown = [], [], []
    section = ""
    for line in _conf_tables().expand(page.read_text()).splitlines():
        section = line if line.startswith("## ") else section
        if section == "## Tasks":
            continue  # the task names (test_every_task_is_documented...), not keys
        match = _FIRST_CELL.match(line)
        if not match:
            continue
        cell = match.group(1).strip()
        if _OPTION.match(cell):
            options.append(cell.lstrip("+"))
        elif _KEY.match(cell):
            keys.append(cell)
        else:
            unknown.append(cell)
    return keys, options, unknown


def test_a_relaxations_arguments_are_documented_where_they_are_set():
    arguments = plugin_arguments()
    # GDAS's temperatures: nested in search.relaxation, beside its _target_; the group's own keys are not arguments
    assert arguments.get("search.relaxation.tau_max") is True and "search.epochs" not in arguments
    assert "search.relaxation._target_" not in arguments and "trainer.strategy._target_" not in arguments


def test_the_conf_reader_sees_nested_global_and_hydra_keys():
    keys, options = conf_keys_and_options()
    # a nested key of one option, keys a _global_ file sets in other groups, a launcher's key, a top-level key
    assert {"trainer.strategy.find_unused_parameters", "proxy.channels_divisor", "space.C", "hydra.launcher.partition",
            "hydra.callbacks.sweep_summary._target_", "seed"} <= keys
    assert not any(k.startswith(("defaults", "proxy.space", "experiment.")) for k in keys)
    assert {"data=cifar10", "experiment=quickstart", "hydra/launcher=slurm", "trainer=ddp"} <= options


def test_every_conf_key_is_documented_and_every_documented_key_exists():
    in_conf, _ = conf_keys_and_options()
    documented, _, unknown = documented_keys_and_options()
    assert not unknown, f"first cells of {CONFIG_PAGE.name} that are neither a dotted key nor group=option: {unknown}"
    duplicates = sorted({k for k in documented if documented.count(k) > 1})
    assert not duplicates, f"documented twice in {CONFIG_PAGE.name}: {duplicates}"
    arguments = plugin_arguments()
    uncommented = sorted(k for k, commented in arguments.items() if not commented and k not in documented)
    assert not uncommented, f"class arguments set in conf/ with neither a comment on their line nor a row: {uncommented}"
    missing = sorted(in_conf - set(documented) - set(arguments))
    assert not missing, f"keys in conf/ without a row in docs/{CONFIG_PAGE.name}: {missing}"
    stale = sorted(set(documented) - in_conf)
    assert not stale, f"keys documented in docs/{CONFIG_PAGE.name} that no file in conf/ sets: {stale}"


def test_every_conf_option_is_documented_and_every_documented_option_exists():
    _, in_conf = conf_keys_and_options()
    _, documented, _ = documented_keys_and_options()
    missing = sorted(in_conf - set(documented))
    assert not missing, f"options in conf/ without a row in docs/{CONFIG_PAGE.name}: {missing}"
    stale = sorted(set(documented) - in_conf)
    assert not stale, f"options documented in docs/{CONFIG_PAGE.name} that conf/ does not have: {stale}"


# ---- commands and examples in the docs -----------------------------------------------------------------------
# the README is the docs' front page: its commands and examples are held to the same standard
DOC_FILES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w-]*)")
_INLINE_COMMAND = re.compile(r"`(python -m darts_lite[^`]*)`")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, source) of each fenced code block."""
    blocks, fence, lang, lines = [], None, "", []
    for line in text.splitlines():
        match = _FENCE.match(line)
        if fence is None and match:
            fence, lang, lines = match.group(1), match.group(2), []
        elif fence is not None and line.strip() == fence:
            blocks.append((lang, "\n".join(lines)))
            fence = None
        elif fence is not None:
            lines.append(line)
    return blocks


def doc_commands(path: Path) -> list[str]:
    """Every `python -m darts_lite ...` a page shows: lines of its code blocks (continuations joined) and inline code."""
    text = path.read_text()
    commands = []
    for _, source in code_blocks(text):
        for line in source.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("python -m darts_lite"):
                commands.append(line)
    outside = re.sub(r"^\s*(`{3,}|~{3,}).*?^\s*\1\s*$", "", text, flags=re.M | re.S)
    commands += _INLINE_COMMAND.findall(outside)
    return commands


def command_overrides(command: str) -> list[list[str]]:
    """The override lists Hydra would compose for a command: one, or one per job of a `-m` sweep.

    `--cfg job` only prints the config, so it composes the same as the command without it."""
    tokens = shlex.split(command, comments=True)
    assert tokens[:3] == ["python", "-m", "darts_lite"], command
    multirun, overrides, rest = False, [], iter(tokens[3:])
    for token in rest:
        if token in ("-m", "--multirun"):
            multirun = True
        elif token == "--cfg":
            next(rest)
        elif token.startswith("-"):
            raise AssertionError(f"{command!r}: flag {token} is not handled by this test; teach it, or drop the flag")
        else:
            overrides.append(token)
    if not multirun:
        return [overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
               else [o.input_line] for o in parsed]
    return [list(job) for job in itertools.product(*choices)]


@pytest.fixture(scope="module")
def hydra_compose():
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        # with Hydra's own config, so hydra.* keys and hydra/launcher options compose as on the command line
        yield lambda overrides: compose(config_name="config", overrides=overrides, return_hydra_config=True)


def _tiny_run(task: str, folder, overrides: list[str]):
    """The checkpoint of a task run in this process (``run_search`` or ``run_train``) with these overrides, shrunk to
    one batch of one epoch."""
    import pytorch_lightning as pl
    from hydra.core.global_hydra import GlobalHydra

    from darts_lite import tasks

    run = folder / "run"
    overrides = [*overrides, "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
                 "trainer.enable_progress_bar=false", f"run_dir={run}"]
    if GlobalHydra.instance().is_initialized():  # inside hydra_compose's module-wide initialisation
        cfg = compose(config_name="config", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    pl.seed_everything(0, verbose=False)
    getattr(tasks, f"run_{task}")(cfg)
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def search_checkpoint(tmp_path_factory):
    """The checkpoint of a finished quickstart search (its data and split as the docs' quickstart commands have
    them): what task=select commands name."""
    return _tiny_run("search", tmp_path_factory.mktemp("search"), [
        "+experiment=quickstart", "search.epochs=1", "search.warmup_epochs=0", "space.C=4", "space.layers=3"])


@pytest.fixture(scope="module")
def train_checkpoint(tmp_path_factory):
    """The checkpoint of a retraining on digits: what task=export commands name."""
    return _tiny_run("train", tmp_path_factory.mktemp("train"), [
        "+experiment=train_quick", "train.epochs=1", "train.C=4", "train.layers=3"])


@pytest.fixture
def example_files(tmp_path, monkeypatch, search_checkpoint, train_checkpoint):
    import shutil

    from conftest import tiny_ofa_network

    from darts_lite.ofa.specialise import save_subnet
    from darts_lite.spaces import nb201

    darts = Genotype.named("DARTS_V2").to_json()
    best = nb201.Genotype.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    for relative in EXAMPLE_FILES:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative.endswith(".ckpt"):
            shutil.copy(train_checkpoint if relative.startswith("runs/train/") else search_checkpoint, path)
        elif relative.endswith("subnet.pt"):
            net = tiny_ofa_network()
            save_subnet(path, net, net.setting(), 8, net.get_active_subnet())
        else:
            path.write_text((best.to_json() if relative == NB201_EXAMPLE else darts) + "\n")
    monkeypatch.chdir(tmp_path)


def test_commands_are_found_in_the_docs():
    commands = [c for path in DOC_FILES if DOCS in path.parents for c in doc_commands(path)]
    assert "python -m darts_lite +experiment=quickstart" in [c.split("#")[0].strip() for c in commands]
    assert len(commands) >= 20
    jobs = command_overrides("python -m darts_lite -m +experiment=quickstart seed=0,1 search=darts,gdas --cfg job")
    assert sorted(jobs) == sorted([["+experiment=quickstart", f"seed={s}", f"search={a}"]
                                   for s in (0, 1) for a in ("darts", "gdas")])


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_doc_commands_compose_and_validate(path, hydra_compose, example_files):
    """Each command composes with the real configs (every job of a sweep) and passes the checks a run starts with."""
    for command in doc_commands(path):
        for overrides in command_overrides(command):
            try:
                cfg = hydra_compose(overrides)
                validate(cfg)
            except Exception as e:
                raise AssertionError(f"{path.name}: {command}\n  job {overrides}: {type(e).__name__}: {e}") from None


def validate(cfg) -> None:
    """The checks the task's run starts with (nothing is trained or written): the task registry's own."""
    from darts_lite.run.tasks import TASKS

    TASKS[cfg.task].checker()(cfg)


# ---- the tasks -------------------------------------------------------------------------------------------------
def documented_tasks(page: Path = CONFIG_PAGE) -> list[str]:
    """The first cells of the rows of the configuration page's "Tasks" table."""
    text = page.read_text()
    section = text[text.index("## Tasks"):]
    section = section[: section.index("\n## ", 1)]
    return [m.group(1) for line in section.splitlines() if (m := _FIRST_CELL.match(line))]


def test_every_task_is_documented_and_every_documented_task_exists():
    from darts_lite.run.tasks import TASKS

    assert documented_tasks() == list(TASKS), "the Tasks table of docs/configuration.md must list TASKS, in its order"
    for name in TASKS:  # and each entry's run and check functions load
        assert callable(TASKS[name].runner()) and callable(TASKS[name].checker()), name


PYTHON_EXAMPLES = [(path, n, source) for path in DOC_FILES
                   for n, (lang, source) in enumerate(code_blocks(path.read_text())) if lang in ("python", "py")]


@pytest.mark.parametrize("path,n,source", PYTHON_EXAMPLES,
                         ids=[f"{p.relative_to(ROOT).as_posix()}#{n}" for p, n, _ in PYTHON_EXAMPLES])
def test_doc_python_examples_run(path, n, source, capsys):
    exec(compile(source, f"{path}:python block {n}", "exec"), {"__name__": "__doc_example__"})
