"""Haplotype-building throughput: hapflow against bcftools consensus, pyconsensus-rs and GenVarLoader.

Run from the repository root (a full run takes about 6 minutes on 2 busy cores, ``--quick`` 1)::

    python benchmarks/prep_haplotypes.py --gvl-python PEERS/bin/python
    python benchmarks/prep_haplotypes.py --quick --tools bcftools,pyconsensus-rs

(``PEERS_VENV``: the virtual environment holding GenVarLoader and pyconsensus-rs; how to make
one is below.)

Every tool builds the two haplotypes of each of the 300 samples of
``data/chr20_extra/shapeit4_reference.chr20_1-2Mb.phased300.vcf.gz`` around the chr20 TSSs whose
window of L bp fits inside the real sequence 20:1,000,001-2,000,000, at L = 49,152 and 196,608,
on 1 and 2 threads. Each (tool, threads) pair runs in its own worker process (this script
re-invoked with ``--worker``) so the thread count is fixed before numba / rayon start, and numba
is warmed up before timing. A measurement cycles over the regions for ``--seconds``, split into 5
rounds after an untimed warm-up pass; the fastest round is reported (other processes on the
cores only slow rounds down). "haps/CPU-s" divides by the CPU time of the worker and its
children instead of wall time; "others %" is the share of all cores that other processes used
during that round (from /proc/stat): well above 0 means the row was measured on a busy machine.

* **bcftools** -- one ``samtools faidx REF 20:S-E | bcftools consensus -s SAMPLE -H 1pIu VCF``
  pipeline per sample and haplotype (S-E 1-based closed), as the paper built its data; timed on
  the first ``--bcftools-samples`` samples; "threads" = that many pipelines at once.
* **pyconsensus-rs** -- ``ConsensusEngine.consensus_many_stats`` (sequences stay in Rust) and
  ``consensus_many`` (a ``bytes`` per haplotype handed to Python).
* **genvarloader** -- ``gvl.write`` once per L (timed apart, with the FASTA cache), then
  ``Dataset.open(..).with_seqs("haplotypes").with_len(L)[regions, :]`` (an ``S1`` array).
* **hapflow** -- ``HaplotypeBuilder.fixed`` (TSS-anchored haplotype windows of exactly L codes,
  shape (regions, samples, 2, L), into one reused ``out`` buffer) and
  ``HaplotypeBuilder.ragged`` (the bcftools sequences, flat codes + offsets, into one reused
  ``out`` buffer too). Rows without "preloaded" read the VCF per call, as ``prep.builder`` runs
  over a gene list: each pass over the regions starts with nothing cached
  (``builder.clear_cache()``) and a call reuses only the records the previous call of the pass
  read (the builder's cache of the last span, extended as genes advance); "preloaded" rows read
  the real span once up front (``builder.preload``), as pyconsensus-rs' engine and ``gvl.write``
  read the VCF before their timed calls.

MB/s is haplotypes/s x L / 1e6. "x bcftools" divides by bcftools at the same L and threads.
Byte-exact: for a few (region, sample, haplotype) at the smallest L -- the haplotypes carrying
the most indels -- each tool's bcftools-style sequence (upper-cased) is compared with bcftools';
the column shows that per tool (``fixed`` windows have no bcftools counterpart).

Inputs are copied to a temporary folder first: pyconsensus-rs (``.cvcf``) and GenVarLoader
(``.gvi.zst``, ``.gvlfa``) write caches next to their inputs. Results are appended to
``benchmarks/results/prep_haplotypes.jsonl``.

GenVarLoader 0.43 pins polars<2 and pyarrow<25 (via polars-bio) while hapflow runs on polars 2,
so it lives in a virtual environment of its own that also sees the main site-packages;
pyconsensus-rs (imported as ``pyconsensus``), which is no dependency of hapflow, goes there too.
Any folder will do, e.g.::

    python -m venv --system-site-packages PEERS
    PEERS/bin/pip install genvarloader pyconsensus-rs
    python benchmarks/prep_haplotypes.py --gvl-python PEERS/bin/python

Without ``--gvl-python`` GenVarLoader and pyconsensus-rs run under this interpreter if it can
import them, else they are skipped with a message; with it, pyconsensus-rs runs under this
interpreter when it can import it there, else under ``--gvl-python``.

Fairness (see ``benchmarks/_common.py``): every worker, whatever the tool, runs under the same
``GLIBC_TUNABLES`` (``_common.MALLOC_TUNABLES``: ``glibc.malloc.trim_threshold=4294967296``,
``mmap_threshold=33554432``, ``arena_max=1``), so glibc keeps freed memory between calls
instead of returning it to the OS. Under glibc's defaults (``--default-malloc``) a fresh
pyconsensus-rs process page-faults every call's output in again (~11 faults per 49,152 bp
haplotype) and loses about half its speed or more; hapflow, which writes into one reused
buffer, hardly changes. GenVarLoader allocates a new output array per call, which page-faults
under any setting. The "faults/hap" column shows it. The
summary printed first compares each tool at its fastest thread count ("best against best").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import (
    CHROM,
    LENGTHS,
    MALLOC_TUNABLES,
    REAL_SPAN,
    REFERENCE,
    REPO_ROOT,
    TSS_TABLE,
    VCF,
    LoadMeter,
    append_result,
    best_by_tool,
    load_note,
    print_table,
    ratio_lines,
    run_worker,
    tool_env,
)

TOOLS = ("bcftools", "pyconsensus-rs", "genvarloader", "hapflow")
ROUNDS = 5
"""A measurement is the fastest of this many rounds."""
CHUNK_BYTES = 256 << 20
"""Output bytes one timed call produces at most (regions x samples x 2 x L)."""

COLUMNS = [
    "tool",
    "L",
    "threads",
    "haplotypes/s",
    "MB/s",
    "x bcftools",
    "haps/CPU-s",
    "faults/hap",
    "others %",
    "byte-exact",
]

BEST_PAIRS = (
    ("hapflow fixed, preloaded", "pyconsensus-rs (in Rust)"),
    ("hapflow fixed", "pyconsensus-rs (in Rust)"),
    ("hapflow ragged, preloaded", "pyconsensus-rs (in Rust)"),
    ("hapflow fixed, preloaded", "genvarloader"),
    ("hapflow fixed", "genvarloader"),
    ("hapflow fixed", "bcftools"),
)
"""(ours, theirs) compared best against best: each at its fastest thread count. pyconsensus-rs'
engine and ``gvl.write`` read the VCF once up front, as ``builder.preload`` does; "hapflow
fixed" re-reads it on every call, so it is the fair row only against bcftools."""


