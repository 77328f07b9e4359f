"""The gallery: its pages (index with the hierarchy, layers, a page per unit, attributions and
classes) and manifest, one rule for the units shown, reuse and --force, a run killed part-way, and
a real browser opening every page from the file system."""
from __future__ import annotations

import hashlib
import html
import html.parser
import re
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
from cnnviz.site.content import layer_page

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("CNNVIZ_TEST_ARTIFACTS", ROOT / "test-artifacts"))
SMALL = {"max_channels": 2, "unit_renders": 1, "diverse": 2, "exemplars": 3, "steps": 4, "class_steps": 4,
         "max_classes": 3, "activation_images": 2, "attribution_images": 3, "methods": ("gradient", "gradcam"),
         "dream_octaves": 1, "dream_steps": 2, "concepts_k": 3, "faithfulness_steps": 4}
SMALL_CLI = ["--layer", "features.0,features.10", "--max-channels", "2", "--unit-renders", "1", "--diverse", "2",
             "--exemplars", "3", "--steps", "4", "--class-steps", "4",
             "--max-classes", "3", "--activation-images", "2", "--attribution-images", "3",
             "--methods", "gradient,gradcam", "--dream-octaves", "1", "--dream-steps", "2", "--concepts-k", "3",
             "--faithfulness-steps", "4"]
JOBS = 18  # statistics, kernels x 2, activations x 2, maximize x 2, renders x 2, units x 2, concepts x 2, dream x 2,
# attributions, faithfulness, classes


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
    site = cnnviz.gallery(photos, str(photo_folder), ["features.0", "features.10"], output=output, **SMALL)
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


def strongest(stats, layer: str, count: int) -> list[int]:
    """The ``count`` channels with the largest best mean over one image, in channel order (the
    gallery's one rule for the units it shows)."""
    maxima = stats[layer].mean_maximum
    return sorted(int(c) for c in np.argsort(-maxima, kind="stable")[:count])


def test_pages_manifest_and_figures(built, photo_folder):
    photos, site, output, _ = built
    assert site.index == output / "index.html" and site.done == JOBS and site.reused == 0 and not site.failed
    for page in ("index.html", "layer-features.0.html", "layer-features.10.html", "attributions.html",
                 "classes.html", "style.css", "manifest.json", "data/stats.npz"):
        assert (output / page).is_file(), page
    manifest = json.loads((output / "manifest.json").read_text())
    kinds = {figure["kind"] for figure in manifest["figures"]}
    assert kinds == {"kernels", "input", "activation_map", "histograms", "channel_statistics", "maximize", "exemplars",
                     "bottom_exemplars", "kernel", "dream", "attributions", "class", "concepts", "concept_render",
                     "concept_exemplars", "concept_maps", "faithfulness"}
    assert manifest["images"]["count"] == 4 and manifest["images"]["skipped"] == [str(photo_folder / "notes.txt")]
    for figure in manifest["figures"]:
        assert (output / figure["file"]).is_file() and (output / figure["thumbnail"]).is_file()
        assert figure["caption"] and len(figure["value_range"]) == 2 and figure["value_range"][0] <= figure["value_range"][1]
        if figure.get("text"):  # a figure with text is shown at its own size: it must fit the page
            with Image.open(output / figure["file"]) as image:
                assert image.width <= 1160, (figure["file"], image.width)
    # the ranges are the raw values: the kernels' weights, the channels' dataset maxima
    stats = cnnviz.statistics(photos, str(photo_folder), ["features.0", "features.10"], exemplars=3)
    shown = {layer: strongest(stats, layer, 2) for layer in ("features.0", "features.10")}
    kernels = next(f for f in manifest["figures"] if f["kind"] == "kernels" and f["layer"] == "features.10")
    weight = photos.module.features[10].weight.detach()  # 32 x 32 x 3 x 3: the first 16 inputs are shown
    shown_weights = weight[shown["features.10"]][:, :16]
    assert "the first 16 of 32 inputs" in kernels["caption"] and "128" not in kernels["caption"]
    assert kernels["value_range"] == pytest.approx([float(shown_weights.min()), float(shown_weights.max())])
    units = [f for f in manifest["figures"] if f["kind"] == "maximize" and f["layer"] == "features.10"
             and f["objective"] == "channel"]
    assert [f["unit"] for f in units] == [f"features.10:{c}" for c in shown["features.10"]]
    for figure, channel in zip(units, shown["features.10"]):
        assert figure["dataset_maximum"] == pytest.approx(float(stats["features.10"].mean_maximum[channel]))
        image = np.asarray(Image.open(output / figure["file"]), dtype=np.float64) / 255
        assert image.min() == pytest.approx(figure["value_range"][0], abs=1 / 255)
        assert image.max() == pytest.approx(figure["value_range"][1], abs=1 / 255)
    classes = [f for f in manifest["figures"] if f["kind"] == "class"]
    assert [f["caption"].split(":")[0] for f in classes] == photos.class_names[:3]
    attributions = next(f for f in manifest["figures"] if f["kind"] == "attributions")
    assert attributions["method"] == ["gradient", "gradcam"] and set(attributions["method_ranges"]) == {"gradient", "gradcam"}


