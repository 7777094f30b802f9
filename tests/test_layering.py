"""The direction of dependencies: prep never imports torch; nothing imports benchmarks/."""

import subprocess
import sys

from tests.conftest import ROOT


def test_prep_never_imports_torch():
    code = (
        "import sys, pkgutil, importlib, prep\n"
        "for m in pkgutil.iter_modules(prep.__path__):\n"
        "    importlib.import_module('prep.' + m.name)\n"
        "assert 'torch' not in sys.modules, 'prep imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_nothing_imports_benchmarks():
    import re

    pattern = re.compile(r"^\s*(import|from)\s+benchmarks\b", re.MULTILINE)
    for package in ("prep", "loader", "train", "analysis", "tests"):
        for path in (ROOT / package).rglob("*.py"):
            assert not pattern.search(path.read_text()), f"{path} imports benchmarks/"
