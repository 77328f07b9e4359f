"""The layout of the library (docs/architecture.md), checked on its source.

Data flows one way: errors and core at the bottom, then inputs, models, analyses, plots, reports, site, and
the public package and the command line on top. Every import counts, also those inside
functions: a module may import only from its own layer or the layers below, there is no import
cycle, no module is longer than 600 lines, and no module (library or test) imports another
module's private (``_name``) objects.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600

# (layer, module prefixes), bottom first; a module is in the layer of its longest matching prefix
LAYERS = [
    ("errors", ["cnnviz.errors", "cnnviz.core.version"]),
    ("core", ["cnnviz.core"]),
    ("inputs", ["cnnviz.inputs"]),
    ("models", ["cnnviz.models"]),
    ("analyses", ["cnnviz.analyses"]),
    ("plots", ["cnnviz.plots"]),
    ("reports", ["cnnviz.reports"]),
    ("site", ["cnnviz.site"]),
    ("api", ["cnnviz"]),
    ("cli", ["cnnviz.cli", "cnnviz.__main__"]),
]


def _library_modules() -> dict[str, Path]:
    modules = {}
    for folder, package in ((ROOT / "cnnviz", "cnnviz"), (ROOT / "cli", "cnnviz.cli")):
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = _library_modules()


def _owner(name: str) -> str | None:
    """The library module an imported name lives in (``cnnviz.core.probe.capture`` -> ``cnnviz.core.probe``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> list[tuple[str, int, list[str]]]:
    """(imported library module, line, imported names) for every import statement, anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                owner = _owner(alias.name)
                if owner and owner != module:
                    found.append((owner, node.lineno, []))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                owner = _owner(f"{base}.{alias.name}")
                if owner and owner != module:
                    imported = [] if owner == f"{base}.{alias.name}" else [alias.name]
                    found.append((owner, node.lineno, imported))
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> int:
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (module.startswith(prefix + ".") and prefix != "cnnviz")
            if matches and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    assert best is not None, f"{module} is in no layer of docs/architecture.md; add it to LAYERS"
    return best


def test_every_module_is_found_and_in_a_layer():
    assert {"cnnviz", "cnnviz.core.probe", "cnnviz.inputs.batches", "cnnviz.analyses.kernels",
            "cnnviz.plots.kernels", "cnnviz.site.build", "cnnviz.cli.main"} <= set(MODULES)
    for module in MODULES:
        _layer(module)


def test_imports_go_down_the_layers_only():
    upward = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]}) at line {line}"
        for module, imports in GRAPH.items() for target, line, _ in imports
        if _layer(target) > _layer(module)
    ]
    assert upward == []


#: the modules that may know of ranks: the executor and its transport (and the command line, which joins
#: torchrun's group)
KNOW_OF_RANKS = {"cnnviz.core.executor", "cnnviz.core.distributed"}


def test_only_the_executor_knows_of_ranks():
    """Analyses, the gallery, inputs and the file helpers work on the share the executor hands
    them (cnnviz.core.executor): none imports the torch.distributed transport, or torch.distributed."""
    knowing = sorted(
        f"{module} imports {target} at line {line}"
        for module, imports in GRAPH.items() for target, line, _ in imports
        if target == "cnnviz.core.distributed" and module not in KNOW_OF_RANKS and not module.startswith("cnnviz.cli")
    )
    assert knowing == []
    for module, path in MODULES.items():
        if module in KNOW_OF_RANKS or module.startswith("cnnviz.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [f"{node.module}.{alias.name}" for alias in node.names] if isinstance(node, ast.ImportFrom) else []
            assert not any(name.startswith("torch.distributed") for name in names), (module, node.lineno)


def test_there_is_no_import_cycle():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(module):  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target, _, _ in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert cycles == []


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The checks above can fail: a two-module cycle and a core module importing a plot are found."""
    global GRAPH
    saved = GRAPH
    try:
        GRAPH = {**saved, "cnnviz.core.probe": saved["cnnviz.core.probe"] + [("cnnviz.plots.kernels", 1, [])],
                 "cnnviz.plots.kernels": saved["cnnviz.plots.kernels"] + [("cnnviz.core.probe", 1, [])]}
        with pytest.raises(AssertionError):
            test_there_is_no_import_cycle()
        with pytest.raises(AssertionError):
            test_imports_go_down_the_layers_only()
    finally:
        GRAPH = saved


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_longer_than_600_lines(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {lines} lines; split it by concept"


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cnnviz"):
            found += [f"{path.name}:{node.lineno} {node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id == "cnnviz":
                found.append(f"{path.name}:{node.lineno} cnnviz.{'.'.join(reversed(chain))}")
    return found


def test_nothing_imports_another_modules_privates():
    files = list(MODULES.values()) + sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "gallery").glob("*.py"))
    found = [entry for path in files for entry in _private_imports(path)]
    assert found == []


def test_every_package_is_installed():
    """A package missing from pyproject's list works in an editable install and is absent from a wheel."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {"cnnviz." + ".".join(p.parent.relative_to(ROOT / "cnnviz").parts) for p in (ROOT / "cnnviz").rglob("__init__.py")}
    folders = {name.rstrip(".") for name in folders}
    folders |= {"cnnviz.cli" + "".join("." + part for part in p.parent.relative_to(ROOT / "cli").parts)
                for p in (ROOT / "cli").rglob("__init__.py")}
    assert folders - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - folders == set()
