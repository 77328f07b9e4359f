"""``cnnviz models``, ``cnnviz samples`` and ``cnnviz predict``: what there is, and a first look."""
from __future__ import annotations

import json

import click

from cnnviz.cli.options import echo, model_options


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(as_json: bool) -> None:
    """List the built-in models (they work offline) and the other kinds of model spec.

    \b
    Examples:
      cnnviz models
      cnnviz models --json
    """
    from cnnviz.models import zoo
    from cnnviz.cli.options import note
    from cnnviz.errors import CnnvizError

    rows = []
    for name in zoo.names():
        try:
            meta = zoo.info(name)
        except CnnvizError as error:
            note(str(error))
            continue
        rows.append({
            "spec": f"builtin:{name}",
            "default": name == zoo.DEFAULT,
            "summary": meta["summary"],
            "classes": len(meta["classes"]),
            "input": "x".join(str(s) for s in [len(meta["mean"]), *meta["input_size"]]),
            "held_out_accuracy": meta["held_out_accuracy"],
        })
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        default = " (default)" if row["default"] else ""
        echo(
            f"{row['spec']}{default}: {row['summary']}; {row['classes']} classes, input {row['input']}, "
            f"held-out accuracy {row['held_out_accuracy']:.1%}"
        )
    echo(
        "torchvision:NAME: any torchvision classification model (resnet18, vgg16, alexnet, ...); "
        "add --weights DEFAULT for its pretrained weights (downloaded once)"
    )
    echo("package.module:factory, path/to/file.py:factory, path/to/model.pt: your own model")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def samples(as_json: bool) -> None:
    """List the sample photographs: use sample:NAME wherever an image is
    expected, and samples wherever a folder of images is.

    \b
    Examples:
      cnnviz samples
      cnnviz predict --image sample:chelsea
    """
    from cnnviz.inputs import samples as sample_images

    rows = []
    for name in sample_images.names():
        image = sample_images.image(name)
        rows.append({"name": f"sample:{name}", "width": image.width, "height": image.height,
                     "mode": image.mode, "description": sample_images.PHOTOGRAPHS[name]})
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        size = f"{row['width']}x{row['height']} {row['mode']}"
        echo(f"{row['name']:<{width}}  {size:<14}  {row['description']}")


@click.command()
@model_options
@click.option(
    "--image", "-i", "images", multiple=True, required=True, metavar="IMG",
    help="An image file, sample:NAME, a folder of images or samples (repeatable).",
)
@click.option("--top", "-k", default=5, show_default=True, type=click.IntRange(min=1), help="Classes per image.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def predict(loaded, images: tuple[str, ...], top: int, as_json: bool) -> None:
    """Show the top classes the model gives each image, with probabilities.

    Each image is prepared with the model's own preprocessing (mode, size,
    centre crop, mean and std): a quick check that a model loaded right.

    \b
    Examples:
      cnnviz predict --image sample:chelsea
      cnnviz predict --model torchvision:resnet18 --weights DEFAULT --image photo.jpg --top 3
      cnnviz predict --image samples --top 1
    """
    import cnnviz
    from cnnviz.cli.options import note
    from cnnviz.inputs.batches import skipped_text

    result = cnnviz.predict(loaded, list(images), top=top)
    if result.skipped:
        note(f"skipped {skipped_text(result.skipped)}")
    if as_json:
        echo(json.dumps([p.to_dict() for p in result], indent=2))
        return
    for prediction in result:
        echo(str(prediction))