# ---------------------------------------------------------------------------------------------
# Plan: regions, samples and byte-exact cases, shared with the workers as JSON.
# ---------------------------------------------------------------------------------------------


def stage_inputs(workdir: Path) -> tuple[Path, Path]:
    """Copy the FASTA and VCF with their indexes into ``workdir``; return (reference, vcf)."""
    for src in (REFERENCE, VCF):
        for suffix in ("", ".fai", ".gzi", ".tbi"):
            path = Path(f"{src}{suffix}")
            if path.exists():
                shutil.copy2(path, workdir / path.name)
    return workdir / REFERENCE.name, workdir / VCF.name


def read_tss(path: Path) -> list[tuple[str, int]]:
    """(gene_name, 0-based TSS) for every row of the TSS table (``tss_hg19`` is 1-based)."""
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    name_col, tss_col = header.index("gene_name"), header.index("tss_hg19")
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    return [(r[name_col], int(float(r[tss_col])) - 1) for r in rows]


def windows(tss: list[tuple[str, int]], length: int, max_regions: int | None) -> dict[str, list]:
    """Genes whose window ``[tss - L//2, tss - L//2 + L)`` (0-based half-open) is all real bases."""
    genes, centers, starts, ends = [], [], [], []
    for name, t in tss:
        start = t - length // 2
        if REAL_SPAN[0] <= start and start + length <= REAL_SPAN[1]:
            genes.append(name)
            centers.append(t)
            starts.append(start)
            ends.append(start + length)
    if not genes:
        raise ValueError(f"no TSS in {TSS_TABLE} has a {length} bp window inside {REAL_SPAN}")
    n = len(genes) if max_regions is None else max_regions
    return {"genes": genes[:n], "tss": centers[:n], "starts": starts[:n], "ends": ends[:n]}


