"""EcoNAS (Zhou et al., 2020) in darts_lite: training settings named ``c{x}r{x}s{x}e{E}``, an SQLite archive of
evaluations, evaluations run in-process, in subprocesses or on SLURM, the proxy-ranking study
(``task=proxy_study``) and the hierarchical proxy evolution (``task=econas``, over ``darts_lite.evolve``).

From Python: ``resolve`` a setting name against a ``Base`` recipe, and ``Evaluator(Archive(path), Executor(...),
...).evaluate([Request(genotype, setting, epochs)])`` returns each evaluation's archive row, training only what the
archive does not hold.
"""

from .archive import Archive, ArchiveError, genotype_hash
from .evaluate import EvalJob, run_evaluation
from .evaluator import Evaluator, Request
from .executor import Executor
from .settings import Base, Setting, parse_name, resolve

__all__ = ["Archive", "ArchiveError", "Base", "EvalJob", "Evaluator", "Executor", "Request", "Setting", "genotype_hash",
           "parse_name", "resolve", "run_evaluation"]
