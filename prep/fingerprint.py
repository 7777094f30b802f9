"""Build fingerprints: which settings and inputs a set of shards was built from.

A shard build is identified by a fingerprint over everything that decides its bytes: the shard
format version, the code's build version (:data:`BUILD_CODE_VERSION`), the resolved
``[haplotypes]`` and ``[shard]`` settings (less paths, pure performance knobs and the target
settings, :data:`TARGET_SETTINGS`), the sha256 of every input file the sequences come from
(FASTA, VCF, TSS table, split tables, sample lists) and a digest of the sample layout (which
(gene, individual) samples exist, their split, shard and row in their gene's record: the
expression matrix decides which individuals have expression, so it shapes the layout, but its
values do not). Paths are left out on purpose: moving a study folder keeps its fingerprint,
changing a file's content changes it.

Shards carry no targets, so the expression values and target settings are not part of the
sequence build: a re-target (:mod:`prep.retarget`) keeps the shards. The targets table has its
own fingerprint over the target settings, the sha256 of every expression matrix and the
sequence build (``targets_build`` in the manifest, components in ``targets.json``).

The fingerprint is written into every gene record's JSON (``build``), the manifest (column
``build``), ``build.json`` (with its components, so a re-run can say what changed) and
``meta.json``.
``prep.shard`` resumes only shards of the same build, and the loader refuses shards whose build
differs from the manifest's.

Checksums of large inputs (a 1000 Genomes chromosome VCF is tens of GB) are cached in
``DIR/.cache/input-sha256.json`` by (absolute path, size, mtime), so a re-run hashes only files
that changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from hapflow.config import config_to_dict
from hapflow.io import atomic_write_json

__all__ = [
    "BUILD_JSON",
    "BUILD_CODE_VERSION",
    "SETTINGS_IGNORED",
    "TARGET_SETTINGS",
    "file_sha256",
    "build_components",
    "fingerprint",
    "describe_changes",
    "stale_message",
    "SETTING_EFFECTS",
    "LAYOUT_SETTINGS",
]

BUILD_JSON = "build.json"
"""The build record in ``DIR/shards``: ``{"build": fingerprint, "components": ...}``."""

BUILD_CODE_VERSION = 1
"""Bump when the same settings and inputs would give different shard content."""

SETTINGS_IGNORED = {"workers", "batch_mb"}
"""Settings that change speed or memory only, never the bytes of a shard."""

TARGET_SETTINGS = {"expression", "expression_format", "target_reference", "target_sets",
                   "target_names"}
"""[shard] settings that decide the targets only, never a shard's bytes."""

_CACHE_NAME = "input-sha256.json"


