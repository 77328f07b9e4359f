"""cnnviz: see what a convolutional network has learned.

The notebook API. Every function takes a plain ``torch.nn.Module`` (or a :class:`LoadedModel`) and
leaves it exactly as it was::

    import cnnviz
    loaded = cnnviz.load_model("torchvision:resnet18", weights="DEFAULT")
    print(cnnviz.layer_table(loaded))
    maps = cnnviz.capture(loaded, images, ["layer1.0.relu#2"])  # {"layer1.0.relu#2": N x 64 x 56 x 56}

The functions are imported here on purpose, after their modules: ``cnnviz.probe`` is the function,
even though ``cnnviz/probe.py`` is also the module's name.
"""
__version__ = "0.1.0"

from cnnviz import images, objectives, output, plots, samples, zoo
from cnnviz.activations import Activations, LayerActivations, activations
from cnnviz.attribution import METHODS, Attribution, SanityCheck, sanity_check, saliency
from cnnviz.dream import Dream, dream
from cnnviz.errors import CnnvizError, CnnvizWarning
from cnnviz.convolution import conv_matrix, conv_output_size
from cnnviz.equivariance import Equivariance, equivariance
from cnnviz.lecture_plots import (
    conv_arithmetic, plot_conv_matrix, plot_effective_receptive_field, plot_equivariance, plot_receptive_fields,
)
from cnnviz.receptive_field import (
    EffectiveReceptiveField, ReceptiveField, ReceptiveFields, effective_receptive_field, receptive_field,
)
from cnnviz.kernels import Kernels, convolutions, kernels
from cnnviz.maximize import Rendering, maximize
from cnnviz.memory import reuse_freed_memory
from cnnviz.models import LoadedModel, Preprocessing, load_model, read_state_dict, resolve_device
from cnnviz.predictions import Prediction, Predictions, predict
from cnnviz.probe import Probe, capture, model_guard, probe
from cnnviz.references import LayerRef, layer_ref
from cnnviz.statistics import LayerStatistics, Statistics, statistics
from cnnviz.site import Gallery, GallerySettings, gallery
from cnnviz.summary import LayerRow, LayerTable, layer_table

__all__ = [
    "Activations",
    "Attribution",
    "METHODS",
    "CnnvizError",
    "CnnvizWarning",
    "EffectiveReceptiveField",
    "Equivariance",
    "Dream",
    "Gallery",
    "GallerySettings",
    "Kernels",
    "LayerActivations",
    "LayerRef",
    "LayerRow",
    "LayerStatistics",
    "LayerTable",
    "LoadedModel",
    "Prediction",
    "Predictions",
    "Preprocessing",
    "Probe",
    "ReceptiveField",
    "ReceptiveFields",
    "Rendering",
    "SanityCheck",
    "Statistics",
    "activations",
    "capture",
    "conv_arithmetic",
    "conv_matrix",
    "conv_output_size",
    "convolutions",
    "dream",
    "effective_receptive_field",
    "equivariance",
    "gallery",
    "images",
    "kernels",
    "layer_ref",
    "layer_table",
    "load_model",
    "maximize",
    "model_guard",
    "objectives",
    "output",
    "plot_conv_matrix",
    "plot_effective_receptive_field",
    "plot_equivariance",
    "plot_receptive_fields",
    "plots",
    "predict",
    "probe",
    "receptive_field",
    "read_state_dict",
    "resolve_device",
    "reuse_freed_memory",
    "saliency",
    "samples",
    "sanity_check",
    "statistics",
    "zoo",
]
