"""One way in for images: whatever a function is given, as batches of model inputs with names.

Every cnnviz function that takes images (``statistics``, ``activations``, ``saliency``, ``predict``,
``equivariance``, ``effective_receptive_field``, ...) passes them through :func:`image_batches`, so
they all accept the same things:

=====================================  ===========================================================
a path or spec                          a file, a folder (searched recursively), ``samples`` (every
                                        sample photograph) or ``sample:NAME``
a PIL image                             prepared with the model's preprocessing
a tensor ``C x H x W``                  one image in [0, 1] (or uint8), prepared like a PIL image
a tensor ``N x C x H x W`` (float)      model inputs, already prepared: used as they are
``pixels(tensor)``                      pictures (``C x H x W`` or ``N x C x H x W``, [0, 1] or
                                        uint8), each prepared like a PIL image
``model_inputs(tensor)``                model inputs (``C x H x W`` or ``N x C x H x W``), as they are
a list or tuple of any of these         in order
a ``torch.utils.data.Dataset``          its items: an image, a tensor of model inputs, or a pair
                                        ``(inputs, label, ...)`` / a dict with an ``image``-like key
a ``DataLoader`` or any iterable        its batches, read the same way as a Dataset's items
=====================================  ===========================================================

What a Dataset or DataLoader yields as a tensor is taken as model inputs (its own transform made
them), whether ``C x H x W`` or ``N x C x H x W``. A bare tensor's meaning follows its shape, as
above; :func:`pixels` and :func:`model_inputs` say it whatever the shape, and a bare 4-D tensor
that lies in [0, 1] for a model that normalises its inputs (pictures, most likely, not model
inputs) is used as it is with a :class:`cnnviz.CnnvizWarning` naming both. Files found by listing a folder that cannot be
read are skipped and counted (:attr:`ImageBatches.skipped`); a file named on its own that cannot
be read is an error.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from PIL import Image

from cnnviz.core.model import Preprocessing
from cnnviz.errors import CnnvizError, CnnvizWarning
from cnnviz.inputs.images import SAMPLE_PREFIX, ImageSource, image_sources, open_image, prepare

INPUT_KEYS = ("image", "images", "pixel_values", "input", "inputs", "x")
LABEL_KEYS = ("label", "labels", "target", "targets", "y")


@dataclass(frozen=True)
class Pixels:
    """Pictures as a tensor, each prepared as a PIL image is (converted, sized, normalised with the
    model's mean and std): made by :func:`pixels`."""

    tensor: torch.Tensor

    def __len__(self) -> int:
        return len(self.tensor) if self.tensor.dim() == 4 else 1


@dataclass(frozen=True)
class ModelInputs:
    """Model inputs as a tensor, already prepared: used as they are. Made by :func:`model_inputs`."""

    tensor: torch.Tensor

    def __len__(self) -> int:
        return len(self.tensor) if self.tensor.dim() == 4 else 1


def pixels(tensor: torch.Tensor) -> Pixels:
    """Say that a tensor holds pictures (``C x H x W`` or ``N x C x H x W``; floats in [0, 1] or
    uint8 in [0, 255]): every function that takes images prepares each one with the model's
    preprocessing, as it does a PIL image or a file.

    >>> import torch, cnnviz
    >>> photos = cnnviz.load_model("builtin:photos")
    >>> pictures = torch.ones(2, 3, 500, 400)          # two white pictures, each resized and cropped
    >>> len(cnnviz.predict(photos, cnnviz.pixels(pictures), top=1).predictions)
    2

    Raises:
        CnnvizError: not a 3-D or 4-D tensor.
    """
    if not isinstance(tensor, torch.Tensor) or tensor.dim() not in (3, 4):
        raise CnnvizError(f"pixels() takes a tensor C x H x W or N x C x H x W, got {_described(tensor)}")
    return Pixels(tensor)


def model_inputs(tensor: torch.Tensor) -> ModelInputs:
    """Say that a tensor holds model inputs, already prepared (``C x H x W`` or ``N x C x H x W``,
    float, normalised as the model expects): used as they are, whatever their values.

    Raises:
        CnnvizError: not a 3-D or 4-D float tensor.
    """
    if not isinstance(tensor, torch.Tensor) or tensor.dim() not in (3, 4) or not tensor.is_floating_point():
        raise CnnvizError(f"model_inputs() takes a float tensor C x H x W or N x C x H x W, got {_described(tensor)}")
    return ModelInputs(tensor)


def _described(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} {value.dtype}"
    return f"a {type(value).__name__}"


def _looks_like_pixels(batch: torch.Tensor, preprocessing: Preprocessing) -> bool:
    """Whether a bare 4-D float tensor given as model inputs lies in [0, 1] for a model whose
    normalisation takes pictures in [0, 1] below zero (real normalised photographs always go below:
    every pixel darker than the mean does)."""
    if not any(mean > 0 for mean in preprocessing.mean) or batch.numel() == 0:
        return False
    low, high = torch.aminmax(batch.detach())
    return bool(low >= 0) and bool(high <= 1)


@dataclass
class Batch:
    """Model inputs ``N x C x H x W`` and, for each image, where it came from.

    Attributes:
        inputs: normalised model inputs, ``N x C x H x W``, float.
        sources: one name per image: its file or ``sample:NAME``, or ``None`` for an image that
            has no name (a tensor, a PIL image not read from a file); :func:`names` calls those
            ``image K`` by their place in the stream.
        labels: one class index per image when the images came with labels (a Dataset of pairs),
            else ``None``.
    """

    inputs: torch.Tensor
    sources: list[str | None]
    labels: list[int] | None = None


class ImageBatches:
    """An iterable of :class:`Batch` over any accepted images (see the module docstring).

    Iterate it once; afterwards :attr:`count` is the number of images yielded and :attr:`skipped`
    the files of folders that could not be read.
    """

    def __init__(self, images, preprocessing: Preprocessing, batch_size: int = 32, limit: int | None = None,
                 workers: int = 0):
        if batch_size < 1:
            raise CnnvizError(f"batch_size must be at least 1, got {batch_size}")
        if limit is not None and limit < 1:
            raise CnnvizError(f"the number of images must be at least 1, got {limit}")
        if workers < 0:
            raise CnnvizError(f"workers must be 0 (decode in this process) or more, got {workers}")
        self.images, self.preprocessing, self.batch_size, self.limit = images, preprocessing, batch_size, limit
        self.workers = workers
        self.skipped: list[str] = []
        self.count = 0

    def __iter__(self) -> Iterator[Batch]:
        """Single images are gathered into batches of ``batch_size``; batches of model inputs (a
        DataLoader's, a 4-D tensor) keep their boundaries and are only split when larger, so the
        same batches give the same float32 sums whatever else is streamed with them."""
        pending: list[tuple[torch.Tensor, str, int | None]] = []
        index = 0  # images so far
        for item, from_dataset in self._items(self.images):
            for inputs, source, label, whole_batch in self._read(item, from_dataset):
                if self.limit is not None:
                    inputs = inputs[: self.limit - index]
                names = [source] * len(inputs)
                labels = label if isinstance(label, list) else [label] * len(inputs)
                index += len(inputs)
                if not whole_batch:
                    pending += zip(inputs.split(1), names, labels)
                    if len(pending) >= self.batch_size:
                        yield self._batch(pending)
                        pending = []
                    continue
                if pending:
                    yield self._batch(pending)
                    pending = []
                for start in range(0, len(inputs), self.batch_size):  # views of the batch, no copy
                    end = start + self.batch_size
                    part = labels[start:end]
                    self.count += len(part)
                    yield Batch(inputs[start:end], names[start:end], part if all(x is not None for x in part) else None)
                if self.limit is not None and index >= self.limit:
                    break
            if self.limit is not None and index >= self.limit:
                break
        if pending:
            yield self._batch(pending)

    def _batch(self, pending) -> Batch:
        labels = [label for _, _, label in pending]
        batch = Batch(
            torch.cat([inputs for inputs, _, _ in pending]),
            [source for _, source, _ in pending],
            labels if all(label is not None for label in labels) else None,
        )
        self.count += len(pending)
        return batch

    # ----------------------------------------------------------------------------------------

    def _items(self, images) -> Iterator[tuple[object, bool]]:
        """The single things to read, and whether they came from a Dataset or DataLoader."""
        if self.workers and _all_files(images):
            # files decoded by DataLoader workers, in order; what they read comes back as model inputs
            decoded = torch.utils.data.DataLoader(_Decoded(_single_images(images), self.preprocessing),
                                                  batch_size=None, num_workers=self.workers, collate_fn=_as_is)
            for inputs, source, error in decoded:
                yield _DecodedImage(inputs, source, error), False
            return
        if isinstance(images, (str, os.PathLike, ImageSource)):
            sources = [images] if isinstance(images, ImageSource) else image_sources(images)
            for source in sources:
                yield source, False
            return
        if isinstance(images, (Image.Image, torch.Tensor, ModelInputs)):
            yield images, False
            return
        if isinstance(images, Pixels):
            for picture in (images.tensor if images.tensor.dim() == 4 else [images.tensor]):
                yield picture, False  # one C x H x W tensor: prepared as a picture
            return
        if isinstance(images, dict) or _is_pair(images):
            yield images, True  # one sample or batch as a Dataset or DataLoader gives it
            return
        if isinstance(images, (list, tuple)):
            for item in images:
                yield from self._items(item)
            return
        if _is_dataset(images):
            for position in range(len(images)):
                yield images[position], True
            return
        if isinstance(images, Iterable) and not isinstance(images, (bytes, dict)):
            for item in images:
                yield item, True
            return
        raise CnnvizError(
            f"cannot use a {type(images).__name__} as images; give a path, folder, sample:NAME, PIL image, "
            "tensor, list, Dataset or DataLoader"
        )

    def _read(self, item, from_dataset: bool):
        """Yield ``(inputs N x C x H x W, source or None, label(s) or None, whether a batch to keep whole)``."""
        if from_dataset:
            item, label = _split_sample(item)
            if isinstance(item, torch.Tensor):
                yield _model_inputs(item, allow_single=True), None, label, item.dim() == 4
                return
            if isinstance(item, Image.Image):
                yield prepare(item, self.preprocessing), _pil_name(item), label, False
                return
            for inputs, source, _, whole in self._read(item, False):
                yield inputs, source, label, whole
            return
        if isinstance(item, _DecodedImage):
            if item.error is not None:
                if not item.source.from_folder:
                    raise CnnvizError(item.error)
                self.skipped.append(item.source.spec)
                return
            yield item.inputs, item.source.spec, None, False
        elif isinstance(item, ImageSource):
            try:
                image = open_image(item.spec)
            except CnnvizError:
                if not item.from_folder:
                    raise
                self.skipped.append(item.spec)
                return
            yield prepare(image, self.preprocessing), item.spec, None, False
        elif isinstance(item, Image.Image):
            yield prepare(item, self.preprocessing), _pil_name(item), None, False
        elif isinstance(item, ModelInputs):
            yield _model_inputs(item.tensor, allow_single=True), None, None, item.tensor.dim() == 4
        elif isinstance(item, torch.Tensor):
            if item.dim() == 4:
                batch = _model_inputs(item, allow_single=False)
                if _looks_like_pixels(batch, self.preprocessing):
                    warnings.warn(
                        f"a tensor N x C x H x W is taken as model inputs (normalised), but this one "
                        f"{tuple(batch.shape)} lies in [0, 1] like pictures: give cnnviz.pixels(images) to have "
                        "each prepared with the model's preprocessing, or cnnviz.model_inputs(images) to use them "
                        "as they are", CnnvizWarning, stacklevel=2)
                yield batch, None, None, True
            else:
                yield prepare(item, self.preprocessing), None, None, False
        elif isinstance(item, (str, os.PathLike)):
            for source in image_sources(item):
                yield from self._read(source, False)
        else:
            raise CnnvizError(f"cannot use a {type(item).__name__} as an image")


def image_batches(images, preprocessing: Preprocessing, batch_size: int = 32, limit: int | None = None,
                  workers: int = 0) -> ImageBatches:
    """Batches of model inputs from any accepted images (see the module docstring).

    Args:
        images: a path, folder, ``samples``, ``sample:NAME``, PIL image, tensor, list, Dataset,
            DataLoader or iterable.
        preprocessing: the model's (:func:`cnnviz.core.model.preprocessing_of`).
        batch_size: images per batch (a DataLoader's bigger batches are split).
        limit: stop after this many images.
        workers: DataLoader worker processes that decode and prepare image files (``images`` a
            spec or a list of them) while the model runs; 0 reads them in this process. The same
            batches either way.
    """
    return ImageBatches(images, preprocessing, batch_size, limit, workers)


@dataclass
class _DecodedImage:
    inputs: torch.Tensor | None
    source: ImageSource
    error: str | None


class _Decoded(torch.utils.data.Dataset):
    """Image files opened and prepared (in a DataLoader worker): ``(inputs, source, error)``; an
    error comes back as its message, to be raised or counted where the files were asked for."""

    def __init__(self, sources: list, preprocessing: Preprocessing):
        self.sources, self.preprocessing = [_as_source(s) for s in sources], preprocessing

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, index):
        source = self.sources[index]
        try:
            return prepare(open_image(source.spec), self.preprocessing), source, None
        except CnnvizError as error:
            return None, source, str(error)


