"""cnnviz.concepts: a layer's activations at every position factorised into k non-negative concepts
(cnnviz/analyses/concepts.py), the solver (concepts_nmf.py), and what the concepts say about a
model whose classes mean known things (the built-in pattern model)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cnnviz
from cnnviz.analyses.concepts_nmf import coefficients, factorise
from cnnviz.models.zoo import patterns
from untouched import assert_untouched, fingerprint


def test_the_factorisation_finds_planted_directions_again():
    """Three non-negative directions over 12 channels, each with channels of its own, mixed with
    non-negative sparse weights: found again one to one, and any mixture's coefficients too."""
    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(3, 12, generator=generator) * 0.3
    for j in range(3):
        truth[j, 4 * j:4 * j + 4] += 1  # channels only this direction uses much
    truth = truth / truth.norm(dim=1, keepdim=True)
    mixing = torch.rand(3000, 3, generator=generator) ** 4
    fit = factorise(mixing @ truth, 3)
    assert fit.error < 0.01
    assert torch.allclose(fit.directions.norm(dim=1), torch.ones(3))
    assert bool((fit.directions >= 0).all())
    similarity = fit.directions @ truth.T
    assert sorted(similarity.argmax(1).tolist()) == [0, 1, 2] and float(similarity.max(1).values.min()) > 0.99
    held_out = torch.rand(50, 3, generator=generator) @ truth
    found = coefficients(held_out, fit.directions)
    assert bool((found >= 0).all())
    torch.testing.assert_close(found @ fit.directions, held_out, atol=0.02, rtol=0)
    # a direction it cannot use gets a zero coefficient, not a negative one
    assert float(coefficients(truth[:1], fit.directions).min()) >= 0


@pytest.fixture(scope="module")
def photos():
    return cnnviz.load_model("builtin:photos")


@pytest.fixture(scope="module")
def found(photos):
    return cnnviz.concepts(photos, "samples", "features.19", k=4, importance_images=6, maps=3, exemplars=5)


def test_every_image_weighs_on_every_concept_and_the_parts_add_up(photos, found):
    assert found.directions.shape == (4, 64) and found.image_weights.shape == (17, 4)
    assert found.images[:2] == ["sample:astronaut", "sample:brick"] and len(found.images) == 17
    assert bool((found.directions >= 0).all()) and torch.allclose(found.directions.norm(dim=1), torch.ones(4))
    assert bool((found.image_weights >= 0).all())
    assert found.signed == "none" and not bool(found.shift.any())  # a ReLU's output is factorised as it is
    assert torch.equal(found.factors, found.directions)
    # the concepts are ordered by the activation they explain; with the residual they make the whole
    assert bool((found.share[:-1] >= found.share[1:]).all()) and abs(float(found.share.sum()) - 1) < 0.05
    # four concepts of a 64-channel ReLU layer leave much unexplained (measured 0.67); the error over
    # every image is that of the positions fitted on
    assert 0 < found.error < 0.8 and abs(found.error - found.fit_error) < 0.1
    # an image's weight is its mean coefficient: its map's mean, for the images whose maps are kept
    torch.testing.assert_close(found.maps.mean((2, 3)), found.image_weights[:3])
    # the weights agree with the activations expressed on the directions directly
    values = cnnviz.capture(photos, cnnviz.inputs.prepare(cnnviz.samples.image("chelsea"), photos.preprocessing),
                            "features.19")["features.19"]
    direct = coefficients(values.permute(0, 2, 3, 1).reshape(-1, 64), found.directions).mean(0)
    torch.testing.assert_close(direct, found.image_weights[found.images.index("sample:chelsea")], atol=1e-4, rtol=1e-3)