def file_sha256(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """sha256 (hex) of a file's bytes, cached by (absolute path, size, mtime) in ``cache_dir``."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = Path(cache_dir) / _CACHE_NAME if cache_dir is not None else None
    cache: dict = {}
    if cache_file is not None and cache_file.exists():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if cache_file is not None:
        cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}
        cache[key] = digest
        atomic_write_json(cache_file, cache, sort_keys=True)
    return digest


def build_components(settings: dict[str, object], inputs: dict[str, str | None],
                     format_version: int, cache_dir: str | os.PathLike | None = None,
                     ignore: set[str] | frozenset = frozenset(),
                     samples: str | None = None) -> dict:
    """The parts a fingerprint is made of.

    Parameters
    ----------
    settings : dict
        ``{section: config dataclass}``, e.g. ``{"haplotypes": hcfg, "shard": scfg}``.
        Path-valued fields (``metadata={"path": True}``) and :data:`SETTINGS_IGNORED` are left
        out; the files they name are in ``inputs``.
    inputs : dict
        ``{name: path or None}`` of every input file; unset ones are skipped.
    format_version : int
        The shard format version (prep.shard_format.FORMAT_VERSION).
    ignore : set of str
        More settings to leave out (e.g. :data:`TARGET_SETTINGS` for the sequence build).
    samples : str, optional
        A digest of the sample layout (``prep.sharding.layout_digest``), added as ``samples``.

    Returns
    -------
    dict
        ``{"format", "code", "settings": {section: {...}}, "inputs": {name: sha256}}`` (and
        ``"samples"`` when given).
    """
    out_settings = {}
    for section, cfg in settings.items():
        paths = {f.name for f in dataclasses.fields(cfg) if f.metadata.get("path")}
        out_settings[section] = {k: v for k, v in sorted(config_to_dict(cfg).items())
                                 if k not in paths and k not in SETTINGS_IGNORED
                                 and k not in ignore}
    digests = {name: file_sha256(p, cache_dir) for name, p in sorted(inputs.items()) if p}
    out = {"format": format_version, "code": BUILD_CODE_VERSION, "settings": out_settings,
           "inputs": digests}
    if samples is not None:
        out["samples"] = samples
    return out


def fingerprint(components: dict) -> str:
    """A 20-hex-digit digest of :func:`build_components`' output."""
    text = json.dumps(components, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


SETTING_EFFECTS = {
    ("haplotypes", "length"): "the window length",
    ("haplotypes", "snps_only"): "which variants are applied",
    ("haplotypes", "unphased"): "how unphased genotypes are read",
    ("haplotypes", "ref_mismatch"): "how REF mismatches are handled",
    ("haplotypes", "reverse_minus"): "the strand of minus-strand windows",
    ("haplotypes", "seed"): "the coin flips of the 'random' unphased policy",
    ("shard", "seed"): "the split of individuals",
    ("shard", "splits"): "the split of individuals",
    ("shard", "n_test"): "the split of individuals",
    ("shard", "test_fraction"): "the split of individuals",
    ("shard", "val_fraction"): "the split of individuals",
    ("shard", "population"): "the split of individuals",
    ("shard", "test_chroms"): "the split of genes",
    ("shard", "shard_samples"): "how genes fill shards",
    ("shard", "flank"): "the bases stored beside each window",
    ("shard", "compression_level"): "how gene records are compressed",
}
"""What a changed build setting changes in the shards, in words (said beside the change)."""

LAYOUT_SETTINGS = {key for key, what in SETTING_EFFECTS.items()
                   if what.startswith(("the split", "how genes fill"))}
"""Settings that move samples between splits or shards (a changed layout follows)."""


def describe_changes(old: dict | None, new: dict, layout: list[str] | None = None) -> list[str]:
    """What differs between two builds' components, one item per change, in plain words.

    Every component is compared: format and code versions, each setting (with what it changes,
    :data:`SETTING_EFFECTS`), each input file's checksum and the sample layout. ``layout``:
    how the (gene, individual) samples differ, when the caller could compare the old and new
    manifests (``prep.shard_resume.describe_layout_change``); said when the layout digests
    differ.
    """
    if not old:
        return ["the existing shards carry no build record (written by an older hapflow)"]
    lines = []
    for key, label in (("format", "shard format version"), ("code", "hapflow build version")):
        if old.get(key) != new.get(key):
            lines.append(f"{label}: {old.get(key)} -> {new.get(key)}")
    changed = set()
    for section in sorted(set(old.get("settings", {})) | set(new.get("settings", {}))):
        a = old.get("settings", {}).get(section, {})
        b = new.get("settings", {}).get(section, {})
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                changed.add((section, k))
                effect = SETTING_EFFECTS.get((section, k))
                lines.append(f"[{section}] {k}: {a.get(k, '(unset)')!r} -> "
                             f"{b.get(k, '(unset)')!r}" + (f" ({effect})" if effect else ""))
    a, b = old.get("inputs", {}), new.get("inputs", {})
    for name in sorted(set(a) | set(b)):
        if name not in a:
            lines.append(f"input {name}: added")
        elif name not in b:
            lines.append(f"input {name}: no longer used")
        elif a[name] != b[name]:
            lines.append(f"input {name}: content changed (sha256 {a[name][:12]}... -> "
                         f"{b[name][:12]}...)")
    if old.get("samples") != new.get("samples"):
        lines.append(_layout_line(layout, changed & LAYOUT_SETTINGS))
    return lines or ["(no difference in settings or inputs: the shards were changed by hand)"]


def _layout_line(layout: list[str] | None, because: set) -> str:
    """The sample layout's change in words: what moved (when known) and why it may have."""
    what = ("the sample layout changed: " + ", ".join(layout) if layout else
            "the (gene, individual) samples to shard or their split, group or shard changed")
    if because:
        names = ", ".join(f"[{s}] {k}" for s, k in sorted(because))
        return f"{what} (as {names} decide{'s' if len(because) == 1 else ''})"
    return (f"{what} (from the expression matrix's genes or individuals, the VCF's samples or "
            "the split file)")


def stale_message(out_dir: Path, stale: list[str], changes: list[str]) -> str:
    """The one-line error of a re-run that finds shards of another build: what changed and
    the flag that rebuilds them."""
    return (f"{out_dir} holds {len(stale)} shard(s) (e.g. {stale[0]}) built from other settings "
            f"or inputs than this run's, so they cannot be resumed; what changed: "
            + "; ".join(changes)
            + ". Re-run with --overwrite to rebuild them, or use another --workdir to keep both")
