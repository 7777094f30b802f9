"""Verify a study's shards (the library of ``python -m prep.verify``).

Checks, in order, and reports every problem found (not only the first), each naming the file
and, inside a shard, the member:

1. the folder is of shard format 3 (:func:`prep.shard_format.check_study_format`: a format-2
   folder is refused with the command that rebuilds it), ``meta.json`` (written when the last
   shard is done) says so, and ``build.json`` describes the same build;
2. the manifest: readable, its sample layout is the one the shards were built for (the digest
   in ``meta.json``), one build, its ``targets_build`` is the one ``targets.json`` describes, and
   every primary target is finite;
3. every shard listed in ``meta.json`` exists with the recorded size and sha256, and no other
   shard lies in the folder;
4. (unless ``deep=False``) every gene record of every shard decodes and verifies
   (:func:`prep.gene_record.decode_gene`: JSON checksum and bounds, reference and edits sha256,
   zstd content checksum, edit table bounds), carries the build, lies in the shard the manifest
   gives its gene, and its individuals (sorted) are exactly the manifest's for that gene (every
   split), each manifest ``row`` pointing at its individual; every gene of the manifest is found;
5. (``windows=N``) N random (gene, individual) windows at the study's length are built with
   :func:`prep.edits.build_windows` and compared with a plain numpy rebuild from the same record
   (the haplotype spelled out edit by edit): length, TSS index and every base.

The loader runs checks 1-4 on request (``make_loader(..., verify=True)``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from prep.fingerprint import BUILD_JSON, file_sha256
from prep.gene_record import GeneRecord, decode_gene
from prep.shard_finalize import META_JSON
from prep.shard_format import FORMAT_VERSION, ShardFormatError, check_study_format
from prep.shard_plan import IDENTITY_COLUMNS, layout_digest
from prep.shard_reader import gene_windows
from prep.shard_tar import read_tar_members
from prep.target_table import TARGETS_JSON

__all__ = ["VerifyReport", "VerifyError", "verify_shards", "spelled_out_window"]

log = logging.getLogger(__name__)


class VerifyError(ValueError):
    """A study's shards failed verification; the message lists the problems."""


