"""Numba kernels for CPU inference, each with a NumPy twin in `minillama/kernels_ref.py`.

    matvec(out, W, m, x)           out = W[m] @ x            prange over tiles of output rows
    matvec_add(out, W, m, x)       out += W[m] @ x           residual add fused in
    qkv_matvec(q, k, v, Wq, Wk, Wv, m, x)                    three matvecs, one parallel loop
    swiglu_matvec(out, W1, W3, m, x)  silu(W1[m] x) * (W3[m] x)
    matmul(out, W, m, X) / matmul_add / swiglu_matmul        the same for a batch X (T, cols)
    rmsnorm(out, x, weight, eps)   rope(x, cos, sin)   softmax(x)   add(out, x)
    attention(out, q, k_cache, v_cache, att, n_keys, parts)  prange over spans of positions, GQA aware
    attention_prefill(out, q, k_cache, v_cache, att, start_pos)  causal, a batch of queries
    linear(x, w)   rms_norm(x, weight, eps)   attend(q, k_cache, v_cache, n_keys)
                                   checked wrappers that allocate the output (lessons, tests)

Kernels take the output first. The decode kernels allocate nothing in float32 (a chunked
format takes a (2, R) scratch per chunk); the prefill matmul takes a small scratch per
block of rows, for formats that dequantize. The flags live in one place: `JIT` for every
kernel and `PJIT` (parallel) for those with a `prange`, which is only ever on the outer
loop (tiles of output rows, heads). `cache=True` on the serial kernels and
the engine's entry points: a second run of the engine compiles nothing. (Numba's cache
checks only the defining file's timestamp: after editing this file, kernels_quant.py or simd.py,
delete the cached `engine.*` entries too, or the engine keeps the old kernels.)

Weight formats. A matrix argument `W` is not an array but a small NamedTuple whose class
names its storage format; `F32Matrix(w)` holds a stack of float32 matrices
`w (n_mats, rows, cols)`, so `W[m]` is layer m's matrix, and `Q8Matrix` / `Q4Matrix` /
`NF4Matrix` (minillama/kernels_quant.py) hold GGUF's Q8_0 / Q4_0 blocks and QLoRA's NF4.
The kernels reach a matrix only through functions that dispatch on the format's class at
compile time. A decode kernel loops over tiles of output rows, `tile_matvec(out, W, m, c, x, mode)`: for a row
format (`register_format`, float32) a tile is one row, `row_dot(W, m, i, x)`; for a
chunked format (`register_chunked_format`, Q8_0, Q4_0, NF4) it is a chunk of R rows,
`chunk_dot`, with vector lanes across the rows (why: kernels_quant.py). Prefill reaches
every format through `load_rows(W, m, i0, n, buf)` (n rows as float32, a view or
dequantized into buf), and the NumPy twins through `dequantize(W, m)`. The kernels and the
engine's step keep their structure; Numba compiles one specialisation per mix of formats.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange
from numba.extending import overload

# How long OpenMP threads spin between parallel loops is set in minillama/__init__.py.

# fastmath without nnan/ninf: reassociation lets LLVM vectorise the float32 reductions
# (results move by ~1e-7 relative), but no flag may assume away an inf or a NaN
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
JIT = dict(cache=True, fastmath=FASTMATH, boundscheck=False, nogil=True)
# Parallel kernels (and the wrappers that call them) are not cached on their own: a cached
# function compiled in a process that loaded its parallel callees from the cache segfaults
# when a later process loads it (numba issues #8578, #10128; reproduced here). They are
# compiled into, and cached with, their callers: the engine's forward_step and prefill.
PJIT = dict(JIT, parallel=True, cache=False)
SJIT = dict(JIT, cache=False)  # serial wrappers around parallel kernels: not cached either

# ---------------------------------------------------------------------------------------
# Weight formats and their dispatch
# ---------------------------------------------------------------------------------------


class F32Matrix(NamedTuple):
    """Plain float32 storage: w (n_mats, rows, cols), C-contiguous."""

    w: np.ndarray


class Format(NamedTuple):
    row_dot: Callable | None  # row format: jitted (W, m, i, x) -> float32, row i of matrix m . x
    chunk_rows: Callable | None  # chunked format: jitted (W) -> R, the rows of one chunk
    chunk_dot: Callable | None  # chunked: jitted (acc, W, m, c, x, tmp), acc (R,) = chunk c . x
    load_rows: Callable  # jitted (W, m, i0, n, buf) -> float32 (n, cols): a view, or buf filled
    dequantize: Callable  # python (W, m) -> float32 (rows, cols): for twins and tests


FORMATS: dict[type, Format] = {}


def register_format(cls: type, row_dot_impl: Callable, load_rows_impl: Callable,
                    dequantize_impl: Callable) -> None:
    """Make NamedTuple class `cls` usable wherever a kernel takes a matrix W: a row format,
    whose decode kernels work one row at a time (row_dot)."""
    FORMATS[cls] = Format(row_dot_impl, None, None, load_rows_impl, dequantize_impl)


def register_chunked_format(cls: type, chunk_rows_impl: Callable, chunk_dot_impl: Callable,
                            load_rows_impl: Callable, dequantize_impl: Callable) -> None:
    """Make NamedTuple class `cls` usable wherever a kernel takes a matrix W: a chunked
    format, whose decode kernels work R rows at a time (chunk_dot; see kernels_quant.py)."""
    FORMATS[cls] = Format(None, chunk_rows_impl, chunk_dot_impl, load_rows_impl, dequantize_impl)


def _format_of(W):
    fmt = FORMATS.get(getattr(W, "instance_class", None))
    if fmt is None:
        raise TypeError(f"no registered weight format for {W}; known: {list(FORMATS)}")
    return fmt


def dequantize(W, m: int) -> np.ndarray:
    """Matrix m of W as float32 (rows, cols), whatever its format."""
    return FORMATS[type(W)].dequantize(W, m)


def load_rows(W, m, i0, n, buf):
    """Rows i0..i0+n-1 of matrix m as float32 (n, cols): a view, or dequantized into buf."""
    return FORMATS[type(W)].load_rows(W, m, i0, n, buf)  # pure Python path (NUMBA_DISABLE_JIT=1)


@overload(load_rows)
def _load_rows_jit(W, m, i0, n, buf):
    impl = _format_of(W).load_rows
    return lambda W, m, i0, n, buf: impl(W, m, i0, n, buf)


# The decode kernels split a matrix into tiles, the unit of work of one prange iteration:
# a single row for a row format (float32's tuned loop: a row's dot product, a thread per
# span of rows), a chunk of R rows for a chunked one (R dot products at once, with vector
# lanes across rows). Each entry point below builds its implementation for a format once;
# the same builder serves the jitted overload and the pure Python path.


def _tile_rows_for(fmt: Format) -> Callable:
    if fmt.chunk_rows is None:
        return lambda W: 1
    chunk_rows = fmt.chunk_rows
    return lambda W: chunk_rows(W)


def _tile_matvec_for(fmt: Format) -> Callable:
    if fmt.chunk_rows is None:
        row_dot = fmt.row_dot

        def row_tile(out, W, m, c, x, mode):
            _put1(out, c, row_dot(W, m, c, x), mode)
        return row_tile
    chunk_rows, chunk_dot = fmt.chunk_rows, fmt.chunk_dot

    def chunk_tile(out, W, m, c, x, mode):
        R = chunk_rows(W)
        n = min(R, out.shape[0] - c * R)  # the last chunk's padding is neither computed nor written
        # acc and tmp: one malloc per R rows. Scratch passed in instead ran at 9 GB/s against
        # 14-19 (measured; LLVM can tell that a fresh allocation aliases no weight).
        scratch = np.empty((2, n), np.float32)
        chunk_dot(scratch[0], W, m, c, x, scratch[1])
        for r in range(n):
            _put1(out, c * R + r, scratch[0, r], mode)
    return chunk_tile


def tile_rows(W):
    """Output rows per tile of W: 1 for a row format, R for a chunked one."""
    return _tile_rows_for(FORMATS[type(W)])(W)


def tile_matvec(out, W, m, c, x, mode):
    """Tile c of W[m] @ x into out (rows,): per row, out = dot, out += dot or
    out = silu(out) * dot (mode _STORE, _ADD, _SWIGLU)."""
    return _tile_matvec_for(FORMATS[type(W)])(out, W, m, c, x, mode)


@overload(tile_rows)
def _tile_rows_jit(W):
    return _tile_rows_for(_format_of(W))


@overload(tile_matvec)
def _tile_matvec_jit(out, W, m, c, x, mode):
    return _tile_matvec_for(_format_of(W))


@njit(**JIT)
def _f32_row_dot(W, m, i, x):
    w = W.w
    acc = np.float32(0.0)
    for j in range(x.shape[0]):
        acc += w[m, i, j] * x[j]  # float32 accumulate: with reassoc LLVM keeps 4 vector sums
    return acc


@njit(**JIT)
def _f32_load_rows(W, m, i0, n, buf):
    return W.w[m, i0 : i0 + n]  # already float32: a view, buf unused


register_format(F32Matrix, _f32_row_dot, _f32_load_rows, lambda W, m: W.w[m])


# ---------------------------------------------------------------------------------------
# Elementwise and normalisation kernels (small: serial)
# ---------------------------------------------------------------------------------------


@njit(**JIT)
def rmsnorm(out, x, weight, eps):
    """out = x / sqrt(mean(x^2) + eps) * weight; all (dim,) float32."""
    ss = np.float32(0.0)
    for j in range(x.shape[0]):
        ss += x[j] * x[j]
    scale = np.float32(1.0) / np.sqrt(ss / np.float32(x.shape[0]) + np.float32(eps))
    for j in range(x.shape[0]):
        out[j] = x[j] * scale * weight[j]


@njit(**JIT)
def rope(x, cos, sin):
    """Rotate each head of x (heads, head_dim) in place, pairs (2i, 2i+1) by angle i: Meta's form."""
    for h in range(x.shape[0]):
        for i in range(cos.shape[0]):
            a, b = x[h, 2 * i], x[h, 2 * i + 1]
            x[h, 2 * i] = a * cos[i] - b * sin[i]
            x[h, 2 * i + 1] = a * sin[i] + b * cos[i]


