"""cnnviz.core.display: results and figures show themselves in a notebook, and print short."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import cnnviz
from cnnviz import CnnvizError
from cnnviz.core import display


@pytest.fixture(scope="module")
def photos():
    return cnnviz.load_model("builtin:photos")


@pytest.fixture(scope="module")
def results(photos):
    stats = cnnviz.statistics(photos, ["sample:chelsea", "sample:coffee"], ["features.0", "features.3"])
    return {
        "kernels": cnnviz.kernels(photos, "features.0"),
        "activations": cnnviz.activations(photos, "sample:chelsea", "features.3"),
        "statistics": stats,
        "layer statistics": stats["features.3"],
        "attribution": cnnviz.saliency(photos, "sample:chelsea"),
        "attributions": cnnviz.attributions(photos, "sample:chelsea", methods=["gradient", "gradcam"]),
        "rendering": cnnviz.maximize(photos, "features.3", channels="0-1", steps=2, size=32),
        "dream": cnnviz.dream(photos, "sample:chelsea", "features.3", octaves=1, steps=1),
        "equivariance": cnnviz.equivariance(photos, "sample:chelsea", ["features.0", "features.3"], shifts=(2,),
                                            angles=(), scales=(), max_images=1),
    }


def _picture(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.mark.parametrize("name", ["kernels", "activations", "statistics", "layer statistics", "attribution",
                                  "attributions", "rendering", "dream", "equivariance"])
def test_every_result_is_a_picture_and_a_short_line(results, name):
    result = results[name]
    picture = _picture(result._repr_png_())
    height, width, _ = picture.shape
    assert 100 < width < 2000 and 100 < height < 2000
    assert picture.std() > 10  # a drawing, not a blank canvas
    text = repr(result)
    assert len(text) < 200 and "\n" not in text and "tensor(" not in text and "array(" not in text, text
    assert text.startswith(type(result).__name__ + "(")
    figure = result.plot()
    assert figure.axes and _picture(figure._repr_png_()).shape == picture.shape  # the same figure


def test_figures_show_themselves_and_plot_takes_the_plot_functions_options(results):
    figure = cnnviz.plots.kernels(results["kernels"], scope="kernel")
    assert isinstance(figure, display.ShownFigure)
    assert _picture(figure._repr_png_()).std() > 10
    by_method = results["kernels"].plot(scope="kernel")
    by_function = cnnviz.plots.kernels(results["kernels"], scope="kernel")
    assert np.array_equal(_picture(by_method._repr_png_()), _picture(by_function._repr_png_()))
    with pytest.raises(CnnvizError, match="no figure of a Prediction"):
        display.draw(cnnviz.predict(cnnviz.load_model("builtin:photos"), "sample:chelsea").predictions[0])


def test_a_fresh_ipython_kernel_shows_pictures_without_magic():
    """IPython's own display formatter, in a fresh process that never imports pyplot: a result and a
    figure are given as image/png (not the text '<Figure size ...>')."""
    pytest.importorskip("IPython")
    script = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
import cnnviz
shell = InteractiveShell.instance()
model = cnnviz.load_model("builtin:patterns")
kernels = cnnviz.kernels(model, "features.0")
shown = {}
for name, value in (("result", kernels), ("figure", cnnviz.plots.kernels(kernels))):
    data, _ = shell.display_formatter.format(value)
    shown[name] = sorted(data)
shown["pyplot"] = "matplotlib.pyplot" in sys.modules
print(json.dumps(shown))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert "image/png" in shown["result"] and "image/png" in shown["figure"], shown
    assert shown["pyplot"] is False
