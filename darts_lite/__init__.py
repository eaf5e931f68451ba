"""darts_lite: differentiable neural architecture search (DARTS, GDAS) on PyTorch Lightning."""

from . import config as _config  # noqa: F401  (registers the OmegaConf resolvers that conf/ uses)
from ._version import __version__
from .relax import GumbelRelaxation, SoftmaxRelaxation
from .search import SearchModule
from .spaces.darts import PRIMITIVES, EvalNetwork, Genotype, SearchNetwork
from .train import TrainModule

__all__ = [
    "__version__",
    "PRIMITIVES",
    "EvalNetwork",
    "Genotype",
    "GumbelRelaxation",
    "SearchModule",
    "SearchNetwork",
    "SoftmaxRelaxation",
    "TrainModule",
]
