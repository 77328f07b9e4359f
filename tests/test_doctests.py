"""Every ``>>>`` example in the docstrings of cnnviz (and of its command line, ``cnnviz.cli``) runs as
a doctest: on the built-in models and the sample photographs, offline, in a few seconds each.

Each module's examples run with ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` in an empty temporary
working directory, which they must leave empty (an example writes into a folder of its own,
``tempfile.mkdtemp()``). An example that cannot run here is marked ``# doctest: +SKIP`` with the
reason beside it, or written as a plain ``Example::`` block without ``>>>``. So that examples are not
dropped silently (a module that no longer imports, a docstring rewritten without them), the number
of examples found is checked against :data:`EXAMPLES`.
"""
from __future__ import annotations

import doctest
import importlib
import pkgutil
import tempfile

import pytest

import cnnviz
import cnnviz.cli

# The examples (``>>>`` lines not marked +SKIP) in the package's docstrings today: fewer fails.
# Raise it when you add examples.
EXAMPLES = 195

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _import_failed(name: str) -> None:
    raise ImportError(f"{name} cannot be imported, so its docstring examples would not run")


def module_names() -> list[str]:
    """Every module of cnnviz and of cnnviz.cli (the command line, in ``cli/``), sorted."""
    names = []
    for package in (cnnviz, cnnviz.cli):
        names.append(package.__name__)
        names += [found.name for found in pkgutil.walk_packages(package.__path__, package.__name__ + ".",
                                                                onerror=_import_failed)]
    return sorted(set(names))


def docstring_tests(name: str) -> list[doctest.DocTest]:
    """The docstrings of module ``name`` (its own functions and classes too) that hold examples."""
    module = importlib.import_module(name)
    return [test for test in doctest.DocTestFinder().find(module) if test.examples]


def runnable(tests: list[doctest.DocTest]) -> int:
    return sum(not example.options.get(doctest.SKIP, False) for test in tests for example in test.examples)


MODULES = [name for name in module_names() if docstring_tests(name)]


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_of_the_module_run_and_print_what_they_show(name, tmp_path, monkeypatch):
    working, temporary = tmp_path / "cwd", tmp_path / "tmp"
    working.mkdir()
    temporary.mkdir()
    monkeypatch.chdir(working)
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))  # the examples' mkdtemp() folders go with tmp_path
    monkeypatch.setenv("MPLBACKEND", "Agg")  # cnnviz draws without pyplot; a window never opens
    tests = docstring_tests(name)
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    failed = tried = 0
    for test in tests:
        result = runner.run(test, out=report.append)
        failed += result.failed
        tried += result.attempted
    assert failed == 0, "".join(report)
    assert tried == runnable(tests)
    assert sorted(path.name for path in working.iterdir()) == [], "an example wrote into the working directory"


def test_no_example_was_dropped():
    found = {name: runnable(docstring_tests(name)) for name in module_names()}
    assert sum(found.values()) >= EXAMPLES, {name: count for name, count in found.items() if count}
