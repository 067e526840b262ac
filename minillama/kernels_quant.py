"""GGUF's Q8_0 and Q4_0, and QLoRA's NF4, as weight formats of the engine's kernels.

    W = Q8Matrix.from_float(w, "attention.wq.weight")   # w (n_mats, rows, cols) float32
    W = Q4Matrix.from_float(w)
    W = NF4Matrix.from_float(w)                         # cols % 64 == 0
    kernels.matvec(out, W, m, x)                        # any kernel that takes a matrix
    kernels.dequantize(W, m)                            # float32 (rows, cols): gguf's values

The values and scales come from `minillama.quant` (q8_0_quantize, q4_0_quantize), so the
blocks are GGUF's blocks, byte for byte: 32 values of a row and one fp16 scale d (kept
here as float32, which holds every fp16 exactly). Only their order in memory differs.
NF4's come from `quant.nf4_quantize` (bitsandbytes' bytes): 64 values of a row, two 4-bit
codes a byte (value 2i in the high nibble), and a float32 absmax.

Why the order matters. A row-at-a-time dot product over 32-value blocks (a dot of 32, then
times d) ran at 1.2-3 GB/s of Q8_0 data in every variant measured: LLVM unrolls the block
and vectorises across blocks with strided loads. So the lanes go across rows instead. A
matrix is stored in chunks of R = CHUNK_ROWS rows; inside a chunk block-major, then the
value's index j in the block, then the row:

    Q8Matrix.qs  int8  (n_mats, n_chunks, nb, 32, R)    nb = cols // 32 blocks per row
    Q4Matrix.qs  uint8 (n_mats, n_chunks, nb, 16, R)    byte j: value j | value j + 16 << 4
    .d           float32 (n_mats, n_chunks, nb, R)
    NF4Matrix.qs uint8 (n_mats, n_chunks, nb, 32, R)    nb = cols // 64; byte i: 2i << 4 | 2i + 1
    .absmax      float32 (n_mats, n_chunks, nb, R)

and a chunk's R outputs are computed together with long contiguous loops over the R rows
(`_q8_chunk_dot`). A 4-bit value is a lookup in a 16-entry table (NF4's codes, or Q4_0's
nibble - 8), done 16 rows at a time by `simd.lut16_fma` (one vector permute; LLVM alone
does the lookups one by one, at 3.8 G weights/s). Measured on one thread (Zen 4; bytes of
qs and scales per second, stories-sized matrices, more of them than L3 holds): Q8_0 18-22
GB/s, NF4 12-13.5 GB/s, that is 18-22 and 21-24 G weights/s, against 6-7 G weights/s (24-27
GB/s) for the float32 matvec. (R = 64 ran at 13-16 GB/s. Q4_0's nibbles split in float32
arithmetic instead of the table, 12-13 GB/s, decoded stories110M 8-10% slower.)

The last chunk of a matrix whose rows are not a multiple of R is padded with zero rows
(values and scales 0): storage padding, never part of the matrix; the kernels neither
compute nor write the rows past `rows`.

A row length that is not a multiple of the block (32; NF4 64) cannot be stored:
`quant.BlockSizeError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numba import njit

from minillama.kernels import JIT, register_chunked_format
from minillama.quant import NF4_CODES, nf4_quantize, q4_0_quantize, q8_0_quantize
from minillama.simd import lut16_fma

_NF4_LUT = NF4_CODES.astype(np.float32)  # global arrays: constants of the compiled kernels
_Q4_LUT = np.arange(-8, 8, dtype=np.float32)  # Q4_0's nibble q stands for q - 8
CHUNK_ROWS = 128  # R: 18-22 GB/s of Q8_0 on one thread, R = 64 13-16 (lesson 10 builds this too)


class Q8Matrix(NamedTuple):
    """GGUF Q8_0 blocks in chunks of R rows: value = qs * d."""

    qs: np.ndarray  # int8 (n_mats, n_chunks, nb, 32, R): value j of block b of row c * R + r
    d: np.ndarray  # float32 (n_mats, n_chunks, nb, R): each block's fp16 scale
    rows: int  # rows of each matrix; the last chunk's rows past it are padding

    fmt = "q8_0"

    @classmethod
    def from_float(cls, w: np.ndarray, name: str | Sequence[str] = "w") -> Q8Matrix:
        """w (n_mats, rows, cols) float32, cols % 32 == 0 -> Q8Matrix; name (one per matrix,
        or one for all: matrix m is then name[m]) is what a BlockSizeError or NaN names."""
        qs, d = _blocks(_gguf(q8_0_quantize), w, name)
        return cls(_chunked(qs), _chunked(d), w.shape[1])

    @classmethod
    def from_blocks(cls, qs: np.ndarray, d: np.ndarray) -> Q8Matrix:
        """GGUF Q8_0 blocks as they are: qs int8 (n_mats, rows, nb, 32), d (n_mats, rows, nb)
        (fp16 or float32; widened exactly). Nothing is dequantized, only reordered."""
        return cls(_chunked(np.asarray(qs, np.int8)), _chunked(np.asarray(d, np.float32)), qs.shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_mats, rows, cols) of the matrices stored."""
        return self.qs.shape[0], self.rows, self.qs.shape[2] * 32


