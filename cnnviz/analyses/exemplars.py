"""Exemplars of activation statistics: the crop around a channel's maximum in an image, and the
merging of two top-k lists (two populations, or two ranks' shares of one). Used by
:mod:`cnnviz.analyses.statistics`."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from cnnviz.core.model import Preprocessing
from cnnviz.inputs.images import display_image


def crop_size(map_size: tuple[int, int], input_size: tuple[int, int]) -> int:
    """The side of the input region an exemplar crop shows: about four map strides, at least 16 px."""
    stride = max(input_size[0] / map_size[0], input_size[1] / map_size[1])
    return int(min(max(16, math.ceil(4 * stride)), min(input_size)))


def exemplar_crops(inputs: torch.Tensor, image: torch.Tensor, row_column: torch.Tensor, map_size, side: int,
           stored: int, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 RGB crops of model inputs (N x C x H x W, normalised), one per pick: a side x side
    region of ``image[i]`` around map position ``row_column[i]``, shown as the model saw it,
    shrunk to stored x stored (area averaging) when it is larger.

    Each image is de-normalised (and shrunk) once, and each distinct (image, position) cropped
    once, however many channels pick it.
    """
    picks = torch.stack([image, row_column[:, 0], row_column[:, 1]], dim=1)
    unique, back = torch.unique(picks, dim=0, return_inverse=True)
    needed, slot_of = torch.unique(unique[:, 0], return_inverse=True)
    shown = display_image(inputs[needed], preprocessing)  # n x 3 x H x W
    height, width = inputs.shape[2:]
    scale = stored / side
    if stored < side:
        shown = torch.nn.functional.interpolate(
            shown, size=(max(stored, round(height * scale)), max(stored, round(width * scale))), mode="area"
        )
    small_height, small_width = shown.shape[2:]
    centre_y = ((unique[:, 1].double() + 0.5) * height / map_size[0] * scale).long()
    centre_x = ((unique[:, 2].double() + 0.5) * width / map_size[1] * scale).long()
    top = (centre_y - stored // 2).clamp(min=0).clamp(max=small_height - stored)
    left = (centre_x - stored // 2).clamp(min=0).clamp(max=small_width - stored)
    steps = torch.arange(stored)
    rows = (top[:, None] + steps)[:, None, :, None]
    columns = (left[:, None] + steps)[:, None, None, :]
    colours = torch.arange(3)[None, :, None, None]
    patches = shown[slot_of[:, None, None, None], colours, rows, columns]  # distinct x 3 x stored x stored
    return (patches * 255).round().to(torch.uint8)[back]


def merge_exemplars(merged, other, offset: int, bottom: bool = False):
    """``merged``'s (a :class:`LayerStatistics`) top-k exemplars and ``other``'s together, best
    first (a tie keeps ``merged``'s), ``other``'s image indices moved up by ``offset``; with
    ``bottom``, the bottom-k exemplars (the smallest values, lowest first)."""
    prefix = "bottom" if bottom else "exemplar"
    mine, theirs = ({key: getattr(stats, f"{prefix}_{key}") for key in ("values", "images", "positions", "crops", "sources")}
                    for stats in (merged, other))
    k = mine["values"].shape[1]
    values = np.concatenate([mine["values"], theirs["values"]], axis=1)
    images = np.concatenate([mine["images"], np.where(theirs["images"] >= 0, theirs["images"] + offset, -1)], axis=1)
    positions = np.concatenate([mine["positions"], theirs["positions"]], axis=1)
    crops = np.concatenate([mine["crops"], theirs["crops"]], axis=1)
    ranked = -values if bottom else values
    sortable = np.where(np.isnan(ranked), -np.inf, ranked)
    order = np.argsort(-sortable, axis=1, kind="stable")[:, :k]
    sources = []
    for channel in range(len(values)):
        names = mine["sources"][channel] + [None] * (k - len(mine["sources"][channel])) + theirs["sources"][channel]
        sources.append([names[i] for i in order[channel] if images[channel, i] >= 0])
    # (channel, slot) pairs pick whole positions and crops: no index array the size of the crops
    rows = np.arange(len(values))[:, None]
    return replace(merged, **{
        f"{prefix}_values": values[rows, order],
        f"{prefix}_images": images[rows, order],
        f"{prefix}_positions": positions[rows, order],
        f"{prefix}_crops": crops[rows, order],
        f"{prefix}_sources": sources,
    })
