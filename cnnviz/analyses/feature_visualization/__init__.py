"""Feature visualization: images made by gradient ascent on the input.

* :mod:`~.maximize`: the optimisation loop, many units as one batch (:func:`cnnviz.maximize`);
* :mod:`~.dream`: Deep Dream on a real image, in octaves and tiles (:func:`cnnviz.dream`);
* :mod:`~.objectives`: what is maximised (``channel``, ``neuron``, ``layer``...), composable with
  ``+``, ``-`` and ``*``;
* :mod:`~.parameterization`: how the image is represented (pixels, decorrelated Fourier);
* :mod:`~.transforms`: the robustness transformations drawn for every step (jitter, scale, rotate).
"""