class Q4Matrix(NamedTuple):
    """GGUF Q4_0 blocks in chunks of R rows: value = (nibble - 8) * d."""

    qs: np.ndarray  # uint8 (n_mats, n_chunks, nb, 16, R): values j (low) and j + 16 (high nibble)
    d: np.ndarray  # float32 (n_mats, n_chunks, nb, R): each block's fp16 scale
    rows: int  # rows of each matrix; the last chunk's rows past it are padding

    fmt = "q4_0"

    @classmethod
    def from_float(cls, w: np.ndarray, name: str | Sequence[str] = "w") -> Q4Matrix:
        """w (n_mats, rows, cols) float32, cols % 32 == 0 -> Q4Matrix; name as for Q8Matrix."""
        qs, d = _blocks(_gguf(q4_0_quantize), w, name)
        return cls(_chunked(qs), _chunked(d), w.shape[1])

    @classmethod
    def from_blocks(cls, qs: np.ndarray, d: np.ndarray) -> Q4Matrix:
        """GGUF Q4_0 blocks as they are: qs uint8 (n_mats, rows, nb, 16), d (n_mats, rows, nb)."""
        return cls(_chunked(np.asarray(qs, np.uint8)), _chunked(np.asarray(d, np.float32)), qs.shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_mats, rows, cols) of the matrices stored."""
        return self.qs.shape[0], self.rows, self.qs.shape[2] * 32


class NF4Matrix(NamedTuple):
    """QLoRA's NF4 blocks of 64 in chunks of R rows: value = NF4_CODES[nibble] * absmax."""

    qs: np.ndarray  # uint8 (n_mats, n_chunks, nb, 32, R): values 2i (high) and 2i + 1 (low nibble)
    absmax: np.ndarray  # float32 (n_mats, n_chunks, nb, R): each block's absmax
    rows: int  # rows of each matrix; the last chunk's rows past it are padding

    fmt = "nf4"

    @classmethod
    def from_float(cls, w: np.ndarray, name: str | Sequence[str] = "w") -> NF4Matrix:
        """w (n_mats, rows, cols) float32, cols % 64 == 0 -> NF4Matrix; name as for Q8Matrix.
        The absmaxes stay float32 (bnb's double quantization only shrinks what is stored)."""
        qs, absmax = _blocks(_nf4_blocks, w, name)
        return cls(_chunked(qs), _chunked(absmax), w.shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_mats, rows, cols) of the matrices stored."""
        return self.qs.shape[0], self.rows, self.qs.shape[2] * 64


QUANT_MATRICES = {"q8_0": Q8Matrix, "q4_0": Q4Matrix, "nf4": NF4Matrix}  # format name -> class


# ---------------------------------------------------------------------------------------
# Building: GGUF blocks, reordered into chunks
# ---------------------------------------------------------------------------------------


def _gguf(quantize):
    def blocks(w: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        b = quantize(w, name=name).blocks  # (rows, nb) records
        return b["qs"], b["d"].astype(np.float32)
    return blocks


def _nf4_blocks(w: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    q = nf4_quantize(w, name=name)
    return q.packed.reshape(w.shape[0], -1, 32), q.absmax


def _blocks(quantize, w: np.ndarray, name) -> tuple[np.ndarray, np.ndarray]:
    """w (n_mats, rows, cols) -> values (n_mats, rows, nb, k) and scales (n_mats, rows, nb)
    float32, quantized a matrix at a time (each named in errors, temporaries one matrix big)."""
    if w.ndim != 3:
        raise ValueError(f"need a stack of matrices (n_mats, rows, cols), got shape {w.shape}")
    names = [f"{name}[{m}]" for m in range(len(w))] if isinstance(name, str) else list(name)
    parts = [quantize(w[m], names[m]) for m in range(len(w))]
    return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])


def _chunked(a: np.ndarray, R: int = CHUNK_ROWS) -> np.ndarray:
    """(n_mats, rows, nb, ...) -> (n_mats, n_chunks, nb, ..., R), C-contiguous; rows padded
    with zeros to a multiple of R."""
    n_mats, rows = a.shape[:2]
    n_chunks = -(-rows // R)
    padded = np.zeros((n_mats, n_chunks * R, *a.shape[2:]), a.dtype)
    padded[:, :rows] = a
    p = padded.reshape(n_mats, n_chunks, R, *a.shape[2:])  # (n_mats, n_chunks, R, nb, ...)
    return np.ascontiguousarray(np.moveaxis(p, 2, -1))  # (n_mats, n_chunks, nb, ..., R)


def _unchunked(v: np.ndarray, rows: int) -> np.ndarray:
    """Values of one matrix (n_chunks, nb, 32, R) -> (rows, cols), the padding dropped."""
    n_chunks, nb, k, R = v.shape
    return np.moveaxis(v, 3, 1).reshape(n_chunks * R, nb * k)[:rows]  # (rows, cols)


def _q8_dequantize(W: Q8Matrix, m: int) -> np.ndarray:
    """Matrix m as float32 (rows, cols): qs * d, the same float32 products as gguf's."""
    return _unchunked(W.qs[m].astype(np.float32) * W.d[m][:, :, None, :], W.rows)


