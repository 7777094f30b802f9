"""Helpers shared by the benchmark scripts in this folder (not part of the hapflow package).

A benchmark script measures, prints a plain-text table with :func:`print_table` and appends
one JSON line per run with :func:`append_result`::

    rows = [{"tool": "hapflow", "haplotypes/s": 1234.5}]
    print_table(rows, ["tool", "haplotypes/s"])
    append_result("prep_haplotypes", {"rows": rows})   # -> benchmarks/results/prep_haplotypes.jsonl

Scripts that compare thread counts re-invoke themselves as workers with :func:`run_worker`:
the worker prints one JSON object as the last line of its stdout.

Fairness rules every script follows (a benchmark that flatters hapflow is a bug):

* every tool runs under the same allocator settings, :data:`MALLOC_TUNABLES` (put in the
  environment of every worker by :func:`tool_env`): glibc then keeps freed memory instead of
  returning it to the OS after each call, so no tool pays page faults for re-mapping its output
  on every call (pyconsensus-rs lost ~4x to that in a fresh process). ``--default-malloc``
  measures glibc's defaults instead, again for all tools alike;
* every tool is measured at each thread / worker count asked for, and the tables lead with
  best-against-best ratios (:func:`best_by_tool`), each tool at its fastest setting;
* a measurement is the best of several rounds after a warm-up, and every row records
  "others %" (:class:`LoadMeter`): the share of all cores that other processes used meanwhile.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
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
    "MALLOC_TUNABLES",
    "THREAD_VARIABLES",
    "tool_env",
    "cpu_seconds",
    "page_faults",
    "tree_cpu_seconds",
    "machine_busy_seconds",
    "LoadMeter",
    "best_by_tool",
    "ratio_lines",
    "load_note",
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


MALLOC_TUNABLES = (
    "glibc.malloc.trim_threshold=4294967296:glibc.malloc.mmap_threshold=33554432"
    ":glibc.malloc.arena_max=1"
)
"""glibc malloc settings given to every tool's worker process (``GLIBC_TUNABLES``).