@njit(**JIT)
def softmax(x):
    """In place over the whole (n,) vector; the max is subtracted so exp never overflows."""
    mx = x[0]
    for j in range(1, x.shape[0]):
        mx = max(mx, x[j])
    total = np.float32(0.0)
    for j in range(x.shape[0]):
        x[j] = np.exp(x[j] - mx)
        total += x[j]
    inv = np.float32(1.0) / total
    for j in range(x.shape[0]):
        x[j] *= inv


@njit(**JIT)
def add(out, x):
    """out += x, the residual connection; any matching shapes."""
    o, v = out.reshape(-1), x.reshape(-1)
    for j in range(o.shape[0]):
        o[j] += v[j]


@njit(**JIT)
def _silu_mul(a, b):
    return a / (np.float32(1.0) + np.exp(-a)) * b


# ---------------------------------------------------------------------------------------
# Matrix-vector kernels (decode: one token), prange over tiles of output rows
# ---------------------------------------------------------------------------------------

_STORE, _ADD, _SWIGLU = 0, 1, 2  # epilogues: out = acc, out += acc, out = silu(out) * acc


@njit(**JIT)
def _put1(out, i, acc, mode):
    if mode == _STORE:
        out[i] = acc
    elif mode == _ADD:
        out[i] += acc
    else:
        out[i] = _silu_mul(out[i], acc)


