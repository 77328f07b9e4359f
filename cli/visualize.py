"""``cnnviz maximize`` and ``cnnviz dream``: images that make units respond."""
from __future__ import annotations

import click

from cnnviz.analyses.feature_visualization.settings import (
    DREAM, PARAMETERISATIONS, PRECISIONS, RENDER, DreamSettings, RenderSettings,
)
from cnnviz.core.settings import help_of
from cnnviz.cli.options import model_options, note, one_image
from cnnviz.cli.options import wrote as _wrote


class SizeType(click.ParamType):
    """``auto``, ``H``, ``HxW`` or ``H,W``."""

    name = "auto|H|HxW"

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, int)) or value == "auto":
            return value
        text = str(value).lower().replace("x", ",")
        try:
            parts = [int(part) for part in text.split(",")]
        except ValueError:
            self.fail(f"{value!r} is not auto, H or HxW (e.g. 128 or 128x96)", param, ctx)
        if len(parts) not in (1, 2) or min(parts) < 8:
            self.fail(f"{value!r} must be auto, H or HxW with sides of at least 8", param, ctx)
        return parts[0] if len(parts) == 1 else tuple(parts)


class SizeOption(click.Option):
    """``--size H [W]``: the option takes its value and, when the next argument is a whole number,
    that one too (``--size 128 96``); ``--size 128x96`` and ``--size auto`` work as well."""

    def add_to_parser(self, parser, ctx):
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            option = parser._long_opt.get(name) or parser._short_opt.get(name)
            if option is None:
                continue
            process = option.process

            def take_width(value, state, process=process):
                if str(value).isdecimal() and state.rargs and state.rargs[0].isdecimal():
                    value = f"{value}x{state.rargs.pop(0)}"
                return process(value, state)

            option.process = take_width


@click.command()
@model_options
@click.option("--layer", "-l", "target", required=True, metavar="REF",
              help="A layer (with --channels), a channel (features.12:5), a neuron (features.12:5@3,4), "
                   "logits (with --channels) or a class name.")
@click.option("--channels", "-c", metavar="SPEC", help="Channels or classes to render, one image each: 0-15, 3,5, all.")
@click.option("--steps", type=click.IntRange(min=1), default=RENDER.steps, show_default=True,
              help=help_of(RenderSettings, "steps"))
@click.option("--fixed-steps", is_flag=True, help="Run every image for exactly --steps (no stopping rule).")
@click.option("--size", cls=SizeOption, type=SizeType(), default=RENDER.size, show_default=True, metavar="H [W]",
              help=help_of(RenderSettings, "size") + " H, 'H W' or HxW.")
@click.option("--param", type=click.Choice(PARAMETERISATIONS), default=RENDER.param, show_default=True,
              help=help_of(RenderSettings, "param"))
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=RENDER.lr, show_default=True,
              help=help_of(RenderSettings, "lr"))
@click.option("--negative", is_flag=True, help="Minimise the unit: what it responds to least.")
@click.option("--diverse", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="N different images of each unit (a penalty on their similarity).")
@click.option("--neuron", is_flag=True, help="The neuron at the centre of the map instead of the channel's mean.")
@click.option("--direction", metavar="W,W,...|FILE",
              help="A direction in channel space of a whole --layer: one weight per channel (comma-separated, "
                   "or a .npy/.txt file); renders one image along it.")
@click.option("--reference", "reference_images", default=RENDER.reference, show_default=True, metavar="IMAGES",
              help=help_of(RenderSettings, "reference") + " (--stats for a dataset's)")
@click.option("--seed", type=int, default=RENDER.seed, show_default=True, help=help_of(RenderSettings, "seed"))
@click.option("--batch-size", type=click.IntRange(min=1), help=help_of(RenderSettings, "batch_size"))
@click.option("--precision", type=click.Choice(PRECISIONS), default=RENDER.precision, show_default=True,
              help=help_of(RenderSettings, "precision"))
@click.option("--stats", "stats_file", type=click.Path(dir_okay=False), metavar="NPZ",
              help="stats.npz from 'cnnviz stats' of the same layer: each render is compared with the dataset's "
                   "maximum (for a channel or class its largest per-image mean, the objective's own measure; "
                   "for a neuron the largest value anywhere in its map) instead of the --reference images'.")