def indel_carriers(
    vcf: Path, start: int, end: int, samples: list[str]
) -> dict[tuple[int, int], int]:
    """Count indel ALT alleles in ``[start, end)`` per (sample index, haplotype)."""
    import pysam

    counts: dict[tuple[int, int], int] = {}
    with pysam.VariantFile(str(vcf)) as f:
        for rec in f.fetch(CHROM, start, end):
            if rec.start < start or not rec.alts:
                continue
            is_indel = [len(a) != len(rec.ref) for a in rec.alts]
            if not any(is_indel):
                continue
            for i, name in enumerate(samples):
                for h, allele in enumerate(rec.samples[name]["GT"][:2]):
                    if allele and is_indel[allele - 1]:
                        counts[(i, h)] = counts.get((i, h), 0) + 1
    return counts


def check_cases(vcf: Path, regions: dict[str, list], samples: list[str], length: int) -> list[dict]:
    """Byte-exact cases: in the first, middle and last region, the two haplotypes with most indels."""
    cases = []
    n = len(regions["starts"])
    for r in sorted({0, n // 2, n - 1}):
        start, end = regions["starts"][r], regions["ends"][r]
        counts = indel_carriers(vcf, start, end, samples)
        best = sorted(counts, key=lambda k: (-counts[k], k))[:2] or [(0, 0)]
        for s, h in best:
            cases.append(
                {
                    "key": f"{regions['genes'][r]}:{samples[s]}:hap{h + 1}",
                    "L": length,
                    "region": r,
                    "sample": samples[s],
                    "sample_index": s,
                    "hap": h,
                    "start": start,
                    "end": end,
                    "indels": counts.get((s, h), 0),
                }
            )
    return cases


def make_plan(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import pysam

    pysam.set_verbosity(0)  # the VCF header's "AC should be declared as Number=A" is harmless
    reference, vcf = stage_inputs(workdir)
    with pysam.VariantFile(str(vcf)) as f:
        samples = list(f.header.samples)
    tss = read_tss(TSS_TABLE)
    regions = {str(L): windows(tss, L, args.max_regions) for L in args.lengths}
    check_len = min(args.lengths)
    return {
        "reference": str(reference),
        "vcf": str(vcf),
        "chrom": CHROM,
        "real_span": list(REAL_SPAN),
        "samples": samples,
        "lengths": list(args.lengths),
        "regions": regions,
        "bcftools_samples": samples[: args.bcftools_samples],
        "checks": check_cases(vcf, regions[str(check_len)], samples, check_len),
        "seconds": args.seconds,
        "bcftools_seconds": args.bcftools_seconds,
        "workdir": str(workdir),
    }


# ---------------------------------------------------------------------------------------------
# Worker helpers
# ---------------------------------------------------------------------------------------------


def digest(seq: bytes) -> str:
    """SHA-256 of the upper-cased sequence (bcftools keeps the FASTA's soft-masking)."""
    return hashlib.sha256(seq.upper()).hexdigest()


def region_chunks(n_regions: int, n_samples: int, length: int) -> list[range]:
    """Consecutive region ranges whose output (regions x samples x 2 x L bytes) fits CHUNK_BYTES."""
    per = max(1, min(n_regions, CHUNK_BYTES // (n_samples * 2 * length)))
    return [range(i, min(i + per, n_regions)) for i in range(0, n_regions, per)]


def time_cycling(
    run: Callable[[Any], int], items: Sequence[Any], seconds: float, rounds: int = ROUNDS
) -> dict:
    """Call ``run(item)`` over ``items``, cycling, for ``rounds`` rounds of ``seconds / rounds``.

    ``run`` returns how many haplotypes it built. First one untimed pass over ``items`` (cut
    short after one round's time) warms caches and the allocator; then each round makes at
    least one call. Returns the fastest round as ``{"haplotypes", "seconds", "cpu_seconds",
    "faults", "others_cpu"}`` -- wall time, this process's CPU time, its minor page faults, and
    the share of all cores that other processes used meanwhile (like ``timeit``, the best round
    is the one least disturbed by them) -- plus ``"round_rates"``, every round's haplotypes/s.
    """
    budget = seconds / rounds
    t0 = time.perf_counter()
    for item in items:
        run(item)
        if time.perf_counter() - t0 >= budget:
            break
    results, i = [], 0
    for _ in range(rounds):
        done, meter = 0, LoadMeter()
        while True:
            done += run(items[i % len(items)])
            i += 1
            if time.perf_counter() - meter.t0 >= budget:
                break
        results.append({"haplotypes": done, **meter.stop()})
    best = max(results, key=lambda r: r["haplotypes"] / r["seconds"])
    return {**best, "round_rates": [round(r["haplotypes"] / r["seconds"], 1) for r in results]}


def row(tool: str, length: int, threads: int, timing: dict, **extra) -> dict:
    return {"tool": tool, "L": length, "threads": threads, **timing, **extra}


# ---------------------------------------------------------------------------------------------
# Workers: each returns {"rows": [...], "setup": [...], "checks": {key: sha256}}
# ---------------------------------------------------------------------------------------------


def bcftools_haplotype(plan: dict, sample: str, hap: int, start: int, end: int) -> bytes:
    """The paper's pipeline for one haplotype of the 0-based half-open interval [start, end)."""
    cmd = (
        f"samtools faidx {plan['reference']} {plan['chrom']}:{start + 1}-{end}"
        f" | bcftools consensus -s {sample} -H {hap + 1}pIu {plan['vcf']}"
    )
    out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, check=True)
    lines = out.stdout.split(b"\n")
    return b"".join(line for line in lines if not line.startswith(b">"))


def worker_bcftools(plan: dict, threads: int) -> dict:
    rows = []
    for length in plan["lengths"]:
        reg = plan["regions"][str(length)]
        tasks = [
            (s, h, start, end)
            for start, end in zip(reg["starts"], reg["ends"], strict=True)
            for s in plan["bcftools_samples"]
            for h in (0, 1)
        ]
        batches = [tasks[i : i + 4 * threads] for i in range(0, len(tasks), 4 * threads)]
        with ThreadPoolExecutor(threads) as pool:

            def run(batch, pool=pool):
                list(pool.map(lambda t: bcftools_haplotype(plan, *t), batch))
                return len(batch)

            timing = time_cycling(run, batches, plan["bcftools_seconds"])
        rows.append(row("bcftools", length, threads, timing, samples=len(plan["bcftools_samples"])))
    checks = {
        c["key"]: digest(bcftools_haplotype(plan, c["sample"], c["hap"], c["start"], c["end"]))
        for c in plan["checks"]
    }
    return {"rows": rows, "setup": [], "checks": checks}


def worker_pyconsensus(plan: dict, threads: int) -> dict:
    from pyconsensus import ConsensusEngine, Task

    chrom, samples = plan["chrom"], plan["samples"]
    t0 = time.perf_counter()
    engine = ConsensusEngine(plan["reference"], {chrom: plan["vcf"]}, log_level="error")
    setup = [
        {
            "tool": "pyconsensus-rs",
            "step": "ConsensusEngine (VCF + .cvcf cache)",
            "seconds": round(time.perf_counter() - t0, 3),
        }
    ]

    def tasks(starts, ends, names):
        # Task coordinates are 1-based closed; one task per region x sample x haplotype.
        return [
            Task(chrom, s + 1, e, chrom, g, sample, hap)
            for s, e, g in zip(starts, ends, names, strict=True)
            for sample in samples
            for hap in ("1pIu", "2pIu")
        ]

    rows = []
    for length in plan["lengths"]:
        reg = plan["regions"][str(length)]
        chunks = [
            tasks(
                reg["starts"][c.start : c.stop],
                reg["ends"][c.start : c.stop],
                reg["genes"][c.start : c.stop],
            )
            for c in region_chunks(len(reg["starts"]), len(samples), length)
        ]
        engine.consensus_many_stats(chunks[0][: 2 * threads], threads=threads)  # warm-up
        timing = time_cycling(
            lambda ts: engine.consensus_many_stats(ts, threads=threads)[0], chunks, plan["seconds"]
        )
        rows.append(row("pyconsensus-rs (in Rust)", length, threads, timing))
        timing = time_cycling(
            lambda ts: len(engine.consensus_many(ts, threads=threads)), chunks, plan["seconds"]
        )
        rows.append(row("pyconsensus-rs (to Python)", length, threads, timing))

    checks = {}
    for c in plan["checks"]:
        res = engine.consensus_many(
            [
                Task(
                    chrom,
                    c["start"] + 1,
                    c["end"],
                    chrom,
                    c["key"],
                    c["sample"],
                    f"{c['hap'] + 1}pIu",
                )
            ]
        )
        checks[c["key"]] = digest(res[0].seq) if res[0].error is None else f"error: {res[0].error}"
    return {"rows": rows, "setup": setup, "checks": checks}


def worker_genvarloader(plan: dict, threads: int) -> dict:
    import genoray
    import genvarloader as gvl
    import numpy as np
    import polars as pl

    workdir = Path(plan["workdir"])
    rows, setup, checks = [], [], {}
    for length in plan["lengths"]:
        reg = plan["regions"][str(length)]
        path = workdir / f"gvl_L{length}_t{threads}.gvl"
        bed = pl.DataFrame(
            {
                "chrom": [plan["chrom"]] * len(reg["starts"]),
                "chromStart": reg["starts"],
                "chromEnd": reg["ends"],
            }
        )
        t0 = time.perf_counter()
        gvl.write(path, bed, genoray.VCF(plan["vcf"]), overwrite=True)
        t1 = time.perf_counter()
        ds = gvl.Dataset.open(path, reference=plan["reference"]).with_seqs("haplotypes")
        setup.append(
            {
                "tool": "genvarloader",
                "L": length,
                "threads": threads,
                "step": "gvl.write",
                "seconds": round(t1 - t0, 3),
            }
        )
        setup.append(
            {
                "tool": "genvarloader",
                "L": length,
                "threads": threads,
                "step": "Dataset.open",
                "seconds": round(time.perf_counter() - t1, 3),
            }
        )
        fixed = ds.with_len(length).with_settings(parallel=threads > 1)
        n_samples = len(fixed.samples)
        chunks = region_chunks(len(reg["starts"]), n_samples, length)
        fixed[0, :]  # warm-up

        def run(c, fixed=fixed, n_samples=n_samples, length=length):
            haps = fixed[c.start : c.stop, :]  # (regions, samples, 2, L) S1
            assert haps.shape[-1] == length, f"genvarloader returned shape {haps.shape}"
            return len(c) * n_samples * 2

        timing = time_cycling(run, chunks, plan["seconds"])
        rows.append(row("genvarloader", length, threads, timing))

        ragged = ds.with_len("ragged")
        for c in plan["checks"]:
            if c["L"] == length:
                haps = ragged[c["region"], c["sample"]]  # Ragged, shape (2, None)
                lo, hi = haps.offsets[c["hap"]], haps.offsets[c["hap"] + 1]
                checks[c["key"]] = digest(np.asarray(haps.data[lo:hi]).tobytes())
    return {"rows": rows, "setup": setup, "checks": checks}


def worker_hapflow(plan: dict, threads: int) -> dict:
    import numpy as np

    from prep.builder import HaplotypeBuilder
    from prep.encoding import decode

    chrom = plan["chrom"]
    t0 = time.perf_counter()
    builder = HaplotypeBuilder(plan["reference"], plan["vcf"])
    setup = [
        {
            "tool": "hapflow",
            "threads": threads,
            "step": "HaplotypeBuilder",
            "seconds": round(time.perf_counter() - t0, 3),
        }
    ]
    samples = list(getattr(builder, "samples", plan["samples"]))
    n_samples = len(samples)

    rows = []
    for length in plan["lengths"]:
        reg = plan["regions"][str(length)]
        tss = np.asarray(reg["tss"], dtype=np.int64)
        starts = np.asarray(reg["starts"], dtype=np.int64)
        ends = np.asarray(reg["ends"], dtype=np.int64)
        chunks = region_chunks(len(tss), n_samples, length)
        t0 = time.perf_counter()
        builder.fixed(chrom, tss[:1], length)  # warm-up: the first call compiles
        builder.ragged(chrom, starts[:1], ends[:1])
        setup.append(
            {
                "tool": "hapflow",
                "L": length,
                "threads": threads,
                "step": "warm-up (numba compile or cache load)",
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )

        buffers: dict[int, np.ndarray] = {}  # one reused ``out`` per chunk size, as a writer would
        flat = [np.empty(0, dtype=np.uint8)]  # ragged mode's reused ``out``, grown as needed
        # Per call, each pass over the genes starts with nothing cached: within a pass a call
        # reuses the records the previous one read (genes advance along the chromosome).
        per_call = [True]

        def new_pass(c, per_call=per_call):
            if c.start == 0 and per_call[0]:
                builder.clear_cache()

        def run_fixed(c, tss=tss, length=length, buffers=buffers):
            new_pass(c)
            if len(c) not in buffers:
                buffers[len(c)] = np.empty((len(c), n_samples, 2, length), dtype=np.uint8)
            seqs = builder.fixed(chrom, tss[c.start : c.stop], length, out=buffers[len(c)]).seqs
            assert seqs.shape == (len(c), n_samples, 2, length), f"fixed returned {seqs.shape}"
            return len(c) * n_samples * 2

        def run_ragged(c, starts=starts, ends=ends, flat=flat):
            new_pass(c)
            rag = builder.ragged(chrom, starts[c.start : c.stop], ends[c.start : c.stop],
                                 out=flat[0])
            flat[0] = rag.data if rag.data.base is None else rag.data.base
            return len(c) * n_samples * 2

        timing = time_cycling(run_fixed, chunks, plan["seconds"])
        rows.append(row("hapflow fixed", length, threads, timing))
        timing = time_cycling(run_ragged, chunks, plan["seconds"])
        rows.append(row("hapflow ragged", length, threads, timing))
        # The VCF read once up front, as pyconsensus-rs' engine and gvl.write do.
        per_call[0] = False
        t0 = time.perf_counter()
        builder.preload(chrom, *plan["real_span"])
        setup.append({"tool": "hapflow", "L": length, "threads": threads,
                      "step": "preload (VCF read once)",
                      "seconds": round(time.perf_counter() - t0, 3)})
        timing = time_cycling(run_fixed, chunks, plan["seconds"])
        rows.append(row("hapflow fixed, preloaded", length, threads, timing))
        timing = time_cycling(run_ragged, chunks, plan["seconds"])
        rows.append(row("hapflow ragged, preloaded", length, threads, timing))
        builder.clear_cache()

    cases = plan["checks"]
    rag = builder.ragged(
        chrom,
        np.array([c["start"] for c in cases], dtype=np.int64),
        np.array([c["end"] for c in cases], dtype=np.int64),
    )
    checks = {
        c["key"]: digest(decode(rag.get(i, samples.index(c["sample"]), c["hap"])).encode())
        for i, c in enumerate(cases)
    }
    return {"rows": rows, "setup": setup, "checks": checks}


WORKERS: dict[str, Callable[[dict, int], dict]] = {
    "bcftools": worker_bcftools,
    "pyconsensus-rs": worker_pyconsensus,
    "genvarloader": worker_genvarloader,
    "hapflow": worker_hapflow,
}


# ---------------------------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------------------------


def can_import(python: str, module: str) -> bool:
    probe = [
        python,
        "-c",
        f"import importlib.util, sys; sys.exit(importlib.util.find_spec('{module}') is None)",
    ]
    return subprocess.run(probe, capture_output=True, cwd=REPO_ROOT).returncode == 0


def tool_python(tool: str, args: argparse.Namespace) -> tuple[str | None, str]:
    """The interpreter that runs ``tool``, or None and the reason it is skipped."""
    python = args.gvl_python if tool == "genvarloader" and args.gvl_python else sys.executable
    if tool == "pyconsensus-rs" and args.gvl_python and not can_import(python, "pyconsensus"):
        python = args.gvl_python  # the benchmark venv holds it too (see the module docstring)
    module = {
        "bcftools": None,
        "pyconsensus-rs": "pyconsensus",
        "genvarloader": "genvarloader",
        "hapflow": "prep.builder",
    }[tool]
    if tool == "bcftools":
        missing = [exe for exe in ("bcftools", "samtools") if shutil.which(exe) is None]
        return (None, f"{', '.join(missing)} not on PATH") if missing else (python, "")
    if not can_import(python, module):
        hint = " (pass --gvl-python, see the module docstring)" if tool == "genvarloader" else ""
        return None, f"{python} cannot import {module}{hint}"
    return python, ""


def run_tools(args: argparse.Namespace, plan_path: Path) -> tuple[list, list, dict, dict]:
    rows, setup, checks, skipped = [], [], {}, {}
    for tool in args.tools:
        python, reason = tool_python(tool, args)
        if python is None:
            print(f"[skip] {tool}: {reason}", flush=True)
            skipped[tool] = reason
            continue
        for threads in args.threads:
            print(f"[run] {tool} on {threads} thread(s) ...", flush=True)
            env = tool_env(threads, tuned_malloc=not args.default_malloc)
            try:
                out = run_worker(
                    [
                        __file__,
                        "--worker",
                        tool,
                        "--threads",
                        str(threads),
                        "--plan",
                        str(plan_path),
                    ],
                    env=env,
                    python=python,
                )
            except RuntimeError as e:
                print(f"[fail] {tool} on {threads} thread(s): {e}", flush=True)
                skipped[f"{tool} threads={threads}"] = str(e)[-500:]
                continue
            rows += out["rows"]
            setup += out["setup"]
            for key, value in out["checks"].items():
                checks.setdefault(tool, {})[key] = value
    return rows, setup, checks, skipped


def byte_exact(plan: dict, checks: dict) -> dict[str, dict]:
    """``{"TOOL vs OTHER": {"equal", "cases", "differ"}}`` over the check cases.

    Every tool is compared with bcftools, and hapflow also with pyconsensus-rs.
    """
    keys = [c["key"] for c in plan["checks"]]
    pairs = [(tool, "bcftools") for tool in checks if tool != "bcftools"]
    pairs.append(("hapflow", "pyconsensus-rs"))
    report = {}
    for tool, other in pairs:
        if tool in checks and other in checks:
            differ = [k for k in keys if checks[tool].get(k) != checks[other].get(k)]
            report[f"{tool} vs {other}"] = {
                "equal": len(keys) - len(differ),
                "cases": len(keys),
                "differ": differ,
            }
    return report


def tool_family(tool: str) -> str:
    """``"pyconsensus-rs (in Rust)"`` -> ``"pyconsensus-rs"``, ``"hapflow fixed"`` -> ``"hapflow"``."""
    return tool.split(" ")[0]


def add_rates(rows: list[dict], exact: dict[str, dict]) -> None:
    base = {
        (r["L"], r["threads"]): r["haplotypes"] / r["seconds"]
        for r in rows
        if r["tool"] == "bcftools"
    }
    for r in rows:
        rate = r["haplotypes"] / r["seconds"]
        r["haplotypes/s"] = rate
        r["MB/s"] = rate * r["L"] / 1e6
        b = base.get((r["L"], r["threads"]))
        r["x bcftools"] = rate / b if b else None
        r["haps/CPU-s"] = r["haplotypes"] / r["cpu_seconds"] if r["cpu_seconds"] > 0 else None
        r["faults/hap"] = round(r["faults"] / r["haplotypes"], 2) if "faults" in r else None
        r["others %"] = round(100 * r["others_cpu"])
        e = exact.get(f"{tool_family(r['tool'])} vs bcftools")
        if r["tool"] == "bcftools":
            r["byte-exact"] = "reference"
        elif e:
            r["byte-exact"] = (
                f"{'yes' if e['equal'] == e['cases'] else 'NO'} {e['equal']}/{e['cases']}"
            )


def best_vs_best(rows: list[dict], lengths: Sequence[int]) -> list[str]:
    """Ratio lines for :data:`BEST_PAIRS`, each tool at its fastest thread count."""
    best = best_by_tool(rows, "haplotypes/s", "threads")
    return ratio_lines(best, BEST_PAIRS, "haplotypes/s", "threads", lengths)


def per_cpu_second(rows: list[dict], lengths: Sequence[int]) -> list[str]:
    """Ratio lines for :data:`BEST_PAIRS` on haplotypes per CPU-second at 1 thread.

    Other processes on the cores slow wall time down far more than CPU time, so on a busy
    machine these are the ratios to trust (they leave out what a second thread would add).
    """
    one = [r for r in rows if r["threads"] == 1]
    best = best_by_tool(one, "haps/CPU-s", "threads")
    return ratio_lines(best, BEST_PAIRS, "haps/CPU-s", "threads", lengths)


def run_benchmark(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hapflow-bench-") as tmp:
        workdir = Path(tmp)
        plan = make_plan(args, workdir)
        plan_path = workdir / "plan.json"
        plan_path.write_text(json.dumps(plan))
        n_regions = {L: len(r["starts"]) for L, r in plan["regions"].items()}
        print(
            f"regions per L: {n_regions}; samples: {len(plan['samples'])}; bcftools on "
            f"{len(plan['bcftools_samples'])} samples; {len(plan['checks'])} byte-exact cases",
            flush=True,
        )
        rows, setup, checks, skipped = run_tools(args, plan_path)

    exact = byte_exact(plan, checks)
    add_rates(rows, exact)
    malloc = "glibc defaults" if args.default_malloc else f"GLIBC_TUNABLES={MALLOC_TUNABLES}"
    print(f"\nbest against best (every tool under {malloc}):")
    ratios = best_vs_best(rows, args.lengths)
    for line in ratios:
        print("  " + line)
    print("per CPU-second on 1 thread (the ratios to trust when 'others %' is high):")
    cpu_ratios = [line.replace("best vs best", "per CPU-s")
                  for line in per_cpu_second(rows, args.lengths)]
    for line in cpu_ratios:
        print("  " + line)
    print()
    print_table(rows, COLUMNS)
    if setup:
        print("\none-off setup (not in the rates):")
        print_table(setup, ["tool", "L", "threads", "step", "seconds"])
    print(
        "\nbyte-exact cases (region:sample:haplotype, indels carried): "
        + ", ".join(f"{c['key']} ({c['indels']})" for c in plan["checks"])
    )
    print(
        "(checked on each tool's bcftools-style output: hapflow ragged, genvarloader "
        "with_len('ragged'), pyconsensus-rs consensus_many)"
    )
    for pair, e in exact.items():
        print(
            f"byte-exact {pair}: {'yes' if e['equal'] == e['cases'] else 'no'} "
            f"({e['equal']}/{e['cases']})" + (f"; differ: {e['differ']}" if e["differ"] else "")
        )
    for tool, reason in skipped.items():
        print(f"skipped {tool}: {reason.splitlines()[-1] if reason else ''}")
    path = append_result(
        "prep_haplotypes",
        {
            "args": {k: v for k, v in vars(args).items() if k not in ("worker", "plan")},
            "regions": n_regions,
            "samples": len(plan["samples"]),
            "rows": rows,
            "setup": setup,
            "byte_exact": exact,
            "check_cases": [
                {k: c[k] for k in ("key", "L", "start", "end", "indels")} for c in plan["checks"]
            ],
            "skipped": skipped,
            "malloc": malloc,
            "best_vs_best": ratios,
            "per_cpu_second_1_thread": cpu_ratios,
            "wall_seconds": round(time.perf_counter() - t_start, 1),
            "loadavg_1min": {"before": load_before, "after": os.getloadavg()[0]},
        },
    )
    print(load_note(load_before, os.getloadavg()[0]))
    print(f"\nappended to {path.relative_to(REPO_ROOT)} ({time.perf_counter() - t_start:.0f} s)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="small fast run: 4 regions, 1 s per measurement"
    )
    p.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help=f"comma-separated subset of {','.join(TOOLS)} (default: all)",
    )
    p.add_argument(
        "--lengths", default=",".join(map(str, LENGTHS)), help="comma-separated window lengths L"
    )
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument(
        "--seconds", type=float, default=None, help="time per measurement (default 8, --quick 1)"
    )
    p.add_argument(
        "--bcftools-seconds",
        type=float,
        default=None,
        help="time per bcftools measurement (default 10, --quick 2)",
    )
    p.add_argument(
        "--bcftools-samples", type=int, default=20, help="samples bcftools is timed on (default 20)"
    )
    p.add_argument(
        "--max-regions",
        type=int,
        default=None,
        help="use at most this many regions per L (default all; --quick 4)",
    )
    p.add_argument(
        "--gvl-python",
        default=None,
        help="interpreter that can import genvarloader (default: this one)",
    )
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="run every tool under glibc's default malloc settings instead of GLIBC_TUNABLES "
        "(shows what a fresh process that returns freed memory after each call pays)",
    )
    p.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    p.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    args.tools = [t for t in args.tools.split(",") if t]
    unknown = sorted(set(args.tools) - set(TOOLS))
    if unknown:
        p.error(f"unknown tool(s) {unknown}; choose from {list(TOOLS)}")
    args.lengths = [int(x) for x in args.lengths.split(",")]
    if args.worker:
        args.threads = int(args.threads)
        return args
    args.threads = [int(x) for x in args.threads.split(",")]
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else 8.0
    if args.bcftools_seconds is None:
        args.bcftools_seconds = 2.0 if args.quick else 10.0
    if args.max_regions is None and args.quick:
        args.max_regions = 4
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        plan = json.loads(args.plan.read_text())
        print(json.dumps(WORKERS[args.worker](plan, args.threads)), flush=True)
        return
    run_benchmark(args)


if __name__ == "__main__":
    main()
