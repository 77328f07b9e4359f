"""Units that are one linear filter of the input (a first convolution, or one behind an
activation): found from their input gradient, rendered as their exact maximum in the valid range.
Also the receptive-field size that sizes the renders' canvas."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnviz.core.gradients import gradients_on
from cnnviz.core.probe import check_size, probe


def receptive_field_size(model, layer: str, preprocessing) -> int:
    """The side of the input region that reaches the centre unit of ``layer`` (the support of
    its input gradient on a random input at the model's input size)."""
    height, width = preprocessing.input_size
    generator = torch.Generator().manual_seed(0)
    with gradients_on(model), probe(model, [layer], keep_graph=True) as recorder:
        x = torch.randn(1, preprocessing.channels, height, width, generator=generator).requires_grad_(True)
        recorder.run(x)
        values = recorder[layer]
        if values.dim() != 4:
            return max(height, width)
        centre = values[0, :, values.shape[2] // 2, values.shape[3] // 2].sum()
        (gradient,) = torch.autograd.grad(centre, x)
    support = gradient[0].abs().sum(dim=0) > 0
    rows, columns = support.any(dim=1).nonzero(), support.any(dim=0).nonzero()
    if not len(rows):
        return max(height, width)
    return int(max(rows.max() - rows.min() + 1, columns.max() - columns.min() + 1))


@dataclass
class Filters:
    rows: list[int]
    images: list[torch.Tensor]
    canvas: tuple[int, int]  # the canvas of an automatic size: the filter's field and a margin


FILTER_FIELD = 16  # units with a larger receptive field are not tested


def filter_units(model, plan, preprocessing, canvas, size, device) -> Filters | None:
    """The plan's units whose response is a function of one linear filter of the input (their
    input gradient at the centre points the same way at every input where it is not zero): a
    first convolution, or one behind an activation. Each gets the exact maximum of that filter
    under the valid range (0 and 1), at the centre, grey elsewhere; weights under a tenth of the
    largest stay grey, so the image shows the filter, not noise. ``None`` when there are none."""
    if plan.ref is None or plan.ref.is_output or plan.kind not in ("channel", "neuron") or plan.diverse > 1:
        return None
    if plan.ref.position is not None:
        return None
    layer = plan.layers[0]
    field_size = receptive_field_size(model, layer, preprocessing)
    if field_size > FILTER_FIELD:
        return None
    side = max(8, field_size + 2)
    test = (side, side)
    if check_size(model, [layer], preprocessing.channels, test, tuple(preprocessing.input_size)).runs is False:
        test = tuple(canvas)
    channels = plan.channels
    tries = 4
    generator = torch.Generator().manual_seed(0)
    with gradients_on(model), probe(model, [layer], keep_graph=True) as recorder:
        mean = torch.as_tensor(preprocessing.mean, dtype=torch.float32).view(1, -1, 1, 1).to(device)
        std = torch.as_tensor(preprocessing.std, dtype=torch.float32).view(1, -1, 1, 1).to(device)
        x = torch.rand(tries * len(channels), preprocessing.channels, *test, generator=generator).to(device)
        x = x.requires_grad_(True)
        recorder.run((x - mean) / std)
        maps = recorder[layer]
        if maps.dim() != 4:
            return None
        index = torch.tensor(channels, device=maps.device).repeat(tries)
        centre = maps[torch.arange(len(maps), device=maps.device), index, maps.shape[2] // 2, maps.shape[3] // 2]
        (gradient,) = torch.autograd.grad(centre.sum(), x)
    gradient = gradient.detach().view(tries, len(channels), -1)
    rows, images = [], []
    for k, channel in enumerate(channels):
        grads = gradient[:, k]
        alive = grads[grads.abs().amax(dim=1) > 0]
        if len(alive) < 2:
            continue
        unit = torch.nn.functional.normalize(alive, dim=1)
        if (unit @ unit.t()).min() < 0.999:
            continue
        weights = alive[0].view(preprocessing.channels, *test).cpu()
        sign = -1 if plan.negative else 1
        level = weights.abs().max()
        pattern = 0.5 + 0.5 * sign * torch.sign(weights) * (weights.abs() > 0.1 * level)
        for row in range(len(plan.units)):
            if plan.groups[row] == k:
                rows.append(row)
                images.append(pattern.float())
    if len(rows) < len(plan.units):  # all or none: one measure for the whole rendering
        return None
    return Filters(rows, images, test)
