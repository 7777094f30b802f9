"""Peak memory of reading genotypes vs selected samples and vs genes (real chr20, 300 samples).

    python benchmarks/vcf_memory.py                       # this checkout
    python benchmarks/vcf_memory.py --compare 5fa1a68     # and the prep/ of another commit
    python benchmarks/vcf_memory.py --chunk-mb 1          # chunks as on a large file

Each row runs in a fresh process. ``preload`` reads all of the real span (7,568 records) with
``HaplotypeBuilder.preload``; ``genes`` builds 49,152 bp windows for the first N TSSs in
batches of 4 genes (as ``prep.shard`` does; one output buffer reused), which must stay flat in
N. ``traced MB`` is the tracemalloc peak during the step (numpy and Python allocations; numba
is compiled in a warm-up first); ``RSS +MB`` is the rise of the process's maximum resident size
over the step. Results are appended to ``benchmarks/results/vcf_memory.jsonl``.

``--compare COMMIT`` extracts that commit's ``prep/`` with ``git archive`` (read-only) into a
temporary folder and runs the same rows against it, e.g. the commit before sample-subset
parsing, whose text path parsed every sample of the file before choosing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# appended, not prepended: a worker's PYTHONPATH decides which prep/ it measures
sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    CHROM,
    REAL_SPAN,
    REFERENCE,
    REPO_ROOT,
    TSS_TABLE,
    VCF,
    append_result,
    print_table,
    run_worker,
)

BATCH = 4
LENGTH = 49_152


def worker(op: str, n_samples: int, n_genes: int, chunk_mb: float) -> dict:
    """Measure one row in this process; returns the figures as a dict."""
    import resource
    import tracemalloc

    import numpy as np

    import prep.vcf_records
    from prep.builder import HaplotypeBuilder
    from prep.regions import read_tss_table
    from prep.variants import VariantReader

    if chunk_mb > 0:  # text bytes parsed per chunk (this checkout; older code has no chunks)
        prep.vcf_records.TEXT_CHUNK_BYTES = int(chunk_mb * 2**20)
    samples = VariantReader(VCF).samples[:n_samples]
    b = HaplotypeBuilder(REFERENCE, VCF, samples)
    tss = np.sort(read_tss_table(TSS_TABLE)["tss"].to_numpy())
    tss = tss[(tss >= REAL_SPAN[0] + LENGTH) & (tss < REAL_SPAN[1] - LENGTH)]
    out = np.empty((BATCH, n_samples, 2, LENGTH), np.uint8)
    b.fixed(CHROM, tss[:1], LENGTH, out=out[:1])  # warm-up: numba compile, pysam buffers
    tss = tss[:n_genes]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    if op == "preload":
        n_rec = b.preload(CHROM, *REAL_SPAN).n_records
    else:
        n_rec = 0
        for lo in range(0, len(tss), BATCH):
            part = tss[lo : lo + BATCH]
            b.fixed(CHROM, part, LENGTH, out=out[: len(part)])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    b.close()
    return {"op": op, "samples": n_samples, "genes": len(tss) if op == "genes" else None,
            "records": n_rec or None, "traced MB": peak / 2**20,
            "RSS +MB": max(0, rss1 - rss0) / 1024, "prep": str(Path(prep.__file__).parent)}


ROWS = [("preload", 10, 0), ("preload", 100, 0), ("preload", 300, 0),
        ("genes", 10, 4), ("genes", 10, 36), ("genes", 300, 4), ("genes", 300, 12),
        ("genes", 300, 36)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--compare", help="also measure the prep/ of this git commit")
    p.add_argument("--chunk-mb", type=float, default=0,
                   help="text parsed per chunk, MB (default: the library's 32). The bundled file "
                        "is ~9 MB of genotype text, under one default chunk; a 1000 Genomes "
                        "chromosome is many chunks, which --chunk-mb 1 mimics")
    p.add_argument("--worker", nargs=4, metavar=("OP", "SAMPLES", "GENES", "CHUNK"),
                   help=argparse.SUPPRESS)
    p.add_argument("--no-save", action="store_true", help="do not append to the results file")
    args = p.parse_args(argv)
    if args.worker:
        op, n_s, n_g, chunk = args.worker
        print(json.dumps(worker(op, int(n_s), int(n_g), float(chunk))))
        return 0
    codes = [("this checkout", str(REPO_ROOT))]
    tmp = None
    if args.compare:
        tmp = tempfile.TemporaryDirectory(prefix="vcf-memory-")
        archive = subprocess.run(["git", "archive", args.compare, "prep"], cwd=REPO_ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp.name], input=archive, check=True)
        codes.append((f"commit {args.compare}", tmp.name))
    rows = []
    for label, path in codes:
        for op, n_s, n_g in ROWS:
            res = run_worker([__file__, "--worker", op, str(n_s), str(n_g), str(args.chunk_mb)],
                             env={"PYTHONPATH": path, "NUMBA_NUM_THREADS": "1"})
            assert res.pop("prep").startswith(path), f"worker imported the wrong prep/ ({label})"
            rows.append({"code": label, **res})
    print_table(rows, ["code", "op", "samples", "genes", "records", "traced MB", "RSS +MB"])
    if not args.no_save:
        append_result("vcf_memory", {"rows": rows, "compare": args.compare,
                                     "chunk_mb": args.chunk_mb or 32})
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
