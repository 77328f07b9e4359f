"""``cnnviz kernels``, ``cnnviz activations`` and ``cnnviz stats``: look inside a model."""
from __future__ import annotations

from pathlib import Path

import click

from cnnviz.cli.options import model_options, note, one_image, several_images
from cnnviz.cli.options import output_option as _output_option
from cnnviz.cli.options import wrote as _wrote

CHECKPOINTS = ".cnnviz-checkpoints"  # inside the output folder: each process's statistics so far


@click.command()
@model_options
@click.option("--layer", "-l", "layers", multiple=True, metavar="REF",
              help="A convolution (repeatable); default the model's first convolution.")
@click.option("--channels", "-c", metavar="SPEC", help="Output channels: 0-15, 3,5,9, all (default: the first 64).")
@click.option("--inputs", metavar="SPEC", help="Input channels for the pairs view (default: the first 16).")
@click.option("--view", type=click.Choice(["auto", "colour", "pairs", "outputs"]), default="auto", show_default=True,
              help="colour images, (output, input) pairs, or one map per output channel.")
@click.option("--scope", type=click.Choice(["kernel", "layer", "global"]), default="layer", show_default=True,
              help="What the largest |weight| that sets the colour scale is taken over.")
@_output_option
def kernels(loaded, layers, channels, inputs, view, scope, output) -> None:
    """Draw the kernels (weights) of convolutions.

    A first-layer kernel over RGB input is drawn as a colour image (mid-grey is
    zero); deeper kernels as a grid of (output, input) weight maps on a colour
    scale centred on zero, with a colour bar in raw units.

    \b
    Examples:
      cnnviz kernels --layer features.0
      cnnviz kernels --layer features.10 --channels 0-7 --scope kernel -o out
      cnnviz kernels --model torchvision:alexnet --weights DEFAULT --layer features.0
    """
    import cnnviz

    names = list(dict.fromkeys(layers)) or cnnviz.convolutions(loaded)[:1]  # a layer given twice: once
    if not names:
        raise cnnviz.CnnvizError(f"{loaded.spec} has no convolutions")
    reports = [cnnviz.reports.kernels(cnnviz.kernels(loaded, name, channels=channels, inputs=inputs, view=view), scope)
               for name in names]
    from cnnviz.core import output as files

    from cnnviz.core.staging import staged

    files.check_writable([path for report in reports for path in report.targets(output)])
    written = []
    with staged(output):  # every layer's figures appear together, or none
        for report in reports:
            written += report.write(output, model=loaded.spec)
    for report in reports:
        for message in report.notes:
            note(message)
    _wrote(written)


@click.command()
@model_options
@click.option("--image", "-i", multiple=True, required=True, callback=one_image, metavar="IMG",
              help="An image file or sample:NAME.")
@click.option("--layer", "-l", "layers", multiple=True, required=True, metavar="REF", help="A layer (repeatable).")
@click.option("--top", "-k", type=click.IntRange(min=1), default=32, show_default=True,
              help="Show this many channels per layer, by mean activation.")
@click.option("--order", type=click.Choice(["mean", "index"]), default="mean", show_default=True,
              help="Show channels by mean activation (highest first) or by index.")
@click.option("--channels", "-c", metavar="SPEC", help="Show these channels instead (0-15, 3,5, all).")
@click.option("--scope", type=click.Choice(["map", "layer", "global"]), default="layer", show_default=True,
              help="Colour scale per map, per layer, or over all the layers asked.")
@click.option("--overlay", is_flag=True, help="Draw the maps over the input image.")
@_output_option
def activations(loaded, image, layers, top, order, channels, scope, overlay, output) -> None:
    """Draw the feature maps of one image at one or more layers.

    The image (any size and mode) is prepared with the model's preprocessing.
    Each map is titled with its channel and raw range; the input as the model
    saw it is saved as input.png.

    \b
    Examples:
      cnnviz activations --image sample:chelsea --layer features.2 --layer features.12
      cnnviz activations -i photo.jpg -l features.12 --top 16 --overlay --scope map -o out
    """
    import cnnviz

    result = cnnviz.activations(loaded, image, list(layers), top=top, order=order, channels=channels)
    _wrote(cnnviz.reports.activations(result, scope=scope, overlay=overlay).write(output, model=loaded.spec))


