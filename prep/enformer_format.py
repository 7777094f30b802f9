"""Shard members of Enformer's own training data (``python -m prep.enformer_data``).

One WebDataset sample per Basenji2 record, key ``{organism}_{split}_{record:06d}`` (record: the
0-based index of the record in its split, the row order of ``sequences.bed``), members in this
order:

``{key}.json``
    UTF-8 JSON ending in its own sha256 (:func:`prep.shard_format.encode_meta`): ``format``
    (:data:`prep.shard_format.FORMAT_VERSION`), ``kind`` = ``"enformer"``, ``organism`` (human
    / mouse: the output head), ``split`` (train / val / test), ``record``, ``source`` (the
    TFRecord file, relative to the organism's folder), ``source_record`` (0-based index in that
    file), ``chrom``, ``start``, ``end`` (the stored window, 0-based half-open; ``start`` < 0 or
    ``end`` past the contig where the window runs off it: those bases are N),
    ``centre_start``, ``centre_end`` (the record's own interval, from sequences.bed),
    ``length`` (end - start), ``target_shape`` ([target_length, num_targets]),
    ``mismatches`` (bases where the record's A/C/G/T differs from the FASTA's A/C/G/T),
    ``n_differences`` (bases N in one and not the other), ``build`` (the build fingerprint),
    ``seq_sha256``, ``target_sha256`` (of the two members below) and, last, ``sha256``.
``{key}.seq.2bit``
    The window's codes (A, C, G, T, N = 0..4), shape (length,), uint8, packed 2 bits per base
    plus N runs (:func:`prep.shard_format.encode_reference`). Bases [centre_start - start,
    centre_end - start) are the record's own sequence; the flanks come from the FASTA.
``{key}.target.f16.zst``
    One zstd frame (with content checksum) of the targets, float16 little-endian, shape
    ``target_shape`` (bins, tracks), row-major: Basenji's targets unchanged. With the default
    extension (32,768 bp each side of 131,072) the bins are the centre 896 of Enformer's 1,536,
    exactly the bins Enformer's output covers for a 196,608 bp input.

:func:`decode_enformer_sample` verifies every member (JSON checksum, fields, both sha256, the
zstd content checksum, shapes); every problem is a :class:`prep.shard_format.ShardFormatError`
naming shard and member. Torch-free: the loader imports it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import zstandard as zstd

from hapflow.sections import ORGANISMS
from prep.shard_format import (
    FORMAT_VERSION,
    ShardFormatError,
    decode_meta,
    decode_reference,
    encode_meta,
    encode_reference,
)

__all__ = ["KIND", "SEQ_EXT", "TARGET_EXT", "META_EXT", "sample_key", "encode_sample",
           "decode_enformer_sample"]

KIND = "enformer"
SEQ_EXT = "seq.2bit"
TARGET_EXT = "target.f16.zst"
META_EXT = "json"


def sample_key(organism: str, split: str, record: int) -> str:
    """``{organism}_{split}_{record:06d}``, e.g. ``human_train_000123``."""
    return f"{organism}_{split}_{record:06d}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_sample(key: str, window: np.ndarray, target: np.ndarray, meta: dict,
                  level: int = 3) -> list[tuple[str, bytes]]:
    """The three members of one sample, as (member name, bytes), JSON first.

    Parameters
    ----------
    key : str
        :func:`sample_key`.
    window : np.ndarray, shape (length,), uint8 codes 0..4
    target : np.ndarray, shape (bins, tracks), float16
    meta : dict
        The JSON fields of the module docstring except ``format``, ``kind``, ``length``,
        ``target_shape`` and the checksums, which are filled in here.
    level : int
        zstd level of the targets.
    """
    seq = encode_reference(window)
    target = np.ascontiguousarray(target, dtype="<f2")
    params = zstd.ZstdCompressionParameters.from_level(level, write_checksum=1,
                                                       write_content_size=1)
    blob = zstd.ZstdCompressor(compression_params=params).compress(target.tobytes())
    record = {"format": FORMAT_VERSION, "kind": KIND, **meta, "length": int(window.shape[0]),
              "target_shape": [int(target.shape[0]), int(target.shape[1])],
              "seq_sha256": _sha256(seq), "target_sha256": _sha256(blob)}
    return [(f"{key}.{META_EXT}", encode_meta(record)), (f"{key}.{SEQ_EXT}", seq),
            (f"{key}.{TARGET_EXT}", blob)]


def _check_fields(meta: dict, where: str) -> None:
    def bad(name: str, why: str):
        raise ShardFormatError(f"{where}: field {name} = {meta.get(name)!r} {why}")

    if meta.get("kind") != KIND:
        bad("kind", f"is not {KIND!r} (not an Enformer-data shard)")
    if meta.get("organism") not in ORGANISMS:
        bad("organism", f"is not one of {', '.join(ORGANISMS)}")
    if meta.get("split") not in ("train", "val", "test"):
        bad("split", "is not train, val or test")
    for name in ("start", "end", "centre_start", "centre_end", "length", "record"):
        if not isinstance(meta.get(name), int) or isinstance(meta.get(name), bool):
            bad(name, "is not an integer")
    if meta["end"] - meta["start"] != meta["length"] or meta["length"] <= 0:
        bad("length", "is not end - start > 0")
    if not meta["start"] <= meta["centre_start"] < meta["centre_end"] <= meta["end"]:
        bad("centre_start", "is not inside the window")
    shape = meta.get("target_shape")
    if not (isinstance(shape, list) and len(shape) == 2
            and all(isinstance(x, int) and x > 0 for x in shape)):
        bad("target_shape", "is not [bins, tracks]")


def decode_enformer_sample(sample: dict, where: str | None = None) -> dict:
    """Verify and decode one raw WebDataset sample (member bytes by extension).

    Parameters
    ----------
    sample : dict
        ``__key__`` and the members ``json``, ``seq.2bit``, ``target.f16.zst`` as bytes (as
        :func:`prep.shard_format.read_tar_members` or an undecoded ``webdataset`` yield them).
    where : str, optional
        Names the shard in errors (default: the sample's ``__url__``).

    Returns
    -------
    dict
        ``__key__``; ``seq`` (np.ndarray (length,), uint8 codes 0..4); ``target``
        (np.ndarray (bins, tracks), float16, read-only); ``organism``; ``split``; ``meta`` (the
        JSON).

    Raises
    ------
    ShardFormatError
        A missing or corrupt member, naming shard and member.
    """
    key = sample.get("__key__", "?")
    shard = where or f"shard {sample.get('__url__', '?')}"
    for ext in (META_EXT, SEQ_EXT, TARGET_EXT):
        if ext not in sample:
            raise ShardFormatError(f"{shard}: sample {key} lacks its .{ext} member")
    here = f"{shard}: member {key}.{META_EXT}"
    meta = decode_meta(sample[META_EXT], here)
    _check_fields(meta, here)
    if _sha256(sample[SEQ_EXT]) != meta.get("seq_sha256"):
        raise ShardFormatError(f"{shard}: member {key}.{SEQ_EXT}: its bytes do not match the "
                               "sha256 its JSON recorded: the sequence is corrupt")
    if _sha256(sample[TARGET_EXT]) != meta.get("target_sha256"):
        raise ShardFormatError(f"{shard}: member {key}.{TARGET_EXT}: its bytes do not match "
                               "the sha256 its JSON recorded: the targets are corrupt")
    try:
        seq = decode_reference(sample[SEQ_EXT])
    except ShardFormatError as err:
        raise ShardFormatError(f"{shard}: member {key}.{SEQ_EXT}: {err}") from None
    if seq.shape[0] != meta["length"]:
        raise ShardFormatError(f"{shard}: member {key}.{SEQ_EXT} holds {seq.shape[0]} bases, "
                               f"its JSON says {meta['length']}")
    bins, tracks = meta["target_shape"]
    want = bins * tracks * 2
    try:
        raw = zstd.ZstdDecompressor().decompress(sample[TARGET_EXT], max_output_size=want)
    except zstd.ZstdError as err:
        raise ShardFormatError(f"{shard}: member {key}.{TARGET_EXT} is corrupt: {err}") from None
    if len(raw) != want:
        raise ShardFormatError(f"{shard}: member {key}.{TARGET_EXT} holds {len(raw)} bytes, "
                               f"expected {want} (float16 {bins} x {tracks})")
    target = np.frombuffer(raw, dtype="<f2").reshape(bins, tracks)
    return {"__key__": key, "seq": seq, "target": target, "organism": meta["organism"],
            "split": meta["split"], "meta": meta}
