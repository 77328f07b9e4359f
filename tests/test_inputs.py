"""cnnviz.inputs: sample photographs, image specs, preparing images, the one image coercion (batches)."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import cnnviz
from cnnviz import CnnvizError, samples
from cnnviz.inputs import images


def test_every_sample_is_the_real_photograph():
    assert len(samples.names()) >= 15
    for name in samples.names():
        expected = getattr(data, name)()
        image = samples.image(name)
        assert np.array_equal(np.asarray(image), expected), name
        pixels = samples.tensor(name)
        assert pixels.shape == ((3,) if expected.ndim == 3 else (1,)) + expected.shape[:2]
        assert pixels.dtype == torch.float32 and 0 <= pixels.min() and pixels.max() <= 1
        assert torch.allclose(pixels[0], torch.from_numpy(expected[..., 0] if expected.ndim == 3 else expected) / 255)
    with pytest.raises(CnnvizError, match="no sample image 'chelsee'; did you mean 'chelsea'"):
        samples.image("chelsee")


def test_image_specs(tmp_path):
    assert [s.spec for s in images.image_sources("samples")] == [f"sample:{n}" for n in samples.names()]
    assert [s.spec for s in images.image_sources("sample:coffee")] == ["sample:coffee"]
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    Image.new("RGB", (8, 6), (255, 0, 0)).save(folder / "b.png")
    Image.new("L", (5, 5)).save(folder / "nested" / "a.jpg")
    Image.new("L", (5, 5)).save(folder / ".hidden" / "c.png")
    found = images.image_sources(folder)
    assert [s.spec for s in found] == [str(folder / "b.png"), str(folder / "nested" / "a.jpg")]
    assert all(s.from_folder for s in found)
    assert images.open_image(folder / "b.png").size == (8, 6)
    (tmp_path / "empty").mkdir()
    for spec, message in [
        (tmp_path / "empty", "holds no files"),
        (tmp_path / "missing", "does not exist"),
        ("sample:nope", "no sample image 'nope'"),
    ]:
        with pytest.raises(CnnvizError, match=message):
            images.image_sources(spec)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(CnnvizError, match="cannot read .*notes.txt.* as an image"):
        images.open_image(tmp_path / "notes.txt")
    with pytest.raises(CnnvizError, match="is a folder"):
        images.open_image(folder)
    with pytest.raises(CnnvizError, match="sample:NAME"):
        images.open_image("samples")


def test_prepare_converts_any_mode_and_size_with_the_models_preprocessing():
    rgb = cnnviz.Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=(32, 48), known=True)
    grey = cnnviz.Preprocessing(mean=(0.5,), std=(0.25,), input_size=(16, 16), known=True)
    red = Image.new("RGB", (100, 50), (255, 0, 0))
    x = images.prepare(red, rgb)
    assert x.shape == (1, 3, 32, 48)
    assert torch.allclose(x[0, :, 10, 10], torch.tensor([1.0, -1.0, -1.0]))
    assert images.prepare(red, grey).shape == (1, 1, 16, 16)
    assert torch.allclose(images.prepare(Image.new("L", (20, 30), 255), rgb)[0, :, 5, 5], torch.ones(3))
    rgba = Image.new("RGBA", (20, 20), (0, 0, 255, 128))
    # half-transparent blue over white
    assert torch.allclose(images.prepare(rgba, rgb)[0, :, 3, 3], torch.tensor([0.0, 0.0, 1.0]), atol=0.01)
    assert images.prepare(torch.rand(1, 40, 40), rgb).shape == (1, 3, 32, 48)
    with pytest.raises(CnnvizError, match="the model takes 4 input channels"):
        images.prepare(red, cnnviz.Preprocessing(mean=(0,) * 4, std=(1,) * 4))


def grey_level(image: Image.Image) -> float:
    """The mean of an image prepared for a 1-channel model with mean 0 and std 1: its level in [0, 1]."""
    identity = cnnviz.Preprocessing(mean=(0.0,), std=(1.0,), input_size=(8, 8), known=True)
    return float(images.prepare(image, identity).mean())


def test_high_bit_depth_images_keep_their_absolute_level():
    white = Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16))
    dark = Image.fromarray(np.linspace(0, 1000, 100).reshape(10, 10).astype(np.uint16))
    assert white.mode.startswith("I;16") and grey_level(white) == pytest.approx(1.0)
    assert grey_level(dark) == pytest.approx(500 / 65535, abs=2e-3)
    assert grey_level(Image.fromarray(np.full((10, 10), 0.25, dtype=np.float32))) == pytest.approx(0.25)
    assert grey_level(Image.fromarray(np.full((10, 10), 200, dtype=np.int32))) == pytest.approx(200 / 255)


def test_tensor_images_uint8_and_ranges():
    identity = cnnviz.Preprocessing(mean=(0.0,) * 3, std=(1.0,) * 3, input_size=(4, 4), known=True)
    grey = torch.full((3, 4, 4), 128, dtype=torch.uint8)
    assert float(images.prepare(grey, identity).mean()) == pytest.approx(128 / 255)
    with pytest.raises(CnnvizError, match=r"values from -2.*give images in \[0, 1\]"):
        images.prepare(torch.full((3, 4, 4), -2.0), identity)
    with pytest.raises(CnnvizError, match="float in \\[0, 1\\] or uint8"):
        images.prepare(torch.ones(3, 4, 4, dtype=torch.int64), identity)


def test_modes_transparency_palette_cmyk_and_bilevel():
    rgb = cnnviz.Preprocessing(mean=(0.0,) * 3, std=(1.0,) * 3, input_size=(4, 4), known=True)

    def colour(image):
        return images.prepare(image, rgb)[0, :, 2, 2].tolist()

    assert colour(Image.new("RGBA", (8, 8), (0, 0, 0, 0))) == pytest.approx([1, 1, 1])  # transparent: white
    assert colour(Image.new("LA", (8, 8), (0, 255))) == pytest.approx([0, 0, 0])
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    assert colour(palette) == pytest.approx([0, 1, 0])
    assert colour(Image.new("CMYK", (8, 8), (0, 255, 255, 0))) == pytest.approx([1, 0, 0])
    assert colour(Image.new("1", (8, 8), 1)) == pytest.approx([1, 1, 1])


def test_exif_orientation_is_applied(tmp_path):
    wide = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    wide.save(tmp_path / "phone.jpg", exif=exif)
    assert images.open_image(tmp_path / "phone.jpg").size == (20, 40)


def test_truncated_and_odd_paths(tmp_path, monkeypatch):
    samples.image("chelsea").save(tmp_path / "cat.png")
    data_bytes = (tmp_path / "cat.png").read_bytes()
    (tmp_path / "half.png").write_bytes(data_bytes[: len(data_bytes) // 2])
    with pytest.raises(CnnvizError, match="cannot read .*half.png"):
        images.open_image(tmp_path / "half.png")
    with pytest.raises(CnnvizError, match="empty image spec"):
        images.image_sources("")
    if os.path.exists("/dev/null"):
        with pytest.raises(CnnvizError, match="neither a file nor a folder"):
            images.image_sources("/dev/null")
    # ~ is the user's home, for folders as for files.
    home = tmp_path / "home"
    (home / "pictures").mkdir(parents=True)
    samples.image("coffee").save(home / "pictures" / "cup.png")
    (home / "pictures" / "notes.txt").write_text("not an image")
    monkeypatch.setenv("HOME", str(home))
    result = cnnviz.predict(cnnviz.load_model("builtin:photos"), "~/pictures", top=1)
    assert [p.classes[0][1] for p in result] == ["coffee"] and len(result.skipped) == 1


def test_symbolic_links_are_followed_once(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    Image.new("L", (4, 4)).save(real / "a.png")
    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / "classes").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(real, target_is_directory=True)
    assert [s.spec for s in images.image_sources(folder)] == [str(folder / "classes" / "a.png")]


def test_a_samples_folder_wins_over_the_sample_photographs(tmp_path, monkeypatch):
    (tmp_path / "samples").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "samples" / "mine.png")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(cnnviz.CnnvizWarning, match="sample:\\*"):
        sources = images.image_sources("samples")
    assert [s.spec for s in sources] == [os.path.join("samples", "mine.png")]
    assert len(images.image_sources("sample:*")) == len(samples.names())


def test_very_large_images_are_reduced_before_conversion():
    gradient = np.tile(np.linspace(0, 255, 4000).astype(np.uint8), (3000, 1))
    big = Image.fromarray(gradient)
    reduced = images._reduced(big, 64)
    assert reduced.size == (-(-4000 // 23), -(-3000 // 23))  # a whole factor of 3000 // 128, rounded up
    small = Image.fromarray(gradient[::30, ::30])
    preprocessing = cnnviz.Preprocessing(mean=(0.0,), std=(1.0,), input_size=(64, 64), known=True)
    torch.testing.assert_close(images.prepare(big, preprocessing), images.prepare(small, preprocessing), atol=0.02, rtol=0)


# --------------------------------------------------------------------------------------------
# one coercion for every function that takes images (cnnviz.inputs.batches)

from torch.utils.data import DataLoader, Dataset  # noqa: E402

from cnnviz.inputs.batches import image_batches, stack_images  # noqa: E402


class _Pairs(Dataset):
    """A map-style dataset of (model inputs C x H x W, label), as torchvision's datasets give with a transform."""

    def __init__(self, inputs: torch.Tensor):
        self.inputs = inputs

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, index):
        return self.inputs[index], index % 3


