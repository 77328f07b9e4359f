"""The gallery: its pages and manifest, reuse and --force, a run killed part-way, and a real
browser opening it from the file system."""
from __future__ import annotations

import hashlib
import html.parser
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError
from cnnviz.core.output import RECORD
from cnnviz.cli.main import main
from cnnviz.site.pages import layer_page

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("CNNVIZ_TEST_ARTIFACTS", ROOT / "test-artifacts"))
SMALL = {"max_channels": 2, "steps": 4, "class_steps": 4, "max_classes": 3, "activation_images": 2,
         "attribution_images": 3, "methods": ("gradient", "gradcam"), "dream_octaves": 1, "dream_iterations": 2}
SMALL_CLI = ["--layer", "features.0,features.10", "--max-channels", "2", "--steps", "4", "--class-steps", "4",
             "--max-classes", "3", "--activation-images", "2", "--attribution-images", "3",
             "--methods", "gradient,gradcam", "--dream-octaves", "1", "--dream-iterations", "2"]


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Three real photographs, shrunk, and a file that is not an image (skipped)."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee", "astronaut"):
        image = cnnviz.samples.image(name)
        image.thumbnail((96, 96))
        image.save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def built(photo_folder, tmp_path_factory):
    photos = cnnviz.load_model("builtin:photos")
    before = fingerprint(photos.module)
    output = tmp_path_factory.mktemp("gallery")
    site = cnnviz.gallery(photos, str(photo_folder), ["features.0", "features.10"], output, **SMALL)
    assert_untouched(photos.module, before)
    return photos, site, output, snapshot(output)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file's hash, except cnnviz's records of what it wrote (they hold modification times)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != RECORD}


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attributes):
        attributes = dict(attributes)
        if tag == "a" and "href" in attributes:
            self.links.append(attributes["href"])
        if tag in ("img", "link") and ("src" in attributes or "href" in attributes):
            self.images.append(attributes.get("src") or attributes["href"])


def test_pages_manifest_and_figures(built, photo_folder):
    photos, site, output, _ = built
    assert site.index == output / "index.html" and site.done == 11 and site.reused == 0 and not site.failed
    for page in ("index.html", "layer-features.0.html", "layer-features.10.html", "attributions.html",
                 "classes.html", "style.css", "manifest.json", "data/stats.npz"):
        assert (output / page).is_file(), page
    manifest = json.loads((output / "manifest.json").read_text())
    kinds = {figure["kind"] for figure in manifest["figures"]}
    assert kinds == {"kernels", "activations", "histograms", "channel_statistics", "exemplars", "maximize", "dream",
                     "attributions", "class"}
    assert manifest["images"]["count"] == 4 and manifest["images"]["skipped"] == [str(photo_folder / "notes.txt")]
    for figure in manifest["figures"]:
        assert (output / figure["file"]).is_file() and (output / figure["thumbnail"]).is_file()
        assert figure["caption"] and len(figure["value_range"]) == 2 and figure["value_range"][0] <= figure["value_range"][1]
        if figure["kind"] != "attributions":  # those are shown full width
            with Image.open(output / figure["thumbnail"]) as thumbnail:
                assert thumbnail.width <= 360 and thumbnail.height <= 540
    # the ranges are the raw values: the kernels' weights, the channels' dataset maxima
    kernels = next(f for f in manifest["figures"] if f["kind"] == "kernels" and f["layer"] == "features.10")
    weight = photos.module.features[10].weight.detach()  # 32 x 32 x 3 x 3: the first 16 inputs are shown
    shown_weights = weight[:, :16]
    assert cnnviz.kernels(photos, "features.10").view == "pairs" and "the first 16 of 32 inputs" in kernels["caption"]
    assert kernels["value_range"] == pytest.approx([float(shown_weights.min()), float(shown_weights.max())])
    stats = cnnviz.statistics(photos, str(photo_folder), ["features.10"])
    units = [f for f in manifest["figures"] if f["kind"] == "maximize" and f["layer"] == "features.10"]
    assert [f["unit"] for f in units] == ["features.10:0", "features.10:1"]
    for figure, channel in zip(units, (0, 1)):
        assert figure["dataset_maximum"] == pytest.approx(float(stats["features.10"].mean_maximum[channel]))
        shown = np.asarray(Image.open(output / figure["file"]), dtype=np.float64) / 255
        assert shown.min() == pytest.approx(figure["value_range"][0], abs=1 / 255)
        assert shown.max() == pytest.approx(figure["value_range"][1], abs=1 / 255)
    classes = [f for f in manifest["figures"] if f["kind"] == "class"]
    assert [f["caption"].split(":")[0] for f in classes] == photos.class_names[:3]
    attributions = next(f for f in manifest["figures"] if f["kind"] == "attributions")
    assert attributions["method"] == ["gradient", "gradcam"] and set(attributions["method_ranges"]) == {"gradient", "gradcam"}


