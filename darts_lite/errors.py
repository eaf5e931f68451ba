"""Errors a user can cause, raised by any module and caught by the entry point, which prints one line for each
(no traceback). They live here, below every other module, so that raising one never imports a module above."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value a user set is invalid; the message lists every such value."""
