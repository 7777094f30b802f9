"""Helpers shared by the benchmark scripts in this folder (not part of the hapflow package).

A benchmark script measures, prints a plain-text table with :func:`print_table` and appends
one JSON line per run with :func:`append_result`::

    rows = [{"tool": "hapflow", "haplotypes/s": 1234.5}]
    print_table(rows, ["tool", "haplotypes/s"])
    append_result("prep_haplotypes", {"rows": rows})   # -> benchmarks/results/prep_haplotypes.jsonl

Scripts that compare thread counts re-invoke themselves as workers with :func:`run_worker`:
the worker prints one JSON object as the last line of its stdout.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "REPO_ROOT",
    "DATA",
    "REFERENCE",
    "VCF",
    "TSS_TABLE",
    "CHROM",
    "REAL_SPAN",
    "LENGTHS",
    "RESULTS_DIR",
    "git_commit",
    "machine_info",
    "append_result",
    "format_table",
    "print_table",
    "run_worker",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the folder holding ``benchmarks/``)."""

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
"""Where :func:`append_result` writes ``NAME.jsonl``."""

# The real inputs every benchmark uses: 1000 Genomes chr20, 300 phased samples with indels.
DATA = REPO_ROOT / "data" / "chr20_extra"
REFERENCE = DATA / "GRCh37_20_padded_realonly_1000001-2000000.fa.gz"
VCF = DATA / "shapeit4_reference.chr20_1-2Mb.phased300.vcf.gz"
TSS_TABLE = DATA / "tss_chr20_1-2Mb_GRCh37_from_EnformerAssessment.tsv"
CHROM = "20"
REAL_SPAN = (1_000_000, 2_000_000)
"""0-based half-open span of real bases in REFERENCE; the rest of contig 20 is N padding."""
LENGTHS = (49_152, 196_608)
"""Window lengths measured: the paper's 49,152 bp and Enformer's 196,608 bp."""


def git_commit(repo: Path = REPO_ROOT) -> str:
    """Short commit hash of ``repo``, with ``-dirty`` when the working tree has changes.

    Uses read-only git commands only. Returns ``"unknown"`` outside a git checkout.
    """
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if status else head


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def machine_info() -> dict[str, Any]:
    """Hostname, CPU model, usable cores and the Python / numba / numpy versions."""
    return {
        "hostname": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "python": platform.python_version(),
        "numba": _version("numba"),
        "numpy": _version("numpy"),
    }


def append_result(name: str, result: Mapping[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    """Append ``result`` as one JSON line to ``results_dir/NAME.jsonl``.

    The line starts with ``benchmark``, ``commit``, ``date`` (ISO 8601, local time with offset)
    and ``machine``, then the keys of ``result``. Returns the path written.
    """
    record = {
        "benchmark": name,
        "commit": git_commit(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        **result,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Plain-text table of ``rows`` (dicts) with one column per key in ``columns``.

    Missing keys and ``None`` show as ``-``; numbers are right-aligned.
    """
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row.get(c), int | float) or row.get(c) is None for row in rows)
        for c in columns
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Print :func:`format_table` to stdout."""
    print(format_table(rows, columns), flush=True)


def run_worker(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    timeout: float | None = None,
    show_stderr: bool = False,
) -> dict[str, Any]:
    """Run ``python ARGS`` and return the JSON object printed as its last stdout line.

    ``env`` entries are added to a copy of this process's environment. The worker's stderr is
    captured and shown only when it fails, or always with ``show_stderr=True``.

    Raises
    ------
    RuntimeError
        If the worker exits non-zero or its last stdout line is not a JSON object.
    """
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [python, *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if show_stderr:
        sys.stderr.write(proc.stderr)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"benchmark worker `{python} {' '.join(args)}` failed with exit code "
            f"{proc.returncode}; its stderr ends with:\n{proc.stderr[-3000:]}"
        )
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise RuntimeError(
            f"benchmark worker {' '.join(args)} did not end its stdout with a JSON line: "
            f"{lines[-1][:500]!r}"
        ) from e