def test_every_link_and_image_resolves_with_relative_paths(built):
    _, site, output, _ = built
    pages = sorted(output.rglob("*.html"))
    assert len(pages) == 7 + len(site.units)  # index, 2 layers, attributions, classes, 2 of concepts
    index = (output / "index.html").read_text()
    assert "receptive field" in index and "<td>5 /1 @-2</td>" in index  # features.3's, in the layer table
    for page in pages:
        parser = Links()
        parser.feed(page.read_text())
        assert parser.images, page.name
        for target in parser.links + parser.images:
            assert not urlparse(target).scheme and not target.startswith("/"), (page.name, target)
            assert (page.parent / unquote(target.split("#")[0])).is_file(), (page.name, target)
        text = page.read_text()
        assert str(output) not in text  # no absolute paths: the folder can be moved or zipped


def test_one_rule_for_the_units_every_section_shows(built, photo_folder):
    """The two units of each layer with the strongest response to the images have a page, and
    the same two have renders, maps, exemplars and kernels; the strongest of them (unit_renders=1)
    also has its neuron, negative and diverse renders."""
    photos, site, output, _ = built
    stats = cnnviz.statistics(photos, str(photo_folder), ["features.0", "features.10"], exemplars=3)
    for layer in ("features.0", "features.10"):
        shown = strongest(stats, layer, 2)
        expected = {f"{layer}:{c}" for c in shown}
        for kind in ("activation_map", "exemplars", "bottom_exemplars", "kernel"):
            assert {f["unit"] for f in site.figures if f["kind"] == kind and f["layer"] == layer} == expected, kind
        renders = {(f["unit"], f["objective"]) for f in site.figures if f["kind"] == "maximize" and f["layer"] == layer}
        top = f"{layer}:{strongest(stats, layer, 1)[0]}"
        assert {unit for unit, objective in renders if objective == "channel"} == expected
        assert {unit for unit, objective in renders if objective == "neuron"} == {top}
        assert {unit for unit, objective in renders if objective == "negative"} == {top}
        diverse = [f for f in site.figures if f["kind"] == "maximize" and f.get("objective") == "diverse" and f["layer"] == layer]
        # a first-layer unit is one linear filter: one maximum, no diverse set
        assert len(diverse) == (0 if layer == "features.0" else 2)
        pages = {p.name for p in (output / "units" / layer).glob("*.html")}
        assert pages == {f"{c}.html" for c in shown}
        layer_page_text = (output / layer_page(layer)).read_text()
        assert all(f'href="units/{layer}/{c}.html"' in layer_page_text for c in shown)
        assert "All" not in layer_page_text.split("units (channels)")[0][-20:]  # 2 of 16 or 32: the choice is stated
        assert f"2 of {stats[layer].channels} units (channels) have a page" in layer_page_text
    assert len(site.units) == 4


def test_a_unit_page_tells_the_units_whole_story(built, photo_folder):
    photos, site, output, _ = built
    stats = cnnviz.statistics(photos, str(photo_folder), ["features.0", "features.10"], exemplars=3)
    channel = strongest(stats, "features.10", 1)[0]
    page = (output / "units" / "features.10" / f"{channel}.html").read_text()
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    part = stats["features.10"]
    # the render against the unit's best real image; the neuron, the negative, a diverse set
    render = next(f for f in site.figures if f["unit"] == f"features.10:{channel}" and f.get("objective") == "channel")
    reference = f"{render['reference']:.3g}"
    assert f"{render['value']:.3g} {'beats' if render['succeeded'] else 'below'} the best real image's {reference}" in text
    for title in ("Channel", "Neuron", "Negative", "Diverse 1", "Diverse 2"):
        assert title in text
    # exemplars: the top and bottom images by name, with their values, and a field box per crop
    for which, values, sources in (("top", part.exemplar_values, part.exemplar_sources),
                                   ("bottom", part.bottom_values, part.bottom_sources)):
        strip = f"figures/features.10/units/{channel}-{which}.jpg"
        assert strip in page and (output / strip).is_file()
        for value, source in zip(values[channel], sources[channel]):
            assert f"{Path(source).name}" in text and f"{value:.3g}" in text
    assert page.count('class="field"') == 2 * 3
    # the distribution: a bar per bin that holds values, summing to every value of the map
    svg = page[page.index("<svg"):page.index("</svg>")]
    counts = [int(c.replace(",", "")) for c in re.findall(r"<title>([\d,]+)</title>", svg)]
    assert sum(counts) == int(part.count[channel]) and len(counts) == int((part.histogram[channel] > 0).sum())
    # its maps on the two activation images, its kernel, and its strongest links by weight
    assert page.count("/maps/") == 2 and f"figures/features.10/units/{channel}-kernel.png" in page
    [link] = cnnviz.connections(photos, ["features.0", "features.10"])
    inputs = [c for c, _ in link.strongest_inputs(channel, 6)]
    section = page[page.index("Strongest inputs"):page.index("Strongest outputs") if "Strongest outputs" in page else None]
    listed = [int(c) for c in re.findall(r'<span class="label">(\d+)<span class="muted">', section)]
    assert listed == inputs
    assert "the sum over paths through features.3, features.7, features.10" in section
    # the neighbouring units shown have links; the previous and next unit of the layer too
    for c in inputs:
        assert (f'href="../../units/features.0/{c}.html"' in section) == (c in strongest(stats, "features.0", 2))


