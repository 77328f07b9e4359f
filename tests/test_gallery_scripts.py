"""Every example script of gallery/ runs (with small settings) and writes real figures."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "gallery").glob("plot_*.py"))
EXPECTED = {"plot_kernels", "plot_activations", "plot_statistics", "plot_saliency", "plot_maximize", "plot_deep_dream"}


def test_the_gallery_has_its_scripts():
    assert EXPECTED <= {script.stem for script in SCRIPTS}


# Every script runs in one Python process, one after the other, each as ``__main__`` (as
# ``python gallery/plot_x.py`` runs it): one start of torch instead of one per script (about 4 s
# each on 2 cores). A script's exception is written to ``<stem>.error`` and the next one goes on.
DRIVER = r"""
import runpy, sys, traceback
from pathlib import Path

import matplotlib.pyplot as plt

for script in sys.argv[1:]:
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as end:
        if end.code not in (None, 0):
            Path(Path(script).stem + ".error").write_text(f"exit status {end.code}")
    except BaseException:
        Path(Path(script).stem + ".error").write_text(traceback.format_exc())
    plt.close("all")
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gallery")
    environment = {**os.environ, "CNNVIZ_GALLERY_OUTPUT": str(folder), "CNNVIZ_GALLERY_QUICK": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", DRIVER, *map(str, SCRIPTS)], cwd=folder, env=environment,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_script_runs_and_saves_its_figures(script, ran):
    docstring = ast.get_docstring(ast.parse(script.read_text()))
    assert docstring, f"{script.name} needs a docstring: a title, a ==== line, an explanation"
    title, underline, *explanation = docstring.splitlines()
    assert title.strip() and set(underline.strip()) == {"="} and len(" ".join(explanation).split()) >= 15
    saved = [node.args[1] for node in ast.walk(ast.parse(script.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("save_figure", "save_image")]
    error = ran / f"{script.stem}.error"
    assert not error.exists(), error.read_text()[-3000:]
    figures = sorted((ran / script.stem).glob("*.png"))
    assert len(figures) >= len(saved) >= 1, (figures, len(saved))
    for figure in figures:
        with Image.open(figure) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert min(pixels.shape) >= 16 and pixels.std() > 5, f"{figure.name} looks blank"
