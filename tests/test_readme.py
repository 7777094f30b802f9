"""The README's ```python blocks run as pasted, against the real demo shards.

Each block is executed in a fresh namespace from a temporary folder that holds
``work/demo/shards`` (a link to the demo shards, built once per session by
tests/loader_demo.py), so the README's relative paths work unchanged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.loader_demo import demo_shards

README = ROOT / "README.md"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced ```python block of ``text``, in order."""
    out = []
    for m in re.finditer(r"^```python[ \t]*\n(.*?)^```", text, flags=re.M | re.S):
        out.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return out


def test_python_blocks_are_found():
    blocks = python_blocks("a\n```python\nx = 1\n```\nb\n```bash\nls\n```\n```python\ny = 2\n```\n")
    assert blocks == [(2, "x = 1\n"), (9, "y = 2\n")]


BLOCKS = python_blocks(README.read_text())


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    shards = demo_shards(tmp_path_factory.getbasetemp())
    d = tmp_path_factory.mktemp("readme")
    (d / "work" / "demo").mkdir(parents=True)
    (d / "work" / "demo" / "shards").symlink_to(shards, target_is_directory=True)
    return d


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_python_block_runs(line, code, demo_dir):
    old = os.getcwd()
    os.chdir(demo_dir)
    try:
        exec(compile(code, f"README.md (block at line {line})", "exec"), {"__name__": "readme"})
    finally:
        os.chdir(old)