def test_exemplar_crops_show_the_receptive_field_of_their_position(built, photo_folder):
    """Each crop is a square of the image as the model saw it around the receptive field of the
    position where the unit is highest; the box drawn over it is that field."""
    photos, site, output, _ = built
    stats = cnnviz.statistics(photos, str(photo_folder), ["features.10"], exemplars=3)
    channel = strongest(stats, "features.10", 1)[0]
    record = json.loads(next((output / ".cnnviz").glob("units-features.10-*.json")).read_text())
    crops = record["data"]["units"][str(channel)]["top"]["crops"]
    field = cnnviz.receptive_field(photos, "features.10")  # 14 px, stride 2, offset -6
    strip = np.asarray(Image.open(output / record["data"]["units"][str(channel)]["top"]["file"]).convert("RGB"), dtype=np.float64)
    width = strip.shape[1]
    for slot, crop in enumerate(crops):
        row, column = stats["features.10"].exemplar_positions[channel, slot]
        assert crop["position"] == [row, column]
        top, left, bottom, right = field.region(int(row), int(column))
        top, left, bottom, right = max(top, 0), max(left, 0), min(bottom, 63), min(right, 63)
        crop_top, crop_left, side = crop["crop"]
        scale = 64 / side
        assert crop["left"] == pytest.approx(100 * (slot * 66 + (left - crop_left) * scale) / width, abs=1e-3)
        assert crop["top"] == pytest.approx(100 * (top - crop_top) * scale / 64, abs=1e-3)
        assert crop["width"] == pytest.approx(100 * (right + 1 - left) * scale / width, abs=1e-3)
        # the picture is that square of the image as the model saw it (JPEG: within its error)
        source = stats["features.10"].exemplar_sources[channel][slot]
        seen = cnnviz.inputs.display_image(cnnviz.inputs.prepare(cnnviz.inputs.open_image(source), photos.preprocessing)[0],
                                           photos.preprocessing)
        expected = Image.fromarray((seen[:, crop_top:crop_top + side, crop_left:crop_left + side] * 255).round()
                                   .byte().permute(1, 2, 0).numpy()).resize((64, 64), Image.Resampling.BICUBIC)
        got = strip[:, slot * 66:slot * 66 + 64]
        assert np.abs(got - np.asarray(expected, dtype=np.float64)).mean() < 6


def test_the_index_shows_the_hierarchy_and_its_text_renders(built):
    _, site, output, _ = built
    index = (output / "index.html").read_text()
    hierarchy = index[index.index('id="hierarchy"'):index.index('id="model"')]
    assert hierarchy.index("layer-features.0.html") < hierarchy.index("layer-features.10.html")  # shallow to deep
    assert len(re.findall(r'href="units/features\.10/\d+\.html"', hierarchy)) == 2
    # the first layer's units are linear filters: the row shows their kernels, marked
    assert re.findall(r'href="units/features\.0/\d+\.html"', hierarchy) and "kernel</span>" in hierarchy
    # the settings name the image Deep Dream changed; the receptive field's notation is explained
    dreamed = next(f["image"] for f in site.figures if f["kind"] == "dream")
    assert f"{Path(dreamed).name} (the first image)" in html.unescape(index)
    assert "A ~ marks a grid whose regions are not all the same size" in index
    # log-scale ticks are plain text, not raw mathtext
    from cnnviz.plots.style import power_of_ten

    assert power_of_ten(1e5) == "10\u2075" and power_of_ten(3e4) == ""


def test_attributions_and_classes_have_context(built, photo_folder):
    photos, site, output, _ = built
    page = html.unescape((output / "attributions.html").read_text())
    # astronaut.png, chelsea.png and coffee.png are named like classes of builtin:photos
    predictions = cnnviz.predict(photos, [str(photo_folder / f"{n}.png") for n in ("astronaut", "chelsea", "coffee")], top=3)
    for prediction, name in zip(predictions, ("astronaut", "chelsea", "coffee")):
        block = page[page.index(f"<h2>{name}.png</h2>"):]
        block = block[:block.index("</section>")]
        assert f"Its class: <strong>{name}</strong>" in block
        best, first_name, probability = prediction.classes[0]
        assert f"{first_name} {100 * probability:.1f} %" in block
        assert ("Right." in block) == (first_name == name) and ("Wrong" in block) == (first_name != name)
        assert f"attributions of {first_name}" in block  # the top-1 class by default
    # the methods ranked by their faithfulness over the same images, the numbers of cnnviz.faithfulness
    section = page[page.index('<section class="faithfulness"'):]
    section = section[:section.index("</section>")]
    images = [str(photo_folder / f"{n}.png") for n in ("astronaut", "chelsea", "coffee")]
    scores = cnnviz.attributions(photos, images, methods=["gradient", "gradcam"],
                                 faithfulness=cnnviz.FaithfulnessSettings(steps=4)).faithfulness
    means = scores.summary()
    rows = re.findall(r"<tr class=\"[a-z]*\"><td>(\d)</td><td>([a-z_]+)", section)
    assert [(int(rank), method) for rank, method in rows] == list(enumerate(scores.ranking, start=1))
    for method in scores.methods:
        row = section[section.index(f"<td>{method}"):]
        assert f"{means[method]['deletion_auc']:.3g} <small>" in row[:row.index("</tr>")]
    assert "figures/attributions/faithfulness.png" in section and (output / "figures/attributions/faithfulness.png").exists()
    assert f"best here: <strong>{scores.best}</strong>" in section
    classes = html.unescape((output / "classes.html").read_text())
    # the astronaut class has a real example among the images, with the model's probability of it
    astronaut = classes[classes.index("<h2>astronaut"):]
    astronaut = astronaut[:astronaut.index("</section>")]
    chance = float(cnnviz.predict(photos, str(photo_folder / "astronaut.png"), top=15)[0].classes[
        [n for _, n, _ in cnnviz.predict(photos, str(photo_folder / "astronaut.png"), top=15)[0].classes].index("astronaut")][2])
    assert f"astronaut.png: {100 * chance:.1f} %" in astronaut and "render:" in astronaut
    brick = classes[classes.index("<h2>brick"):]
    assert "No image of this class is known" in brick[:brick.index("</section>")]


