"""The pictures of a unit's page, made straight from arrays with Pillow (no figure to draw, so
hundreds of units cost seconds): render thumbnails, dataset exemplars with the receptive field of
each, the unit's kernel, its activation map on an image, and its activation histogram as inline
SVG (text in the page, so it stays readable at any zoom).
"""
from __future__ import annotations

import html
import io
import math

import numpy as np
import torch
from PIL import Image

from cnnviz.core.output import png_bytes, uint8_pixels
from cnnviz.plots.style import DIVERGING, SEQUENTIAL

CROP = 64  # exemplar crops are shown this many pixels wide
GAP = 2  # between the crops of a strip
THUMBNAIL = 128  # render thumbnails are at most this wide
MAP_TILE = 96  # a concept's maps over images are shown this many pixels high


def jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """An ``H x W x 3`` uint8 array as JPEG bytes (photographs and renders: a tenth of a PNG)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def thumbnail(pixels: torch.Tensor) -> tuple[bytes, str]:
    """A render as a small picture for grids of units, and its file type: its own size up to
    128 px, shrunk beyond; JPEG, or PNG for a tiny one (a filter's few pixels, exact)."""
    image = Image.fromarray(uint8_pixels(pixels))
    if max(image.size) <= 24:
        return png_bytes(np.asarray(image)), "png"
    if max(image.size) > THUMBNAIL:
        image.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS)
    return jpeg(np.asarray(image)), "jpg"


def crop_around(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int]:
    """``(top, left, side)`` of a square crop of an image of ``size`` around a receptive field
    ``box`` (top, left, bottom, right, inclusive, clipped to the image): half as wide again as the
    field, at least 24 px, at most the image's shorter side, moved inside the image."""
    top, left, bottom, right = box
    height, width = size
    field = max(bottom - top + 1, right - left + 1)
    side = int(min(max(round(1.5 * field), 24), height, width))
    centre_y, centre_x = (top + bottom + 1) / 2, (left + right + 1) / 2
    crop_top = int(min(max(round(centre_y - side / 2), 0), height - side))
    crop_left = int(min(max(round(centre_x - side / 2), 0), width - side))
    return crop_top, crop_left, side


def exemplar_strip(images: list[torch.Tensor], boxes: list[tuple[int, int, int, int]]) -> tuple[bytes, list[dict]]:
    """The crops of several images (``3 x H x W`` in [0, 1], as the model saw them) around their
    receptive-field boxes, side by side, as JPEG bytes; with, per crop, where its box lies in the
    strip (percentages of the strip's width and height: ``left``, ``top``, ``width``, ``height``),
    so that the page draws the box over the picture, sharp at any zoom."""
    count = len(images)
    strip = np.full((CROP, count * CROP + (count - 1) * GAP, 3), 255, dtype=np.uint8)
    total = strip.shape[1]
    overlays = []
    for index, (image, box) in enumerate(zip(images, boxes)):
        height, width = image.shape[1:]
        top, left, side = crop_around(box, (height, width))
        patch = Image.fromarray(uint8_pixels(image[:, top:top + side, left:left + side]))
        patch = patch.resize((CROP, CROP), Image.Resampling.LANCZOS if side > CROP else Image.Resampling.BICUBIC)
        x = index * (CROP + GAP)
        strip[:, x:x + CROP] = np.asarray(patch)
        scale = CROP / side
        box_top = max(box[0] - top, 0) * scale
        box_left = max(box[1] - left, 0) * scale
        box_bottom = min(box[2] + 1 - top, side) * scale
        box_right = min(box[3] + 1 - left, side) * scale
        overlays.append({"left": round(100 * (x + box_left) / total, 3), "top": round(100 * box_top / CROP, 3),
                         "width": round(100 * (box_right - box_left) / total, 3),
                         "height": round(100 * (box_bottom - box_top) / CROP, 3),
                         "crop": [top, left, side]})
    return jpeg(strip), overlays


def crop_strip(crops: list[np.ndarray]) -> bytes:
    """Crops already cut (``S x S x 3`` uint8 each: a concept's strongest image regions) side by
    side, each ``CROP`` px wide, as JPEG bytes."""
    count = max(len(crops), 1)
    strip = np.full((CROP, count * CROP + (count - 1) * GAP, 3), 255, dtype=np.uint8)
    for index, crop in enumerate(crops):
        patch = Image.fromarray(crop)
        if patch.size != (CROP, CROP):
            shrink = patch.width > CROP
            patch = patch.resize((CROP, CROP), Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC)
        strip[:, index * (CROP + GAP):index * (CROP + GAP) + CROP] = np.asarray(patch)
    return jpeg(strip)


def overlay_strip(images: torch.Tensor, maps: torch.Tensor, top: float, height: int = MAP_TILE) -> bytes:
    """Images (``M x 3 x H x W`` in [0, 1]) each darkened where a map (``M x h x w``, upsampled to
    the image) is weak: brightness ``0.15 + 0.85 * value / top`` (full where the map reaches
    ``top``), side by side at ``height`` px, as JPEG bytes."""
    tiles = []
    for image, values in zip(images, maps):
        strength = torch.nn.functional.interpolate(values[None, None].float(), size=tuple(image.shape[1:]),
                                                   mode="bilinear", align_corners=False)[0, 0]
        strength = (strength / top).clamp(0, 1) if top > 0 else torch.zeros_like(strength)
        tile = Image.fromarray(uint8_pixels((image.float() * (0.15 + 0.85 * strength)).clamp(0, 1)))
        width = max(1, round(tile.width * height / tile.height))
        tiles.append(np.asarray(tile.resize((width, height), Image.Resampling.LANCZOS if tile.height > height
                                            else Image.Resampling.BICUBIC)))
    total = sum(tile.shape[1] for tile in tiles) + GAP * max(len(tiles) - 1, 0)
    strip = np.full((height, max(total, 1), 3), 255, dtype=np.uint8)
    x = 0
    for tile in tiles:
        strip[:, x:x + tile.shape[1]] = tile
        x += tile.shape[1] + GAP
    return jpeg(strip)


