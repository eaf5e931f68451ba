"""Checkpoints: written atomically, and which one a run continues from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ..errors import ConfigError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its final name, then renames: a kill mid-write leaves the old one whole."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
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


def resume_checkpoint(cfg: DictConfig, out_dir: Path) -> str | None:
    """The checkpoint to continue from: ckpt_path, or with resume=true the run folder's last.ckpt."""
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint file")
        return str(path)
    if cfg.get("resume"):
        last = out_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(
                f"resume=true: no checkpoint at {last}; pass the run folder to continue, e.g. "
                "`python -m darts_lite <same overrides> resume=true hydra.run.dir=runs/search/<run>`"
            )
        return str(last)
    return None