@click.option("--output", "-o", default="cnnviz-output", show_default=True, metavar="DIR")
def maximize(loaded, target, channels, steps, fixed_steps, size, param, lr, negative, diverse, neuron, direction,
             reference_images, seed, batch_size, precision, stats_file, output) -> None:
    """Render images that maximise units: channels, neurons or classes.

    Each unit is one image of a batch, with its own seed and random
    transformations; the network stops at the target layer. Each image is
    compared with the unit's best response to real images (the sample
    photographs, --reference or --stats), and stops once converged; one
    line says how many beat it (a photograph given back, or a flat field,
    counted apart) and the steps they ran. Writes a PNG per unit, a grid,
    and a JSON with each unit's value, reference, 'succeeded', steps and
    'outcome'.

    \b
    Examples:
      cnnviz maximize --layer features.12 --channels 0-15
      cnnviz maximize --layer features.12 --channels 0-3 --param maco --diverse 3
      cnnviz maximize --layer features.12:5 --negative
      cnnviz maximize -m builtin:patterns --layer logits --channels all --steps 128
      cnnviz maximize --layer chelsea --size 96 128 --seed 3
    """
    from tqdm import tqdm

    import cnnviz
    from cnnviz.core import distributed

    maxima = _dataset_maxima(stats_file)
    vector = _direction_vector(direction) if direction is not None else None
    reference = maxima if maxima is not None else (None if reference_images.lower() == "none" else reference_images)
    with distributed.launched(loaded):  # under torchrun each rank renders its share of the units
        rank = distributed.rank_and_size()[0]
        with tqdm(unit="image-step", desc="maximize", disable=None if rank == 0 else True, leave=False) as bar:
            rendering = cnnviz.maximize(loaded, target, channels=channels, steps=steps, size=size, param=param,
                                        lr=lr, seed=seed, batch_size=batch_size, precision=precision,
                                        progress=bar.update, reference=reference, stop=not fixed_steps,
                                        negative=negative, diverse=diverse, neuron=neuron, direction=vector)
    if rank != 0:
        return  # rank 0 writes and says everything
    name = target if channels is None else f"{target}-{channels}"
    if negative:
        name += "-negative"
    report = cnnviz.reports.maximize(rendering, name=name)
    if maxima is not None and rendering.reference_source is not None and "statistics" not in rendering.reference_source:
        note(f"{stats_file} has no statistics of this layer (or was written by an older cnnviz); compared with "
             f"{rendering.reference_source} instead; run cnnviz stats --layer for it")
    _wrote(report.write(output, model=loaded.spec))
    note(rendering.summary())


def _direction_vector(text: str):
    """Weights from ``1,0,-0.5`` or a ``.npy`` / text file of numbers."""
    import os

    import numpy as np

    from cnnviz.errors import CnnvizError

    if os.path.exists(text):
        try:
            values = np.load(text) if text.endswith(".npy") else np.loadtxt(text, delimiter=None, ndmin=1)
        except Exception as error:
            raise CnnvizError(f"cannot read {text!r} as a direction (one number per channel): "
                              f"{type(error).__name__}") from None
        return np.asarray(values, dtype=np.float32).ravel()
    try:
        return [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise CnnvizError(f"--direction {text!r} is neither a file nor comma-separated numbers (e.g. 1,0,-0.5)") from None


def _dataset_maxima(path):
    if path is None:
        return None
    from cnnviz.analyses.feature_visualization.real_images import load_statistics

    return load_statistics(path)


@click.command()
@model_options
@click.option("--image", "-i", multiple=True, required=True, callback=one_image, metavar="IMG",
              help="An image file or sample:NAME.")
@click.option("--layer", "-l", "layers", multiple=True, required=True, metavar="REF", help="A layer (repeatable).")
@click.option("--weight", "layer_weights", multiple=True, type=float, metavar="W",
              help="The weight of each --layer, in order (default 1 each).")
@click.option("--octaves", type=click.IntRange(min=1), default=DREAM.octaves, show_default=True,
              help=help_of(DreamSettings, "octaves"))
@click.option("--scale", type=click.FloatRange(min=1, min_open=True), default=DREAM.scale, show_default=True,
              help=help_of(DreamSettings, "scale"))
@click.option("--steps", "--iterations", "steps", type=click.IntRange(min=1), default=DREAM.steps, show_default=True,
              help=help_of(DreamSettings, "steps") + " (--iterations: its old name)")
@click.option("--step", type=click.FloatRange(min=0, min_open=True), default=DREAM.step, show_default=True,
              help=help_of(DreamSettings, "step"))
@click.option("--jitter", type=click.IntRange(min=0), default=DREAM.jitter, show_default=True,
              help=help_of(DreamSettings, "jitter"))
@click.option("--tile", type=click.IntRange(min=16), default=DREAM.tile, show_default=True,
              help=help_of(DreamSettings, "tile"))
@click.option("--seed", type=int, default=DREAM.seed, show_default=True, help=help_of(DreamSettings, "seed"))
@click.option("--output", "-o", default="cnnviz-output", show_default=True, metavar="DIR")
def dream(loaded, image, layers, layer_weights, octaves, scale, steps, step, jitter, tile, seed, output) -> None:
    """Deep Dream: change an image so that the chosen layers respond more.

    Octaves (the image shrunk by --scale), random rolls, the gradient taken
    tile by tile and normalised, the detail of each octave carried to the
    next. Writes the dreamed image at the original's size and a JSON.

    \b
    Examples:
      cnnviz dream --image sample:chelsea --layer features.12
      cnnviz dream -i photo.jpg -l features.12 -l features.19 --weight 1 --weight 0.5 --octaves 5
    """
    from tqdm import tqdm

    import cnnviz

    with tqdm(total=octaves * steps, unit="step", desc="dream", disable=None, leave=False) as bar:
        result = cnnviz.dream(loaded, image, list(layers), weights=list(layer_weights) or None, octaves=octaves, scale=scale,
                              steps=steps, step=step, jitter=jitter, tile=tile, seed=seed, progress=bar.update)
    _wrote(cnnviz.reports.dream(result, image).write(output, model=loaded.spec))
