"""The attribution methods cnnviz runs and their settings as a value: :class:`AttributionSettings`,
the one source of the defaults of :func:`cnnviz.attributions` and of ``cnnviz saliency``."""
from __future__ import annotations

from dataclasses import dataclass

from cnnviz.core.settings import setting

METHODS = (
    "gradient", "gradient_x_input", "smoothgrad", "integrated_gradients", "guided_backprop",
    "deconvolution", "gradcam", "gradcam_plus_plus", "xgradcam", "layercam", "scorecam", "eigencam",
    "guided_gradcam", "occlusion",
)
#: the methods run when none are named: by :func:`attributions`, ``cnnviz saliency`` and the
#: gallery (the others are variants: gradient x input, deconvolution, guided Grad-CAM, the CAM family)
DEFAULT_METHODS = ("gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "occlusion")
#: methods whose maps are one channel, non-negative, at a layer (class activation maps); with
#: guided Grad-CAM, the methods that take a layer (``layer=``, ``Attribution.layer``)
CAM_METHODS = ("gradcam", "gradcam_plus_plus", "xgradcam", "layercam", "scorecam", "eigencam")


@dataclass(frozen=True)
class AttributionSettings:
    """The settings of the attribution methods: the defaults of :func:`attributions` (and
    :func:`saliency`, :func:`sanity_check`) and of ``cnnviz saliency``, one source for both."""

    methods: tuple[str, ...] = setting(DEFAULT_METHODS, "The methods, side by side, in this order.")
    steps: int = setting(32, "Integrated-gradients steps.")
    samples: int = setting(16, "SmoothGrad's noisy copies.")
    noise: float = setting(0.15, "SmoothGrad's noise: its standard deviation as a fraction of the input's range.")
    window: int | None = setting(None, "Occlusion's square patch in pixels (default: an eighth of the smaller side).")
    stride: int | None = setting(None, "Occlusion's step in pixels (default: half the window).")
    batch_size: int = setting(32, "The most images attributed at once, and the most examples per forward pass inside "
                                  "integrated gradients, SmoothGrad and occlusion, and Score-CAM's masked inputs per "
                                  "forward pass (this bounds their memory).")
    eigen_smooth: bool = setting(False, "CAM maps as the first principal component of the weighted activations instead of "
                                        "their channel sum (Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, Score-CAM; "
                                        "pytorch-grad-cam's option; other methods ignore it).")
    aug_smooth: bool = setting(False, "CAM maps averaged over six augmented inputs: horizontal flip x intensities "
                                      "0.9, 1, 1.1 (all CAM methods; pytorch-grad-cam's option; other methods ignore it).")


ATTRIBUTION = AttributionSettings()
