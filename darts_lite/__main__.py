"""Command line: `python -m darts_lite +experiment=NAME [key=value ...]` (Hydra; `-m` for sweeps)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig


def config_dir() -> str:
    """The config tree: `conf/` beside the package in a checkout, else the copy inside the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"darts_lite: no config tree found next to {here}; reinstall the package")


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> object:
    from .config import ConfigError
    from .data import DatasetUnavailable

    try:
        from . import tasks

        if cfg.task == "search":
            return tasks.run_search(cfg)
        if cfg.task == "train":
            return tasks.run_train(cfg)
        raise ConfigError(f"task={cfg.task!r}: unknown task; valid: search, train")
    except (ConfigError, DatasetUnavailable) as e:
        # a user's mistake or missing data: one clear message, no traceback
        print(f"darts_lite: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