@njit(**JIT)
def n_tiles(W, rows):
    """How many tiles of W cover `rows` output rows."""
    t = tile_rows(W)
    return (rows + t - 1) // t


@njit(**PJIT)
def _matvec_tiles(out, W, m, x, mode):
    """The one parallel matvec loop: every tile of W[m] @ x into out, with epilogue `mode`
    (a runtime argument, so that one compilation per format serves matvec, matvec_add and
    both halves of swiglu_matvec: each prange costs Numba about a second to compile)."""
    for c in prange(n_tiles(W, out.shape[0])):
        tile_matvec(out, W, m, c, x, mode)


@njit(**SJIT)
def matvec(out, W, m, x):
    """out (rows,) = W[m] (rows, cols) @ x (cols,)."""
    _matvec_tiles(out, W, m, x, np.int64(_STORE))


@njit(**SJIT)
def matvec_add(out, W, m, x):
    """out (rows,) += W[m] @ x: the residual add rides along with the matvec."""
    _matvec_tiles(out, W, m, x, np.int64(_ADD))


@njit(**PJIT)
def qkv_matvec(q, k, v, Wq, Wk, Wv, m, x):
    """q = Wq[m] x, k = Wk[m] x, v = Wv[m] x in one parallel loop (one thread launch, not three)."""
    tq, tk = n_tiles(Wq, q.shape[0]), n_tiles(Wk, k.shape[0])
    for c in prange(tq + tk + n_tiles(Wv, v.shape[0])):
        if c < tq:
            tile_matvec(q, Wq, m, c, x, _STORE)
        elif c < tq + tk:
            tile_matvec(k, Wk, m, c - tq, x, _STORE)
        else:
            tile_matvec(v, Wv, m, c - tq - tk, x, _STORE)


