"""Reading the torch files darts_lite writes (checkpoints, network.pt, subnet.pt, predictor.pt) without trusting them.

Three rules every reader of such a file keeps:

- ``torch.load(..., weights_only=True)``: tensors and plain values only, so no object in the file runs code;
- whatever is wrong with the file (not torch's format, truncated, holding other objects or another program's
  data) is one error of the caller's type that names the file, never torch's own exception, whose message speaks
  of its internals or suggests loading the file with ``weights_only=False``;
- a network is built from the arguments a file records only after the file's weights were found to have the
  shapes that network has (compared on the ``meta`` device, which holds no memory): arguments that would build a
  network far larger than the weights saved beside them (a damaged or hostile file) are refused before any memory
  is taken.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["first_line", "is_state_dict", "open_atomically", "read_torch_file", "replace_atomically", "weights_fit",
           "write_text_atomically"]


@contextlib.contextmanager
def _replacing(path: str | Path) -> Iterator[Path]:
    """The temporary file beside ``path`` for the block to write; when the block ends without an error it reaches the
    disk, then takes ``path``'s name: a kill or a fault mid-write leaves the previous file whole and nothing
    half-written behind (the error is raised)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:  # on disk before the rename, so a machine crash cannot leave it empty
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    if os.name == "posix":  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` writes the new content beside ``path``; it reaches the disk, then takes ``path``'s name: a kill
    or a fault mid-write leaves the previous file whole and nothing half-written behind (the error is raised)."""
    with _replacing(path) as tmp:
        write(tmp)


@contextlib.contextmanager
def open_atomically(path: str | Path, encoding: str = "utf-8") -> Iterator[TextIO]:
    """A text file (``newline=""``, as the csv module wants) to write ``path`` through: what the block writes takes
    ``path``'s name only when the block ends without an error, as ``replace_atomically``."""
    with _replacing(path) as tmp, open(tmp, "w", newline="", encoding=encoding) as f:
        yield f


def write_text_atomically(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """``path`` holds ``text`` whole, or still what it held before (``replace_atomically``): a run killed mid-write
    never leaves a half-written summary, genotype, table or record that a resume or a reader would take for whole."""
    replace_atomically(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def read_torch_file(path: str | Path, what: str, error: type[Exception] = ConfigError, mmap: bool = False
                    ) -> dict[str, Any]:
    """The dict the torch file at ``path`` holds, read weights-only; ``error`` naming ``what`` (e.g. "checkpoint
    ckpt_path=...", the file included) for a file that cannot be read or holds something other than a dict.
    ``mmap``: map the tensors instead of reading them (a large checkpoint read for its record)."""
    if Path(path).is_dir():
        raise error(f"{what}: a folder, not a file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises many types for a folder, a truncated zip, a pickle of objects, other bytes
        raise error(f"{what}: not a readable torch file ({type(e).__name__}; a truncated file, another format, or one "
                    "holding objects other than tensors and plain values)") from None
    if not isinstance(saved, dict):
        raise error(f"{what}: the file holds a {type(saved).__name__}, not the dict darts_lite writes")
    return saved


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), at most 200 characters."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def is_state_dict(state: Any) -> bool:
    """Whether ``state`` is a mapping of parameter names to tensors, as ``nn.Module.state_dict()`` gives."""
    return isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def weights_fit(build: Callable[[], nn.Module], state: Any, what: str, error: type[Exception] = ConfigError) -> None:
    """``error`` naming ``what`` unless ``state`` (a file's weights) has exactly the names and shapes of the module
    ``build()`` makes; ``build`` runs on the meta device, so no memory is taken for the module however large its
    arguments make it (its own errors, arguments of the wrong type say, become ``error`` too)."""
    if not is_state_dict(state):
        raise error(f"{what}: its state_dict is not a mapping of parameter names to tensors")
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    except Exception as e:  # the arguments the file records do not build the module at all
        raise error(f"{what}: the network it records cannot be built ({first_line(e)})") from None
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        other = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
        parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", extra), ("of other shapes", other)) if keys]
        raise error(f"{what}: the weights do not fit the network it records ({'; '.join(parts)})")
