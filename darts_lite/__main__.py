"""Command line: `python -m darts_lite +experiment=NAME [key=value ...]` (Hydra; `-m` for sweeps)."""

from __future__ import annotations

import re
import shlex
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .config import config_dir


def resume_hint(cfg: DictConfig, diverged: bool = False) -> str:
    """Where the last checkpoint of the run is and the command that continues from it (``diverged``: after a loss
    that stopped being finite, with the advice that goes with it)."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(cfg.run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return f"No checkpoint was written yet (none at {last}): the first epoch did not finish, so start the run again."
    # the job's own overrides (in a multirun: this job's values), with the run folder and resume flag replaced
    overrides = [o for o in HydraConfig.get().overrides.task
                 if re.sub(r"^[+~]+", "", o).split("=", 1)[0] not in ("resume", "ckpt_path")]
    command = shlex.join(["python", "-m", "darts_lite", *overrides, "resume=true", f"hydra.run.dir={run_dir}"])
    hint = f"Last checkpoint (end of the last finished epoch): {last}\nContinue from it with: {command}"
    if diverged and cfg.get("task") == "search":
        hint += ("\nResumed as it is, it will likely diverge again at the same step; add a lower search.lr or "
                 "search.arch_lr to that command and the resumed run uses it from there on.")
    return hint


# Nodes that build a user's own class by _target_: their keys are that class's arguments, which the config files
# cannot list beforehand, so an override may add one without Hydra's "+" (search.relaxation.temperature=0.5)
PLUGIN_NODES = ("search.relaxation", "search.regularizer", "data.train", "data.test", "leaderboard.overrides")


def _plugin_overrides(args: list[str]) -> list[str]:
    """The command-line arguments with each ``key=value`` inside a plug-in node written as Hydra's add-or-override
    (``++key=value``); everything else as it was."""
    out = []
    for arg in args:
        key = arg.split("=", 1)[0]
        if "=" in arg and not arg.startswith(("+", "~", "-")) and key.startswith(tuple(f"{n}." for n in PLUGIN_NODES)):
            arg = "++" + arg
        out.append(arg)
    return out


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> object:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .data import DatasetUnavailable
    from .errors import CheckpointWriteFailed, ConfigError, RunFailed

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN

    try:
        from .run.tasks import TASKS

        return TASKS[cfg.task].runner()(cfg)
    except (ConfigError, DatasetUnavailable) as e:
        # a user's mistake or missing data: one clear message, no traceback
        error, message, code = e, str(e), 2
    except CheckpointWriteFailed as e:
        # the disk, not the run, failed: what is on disk, and the command that continues once it is fixed
        error, message, code = e, f"{e}\n{resume_hint(cfg)}", 1
    except RunFailed as e:
        # the config was valid but the work could not be done (a study's evaluations failed): the message says why,
        # grouped by cause, and where the whole errors are; a traceback of the driver would say nothing more
        error, message, code = e, str(e), 1
    except FloatingPointError as e:
        # the loss diverged: the traceback says nothing the message does not; where to continue from does
        error, message, code = e, f"{e}\n{resume_hint(cfg, diverged=True)}", 1
    except Exception as e:
        if not multirun:
            raise  # a bug, not a user's mistake: Hydra prints the traceback
        error, message, code = e, traceback.format_exc(), 1
    from .run.folder import is_rank_zero

    if not multirun:
        if is_rank_zero():  # under DDP every rank stops with the same error: say it once
            print(f"darts_lite: {message}", file=sys.stderr)
        sys.exit(code)
    # In a multirun, exiting (or raising) here would end the whole sweep: Hydra's sweeper re-raises a
    # job's exception, so the later jobs never start and the summary is never written. Record the
    # failure in the job folder instead; SweepSummary lists it and sets the exit status at the end.
    from .sweep import write_job_failure

    job = HydraConfig.get().job
    print(f"darts_lite: job {job.num} ({' '.join(HydraConfig.get().overrides.task)}) failed, the sweep goes on: {message}",
          file=sys.stderr)
    sys.stderr.flush()
    if is_rank_zero():
        write_job_failure(cfg.run_dir, str(cfg.get("task")), error)
    return {"status": "failed", "error": f"{type(error).__name__}: {error}"}


def entry() -> None:
    """``python -m darts_lite`` and the ``darts-lite`` command."""
    sys.argv[1:] = _plugin_overrides(sys.argv[1:])
    main()


if __name__ == "__main__":
    entry()
