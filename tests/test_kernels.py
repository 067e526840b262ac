"""Tests for minillama/kernels.py: every Numba kernel against its NumPy twin
(minillama/kernels_ref.py) on awkward shapes: 1 row, odd sizes, dims that are not a
multiple of the vector width, batches that are not a multiple of the 4x4 tile.

Tolerance. Both sides compute in float32. With fastmath's reassociation the kernels sum
in another order than NumPy, which moves a sum of n terms by about n * 6e-8 relative to
the sum of the terms' magnitudes: for n <= 300 and O(1) inputs, a few 1e-6 at most.
RTOL = ATOL = 1e-5 bounds that with room to spare, and is still far below any real bug
(a wrong index or a missing term moves results by O(0.1)).
"""

import contextlib
from typing import NamedTuple

import numpy as np
import pytest
from numba import njit

from minillama import kernels as K
from minillama import kernels_ref as R

RTOL = ATOL = 1e-5
ROWS = [1, 7, 33]
COLS = [1, 5, 13, 291]


def rand(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def weights(rng, n, rows, cols):
    """n stacked (rows, cols) matrices scaled by 1/sqrt(cols): O(1) outputs, as in a model."""
    return K.F32Matrix(rand(rng, n, rows, cols) / np.float32(np.sqrt(cols)))


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def both(name, make_args):
    """Run kernel `name` and its twin on fresh copies of the same arguments; return both."""
    a, b = make_args(), make_args()
    getattr(K, name)(*a)
    getattr(R, name)(*b)
    return a, b


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("cols", COLS)
def test_matvec_kernels_match_numpy(rows, cols):
    rng = np.random.default_rng(rows * 1000 + cols)
    W1, W2, W3 = (weights(rng, 2, rows, cols) for _ in range(3))  # m = 1 of 2
    x, out0 = rand(rng, cols), rand(rng, rows)
    for name in ("matvec", "matvec_add"):
        a, b = both(name, lambda: (out0.copy(), W1, 1, x))
        close(a[0], b[0])
    a, b = both("swiglu_matvec", lambda: (out0.copy(), W1, W3, 1, x))
    close(a[0], b[0])
    # q, k and v of different lengths: rows, rows + 2, 1
    Wk, Wv = weights(rng, 2, rows + 2, cols), weights(rng, 2, 1, cols)
    a, b = both("qkv_matvec", lambda: (np.zeros(rows, np.float32), np.zeros(rows + 2, np.float32),
                                       np.zeros(1, np.float32), W2, Wk, Wv, 1, x))
    for u, v in zip(a[:3], b[:3]):
        close(u, v)


@pytest.mark.parametrize("T", [1, 3, 4, 9])
@pytest.mark.parametrize("rows,cols", [(1, 5), (7, 13), (33, 291), (8, 64)])
def test_matmul_kernels_match_numpy(T, rows, cols):
    rng = np.random.default_rng(T * 7 + rows)
    W1, W3 = weights(rng, 2, rows, cols), weights(rng, 2, rows, cols)
    X, out0 = rand(rng, T, cols), rand(rng, T, rows)
    for name in ("matmul", "matmul_add"):
        a, b = both(name, lambda: (out0.copy(), W1, 1, X))
        close(a[0], b[0])
    a, b = both("swiglu_matmul", lambda: (out0.copy(), W1, W3, 0, X))
    close(a[0], b[0])


@pytest.mark.parametrize("dim", [1, 7, 288, 291])
def test_rmsnorm_add_softmax_match_numpy(dim):
    rng = np.random.default_rng(dim)
    x, weight = 3 * rand(rng, dim), rand(rng, dim)
    a, b = both("rmsnorm", lambda: (np.zeros(dim, np.float32), x, weight, 1e-5))
    close(a[0], b[0])
    a, b = both("add", lambda: (x.copy(), weight))
    close(a[0], b[0])
    a, b = both("softmax", lambda: (10 * x,))  # large logits: the max must be subtracted
    close(a[0], b[0])
    assert abs(float(a[0].sum()) - 1) < 1e-5


def test_softmax_survives_huge_scores():
    x = np.array([1000.0, 999.0, -1000.0], np.float32)
    K.softmax(x)
    assert np.isfinite(x).all() and x[0] > x[1] > x[2] >= 0


@pytest.mark.parametrize("heads,head_dim", [(1, 2), (3, 6), (6, 48)])
def test_rope_matches_numpy_and_complex_multiplication(heads, head_dim):
    rng = np.random.default_rng(heads)
    x = rand(rng, heads, head_dim)
    angle = rng.uniform(-np.pi, np.pi, head_dim // 2)
    cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    a, b = both("rope", lambda: (x.copy(), cos, sin))
    close(a[0], b[0])
    z = (x[:, 0::2] + 1j * x[:, 1::2]) * np.exp(1j * angle)  # Meta's complex form
    close(a[0][:, 0::2], z.real)
    close(a[0][:, 1::2], z.imag)


@pytest.mark.parametrize("n_heads,n_kv_heads", [(1, 1), (6, 6), (6, 2), (4, 1)])
@pytest.mark.parametrize("n_keys", [1, 5, 17])
@pytest.mark.parametrize("n_spans", [1, 2, 3])
def test_attention_matches_numpy(n_heads, n_kv_heads, n_keys, n_spans):
    # n_spans > n_keys (1 key, 2 or 3 spans) must fall back to one span per key
    rng = np.random.default_rng(n_heads * 100 + n_keys)
    head_dim, max_seq = 6, 20
    q = rand(rng, n_heads, head_dim)
    k_cache, v_cache = rand(rng, max_seq, n_kv_heads, head_dim), rand(rng, max_seq, n_kv_heads, head_dim)

    def args():
        return (np.zeros((n_heads, head_dim), np.float32), q, k_cache, v_cache,
                np.zeros((n_heads, max_seq), np.float32), n_keys,
                np.zeros((n_spans, n_heads, head_dim + 2), np.float32))

    a, b = both("attention", args)
    close(a[0], b[0])
    k_cache[n_keys:] = np.nan  # keys past n_keys must never be read
    out = args()
    K.attention(*out)
    close(out[0], a[0])


@pytest.mark.parametrize("T,start_pos", [(1, 0), (5, 0), (3, 7)])
def test_attention_prefill_is_causal_attention_per_query(T, start_pos):
    rng = np.random.default_rng(T + start_pos)
    n_heads, n_kv_heads, head_dim, max_seq = 6, 2, 4, 12
    q = rand(rng, T, n_heads, head_dim)
    k_cache, v_cache = rand(rng, max_seq, n_kv_heads, head_dim), rand(rng, max_seq, n_kv_heads, head_dim)
    a, b = both("attention_prefill", lambda: (np.zeros((T, n_heads, head_dim), np.float32), q, k_cache,
                                              v_cache, np.zeros((n_heads, max_seq), np.float32), start_pos))
    close(a[0], b[0])


def test_unregistered_weight_format_is_rejected():
    class Mystery(NamedTuple):
        w: np.ndarray

    W = Mystery(np.zeros((1, 2, 3), np.float32))
    with pytest.raises((TypeError, KeyError)):
        K.matvec(np.zeros(2, np.float32), W, 0, np.zeros(3, np.float32))


def test_dequantize_f32_is_the_stored_matrix():
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(K.dequantize(K.F32Matrix(w), 1), w[1])


# --- the checked wrappers ------------------------------------------------------------------


def test_wrappers_allocate_and_match_numpy():
    rng = np.random.default_rng(3)
    w, x, X = rand(rng, 7, 13) / np.float32(4), rand(rng, 13), rand(rng, 5, 13)
    close(K.linear(x, w), w @ x)
    close(K.linear(X, w), X @ w.T)
    weight = rand(rng, 13)
    close(K.rms_norm(x, weight), x / np.sqrt(np.mean(x * x) + 1e-5) * weight)
    q, cache = rand(rng, 4, 6), rand(rng, 9, 2, 6)
    expected = np.zeros_like(q)
    R.attention(expected, q, cache, cache, None, 5)
    close(K.attend(q, cache, cache, 5), expected)


def test_wrappers_reject_wrong_dtype_layout_and_shapes():
    w = np.ones((7, 13), np.float32)
    with pytest.raises(TypeError, match="float32"):
        K.linear(np.ones(13), w)  # float64
    with pytest.raises(TypeError, match="C-contiguous"):
        K.linear(np.ones(26, np.float32)[::2], w)  # strided
    with pytest.raises(ValueError, match="cols"):
        K.linear(np.ones(12, np.float32), w)
    with pytest.raises(ValueError, match="n_keys"):
        K.attend(np.ones((4, 6), np.float32), np.ones((9, 2, 6), np.float32),
                 np.ones((9, 2, 6), np.float32), 10)


# --- a second weight format plugs in without touching the kernels --------------------------
# Numba's cache index pickles every compiled signature, so a format class defined here
# would make the kernels' (and the engine's) cache unloadable in a process that cannot
# import this test module. While a test compiles for it, nothing is written to the cache.
# (Real formats live in an importable library module; see minillama/kernels.py.)


@contextlib.contextmanager
def no_numba_cache():
    """Compile without saving to Numba's cache (swaps each dispatcher's private _cache)."""
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    from minillama import engine

    dispatchers = [d for mod in (K, engine) for d in vars(mod).values()
                   if isinstance(d, CPUDispatcher)]
    saved = [d._cache for d in dispatchers]
    for d in dispatchers:
        d._cache = NullCache()
    try:
        yield
    finally:
        for d, cache in zip(dispatchers, saved):
            d._cache = cache


class RowInt8(NamedTuple):
    """A toy quantized format: int8 values with one float32 scale per row."""

    qs: np.ndarray  # (n_mats, rows, cols) int8
    scale: np.ndarray  # (n_mats, rows) float32


@njit(fastmath=K.FASTMATH)
def _row_int8_dot(W, m, i, x):
    acc = np.float32(0.0)
    for j in range(x.shape[0]):
        acc += np.float32(W.qs[m, i, j]) * x[j]
    return acc * W.scale[m, i]


@njit(fastmath=K.FASTMATH)
def _row_int8_load_rows(W, m, i0, n, buf):
    for r in range(n):
        for j in range(buf.shape[1]):
            buf[r, j] = np.float32(W.qs[m, i0 + r, j]) * W.scale[m, i0 + r]
    return buf


K.register_format(RowInt8, _row_int8_dot, _row_int8_load_rows,
                  lambda W, m: W.qs[m].astype(np.float32) * W.scale[m][:, None])


def quantize_rows(w: np.ndarray) -> RowInt8:
    scale = np.abs(w).max(axis=-1) / 127  # (n_mats, rows)
    scale[scale == 0] = 1
    qs = np.round(w / scale[..., None]).astype(np.int8)
    return RowInt8(qs, scale.astype(np.float32))


@pytest.mark.parametrize("rows,cols,T", [(1, 5, 1), (7, 13, 6), (33, 64, 9)])
def test_a_registered_format_runs_through_every_matrix_kernel(rows, cols, T):
    rng = np.random.default_rng(rows)
    W1, W3 = quantize_rows(rand(rng, 2, rows, cols)), quantize_rows(rand(rng, 2, rows, cols))
    x, X = rand(rng, cols), rand(rng, T, cols)
    with no_numba_cache():
        check_format_kernels(W1, W3, x, X, rows, T)


def check_format_kernels(W1, W3, x, X, rows, T):
    a, b = both("matvec_add", lambda: (np.ones(rows, np.float32), W1, 1, x))
    close(a[0], b[0])
    a, b = both("qkv_matvec", lambda: (np.zeros(rows, np.float32), np.zeros(rows, np.float32),
                                       np.zeros(rows, np.float32), W1, W3, W1, 1, x))
    for u, v in zip(a[:3], b[:3]):
        close(u, v)
    a, b = both("swiglu_matmul", lambda: (np.zeros((T, rows), np.float32), W1, W3, 0, X))
    close(a[0], b[0])
