"""Enformer's own training data (Basenji2 TFRecords) as hapflow shards, for joint training.

:func:`run_enformer_data` (``python -m prep.enformer_data``) reads each record of the
configured organisms and splits, checks its sequence against the FASTA at its
``sequences.bed`` interval, extends it by ``[enformer_data] extend`` bases of FASTA on each
side (N beyond contig ends) and writes it with its float16 targets as one WebDataset sample
(members: :mod:`prep.enformer_format`; where each record goes: :mod:`prep.enformer_plan`).
Layout under ``DIR/enformer_data``::

    {organism}/{split}/shard-FFFFF-JJJ.tar   the samples of TFRecord file F, shard J
    manifest.parquet     one row per record: organism, split, shard, index, key, record,
                         source, source_record, chrom, centre_start, centre_end, start, end,
                         beyond_contig, mismatches, n_differences, build
    quality.json         per organism and split: records, mismatches against the FASTA, ...
    config.toml          the resolved [enformer_data] settings
    build.json           the build fingerprint and what it is made of (prep.fingerprint)
    README.txt           what each file holds and its conventions
    meta.json            written last: versions, inputs, organisms' shapes, every shard's sha256

Like ``prep.shard``: inputs are checked before anything is written; every shard appears whole
or not at all (temp files of killed writers are removed by the next run); a re-run resumes,
keeping finished shards of the same build and refusing shards of another (``overwrite``
rebuilds them); ``part=(K, N)`` converts every TFRecord file whose index is K-1 modulo N, and
the last part to finish writes the tables; the same inputs give byte-identical outputs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from hapflow.config import StudyConfig, save_config
from hapflow.io import atomic_write_json, atomic_write_parquet, atomic_write_text
from hapflow.layout import Workdir
from hapflow.progress import progress
from hapflow.sections import EnformerDataConfig
from prep.basenji import decode_record
from prep.enformer_format import encode_sample
from prep.enformer_plan import (
    EnformerDataError,
    EnformerPlan,
    Organism,
    SourceFile,
    layout_digest,
    plan_enformer_data,
)
from prep.enformer_tables import meta_record, quality_record, readme_text
from prep.fingerprint import (
    build_components,
    describe_changes,
    file_sha256,
    fingerprint,
    stale_message,
)
from prep.reference import Reference
from prep.shard_format import FORMAT_VERSION
from prep.shard_resume import remove_stale_temps
from prep.shard_tar import ShardWriter, build_metas, read_tar_members
from prep.tfrecord import TFRecordError, iter_records

__all__ = ["run_enformer_data", "TABLES", "CONVENTIONS"]

log = logging.getLogger(__name__)

TABLES = ("manifest.parquet", "quality.json", "config.toml", "build.json", "README.txt")
"""Files of DIR/enformer_data besides the shards, written after them (meta.json comes last)."""

IGNORED_SETTINGS = {"max_mismatch_fraction"}
"""Settings that never change a shard's bytes (besides prep.fingerprint.SETTINGS_IGNORED)."""

CONVENTIONS = {
    "window": "each sample's seq covers [start, end) of chrom, 0-based half-open: the record's "
              "own sequence at [centre_start, centre_end) (sequences.bed) and extend bases of "
              "the FASTA on each side; bases beyond the contig (start < 0, end past its "
              "length: beyond_contig of them) are N",
    "sequence": "uint8 codes A, C, G, T, N = 0, 1, 2, 3, 4 on the forward strand",
    "target": "float16 (bins, tracks) exactly as in the TFRecords: Basenji2's targets of the "
              "record's central bins x pool_width bases (crop_bp cut each side); with the "
              "default extension these are the centre 896 of Enformer's 1,536 bins",
    "record": "0-based index of the record in its split: its row among the split's rows of "
              "sequences.bed; source / source_record: the TFRecord file (relative to the "
              "organism's folder) and the 0-based index in it",
    "mismatches": "bases where the record's A/C/G/T differs from the FASTA's A/C/G/T; "
                  "n_differences: bases N in one of them only",
    "split": "train / val / test = Basenji's train / valid / test",
}


