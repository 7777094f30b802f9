"""End-to-end shard writing and footprint: hapflow ``prep.shard`` against GenVarLoader's ``gvl.write``.

Run from the repository root (about 2 minutes on 2 cores)::

    python benchmarks/prep_shard.py --gvl-python /root/.venvs/gvl-bench/bin/python
    python benchmarks/prep_shard.py --quick

Inputs: the real chr20 data in ``data/chr20_extra`` — 300 phased 1000 Genomes samples with
indels, the GRCh37 slice 20:1,000,001-2,000,000 — and every TSS of the bundled table whose window
fits inside the real sequence, at L = 49,152 and 196,608. chr20 has no expression data, so the
benchmark draws a seeded standard-normal expression matrix (genes x the 300 samples) for the
targets; it only fills the targets, whose size does not depend on the values.

* **hapflow** — ``prep.sharding.run_shard`` into a fresh folder: plan, build every haplotype,
  compress, write and finalize (manifest, quality, meta with sha256): samples/s end to end and
  bytes on disk per diploid sample (every shard byte: haplotypes, the per-shard reference
  windows, targets and metadata, tar headers), with a breakdown.
* **genvarloader** — ``gvl.write`` of the same windows (BED) and VCF: seconds and bytes per
  diploid sample of the dataset folder it writes. It stores genotypes only and needs the
  reference FASTA next to it at load time; hapflow's shards are self-contained.

GenVarLoader needs polars<2, so it runs in its own virtual environment (see
``benchmarks/prep_haplotypes.py``); without ``--gvl-python`` it is skipped unless importable.
Results are appended to ``benchmarks/results/prep_shard.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _common import (
    LENGTHS,
    REAL_SPAN,
    REFERENCE,
    REPO_ROOT,
    TSS_TABLE,
    VCF,
    append_result,
    print_table,
    run_worker,
)


def genes_for(length: int):
    """TSS rows whose window [tss - L/2 - 64, tss + L/2 + 64) lies in the real sequence."""
    import polars as pl

    from prep.regions import read_tss_table

    tss = read_tss_table(TSS_TABLE)
    margin = length // 2 + 64
    return tss.filter((pl.col("tss") - margin >= REAL_SPAN[0]) &
                      (pl.col("tss") + margin <= REAL_SPAN[1]))


def run_hapflow(length: int, workdir: Path, workers: int) -> dict:
    import numpy as np
    import polars as pl

    sys.path.insert(0, str(REPO_ROOT))
    from prep.export import HaplotypesConfig
    from prep.sharding import ShardConfig, run_shard
    from prep.variants import VariantReader

    genes = genes_for(length)
    samples = VariantReader(VCF).samples
    rng = np.random.default_rng(0)
    expr = pl.DataFrame({"gene": genes["name"]}).with_columns(
        [pl.Series(s, rng.normal(size=genes.height)) for s in samples]
    )
    workdir.mkdir(parents=True, exist_ok=True)
    expr.write_parquet(workdir / "expression.parquet")
    genes.select("name", "chrom", "tss", "strand").rename({"name": "gene_id",
                                                           "tss": "tss_0based"}).write_csv(
        workdir / "tss.tsv", separator="\t")
    h = HaplotypesConfig(reference=str(REFERENCE), vcf=str(VCF), tss=str(workdir / "tss.tsv"),
                         length=length)
    s = ShardConfig(expression=str(workdir / "expression.parquet"), workers=workers)
    t0 = time.perf_counter()
    run_shard(h, s, workdir)
    seconds = time.perf_counter() - t0
    meta = json.loads((workdir / "shards" / "meta.json").read_text())
    n = meta["counts"]["samples"]
    parts = {"hap.zst": 0, "ref.2bit": 0, "json": 0}
    for shard in meta["shards"]:
        with tarfile.open(workdir / "shards" / shard) as tar:
            for m in tar:
                parts[m.name.split(".", 1)[1]] += m.size
    total = meta["counts"]["bytes"]
    return {
        "tool": "hapflow", "L": length, "genes": genes.height, "samples": n,
        "seconds": round(seconds, 2), "samples/s": round(n / seconds, 1),
        "bytes/sample": round(total / n, 1),
        "haplotypes B/sample": round(parts["hap.zst"] / n, 1),
        "reference B/sample": round(parts["ref.2bit"] / n, 1),
        "json B/sample": round(parts["json"] / n, 1),
        "tar B/sample": round((total - sum(parts.values())) / n, 1),
    }


def worker_gvl(length: int, workdir: str) -> dict:
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
    t0 = time.perf_counter()
    gvl.write(out, bed, vcf, overwrite=True)
    seconds = time.perf_counter() - t0
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    n = genes.height * len(vcf.available_samples)
    return {"tool": "genvarloader gvl.write", "L": length, "genes": genes.height, "samples": n,
            "seconds": round(seconds, 2), "samples/s": round(n / seconds, 1),
            "bytes/sample": round(total / n, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="L = 49,152 only")
    p.add_argument("--workers", type=int, default=0, help="hapflow threads (0: all cores)")
    p.add_argument("--gvl-python", help="interpreter that can import genvarloader")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "gvl":
        print(json.dumps(worker_gvl(args.length, args.dir)))
        return 0
    lengths = LENGTHS[:1] if args.quick else LENGTHS
    rows = []
    with tempfile.TemporaryDirectory(prefix="hapflow-bench-") as tmp:
        for length in lengths:
            rows.append(run_hapflow(length, Path(tmp) / f"hapflow_L{length}", args.workers))
            python = args.gvl_python or sys.executable
            try:
                rows.append(run_worker([__file__, "--worker", "gvl", "--length", str(length),
                                        "--dir", str(Path(tmp) / "gvl")], python=python,
                                       env={"PYTHONPATH": str(REPO_ROOT)}))
            except RuntimeError as err:
                print(f"genvarloader skipped at L={length}: {str(err).splitlines()[0]}",
                      file=sys.stderr)
    for length in lengths:
        ours = next(r for r in rows if r["tool"] == "hapflow" and r["L"] == length)
        for r in rows:
            if r["L"] == length:
                r["bytes vs gvl"] = ""
        gvl = [r for r in rows if r["tool"].startswith("genvarloader") and r["L"] == length]
        if gvl:
            ours["bytes vs gvl"] = round(ours["bytes/sample"] / gvl[0]["bytes/sample"], 2)
    cols = ["tool", "L", "genes", "samples", "seconds", "samples/s", "bytes/sample",
            "bytes vs gvl", "haplotypes B/sample", "reference B/sample", "json B/sample",
            "tar B/sample"]
    print_table(rows, cols)
    append_result("prep_shard", {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
