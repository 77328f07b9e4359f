"""``cnnviz rf``, ``cnnviz equivariance``, ``cnnviz conv-matrix`` and ``cnnviz conv-arithmetic``:
the lecture's ideas, computed and drawn."""
from __future__ import annotations

import click

from cnnviz.cli.options import FloatList, echo, model_options, note, several_images
from cnnviz.cli.options import output_option as _output_option
from cnnviz.cli.options import wrote as _wrote


@click.command()
@model_options
@click.option("--layer", "-l", "layers", multiple=True, metavar="REF",
              help="A layer, channel or neuron to show (repeatable): its theoretical field, printed and drawn, "
              "and its effective one. Default: every layer's field printed, several drawn, and the effective field "
              "of the deepest layer whose units do not see the whole input.")
@click.option("--images", "-i", multiple=True, callback=several_images, default=("samples",), show_default=True, metavar="DIR|samples",
              help="Images for the effective receptive field (a folder, samples, or an image; repeatable).")
@click.option("--max-images", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the receptive fields as JSON instead of a table.")
@_output_option
def rf(loaded, layers, images, max_images, as_json, output) -> None:
    """Receptive fields: theoretical and effective.

    Prints, for every layer (with --layer: for the layers named), the size of
    a unit's input region, the stride (jump) between neighbouring units and
    the offset of unit (0, 0)'s region, in input pixels; 'global' when units
    see the whole input. Draws the regions of the centre unit of several
    layers (with --layer: of the layers named) on the first image, and the
    effective receptive field (Luo et al., 2016: the mean input-gradient
    magnitude of a centre unit) with the theoretical box and the radii that
    hold 50% and 95% of its mass.

    \b
    Examples:
      cnnviz rf
      cnnviz rf --model torchvision:resnet50 --layer layer3 -i samples -o out
      cnnviz rf -m torchvision:vgg16 --layer features.16 --layer features.30 --json
    """
    import json

    import cnnviz
    from cnnviz.inputs.batches import stack_images

    from cnnviz.inputs.images import display_image

    fields = _named_fields(loaded, layers) if layers else cnnviz.receptive_fields(loaded)
    chosen = list(dict.fromkeys(layers)) or _default_layer(fields)
    inputs, _ = stack_images(images, loaded.preprocessing, limit=max_images)
    image = display_image(inputs[0], loaded.preprocessing)
    # everything is computed before anything is printed or written: a bad --layer leaves no output
    effective = {name: cnnviz.effective_receptive_field(loaded, inputs, name, max_images=max_images) for name in chosen}
    report = cnnviz.reports.receptive_fields(fields, image, effective, layers=list(fields) if layers else None)
    for message in fields.notes:
        note(message)
    if as_json:
        echo(json.dumps([rf.to_dict() for rf in fields.values()], indent=2))
    else:
        echo(str(fields))
    written = report.write(output, model=loaded.spec)
    if not as_json:
        _wrote(written)


def _named_fields(loaded, layers):
    """The theoretical fields of the layers (channels, neurons) named, in the order given, as a
    :class:`cnnviz.ReceptiveFields` (a table and boxes of these only)."""
    import cnnviz

    named = {}
    for reference in dict.fromkeys(layers):
        field = cnnviz.receptive_field(loaded, reference)
        named[field.layer] = field
    notes = dict.fromkeys(message for field in named.values() for message in field.notes)
    return cnnviz.ReceptiveFields(named, next(iter(named.values())).input_size, list(notes))


def _default_layer(fields) -> list[str]:
    names = list(fields)
    containers = {name for name in names if any(other.startswith(name + ".") for other in names)}
    grid = [name for name, field in fields.items()
            if field.kind == "grid" and not field.covers_input and name not in containers]
    return grid[-1:]


@click.command()
@model_options
@click.option("--images", "-i", multiple=True, callback=several_images, default=("samples",), show_default=True, metavar="DIR|samples",
              help="A folder of images, samples, or an image (repeatable).")
@click.option("--layer", "-l", "layers", multiple=True, metavar="REF",
              help="A layer (repeatable; default: every convolution, pooling and ReLU, and the logits).")
@click.option("--shifts", type=FloatList(), default="1,2,4,8", show_default=True, help="Translations in pixels.")
@click.option("--angles", type=FloatList(), default="5,15,45,90", show_default=True, help="Rotations in degrees.")
@click.option("--scales", type=FloatList(), default="0.8,0.9,1.1,1.25", show_default=True, help="Zoom factors.")
@click.option("--max-images", type=click.IntRange(min=1), default=8, show_default=True)
@_output_option
def equivariance(loaded, images, layers, shifts, angles, scales, max_images, output) -> None:
    """Equivariance and invariance of every layer to translation, rotation and scaling.

    For each layer: the equivariance error ||f(Tx) - T'f(x)|| / ||f(x)|| (the
    input shifted, rotated or scaled, compared with the feature map transformed
    the same way at the layer's stride, borders cropped), and the invariance
    error of the output and of its spatial average. Writes equivariance.png
    (curves across depth) and equivariance.json.

    \b
    Examples:
      cnnviz equivariance
      cnnviz equivariance -m torchvision:resnet18 -w DEFAULT -i photos/ -l layer1 -l layer4 -l logits
      cnnviz equivariance --shifts 1,3 --angles 10 --scales 0.9 -o out
    """
    import cnnviz

    if any(not float(s).is_integer() for s in shifts):
        raise cnnviz.CnnvizError(f"--shifts must be whole numbers of pixels, not {','.join(map(str, shifts))}")
    result = cnnviz.equivariance(loaded, images, list(layers) or None, shifts=[int(s) for s in shifts],
                                 angles=list(angles), scales=list(scales), max_images=max_images)
    _wrote(cnnviz.reports.equivariance(result).write(output, model=loaded.spec))


LECTURE_KERNEL = "1,4,1;1,4,3;3,3,1"
LECTURE_INPUT = "4,5,8,7;1,8,8,8;3,6,6,4;6,5,7,8"


def _matrix(text: str, what: str):
    import torch

    import cnnviz

    try:
        rows = [[float(value) for value in row.split(",")] for row in text.split(";")]
    except ValueError:
        raise cnnviz.CnnvizError(f"{what} {text!r} is not numbers; write rows separated by ';' and values by ',', "
                                 "e.g. 1,4,1;1,4,3;3,3,1") from None
    if len({len(row) for row in rows}) != 1:
        raise cnnviz.CnnvizError(f"the rows of {what} {text!r} have different lengths")
    tensor = torch.tensor(rows)
    return tensor[0] if tensor.shape[0] == 1 else tensor


@click.command("conv-matrix")
@click.option("--kernel", "-k", default=LECTURE_KERNEL, show_default=True, metavar="ROWS",
              help="The kernel: rows separated by ';', values by ','; one row for a 1-D kernel.")
@click.option("--input", "-x", "values", default=LECTURE_INPUT, show_default=True, metavar="ROWS",
              help="The input, in the same notation.")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--padding", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--dilation", type=click.IntRange(min=1), default=1, show_default=True)
