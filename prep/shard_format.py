"""The hapflow shard format (version 3): what every shard-writing stage of prep shares.

A study's shards (``DIR/shards``, written by ``python -m prep.shard``) are WebDataset tar files
``shard-NNNNNN.tar`` at the top of the folder. Each WebDataset sample is one *gene*: its
reference span once (2 bits per base plus N runs), its haplotypes as edits against that span
(positions, reference lengths, alternate bases; a bit matrix says which haplotype carries which
edit) and a JSON, for every individual the study has for that gene, whatever their split
(members and fields: :mod:`prep.gene_record`). Windows are built from a gene's record at load
time, at any length up to the stored width (:mod:`prep.edits`); no haplotype's bases are stored.
Splits, targets and which individual sits in which row of its gene's record are in the study's
``manifest.parquet`` (:mod:`prep.shard_plan`, :mod:`prep.target_table`).

Here: keys (:func:`safe_key`, :func:`sample_key`, :func:`shard_name`), the packed reference
(:func:`encode_reference`), the self-checking JSON (:func:`encode_meta`, :func:`decode_meta`),
:data:`FORMAT_VERSION` (the one version constant, shared with the Enformer and MPRA data of
:mod:`prep.enformer_format` and :mod:`prep.mpra_format`), :class:`ShardFormatError` and
:func:`check_study_format`, which refuses folders of an older format (format 2:
``{split}/shard-NNNNNN.tar``, haplotypes stored base by base in groups) with the command that
rebuilds them.

Keys hold no dots (WebDataset splits member names at the first dot): the gene id's dots become
underscores in keys (``ENSG00000099889.9`` -> ``ENSG00000099889_9``); the JSON keeps the real id.
Writing and reading the tar files themselves is :mod:`prep.shard_tar`; reading a study's windows
as a user is :mod:`prep.shard_reader`. Everything here is torch-free; the loader imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "old_format_message",
    "safe_key",
    "sample_key",
    "shard_name",
    "encode_reference",
    "decode_reference",
    "encode_meta",
    "decode_meta",
    "check_study_format",
    "ShardFormatError",
]

FORMAT_VERSION = 3
"""Version 3: per gene a reference span and edits (version 2 stored every haplotype's bases in
groups; version 1 had targets in the shards). Older versions are refused with a message to
rebuild."""


class ShardFormatError(ValueError):
    """A shard or one of its members is corrupt or inconsistent; the message names it."""


def safe_key(gene: str) -> str:
    """A gene id usable in a WebDataset key: no dots, no slashes."""
    return gene.replace(".", "_").replace("/", "_")


def sample_key(gene: str, individual: str) -> str:
    """The manifest's key of a (gene, individual) sample: ``{gene}__{individual}``."""
    return f"{safe_key(gene)}__{safe_key(individual)}"


def shard_name(index: int) -> str:
    """The shard file of number ``index``, relative to ``DIR/shards``: ``shard-NNNNNN.tar``."""
    return f"shard-{index:06d}.tar"


_REF_MAGIC = b"HFR1"


def encode_reference(window: np.ndarray) -> bytes:
    """Pack a reference window: 2 bits per base plus the runs of N.

    Layout: ``b"HFR1"``, uint32 W, uint32 n_runs, int32 (n_runs, 2) run starts and lengths, then
    ceil(W / 4) bytes of bases (first base in the high bits; N stored as A and restored from
    the runs). About 12.3 kB for 49,152 bases, smaller than zstd at any level, in ~0.1 ms.

    Parameters
    ----------
    window : np.ndarray, shape (W,), uint8 codes 0..4
    """
    window = np.ascontiguousarray(window, dtype=np.uint8)
    width = window.shape[0]
    is_n = window == 4
    edges = np.flatnonzero(np.diff(np.concatenate([[0], is_n.view(np.int8), [0]])))
    runs = np.stack([edges[0::2], edges[1::2] - edges[0::2]], axis=1).astype(np.int32)
    bases = np.where(is_n, 0, window)
    bases = np.concatenate([bases, np.zeros(-width % 4, np.uint8)]).reshape(-1, 4)
    packed = (bases[:, 0] << 6) | (bases[:, 1] << 4) | (bases[:, 2] << 2) | bases[:, 3]
    header = _REF_MAGIC + np.array([width, runs.shape[0]], dtype="<u4").tobytes()
    return header + runs.astype("<i4").tobytes() + packed.astype(np.uint8).tobytes()


def decode_reference(blob: bytes) -> np.ndarray:
    """Inverse of :func:`encode_reference`: shape (W,), uint8.

    Raises
    ------
    ShardFormatError
        If the blob is not a packed reference window, is truncated or has N runs outside it.
    """
    if blob[:4] != _REF_MAGIC or len(blob) < 12:
        raise ShardFormatError("not a hapflow reference window (bad magic)")
    width, n_runs = (int(x) for x in np.frombuffer(blob, "<u4", 2, 4))
    runs_end = 12 + 8 * n_runs
    if len(blob) != runs_end + (width + 3) // 4:
        raise ShardFormatError(f"reference window of {width} bases is truncated")
    runs = np.frombuffer(blob, "<i4", 2 * n_runs, 12).reshape(-1, 2)
    if n_runs and ((runs < 0).any() or (runs[:, 0] + runs[:, 1] > width).any()):
        raise ShardFormatError(f"reference window of {width} bases has N runs outside it")
    packed = np.frombuffer(blob, np.uint8, offset=runs_end)
    out = _UNPACK[packed].view(np.uint8)[:width]  # each byte's 4 bases at once
    for start, length in runs:
        out[start : start + length] = 4
    return out


