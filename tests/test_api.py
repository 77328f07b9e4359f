"""The public API has one shape: ``analysis(model, images, target, *, options) -> Result``, and
every result shows itself in a notebook, draws itself and serialises itself.

The rules are checked on every name of ``cnnviz.__all__``, so a new function or result that breaks
them fails here, not in a user's notebook."""
from __future__ import annotations

import inspect
import json
import types

import pytest
from matplotlib.figure import Figure

import cnnviz

# The positional parameters an analysis may have, in this order (any may be missing): the model,
# what it is shown (images; ``capture`` takes model inputs), and what is looked at (a layer
# reference or unit, or several). Every other option is keyword-only.
POSITIONAL = (("model",), ("images", "image", "inputs"), ("target", "layer", "layers"))

# Public functions that do not take a model, each with why.
NOT_ANALYSES = {
    "load_model": "makes the model: a spec and its weights",
    "conv_matrix": "the lecture's formula on a kernel, not on a model",
    "conv_output_size": "the lecture's output-size formula on numbers",
}


def _public():
    for name in cnnviz.__all__:
        yield name, getattr(cnnviz, name)


def _functions():
    return [(name, value) for name, value in _public()
            if callable(value) and not inspect.isclass(value) and not isinstance(value, types.ModuleType)]


def _return_class(function):
    annotation = inspect.signature(function).return_annotation
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return getattr(cnnviz, name, None) if inspect.isclass(getattr(cnnviz, name, None)) else None


def test_all_is_sorted_and_every_name_exists():
    names = list(cnnviz.__all__)
    assert names == sorted(names, key=lambda n: (n.lower(), n)), "keep cnnviz.__all__ sorted"
    assert len(set(names)) == len(names)
    missing = [name for name in names if not hasattr(cnnviz, name)]
    assert not missing
    # utilities are importable but not the surface
    for utility in ("model_guard", "read_state_dict", "resolve_device", "reuse_freed_memory", "output", "pixels",
                    "model_inputs"):
        assert hasattr(cnnviz, utility) and utility not in names


@pytest.mark.parametrize("name", [name for name, _ in _functions()])
def test_every_function_has_the_one_call_shape(name):
    function = getattr(cnnviz, name)
    signature = inspect.signature(function)
    assert signature.return_annotation is not inspect.Signature.empty, f"{name} has no return annotation"
    assert function.__doc__ and function.__doc__.strip(), f"{name} has no docstring"
    if name in NOT_ANALYSES:
        return
    positional = [p.name for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert positional and positional[0] == "model", f"{name}: the model comes first, not {positional[:1]}"
    slots = iter(POSITIONAL)
    for parameter in positional:
        for allowed in slots:
            if parameter in allowed:
                break
        else:
            pytest.fail(f"{name}({', '.join(positional)}): {parameter!r} should be keyword-only (after *); the "
                        "positional parameters are model, images, target in that order")


@pytest.mark.parametrize("name", [name for name, _ in _functions() if name not in NOT_ANALYSES])
def test_every_analysis_returns_a_result_that_shows_draws_and_serialises(name):
    result = _return_class(getattr(cnnviz, name))
    if name in ("capture", "convolutions", "probe"):  # plain values (a dict of tensors, names) or a context manager
        return
    assert result is not None, f"{name}'s return annotation is not a cnnviz result class"
    assert hasattr(result, "_repr_png_") or hasattr(result, "_repr_html_"), f"{result.__name__} does not display"
    assert callable(getattr(result, "plot", None)), f"{result.__name__} has no plot()"
    assert callable(getattr(result, "to_dict", None)), f"{result.__name__} has no to_dict()"


@pytest.fixture(scope="module")
def photos():
    return cnnviz.load_model("builtin:photos")


@pytest.fixture(scope="module")
def results(photos):
    """The results the display tests (tests/test_display.py) do not already make."""
    return {
        "predictions": cnnviz.predict(photos, ["sample:chelsea", "sample:coffee"], top=3),
        "layer table": cnnviz.layer_table(photos, receptive_fields=True),
        "connections": cnnviz.connections(photos, ["features.0", "features.3", "features.7"]),
        "receptive field": cnnviz.receptive_field(photos, "features.13"),
        "neuron's receptive field": cnnviz.receptive_field(photos, "features.13:2@3,3"),
        "receptive fields": cnnviz.receptive_fields(photos),
        "effective receptive field": cnnviz.effective_receptive_field(photos, "sample:chelsea", "features.7", max_images=1),
        "sanity check": cnnviz.sanity_check(photos, "sample:chelsea", method="gradient", stages=1),
    }


@pytest.mark.parametrize("name", ["predictions", "layer table", "connections", "receptive field",
                                  "neuron's receptive field", "receptive fields", "effective receptive field",
                                  "sanity check"])
def test_each_result_shows_draws_and_serialises(results, name):
    result = results[name]
    json.dumps(result.to_dict())  # JSON-ready
    png = result._repr_png_() if hasattr(result, "_repr_png_") else None
    page = result._repr_html_() if hasattr(result, "_repr_html_") else None
    assert (png is not None and png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000) or (page and "<table" in page)
    figure = result.plot()
    assert isinstance(figure, Figure) and figure.axes


def test_the_layer_tables_html_shows_what_its_text_shows(results):
    table = results["layer table"]
    page, text = table._repr_html_(), str(table)
    assert "<th>receptive field</th>" in page and "receptive field" in text.splitlines()[0]
    row = table["features.13"]
    assert f"<td>{row.receptive_field_text}</td>" in page and row.receptive_field_text in text
    assert text.splitlines()[-1] in page  # the footer: layers, parameters, input


def test_connections_are_one_type_and_draw_their_strengths(results):
    links = results["connections"]
    assert isinstance(links, cnnviz.Connections) and all(isinstance(link, cnnviz.Connection) for link in links)
    assert [link.linked for link in links] == [True, True]
    figure = links[0].plot()
    (image,) = figure.axes[0].images
    assert image.get_array().shape == tuple(links[0].strength.shape)
    assert float(image.get_array().max()) == pytest.approx(float(links[0].strength.max()))
    lenet = cnnviz.load_model("builtin:patterns")
    names = [row.name for row in cnnviz.layer_table(lenet)]
    conv, linear = names[0], [n for n in names if n.startswith("classifier") or n == "fc"][-1:] or ["logits"]
    [across] = cnnviz.connections(lenet, [conv, linear[0]])
    assert not across.linked and across.why and across.to_dict()["strength"] is None
    with pytest.raises(cnnviz.CnnvizError, match="not linked"):
        across.strongest_inputs(0)


def test_receptive_field_is_one_layers_and_receptive_fields_every_layers(photos, results):
    assert isinstance(results["receptive field"], cnnviz.ReceptiveField)
    assert isinstance(results["receptive fields"], cnnviz.ReceptiveFields)
    assert results["receptive fields"]["features.13"] == results["receptive field"]
    with pytest.raises(cnnviz.CnnvizError, match="receptive_fields"):
        cnnviz.receptive_field(photos, None)


def test_the_default_methods_are_one_list(photos):
    from cnnviz.cli import attribution as command
    from cnnviz.site import settings

    assert set(cnnviz.DEFAULT_METHODS) < set(cnnviz.METHODS) and len(cnnviz.DEFAULT_METHODS) == 6
    assert settings.GallerySettings().methods == cnnviz.DEFAULT_METHODS
    assert command.DEFAULT_METHODS is cnnviz.DEFAULT_METHODS
    assert cnnviz.AttributionSettings().methods == cnnviz.DEFAULT_METHODS  # what attributions() runs by default