def test_exemplars_are_where_each_concept_is_strongest(found):
    assert found.exemplar_values.shape == (4, 5) and found.exemplar_crops.shape[:3] == (4, 5, 3)
    assert found.exemplar_crops.dtype == torch.uint8 and int(found.exemplar_crops.float().std()) > 0
    for j in range(4):
        values = found.exemplar_values[j]
        assert bool((values[:-1] >= values[1:]).all())  # best first
        images = found.exemplar_images[j].tolist()
        assert len(set(images)) == len(images)  # each image once, at its strongest position
        # the best exemplar's value is the largest coefficient over every position of the maps kept
        assert float(values[0]) >= float(found.maps[:, j].max()) - 1e-5
        # the receptive field of the exemplar's position, in the input (features.19: 32 px, clipped at the edges)
        top, left, bottom, right = found.exemplar_boxes[j, 0].tolist()
        row, column = found.exemplar_positions[j, 0].tolist()
        assert 0 <= top <= row * 4 <= bottom < 64 and 0 <= left <= column * 4 <= right < 64
        assert bottom - top + 1 <= 32 and right - left + 1 <= 32
        if images[0] < 3:
            row, column = found.exemplar_positions[j, 0].tolist()
            assert float(found.maps[images[0], j, row, column]) == pytest.approx(float(values[0]), rel=1e-4)


def test_importance_deletion_and_fidelity_are_measured_on_the_first_images(found):
    assert found.importance.shape == found.deletion.shape == (6, 4) and found.random_deletion.shape == (6,)
    assert found.targets[0] == "logits:0 (astronaut)" and len(found.targets) == 6
    assert found.attribution_maps.shape == (3, 4, 16, 16)
    # gradient x coefficient summed over positions is the importance
    torch.testing.assert_close(found.attribution_maps.sum((2, 3)), found.importance[:3])
    assert found.kept.shape == found.target_values.shape == (6,)
    assert found.fidelity == pytest.approx(float(found.kept.sum() / found.target_values.sum()))
    # removing an image's most important concept costs its class more than a random direction carrying the
    # same coefficients, in most images
    top = found.most_important()
    concept = found.deletion[torch.arange(6), top]
    random = found.random_deletion
    assert float((concept > random).float().mean()) >= 0.5 and float(concept.mean()) > float(random.mean())
    check = found.deletion_check()
    assert check["images"] == 6 and check["concept"] == pytest.approx(float(concept.mean()))
    assert check["beats"] == pytest.approx(float((concept > random).float().mean()))


def test_the_result_shows_itself_and_serialises(found):
    data = json.loads(json.dumps(found.to_dict()))
    assert [one["image"] for one in data["images"]] == found.images
    np.testing.assert_allclose([one["weights"] for one in data["images"]], found.image_weights.numpy(), atol=1e-5)
    np.testing.assert_allclose(data["directions"], found.directions.numpy(), atol=1e-5)
    assert [c["top_channels"][0]["channel"] for c in data["concepts"]] == [found.top_channels(j)[0][0] for j in range(4)]
    assert repr(found) == "Concepts(features.19: 4 concepts of 17 images; error %.2f)" % found.error
    png = found._repr_png_()
    assert png.startswith(b"\x89PNG")
    picture = cnnviz.plots.figure_pixels(found.plot(concepts=[0, 1], exemplars=3, images=2))
    assert picture.std() > 10  # drawn, not blank


def test_an_earlier_results_directions_express_new_images(photos, found):
    again = cnnviz.concepts(photos, ["sample:chelsea", "sample:coffee"], "features.19", directions=found,
                            importance_images=0)
    assert torch.equal(again.directions, found.directions) and again.images == ["sample:chelsea", "sample:coffee"]
    for name, weights in zip(again.images, again.image_weights):
        torch.testing.assert_close(weights, found.image_weights[found.images.index(name)], atol=1e-5, rtol=1e-4)
    assert again.importance.shape == (0, 4) and again.fidelity != again.fidelity  # none measured: nan
    with pytest.raises(cnnviz.CnnvizError, match="these concepts are of features.19, not features.13"):
        cnnviz.concepts(photos, "sample:chelsea", "features.13", directions=found)


