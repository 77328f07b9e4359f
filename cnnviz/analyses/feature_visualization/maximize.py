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
    >>> quick = {"steps": 8, "size": 32}            # a quick look; by default 256 steps at the model's size
    >>> rendering = cnnviz.maximize(loaded, "features.5", channels="0-3", reference=None, **quick)
    >>> rendering.images.shape, [str(unit) for unit in rendering.units]    # 4 x 3 x H x W in [0, 1]
    (torch.Size([4, 3, 32, 32]), ['features.5:0', 'features.5:1', 'features.5:2', 'features.5:3'])
    >>> len(rendering.values), rendering.steps_taken     # final scores, and the steps each image ran
    (4, [8, 8, 8, 8])
    >>> chelsea = cnnviz.maximize(loaded, "chelsea", reference="sample:chelsea", **quick)   # a class logit, by name
    >>> [str(unit) for unit in chelsea.units], chelsea.reference_source   # compared with real images
    (['logits:3 (chelsea)'], '1 sample image')
    >>> from cnnviz import objectives as o
    >>> goal = o.channel("features.12", 3) - 50 * o.diversity("features.12")
    >>> cnnviz.maximize(loaded, objective=goal, count=2, **quick)
    Rendering(2 images (32, 32), channel(features.12, 3) + -(50 * (diversity(features.12))); 2 renders (not compared with real images), 8 steps)
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable

import torch

from cnnviz.analyses.feature_visualization import objectives as o
from cnnviz.analyses.feature_visualization.optimizer import bf16_wanted
from cnnviz.core.executor import Executor, executor
from cnnviz.errors import CnnvizError
from cnnviz.core.gradients import gradients_on
from cnnviz.core.output import set_progress_total
from cnnviz.core.memory import available_memory
from cnnviz.core.fusion import folded_copy
from cnnviz.core.model import preprocessing_of, unwrap
from cnnviz.core.probe import check_size, every_output_shape, failure_at, probe
from cnnviz.core.softmax import SkipSoftmax, final_softmax
from cnnviz.analyses.feature_visualization.transforms import Robustness
from cnnviz.analyses.feature_visualization.real_images import load_statistics, real_responses
from cnnviz.analyses.feature_visualization.filters import filter_units, receptive_field_size
from cnnviz.analyses.feature_visualization.loop import RenderJob, Run
from cnnviz.analyses.feature_visualization.settings import RenderSettings
from cnnviz.analyses.feature_visualization.rendering import Rendering, image_outcomes  # noqa: F401 (Rendering: re-exported)
from cnnviz.analyses.feature_visualization.plan import Plan as _Plan, plan as _plan

CHANNEL_CANVAS = 160  # the largest automatic canvas of a channel's (or a direction's) spatial mean, or a class
NEURON_FIELD = 48  # a neuron whose receptive field is smaller gets the transformations' shifts in proportion
MEMORY_BUDGET = 1.5 * 2**30  # bytes of activations per batch, forward and backward


