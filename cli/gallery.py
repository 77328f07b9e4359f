"""``cnnviz gallery``: a static HTML site of one model's figures."""
from __future__ import annotations

import click

from cnnviz.cli.options import echo, model_options, note
from cnnviz.site.settings import GallerySettings

GALLERY = GallerySettings()  # the one source of the defaults below


@click.command()
@model_options
@click.option("--images", "-i", "images", multiple=True, metavar="DIR|samples|FILE",
              help="The images: a folder, samples (the bundled photographs, default), files or sample:NAME "
                   "(repeatable).")
@click.option("--layer", "--layers", "-l", "layers", multiple=True, metavar="REF",
              help="Layers that get a page (repeatable, or comma-separated); default every convolution, "
                   "or 8 spread over the depth when there are more than 12.")
@click.option("--max-channels", default=GALLERY.max_channels, show_default=True, metavar="N|auto|all",
              help="Units per layer with a page (render, exemplars, maps); auto: as many as the render budget "
                   "allows, at least 16, at most 128 (32 of the built-in photo model); all (or 0) for every unit. "
                   "The units with the strongest response to the images are shown, in every section alike.")
@click.option("--unit-renders", default=GALLERY.unit_renders, show_default=True, metavar="N|auto|all",
              help="Units per layer (the strongest shown) that also get the neuron, diverse and negative renders; "
                   "auto: as many as their budget allows, at least 1, at most 16.")
@click.option("--diverse", type=click.IntRange(min=1), default=GALLERY.diverse, show_default=True,
              help="Images of each unit's diverse set.")
@click.option("--exemplars", type=click.IntRange(min=1, max=64), default=GALLERY.exemplars, show_default=True,
              help="Dataset examples per unit, where it is highest and where it is lowest.")
@click.option("--steps", type=click.IntRange(min=1), default=GALLERY.steps, show_default=True,
              help="The most optimisation steps of a unit's maximal-response image (each stops once converged; "
                   "more steps also mean fewer units within the budget).")
@click.option("--class-steps", type=click.IntRange(min=1), default=GALLERY.class_steps, show_default=True,
              help="The most optimisation steps of a class visualization (each stops once converged).")
@click.option("--max-classes", default=GALLERY.max_classes, show_default=True, metavar="N|auto",
              help="Class visualizations (the first classes); 0 for none; auto: as many as their budget allows, "
                   "at most 64.")
@click.option("--activation-images", type=click.IntRange(min=1), default=GALLERY.activation_images, show_default=True,
              help="Images whose activations are drawn on every layer page.")
@click.option("--attribution-images", type=click.IntRange(min=1), default=GALLERY.attribution_images, show_default=True,
              help="Images attributed with every method on the attributions page.")
@click.option("--classes", default=",".join(GALLERY.classes), show_default=True, metavar="C[,C...]",
              help="Classes each image is attributed to: top1 (its prediction), topN (its N best, N up to 3), label "
                   "(its true class, where its file or folder is named like one), or class names or indices.")
@click.option("--methods", default=",".join(GALLERY.methods), show_default=True, metavar="M[,M...]",
              help="Attribution methods, side by side.")
@click.option("--dream-image", metavar="IMG", help="The image Deep Dream changes (default: the first image).")
@click.option("--dream-octaves", type=click.IntRange(min=1), default=GALLERY.dream_octaves, show_default=True)
@click.option("--dream-steps", "--dream-iterations", "dream_steps", type=click.IntRange(min=1), default=GALLERY.dream_steps, show_default=True,
              help="Deep Dream's steps per octave.")
@click.option("--seed", type=int, default=GALLERY.seed, show_default=True)
@click.option("--force", is_flag=True, help="Redo every figure, even those whose inputs and settings are unchanged.")
@click.option("--output", "-o", default="cnnviz-gallery", show_default=True, metavar="DIR")
def gallery(loaded, images, layers, max_channels, unit_renders, diverse, exemplars, steps, class_steps, max_classes,
            activation_images, attribution_images, classes, methods, dream_image, dream_octaves, dream_steps, seed,
            force, output) -> None:
    """Write a static HTML gallery of a model: an index with the hierarchy
    of renders from shallow to deep and the layer table, a page per layer (a
    grid of its units, activations, kernels, statistics, Deep Dream), a page
    per unit (its renders against the real images, its dataset examples with
    the receptive field marked, its distribution, maps, kernel and strongest
    connections), a page of attributions and one of classes, manifest.json.

    Open DIR/index.html in a browser (no server needed). A re-run reuses
    every figure whose model, images and settings are unchanged, so an
    interrupted run is completed by running the same command again.

    \b
    Examples:
      cnnviz gallery
      cnnviz gallery --model builtin:patterns -o patterns-gallery
      cnnviz gallery -m torchvision:vgg16 -w DEFAULT -i photos/ --layer features.10,features.28 --max-channels 8
    """
    from tqdm import tqdm

    import cnnviz
    from cnnviz.core import distributed

    bars: list = []

    def progress(stage: str, total: int):
        bar = tqdm(total=total, desc=f"{stage:<12}", unit="", disable=None, leave=False)
        bars.append(bar)
        return bar.update

    chosen_layers = [part.strip() for text in layers for part in text.split(",") if part.strip()]
    channels, renders = _units(max_channels, "--max-channels"), _units(unit_renders, "--unit-renders")
    classes_shown = _units(max_classes, "--max-classes")
    if classes_shown is None:
        raise click.BadParameter(f"{max_classes!r} is not a number of classes or auto", param_hint="--max-classes")
    try:
        with distributed.launched(loaded):  # under torchrun the ranks share the jobs; rank 0 writes
            rank = distributed.rank_and_size()[0]
            site = cnnviz.gallery(
                loaded, list(images) or "samples", chosen_layers or None, output=output, force=force, progress=progress,
                max_channels=channels, unit_renders=renders, diverse=diverse, exemplars=exemplars, steps=steps,
                class_steps=class_steps, max_classes=classes_shown, activation_images=activation_images,
                attribution_images=attribution_images, methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
                classes=tuple(c.strip() for c in classes.split(",") if c.strip()), dream_image=dream_image,
                dream_octaves=dream_octaves, dream_steps=dream_steps, seed=seed,
            )
    finally:
        for bar in bars:
            bar.close()
    if rank != 0:
        return  # rank 0 says it
    for line in site.failed:
        note(f"not shown: {line}")
    echo(f"wrote {site.index} ({len(site.units)} unit pages, {len(site.figures)} figures; {site.done} jobs run, "
               f"{site.reused} reused)")
    echo(f"open file://{site.index.resolve()} in a browser")


def _units(text: str, option: str):
    """``auto``, ``all`` (``None``) or a number (``0`` is all for --max-channels, none for the others)."""
    value = text.strip().lower()
    if value in ("auto", "all"):
        return None if value == "all" else "auto"
    if value.isdigit():
        return None if option == "--max-channels" and int(value) == 0 else int(value)
    raise click.BadParameter(f"{text!r} is not a number of units, auto or all", param_hint=option)
