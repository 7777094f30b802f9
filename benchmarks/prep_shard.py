"""End-to-end shard writing and footprint: hapflow ``prep.shard`` against GenVarLoader's ``gvl.write``.

Run from the repository root (about 3 minutes on 2 cores)::

    python benchmarks/prep_shard.py --gvl-python PEERS/bin/python
    python benchmarks/prep_shard.py --gvl-python PEERS/bin/python --lengths 393216,524288
    python benchmarks/prep_shard.py --quick

Inputs: the real chr20 data in ``data/chr20_extra`` — 300 phased 1000 Genomes samples with
indels, the GRCh37 slice 20:1,000,001-2,000,000 — and every TSS of the bundled table whose window
fits inside the real sequence, at L = 49,152 and 196,608 (``--lengths``: any multiple of 128 up
to 524,288, Borzoi's length; fewer TSSs fit as L grows). chr20 has no expression data, so the
benchmark draws a seeded standard-normal expression matrix (genes x the 300 samples) for the
targets; it only fills the targets, whose size does not depend on the values.

* **hapflow** — ``prep.sharding.run_shard`` into a fresh folder: plan, record every haplotype's
  edits against its gene's reference span (shard format 3), encode, write and finalize
  (manifest, quality, meta with sha256): samples/s end to end, bytes on disk per diploid sample
  (every shard byte: edits, the reference spans — once per gene per study —, JSON, tar
  headers) with a breakdown, samples per CPU-second (the rate to trust on a shared machine),
  and the worker's peak RSS (``ru_maxrss``) next to its RSS before
  the first write (imports and inputs).
* **genvarloader** — ``gvl.write`` of the same windows (BED) and VCF: seconds, bytes per diploid
  sample of the dataset folder it writes, peak RSS. It stores genotypes only and needs the
  reference FASTA next to it at load time; hapflow's shards are self-contained.

Fairness (see ``benchmarks/_common.py``): both tools run in worker processes of their own under
the same ``GLIBC_TUNABLES`` (``--default-malloc`` for glibc's defaults), at 1 and 2 threads
(hapflow ``[shard] workers``; GenVarLoader through NUMBA / POLARS / GVL thread variables, all
set alike for both). Each worker writes once untimed (numba compilation, caches, page cache),
then ``--rounds`` times into fresh folders; the fastest round is reported, with "others %",
the share of all cores other processes used meanwhile (rerun when it is high). The summary
printed first compares each tool at its fastest thread count ("best against best").

GenVarLoader pins polars<2 while hapflow runs on polars 2, so it runs in a virtual environment
of its own that also sees this interpreter's packages (the "peers' venv", shared with
``benchmarks/prep_haplotypes.py`` and ``benchmarks/loader_throughput.py``); make it once, in any
folder PEERS::

    python -m venv --system-site-packages PEERS
    PEERS/bin/pip install genvarloader pyconsensus-rs

Without ``--gvl-python`` GenVarLoader is skipped unless this interpreter can import it. Results
are appended to ``benchmarks/results/prep_shard.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _common import (
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

ROUNDS = 3
"""Timed writes per (tool, L, threads) after one untimed write; the fastest is reported."""


def genes_for(length: int):
    """TSS rows whose window [tss - L/2 - 64, tss + L/2 + 64) lies in the real sequence."""
    import polars as pl

    from prep.regions import read_tss_table

    tss = read_tss_table(TSS_TABLE)
    margin = length // 2 + 64
    return tss.filter((pl.col("tss") - margin >= REAL_SPAN[0]) &
                      (pl.col("tss") + margin <= REAL_SPAN[1]))


def best_round(write, rounds: int) -> tuple[dict, list[float]]:
    """Call ``write(i)`` once untimed (i = 0), then ``rounds`` times timed; the fastest round.

    Returns the fastest round's :class:`LoadMeter` figures and every timed round's seconds.
    """
    write(0)
    results = []
    for i in range(1, rounds + 1):
        meter = LoadMeter()
        write(i)
        results.append(meter.stop())
    return min(results, key=lambda r: r["seconds"]), [r["seconds"] for r in results]


def worker_hapflow(length: int, workdir: str, threads: int, rounds: int) -> dict:
    import numpy as np
    import polars as pl

    sys.path.insert(0, str(REPO_ROOT))
    from hapflow.config import StudyConfig
    from hapflow.sections import HaplotypesConfig, ShardConfig
    from prep.sharding import run_shard
    from prep.variants import VariantReader

    work = Path(workdir)
    genes = genes_for(length)
    samples = VariantReader(VCF).samples
    rng = np.random.default_rng(0)
    expr = pl.DataFrame({"gene": genes["name"]}).with_columns(
        [pl.Series(s, rng.normal(size=genes.height)) for s in samples]
    )
    work.mkdir(parents=True, exist_ok=True)
    expr.write_parquet(work / "expression.parquet")
    genes.select("name", "chrom", "tss", "strand").rename({"name": "gene_id",
                                                           "tss": "tss_0based"}).write_csv(
        work / "tss.tsv", separator="\t")
    h = HaplotypesConfig(reference=str(REFERENCE), vcf=str(VCF), tss=str(work / "tss.tsv"),
                         length=length)
    s = ShardConfig(expression=str(work / "expression.parquet"), workers=threads)

    def write(i: int) -> None:
        shutil.rmtree(work / "shards", ignore_errors=True)  # a fresh build every round
        run_shard(StudyConfig(haplotypes=h, shard=s), work)

    base = peak_rss_mb()
    best, seconds = best_round(write, rounds)
    meta = json.loads((work / "shards" / "meta.json").read_text())
    n = meta["counts"]["samples"]
    parts = {"var.zst": 0, "ref.2bit": 0, "json": 0}
    for shard in meta["shards"]:
        with tarfile.open(work / "shards" / shard) as tar:
            for m in tar:
                parts[m.name.split(".", 1)[1]] += m.size
    total = meta["counts"]["bytes"]
    return {
        "tool": "hapflow prep.shard", "L": length, "threads": threads, "genes": genes.height,
        "samples": n, "seconds": best["seconds"], "samples/s": round(n / best["seconds"], 1),
        "samples/CPU-s": round(n / max(best["cpu_seconds"], 1e-9), 1),
        "others_cpu": best["others_cpu"], "round_seconds": seconds,
        "bytes/sample": round(total / n, 1),
        "edits B/sample": round(parts["var.zst"] / n, 1),
        "reference B/sample": round(parts["ref.2bit"] / n, 1),
        "json B/sample": round(parts["json"] / n, 1),
        "tar B/sample": round((total - sum(parts.values())) / n, 1),
        "RSS before MB": base, "peak RSS MB": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set so far (``ru_maxrss``), in MiB."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def worker_gvl(length: int, workdir: str, threads: int, rounds: int) -> dict:
    import genoray
    import genvarloader as gvl
    import polars as pl

    genes = genes_for(length)
    bed = pl.DataFrame({"chrom": ["20"] * genes.height,
                        "chromStart": (genes["tss"] - length // 2).to_list(),
                        "chromEnd": (genes["tss"] - length // 2 + length).to_list()})
    src = Path(workdir) / "inputs"
    src.mkdir(parents=True, exist_ok=True)
    for p in (VCF, Path(str(VCF) + ".tbi")):  # gvl writes caches next to its inputs
        shutil.copy(p, src / p.name)
    vcf = genoray.VCF(str(src / VCF.name))
    out = Path(workdir) / f"gvl_L{length}.gvl"
    base = peak_rss_mb()
    best, seconds = best_round(lambda i: gvl.write(out, bed, vcf, overwrite=True), rounds)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    n = genes.height * len(vcf.available_samples)
    return {"tool": "genvarloader gvl.write", "L": length, "threads": threads,
            "genes": genes.height, "samples": n, "seconds": best["seconds"],
            "samples/s": round(n / best["seconds"], 1),
            "samples/CPU-s": round(n / max(best["cpu_seconds"], 1e-9), 1),
            "others_cpu": best["others_cpu"],
            "round_seconds": seconds, "bytes/sample": round(total / n, 1),
            "RSS before MB": base, "peak RSS MB": peak_rss_mb()}


WORKERS = {"hapflow": worker_hapflow, "gvl": worker_gvl}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="L = 49,152 only, 1 timed round")
    p.add_argument("--lengths", default=",".join(map(str, LENGTHS)),
                   help="comma-separated window lengths (default 49152,196608; up to 524288)")
    p.add_argument("--threads", default="1,2",
                   help="comma-separated thread counts, for both tools (default 1,2)")
    p.add_argument("--rounds", type=int, default=ROUNDS,
                   help=f"timed writes per setting after an untimed one (default {ROUNDS})")
    p.add_argument("--gvl-python", help="interpreter that can import genvarloader")
    p.add_argument("--default-malloc", action="store_true",
                   help="glibc's default malloc settings instead of GLIBC_TUNABLES, for both")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.length, args.dir, int(args.threads),
                                              args.rounds)))
        return 0
    t_start, load_before = time.perf_counter(), os.getloadavg()[0]
    lengths = LENGTHS[:1] if args.quick else [int(x) for x in args.lengths.split(",")]
    rounds = 1 if args.quick else args.rounds
    threads = [int(t) for t in args.threads.split(",")]
    tools = (("hapflow", sys.executable), ("gvl", args.gvl_python or sys.executable))
    rows = []
    with tempfile.TemporaryDirectory(prefix="hapflow-bench-") as tmp:
        for length in lengths:
            for tool, python in tools:
                for n in threads:
                    try:
                        rows.append(run_worker(
                            [__file__, "--worker", tool, "--length", str(length), "--dir",
                             str(Path(tmp) / f"{tool}_L{length}_t{n}"), "--threads", str(n),
                             "--rounds", str(rounds)],
                            python=python, env=tool_env(n, not args.default_malloc)))
                    except RuntimeError as err:
                        print(f"{tool} skipped at L={length}, {n} threads: "
                              f"{str(err).splitlines()[0]}", file=sys.stderr)
                        continue
                    r = rows[-1]
                    print(f"  {r['tool']:23s} L={length:>7,} threads={n}: "
                          f"{r['samples/s']:>9,.1f} samples/s (others "
                          f"{round(100 * r['others_cpu'])} %)", file=sys.stderr, flush=True)
    for r in rows:
        r["others %"] = round(100 * r["others_cpu"])
        gvl = [g for g in rows if g["tool"].startswith("genvarloader") and g["L"] == r["L"]]
        r["bytes vs gvl"] = (round(r["bytes/sample"] / gvl[0]["bytes/sample"], 2)
                             if gvl and r["tool"].startswith("hapflow") else None)
    malloc = "glibc defaults" if args.default_malloc else f"GLIBC_TUNABLES={MALLOC_TUNABLES}"
    ratios = ratio_lines(best_by_tool(rows, "samples/s", "threads"),
                         [("hapflow prep.shard", "genvarloader gvl.write")], "samples/s",
                         "threads", lengths)
    per_cpu = ratio_lines(best_by_tool([r for r in rows if r["threads"] == 1], "samples/CPU-s",
                                       "threads"),
                          [("hapflow prep.shard", "genvarloader gvl.write")], "samples/CPU-s",
                          "threads", lengths)
    print(f"\nbest against best (each tool at its fastest thread count, both under {malloc}):")
    for line in ratios:
        print("  " + line)
    print("samples per CPU-second on 1 thread (hardly moved by other processes' load):")
    for line in per_cpu:
        print("  " + line)
    print()
    cols = ["tool", "L", "threads", "genes", "samples", "seconds", "samples/s", "samples/CPU-s",
            "others %",
            "bytes/sample", "bytes vs gvl", "edits B/sample", "reference B/sample",
            "json B/sample", "tar B/sample", "RSS before MB", "peak RSS MB"]
    print_table(rows, cols)
    note = load_note(load_before, os.getloadavg()[0])
    print(note)
    append_result("prep_shard", {"rounds": rounds, "malloc": malloc, "best_vs_best": ratios,
                                 "per_cpu_second_1_thread": per_cpu,
                                 "rows": rows, "load": note,
                                 "wall_seconds": round(time.perf_counter() - t_start)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
