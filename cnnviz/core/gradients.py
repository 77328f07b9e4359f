"""Input gradients whatever the caller's autograd mode: :func:`gradients_on`.

A notebook may call cnnviz inside ``torch.no_grad()`` or ``torch.inference_mode()``. Every
analysis that takes gradients with respect to its input (saliency and its methods, the sanity
check, the effective receptive field, a TorchScript model's measured receptive field, maximize,
dream) runs them under :func:`gradients_on`, so it gives what it gives outside those modes, and
the caller's modes are back when it returns.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from cnnviz.core.model import unwrap
from cnnviz.errors import CnnvizError

INFERENCE_FIX = "build or load the model outside torch.inference_mode() (torch.no_grad() is fine for that)"
INFERENCE_REFUSAL = "Inference tensors cannot be saved for backward"  # torch's words


@contextlib.contextmanager
def gradients_on(model=None) -> Iterator[None]:
    """Run a block that takes input gradients, with gradients enabled and inference mode off.

    On exit, also after an exception, the caller's modes are back. Tensors made in the block are
    ordinary tensors, and an inference tensor given as input can be used: what is computed from
    it out of inference mode (a clone included) is an ordinary tensor. A model's own inference
    tensors cannot, as torch keeps no graph through them.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` whose gradients the block takes
            (its parameters are checked first), or ``None``.

    Raises:
        CnnvizError: a parameter of ``model`` is an inference tensor, or torch refuses one of its
            buffers in the block for the same reason (the model was built or loaded inside
            ``torch.inference_mode()``).
    """
    if model is not None:
        module, _ = unwrap(model)
        for name, parameter in module.named_parameters():
            if parameter.is_inference():
                raise CnnvizError(
                    f"the model's parameter {name} is an inference tensor (made inside torch.inference_mode()), "
                    f"through which torch takes no gradients; {INFERENCE_FIX}"
                )
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    except (RuntimeError, CnnvizError) as error:
        if INFERENCE_REFUSAL not in str(error):
            raise
        raise CnnvizError(
            "a tensor the model uses (a buffer, a parameter) is an inference tensor (made inside "
            f"torch.inference_mode()), through which torch takes no gradients; {INFERENCE_FIX}"
        ) from error
