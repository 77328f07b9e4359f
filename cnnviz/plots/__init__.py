"""Figures: ``cnnviz.plots.<analysis>(result)`` draws a result and returns a matplotlib ``Figure``.

One file per analysis (``kernels.py``, ``activations.py``, ``statistics.py``, ...), and
``style.py`` for what they share. Nothing here shows a window or touches pyplot's global state; a
figure shows itself in a notebook and :func:`cnnviz.output.save_figure` writes it. Every result
object also draws itself (``result.plot()``) and shows itself in a notebook through the same
functions, registered here in :mod:`cnnviz.core.display`.
"""
from cnnviz.analyses.activations import Activations
from cnnviz.analyses.attribution import Attribution, Attributions
from cnnviz.analyses.sanity import SanityCheck
from cnnviz.analyses.concepts_results import Concepts
from cnnviz.analyses.connections import Connection, Connections
from cnnviz.analyses.equivariance import Equivariance
from cnnviz.analyses.faithfulness import Faithfulness
from cnnviz.analyses.feature_visualization.dream import Dream
from cnnviz.analyses.feature_visualization.maximize import Rendering
from cnnviz.analyses.kernels import Kernels
from cnnviz.analyses.predictions import Predictions
from cnnviz.analyses.receptive_field import EffectiveReceptiveField, ReceptiveField, ReceptiveFields
from cnnviz.analyses.statistics import LayerStatistics, Statistics
from cnnviz.analyses.summary import LayerTable
from cnnviz.core import display
from cnnviz.plots.activations import activations
from cnnviz.plots.dream import dream
from cnnviz.plots.attribution import attribution, attributions, overlays, sanity_check
from cnnviz.plots.concept_maps import concept_maps
from cnnviz.plots.concepts import concepts
from cnnviz.plots.connections import connections
from cnnviz.plots.convolution import conv_arithmetic, conv_matrix
from cnnviz.plots.equivariance import equivariance
from cnnviz.plots.faithfulness import faithfulness
from cnnviz.plots.kernels import kernels
from cnnviz.plots.maximize import maximize
from cnnviz.plots.predictions import predictions
from cnnviz.plots.receptive_field import effective_receptive_field, one_receptive_field, receptive_field
from cnnviz.plots.statistics import channel_statistics, colorful_dimension, exemplars, statistics
from cnnviz.plots.style import figure_pixels
from cnnviz.plots.summary import layer_table

__all__ = [
    "activations", "attribution", "attributions", "channel_statistics", "colorful_dimension", "concept_maps", "concepts",
    "connections",
    "conv_arithmetic",
    "conv_matrix", "dream", "effective_receptive_field", "equivariance", "exemplars", "faithfulness", "figure_pixels", "kernels",
    "layer_table",
    "maximize", "one_receptive_field", "overlays", "predictions", "receptive_field", "sanity_check", "statistics",
]


for _kind, _figure in ((Kernels, kernels), (Activations, activations), (Statistics, statistics),
                       (LayerStatistics, channel_statistics), (Attribution, attribution), (Attributions, attributions),
                       (SanityCheck, sanity_check),
                       (Rendering, maximize), (Dream, dream), (Equivariance, equivariance),
                       (ReceptiveFields, receptive_field), (EffectiveReceptiveField, effective_receptive_field),
                       (Connection, connections), (Connections, connections),
                       (ReceptiveField, one_receptive_field), (Predictions, predictions), (LayerTable, layer_table),
                       (Concepts, concepts), (Faithfulness, faithfulness)):
    display.register(_kind, _figure)  # result.plot() and the notebook picture of each result
