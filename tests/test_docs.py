"""The docs run as written: every ```bash and ```python block of README.md and docs/*.md, in order, offline, with
nntrain installed from the built wheel, in a fresh copy of the repository's other files (a clone whose `.venv` is
the wheel's venv; `nntrain/` is left out so that nothing imports the checkout).

A block that cannot run here says so in an HTML comment on the line before it, which readers of the rendered page
do not see:
    <!-- docs-test: skip: REASON -->   not run (a TPU VM, several hosts, a GPU, minutes of benchmark)
    <!-- docs-test: file: PATH -->     the block is the content of PATH (written, not run)
    <!-- docs-test: expect: TEXT -->   run, and its stdout must contain TEXT
MNIST's IDX files sit at `../shared/data/mnist` as beside this repository. Afterwards `git status` of the copy is
clean: everything `make train` and the documented commands write is git-ignored.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_notebooks import MNIST_DIR
from wheel_env import REPO, clean_env, run

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE = ("bash", "python")
MARKER = re.compile(r"<!-- docs-test: (skip|file|expect): (.+?) -->")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
BLOCK_SECONDS = 600


@dataclasses.dataclass(frozen=True)
class Block:
    where: str  # FILE:LINE of the opening fence
    language: str
    code: str
    marker: tuple[str, str] | None  # (kind, argument) of the comment on the line before


def blocks(path: Path) -> list[Block]:
    """The runnable blocks of one Markdown file, in order, each with its marker."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) not in RUNNABLE:
            continue
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.fullmatch(before.strip())
        line = text.count("\n", 0, match.start()) + 1
        name = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
        found.append(Block(f"{name}:{line}", match.group(1), match.group(2),
                           marker.groups() if marker else None))
    return found


ALL_BLOCKS = [block for path in DOCS for block in blocks(path)]
RAN: list[str] = []  # the blocks run (or written) in this session, for the git status check


def test_every_marker_is_on_the_line_before_a_runnable_block():
    for path in DOCS:
        text = path.read_text()
        markers = sum(1 for line in text.splitlines() if "docs-test:" in line)
        assert markers == sum(block.marker is not None for block in blocks(path)), f"{path.name}: a stray marker"


def test_the_extractor_sees_markers_and_languages(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```bash\necho a\n```\n\n<!-- docs-test: skip: a TPU VM -->\n```bash\ntpu\n```\n"
                    "```\nnot code\n```\n<!-- docs-test: file: x.py -->\n```python\nX = 1\n```\n")
    found = [(block.language, block.code, block.marker) for block in blocks(page)]
    assert found == [("bash", "echo a\n", None), ("bash", "tpu\n", ("skip", "a TPU VM")),
                     ("python", "X = 1\n", ("file", "x.py"))]


@pytest.fixture(scope="module")
def workspace(installed, tmp_path_factory) -> Path:
    """A copy of the repository's tracked files without `nntrain/`, `.venv` the wheel's venv, MNIST beside it,
    committed to a new git repository (to check that the docs leave `git status` clean)."""
    root = tmp_path_factory.mktemp("docs")
    project = root / "nntrain"
    tracked = run(["git", "ls-files", "-z"], cwd=REPO).stdout.split("\0")
    for name in filter(None, tracked):
        if name.split("/")[0] == "nntrain" or not (REPO / name).is_file():
            continue
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, project / name)
    (project / ".venv").symlink_to(installed)
    (installed / ".installed").touch()  # `make train`'s install step: done (the wheel)
    (root / "shared" / "data").mkdir(parents=True)
    (root / "shared" / "data" / "mnist").symlink_to(MNIST_DIR)
    git = ["git", "-c", "user.name=docs", "-c", "user.email=docs@test"]
    run([*git, "init", "--quiet"], cwd=project)
    run([*git, "add", "--all"], cwd=project)
    run([*git, "commit", "--quiet", "-m", "copy"], cwd=project)
    return project


@pytest.mark.slow
@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[block.where for block in ALL_BLOCKS])
def test_doc_block_runs(block: Block, workspace: Path, installed: Path):
    kind, argument = block.marker or (None, None)
    if kind == "skip":
        pytest.skip(argument)
    if kind == "file":
        (workspace / argument).write_text(block.code)
        RAN.append(block.where)
        return
    command = ["bash", "-e", "-c", block.code] if block.language == "bash" else [installed / "bin" / "python", "-"]
    result = subprocess.run([str(part) for part in command], cwd=workspace, env=clean_env(installed), text=True,
                            input=block.code if block.language == "python" else None, capture_output=True,
                            timeout=BLOCK_SECONDS)
    assert result.returncode == 0, f"{block.where} failed:\n{block.code}\n--- stderr:\n{result.stderr[-4000:]}"
    if kind == "expect":
        assert argument in result.stdout, f"{block.where}: {argument!r} not in its output:\n{result.stdout[-2000:]}"
    RAN.append(block.where)


@pytest.mark.slow
def test_the_docs_leave_git_status_clean(workspace: Path):
    runnable = [block.where for block in ALL_BLOCKS if not block.marker or block.marker[0] != "skip"]
    if RAN != runnable:
        pytest.skip("needs every doc block run first, in this session (run the whole file)")
    yours = {f"?? {block.marker[1]}" for block in ALL_BLOCKS if block.marker and block.marker[0] == "file"}
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=workspace).stdout.splitlines()
    left = [line for line in status if line not in yours]  # the files a reader writes (`file:` blocks) are theirs
    assert not left, "the docs left files that are not git-ignored:\n" + "\n".join(left)
