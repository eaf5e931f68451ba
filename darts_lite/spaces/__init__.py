"""Search spaces: candidate ops, search cells and networks."""

from .darts import FixedReductionCell, MixedEdge, SearchCell, SearchNetwork
from .ops import OPS, FactorizedReduce, make_op

__all__ = ["OPS", "FactorizedReduce", "FixedReductionCell", "MixedEdge", "SearchCell", "SearchNetwork", "make_op"]
