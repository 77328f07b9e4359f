"""Figures of convolution as a matrix product and of convolution arithmetic (padding, stride, dilation)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colors, patches
from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure

from cnnviz.analyses.convolution import conv_matrix as matrix_of, conv_output_size, kernel_and_shape, per_dimension
from cnnviz.errors import CnnvizError
from cnnviz.plots.style import DIVERGING


INPUT_COLOUR = "#4c78a8"
OUTPUT_COLOUR = "#72b7b2"
KERNEL_COLOUR = "#222222"


def conv_matrix(
    kernel: torch.Tensor, input_shape: Sequence[int], stride=1, padding=0, dilation=1, *,
    x: torch.Tensor | None = None, annotate: bool | None = None,
) -> Figure:
    """Draw the convolution matrix ``U`` of :func:`cnnviz.conv_matrix`, zeros left white.

    With ``x`` (of ``input_shape``), also draws the flattened input ``v(x)`` and the product
    ``U v(x)``, which is the flattened output of the convolution. Works for 1-D kernels too, where
    the band structure (a Toeplitz matrix) is easiest to see. Values are written in the cells when
    the matrix is small (``annotate``, default: at most 24 x 48).
    """
    matrix = matrix_of(kernel, input_shape, stride, padding, dilation).float()
    weight, shape = kernel_and_shape(kernel, input_shape)
    rows, columns = matrix.shape
    annotate = rows <= 24 and columns <= 48 if annotate is None else annotate
    limit = float(matrix.abs().max()) or 1.0
    panels = 1 if x is None else 3
    widths = [columns] + ([1.6, 1.6] if x is not None else [])
    figure = ShownFigure(figsize=(min(2 + 0.32 * sum(widths), 16), min(1.8 + 0.32 * rows, 12)), layout="constrained")
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
        for n, k, s, p, d in zip(shape[1:], weight.shape[2:], per_dimension(stride, dims, "stride"),
                                 per_dimension(padding, dims, "padding"), per_dimension(dilation, dims, "dilation"))
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


def arithmetic(input_size, kernel_size, stride=1, padding=0, dilation=1) -> tuple[tuple[int, int], ...]:
    """What :func:`conv_arithmetic` draws, checked: ``(input size, kernel size, stride, padding,
    dilation, output size)``, each a (height, width) pair.

    Raises:
        CnnvizError: a size that is not positive, a kernel that does not fit, or more than
            ``MAX_CELLS`` cells per side to draw.
    """
    size, kernel, strides, pads, dilations = (
        per_dimension(v, 2, name) for v, name in ((input_size, "input_size"), (kernel_size, "kernel_size"),
                                             (stride, "stride"), (padding, "padding"), (dilation, "dilation"))
    )
    if any(n < 1 for n in size):
        raise CnnvizError(f"input_size must be positive, not {input_size}")
    if any(n + 2 * p > MAX_CELLS for n, p in zip(size, pads)) or any(d * (k - 1) + 1 > MAX_CELLS for k, d in zip(kernel, dilations)):
        raise CnnvizError(f"the drawing shows at most {MAX_CELLS} cells per side (padded input and dilated kernel); "
                          "use a smaller example (the output size is conv_output_size's)")
    out = tuple(conv_output_size(*args) for args in zip(size, kernel, strides, pads, dilations))
    return size, kernel, strides, pads, dilations, out


def arithmetic_units(output_size: Sequence[int], positions: int) -> list[tuple[int, int]]:
    """The output units :func:`conv_arithmetic` shows, one panel each: the first ``positions`` in
    row-major order (at least one)."""
    units = [(i, j) for i in range(output_size[0]) for j in range(output_size[1])]
    return units[:max(1, positions)]


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


MAX_CELLS = 64  # conv_arithmetic draws every cell


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

        figure = cnnviz.plots.conv_arithmetic(5, 3, stride=2, padding=1)   # output 3 x 3
    """
    size, kernel, strides, pads, dilations, out = arithmetic(input_size, kernel_size, stride, padding, dilation)
    chosen = arithmetic_units(out, positions)
    figure = ShownFigure(figsize=(3.4 * len(chosen), 3.6), layout="constrained")
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
