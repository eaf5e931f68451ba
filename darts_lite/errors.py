"""Errors a user can cause, raised by any module and caught by the entry point, which prints one line for each
(no traceback). They live here, below every other module, so that raising one never imports a module above."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value a user set is invalid; the message lists every such value."""


class RunFailed(RuntimeError):
    """A run could not do its work though its config was valid: e.g. more of a study's or evolution's evaluations
    failed than ``evaluation.max_failed_share`` allows. The message summarises the failures by cause and says where
    the full errors are and how to continue."""


class DatasetUnavailable(RuntimeError):
    """The dataset's files are missing, could not be downloaded, or cannot be read; the message says what to do."""


class CheckpointWriteFailed(RunFailed):
    """A checkpoint could not be written (a full disk, a folder that cannot be written, a file size limit): the
    previous checkpoint, if any, is whole; the message says which and the entry point adds how to continue."""
