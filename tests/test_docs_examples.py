"""Every example in README.md and docs/*.md runs, and prints what the page shows.

The pages follow one convention (docs/architecture.md, "Examples in the docs"):

- a ```bash block is run: one ``cnnviz`` command a line (``\\`` continues a line, ``#`` starts a
  comment), each through click's CliRunner in the page's own temporary folder, in page order; each
  must exit with 0. Shell features (pipes, redirections, ``&&``, environment variables) are not
  allowed there: such commands go in a console block.
- a ```python block is run with ``exec``: a page's blocks in order in one namespace (later blocks use
  earlier names), in the same folder. A bare expression whose line ends with ``# -> TEXT`` is
  evaluated and its ``repr`` must match TEXT.
- a plain ``` block (no language) is printed output: of the closest run block above it on the page
  (its commands' stdout and stderr, or what its Python printed). Each line it shows is printed, in
  order (``...`` stands for anything, in a line or as a line). The same rule matches ``# -> TEXT``:
  whitespace runs are one space, and numbers are equal to the precision shown (within two units of
  the last digit shown, or 1 %; whole numbers exactly).
- a ```console block is a command that is not run: its first line (after a ``#!`` line, if any)
  is ``# not run: REASON`` (it downloads weights, needs your files, a GPU, torchrun or SLURM, or
  takes minutes).
- a ```text block is neither run nor output (a tree, a diagram); it holds no command.
- ``<!-- tested in PATH -->`` on the line before a fence: another test runs that block (the
  README's install, test and quick start: .ci/run and tests/test_readme.py); it is not run here.

Nothing is downloaded: sockets refuse to connect and torch's cache is an empty folder, so an
example that needs the network fails here instead of passing on a machine that has the file.
"""
from __future__ import annotations

import ast
import contextlib
import io
import re
import shlex
import socket
import tokenize
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnnviz import CnnvizWarning
from cnnviz.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"bash", "python"}
KINDS = RUN | {"console", "text", ""}
SHELL = {"|", "||", "&&", ";", ">", ">>", "<", "&", "2>", "2>&1"}
NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
TESTED_IN = re.compile(r"<!--\s*tested in (\S+)\s*-->")


@dataclass
class Block:
    page: Path
    line: int  # of the first line inside the fence, 1-based
    kind: str
    body: str
    tested_in: str | None  # the <!-- tested in PATH --> before the fence

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        fence = re.match(r"\s*(`{3,})\s*(\S*)(.*)$", lines[index])
        if not fence:
            index += 1
            continue
        ticks, kind = fence.group(1), fence.group(2)
        before = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = TESTED_IN.search(before)
        end = index + 1
        while end < len(lines) and not re.match(rf"\s*{ticks}\s*$", lines[end]):
            end += 1
        assert end < len(lines), f"{page.name}:{index + 1}: a fence that is never closed"
        found.append(Block(page, index + 2, kind, "\n".join(lines[index + 1:end]) + "\n",
                           marker.group(1) if marker else None))
        index = end + 1
    return found


# --- matching printed text against what a page shows ---------------------------------------------

def _flat(text: str) -> str:
    return " ".join(text.split())


def _decimals(number: str) -> int:
    mantissa = re.split(r"[eE]", number)[0]
    return len(mantissa.split(".")[1]) if "." in mantissa else 0


def _value(number: str) -> float:
    return float(number.replace(",", ""))


def matches(shown: str, printed: str) -> bool:
    """``printed`` is ``shown``, ``...`` standing for anything and numbers equal to the shown precision."""
    parts = re.split(rf"(\.\.\.|{NUMBER})", _flat(shown))
    pattern, numbers = "", []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            pattern += re.escape(part)
        elif part == "...":
            pattern += ".*?"
        else:
            pattern += f"({NUMBER})"
            numbers.append(part)
    found = re.fullmatch(pattern, _flat(printed), re.S)
    if not found:
        return False
    for want, got in zip(numbers, found.groups()):
        places = _decimals(want)
        exact = places == 0 and not re.search(r"[eE]", want)
        if exact and _value(got) != _value(want):
            return False
        if not exact and abs(_value(got) - _value(want)) > max(2 * 10.0 ** -places, 0.01 * abs(_value(want))):
            return False
    return True


def check_output(shown: str, printed: str, where: str) -> None:
    lines = [line for line in printed.splitlines() if line.strip()]
    at = 0
    for line in shown.splitlines():
        if not line.strip() or line.strip() == "...":
            continue
        while at < len(lines) and not matches(line, lines[at]):
            at += 1
        assert at < len(lines), (
            f"{where}: the page shows {line!r}, which is not printed (after the lines matched before it). "
            "Printed:\n" + printed[-4000:])
        at += 1


# --- running ---------------------------------------------------------------------------------------

