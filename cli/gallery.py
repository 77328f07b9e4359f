"""``cnnviz gallery``: a static HTML site of one model's figures."""
from __future__ import annotations

import click

from cnnviz.cli.options import echo, model_options, note
from cnnviz.core.settings import help_of
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
              help=help_of(GallerySettings, "max_channels"))
@click.option("--unit-renders", default=GALLERY.unit_renders, show_default=True, metavar="N|auto|all",
              help=help_of(GallerySettings, "unit_renders"))
@click.option("--diverse", type=click.IntRange(min=1), default=GALLERY.diverse, show_default=True,
              help=help_of(GallerySettings, "diverse"))
@click.option("--exemplars", type=click.IntRange(min=1, max=64), default=GALLERY.exemplars, show_default=True,
              help=help_of(GallerySettings, "exemplars"))
@click.option("--steps", type=click.IntRange(min=1), default=GALLERY.steps, show_default=True,
              help=help_of(GallerySettings, "steps"))
@click.option("--class-steps", type=click.IntRange(min=1), default=GALLERY.class_steps, show_default=True,
              help=help_of(GallerySettings, "class_steps"))
@click.option("--max-classes", default=GALLERY.max_classes, show_default=True, metavar="N|auto",
              help=help_of(GallerySettings, "max_classes"))
@click.option("--activation-images", type=click.IntRange(min=1), default=GALLERY.activation_images, show_default=True,
              help=help_of(GallerySettings, "activation_images"))
@click.option("--attribution-images", type=click.IntRange(min=1), default=GALLERY.attribution_images, show_default=True,
              help=help_of(GallerySettings, "attribution_images"))
@click.option("--classes", default=",".join(GALLERY.classes), show_default=True, metavar="C[,C...]",
              help=help_of(GallerySettings, "classes"))
@click.option("--methods", default=",".join(GALLERY.methods), show_default=True, metavar="M[,M...]",
              help=help_of(GallerySettings, "methods"))
@click.option("--faithfulness-steps", type=click.IntRange(min=0), default=GALLERY.faithfulness_steps, show_default=True,
              metavar="N", help=help_of(GallerySettings, "faithfulness_steps"))
@click.option("--dream-image", metavar="IMG", help=help_of(GallerySettings, "dream_image"))
@click.option("--dream-octaves", type=click.IntRange(min=1), default=GALLERY.dream_octaves, show_default=True,
              help=help_of(GallerySettings, "dream_octaves"))
@click.option("--dream-steps", "--dream-iterations", "dream_steps", type=click.IntRange(min=1), default=GALLERY.dream_steps,
              show_default=True, help=help_of(GallerySettings, "dream_steps") + " (--dream-iterations: its old name)")
@click.option("--concepts-k", type=click.IntRange(min=1), default=GALLERY.concepts_k, show_default=True,
              help=help_of(GallerySettings, "concepts_k"))
@click.option("--concept-layers", default=GALLERY.concept_layers, metavar="REF[,REF...]|0",
              help=help_of(GallerySettings, "concept_layers"))
@click.option("--seed", type=int, default=GALLERY.seed, show_default=True, help=help_of(GallerySettings, "seed"))
@click.option("--force", is_flag=True, help="Redo every figure, even those whose inputs and settings are unchanged.")
@click.option("--output", "-o", default="cnnviz-gallery", show_default=True, metavar="DIR")
def gallery(loaded, images, layers, max_channels, unit_renders, diverse, exemplars, steps, class_steps, max_classes,
            activation_images, attribution_images, classes, methods, faithfulness_steps, dream_image, dream_octaves, dream_steps,
            concepts_k, concept_layers, seed, force, output) -> None:
    """Write a static HTML gallery of a model: an index with the hierarchy
    of renders from shallow to deep and the layer table, a page per layer (a
    grid of its units, activations, kernels, statistics, Deep Dream), a page
    per unit (its renders against the real images, its dataset examples with
    the receptive field marked, its distribution, maps, kernel and strongest
    connections), a page of attributions and one of classes, a page of
    concepts for the last two layers with spatial maps, manifest.json.

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
                classes=tuple(c.strip() for c in classes.split(",") if c.strip()), faithfulness_steps=faithfulness_steps,
                dream_image=dream_image,
                dream_octaves=dream_octaves, dream_steps=dream_steps, concepts_k=concepts_k,
                concept_layers=_layer_list(concept_layers), seed=seed,
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


def _layer_list(text: str | None):
    """``--concept-layers``: ``None`` (the default layers), ``0`` or ``none`` (no concepts page) or layer names."""
    if text is None:
        return None
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    return () if not names or names in (("0",), ("none",)) else names
