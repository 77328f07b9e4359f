"""``cnnviz layers``: the table of a model's layers."""
from __future__ import annotations

import json

import click

from cnnviz.cli.options import echo, model_options, note


@click.command()
@model_options
@click.option(
    "--layer", "-l", "refs", multiple=True, metavar="REF",
    help="Show only this layer (repeatable); checks that the reference, with its call, channel "
    "and position, exists.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of rows instead of a table.")
@click.option("--rf", "with_rf", is_flag=True,
              help="Add a column with each layer's theoretical receptive field: size /stride @offset "
              "in input pixels, or 'global' (see 'cnnviz rf').")
def layers(loaded, refs: tuple[str, ...], as_json: bool, with_rf: bool) -> None:
    """List every layer of a model: its reference name, type, output shape
    per call, calls per forward pass and parameter count.

    The names are the layer references every other command takes (a module
    that runs several times is named NAME#2 for its second call). Shapes come
    from a dry run on one image of the model's input size.

    \b
    Examples:
      cnnviz layers --model torchvision:resnet18
      cnnviz layers --model torchvision:resnet18 --layer layer1.0.relu#2:5@7,3
      cnnviz layers --model mypackage.nets:make_net --input-size 64 64 --json
      cnnviz layers --model torchvision:vgg16 --rf
    """
    import cnnviz

    table = cnnviz.layer_table(loaded, layer=list(refs) or None, receptive_fields=with_rf)
    for message in table.notes:
        note(message)
    if as_json:
        echo(json.dumps(table.to_dict(), indent=2))
    else:
        echo(str(table))
