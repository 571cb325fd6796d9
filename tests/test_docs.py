"""The docs cannot rot: every shell block marked `sh runnable` in README.md and docs/*.md runs
as an operator would run it (against a private Redis), and every relative link leads somewhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE = "sh runnable"
BLOCK_TIMEOUT_S = 120  # a hang guard only: the blocks take about a second each
# What .gitignore keeps out of git: a block may write there (a venv's caches), nowhere else.
IGNORED_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", "build", "dist"}

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(?P<text>.*?)(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(?:.*?[^`])?\1(?!`)", re.S)
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\((?P<target><[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]+(?P<target>\S+)", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


class DocError(ValueError):
    """A Markdown file the checks cannot read (the message says file:line)."""


@dataclass(frozen=True)
class Block:
    where: str  # file:line of the opening fence
    info: str
    text: str


@dataclass(frozen=True)
class Page:
    name: str  # relative to the repository's root
    blocks: tuple[Block, ...]
    prose: str  # the text outside fences and code spans, line breaks kept
    headings: tuple[str, ...]


def parse(name: str, text: str) -> Page:
    """The fenced blocks, the prose and the headings of one Markdown file."""
    blocks, prose, headings = [], [], []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if opened is None or (opened["fence"][0] == "`" and "`" in opened["info"]):
            prose.append(lines[i])
            heading = HEADING.match(lines[i])
            if heading:
                headings.append(heading["text"])
            i += 1
            continue
        start, body = i, []
        closing = re.compile(rf"^ *{re.escape(opened['fence'][0])}{{{len(opened['fence'])},}}[ \t]*$")
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            body.append(_dedent(lines[i], len(opened["indent"])))
            i += 1
        if i == len(lines):
            raise DocError(f"{name}:{start + 1}: a fenced block ({opened['fence']}) is never closed")
        blocks.append(Block(f"{name}:{start + 1}", opened["info"].strip(), "\n".join(body) + "\n"))
        prose.extend([""] * (i - start + 1))
        i += 1
    blank = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), "\n".join(prose))
    return Page(name, tuple(blocks), blank, tuple(headings))


def _dedent(line: str, width: int) -> str:
    return line[min(width, len(line) - len(line.lstrip(" "))):]


def anchors(headings) -> set[str]:
    """GitHub's ids for headings: lower case, punctuation dropped, spaces to '-', repeats -1, -2."""
    seen: dict[str, int] = {}
    ids = set()
    for text in headings:
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its words
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def links(page: Page) -> list[tuple[int, str]]:
    """(line, target) of every link in the prose, inline and reference style."""
    found = [(m.start(), m["target"].strip("<>")) for m in INLINE_LINK.finditer(page.prose)]
    found += [(m.start(), m["target"]) for m in REFERENCE_LINK.finditer(page.prose)]
    return sorted((page.prose.count("\n", 0, offset) + 1, target) for offset, target in found)


def broken_links(page: Page, read_page) -> list[str]:
    """What is wrong with the page's relative links: a missing file, or a missing heading."""
    problems = []
    base = (ROOT / page.name).parent
    for line, target in links(page):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # not a file of this repository
        path_part, _, anchor = target.partition("#")
        path = (base / path_part).resolve() if path_part else ROOT / page.name
        where = f"{page.name}:{line}: {target}"
        if path_part.startswith("/") or ROOT not in (path, *path.parents):
            problems.append(f"{where}: points outside the repository")
        elif not path.exists():
            problems.append(f"{where}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(read_page(path).headings):
            problems.append(f"{where}: no heading with that anchor in {path.relative_to(ROOT)}")
    return problems


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def read_page(path: Path) -> Page:
    return parse(path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))


def _collect():
    pages, errors = [], []
    for path in doc_files():
        try:
            pages.append(read_page(path))
        except DocError as exc:
            errors.append(str(exc))
    return pages, errors


PAGES, PARSE_ERRORS = _collect()
RUNNABLE_BLOCKS = [block for page in PAGES for block in page.blocks if block.info == RUNNABLE]


# -- the repository's own docs ---------------------------------------------------------------

def test_every_doc_file_parses():
    assert PARSE_ERRORS == []
    assert [page.name for page in PAGES][0] == "README.md"


def test_the_readme_has_runnable_blocks():
    """The parametrised test below would silently vanish if the marker stopped matching."""
    assert any(block.where.startswith("README.md:") for block in RUNNABLE_BLOCKS)


def test_every_relative_link_leads_somewhere():
    problems = [problem for page in PAGES for problem in broken_links(page, read_page)]
    assert problems == []


def test_ci_runs_what_the_quick_start_says():
    """.ci/run is the README's first command, then its test command, as written."""
    readme_lines = [line for block in PAGES[0].blocks if block.info == "sh" for line in block.text.splitlines()]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in ("./scripts/setup", ".venv/bin/python -m pytest -q"):
        assert command in readme_lines and command in ci_lines
    assert ".venv/bin/reaper demo" in readme_lines


