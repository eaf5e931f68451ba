"""Speed switches shared by the Lightning modules: NHWC memory layout and torch.compile.

For a LightningModule with ``self.net`` and ``hparams.channels_last`` / ``hparams.compile``.
"""

from __future__ import annotations

import torch


class SpeedSwitches:
    """channels_last: NHWC convolutions took about half the time of NCHW for a paper-size supernet
    on this project's CPU benchmark; on GPUs the layout pays with mixed precision.
    compile: ``torch.compile`` the network once at setup (the first steps pay the compile time)."""

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def setup(self, stage: str) -> None:
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.hparams.get("compile") and not getattr(self, "_compiled", False):
            self.net.compile()
            self._compiled = True

    def forward(self, x: torch.Tensor):
        return self.net(self._layout(x))
