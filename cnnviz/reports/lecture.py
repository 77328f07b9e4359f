"""Reports of the lecture's analyses: receptive fields (theoretical and effective) and equivariance."""
from __future__ import annotations

from cnnviz import plots
from cnnviz.core.output import safe_name
from cnnviz.reports.report import Item, Report, value_range


def receptive_fields(fields, image, effective: dict | None = None) -> Report:
    """Every layer's theoretical field (``fields``), drawn on ``image`` (``3 x H x W`` in [0, 1]) as
    ``receptive_fields.png``; ``effective`` maps the layers asked to their
    :class:`cnnviz.EffectiveReceptiveField`, each drawn as ``effective_rf_<layer>.png``;
    ``receptive_fields.json``."""
    effective = effective or {}
    size = "x".join(str(s) for s in fields.input_size)
    items = [Item("receptive_fields.png", "receptive_fields",
                  f"The theoretical receptive fields of the centre unit of several layers, on a {size} input",
                  value_range=(0.0, 1.0), draw=lambda: plots.receptive_field(fields, image))]
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
