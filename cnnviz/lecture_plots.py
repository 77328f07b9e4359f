"""Figures for the lecture's tools: convolution as a matrix, convolution arithmetic, receptive
fields and equivariance.

Like :mod:`cnnviz.plots`, every function returns a plain ``matplotlib.figure.Figure`` and never
touches pyplot's global state; :func:`cnnviz.output.save_figure` writes it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colors, patches
from matplotlib.figure import Figure

from cnnviz.convolution import _normalise, _per_dim, conv_matrix, conv_output_size
from cnnviz.errors import CnnvizError

DIVERGING = "RdBu_r"
INPUT_COLOUR = "#4c78a8"
OUTPUT_COLOUR = "#72b7b2"
KERNEL_COLOUR = "#222222"


# --------------------------------------------------------------------------------------------
# convolution as a matrix

def plot_conv_matrix(
    kernel: torch.Tensor, input_shape: Sequence[int], stride=1, padding=0, dilation=1, *,
    x: torch.Tensor | None = None, annotate: bool | None = None,
) -> Figure:
    """Draw the convolution matrix ``U`` of :func:`cnnviz.conv_matrix`, zeros left white.

    With ``x`` (of ``input_shape``), also draws the flattened input ``v(x)`` and the product
    ``U v(x)``, which is the flattened output of the convolution. Works for 1-D kernels too, where
    the band structure (a Toeplitz matrix) is easiest to see. Values are written in the cells when
    the matrix is small (``annotate``, default: at most 24 x 48).
    """
    matrix = conv_matrix(kernel, input_shape, stride, padding, dilation).float()
    weight, shape = _normalise(kernel, input_shape)
    rows, columns = matrix.shape
    annotate = rows <= 24 and columns <= 48 if annotate is None else annotate
    limit = float(matrix.abs().max()) or 1.0
    panels = 1 if x is None else 3
    widths = [columns] + ([1.6, 1.6] if x is not None else [])
    figure = Figure(figsize=(min(2 + 0.32 * sum(widths), 16), min(1.8 + 0.32 * rows, 12)), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False, gridspec_kw={"width_ratios": widths})[0]
    shown = np.ma.masked_equal(matrix.numpy(), 0)
    image = axes[0].imshow(shown, cmap=DIVERGING, norm=colors.Normalize(-limit, limit), interpolation="nearest", aspect="equal")
    axes[0].set_facecolor("white")
    axes[0].set_xlabel(f"input element j ({' x '.join(map(str, shape))} flattened)")
    axes[0].set_ylabel("output element i")
    _grid_lines(axes[0], rows, columns)
    if annotate:
        _write_values(axes[0], matrix.numpy())
    dims = weight.dim() - 2
    out_sizes = [
        conv_output_size(n, k, s, p, d)
        for n, k, s, p, d in zip(shape[1:], weight.shape[2:], _per_dim(stride, dims, "stride"),
                                 _per_dim(padding, dims, "padding"), _per_dim(dilation, dims, "dilation"))
    ]
    axes[0].set_title(f"U: {rows} x {columns}, {int((matrix != 0).sum())} non-zero of {rows * columns}", fontsize=9)
    if x is not None:
        flat = torch.as_tensor(x, dtype=matrix.dtype).reshape(-1)
        if flat.numel() != columns:
            raise CnnvizError(f"x has {flat.numel()} elements but the input shape {tuple(input_shape)} has {columns}")
        product = matrix @ flat
        for axis, values, title in ((axes[1], flat, "v(x)"), (axes[2], product, "U v(x)")):
            column = values.numpy()[:, None]
            bound = float(np.abs(column).max()) or 1.0
            axis.imshow(column, cmap=DIVERGING, norm=colors.Normalize(-bound, bound), aspect="equal")
            _write_values(axis, column)
            axis.set_xticks([])
            axis.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes[0], shrink=0.8, label="kernel weight")
    figure.suptitle(
        f"convolution as a matrix: kernel {' x '.join(map(str, weight.shape))} on {' x '.join(map(str, shape))}, "
        f"stride {stride}, padding {padding}, dilation {dilation} -> output "
        f"{weight.shape[0]} x {' x '.join(map(str, out_sizes))}",
        fontsize=10,
    )
    return figure


def _grid_lines(axis, rows: int, columns: int) -> None:
    if rows * columns > 4000:
        return
    axis.set_xticks(np.arange(-0.5, columns, 1), minor=True)
    axis.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    axis.grid(which="minor", color="#dddddd", linewidth=0.5)
    axis.tick_params(which="minor", length=0)


def _write_values(axis, values: np.ndarray) -> None:
    for (i, j), value in np.ndenumerate(values):
        if value != 0:
            text = f"{value:.3g}" if not float(value).is_integer() else str(int(value))
            axis.text(j, i, text, ha="center", va="center", fontsize=6)


# --------------------------------------------------------------------------------------------
# convolution arithmetic (Dumoulin and Visin, 2016)

def conv_arithmetic(
    input_size: int | Sequence[int] = 5,
    kernel_size: int | Sequence[int] = 3,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    *,
    positions: int = 3,
) -> Figure:
    """Padding, stride and dilation illustrated, as in Dumoulin and Visin's guide.

    Each panel draws the (zero-)padded input (blue cells; padding dashed), the footprint of the
    dilated kernel (dark cells) for one output unit, and the output grid (green) with that unit
    marked. Successive panels move to the next output units, so the stride shows. The title gives
    the output size, ``floor((n + 2p - d(k - 1) - 1) / s) + 1`` per dimension.

    Args:
        input_size, kernel_size, stride, padding, dilation: an int, or (height, width).
        positions: how many output units to show (one panel each).

    Returns:
        A figure; raises :class:`cnnviz.CnnvizError` when the kernel does not fit.

    Example::

        figure = cnnviz.conv_arithmetic(5, 3, stride=2, padding=1)   # output 3 x 3
    """
    size, kernel, strides, pads, dilations = (
        _per_dim(v, 2, name) for v, name in ((input_size, "input_size"), (kernel_size, "kernel_size"),
                                             (stride, "stride"), (padding, "padding"), (dilation, "dilation"))
    )
    if any(n < 1 for n in size):
        raise CnnvizError(f"input_size must be positive, not {input_size}")
    out = [conv_output_size(*args) for args in zip(size, kernel, strides, pads, dilations)]
    units = [(i, j) for i in range(out[0]) for j in range(out[1])]
    chosen = units[:max(1, positions)]
    figure = Figure(figsize=(3.4 * len(chosen), 3.6), layout="constrained")
    axes = figure.subplots(1, len(chosen), squeeze=False)[0]
    padded = (size[0] + 2 * pads[0], size[1] + 2 * pads[1])
    for axis, (i, j) in zip(axes, chosen):
        for r in range(padded[0]):
            for c in range(padded[1]):
                is_pad = not (pads[0] <= r < pads[0] + size[0] and pads[1] <= c < pads[1] + size[1])
                axis.add_patch(patches.Rectangle(
                    (c, -r - 1), 1, 1, facecolor="white" if is_pad else INPUT_COLOUR,
                    edgecolor="#999999", linestyle="--" if is_pad else "-", linewidth=0.6, alpha=1 if is_pad else 0.55,
                ))
        for a in range(kernel[0]):
            for b in range(kernel[1]):
                r, c = i * strides[0] + a * dilations[0], j * strides[1] + b * dilations[1]
                axis.add_patch(patches.Rectangle((c + 0.15, -r - 0.85), 0.7, 0.7, facecolor=KERNEL_COLOUR, alpha=0.8))
        left = padded[1] + 1.5
        top = -(padded[0] - out[0]) / 2
        for r in range(out[0]):
            for c in range(out[1]):
                marked = (r, c) == (i, j)
                axis.add_patch(patches.Rectangle(
                    (left + c, top - r - 1), 1, 1, facecolor=KERNEL_COLOUR if marked else OUTPUT_COLOUR,
                    edgecolor="#555555", linewidth=0.6, alpha=0.8 if marked else 0.6,
                ))
        axis.set_xlim(-0.5, left + out[1] + 0.5)
        axis.set_ylim(-max(padded[0], out[0]) - 0.5, 0.5)
        axis.set_aspect("equal")
        axis.set_axis_off()
        axis.set_title(f"output unit ({i}, {j})", fontsize=9)
    figure.suptitle(
        f"input {size[0]}x{size[1]}, kernel {kernel[0]}x{kernel[1]}, stride {strides}, padding {pads}, "
        f"dilation {dilations} -> output {out[0]}x{out[1]}\n"
        + ", ".join(
            f"floor(({n} + 2*{p} - {d}*({k} - 1) - 1) / {s}) + 1 = {o}"
            for n, k, s, p, d, o in zip(size, kernel, strides, pads, dilations, out)
        ),
        fontsize=9,
    )
    return figure


# --------------------------------------------------------------------------------------------
# receptive fields

def plot_receptive_fields(fields, image: torch.Tensor | None = None, layers: Sequence[str] | None = None) -> Figure:
    """Draw the theoretical region of the centre unit of several layers as boxes on an image.

    Args:
        fields: a :class:`cnnviz.ReceptiveFields` (``cnnviz.receptive_field(model)``).
        image: ``3 x H x W`` in [0, 1] at the fields' input size (e.g. ``display_image`` of a model
            input); a grey canvas without it.
        layers: which layers (default: up to 8 grid layers spread over the depth, each with a
            different size).

    Boxes may extend past the image (the padding); a layer whose units see the whole input is
    drawn as the image's frame and marked "whole input" in the legend.
    """
    import matplotlib

    height, width = fields.input_size
    if layers is None:
        grid = [name for name, rf in fields.items() if rf.kind == "grid"]
        distinct = list({fields[name].size: name for name in grid}.values())
        step = max(1, math.ceil(len(distinct) / 8))
        layers = distinct[::step][:8]
    missing = [name for name in layers if name not in fields]
    if missing:
        raise CnnvizError(f"no receptive field for {missing[0]!r}; the layers are {', '.join(list(fields)[:5])}, ...")
    figure = Figure(figsize=(6.5, 5.2), layout="constrained")
    axis = figure.subplots()
    if image is not None:
        axis.imshow(image.permute(1, 2, 0).numpy(), extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    else:
        axis.add_patch(patches.Rectangle((-0.5, -0.5), width, height, facecolor="#dddddd"))
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(len(layers), 1)))
    extent = [-0.5, width - 0.5, -0.5, height - 0.5]
    for colour, name in zip(colours, layers):
        rf = fields[name]
        if rf.kind != "grid":
            axis.add_patch(patches.Rectangle((-0.5, -0.5), width, height, fill=False, edgecolor=colour, linewidth=2.5,
                                             label=f"{name}: whole input"))
            continue
        rows, columns = _map_size(rf, height, width)
        top, left, bottom, right = rf.region(rows // 2, columns // 2)
        extent = [min(extent[0], left - 0.5), max(extent[1], right + 0.5), min(extent[2], top - 0.5), max(extent[3], bottom + 0.5)]
        label = f"{name}: {rf.size[0]}x{rf.size[1]}, stride {rf.stride[0]}" + (" (sees all)" if rf.covers_input else "")
        axis.add_patch(patches.Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                                         edgecolor=colour, linewidth=1.8, label=label))
    axis.add_patch(patches.Rectangle((-0.5, -0.5), width, height, fill=False, edgecolor="black", linestyle="--", linewidth=0.8))
    axis.set_xlim(extent[0] - 2, extent[1] + 2)
    axis.set_ylim(extent[3] + 2, extent[2] - 2)
    axis.set_aspect("equal")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    axis.set_title(f"theoretical receptive field of the centre unit (input {height}x{width}, dashed)", fontsize=9)
    return figure


def _map_size(rf, height: int, width: int) -> tuple[int, int]:
    """The size of a grid layer's map, from its offset and stride (units whose centre is inside)."""
    rows = max(1, (height - 1 - rf.offset[0] - (rf.size[0] - 1) // 2) // rf.stride[0] + 1) if rf.stride[0] else 1
    columns = max(1, (width - 1 - rf.offset[1] - (rf.size[1] - 1) // 2) // rf.stride[1] + 1) if rf.stride[1] else 1
    return rows, columns


def plot_effective_receptive_field(erf) -> Figure:
    """Draw an effective receptive field (:func:`cnnviz.effective_receptive_field`): the image,
    and the mean gradient magnitude as a heat map with a colour bar, the theoretical region as a
    box and the discs holding 50% and 95% of the mass."""
    figure = Figure(figsize=(9, 4.2), layout="constrained")
    image_axis, map_axis = figure.subplots(1, 2)
    height, width = erf.map.shape
    image_axis.imshow(erf.image.permute(1, 2, 0).numpy())
    image_axis.set_title(f"input ({erf.images} image(s) averaged; the first shown)", fontsize=9)
    shown = map_axis.imshow(erf.map.numpy(), cmap="magma", vmin=0)
    figure.colorbar(shown, ax=map_axis, shrink=0.85, label="mean |d unit / d input| (raw)")
    theory = erf.theoretical
    for axis in (image_axis, map_axis):
        if theory.box is not None:
            top, left, bottom, right = theory.box
            axis.add_patch(patches.Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                                             edgecolor="#00c0ff", linewidth=1.5, label=f"theoretical {theory.size[0]}x{theory.size[1]}"))
        for radius, style in ((erf.radius_50, "-"), (erf.radius_95, "--")):
            if not math.isnan(radius):
                axis.add_patch(patches.Circle((erf.centre[1], erf.centre[0]), radius, fill=False, edgecolor="white",
                                              linestyle=style, linewidth=1.2))
        axis.set_xlim(-0.5, width - 0.5)
        axis.set_ylim(height - 0.5, -0.5)
        axis.set_axis_off()
    map_axis.legend(fontsize=7, loc="lower right")
    map_axis.set_title(
        f"effective receptive field of {erf.layer}\n50% of the mass within r = {erf.radius_50:.1f} px, "
        f"95% within {erf.radius_95:.1f} px (white circles)", fontsize=9)
    return figure


# --------------------------------------------------------------------------------------------
# equivariance

def plot_equivariance(result) -> Figure:
    """Curves across depth, one figure: a column per transformation (translation, rotation,
    scale), the equivariance error on top and the invariance errors (of the layer's output, solid;
    of its spatial average, dashed) below, one line per magnitude."""
    import matplotlib

    transforms = [t for t in ("translation", "rotation", "scale") if result.magnitudes.get(t)]
    figure = Figure(figsize=(4.2 * len(transforms), 6.5), layout="constrained")
    axes = figure.subplots(2, len(transforms), squeeze=False, sharex=True)
    positions = np.arange(len(result.layers))
    units = {"translation": "px", "rotation": "deg", "scale": "x"}
    for column, transform in enumerate(transforms):
        magnitudes = result.magnitudes[transform]
        colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.85, len(magnitudes)))
        for colour, magnitude in zip(colours, magnitudes):
            label = f"{magnitude:g} {units[transform]}"
            axes[0, column].plot(positions, result.equivariance_error[transform][magnitude], "o-", color=colour,
                                 markersize=3, label=label)
            axes[1, column].plot(positions, result.invariance_error[transform][magnitude], "o-", color=colour,
                                 markersize=3, label=label)
            axes[1, column].plot(positions, result.pooled_invariance_error[transform][magnitude], "--", color=colour)
        axes[0, column].set_title(f"{transform}: equivariance error", fontsize=9)
        axes[1, column].set_title(f"{transform}: invariance error (dashed: spatially averaged)", fontsize=9)
        axes[0, column].legend(fontsize=7)
        for row in range(2):
            axes[row, column].set_ylim(bottom=0)
            axes[row, column].grid(alpha=0.3)
        axes[1, column].set_xticks(positions)
        axes[1, column].set_xticklabels(result.layers, rotation=90, fontsize=6)
    axes[0, 0].set_ylabel("||f(Tx) - T'f(x)|| / ||f(x)||")
    axes[1, 0].set_ylabel("||f(Tx) - f(x)|| / ||f(x)||")
    figure.suptitle(f"equivariance and invariance across depth ({result.images} image(s); borders cropped)", fontsize=10)
    return figure
