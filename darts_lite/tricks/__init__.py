"""Tricks around a search: the collapse guard (per-epoch collapse measures, DARTS+ and DARTS-ES early stops)."""

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
    "darts_plus_stop",
    "eigen_stop",
    "eigen_window_means",
    "hessian_eigenvalue",
    "skip_connections",
]
