"""One gene of a format-3 shard: its reference span, its edits, its JSON.

Members of a gene, in this order (key ``K`` = :func:`prep.shard_format.safe_key` of the gene)::

    K.json       UTF-8 JSON, compact, ending in its own sha256 (prep.shard_format.encode_meta)
    K.ref.2bit   the + strand reference span, 2 bits per base + N runs (encode_reference)
    K.var.zst    one zstd frame (content checksum on) of the gene's edits (layout below)

``K.var.zst`` decompresses to, little-endian: ``b"HFV3"``, uint32 E (edits), uint32 H
(haplotypes = 2 x individuals), uint32 A (ALT bytes); int32 starts (E), int32 ends (E), int32
ALT lengths (E); uint8 ALT codes (A); uint8 bits (H x ceil(E / 8)), ``np.packbits`` rows — row
``2 * i + h`` is haplotype h (0, 1: the GT allele order) of the JSON's ``individuals[i]``.
Coordinates are 0-based and relative to the span (:mod:`prep.edits`).

The JSON (``format`` 3: :data:`prep.shard_format.FORMAT_VERSION`): build (the sequence build
fingerprint), gene, chrom, tss (0-based), strand, span_start (0-based reference position of the
span's first base), n_ref, tss_rel (``tss - span_start``), length (L, the widest window the study
asks for), flank, width (W = L + 2 x flank), reverse_complemented (the gene's windows are
reverse-complemented: minus strand and ``[haplotypes] reverse_minus``), individuals (sorted:
every individual the study has for the gene, in any split), applied (per individual, variants
applied to haplotype 1 and 2), missing_genotypes, overlap_skipped, n_variants, n_ref_mismatch,
ref_sha256, var_sha256, sha256.

Every member is verified when it is read (:func:`decode_gene`): the JSON's own checksum, its
fields' bounds, both other members against the JSON's sha256s, the zstd content checksum, and
the edit table's bounds (sorted starts, ends within the span, ALT bytes accounted for), so a
corrupt member is an error naming shard and member, never a wrong sequence.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import numpy as np
import zstandard as zstd

from prep.edits import GeneEdits
from prep.shard_format import (
    FORMAT_VERSION,
    ShardFormatError,
    decode_meta,
    decode_reference,
    encode_meta,
    encode_reference,
    old_format_message,
)

__all__ = ["META_EXT", "REF_EXT", "VAR_EXT", "GENE_EXTS", "GeneRecord", "encode_gene",
           "decode_gene", "check_gene_meta", "encode_edits", "decode_edits"]

META_EXT = "json"
REF_EXT = "ref.2bit"
VAR_EXT = "var.zst"
GENE_EXTS = (META_EXT, REF_EXT, VAR_EXT)
"""A gene's members, in write order."""

_MAGIC = b"HFV3"
_HEADER = np.dtype([("magic", "S4"), ("edits", "<u4"), ("haplotypes", "<u4"), ("alt", "<u4")])


@dataclass
class GeneRecord:
    """A decoded, verified gene: ``meta`` (its JSON), ``ref`` (uint8 (n_ref,), + strand codes)
    and ``edits`` (:class:`prep.edits.GeneEdits`, H = 2 x len(meta["individuals"]) rows)."""

    meta: dict
    ref: np.ndarray
    edits: GeneEdits


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_edits(edits: GeneEdits, level: int = 3) -> bytes:
    """``K.var.zst`` of a gene (see the module docstring); deterministic."""
    n_edits, n_hap = edits.n_edits, edits.bits.shape[0]
    header = np.array([(_MAGIC, n_edits, n_hap, len(edits.alt_codes))], dtype=_HEADER)
    body = b"".join([
        header.tobytes(),
        edits.starts.astype("<i4").tobytes(), edits.ends.astype("<i4").tobytes(),
        np.diff(edits.alt_offsets).astype("<i4").tobytes(),
        np.ascontiguousarray(edits.alt_codes, np.uint8).tobytes(),
        np.ascontiguousarray(edits.bits, np.uint8).tobytes(),
    ])
    params = zstd.ZstdCompressionParameters.from_level(level, write_checksum=1)
    return zstd.ZstdCompressor(compression_params=params).compress(body)


_LOCAL = threading.local()


def _decompressor() -> zstd.ZstdDecompressor:
    """This thread's zstd decompressor (making one costs more than decompressing a gene)."""
    if not hasattr(_LOCAL, "decompressor"):
        _LOCAL.decompressor = zstd.ZstdDecompressor()
    return _LOCAL.decompressor