@dataclass
class _Context:
    """What every conversion thread shares."""

    cfg: EnformerDataConfig
    out: Path
    build: str
    done: set[str]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bar: object = None


def _inputs(plan: EnformerPlan) -> dict[str, str]:
    out = {}
    for name, org in plan.organisms.items():
        out[f"{name}:reference"] = str(org.reference)
        out[f"{name}:sequences.bed"] = str(org.folder / "sequences.bed")
        out[f"{name}:statistics.json"] = str(org.folder / "statistics.json")
    return out


def _shard_build(path: Path) -> str | None:
    """The build recorded in a shard's first JSON member (None: none or unreadable)."""
    try:
        for sample in read_tar_members(path, want=lambda _k, ext: ext == "json"):
            return json.loads(sample["json"]).get("build")
    except (ValueError, OSError):
        return None
    return None


def _meta_build(out: Path) -> str | None:
    try:
        return json.loads((out / "meta.json").read_text()).get("build")
    except (OSError, ValueError):
        return None


def _stale_message(out: Path, stale: list[str], components: dict, cache: Path) -> str:
    old_build = _shard_build(out / stale[0])
    old = None
    for path in (out / "build.json", cache / "builds" / f"{old_build}.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("build") == old_build:
            old = record.get("components")
            break
    return stale_message(out, stale, describe_changes(old, components))


def run_enformer_data(study: StudyConfig, workdir: str | os.PathLike | Workdir,
                      part: tuple[int, int] = (1, 1), overwrite: bool = False) -> dict:
    """Convert the configured Basenji2 folders into shards (one part of them).

    Parameters
    ----------
    study : StudyConfig
        Reads ``[enformer_data]`` (and ``[haplotypes] reference`` when ``human_reference`` is
        unset).
    workdir : Workdir or path
        Writes ``DIR/enformer_data``; input checksums are cached in ``DIR/.cache``.
    part : (K, N)
        Convert the TFRecord files whose index is K-1 modulo N.
    overwrite : bool
        Rebuild shards of another build (and this part's shards) instead of stopping.

    Returns
    -------
    dict
        shards, built (this run), part, samples, build; finalized / nothing_to_do when so.

    Raises
    ------
    EnformerDataError, BasenjiError, TFRecordError
        Bad inputs (before anything is written), shards of another build without
        ``overwrite``, a corrupt record or one that disagrees with the FASTA (naming file and
        record; the shards finished so far are kept).
    """
    cfg, wd = study.enformer_data, Workdir(workdir)
    out = wd.enformer_data
    plan = plan_enformer_data(cfg, study.haplotypes)
    components = build_components({"enformer_data": cfg}, _inputs(plan), FORMAT_VERSION,
                                  cache_dir=wd.cache, ignore=IGNORED_SETTINGS,
                                  samples=layout_digest(plan))
    build = fingerprint(components)
    k, n = part
    mine = [f for i, f in enumerate(plan.files) if i % n == k - 1]
    my_shards = [s for f in mine for s in f.shards]
    on_disk = sorted(str(p.relative_to(out)) for p in out.glob("*/*/shard-*.tar"))
    stale = [s for s in on_disk if _shard_build(out / s) != build]
    if stale and not overwrite:
        raise EnformerDataError(_stale_message(out, stale, components, wd.cache))
    done = set(on_disk) - set(stale) - (set(my_shards) if overwrite else set())
    summary = {"shards": len(plan.shards), "part": f"{k}/{n}",
               "samples": plan.manifest.height, "build": build}
    if all(s in done for s in plan.shards) and _meta_build(out) == build:
        log.info("Nothing to do: the %d shard(s) in %s already hold this build (%s); "
                 "--overwrite rebuilds them", len(plan.shards), out, build)
        return {**summary, "built": 0, "nothing_to_do": True}
    atomic_write_json(wd.cache / "builds" / f"{build}.json",
                      {"build": build, "components": components})
    todo = [f for f in mine if any(s not in done for s in f.shards)]
    _clear(out, stale + (my_shards if overwrite else []), my_shards, rebuild=bool(todo or stale))
    log.info("Part %d/%d: %d TFRecord file(s), %d shard(s) already written, %d file(s) to "
             "read (build %s)", k, n, len(mine), sum(s in done for s in my_shards), len(todo),
             build)
    _convert(plan, todo, _Context(cfg, out, build, done))
    summary["built"] = sum(1 for f in todo for s in f.shards if s not in done)
    if all((out / s).exists() for s in plan.shards):
        _finalize(plan, cfg, out, build, components)
        summary["finalized"] = True
    else:
        log.info("Other parts' shards are still missing; the last part to finish writes the "
                 "tables and meta.json")
    return summary


def _clear(out: Path, remove: list[str], mine: list[str], rebuild: bool) -> None:
    """Remove meta.json and the tables (when anything is rebuilt), shards to rebuild, and temp
    files of killed writers of this part's shards."""
    if rebuild:
        for name in ("meta.json", *TABLES):
            (out / name).unlink(missing_ok=True)
    if remove:
        log.info("Removing %d shard(s) to rebuild from %s", len(remove), out)
    for s in remove:
        (out / s).unlink(missing_ok=True)
    for s in mine:
        remove_stale_temps(out / s)


def _convert(plan: EnformerPlan, todo: list[SourceFile], ctx: _Context) -> None:
    """Convert ``todo`` files in threads; the first error (in file order) is raised after every
    thread has stopped and removed its temp file."""
    if not todo:
        return
    workers = min(ctx.cfg.workers or os.cpu_count() or 1, len(todo))
    total = sum(f.n_records for f in todo)
    with progress(total=total, unit="record", desc="enformer_data", disable=None) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        ctx.bar = bar
        jobs = [pool.submit(_convert_file, plan.organisms[f.organism], f,
                            plan.manifest.filter((pl.col("organism") == f.organism)
                                                 & (pl.col("split") == f.split)
                                                 & (pl.col("source") == f.source)), ctx)
                for f in todo]
        errors = []
        for job in jobs:
            try:
                job.result()
            except BaseException as err:  # noqa: BLE001 - stop the others, raise below
                ctx.stop.set()
                errors.append(err)
    cancelled = [e for e in errors if not isinstance(e, _Cancelled)]
    if cancelled or errors:
        raise (cancelled or errors)[0]


class _Cancelled(Exception):
    """Another thread failed; this one stopped early."""


def _convert_file(org: Organism, src: SourceFile, rows: pl.DataFrame, ctx: _Context) -> None:
    """Read one TFRecord file and write its shards that are not done yet."""
    per = ctx.cfg.samples_per_shard
    rows_list = rows.sort("source_record").to_dicts()
    reference = Reference(org.reference)
    writer = None
    count = 0
    try:
        for i, data in enumerate(iter_records(src.path)):
            if ctx.stop.is_set():
                raise _Cancelled
            if i >= src.n_records:
                raise EnformerDataError(_count_message(src, "more than", ctx.cfg))
            count = i + 1
            shard = src.shards[i // per]
            if shard not in ctx.done:
                if writer is None:
                    writer = ShardWriter(ctx.out / shard)
                for name, blob in _sample(org, src, i, data, rows_list[i], reference, ctx):
                    writer.add(name, blob)
                if i % per == per - 1 or i == src.n_records - 1:
                    writer.close()
                    writer = None
            with ctx.lock:
                ctx.bar.update(1)
        if count != src.n_records:
            raise EnformerDataError(_count_message(src, f"only {count}, not", ctx.cfg))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        reference.close()


def _count_message(src: SourceFile, how: str, cfg: EnformerDataConfig) -> str:
    return (f"{src.path} holds {how} {src.n_records} records, which its place among the "
            f"{src.split} files and sequences.bed require (records_per_file = "
            f"{cfg.records_per_file}); is the file complete, and records_per_file the folder's?")


def _sample(org: Organism, src: SourceFile, i: int, data: bytes, row: dict,
            reference: Reference, ctx: _Context) -> list[tuple[str, bytes]]:
    """One record as shard members: decoded, checked against the FASTA, extended."""
    try:
        codes, target = decode_record(data, org.stats)
    except TFRecordError as err:
        raise TFRecordError(f"{src.path}: record {i}: {err}") from None
    window = reference.fetch(row["chrom"], row["start"], row["end"])
    lo = row["centre_start"] - row["start"]
    fasta = window[lo:lo + codes.shape[0]]
    rec_n, ref_n = codes == 4, fasta == 4
    mismatches = int(np.count_nonzero((codes != fasta) & ~rec_n & ~ref_n))
    if mismatches > ctx.cfg.max_mismatch_fraction * codes.shape[0]:
        raise EnformerDataError(
            f"{src.path}: record {i} ({row['chrom']}:{row['centre_start']}-{row['centre_end']}, "
            f"record {row['record']} of {src.split} in sequences.bed): {mismatches} of "
            f"{codes.shape[0]} bases ({mismatches / codes.shape[0]:.1%}) differ from "
            f"{org.reference}, more than max_mismatch_fraction = "
            f"{ctx.cfg.max_mismatch_fraction}. Is the FASTA the records' genome build (hg38 for "
            "human, mm10 for mouse) and sequences.bed the folder's own?")
    window[lo:lo + codes.shape[0]] = codes
    meta = {"organism": org.name, "split": src.split, "record": row["record"],
            "source": src.source, "source_record": i, "chrom": row["chrom"],
            "start": row["start"], "end": row["end"], "centre_start": row["centre_start"],
            "centre_end": row["centre_end"], "mismatches": mismatches,
            "n_differences": int(np.count_nonzero(rec_n != ref_n)), "build": ctx.build}
    return encode_sample(row["key"], window, target, meta, ctx.cfg.compression_level)


def _read_shard(out: Path, shard: str, build: str) -> tuple[dict, list[dict]]:
    """A finished shard's sha256, size and its samples' JSON fields (checked, same build)."""
    path = out / shard
    rows = [{"key": key, "mismatches": meta["mismatches"], "n_differences": meta["n_differences"]}
            for key, meta in build_metas(path, build, EnformerDataError)]
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size, "samples": len(rows)}, rows


def _finalize(plan: EnformerPlan, cfg: EnformerDataConfig, out: Path, build: str,
              components: dict) -> None:
    """The tables and, last, meta.json, once every shard exists (re-reads their JSON)."""
    workers = cfg.workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        read = list(pool.map(lambda s: _read_shard(out, s, build), plan.shards))
    shards = {s: info for s, (info, _) in zip(plan.shards, read, strict=True)}
    found = pl.DataFrame([r for _, rows in read for r in rows],
                         schema={"key": pl.Utf8, "mismatches": pl.Int64,
                                 "n_differences": pl.Int64})
    manifest = plan.manifest.join(found, on="key", how="left", maintain_order="left")
    missing = manifest.filter(pl.col("mismatches").is_null())
    if missing.height:
        raise EnformerDataError(f"shard {out / missing['shard'][0]} lacks sample "
                                f"{missing['key'][0]}: rebuild it (--overwrite)")
    manifest = manifest.with_columns(pl.lit(build).alias("build"))
    atomic_write_parquet(manifest, out / "manifest.parquet")
    atomic_write_json(out / "quality.json", quality_record(manifest))
    save_config({"enformer_data": cfg}, out / "config.toml")
    atomic_write_json(out / "build.json", {"build": build, "components": components})
    atomic_write_text(out / "README.txt", readme_text(cfg, CONVENTIONS))
    atomic_write_json(out / "meta.json",
                      meta_record(plan, cfg, build, components, shards, CONVENTIONS))
    total = sum(v["bytes"] for v in shards.values())
    log.info("Wrote %d shards (%d records, %.1f MB per record) to %s", len(shards),
             manifest.height, total / max(manifest.height, 1) / 1e6, out)
    bad = manifest.filter(pl.col("mismatches") > 0)
    log.info("Sequence check: %d of %d records differ from the FASTA in some base (%d bases); "
             "details in %s", bad.height, manifest.height, int(manifest["mismatches"].sum()),
             out / "quality.json")
