"""Tricks around a search: the collapse guard (per-epoch collapse measures, DARTS+ and DARTS-ES early stops) and
BatchNorm calibration (``calibrate_bn``; ``val/acc_derived``, the argmax cell measured with its own statistics) and
perturbation-based architecture selection (``perturbation_selection``, DARTS-PT) and resource costs
(``cost_table``, ``ResourcePenalty``: the expected FLOPs, parameters or latency of a search network)."""

from .bn_calibration import DerivedValidation, calibrate_bn, derived_accuracy, preserved_bn_statistics
from .collapse import (
    STOP_RULES,
    CollapseGuard,
    darts_plus_stop,
    eigen_stop,
    eigen_window_means,
    hessian_eigenvalue,
    skip_connections,
)
from .resources import RESOURCES, CostTable, LatencyTable, ResourcePenalty, cost_table
from .selection import (
    SELECTIONS,
    PerturbationSelection,
    SelectionResult,
    SelectionTransform,
    perturbation_selection,
    validation_accuracy,
)

__all__ = [
    "CollapseGuard",
    "DerivedValidation",
    "CostTable",
    "LatencyTable",
    "PerturbationSelection",
    "RESOURCES",
    "ResourcePenalty",
    "SELECTIONS",
    "STOP_RULES",
    "SelectionResult",
    "SelectionTransform",
    "calibrate_bn",
    "cost_table",
    "darts_plus_stop",
    "derived_accuracy",
    "eigen_stop",
    "eigen_window_means",
    "hessian_eigenvalue",
    "perturbation_selection",
    "preserved_bn_statistics",
    "skip_connections",
    "validation_accuracy",
]
