"""How a feature-visualization image is parameterised: the tensors the optimiser moves.

* ``pixel``: one value per pixel and channel;
* ``fft``: the image's Fourier spectrum, each frequency scaled by 1 / frequency so that every
  frequency is equally easy to change (natural images have about that spectrum), with the colour
  channels decorrelated by a fixed matrix (the method published with Lucid, re-derived here).

Either way the result goes through a sigmoid into (0, 1), the valid pixel range, before the model's
own normalisation. Each image has its own generator, so the same seed gives the same image whether
it is rendered alone or in a batch.

Example::

    >>> from cnnviz.analyses.feature_visualization.parameterization import image_parameters
    >>> params = image_parameters("fft", [torch.Generator().manual_seed(0)], channels=3, size=(64, 96))
    >>> params.images().shape
    torch.Size([1, 3, 64, 96])
"""
from __future__ import annotations

import torch

from cnnviz.errors import CnnvizError

PARAMETERISATIONS = ("fft", "pixel")

#: square root of the colour correlation of natural images (Lucid's constant), per pixel
#: rgb = COLOUR @ decorrelated
_COLOUR = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOUR = _COLOUR / _COLOUR.norm(dim=0).max()


class ImageParameters:
    """The tensors behind a batch of images, and the images they make (``B x C x H x W`` in (0, 1))."""

    def __init__(self, kind: str, tensors: list[torch.Tensor], channels: int, size: tuple[int, int]):
        self.kind, self.tensors, self.channels, self.size = kind, tensors, channels, size
        self.colour = COLOUR
        if kind == "fft":
            height, width = size
            rows = torch.fft.fftfreq(height)[:, None]
            columns = torch.fft.rfftfreq(width)[None, :]
            frequency = (rows**2 + columns**2).sqrt()
            # 1 / frequency, and the 1/4 that keeps the first images' pixels near 0, in one factor
            # (one multiplication per step), for the real and imaginary parts alike
            scale = 0.25 / frequency.clamp(min=1.0 / max(height, width))
            self.scale = scale[..., None].expand(*scale.shape, 2).contiguous()

    def parameters(self) -> list[torch.Tensor]:
        return self.tensors

    def images(self) -> torch.Tensor:
        if self.kind == "fft":
            (spectrum,) = self.tensors  # B x C x H x (W // 2 + 1) x 2: real and imaginary parts
            if self.scale.device != spectrum.device or self.scale.dtype != spectrum.dtype:
                self.scale = self.scale.to(spectrum.device, spectrum.dtype)
            raw = torch.fft.irfft2(torch.view_as_complex(spectrum * self.scale), s=self.size, norm="ortho")
        else:
            (raw,) = self.tensors
        if self.channels == 3:
            # one batched 3x3 product per image; einsum's result came out channel-major, which every
            # later operation then read with strides (measured with the sigmoid, the sampling and
            # their gradients: 0.90 -> 0.78 ms for 8 images of 64 px)
            if self.colour.device != raw.device or self.colour.dtype != raw.dtype:
                self.colour = self.colour.to(raw.device, raw.dtype)
            batch, _, height, width = raw.shape
            raw = torch.matmul(self.colour, raw.reshape(batch, 3, height * width)).view(batch, 3, height, width)
        return torch.sigmoid(raw)


def image_parameters(
    kind: str, generators: list[torch.Generator], channels: int, size: tuple[int, int],
    device: torch.device | str = "cpu", spread: float = 0.01,
) -> ImageParameters:
    """Fresh parameters for ``len(generators)`` images, each drawn from its own generator."""
    if kind not in PARAMETERISATIONS:
        raise CnnvizError(f"unknown parameterisation {kind!r}; use fft or pixel")
    height, width = size
    if kind == "fft":
        shape = (channels, height, width // 2 + 1)
        spectra = []
        for g in generators:  # each image's real part, then its imaginary part, from its own generator
            real = torch.randn(shape, generator=g)
            spectra.append(torch.stack([real, torch.randn(shape, generator=g)], dim=-1) * spread)
        tensors = [torch.stack(spectra).to(device).requires_grad_(True)]
    else:
        shape = (channels, height, width)
        pixels = torch.stack([torch.randn(shape, generator=g) * spread for g in generators])
        tensors = [pixels.to(device).requires_grad_(True)]
    return ImageParameters(kind, tensors, channels, (height, width))