def commands(block: Block) -> list[list[str]]:
    joined = re.sub(r"\\\n", " ", block.body)
    found = []
    for line in joined.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        # a comment starts at a '#' after a space (layer1.0.relu#2 is a reference, not a comment)
        words = shlex.split(re.sub(r"(^|\s)#.*$", "", line))
        assert words[0] == "cnnviz" and not re.match(r"\w+=", words[0]), (
            f"{block.where}: {line!r} is not a cnnviz command: put it in a console block with "
            "'# not run: REASON'")
        shell = [w for w in words if w in SHELL or "$" in w or "`" in w]
        assert not shell, f"{block.where}: {line!r} uses the shell ({shell}): put it in a console block"
        found.append(words)
    return found


def run_bash(block: Block) -> str:
    printed = []
    for words in commands(block):
        result = CliRunner().invoke(main, words[1:])
        assert result.exit_code == 0, (
            f"{block.where}: {shlex.join(words)} failed ({result.exit_code}):\n{result.stdout[-2000:]}"
            f"\n{result.stderr[-2000:]}\n{result.exception!r}")
        printed += [result.stdout, result.stderr]
    return "\n".join(printed)


def run_python(block: Block, namespace: dict) -> str:
    tree = ast.parse(block.body)
    ast.increment_lineno(tree, block.line - 1)
    comments = {token.start[0] + block.line - 1: token.string
                for token in tokenize.generate_tokens(io.StringIO(block.body).readline)
                if token.type == tokenize.COMMENT}
    filename = str(block.page)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore", CnnvizWarning)  # "random weights": the pages say so themselves
        for statement in tree.body:
            comment = comments.get(statement.end_lineno, "")
            if not comment.startswith("# -> "):
                exec(compile(ast.Module([statement], []), filename, "exec"), namespace)
                continue
            assert isinstance(statement, ast.Expr), (
                f"{block.page.name}:{statement.end_lineno}: '# ->' follows a bare expression only")
            value = eval(compile(ast.Expression(statement.value), filename, "eval"), namespace)
            shown = comment[len("# -> "):]
            assert matches(shown, repr(value)), (
                f"{block.page.name}:{statement.end_lineno}: the page shows {shown!r}, the value is {value!r}")
    return printed.getvalue()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (a download fails at once) and an empty torch cache."""
    def refuse(*_args, **_kwargs):
        raise OSError("the examples run offline: this one reaches for the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_every_example_of_the_page_runs_and_prints_what_it_shows(page, tmp_path, monkeypatch, offline):
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    namespace: dict = {"__name__": "__main__"}
    printed: str | None = None  # what the closest run block above printed; None: it was not run here
    try:
        for block in blocks(page):
            if block.tested_in or block.kind in ("console", "text"):
                printed = None
            elif block.kind == "bash":
                printed = run_bash(block)
            elif block.kind == "python":
                printed = run_python(block, namespace)
            elif block.kind == "" and printed is not None:
                check_output(block.body, printed, block.where)
    finally:
        plt.close("all")


def test_every_block_follows_the_convention():
    problems = []
    for page in PAGES:
        for block in blocks(page):
            lines = [line.strip() for line in block.body.splitlines() if line.strip()]
            first = (lines[1] if len(lines) > 1 and lines[0].startswith("#!") else lines[0]) if lines else ""
            if block.kind not in KINDS:
                problems.append(f"{block.where}: ```{block.kind}: use bash or python (run), console "
                                "(not run, with '# not run: REASON'), text, or a plain fence (output)")
            if block.kind == "console" and not re.fullmatch(r"# not run: \S.{3,}", first):
                problems.append(f"{block.where}: a console block starts with '# not run: REASON'")
            if block.kind == "text" and any(re.match(r"\s*(\$ |cnnviz |import |python )", line)
                                            for line in block.body.splitlines()):
                problems.append(f"{block.where}: a text block holds a command: use bash, python or console")
            if block.tested_in and not (ROOT / block.tested_in).is_file():
                problems.append(f"{block.where}: 'tested in {block.tested_in}': no such file")
            if block.kind in RUN and not block.body.strip():
                problems.append(f"{block.where}: an empty block")
    assert not problems, "\n".join(problems)


def test_the_matching_rule():
    assert matches("sample:chelsea: chelsea 0.936, ...", "sample:chelsea: chelsea 0.9362, grass 0.01")
    assert not matches("sample:chelsea: chelsea 0.956, ...", "sample:chelsea: chelsea 0.936, grass 0.01")
    assert matches("68 layers, 11,689,512 parameters", "68   layers, 11,689,512 parameters")
    assert not matches("68 layers", "69 layers")
    assert matches("torch.Size([4, 64, 56, 56])", "torch.Size([4, 64, 56, 56])")
    assert matches("(3.5, 6.7)", "(3.535533905029297, 6.67083215713501)")
    assert not matches("(3.5, 6.7)", "(3.535533905029297, 7.67083215713501)")
    check_output("a 1\n...\nc 3\n", "a 1\nb 2\nc 3\n", "here")
    with pytest.raises(AssertionError):
        check_output("c 3\na 1\n", "a 1\nb 2\nc 3\n", "here")


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings."""
    found, seen = set(), {}
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_every_link_between_the_pages_resolves():
    broken = []
    for page in [*PAGES, ROOT / "gallery" / "README.md"]:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
