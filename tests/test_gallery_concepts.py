"""The gallery's concepts pages (issue 31): a page per chosen layer (default: the last two of the
gallery's layers with spatial maps; builtin:photos' default gallery: features.21 and features.24,
8x8 maps) with each concept's render, strongest image regions, maps over images, share, top channels
linked to their units' pages, importance and the deletion check; linked from the index and the
layer page; each unit's page names the concepts that use the unit; reused on a re-run, skipped
with concept_layers=() (--concept-layers 0)."""
from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import cnnviz
from cnnviz import CnnvizError
from cnnviz.cli.main import main
from cnnviz.core.executor import executor
from cnnviz.site.content import concepts_page, layer_page
from cnnviz.site.plan import concept_layers, plan_gallery
from cnnviz.site.settings import CONCEPT_TOP_CHANNELS, CONCEPT_USES, GallerySettings

IMAGES = ["sample:chelsea", "sample:coffee", "sample:astronaut"]
LAYERS = ["features.21", "features.24"]
QUICK = dict(max_channels=6, unit_renders=0, diverse=1, exemplars=2, steps=2, max_classes=0, activation_images=1,
             attribution_images=1, methods=("gradient",), dream_octaves=1, dream_steps=1, concepts_k=3)
QUICK_CLI = [*(arg for image in IMAGES for arg in ("-i", image)), "-l", ",".join(LAYERS), "--max-channels", "6",
             "--unit-renders", "0", "--diverse", "1", "--exemplars", "2", "--steps", "2", "--max-classes", "0",
             "--activation-images", "1", "--attribution-images", "1", "--methods", "gradient", "--dream-octaves", "1",
             "--dream-steps", "1", "--concepts-k", "3"]
