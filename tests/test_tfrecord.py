"""prep.tfrecord: TFRecord framing, CRC32C, ZLIB/GZIP streams and tf.train.Example decoding."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from prep.tfrecord import (
    TFRecordError,
    crc32c,
    detect_compression,
    iter_records,
    masked_crc32c,
    parse_example,
)
from tests import tfrecord_writer as tw


def test_crc32c_matches_rfc3720_vectors_and_an_independent_implementation():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    data = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    for n in (0, 1, 7, 8, 9, 4999, 5000):
        assert crc32c(data[:n]) == tw.crc32c(data[:n])
        assert masked_crc32c(data[:n]) == tw.masked(data[:n])
    assert crc32c(data[1234:], crc32c(data[:1234])) == crc32c(data)


@pytest.mark.parametrize("compression", ["none", "zlib", "gzip"])
def test_records_round_trip(tmp_path, compression):
    records = [b"", b"a", bytes(range(256)) * 40, b"last"]
    path = tw.write_tfrecord(tmp_path / "x.tfr", records, compression)
    assert detect_compression(path.read_bytes()[:12]) == compression
    assert list(iter_records(path)) == records


def test_concatenated_zlib_streams_and_an_empty_file(tmp_path):
    raw = [tw.frame(b"one"), tw.frame(b"two")]
    path = tmp_path / "cat.tfr"
    path.write_bytes(zlib.compress(raw[0]) + zlib.compress(raw[1]))
    assert list(iter_records(path)) == [b"one", b"two"]
    (tmp_path / "empty.tfr").write_bytes(b"")
    assert list(iter_records(tmp_path / "empty.tfr")) == []


def _raw(records):
    return b"".join(tw.frame(r) for r in records)


def test_bad_data_crc_names_file_and_record(tmp_path):
    raw = bytearray(_raw([b"first", b"second", b"third"]))
    raw[len(tw.frame(b"first")) + 12 + 2] ^= 0x01  # a bit of record 1's data
    path = tmp_path / "bad.tfr"
    path.write_bytes(zlib.compress(bytes(raw)))
    got = iter_records(path)
    assert next(got) == b"first"
    with pytest.raises(TFRecordError, match=r"bad\.tfr: record 1: bad CRC of the 6-byte"):
        next(got)


def test_bad_length_crc_names_the_record(tmp_path):
    raw = bytearray(_raw([b"first", b"second"]))
    raw[len(tw.frame(b"first")) + 9] ^= 0xFF  # record 1's length CRC
    path = tmp_path / "len.tfr"
    path.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match="len.tfr: record 1: bad CRC of the record length"):
        list(iter_records(path))


@pytest.mark.parametrize("cut", [3, 12 + 2, 12 + 6 + 2])
def test_truncated_uncompressed_file(tmp_path, cut):
    raw = _raw([b"first!", b"second"])
    path = tmp_path / "cut.tfr"
    path.write_bytes(raw[:len(tw.frame(b"first!")) + cut])
    with pytest.raises(TFRecordError, match=r"cut\.tfr: record 1: the file is truncated"):
        list(iter_records(path))


def test_truncated_and_corrupt_zlib_streams(tmp_path):
    raw = _raw([bytes(range(256)) * 100, np.random.default_rng(0).bytes(30000)])
    packed = zlib.compress(raw)
    path = tmp_path / "short.tfr"
    path.write_bytes(packed[: len(packed) - 2000])
    with pytest.raises(TFRecordError, match=r"short\.tfr: record 1: the file is truncated"):
        list(iter_records(path))
    broken = bytearray(packed)
    broken[40:60] = bytes(20)
    path.write_bytes(bytes(broken))
    with pytest.raises(TFRecordError, match=r"short\.tfr: record \d"):
        list(iter_records(path))


def test_not_a_tfrecord_file(tmp_path):
    path = tmp_path / "text.tfr"
    path.write_text("this is not a TFRecord file at all\n")
    with pytest.raises(TFRecordError, match="text.tfr: not a TFRecord file"):
        list(iter_records(path))


def _protobuf_example_class():
    """tf.train.Example built from its .proto description with the protobuf library."""
    pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="hapflow_test_example.proto",
                                            package="hapflow_test", syntax="proto3")

    def message(name, fields, nested=None, oneof=None):
        m = fd.message_type.add(name=name)
        if oneof:
            m.oneof_decl.add(name=oneof)
        for number, (fname, ftype, label, type_name) in enumerate(fields, 1):
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if oneof:
                f.oneof_index = 0
        if nested:
            e = m.nested_type.add(name="FeatureEntry")
            e.options.map_entry = True
            e.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
            e.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                        type_name=".hapflow_test.Feature")
        return m

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", [("value", F.TYPE_BYTES, rep, None)])
    message("FloatList", [("value", F.TYPE_FLOAT, rep, None)])
    message("Int64List", [("value", F.TYPE_INT64, rep, None)])
    message("Feature", [("bytes_list", F.TYPE_MESSAGE, opt, ".hapflow_test.BytesList"),
                        ("float_list", F.TYPE_MESSAGE, opt, ".hapflow_test.FloatList"),
                        ("int64_list", F.TYPE_MESSAGE, opt, ".hapflow_test.Int64List")],
            oneof="kind")
    message("Features", [("feature", F.TYPE_MESSAGE, rep,
                          ".hapflow_test.Features.FeatureEntry")], nested=True)
    message("Example", [("features", F.TYPE_MESSAGE, opt, ".hapflow_test.Features")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("hapflow_test.Example"))


def test_parse_example_agrees_with_the_protobuf_library():
    Example = _protobuf_example_class()
    ex = Example()
    ex.features.feature["sequence"].bytes_list.value.append(b"\x01\x00\x00\x00" * 3)
    ex.features.feature["two"].bytes_list.value.extend([b"a", b""])
    ex.features.feature["floats"].float_list.value.extend([0.5, -2.25, 1e-3])
    ex.features.feature["ints"].int64_list.value.extend([0, 1, -1, 2**40, -(2**62)])
    data = ex.SerializeToString()
    got = parse_example(data)
    assert got["sequence"] == [b"\x01\x00\x00\x00" * 3]
    assert got["two"] == [b"a", b""]
    np.testing.assert_array_equal(got["floats"], np.float32([0.5, -2.25, 1e-3]))
    np.testing.assert_array_equal(got["ints"], [0, 1, -1, 2**40, -(2**62)])
    assert set(parse_example(data, {"ints"})) == {"ints"}
    # and the test writer writes what the library reads
    mine = tw.example({"sequence": b"xyz", "floats": [1.5], "ints": [-3, 7]})
    back = Example.FromString(mine)
    assert back.features.feature["sequence"].bytes_list.value == [b"xyz"]
    assert list(back.features.feature["ints"].int64_list.value) == [-3, 7]
    assert list(back.features.feature["floats"].float_list.value) == [1.5]


def test_parse_example_refuses_malformed_data():
    good = tw.example({"sequence": b"abc"})
    with pytest.raises(TFRecordError, match="runs past the end|truncated varint"):
        parse_example(good[:-1])
    with pytest.raises(TFRecordError, match="wire type"):
        parse_example(struct.pack("B", (1 << 3) | 3))