@pytest.mark.parametrize("block", RUNNABLE_BLOCKS, ids=[block.where for block in RUNNABLE_BLOCKS])
def test_runnable_block(block, docs_env):
    before = untracked_files()
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=ROOT, env=docs_env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.where}: still running after {BLOCK_TIMEOUT_S}s:\n{exc.stdout}\n{exc.stderr}")
    assert done.returncode == 0, f"{block.where} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert untracked_files() - before == set(), f"{block.where} left files in the repository"


@pytest.fixture
def docs_env(r, redis_server, tmp_path):
    """What a block runs with: a private Redis, both services off, no config from this machine."""
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("REAPER_") and name not in ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"),
               REDIS_HOST=redis_server.host, REDIS_PORT=str(redis_server.port),
               REAPER_AUTH_SERVICE_BASE_URL="", REAPER_USER_SERVICE_BASE_URL="")
    return env


def untracked_files(root: Path = ROOT) -> set[str]:
    """Files git neither tracks nor ignores; without git (a copy that is no checkout), every file
    outside IGNORED_DIRS: the caller compares before and after."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "--others", "--exclude-standard", "-z"],
                                capture_output=True, text=True, check=True)
        return set(listed.stdout.split("\0")) - {""}
    except (OSError, subprocess.CalledProcessError):
        return {path.relative_to(root).as_posix() for path in _walk(root)}


def _walk(root: Path):
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            if entry.name not in IGNORED_DIRS and not entry.name.endswith(".egg-info"):
                yield from _walk(entry)
        else:
            yield entry


# -- the checks themselves, on documents made for them ----------------------------------------

SAMPLE = """\
# A page

Intro with [a link](#the-setup-reaper-run) and `[not a link](nowhere.md)` in code.

## The setup: `reaper run`

- a list item with a block:
  ```sh runnable
  echo indented
  ```

```sh
not runnable
```

````markdown
```sh runnable
inside a longer fence: not a block of its own
```
````

## Again
## Again
[x]: ../README.md#quick-start
"""


def test_parse_finds_blocks_with_their_lines_and_dedents_them():
    page = parse("docs/sample.md", SAMPLE)
    assert [(b.where, b.info) for b in page.blocks] == [
        ("docs/sample.md:8", "sh runnable"), ("docs/sample.md:12", "sh"), ("docs/sample.md:16", "markdown")]
    assert page.blocks[0].text == "echo indented\n"
    assert "inside a longer fence" in page.blocks[2].text


def test_anchors_follow_github():
    page = parse("docs/sample.md", SAMPLE)
    assert anchors(page.headings) == {"a-page", "the-setup-reaper-run", "again", "again-1"}
    assert anchors(["Audit trail: `reaper events`", "Redis Sentinel, TLS and Redis Cluster"]) == {
        "audit-trail-reaper-events", "redis-sentinel-tls-and-redis-cluster"}


def test_links_skip_code_and_find_reference_links():
    page = parse("docs/sample.md", SAMPLE)
    assert links(page) == [(3, "#the-setup-reaper-run"), (24, "../README.md#quick-start")]


def test_an_unclosed_fence_is_an_error_with_its_place():
    with pytest.raises(DocError, match=r"docs/bad\.md:3: a fenced block \(```\) is never closed"):
        parse("docs/bad.md", "text\n\n```sh runnable\necho hi\n")


@pytest.mark.parametrize("target, problem", [
    ("nowhere.md", "no such file"),
    ("../README.md#no-such-heading", "no heading with that anchor in README.md"),
    ("#missing", "no heading with that anchor in docs/configuration.md"),
    ("../../etc/passwd", "points outside the repository"),
])
def test_broken_links_are_reported(target, problem):
    page = parse("docs/configuration.md", f"# Configuration\n\nSee [there]({target}).\n")
    assert broken_links(page, read_page) == [f"docs/configuration.md:3: {target}: {problem}"]


def test_good_links_pass():
    page = parse("docs/configuration.md", "# Configuration\n\n[a](#configuration) [b](../README.md#quick-start) "
                                          "[c](../config.example.toml) [d](https://example.com/x.md)\n")
    assert broken_links(page, read_page) == []


def test_untracked_files_sees_a_new_file_outside_git(tmp_path):
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_text("x")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("x")
    before = untracked_files(tmp_path)
    assert before == {"docs/page.md"}
    (tmp_path / "docs" / "left-behind.txt").write_text("x")
    assert untracked_files(tmp_path) - before == {"docs/left-behind.txt"}


def test_untracked_files_asks_git_in_a_checkout(tmp_path):
    """In a git checkout git answers (the walk would give the same here); a copy of the repository
    that is no checkout, or a machine without git, gets the walk."""
    repo = tmp_path / "repo"
    repo.mkdir()
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("__pycache__/\n")
    (repo / "__pycache__").mkdir()
    (repo / "__pycache__" / "cache.pyc").write_text("x")
    assert untracked_files(repo) == {".gitignore"}
    (repo / "left-behind.txt").write_text("x")
    assert untracked_files(repo) == {".gitignore", "left-behind.txt"}
