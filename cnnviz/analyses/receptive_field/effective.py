"""The effective receptive field (Luo et al., 2016): :func:`effective_receptive_field`, the
magnitude of the gradient of one unit with respect to the input, averaged over images, and the
radii around the centre of the unit's theoretical region that hold 50% and 95% of its mass.
"""
from __future__ import annotations

import torch

from cnnviz.analyses.receptive_field.results import EffectiveReceptiveField
from cnnviz.analyses.receptive_field.theoretical import receptive_field
from cnnviz.core.gradients import gradients_on
from cnnviz.core.model import preprocessing_of, unwrap
from cnnviz.core.probe import probe
from cnnviz.core.references import Reference, resolve_all
from cnnviz.errors import CnnvizError
from cnnviz.inputs.batches import stack_images
from cnnviz.inputs.images import display_image


def effective_receptive_field(model, images, target: Reference, *, max_images: int = 16) -> EffectiveReceptiveField:
    """The effective receptive field (Luo et al., 2016) of the centre unit of a layer.

    The gradient of the unit (the layer's channels summed, or the channel of ``target``) with respect
    to the input, in absolute value, summed over input channels and averaged over the images.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left exactly as it was).
        images: model inputs ``N x C x H x W`` or an image spec (``samples``, a folder, a file;
            a ``C x H x W`` tensor is one image in [0, 1]).
        target: a layer (``"features.10"``), a channel (``"features.10:5"``) or a neuron
            (``"features.10:5@3,3"``; without a position the centre unit is used).
        max_images: use at most this many images.

    Example::

        >>> import cnnviz
        >>> loaded = cnnviz.load_model("builtin:photos")
        >>> erf = cnnviz.effective_receptive_field(loaded, "samples", "features.13", max_images=3)
        >>> erf.unit, erf.map.shape, erf.theoretical.size, erf.images
        ((8, 8), torch.Size([64, 64]), (16, 16), 3)
        >>> round(erf.radius_50) < round(erf.radius_95) <= 8     # most of the gradient near the centre
        True
    """
    inputs, _ = stack_images(images, preprocessing_of(model), limit=max_images)
    resolved = resolve_all(model, [target])[0]
    layer = resolved.layer_text if not resolved.is_output else "logits"  # the layer's name, without a unit
    # gradients whatever the caller's mode (a notebook may sit in torch.no_grad() or torch.inference_mode())
    with gradients_on(model), probe(model, [layer], keep_graph=True) as recorder:
        module, _ = unwrap(model)
        inputs = inputs.detach().clone().requires_grad_(True)
        recorder.run(inputs)
        output = recorder[layer]
        if output.dim() != 4:
            raise CnnvizError(
                f"{layer} has output shape {tuple(output.shape)}, not a spatial map, so it has no centre unit; "
                "pick a convolution or pooling layer ('cnnviz rf' lists them)"
            )
        resolved.check(output.shape)
        height, width = output.shape[-2:]
        row, column = resolved.position if resolved.position is not None else (height // 2, width // 2)
        selected = output[:, :, row, column] if resolved.channel is None else output[:, resolved.channel, row, column]
        gradient, = torch.autograd.grad(selected.sum(), inputs)
    magnitude = gradient.detach().abs().sum(dim=1).mean(dim=0).float().cpu()
    theoretical = receptive_field(model, f"{layer}:{resolved.channel or 0}@{row},{column}", input_size=tuple(inputs.shape[-2:]))
    top, left = theoretical.offset
    centre = (top + (theoretical.size[0] - 1) / 2, left + (theoretical.size[1] - 1) / 2)
    radius_50, radius_95 = _radii(magnitude, centre, (0.5, 0.95))
    image = display_image(inputs[0].detach(), preprocessing_of(model))
    return EffectiveReceptiveField(
        str(resolved) if resolved.position is not None else f"{layer}@{row},{column}", (row, column), magnitude,
        centre, radius_50, radius_95, theoretical, image, inputs.shape[0],
    )


def _radii(mass: torch.Tensor, centre, fractions) -> list[float]:
    height, width = mass.shape
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1) - centre[0]
    columns = torch.arange(width, dtype=torch.float32).view(1, -1) - centre[1]
    distance = (rows ** 2 + columns ** 2).sqrt().flatten()
    order = distance.argsort()
    cumulative = mass.flatten()[order].cumsum(0)
    total = float(cumulative[-1])
    if total <= 0:
        return [float("nan")] * len(fractions)
    return [float(distance[order][int(torch.searchsorted(cumulative, fraction * total))]) for fraction in fractions]