def _q4_dequantize(W: Q4Matrix, m: int) -> np.ndarray:
    """Matrix m as float32 (rows, cols): (nibble - 8) * d, as gguf's dequantize computes it."""
    qs = W.qs[m]  # (n_chunks, nb, 16, R)
    q = np.concatenate([qs & 15, qs >> 4], axis=2).astype(np.int8) - 8  # (n_chunks, nb, 32, R)
    return _unchunked(q.astype(np.float32) * W.d[m][:, :, None, :], W.rows)


def _nf4_dequantize(W: NF4Matrix, m: int) -> np.ndarray:
    """Matrix m as float32 (rows, cols): code * absmax, as bnb's dequantize computes it."""
    qs = W.qs[m]  # (n_chunks, nb, 32, R)
    codes = np.stack([qs >> 4, qs & 15], axis=3).reshape(*qs.shape[:2], 64, qs.shape[3])
    return _unchunked(NF4_CODES[codes] * W.absmax[m][:, :, None, :], W.rows)


# ---------------------------------------------------------------------------------------
# Kernels: a chunk's R dot products (decode), rows dequantized (prefill)
# ---------------------------------------------------------------------------------------


@njit(**JIT)
def _chunk_rows(W):
    return W.qs.shape[4]


@njit(**JIT)
def _q8_chunk_dot(acc, W, m, c, x, tmp):
    """acc (n,) = the first n = acc.shape[0] rows of chunk c of matrix m dotted with x
    (cols,); tmp (n,) scratch. Every inner loop runs over the rows: contiguous, vectorised
    across rows. Two values of a block per pass over tmp: 21 GB/s against 16 for one."""
    qs, d = W.qs[m, c], W.d[m, c]  # (nb, 32, R), (nb, R)
    n = acc.shape[0]
    acc[:] = 0.0
    for b in range(qs.shape[0]):
        tmp[:] = 0.0
        for j in range(0, 32, 2):
            x0, x1 = x[b * 32 + j], x[b * 32 + j + 1]
            q0, q1 = qs[b, j], qs[b, j + 1]  # (R,) each
            for r in range(n):
                tmp[r] += np.float32(q0[r]) * x0 + np.float32(q1[r]) * x1
        db = d[b]  # (R,)
        for r in range(n):
            acc[r] += db[r] * tmp[r]


