"""The manual runs: every ```python block of README.md and docs/*.md, in order, in one fresh
namespace per file, from an empty temporary folder; a block fenced ```python file=NAME.py is
the user's file of that name: it is written there (and imports as a module) rather than run.
README.md stays short; and every link between the pages leads to a file and heading that exist."""

import os
import re
import sys
import traceback

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PAGES = ["README.md"] + sorted(f"docs/{name}" for name in os.listdir(DOCS) if name.endswith(".md"))
MAX_README_LINES = 250

_FENCE = re.compile(r"^```(\w*)( file=[\w.]+)?\n(.*?)^```$", re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _read(page: str) -> str:
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def python_blocks(text: str) -> list[tuple[str | None, str]]:
    """(file name or None, code) of each ```python block, in order."""
    return [(name[len(" file="):] if name else None, body) for lang, name, body in _FENCE.findall(text)
            if lang == "python"]


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _FENCE.sub("", text), re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = python_blocks(_read(page))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the page's files import as the user's modules do
    torch.manual_seed(0)
    namespace = {"__name__": "__main__"}  # as if each page were one script: `if __name__ == "__main__"` runs
    written = [name[:-3] for name, _ in blocks if name]
    for module in written:
        sys.modules.pop(module, None)  # another page's file of the same name may have loaded
    for number, (name, block) in enumerate(blocks, 1):
        if name is not None:
            (tmp_path / name).write_text(block)
            continue
        first_line = block.splitlines()[0] if block.strip() else "(empty block)"
        try:
            exec(compile(block, f"{page} block {number}", "exec"), namespace)
        except Exception as error:
            pytest.fail(f"{page}: python block {number} ({first_line!r}) raised "
                        f"{type(error).__name__}: {error}\n{traceback.format_exc()}")


def test_readme_is_short():
    lines = _read("README.md").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; keep it at most {MAX_README_LINES}"


@pytest.mark.parametrize("page", PAGES)
def test_links_between_pages_resolve(page):
    text = _read(page)
    here = os.path.dirname(os.path.join(ROOT, page))
    for target in _LINK.findall(_FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s) and other schemes
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(here, path)) if path else os.path.join(ROOT, page)
        assert os.path.exists(resolved), f"{page}: link {target!r} leads to a missing file"
        if anchor and resolved.endswith(".md"):
            with open(resolved, encoding="utf-8") as f:
                assert anchor in _anchors(f.read()), f"{page}: link {target!r} names a missing heading"
