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


# The settings each kind of job depends on (the others do not change its figures).
JOB_SETTINGS = {
    "kernels": (),
    "activations": (),
    "statistics": ("batch_size",),
    "maximize": ("steps", "seed"),
    "dream": ("dream_octaves", "dream_iterations", "seed"),
    "attributions": ("methods", "batch_size"),
    "classes": ("class_steps", "seed"),
}


# Progress: ``progress(stage, total)`` returns a callable that is given the work done.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class GallerySettings:
    """What a gallery shows and how hard it works (every field is part of the jobs' keys).

    Attributes:
        max_channels: maximal-response images per layer (the first channels); ``None`` for all.
        steps: the most optimisation steps of a maximal-response image (each stops once it beats its
            unit's best response to the gallery's images by 10 % or has converged).
        activation_images: images whose activations are drawn (the first readable ones).
        attribution_images: images attributed with every method (the first readable ones).
        methods: the attribution methods, side by side.
        dream_image: the image Deep Dream changes (default: the first readable image).
        dream_octaves, dream_iterations: Deep Dream's octaves and steps per octave.
        max_classes: class visualizations (the first classes); ``0`` for none.
        class_steps: optimisation steps of each class visualization.
        seed: the seed of every random choice.
        batch_size: images per forward pass for statistics and attributions.
    """

    max_channels: int | None = 16
    steps: int = 64
    activation_images: int = 3
    attribution_images: int = 8
    methods: tuple[str, ...] = METHODS
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
                  "batch_size": self.batch_size}
        for name, value in counts.items():
            if not isinstance(value, int) or value < 1:
                raise CnnvizError(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.max_channels is not None and (not isinstance(self.max_channels, int) or self.max_channels < 1):
            raise CnnvizError(f"max_channels must be at least 1 (or None for all), got {self.max_channels!r}")
        if not isinstance(self.max_classes, int) or self.max_classes < 0:
            raise CnnvizError(f"max_classes must be 0 or more, got {self.max_classes!r}")
        unknown = [m for m in self.methods if m not in KNOWN]
        if unknown or not self.methods:
            raise CnnvizError(f"unknown attribution methods {unknown}; choose from {', '.join(KNOWN)}")
