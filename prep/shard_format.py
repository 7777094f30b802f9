"""The hapflow shard format: WebDataset tar files of compressed haplotype groups.

Why groups
----------
A tar member costs a 512-byte header plus its data padded to 512 bytes, so one member per
(gene, individual) would cost over 1 kB before any sequence, while a diploid 49,152 bp sample
compresses to tens of bytes. Shards therefore store *groups*: up to ``group_size`` individuals of
one gene and split per WebDataset sample. :func:`unpack_groups` turns each group back into one
sample per (gene, individual), keyed ``{gene}__{individual}``.

Members of a shard, in order
----------------------------
``{gene}__reference.ref.2bit``
    The gene's reference window (codes, shape (W,), uint8; reverse-complemented when the
    haplotypes are), 2 bits per base plus N runs (:func:`encode_reference`). Written once per
    gene per shard, before its groups.
``{gene}__{split}{NNNN}.hap.zst``
    The group's haplotypes, codes of shape (n, 2, W) uint8 (individual, haplotype, position),
    as one zstd frame compressed with the reference window as a raw-content dictionary, so only
    the differences from the reference cost bytes. The frame carries zstd's content checksum
    (XXH64 of the decoded bytes), checked on every decode.
``{gene}__{split}{NNNN}.json``
    UTF-8 JSON: format, gene, chrom, tss (0-based), strand, split, length (L), flank, window
    (W = L + 2 * flank), tss_index (0-based index of the TSS in the stored window: W // 2, or
    W - 1 - W // 2 when reverse_complemented), reverse_complemented, build (the *sequence*
    build fingerprint, :mod:`prep.fingerprint`), individuals, populations, ``applied``
    (variants applied per individual and haplotype), group totals of missing genotypes and
    overlapping variants skipped, the gene's ``n_variants`` / ``n_ref_mismatch``,
    ``ref_sha256`` / ``hap_sha256`` (sha256 of the reference and haplotype members' bytes) and,
    last, ``sha256``: the sha256 of the member's own bytes written without that field
    (:func:`encode_meta`).

Shards hold sequences and identity only: the targets (Y, Z, P and any further target sets) live
in the study's manifest, joined by (gene, individual), so re-targeting rewrites a table, never a
shard (:mod:`prep.target_table`).

Verification
------------
Every member is checked whenever it is read (:func:`decode_meta`, :func:`check_meta`,
:class:`GroupDecoder`): the JSON's own checksum, then bounds of every field the loader
uses (tss_index inside the window and where the layout puts it, individuals unique and as many
as populations and ``applied``, the window width), the reference member against the group's
``ref_sha256``, the haplotype member against ``hap_sha256`` and its zstd content checksum. Any
mismatch is a :class:`ShardFormatError` naming shard and member. Format-1 shards (targets in
the JSON, no checksums) are refused with a message to rebuild.

Keys hold no dots (WebDataset splits member names at the first dot): the gene id's dots become
underscores in keys (``ENSG00000099889.9`` -> ``ENSG00000099889_9``); the JSON keeps the real id.

Writing and reading the tar files themselves is :mod:`prep.shard_tar`. Everything here is
torch-free; the loader imports it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator

import numpy as np
import zstandard as zstd

from hapflow.names import SPLITS

__all__ = [
    "FORMAT_VERSION",
    "REF_EXT",
    "HAP_EXT",
    "META_EXT",
    "safe_key",
    "group_key",
    "reference_key",
    "sample_key",
    "encode_reference",
    "decode_reference",
    "encode_group",
    "decode_group",
    "encode_meta",
    "decode_meta",
    "check_meta",
    "GroupDecoder",
    "ShardFormatError",
    "unpack_groups",
]

FORMAT_VERSION = 2
"""Version 2: targets out of the shards, checksums on every member. Version 1 is refused."""
REF_EXT = "ref.2bit"
HAP_EXT = "hap.zst"
META_EXT = "json"


class ShardFormatError(ValueError):
    """A shard or one of its members is corrupt or inconsistent; the message names it."""


def safe_key(gene: str) -> str:
    """A gene id usable in a WebDataset key: no dots, no slashes."""
    return gene.replace(".", "_").replace("/", "_")


def group_key(gene: str, split: str, index: int) -> str:
    """Key of a gene's ``index``-th group in ``split``: ``{gene}__{split}{NNNN}``."""
    return f"{safe_key(gene)}__{split}{index:04d}"


def reference_key(gene: str) -> str:
    return f"{safe_key(gene)}__reference"