@njit(**SJIT)
def swiglu_matvec(out, W1, W3, m, x):
    """out (hidden,) = silu(W1[m] x) * (W3[m] x): SwiGLU's gate and up projections, the
    product taken as W3's rows are computed (two passes over out, which stays in L1/L2;
    at 2 threads this ran faster than one pass over both matrices)."""
    _matvec_tiles(out, W1, m, x, np.int64(_STORE))
    _matvec_tiles(out, W3, m, x, np.int64(_SWIGLU))


# ---------------------------------------------------------------------------------------
# Matrix-matrix kernels (prefill: a batch of tokens)
# ---------------------------------------------------------------------------------------
# A block of 4 weight rows (dequantized once, if the format needs it) meets 4 tokens at a
# time: 16 accumulators, 8 loads per 16 multiply-adds instead of 32, so the loop is bound
# by arithmetic, not loads, and each weight row is read from memory once per batch.


@njit(**JIT)
def _put(out, t, i, acc, mode):
    if mode == _STORE:
        out[t, i] = acc
    elif mode == _ADD:
        out[t, i] += acc
    else:
        out[t, i] = _silu_mul(out[t, i], acc)


@njit(**JIT)
def _rows_times_batch(out, rows, X, i0, mode):
    """out[t, i0 + r] <- rows[r] . X[t] for every token t and row r < rows.shape[0] (<= 4)."""
    T, cols = X.shape
    nr = rows.shape[0]
    t = np.int64(0)
    if nr == 4:
        while t + 4 <= T:
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = np.float32(0.0)
            a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = np.float32(0.0)
            for j in range(cols):
                w0, w1, w2, w3 = rows[0, j], rows[1, j], rows[2, j], rows[3, j]
                x0, x1, x2, x3 = X[t, j], X[t + 1, j], X[t + 2, j], X[t + 3, j]
                a00 += w0 * x0; a01 += w0 * x1; a02 += w0 * x2; a03 += w0 * x3  # noqa: E702
                a10 += w1 * x0; a11 += w1 * x1; a12 += w1 * x2; a13 += w1 * x3  # noqa: E702
                a20 += w2 * x0; a21 += w2 * x1; a22 += w2 * x2; a23 += w2 * x3  # noqa: E702
                a30 += w3 * x0; a31 += w3 * x1; a32 += w3 * x2; a33 += w3 * x3  # noqa: E702
            _put(out, t, i0, a00, mode); _put(out, t + 1, i0, a01, mode)  # noqa: E702
            _put(out, t + 2, i0, a02, mode); _put(out, t + 3, i0, a03, mode)  # noqa: E702
            _put(out, t, i0 + 1, a10, mode); _put(out, t + 1, i0 + 1, a11, mode)  # noqa: E702
            _put(out, t + 2, i0 + 1, a12, mode); _put(out, t + 3, i0 + 1, a13, mode)  # noqa: E702
            _put(out, t, i0 + 2, a20, mode); _put(out, t + 1, i0 + 2, a21, mode)  # noqa: E702
            _put(out, t + 2, i0 + 2, a22, mode); _put(out, t + 3, i0 + 2, a23, mode)  # noqa: E702
            _put(out, t, i0 + 3, a30, mode); _put(out, t + 1, i0 + 3, a31, mode)  # noqa: E702
            _put(out, t + 2, i0 + 3, a32, mode); _put(out, t + 3, i0 + 3, a33, mode)  # noqa: E702
            t += 4
    for tt in range(t, T):  # leftover tokens, or a block of fewer than 4 rows
        for r in range(nr):
            acc = np.float32(0.0)
            for j in range(cols):
                acc += rows[r, j] * X[tt, j]
            _put(out, tt, i0 + r, acc, mode)


