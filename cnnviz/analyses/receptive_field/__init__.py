"""Receptive fields: which input pixels a unit can see.

**Theoretical** (:func:`receptive_field` of one layer, :func:`receptive_fields` of every layer): one forward pass of a random image, during which a
:class:`torch.overrides.TorchFunctionMode` follows, for every element of every tensor, the box of
input pixels it depends on. Each operation maps boxes exactly: a convolution or pooling takes the
union of the boxes under its (dilated, strided, padded, ceil-mode) window over its input channels,
an elementwise operation (a residual addition, a gating multiplication) the union of its operands'
boxes (the largest region over all paths), a concatenation or reshape moves boxes with the data,
a reduction, a linear layer, a softmax or an attention product the union over what it sums.
Nothing about the model is assumed: branches, residual connections, ``F.relu`` calls, windowed
attention and channel shuffles all come out of the data flow. Zero padding is given the boxes the
padded positions would have on an unbounded input ("virtual" coordinates), so the numbers are the
textbook ones (ResNet-50's last stage sees 427 pixels although its input has 224); the boxes
clipped to the image are what a unit actually sees.

For each layer the result (:class:`ReceptiveField`) gives the ``size`` of a unit's region, the
effective ``stride`` (jump) between neighbouring units, and the ``offset`` (the input coordinate
of the first row and column of unit (0, 0)'s region, negative when it starts in the padding):
unit ``(i, j)`` sees rows ``offset[0] + i * stride[0]`` to ``offset[0] + i * stride[0] + size[0] - 1``.
A layer with no spatial grid (after global pooling, a linear layer or attention) whose every unit
depends on the whole image is reported as ``kind == "global"`` with ``size`` the input size and
no stride: nothing is invented.

**Effective** (:func:`effective_receptive_field`, Luo et al., 2016): the magnitude of the
gradient of one centre unit with respect to the input, averaged over images, and the radii that
hold 50% and 95% of its mass.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")                # 64 x 64 inputs
    >>> rf = cnnviz.receptive_field(loaded, "features.27")          # its last stage sees 76 pixels
    >>> rf.size, rf.stride, rf.offset, rf.kind
    ((76, 76), (16, 16), (-30, -30), 'grid')
    >>> cnnviz.receptive_field(loaded, "logits").kind                # every unit sees the whole image
    'global'

The same call on torchvision's ResNet-50 (``torchvision.models.resnet50()``, random weights will
do; tracing it takes about 10 s on a CPU) gives ``layer4`` a size of ``(427, 427)``, a stride of
``(32, 32)`` and an offset of ``(-213, -213)``.

The package, by file:

=====================  ===================================================================
``results.py``         the result types: :class:`ReceptiveField`, :class:`ReceptiveFields`,
                       :class:`EffectiveReceptiveField`
``theoretical.py``     :func:`receptive_field(s)` and :func:`unit_boxes`: trace, then summarise
                       the per-element boxes into size, stride and offset
``tracer.py``          the tracing mode and the traced forward pass (hooks on every layer)
``rules.py``           the table of rules: per operation, input boxes -> output boxes
``operations.py``      the operation names the rules know, by family, and name normalisation
``boxes.py``           the box algebra: unions, reductions, padding, sliding windows
``effective.py``       :func:`effective_receptive_field`
=====================  ===================================================================
"""
from cnnviz.analyses.receptive_field.effective import effective_receptive_field
from cnnviz.analyses.receptive_field.results import EffectiveReceptiveField, Pair, ReceptiveField, ReceptiveFields
from cnnviz.analyses.receptive_field.theoretical import receptive_field, receptive_fields, unit_boxes

__all__ = [
    "EffectiveReceptiveField", "Pair", "ReceptiveField", "ReceptiveFields", "effective_receptive_field",
    "receptive_field", "receptive_fields", "unit_boxes",
]
