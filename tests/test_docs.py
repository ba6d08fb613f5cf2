"""Every code block of README.md and docs/*.md runs, so that the docs cannot drift from the code.

The blocks of one page run in order in one temporary folder (a block may use the files an earlier
one wrote), with this checkout's ndlc importable and its `ndlc` command first on PATH:

- ```python: run as a script; ```sh: run by bash, stopping at the first failing command;
  ```console: each `$ command` (a line ending in `\\` continues it) run by bash, its output the lines
  up to the next `$`.
- The printed output is compared where the page shows it: for a python block, the untagged block that
  follows it with only prose between; for a console command, its lines. In expected output, `...`
  stands for any text within a line, and a line of `...` alone for any number of lines. A block
  whose output is shown may fail (an example of an error message); one without shown output must not.
- An HTML comment on the line before a block marks it: `<!-- file: NAME -->` writes the block to
  NAME in the folder instead of running it (a console block after it may: `$ python3 NAME`, so that
  messages naming the file match), `<!-- skip: why -->` skips it, and `<!-- needs: WHAT, ... -->`
  skips it unless each WHAT is here (`gpu`: a GPU and pycuda; `mpi`: mpirun and mpi4py; `graphviz`:
  its `dot`; `fashion-mnist`: the data set).
"""
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"python", "sh", "console"}
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARK = re.compile(r"<!--\s*(skip|needs|file):\s*(.*?)\s*-->")
TIMEOUT_S = 300


@dataclass
class Block:
    """A fenced block of a page: its language, text, line, marks and the output the page shows."""
    page: Path
    line: int
    language: str
    text: str
    marks: dict = field(default_factory=dict)
    output: str = None

    @property
    def id(self):
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page):
    """The page's fenced blocks in order, each with the marks on the line just above it and, for a
    python block, the untagged block after it (prose only between) as its output."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marks = dict(MARK.findall(before))
        found.append(Block(page, text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2), marks))
    for block, after in zip(found, found[1:]):
        if block.language == "python" and "file" not in block.marks and not after.language and "file" not in after.marks:
            block.output = after.text
    return found


def runnable():
    """Every block that runs, from every page, as pytest parameters (skipped ones with why)."""
    params = []
    for page in PAGES:
        for block in blocks(page):
            if block.language not in RUNNABLE and "file" not in block.marks:
                continue
            why = block.marks.get("skip") or _missing(block.marks.get("needs"))
            marks = [pytest.mark.skip(reason=why)] if why else []
            params.append(pytest.param(block, id=block.id, marks=marks))
    return params


def _missing(needs):
    """Why `needs` (comma-separated) are not all met on this machine, or None."""
    import importlib.util
    if needs is None:
        return None
    checks = {
        "gpu": lambda: shutil.which("nvidia-smi") and importlib.util.find_spec("pycuda")
        and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0,
        "mpi": lambda: shutil.which("mpirun") and importlib.util.find_spec("mpi4py"),
        "graphviz": lambda: shutil.which("dot"),
        "fashion-mnist": lambda: any(Path(d, "train-images-idx3-ubyte.gz").exists() for d in
                                     (os.environ.get("NDLC_DATA", ""), "/usr/share/datasets/fashion-mnist") if d),
    }
    for need in (word.strip() for word in needs.split(",")):
        if need not in checks:
            raise ValueError(f"<!-- needs: {need} -->: unknown; one of {', '.join(checks)}")
        if not checks[need]():
            return f"needs {need}"
    return None


def _shim(bin_dir):
    """An `ndlc` command that runs this checkout's ndlc/cli.py, whatever `ndlc` is installed."""
    os.makedirs(bin_dir, exist_ok=True)
    path = os.path.join(bin_dir, "ndlc")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec "{sys.executable}" -c "import sys; from ndlc.cli import main; '
                'sys.exit(main())" "$@"\n')
    os.chmod(path, 0o755)
    return bin_dir


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    """One folder per page, shared by its blocks in order, and the environment they run in."""
    bin_dir = _shim(str(tmp_path_factory.mktemp("bin")))
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    pages = {}

    def folder(page):
        if page not in pages:
            pages[page] = tmp_path_factory.mktemp(page.stem)
        return pages[page]
    return folder, env


@pytest.mark.parametrize("block", runnable())
def test_block(block, folders):
    folder_of, env = folders
    folder = folder_of(block.page)
    if "file" in block.marks:
        (folder / block.marks["file"]).write_text(block.text)
    elif block.language == "python":
        script = f"block_{block.line}.py"
        (folder / script).write_text(block.text)
        _check(block, [sys.executable, script], folder, env, block.output)
    elif block.language == "sh":
        _check(block, ["bash", "-e", "-c", block.text], folder, env, None)
    else:
        for command, output in commands(block.text):
            _check(block, ["bash", "-o", "pipefail", "-c", command], folder, env, output)


def commands(text):
    """The `$ command` lines of a console block with the output lines after each."""
    pairs, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            raise ValueError(f"console block: {lines[i]!r} is not a `$ command` line nor its output")
        command = lines[i][2:]
        while command.endswith("\\"):
            i += 1
            command = command[:-1] + lines[i]
        i += 1
        start = i
        while i < len(lines) and not lines[i].startswith("$ "):
            i += 1
        pairs.append((command, "\n".join(lines[start:i]) + "\n" if i > start else None))
    return pairs


def _check(block, argv, folder, env, expected):
    """Run `argv` in `folder`; its output (stdout and stderr) must match `expected` where given, and
    it must succeed where not."""
    done = subprocess.run(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=TIMEOUT_S)
    shown = " ".join(argv[-1:]) if block.language != "python" else argv[-1]
    if expected is None:
        assert done.returncode == 0, f"{block.id}: `{shown}` failed ({done.returncode}):\n{done.stdout}"
        return
    assert matches(expected, done.stdout), \
        f"{block.id}: `{shown}` printed\n{done.stdout}\nwhere the page shows\n{expected}"


def matches(expected, actual):
    """Whether `actual` is `expected`, with `...` for any text within a line and a line of `...`
    for any lines (trailing spaces ignored)."""
    pattern = ""
    for line in expected.rstrip("\n").split("\n"):
        if line.strip() == "...":
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += r"[^\n]*?".join(re.escape(part) for part in line.rstrip().split("...")) + r"\n"
    text = "\n".join(line.rstrip() for line in actual.rstrip("\n").split("\n")) + "\n"
    return re.fullmatch(pattern, text) is not None


def test_matching_rules():
    assert matches("a ... c\n", "a b b c\n") and not matches("a ... c\n", "a b\nc\n")
    assert matches("first\n...\nlast\n", "first\n1\n2\nlast\n") and matches("first\n...\nlast\n", "first\nlast\n")
    assert not matches("step 0: loss 1.5596\n", "step 0: loss 1.5597\n")
    assert commands("$ a \\\n  b\nout\n$ c\n") == [("a   b", "out\n"), ("c", None)]


def test_readme_is_short_and_links_every_page_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", readme))
    assert {f"docs/{page.name}" for page in PAGES[1:]} <= linked
    for page in PAGES:
        text = page.read_text()
        assert "../shared" not in text, page
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
