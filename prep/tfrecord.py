"""TFRecord files and ``tf.train.Example`` records, read without TensorFlow.

A TFRecord file is a sequence of records, each::

    uint64 length          little-endian
    uint32 masked CRC32C   of the 8 length bytes
    bytes  data[length]
    uint32 masked CRC32C   of the data

where ``masked(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8`` (mod 2**32) and CRC32C is the
Castagnoli CRC (polynomial 0x1EDC6F41, reflected 0x82F63B78). A ZLIB- or GZIP-compressed file
(``tf.io.TFRecordOptions(compression_type="ZLIB")``, as the Basenji2 data are written) is that
byte sequence as one compressed stream (or several, concatenated). :func:`iter_records`
detects the compression from the first bytes and checks both CRCs of every record.

Each record of Basenji2 (and most TFRecord data) is a serialized ``tf.train.Example``
protobuf; :func:`parse_example` decodes its features with a small wire-format reader::

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }      (entries: key = 1, value = 2)
    Feature   { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
                        Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }

Why not a package: ``tfrecord`` (PyPI) needs ``protobuf`` and a CRC package, and reads GZIP but
not ZLIB files; ``crc32c`` / ``google-crc32c`` would be one more compiled dependency for one
function. The framing and the six messages above fit in this module, and CRC32C runs as a
numba kernel (slicing-by-8, about 1 GB/s; numba is a dependency already) - fast next to
inflating the ZLIB stream, which dominates reading.

Every problem (a bad CRC, a truncated file or stream, a record that is not an Example) is a
:class:`TFRecordError` naming the file and the 0-based record index.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numba import njit

__all__ = ["TFRecordError", "crc32c", "masked_crc32c", "iter_records", "parse_example",
           "detect_compression"]

_CHUNK = 1 << 20
_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")


class TFRecordError(ValueError):
    """A TFRecord file or record is corrupt, truncated or not what was expected; the message
    names the file and the record."""


def _crc_tables() -> np.ndarray:
    """Slicing-by-8 tables of CRC32C, shape (8, 256), uint32."""
    tables = np.zeros((8, 256), dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        tables[0, i] = c
    for k in range(1, 8):
        prev = tables[k - 1]
        tables[k] = (prev >> 8) ^ tables[0, prev & 0xFF]
    return tables


_TABLES = _crc_tables()


@njit(cache=True, nogil=True)
def _crc32c_kernel(data, tables, crc):  # pragma: no cover - compiled
    """CRC32C of ``data`` (uint8, (n,)) continuing ``crc``; ``tables`` from _crc_tables."""
    t0, t1, t2, t3 = tables[0], tables[1], tables[2], tables[3]
    t4, t5, t6, t7 = tables[4], tables[5], tables[6], tables[7]
    c = np.uint64(crc) ^ np.uint64(0xFFFFFFFF)
    n = data.shape[0]
    i = 0
    while i + 8 <= n:
        lo = c ^ (np.uint64(data[i]) | (np.uint64(data[i + 1]) << np.uint64(8))
                  | (np.uint64(data[i + 2]) << np.uint64(16))
                  | (np.uint64(data[i + 3]) << np.uint64(24)))
        c = np.uint64(t7[lo & np.uint64(0xFF)] ^ t6[(lo >> np.uint64(8)) & np.uint64(0xFF)]
                      ^ t5[(lo >> np.uint64(16)) & np.uint64(0xFF)]
                      ^ t4[(lo >> np.uint64(24)) & np.uint64(0xFF)]
                      ^ t3[data[i + 4]] ^ t2[data[i + 5]] ^ t1[data[i + 6]] ^ t0[data[i + 7]])
        i += 8
    while i < n:
        c = np.uint64(t0[(c ^ np.uint64(data[i])) & np.uint64(0xFF)]) ^ (c >> np.uint64(8))
        i += 1
    return c ^ np.uint64(0xFFFFFFFF)


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing ``crc``.

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    array = np.frombuffer(data, dtype=np.uint8)
    return int(_crc32c_kernel(array, _TABLES, crc))


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """TFRecord's masked CRC32C of ``data`` (see the module docstring)."""
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def detect_compression(head: bytes) -> str:
    """``"none"``, ``"zlib"`` or ``"gzip"`` from a file's first bytes (at least 12 unless the file
    is shorter); ``"empty"`` for an empty file; ``"unknown"`` otherwise.

    An uncompressed file starts with a record header whose length CRC matches; a zlib stream
    with a deflate header (CMF 0x?8, (CMF * 256 + FLG) % 31 == 0), a gzip stream with 1F 8B.
    """
    if not head:
        return "empty"
    if len(head) >= 12:
        length_bytes = head[:8]
        (stored,) = struct.unpack("<I", head[8:12])
        if masked_crc32c(length_bytes) == stored:
            return "none"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    return "unknown"