_UNPACK = np.ascontiguousarray(
    (np.arange(256, dtype=np.uint8)[:, None] >> np.array([6, 4, 2, 0], np.uint8)) & 3
).view(np.uint32)[:, 0]
"""The 4 bases (first in the high bits) of every packed byte, as one uint32 per byte (its bytes
the bases in memory order), so that unpacking is one gather."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_CHECKSUM_FIELD = b',"sha256":"'
_CHECKSUM_TAIL = len(_CHECKSUM_FIELD) + 64 + 2  # the field, 64 hex digits, '"}'


def encode_meta(meta: dict) -> bytes:
    """A JSON member: compact JSON ending in its own checksum.

    The bytes are ``json.dumps(meta)`` (compact, keys in the dict's order) with
    ``,"sha256":"<hex>"`` inserted before the closing brace, where hex is the sha256 of the
    JSON written without it. :func:`decode_meta` checks it on the bytes, without re-encoding.

    Parameters
    ----------
    meta : dict
        Non-empty, without a ``sha256`` key.
    """
    if not meta or "sha256" in meta:
        raise ValueError("meta must be a non-empty dict without a 'sha256' key")
    body = json.dumps(meta, separators=(",", ":")).encode()
    return body[:-1] + _CHECKSUM_FIELD + _sha256(body).encode() + b'"}'


def decode_meta(blob: bytes, where: str = "json member", version: int = FORMAT_VERSION) -> dict:
    """Parse and verify a JSON member (see :func:`encode_meta`).

    Parameters
    ----------
    blob : bytes
    where : str
        Names the shard and member in errors, e.g. ``"shard S: member K.json"``.
    version : int
        The format the member must be written in.

    Raises
    ------
    ShardFormatError
        Not JSON, a checksum that does not match its bytes, or a member of another format
        version (the message says to rebuild).
    """
    try:
        meta = json.loads(blob)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ShardFormatError(f"{where}: not valid JSON ({err}); the member is corrupt") from None
    if not isinstance(meta, dict):
        raise ShardFormatError(f"{where}: not a JSON object; the member is corrupt")
    tail = blob[-_CHECKSUM_TAIL:]
    if not (tail.startswith(_CHECKSUM_FIELD) and tail.endswith(b'"}')):
        if meta.get("format", 1) != version and "sha256" not in meta:
            raise ShardFormatError(old_format_message(where, meta.get("format", 1), version=version))
        raise ShardFormatError(f"{where}: the JSON does not end in its sha256; it is corrupt")
    body = blob[:-_CHECKSUM_TAIL] + b"}"
    if _sha256(body) != tail[len(_CHECKSUM_FIELD):-2].decode("ascii", "replace"):
        raise ShardFormatError(
            f"{where}: the JSON's bytes do not match its sha256: the member is corrupt "
            "(a changed digit gives wrong sequences); rebuild the shard"
        )
    if meta.get("format") != version:
        raise ShardFormatError(old_format_message(where, meta.get("format"), version=version))
    return meta


def old_format_message(where: str, found, detail: str = "",
                       version: int = FORMAT_VERSION) -> str:
    """The sentence for shards of another format, said alike by every reader: where, the format
    found (``detail``: what that format stored), the format read and the command that rebuilds
    them."""
    stored = f" ({detail})" if detail else ""
    return (f"{where} was written in shard format {found}{stored}, but this hapflow reads format "
            f"{version}: rebuild the shards with `python -m prep.shard ... --overwrite`")


def check_study_format(shards_dir: str | os.PathLike) -> None:
    """Refuse a study folder written in another shard format.

    Format 2 kept its shards in split folders (``train/shard-000000.tar``, ...) and wrote
    ``"format": 2`` into ``meta.json``; either is enough to tell. A folder without shards or
    ``meta.json`` passes.

    Raises
    ------
    ShardFormatError
        Naming the folder, the format found and the command that rebuilds it.
    """
    root = Path(shards_dir)
    old = sorted(str(p.relative_to(root)) for p in root.glob("*/shard-*.tar"))
    try:
        found = json.loads((root / "meta.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        found = None
    if old or (found is not None and found != FORMAT_VERSION):
        what = f"format {found if found is not None else 2}"
        example = f" (e.g. {old[0]})" if old else ""
        raise ShardFormatError(
            f"{root} holds shards of {what}{example}, but this hapflow reads and writes shard "
            f"format {FORMAT_VERSION} (a reference span and edits per gene): rebuild them with "
            "`python -m prep.shard ... --overwrite`")
