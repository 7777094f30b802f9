"""The study's targets table: Y, Z, P of every sample, kept apart from the shards.

Shards hold sequences and identity only (:mod:`prep.gene_record`); the targets live in one
table, the study's ``DIR/shards/manifest.parquet`` (one row per (gene, individual) sample),
joined by the loader by sample. A change of expression processing (another normalisation,
``n_pcs``, ``target_reference``, more expression sets) therefore rewrites that table only
(:func:`run_retarget`, ``python -m prep.retarget``); ``prep.shard`` does the same by itself
when re-run with new expression whose samples are the shards' samples.

What a re-target may change
---------------------------
The *values* of the existing samples only: Y, Z and P of the primary set (``[shard]
expression``) and of every further set (``[shard] target_sets``), and the reference of Z and P.
Every existing sample must have a value in the primary matrix, otherwise it stops naming the
first missing (gene, individual): dropping or adding samples, or moving them between splits,
changes the sequences to store and needs a rebuild (``python -m prep.shard ... --overwrite``).
Genes and individuals of the new matrix without sequences are counted and logged, not added.

Targets table
-------------
Manifest columns ``Y``, ``Z``, ``P`` (primary set; Z and P from the training individuals'
statistics unless ``target_reference = "all"``), then ``Y:NAME``, ``Z:NAME``, ``P:NAME`` per
further set (NaN where that matrix lacks the sample: masked in batches), and ``targets_build``,
the fingerprint of the targets' provenance. ``DIR/shards/targets.json`` records that provenance:
the sets (name, file, sha256, columns), the target settings, the sequence build they were
joined to, and per set the samples with a value.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import polars as pl

from hapflow.config import StudyConfig
from hapflow.io import atomic_write_json, atomic_write_parquet
from hapflow.layout import Workdir
from hapflow.names import gene_key
from hapflow.sections import PRIMARY_TARGETS, ShardConfig, target_set_labels
from prep.expression_files import read_expression
from prep.fingerprint import BUILD_JSON, file_sha256, fingerprint
from prep.shard_format import ShardFormatError, check_study_format
from prep.targets import run_expression, target_columns, targets_for

__all__ = [
    "TARGETS_JSON",
    "RetargetError",
    "target_sets",
    "target_components",
    "target_table",
    "with_targets",
    "write_targets",
    "run_retarget",
]

log = logging.getLogger(__name__)

TARGETS_JSON = "targets.json"
"""The targets' provenance record in ``DIR/shards``."""

_TARGET_COLUMN_PREFIXES = ("Y:", "Z:", "P:")


class RetargetError(ValueError):
    """The targets cannot be rewritten as asked; the message says what to fix."""


def target_sets(scfg: ShardConfig, workdir: Workdir | str | os.PathLike
                ) -> list[tuple[str | None, str, str]]:
    """The target sets of a study: ``(name, path, label)``, primary first (name None).

    ``label`` is the name used in ``targets.json`` and batches
    (:data:`hapflow.sections.PRIMARY_TARGETS` for the primary set, whose matrix is ``[shard]
    expression``, default ``DIR/expression/expression.parquet``).
    """
    primary = scfg.expression or str(Workdir(workdir).expression_matrix)
    names = target_set_labels(scfg)[1:]
    out = [(None, primary, PRIMARY_TARGETS)]
    out += [(n, p, n) for n, p in zip(names, scfg.target_sets, strict=True)]
    return out


def target_components(scfg: ShardConfig, workdir, build: str, cache_dir=None) -> dict:
    """What the targets are made of: settings, sha256 of every matrix, the sequence build."""
    sets = target_sets(scfg, workdir)
    for _, path, label in sets:
        if not Path(path).exists():
            hint = (" (run `python -m prep.expression` with the same --workdir first)"
                    if label == PRIMARY_TARGETS and not scfg.expression else "")
            raise RetargetError(f"expression matrix {path} of target set {label} does not "
                                f"exist{hint}")
    return {
        "settings": {"expression_format": scfg.expression_format,
                     "target_reference": scfg.target_reference,
                     "sets": [label for _, _, label in sets]},
        "inputs": {label: file_sha256(path, cache_dir) for _, path, label in sets},
        "build": build,
    }