def decode_edits(blob: bytes, n_ref: int, n_hap: int, where: str) -> GeneEdits:
    """Inverse of :func:`encode_edits`, with its bounds checked against the span and the
    individuals (``n_ref`` bases, ``n_hap`` haplotypes).

    Raises
    ------
    ShardFormatError
        A corrupt frame, a wrong size or an edit outside the span; naming ``where``.
    """
    try:
        if not zstd.get_frame_parameters(blob).has_checksum:
            raise ShardFormatError(f"{where}: the zstd frame has no content checksum")
        raw = _decompressor().decompress(blob, max_output_size=1 << 31)
    except zstd.ZstdError as err:
        raise ShardFormatError(f"{where}: corrupt edits ({err})") from None
    if len(raw) < _HEADER.itemsize:
        raise ShardFormatError(f"{where}: truncated edits")
    head = np.frombuffer(raw, _HEADER, 1)[0]
    e, h, a = int(head["edits"]), int(head["haplotypes"]), int(head["alt"])
    nb = (e + 7) // 8
    if head["magic"] != _MAGIC or h != n_hap or len(raw) != _HEADER.itemsize + 12 * e + a + h * nb:
        raise ShardFormatError(f"{where}: not the edits of {n_hap // 2} individuals (header "
                               f"{bytes(head['magic'])!r}, {e} edits, {h} haplotypes)")
    at = _HEADER.itemsize
    starts, ends, lengths = (np.frombuffer(raw, "<i4", e, at + 4 * e * k).astype(np.int64)
                             for k in range(3))
    at += 12 * e
    offsets = np.zeros(e + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    bad = (e and ((np.diff(starts) < 0).any() or (starts < 0).any() or (ends < starts).any()
                  or (ends > n_ref).any() or (lengths < 0).any())) or offsets[-1] != a
    if bad:
        raise ShardFormatError(f"{where}: an edit lies outside the {n_ref}-base span or the "
                               "edits are out of order: the member is corrupt")
    codes = np.frombuffer(raw, np.uint8, a, at)
    if a and codes.max() > 4:
        raise ShardFormatError(f"{where}: ALT codes above 4 (A, C, G, T, N = 0..4)")
    bits = np.frombuffer(raw, np.uint8, h * nb, at + a).reshape(h, nb)
    return GeneEdits(starts=starts, ends=ends, alt_offsets=offsets, alt_codes=codes, bits=bits)


def encode_gene(meta: dict, ref: np.ndarray, edits: GeneEdits, level: int = 3
                ) -> list[tuple[str, bytes]]:
    """The members of one gene, ``[(extension, bytes), ...]`` in write order (JSON first).

    ``meta`` holds every JSON field of the module docstring except format, n_ref, ref_sha256,
    var_sha256 and sha256, which are filled in here.
    """
    ref_blob = encode_reference(ref)
    var_blob = encode_edits(edits, level)
    full = {**meta, "format": FORMAT_VERSION, "n_ref": int(ref.shape[0]),
            "ref_sha256": _sha256(ref_blob), "var_sha256": _sha256(var_blob)}
    return [(META_EXT, encode_meta(full)), (REF_EXT, ref_blob), (VAR_EXT, var_blob)]


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_gene_meta(meta: dict, where: str) -> None:
    """Bounds of every JSON field a reader uses; raises ShardFormatError naming the field."""
    def bad(name: str, why: str):
        value = repr(meta.get(name))
        raise ShardFormatError(f"{where}: field {name} = {value[:60]} {why}")

    for name in ("gene", "chrom", "build", "ref_sha256", "var_sha256"):
        if not isinstance(meta.get(name), str) or not meta[name]:
            bad(name, "is not a non-empty string")
    for name in ("tss", "n_ref", "length", "flank", "width", "tss_rel", "span_start"):
        if not _is_int(meta.get(name)):
            bad(name, "is not an integer")
    if meta["strand"] not in ("+", "-"):
        bad("strand", "is not + or -")
    if meta["length"] <= 0 or meta["flank"] < 0 or meta["width"] != meta["length"] + 2 * meta[
            "flank"]:
        bad("width", "is not length + 2 x flank")
    if not 0 <= meta["tss_rel"] < meta["n_ref"] or meta["tss"] != meta["span_start"] + meta[
            "tss_rel"]:
        bad("tss_rel", f"does not place the TSS inside the {meta['n_ref']}-base span")
    if not isinstance(meta.get("reverse_complemented"), bool):
        bad("reverse_complemented", "is not true or false")
    inds = meta.get("individuals")
    if not isinstance(inds, list) or not inds or not all(isinstance(i, str) and i for i in inds) \
            or len(set(inds)) != len(inds):
        bad("individuals", "is not a list of distinct individual ids")
    applied = np.asarray(meta.get("applied", []))
    if applied.shape != (len(inds), 2) or applied.dtype.kind not in "iu":
        bad("applied", f"is not {len(inds)} pairs of variant counts")


def decode_gene(sample: dict, url: str = "?") -> GeneRecord:
    """Verify and decode one gene's members (a raw WebDataset sample: ``__key__`` and member
    bytes by extension).

    Raises
    ------
    ShardFormatError
        A missing or corrupt member, a field out of bounds; naming the shard and member.
    """
    key = sample.get("__key__", "?")
    if "hap.zst" in sample or key.endswith("__reference"):  # format 2's groups and references
        raise ShardFormatError(old_format_message(
            f"shard {url}: member {key}", 2, "haplotypes stored base by base in groups"))
    missing = [ext for ext in GENE_EXTS if ext not in sample]
    if missing:
        raise ShardFormatError(f"shard {url}: gene {key} lacks its .{', .'.join(missing)} "
                               "member(s): the shard is truncated or was written by another "
                               "version of prep.shard")
    where = f"shard {url}: member {key}.{META_EXT}"
    meta = decode_meta(sample[META_EXT], where, version=FORMAT_VERSION)
    check_gene_meta(meta, where)
    for ext, field in ((REF_EXT, "ref_sha256"), (VAR_EXT, "var_sha256")):
        if _sha256(sample[ext]) != meta[field]:
            raise ShardFormatError(f"shard {url}: member {key}.{ext}: its bytes do not match the "
                                   f"sha256 its JSON recorded: the member is corrupt")
    try:
        ref = decode_reference(sample[REF_EXT])
    except ShardFormatError as err:
        raise ShardFormatError(f"shard {url}: member {key}.{REF_EXT}: {err}") from None
    if ref.shape[0] != meta["n_ref"]:
        raise ShardFormatError(f"shard {url}: member {key}.{REF_EXT} holds {ref.shape[0]} bases, "
                               f"its JSON {meta['n_ref']}")
    edits = decode_edits(sample[VAR_EXT], meta["n_ref"], 2 * len(meta["individuals"]),
                         f"shard {url}: member {key}.{VAR_EXT}")
    return GeneRecord(meta=meta, ref=ref, edits=edits)