def _as_source(item) -> ImageSource:
    return item if isinstance(item, ImageSource) else ImageSource(str(item))


def _as_is(item):
    return item


def _all_files(images) -> bool:
    """Whether ``images`` is a spec or a list of specs (files to decode), nothing else."""
    if isinstance(images, (str, os.PathLike, ImageSource)):
        return True
    return isinstance(images, (list, tuple)) and bool(images) and all(_all_files(item) for item in images)


def shard_images(images, positions: Callable[[int], range]):
    """The share of ``images`` at ``positions(count)`` (any accepted form but a DataLoader or
    other bare iterable, which cannot be split without reading it): the expanded file list of a
    spec or list, the rows of a 4-D tensor, the indices of a Dataset. Made for
    :meth:`cnnviz.core.executor.Executor.share`, whose shares in order are the images in their order."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        mine = positions(len(images))
        return images[mine.start:mine.stop]
    if isinstance(images, (Pixels, ModelInputs)):
        rows = images.tensor if images.tensor.dim() == 4 else images.tensor.unsqueeze(0)
        mine = positions(len(rows))
        return type(images)(rows[mine.start:mine.stop])
    if _is_dataset(images) and not isinstance(images, (list, tuple)):
        return torch.utils.data.Subset(images, list(positions(len(images))))
    if isinstance(images, (str, os.PathLike, ImageSource, Image.Image, torch.Tensor)) or (
            isinstance(images, (list, tuple)) and not isinstance(images, dict) and not _is_pair(images)):
        items = _single_images(images)
        return [items[k] for k in positions(len(items))]
    raise CnnvizError(
        f"a {type(images).__name__} cannot be split between processes without reading it; give "
        "a folder, a file list, a list of images or the Dataset itself (not its DataLoader)"
    )


def _single_images(images) -> list:
    if isinstance(images, (str, os.PathLike)):
        return list(image_sources(images))
    if isinstance(images, (list, tuple)) and not _is_pair(images):  # an (image, label) pair stays one item
        return [single for item in images for single in _single_images(item)]
    return [images]


def stack_images(images, preprocessing: Preprocessing, limit: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """All the images as one ``N x C x H x W`` tensor of model inputs, and their names.

    Raises:
        CnnvizError: no image given, or none could be read.
    """
    stream = ImageBatches(images, preprocessing, batch_size=64, limit=limit)
    batches = list(stream)
    if not batches:
        raise CnnvizError(no_images_message(stream.skipped))
    return torch.cat([b.inputs for b in batches]), names([s for b in batches for s in b.sources])


def names(sources: list[str | None], first: int = 0) -> list[str]:
    """Sources with the unnamed ones called ``image K`` (``K`` their place, counting from ``first``)."""
    return [source if source is not None else f"image {first + k}" for k, source in enumerate(sources)]


def no_images_message(skipped: list[str]) -> str:
    """The error for a stream that yielded nothing."""
    if skipped and missing_files(skipped):
        return f"no image could be read (skipped {skipped_text(skipped)})"
    if skipped:
        return f"no image could be read ({len(skipped)} file(s) skipped, e.g. {skipped[0]})"
    return "no images given; pass a file, a folder, samples, sample:NAME, a PIL image or a tensor"


SHOWN_MISSING = 5  # the missing files a message names, at most


def missing_files(skipped: list[str]) -> list[str]:
    """The files of ``skipped`` that do not exist (named by a ``.txt`` list), as opposed to those
    that are there but are not images."""
    return [spec for spec in skipped if not str(spec).startswith(SAMPLE_PREFIX) and not os.path.exists(spec)]


def skipped_text(skipped: list[str]) -> str:
    """The files a stream skipped, in words after "skipped": those that do not exist (a ``.txt``
    list naming files that are not there), by name, and those that are not images, the first
    named: ``2 file(s) that do not exist: a.png, b.png``, ``1 file(s) that are not images, e.g.
    notes.txt``, or both: ``3 file(s): 2 that do not exist (a.png, b.png) and 1 that is not an
    image (e.g. notes.txt)``."""
    missing = missing_files(skipped)
    unreadable = [spec for spec in skipped if spec not in missing]
    shown = ", ".join(str(spec) for spec in missing[:SHOWN_MISSING]) + (", ..." if len(missing) > SHOWN_MISSING else "")
    if not missing:
        return f"{len(unreadable)} file(s) that are not images, e.g. {unreadable[0]}"
    if not unreadable:
        return f"{len(missing)} file(s) that do not exist: {shown}"
    verb = "does" if len(missing) == 1 else "do"
    what = "is not an image" if len(unreadable) == 1 else "are not images"
    return (f"{len(skipped)} file(s): {len(missing)} that {verb} not exist ({shown}) and {len(unreadable)} that "
            f"{what} (e.g. {unreadable[0]})")


def _is_pair(images) -> bool:
    """``(inputs, label, ...)``: a tensor or image first, then a label (a number or a tensor of them)."""
    return (isinstance(images, (tuple, list)) and len(images) >= 2 and isinstance(images[0], (torch.Tensor, Image.Image))
            and isinstance(images[1], (int, torch.Tensor)) and not isinstance(images[1], bool)
            and not (isinstance(images[1], torch.Tensor) and images[1].is_floating_point()))


def _is_dataset(images) -> bool:
    return isinstance(images, torch.utils.data.Dataset) and hasattr(images, "__len__") and hasattr(images, "__getitem__")


def _split_sample(item):
    """``(inputs, label)`` of a Dataset item or DataLoader batch: a pair, a dict, or inputs alone."""
    if isinstance(item, dict):
        for key in INPUT_KEYS:
            if key in item:
                return item[key], _labels(next((item[k] for k in LABEL_KEYS if k in item), None))
        raise CnnvizError(
            f"a batch is a dict with keys {sorted(item)}; cnnviz looks for the inputs under one of "
            f"{', '.join(INPUT_KEYS)}"
        )
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], (torch.Tensor, Image.Image)):
        return item[0], _labels(item[1]) if len(item) > 1 else None
    return item, None


def _labels(value):
    if isinstance(value, torch.Tensor) and value.dtype not in (torch.float16, torch.float32, torch.float64):
        return int(value) if value.dim() == 0 else [int(v) for v in value.flatten()]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _model_inputs(tensor: torch.Tensor, allow_single: bool) -> torch.Tensor:
    batch = tensor.unsqueeze(0) if allow_single and tensor.dim() == 3 else tensor
    if batch.dim() != 4 or not batch.is_floating_point():
        raise CnnvizError(
            f"expected model inputs N x C x H x W (float, normalised), got {tuple(tensor.shape)} {tensor.dtype}"
        )
    return batch.detach()


def _pil_name(image: Image.Image) -> str | None:
    return getattr(image, "filename", "") or None
