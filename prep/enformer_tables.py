"""The records ``prep.enformer_data`` writes beside its shards: quality.json, meta.json,
README.txt (contents only; :mod:`prep.enformer_build` writes them, meta.json last)."""

from __future__ import annotations

import importlib.metadata as md
import os

import polars as pl

from hapflow.config import config_to_dict
from hapflow.sections import EnformerDataConfig
from prep.enformer_format import KIND, META_EXT, SEQ_EXT, TARGET_EXT
from prep.enformer_plan import EnformerPlan
from prep.shard_format import FORMAT_VERSION

__all__ = ["quality_record", "meta_record", "readme_text"]


def quality_record(manifest: pl.DataFrame) -> dict:
    """Per organism and split: records, files, shards, the sequence check against the FASTA
    (records and bases that differ, the largest fraction, the first such record), records
    whose window runs off a contig."""
    out: dict = {}
    for (organism, split), df in manifest.group_by(["organism", "split"], maintain_order=True):
        length = (df["centre_end"] - df["centre_start"]).max()
        bad = df.filter(pl.col("mismatches") > 0)
        out.setdefault(organism, {})[split] = {
            "records": df.height,
            "files": df["source"].n_unique(),
            "shards": df["shard"].n_unique(),
            "records_with_mismatches": bad.height,
            "mismatched_bases": int(df["mismatches"].sum()),
            "mismatch_rate": float(df["mismatches"].sum()) / max(df.height * length, 1),
            "max_record_mismatch_fraction": float(df["mismatches"].max()) / max(length, 1),
            "first_record_with_mismatches": (
                None if not bad.height else
                {"key": bad["key"][0], "source": bad["source"][0],
                 "source_record": int(bad["source_record"][0]),
                 "mismatches": int(bad["mismatches"][0])}),
            "records_with_n_differences": int((df["n_differences"] > 0).sum()),
            "n_differences": int(df["n_differences"].sum()),
            "records_beyond_contig": int((df["beyond_contig"] > 0).sum()),
        }
    return out


def _versions() -> dict:
    out = {}
    for pkg in ("hapflow", "numpy", "numba", "polars", "pysam", "zstandard"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def meta_record(plan: EnformerPlan, cfg: EnformerDataConfig, build: str, components: dict,
                shards: dict, conventions: dict) -> dict:
    """meta.json: format, kind, build, settings, versions, inputs (names and sha256), each
    organism's shapes, counts per organism and split, every shard's sha256, bytes, samples."""
    m = plan.manifest
    organisms = {}
    for name, org in plan.organisms.items():
        st = org.stats
        organisms[name] = {
            "folder": str(org.folder), "reference": os.path.basename(org.reference),
            "seq_length": st.seq_length, "window": st.seq_length + 2 * cfg.extend,
            "target_shape": [st.target_length, st.num_targets], "pool_width": st.pool_width,
            "crop_bp": st.crop_bp,
            "splits": {s: m.filter((pl.col("organism") == name) & (pl.col("split") == s)).height
                       for s in cfg.splits}}
    total = sum(v["bytes"] for v in shards.values())
    return {
        "format": FORMAT_VERSION, "kind": KIND, "build": build,
        "members": {"json": META_EXT, "sequence": SEQ_EXT, "target": TARGET_EXT},
        "config": {"enformer_data": config_to_dict(cfg)}, "versions": _versions(),
        "inputs": components["inputs"], "organisms": organisms,
        "counts": {"records": m.height, "shards": len(shards), "bytes": total,
                   "bytes_per_record": total / max(m.height, 1)},
        "shards": shards, "conventions": conventions,
    }


def readme_text(cfg: EnformerDataConfig, conventions: dict) -> str:
    """README.txt of DIR/enformer_data, in plain words."""
    lines = [
        "Enformer's own training data as hapflow shards (written by `python -m "
        "prep.enformer_data`; members: prep.enformer_format)",
        "",
        "Files",
        "  {organism}/{split}/shard-FFFFF-JJJ.tar  WebDataset shards: per record KEY "
        f"({{organism}}_{{split}}_{{record:06d}}): KEY.{META_EXT} (checksummed JSON), "
        f"KEY.{SEQ_EXT} (2-bit window), KEY.{TARGET_EXT} (zstd float16 targets); the records "
        "of TFRecord file F, J-th shard",
        "  manifest.parquet  one row per record: organism, split, shard, index, key, record, "
        "source, source_record, chrom, centre_start, centre_end, start, end, beyond_contig, "
        "mismatches, n_differences, build",
        "  quality.json      per organism and split: records, the sequence check against the "
        "FASTA, windows running off a contig",
        "  config.toml       the resolved [enformer_data] settings",
        "  build.json        the build fingerprint and what it is made of",
        "  meta.json         written last: versions, inputs, shapes, every shard's sha256",
        "",
        "Conventions",
        *[f"  {k}: {v}" for k, v in conventions.items()],
        f"  extend: {cfg.extend} bases of FASTA each side of the record's sequence",
        "",
    ]
    return "\n".join(lines)