class _Inflater:
    """``read(n)`` over a zlib or gzip stream (or several, concatenated): exactly ``n`` bytes,
    fewer only at the end of the data. A stream cut short raises :class:`EOFError`;
    corrupt data :class:`zlib.error`."""

    def __init__(self, fh):
        self._fh = fh
        self._d = zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header
        self._tail = b""

    def read(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            data = self._tail or self._fh.read(_CHUNK)
            if not data:
                if not self._d.eof:
                    raise EOFError("the compressed stream ends early")
                break
            if self._d.eof:  # another stream follows the one that ended
                self._d = zlib.decompressobj(32 + zlib.MAX_WBITS)
            out = self._d.decompress(data, n - got)
            self._tail = self._d.unused_data if self._d.eof else self._d.unconsumed_tail
            parts.append(out)
            got += len(out)
        return b"".join(parts)


def iter_records(path: str | os.PathLike, check_crc: bool = True) -> Iterator[bytes]:
    """The records of a TFRecord file, in order, each checked against both of its CRCs.

    Parameters
    ----------
    path : str or Path
        Uncompressed, ZLIB- or GZIP-compressed (detected from the first bytes).
    check_crc : bool
        Check the masked CRC32C of every length and data (the default; off only to measure).

    Yields
    ------
    bytes
        Each record's data (for Basenji2: a serialized ``tf.train.Example``).

    Raises
    ------
    TFRecordError
        A bad CRC, a truncated file or compressed stream, corrupt compressed data, or a file
        that is no TFRecord file; the message names the file and the 0-based record index.
    OSError
        The file cannot be opened or read.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(12)
        kind = detect_compression(head)
        if kind == "empty":
            return
        if kind == "unknown":
            raise TFRecordError(f"{path}: not a TFRecord file (neither a record header with a "
                                "valid CRC nor a ZLIB/GZIP stream at its start)")
        fh.seek(0)
        stream = fh if kind == "none" else _Inflater(fh)
        index = 0
        while True:
            try:
                record = _read_record(stream, check_crc)
            except (EOFError, zlib.error) as err:
                what = ("is truncated" if isinstance(err, EOFError)
                        else f"holds corrupt {kind.upper()} data ({err})")
                raise TFRecordError(f"{path}: record {index}: the file {what}") from None
            except TFRecordError as err:
                raise TFRecordError(f"{path}: record {index}: {err}") from None
            if record is None:
                return
            yield record
            index += 1


def _read_exact(stream, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise TFRecordError(f"the file is truncated ({what}: {len(data)} of {n} bytes)")
    return data


def _read_record(stream, check_crc: bool) -> bytes | None:
    """One record's data, or None at a clean end of the file."""
    header = stream.read(12)
    if not header:
        return None
    if len(header) != 12:
        raise TFRecordError(f"the file is truncated (record header: {len(header)} of 12 bytes)")
    length, length_crc = _HEADER.unpack(header)
    if check_crc and masked_crc32c(header[:8]) != length_crc:
        raise TFRecordError("bad CRC of the record length: the file is corrupt")
    data = _read_exact(stream, length, "record data")
    (data_crc,) = struct.unpack("<I", _read_exact(stream, 4, "data CRC"))
    if check_crc and masked_crc32c(data) != data_crc:
        raise TFRecordError(f"bad CRC of the {length}-byte record data: the file is corrupt")
    return data


# ------------------------------------------------------------------------ protobuf wire format


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TFRecordError("truncated varint in the Example")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise TFRecordError("varint longer than 10 bytes in the Example")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a message: an int for varints and fixed-size
    fields, a memoryview for length-delimited ones."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise TFRecordError(f"field {number} runs past the end of its message")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise TFRecordError(f"unsupported protobuf wire type {wire} (field {number})")
        if pos > end:
            raise TFRecordError(f"field {number} runs past the end of its message")
        yield number, wire, value


def _feature(buf: memoryview) -> list[bytes] | np.ndarray:
    """A Feature's values: list of bytes, float32 array or int64 array."""
    for number, wire, value in _fields(buf):
        if wire != 2:
            continue
        if number == 1:
            return [bytes(v) for n, w, v in _fields(value) if n == 1 and w == 2]
        if number == 2:
            return _packed_floats(value)
        if number == 3:
            return _packed_ints(value)
    return []


def _packed_floats(buf: memoryview) -> np.ndarray:
    chunks = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == 2:
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif wire == 5:
            chunks.append(np.array([value], dtype="<u4").view("<f4"))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _packed_ints(buf: memoryview) -> np.ndarray:
    values = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == 2:
            pos = 0
            while pos < len(value):
                v, pos = _varint(value, pos)
                values.append(v)
        elif wire == 0:
            values.append(value)
    out = np.array(values, dtype=np.uint64)
    return out.view(np.int64)


def parse_example(data: bytes | memoryview, want: set[str] | None = None
                  ) -> dict[str, list[bytes] | np.ndarray]:
    """Decode a serialized ``tf.train.Example``.

    Parameters
    ----------
    data : bytes
        One record of :func:`iter_records`.
    want : set of str, optional
        Features to decode (default: all); the others are skipped without copying.

    Returns
    -------
    dict
        feature name -> list of bytes (``bytes_list``), float32 array (``float_list``) or
        int64 array (``int64_list``).

    Raises
    ------
    TFRecordError
        The data are not a well-formed Example.
    """
    out: dict[str, list[bytes] | np.ndarray] = {}
    for number, wire, features in _fields(memoryview(data)):
        if number != 1 or wire != 2:
            continue
        for n, w, entry in _fields(features):
            if n != 1 or w != 2:
                continue
            key, value = None, None
            for en, ew, ev in _fields(entry):
                if en == 1 and ew == 2:
                    key = bytes(ev).decode("utf-8", "replace")
                elif en == 2 and ew == 2:
                    value = ev
            if key is None or (want is not None and key not in want):
                continue
            out[key] = _feature(value) if value is not None else []
    return out