``trim_threshold`` 4 GiB: free memory at the top of a heap is not handed back to the OS after
each call (the default, 128 kB, gives it back, and the next call page-faults it in again).
``mmap_threshold`` 32 MiB (glibc's maximum): buffers such as a 196,608-byte sequence come from
the heap and are reused instead of being mmap-ed and unmapped per allocation. ``arena_max`` 1:
threads allocate from the main heap too (a thread's own arena grows in 64 MB heaps that glibc
unmaps when they empty: pyconsensus-rs still page-faulted ~10 times per 196,608 bp haplotype
without it, none with it). This is what a long-running training or writer process reaches anyway
once its heap is warm."""

THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "GVL_NUM_THREADS", "RAYON_NUM_THREADS",
                    "OMP_NUM_THREADS", "POLARS_MAX_THREADS")
"""Environment variables that fix a worker's thread count (numba, GenVarLoader, Rust / rayon,
OpenMP, polars); :func:`tool_env` sets all of them."""


def tool_env(threads: int | None = None, tuned_malloc: bool = True) -> dict[str, str]:
    """Environment for one tool's worker: thread variables, allocator settings, PYTHONPATH.

    Parameters
    ----------
    threads
        Value for every variable in :data:`THREAD_VARIABLES`; None leaves them unset (each
        library's own default: all cores).
    tuned_malloc
        True: ``GLIBC_TUNABLES`` = :data:`MALLOC_TUNABLES`; False: glibc's defaults (any
        ``GLIBC_TUNABLES`` of the caller is removed by :func:`run_worker`'s ``unset``).
    """
    env = {name: str(threads) for name in THREAD_VARIABLES} if threads is not None else {}
    if tuned_malloc:
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    )
    return env


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def page_faults() -> int:
    """Minor page faults of this process and its finished children so far (``getrusage``)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_minflt + kids.ru_minflt


def tree_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds of process ``pid`` (default: this one) and all its live descendants.

    Read from ``/proc/*/stat`` (utime + stime), so DataLoader worker processes that are still
    running count, unlike ``RUSAGE_CHILDREN``. Falls back to :func:`cpu_seconds` without /proc.
    """
    root = os.getpid() if pid is None else pid
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return cpu_seconds()
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        parent[int(name)] = int(fields[1])
        cpu[int(name)] = (int(fields[11]) + int(fields[12])) / tick
    if root not in cpu:
        return cpu_seconds()
    total, stack = 0.0, [root]
    children: dict[int, list[int]] = {}
    for p, pp in parent.items():
        children.setdefault(pp, []).append(p)
    while stack:
        p = stack.pop()
        total += cpu.get(p, 0.0)
        stack += children.get(p, [])
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all processes on this machine have used (``/proc/stat``; 0 where absent)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class LoadMeter:
    """Wall, CPU and page-fault deltas of a stretch of work, and what other processes took.

    ``own_cpu`` callable: the CPU seconds to count as ours (default :func:`cpu_seconds`; a
    loader with worker processes passes one that adds its workers' CPU time).

    >>> m = LoadMeter(); _ = sum(range(10)); d = m.stop()
    >>> sorted(d)
    ['cpu_seconds', 'faults', 'others_cpu', 'seconds']
    """

    def __init__(self, own_cpu=cpu_seconds):
        self._own_cpu = own_cpu
        self.t0, self.c0 = time.perf_counter(), own_cpu()
        self.m0, self.f0 = machine_busy_seconds(), page_faults()

    def stop(self) -> dict[str, float]:
        """``seconds`` (wall), ``cpu_seconds`` (ours), ``faults`` (minor, this process and
        finished children) and ``others_cpu``: the share (0..1) of all cores that other
        processes used meanwhile."""
        elapsed = time.perf_counter() - self.t0
        cpu = self._own_cpu() - self.c0
        n_cpu = os.cpu_count() or 1
        others = max(0.0, machine_busy_seconds() - self.m0 - cpu) / (max(elapsed, 1e-9) * n_cpu)
        return {"seconds": round(elapsed, 4), "cpu_seconds": round(cpu, 4),
                "faults": page_faults() - self.f0, "others_cpu": round(min(others, 1.0), 3)}


def best_by_tool(
    rows: Sequence[Mapping[str, Any]], rate: str, setting: str, group: Sequence[str] = ("L",)
) -> dict[tuple, Mapping[str, Any]]:
    """The fastest row of each (tool, *group) over every value of ``setting`` (threads/workers).

    A row's tool is its ``family`` when it has one (several ways of running one tool, such as
    GenVarLoader's indexing and its DataLoader, compete for that tool's best). Returns
    ``{(tool, *group values): row}``; rows without a ``rate`` are ignored.
    """
    best: dict[tuple, Mapping[str, Any]] = {}
    for r in rows:
        if r.get(rate) is None:
            continue
        key = (r.get("family", r["tool"]), *(r[g] for g in group))
        if key not in best or r[rate] > best[key][rate]:
            best[key] = r
    return best


def ratio_lines(
    best: Mapping[tuple, Mapping[str, Any]],
    pairs: Sequence[tuple[str, str]],
    rate: str,
    setting: str,
    lengths: Sequence[int],
) -> list[str]:
    """One line per (ours, theirs) pair and L: best ours / best theirs, with the settings used.

    Written for a reader: ``L=49,152: hapflow fixed, preloaded (1 threads) / pyconsensus-rs
    (in Rust) (1 threads) = 1.41x best vs best``.
    """
    lines = []
    for length in lengths:
        for ours, theirs in pairs:
            a, b = best.get((ours, length)), best.get((theirs, length))
            if a is None or b is None:
                continue
            lines.append(
                f"L={length:,}: {a['tool']} ({a[setting]} {setting}) / {b['tool']} "
                f"({b[setting]} {setting}) = {a[rate] / b[rate]:.2f}x best vs best "
                f"(others % {round(100 * a.get('others_cpu', 0))} / "
                f"{round(100 * b.get('others_cpu', 0))})"
            )
    return lines


def load_note(before: float, after: float) -> str:
    """Plain words on how loaded the machine was (1-minute load average vs cores)."""
    cores = os.cpu_count() or 1
    worst = max(before, after)
    level = "idle" if worst < 0.5 else "lightly loaded" if worst < cores else "busy"
    return (f"1-min load average before/after: {before:.2f} / {after:.2f} on {cores} cores "
            f"({level}: other processes {'shared' if worst >= 0.5 else 'hardly used'} the cores)")


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
        "glibc": os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None,
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
    unset: Sequence[str] = ("GLIBC_TUNABLES",),
) -> dict[str, Any]:
    """Run ``python ARGS`` and return the JSON object printed as its last stdout line.

    ``env`` entries are added to a copy of this process's environment, less the variables in
    ``unset`` that ``env`` does not set (so a caller's own ``GLIBC_TUNABLES`` never leaks into
    one tool only). The worker's stderr is captured and shown only when it fails, or always
    with ``show_stderr=True``.

    Raises
    ------
    RuntimeError
        If the worker exits non-zero or its last stdout line is not a JSON object.
    """
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    full_env.update(env or {})
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
