"""darts_lite: differentiable neural architecture search (DARTS, GDAS) on PyTorch Lightning."""

from .genotype import PRIMITIVES, Genotype
from .relax import GumbelRelaxation, SoftmaxRelaxation
from .search import SearchModule
from .spaces.darts import SearchNetwork

__all__ = ["PRIMITIVES", "Genotype", "GumbelRelaxation", "SearchModule", "SearchNetwork", "SoftmaxRelaxation"]
__version__ = "0.1.0"