def test_a_layer_that_goes_negative_is_split_or_shifted(photos):
    """A batch normalisation's output (before its ReLU) is negative in places. By default each
    vector's positive and negative parts are factorised side by side, and a direction is the
    positive part less the negative one; with signed="shift", each channel is raised by its least
    value over the images fitted on, and the directions stay non-negative."""
    images = ["sample:chelsea", "sample:coffee", "sample:astronaut"]
    values = cnnviz.capture(photos, cnnviz.inputs.prepare(cnnviz.samples.image("chelsea"), photos.preprocessing),
                            "features.18")["features.18"]
    assert float(values.min()) < 0
    split = cnnviz.concepts(photos, images, "features.18", k=3, importance_images=2, maps=1)
    assert split.signed == "split" and not bool(split.shift.any())
    assert split.factors.shape == (3, 128) and bool((split.factors >= 0).all())
    torch.testing.assert_close(split.directions, split.factors[:, :64] - split.factors[:, 64:])
    assert bool((split.directions < 0).any()) and split.error < 0.7
    # the coefficients of chelsea's positions, on the factors, rebuild its activation less the residual
    positions = values.permute(0, 2, 3, 1).reshape(-1, 64)
    weights = coefficients(torch.cat([positions.clamp_min(0), (-positions).clamp_min(0)], 1), split.factors)
    torch.testing.assert_close(weights.mean(0), split.image_weights[0], atol=1e-4, rtol=1e-3)
    assert float((positions - weights @ split.directions).norm() / positions.norm()) < 0.8
    shifted = cnnviz.concepts(photos, images, "features.18", k=3, importance_images=2, maps=1, signed="shift")
    assert shifted.signed == "shift" and bool((shifted.shift > 0).any()) and bool((shifted.shift >= 0).all())
    assert torch.equal(shifted.directions, shifted.factors) and bool((shifted.directions >= 0).all())
    assert float((values + shifted.shift[None, :, None, None]).min()) >= -1e-5
    # a layer that is never negative is factorised as it is, whatever signed says
    assert cnnviz.concepts(photos, images, "features.19", k=2, importance_images=0, signed="shift").signed == "none"
    with pytest.raises(cnnviz.CnnvizError, match="signed takes split or shift, not 'both'"):
        cnnviz.concepts(photos, images, "features.18", signed="both")


def test_bad_input_is_one_line_and_the_model_is_untouched(photos, tmp_path):
    before = fingerprint(photos.module)
    cases = [
        (dict(layer="features.18", k=0), "k is the number of concepts: a whole number of at least 1"),
        (dict(layer="features.18", k=65), "k=65 is more than the 64 channels of features.18; give k at most 64"),
        (dict(layer="classifier.1"), "concepts need a layer with spatial maps .N x C x H x W.; classifier.1 gives N x"),
        (dict(layer="features.18:3"), "concepts are found over a whole layer's channels: give 'features.18'"),
        (dict(layer="logits"), "not the model's output"),
        (dict(layer="features.18", score="features.2:1"), "comes before features.18 in the network"),
        (dict(layer="features.18", score="features.20"), "is a whole layer; name one unit"),
        (dict(layer="featurs.18"), "features.18"),
        (dict(layer="features.18", images=str(tmp_path)), "holds no files; put images in it"),
        (dict(layer="features.18", images=str(tmp_path / "missing")), "missing"),
    ]
    for options, message in cases:
        images = options.pop("images", "sample:chelsea")
        with pytest.raises(cnnviz.CnnvizError, match=message):
            cnnviz.concepts(photos, images, **options)
        assert_untouched(photos.module, before)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def pattern_concepts():
    """The pattern model's last convolution (its ReLU), k = its 11 classes, fitted on 60 images of
    each (100,000 of their 380,160 positions: with 20 images of each, which concepts the texture
    classes share moved with the sample of positions)."""
    model = cnnviz.load_model("builtin:patterns")
    images, labels = patterns.generate(60 * 11, seed=1)
    before = fingerprint(model.module)
    found = cnnviz.concepts(model, cnnviz.pixels(images), "features.4", k=11, importance_images=len(images), maps=0,
                            fit_images=len(images), fit_positions=100_000)
    assert_untouched(model.module, before)
    # each class's top concept: the one that contributes most to the class, over its images
    top = torch.stack([found.importance[labels == c].mean(0) for c in range(11)]).argmax(1)
    fresh, fresh_labels = patterns.generate(30 * 11, seed=7)
    again = cnnviz.concepts(model, cnnviz.pixels(fresh), "features.4", directions=found, importance_images=len(fresh),
                            maps=0)
    return found, top, again, fresh_labels