@click.command()
@model_options
@click.option("--images", "-i", multiple=True, callback=several_images, required=True, metavar="DIR|samples",
              help="A folder of images (recursive), samples, or an image (repeatable).")
@click.option("--layer", "-l", "layers", multiple=True, required=True, metavar="REF", help="A layer (repeatable).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--exemplars", "--top-k", "top_k", type=click.IntRange(min=1, max=64), default=8, show_default=True,
              help="Images kept per channel where it is highest, and where it is lowest (--top-k: the same).")
@click.option("--channels", "-c", metavar="SPEC",
              help="The channels of the exemplar figures: 0-15, 3,5,9, all (default: the first 16).")
@click.option("--bins", type=click.IntRange(min=4), default=128, show_default=True, help="Histogram bins (a multiple of 4).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes decoding the image files while the model runs (0: the command's own).")
@click.option("--checkpoint-minutes", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Each process saves its statistics so far at least this far apart (in OUTPUT/.cnnviz-checkpoints); "
                   "the same command run again after a kill goes on from there.")
@click.option("--no-checkpoints", is_flag=True, help="Save no checkpoints (a killed run starts again).")
@_output_option
def stats(loaded, images, layers, batch_size, top_k, channels, bins, workers, checkpoint_minutes, no_checkpoints,
          output) -> None:
    """Statistics of activations over a population of images, streamed.

    Per channel: mean, std, min, max, fraction positive and near zero, dead
    units, histograms (negative values kept) and the top images (exemplars).
    Writes stats.npz, stats.json and figures: histograms, per-channel
    statistics, the colorful dimension across layers, exemplar grids (of the
    first 16 channels of each layer, or those of --channels).

    \b
    Examples:
      cnnviz stats --images samples --layer features.2 --layer features.26
      cnnviz stats -m torchvision:resnet18 -w DEFAULT -i photos/ -l layer1 -l layer4 -o out
      cnnviz stats -i samples -l features.12 --channels 0-7,12
    """
    from tqdm import tqdm

    import cnnviz
    from cnnviz.core import distributed
    from cnnviz.inputs.batches import shard_images

    if channels is not None:
        _check_channels(loaded, layers, channels)  # said before the images are read, not after
    with distributed.launched(loaded):
        rank, size = distributed.rank_and_size()
        # under torchrun each rank streams its share; rank 0 shows them all and writes everything
        total = len(shard_images(images, range))  # every image (rank 0 shows them all)
        desc = "statistics" if size == 1 else f"statistics ({size} ranks)"
        with tqdm(total=total, unit="image", desc=desc, disable=None if rank == 0 else True, leave=False) as bar:
            result = cnnviz.statistics(loaded, images, list(layers), batch_size=batch_size, exemplars=top_k, bins=bins,
                                       progress=bar.update, workers=workers,
                                       checkpoint=None if no_checkpoints else Path(output) / CHECKPOINTS,
                                       checkpoint_minutes=checkpoint_minutes)
        if rank != 0:
            return
    if result.resumed:
        note(f"went on from the checkpoints of an earlier run: {result.resumed} of the {result.images} images "
             "were not read again")
    report = cnnviz.reports.statistics(result, channels=channels)
    for message in report.notes:
        note(message)
    _wrote(report.write(output, model=loaded.spec))


def _check_channels(loaded, layers, channels: str) -> None:
    """Refuse --channels that a layer does not have, from one dry run on a blank input (the layer's
    output shape); a dry run that fails leaves the check to the figures."""
    import torch

    import cnnviz
    from cnnviz.core.references import channel_list

    blank = torch.zeros(1, loaded.preprocessing.channels, *loaded.preprocessing.input_size)
    try:
        outputs = cnnviz.capture(loaded, blank, list(dict.fromkeys(layers)))
    except cnnviz.CnnvizError:
        return  # a bad layer or input: cnnviz.statistics says what is wrong
    for layer, output in outputs.items():
        if isinstance(output, torch.Tensor) and output.dim() >= 2:
            try:
                channel_list(channels, output.shape[1])
            except cnnviz.CnnvizError as error:
                raise cnnviz.CnnvizError(f"{layer}: {error}") from None