def maximize(
    model,
    layer=None,
    *,
    channels=None,
    objective: o.Objective | None = None,
    count: int = 1,
    negative: bool = False,
    diverse: int = 1,
    neuron: bool = False,
    direction=None,
    settings: RenderSettings | None = None,
    progress: Callable[[int], None] | None = None,
    **options,
) -> Rendering:
    """Render images that maximise a unit, many units, or any objective.

    Each render is compared with real images: its final value against the unit's largest
    response to them (``reference``). It stops on its own when its objective has converged
    (``stop``), so that the rest of the batch goes on without it. The call is three steps:
    prepare (what to render, on which canvas, in which batches: a :class:`RenderJob`), render
    (the batches, shared between the ranks of a process group) and assemble (the values, the
    comparison with the real images, the :class:`Rendering`).

    Inside a ``torch.distributed`` process group (``torchrun``) each rank renders a contiguous
    share of the units and every rank returns all of them: the images of one process, since each
    unit's image depends only on the seed and the unit (to the bit where each rank gets whole
    batches; else within the rounding of other batch sizes). An ``objective`` is one batch, which
    every rank renders whole.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left untouched).
        layer: a layer reference: ``"features.12:5"`` (channel 5's spatial mean),
            ``"features.12:5@3,4"`` (one neuron), ``"features.12"`` with ``channels``, a class
            (``"logits:3"``, ``"chelsea"``, or ``"logits"`` with ``channels``).
        channels: the channels (or classes) of ``layer`` to render, one image each: ``"0-15"``,
            ``[1, 5]``, ``"all"``.
        objective: instead of a layer, any :class:`cnnviz.objectives.Objective`, applied to a
            batch of ``count`` images.
        negative: minimise the unit instead (what it responds to least).
        diverse: render this many different images of each unit (a penalty on the similarity of
            their Gram matrices at the layer).
        neuron: the neuron at the centre of the map instead of the channel's spatial mean. With
            the default ``robustness``, a neuron whose receptive field is under 48 px gets the
            shifts (padding and jitters) in proportion to its field, so that they never move the
            field off what it is learning to see.
        direction: a vector over the layer's channels (``layer`` a whole layer): one image whose
            activations point along it (their spatial mean dot product with it).
        settings: how each image is rendered, a :class:`cnnviz.RenderSettings` (default: its
            defaults).
        progress: called with the number of image-steps done, after each step.
        options: fields of :class:`cnnviz.RenderSettings` that replace those of ``settings``:
            ``size``, ``steps``, ``lr``, ``param``, ``seed``, ``batch_size``, ``robustness``,
            ``redirect_steps``, ``precision``, ``regularize``, ``reference``, ``stop``,
            ``schedule``, ``filters``. In short: ``size`` ``"auto"`` renders a channel or neuron
            at about twice its receptive field (48 to 160 px), a class at the model's input size
            (at most 160 px); ``steps`` is the most steps of an image, which ends once converged
            (after at least 48 steps it gained under 2 % of its value over the last 32, at its
            third learning rate: each plateau before cuts the rate to 0.3x) unless ``stop`` is
            false; ``reference`` (the sample photographs, a :class:`cnnviz.Statistics`, a
            ``stats.npz`` or ``None``) is a floor, not the goal: a unit's image still below it at
            48 steps starts again once from the real image that moves its unit most, at half the
            learning rate (never a class); ``filters`` renders a unit that is one linear filter of
            the input as its exact maximum. Each image returned is the best of its checks.

    Returns:
        :class:`Rendering`.
    """
    chosen = RenderSettings.of(settings, options)
    if count < 1 or diverse < 1:
        raise CnnvizError(f"count and diverse must be at least 1 (got count={count}, diverse={diverse})")
    prepared = _prepare(model, layer, channels, objective, count, negative, diverse, neuron, direction, chosen)
    rendered = _render(prepared, progress)
    return _assemble(prepared, rendered)


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """What :func:`maximize` decided before rendering: the job each batch runs, the rows it
    renders (the others are a linear filter's exact maximum, already made), and the batches."""

    model: object  # the user's: the final values are measured on it
    job: RenderJob
    rows: list[int]
    filtered: dict[int, torch.Tensor]  # row -> the exact maximum of a linear filter, centred on the canvas
    chunk: int
    shared: bool  # the rows are shared between the ranks of a group (not an objective: one batch)


