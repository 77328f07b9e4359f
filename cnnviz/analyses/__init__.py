"""The analyses: one file (or folder) per thing cnnviz computes about a model.

============================  ======================================================================
``kernels.py``                a layer's weights as images (:func:`cnnviz.kernels`)
``activations.py``            one image's activations (:func:`cnnviz.activations`)
``statistics.py``             activation statistics over many images (:func:`cnnviz.statistics`)
``attribution.py``            input attributions: saliency and captum's methods (:func:`cnnviz.saliency`)
``predictions.py``            top-k predictions (:func:`cnnviz.predict`)
``connections.py``            how strongly one layer's channels feed the next's, by weight (:func:`cnnviz.connections`)
``feature_visualization/``    maximal-response images (:func:`cnnviz.maximize`) and Deep Dream
``receptive_field.py``        theoretical and effective receptive fields
``summary.py``                the layer table (:func:`cnnviz.layer_table`)
``convolution.py``            the lecture: convolution as a matrix product, output sizes
``equivariance.py``           the lecture: translation equivariance and pooling invariance
============================  ======================================================================

Each takes a model (``nn.Module`` or :class:`cnnviz.LoadedModel`) and returns a result object;
drawing it is :mod:`cnnviz.plots`, writing it to files is :mod:`cnnviz.reports`.
"""
