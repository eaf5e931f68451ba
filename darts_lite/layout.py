"""Memory layout shared by the Lightning modules: NHWC (channels_last) when hparams.channels_last."""

from __future__ import annotations

import torch


class ChannelsLastMixin:
    """For a LightningModule with ``self.net`` and an ``hparams.channels_last`` flag.

    NHWC convolutions took about half the time of NCHW for a paper-size supernet on this
    project's CPU benchmark; on GPUs the layout pays with mixed precision.
    """

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def setup(self, stage: str) -> None:
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor):
        return self.net(self._layout(x))
