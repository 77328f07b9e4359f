"""``cnnviz concepts``: what a layer knows, as a few non-negative directions (:func:`cnnviz.concepts`)."""
from __future__ import annotations

import inspect
import math

import click

from cnnviz.analyses import concepts as analysis
from cnnviz.analyses.concepts import SIGNED
from cnnviz.cli.options import echo, model_options, note, several_images
from cnnviz.cli.options import output_option as _output_option
from cnnviz.cli.options import wrote as _wrote

RENDER_STEPS = 128  # steps of each concept's render: a sketch of the direction, not a converged render


def _default(name: str):
    """The default of :func:`cnnviz.concepts`'s keyword ``name`` (the one source of the options' defaults)."""
    return inspect.signature(analysis.concepts).parameters[name].default


def _one_layer(ctx, param, value):
    """One layer: the same layer given twice is once; two layers are refused (concepts.json is one
    layer's)."""
    layers = list(dict.fromkeys(value))
    if len(layers) > 1:
        raise click.BadParameter(f"this command finds the concepts of one layer, but {len(layers)} were given "
                                 f"({', '.join(layers)}); run it once per layer, with its own -o", ctx=ctx, param=param)
    return layers[0]


def _score(text: str | None):
    """``--score``: a whole number is a class index (``logits:K``); anything else a reference."""
    if text is None:
        return None
    return int(text) if text.strip().isdecimal() else text


@click.command()
@model_options
@click.option("--images", "-i", multiple=True, default=["samples"], show_default=True, callback=several_images,
              metavar="DIR|samples", help="A folder of images (recursive), samples, or an image (repeatable).")
@click.option("--layer", "-l", "layer", multiple=True, required=True, callback=_one_layer, metavar="REF",
              help="A layer with spatial maps (N x C x H x W), such as features.18 or layer4.")
@click.option("-k", "k", type=click.IntRange(min=1), default=_default("k"), show_default=True,
              help="The number of concepts (at most the layer's channels).")
@click.option("--score", metavar="CLASS|UNIT",
              help="What the importance explains: a class (name or index), logits:K or a unit downstream "
                   "(layer4.1:12, its spatial mean); default each image's top class.")
@click.option("--exemplars", type=click.IntRange(min=1), default=_default("exemplars"), show_default=True,
              help="Image regions kept per concept, where it is strongest.")
@click.option("--importance-images", type=click.IntRange(min=0), default=_default("importance_images"),
              show_default=True,
              help="The first images whose importance, deletion and fidelity are measured (each costs k + 3 passes and a backward pass).")
@click.option("--fit-images", type=click.IntRange(min=1), default=_default("fit_images"), show_default=True,
              help="The first images whose positions the concepts are fitted on (every image is then expressed on them).")
@click.option("--signed", type=click.Choice(SIGNED), default=_default("signed"), show_default=True,
              help="A layer that goes negative: split (its positive and negative parts side by side; a direction "
                   "is the positive part less the negative) or shift (each channel raised by its least value).")
@click.option("--batch-size", type=click.IntRange(min=1), default=_default("batch_size"), show_default=True)
@click.option("--seed", type=int, default=_default("seed"), show_default=True,
              help="The seed of the sampled positions, the random baseline and the renders.")
@click.option("--steps", type=click.IntRange(min=1), default=RENDER_STEPS, show_default=True,
              help="Steps of each concept's render (cnnviz maximize --direction).")
@click.option("--no-renders", is_flag=True, help="Render no image of the concepts' directions.")
@click.option("--workers", type=click.IntRange(min=0), default=_default("workers"), show_default=True,
              help="Processes decoding the image files while the model runs (0: the command's own).")
