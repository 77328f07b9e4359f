"""Random transformations that make feature-visualization images robust (plain torch).

Each step, each image of the batch gets its own random draw from its own generator: padding with
mid-grey, a jitter, a scale, a rotation and a second small jitter, applied at once as one affine
transformation (``affine_grid`` / ``grid_sample``). An image whose visualization survives them
shows what the unit responds to, not adversarial high-frequency noise.

Example::

    >>> from cnnviz.transforms import Robustness
    >>> robust = Robustness()                    # Lucid's defaults: pad 12, jitter 8, scale 0.9-1.1, rotate 10
    >>> out = robust(images, generators)          # B x C x (H+24) x (W+24)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class Robustness:
    """The transformation's ranges; ``Robustness.none()`` does nothing."""

    pad: int = 12
    jitter: int = 8
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = 10.0
    jitter_after: int = 4

    @staticmethod
    def none() -> Robustness:
        return Robustness(pad=0, jitter=0, scale=(1.0, 1.0), rotate=0.0, jitter_after=0)

    def __call__(self, images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """``B x C x H x W`` images in [0, 1] -> transformed, ``B x C x (H + 2 pad) x (W + 2 pad)``."""
        if self.pad:
            images = F.pad(images, (self.pad,) * 4, value=0.5)
        if not self.jitter and self.scale == (1.0, 1.0) and not self.rotate and not self.jitter_after:
            return images
        batch, _, height, width = images.shape
        draws = torch.stack([torch.rand(6, generator=g) for g in generators])  # B x 6, one row per image
        angle = torch.deg2rad((draws[:, 0] * 2 - 1) * self.rotate)
        low, high = self.scale
        scale = low + (high - low) * draws[:, 1]
        shift_x = (draws[:, 2] * 2 - 1) * self.jitter + (draws[:, 4] * 2 - 1) * self.jitter_after
        shift_y = (draws[:, 3] * 2 - 1) * self.jitter + (draws[:, 5] * 2 - 1) * self.jitter_after
        # grid_sample reads the input at theta @ (x, y, 1) in [-1, 1] coordinates: the inverse map
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([
            torch.stack([cos, -sin * height / width, 2 * shift_x / width], dim=1),
            torch.stack([sin * width / height, cos, 2 * shift_y / height], dim=1),
        ], dim=1).to(images.device, images.dtype)
        grid = F.affine_grid(theta, (batch, images.shape[1], height, width), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
