"""Verify a study's shards (the library of ``python -m prep.verify``).

Checks, in order, and reports every problem found (not only the first), each naming the file
and, inside a shard, the member:

1. ``meta.json`` (written when the last shard is done) is of this shard format, and
   ``build.json`` describes the same build;
2. the manifest: readable, its sample layout is the one the shards were built for (the digest
   in ``meta.json``), one build, its ``targets_build`` is the one ``targets.json`` describes, and
   every primary target is finite;
3. every shard listed in ``meta.json`` exists with the recorded size and sha256, and no other
   shard lies in the folder;
4. (unless ``deep=False``) every member of every shard decodes and verifies
   (:class:`prep.shard_format.GroupDecoder`: JSON checksum and bounds, reference and haplotype
   sha256, zstd content checksum), carries the build, and each group holds exactly the
   individuals the manifest lists for it, in order.

The loader runs the same checks on request (``make_loader(..., verify=True)``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from prep.fingerprint import BUILD_JSON, file_sha256
from prep.shard_finalize import META_JSON
from prep.shard_format import FORMAT_VERSION, GroupDecoder, ShardFormatError
from prep.shard_plan import IDENTITY_COLUMNS, layout_digest
from prep.shard_tar import read_tar_members
from prep.target_table import TARGETS_JSON

__all__ = ["VerifyReport", "VerifyError", "verify_shards"]

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
    groups : int
        Groups decoded and verified (0 with ``deep=False``).
    samples : int
        Manifest samples covered (of the splits checked).
    problems : list of str
        One line per problem, naming file and member.
    """

    shards_dir: str
    shards: int = 0
    groups: int = 0
    samples: int = 0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        what = (f"{self.shards} shard(s), {self.groups} group(s), {self.samples} sample(s) in "
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
                  deep: bool = True, raise_on_problems: bool = False) -> VerifyReport:
    """Verify a study's shards folder (see the module docstring for the checks).

    Parameters
    ----------
    shards_dir : str or Path
        ``DIR/shards``, written by ``python -m prep.shard``.
    splits : list of str, optional
        Check only these splits' shards and samples (default: all).
    deep : bool
        Also decode and verify every member (False: file checksums and tables only).
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
    meta = _read_json(root / META_JSON, report)
    if meta is None:
        report.problems[-1] += " (the build is unfinished: re-run `python -m prep.shard`)"
        return _finish(report, raise_on_problems)
    if meta.get("format") != FORMAT_VERSION:
        report.problems.append(
            f"{root / META_JSON}: shard format {meta.get('format')}, this hapflow reads "
            f"{FORMAT_VERSION}: rebuild with `python -m prep.shard ... --overwrite`")
        return _finish(report, raise_on_problems)
    build = meta.get("build")
    record = _read_json(root / BUILD_JSON, report)
    if record is not None and record.get("build") != build:
        report.problems.append(f"{root / BUILD_JSON} describes build {record.get('build')}, "
                               f"meta.json build {build}")
    manifest = _check_manifest(root, meta, report)
    wanted = set(splits) if splits else None
    in_splits = lambda shard: wanted is None or shard.split("/")[0] in wanted  # noqa: E731
    on_disk = {str(p.relative_to(root)) for p in root.glob("*/shard-*.tar")}
    for extra in sorted(s for s in on_disk - set(meta.get("shards", {})) if in_splits(s)):
        report.problems.append(f"shard {root / extra} is not listed in meta.json (left over from "
                               "another build?)")
    for shard, info in sorted(meta.get("shards", {}).items()):
        if not in_splits(shard):
            continue
        report.shards += 1
        if _check_file(root / shard, info, report) and deep:
            rows = None if manifest is None else manifest.filter(pl.col("shard") == shard)
            _check_members(root / shard, build, rows, report)
    if manifest is not None:
        report.samples = (manifest.height if wanted is None
                          else manifest.filter(pl.col("split").is_in(list(wanted))).height)
    return _finish(report, raise_on_problems)


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
        report.problems.append(f"{path}: its samples (split, shard, group, gene, individual, "
                               "...) are not those the shards were built for (meta.json "
                               "samples_digest)")
    builds = manifest["build"].unique().to_list()
    if builds != [meta.get("build")]:
        report.problems.append(f"{path}: build(s) {', '.join(map(str, builds[:3]))}, meta.json "
                               f"build {meta.get('build')}")
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
    return manifest


def _check_members(path: Path, build: str, rows, report: VerifyReport) -> None:
    """Decode and verify every member of one shard; compare its groups with the manifest."""
    expected: dict[str, list[str]] = {}
    if rows is not None:
        for (group,), part in rows.sort("index").group_by("group", maintain_order=True):
            expected[group] = part["individual"].to_list()
    seen: set[str] = set()
    decoder = GroupDecoder(str(path))
    try:
        for sample in read_tar_members(path):
            key = sample["__key__"]
            try:
                decoded = decoder.feed(sample)
            except ShardFormatError as err:
                report.problems.append(str(err))
                seen.add(key)
                continue
            if decoded is None:
                continue
            _, meta = decoded
            report.groups += 1
            seen.add(key)
            where = f"shard {path}: member {key}.json"
            if meta["build"] != build:
                report.problems.append(f"{where}: build {meta['build']}, meta.json {build}")
            if rows is not None and key not in expected:
                report.problems.append(f"{where}: group not in the manifest")
            elif rows is not None and meta["individuals"] != expected[key]:
                report.problems.append(f"{where}: individuals differ from the manifest's for "
                                       "this group")
    except ShardFormatError as err:
        report.problems.append(str(err))
        return
    for group in sorted(set(expected) - seen):
        report.problems.append(f"shard {path}: group {group} of the manifest is missing")
