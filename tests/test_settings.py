"""Settings are values, and each default has one source: the settings dataclass. The functions'
keywords, the commands' options and their --help read it (checked here for every field a command
exposes), and ``maximize`` takes a settings value as well as keywords."""
from __future__ import annotations

import dataclasses
import inspect

import click
import numpy as np
import pytest
import torch

import cnnviz
from cnnviz.cli.main import main
from cnnviz.core.settings import default_of, help_of
from cnnviz.site.settings import GallerySettings


def _options(command: str) -> dict:
    return {param.name: param for param in main.commands[command].params}


# command -> (settings class, {field: the command's parameter name}, whether the help is the field's)
COMMANDS = {
    "maximize": (cnnviz.RenderSettings, {"size": "size", "steps": "steps", "lr": "lr", "param": "param", "seed": "seed",
                                         "batch_size": "batch_size", "precision": "precision",
                                         "reference": "reference_images"}, True),
    "dream": (cnnviz.DreamSettings, {f.name: f.name for f in dataclasses.fields(cnnviz.DreamSettings)}, True),
    "saliency": (cnnviz.AttributionSettings, {"steps": "steps", "samples": "samples", "window": "window"}, True),
    "gallery": (GallerySettings, {f.name: f.name for f in dataclasses.fields(GallerySettings)
                                  if f.name not in ("batch_size", "dream_image")}, True),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_commands_defaults_and_help_are_the_settings(command):
    settings, names, with_help = COMMANDS[command]
    options = _options(command)
    for field, name in names.items():
        default = default_of(settings, field)
        shown = options[name].default
        if shown is getattr(click.core, "UNSET", object()):  # click 8.2 and later: no default given
            shown = None
        if isinstance(default, tuple):  # lists are comma-separated on the command line
            shown = tuple(shown.split(","))
        assert shown == default, f"cnnviz {command} --{name.replace('_', '-')}: {shown!r}, the settings say {default!r}"
        if with_help:
            assert help_of(settings, field) in (options[name].help or ""), f"cnnviz {command} --{name}: help differs"


def test_the_functions_take_their_settings_as_a_value_or_keywords():
    for function, settings in ((cnnviz.maximize, cnnviz.RenderSettings), (cnnviz.dream, cnnviz.DreamSettings),
                               (cnnviz.attributions, cnnviz.AttributionSettings)):
        parameters = inspect.signature(function).parameters
        assert "settings" in parameters and parameters["settings"].kind is inspect.Parameter.KEYWORD_ONLY
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())  # a field by keyword
        assert not set(parameters) & {f.name for f in dataclasses.fields(settings)}  # defaults in one place only
    assert cnnviz.RenderSettings.of(None, {}) == cnnviz.RenderSettings()
    assert cnnviz.GallerySettings().methods == cnnviz.AttributionSettings().methods == cnnviz.DEFAULT_METHODS
    model = cnnviz.load_model("builtin:patterns")
    image = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))
    quick = cnnviz.DreamSettings(octaves=1, steps=2, seed=3)
    by_value = cnnviz.dream(model, image, "features.4", settings=quick)
    by_keywords = cnnviz.dream(model, image, "features.4", octaves=1, steps=2, seed=3)
    assert torch.equal(by_value.image, by_keywords.image) and by_value.settings == by_keywords.settings
    chosen = cnnviz.AttributionSettings(methods=("gradient", "smoothgrad"), samples=2)
    panel = cnnviz.attributions(model, image, 1, settings=chosen)
    again = cnnviz.attributions(model, image, 1, methods=["gradient", "smoothgrad"], samples=2)
    assert list(panel) == ["gradient", "smoothgrad"] and panel["smoothgrad"].settings == again["smoothgrad"].settings
    torch.testing.assert_close(panel["smoothgrad"].attribution, again["smoothgrad"].attribution)
    with pytest.raises(cnnviz.CnnvizError, match="dream has no option 'octave'; its settings are octaves"):
        cnnviz.dream(model, image, "features.4", octave=1)
    # dream's steps were its iterations: the old name still gives the same dream, with a warning
    with pytest.warns(DeprecationWarning, match="dream: iterations= is now called steps="):
        old_name = cnnviz.dream(model, image, "features.4", octaves=1, iterations=2, seed=3)
    assert torch.equal(old_name.image, by_value.image) and old_name.settings["steps"] == 2
    with pytest.raises(cnnviz.CnnvizError, match="dream takes steps= .its old name iterations= too would say it twice"):
        cnnviz.dream(model, image, "features.4", steps=2, iterations=2)
    with pytest.raises(cnnviz.CnnvizError, match="settings must be a cnnviz.AttributionSettings"):
        cnnviz.attributions(model, image, 1, settings=quick)


