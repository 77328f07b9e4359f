"""What a gallery is, decided once before any job runs: :class:`GalleryPlan` (the model, its
layers with a page, the images and those that open, the layer table), made by :func:`plan_gallery`.

Every rank of a process group (torchrun) makes the same plan, so a mistake that every rank makes
is said once; rank 0 alone checks the folder and keeps there the images given in memory. The
jobs (:mod:`cnnviz.site.jobs`, :mod:`cnnviz.site.classes`) are functions of the plan and the
settings; what is chosen once the statistics are known is a :class:`cnnviz.site.choice.UnitChoice`.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from cnnviz.analyses.kernels import as_convolution, convolutions
from cnnviz.analyses.summary import layer_table
from cnnviz.core import output as files
from cnnviz.core.executor import Executor
from cnnviz.core.model import LoadedModel, model_key, unwrap
from cnnviz.core.references import layer_ref
from cnnviz.errors import CnnvizError, CnnvizWarning
from cnnviz.inputs.images import display_image, image_sources, open_image, prepare
from cnnviz.site.content import attribution_pages, channels_in, concepts_page, layer_page, row_of, unit_page
from cnnviz.site.records import adopt_older_gallery, check_folders_writable, images_key
from cnnviz.site.settings import CONCEPT_LAYERS, MANY_CONVOLUTIONS, SUBSET, TOP_PREDICTIONS, GallerySettings

INPUTS = "data/inputs"  # where images given as tensors or PIL images are kept, as PNG files
PREPARED_KEPT = 256  # images kept as model inputs (see GalleryPlan.model_input)


@dataclass(frozen=True, eq=False)
class GalleryPlan:
    """What a gallery shows, decided before any job runs (the same on every rank).

    Attributes:
        loaded: the model with its preprocessing; module, class_names: what it unwraps to (the
            ``nn.Module``, and the class names or ``None``).
        folder: the gallery's folder.
        images: the images as the analyses over all of them take them (the spec given, or the
            kept PNG files of images given in memory); sources: every image, one spec each;
            in_memory: the sources that are PNG files of images given in memory.
        readable: the first sources that open, as many as any job needs (at least one).
        layers: the layers with a page, in order; table: the model's layer table (with
            receptive fields where they can be found); convolution_names: every convolution.
        scripted: a TorchScript model (no hook runs inside it: kernels, attributions and classes only).
        class_count: the class scores per image (0: the output is not one score per class).
        model_key, images_key: the identities of the model and of the images, in every job's key.
        concept_layers: the layers with a concepts page (:func:`concept_layers`).
    """

    loaded: LoadedModel
    module: torch.nn.Module
    class_names: Any
    folder: Path
    images: Any
    sources: tuple[str, ...]
    in_memory: frozenset[str]
    readable: tuple[str, ...]
    layers: tuple[str, ...]
    table: Any
    convolution_names: tuple[str, ...]
    scripted: bool
    class_count: int
    model_key: str = ""
    images_key: str = ""  # made once the images given in memory are written (their files' times are in it)
    concept_layers: tuple[str, ...] = ()
    _inputs: dict = field(default_factory=dict, init=False, repr=False)  # a cache: see model_input

    def row_of(self, layer: str):
        """The layer table's row of a layer reference (``None`` when the table has none)."""
        return row_of(self.table, layer)

    def channels_of(self, layer: str) -> int:
        """The channels of the layer's output in the call the reference names (``NAME#2``: the second)."""
        return channels_in(self.row_of(layer), layer_ref(self.loaded, layer).call)

    def class_name(self, index: int) -> str:
        names = self.class_names
        return names[index] if names and index < len(names) else f"class {index}"

    def class_index(self, spec: str) -> int:
        """The class that ``spec`` (an index or a class name) asks for."""
        count = self.class_count
        if spec.isdigit() and int(spec) < count:
            return int(spec)
        if self.class_names and normal_name(spec) in {normal_name(n) for n in self.class_names}:
            return [normal_name(n) for n in self.class_names].index(normal_name(spec))
        raise CnnvizError(f"classes=...: {spec!r} is not a class of this model; give top1, topN (N up to "
                          f"{TOP_PREDICTIONS}), label, a class index below {count} or a class name")

    def model_input(self, spec: str) -> torch.Tensor:
        """An image as a model input (``C x H x W``, normalised); the last few hundred are kept."""
        cache = self._inputs
        if spec not in cache:
            if len(cache) > PREPARED_KEPT:
                cache.clear()
            cache[spec] = prepare(open_image(spec), self.loaded.preprocessing)[0]
        return cache[spec]

    def as_seen(self, spec: str) -> torch.Tensor:
        """An image as the model saw it (``3 x H x W`` in [0, 1])."""
        return display_image(self.model_input(spec), self.loaded.preprocessing)