@njit(**JIT)
def _lut4_chunk_dot(acc, qs, scale, x, tmp, lut, hi0, lo0, step):
    """The chunk dot of both 4-bit formats: acc (n,) = the first n rows of a chunk . x;
    qs (nb, K/2, R) bytes of two nibbles, scale (nb, R), tmp (n,) scratch. Byte j of block
    b holds the values at x[b K + hi0 + step j] (high nibble) and x[b K + lo0 + step j]
    (low), each looked up in the 16-entry lut, 16 rows at a time (simd.py)."""
    K = 2 * qs.shape[1]  # values per block
    n = acc.shape[0]
    n16 = n - n % 16
    acc[:] = 0.0
    for b in range(qs.shape[0]):
        tmp[:] = 0.0
        for j in range(qs.shape[1]):
            x_hi, x_lo = x[b * K + hi0 + step * j], x[b * K + lo0 + step * j]
            pj = qs[b, j]  # (R,)
            for r0 in range(0, n16, 16):
                lut16_fma(tmp, pj, r0, x_hi, x_lo, lut)
            for r in range(n16, n):
                p = pj[r]
                tmp[r] += lut[p >> 4] * x_hi + lut[p & 15] * x_lo
        sb = scale[b]  # (R,)
        for r in range(n):
            acc[r] += sb[r] * tmp[r]


@njit(**JIT)
def _lut4_load_rows(qs, scale, lut, i0, n, buf, hi0, lo0, step):
    """Rows i0..i0+n-1 of a 4-bit matrix (qs (n_chunks, nb, K/2, R), scale (n_chunks, nb,
    R), the nibbles placed as in _lut4_chunk_dot) dequantized into buf (n, cols)."""
    R, K = qs.shape[3], 2 * qs.shape[2]
    for k in range(n):
        c, r = (i0 + k) // R, (i0 + k) % R
        for b in range(qs.shape[1]):
            s = scale[c, b, r]
            for j in range(qs.shape[2]):
                p = qs[c, b, j, r]
                buf[k, b * K + hi0 + step * j] = lut[p >> 4] * s
                buf[k, b * K + lo0 + step * j] = lut[p & 15] * s
    return buf


# Q4_0: byte j of a block of 32 holds values j + 16 (high nibble) and j (low), each nibble - 8
@njit(**JIT)
def _q4_chunk_dot(acc, W, m, c, x, tmp):
    _lut4_chunk_dot(acc, W.qs[m, c], W.d[m, c], x, tmp, _Q4_LUT, 16, 0, 1)


@njit(**JIT)
def _q4_load_rows(W, m, i0, n, buf):
    return _lut4_load_rows(W.qs[m], W.d[m], _Q4_LUT, i0, n, buf, 16, 0, 1)


# NF4: byte i of a block of 64 holds values 2i (high nibble) and 2i + 1 (low), as NF4 codes
@njit(**JIT)
def _nf4_chunk_dot(acc, W, m, c, x, tmp):
    _lut4_chunk_dot(acc, W.qs[m, c], W.absmax[m, c], x, tmp, _NF4_LUT, 0, 1, 2)


@njit(**JIT)
def _nf4_load_rows(W, m, i0, n, buf):
    return _lut4_load_rows(W.qs[m], W.absmax[m], _NF4_LUT, i0, n, buf, 0, 1, 2)


@njit(**JIT)
def _q8_load_rows(W, m, i0, n, buf):
    """Rows i0..i0+n-1 of matrix m dequantized into buf (n, cols)."""
    R = W.qs.shape[4]
    for k in range(n):
        c, r = (i0 + k) // R, (i0 + k) % R
        for b in range(W.qs.shape[2]):
            s = W.d[m, c, b, r]
            for j in range(32):
                buf[k, b * 32 + j] = np.float32(W.qs[m, c, b, j, r]) * s
    return buf


register_chunked_format(Q8Matrix, _chunk_rows, _q8_chunk_dot, _q8_load_rows, _q8_dequantize)
register_chunked_format(Q4Matrix, _chunk_rows, _q4_chunk_dot, _q4_load_rows, _q4_dequantize)
register_chunked_format(NF4Matrix, _chunk_rows, _nf4_chunk_dot, _nf4_load_rows, _nf4_dequantize)
