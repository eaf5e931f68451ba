"""Tricks around a search: the collapse guard (per-epoch collapse measures, DARTS+ and DARTS-ES early stops) and
BatchNorm calibration (``calibrate_bn``; ``val/acc_derived``, the argmax cell measured with its own statistics)."""

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

__all__ = [
    "STOP_RULES",
    "CollapseGuard",
    "DerivedValidation",
    "calibrate_bn",
    "darts_plus_stop",
    "derived_accuracy",
    "eigen_stop",
    "eigen_window_means",
    "hessian_eigenvalue",
    "preserved_bn_statistics",
    "skip_connections",
]
