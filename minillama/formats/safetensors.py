"""Reading safetensors files into NumPy without torch, every field bounds-checked.

    for name, array in read_safetensors("model.safetensors"):   # zero-copy views
        ...

The container (safetensors' own spec): an unsigned 64-bit little-endian header length N,
N bytes of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then the data, offsets counted from the end of the header. The `safetensors` package reads
it too, but its NumPy loader refuses bfloat16 (NumPy has no such type), the dtype most
Llama checkpoints on the Hub use; here a bfloat16 tensor is widened to float32 exactly
(its 16 bits are the top half of a float32). Other tensors are read-only views of a
memory map, so a file is never read twice or held twice in memory.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from minillama.formats.mapped import FileMap

# safetensors dtype -> NumPy dtype (BF16 is widened to float32 on reading)
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
          "BOOL": np.bool_}
MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header: 100 MB


class SafetensorsError(ValueError):
    """A file that is not valid safetensors: what is wrong, and where."""


def _fail(path: Path, what: str) -> SafetensorsError:
    return SafetensorsError(f"{path}: not a valid safetensors file: {what}")


def read_header(path: str | Path) -> tuple[dict, int]:
    """(the header's tensor entries by name, the byte offset where the data starts)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _fail(path, f"{size} bytes, too short for the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if not 2 <= n <= min(MAX_HEADER, size - 8):
            raise _fail(path, f"header length {n} is outside 2..{min(MAX_HEADER, size - 8)} "
                              f"(the file has {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _fail(path, f"the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise _fail(path, "the header is not a JSON object")
    header.pop("__metadata__", None)
    _check_entries(path, header, size - 8 - n)
    return header, 8 + n


def _check_entries(path: Path, header: dict, data_size: int) -> None:
    for name, e in header.items():
        if not (isinstance(e, dict) and e.get("dtype") in DTYPES
                and isinstance(e.get("shape"), list) and isinstance(e.get("data_offsets"), list)):
            raise _fail(path, f"tensor {name!r} needs dtype (one of {sorted(DTYPES)}), shape "
                              f"and data_offsets; got {e!r}")
        shape, offsets = e["shape"], e["data_offsets"]
        if not all(isinstance(d, int) and d >= 0 for d in shape) or len(offsets) != 2 or \
                not all(isinstance(o, int) for o in offsets):
            raise _fail(path, f"tensor {name!r} has shape {shape} / data_offsets {offsets}: "
                              "need non-negative integers and [begin, end]")
        begin, end = offsets
        nbytes = math.prod(shape) * np.dtype(DTYPES[e["dtype"]]).itemsize
        if not 0 <= begin <= end <= data_size or end - begin != nbytes:
            raise _fail(path, f"tensor {name!r} ({e['dtype']} {shape}, {nbytes} bytes) has "
                              f"data_offsets {offsets}, but the data section holds {data_size} "
                              "bytes")


def read_safetensors(path: str | Path, maps: list | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, array) for every tensor of one file, in file order: read-only views
    of a memory map, except bfloat16, widened to a float32 copy. The map (a FileMap) is
    appended to maps if given, so that a loader can drop its pages as it copies."""
    header, start = read_header(path)
    fm = FileMap(path)
    if maps is not None:
        maps.append(fm)
    data = fm.bytes
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = e["data_offsets"]
        a = data[start + begin:start + end].view(DTYPES[e["dtype"]]).reshape(e["shape"])
        if e["dtype"] == "BF16":  # the top 16 bits of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        yield name, a
