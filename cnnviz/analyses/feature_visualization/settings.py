"""The settings of renders and dreams as values: :class:`RenderSettings` (what :func:`cnnviz.maximize`
does with each image) and :class:`DreamSettings` (:func:`cnnviz.dream`). Each field's default and
its help are the one source of that default: the functions, the ``cnnviz maximize`` and
``cnnviz dream`` options and their ``--help`` read them from here (a test checks that they agree)."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from cnnviz.analyses.feature_visualization.parameterization import PARAMETERISATIONS
from cnnviz.analyses.feature_visualization.transforms import Robustness
from cnnviz.core.settings import chosen, setting
from cnnviz.errors import CnnvizError, check_seed

PRECISIONS = ("fp32", "bf16", "auto")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class RenderSettings:
    """How :func:`cnnviz.maximize` renders each image (what it renders is its target: the layer,
    channels, objective, ``negative``, ``diverse``, ``neuron``, ``direction``).

    ``cnnviz.maximize(model, "features.12", channels="0-7", settings=RenderSettings(steps=64))``
    and ``cnnviz.maximize(model, "features.12", channels="0-7", steps=64)`` are the same call: the
    keywords replace the fields they name."""

    size: int | tuple[int, int] | str = setting(
        "auto", "auto (about twice the unit's receptive field, at least 48 px, at most 160 px for a channel's or "
        "direction's mean; the model's input size for classes, at most 160 px), or a height and width.")
    steps: int = setting(256, "The most optimisation steps of an image: each stops once converged (it gained under 2% "
                              "of its value in 32 steps; a unit's render at its third, lowest learning rate, a class's "
                              "at its first), unless the stopping rule is off.")
    lr: float = setting(0.1, "The first learning rate of Adam (the cosine schedule takes it to a tenth by the last step).")
    param: str = setting("fft", "fft: a decorrelated Fourier spectrum; maco: its phase only, under the magnitude of "
                                "natural photographs (Fel et al. 2023); pixel: plain pixels.")
    seed: int = setting(0, "The seed of every random choice; a unit's image depends only on it and the unit.")
    batch_size: int | None = setting(None, "Images per batch (default: as many as fit a 1.5 GiB activation budget).")
    robustness: Robustness | None = setting(None, "The random transformations of each step (default: Lucid's padding, "
                                                  "jitter, scale and rotation).")
    redirect_steps: int = setting(16, "Steps during which dead ReLUs let the gradient through (0 to disable).")
    precision: str = setting("fp32", "fp32, bf16 (autocast) or auto (bf16 where the hardware has it).")
    regularize: float = setting(0.0, "Subtract this times the image's total variation from the objective.")
    reference: object = setting("samples", "What each render is compared with: real images (a folder, files, the "
                                           "sample photographs by default), a dataset's statistics, or none.")
    stop: bool = setting(True, "End each image once its objective has converged (else run every step).")
    schedule: str = setting("cosine", "cosine (the learning rate falls to a tenth over the steps) or constant.")
    filters: bool = setting(True, "Render a unit that is one linear filter of the input as its exact maximum.")

    def check(self) -> None:
        """One line for a setting out of range."""
        if not isinstance(self.steps, numbers.Integral) or self.steps < 1 or not (self.lr > 0 and math.isfinite(self.lr)):
            raise CnnvizError(f"steps must be at least 1 and lr a positive finite number (got steps={self.steps}, "
                              f"lr={self.lr})")
        check_seed(self.seed)
        if self.param not in PARAMETERISATIONS:
            raise CnnvizError(f"unknown parameterisation {self.param!r}; use {', '.join(PARAMETERISATIONS)}")
        if self.precision not in PRECISIONS:
            raise CnnvizError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        if self.schedule not in SCHEDULES:
            raise CnnvizError(f"unknown schedule {self.schedule!r}; use {' or '.join(SCHEDULES)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise CnnvizError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.redirect_steps < 0:
            raise CnnvizError(f"redirect_steps must be 0 or more, got {self.redirect_steps}")

    @classmethod
    def of(cls, settings: RenderSettings | None, options: dict) -> RenderSettings:
        """``settings`` (default: the defaults) with the fields ``options`` names replaced; an
        unknown name is one line listing the settings."""
        result = chosen(cls, settings, options, "maximize")
        result.check()
        return result


@dataclass(frozen=True)
class DreamSettings:
    """How :func:`cnnviz.dream` changes its image (its ``settings=``, whose fields its keywords
    replace; the defaults of ``cnnviz dream``). ``steps`` was called ``iterations`` before 0.x:
    that name still works, with a warning."""

    RENAMED = {"iterations": "steps"}  # old keyword -> field (a class attribute, not a field)

    octaves: int = setting(4, "The number of scales the image is dreamed at.")
    scale: float = setting(1.4, "The ratio between neighbouring octaves.")
    steps: int = setting(10, "Gradient steps per octave.")
    step: float = setting(0.01, "The step, in pixel units of [0, 1], along the gradient normalised to mean magnitude 1.")
    jitter: int = setting(32, "The largest random roll, in pixels.")
    tile: int = setting(512, "The largest tile side for the gradient (large images are computed tile by tile).")
    seed: int = setting(0, "The seed of the rolls.")


RENDER = RenderSettings()
DREAM = DreamSettings()
