"""The model-parameter randomisation test of an attribution method (Adebayo et al., 2018):
:func:`sanity_check` re-initialises a copy of the model from the top down and measures how the maps
change (:class:`SanityCheck`); the user's model is never touched."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from cnnviz.analyses.attribution import Attribution, saliency
from cnnviz.analyses.attribution_settings import METHODS
from cnnviz.core.display import Shows
from cnnviz.core.gradients import gradients_on
from cnnviz.core.model import LoadedModel, unwrap
from cnnviz.core.probe import probe
from cnnviz.errors import CnnvizError


@dataclass(repr=False)
class SanityCheck(Shows):
    """The model-parameter randomisation test (Adebayo et al., 2018).

    Attributes:
        method: the attribution method checked.
        layers: the layers re-initialised, cumulatively from the output down: step k has the first
            k of them randomised.
        correlations: for each step, the Spearman rank correlation between the absolute attribution
            map of the randomised copy and the original's (mean over images).
        maps: the absolute maps, ``(steps + 1) x N x H x W`` (the original first).
        original: the original :class:`Attribution`.
    """

    method: str
    layers: list[str]
    correlations: list[float]
    maps: torch.Tensor
    original: Attribution

    def __repr__(self) -> str:
        steps = ", ".join(f"{c:.2f}" for c in self.correlations)
        return f"SanityCheck({self.method!r}, {len(self.layers)} layers randomised, rank correlations {steps})"

    def to_dict(self) -> dict:
        return {"method": self.method, "randomised_layers": self.layers,
                "rank_correlations": [round(c, 6) for c in self.correlations]}


def sanity_check(
    model, images, target=None, *, method: str = "gradient", stages: int | None = None, seed: int = 0, **options,
) -> SanityCheck:
    """Re-initialise the model's layers from the top down, on a copy, and see the attribution change.

    An attribution method that explains the model must depend on its weights: after the top layers
    are re-initialised, the map should no longer look like the original. The layers with weights
    (a convolution or a linear layer, with the normalisation layers that follow it) are taken in
    the order they run; each stage re-initialises one more of them, from the output towards the
    input, in a deep copy of the model (``reset_parameters()`` under ``seed``). The user's model is
    never touched.

    Args:
        model, images, target, method: as for :func:`saliency` (one method; the target is fixed to
            what the original model explains, so randomisation does not change it).
        stages: at most this many stages, spread evenly over the layers (default: every layer).
        seed: the seed of the re-initialisation.
        options: passed on to :func:`saliency`.

    Returns:
        :class:`SanityCheck` with one rank correlation per stage.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise CnnvizError(f"the sanity check takes one method of {', '.join(METHODS)}, not {method!r}")
    if stages is not None and stages < 1:
        raise CnnvizError("stages must be at least 1")
    # also the copies: made in inference mode, their parameters would be inference tensors
    with gradients_on(None if method == "occlusion" else model):
        original = saliency(model, images, target, method=method, **options)
        module, _ = unwrap(model)
        groups = _layers_top_down(module, original.inputs[:1])
        if not groups:
            raise CnnvizError("the model has no layer with parameters to re-initialise")
        count = len(groups) if stages is None else min(stages, len(groups))
        cuts = sorted({math.ceil(len(groups) * (k + 1) / count) for k in range(count)})
        fixed_targets = [t.reference for t in original.targets]
        maps, correlations, layers = [original.absolute_map()], [], []
        for cut in cuts:
            copy_model = copy.deepcopy(module)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for group in groups[:cut]:
                    for name in group:
                        copy_model.get_submodule(name).reset_parameters()
            randomised = saliency(_with_metadata(model, copy_model), original.inputs, fixed_targets, method=method, **options)
            maps.append(randomised.absolute_map())
            correlations.append(mean_rank_correlation(maps[0], maps[-1]))
            layers.append(groups[cut - 1][0])
    return SanityCheck(method, layers, correlations, torch.stack(maps), original)


def _layers_top_down(module: nn.Module, example: torch.Tensor) -> list[list[str]]:
    """Groups of module names to re-initialise together, from the output towards the input: each
    convolution or linear layer with the normalisation layers that run after it."""
    names = [name for name, m in module.named_modules()
             if name and hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False))]
    with probe(module, names, store=False, early_exit=False) as recorder:
        recorder.run(example)
        ran = [name for name, call in recorder.order if call == 1]
    groups: list[list[str]] = []
    for name in ran:
        starts_group = isinstance(module.get_submodule(name), (nn.modules.conv._ConvNd, nn.Linear))
        if starts_group or not groups:
            groups.append([name])
        else:
            groups[-1].append(name)
    return groups[::-1]


def _with_metadata(model, module: nn.Module):

    if isinstance(model, LoadedModel):
        return LoadedModel(module, model.preprocessing, model.class_names, model.spec, "randomised copy")
    return module


def mean_rank_correlation(first: torch.Tensor, second: torch.Tensor) -> float:
    """Spearman's rank correlation (tied values share their average rank) of two N x H x W maps,
    averaged over the N images; NaN when a map is constant (it has no ranking)."""
    values = []
    for a, b in zip(first.flatten(1), second.flatten(1)):
        ranks_a, ranks_b = _average_ranks(a), _average_ranks(b)
        ranks_a -= ranks_a.mean()
        ranks_b -= ranks_b.mean()
        denominator = math.sqrt(float((ranks_a**2).sum() * (ranks_b**2).sum()))
        values.append(float((ranks_a * ranks_b).sum()) / denominator if denominator else float("nan"))
    return sum(values) / len(values)


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks from 1, ties sharing the mean of the ranks they span."""
    order = torch.argsort(values, stable=True)
    ordered = values[order]
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, dim=0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty(len(values), dtype=torch.float64)
    ranks[order] = mean_rank[inverse]
    return ranks