@_output_option
def concepts(loaded, images, layer, k, score, exemplars, importance_images, fit_images, signed, batch_size, seed,
             steps, no_renders, workers, output) -> None:
    """Concepts: a layer's activations over images as k non-negative directions.

    Every position of every image is a vector of the layer's channels;
    non-negative matrix factorisation finds k directions that rebuild them
    (fitted on the first --fit-images images, every image then expressed on
    them). Per concept: its direction, its share of the layer, its top
    channels, the image regions where it is strongest, its map over the
    first images, and how much it matters to each image's top class (or
    --score): gradient x coefficient, and the drop when it is removed,
    beside a random direction's. Writes concepts.json (each image's
    weights, each direction, per concept its numbers), concepts_LAYER.png,
    concept_maps_LAYER.png and one render per concept, concept_J_LAYER.png.

    \b
    Examples:
      cnnviz concepts -l features.18 -k 4
      cnnviz concepts -m torchvision:resnet18 -w DEFAULT -i photos/ -l layer4 -k 8 -o out
      cnnviz concepts -i samples -l features.18 --score chelsea --no-renders
    """
    from tqdm import tqdm

    import cnnviz
    from cnnviz.core import distributed
    from cnnviz.inputs.batches import shard_images

    with distributed.launched(loaded):
        rank, size = distributed.rank_and_size()
        # under torchrun each rank streams its share; rank 0 shows them all and writes everything
        total = len(shard_images(images, range))
        desc = "concepts" if size == 1 else f"concepts ({size} ranks)"
        with tqdm(total=total, unit="image", desc=desc, disable=None if rank == 0 else True, leave=False) as bar:
            result = cnnviz.concepts(loaded, images, layer, k=k, score=_score(score), exemplars=exemplars,
                                     importance_images=importance_images, fit_images=fit_images, signed=signed,
                                     batch_size=batch_size, seed=seed, progress=bar.update, workers=workers)
        renders = {} if no_renders else _renders(loaded, result, steps, seed, rank)
        if rank != 0:
            return
    report = cnnviz.reports.concepts(result, renders)
    _summary(result)
    for message in report.notes:
        note(message)
    _wrote(report.write(output, model=loaded.spec))


def _renders(loaded, result, steps: int, seed: int, rank: int) -> dict:
    """An image along each concept's direction (``cnnviz.maximize(direction=...)``), concept number
    -> its Rendering. Under torchrun the concepts are dealt out to the ranks, each rendered whole by
    one (alone), and every rank gets them all."""
    from tqdm import tqdm

    import cnnviz
    from cnnviz.core.executor import executor

    work = executor()
    dealt = work.deal(list(range(result.k)))

    def mine() -> dict:
        done = {}
        with work.alone(), tqdm(total=len(dealt.mine) * steps, unit="step", desc="concept renders",
                                disable=None if rank == 0 else True, leave=False) as bar:
            for concept in dealt.mine:
                done[concept] = cnnviz.maximize(loaded, result.layer, direction=result.directions[concept],
                                                steps=steps, seed=seed, progress=bar.update)
        return done

    return {concept: rendering for part in work.everywhere("concepts/renders", mine) for concept, rendering in part.items()}


def _summary(result) -> None:
    """A few lines on stdout: the concepts' numbers, one line each."""
    fidelity = "" if math.isnan(result.fidelity) else f"; fidelity {result.fidelity:.2f} (targets kept by the reconstruction)"
    echo(f"{result.layer}: {result.k} concepts of {len(result.images)} images; reconstruction error "
         f"{result.error:.2f}{fidelity}")
    data = result.to_dict()["concepts"]
    echo(f"{'concept':>7}  {'share':>5}  {'top channels':<20}  {'importance':>10}  {'deletion':>8}  {'random':>8}")
    for entry in data:
        channels = ", ".join(str(c["channel"]) for c in entry["top_channels"][:4])
        echo(f"{entry['concept']:>7}  {entry['share']:>5.0%}  {channels:<20}  {_number(entry['importance']):>10}  "
             f"{_number(entry['deletion']):>8}  {_number(entry['random_deletion']):>8}")


def _number(value) -> str:
    return "-" if value is None else f"{value:.3g}"