def plan_gallery(loaded: LoadedModel, images, layers, folder, settings: GallerySettings, work: Executor) -> GalleryPlan:
    """The plan of a gallery, checked (layers, images, classes asked, the folder) before any file
    is written; the images given in memory kept in its folder. Every rank makes the plan
    (``gallery/plan``: the images' bytes do not travel); rank 0 alone prepares the folder
    (``gallery/folder``).

    Raises:
        CnnvizError: a bad layer, image spec or class asked, or a folder that cannot take the gallery.
    """
    made: dict = {}
    work.everywhere("gallery/plan", lambda: made.update(zip(("plan", "in_memory"),
                                                            _checked(loaded, images, layers, folder, settings))))
    plan = made["plan"]
    work.first("gallery/folder", lambda: _prepare_folder(plan, settings, made["in_memory"]))
    return replace(plan, model_key=model_key(loaded), images_key=images_key(list(plan.sources)))


def _checked(loaded: LoadedModel, images, layers, folder,
             settings: GallerySettings) -> tuple[GalleryPlan, dict[str, bytes]]:
    """The plan (without its keys), checked; the images given in memory, to be kept as files."""
    module, class_names = unwrap(loaded)
    try:  # the layer table with each layer's theoretical receptive field, when it can be found
        table = layer_table(loaded, receptive_fields=True)
    except CnnvizError:
        table = layer_table(loaded)
    scripted = isinstance(module, torch.jit.ScriptModule)
    specs, in_memory = _image_specs(images, folder, loaded.preprocessing.channels)
    sources = [source for spec in specs
               for source in ([spec] if spec in in_memory else [s.spec for s in image_sources(spec)])]
    if in_memory:  # every job reads the same images: the PNG files (statistics too)
        images = list(sources)
    chosen = _layers(loaded, table, scripted, layers)
    # no image can be read: fail now, before any file is written (those given in memory are cnnviz's own)
    readable = _readable(sources, set(in_memory), max(settings.activation_images, settings.attribution_images, 1))
    if settings.dream_image is not None:
        open_image(settings.dream_image)
    plan = GalleryPlan(loaded, module, class_names, Path(folder).expanduser(), images, tuple(sources),
                       frozenset(in_memory), tuple(readable), tuple(chosen), table, tuple(convolutions(loaded)),
                       scripted, _class_count(module, class_names, table))
    _check_classes(plan, settings)  # a class name that is not the model's: said now, not on the attributions page
    return replace(plan, concept_layers=tuple(concept_layers(plan, settings.concept_layers))), in_memory


def _prepare_folder(plan: GalleryPlan, settings: GallerySettings, in_memory: dict[str, bytes]) -> None:
    """Check the folder can take the gallery and keep the images given in memory there."""
    folder = files.output_folder(plan.folder)
    check_folders_writable(folder)
    adopt_older_gallery(folder)
    # a user's own index.html (or manifest, or page) in the folder is refused before any work
    files.check_writable([folder / name for name in
                          ("index.html", "manifest.json", "style.css", "classes.html",
                           *(concepts_page(layer) for layer in plan.concept_layers),
                           *attribution_pages(min(settings.attribution_images, len(plan.sources))),
                           *(layer_page(layer) for layer in plan.layers),
                           *(unit_page(layer, c) for layer in plan.layers for c in range(plan.channels_of(layer))))]
                         + list(in_memory))
    for path, data in in_memory.items():  # images given as tensors or PIL images: kept with the gallery
        files.write_bytes(path, data)
    wanted = {os.path.realpath(spec) for spec in plan.sources}
    for stale in sorted((folder / INPUTS).glob("*.png")):  # those of an earlier run's images
        if os.path.realpath(stale) not in wanted:
            files.remove_written(stale)


