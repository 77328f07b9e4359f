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


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_script_runs_and_saves_its_figures(script, tmp_path):
    docstring = ast.get_docstring(ast.parse(script.read_text()))
    assert docstring, f"{script.name} needs a docstring: a title, a ==== line, an explanation"
    title, underline, *explanation = docstring.splitlines()
    assert title.strip() and set(underline.strip()) == {"="} and len(" ".join(explanation).split()) >= 15
    saved = [node.args[1] for node in ast.walk(ast.parse(script.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("save_figure", "save_image")]
    environment = {**os.environ, "CNNVIZ_GALLERY_OUTPUT": str(tmp_path), "CNNVIZ_GALLERY_QUICK": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = sorted((tmp_path / script.stem).glob("*.png"))
    assert len(figures) >= len(saved) >= 1, (figures, len(saved))
    for figure in figures:
        with Image.open(figure) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert min(pixels.shape) >= 16 and pixels.std() > 5, f"{figure.name} looks blank"