def test_reruns_reuse_what_has_not_changed(built, photo_folder):
    photos, _, output, before = built
    again = cnnviz.gallery(photos, str(photo_folder), ["features.0", "features.10"], output=output, **SMALL)
    assert again.done == 0 and again.reused == JOBS
    assert snapshot(output) == before
    changed = cnnviz.gallery(photos, str(photo_folder), ["features.0", "features.10"], output=output, **{**SMALL, "steps": 5})
    assert changed.done == 6 and changed.reused == JOBS - 6  # only the units' and the concepts' renders depend on steps
    forced = cnnviz.gallery(photos, str(photo_folder), ["features.0", "features.10"], output=output, force=True, **SMALL)
    assert forced.done == JOBS and forced.reused == 0
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
    (killed / "figures" / ".kernels.png.cnnviz-x1y2z3w4.part").write_bytes(b"\x89PNG half")
    again = subprocess.run(command + ["-o", str(killed)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "reused" in again.stdout and " 0 reused" not in again.stdout
    assert snapshot(killed) == reference


def test_a_full_disk_stops_the_gallery_and_the_next_run_completes_it(built, photo_folder, tmp_path):
    """A full disk in the middle of a job stops the gallery with one error (every job after it would
    fail the same way), instead of a gallery that reports its files as "not shown"; no file is
    left placed but unrecorded, so the next run completes it to the uninterrupted run's bytes."""
    from faults import Injector

    photos, _, _, reference = built
    folder = tmp_path / "full"
    with Injector(folder, "ENOSPC", 60).active() as writes:
        with pytest.raises(cnnviz.CnnvizError, match="No space left on device"):
            cnnviz.gallery(photos, str(photo_folder), ["features.0", "features.10"], output=folder, **SMALL)
    assert writes.count >= 60 and not (folder / "index.html").exists()  # it hit, in the middle
    again = cnnviz.gallery(photos, str(photo_folder), ["features.0", "features.10"], output=folder, **SMALL)
    assert again.reused > 0 and again.failed == []
    assert snapshot(folder) == reference


def find_chromium() -> str | None:  # noqa: E302
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


CHECKER = """<!DOCTYPE html><html><body><pre id="out">waiting</pre>
<iframe id="page" style="width:1280px;height:900px"></iframe>
<script>
const pages = PAGES;
const frame = document.getElementById("page");
const results = {};
function fetchable(url) {
  const request = new XMLHttpRequest();
  try { request.open("GET", url, false); request.send(); return request.responseText.length > 0; }
  catch (error) { return false; }
}
async function check(page) {
  await new Promise(done => { frame.onload = done; frame.src = page; });
  const doc = frame.contentDocument;
  const images = Array.from(doc.images);
  // lazy images load once asked for; each is then checked like any other
  images.forEach(i => { i.loading = "eager"; });
  for (let wait = 0; wait < 200 && !images.every(i => i.complete); wait++) {
    await new Promise(done => setTimeout(done, 50));
  }
  const shown = images.map(i => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0, text: i.classList.contains("text"),
                                  natural: i.naturalWidth, width: i.getBoundingClientRect().width}));
  const links = Array.from(doc.querySelectorAll("a[href]")).map(a => ({href: a.getAttribute("href"), ok: fetchable(a.href)}));
  results[page] = {images: shown, links: links, sheet: doc.styleSheets.length};
}
(async () => {
  for (const page of pages) { await check(page); }
  document.getElementById("out").textContent = "RESULT" + JSON.stringify(results) + "END";
})();
</script></body></html>"""


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    browser = find_chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
    return subprocess.run([browser, *flags, *arguments], capture_output=True, text=True, timeout=300)


def page_weight(output: Path, page: Path) -> int:
    """The bytes a page loads: itself, its style sheet and every image it shows (lazy or not)."""
    parser = Links()
    parser.feed(page.read_text())
    targets = {(page.parent / unquote(src)).resolve() for src in parser.images}
    return page.stat().st_size + sum(path.stat().st_size for path in targets)


TEXT_SHOWN_AT_LEAST = 0.8  # a figure with text is never shown narrower than this fraction of its own width
MAX_PAGE_BYTES = 2 * 2**20


def check_in_a_browser(output: Path, pages: list[str], profile: Path) -> None:
    """Every page loads in Chromium from the file system with no console message, every image
    shows, every link resolves, no figure with text is shrunk, and no page weighs 2 MB."""
    checker = output.parent / f"check-{output.name}.html"
    checker.write_text(CHECKER.replace("PAGES", json.dumps([f"{output.name}/{page}" for page in pages])))
    done = chromium("--allow-file-access-from-files", "--virtual-time-budget=60000", "--enable-logging=stderr",
                    "--v=0", "--dump-dom", checker.as_uri(), profile=profile)
    assert "RESULT" in done.stdout, done.stderr[-2000:]
    results = json.loads(done.stdout.split("RESULT", 1)[1].split("END", 1)[0])
    assert sorted(results) == sorted(f"{output.name}/{page}" for page in pages)
    for page, result in results.items():
        assert result["images"] and all(image["ok"] for image in result["images"]), (page, result["images"])
        assert result["links"] and all(link["ok"] for link in result["links"]), (page, result["links"])
        assert result["sheet"] == 1, page
        for image in result["images"]:
            if image["text"]:
                assert image["width"] >= TEXT_SHOWN_AT_LEAST * image["natural"], (page, image)
    consoles = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert not consoles, consoles
    for page in pages:
        weight = page_weight(output, output / page)
        assert weight < MAX_PAGE_BYTES, f"{page} weighs {weight:,} bytes"


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_a_browser_shows_every_page_whole(built, tmp_path):
    _, site, output, _ = built
    pages = sorted(str(p.relative_to(output)) for p in output.rglob("*.html"))
    assert len(pages) == 7 + len(site.units)
    check_in_a_browser(output, pages, tmp_path / "profile")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for page in ("index.html", "layer-features.10.html", str(site.units[-1].relative_to(output))):
        screenshot = ARTIFACTS / f"gallery-{page.replace('.html', '').replace('/', '-')}.png"
        shot = chromium("--window-size=1280,1600", f"--screenshot={screenshot}", (output / page).as_uri(),
                        profile=tmp_path / f"shot-{page.replace('/', '-')}")
        assert screenshot.is_file(), shot.stderr[-2000:]
        pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
        assert pixels.shape == (1600, 1280) and pixels.std() > 10  # a page with figures, not a blank one


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_the_checks_of_the_browser_test_can_fail(tmp_path):
    """The browser check finds a missing image, a broken link, a shrunk figure with text, a
    console message and a heavy page."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "style.css").write_text("body { margin: 0; }")
    Image.new("RGB", (1000, 100), "white").save(site / "wide.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1000, 1000, 3), dtype=np.uint8)).save(site / "noise.png")
    head = '<link rel="stylesheet" href="style.css">'
    (site / "good.html").write_text(f'{head}<img src="wide.png" class="text"><a href="good.html">me</a>')
    cases = {
        "missing.html": (f'{head}<img src="gone.png"><a href="good.html">x</a>', "'gone.png', 'ok': False"),
        "link.html": (f'{head}<img src="wide.png"><a href="gone.html">x</a>', "'gone.html', 'ok': False"),
        "shrunk.html": (f'{head}<img src="wide.png" class="text" style="width:300px"><a href="good.html">x</a>', "assert 300 >= (0.8 * 1000)"),
        "console.html": (f'{head}<img src="wide.png"><a href="good.html">x</a><script>console.log("hi")</script>', "CONSOLE"),
        "heavy.html": (f'{head}<img src="wide.png"><img src="noise.png" loading="lazy"><a href="good.html">x</a>', "weighs"),
    }
    check_in_a_browser(site, ["good.html"], tmp_path / "good")
    for name, (text, expected) in cases.items():
        (site / name).write_text(text)
        with pytest.raises(AssertionError) as failure:
            check_in_a_browser(site, [name], tmp_path / name)
        assert expected in str(failure.value), (name, str(failure.value)[:300])


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
        ({"max_channels": "many"}, "max_channels must be at least 1, 'auto'"),
        ({"unit_renders": -1}, "unit_renders must be at least 0"),
        ({"max_classes": "lots"}, "max_classes must be 0 or more, or 'auto'"),
        ({"exemplars": 65}, "exemplars is at most 64"),
        ({"classes": ("chelsea", "unicorn")}, "'unicorn' is not a class of this model"),
    ]:
        arguments = {"images": str(photo_folder), "output": tmp_path / "out", **kwargs}
        with pytest.raises(CnnvizError, match=message):
            cnnviz.gallery(photos, **arguments)
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked
    for arguments, fragment in [
        (["gallery", "--layer", "features.99", "-o", str(tmp_path / "cli")], "no layer 'features.99'"),
        (["gallery", "-i", str(empty), "-o", str(tmp_path / "cli")], "holds no files"),
        (["gallery", "--max-channels", "lots", "-o", str(tmp_path / "cli")], "--max-channels"),
        (["gallery", "--unit-renders", "-2", "-o", str(tmp_path / "cli")], "--unit-renders"),
        (["gallery", "--max-classes", "all", "-o", str(tmp_path / "cli")], "--max-classes"),
        (["gallery", "--classes", "top7", "-o", str(tmp_path / "cli")], "give top1 to top3"),
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
    settings = {"max_channels": None, "unit_renders": 0, "steps": 2, "max_classes": 0, "activation_images": 3,
                "attribution_images": 3, "methods": "gradient", "dream_octaves": 1, "dream_steps": 1}
    output = tmp_path / "site"
    first = cnnviz.gallery(loaded, str(folder), output=output, **settings)
    assert not first.failed and json.loads((output / "manifest.json").read_text())["layers"] == ["features.0", "features.2"]
    activations = sorted(f["file"] for f in first.figures if f["kind"] == "activation_map" and f["unit"] == "features.0:0")
    assert len(set(activations)) == 3  # one file per image, although two names flatten alike
    assert "&lt;b&gt;" in (output / "layer-features.0.html").read_text()
    before = snapshot(output)
    # one image changes: its activations, the statistics (and the exemplars made from them), the
    # attributions, the renders (each compared with the images, and stopped by that) and the concepts
    # (found over the images) are redone, nothing else: the kernels, the other images' activations and Deep Dream of the first image
    records = {path.name: path.stat().st_mtime_ns for path in (output / ".cnnviz").glob("*.json")}
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(folder / names[0])
    second = cnnviz.gallery(loaded, str(folder), output=output, **settings)
    after = snapshot(output)
    changed = {path for path in after if after[path] != before.get(path)}
    redone = sorted(json.loads((output / ".cnnviz" / name).read_text())["job"].split(" ")[0]
                    for name, when in records.items() if (output / ".cnnviz" / name).stat().st_mtime_ns != when)
    assert redone == ["activations", "attributions", "concepts", "concepts", "faithfulness", "maximize", "maximize",
                      "statistics", "units", "units"], redone
    assert second.done == 10 and any("/maps/" in path for path in changed)
    assert not any("kernels" in path or "dream" in path for path in changed)
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
                "methods": "gradient", "dream_octaves": 1, "dream_steps": 1}
    site = cnnviz.gallery(loaded, str(photo_folder), ["act#1", "act#2"], output=tmp_path / "site", **settings)
    assert not site.failed and site.figures
    rendered = {layer: sum(1 for f in site.figures if f["kind"] == "maximize" and f["layer"] == layer
                           and f["objective"] == "channel") for layer in ("act", "act#2")}
    assert rendered == {"act": 4, "act#2": 6}  # each call's own channels ("act#1" is "act")
    assert not any(f["kind"] in ("attributions", "class") for f in site.figures)
    assert not (tmp_path / "site" / "attributions.html").exists()
    index = (tmp_path / "site" / "index.html").read_text()
    assert '<a href="layer-act.html">act</a>' in index and "not one score per class" in index
    # only the second call shown: the module's row in the layer table links to that call's page
    again = cnnviz.gallery(loaded, str(photo_folder), ["act#2"], output=tmp_path / "site", **settings)
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
                "methods": "gradient", "dream_octaves": 1, "dream_steps": 1}
    # a user's own index.html in the folder: refused before any work, nothing written
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>my page</p>")
    with pytest.raises(CnnvizError, match="cnnviz did not write it"):
        cnnviz.gallery(loaded, "sample:chelsea", [*OddNames.NAMES, "x:y"], output=site, **settings)
    assert sorted(p.name for p in site.iterdir()) == ["index.html"]
    (site / "index.html").unlink()
    built = cnnviz.gallery(loaded, "sample:chelsea", [*OddNames.NAMES, "x:y"], output=site, **settings)
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


class HashNames(nn.Module):
    """Convolutions named with ``#``: ``a#b`` (no call number in it) and ``x#2``, a module of its
    own beside the ReLU ``x`` (a name like the second call of ``x``, which runs once), with 6
    channels to ``x``'s 4; the output is a map, not class scores."""

    def __init__(self):
        super().__init__()
        self.add_module("a#b", nn.Conv2d(3, 4, 3, padding=1))
        self.add_module("x", nn.ReLU())
        self.add_module("x#2", nn.Conv2d(4, 6, 3, padding=1))

    def forward(self, x):
        for name in ("a#b", "x", "x#2"):
            x = getattr(self, name)(x)
        return x


def test_layers_named_with_a_hash_are_in_the_default_gallery_as_themselves(tmp_path):
    torch.manual_seed(0)
    loaded = cnnviz.load_model(HashNames(), input_size=(24, 24))
    settings = {"max_channels": 1, "unit_renders": 0, "diverse": 1, "exemplars": 1, "steps": 1, "max_classes": 0,
                "activation_images": 1, "attribution_images": 1, "methods": "gradient", "dream_octaves": 1,
                "dream_steps": 1}
    site = cnnviz.gallery(loaded, "sample:chelsea", output=tmp_path / "site", **settings)
    assert not site.failed
    assert json.loads((tmp_path / "site" / "manifest.json").read_text())["layers"] == ["a#b", "x#2"]
    assert {f["layer"] for f in site.figures if f["kind"] == "kernels"} == {"a#b", "x#2"}
    # x#2 is its own module, not the second call of x: its own output and channels
    page = html.unescape((tmp_path / "site" / layer_page("x#2")).read_text())
    assert "output 6x24x24" in page and "1 of 6 units" in page, page
    # each module's row in the index's layer table links to its own page (x has none)
    index = (tmp_path / "site" / "index.html").read_text()
    rows = {html.unescape(name): row for row, name in re.findall(r"(<tr[^>]*><td>(?:<a [^>]*>)?([^<]*)(?:</a>)?</td>.*?</tr>)", index)}
    assert f'href="{layer_page("a#b")}"' in rows["a#b"] and f'href="{layer_page("x#2")}"' in rows["x#2"]
    assert "href" not in rows["x"], rows


def test_images_given_as_tensors_and_pil_images(tmp_path):
    loaded = cnnviz.load_model("builtin:photos")
    torch.manual_seed(0)
    images = [torch.rand(3, 40, 48), (torch.rand(3, 32, 32) * 255).to(torch.uint8), cnnviz.samples.image("coffee")]
    settings = {"max_channels": 1, "steps": 1, "max_classes": 0, "activation_images": 3, "attribution_images": 1,
                "methods": "gradient", "dream_octaves": 1, "dream_steps": 1}
    first = cnnviz.gallery(loaded, images, ["features.0"], output=tmp_path / "site", **settings)
    assert not first.failed
    kept = sorted((tmp_path / "site" / "data" / "inputs").glob("*.png"))
    assert len(kept) == 3 and json.loads((tmp_path / "site" / "manifest.json").read_text())["images"]["count"] == 3
    # the files hold the images (8-bit): the first tensor, to within rounding
    np.testing.assert_allclose(np.asarray(Image.open(kept[0])) / 255, images[0].permute(1, 2, 0).numpy(), atol=0.5 / 255 + 1e-6)
    again = cnnviz.gallery(loaded, images, ["features.0"], output=tmp_path / "site", **settings)
    assert again.done == 0
    with pytest.raises(CnnvizError, match="in \\[0, 1\\]"):
        cnnviz.gallery(loaded, [torch.rand(3, 8, 8) * 4], ["features.0"], output=tmp_path / "other", **settings)
    assert not (tmp_path / "other").exists()


def test_a_gallery_written_before_the_record_of_written_files_is_updated(tmp_path):
    loaded = cnnviz.load_model("builtin:photos")
    settings = {"max_channels": 1, "steps": 1, "max_classes": 0, "activation_images": 1, "attribution_images": 1,
                "methods": "gradient", "dream_octaves": 1, "dream_steps": 1}
    site = tmp_path / "site"
    first = cnnviz.gallery(loaded, "sample:chelsea", ["features.0"], output=site, **settings)
    for record in site.rglob(RECORD):  # as an older cnnviz left it: no record of written files
        record.unlink()
    (site / "notes.txt").write_text("mine")
    again = cnnviz.gallery(loaded, "sample:chelsea", ["features.0"], output=site, **settings, force=True)
    assert again.done == first.done and (site / "notes.txt").read_text() == "mine"
    # a folder that only looks like a gallery (no job records) is not adopted
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.html").write_text("<p>mine</p>")
    (other / "manifest.json").write_text('{"cnnviz": "0.1.0"}')
    with pytest.raises(CnnvizError, match="cnnviz did not write it"):
        cnnviz.gallery(loaded, "sample:chelsea", ["features.0"], output=other, **settings)


def test_the_pattern_models_classes_page_says_what_each_class_means(tmp_path):
    """builtin:patterns: each class's render beside a fresh pattern of that class, both with the
    model's probability, and the class's meaning (class_info); attributions of the top two."""
    patterns = cnnviz.load_model("builtin:patterns")
    site = cnnviz.gallery(patterns, "sample:chelsea", ["features.0"], output=tmp_path / "site", max_channels=1, unit_renders=0,
                          steps=2, class_steps=48, max_classes=11, activation_images=1, attribution_images=1,
                          methods=("gradient",), classes=("top2",), dream_octaves=1, dream_steps=1)
    assert not site.failed
    page = html.unescape((tmp_path / "site" / "classes.html").read_text())
    info = cnnviz.zoo.info("patterns")["class_info"]
    record = json.loads(next((tmp_path / "site" / ".cnnviz").glob("classes-*.json")).read_text())["data"]["classes"]
    for index, name in enumerate(patterns.class_names):
        block = page[page.index(f"<h2>{name}"):]
        block = block[:block.index("</section>")]
        assert info[name]["description"] in block and f"a generated {name}" in block
        entry = record[str(index)]
        # the probabilities printed are the model's on the files shown (the render as saved)
        render = np.asarray(Image.open(tmp_path / "site" / entry["render"]["file"]).convert("RGB"), dtype=np.float32) / 255
        inputs = patterns.preprocessing.normalize(torch.from_numpy(render).permute(2, 0, 1)[None])
        probability = torch.softmax(cnnviz.capture(patterns, inputs, ["logits"])["logits"], dim=1)[0, index]
        assert entry["probability"] == pytest.approx(float(probability), abs=0.02)
        assert f"render: {100 * entry['probability']:.1f} %" in block
        assert entry["weak"] == (entry["render"]["succeeded"] is False or entry["probability"] < 0.5)
        assert ("weak</span>" in block) == entry["weak"]
    attributions = html.unescape((tmp_path / "site" / "attributions.html").read_text())
    assert "(top1)" in attributions and "(top2)" in attributions  # one figure per class asked
    with pytest.raises(CnnvizError, match="not a class of this model"):
        cnnviz.gallery(patterns, "sample:chelsea", ["features.0"], output=tmp_path / "other", classes=("unicorn",))
    with pytest.raises(CnnvizError, match="give top1 to top3"):
        cnnviz.gallery(patterns, "sample:chelsea", ["features.0"], output=tmp_path / "other", classes=("top9",))
    assert not (tmp_path / "other").exists()


def test_every_figure_with_text_renders_its_text(built, photo_folder):
    """Figures are drawn with mathematics off (file and class names go into titles as they are):
    no tick label, title or caption of the gallery's figures is left as raw mathtext."""
    import matplotlib
    from matplotlib.text import Text

    from cnnviz.plots.style import figure_pixels

    photos = built[0]
    stats = cnnviz.statistics(photos, str(photo_folder), ["features.0", "features.10"])
    results = cnnviz.attributions(photos, str(photo_folder / "chelsea.png"), methods=["gradient", "gradcam"])
    figures = [cnnviz.plots.statistics(stats), cnnviz.plots.channel_statistics(stats, "features.10"),
               cnnviz.plots.kernels(cnnviz.kernels(photos, "features.10", channels="0-7")),
               cnnviz.plots.overlays(results, 0)]
    with matplotlib.rc_context({"text.parse_math": False}):
        for figure in figures:
            figure_pixels(figure)  # drawn, so that the ticks have their labels
            texts = [t.get_text() for t in figure.findobj(Text) if t.get_text()]
            assert texts and not [t for t in texts if "$" in t or "\\mathdefault" in t], texts
    log_ticks = [t.get_text() for t in figures[0].axes[0].get_yticklabels() if t.get_text()]
    assert log_ticks and all(t.startswith("10") for t in log_ticks)


def test_the_render_budget_shows_as_many_units_as_their_steps_allow_and_at_least_16():
    """max_channels, unit_renders and max_classes 'auto': as many units (classes) as their renders'
    work fits (a step's work, maximize.step_cost, times the steps), at least 16 units per layer."""
    from cnnviz.analyses.feature_visualization.maximize import step_cost
    from cnnviz.site.settings import AUTO_MIN_CHANNELS, CHANNEL_BUDGET, UNIT_RENDER_BUDGET, within_budget

    photos = cnnviz.load_model("builtin:photos")
    layers = cnnviz.site.default_layers(photos)
    costs = {layer: step_cost(photos, layer) for layer in layers}
    counts = {layer: photos.module.get_submodule(layer).out_channels for layer in layers}
    # a step's work grows with depth (more layers run, on a larger canvas)
    assert [costs[layer] for layer in layers] == sorted(costs[layer] for layer in layers)

    def spent(k, steps=128):
        return steps * sum(min(c, k) * costs[layer] for layer, c in counts.items())

    caps = within_budget(counts, costs, "auto", "auto", 3)
    k = caps["max_channels"]
    assert 16 < k < 128 and spent(k) <= CHANNEL_BUDGET < spent(k + 1)  # the most that fit
    assert 1 <= caps["unit_renders"] <= 16 and 5 * spent(caps["unit_renders"]) <= UNIT_RENDER_BUDGET
    # twice the steps: fewer units; a model whose steps cost far more: the least, 16 and 1
    assert within_budget(counts, costs, "auto", "auto", 3, steps=256)["max_channels"] < k
    costly = {layer: 100 * cost for layer, cost in costs.items()}
    assert within_budget(counts, costly, "auto", "auto", 3) == {"max_channels": AUTO_MIN_CHANNELS, "unit_renders": 1}
    assert within_budget(counts, costly, 7, None, 3) == {"max_channels": 7, "unit_renders": None}


def test_a_gallery_names_the_model_by_what_it_is_not_by_a_file_path():
    from cnnviz.site.build import model_name, without_folders

    assert model_name("torchvision:mobilenet_v2", "MobileNetV2") == "torchvision:mobilenet_v2"
    assert model_name("builtin:photos", "Sequential") == "builtin:photos"
    assert model_name("/home/me/work/nets/small.py:make", "SmallNet") == "SmallNet (small.py:make)"
    assert model_name("/data/runs/model.pt", "ResNet") == "ResNet (model.pt)"
    assert model_name("mypackage.nets:make", "SmallNet") == "SmallNet (mypackage.nets:make)"
    assert model_name("", "SmallNet") == "SmallNet"
    assert without_folders("/x/y/mobilenet_v2-b0353104.pth") == "mobilenet_v2-b0353104.pth"
    assert without_folders("IMAGENET1K_V1") == "IMAGENET1K_V1" and without_folders(None) is None


def test_a_gallery_shows_itself_in_a_notebook_as_a_link_to_its_index(built):
    _, site, output, _ = built
    page = site._repr_html_()
    assert f'href="{(output / "index.html").resolve().as_uri()}"' in page and f"{len(site.units)} unit pages" in page
    assert site.to_dict()["unit_pages"] == len(site.units) and site.to_dict()["index"] == str(site.index)
    figure = site.plot(per_layer=2)
    rows = {entry["layer"] for entry in site.figures if entry["kind"] == "maximize"}
    assert len(figure.axes) == 2 * len(rows) and any(axis.images for axis in figure.axes)