def _image_specs(images, folder, channels: int) -> tuple[list, dict[str, bytes]]:
    """The image specs of ``images`` with every tensor (``C x H x W``, or ``N x C x H x W``) and
    PIL image replaced by the path of a PNG file in the gallery's ``data/inputs`` (named by its
    content, so a re-run reuses its results); with those files' contents, to be written. A
    tensor is stored as 8-bit PNG (1 or 3 channels; what the pages show and the jobs read)."""
    import io

    from PIL import Image

    from cnnviz.inputs.images import to_tensor

    if isinstance(images, (str, os.PathLike)):
        return [images], {}
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if isinstance(images, torch.Tensor):
        items = list(images) if images.dim() == 4 else [images]
    specs, pending = [], {}
    for item in items:
        if isinstance(item, torch.Tensor):
            pixels = to_tensor(item.detach().cpu(), item.shape[0] if item.dim() == 3 else channels)
            if pixels.shape[0] not in (1, 3):
                raise CnnvizError(f"a gallery keeps its images as PNG files: give 1- or 3-channel tensors, "
                                  f"not {pixels.shape[0]} channels (or save them as files yourself)")
            data = files.png_bytes(pixels)
        elif isinstance(item, Image.Image):
            image = item if item.mode in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA") else item.convert("RGB")
            buffer = io.BytesIO()
            image.save(buffer, format="png")
            data = buffer.getvalue()
        else:
            specs.append(item)
            continue
        path = str(Path(folder).expanduser() / INPUTS / f"image{len(specs)}-{hashlib.sha256(data).hexdigest()[:10]}.png")
        specs.append(path)
        pending[path] = data
    return specs, pending


def default_layers(model) -> list[str]:
    """The layers a gallery shows by default: every convolution, or 8 of them spread evenly over
    the depth (the first and the last included) when there are more than 12."""
    found = convolutions(model)
    if not found:
        raise CnnvizError("this model has no convolution layers; name the layers to show with layer=...")
    if len(found) <= MANY_CONVOLUTIONS:
        return found
    picks = sorted({round(i * (len(found) - 1) / (SUBSET - 1)) for i in range(SUBSET)})
    return [found[i] for i in picks]


def _layers(loaded: LoadedModel, table, scripted: bool, layers) -> list[str]:
    """The layers with a page: those asked for (whole layers that run), or the default."""
    if scripted:  # no hook runs inside TorchScript: its convolutions show their kernels only
        found = convolutions(loaded)
        chosen = default_layers(loaded) if not layers else [layer_ref(loaded, text).layer_text for text in layers]
        wrong = [name for name in chosen if name not in found]
        if wrong:
            raise CnnvizError(f"{wrong[0]} is not a convolution; a TorchScript model's layers cannot be hooked, "
                              "so its gallery shows the kernels of its convolutions only")
        warnings.warn("a TorchScript model's layers cannot be hooked: the gallery shows its kernels, "
                      "attributions and classes (load the original nn.Module for the rest)", CnnvizWarning, stacklevel=4)
        return list(dict.fromkeys(chosen))
    ran = {row.name for row in table if row.output_shape and row.output_shape[0] is not None}
    if not layers:  # the default: convolutions that run in a forward pass
        chosen = [layer for layer in default_layers(loaded) if layer in ran]  # module names, as the table's
        if not chosen:
            raise CnnvizError("no convolution of this model runs in a forward pass; name the layers with layer=...")
        return chosen
    chosen = []
    for text in layers:
        ref = layer_ref(loaded, text)
        if ref.channel is not None or ref.position is not None:
            raise CnnvizError(f"{text!r} names a unit; a gallery page shows whole layers: give {ref.layer_text}")
        if ref.is_output:
            raise CnnvizError("the model's output has the class page; give layers inside the model")
        if ref.layer not in ran:
            raise CnnvizError(f"{text!r} does not run in a forward pass of this model; pick a layer that does "
                              "(cnnviz layers lists them with their output shapes)")
        if ref.layer_text not in chosen:
            chosen.append(ref.layer_text)
    return chosen


