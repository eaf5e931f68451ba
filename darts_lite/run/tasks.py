"""The tasks ``python -m darts_lite task=NAME`` runs: one registry entry each.

An entry names the function that runs the task and the function that checks its config (every problem at once,
before anything is built or written), both as import paths loaded on first use, so listing the tasks imports
nothing heavy. ``fixed`` lists the settings (a key, or a group by its prefix) a run must keep to continue from one
of its checkpoints: the ones that shape the network, the data or the algorithm; everything else may change on
resume. The entry point dispatches from this registry; the docs' list of tasks and the tests read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..registry import Registry, load_path

__all__ = ["TASKS", "Task"]


@dataclass(frozen=True)
class Task:
    name: str
    run: str  # "package.module:function", (cfg) -> summary dict
    check: str  # "package.module:function", (cfg) -> ...; raises ConfigError listing every problem
    summary: str
    fixed: tuple[str, ...] = ()
    free: tuple[str, ...] = ()  # keys inside a fixed group that may differ nonetheless

    def runner(self) -> Callable[[Any], Any]:
        return load_path(self.run)

    def checker(self) -> Callable[[Any], Any]:
        return load_path(self.check)


TASKS: Registry[Task] = Registry("task")


def _task(name: str, run: str, check: str, summary: str, fixed: tuple[str, ...] = (), free: tuple[str, ...] = ()) -> None:
    TASKS.register(name, Task(name, run, check, summary, fixed, free), summary=summary)


_task("search", "darts_lite.tasks:run_search", "darts_lite.config:validate_search",
      "architecture search on a space's supernet (DARTS first/second order, GDAS, the bag of tricks)",
      fixed=("seed", "space", "data", "search.relaxation._target_", "search.order", "search.progressive"))
_task("train", "darts_lite.tasks:run_train", "darts_lite.config:validate_train",
      "retrain a genotype (`genotype=`) in its evaluation network",
      fixed=("seed", "data", "genotype", "train.space", "train.C", "train.layers", "train.auxiliary",
             "train.network_dataset", "train.cutout"))
# selection measures on the search's held-out part: the data must be split as the search split it (how it is batched
# and augmented may differ)
_task("select", "darts_lite.tasks:run_select", "darts_lite.config:validate_select",
      "perturbation-based selection on the supernet of a finished search (`ckpt_path=`)",
      fixed=("seed", "data"), free=("data.batch_size", "data.crop_padding", "data.flip"))
_task("proxy_study", "darts_lite.econas.study:run_study", "darts_lite.econas.study:check",
      "EcoNAS's proxy-ranking study: each proxy setting's rank correlation with the reference")
_task("econas", "darts_lite.tasks:run_econas", "darts_lite.econas.evolution:check",
      "EcoNAS's hierarchical proxy evolution (or a baseline under the same budget)")
_task("surrogate", "darts_lite.surrogate.task:run_surrogate", "darts_lite.surrogate.task:check",
      "fit accuracy predictors on evaluated genotypes and judge them on unseen ones")
_task("surrogate_search", "darts_lite.surrogate.benchmark:run_surrogate_search", "darts_lite.surrogate.benchmark:check",
      "benchmark search algorithms against a surrogate")
_task("surrogate_predict", "darts_lite.surrogate.predict:run_surrogate_predict", "darts_lite.surrogate.predict:check",
      "score genotypes with a saved surrogate (every number a prediction)")
_task("leaderboard", "darts_lite.leaderboard:run_leaderboard", "darts_lite.leaderboard:check",
      "every one-shot method x seeds on one space, each found cell's accuracy looked up or retrained, ranked")
_task("ofa", "darts_lite.ofa.task:run_ofa", "darts_lite.ofa.task:check",
      "Once-for-All: progressive shrinking, then a sub-network per budget",
      fixed=("seed", "data", "ofa.network", "ofa.val_split"))
_task("export", "darts_lite.export:run_export", "darts_lite.export:check",
      "a trained network (a train run's checkpoint, an OFA sub-network: `ckpt_path=`) as a torch.export program "
      "(and ONNX) that takes raw images")