def test_removing_a_class_top_concept_costs_the_class_most(pattern_concepts):
    """Over fresh images: removing its class's top concept from the activation drops an image's
    class logit more than removing any other concept, in at least 90 % of them (measured 95.8 %), and
    removing its most important concept beats removing a stand-in with the same coefficients on
    other channels in at least 90 % (measured 97.9 %)."""
    found, top, again, labels = pattern_concepts
    assert again.targets[0] == f"logits:{int(labels[0])} ({patterns.CLASSES[int(labels[0])]})"  # the model is right
    drop = again.deletion[torch.arange(len(labels)), top[labels]]
    assert float((drop >= again.deletion.max(1).values).float().mean()) >= 0.9
    assert again.deletion_check()["beats"] >= 0.9
    assert 0.5 < again.fidelity < 1.0 and found.error < 0.45


def test_deletion_and_fidelity_equal_the_network_run_by_hand(pattern_concepts):
    """The pattern model is a sequence (features, pool, classifier): the class logit with the
    layer's activation replaced, computed here by running the rest of the network by hand."""
    model = cnnviz.load_model("builtin:patterns").module
    found, _, again, labels = pattern_concepts
    fresh, _ = patterns.generate(30 * 11, seed=7)
    inputs = cnnviz.load_model("builtin:patterns").preprocessing.normalize(fresh[:6])
    with torch.no_grad():
        values = model.features[:5](inputs)

        def logit(replacement):
            return model.classifier(model.pool(model.features[5:](replacement)))[torch.arange(6), labels[:6]]

        base = logit(values)
        positions = values.permute(0, 2, 3, 1).reshape(-1, values.shape[1])
        weights = coefficients(positions, found.directions).reshape(6, 24, 24, 11).permute(0, 3, 1, 2)
        reconstruction = torch.einsum("nkhw,kc->nchw", weights, found.directions)
        torch.testing.assert_close(again.target_values[:6], base, atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(again.kept[:6], logit(reconstruction), atol=1e-4, rtol=1e-3)
        for j in (0, 5):
            removed = values - weights[:, j, None] * found.directions[j][None, :, None, None]
            torch.testing.assert_close(again.deletion[:6, j], base - logit(removed), atol=1e-4, rtol=1e-3)


def test_each_class_is_dominated_by_one_concept(pattern_concepts):
    """Purity: the share of a class's fresh images whose most important concept is the class's top
    concept. Measured 0.77 for the checkerboard, 0.83 to 1.0 for the other ten, 0.95 on average.
    NMF shares concepts between similar classes here (the gratings and rings use the same few), and
    splits the checkerboard mostly by colour (boards whose mean red is above about 0.5 mostly take
    one concept, the others another: the network's channels there are colour-selective); with 20 fitted
    images per class the gratings split too, by the sample of positions (0.3 to 0.73). By image
    weight instead of importance the texture classes reach only 0.3 to 0.5: the background concepts
    weigh most everywhere."""
    _, top, again, labels = pattern_concepts
    dominant = again.most_important()
    purity = [float((dominant[labels == c] == top[c]).float().mean()) for c in range(11)]
    assert sum(p >= 0.8 for p in purity) >= 10, purity
    assert min(purity) >= 0.7 and float(np.mean(purity)) >= 0.93, purity
    # the blobs and the plain background, each one concept of its own
    blobs = [patterns.CLASSES.index(name) for name in ("red_blob", "green_blob", "blue_blob", "plain")]
    assert len({int(top[c]) for c in blobs}) == 4 and all(purity[c] >= 0.95 for c in blobs)
