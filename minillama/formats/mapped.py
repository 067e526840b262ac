"""Read-only memory maps of checkpoint files, whose pages can be handed back as we go.

    fm = FileMap("model.gguf")
    a = fm.array(offset, np.float32, (rows, cols))   # a read-only view: nothing read yet
    ...copy a into the engine's buffers...
    fm.drop()                                         # forget the pages read so far

Why `drop`. A memory-mapped file costs nothing until its pages are touched, but then every
page read stays in the process's resident set (RSS) while the map lives. Copying a 440 MB
checkpoint into the engine's own arrays would touch all of it: 440 MB of map plus 440 MB
of copies. After each tensor is copied the loader calls drop() (madvise MADV_DONTNEED): the
pages leave the process but stay in the kernel's page cache, so touching them again costs
a page fault, not a disk read. Peak RSS is then about the engine's arrays plus one tensor.
Where madvise does not exist (Windows), drop() does nothing.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np


class FileMap:
    """A whole file mapped read-only; `array` gives bounds-checked views, `drop` frees pages."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.size = self.path.stat().st_size
        if self.size == 0:
            self._map, self.bytes = None, np.zeros(0, np.uint8)
            return
        with open(self.path, "rb") as f:  # the map keeps its own reference to the file
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.bytes = np.frombuffer(self._map, dtype=np.uint8)  # (size,) read-only

    def array(self, offset: int, dtype, shape: tuple[int, ...], what: str = "tensor") -> np.ndarray:
        """A read-only view of shape `shape` at byte `offset`; ValueError if it runs past the end."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset < 0 or offset + nbytes > self.size:
            raise ValueError(f"{self.path}: {what} needs bytes {offset}..{offset + nbytes} but the "
                             f"file has {self.size} bytes (truncated?)")
        return self.bytes[offset:offset + nbytes].view(dtype).reshape(shape)

    def drop(self) -> None:
        """Hand the pages read so far back to the page cache (see the module docstring)."""
        if self._map is not None and hasattr(self._map, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)


class LazyTensors(Mapping):
    """name -> array, each made by its own function only when looked up (and not kept), so a
    loader that copies tensor by tensor holds one dequantized tensor at a time."""

    def __init__(self, makers: dict[str, Callable[[], np.ndarray]]):
        self._makers = makers

    def __getitem__(self, name: str) -> np.ndarray:
        return self._makers[name]()

    def __iter__(self):
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)