def test_every_link_and_image_resolves_with_relative_paths(built):
    _, _, output, _ = built
    pages = sorted(output.glob("*.html"))
    assert len(pages) == 5
    index = (output / "index.html").read_text()
    assert "receptive field" in index and "<td>5 /1 @-2</td>" in index  # features.3's, in the layer table
    for page in pages:
        parser = Links()
        parser.feed(page.read_text())
        assert parser.images, page.name
        for target in parser.links + parser.images:
            assert not urlparse(target).scheme and not target.startswith("/"), (page.name, target)
            assert (output / unquote(target.split("#")[0])).is_file(), (page.name, target)
        text = page.read_text()
        assert str(output) not in text  # no absolute paths: the folder can be moved or zipped


def test_reruns_reuse_what_has_not_changed(built, photo_folder):
    photos, _, output, before = built
    again = cnnviz.gallery(photos, str(photo_folder), ["features.0", "features.10"], output, **SMALL)
    assert again.done == 0 and again.reused == 11
    assert snapshot(output) == before
    changed = cnnviz.gallery(photos, str(photo_folder), ["features.0", "features.10"], output, **{**SMALL, "steps": 5})
    assert changed.done == 2 and changed.reused == 9  # only the maximal-response images depend on steps
    forced = cnnviz.gallery(photos, str(photo_folder), ["features.0", "features.10"], output, force=True, **SMALL)
    assert forced.done == 11 and forced.reused == 0
    assert snapshot(output) == before  # deterministic: the same settings give the same bytes


