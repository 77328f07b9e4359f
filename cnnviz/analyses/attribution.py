"""Input gradients and attributions: how the input drives a unit, through captum.

The lecture's "derivatives of the response with respect to the input", for any unit of any model:
a class score, a channel of an inner layer (its spatial mean) or a single neuron. The methods are
captum's (``Saliency``, ``InputXGradient``, ``NoiseTunnel``, ``IntegratedGradients``,
``LayerGradCam``, ``Occlusion``), run on a forward function that goes through cnnviz's probe, so the
network stops at the deepest layer the targets need and the model is left untouched.

The rest of the CAM family (Grad-CAM++, XGrad-CAM, LayerCAM, Score-CAM, Eigen-CAM, and the smoothing
options ``eigen_smooth`` and ``aug_smooth``) is cnnviz's own, in :mod:`cnnviz.analyses.cams`, on the
same layer and the same probe: pytorch-grad-cam and torch-cam read a layer's output that later
in-place operations overwrite (that module says what was checked and which conventions it follows).

Guided backpropagation and deconvolution change the backward rule of every ReLU. captum's versions
hook ``nn.ReLU`` modules only, so on a model calling ``F.relu`` they silently return the plain
gradient. Here a ``TorchFunctionMode`` reroutes every ReLU call (a module's or a functional one,
in place or not) through the rule for the length of the call; a model with no ReLU at all is
refused rather than given a plain gradient under another name.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> result = cnnviz.saliency(loaded, "sample:chelsea", method="integrated_gradients", steps=8)
    >>> result.attribution.shape, [str(unit) for unit in result.targets]   # N x C x H x W, what was explained
    (torch.Size([1, 3, 64, 64]), ['logits:3 (chelsea)'])
    >>> many = cnnviz.attributions(loaded, "sample:chelsea", "features.19:7", methods=["gradient", "gradcam"])
    >>> many                                            # method -> Attribution, of channel 7 of features.19
    Attributions(gradient, gradcam; 1 image)
    >>> many["gradcam"].settings["layer"], many["gradcam"].absolute_map().shape
    ('features.18', torch.Size([1, 64, 64]))
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from cnnviz.core.display import Shows
from cnnviz.errors import CnnvizError, NotApplicable
from cnnviz.inputs.batches import stack_images
from cnnviz.inputs.images import display_image
from cnnviz.core.gradients import gradients_on
from cnnviz.core.model import preprocessing_of, unwrap
from cnnviz.core.probe import probe
from cnnviz.core.references import LayerRef, layer_ref, Unit
from cnnviz.core.relu import relu_rule
from cnnviz.analyses.predictions import dense_targets

from cnnviz.analyses.faithfulness import FaithfulnessSettings, checked as checked_faithfulness, faithfulness as evaluate_faithfulness
from cnnviz.analyses.attribution_settings import CAM_METHODS, METHODS, AttributionSettings
from cnnviz.analyses.cams import AUG_SMOOTHED, EIGEN_SMOOTHED, class_activation_map, computed_here
from cnnviz.analyses.cam_layer import LayerCheck, choose_cam_layer, given_cam_layer
from cnnviz.core.settings import chosen

#: the methods that read a layer's maps (``layer=``): the CAM family and guided Grad-CAM
LAYER_METHODS = (*CAM_METHODS, "guided_gradcam")


@dataclass
class Attribution(Shows):
    """The attribution of one method for a batch of images.

    Attributes:
        method: the method's name (one of ``METHODS``).
        attribution: the raw attribution, ``N x C x H x W`` (``N x 1 x H x W`` for the CAM methods,
            upsampled bilinearly to the input size), float32 on the CPU.
        inputs: the model inputs it explains, ``N x C x H x W``, normalised.
        images: the same inputs de-normalised for display, ``N x 3 x H x W`` RGB in [0, 1].
        targets: what was explained for each image, a :class:`cnnviz.Unit` (``logits:281 (tabby)``).
        sources: where each image came from.
        layer: the layer of a CAM method (``CAM_METHODS``) or guided Grad-CAM, else ``None``.
        layer_attribution: the class activation map at the layer's own resolution (``N x 1 x h x w``,
            non-negative), else ``None``.
        settings: the method's parameters (steps, samples, window, layer, eigen_smooth, ...).
    """

    method: str
    attribution: torch.Tensor
    inputs: torch.Tensor
    images: torch.Tensor
    targets: list[Unit]
    sources: list[str]
    layer: str | None = None
    layer_attribution: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)

    def signed_map(self) -> torch.Tensor:
        """``N x H x W``: the attribution summed over channels (its sign kept)."""
        return self.attribution.sum(dim=1)

    def absolute_map(self) -> torch.Tensor:
        """``N x H x W``: the absolute attribution summed over channels (its magnitude)."""
        return self.attribution.abs().sum(dim=1)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "shape": list(self.attribution.shape),
            "layer": self.layer,
            "targets": [t.to_dict() for t in self.targets],
            "images": self.sources,
            "min": float(self.attribution.min()),
            "max": float(self.attribution.max()),
            "settings": self.settings,
        }

    def __repr__(self) -> str:
        return (
            f"Attribution({self.method!r}, {tuple(self.attribution.shape)}, targets={[str(t) for t in self.targets]}, "
            f"range [{float(self.attribution.min()):.3g}, {float(self.attribution.max()):.3g}])"
        )


def saliency(model, images, target=None, *, method: str = "gradient", **options) -> Attribution:
    """Attribute a unit's value to the input pixels with one method.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left untouched).
        images: any images :mod:`cnnviz.inputs.batches` takes: an image spec (file, ``sample:NAME``,
            a folder, ``samples``), a PIL image, a ``C x H x W`` tensor in [0, 1], a list of those,
            a batch of normalised model inputs ``N x C x H x W``, a Dataset or a DataLoader.
        target: what to explain: ``None`` (each image's top-1 class), a class index or name, a
            layer reference to any unit (``"features.10:5"``, the spatial mean of channel 5;
            ``"features.10:5@7,3"``, one neuron), or a list with one of those per image.
        method: one name of ``METHODS`` (several side by side: :func:`attributions`).
        options: as for :func:`attributions`: ``layer`` (of the CAM methods), ``settings`` (a
            :class:`cnnviz.AttributionSettings`), and its fields ``steps``, ``samples``, ``noise``,
            ``window``, ``stride``, ``batch_size``, ``eigen_smooth``, ``aug_smooth``.

    Returns:
        An :class:`Attribution`.
    """
    if not isinstance(method, str):
        raise CnnvizError("saliency takes one method; for several side by side use cnnviz.attributions(..., methods=[...])")
    return attributions(model, images, target, methods=[method], **options)[method]


class Attributions(Shows, dict):
    """Several methods' :class:`Attribution` of the same images and targets, by method name
    (in the order asked); draws them side by side. ``not_applicable``: method -> why it does not
    apply to this model (shown as "n/a: why")."""

    def __init__(self, results=(), not_applicable=None, faithfulness=None):
        super().__init__(results)
        self.not_applicable = dict(not_applicable or {})
        #: :class:`cnnviz.Faithfulness` of the maps, when asked (``attributions(..., faithfulness=True)``)
        self.faithfulness = faithfulness

    def to_dict(self) -> dict:
        return {"methods": [result.to_dict() for result in self.values()],
                "not_applicable": [{"method": name, "why": why} for name, why in self.not_applicable.items()]}

    def __repr__(self) -> str:
        first = next(iter(self.values()), None)
        images = len(first.attribution) if first is not None else 0
        skipped = f"; n/a: {', '.join(self.not_applicable)}" if self.not_applicable else ""
        return f"Attributions({', '.join(self)}; {images} image{'' if images == 1 else 's'}{skipped})"


def attributions(
    model,
    images,
    target=None,
    *,
    layer=None,
    settings: AttributionSettings | None = None,
    faithfulness=False,
    **options,
) -> Attributions:
    """Attribute a unit's value to the input pixels with several methods at once, to compare them.

    Args:
        model, images, target: as for :func:`saliency`.
        layer: the layer of the CAM methods (``CAM_METHODS``) and guided Grad-CAM (default: the last
            layer with spatial maps that runs once, before the target and on its path).
        settings: the methods and their settings, a :class:`cnnviz.AttributionSettings` (default:
            its defaults).
        options: fields of :class:`cnnviz.AttributionSettings` that replace those of ``settings``:
            ``methods`` (names of ``METHODS``, in the order to show them; ``DEFAULT_METHODS`` by
            default), ``steps`` (of integrated gradients), ``samples`` and ``noise`` (SmoothGrad's
            noisy copies and their standard deviation, as a fraction of the input's range),
            ``window`` and ``stride`` (occlusion's square patch and step in pixels: an eighth of the
            smaller side, and half of that, by default), ``batch_size`` (the most images attributed
            at once, and the most examples per forward pass inside integrated gradients, SmoothGrad,
            occlusion and Score-CAM: this bounds their memory), ``eigen_smooth`` (the CAM methods'
            maps as the first principal component of the weighted activations instead of their
            channel sum; Eigen-CAM and the other methods ignore it), ``aug_smooth`` (the CAM maps
            averaged over a horizontal flip and the input scaled by 0.9, 1 and 1.1; the other methods
            ignore it). The conventions of the CAM family: :mod:`cnnviz.analyses.cams`.
        faithfulness: also measure how faithful each map is to the model (deletion and insertion
            AUC, ROAD, Average Drop and Increase in Confidence, against a random map):
            ``True`` (the defaults of :class:`cnnviz.FaithfulnessSettings`) or a
            :class:`cnnviz.FaithfulnessSettings`; the result is in ``.faithfulness``
            (:class:`cnnviz.Faithfulness`; see :func:`cnnviz.faithfulness`).

    Returns:
        :class:`Attributions`: method name -> :class:`Attribution`.
    """
    how = chosen(AttributionSettings, settings, options, "attributions")
    methods, steps, samples, noise = how.methods, how.steps, how.samples, how.noise
    window, stride, batch_size = how.window, how.stride, how.batch_size
    smoothing = {"eigen_smooth": bool(how.eigen_smooth), "aug_smooth": bool(how.aug_smooth)}
    methods = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise CnnvizError(f"unknown method {unknown[0] if unknown else ''!r}; use one of {', '.join(METHODS)}")
    if steps < 2 or samples < 1 or batch_size < 1 or noise < 0:
        raise CnnvizError("steps must be at least 2, samples and batch_size at least 1, noise not negative")
    # gradients whatever the caller's mode (a notebook may sit in torch.no_grad() or torch.inference_mode())
    evaluation = _faithfulness_settings(faithfulness)
    with gradients_on(None if set(methods) <= {"occlusion"} else model):
        results = _attributions(model, images, target, methods, layer, steps, samples, noise, window, stride, batch_size,
                                smoothing)
    if evaluation is not None:
        results.faithfulness = evaluate_faithfulness(model, results, settings=evaluation)
    return results


def _faithfulness_settings(faithfulness):
    """``attributions(faithfulness=...)``: ``None`` (not asked) or the settings to measure it with."""
    if faithfulness is None or faithfulness is False:
        return None
    if faithfulness is True:
        return FaithfulnessSettings()
    if isinstance(faithfulness, FaithfulnessSettings):
        return checked_faithfulness(faithfulness)  # before any method runs
    raise CnnvizError(f"faithfulness= takes True, False or a cnnviz.FaithfulnessSettings, not {faithfulness!r}")


def _attributions(model, images, target, methods, layer, steps, samples, noise, window, stride, batch_size, smoothing):
    unwrap(model)  # a model, or one line saying what it is not
    preprocessing = preprocessing_of(model)
    inputs, sources = stack_images(images, preprocessing)
    units, indices, descriptions = _targets(model, inputs, target)
    cam_layer, skipped, pending = None, {}, None
    if layer is not None and any(m in LAYER_METHODS for m in methods):
        # a given layer: named right here, its check (it runs once, before the target, which
        # depends on it) made by the first CAM pass that has the gradient anyway, or on its own
        cam_layer = given_cam_layer(model, layer)
        pending = LayerCheck(lambda: choose_cam_layer(model, layer, inputs, units, indices))
    elif any(m in LAYER_METHODS for m in methods):
        try:
            cam_layer = choose_cam_layer(model, layer, inputs, units, indices)
        except CnnvizError as why:  # no usable layer (none with maps, or a TorchScript model's unhookable ones)
            if len(methods) == 1:
                raise
            skipped.update({m: str(why) for m in methods if m in LAYER_METHODS})
    forward = _UnitForward(model, units, cam_layer)
    shown = display_image(inputs, preprocessing)
    results = {}
    for name in methods:
        if name in skipped:
            continue
        pieces = []
        try:
            if pending is not None and name in LAYER_METHODS and not computed_here(name, smoothing):
                pending.run()
            for start in range(0, len(inputs), batch_size):  # at most batch_size images at a time
                part = slice(start, start + batch_size)
                pieces.append(_attribute(name, forward, inputs[part], indices[part], cam_layer, steps, samples,
                                         noise, window, stride, batch_size, smoothing,
                                         check=pending if name in LAYER_METHODS else None))
        except NotApplicable as why:  # one method that does not apply never sinks the others
            if len(methods) == 1:
                raise
            skipped[name] = str(why)
            continue
        attribution = torch.cat([piece[0].detach().float().cpu() for piece in pieces])
        layer_attribution = None if pieces[0][1] is None else torch.cat([piece[1].detach().float().cpu() for piece in pieces])
        settings = pieces[0][2]
        results[name] = Attribution(
            method=name,
            attribution=attribution,
            inputs=inputs.detach().cpu(),
            images=shown,
            targets=descriptions,
            sources=sources,
            layer=cam_layer.layer_text if cam_layer is not None and name in LAYER_METHODS else None,
            layer_attribution=layer_attribution,
            settings={**settings, "batch_size": batch_size},
        )
    if not results:
        raise CnnvizError("none of the methods applies to this model: " + "; ".join(f"{m}: {w}" for m, w in skipped.items()))
    return Attributions(results, {m: skipped[m] for m in methods if m in skipped})




# --------------------------------------------------------------------------------------------
# inputs and targets


def _targets(model, inputs: torch.Tensor, target) -> tuple[list[LayerRef], list[int], list[str]]:
    """The distinct units to explain, each image's index among them, and their descriptions."""
    _, class_names = unwrap(model)
    count = len(inputs)
    if isinstance(target, torch.Tensor) and target.dim() == 1:
        target = target.tolist()
    if isinstance(target, (list, tuple)):
        if len(target) != count:
            raise CnnvizError(f"{len(target)} targets for {count} images; give one target, or one per image")
        per_image = list(target)
    else:
        per_image = [target] * count
    if any(t is None for t in per_image):
        with probe(model, ["logits"]) as recorder:
            recorder.run(inputs)
            logits = recorder["logits"]
        if logits.dim() == 4:  # dense class maps: the strongest class map at its arg-max (logits:K@R,C)
            predicted = dense_targets(logits)
        elif logits.dim() != 2:
            raise CnnvizError(
                f"the model's output has shape {tuple(logits.shape)}, so there is no top-1 class; "
                "name the unit to explain (target=...)"
            )
        else:
            predicted = logits.argmax(dim=1).tolist()
        per_image = [predicted[i] if t is None else t for i, t in enumerate(per_image)]
    resolved = []
    for item in per_image:
        if hasattr(item, "item") and not isinstance(item, (str, LayerRef)):  # a tensor or numpy integer
            try:
                item = int(item.item()) if float(item.item()).is_integer() else item
            except (TypeError, ValueError, RuntimeError):
                pass
        if isinstance(item, bool) or not isinstance(item, (int, str, LayerRef)):
            raise CnnvizError(f"a target must be a class index, a class name or a layer reference, not {item!r}")
        text = f"logits:{item}" if isinstance(item, int) else item
        ref = layer_ref(model, text)
        if ref.channel is None:
            raise CnnvizError(
                f"the target {str(ref)!r} is a whole layer; name one unit: '{ref.layer_text}:CHANNEL' "
                f"(its spatial mean) or '{ref.layer_text}:CHANNEL@ROW,COLUMN'"
            )
        resolved.append(ref)
    units = list(dict.fromkeys(resolved))
    indices = [units.index(ref) for ref in resolved]

    return units, indices, [Unit.of(ref, class_names) for ref in resolved]


class _UnitForward:
    """``inputs -> M x U`` values of the target units, through the probe (early exit after the
    deepest of the units and, when given, the CAM layer)."""

    def __init__(self, model, units: list[LayerRef], also: LayerRef | None = None):
        self.model, self.units = model, units
        self.refs = units + ([also] if also is not None else [])

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        with probe(self.model, self.refs, keep_graph=True) as recorder:
            recorder.run(inputs)
            columns = []
            for unit in self.units:
                value = recorder[unit]
                columns.append(value.flatten(1).mean(dim=1) if value.dim() > 1 else value)
        values = torch.stack(columns, dim=1)
        if inputs.requires_grad and torch.is_grad_enabled() and not values.requires_grad:
            raise NotApplicable("the target has no gradient with respect to the input (the model detaches it or computes "
                                "part of its forward pass under torch.no_grad): the gradient methods do not apply; "
                                "occlusion does")
        return values


# --------------------------------------------------------------------------------------------
# methods


def _attribute(name, forward, inputs, indices, cam_layer, steps, samples, noise, window, stride, batch_size,
               smoothing=None, check=None):
    from captum.attr import (
        InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency,
    )

    x = inputs.clone().requires_grad_(True)
    target = list(indices)
    height, width = inputs.shape[2:]
    if name == "gradient":
        return Saliency(forward).attribute(x, target=target, abs=False), None, {}
    if name == "gradient_x_input":
        return InputXGradient(forward).attribute(x, target=target), None, {}
    if name == "smoothgrad":
        # each image alone: its own noise level (a fraction of its own range) and the same noise
        # whatever else is in the batch
        tunnel = NoiseTunnel(Saliency(forward))
        results, spreads = [], []
        for index in range(len(inputs)):
            spread = float(noise * (inputs[index].max() - inputs[index].min()))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                results.append(tunnel.attribute(
                    x[index:index + 1], nt_type="smoothgrad", nt_samples=samples, stdevs=spread,
                    nt_samples_batch_size=batch_size, target=target[index:index + 1], abs=False,
                ))
            spreads.append(spread)
        return torch.cat(results), None, {"samples": samples, "noise": noise}
    if name == "integrated_gradients":
        result = IntegratedGradients(forward).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=steps, internal_batch_size=batch_size,
        )
        return result, None, {"steps": steps, "baseline": "zeros (the mean image after normalisation)"}
    if name in ("guided_backprop", "deconvolution"):
        return _relu_rule(forward, x, target, name), None, {}
    smoothing = smoothing or {}
    if computed_here(name, smoothing):
        applied = {option: on for option, on in smoothing.items()
                   if name in (EIGEN_SMOOTHED if option == "eigen_smooth" else AUG_SMOOTHED)}
        cam = class_activation_map(name, forward.model, forward.units, target, cam_layer, inputs,
                                   batch_size=batch_size, check=check, **applied)
        upsampled = F.interpolate(cam, (height, width), mode="bilinear", align_corners=False)
        return upsampled, cam, {"layer": cam_layer.layer_text, **applied}
    if name in ("gradcam", "guided_gradcam"):
        layer_module = cam_layer.module
        cam = LayerGradCam(forward, layer_module).attribute(x, target=target, relu_attributions=True)
        upsampled = LayerAttribution.interpolate(cam, (height, width), interpolate_mode="bilinear")
        if name == "gradcam":
            return upsampled, cam, {"layer": cam_layer.layer_text}
        guided = _relu_rule(forward, inputs.clone().requires_grad_(True), target, "guided_backprop")
        return guided * upsampled, cam, {"layer": cam_layer.layer_text}
    if name == "occlusion":
        side = window or max(3, round(min(height, width) / 8))
        step = stride or max(1, side // 2)
        if side > min(height, width):
            raise NotApplicable(f"the occlusion window ({side} px) is larger than the image ({height}x{width}); give a smaller window=...")
        result = Occlusion(forward).attribute(
            inputs.clone(), sliding_window_shapes=(inputs.shape[1], side, side), strides=(inputs.shape[1], step, step),
            baselines=0.0, target=target, perturbations_per_eval=max(1, batch_size // len(inputs)),
        )
        return result, None, {"window": side, "stride": step, "baseline": "zeros (the mean image after normalisation)"}
    raise CnnvizError(f"unknown method {name!r}")


def _relu_rule(forward, x: torch.Tensor, target: list[int], rule: str) -> torch.Tensor:
    """The input gradient with ``rule`` at every pointwise activation; refused (not applicable)
    when no activation on the feature maps lies on the path to the target (it would be the plain
    gradient under another name)."""
    mode = relu_rule(rule)
    with mode:
        values = forward(x)
        selected = values[torch.arange(len(values)), torch.tensor(target)]
    what = rule.replace("_", " ")
    if mode.calls == 0 and isinstance(unwrap(forward.model)[0], torch.jit.ScriptModule):
        raise NotApplicable(f"{what} changes the backward rule of activations, and a TorchScript model's activations run outside Python, "
                            "where they cannot be rerouted: load the original nn.Module to use it")
    if mode.calls == 0:
        raise NotApplicable(
            f"{what} changes the backward rule of activations, and no pointwise activation (ReLU, PReLU, "
            "SiLU, GELU, ...) runs before the target: it would be the plain gradient (method 'gradient')"
        )
    (gradient,) = torch.autograd.grad(selected.sum(), x)
    if mode.on_path == 0:
        kinds = ", ".join(sorted(mode.kinds))
        raise NotApplicable(
            f"{what}: the activations before the target ({kinds}) act only on pooled 1x1 tensors or off the "
            "target's path (gates, a head), not on its feature maps: it would be the plain gradient (method 'gradient')"
        )
    return gradient