def target_table(samples: pl.DataFrame, scfg: ShardConfig, workdir,
                 report_unused: bool = False) -> tuple[pl.DataFrame, list[dict]]:
    """The target columns of ``samples`` (gene, individual, split), in their order.

    Returns
    -------
    (pl.DataFrame, list of dict)
        Columns Y, Z, P then Y:NAME, Z:NAME, P:NAME per further set (Float64, NaN where a
        further set lacks the sample); and per set ``{"name", "file", "columns", "samples"}``
        (samples with a value). ``report_unused`` logs the matrices' genes and individuals
        without sequences.

    Raises
    ------
    prep.expression_files.ExpressionError
        A primary value missing for some sample (the message says to rebuild), or an
        unreadable matrix.
    """
    parts, sets = [], []
    for name, path, label in target_sets(scfg, workdir):
        matrix = read_expression(path, scfg.expression_format)
        cols = targets_for(samples, matrix, reference=scfg.target_reference, name=name,
                           source=f"expression matrix {path} (target set {label})",
                           complete=name is None)
        parts.append(cols)
        n = int(cols[cols.columns[0]].is_not_nan().sum())
        sets.append({"name": label, "file": os.path.basename(path),
                     "columns": list(target_columns(name)), "samples": n})
        if name is not None:
            log.info("Target set %s: %d of %d samples have a value (the others are masked)",
                     label, n, samples.height)
        if report_unused:
            _log_unused(samples, matrix, label)
    return pl.concat(parts, how="horizontal"), sets


def _log_unused(samples: pl.DataFrame, matrix: pl.DataFrame, label: str) -> None:
    extra_inds = set(matrix.columns[1:]) - set(samples["individual"].unique().to_list())
    have = {gene_key(g) for g in samples["gene"].unique().to_list()}
    extra_genes = [g for g in matrix["gene"].to_list() if gene_key(g) not in have]
    if extra_inds or extra_genes:
        log.info("Target set %s: %d individual(s) and %d gene(s) of the matrix have no "
                 "sequences in the shards and are left out (a rebuild, `prep.shard "
                 "--overwrite`, would add those the VCF and split have)", label, len(extra_inds),
                 len(extra_genes))


def _is_target_column(name: str) -> bool:
    return name in ("Y", "Z", "P", "targets_build") or name.startswith(_TARGET_COLUMN_PREFIXES)


def with_targets(manifest: pl.DataFrame, scfg: ShardConfig, workdir, build: str,
                 cache_dir=None, report_unused: bool = False) -> tuple[pl.DataFrame, dict]:
    """The manifest with fresh target columns, and the ``targets.json`` record.

    Parameters
    ----------
    manifest : pl.DataFrame
        One row per sample (split, shard, key, row, gene, individual, ...); any old target
        columns are replaced.
    build : str
        The sequence build the targets are joined to.

    Returns
    -------
    (pl.DataFrame, dict)
        Identity columns, target columns (see :func:`target_table`), ``build`` (if present)
        and ``targets_build``; the record for :func:`write_targets`.
    """
    components = target_components(scfg, workdir, build, cache_dir)
    targets_build = fingerprint(components)
    identity = manifest.select([c for c in manifest.columns
                                if not _is_target_column(c) and c != "build"])
    table, sets = target_table(identity, scfg, workdir, report_unused)
    parts = [identity, table]
    if "build" in manifest.columns:
        parts.append(manifest.select("build"))
    out = pl.concat(parts, how="horizontal").with_columns(
        pl.lit(targets_build).alias("targets_build"))
    record = {"targets_build": targets_build, "build": build, "sets": sets,
              "samples": manifest.height, "components": components}
    return out, record