def colours(values: np.ndarray, low: float, high: float, signed: bool) -> np.ndarray:
    """Values as ``... x 3`` uint8 colours: a diverging map centred on zero over ``[-high, high]``
    for signed values, else a sequential one over ``[low, high]``; NaN is light grey."""
    import matplotlib

    if signed:
        name, normalised = DIVERGING, 0.5 + values / (2 * max(high, 1e-12))
    else:
        name, normalised = SEQUENTIAL, (values - low) / max(high - low, 1e-12)
    rgba = matplotlib.colormaps[name](np.clip(np.nan_to_num(normalised, nan=0.5), 0, 1))
    result = (rgba[..., :3] * 255).round().astype(np.uint8)
    result[np.isnan(values)] = 240
    return result


def map_tile(values: np.ndarray, limit: float, signed: bool) -> bytes:
    """One activation map (``H x W``) at its own size as PNG, on the scale ``limit`` (the largest
    absolute value of the layer on that image, for every channel alike)."""
    return png_bytes(colours(values.astype(np.float64), 0.0, limit, signed))


def kernel_image(weight: torch.Tensor, colour: bool) -> tuple[bytes, float]:
    """A unit's kernel (``inputs x kH x kW``) as PNG and its scale (its largest absolute weight):
    in colour for a kernel over RGB input (``w / 2s + 0.5``: mid-grey is zero), else one map per
    input channel on a diverging scale, in rows. Each weight becomes a square of pixels."""
    weight = weight.detach().float().cpu()
    scale = float(weight.abs().max()) or 1e-12
    if colour:
        pixels = uint8_pixels(weight / (2 * scale) + 0.5)
    else:
        inputs, height, width = weight.shape
        columns = math.ceil(math.sqrt(inputs))
        rows = math.ceil(inputs / columns)
        tiled = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), np.nan)
        for index in range(inputs):
            r, c = divmod(index, columns)
            tiled[r * (height + 1):r * (height + 1) + height, c * (width + 1):c * (width + 1) + width] = weight[index].numpy()
        pixels = colours(tiled, 0.0, scale, signed=True)
    factor = max(1, 160 // max(pixels.shape[:2]))
    return png_bytes(np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)), scale


def histogram_svg(counts: list[int], low: float, high: float, marks: list[tuple[str, float, str]],
                  width: int = 520, height: int = 170) -> str:
    """An activation histogram as inline SVG: bars over ``[low, high]`` (raw activation units) on a
    logarithmic count axis, labelled x ticks, zero marked, and ``marks`` (``(label, value,
    colour)``) as labelled vertical lines."""
    left, right, top, bottom = 44, 12, 22, 34
    plot_width, plot_height = width - left - right, height - top - bottom
    bins = len(counts)
    span = (high - low) or 1.0
    peak = math.log1p(max(counts) if counts else 1)

    def x_of(value: float) -> float:
        return left + (value - low) / span * plot_width

    parts = [f'<svg class="histogram" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             'role="img" aria-label="activation histogram">']
    bar = plot_width / max(bins, 1)
    for index, count in enumerate(counts):
        if count:
            tall = plot_height * math.log1p(count) / peak
            parts.append(f'<rect x="{left + index * bar:.2f}" y="{top + plot_height - tall:.2f}" width="{max(bar, 0.6):.2f}" '
                         f'height="{tall:.2f}" fill="#4c72b0"><title>{count:,}</title></rect>')
    parts.append(f'<line x1="{left}" y1="{top + plot_height}" x2="{left + plot_width}" y2="{top + plot_height}" stroke="#667085"/>')
    for tick in _ticks(low, high):
        x = x_of(tick)
        parts.append(f'<line x1="{x:.2f}" y1="{top + plot_height}" x2="{x:.2f}" y2="{top + plot_height + 4}" stroke="#667085"/>'
                     f'<text x="{x:.2f}" y="{top + plot_height + 16}" text-anchor="middle">{tick:g}</text>')
    if low < 0 < high:
        parts.append(f'<line x1="{x_of(0):.2f}" y1="{top}" x2="{x_of(0):.2f}" y2="{top + plot_height}" stroke="#98a2b3" '
                     'stroke-dasharray="2 2"/>')
    for number, (label, value, colour) in enumerate(marks):
        if not (math.isfinite(value) and low <= value <= high):
            continue
        x = x_of(value)
        anchor = "end" if x > left + plot_width * 0.7 else "start"
        shift = -3 if anchor == "end" else 3
        parts.append(f'<line x1="{x:.2f}" y1="{top - 4 + 10 * number}" x2="{x:.2f}" y2="{top + plot_height}" stroke="{colour}" '
                     f'stroke-width="1.5"/><text x="{x + shift:.2f}" y="{top + 6 + 10 * number}" text-anchor="{anchor}" '
                     f'fill="{colour}">{html.escape(label)}</text>')
    parts.append(f'<text x="{left + plot_width / 2:.1f}" y="{height - 4}" text-anchor="middle">activation (raw)</text>'
                 f'<text x="12" y="{top + plot_height / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + plot_height / 2:.1f})">count (log)</text></svg>')
    return "".join(parts)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values inside ``[low, high]``."""
    span = high - low
    if not span > 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step) + 1)]
