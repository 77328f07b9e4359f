"""The layer reference grammar and its error messages."""
from __future__ import annotations

import pytest
import torchvision
from torch import nn

import cnnviz
from cnnviz import CnnvizError


@pytest.fixture(scope="module")
def resnet():
    return torchvision.models.resnet18()


@pytest.mark.parametrize(
    ("text", "layer", "call", "channel", "position"),
    [
        ("layer1.0.conv1", "layer1.0.conv1", 1, None, None),
        ("layer1.0.relu#2", "layer1.0.relu", 2, None, None),
        ("layer1.0.conv1:5", "layer1.0.conv1", 1, 5, None),
        ("layer1.0.conv1:5@7,3", "layer1.0.conv1", 1, 5, (7, 3)),
        ("layer1.0.relu#2:5@7,3", "layer1.0.relu", 2, 5, (7, 3)),
        (" fc:3 ", "fc", 1, 3, None),
        ("logits", "", 1, None, None),
        ("output:281", "", 1, 281, None),
        ("logits:281", "", 1, 281, None),
    ],
)
def test_grammar(resnet, text, layer, call, channel, position):
    ref = cnnviz.layer_ref(resnet, text)
    assert (ref.layer, ref.call, ref.channel, ref.position) == (layer, call, channel, position)
    assert ref.module is (resnet if layer == "" else resnet.get_submodule(layer))
    # The canonical text parses back to the same reference.
    assert cnnviz.layer_ref(resnet, str(ref)) == ref


def test_class_names_name_outputs(resnet):
    loaded = cnnviz.LoadedModel(resnet, class_names=[f"class {i}" for i in range(999)] + ["tabby"])
    assert cnnviz.layer_ref(loaded, "logits:tabby").channel == 999
    assert cnnviz.layer_ref(loaded, "Tabby").channel == 999  # a bare class name, any case
    assert cnnviz.layer_ref(resnet, "logits:class 3", class_names=loaded.class_names).channel == 3
    with pytest.raises(CnnvizError, match="no class named 'tabbby'; did you mean 'tabby'"):
        cnnviz.layer_ref(loaded, "logits:tabbby")
    with pytest.raises(CnnvizError, match="has no class names.*logits:3"):
        cnnviz.layer_ref(resnet, "logits:tabby")


def test_unknown_layer_lists_the_three_closest(resnet):
    with pytest.raises(CnnvizError) as error:
        cnnviz.layer_ref(resnet, "layer1.0.conv")
    message = str(error.value)
    assert "ResNet has no layer 'layer1.0.conv'" in message
    suggested = message.split("did you mean ")[1].split("?")[0]
    assert suggested.count("'") == 6 and "'layer1.0.conv1'" in suggested and "'layer1.0.conv2'" in suggested


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty layer reference"),
        ("layer1.0.conv1:64", r"channel 64 is out of range for layer1.0.conv1, which has 64 channels \(valid: 0-63\)"),
        ("fc:1000", r"valid: 0-999"),
        ("bn1:70", r"bn1, which has 64 channels"),
        ("layer1.0.conv1:x", "must be a number"),
        ("layer1.0.conv1:-1", "counted from 0"),
        ("layer1.0.relu#0", "counted from 1"),
        ("layer1.0.relu#two", "whole number"),
        ("layer1.0.conv1@3,3", "a position needs a channel"),
        ("layer1.0.conv1:3@a,b", "non-negative numbers"),
    ],
)
def test_bad_references_fail_with_the_fix(resnet, text, message):
    with pytest.raises(CnnvizError, match=message):
        cnnviz.layer_ref(resnet, text)


def test_ranges_known_only_after_a_run_are_checked_against_shapes(resnet):
    ref = cnnviz.layer_ref(resnet, "layer1.0.relu:70")  # a ReLU does not know its channel count
    with pytest.raises(CnnvizError, match=r"channel 70 is out of range.*valid: 0-63"):
        ref.check((1, 64, 56, 56))
    with pytest.raises(CnnvizError, match=r"whose maps are 56x56 \(valid: 0-55, 0-55\)"):
        cnnviz.layer_ref(resnet, "layer1.0.relu:5@56,0").check((1, 64, 56, 56))
    with pytest.raises(CnnvizError, match="position needs 2 numbers"):
        cnnviz.layer_ref(resnet, "layer1.0.relu:5@3").check((1, 64, 56, 56))


