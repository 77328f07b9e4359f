"""What a gallery shows and how hard it works: :class:`GallerySettings` and the defaults."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


from cnnviz.analyses.attribution import METHODS as KNOWN
from cnnviz.errors import CnnvizError


MANY_CONVOLUTIONS = 12  # above this, the default is a subset of the convolutions


SUBSET = 8


METHODS = ("gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "occlusion")


IMAGES_PER_ATTRIBUTION_FIGURE = 4


KERNEL_FIGURE_UNITS = 16  # a layer page's kernel figure: this many units at most (each unit page has its own)


ACTIVATION_TILES = 16  # a layer page shows this many maps per image (the most active units shown)


# The settings each kind of job depends on (the others do not change its figures); the channels
# a job shows are among its inputs.
JOB_SETTINGS = {
    "kernels": (),
    "activations": (),
    "statistics": ("batch_size", "exemplars"),
    "maximize": ("steps", "seed"),
    "renders": ("steps", "seed", "diverse"),
    "units": ("exemplars",),
    "dream": ("dream_octaves", "dream_iterations", "seed"),
    "attributions": ("methods", "batch_size", "classes"),
    "classes": ("class_steps", "seed"),
}


CLASS_CHOICES = "top1 (the default), topN, label, or class names or indices"


# Progress: ``progress(stage, total)`` returns a callable that is given the work done.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class GallerySettings:
    """What a gallery shows and how hard it works (every field is part of the jobs' keys).

    Which units: every channel of a shown layer gets a page, up to ``max_channels`` per layer;
    beyond that, one rule for every section: the channels with the strongest response to the
    gallery's images (the largest per-image mean activation) are shown, and the same ones have
    renders, exemplars, maps and pages.

    Attributes:
        max_channels: units per layer (``None`` for all).
        unit_renders: units per layer (the strongest of those shown) that also get the neuron at
            the centre, ``diverse`` different images and the negative render; ``None`` for all.
        diverse: images of the diverse set of each of those units.
        exemplars: dataset exemplars per unit, of its largest values and of its smallest.
        steps: the most optimisation steps of a maximal-response image (each stops once it beats its
            unit's best response to the gallery's images by 10 % or has converged).
        activation_images: images whose activations are shown (the first readable ones).
        attribution_images: images attributed with every method (the first readable ones).
        methods: the attribution methods, side by side.
        classes: which classes each image is attributed to: ``top1`` (its predicted class),
            ``topN`` (its N best), ``label`` (its true class, where its name or folder says it), or
            class names or indices (the same for every image).
        dream_image: the image Deep Dream changes (default: the first readable image).
        dream_octaves, dream_iterations: Deep Dream's octaves and steps per octave.
        max_classes: class visualizations (the first classes); ``0`` for none.
        class_steps: optimisation steps of each class visualization.
        seed: the seed of every random choice.
        batch_size: images per forward pass for statistics and attributions.
    """

    max_channels: int | None = 128
    unit_renders: int | None = 16
    diverse: int = 3
    exemplars: int = 8
    steps: int = 64
    activation_images: int = 3
    attribution_images: int = 8
    methods: tuple[str, ...] = METHODS
    classes: tuple[str, ...] = ("top1",)
    dream_image: str | None = None
    dream_octaves: int = 3
    dream_iterations: int = 8
    max_classes: int = 64
    class_steps: int = 128
    seed: int = 0
    batch_size: int = 32

    def check(self) -> None:
        counts = {"steps": self.steps, "activation_images": self.activation_images,
                  "attribution_images": self.attribution_images, "dream_octaves": self.dream_octaves,
                  "dream_iterations": self.dream_iterations, "class_steps": self.class_steps,
                  "batch_size": self.batch_size, "diverse": self.diverse, "exemplars": self.exemplars}
        for name, value in counts.items():
            if not isinstance(value, int) or value < 1:
                raise CnnvizError(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.exemplars > 64:
            raise CnnvizError(f"exemplars is at most 64 per unit, not {self.exemplars}")
        for name in ("max_channels", "unit_renders"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0 or (name == "max_channels" and value < 1)):
                raise CnnvizError(f"{name} must be at least {1 if name == 'max_channels' else 0} (or None for all), "
                                  f"got {value!r}")
        if not isinstance(self.max_classes, int) or self.max_classes < 0:
            raise CnnvizError(f"max_classes must be 0 or more, got {self.max_classes!r}")
        unknown = [m for m in self.methods if m not in KNOWN]
        if unknown or not self.methods:
            raise CnnvizError(f"unknown attribution methods {unknown}; choose from {', '.join(KNOWN)}")
        if not self.classes or not all(isinstance(c, str) and c.strip() for c in self.classes):
            raise CnnvizError(f"classes takes {CLASS_CHOICES}; got {self.classes!r}")