def _prepare(model, layer, channels, objective, count, negative, diverse, neuron, direction,
             settings: RenderSettings) -> _Prepared:
    """The plan (units, objectives, seeds), canvas and view, transformations, batch size, the real
    images' responses and the folded copy the passes run on."""
    module, class_names = unwrap(model)
    preprocessing = preprocessing_of(model)
    plan = _plan(model, layer, channels, objective, count, class_names, negative=negative, diverse=diverse,
                 neuron=neuron, direction=direction)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    size = settings.size
    canvas = _canvas(model, size, plan, preprocessing)
    robust = settings.robustness if settings.robustness is not None else Robustness()
    filter_images = filter_units(model, plan, preprocessing, canvas, size, device) if settings.filters else None
    if filter_images is not None:  # each unit is one filter: its neuron at the centre, measured as one
        plan = _plan(model, layer, channels, objective, count, class_names, negative=negative, diverse=diverse,
                     neuron=True, direction=direction)
        if size == "auto":
            canvas = filter_images.canvas
    if settings.robustness is None and plan.kind == "neuron" and not plan.ref.is_output:
        # Lucid's shifts are sized for a channel over a whole image; a neuron sees its receptive
        # field only, and shifts larger than that move the field off what it is learning to see
        robust = _scaled(robust, receptive_field_size(model, plan.ref.layer_text, preprocessing) / NEURON_FIELD)
    # in a group, a memory check that one rank's GPU fails stops every rank (not the others waiting)
    executor().everywhere("maximize/memory", lambda: _check_memory(model, plan, canvas, robust, preprocessing, device))
    canvas, view = _view(model, plan, canvas, robust, preprocessing, size)
    # a model whose output is a softmax: maximize the logits it takes (its input), not a probability
    softmax = final_softmax(module, preprocessing.channels, view) if plan.ref is not None and plan.ref.is_output else None
    if settings.robustness is None and tuple(view) == tuple(canvas):  # cropped back: shifts in proportion to a small input
        robust = _scaled(robust, min(canvas) / 224)
    if objective is not None:  # one objective over the whole batch (diversity compares its images)
        if settings.batch_size is not None and settings.batch_size < count:
            raise CnnvizError(
                f"an objective is rendered as one batch of its {count} images; give batch_size >= {count}"
            )
        chunk = count
    else:
        chunk = settings.batch_size or _batch_size(model, view, plan, preprocessing)
        chunk = max(diverse, chunk - chunk % diverse)  # the images of one unit stay in one batch
    real = _references(model, plan, settings.reference, softmax)
    offset = _padding_offset(model, plan, canvas, view, preprocessing)
    filtered = {}
    if filter_images is not None:
        filtered = {row: _centred(image, canvas) for row, image in zip(filter_images.rows, filter_images.images)}
    rows = [row for row in range(len(plan.units)) if row not in filtered]
    job = RenderJob(model=model, plan=plan, settings=settings, canvas=canvas, view=view, offset=offset,
                    preprocessing=preprocessing, robust=robust, use_bf16=bf16_wanted(settings.precision, device),
                    device=device, softmax=softmax, real=real)
    return _Prepared(model, job, rows, filtered, chunk, shared=objective is None)


