"""Reports of the lecture's analyses: receptive fields (theoretical and effective), equivariance,
convolution as a matrix and convolution arithmetic."""
from __future__ import annotations

from cnnviz import plots
from cnnviz.core.output import safe_name
from cnnviz.reports.report import Item, Report, value_range


def receptive_fields(fields, image, effective: dict | None = None, *, layers: list[str] | None = None) -> Report:
    """Every layer's theoretical field (``fields``), drawn on ``image`` (``3 x H x W`` in [0, 1]) as
    ``receptive_fields.png`` (the boxes of ``layers``, default several spread over the depth:
    :func:`cnnviz.plots.receptive_field`); ``effective`` maps the layers asked to their
    :class:`cnnviz.EffectiveReceptiveField`, each drawn as ``effective_rf_<layer>.png``;
    ``receptive_fields.json``."""
    effective = effective or {}
    size = "x".join(str(s) for s in fields.input_size)
    which = "several layers" if layers is None else ", ".join(layers)
    items = [Item("receptive_fields.png", "receptive_fields",
                  f"The theoretical receptive fields of the centre unit of {which}, on a {size} input",
                  value_range=(0.0, 1.0), settings={"layers": list(layers) if layers is not None else None},
                  draw=lambda: plots.receptive_field(fields, image, layers))]
    for layer, erf in effective.items():
        items.append(Item(
            f"effective_rf_{safe_name(layer)}.png", "effective_receptive_field",
            f"The effective receptive field of {erf.layer} over {erf.images} images: 50% of the gradient's mass "
            f"within {erf.radius_50:.1f} px, 95% within {erf.radius_95:.1f} px; theoretical {erf.theoretical.text}",
            layer=layer, value_range=value_range(erf.map), draw=lambda erf=erf: plots.effective_receptive_field(erf),
        ))
    data = {**fields.to_dict(), "effective": [erf.to_dict() for erf in effective.values()]}
    return Report("receptive_fields", data, items, notes=list(fields.notes))


def equivariance(result) -> Report:
    """Equivariance and invariance across depth: ``equivariance.png`` and ``equivariance.json``."""
    item = Item("equivariance.png", "equivariance",
                "Equivariance and invariance errors of every layer to translation, rotation and scaling",
                draw=lambda: plots.equivariance(result))
    return Report("equivariance", result.to_dict(), [item])


def conv_matrix(kernel, x, *, stride=1, padding=0, dilation=1, data: dict | None = None) -> Report:
    """Convolution as a matrix: ``conv_matrix.png`` (the matrix ``U`` beside the flattened input
    ``v(x)`` and output ``U v(x)``; :func:`cnnviz.plots.conv_matrix`) and ``conv_matrix.json``
    (``data``: the kernel, the input, the matrix, the output and what was checked)."""
    from cnnviz.analyses.convolution import conv_matrix as matrix_of

    matrix = matrix_of(kernel, x.shape, stride, padding, dilation)
    shape = " x ".join(str(n) for n in x.shape)
    kernel_shape = " x ".join(str(n) for n in kernel.shape)
    caption = (f"The convolution matrix U ({matrix.shape[0]} x {matrix.shape[1]}, {int((matrix != 0).sum())} non-zero) "
               f"of a {kernel_shape} kernel on a {shape} input (stride {stride}, padding {padding}, dilation {dilation}), "
               "beside the flattened input v(x) and U v(x), the flattened output; U's colours are the kernel's weights")
    settings = {"stride": stride, "padding": padding, "dilation": dilation}
    item = Item("conv_matrix.png", "conv_matrix", caption, value_range=value_range(matrix), settings=settings,
                draw=lambda: plots.conv_matrix(kernel, x.shape, stride, padding, dilation, x=x))
    return Report("conv_matrix", dict(data or {}), [item])


def conv_arithmetic(input_size=5, kernel_size=3, *, stride=1, padding=0, dilation=1, positions: int = 3) -> Report:
    """Padding, stride and dilation illustrated: ``conv_arithmetic.png``
    (:func:`cnnviz.plots.conv_arithmetic`) and ``conv_arithmetic.json`` (the sizes, per dimension,
    and the output units drawn). Raises :class:`cnnviz.CnnvizError` at once for a kernel that does
    not fit or a drawing too large."""
    from cnnviz.plots.convolution import arithmetic, arithmetic_units

    size, kernel, strides, pads, dilations, out = arithmetic(input_size, kernel_size, stride, padding, dilation)
    units = arithmetic_units(out, positions)
    data = {"input_size": list(size), "kernel_size": list(kernel), "stride": list(strides), "padding": list(pads),
            "dilation": list(dilations), "output_size": list(out), "units": [list(unit) for unit in units]}
    caption = (f"A {kernel[0]}x{kernel[1]} kernel (dilation {dilations[0]}x{dilations[1]}) sliding with stride "
               f"{strides[0]}x{strides[1]} over a {size[0]}x{size[1]} input padded by {pads[0]}x{pads[1]} (dashed): "
               f"its footprint for output units {', '.join(f'({i}, {j})' for i, j in units)} of the {out[0]}x{out[1]} output")
    item = Item("conv_arithmetic.png", "conv_arithmetic", caption, settings={"positions": positions},
                draw=lambda: plots.conv_arithmetic(size, kernel, strides, pads, dilations, positions=positions))
    return Report("conv_arithmetic", data, [item])
