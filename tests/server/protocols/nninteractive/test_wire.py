"""The array codec against the client's own (nninteractive-client 2.6.0), both ways."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from nnInteractive.inference.remote.serialization import pack_array, unpack_array

from server.errors import BadRequest, PayloadTooLarge
from server.protocols.nninteractive import wire


@pytest.mark.parametrize("array", [
    (np.random.RandomState(0).rand(1, 9, 10, 11) * 1000).astype(np.float32),
    np.random.RandomState(1).randint(-1000, 3000, (1, 5, 6, 7)).astype(np.int16),
    (np.random.RandomState(2).rand(12, 13, 14) > 0.7),
    np.zeros((7, 9, 11), np.uint8),  # all zeros: the case blosc2 gets wrong without typesize
])
def test_arrays_round_trip_with_the_clients_codec(array):
    np.testing.assert_array_equal(wire.unpack(pack_array(array), max_elements=array.size), array)
    back = unpack_array(wire.pack(array))
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_many_chunks_are_read_in_order(monkeypatch):
    monkeypatch.setattr(wire, "CHUNK_BYTES", 64)
    array = np.arange(1000, dtype=np.int32).reshape(10, 10, 10)
    data = wire.pack(array)
    assert struct.unpack_from("<I", data, 8 + 5 + 24)[0] == 63  # 4000 bytes in 64-byte chunks
    np.testing.assert_array_equal(unpack_array(data), array)
    np.testing.assert_array_equal(wire.unpack(data, max_elements=1000), array)


def test_the_declared_size_shape_and_dimensionality_are_checked_first():
    data = pack_array(np.ones((4, 5, 6), np.uint8))
    with pytest.raises(PayloadTooLarge):
        wire.unpack(data, max_elements=119)
    with pytest.raises(BadRequest, match="4D"):
        wire.unpack(data, max_elements=120, ndim=4)
    with pytest.raises(BadRequest, match="differs"):
        wire.unpack(data, max_elements=120, shape=(4, 5, 7))
    with pytest.raises(BadRequest, match="trailing"):
        wire.unpack(data + b"x", max_elements=120)
    with pytest.raises(BadRequest):
        wire.unpack(data[:-3], max_elements=120)