def _render(prepared: _Prepared, progress) -> dict[int, tuple[torch.Tensor, int, str]]:
    """``{row: (image, steps taken, start)}`` of every row: the batches of this process's share of
    the units (:mod:`cnnviz.core.executor`), and every process gets them all."""
    job, rows, chunk = prepared.job, prepared.rows, prepared.chunk
    # one batch whose images are optimised together (diversity) is not shared: each process renders it
    run = executor() if prepared.shared else Executor()
    set_progress_total(progress, len(rows) * job.settings.steps)  # the whole's: the first process shows all
    units = list(dict.fromkeys(job.plan.groups[row] for row in rows))

    def render_share(share, shown) -> dict:
        mine = set(share.items)
        todo = [row for row in rows if job.plan.groups[row] in mine]
        rendering = job
        if todo:  # the passes run on a copy with each batch normalisation folded into its convolution (the
            # same function, about a third less work a step; the model itself where that cannot be shown)
            folded = folded_copy(prepared.model, list(job.plan.layers), (job.preprocessing.channels, *job.view))
            rendering = dataclasses.replace(job, model=folded)
        rendered = {}
        for start in range(0, len(todo), chunk):
            rendered.update(Run(job=rendering, rows=todo[start:start + chunk], progress=shown).render())
        return rendered

    # gradients are needed whatever the caller's mode (a notebook may sit in torch.no_grad()); the
    # allocator is left as the caller has it (the cnnviz command keeps freed memory in its own
    # process; in Python, wrap the call in cnnviz.reuse_freed_memory()). Shares are contiguous runs
    # of units, the images of one unit together, whole batches where there are enough: one
    # process's images to the bit
    with gradients_on(prepared.model):
        shares = run.map("maximize/renders", units, render_share, batch=chunk // job.plan.diverse, progress=progress)
    rendered = {row: (image, 0, "filter") for row, image in prepared.filtered.items()}
    for share in shares:
        rendered.update(share)
    return rendered


def _assemble(prepared: _Prepared, rendered: dict) -> Rendering:
    """The :class:`Rendering`: every image's final value measured on the image as saved, its
    outcome, and its comparison with the real images."""
    job = prepared.job
    plan, settings, real, canvas = job.plan, job.settings, job.real, job.canvas
    negative = plan.negative
    count_all = len(plan.units)
    images = [rendered[row][0] for row in range(count_all)]
    steps_taken = [rendered[row][1] for row in range(count_all)]
    starts = [rendered[row][2] for row in range(count_all)]
    final = torch.stack(images)
    with gradients_on(prepared.model):
        values = _final_values(prepared.model, plan, final, job.preprocessing, job.softmax, job.device)
    outcomes = image_outcomes(final, starts, real, plan, canvas)
    reference_values, succeeded = [None] * count_all, [None] * count_all
    if real is not None:
        for row in range(count_all):
            bound = real.minima[plan.groups[row]] if negative else real.maxima[plan.groups[row]]
            reference_values[row] = bound
            beats = bool(values[row] < bound) if negative else bool(values[row] > bound)
            succeeded[row] = beats and outcomes[row] in ("render", "filter")
    record = {
        "size": list(canvas), "steps": settings.steps, "lr": settings.lr, "schedule": settings.schedule,
        "stop": settings.stop, "param": settings.param, "seed": settings.seed, "batch_size": prepared.chunk,
        "redirect_steps": settings.redirect_steps, "precision": "bf16" if job.use_bf16 else "fp32",
        "robustness": vars(job.robust), "regularize": settings.regularize, "network_input": list(job.view),
        "cropped_back": tuple(job.view) == tuple(canvas) and job.robust.pad > 0,
        "softmax_input": job.softmax is not None, "negative": negative, "diverse": plan.diverse, "kind": plan.kind,
    }
    description = plan.description + (" (the input of the model's final softmax)" if job.softmax is not None else "")
    if prepared.filtered:
        description += f"; {len(prepared.filtered)} linear-filter units rendered as their neuron at the centre"
    return Rendering(final.float().cpu(), plan.units, values, description, record, reference_values, succeeded,
                     steps_taken, starts, real.source if real is not None else None, outcomes)


STEP_OVERHEAD = 130_000  # a step's own work (the image, its transformations, Adam), in activation values


def step_cost(model, layer) -> int:
    """The work of one optimisation step of one image of a unit of ``layer`` (a whole layer) at the
    size ``maximize`` renders it by default: the activation values of every module that runs up to
    the layer on the transformed canvas, plus the step's own work (``STEP_OVERHEAD``). A step's
    time follows it closely (about 4.5 ns per value on 2 CPU cores, on the built-in models and on
    timm's MobileNetV3 alike), so it is how a gallery shares a render budget between layers
    whatever the machine.

    Raises:
        CnnvizError: the layer cannot be rendered (as :func:`maximize` would say).
    """
    _, class_names = unwrap(model)
    preprocessing = preprocessing_of(model)
    plan = _plan(model, layer, [0], None, 1, class_names)
    canvas = _canvas(model, "auto", plan, preprocessing)
    _, view = _view(model, plan, canvas, Robustness(), preprocessing, "auto")
    per_image = _bytes_per_image(model, view, plan, preprocessing)
    return (per_image // 12 if per_image else 0) + STEP_OVERHEAD


def _references(model, plan, reference, softmax):
    """The real images' responses of the plan's units (``None``: no reference, or an objective)."""
    if reference is None or plan.ref is None:
        return None
    channels = preprocessing_of(model).channels
    if isinstance(reference, str) and reference == "samples" and channels not in (1, 3):
        return None  # photographs have 1 or 3 channels; give images of the model's own to compare
    statistics, images = None, "samples"
    if isinstance(reference, (str, os.PathLike)) and str(reference).endswith(".npz"):
        statistics = load_statistics(reference)
    elif hasattr(reference, "layers") and hasattr(reference, "images"):  # a Statistics
        statistics = reference
    elif isinstance(reference, dict):  # the arrays of a stats.npz
        statistics = reference
    else:
        images = reference
    if plan.ref.is_output and softmax is not None:
        pass  # the softmax's input is measured, as it is maximized
    return real_responses(model, plan.layers[0], plan.kind, plan.channels, images, negative=plan.negative,
                          direction=plan.direction, softmax=softmax, statistics=statistics)


def _centred(image: torch.Tensor, canvas) -> torch.Tensor:
    """``image`` in the middle of a grey canvas (or cut to it)."""
    if tuple(image.shape[1:]) == tuple(canvas):
        return image
    out = torch.full((image.shape[0], *canvas), 0.5, dtype=image.dtype)
    height, width = min(canvas[0], image.shape[1]), min(canvas[1], image.shape[2])
    top, left = (canvas[0] - height) // 2, (canvas[1] - width) // 2
    inner_top, inner_left = (image.shape[1] - height) // 2, (image.shape[2] - width) // 2
    out[:, top:top + height, left:left + width] = image[:, inner_top:inner_top + height, inner_left:inner_left + width]
    return out


def _final_values(model, plan, images, preprocessing, softmax, device) -> list[float]:
    """Each image's value in its unit's measure, on the image as it is (no transformation; a
    neuron's position is the saved image's own)."""
    offset = (0, 0)
    measure = plan.measure(list(range(len(images))), offset)
    mean = torch.as_tensor(preprocessing.mean, dtype=torch.float32).view(1, -1, 1, 1).to(device)
    std = torch.as_tensor(preprocessing.std, dtype=torch.float32).view(1, -1, 1, 1).to(device)
    values = []
    skip = SkipSoftmax(softmax) if softmax is not None else contextlib.nullcontext()
    with probe(model, list(measure.layers)) as recorder, torch.no_grad():
        for start in range(0, len(images), 32):
            batch = images[start:start + 32].to(device)
            with skip:
                recorder.run((batch - mean) / std)
            part = plan.measure(list(range(start, start + len(batch))), offset)
            values += [float(v) for v in part({n: recorder[n].float() for n in measure.layers}, batch)]
    return values


# --------------------------------------------------------------------------------------------
# size, batch, precision


def _canvas(model, size, plan: _Plan, preprocessing) -> tuple[int, int]:
    if size != "auto":
        sizes = (size, size) if isinstance(size, int) else tuple(size)
        if len(sizes) != 2 or any(not isinstance(s, int) or s < 8 for s in sizes):
            raise CnnvizError(f"size must be 'auto', H or (H, W) with at least 8 pixels, got {size!r}")
        return sizes
    if plan.ref is not None and plan.ref.is_output and plan.kind == "class_logit":
        # a class at the model's input size, at most CHANNEL_CANVAS: MobileNetV2's classes are as
        # recognisable at 160 px (in a third of the time of 224 px)
        return tuple(min(side, CHANNEL_CANVAS) for side in preprocessing.input_size)
    if plan.ref is None or plan.ref.is_output or any(name in ("logits", "output") for name in plan.layers):
        return preprocessing.input_size
    field_size = receptive_field_size(model, plan.ref.layer_text, preprocessing)
    height, width = preprocessing.input_size
    side = max(48, 8 * math.ceil(2 * field_size / 8))
    if plan.kind in ("channel", "direction"):
        # a spatial mean is a texture, the same pattern over the whole map: past CHANNEL_CANVAS a
        # larger canvas only repeats it, at a step's cost growing with the area (MobileNetV2's
        # features.10-17 render as strongly at 160 px as at 224, in half the time)
        side = min(side, CHANNEL_CANVAS)
    return (min(side, max(height, 48)), min(side, max(width, 48)))


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
                f"render at that size: size='auto' or size=({fixed[0]}, {fixed[1]})"
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
                          f"model's own: size=({fixed[0]}, {fixed[1]})")
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
    try:
        shapes = every_output_shape(model, plan.layers, torch.zeros(1, preprocessing.channels, *size))
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
                              f"or size=({fixed[0]}, {fixed[1]})")
    image = 4 * preprocessing.channels * 16  # the image, its spectrum, Adam's moments, the transforms
    per_pixel = (per_pixel or 0) + image
    available = available_memory(device)
    if available is None or per_pixel * pixels <= 0.8 * available:
        return
    side = int(math.sqrt(0.8 * available / per_pixel) / (padded[0] / canvas[0]))
    side = max(8, side // 8 * 8)
    raise CnnvizError(
        f"a {canvas[0]}x{canvas[1]} render needs about {per_pixel * pixels / 2**30:.1f} GiB for one image, and "
        f"{available / 2**30:.1f} GiB of memory is free here; render at {side}x{side} or less (size={side})"
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
            f"of {plan.ref.layer_text} at this size ({canvas[0]}x{canvas[1]}); pick a position inside or a larger size=..."
        )
    return ((outer_h - inner_h) // 2, (outer_w - inner_w) // 2)
