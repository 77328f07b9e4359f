"""cnnviz: see what a convolutional network has learned.

The notebook API. Every function takes a plain ``torch.nn.Module`` (or a :class:`LoadedModel`) and
leaves it exactly as it was::

    import cnnviz
    loaded = cnnviz.load_model("torchvision:resnet18", weights="DEFAULT")
    print(cnnviz.layer_table(loaded))
    maps = cnnviz.capture(loaded, images, ["layer1.0.relu#2"])  # {"layer1.0.relu#2": N x 64 x 56 x 56}

Every analysis is a function here (``cnnviz.kernels``, ``cnnviz.statistics``, ``cnnviz.maximize``,
...) whose result shows itself in a notebook and draws with ``cnnviz.plots.<analysis>(result)``.
The few modules exported are namespaces, not analyses: ``cnnviz.plots`` (figures),
``cnnviz.reports`` (a result as named figures and JSON, what the commands and the gallery write),
``cnnviz.objectives`` (what maximize optimises), ``cnnviz.inputs`` and ``cnnviz.samples`` (images
in), ``cnnviz.output`` (atomic file writes) and ``cnnviz.zoo`` (the built-in models). The code
lives in sub-packages by layer (``core``, ``inputs``, ``models``, ``analyses``, ``plots``,
``reports``, ``site``); see ``docs/architecture.md``.
"""
from cnnviz.core.version import __version__  # noqa: F401 (cnnviz.__version__)

from cnnviz.errors import CnnvizError, CnnvizWarning, NotApplicable
from cnnviz.core import output
from cnnviz.core.memory import reuse_freed_memory
from cnnviz.core.model import LoadedModel, Preprocessing, resolve_device
from cnnviz.core.probe import Probe, capture, model_guard, probe
from cnnviz.core.references import LayerRef, Unit, layer_ref
from cnnviz import inputs
from cnnviz.inputs import samples
from cnnviz.inputs.batches import model_inputs, pixels
from cnnviz.models import load_model, read_state_dict, zoo
from cnnviz.analyses.activations import Activations, LayerActivations, activations
from cnnviz.analyses.attribution import Attribution, Attributions, attributions, saliency
from cnnviz.analyses.sanity import SanityCheck, sanity_check
from cnnviz.analyses.attribution_settings import DEFAULT_METHODS, METHODS, AttributionSettings
from cnnviz.analyses.concepts import concepts
from cnnviz.analyses.concepts_results import Concepts
from cnnviz.analyses.connections import Connection, Connections, connections
from cnnviz.analyses.convolution import conv_matrix, conv_output_size
from cnnviz.analyses.equivariance import Equivariance, equivariance
from cnnviz.analyses.faithfulness import Faithfulness, FaithfulnessSettings, faithfulness
from cnnviz.analyses.feature_visualization import objectives
from cnnviz.analyses.feature_visualization.dream import Dream, dream
from cnnviz.analyses.feature_visualization.maximize import Rendering, maximize
from cnnviz.analyses.feature_visualization.settings import DreamSettings, RenderSettings
from cnnviz.analyses.kernels import Kernels, convolutions, kernels
from cnnviz.analyses.predictions import Prediction, Predictions, predict
from cnnviz.analyses.receptive_field import (
    EffectiveReceptiveField, ReceptiveField, ReceptiveFields, effective_receptive_field, receptive_field, receptive_fields,
)
from cnnviz.analyses.statistics import LayerStatistics, Statistics, statistics
from cnnviz.analyses.summary import LayerRow, LayerTable, layer_table
from cnnviz import plots
from cnnviz import reports
from cnnviz.site import Gallery, GallerySettings, gallery

# Sorted. Utilities stay importable from here but are not part of the surface: cnnviz.model_guard,
# cnnviz.read_state_dict, cnnviz.resolve_device, cnnviz.reuse_freed_memory, cnnviz.layer_ref / LayerRef,
# cnnviz.output, cnnviz.faithfulness (measures attributions already made: attributions(..., faithfulness=True)
# is the call), and cnnviz.pixels / cnnviz.model_inputs, which say what a tensor of images holds (see
# docs/python.md).
__all__ = [
    "Activations",
    "activations",
    "Attribution",
    "Attributions",
    "attributions",
    "AttributionSettings",
    "capture",
    "CnnvizError",
    "CnnvizWarning",
    "Concepts",
    "concepts",
    "Connection",
    "Connections",
    "connections",
    "conv_matrix",
    "conv_output_size",
    "convolutions",
    "DEFAULT_METHODS",
    "Dream",
    "dream",
    "DreamSettings",
    "effective_receptive_field",
    "EffectiveReceptiveField",
    "Equivariance",
    "equivariance",
    "Faithfulness",
    "FaithfulnessSettings",
    "Gallery",
    "gallery",
    "GallerySettings",
    "inputs",
    "Kernels",
    "kernels",
    "layer_table",
    "LayerActivations",
    "LayerRow",
    "LayerStatistics",
    "LayerTable",
    "load_model",
    "LoadedModel",
    "maximize",
    "METHODS",
    "NotApplicable",
    "objectives",
    "plots",
    "predict",
    "Prediction",
    "Predictions",
    "Preprocessing",
    "Probe",
    "probe",
    "receptive_field",
    "receptive_fields",
    "ReceptiveField",
    "ReceptiveFields",
    "Rendering",
    "RenderSettings",
    "reports",
    "saliency",
    "samples",
    "sanity_check",
    "SanityCheck",
    "Statistics",
    "statistics",
    "Unit",
    "zoo",
]