def sample_key(gene: str, individual: str) -> str:
    return f"{safe_key(gene)}__{safe_key(individual)}"


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
        If the blob is not a packed reference window or is truncated.
    """
    if blob[:4] != _REF_MAGIC or len(blob) < 12:
        raise ShardFormatError("not a hapflow reference window (bad magic)")
    width, n_runs = (int(x) for x in np.frombuffer(blob, "<u4", 2, 4))
    runs_end = 12 + 8 * n_runs
    if len(blob) != runs_end + (width + 3) // 4:
        raise ShardFormatError(f"reference window of {width} bases is truncated")
    runs = np.frombuffer(blob, "<i4", 2 * n_runs, 12).reshape(-1, 2)
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


def _dictionary(reference: np.ndarray) -> zstd.ZstdCompressionDict:
    return zstd.ZstdCompressionDict(
        np.ascontiguousarray(reference, dtype=np.uint8).tobytes(),
        dict_type=zstd.DICT_TYPE_RAWCONTENT,
    )


def encode_group(haplotypes: np.ndarray, reference: np.ndarray, level: int = 3) -> bytes:
    """Compress a group's haplotypes against their reference window.

    Parameters
    ----------
    haplotypes : np.ndarray, shape (n, 2, W), uint8
    reference : np.ndarray, shape (W,), uint8
    level : int
        zstd level; 3 is fast, higher levels save a little space slowly.

    Returns
    -------
    bytes
        One zstd frame (long-distance matching on, so haplotypes share matches) with a content
        checksum. Deterministic.
    """
    haplotypes = np.ascontiguousarray(haplotypes, dtype=np.uint8)
    if (haplotypes.ndim != 3 or haplotypes.shape[1] != 2
            or haplotypes.shape[2] != reference.shape[0]):
        raise ValueError(
            f"haplotypes must have shape (n, 2, {reference.shape[0]}), got {haplotypes.shape}"
        )
    size = max(haplotypes.nbytes, 1)
    window_log = min(max(int(np.ceil(np.log2(size))) + 1, 20), 27)
    params = zstd.ZstdCompressionParameters.from_level(
        level, window_log=window_log, enable_ldm=True, threads=0, write_checksum=1
    )
    cctx = zstd.ZstdCompressor(compression_params=params, dict_data=_dictionary(reference))
    return cctx.compress(haplotypes.tobytes())


def decode_group(blob: bytes, reference: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`encode_group`: shape (n, 2, W), uint8 (read-only view).

    Raises
    ------
    ShardFormatError
        If the frame is corrupt or does not hold ``n * 2 * W`` bytes.
    """
    width = reference.shape[0]
    want = n * 2 * width
    try:
        if not zstd.get_frame_parameters(blob).has_checksum:
            raise ShardFormatError("the zstd frame has no content checksum (format 1 shards?)")
    except zstd.ZstdError as err:
        raise ShardFormatError(f"corrupt haplotype group: {err}") from None
    try:
        raw = zstd.ZstdDecompressor(
            dict_data=_dictionary(reference), max_window_size=1 << 27
        ).decompress(blob, max_output_size=want)
    except zstd.ZstdError as err:
        raise ShardFormatError(f"corrupt haplotype group: {err}") from None
    if len(raw) != want:
        raise ShardFormatError(f"haplotype group holds {len(raw)} bytes, expected {want}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(n, 2, width)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_CHECKSUM_FIELD = b',"sha256":"'
_CHECKSUM_TAIL = len(_CHECKSUM_FIELD) + 64 + 2  # the field, 64 hex digits, '"}'


def encode_meta(meta: dict) -> bytes:
    """A group's JSON member: compact JSON ending in its own checksum.

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
    """Parse and verify a group's JSON member (see :func:`encode_meta`).

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
        Not JSON, a checksum that does not match its bytes, or a format-1 group (no checksum:
        the message says to rebuild).
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
            raise ShardFormatError(_old_format(where, meta.get("format", 1), version))
        raise ShardFormatError(f"{where}: the JSON does not end in its sha256; it is corrupt")
    body = blob[:-_CHECKSUM_TAIL] + b"}"
    if _sha256(body) != tail[len(_CHECKSUM_FIELD):-2].decode("ascii", "replace"):
        raise ShardFormatError(
            f"{where}: the JSON's bytes do not match its sha256: the member is corrupt "
            "(a changed digit gives wrong sequences); rebuild the shard"
        )
    if meta.get("format") != version:
        raise ShardFormatError(_old_format(where, meta.get("format"), version))
    return meta


def _old_format(where: str, found, version: int) -> str:
    return (f"{where}: written in shard format {found}, but this hapflow reads format "
            f"{version}: rebuild the shards with `python -m prep.shard ... --overwrite`")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_meta(meta: dict, where: str = "json member") -> None:
    """Bounds checks of every field of a group's JSON that readers use.

    Checks: ``gene``, ``chrom`` non-empty strings; ``tss`` >= 0; ``strand`` + or -; ``split``
    train, val or test; ``length`` > 0, ``flank`` >= 0, ``window == length + 2 * flank``;
    ``tss_index`` exactly ``window // 2`` (``window - 1 - window // 2`` when
    ``reverse_complemented``); ``individuals`` unique non-empty strings, as many as
    ``populations`` and ``applied`` (pairs of counts >= 0); ``build``, ``ref_sha256``,
    ``hap_sha256`` present.

    Raises
    ------
    ShardFormatError
        Naming ``where``, the field and its value.
    """
    def bad(field: str, why: str):
        value = repr(meta.get(field))
        value = value if len(value) < 60 else value[:57] + "..."
        raise ShardFormatError(f"{where}: field {field} = {value} {why}")

    for f in ("gene", "chrom", "build", "ref_sha256", "hap_sha256"):
        if not isinstance(meta.get(f), str) or not meta[f]:
            bad(f, "is not a non-empty string")
    if not _is_int(meta.get("tss")) or meta["tss"] < 0:
        bad("tss", "is not a 0-based position")
    if meta.get("strand") not in ("+", "-"):
        bad("strand", "is not + or -")
    if meta.get("split") not in SPLITS:
        bad("split", f"is not one of {', '.join(SPLITS)}")
    if not _is_int(meta.get("length")) or meta["length"] <= 0:
        bad("length", "is not a positive window length")
    if not _is_int(meta.get("flank")) or meta["flank"] < 0:
        bad("flank", "is not a flank length >= 0")
    if meta.get("window") != meta["length"] + 2 * meta["flank"] or not _is_int(meta["window"]):
        bad("window", f"is not length + 2 * flank = {meta['length'] + 2 * meta['flank']}")
    if not isinstance(meta.get("reverse_complemented"), bool):
        bad("reverse_complemented", "is not true or false")
    w = meta["window"]
    tss_index = w - 1 - w // 2 if meta["reverse_complemented"] else w // 2
    if not _is_int(meta.get("tss_index")) or meta["tss_index"] != tss_index:
        bad("tss_index", f"is not where a window of {w} bases puts the TSS ({tss_index})")
    inds = meta.get("individuals")
    if (not isinstance(inds, list) or not inds
            or not all(isinstance(i, str) and i for i in inds)):
        bad("individuals", "is not a non-empty list of individual ids")
    if len(set(inds)) != len(inds):
        bad("individuals", "lists an individual twice")
    pops = meta.get("populations")
    if not isinstance(pops, list) or len(pops) != len(inds) or not all(
            isinstance(p, str) for p in pops):
        bad("populations", f"is not a list of {len(inds)} population names")
    try:  # one array check, not a Python loop per individual
        applied = np.asarray(meta.get("applied"))
    except ValueError:  # ragged lists
        applied = np.zeros(0)
    if applied.shape != (len(inds), 2) or applied.dtype.kind not in "iu" or (applied < 0).any():
        bad("applied", f"is not {len(inds)} pairs of variant counts")


class GroupDecoder:
    """Decodes and verifies a shard's raw samples (:func:`prep.shard_tar.iter_tar`) in stream order.

    Reference members are decoded and kept per gene (with their sha256); each group is verified
    (:func:`decode_meta`, :func:`check_meta`, reference and haplotype sha256, the zstd content
    checksum) and decoded. Every error is a :class:`ShardFormatError` naming shard and member.

    Parameters
    ----------
    url : str, optional
        The shard, for messages when samples carry no ``__url__``.
    """

    def __init__(self, url: str = "?"):
        self.url = url
        self.references: dict[str, tuple[np.ndarray, str]] = {}
        self.bad_references: dict[str, str] = {}

    def feed(self, sample: dict) -> tuple[np.ndarray, dict] | None:
        """None for a reference member; ``(haps (n, 2, W) uint8, meta)`` for a group.

        Raises
        ------
        ShardFormatError
            A corrupt or inconsistent member, a group before its gene's reference.
        """
        key = sample["__key__"]
        url = sample.get("__url__", self.url)
        if key.endswith("__reference"):
            gkey = key[: -len("__reference")]
            where = f"shard {url}: member {key}.{REF_EXT}"
            if REF_EXT not in sample:
                members = ", ".join(k for k in sample if not k.startswith("__"))
                raise ShardFormatError(f"shard {url}: reference {key} has no .{REF_EXT} member "
                                       f"(members: {members}); was it written by another "
                                       "version of prep.shard?")
            blob = sample[REF_EXT]
            try:
                self.references[gkey] = (decode_reference(blob), _sha256(blob))
            except ShardFormatError as err:
                self.references.pop(gkey, None)
                self.bad_references[gkey] = f"{where}: {err}"
                raise ShardFormatError(f"{where}: {err}") from None
            return None
        if HAP_EXT not in sample or META_EXT not in sample:
            raise ShardFormatError(
                f"shard {url}: sample {key} lacks its .{HAP_EXT} or .{META_EXT} member")
        where = f"shard {url}: member {key}.{META_EXT}"
        meta = decode_meta(sample[META_EXT], where)
        check_meta(meta, where)
        gkey = safe_key(meta["gene"])
        if key.rsplit("__", 1)[0] != gkey:
            raise ShardFormatError(f"{where}: describes gene {meta['gene']}, but the member "
                                   "belongs to another gene's group")
        if gkey in self.bad_references:
            raise ShardFormatError(f"shard {url}: group {key}: its reference window is corrupt "
                                   f"({self.bad_references[gkey]})")
        if gkey not in self.references:
            raise ShardFormatError(
                f"shard {url}: group {key} comes before the reference window of {meta['gene']}")
        reference, ref_sha = self.references[gkey]
        if ref_sha != meta["ref_sha256"]:
            raise ShardFormatError(
                f"shard {url}: member {gkey}__reference.{REF_EXT}: its bytes do not match the "
                f"sha256 that group {key} recorded: the reference window is corrupt")
        if reference.shape[0] != meta["window"]:
            raise ShardFormatError(f"{where}: window {meta['window']} differs from the "
                                   f"{reference.shape[0]}-base reference window")
        hap_where = f"shard {url}: member {key}.{HAP_EXT}"
        if _sha256(sample[HAP_EXT]) != meta["hap_sha256"]:
            raise ShardFormatError(f"{hap_where}: its bytes do not match the sha256 its JSON "
                                   "recorded: the haplotypes are corrupt")
        try:
            haps = decode_group(sample[HAP_EXT], reference, len(meta["individuals"]))
        except ShardFormatError as err:
            raise ShardFormatError(f"{hap_where}: {err}") from None
        return haps, meta


def unpack_groups(samples: Iterable[dict]) -> Iterator[dict]:
    """WebDataset stage: raw shard samples in, one sample per (gene, individual) out.

    Input samples are dicts with ``__key__`` and member bytes (as
    :func:`prep.shard_tar.read_tar_members` or ``webdataset.WebDataset(...)`` without decoding
    yield them). Every member is verified
    (:class:`GroupDecoder`). Shards carry no targets: join ``Y``/``Z``/``P`` from the manifest
    by ``__key__`` (or gene and individual).

    Yields
    ------
    dict
        ``__key__`` (``{gene}__{individual}``), ``seq`` (np.ndarray (2, W) uint8), ``gene``,
        ``individual``, ``population``, ``split``, ``chrom``, ``tss`` (0-based), ``strand``,
        ``tss_index`` (0-based, in ``seq``), ``flank``, ``length``, ``applied`` (variants
        applied to haplotype 1 and 2), ``__url__`` (the shard) when known.

    Raises
    ------
    ShardFormatError
        A corrupt member; the message names shard and member.
    """
    decoder = GroupDecoder()
    for sample in samples:
        decoded = decoder.feed(sample)
        if decoded is None:
            continue
        haps, meta = decoded
        url = sample.get("__url__", "?")
        for i, individual in enumerate(meta["individuals"]):
            yield {
                "__key__": sample_key(meta["gene"], individual),
                "__url__": url,
                "seq": haps[i],
                "gene": meta["gene"],
                "individual": individual,
                "population": meta["populations"][i],
                "split": meta["split"],
                "chrom": meta["chrom"],
                "tss": meta["tss"],
                "strand": meta["strand"],
                "tss_index": meta["tss_index"],
                "flank": meta["flank"],
                "length": meta["length"],
                "applied": meta["applied"][i],
            }
