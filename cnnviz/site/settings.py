"""What a gallery shows and how hard it works: :class:`GallerySettings` and the defaults."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


from cnnviz.analyses.attribution_settings import DEFAULT_METHODS as METHODS, METHODS as KNOWN
from cnnviz.core.settings import setting
from cnnviz.errors import CnnvizError


MANY_CONVOLUTIONS = 12  # above this, the default is a subset of the convolutions


SUBSET = 8


IMAGES_PER_ATTRIBUTION_FIGURE = 4


AUTO_CHANNELS, AUTO_UNIT_RENDERS = 128, 16  # the most units per layer, and units with every render, by default

# The render budget of a default gallery, in activation values computed over the renders' steps
# (maximize.step_cost, a step's work, times the steps: a step's time follows it, 2.5-4.5 ns per value
# on 2 CPU cores): the channel renders of the shown units may use CHANNEL_BUDGET (builtin:photos: 32
# units per layer, 224 of its 480, about 130 s), but every layer shows at least AUTO_MIN_CHANNELS
# (MobileNetV2 at 224 px: 16 per layer, about 5 minutes); the neuron, negative and diverse renders
# of the strongest units use UNIT_RENDER_BUDGET (3 units per layer of builtin:photos), at least one
# unit per layer. A model whose renders cost more gets fewer units per layer, the strongest.
CHANNEL_BUDGET, UNIT_RENDER_BUDGET = 30e9, 15e9
AUTO_MIN_CHANNELS = 16
AUTO_CLASSES, CLASS_BUDGET = 64, 15.4e9  # class renders: at most 64, within their own budget (all their steps)

KERNEL_FIGURE_UNITS = 16  # a layer page's kernel figure: this many units at most (each unit page has its own)


ACTIVATION_TILES = 16  # a layer page shows this many maps per image (the most active units shown)


TOP_PREDICTIONS = 3  # predictions shown per image (classes=topN asks for N up to this)


# Concepts (cnnviz.concepts) of the last layers with spatial maps: their maps are drawn over this
# many images (the first), their importance measured on this many (the first: each costs k + 2
# passes of the network after the layer), and a unit is said to be used by a concept when it is
# among the concept's CONCEPT_TOP_CHANNELS largest weights or its weight is at least CONCEPT_USES
# of the largest.
CONCEPT_LAYERS, CONCEPT_MAP_IMAGES, CONCEPT_IMPORTANCE_IMAGES = 2, 4, 16
CONCEPT_TOP_CHANNELS, CONCEPT_USES = 5, 0.75


# The settings each kind of job depends on (the others do not change its figures); the channels
# a job shows are among its inputs.
JOB_SETTINGS = {
    "kernels": (),
    "activations": (),
    "statistics": ("batch_size", "exemplars"),
    "maximize": ("steps", "seed"),
    "renders": ("steps", "seed", "diverse"),
    "units": ("exemplars",),
    "dream": ("dream_octaves", "dream_steps", "seed"),
    "attributions": ("methods", "batch_size", "classes", "faithfulness_steps"),
    "faithfulness": ("faithfulness_steps",),
    "classes": ("class_steps", "seed"),
    # the layer is in each job's name and inputs: concept_layers only says which jobs there are
    "concepts": ("concepts_k", "steps", "seed", "batch_size", "exemplars"),
}


# The name a setting has in the jobs' keys where it was renamed since (the keys of a gallery made
# before stay the same, so that its jobs are reused).
KEY_NAMES = {"dream_steps": "dream_iterations"}

CLASS_CHOICES = "top1 (the default), topN, label, or class names or indices"


# Progress: ``progress(stage, total)`` returns a callable that is given the work done.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class GallerySettings:
    """What a gallery shows and how hard it works (every field is part of the jobs' keys; each
    field's help is what ``cnnviz gallery --help`` says of its option).

    Which units: every channel of a shown layer gets a page, up to ``max_channels`` per layer;
    beyond that, one rule for every section: the channels with the strongest response to the
    gallery's images (the largest per-image mean activation) are shown, and the same ones have
    renders, exemplars, maps and pages. ``dream_steps`` was ``dream_iterations``, a name that still
    works, with a warning.
    """

    RENAMED = {"dream_iterations": "dream_steps"}  # old keyword -> field (a class attribute, not a field)

    max_channels: int | str | None = setting(
        "auto", "Units per layer with a page (render, exemplars, maps); auto: as many as the render budget allows, at "
                "least 16, at most 128 (32 of the built-in photo model, 16 of a model whose renders cost more, such as "
                "one taking 224 px images); all (None; 0 on the command line) for every unit. The units with the "
                "strongest response to the images are shown, in every section alike.")
    unit_renders: int | str | None = setting(
        "auto", "Units per layer (the strongest shown) that also get the neuron, diverse and negative renders; auto: "
                "as many as their budget allows, at least 1, at most 16; all (None) for every unit shown.")
    diverse: int = setting(3, "Images of each unit's diverse set.")
    exemplars: int = setting(8, "Dataset examples per unit, where it is highest and where it is lowest (at most 64).")
    steps: int = setting(128, "The most optimisation steps of a unit's maximal-response image (each stops once "
                              "converged, as cnnviz.maximize does; more steps also mean fewer units within the budget).")
    activation_images: int = setting(3, "Images whose activations are drawn on every layer page (the first readable).")
    attribution_images: int = setting(8, "Images attributed with every method on the attributions page (the first "
                                         "readable).")
    methods: tuple[str, ...] = setting(METHODS, "Attribution methods, side by side.")
    faithfulness_steps: int = setting(16, "Deletion and insertion steps of the methods' faithfulness ranking on the "
                                          "attributions page (cnnviz.faithfulness, against a random map); 0 for none.")
    classes: tuple[str, ...] = setting(
        ("top1",), "Classes each image is attributed to: top1 (its prediction), topN (its N best, N up to 3), label "
                   "(its true class, where its file or folder is named like one), or class names or indices.")
    dream_image: str | None = setting(None, "The image Deep Dream changes (default: the first readable image).")
    dream_octaves: int = setting(3, "Deep Dream's octaves.")
    dream_steps: int = setting(8, "Deep Dream's steps per octave.")
    max_classes: int | str = setting("auto", "Class visualizations (the first classes); 0 for none; auto: as many as "
                                             "their budget allows, at most 64.")
    class_steps: int = setting(256, "The most optimisation steps of a class visualization (each stops once converged).")
    concepts_k: int = setting(6, "Concepts per layer on its concepts page (cnnviz.concepts: the layer's activations "
                                 "factorised into this many non-negative directions; at most the layer's channels).")
    concept_layers: tuple[str, ...] | None = setting(
        None, "Layers with a concepts page, among those shown; default (None) the last two with spatial maps; 0 (or "
              "an empty tuple) for none.")
    seed: int = setting(0, "The seed of every random choice.")
    batch_size: int = setting(32, "Images per forward pass for statistics and attributions.")

    def check(self) -> None:
        counts = {"steps": self.steps, "activation_images": self.activation_images,
                  "attribution_images": self.attribution_images, "dream_octaves": self.dream_octaves,
                  "dream_steps": self.dream_steps, "class_steps": self.class_steps,
                  "batch_size": self.batch_size, "diverse": self.diverse, "exemplars": self.exemplars,
                  "concepts_k": self.concepts_k}
        for name, value in counts.items():
            if not isinstance(value, int) or value < 1:
                raise CnnvizError(f"{name} must be a whole number of at least 1, got {value!r}")
        if not isinstance(self.faithfulness_steps, int) or self.faithfulness_steps < 0 or self.faithfulness_steps == 1:
            raise CnnvizError(f"faithfulness_steps must be 0 (none) or at least 2, got {self.faithfulness_steps!r}")
        if self.exemplars > 64:
            raise CnnvizError(f"exemplars is at most 64 per unit, not {self.exemplars}")
        for name in ("max_channels", "unit_renders"):
            value = getattr(self, name)
            if value is not None and value != "auto" and (
                    not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "max_channels" else 0)):
                raise CnnvizError(f"{name} must be at least {1 if name == 'max_channels' else 0}, 'auto' (within the "
                                  f"render budget) or None (all), got {value!r}")
        if self.max_classes != "auto" and (not isinstance(self.max_classes, int) or self.max_classes < 0):
            raise CnnvizError(f"max_classes must be 0 or more, or 'auto', got {self.max_classes!r}")
        layers = self.concept_layers
        if layers is not None and (not isinstance(layers, tuple)
                                   or not all(isinstance(name, str) and name.strip() for name in layers)):
            raise CnnvizError(f"concept_layers takes layer names (a tuple), None for the default or () for none; got "
                              f"{layers!r}")
        unknown = [m for m in self.methods if m not in KNOWN]
        if unknown or not self.methods:
            raise CnnvizError(f"unknown attribution methods {unknown}; choose from {', '.join(KNOWN)}")
        if not self.classes or not all(isinstance(c, str) and c.strip() for c in self.classes):
            raise CnnvizError(f"classes takes {CLASS_CHOICES}; got {self.classes!r}")


def within_budget(counts: dict[str, int], costs: dict[str, float], max_channels, unit_renders, diverse: int,
                  steps: int = 128) -> dict:
    """``max_channels`` and ``unit_renders`` as numbers (``None``: all), each ``"auto"`` one the most
    units per layer whose renders fit the budget.

    Args:
        counts: each layer's channels; costs: each rendered layer's :func:`cnnviz.analyses.
            feature_visualization.maximize.step_cost` (a unit's work per step).
        max_channels, unit_renders: as :class:`GallerySettings` has them.
        diverse: the diverse set's images (a unit's neuron, negative and diverse renders cost
            ``2 + diverse`` of its channel render).
        steps: the most steps of a render.

    The channel renders of ``k`` units per layer (fewer where a layer has fewer) cost
    ``steps * sum(min(channels, k) * cost)``: ``"auto"`` takes the largest ``k`` up to 128 within
    ``CHANNEL_BUDGET``, at least 16; for ``unit_renders`` the largest up to 16 whose other renders
    fit ``UNIT_RENDER_BUDGET``, at least 1.
    """
    def spent(units: int, each: float = 1.0) -> float:
        return each * steps * sum(min(counts[layer], units) * cost for layer, cost in costs.items())

    caps = {"max_channels": max_channels, "unit_renders": unit_renders}
    if max_channels == "auto":
        caps["max_channels"] = max([AUTO_MIN_CHANNELS] + [k for k in range(1, AUTO_CHANNELS + 1)
                                                          if spent(k) <= CHANNEL_BUDGET])
    shown = max(counts.values(), default=0) if caps["max_channels"] is None else caps["max_channels"]
    if unit_renders == "auto":
        caps["unit_renders"] = max([min(1, shown)] + [k for k in range(1, min(AUTO_UNIT_RENDERS, shown) + 1)
                                                      if spent(k, 2 + diverse) <= UNIT_RENDER_BUDGET])
    return caps
