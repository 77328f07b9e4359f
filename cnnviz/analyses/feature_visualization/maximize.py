"""Maximal-response images: gradient ascent in input space to find what a unit responds to.

One call renders one unit, or many at once: ``channels="0-63"`` makes every channel one image of
a batch (chunked to a memory budget), each image with its own seed, its own random transformations
and its own objective, so a batched render gives the images single renders would. The forward
pass goes through the probe, so it stops at the target layer (the rest of the network never runs),
the model's parameters get no gradient, and the model is left exactly as it was, also when a
render is interrupted.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> rendering = cnnviz.maximize(loaded, "features.12", channels="0-7", steps=128)
    >>> rendering.images.shape, rendering.values[:2]      # 8 x 3 x H x W in [0, 1], final scores
    >>> cnnviz.maximize(loaded, "chelsea")                  # a class logit, by name
    >>> from cnnviz import objectives as o
    >>> cnnviz.maximize(loaded, objective=o.channel("features.12", 3) - 50 * o.diversity("features.12"), count=4)
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cnnviz.analyses.feature_visualization import objectives as o
from cnnviz.analyses.feature_visualization.optimizer import Adam, bf16_wanted
from cnnviz.core.display import Shows
from cnnviz.errors import CnnvizError, check_seed
from cnnviz.core.output import set_progress_total
from cnnviz.core.memory import available_memory
from cnnviz.core.model import preprocessing_of, unwrap
from cnnviz.analyses.feature_visualization.parameterization import image_parameters
from cnnviz.core.probe import check_size, failure_at, probe
from cnnviz.core.references import channel_list, layer_ref, Unit
from cnnviz.core.relu import relu_rule
from cnnviz.core.softmax import SkipSoftmax, final_softmax
from cnnviz.analyses.feature_visualization.transforms import Robustness
from cnnviz.inputs.images import rgb

PRECISIONS = ("fp32", "bf16", "auto")
MEMORY_BUDGET = 1.5 * 2**30  # bytes of activations per batch, forward and backward


@dataclass
class Rendering(Shows):
    """Images that maximise units of a model.

    Attributes:
        images: ``N x C x H x W`` in [0, 1], ``C`` the model's input channels.
        units: what each image maximises, a :class:`cnnviz.Unit` each (``features.12:3``,
            ``logits:4 (chelsea)``, ...).
        values: each unit's objective on its final image (no transformation), in the unit's units.
        objective: the objective's formula.
        settings: size, steps, learning rate, parameterisation, seed, precision, ...
    """

    images: torch.Tensor
    units: list[Unit]
    values: list[float]
    objective: str
    settings: dict = field(default_factory=dict)

    def display(self) -> torch.Tensor:
        """The images as RGB, ``N x 3 x H x W`` (a greyscale model's images repeated into 3; of
        other channel counts, the first three, or the last repeated)."""

        return rgb(self.images)

    def to_dict(self) -> dict:
        return {"objective": self.objective, "settings": self.settings,
                "units": [{**unit.to_dict(), "value": value} for unit, value in zip(self.units, self.values)]}

    def __repr__(self) -> str:
        return f"Rendering({len(self.units)} images {tuple(self.images.shape[2:])}, {self.objective})"


def maximize(
    model,
    layer=None,
    *,
    channels=None,
    objective: o.Objective | None = None,
    count: int = 1,
    size="auto",
    steps: int = 256,
    lr: float = 0.05,
    param: str = "fft",
    seed: int = 0,
    batch_size: int | None = None,
    robustness: Robustness | None = None,
    redirect_steps: int = 16,
    precision: str = "fp32",
    regularize: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> Rendering:
    """Render images that maximise a unit, many units, or any objective.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left untouched).
        layer: a layer reference: ``"features.12:5"`` (channel 5's spatial mean),
            ``"features.12:5@3,4"`` (one neuron), ``"features.12"`` with ``channels``, a class
            (``"logits:3"``, ``"chelsea"``, or ``"logits"`` with ``channels``).
        channels: the channels (or classes) of ``layer`` to render, one image each: ``"0-15"``,
            ``[1, 5]``, ``"all"``.
        objective: instead of a layer, any :class:`cnnviz.objectives.Objective`, applied to a
            batch of ``count`` images.
        size: ``"auto"`` (about twice the unit's receptive field, at least 48 px, for a channel or
            neuron; the model's input size for classes), ``H`` or ``(H, W)``.
        steps, lr: Adam's steps and learning rate.
        param: ``"fft"`` (decorrelated Fourier spectrum) or ``"pixel"``.
        seed: the seed of every random choice; the image of a unit depends only on it and the unit.
        batch_size: images per batch (default: as many as fit a 1.5 GiB activation budget).
        robustness: the random transformations (default Lucid's; ``Robustness.none()`` for none).
        redirect_steps: steps during which dead ReLUs let the gradient through (0 to disable).
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"auto"`` (bf16 where the hardware has it).
        regularize: subtract this times the total variation of the image from the objective.
        progress: called with the number of image-steps done, after each step.

    Returns:
        :class:`Rendering`.
    """
    module, class_names = unwrap(model)
    preprocessing = preprocessing_of(model)
    if steps < 1 or not (lr > 0 and math.isfinite(lr)) or count < 1:  # also refuses a NaN or infinite lr
        raise CnnvizError(f"steps and count must be at least 1 and lr a positive finite number (got steps={steps}, "
                          f"count={count}, lr={lr})")
    check_seed(seed)
    if precision not in PRECISIONS:
        raise CnnvizError(f"unknown precision {precision!r}; use fp32, bf16 or auto")
    if batch_size is not None and batch_size < 1:
        raise CnnvizError(f"batch_size must be at least 1, got {batch_size}")
    plan = _plan(model, layer, channels, objective, count, class_names)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    canvas = _canvas(model, size, plan, preprocessing)
    robust = robustness if robustness is not None else Robustness()
    _check_memory(model, plan, canvas, robust, preprocessing, device)
    canvas, view = _view(model, plan, canvas, robust, preprocessing, size)
    # a model whose output is a softmax: maximize the logits it takes (its input), not a probability
    softmax = final_softmax(module, preprocessing.channels, view) if plan.ref is not None and plan.ref.is_output else None
    if robustness is None and tuple(view) == tuple(canvas):  # cropped back: shifts in proportion to a small input
        robust = _scaled(robust, min(canvas) / 224)
    if objective is not None:  # one objective over the whole batch (diversity compares its images)
        if batch_size is not None and batch_size < count:
            raise CnnvizError(
                f"an objective is rendered as one batch of its {count} images; give batch_size >= {count}"
            )
        chunk = count
    else:
        chunk = batch_size or _batch_size(model, view, plan, preprocessing)
    use_bf16 = bf16_wanted(precision, device)
    offset = _padding_offset(model, plan, canvas, view, preprocessing)
    rendered, values = [], []
    set_progress_total(progress, len(plan.units) * steps)
    # gradients are needed whatever the caller's mode (a notebook may sit in torch.no_grad()); the
    # allocator is left as the caller has it (the cnnviz command keeps freed memory in its own
    # process; in Python, wrap the call in cnnviz.reuse_freed_memory())
    with torch.inference_mode(False), torch.enable_grad():
        for start in range(0, len(plan.units), chunk):
            part = slice(start, start + chunk)
            goal, final_goal = plan.build(part, offset), plan.build(part, (0, 0))
            if regularize:
                goal = goal - regularize * o.total_variation()
                final_goal = final_goal - regularize * o.total_variation()
            generators = [torch.Generator().manual_seed((seed * 1_000_003 + s) % 2**63) for s in plan.seeds[part]]
            images_, values_ = _render(model, goal, final_goal, generators, canvas, view, preprocessing, steps, lr,
                                       param, robust, redirect_steps, use_bf16, device, progress, softmax)
            rendered.append(images_)
            values += values_
    settings = {
        "size": list(canvas), "steps": steps, "lr": lr, "param": param, "seed": seed,
        "batch_size": chunk, "redirect_steps": redirect_steps, "precision": "bf16" if use_bf16 else "fp32",
        "robustness": vars(robust), "regularize": regularize, "network_input": list(view),
        "cropped_back": tuple(view) == tuple(canvas) and robust.pad > 0,
        "softmax_input": softmax is not None,
    }
    description = plan.description + (" (the input of the model's final softmax)" if softmax is not None else "")
    return Rendering(torch.cat(rendered), plan.units, values, description, settings)


# --------------------------------------------------------------------------------------------
# planning


@dataclass
class _Plan:
    """What to render: a description and a seed per image, and the objective of any run of them."""

    units: list[Unit]
    seeds: list[int]
    description: str
    layers: tuple[str, ...]
    ref: object | None
    build: Callable[[slice, tuple[int, int]], o.Objective]


def _plan(model, target, channels, objective, count, class_names) -> _Plan:
    if objective is not None:
        if target is not None or channels is not None:
            raise CnnvizError("give either a layer (with channels) or an objective, not both")
        if not isinstance(objective, o.Objective):
            raise CnnvizError("objective must be a cnnviz.objectives.Objective")
        for name in objective.layers:
            layer_ref(model, name)  # unknown layers fail here, before any work
        return _Plan([Unit("", i, objective=objective.description) for i in range(count)], list(range(count)),
                     objective.description, objective.layers, None, lambda part, offset: objective)
    if target is None:
        raise CnnvizError("name what to maximise: a layer with channels, a channel ('features.12:5') or a class")
    ref = layer_ref(model, target)
    layer_text = "logits" if ref.is_output else ref.layer_text
    if ref.channel is not None:
        if channels is not None:
            raise CnnvizError(f"{target!r} already names a channel; drop channels")
        chosen = [ref.channel]
    else:
        if channels is None:
            raise CnnvizError(
                f"{layer_text} is a whole layer: name a channel ('{layer_text}:5') or give channels "
                "(channels='0-15', --channels 0-15)"
            )
        chosen = channel_list(channels, _channel_count(model, ref), "channel",
                              names=class_names if ref.is_output else None)
    if ref.position is not None and len(ref.position) != 2:
        raise CnnvizError("a neuron of a 2-D map needs a row and a column, e.g. features.12:5@3,4")

    def build(part: slice, offset: tuple[int, int]) -> o.Objective:
        indices = chosen[part]
        if ref.position is not None:  # a position on the saved image's map; shifted by the padding
            return o.neuron(layer_text, indices, ref.position[0] + offset[0], ref.position[1] + offset[1])
        return o.class_logit(indices) if ref.is_output else o.channel(layer_text, indices)

    units = [Unit.of(ref, class_names, channel=index) for index in chosen]
    kind = "neuron" if ref.position is not None else "class_logit" if ref.is_output else "channel"
    return _Plan(units, list(chosen), f"{kind}({layer_text})", (layer_text,), ref, build)


def _channel_count(model, ref) -> int:
    module = ref.module
    for attribute in ("out_channels", "out_features", "num_features"):
        if not ref.is_output and isinstance(getattr(module, attribute, None), int):
            return getattr(module, attribute)
    _, class_names = unwrap(model)
    if ref.is_output and class_names:
        return len(class_names)
    preprocessing = preprocessing_of(model)
    with probe(model, [ref], store=False) as recorder:  # stops at the layer
        recorder.run(torch.zeros(1, preprocessing.channels, *preprocessing.input_size))
        shape = recorder.shapes[ref.layer][ref.call - 1]
    if shape is None:  # a list, tuple or dict (HRNet's stages, detection heads)
        inner = [name for name, _ in ref.module.named_children()][:6]
        offer = f"; name one of its submodules: {', '.join(f'{ref.layer_text}.{n}' for n in inner)}" if inner else ""
        raise CnnvizError(f"{ref.layer_text} returns a list or tuple, not one tensor, so it has no channels to render{offer}")
    if len(shape) < 2:
        raise CnnvizError(f"{ref.layer_text} outputs {tuple(shape)}: no channels to render")
    if len(shape) == 3 and not ref.is_output:
        raise CnnvizError(
            f"{ref.layer_text} outputs tokens ({'x'.join(map(str, shape))}: batch x tokens x features), not channel maps; "
            "maximize a convolutional layer's channel, a class, or write an objective for tokens (cnnviz.objectives)"
        )
    return shape[1]


# --------------------------------------------------------------------------------------------
# size, batch, precision


def _canvas(model, size, plan: _Plan, preprocessing) -> tuple[int, int]:
    if size != "auto":
        sizes = (size, size) if isinstance(size, int) else tuple(size)
        if len(sizes) != 2 or any(not isinstance(s, int) or s < 8 for s in sizes):
            raise CnnvizError(f"size must be 'auto', H or (H, W) with at least 8 pixels, got {size!r}")
        return sizes
    if plan.ref is None or plan.ref.is_output or any(name in ("logits", "output") for name in plan.layers):
        return preprocessing.input_size
    field_size = receptive_field_size(model, plan.ref.layer_text, preprocessing)
    height, width = preprocessing.input_size
    side = max(48, 8 * math.ceil(2 * field_size / 8))
    return (min(side, max(height, 48)), min(side, max(width, 48)))


def receptive_field_size(model, layer: str, preprocessing) -> int:
    """The side of the input region that reaches the centre unit of ``layer`` (the support of
    its input gradient on a random input at the model's input size)."""
    height, width = preprocessing.input_size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, preprocessing.channels, height, width, generator=generator).requires_grad_(True)
    with probe(model, [layer], keep_graph=True) as recorder:
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


def _view(model, plan: _Plan, canvas, robust, preprocessing, size) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(canvas, view)``: the image's size and the size the network sees of it each step.

    The view is the padded canvas where the network reaches the target from it. A model that
    takes one input size only (flatten then ``Linear``) renders at that size, and each step's
    transformed canvas is cropped back to it (the view is the canvas)."""
    layers, channels = list(plan.layers), preprocessing.channels
    padded = robust.output_size(canvas)
    fixed = tuple(preprocessing.input_size)
    check = check_size(model, layers, channels, padded, fixed)
    if check.runs:
        return tuple(canvas), padded
    if check.fixed is not None:
        if size != "auto" and tuple(canvas) != fixed:
            raise CnnvizError(
                f"the model takes {fixed[0]}x{fixed[1]} inputs only (a {padded[0]}x{padded[1]} one does not run); "
                f"render at that size: size='auto' or --size {fixed[0]} {fixed[1]}"
            )
        return fixed, fixed
    if check.input_size_runs and size == "auto":  # the automatic canvas does not run here: the model's size
        padded = robust.output_size(fixed)
        if failure_at(model, layers, channels, padded) is None:
            return fixed, padded
        return fixed, fixed  # its padded canvas does not run either: cropped back to the size that does
    if check.input_size_runs:
        raise CnnvizError(f"cannot render {plan.description} at {canvas[0]}x{canvas[1]} (the network sees "
                          f"{padded[0]}x{padded[1]} with the padding): {check.why}; give another size, e.g. the "
                          f"model's own: --size {fixed[0]} {fixed[1]}")
    raise CnnvizError(f"cannot render {plan.description}: {check.why}")


def _scaled(robust: Robustness, factor: float) -> Robustness:
    """Lucid's shifts are sized for 224-px images; a fixed-size model of 32 px gets them in
    proportion (8 px of jitter would move a LeNet's digit a quarter of its input)."""
    if factor >= 1:
        return robust
    return dataclasses.replace(robust, pad=max(1, round(robust.pad * factor)), jitter=max(1, round(robust.jitter * factor)),
                               jitter_after=max(1, round(robust.jitter_after * factor)) if robust.jitter_after else 0)


def _batch_size(model, size, plan: _Plan, preprocessing) -> int:
    """As many images as fit the activation budget (forward and backward) of what runs up to the
    target (measured by a pass that stops there too) at ``size``, what the network sees."""
    per_image = _bytes_per_image(model, size, plan, preprocessing)
    if per_image is None:
        return min(len(plan.units), 16)
    return int(max(1, min(len(plan.units), MEMORY_BUDGET // per_image, 64)))


def _bytes_per_image(model, size, plan: _Plan, preprocessing) -> int | None:
    """The activation memory (forward and backward) of one image of ``size`` up to the target,
    from the shapes of a pass that stops there; ``None`` when no pass runs at that size."""
    module, _ = unwrap(model)
    names = [name for name, _ in module.named_modules() if name]
    leaves = {name for name in names if not any(other.startswith(name + ".") for other in names)}
    example = torch.zeros(1, preprocessing.channels, *size)
    try:
        with probe(model, list(plan.layers), store=False, also=names) as recorder:
            recorder.run(example)
            shapes = recorder.shapes
    except CnnvizError:
        return None
    per_image = sum(math.prod(shape[1:]) for name, calls in shapes.items() if name in leaves
                    for shape in calls if shape is not None)
    return max(per_image, 1) * 4 * 3  # float32: the output, its gradient, what autograd keeps


def _check_memory(model, plan: _Plan, canvas, robust, preprocessing, device) -> None:
    """Refuse a canvas whose one image would not fit the memory there is, before any pass at
    that size (which would die in the allocator), naming the largest size that fits. The cost
    per pixel is measured at a small size and scaled by the area (activations grow with it)."""
    padded = robust.output_size(canvas)
    pixels = padded[0] * padded[1]
    if pixels <= 1024 * 1024:
        return  # up to 1024 x 1024 nothing is estimated: that always fits a machine that runs torch
    per_pixel = None
    fixed = tuple(preprocessing.input_size)
    for probe_size in ((64, 64), fixed):
        measured = _bytes_per_image(model, probe_size, plan, preprocessing)
        if measured is not None:
            per_pixel = measured / (probe_size[0] * probe_size[1])
            break
        if probe_size == (64, 64) and check_size(model, list(plan.layers), preprocessing.channels, (64, 64), fixed).fixed:
            raise CnnvizError(f"the model takes {fixed[0]}x{fixed[1]} inputs only; render at that size: size='auto' "
                              f"or --size {fixed[0]} {fixed[1]}")
    image = 4 * preprocessing.channels * 16  # the image, its spectrum, Adam's moments, the transforms
    per_pixel = (per_pixel or 0) + image
    available = available_memory(device)
    if available is None or per_pixel * pixels <= 0.8 * available:
        return
    side = int(math.sqrt(0.8 * available / per_pixel) / (padded[0] / canvas[0]))
    side = max(8, side // 8 * 8)
    raise CnnvizError(
        f"a {canvas[0]}x{canvas[1]} render needs about {per_pixel * pixels / 2**30:.1f} GiB for one image, and "
        f"{available / 2**30:.1f} GiB of memory is free here; render at {side}x{side} or less (--size {side})"
    )


def _padding_offset(model, plan: _Plan, canvas, view, preprocessing) -> tuple[int, int]:
    """How many map positions the padding adds before the saved image's first position, at the
    target layer (for neurons at an explicit position)."""
    if plan.ref is None or plan.ref.position is None:
        return (0, 0)
    sizes = []
    for height, width in (canvas, view):
        with probe(model, [plan.ref.layer_text], store=False) as recorder:
            recorder.run(torch.zeros(1, preprocessing.channels, height, width))
            shape = recorder.shapes[plan.ref.layer][plan.ref.call - 1]
        sizes.append(shape[2:])
    (inner_h, inner_w), (outer_h, outer_w) = sizes
    if not (0 <= plan.ref.position[0] < inner_h and 0 <= plan.ref.position[1] < inner_w):
        raise CnnvizError(
            f"position {plan.ref.position[0]},{plan.ref.position[1]} is outside the {inner_h}x{inner_w} maps "
            f"of {plan.ref.layer_text} at this size ({canvas[0]}x{canvas[1]}); pick a position inside or a larger --size"
        )
    return ((outer_h - inner_h) // 2, (outer_w - inner_w) // 2)


# --------------------------------------------------------------------------------------------
# the optimisation loop


def _render(model, goal, final_goal, generators, canvas, view, preprocessing, steps, lr, param, robust,
            redirect_steps, use_bf16, device, progress, softmax=None):
    """Optimise ``goal`` on transformed images of ``view`` pixels (padded, or cropped back to the
    canvas); score ``final_goal`` on the final images as they are saved (no transformation)."""
    out = None if tuple(view) == robust.output_size(canvas) else view
    params = image_parameters(param, generators, preprocessing.channels, canvas, device)
    optimizer = Adam(params.parameters(), lr)
    # (images - mean) / std as one multiply-add: images * (1 / std) + (-mean / std); nothing for a
    # model that takes images as they are
    mean = torch.as_tensor(preprocessing.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.as_tensor(preprocessing.std, dtype=torch.float64).view(1, -1, 1, 1)
    inverse_std, shift = (1 / std).float().to(device), (-mean / std).float().to(device)
    identity = bool((mean == 0).all() and (std == 1).all())
    # every step's random transformation, drawn before the first (None: the transformation only pads)
    draws = None if robust.identity else robust.draw(generators, steps, canvas, out).to(device)
    layers = list(dict.fromkeys(goal.layers + final_goal.layers))
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    with probe(model, layers, keep_graph=True) as recorder:

        def scores(objective, images, transformed, redirect: bool):
            # channels_last makes the convolutions of a CPU or GPU pass faster (measured: VGG11 to
            # features.3, 265 -> 173 ms per step of 8 images)
            inputs = transformed if identity else torch.addcmul(shift, transformed, inverse_std)
            inputs = inputs.contiguous(memory_format=torch.channels_last)
            rule = relu_rule("redirect") if redirect else contextlib.nullcontext()
            skip = SkipSoftmax(softmax) if softmax is not None else contextlib.nullcontext()
            with rule, autocast(), skip:
                recorder.run(inputs)
                activations = {name: recorder[name].float() for name in layers}
            try:
                return objective(activations, images)
            except IndexError as error:  # o.channel(layer, 99999): a channel the layer does not have
                shapes = ", ".join(f"{name} {tuple(value.shape[1:])}" for name, value in activations.items())
                raise CnnvizError(f"the objective {objective.description} does not fit the layers' outputs ({shapes}): "
                                  f"{error}") from None

        for step in range(steps):
            images = params.images()
            transformed = robust.apply(images, None if draws is None else draws[step], out)
            values = scores(goal, images, transformed, step < redirect_steps)
            optimizer.zero_grad()
            (-values.sum()).backward()
            optimizer.step()
            if progress is not None:
                progress(len(generators))
        final = params.images().detach()
        values = scores(final_goal, final, final, False).detach()
    return final.float().cpu(), [float(v) for v in values]