CONCEPT_KINDS = {"concepts", "concept_render", "concept_exemplars", "concept_maps"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    photos = cnnviz.load_model("builtin:photos")
    output = tmp_path_factory.mktemp("concepts") / "site"
    site = cnnviz.gallery(photos, IMAGES, LAYERS, output=output, **QUICK)
    assert not site.failed, site.failed
    return photos, site, output


def record(output: Path, layer: str) -> dict:
    return json.loads(next((output / ".cnnviz").glob(f"concepts-{layer}-*.json")).read_text())["data"]


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def uses(direction: torch.Tensor) -> dict[int, float]:
    """The units a concept uses by the gallery's rule: its largest weights, and any near the largest."""
    order = torch.argsort(direction, descending=True)
    return {int(c): float(direction[c]) for rank, c in enumerate(order)
            if direction[c] > 0 and (rank < CONCEPT_TOP_CHANNELS or direction[c] >= CONCEPT_USES * direction.max())}


def test_the_default_concept_layers_and_mistakes(tmp_path):
    photos = cnnviz.load_model("builtin:photos")
    plan = plan_gallery(photos, "sample:chelsea", None, tmp_path / "plan", GallerySettings(), executor())
    assert plan.concept_layers == ("features.21", "features.24")  # of the 8 convolutions, the last two
    assert concept_layers(plan, ()) == [] and concept_layers(plan, ("features.3", "features.3")) == ["features.3"]
    # a layer without spatial maps (pool: 128x1x1) is passed over by the default
    pooled = plan_gallery(photos, "sample:chelsea", ["features.24", "pool"], tmp_path / "pooled", GallerySettings(),
                          executor())
    assert pooled.concept_layers == ("features.24",)
    for layers, asked, message in [(["features.3"], ("features.24",), "not among the gallery's layers"),
                                   (["features.3", "pool"], ("pool",), "pool has no spatial maps"),
                                   (["features.3"], 5, "concept_layers takes layer names")]:
        with pytest.raises(CnnvizError, match=message):
            cnnviz.gallery(photos, "sample:chelsea", layers, output=tmp_path / "out", concept_layers=asked)
    assert not (tmp_path / "out").exists()  # said before any work
    result = CliRunner().invoke(main, ["gallery", "--concept-layers", "features.99", "-o", str(tmp_path / "cli")])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and "features.99" in result.stderr


def test_a_concepts_page_per_layer_with_real_pictures(built):
    _, site, output = built
    for layer in LAYERS:
        page = (output / concepts_page(layer)).read_text()
        data = record(output, layer)
        assert data["k"] == 3 and len(data["concepts"]) == 3 and data["images"] == len(IMAGES)
        figures = [f for f in site.figures if f["layer"] == layer and f["kind"] in CONCEPT_KINDS]
        assert sorted(f["kind"] for f in figures) == sorted(["concepts"] + 3 * ["concept_render", "concept_exemplars",
                                                                               "concept_maps"])
        for figure in figures:
            path = output / figure["file"]
            assert figure["file"] in page, figure["file"]
            if path.suffix == ".png":
                assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            with Image.open(path) as picture:
                pixels = np.asarray(picture.convert("RGB"), dtype=np.float64)
            assert pixels.std() > 3 and min(pixels.shape[:2]) >= 16, figure["file"]  # content, not a blank
            if figure["kind"] == "concept_render":
                concept = data["concepts"][figure["concept"]]
                assert list(pixels.shape[:2]) == concept["render"]["size"] and figure["thumbnail"] in page
        text = text_of(page)
        for concept in data["concepts"]:
            # its share, its importance and the deletion against a random direction, in words
            assert f"{100 * concept['share']:.0f} %" in text and f"{concept['importance']:.3g}" in text
            if concept["random_deletion"] is None:
                assert f"{concept['deletion']:.3g} (no baseline: it is no image's most important concept)" in text
            else:
                more = "more" if concept["deletion"] > concept["random_deletion"] else "not more"
                assert (f"{concept['deletion']:.3g} (baseline {concept['random_deletion']:.3g}: {more} than removing "
                        "as much elsewhere)") in text
            # its exemplars named with their images
            assert all(crop["image"].removeprefix("sample:") in text for crop in concept["exemplars"]["crops"])
        # the units each concept uses link to their pages where they have one
        shown = {int(p.stem) for p in (output / "units" / layer).glob("*.html")}
        linked = {int(c) for c in re.findall(rf'href="units/{re.escape(layer)}/(\d+)\.html"', page)}
        used = {c for concept in data["concepts"] for c, _ in concept["uses"]}
        assert linked == used & shown and linked
        assert f"reconstruction error over every position is {data['error']:.3g}" in text
        check = data["deletion_check"]  # the layer's deletion check, in words
        assert f"in {100 * check['beats']:.0f} % of the {len(IMAGES)} images" in text


def test_the_index_and_the_layer_pages_link_to_the_concepts_pages(built):
    _, _, output = built
    index = (output / "index.html").read_text()
    for layer in LAYERS:
        assert f'href="{concepts_page(layer)}"' in index
        page = (output / layer_page(layer)).read_text()
        assert f'href="{concepts_page(layer)}"' in page and f'href="{concepts_page(layer)}#concept-2"' in page
        concepts = (output / concepts_page(layer)).read_text()
        assert f'href="{layer_page(layer)}"' in concepts and 'id="concept-2"' in concepts
        for target in re.findall(r'(?:href|src)="([^"#]+)', concepts):
            assert (output / target).is_file(), target
    assert "the last two with spatial maps: features.21, features.24" in index  # the settings say which


def test_a_unit_page_names_the_concepts_that_weigh_it_most(built):
    photos, _, output = built
    # the job's concepts are cnnviz.concepts' on the same images
    found = cnnviz.concepts(photos, IMAGES, "features.24", k=3, exemplars=2, maps=4, importance_images=16, seed=0)
    saved = json.loads((output / "data" / "concepts" / "features.24.json").read_text())
    torch.testing.assert_close(torch.tensor(saved["directions"]), found.directions, atol=1e-5, rtol=1e-4)
    named = 0
    for layer in LAYERS:
        saved = json.loads((output / "data" / "concepts" / f"{layer}.json").read_text())
        directions = torch.tensor(saved["directions"])
        for path in sorted((output / "units" / layer).glob("*.html")):
            channel = int(path.stem)
            page = path.read_text()
            section = page[page.index('<section id="concepts">'):]
            section = section[:section.index("</section>")]
            listed = {int(j): (w, int(r)) for j, w, r in
                      re.findall(r'concept (\d+)<span class="muted"> ([-+\d.e]+) \(#(\d+)\)', section)}
            expected = {j for j in range(len(directions)) if channel in uses(directions[j])}
            assert set(listed) == expected, (layer, channel)
            for j, (weight, rank) in listed.items():
                # the concept's direction weighs the unit among its most: its weight and its rank in it
                assert weight == f"{float(directions[j, channel]):.3g}"
                assert rank == int((directions[j] > directions[j, channel]).sum()) + 1
                assert rank <= CONCEPT_TOP_CHANNELS or directions[j, channel] >= CONCEPT_USES * directions[j].max()
                assert f'href="../../{concepts_page(layer)}#concept-{j}"' in section
            named += bool(listed)
            if not listed:
                assert "gives this unit one of its largest weights" in section
    assert named >= 3  # units of both layers are used by a concept


def test_a_rerun_reuses_the_concepts_and_concept_layers_0_skips_them(built, tmp_path):
    photos, site, output = built
    again = cnnviz.gallery(photos, IMAGES, LAYERS, output=output, **QUICK)
    assert again.done == 0 and again.reused == site.done
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    result = CliRunner().invoke(main, ["gallery", *QUICK_CLI, "--concept-layers", "0", "-o", str(copy)])
    assert result.exit_code == 0, result.output
    assert f"; 0 jobs run, {site.done - 2} reused)" in result.stdout  # every other job is reused
    assert not list(copy.glob("concepts-*.html")) and not (copy / "data" / "concepts").exists()
    assert not list(copy.glob("figures/*/concepts")) and not list(copy.glob("thumbs/figures/*/concepts"))
    manifest = json.loads((copy / "manifest.json").read_text())
    assert not [f for f in manifest["figures"] if f["kind"] in CONCEPT_KINDS]
    assert manifest["settings"]["concept_layers"] == [] and "concepts-" not in (copy / "index.html").read_text()
    assert not any('id="concepts"' in page.read_text() for page in copy.rglob("*.html"))
