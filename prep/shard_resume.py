"""Resuming a study's shards: what is on disk, what this run (or part) still has to build.

A re-run resumes only shards of the same build fingerprint (:mod:`prep.fingerprint`): each
shard's first gene record carries the build it was written by. Shards of another build stop the
run, saying what changed, unless ``overwrite`` rebuilds them; so do shards of an older format
(format 2: ``{split}/shard-NNNNNN.tar``, :func:`prep.shard_format.check_study_format`), which
``overwrite`` removes. Temp files of killed writers are removed (:func:`remove_stale_temps`),
never a live writer's, so ``--part`` jobs on several hosts can share a folder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from hapflow.io import atomic_write_json
from hapflow.layout import Workdir
from prep.fingerprint import BUILD_JSON, describe_changes, stale_message
from prep.shard_finalize import META_JSON, STUDY_TABLES
from prep.shard_format import ShardFormatError, check_study_format
from prep.shard_plan import IDENTITY_COLUMNS, ShardError, StudyPlan
from prep.shard_tar import read_tar_members

__all__ = ["PartWork", "part_work", "prepare_folder", "remove_stale_temps", "targets_build_of",
           "describe_layout_change", "STALE_TEMP_SECONDS"]

log = logging.getLogger(__name__)

STALE_TEMP_SECONDS = 3600
"""A temp shard of another host is removed only when untouched this long (its writer is gone)."""


@dataclass
class PartWork:
    """What one run (part ``k`` of ``n``) of ``prep.shard`` finds and has to do.

    Attributes
    ----------
    part : tuple of int
        (k, n).
    mine : list of str
        This part's shards (every shard whose index, over all splits in order, is k-1 mod n).
    todo : list of str
        Those still to build (all of ``mine`` with ``overwrite``).
    stale : list of str
        Shards on disk written by another build (removed before building, with ``overwrite``).
    old_format : list of str
        Shards of an older format (format 2's ``{split}/shard-NNNNNN.tar``; removed before
        building, with ``overwrite``).
    complete : bool
        Every shard of the plan is on disk with this build and meta.json says so: nothing to
        build (at most the targets table to rewrite).
    """

    part: tuple[int, int]
    mine: list[str]
    todo: list[str]
    stale: list[str]
    complete: bool
    old_format: list[str]


def part_work(plan: StudyPlan, workdir: Workdir, part: tuple[int, int], build: str,
              components: dict, overwrite: bool) -> PartWork:
    """Compare the plan with ``DIR/shards``: this part's shards, those to build, stale ones.

    Raises
    ------
    ShardError
        Shards of another build on disk and not ``overwrite`` (the message lists what changed),
        or a folder of an older shard format and not ``overwrite`` (the message says to
        rebuild with ``--overwrite``).
    """
    out_dir = workdir.shards
    k, n = part
    mine = [s for i, s in enumerate(plan.shards) if i % n == k - 1]
    old_format = _old_format(out_dir, overwrite)
    on_disk = sorted(p.name for p in out_dir.glob("shard-*.tar")) if out_dir.exists() else []
    stale = [s for s in on_disk if _shard_build(out_dir / s) != build]
    if stale and not overwrite:
        layout = describe_layout_change(workdir.manifest, plan.manifest)
        raise ShardError(_stale_message(out_dir, stale, components, workdir.cache, layout))
    planned = set(plan.shards)
    done_before = {s for s in on_disk if s in planned and s not in stale}
    if overwrite:
        done_before -= set(mine)
    todo = [s for s in mine if s not in done_before]
    complete = (not todo and all(s in done_before for s in plan.shards)
                and _meta_build(out_dir) == build)
    return PartWork(part=part, mine=mine, todo=todo, stale=stale, complete=complete,
                    old_format=old_format)


def _old_format(out_dir: Path, overwrite: bool) -> list[str]:
    """Shards of an older format in ``out_dir`` (to remove, with ``overwrite``).

    Raises
    ------
    ShardError
        The folder holds another format's shards and not ``overwrite``.
    """
    try:
        check_study_format(out_dir)
    except ShardFormatError as err:
        if not overwrite:
            raise ShardError(str(err)) from None
        return sorted(str(p.relative_to(out_dir)) for p in out_dir.glob("*/shard-*.tar"))
    return []


def prepare_folder(workdir: Workdir, work: PartWork, build: str, components: dict,
                   overwrite: bool) -> None:
    """Make ``DIR/shards`` ready for this part: remember the build, remove stale shards (and the
    tables, which must never describe shards being rebuilt) and dead writers' temp files."""
    out_dir = workdir.shards
    _remember_build(workdir.cache, build, components)
    out_dir.mkdir(parents=True, exist_ok=True)
    if work.stale:
        log.info("Removing %d shard(s) of another build from %s (--overwrite)", len(work.stale),
                 out_dir)
    if work.old_format:
        log.info("Removing %d shard(s) of an older format from %s (--overwrite)",
                 len(work.old_format), out_dir)
    if work.stale or work.old_format or (overwrite and work.todo):
        _remove_tables(out_dir)  # no table may describe shards that are being rebuilt
    for s in work.stale + work.old_format + (work.mine if overwrite else []):
        (out_dir / s).unlink(missing_ok=True)
    for folder in {(out_dir / s).parent for s in work.old_format}:
        for tmp in folder.glob(".shard-*.tmp"):  # an old format's writers are no longer live
            tmp.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()
    for s in work.mine:  # temp files of killed runs (this part's shards only; never a live one's)
        remove_stale_temps(out_dir / s)
    k, n = work.part
    log.info("Part %d/%d: %d shard(s), %d already written, %d to build (build %s)", k, n,
             len(work.mine), len(work.mine) - len(work.todo), len(work.todo), build)