@dataclass
class VerifyReport:
    """What :func:`verify_shards` checked and found.

    Attributes
    ----------
    shards_dir : str
    shards : int
        Shard files checked.
    genes : int
        Gene records decoded and verified (0 with ``deep=False``).
    samples : int
        Manifest samples covered (of the splits checked).
    windows : int
        Windows rebuilt and compared (``windows=N``).
    problems : list of str
        One line per problem, naming file and member.
    """

    shards_dir: str
    shards: int = 0
    genes: int = 0
    samples: int = 0
    windows: int = 0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        what = (f"{self.shards} shard(s), {self.genes} gene record(s), {self.samples} "
                f"sample(s){f', {self.windows} window(s)' if self.windows else ''} in "
                f"{self.shards_dir}")
        if self.ok:
            return f"OK: {what} verified"
        lines = "\n  - ".join(self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        return (f"{len(self.problems)} problem(s) in {what}:\n  - {lines}{more}\nRebuild the "
                "damaged shards with `python -m prep.shard ... --overwrite` (or copy them again).")


def _read_json(path: Path, report: VerifyReport) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        report.problems.append(f"{path} does not exist")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        report.problems.append(f"{path} is not readable JSON ({err})")
    return None


def verify_shards(shards_dir: str | os.PathLike, *, splits: list[str] | None = None,
                  deep: bool = True, windows: int = 0, seed: int = 0,
                  raise_on_problems: bool = False) -> VerifyReport:
    """Verify a study's shards folder (see the module docstring for the checks).

    Parameters
    ----------
    shards_dir : str or Path
        ``DIR/shards``, written by ``python -m prep.shard``.
    splits : list of str, optional
        Check only the shards holding these splits' samples, and those samples (default: all).
    deep : bool
        Also decode and verify every gene record (False: file checksums and tables only).
    windows : int
        Rebuild this many random windows (of the splits checked) and compare them with a
        plain numpy rebuild (needs ``deep``).
    seed : int
        Seed of the windows' draw.
    raise_on_problems : bool
        Raise :class:`VerifyError` (listing the problems) instead of returning a failed report.

    Returns
    -------
    VerifyReport
    """
    root = Path(shards_dir)
    report = VerifyReport(str(root))
    if not root.is_dir():
        report.problems.append(f"{root} is not a folder (expected DIR/shards of prep.shard)")
        return _finish(report, raise_on_problems)
    try:
        check_study_format(root)
    except ShardFormatError as err:
        report.problems.append(str(err))
        return _finish(report, raise_on_problems)
    meta = _read_json(root / META_JSON, report)
    if meta is None:
        report.problems[-1] += " (the build is unfinished: re-run `python -m prep.shard`)"
        return _finish(report, raise_on_problems)
    if meta.get("format") != FORMAT_VERSION:
        report.problems.append(
            f"{root / META_JSON}: shard format {meta.get('format')}, this hapflow reads "
            f"{FORMAT_VERSION}: rebuild with `python -m prep.shard ... --overwrite`")
        return _finish(report, raise_on_problems)
    record = _read_json(root / BUILD_JSON, report)
    if record is not None and record.get("build") != meta.get("build"):
        report.problems.append(f"{root / BUILD_JSON} describes build {record.get('build')}, "
                               f"meta.json build {meta.get('build')}")
    manifest = _check_manifest(root, meta, report)
    if manifest is not None and splits:
        manifest = manifest.filter(pl.col("split").is_in(list(splits)))
    _check_shards(root, meta, manifest, splits, deep, report)
    if manifest is not None:
        report.samples = manifest.height
        if windows and deep:
            _check_windows(root, manifest, windows, seed, report)
    return _finish(report, raise_on_problems)


def _check_shards(root: Path, meta: dict, manifest: pl.DataFrame | None,
                  splits: list[str] | None, deep: bool, report: VerifyReport) -> None:
    """Files against meta.json (every shard, or those of ``splits``' samples) and, ``deep``,
    every record against the manifest."""
    listed = meta.get("shards", {})
    for extra in sorted(p.name for p in root.glob("shard-*.tar") if p.name not in listed):
        report.problems.append(f"shard {root / extra} is not listed in meta.json (left over from "
                               "another build?)")
    wanted = set(manifest["shard"].unique().to_list()) if manifest is not None and splits \
        else None
    genes = _expected_genes(manifest) if manifest is not None else None
    for shard, info in sorted(listed.items()):
        if wanted is not None and shard not in wanted:
            continue
        report.shards += 1
        if _check_file(root / shard, info, report) and deep:
            _check_records(root / shard, shard, meta.get("build"), genes, not splits, report)
    if deep and genes is not None:
        for gene, (shard, _) in sorted(genes.items()):
            if (wanted is None or shard in wanted) and shard in listed:
                report.problems.append(f"shard {root / shard}: gene {gene} of the manifest is "
                                       "missing")


def _expected_genes(manifest: pl.DataFrame) -> dict[str, tuple[str, pl.DataFrame]]:
    """gene -> (its shard, its manifest rows sorted by individual)."""
    out = {}
    for (gene,), rows in manifest.partition_by("gene", as_dict=True).items():
        out[gene] = (rows["shard"][0], rows.sort("individual"))
    return out


def _check_file(path: Path, info: dict, report: VerifyReport) -> bool:
    """The shard's size and sha256 against meta.json's record; False when it is missing."""
    if not path.exists():
        report.problems.append(f"shard {path} is missing")
        return False
    size = path.stat().st_size
    if size != info.get("bytes"):
        report.problems.append(f"shard {path} holds {size} bytes, meta.json recorded "
                               f"{info.get('bytes')}: truncated or changed")
    elif file_sha256(path) != info.get("sha256"):
        report.problems.append(f"shard {path}: sha256 differs from meta.json's: the file "
                               "changed since it was written")
    return True


def _finish(report: VerifyReport, raise_on_problems: bool) -> VerifyReport:
    if raise_on_problems and not report.ok:
        raise VerifyError(report.summary())
    return report


def _check_manifest(root: Path, meta: dict, report: VerifyReport) -> pl.DataFrame | None:
    """The manifest, checked against meta.json and targets.json (None when unreadable)."""
    path = root / "manifest.parquet"
    try:
        manifest = pl.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - polars raises several types
        report.problems.append(f"{path} is not a readable parquet file ({err})")
        return None
    missing = [c for c in (*IDENTITY_COLUMNS, "Y", "Z", "P", "build", "targets_build")
               if c not in manifest.columns]
    if missing:
        report.problems.append(f"{path} lacks column(s) {', '.join(missing)}: rebuild")
        return None
    if layout_digest(manifest) != meta.get("samples_digest"):
        report.problems.append(f"{path}: its samples (split, shard, key, row, gene, individual, "
                               "...) are not those the shards were built for (meta.json "
                               "samples_digest)")
    builds = manifest["build"].unique().to_list()
    if builds != [meta.get("build")]:
        report.problems.append(f"{path}: build(s) {', '.join(map(str, builds[:3]))}, meta.json "
                               f"build {meta.get('build')}")
    _check_targets(root, path, manifest, meta, report)
    return manifest


def _check_targets(root: Path, path: Path, manifest: pl.DataFrame, meta: dict,
                   report: VerifyReport) -> None:
    """The manifest's target columns against targets.json; finite primary targets."""
    targets = _read_json(root / TARGETS_JSON, report)
    if targets is not None:
        tb = manifest["targets_build"].unique().to_list()
        if tb != [targets.get("targets_build")]:
            report.problems.append(f"{path}: targets_build {', '.join(map(str, tb[:3]))}, but "
                                   f"{TARGETS_JSON} describes {targets.get('targets_build')}: "
                                   "re-run `python -m prep.retarget`")
        for s in targets.get("sets", []):
            absent = [c for c in s.get("columns", []) if c not in manifest.columns]
            if absent:
                report.problems.append(f"{path} lacks the columns {', '.join(absent)} of target "
                                       f"set {s.get('name')}")
        if targets.get("build") != meta.get("build"):
            report.problems.append(f"{root / TARGETS_JSON}: joined to build "
                                   f"{targets.get('build')}, the shards are build "
                                   f"{meta.get('build')}: re-run `python -m prep.retarget`")
    bad = manifest.filter(~(pl.col("Y").is_finite() & pl.col("Z").is_finite()
                            & pl.col("P").is_finite()))
    if bad.height:
        report.problems.append(f"{path}: {bad.height} sample(s) without finite Y, Z, P, first "
                               f"{bad['key'][0]}")


def _check_records(path: Path, shard: str, build: str | None, genes: dict | None,
                   complete: bool, report: VerifyReport) -> None:
    """Decode and verify every gene record of one shard; compare each with the manifest
    (``complete``: the manifest's every split, so a record's individuals must equal its gene's
    rows). Genes found are removed from ``genes``, so those left afterwards are missing."""
    try:
        for sample in read_tar_members(path):
            try:
                rec = decode_gene(sample, str(path))
            except ShardFormatError as err:
                report.problems.append(str(err))
                continue
            report.genes += 1
            _check_record(rec, path, shard, build, genes, complete, report)
    except ShardFormatError as err:
        report.problems.append(str(err))


def _check_record(rec: GeneRecord, path: Path, shard: str, build: str | None,
                  genes: dict | None, complete: bool, report: VerifyReport) -> None:
    meta = rec.meta
    gene, inds = meta["gene"], meta["individuals"]
    where = f"shard {path}: gene {gene}"
    if meta["build"] != build:
        report.problems.append(f"{where}: build {meta['build']}, meta.json {build}")
    if inds != sorted(inds):
        report.problems.append(f"{where}: its individuals are not sorted")
    if genes is None:
        return
    if gene not in genes:
        if complete:
            report.problems.append(f"{where}: gene not in the manifest")
        return
    want_shard, rows = genes.pop(gene)
    if want_shard != shard:
        report.problems.append(f"{where}: the manifest puts this gene in {want_shard}")
    listed = rows["individual"].to_list()
    if not set(listed) <= set(inds):
        absent = sorted(set(listed) - set(inds))
        report.problems.append(f"{where}: lacks individual(s) {', '.join(absent[:3])} of the "
                               "manifest")
        return
    at = rows["row"].to_numpy()
    if (at < 0).any() or (at >= len(inds)).any() or [inds[i] for i in at] != listed:
        report.problems.append(f"{where}: the manifest's rows do not point at its individuals")
    if complete and len(listed) != len(inds):
        report.problems.append(f"{where}: {len(inds)} individuals, the manifest lists "
                               f"{len(listed)} for this gene")


def spelled_out_window(rec: GeneRecord, row: int, hap: int, length: int) -> tuple[np.ndarray, int]:
    """One window written out in plain numpy, edit by edit (an oracle for the numba engine).

    The haplotype is ``ref[0:s1] + alt1 + ref[e1:s2] + ...`` (:mod:`prep.edits`); the TSS's
    index in it follows the placement rules of :mod:`prep.builder` (inside a deletion: the first
    base after it; on an insertion's anchor: the anchor). Returns uint8 (length,) (reverse-
    complemented when the record says so) and the TSS's index in it.
    """
    e = rec.edits
    carried = e.carried(2 * row + hap)
    pieces, tss_at, k, c = [], None, 0, 0
    t = rec.meta["tss_rel"]
    for i in carried:
        s, end = int(e.starts[i]), int(e.ends[i])
        alt = e.alt_codes[e.alt_offsets[i]:e.alt_offsets[i + 1]]
        if tss_at is None and t < s:
            tss_at = k + t - c
        k += s - c
        if tss_at is None and t < end:
            tss_at = k + min(t - s, len(alt))
        pieces += [rec.ref[c:s], alt]
        k += len(alt)
        c = end
    if tss_at is None:
        tss_at = k + t - c
    hap_seq = np.concatenate([*pieces, rec.ref[c:]]).astype(np.uint8)
    lo = tss_at - length // 2
    out = np.full(length, 4, np.uint8)
    a, b = max(lo, 0), min(lo + length, len(hap_seq))
    out[a - lo:b - lo] = hap_seq[a:b]
    if rec.meta["reverse_complemented"]:
        out = np.where(out < 4, 3 - out, 4)[::-1].astype(np.uint8)
        return out, length - 1 - length // 2
    return out, length // 2


def _check_windows(root: Path, manifest: pl.DataFrame, n: int, seed: int,
                   report: VerifyReport) -> None:
    """``n`` random samples' windows: build_windows against :func:`spelled_out_window`."""
    if manifest.height == 0:
        return
    pick = manifest.sample(min(n, manifest.height), seed=seed)
    for (shard,), rows in pick.partition_by("shard", as_dict=True).items():
        wanted = rows.partition_by("gene", as_dict=True)
        try:
            samples = list(read_tar_members(root / shard))
        except ShardFormatError as err:
            report.problems.append(str(err))
            continue
        for sample in samples:
            try:
                rec = decode_gene(sample, str(root / shard))
            except ShardFormatError:
                continue  # reported by the record checks
            picked = wanted.get((rec.meta["gene"],))
            if picked is not None:
                _compare_windows(rec, picked, root / shard, report)


def _compare_windows(rec: GeneRecord, picked: pl.DataFrame, path: Path,
                     report: VerifyReport) -> None:
    length = rec.meta["length"]
    rows = picked["row"].to_numpy().astype(np.int64)
    if (rows >= len(rec.meta["individuals"])).any():
        return  # reported by the record checks
    seqs, tss_index = gene_windows(rec, length, rows)
    for k, (row, individual) in enumerate(zip(rows, picked["individual"], strict=True)):
        report.windows += 1
        for hap in (0, 1):
            want, want_tss = spelled_out_window(rec, int(row), hap, length)
            if seqs.shape[2] != length or tss_index[k] != want_tss or \
                    not np.array_equal(seqs[k, hap], want):
                report.problems.append(
                    f"shard {path}: gene {rec.meta['gene']}, individual {individual}, haplotype "
                    f"{hap + 1}: the window built from the record differs from its plain "
                    "rebuild (length, TSS index or bases)")