def test_maximize_takes_a_settings_value_or_keywords_alike():
    model = cnnviz.load_model("builtin:patterns")
    chosen = cnnviz.RenderSettings(steps=3, size=32, reference=None, seed=5)
    by_value = cnnviz.maximize(model, "features.4", channels="0-1", settings=chosen)
    by_keywords = cnnviz.maximize(model, "features.4", channels="0-1", steps=3, size=32, reference=None, seed=5)
    mixed = cnnviz.maximize(model, "features.4", channels="0-1", settings=dataclasses.replace(chosen, seed=0), seed=5)
    assert torch.equal(by_value.images, by_keywords.images) and torch.equal(by_value.images, mixed.images)
    assert by_value.settings["steps"] == 3 and by_value.settings["seed"] == 5
    other = cnnviz.maximize(model, "features.4", channels="0-1", settings=dataclasses.replace(chosen, seed=6))
    assert not torch.equal(other.images, by_value.images)  # the settings are used, not the defaults
    with pytest.raises(cnnviz.CnnvizError, match="no option 'stepz'.*steps"):
        cnnviz.maximize(model, "features.4:0", stepz=3)
    with pytest.raises(cnnviz.CnnvizError, match="unknown precision"):
        cnnviz.maximize(model, "features.4:0", settings=cnnviz.RenderSettings(precision="fp8"))
    assert cnnviz.RenderSettings.of(None, {"steps": np.int64(8)}).steps == 8  # numpy whole numbers are whole numbers
    with pytest.raises(cnnviz.CnnvizError, match="unknown parameterisation 'wavelet'"):
        cnnviz.RenderSettings.of(None, {"param": "wavelet"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        chosen.steps = 4  # a value: frozen


def test_renamed_settings_keep_their_old_names_with_a_warning():
    from cnnviz.core.settings import renamed
    from cnnviz.site.settings import JOB_SETTINGS, KEY_NAMES

    with pytest.warns(DeprecationWarning, match="gallery: dream_iterations= is now called dream_steps="):
        assert renamed(cnnviz.GallerySettings, {"dream_iterations": 2, "seed": 1}, "gallery") == {"dream_steps": 2, "seed": 1}
    with pytest.raises(cnnviz.CnnvizError, match="gallery takes dream_steps= .its old name dream_iterations="):
        renamed(cnnviz.GallerySettings, {"dream_iterations": 2, "dream_steps": 2}, "gallery")
    # the dream job's key still names the setting as before, so that a gallery made before is reused
    assert "dream_steps" in JOB_SETTINGS["dream"] and KEY_NAMES == {"dream_steps": "dream_iterations"}


def test_the_concepts_command_takes_its_defaults_from_the_function():
    """cnnviz concepts has no settings class: its options' defaults are cnnviz.concepts's keywords'."""
    from cnnviz.analyses import concepts as analysis

    parameters = inspect.signature(cnnviz.concepts).parameters
    options = _options("concepts")
    for name in ("k", "exemplars", "importance_images", "fit_images", "batch_size", "seed", "workers"):
        assert options[name].default == parameters[name].default, f"cnnviz concepts --{name.replace('_', '-')}"
    assert (options["k"].default, options["exemplars"].default) == (analysis.DEFAULT_K, analysis.EXEMPLARS)
    assert (options["importance_images"].default, options["fit_images"].default) == (analysis.IMPORTANCE_IMAGES,
                                                                                    analysis.FIT_IMAGES)


@pytest.mark.parametrize(("kind", "where", "field", "value", "words"), [
    (cnnviz.AttributionSettings, "attributions", "steps", 2.5, "a whole number"),
    (cnnviz.AttributionSettings, "attributions", "steps", "3", "a whole number"),
    (cnnviz.AttributionSettings, "attributions", "batch_size", True, "a whole number"),
    (cnnviz.AttributionSettings, "attributions", "methods", 3, "a list of strings"),
    (cnnviz.AttributionSettings, "attributions", "aug_smooth", "yes", "True or False"),
    (cnnviz.FaithfulnessSettings, "faithfulness", "percentiles", 50, "a list of whole numbers"),
    (cnnviz.FaithfulnessSettings, "faithfulness", "blur", "2", "a number or None"),
    (cnnviz.DreamSettings, "dream", "scale", None, "a number"),
    (cnnviz.RenderSettings, "maximize", "size", 1.5, "a whole number or a pair of whole numbers or a string"),
    (cnnviz.RenderSettings, "maximize", "size", (1, 2, 3), "a whole number or a pair of whole numbers or a string"),
])
def test_a_setting_of_the_wrong_type_is_one_line(kind, where, field, value, words):
    from cnnviz.core.settings import chosen

    with pytest.raises(cnnviz.CnnvizError, match=f"^{where}: {field} must be {words}, not {value!r}$".replace("(", r"\(")
                       .replace(")", r"\)")):
        chosen(kind, None, {field: value}, where)
    with pytest.raises(cnnviz.CnnvizError, match=f"{field} must be"):  # a settings value made by hand too
        chosen(kind, kind(**{field: value}), {}, where)


def test_settings_take_what_they_always_took():
    """One method name for a list of one, numpy numbers, arrays and ranges for lists, None where
    a field may be None."""
    from cnnviz.core.settings import chosen

    assert chosen(cnnviz.AttributionSettings, None, {"methods": "gradient"}, "attributions").methods == "gradient"
    how = chosen(cnnviz.FaithfulnessSettings, None, {"percentiles": np.array([20, 50]), "steps": np.int64(3),
                                                    "road": np.bool_(False), "noise": np.float32(0.1), "blur": None},
                 "faithfulness")
    assert list(how.percentiles) == [20, 50] and how.steps == 3
    assert chosen(cnnviz.RenderSettings, None, {"size": (64, 48), "batch_size": None}, "maximize").size == (64, 48)
    assert chosen(cnnviz.FaithfulnessSettings, None, {"percentiles": range(10, 40, 10)}, "faithfulness").percentiles == range(10, 40, 10)
