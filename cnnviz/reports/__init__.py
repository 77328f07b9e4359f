"""Reports: a result turned into named figures, images, arrays and a JSON summary, the same for
the ``cnnviz`` commands (which write a report flat into ``-o DIR``) and the gallery (which places
the same figures, with the same captions, in its site).

``cnnviz.reports.<analysis>(result, ...)`` returns a :class:`Report`; ``report.write(folder)``
writes it; ``report.items`` are its figures (:class:`Item`: file name, kind, caption, layer, unit,
value range, settings), drawn only when written. By file: ``report.py`` (the two types and the
writing), ``inspect.py`` (kernels, activations, statistics), ``visualize.py`` (maximize, dream),
``attribution.py`` (attributions and sanity checks), ``concepts.py`` (concepts), ``lecture.py``
(receptive fields, equivariance, convolution as a matrix, convolution arithmetic).

Example::

    >>> import tempfile, cnnviz
    >>> result = cnnviz.kernels(cnnviz.load_model("builtin:photos"), "features.0")
    >>> report = cnnviz.reports.kernels(result)
    >>> report, [item.file for item in report.items]
    (Report(kernels_features.0: 1 figures, 0 array files), ['kernels_features.0.png'])
    >>> folder = tempfile.mkdtemp()
    >>> [path.name for path in report.write(folder)]      # the figures drawn now, the JSON last
    ['kernels_features.0.png', 'kernels_features.0.json']
"""
from cnnviz.reports.attribution import attributions
from cnnviz.reports.concepts import concepts
from cnnviz.reports.inspect import activations, kernels, statistics
from cnnviz.reports.lecture import conv_arithmetic, conv_matrix, equivariance, receptive_fields
from cnnviz.reports.report import Item, Report
from cnnviz.reports.visualize import dream, maximize

__all__ = [
    "Item", "Report", "activations", "attributions", "concepts", "conv_arithmetic", "conv_matrix", "dream", "equivariance",
    "kernels", "maximize", "receptive_fields", "statistics",
]
