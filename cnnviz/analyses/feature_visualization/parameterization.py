"""How a feature-visualization image is parameterised: the tensors the optimiser moves.

* ``pixel``: one value per pixel and channel;
* ``fft``: the image's Fourier spectrum, each frequency scaled by 1 / frequency so that every
  frequency is equally easy to change (natural images have about that spectrum), with the colour
  channels decorrelated by a fixed matrix (the method published with Lucid, re-derived here);
* ``maco``: only the spectrum's phase moves; its magnitude is fixed to the mean magnitude of
  natural photographs (the sample photographs, measured at the image's size, colours decorrelated
  the same way): MACO, Fel et al., NeurIPS 2023, implemented here from the paper's description.
  Deep networks given the ``fft`` freedom tend to fill images with high frequencies; a fixed
  natural spectrum leaves them only where things are.

Every way the result goes through a sigmoid into (0, 1), the valid pixel range, before the model's
own normalisation. :meth:`ImageParameters.encode` puts a given image into the parameters (a
render that starts from a photograph). Each image has its own generator, so the same seed gives the same image whether
it is rendered alone or in a batch.

Example::

    >>> import torch
    >>> from cnnviz.analyses.feature_visualization.parameterization import image_parameters
    >>> params = image_parameters("fft", [torch.Generator().manual_seed(0)], channels=3, size=(64, 96))
    >>> params.images().shape
    torch.Size([1, 3, 64, 96])
"""
from __future__ import annotations

import functools

import torch
from torch.nn import functional as F

from cnnviz.errors import CnnvizError

PARAMETERISATIONS = ("fft", "pixel", "maco")

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
        elif self.kind == "maco":
            (phase,) = self.tensors  # B x C x H x (W // 2 + 1)
            magnitude = self._magnitude(phase)
            raw = torch.fft.irfft2(torch.polar(magnitude.expand_as(phase), phase), s=self.size, norm="ortho")
            # each image standardised (all its channels together, so that colours keep their balance):
            # the phase alone would otherwise also choose the contrast, and a fixed magnitude gives
            # images too faint for the sigmoid (class logits of the pattern model stayed below 0)
            centred = raw - raw.mean(dim=(1, 2, 3), keepdim=True)
            raw = centred / centred.pow(2).mean(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
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

    def _magnitude(self, like: torch.Tensor) -> torch.Tensor:
        magnitude = getattr(self, "magnitude", None)
        if magnitude is None or magnitude.device != like.device or magnitude.dtype != like.dtype:
            self.magnitude = natural_magnitude(self.channels, self.size).to(like.device, like.dtype)
        return self.magnitude

    @torch.no_grad()
    def encode(self, rows: list[int], images: torch.Tensor) -> None:
        """Make images ``rows`` of the batch ``images`` (``len(rows) x C x H x W`` in [0, 1]) as
        closely as the parameterisation can (exactly for ``pixel`` and ``fft``; for ``maco``, the
        images' phase under the fixed magnitude)."""
        raw = torch.logit(images.to(self.tensors[0].device, torch.float32).clamp(0.02, 0.98))
        if self.channels == 3:
            batch, _, height, width = raw.shape
            inverse = torch.linalg.inv(COLOUR.double()).float().to(raw.device)
            raw = torch.matmul(inverse, raw.reshape(batch, 3, height * width)).view(batch, 3, height, width)
        (tensor,) = self.tensors
        index = torch.tensor(rows, device=tensor.device)
        if self.kind == "pixel":
            tensor.index_copy_(0, index, raw.to(tensor.dtype))
            return
        spectrum = torch.fft.rfft2(raw, norm="ortho")
        if self.kind == "fft":
            values = torch.view_as_real(spectrum) / self.scale.to(raw.device)
        else:
            values = spectrum.angle()
        tensor.index_copy_(0, index, values.to(tensor.dtype))

    def select(self, rows: list[int]) -> ImageParameters:
        """The parameters of images ``rows`` only (fresh leaves: the optimiser is rebuilt too)."""
        index = torch.tensor(rows, device=self.tensors[0].device)
        chosen = ImageParameters.__new__(ImageParameters)
        chosen.__dict__.update(self.__dict__)
        chosen.tensors = [t.detach().index_select(0, index).requires_grad_(True) for t in self.tensors]
        return chosen


@functools.lru_cache(maxsize=8)
def natural_magnitude(channels: int, size: tuple[int, int]) -> torch.Tensor:
    """The mean Fourier magnitude (``C x H x (W // 2 + 1)``, orthonormal FFT) of the sample
    photographs and of their mirror images (so that neither diagonal is preferred), each cut to the
    aspect of ``size`` at its centre, resized to ``size``, turned into the parameterisation's space
    (logit of the pixels, colours decorrelated) and centred. Only its shape matters: the images it
    makes are standardised."""
    from cnnviz.inputs import samples

    height, width = size
    total = None
    names = samples.names()
    for name in names:
        photo = samples.tensor(name)
        photo = photo.expand(3, -1, -1) if photo.shape[0] == 1 else photo
        photo = photo[:channels] if channels <= 3 else torch.cat([photo, photo[-1:].expand(channels - 3, -1, -1)])
        _, rows, columns = photo.shape
        scale = min(rows / height, columns / width)
        crop_h, crop_w = int(height * scale), int(width * scale)
        top, left = (rows - crop_h) // 2, (columns - crop_w) // 2
        photo = F.interpolate(photo[None, :, top:top + crop_h, left:left + crop_w], size=size, mode="area",
                              antialias=False)[0]
        raw = torch.logit(photo.clamp(0.02, 0.98))
        if channels == 3:
            raw = (torch.linalg.inv(COLOUR.double()).float() @ raw.reshape(3, -1)).view(3, height, width)
        raw = raw - raw.mean(dim=(1, 2), keepdim=True)
        for mirrored in (raw, raw.flip(1), raw.flip(2), raw.flip(1, 2)):
            magnitude = torch.fft.rfft2(mirrored, norm="ortho").abs()
            total = magnitude if total is None else total + magnitude
    magnitude = total / (4 * len(names))
    # a centred photo has no mean; the DC term keeps a little so the phase can choose a mean colour
    magnitude[:, 0, 0] = magnitude[:, 0, 1:].mean(dim=1)
    return magnitude


def image_parameters(
    kind: str, generators: list[torch.Generator], channels: int, size: tuple[int, int],
    device: torch.device | str = "cpu", spread: float = 0.01,
) -> ImageParameters:
    """Fresh parameters for ``len(generators)`` images, each drawn from its own generator."""
    if kind not in PARAMETERISATIONS:
        raise CnnvizError(f"unknown parameterisation {kind!r}; use fft, pixel or maco")
    height, width = size
    if kind == "fft":
        shape = (channels, height, width // 2 + 1)
        spectra = []
        for g in generators:  # each image's real part, then its imaginary part, from its own generator
            real = torch.randn(shape, generator=g)
            spectra.append(torch.stack([real, torch.randn(shape, generator=g)], dim=-1) * spread)
        tensors = [torch.stack(spectra).to(device).requires_grad_(True)]
    elif kind == "maco":  # a uniformly random phase per frequency
        shape = (channels, height, width // 2 + 1)
        phases = torch.stack([(torch.rand(shape, generator=g) * 2 - 1) * torch.pi for g in generators])
        tensors = [phases.to(device).requires_grad_(True)]
    else:
        shape = (channels, height, width)
        pixels = torch.stack([torch.randn(shape, generator=g) * spread for g in generators])
        tensors = [pixels.to(device).requires_grad_(True)]
    return ImageParameters(kind, tensors, channels, (height, width))