def targets_build_of(workdir: Workdir) -> str | None:
    """The targets fingerprint of the manifest on disk (None: none or unreadable)."""
    try:
        column = pl.read_parquet(workdir.manifest, columns=["targets_build"])
    except Exception:  # noqa: BLE001 - missing file or column: polars raises several types
        return None
    return column["targets_build"][0] if column.height else None


def _shard_build(path: Path) -> str | None:
    """The build fingerprint recorded in a shard's first gene record (None: none or unreadable)."""
    try:
        for sample in read_tar_members(path, want=lambda _k, ext: ext == "json"):
            return json.loads(sample["json"]).get("build")
    except (ShardFormatError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return None


def _meta_build(out_dir: Path) -> str | None:
    try:
        return json.loads((out_dir / META_JSON).read_text()).get("build")
    except (OSError, json.JSONDecodeError):
        return None


def _stale_message(out_dir: Path, stale: list[str], components: dict,
                   cache: Path | None = None, layout: list[str] | None = None) -> str:
    """Why shards on disk cannot be resumed: what changed since their build, in one line."""
    old_build = _shard_build(out_dir / stale[0])
    old = None
    candidates = [out_dir / BUILD_JSON]
    if cache is not None and old_build:
        candidates.append(cache / "builds" / f"{old_build}.json")
    for path in candidates:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if old_build is None or record.get("build") == old_build:
            old = record.get("components")
            break
    return stale_message(out_dir, stale, describe_changes(old, components, layout))


def describe_layout_change(old_manifest: Path, new: pl.DataFrame) -> list[str] | None:
    """How the planned samples (``new``, a manifest) differ from those of the manifest on disk,
    one item per difference: genes and individuals left out or added, samples in another split,
    other identity columns (:data:`prep.shard_plan.IDENTITY_COLUMNS`). None when there is no
    readable manifest (an unfinished study) or nothing differs."""
    try:
        old = pl.read_parquet(old_manifest, columns=list(IDENTITY_COLUMNS))
    except Exception:  # noqa: BLE001 - missing or unreadable: polars raises several types
        return None
    out = []
    for col, what in (("gene", "genes"), ("individual", "individuals")):
        a, b = set(old[col].to_list()), set(new[col].to_list())
        if a != b:
            gone, added = sorted(a - b), sorted(b - a)
            detail = ([f"{len(gone)} left out, e.g. {gone[0]}"] if gone else []) + (
                [f"{len(added)} added, e.g. {added[0]}"] if added else [])
            out.append(f"{what} {len(a)} -> {len(b)} ({', '.join(detail)})")
    keys = ["gene", "individual"]
    both = old.join(new.select(IDENTITY_COLUMNS), on=keys, how="inner", suffix="_new")
    moved = both.filter(pl.col("split") != pl.col("split_new"))
    if moved.height:
        g, i, a, b = moved.select("gene", "individual", "split", "split_new").row(0)
        out.append(f"{moved.height} of {both.height} (gene, individual) samples are in another "
                   f"split (e.g. {g}, {i}: {a} -> {b})")
    others = [c for c in IDENTITY_COLUMNS if c not in (*keys, "split") and both.filter(
        pl.col(c).ne_missing(pl.col(f"{c}_new"))).height]
    if others and not moved.height:
        out.append(f"the samples differ in {', '.join(others)}")
    return out or None


def remove_stale_temps(shard: Path) -> None:
    """Remove temp files of killed writers of ``shard``; never a live writer's.

    Temp names are ``.{name}.{host}.{pid}.{token}.tmp`` (:class:`prep.shard_tar.ShardWriter`):
    a temp file of this host is stale when its process is gone; one of another host (a SLURM
    requeue on another node) when it has not been written for :data:`STALE_TEMP_SECONDS`.
    """
    host = socket.gethostname().replace(".", "-").replace("/", "-")
    for tmp in shard.parent.glob(f".{shard.name}.*.tmp"):
        parts = tmp.name[len(shard.name) + 2: -len(".tmp")].rsplit(".", 2)
        try:
            age = time.time() - tmp.stat().st_mtime
        except FileNotFoundError:
            continue
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
            alive = _pid_alive(int(parts[1]))
        else:
            alive = age < STALE_TEMP_SECONDS
        if not alive:
            tmp.unlink(missing_ok=True)
        else:
            log.info("Leaving %s: another writer may still be building it", tmp)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own earlier writer of this shard has been aborted
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remember_build(cache: Path, build: str, components: dict) -> None:
    """Keep what ``build`` is made of in ``DIR/.cache/builds`` until the study's build.json
    exists, so a refused re-run over an unfinished study can still say what changed."""
    atomic_write_json(cache / "builds" / f"{build}.json",
                      {"build": build, "components": components})


def _remove_tables(out_dir: Path) -> None:
    """Remove the study's tables, then meta.json (never a table without meta.json)."""
    for name in (*STUDY_TABLES, META_JSON):
        (out_dir / name).unlink(missing_ok=True)