@pytest.fixture(scope="module")
def photos_model():
    return cnnviz.load_model("builtin:photos")


def test_every_kind_of_image_input_gives_the_same_model_inputs(photos_model, tmp_path):
    pre = photos_model.preprocessing
    chelsea, coffee = samples.image("chelsea"), samples.image("coffee")
    expected = torch.cat([images.prepare(chelsea, pre), images.prepare(coffee, pre)])
    path = tmp_path / "chelsea.png"
    chelsea.save(path)
    as_file = images.prepare(images.open_image(path), pre)
    for given, names in [
        (["sample:chelsea", "sample:coffee"], ["sample:chelsea", "sample:coffee"]),
        ([chelsea, coffee], ["image 0", "image 1"]),
        (expected, ["image 0", "image 1"]),                      # model inputs, used as they are
        ([expected[:1], "sample:coffee"], ["image 0", "sample:coffee"]),
        (_Pairs(expected), ["image 0", "image 1"]),
        (DataLoader(_Pairs(expected), batch_size=2), ["image 0", "image 1"]),
    ]:
        inputs, got_names = stack_images(given, pre)
        torch.testing.assert_close(inputs, expected, atol=2e-6, rtol=0)
        assert got_names == names, given
    tensors = [samples.tensor("chelsea"), samples.tensor("coffee")]  # C x H x W in [0, 1]: prepared as images
    torch.testing.assert_close(stack_images(tensors, pre)[0], torch.cat([images.prepare(x, pre) for x in tensors]))
    inputs, got_names = stack_images(str(path), pre)
    torch.testing.assert_close(inputs, as_file)
    assert got_names == [str(path)]