@_output_option
def conv_matrix(kernel, values, stride, padding, dilation, output) -> None:
    """Convolution as a matrix: the matrix U with U @ x = conv(x, kernel).

    Prints U @ x (reshaped) next to torch's conv2d, and checks that U.T @ g is
    the gradient autograd computes. Writes conv_matrix.png (U, v(x) and U v(x))
    and conv_matrix.json. The defaults are the lecture's worked example.

    \b
    Examples:
      cnnviz conv-matrix
      cnnviz conv-matrix --kernel "1,-2,1" --input "3,1,4,1,5,9,2,6" --padding 1
      cnnviz conv-matrix -k "1,0;0,-1" -x "1,2,3;4,5,6;7,8,9" --stride 2 --padding 1 -o out
    """
    import torch
    from torch.nn import functional as F

    import cnnviz

    weight, x = _matrix(kernel, "the kernel"), _matrix(values, "the input")
    if weight.dim() != x.dim():
        raise cnnviz.CnnvizError(f"a {weight.dim()}-D kernel needs a {weight.dim()}-D input, not {x.dim()}-D")
    matrix = cnnviz.conv_matrix(weight, x.shape, stride, padding, dilation)
    convolve = F.conv2d if x.dim() == 2 else F.conv1d
    reference = convolve(x[None, None], weight[None, None], stride=stride, padding=padding, dilation=dilation)[0, 0]
    product = (matrix @ x.flatten()).reshape(reference.shape)
    leaf = x.clone().requires_grad_(True)
    out = convolve(leaf[None, None], weight[None, None], stride=stride, padding=padding, dilation=dilation)[0, 0]
    upstream = torch.arange(1, out.numel() + 1, dtype=x.dtype).reshape(out.shape)
    gradient, = torch.autograd.grad((out * upstream).sum(), leaf)
    backward = (matrix.T @ upstream.flatten()).reshape(x.shape)
    echo(f"U is {matrix.shape[0]} x {matrix.shape[1]} ({int((matrix != 0).sum())} non-zero)")
    echo(f"U @ x      = {product.tolist()}")
    echo(f"conv(x, k) = {reference.tolist()}")
    echo(f"U.T @ g equals the autograd gradient (g = 1, 2, ...): {bool(torch.allclose(backward, gradient))}")
    report = cnnviz.reports.conv_matrix(weight, x, stride=stride, padding=padding, dilation=dilation, data={
        "kernel": weight.tolist(), "input": x.tolist(), "stride": stride, "padding": padding,
        "dilation": dilation, "matrix": matrix.tolist(), "output": product.tolist(),
        "conv2d": reference.tolist(), "backward_matches_autograd": bool(torch.allclose(backward, gradient)),
    })
    _wrote(report.write(output))  # the figure and its JSON (ending with its figures) appear together, or neither


