"""The CAM family: class activation maps of one layer for any unit, written in torch on the probe.

Grad-CAM++ (Chattopadhay et al., 2018), XGrad-CAM (Fu et al., 2020), LayerCAM (Jiang et al., 2021),
Score-CAM (Wang et al., 2020) and Eigen-CAM (Muhammad and Yeasin, 2020), with pytorch-grad-cam's
smoothing options (``eigen_smooth``, ``aug_smooth``). :func:`cnnviz.attributions` calls
:func:`class_activation_map` with the layer it chose (:func:`cnnviz.analyses.cam_layer.choose_cam_layer`: the last layer with spatial
maps that runs once on the target's path) and upsamples the result to the input.

Why written here rather than taken from pytorch-grad-cam or torch-cam: both keep the layer's output
tensor from a forward hook (``output.detach()``, ``output.cpu().detach()``), which shares its
memory with what the network goes on to modify in place. On torchvision's resnet18 at
``layer4.1.bn2`` (then ``out += identity`` and an in-place ReLU) they read the block's output
instead of the normalisation's: maps off by up to 100 % of their range (torch-cam also takes its
gradient with respect to the modified tensor). On a module that runs twice, pytorch-grad-cam
silently explains the first call and torch-cam the last. torch-cam's Grad-CAM++ divides a copy
(``alpha[mask].div_``), so its weights are ``sum(grad^2 * relu(grad))``, not the paper's. And both
run the whole network for a class score and take a class index or a callable on the output only,
where cnnviz explains any unit and stops the pass after it. Here one probe pass gives the target
values and the layer's activations and gradients: a detour hook keeps a private copy of the
layer's output (a leaf of the graph) and hands the network a clone of it, so in-place operations
after the layer change the clone, never the values or the gradient read here; the pass needs no
graph before the layer.

Conventions (each map ``N x h x w`` at the layer's resolution, then ReLU; ``A``: the activations
``N x C x h x w``, ``g``: the gradient of the target value with respect to them):

* ``gradcam_plus_plus``: weights ``sum_ij relu(g) * alpha``, ``alpha = g^2 / (2 g^2 + sum_ab A * g^3)``
  (eq. 19 of the paper, zero where ``g == 0``; eps 1e-6), as pytorch-grad-cam.
* ``xgradcam``: weights ``sum_ij g * A / (sum_ij A + 1e-7)``, as pytorch-grad-cam.
* ``layercam``: the map ``sum_k relu(g) * A``, no channel weights.
* ``scorecam``: each channel, min-max scaled to [0, 1] at the layer's resolution (eps 1e-8) and
  upsampled bilinearly to the input (torch-cam's masks), masks the input; the target's raw value on
  each masked input (the logit for a class: a softmax over classes means nothing for an inner unit),
  softmax over the channels, gives the weights (both libraries' weights: torch-cam subtracts the
  unmasked score first, which a softmax ignores). A channel that is constant masks everything
  out: all such masks of all images are one zero image, run once. Masks run ``batch_size`` at a
  time across images, without gradients, the pass stopping after the target.
* ``eigencam``: the projection of the activations (each position a vector of C channels, centred
  over the positions) on their first principal component (pytorch-grad-cam's
  ``get_2d_projection``). An SVD's sign is arbitrary (pytorch-grad-cam keeps numpy's); here it is
  fixed so that the projection correlates positively with the channel sum of the activations.
  Eigen-CAM uses no target: the map is the same for every unit.
* ``eigen_smooth``: the map is the first principal component of the weighted activations
  (``w_k A_k``, or ``relu(g) * A`` for LayerCAM; sign: positive correlation with their channel sum,
  the unsmoothed map) instead of their channel sum. Eigen-CAM is a projection already: it ignores it.
* ``aug_smooth``: pytorch-grad-cam's test-time augmentation (ttach's ``HorizontalFlip`` x
  ``Multiply(0.9, 1, 1.1)``: six inputs, flipped and with their normalised values scaled by 0.9,
  1 and 1.1), each map flipped back and the six averaged. pytorch-grad-cam min-max scales each map
  before the mean; here the raw maps are averaged, so the result stays in the target's units. A
  neuron target (``features.10:5@7,3``) sits at one place that a flip would move: it gets the
  three scalings only.

Unlike both libraries the maps are not min-max scaled: they keep the units of ``A`` times the
weights, which a figure's colour bar shows.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from cnnviz.core.fusion import folded_copy
from cnnviz.core.memory import PassSizes
from cnnviz.core.probe import ChannelsLast, probe, register_hook
from cnnviz.core.references import LayerRef, rebound
from cnnviz.errors import CnnvizError, first_line

#: the CAM methods computed here (Grad-CAM itself is captum's, unless a smoothing option is on)
WRITTEN_HERE = ("gradcam_plus_plus", "xgradcam", "layercam", "scorecam", "eigencam")
#: the methods ``eigen_smooth`` changes
EIGEN_SMOOTHED = ("gradcam", "gradcam_plus_plus", "xgradcam", "layercam", "scorecam")
#: the methods ``aug_smooth`` changes
AUG_SMOOTHED = ("gradcam", *WRITTEN_HERE)
#: ``aug_smooth``'s factors on the normalised input (pytorch-grad-cam's default: ttach's Multiply)
AUG_FACTORS = (0.9, 1.0, 1.1)


def computed_here(method: str, smoothing: dict | None) -> bool:
    """Whether ``method``'s map is computed here (:func:`class_activation_map`): the methods written
    here, and Grad-CAM with a smoothing option on (else captum's). Their first pass also makes a
    given layer's check."""
    return method in WRITTEN_HERE or (method == "gradcam" and any((smoothing or {}).values()))


def class_activation_map(
    method: str,
    model,
    units: list[LayerRef],
    indices: list[int],
    layer: LayerRef,
    inputs: torch.Tensor,
    *,
    batch_size: int = 32,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    check=None,
) -> torch.Tensor:
    """The class activation map of ``method`` at ``layer``, ``N x 1 x h x w``, non-negative.

    Args:
        method: ``gradcam``, ``gradcam_plus_plus``, ``xgradcam``, ``layercam``, ``scorecam`` or
            ``eigencam``.
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left untouched).
        units: the distinct target units (layer references with a channel).
        indices: for each image, the index of its unit in ``units``.
        layer: the layer whose maps are weighed (it runs once per forward pass, before the units).
        inputs: the normalised inputs, ``N x C x H x W``.
        batch_size: Score-CAM's masked inputs per forward pass.
        eigen_smooth, aug_smooth: pytorch-grad-cam's smoothing options (module docstring).
        check: a given layer's check not made yet (``run()`` makes it, ``done`` says whether it
            was): made within the method's first pass (which then has gradients).
    """
    if method not in AUG_SMOOTHED:
        raise CnnvizError(f"{method!r} is not a CAM method; use one of {', '.join(AUG_SMOOTHED)}")
    if not aug_smooth:
        return _cam(method, model, units, indices, layer, inputs, batch_size, eigen_smooth, check)
    if check is not None:  # the layer is checked on the images themselves, not on an augmented copy
        check.run()
    flips = (False, True) if all(unit.position is None for unit in units) else (False,)
    copies = [(flip, factor) for flip in flips for factor in AUG_FACTORS]
    maps = {}
    for flip, factor in sorted(copies, key=lambda c: c != (False, 1.0)):  # the images as given first: their
        augmented = (inputs.flip(-1) if flip else inputs) * factor        # own errors are said as they are
        try:
            cam = _cam(method, model, units, indices, layer, augmented, batch_size, eigen_smooth, check)
        except CnnvizError as error:  # the images themselves went through: the copy took another path
            if (flip, factor) == (False, 1.0):
                raise
            copy = " ".join([*(["flipped"] if flip else []), *([f"x{factor:g}"] if factor != 1 else [])])
            raise CnnvizError(f"aug_smooth: the {copy} copy of the images fails ({first_line(error)}): the "
                              "model takes another path on it than on the images; run without aug_smooth") from None
        maps[flip, factor] = cam.flip(-1) if flip else cam
    return torch.stack([maps[c] for c in copies]).mean(dim=0)  # in the order of pytorch-grad-cam's mean


def _cam(method, model, units, indices, layer, inputs, batch_size, eigen_smooth, check=None) -> torch.Tensor:
    if method in ("eigencam", "scorecam"):
        if check is not None and not check.done:  # the pass with gradients makes the check
            activations = activations_and_gradients(model, units, indices, layer, inputs, check)[0]
        else:
            activations = _activations(model, layer, inputs)
    if method == "eigencam":
        return projection(activations).clamp(min=0)[:, None]
    if method == "scorecam":
        weights = _score_weights(model, units, indices, activations, inputs, batch_size)
        weighted = weights[:, :, None, None] * activations
    else:
        activations, gradients = activations_and_gradients(model, units, indices, layer, inputs, check)
        if method == "layercam":
            weighted = gradients.clamp(min=0) * activations
        else:
            weighted = _gradient_weights(method, activations, gradients)[:, :, None, None] * activations
    cam = projection(weighted) if eigen_smooth else weighted.sum(dim=1)
    return cam.clamp(min=0)[:, None]


def _gradient_weights(method: str, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """``N x C`` channel weights from the activations and gradients ``N x C x h x w``."""
    if method == "gradcam":
        return gradients.mean(dim=(2, 3))
    sums = activations.sum(dim=(2, 3), keepdim=True)
    if method == "xgradcam":
        return (gradients * activations).sum(dim=(2, 3)) / (sums.squeeze(-1).squeeze(-1) + 1e-7)
    squared = gradients**2
    alpha = squared / (2 * squared + sums * squared * gradients + 1e-6)
    alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
    return (gradients.clamp(min=0) * alpha).sum(dim=(2, 3))


def projection(activations: torch.Tensor) -> torch.Tensor:
    """``N x h x w``: each image's positions (vectors of C channels, centred over the positions)
    projected on their first principal component, signed so that the projection correlates
    positively with the channel sum of ``activations`` (``N x C x h x w``)."""
    positions = activations.flatten(2).transpose(1, 2).double()  # N x hw x C
    centred = positions - positions.mean(dim=1, keepdim=True)
    # the first right singular vector v of the centred matrix X, through the smaller Gram matrix
    # (X X^T: its first eigenvector is X v / |X v|, with eigenvalue |X v|^2), in float64
    if centred.shape[1] <= centred.shape[2]:
        values, vectors = torch.linalg.eigh(centred @ centred.transpose(1, 2))
        projected = vectors[..., -1] * values[..., -1:].clamp(min=0).sqrt()  # N x hw
    else:
        _, vectors = torch.linalg.eigh(centred.transpose(1, 2) @ centred)
        projected = (centred @ vectors[..., -1:]).squeeze(-1)
    total = activations.sum(dim=1).flatten(1).double()
    agreement = ((projected - projected.mean(dim=1, keepdim=True)) * (total - total.mean(dim=1, keepdim=True))).sum(dim=1)
    sign = torch.where(agreement < 0, -1.0, 1.0)
    return (sign[:, None] * projected).reshape(activations.shape[0], *activations.shape[2:]).to(activations.dtype)


# --------------------------------------------------------------------------------------------
# one pass through the probe


def unit_values(recorder, units: list[LayerRef]) -> torch.Tensor:
    """``M x U``: each unit's value per input (a channel's spatial mean, a neuron, a class score)."""
    columns = []
    for unit in units:
        value = recorder[unit]
        columns.append(value.flatten(1).mean(dim=1) if value.dim() > 1 else value)
    return torch.stack(columns, dim=1)


def activations_and_gradients(model, units, indices, layer: LayerRef, inputs: torch.Tensor, check=None):
    """The layer's activations ``N x C x h x w`` (as the layer returned them, whatever in-place
    operations follow) and the gradient of each image's target value with respect to them, from
    one forward pass (stopped after the deepest unit) and one backward pass (stopped at the layer).

    With a ``check`` not made yet, the pass makes it: it runs to the end, and the layer must run
    once, output maps (more than 1 x 1) and carry a non-zero gradient for each unit's first image
    here; if it does not, ``check.run()`` makes the full check (and says what is wrong)."""
    kept: list[torch.Tensor] = []
    checking = check is not None and not check.done
    calls: list[tuple] = []  # each call's output shape

    def detour(module, arguments, output):
        calls.append(tuple(output.shape) if isinstance(output, torch.Tensor) else None)
        if kept or not isinstance(output, torch.Tensor):
            return None
        # our own copy, a leaf of the graph; the network goes on with a clone of it, so what it
        # does in place later changes the clone only
        own = output if output.requires_grad else output.detach().clone().requires_grad_(True)
        kept.append(own)
        return own.clone()

    def again() -> None:  # the channels-last pass refused: the contiguous one starts over
        kept.clear()
        calls.clear()

    layout = ChannelsLast()
    with probe(model, units, keep_graph=True, early_exit=not checking) as recorder:
        handle = register_hook(layer.module, layer.layer_text, detour)
        try:
            layout.run(recorder, inputs, before=again)
        finally:
            handle.remove()
        values = unit_values(recorder, units)
    if not kept:
        if checking:
            check.run()
        raise CnnvizError(f"{layer.layer_text} did not run before the target; pick a layer on its path")
    selected = values[torch.arange(len(values)), torch.as_tensor(indices, device=values.device)]
    gradient = None  # none when no target depends on the layer (a check not made yet finds out)
    if selected.requires_grad:
        (gradient,) = torch.autograd.grad(selected.sum(), kept[0], allow_unused=True)
    activations = kept[0].detach()
    gradient = torch.zeros_like(activations) if gradient is None else gradient
    if checking:
        firsts = [indices.index(k) if k in indices else None for k in range(len(units))]
        shape = calls[0]
        if (len(calls) == 1 and shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1
                and None not in firsts and all(unit.layer != layer.layer for unit in units)
                and all(bool(gradient[i].abs().sum() > 0) for i in firsts)):
            check.done = True
        else:
            check.run()
    return activations, gradient


def _activations(model, layer: LayerRef, inputs: torch.Tensor) -> torch.Tensor:
    """The layer's activations ``N x C x h x w``, without gradients (the pass stops at the layer)."""
    with probe(model, [layer]) as recorder:
        ChannelsLast().run(recorder, inputs)
        return recorder[layer].contiguous()


def _score_weights(model, units, indices, activations, inputs, batch_size: int) -> torch.Tensor:
    """Score-CAM's ``N x C`` weights: the softmax over channels of the target's value on the input
    masked by each channel (min-max scaled, upsampled). Constant channels, whose masks are all zero,
    share one pass on a zero image."""
    count, channels = activations.shape[:2]
    inputs = inputs.to(activations.device)
    flat = activations.flatten(2)
    low, high = flat.amin(dim=2), flat.amax(dim=2)
    scaled = (activations - low[..., None, None]) / ((high - low)[..., None, None] + 1e-8)
    varying = (high > low).nonzero()  # (image, channel) pairs whose mask is not all zero
    scores = torch.empty(count, channels, dtype=torch.float32, device=activations.device)
    targets = torch.as_tensor(indices, device=activations.device)
    size = inputs.shape[2:]
    layout = ChannelsLast()
    folded = folded_copy(model, units, tuple(inputs.shape[1:]))
    bound = [rebound(folded, unit) for unit in units]  # the same units on the copy's own modules
    sizes = PassSizes(folded, bound, inputs[:1], batch_size)
    with torch.inference_mode(), probe(folded, bound) as recorder:
        if len(varying) < count * channels:
            layout.run(recorder, torch.zeros_like(inputs[:1]))
            blank = unit_values(recorder, bound)[0].float().to(scores.device)  # U: each unit's value on zeros
            scores[:] = blank[targets][:, None]
        for part in sizes.slices(len(varying)):
            image, channel = varying[part].unbind(dim=1)
            masks = F.interpolate(scaled[image, channel][:, None], size=size, mode="bilinear", align_corners=False)
            layout.run(recorder, inputs[image] * masks)
            values = unit_values(recorder, bound)
            scores[image, channel] = values[torch.arange(len(values)), targets[image]].float().to(scores.device)
    return torch.softmax(scores, dim=1).to(activations.dtype)
