"""Random transformations that make feature-visualization images robust (plain torch).

Each step, each image of the batch gets its own random draw from its own generator: padding with
mid-grey, a jitter, a scale, a rotation and a second small jitter, applied at once as one affine
transformation (one ``grid_sample``; the padding is folded into it). An image whose visualization survives them
shows what the unit responds to, not adversarial high-frequency noise.

A model that takes one input size only (flatten then ``Linear``) gets the same transformations
cropped back to the image's size (``out=`` the image's own size): the padded, jittered, scaled
and rotated canvas is sampled at the centre ``H x W``, so the network sees exactly its size.

Example::

    >>> import torch
    >>> from cnnviz.analyses.feature_visualization.transforms import Robustness
    >>> images = torch.rand(2, 3, 32, 32)                      # B x C x H x W in [0, 1]
    >>> generators = [torch.Generator().manual_seed(seed) for seed in range(2)]   # one per image
    >>> robust = Robustness()                    # Lucid's defaults: pad 12, jitter 8, scale 0.9-1.1, rotate 10
    >>> robust(images, generators).shape         # B x C x (H+24) x (W+24)
    torch.Size([2, 3, 56, 56])
    >>> robust(images, generators, out=images.shape[2:]).shape   # the same, cropped back to H x W
    torch.Size([2, 3, 32, 32])
"""
from __future__ import annotations

import functools
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

    @property
    def identity(self) -> bool:
        """Whether the transformation only pads (or does nothing)."""
        return not self.jitter and self.scale == (1.0, 1.0) and not self.rotate and not self.jitter_after

    def __call__(self, images: torch.Tensor, generators: list[torch.Generator], out=None) -> torch.Tensor:
        """``B x C x H x W`` images in [0, 1] -> transformed, ``B x C x (H + 2 pad) x (W + 2 pad)``
        (or ``out``: the centre of that canvas, e.g. ``(H, W)`` for a fixed-size model)."""
        size = tuple(images.shape[2:])
        if self.identity:
            return self.apply(images, None, out)
        return self.apply(images, self.draw(generators, 1, size, out)[0], out)

    def output_size(self, size: tuple[int, int], out=None) -> tuple[int, int]:
        """What the network sees of an image of ``size``: the padded canvas, or ``out``."""
        return tuple(out) if out is not None else (size[0] + 2 * self.pad, size[1] + 2 * self.pad)

    def draw(self, generators: list[torch.Generator], steps: int, size: tuple[int, int], out=None) -> torch.Tensor:
        """The random transformations of ``steps`` steps at once (``steps x B x 2 x 3``, each
        image's from its own generator): a render draws them all before its first step, so that
        no step spends time on a few dozen operations on tensors of 6 numbers. ``out``: the size
        sampled at the canvas's centre (default: the whole padded canvas)."""
        height, width = size
        out_h, out_w = self.output_size(size, out)
        draws = torch.stack([torch.rand(steps, 6, generator=g) for g in generators], dim=1)  # steps x B x 6
        angle = torch.deg2rad((draws[..., 0] * 2 - 1) * self.rotate)
        low, high = self.scale
        scale = low + (high - low) * draws[..., 1]
        shift_x = (draws[..., 2] * 2 - 1) * self.jitter + (draws[..., 4] * 2 - 1) * self.jitter_after
        shift_y = (draws[..., 3] * 2 - 1) * self.jitter + (draws[..., 5] * 2 - 1) * self.jitter_after
        # grid_sample reads the input at theta @ (x, y, 1) in [-1, 1] coordinates: the inverse map,
        # on the padded canvas; the padding itself is not materialised: the unpadded image's
        # coordinates are the padded canvas's times (padded size / size), and sampling
        # ``images - 0.5`` with zeros outside, plus 0.5, is sampling the image padded with grey.
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        return torch.stack([
            torch.stack([cos * out_w / width, -sin * out_h / width, 2 * shift_x / width], dim=-1),
            torch.stack([sin * out_w / height, cos * out_h / height, 2 * shift_y / height], dim=-1),
        ], dim=-2)

    def apply(self, images: torch.Tensor, theta: torch.Tensor | None, out=None) -> torch.Tensor:
        """Transform a batch with one step's draw (``B x 2 x 3`` from :meth:`draw`, with the same
        ``out``; ``None`` when the transformation is the identity)."""
        size = tuple(images.shape[2:])
        out_h, out_w = self.output_size(size, out)
        if theta is None or self.identity:
            extra_h, extra_w = out_h - size[0], out_w - size[1]
            if extra_h < 0 or extra_w < 0:  # the centre of the image: a crop
                top, left = -extra_h // 2, -extra_w // 2
                return images[:, :, top:top + out_h, left:left + out_w]
            if not (extra_h or extra_w):
                return images
            top, left = extra_h // 2, extra_w // 2
            return F.pad(images, (left, extra_w - left, top, extra_h - top), value=0.5)
        grid = _affine_grid(theta.to(images.device, images.dtype), out_h, out_w)
        sampled = F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return sampled + 0.5


def _affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``affine_grid(theta, ..., align_corners=False)`` as two multiply-adds per coordinate on
    cached pixel centres (measured: 0.30 -> 0.20 ms for 8 images of 88 px; bmm with an inner size
    of 3 is slow on a CPU)."""
    xs, ys = _pixel_centres(height, width, theta.device, theta.dtype)
    t = theta[:, :, :, None, None]  # B x 2 x 3 x 1 x 1
    grid_x = torch.addcmul(torch.addcmul(t[:, 0, 2], t[:, 0, 0], xs), t[:, 0, 1], ys)
    grid_y = torch.addcmul(torch.addcmul(t[:, 1, 2], t[:, 1, 0], xs), t[:, 1, 1], ys)
    return torch.stack([grid_x, grid_y], dim=-1)


@functools.lru_cache(maxsize=16)
def _pixel_centres(height: int, width: int, device: torch.device, dtype: torch.dtype):
    """``1 x H x W`` x and y of each pixel's centre in [-1, 1] coordinates (``align_corners=False``)."""
    ys = (torch.arange(height, dtype=torch.float64) * 2 + 1) / height - 1
    xs = (torch.arange(width, dtype=torch.float64) * 2 + 1) / width - 1
    return (xs.expand(1, height, width).to(device, dtype), ys[:, None].expand(1, height, width).to(device, dtype))