@njit(**PJIT)
def _matmul(out, W, m, X, mode):
    n_rows, cols = out.shape[1], X.shape[1]
    for b in prange((n_rows + 3) // 4):
        i0 = 4 * b
        nr = min(4, n_rows - i0)
        buf = np.empty((nr, cols), np.float32)  # scratch for formats that dequantize
        _rows_times_batch(out, load_rows(W, m, i0, nr, buf), X, i0, mode)


@njit(**SJIT)
def matmul(out, W, m, X):
    """out (T, rows) = X (T, cols) @ W[m].T."""
    _matmul(out, W, m, X, np.int64(_STORE))  # np.int64: one compiled _matmul, not one per mode


@njit(**SJIT)
def matmul_add(out, W, m, X):
    """out (T, rows) += X @ W[m].T: the residual add."""
    _matmul(out, W, m, X, np.int64(_ADD))


@njit(**SJIT)
def swiglu_matmul(out, W1, W3, m, X):
    """out (T, hidden) = silu(X @ W1[m].T) * (X @ W3[m].T)."""
    _matmul(out, W1, m, X, np.int64(_STORE))
    _matmul(out, W3, m, X, np.int64(_SWIGLU))


# ---------------------------------------------------------------------------------------
# Attention over the KV cache, prange over heads
# ---------------------------------------------------------------------------------------


@njit(**JIT)
def _attend(out, q, k_cache, v_cache, kv_head, att, n_keys):
    """One head: out (head_dim,) = softmax(K q / sqrt(head_dim)) V over keys 0..n_keys-1."""
    head_dim = q.shape[0]
    scale = np.float32(1.0 / math.sqrt(head_dim))
    for t in range(n_keys):
        s = np.float32(0.0)
        for j in range(head_dim):
            s += q[j] * k_cache[t, kv_head, j]
        att[t] = s * scale
    softmax(att[:n_keys])
    for j in range(head_dim):
        out[j] = 0.0
    for t in range(n_keys):
        p = att[t]
        for j in range(head_dim):
            out[j] += p * v_cache[t, kv_head, j]


@njit(**JIT)
def _attend_span(part, q, k_cache, v_cache, att, t0, t1):
    """Every head over cached positions t0..t1-1: part (n_heads, head_dim + 2) gets each
    head's output before normalising, its largest score and its sum of exp(score - largest).
    Position by position, so each cached row is read whole, in order."""
    n_heads, head_dim = q.shape
    n_rep = n_heads // k_cache.shape[1]
    scale = np.float32(1.0 / math.sqrt(head_dim))
    for t in range(t0, t1):
        for h in range(n_heads):
            s = np.float32(0.0)
            for j in range(head_dim):
                s += q[h, j] * k_cache[t, h // n_rep, j]
            att[h, t] = s * scale
    for h in range(n_heads):
        mx = att[h, t0]
        for t in range(t0 + 1, t1):
            mx = max(mx, att[h, t])
        total = np.float32(0.0)
        for t in range(t0, t1):
            e = np.exp(att[h, t] - mx)  # <= 1: never overflows
            att[h, t] = e
            total += e
        part[h, head_dim], part[h, head_dim + 1] = mx, total
        part[h, :head_dim] = 0.0
    for t in range(t0, t1):
        for h in range(n_heads):
            p = att[h, t]
            for j in range(head_dim):
                part[h, j] += p * v_cache[t, h // n_rep, j]


@njit(**PJIT)
def attention(out, q, k_cache, v_cache, att, n_keys, parts):
    """out, q (n_heads, head_dim); caches (max_seq_len, n_kv_heads, head_dim); att scratch
    (n_heads, >= n_keys). Query head h reads kv head h // (n_heads // n_kv_heads).

    The positions are split into parts.shape[0] spans (scratch (n_spans, n_heads,
    head_dim + 2), one span per thread), each reading whole cache rows in position order,
    and the spans' softmaxes are merged at the end (as in flash-decoding). By the time
    attention runs, a token has streamed every weight through the caches, so the KV cache
    is cold: one short strided slice per head, as a loop over heads reads it, ran at a
    quarter of the bandwidth (1372 us per token on stories110M at 256 positions, 1 thread,
    against 611 us for whole rows)."""
    n_heads, head_dim = q.shape
    n_spans = min(parts.shape[0], n_keys)
    for b in prange(n_spans):
        _attend_span(parts[b], q, k_cache, v_cache, att, b * n_keys // n_spans,
                     (b + 1) * n_keys // n_spans)
    for h in range(n_heads):
        mx = parts[0, h, head_dim]
        for b in range(1, n_spans):
            mx = max(mx, parts[b, h, head_dim])
        total = np.float32(0.0)
        for j in range(head_dim):
            out[h, j] = 0.0
        for b in range(n_spans):
            w = np.exp(parts[b, h, head_dim] - mx)  # rescale span b to the common max
            total += w * parts[b, h, head_dim + 1]
            for j in range(head_dim):
                out[h, j] += w * parts[b, h, j]
        inv = np.float32(1.0) / total
        for j in range(head_dim):
            out[h, j] *= inv


@njit(**PJIT)
def attention_prefill(out, q, k_cache, v_cache, att, start_pos):
    """Causal attention for T queries at positions start_pos..: out, q (T, n_heads, head_dim);
    query t sees keys 0..start_pos+t of the cache, which already holds this batch's keys."""
    n_rep = q.shape[1] // k_cache.shape[1]
    for h in prange(q.shape[1]):
        for t in range(q.shape[0]):
            _attend(out[t, h], q[t, h], k_cache, v_cache, h // n_rep, att[h], start_pos + t + 1)


# ---------------------------------------------------------------------------------------
# Checked, allocating wrappers (for lessons and tests; the engine calls the kernels above)
# ---------------------------------------------------------------------------------------


def check_f32(**arrays) -> None:
    """Raise TypeError unless each array is float32 and C-contiguous: the layout the kernels
    are compiled for (anything else would compile another, slower specialisation, or fail)."""
    for name, a in arrays.items():
        if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous):
            got = f"{a.dtype}, {a.strides} strides" if isinstance(a, np.ndarray) else type(a).__name__
            raise TypeError(f"{name} must be a C-contiguous float32 array, got {got}; "
                            "np.ascontiguousarray(a, dtype=np.float32) makes one")


def linear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (cols,) or (T, cols) times a float32 matrix w (rows, cols) transposed: (rows,) or (T, rows)."""
    check_f32(x=x, w=w)
    if w.ndim != 2 or x.ndim not in (1, 2) or x.shape[-1] != w.shape[1]:
        raise ValueError(f"need x (cols,) or (T, cols) and w (rows, cols); got {x.shape}, {w.shape}")
    W = F32Matrix(w[None])  # (1, rows, cols): matrix 0
    out = np.empty(x.shape[:-1] + (w.shape[0],), np.float32)
    (matvec if x.ndim == 1 else matmul)(out, W, 0, x)
    return out


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """RMSNorm of x (dim,) with weight (dim,): a new (dim,) float32 array."""
    check_f32(x=x, weight=weight)
    if x.ndim != 1 or weight.shape != x.shape:
        raise ValueError(f"need x and weight of the same shape (dim,); got {x.shape}, {weight.shape}")
    out = np.empty_like(x)
    rmsnorm(out, x, weight, eps)
    return out


def attend(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, n_keys: int) -> np.ndarray:
    """One query's attention over cached keys 0..n_keys-1: q (n_heads, head_dim), caches
    (max_seq_len, n_kv_heads, head_dim) -> (n_heads, head_dim) float32."""
    check_f32(q=q, k_cache=k_cache, v_cache=v_cache)
    n_heads, head_dim = q.shape
    if k_cache.shape != v_cache.shape or k_cache.shape[2] != head_dim or \
            n_heads % k_cache.shape[1] or not 0 < n_keys <= k_cache.shape[0]:
        raise ValueError(f"q {q.shape}, caches {k_cache.shape}/{v_cache.shape} and n_keys "
                         f"{n_keys} do not fit together")
    out = np.empty_like(q)
    parts = np.empty((numba.get_num_threads(), n_heads, head_dim + 2), np.float32)
    attention(out, q, k_cache, v_cache, np.empty((n_heads, k_cache.shape[0]), np.float32), n_keys,
              parts)
    return out