def test_module_objects_and_non_references(resnet):
    assert cnnviz.layer_ref(resnet, resnet.layer2[1].conv1).layer == "layer2.1.conv1"
    assert cnnviz.layer_ref(resnet, resnet).is_output
    with pytest.raises(CnnvizError, match="not part of this ResNet"):
        cnnviz.layer_ref(resnet, nn.ReLU())
    with pytest.raises(CnnvizError, match="must be a string or a module"):
        cnnviz.layer_ref(resnet, 3)
    with pytest.raises(CnnvizError, match="expected a torch.nn.Module"):
        cnnviz.layer_ref("resnet18", "fc")


def test_a_module_named_like_an_output_keeps_its_own_name():
    model = nn.Sequential()
    model.add_module("features", nn.Conv2d(3, 4, 1))
    model.add_module("logits", nn.Conv2d(4, 2, 1))
    assert cnnviz.layer_ref(model, "logits").layer == "logits"
    assert cnnviz.layer_ref(model, "output").is_output


def test_class_names_with_grammar_characters(resnet):
    names = [f"class {i}" for i in range(1000)]
    names[7], names[8] = "ratio 1:2", "at@home"
    assert cnnviz.layer_ref(resnet, "logits:ratio 1:2", class_names=names).channel == 7
    assert cnnviz.layer_ref(resnet, "logits:at@home", class_names=names).channel == 8
    assert cnnviz.layer_ref(resnet, "at@home", class_names=names).channel == 8


def test_non_ascii_digits_are_not_numbers(resnet):
    for text in ("fc:\u00b2", "layer1.0.conv1:1@\u00b2,3", "layer1.0.relu#\u00b2"):
        with pytest.raises(CnnvizError):
            cnnviz.layer_ref(resnet, text)


def test_a_reference_of_another_model_is_refused(resnet):
    ref = cnnviz.layer_ref(resnet, "layer1.0.conv1:3")
    assert cnnviz.layer_ref(resnet, ref) is ref
    other = torchvision.models.resnet18()
    with pytest.raises(CnnvizError, match="resolved against another model"):
        cnnviz.layer_ref(other, ref)


def test_every_module_name_is_a_layer_also_with_grammar_characters():
    # onnx2torch names modules "Conv@17"; fx and users give names with ':' and '#'
    model = nn.Sequential()
    model.add_module("Conv@17", nn.Conv2d(3, 4, 3))
    model.add_module("a:b", nn.ReLU())
    model.add_module("x#2", nn.ReLU())
    cases = {
        "Conv@17": ("Conv@17", None, None), "Conv@17:2": ("Conv@17", 2, None),
        "Conv@17:2@1,3": ("Conv@17", 2, (1, 3)), "a:b": ("a:b", None, None), "a:b:1": ("a:b", 1, None),
        "x#2": ("x#2", None, None), "x#2#1:0": ("x#2", 0, None),
    }
    for text, (layer, channel, position) in cases.items():
        ref = cnnviz.layer_ref(model, text)
        assert (ref.layer_text, ref.channel, ref.position) == (layer, channel, position), text
        assert cnnviz.layer_ref(model, str(ref)).layer_text == layer  # the reference's text parses back
    with pytest.raises(CnnvizError, match="did you mean 'Conv@17'"):
        cnnviz.layer_ref(model, "Conv@1")


def test_split_call_reads_a_layer_with_its_call_as_layer_ref_does():
    from cnnviz.core.references import split_call

    model = nn.Sequential()
    for name in ("a#b", "x", "x#2", "y#z#3"):
        model.add_module(name, nn.ReLU())
    names = {name for name, _ in model.named_modules()}
    for text in ("a#b", "a#b#2", "x", "x#2", "x#3", "x#2#4", "y#z#3", "y#z#3#12"):
        ref = cnnviz.layer_ref(model, text)
        assert split_call(text, names) == (ref.layer, ref.call), text
        assert split_call(ref.layer_text, names) == (ref.layer, ref.call), text
    # without the module names, only a trailing '#' and digits is a call
    assert split_call("act#2") == ("act", 2) and split_call("a#b") == ("a#b", 1) and split_call("a#b#10") == ("a#b", 10)
    assert split_call("#3") == ("#3", 1) and split_call("x#٣") == ("x#٣", 1)  # no name; not an ASCII digit


def test_a_misspelt_class_name_is_suggested_as_a_class():
    photos = cnnviz.load_model("builtin:photos")
    with pytest.raises(cnnviz.CnnvizError, match="neither a layer nor a class.*the class 'chelsea'"):
        cnnviz.layer_ref(photos.module, "chelsae", photos.class_names)
    with pytest.raises(cnnviz.CnnvizError, match="no layer 'featurs.3'; did you mean 'features.3'"):
        cnnviz.layer_ref(photos.module, "featurs.3", photos.class_names)