@click.command("conv-arithmetic")
@click.option("--input-size", "-n", nargs=2, type=click.IntRange(min=1), default=(5, 5), show_default=True, metavar="H W")
@click.option("--kernel", "-k", nargs=2, type=click.IntRange(min=1), default=(3, 3), show_default=True, metavar="H W")
@click.option("--stride", "-s", nargs=2, type=click.IntRange(min=1), default=(1, 1), show_default=True, metavar="H W")
@click.option("--padding", "-p", nargs=2, type=click.IntRange(min=0), default=(0, 0), show_default=True, metavar="H W")
@click.option("--dilation", "-d", nargs=2, type=click.IntRange(min=1), default=(1, 1), show_default=True, metavar="H W")
@click.option("--positions", type=click.IntRange(min=1), default=3, show_default=True, help="Output units to show.")
@_output_option
def conv_arithmetic(input_size, kernel, stride, padding, dilation, positions, output) -> None:
    """Padding, stride and dilation illustrated (Dumoulin and Visin, 2016).

    Draws the padded input, the dilated kernel's footprint for successive
    output units and the output grid; prints the output size,
    floor((n + 2p - d(k - 1) - 1) / s) + 1 per dimension. Writes
    conv_arithmetic.png and conv_arithmetic.json.

    \b
    Examples:
      cnnviz conv-arithmetic
      cnnviz conv-arithmetic -n 5 5 -k 3 3 -s 2 2 -p 1 1 -o out
      cnnviz conv-arithmetic -n 7 7 -k 3 3 -d 2 2
    """
    import cnnviz

    report = cnnviz.reports.conv_arithmetic(input_size, kernel, stride=stride, padding=padding, dilation=dilation,
                                            positions=positions)
    height, width = report.data["output_size"]
    echo(f"output {height}x{width}")
    _wrote(report.write(output))  # conv_arithmetic.png and conv_arithmetic.json, ending with its figures
