import numpy as np
import pytest

from prep.encoding import decode, encode, one_hot, reverse_complement


def test_encode_maps_case_and_ambiguity():
    assert encode("ACGTNacgtnRY-").tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 4, 4, 4]


def test_encode_accepts_bytes_and_arrays():
    assert encode(b"GA").tolist() == [2, 0]
    assert encode(np.frombuffer(b"T", np.uint8)).tolist() == [3]


def test_encode_raises_on_wrong_dtype():
    with pytest.raises(TypeError, match="uint8"):
        encode(np.array([65, 67], dtype=np.int64))


def test_decode_round_trip():
    assert decode(encode("acgtNNA")) == "ACGTNNA"


def test_decode_raises_on_bad_code():
    with pytest.raises(ValueError, match="0..4"):
        decode(np.array([0, 5], np.uint8))


def test_one_hot_n_is_zero():
    x = one_hot(encode("ACN"))
    assert x.shape == (3, 4) and x.dtype == np.float32
    assert x.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_reverse_complement_literal_and_involution():
    codes = encode("AACGTN")
    assert decode(reverse_complement(codes)) == "NACGTT"
    batch = np.stack([codes, encode("GGGTTT")])
    assert np.array_equal(reverse_complement(reverse_complement(batch)), batch)
    assert decode(reverse_complement(batch)[1]) == "AAACCC"