def write_targets(workdir: Workdir | str | os.PathLike, manifest: pl.DataFrame,
                  record: dict) -> None:
    """Write ``DIR/shards/targets.json`` then ``DIR/shards/manifest.parquet`` (each atomically)."""
    workdir = Workdir(workdir)
    atomic_write_json(workdir.shards / TARGETS_JSON, record)
    atomic_write_parquet(manifest, workdir.manifest)


def _read_built(workdir: Workdir) -> tuple[pl.DataFrame, str]:
    """The manifest and the build of a built study (``DIR/shards``)."""
    out_dir, path = workdir.shards, workdir.manifest
    try:
        check_study_format(out_dir)
    except ShardFormatError as err:
        raise RetargetError(str(err)) from None
    if not path.exists() or not (out_dir / BUILD_JSON).exists():
        raise RetargetError(f"{out_dir} holds no built study (no manifest.parquet or build.json): "
                            "run `python -m prep.shard` with the same --config and --workdir")
    try:
        manifest = pl.read_parquet(path)
        build = json.loads((out_dir / BUILD_JSON).read_text())["build"]
    except Exception as err:  # noqa: BLE001 - polars and json raise several types
        raise RetargetError(f"cannot read {path} or build.json ({err}): rebuild with "
                            "`python -m prep.shard ... --overwrite`") from None
    if "build" in manifest.columns and manifest["build"].unique().to_list() != [build]:
        raise RetargetError(f"{path} describes another build than {out_dir / BUILD_JSON}: "
                            "the study is half written; re-run `python -m prep.shard`")
    return manifest, build


def run_retarget(study: StudyConfig, workdir: Workdir | str | os.PathLike,
                 expression: bool = False) -> dict:
    """Rewrite the targets of a built study (``DIR/shards``) from ``[shard]``'s target settings.

    Reads ``manifest.parquet`` and ``build.json``; writes ``targets.json`` and the manifest's
    target columns. Shards, ``meta.json`` and ``build.json`` are not touched. With
    ``expression``, the ``prep.expression`` stage runs first (:func:`prep.targets.run_expression`).

    Returns
    -------
    dict
        ``samples``, ``sets`` (names), ``targets_build``, ``changed`` (False when the targets
        already had this provenance), ``seconds``.

    Raises
    ------
    RetargetError
        No built study in ``DIR/shards``; prep.expression_files.ExpressionError: a sample
        without a primary value (rebuild to drop it), an unreadable matrix.
    """
    t0 = time.perf_counter()
    workdir = Workdir(workdir)
    if expression:
        run_expression(study, workdir)
    manifest, build = _read_built(workdir)
    new, record = with_targets(manifest, study.shard, workdir, build, workdir.cache,
                               report_unused=True)
    old = manifest["targets_build"][0] if "targets_build" in manifest.columns else None
    changed = old != record["targets_build"]
    out_dir = workdir.shards
    if changed:
        write_targets(workdir, new, record)
        delta = _mean_change(manifest, new)
        log.info("Re-targeted %d samples (%s) in %s; the shards were not touched%s",
                 new.height, ", ".join(s["name"] for s in record["sets"]), out_dir,
                 f"; Y moved by {delta:.3g} on average" if delta is not None else "")
    else:
        log.info("Nothing to do: the targets in %s already come from these matrices and "
                 "settings (%s)", out_dir, record["targets_build"])
    return {"samples": new.height, "sets": [s["name"] for s in record["sets"]],
            "targets_build": record["targets_build"], "changed": changed,
            "seconds": time.perf_counter() - t0}


def _mean_change(old: pl.DataFrame, new: pl.DataFrame) -> float | None:
    if "Y" not in old.columns:
        return None
    return float(np.nanmean(np.abs(new["Y"].to_numpy() - old["Y"].to_numpy())))
