"""``cnnviz saliency``: input gradients and attributions, through captum."""
from __future__ import annotations

import click

from cnnviz.analyses.attribution_settings import ATTRIBUTION, DEFAULT_METHODS, METHODS, AttributionSettings
from cnnviz.analyses.faithfulness import FaithfulnessSettings
from cnnviz.core.settings import help_of
from cnnviz.cli.messages import cli_syntax
from cnnviz.cli.options import echo, model_options, wrote

FAITHFULNESS = FaithfulnessSettings()


@click.command()
@model_options
@click.option("--image", "-i", "images", multiple=True, required=True, metavar="IMG",
              help="An image file, sample:NAME, a folder or samples (repeatable).")
@click.option("--method", "-M", "methods", multiple=True, metavar="NAME",
              help=", ".join(METHODS) + ", or all (repeatable; default: " + ", ".join(DEFAULT_METHODS) + ").")
@click.option("--target", "-t", "targets", multiple=True, metavar="T",
              help="What to explain: a class index or name, or a unit (features.10:5, features.10:5@7,3); "
                   "once for all images or once per image. Default: each image's top-1 class.")
@click.option("--layer", "-l", metavar="REF", help="The layer of the CAM methods and guided Grad-CAM (default: the last "
                                                    "spatial layer that runs once before the target).")
@click.option("--steps", type=click.IntRange(min=2), default=ATTRIBUTION.steps, show_default=True,
              help=help_of(AttributionSettings, "steps"))
@click.option("--samples", type=click.IntRange(min=1), default=ATTRIBUTION.samples, show_default=True,
              help=help_of(AttributionSettings, "samples"))
@click.option("--window", type=click.IntRange(min=1), help=help_of(AttributionSettings, "window"))
@click.option("--eigen-smooth", is_flag=True, help=help_of(AttributionSettings, "eigen_smooth"))
@click.option("--aug-smooth", is_flag=True, help=help_of(AttributionSettings, "aug_smooth"))
@click.option("--faithfulness", is_flag=True,
              help="Also measure each map's faithfulness (deletion and insertion AUC, ROAD, Average Drop and Increase "
                   "in Confidence) against a random map: faithfulness.json, faithfulness.png and a ranked table.")
@click.option("--faithfulness-steps", type=click.IntRange(min=2), default=FAITHFULNESS.steps, show_default=True,
              metavar="N", help=help_of(FaithfulnessSettings, "steps"))
@click.option("--sanity", is_flag=True, help="Also run the model-parameter randomisation test for each method.")
@click.option("--sanity-stages", type=click.IntRange(min=1), metavar="N",
              help="At most N randomisation stages (default: one per layer with weights).")
@click.option("--output", "-o", default="cnnviz-output", show_default=True, metavar="DIR",
              help="Folder for the figures, the raw attributions (.npy) and the JSON summary.")
def saliency(loaded, images, methods, targets, layer, steps, samples, window, eigen_smooth, aug_smooth, faithfulness,
             faithfulness_steps, sanity, sanity_stages, output) -> None:
    """Show which input pixels drive a class score or any unit, with
    captum's attribution methods.

    Writes, per method, a figure per image (input, signed map, absolute map,
    overlay) and the raw attribution N x C x H x W as .npy; a panel of all
    methods side by side; and saliency.json with the targets and the settings.

    \b
    Examples:
      cnnviz saliency --image sample:chelsea
      cnnviz saliency -i sample:coffee -M gradcam -M guided_gradcam --target features.19:7
      cnnviz saliency -i sample:chelsea -M gradcam_plus_plus -M layercam -M scorecam --aug-smooth
      cnnviz saliency -m torchvision:resnet18 -w DEFAULT -i cat.jpg --target tabby --sanity
      cnnviz saliency -i samples --faithfulness
    """
    import cnnviz

    chosen = list(cnnviz.METHODS) if "all" in methods else list(methods or DEFAULT_METHODS)
    target = None if not targets else (_target(targets[0]) if len(targets) == 1 else [_target(t) for t in targets])
    smoothing = {"eigen_smooth": eigen_smooth, "aug_smooth": aug_smooth}
    results = cnnviz.attributions(loaded, list(images), target, methods=chosen, layer=layer, steps=steps, samples=samples,
                                  window=window, **smoothing,
                                  faithfulness=FaithfulnessSettings(steps=faithfulness_steps) if faithfulness else False)
    checks = {
        name: cnnviz.sanity_check(loaded, result.inputs, [t.reference for t in result.targets], method=name,
                                  stages=sanity_stages, layer=layer, steps=steps, samples=samples, window=window,
                                  **smoothing)
        for name, result in results.items()
    } if sanity else None
    report = cnnviz.reports.attributions(results, checks)
    command = click.get_current_context().command
    for message in report.notes:  # methods that do not apply to this model: n/a, with the reason
        echo(cli_syntax(message, command))
    wrote(report.write(output, model=loaded.spec))
    if results.faithfulness is not None:
        echo(f"faithfulness (best first; mean ± std over {len(results.faithfulness.original)} images):")
        echo(results.faithfulness.table())


def _target(text: str):
    return int(text) if text.strip().isdecimal() and text.strip().isascii() else text
