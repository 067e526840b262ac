"""Tests for minillama/formats/safetensors.py: the torch-free reader against the
`safetensors` package's writer (the independent reference), and its bounds checks.
Values must come back exactly (tolerance 0): reading is a copy of bits, and widening
bfloat16 to float32 is exact."""

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from minillama.formats.safetensors import SafetensorsError, read_header, read_safetensors


def write(path, tensors):
    save_file(tensors, path, metadata={"format": "pt"})
    return path


def test_every_dtype_reads_back_exactly(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=gen)
    tensors = {"f32": x, "f16": x.half(), "bf16": x.bfloat16(), "i64": torch.arange(6).view(2, 3),
               "empty": torch.zeros(0, 4), "scalar": torch.tensor(3.5)}
    got = dict(read_safetensors(write(tmp_path / "a.safetensors", tensors)))
    assert set(got) == set(tensors)
    for name, t in tensors.items():
        ref = (t.float() if t.dtype == torch.bfloat16 else t).numpy()  # torch widens bf16 too
        assert got[name].shape == ref.shape and got[name].dtype == ref.dtype, name
        np.testing.assert_array_equal(got[name], ref)


def test_views_are_read_only(tmp_path):
    got = dict(read_safetensors(write(tmp_path / "a.safetensors", {"w": torch.ones(3)})))
    with pytest.raises(ValueError):
        got["w"][0] = 2.0


def raw(path, header: dict, data: bytes):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


@pytest.mark.parametrize("header, data, message", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 15,
     r"tensor 'w' \(F32 \[4\], 16 bytes\) has data_offsets \[0, 16\], but the data section "
     r"holds 15 bytes"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 16, "16 bytes"),
    ({"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 2]}}, b"\0" * 2, "one of"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "non-negative"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"\0" * 8, "data_offsets"),
    ([1, 2], b"", "not a JSON object"),
])
def test_bad_headers_are_named(tmp_path, header, data, message):
    with pytest.raises(SafetensorsError, match=message):
        list(read_safetensors(raw(tmp_path / "bad.safetensors", header, data)))


def test_truncated_and_foreign_files(tmp_path):
    (tmp_path / "short").write_bytes(b"\1\2\3")
    with pytest.raises(SafetensorsError, match="too short"):
        read_header(tmp_path / "short")
    (tmp_path / "huge").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(SafetensorsError, match="header length 1000000000000 is outside"):
        read_header(tmp_path / "huge")
    (tmp_path / "notjson").write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{[")
    with pytest.raises(SafetensorsError, match="not JSON"):
        read_header(tmp_path / "notjson")