def test_a_killed_run_is_completed_by_the_next(built, photo_folder, tmp_path):
    # the uninterrupted run: the module's gallery, written by the library with the same settings
    reference = built[3]
    command = [sys.executable, "-m", "cnnviz", "gallery", "-i", str(photo_folder), *SMALL_CLI]
    killed = tmp_path / "killed"
    process = subprocess.Popen(command + ["-o", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if len(list((killed / ".cnnviz").glob("*.json"))) >= 4:  # part-way: some jobs done, others not
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "index.html").exists(), "the run finished before it could be killed"
    # a file caught half-written by the kill stays under its temporary name; plant one more
    (killed / "figures").mkdir(exist_ok=True)
    (killed / "figures" / ".kernels.png.x1y2.part").write_bytes(b"\x89PNG half")
    again = subprocess.run(command + ["-o", str(killed)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "reused" in again.stdout and " 0 reused" not in again.stdout
    assert snapshot(killed) == reference


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


CHECKER = """<!DOCTYPE html><html><body><pre id="out">waiting</pre>
<iframe id="page" src="PAGE" style="width:1280px;height:800px"></iframe>
<script>
document.getElementById("page").addEventListener("load", () => {
  const doc = document.getElementById("page").contentDocument;
  const images = Array.from(doc.images).map(i => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0}));
  const links = Array.from(doc.querySelectorAll("a[href]")).map(a => {
    const request = new XMLHttpRequest();
    let ok = false;
    try { request.open("GET", a.href, false); request.send(); ok = request.responseText.length > 0; }
    catch (error) { ok = false; }
    return {href: a.getAttribute("href"), ok: ok};
  });
  const sheet = doc.styleSheets.length;
  document.getElementById("out").textContent = "RESULT" + JSON.stringify({images, links, sheet}) + "END";
});
</script></body></html>"""


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    browser = find_chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
    return subprocess.run([browser, *flags, *arguments], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_a_browser_shows_every_image_and_link(built, tmp_path):
    _, _, output, _ = built
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for page in ("index.html", "layer-features.10.html"):
        checker = output.parent / f"check-{page}"
        checker.write_text(CHECKER.replace("PAGE", f"{output.name}/{page}"))
        done = chromium("--allow-file-access-from-files", "--virtual-time-budget=15000", "--dump-dom",
                        checker.as_uri(), profile=tmp_path / f"profile-{page}")
        assert "RESULT" in done.stdout, done.stderr[-2000:]
        result = json.loads(done.stdout.split("RESULT", 1)[1].split("END", 1)[0])
        assert result["images"] and all(image["ok"] for image in result["images"]), result["images"]
        assert result["links"] and all(link["ok"] for link in result["links"]), result["links"]
        assert result["sheet"] == 1
        screenshot = ARTIFACTS / f"gallery-{page.replace('.html', '')}.png"
        shot = chromium("--window-size=1280,1600", f"--screenshot={screenshot}", (output / page).as_uri(),
                        profile=tmp_path / f"shot-{page}")
        assert screenshot.is_file(), shot.stderr[-2000:]
        pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
        assert pixels.shape == (1600, 1280) and pixels.std() > 10  # a page with figures, not a blank one


def test_default_layers_and_errors(photo_folder, tmp_path):
    import torchvision

    assert cnnviz.site.default_layers(cnnviz.load_model("builtin:photos")) == [
        "features.0", "features.3", "features.7", "features.10", "features.14", "features.17", "features.21", "features.24"]
    resnet = torchvision.models.resnet18()
    chosen = cnnviz.site.default_layers(resnet)
    convolutions = cnnviz.convolutions(resnet)
    assert len(convolutions) == 20 and len(chosen) == 8
    assert chosen[0] == convolutions[0] and chosen[-1] == convolutions[-1] and set(chosen) <= set(convolutions)
    photos = cnnviz.load_model("builtin:photos")
    empty = tmp_path / "empty"
    empty.mkdir()
    only_text = tmp_path / "text"
    only_text.mkdir()
    (only_text / "a.txt").write_text("words")
    for kwargs, message in [
        ({"layer": ["features.99"]}, "no layer 'features.99'"),
        ({"layer": ["features.3:2"]}, "names a unit"),
        ({"images": str(empty)}, "holds no files"),
        ({"images": str(tmp_path / "missing")}, "does not exist"),
        ({"images": str(only_text)}, "none of the images could be read"),
        ({"methods": ("gradient", "telepathy")}, "unknown attribution methods"),
        ({"steps": 0}, "steps must be"),
        ({"colour": "red"}, "the settings are"),
        ({"dream_image": str(tmp_path / "nope.png")}, "does not exist"),
    ]:
        arguments = {"images": str(photo_folder), "output": tmp_path / "out", **kwargs}
        with pytest.raises(CnnvizError, match=message):
            cnnviz.gallery(photos, **arguments)
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked
    for arguments, fragment in [
        (["gallery", "--layer", "features.99", "-o", str(tmp_path / "cli")], "no layer 'features.99'"),
        (["gallery", "-i", str(empty), "-o", str(tmp_path / "cli")], "holds no files"),
    ]:
        result = CliRunner().invoke(main, arguments)
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and fragment in result.stderr, result.stderr


class WithSpare(nn.Module):
    """A small classifier with a convolution that never runs (left out of the default layers)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.spare = nn.Conv2d(3, 2, 3)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.head(self.features(x))


def test_what_a_rerun_redoes_and_awkward_names(tmp_path):
    torch.manual_seed(0)
    model = WithSpare()
    loaded = cnnviz.load_model(model, input_size=(32, 32))
    folder = tmp_path / "images"
    folder.mkdir()
    names = ["猫.png", "茶.png", "cost$\\q$ & <b>.png"]  # non-ASCII names that a file name flattens; TeX and HTML
    for index, name in enumerate(names):
        Image.fromarray(np.random.default_rng(index).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / name)
    settings = {"max_channels": 1, "steps": 2, "max_classes": 0, "activation_images": 3, "attribution_images": 3,
                "methods": "gradient", "dream_octaves": 1, "dream_iterations": 1}
    output = tmp_path / "site"
    first = cnnviz.gallery(loaded, str(folder), output=output, **settings)
    assert not first.failed and json.loads((output / "manifest.json").read_text())["layers"] == ["features.0", "features.2"]
    activations = sorted(f["file"] for f in first.figures if f["kind"] == "activations" and f["layer"] == "features.0")
    assert len(set(activations)) == 3  # one file per image, although two names flatten alike
    assert "&lt;b&gt;" in (output / "layer-features.0.html").read_text()
    before = snapshot(output)
    # one image changes: its activations, the statistics, the attributions and the renders (each
    # compared with the images, and stopped by that) are redone, nothing else
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(folder / names[0])
    second = cnnviz.gallery(loaded, str(folder), output=output, **settings)
    after = snapshot(output)
    changed = {path for path in after if after[path] != before.get(path)}
    assert second.done == 5 and any("activations" in path for path in changed)
    assert not any("kernels" in path for path in changed)
    # the architecture changes (no weight does): everything is redone
    model.features[0].padding = (0, 0)
    third = cnnviz.gallery(loaded, str(folder), output=output, **settings)
    assert third.reused == 0
    # captions and pages name the images by their file names, not by where they lie on this disk
    assert not any(str(folder) in f["caption"] for f in third.figures)
    assert not any(str(folder) in page.read_text() for page in output.glob("*.html"))
    # fewer layers: the other layer's page and figures go; what the user keeps beside them stays
    (output / "my-notes.txt").write_text("mine")
    (output / "mine").mkdir()
    (output / "mine" / ".draft.txt.part").write_text("mine too")
    fewer = cnnviz.gallery(loaded, str(folder), layer=["features.2"], output=output, **settings)
    assert not (output / "layer-features.0.html").exists() and (output / "layer-features.2.html").is_file()
    assert not (output / "figures" / "features.0").exists()
    on_disk = {str(path.relative_to(output)) for name in ("figures", "thumbs") for path in (output / name).rglob("*")
               if path.is_file() and path.name != RECORD}
    assert on_disk == {path for f in fewer.figures for path in (f["file"], f["thumbnail"])}
    assert (output / "my-notes.txt").read_text() == "mine" and (output / "mine" / ".draft.txt.part").is_file()
    with pytest.raises(CnnvizError, match="does not run in a forward pass"):
        cnnviz.gallery(loaded, str(folder), layer=["spare"], output=output, **settings)


class SharedActivation(nn.Module):
    """One ReLU module used twice, after convolutions of 4 and 6 channels; the output is a map,
    not class scores."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()

    def forward(self, x):
        return self.act(self.conv2(self.act(self.conv1(x))))


def test_a_module_run_twice_and_a_model_without_classes(photo_folder, tmp_path):
    torch.manual_seed(0)
    loaded = cnnviz.load_model(SharedActivation(), input_size=(32, 32))
    settings = {"max_channels": None, "steps": 2, "activation_images": 1, "attribution_images": 2,
                "methods": "gradient", "dream_octaves": 1, "dream_iterations": 1}
    site = cnnviz.gallery(loaded, str(photo_folder), ["act#1", "act#2"], tmp_path / "site", **settings)
    assert not site.failed and site.figures
    rendered = {layer: sum(1 for f in site.figures if f["kind"] == "maximize" and f["layer"] == layer)
                for layer in ("act", "act#2")}
    assert rendered == {"act": 4, "act#2": 6}  # each call's own channels ("act#1" is "act")
    assert not any(f["kind"] in ("attributions", "class") for f in site.figures)
    assert not (tmp_path / "site" / "attributions.html").exists()
    index = (tmp_path / "site" / "index.html").read_text()
    assert '<a href="layer-act.html">act</a>' in index and "not one score per class" in index
    # only the second call shown: the module's row in the layer table links to that call's page
    again = cnnviz.gallery(loaded, str(photo_folder), ["act#2"], tmp_path / "site", **settings)
    index = (tmp_path / "site" / "index.html").read_text()
    assert again.reused > 0 and '<a href="layer-act-2.html">act</a>' in index
    assert not (tmp_path / "site" / "layer-act.html").exists() and not (tmp_path / "site" / "figures" / "act").exists()
    links = Links()
    links.feed(index)
    assert all((tmp_path / "site" / link).is_file() for link in links.links)


class OddNames(nn.Module):
    """Module names a file name cannot tell apart: ``a-b`` and ``a b``, another script, a name
    like the gallery's own ``statistics`` folder, onnx2torch's ``Conv@17`` and a ``:``."""

    NAMES = ("a-b", "a b", "ü猫", "statistics", "Conv@17")

    def __init__(self):
        super().__init__()
        for name in self.NAMES:
            self.add_module(name, nn.Conv2d(3, 3, 3, padding=1))
        self.add_module("x:y", nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))

    def forward(self, x):
        for name in self.NAMES:
            x = getattr(self, name)(x)
        return self.head(getattr(self, "x:y")(x))


def test_layers_with_names_a_file_name_flattens_keep_their_own_figures(tmp_path):
    torch.manual_seed(0)
    loaded = cnnviz.load_model(OddNames(), input_size=(24, 24))
    settings = {"max_channels": 1, "steps": 2, "max_classes": 0, "activation_images": 1, "attribution_images": 1,
                "methods": "gradient", "dream_octaves": 1, "dream_iterations": 1}
    # a user's own index.html in the folder: refused before any work, nothing written
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>my page</p>")
    with pytest.raises(CnnvizError, match="cnnviz did not write it"):
        cnnviz.gallery(loaded, "sample:chelsea", [*OddNames.NAMES, "x:y"], site, **settings)
    assert sorted(p.name for p in site.iterdir()) == ["index.html"]
    (site / "index.html").unlink()
    built = cnnviz.gallery(loaded, "sample:chelsea", [*OddNames.NAMES, "x:y"], site, **settings)
    assert not built.failed
    layers = [*OddNames.NAMES, "x:y"]
    kernels = {f["layer"]: f["file"] for f in built.figures if f["kind"] == "kernels"}
    assert set(kernels) == set(OddNames.NAMES) and len(set(kernels.values())) == len(OddNames.NAMES)
    folders = {f["layer"]: f["file"].rsplit("/", 1)[0] for f in built.figures if f["layer"] in layers}
    assert len(set(folders.values())) == len(layers) and "figures/statistics" not in folders.values()
    for f in built.figures:
        assert (site / f["file"]).is_file()
    # every layer has its own page, linked from the index, naming that layer
    index = Links()
    index.feed((site / "index.html").read_text())
    pages = sorted({link for link in index.links if link.startswith("layer-")})
    assert len(pages) == len(layers)
    for layer in layers:
        page = site / layer_page(layer)
        assert html.unescape(page.read_text()).count(layer) > 0 and page.name in pages


def test_images_given_as_tensors_and_pil_images(tmp_path):
    loaded = cnnviz.load_model("builtin:photos")
    torch.manual_seed(0)
    images = [torch.rand(3, 40, 48), (torch.rand(3, 32, 32) * 255).to(torch.uint8), cnnviz.samples.image("coffee")]
    settings = {"max_channels": 1, "steps": 1, "max_classes": 0, "activation_images": 3, "attribution_images": 1,
                "methods": "gradient", "dream_octaves": 1, "dream_iterations": 1}
    first = cnnviz.gallery(loaded, images, ["features.0"], tmp_path / "site", **settings)
    assert not first.failed
    kept = sorted((tmp_path / "site" / "data" / "inputs").glob("*.png"))
    assert len(kept) == 3 and json.loads((tmp_path / "site" / "manifest.json").read_text())["images"]["count"] == 3
    # the files hold the images (8-bit): the first tensor, to within rounding
    np.testing.assert_allclose(np.asarray(Image.open(kept[0])) / 255, images[0].permute(1, 2, 0).numpy(), atol=0.5 / 255 + 1e-6)
    again = cnnviz.gallery(loaded, images, ["features.0"], tmp_path / "site", **settings)
    assert again.done == 0
    with pytest.raises(CnnvizError, match="in \\[0, 1\\]"):
        cnnviz.gallery(loaded, [torch.rand(3, 8, 8) * 4], ["features.0"], tmp_path / "other", **settings)
    assert not (tmp_path / "other").exists()


def test_a_gallery_written_before_the_record_of_written_files_is_updated(tmp_path):
    loaded = cnnviz.load_model("builtin:photos")
    settings = {"max_channels": 1, "steps": 1, "max_classes": 0, "activation_images": 1, "attribution_images": 1,
                "methods": "gradient", "dream_octaves": 1, "dream_iterations": 1}
    site = tmp_path / "site"
    first = cnnviz.gallery(loaded, "sample:chelsea", ["features.0"], site, **settings)
    for record in site.rglob(RECORD):  # as an older cnnviz left it: no record of written files
        record.unlink()
    (site / "notes.txt").write_text("mine")
    again = cnnviz.gallery(loaded, "sample:chelsea", ["features.0"], site, **settings, force=True)
    assert again.done == first.done and (site / "notes.txt").read_text() == "mine"
    # a folder that only looks like a gallery (no job records) is not adopted
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.html").write_text("<p>mine</p>")
    (other / "manifest.json").write_text('{"cnnviz": "0.1.0"}')
    with pytest.raises(CnnvizError, match="cnnviz did not write it"):
        cnnviz.gallery(loaded, "sample:chelsea", ["features.0"], other, **settings)