def test_a_tensor_says_what_it_holds_with_pixels_or_model_inputs(photos_model):
    """A bare tensor's meaning follows its shape (C x H x W: a picture; N x C x H x W: model inputs);
    cnnviz.pixels and cnnviz.model_inputs say it whatever the shape, and a bare batch in [0, 1] for a
    model that normalises is used as before, with a warning naming both."""
    pre = photos_model.preprocessing
    pictures = torch.stack([samples.tensor("chelsea")[:, :300, :400], samples.tensor("coffee")[:, :300, :400]])
    prepared = torch.cat([images.prepare(picture, pre) for picture in pictures])
    torch.testing.assert_close(stack_images(cnnviz.pixels(pictures), pre)[0], prepared)
    torch.testing.assert_close(stack_images(cnnviz.pixels(pictures[0]), pre)[0], prepared[:1])
    as_uint8 = cnnviz.pixels((pictures * 255).round().to(torch.uint8))
    torch.testing.assert_close(stack_images(as_uint8, pre)[0], prepared, atol=0.02, rtol=0)
    torch.testing.assert_close(stack_images(cnnviz.model_inputs(prepared[0]), pre)[0], prepared[:1])
    # model_inputs keeps a batch whole, as a bare 4-D tensor does, and says nothing of its range
    raw = torch.rand(5, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [len(b.inputs) for b in image_batches(cnnviz.model_inputs(raw), pre, batch_size=2)] == [2, 2, 1]
        stack_images(prepared, pre)  # real normalised photographs go below 0: no warning
    with pytest.warns(cnnviz.CnnvizWarning, match=r"lies in \[0, 1\] like pictures: give cnnviz.pixels\(images\)"):
        inputs, _ = stack_images(raw, pre)
    assert torch.equal(inputs, raw)  # still used as they are
    # shares of a group (torchrun) keep the wrapper
    from cnnviz.core.executor import Executor
    from cnnviz.inputs.batches import shard_images
    halves = [Executor(rank, 2).share(cnnviz.pixels(pictures), 1, shard_images).items for rank in range(2)]
    assert [type(h).__name__ for h in halves] == ["Pixels", "Pixels"]
    assert torch.equal(torch.cat([h.tensor for h in halves]), pictures)
    for bad in (torch.rand(8, 8), "sample:chelsea"):
        with pytest.raises(CnnvizError, match=r"pixels\(\) takes a tensor C x H x W or N x C x H x W"):
            cnnviz.pixels(bad)
    with pytest.raises(CnnvizError, match=r"model_inputs\(\) takes a float tensor"):
        cnnviz.model_inputs(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_batches_keep_a_loaders_boundaries_and_labels(photos_model):
    inputs = torch.randn(10, 3, 64, 64)
    stream = image_batches(DataLoader(_Pairs(inputs), batch_size=4), photos_model.preprocessing, batch_size=3)
    batches = list(stream)
    assert [len(b.inputs) for b in batches] == [3, 1, 3, 1, 2]  # each loader batch (4, 4, 2) split to at most 3
    assert [label for b in batches for label in b.labels] == [i % 3 for i in range(10)]
    assert stream.count == 10 and stream.skipped == []
    torch.testing.assert_close(torch.cat([b.inputs for b in batches]), inputs)
    singles = list(image_batches(["sample:chelsea"] * 5, photos_model.preprocessing, batch_size=2))
    assert [len(b.inputs) for b in singles] == [2, 2, 1] and singles[0].labels is None
    limited = list(image_batches(inputs, photos_model.preprocessing, batch_size=4, limit=6))
    assert sum(len(b.inputs) for b in limited) == 6


def test_unreadable_folder_files_are_skipped_and_named_ones_fail(photos_model, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    samples.image("coffee").save(folder / "a.png")
    (folder / "b.png").write_bytes(b"not a png")
    stream = image_batches(folder, photos_model.preprocessing)
    assert sum(len(b.inputs) for b in stream) == 1 and stream.skipped == [str(folder / "b.png")]
    with pytest.raises(CnnvizError, match="b.png"):
        stack_images(folder / "b.png", photos_model.preprocessing)
    with pytest.raises(CnnvizError, match="cannot use a int as images"):
        stack_images(3, photos_model.preprocessing)
    with pytest.raises(CnnvizError, match="no images given"):
        stack_images([], photos_model.preprocessing)
    only_bad = tmp_path / "only-bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"x")
    with pytest.raises(CnnvizError, match="no image could be read \\(1 file\\(s\\) skipped"):
        stack_images(only_bad, photos_model.preprocessing)


def test_every_analysis_takes_a_dataloader(photos_model):
    pre = photos_model.preprocessing
    inputs = torch.cat([images.prepare(samples.image(n), pre) for n in ("chelsea", "coffee")])
    loader = DataLoader(_Pairs(inputs), batch_size=1)
    by_loader, by_tensor = cnnviz.predict(photos_model, loader), cnnviz.predict(photos_model, inputs)
    for a, b in zip(by_loader.predictions, by_tensor.predictions, strict=True):
        assert [c[:2] for c in a.classes] == [c[:2] for c in b.classes]
        assert [c[2] for c in a.classes] == pytest.approx([c[2] for c in b.classes], rel=1e-5)
    np.testing.assert_array_equal(cnnviz.statistics(photos_model, loader, "features.0")["features.0"].histogram,
                                  cnnviz.statistics(photos_model, inputs.split(1), "features.0")["features.0"].histogram)
    torch.testing.assert_close(cnnviz.saliency(photos_model, loader).attribution,
                               cnnviz.saliency(photos_model, inputs).attribution)
    one = DataLoader(_Pairs(inputs[:1]), batch_size=1)
    torch.testing.assert_close(cnnviz.activations(photos_model, one, "features.0")["features.0"].maps,
                               cnnviz.activations(photos_model, inputs[:1], "features.0")["features.0"].maps)


def test_non_square_models_see_the_whole_image_resized_to_their_size():
    # an OCR-like model taking 48 x 192: a 48 x 192 image is used as it is, a wider or square one is
    # resized straight to 48 x 192 (not enlarged and centre-cropped)
    identity = cnnviz.Preprocessing(mean=(0.0,) * 3, std=(1.0,) * 3, input_size=(48, 192), known=True)
    pixels = torch.rand(3, 48, 192, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(images.prepare(pixels, identity)[0], pixels, atol=1e-6)
    halves = torch.zeros(3, 96, 96)
    halves[:, :, 48:] = 1.0  # left half black, right half white
    seen = images.prepare(halves, identity)[0]
    assert seen.shape == (3, 48, 192)
    assert float(seen[:, :, :90].max()) < 0.05 and float(seen[:, :, 102:].min()) > 0.95  # both halves whole
