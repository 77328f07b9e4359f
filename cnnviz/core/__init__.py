"""The bottom layer: what every analysis needs and nothing else.

* :mod:`~cnnviz.core.model`: the model handle (:class:`LoadedModel`) and its :class:`Preprocessing`;
* :mod:`~cnnviz.core.references`: naming a unit (``features.10:5@7,3``) and resolving it in a model;
* :mod:`~cnnviz.core.probe`: the one set of forward hooks (capture, early exit, the model guard);
* :mod:`~cnnviz.core.relu`: rules that redirect a model's ReLUs during a call (guided backprop,
  dead-unit rescue) without touching its modules;
* :mod:`~cnnviz.core.output`: files written atomically (no half-written outputs);
* :mod:`~cnnviz.core.memory`: the opt-in allocator policy for processes that render a lot.

Nothing here imports from the layers above (inputs, analyses, plots, reports, site, cli).
"""
