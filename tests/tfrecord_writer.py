"""Writes TFRecord files of ``tf.train.Example`` records and small Basenji2 folders, for tests.

Independent of :mod:`prep.tfrecord` (its own bitwise-table CRC32C and protobuf encoder), so a
shared bug cannot hide: what is written here is the format TensorFlow writes.
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from prep.reference import Reference


def _table() -> list[int]:
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return out


_T = _table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord record: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked(length)) + data + struct.pack("<I", masked(data))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def example(features: dict) -> bytes:
    """A serialized tf.train.Example: bytes -> bytes_list, list of float -> float_list,
    list of int -> int64_list (packed)."""
    entries = b""
    for key, value in features.items():
        if isinstance(value, bytes):
            feature = _field(1, _field(1, value))
        elif value and isinstance(value[0], float):
            feature = _field(2, _field(1, struct.pack(f"<{len(value)}f", *value)))
        else:
            packed = b"".join(_varint(v & (2**64 - 1)) for v in value)
            feature = _field(3, _field(1, packed))
        entries += _field(1, _field(1, key.encode()) + _field(2, feature))
    return _field(1, entries)


def write_tfrecord(path: Path, records: list[bytes], compression: str = "zlib") -> Path:
    """Write ``records`` as a TFRecord file: ``"zlib"`` (Basenji2), ``"gzip"`` or ``"none"``."""
    raw = b"".join(frame(r) for r in records)
    if compression == "zlib":
        raw = zlib.compress(raw, 6)
    elif compression == "gzip":
        raw = gzip.compress(raw, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


def one_hot_bytes(codes: np.ndarray) -> bytes:
    """Basenji's sequence feature: uint8 one-hot (L, 4) row-major, N all zeros."""
    eye = np.zeros((5, 4), np.uint8)
    eye[np.arange(4), np.arange(4)] = 1
    return eye[codes].tobytes()


def fasta_slice(reference: Path, chrom: str, start: int, end: int) -> np.ndarray:
    ref = Reference(reference)
    try:
        return ref.fetch(chrom, start, end)
    finally:
        ref.close()


def write_small_fasta(path: Path, contig: str, codes: np.ndarray) -> Path:
    letters = np.frombuffer(b"ACGTN", np.uint8)[codes].tobytes().decode()
    lines = [f">{contig}"] + [letters[i:i + 60] for i in range(0, len(letters), 60)]
    path.write_text("\n".join(lines) + "\n")
    return path


def basenji_folder(folder: Path, reference: Path, intervals: dict, *, seq_length: int,
                   target_length: int, num_targets: int, records_per_file: int,
                   seed: int = 0, edits: dict | None = None) -> dict:
    """A Basenji2 folder: statistics.json, sequences.bed, tfrecords/{label}-N.tfr (ZLIB).

    ``intervals``: {label: [(chrom, start), ...]} (each seq_length long); the records hold the
    FASTA's sequence there (``edits``: {(label, i): callable(codes) -> codes} changes some)
    and random float16 targets. Returns {(label, i): (codes, target)} of what was written.
    """
    rng = np.random.default_rng(seed)
    written, bed = {}, []
    for label, rows in intervals.items():
        records = []
        for i, (chrom, start) in enumerate(rows):
            codes = fasta_slice(reference, chrom, start, start + seq_length)
            if edits and (label, i) in edits:
                codes = edits[(label, i)](codes.copy())
            target = rng.gamma(1.0, 2.0, (target_length, num_targets)).astype("<f2")
            written[(label, i)] = (codes, target)
            records.append(example({"sequence": one_hot_bytes(codes),
                                    "target": target.tobytes()}))
            bed.append(f"{chrom}\t{start}\t{start + seq_length}\t{label}")
        for f in range(0, len(records), records_per_file):
            write_tfrecord(folder / "tfrecords" / f"{label}-{f // records_per_file}.tfr",
                           records[f:f + records_per_file])
    (folder / "sequences.bed").write_text("\n".join(bed) + "\n")
    stats = {"num_targets": num_targets, "seq_length": seq_length, "pool_width": 128,
             "crop_bp": (seq_length - target_length * 128) // 2,
             "target_length": target_length,
             **{f"{label}_seqs": len(rows) for label, rows in intervals.items()}}
    (folder / "statistics.json").write_text(json.dumps(stats, indent=1))
    return written


def dna(codes: np.ndarray) -> str:
    return np.frombuffer(b"ACGTN", np.uint8)[codes].tobytes().decode()


__all__ = ["crc32c", "masked", "frame", "example", "write_tfrecord", "one_hot_bytes",
           "fasta_slice", "write_small_fasta", "basenji_folder", "dna"]