def concept_layers(plan: GalleryPlan, asked: tuple[str, ...] | None) -> list[str]:
    """The layers with a concepts page: those ``asked`` (each among the gallery's layers, with
    spatial maps), or by default (``None``) the last two of the gallery's layers whose output has
    spatial maps (``C x H x W``, more than one position); none for a TorchScript model (its layers
    cannot be hooked).

    Raises:
        CnnvizError: a layer asked that the gallery does not show, or without spatial maps.
    """
    if plan.scripted:
        return []
    spatial = [layer for layer in plan.layers if _has_maps(plan, layer)]
    if asked is None:
        return spatial[-CONCEPT_LAYERS:]
    chosen = []
    for text in asked:
        name = layer_ref(plan.loaded, text.strip()).layer_text
        if name not in plan.layers:
            raise CnnvizError(f"concept_layers: {text!r} is not among the gallery's layers ({', '.join(plan.layers)}); "
                              "add it to the layers shown or choose among them")
        if name not in spatial:
            raise CnnvizError(f"concept_layers: {name} has no spatial maps (concepts need an output of C x H x W with "
                              f"more than one position){'; these have: ' + ', '.join(spatial) if spatial else ''}")
        if name not in chosen:
            chosen.append(name)
    return chosen


def _has_maps(plan: GalleryPlan, layer: str) -> bool:
    """Whether the layer's output (in the call its reference names) is ``C x H x W`` with more than one position."""
    row = plan.row_of(layer)
    shapes = row.output_shape if row is not None and row.output_shape else []
    call = layer_ref(plan.loaded, layer).call
    shape = shapes[call - 1] if call - 1 < len(shapes) else None
    return bool(shape) and len(shape) == 3 and shape[1] is not None and shape[2] is not None and shape[1] * shape[2] > 1


def _readable(sources: list[str], in_memory: set[str], wanted: int) -> list[str]:
    """The first ``wanted`` image sources that open (those given in memory do: cnnviz wrote them)."""
    readable = []
    for spec in sources:
        try:
            if spec not in in_memory:
                open_image(spec)
        except CnnvizError:
            continue
        readable.append(spec)
        if len(readable) >= wanted:
            break
    if not readable:
        raise CnnvizError("none of the images could be read; give image files, a folder of images or samples")
    return readable


def _class_count(module, class_names, table) -> int:
    """How many class scores the model outputs per image: a vector's length, or the number of
    class maps of a dense ``K x H x W`` output made by a convolution (a detector's or a
    segmenter's head; its attributions explain the strongest map at its arg-max, as ``cnnviz
    saliency`` does) or named by class names; 0 for any other output (a feature map)."""
    rows = list(table)
    logits = rows[-1] if rows and rows[-1].name == "logits" else None
    shape = logits.output_shape[0] if logits is not None and logits.output_shape else ()
    if shape is None or len(shape) not in (1, 3):
        return 0
    if len(shape) == 3 and not (class_names and len(class_names) == shape[0]) \
            and not _made_by_convolution(module, rows[:-1]):
        return 0
    return int(shape[0])


def _made_by_convolution(module, rows) -> bool:
    """Whether the last leaf module that runs is a convolution (a head's logits, not an
    activation's feature map)."""
    for row in reversed(rows):
        try:
            leaf = module.get_submodule(row.name)  # a row is a module's (its calls in one row)
        except (AttributeError, ValueError):
            continue
        if not list(leaf.children()):
            return as_convolution(leaf) is not None
    return False


def _check_classes(plan: GalleryPlan, settings: GallerySettings) -> None:
    """Refuse a class asked for attributions that the model does not have."""
    for spec in settings.classes:
        spec = spec.strip()
        top = re.fullmatch(r"top(\d+)", spec)
        if top and not 1 <= int(top.group(1)) <= TOP_PREDICTIONS:
            raise CnnvizError(f"classes=...: {spec} asks for the best {top.group(1)} classes; "
                              f"give top1 to top{TOP_PREDICTIONS}")
        if not top and spec != "label" and plan.class_count:
            plan.class_index(spec)


def normal_name(name: str) -> str:
    """A class or file name as class names are compared (lower case, runs of spaces, ``_`` and ``-`` as one ``_``)."""
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())
