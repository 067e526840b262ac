"""Tests for minillama/kernels_quant.py: GGUF's Q8_0 and Q4_0 in the kernels' chunked layout.

- The layout holds gguf's blocks: dequantizing a Q8Matrix / Q4Matrix gives exactly what
  `minillama.quant.dequantize` gives for the same matrix (and quant.py is byte-identical
  to gguf, tests/test_quant.py).
- Every matrix kernel on these formats against its NumPy twin (kernels_ref, which
  multiplies by the dequantized matrix), on awkward shapes: rows that are not a multiple
  of the chunk (1, 70, 129: one partial chunk, one row past a chunk), row lengths of 1, 3
  and 9 blocks, formats mixed within one kernel call.

Tolerance: as in tests/test_kernels.py, RTOL = ATOL = 1e-5. Both sides compute in float32
with the same values, in different orders (the chunk kernels sum a block's 32 products,
then the blocks; NumPy sums as BLAS does), which moves an O(1) result by a few 1e-7 for
these lengths; a wrong index or block moves it by O(0.1).
"""

import numpy as np
import pytest
from test_kernels import both, close, rand

from minillama import kernels as K
from minillama import quant
from minillama.kernels_quant import CHUNK_ROWS, Q4Matrix, Q8Matrix

FORMATS = {"q8_0": Q8Matrix, "q4_0": Q4Matrix}
ROWS = [1, 70, 129]
COLS = [32, 96, 288]


def quantized(fmt, rng, n, rows, cols):
    """n stacked (rows, cols) matrices scaled by 1/sqrt(cols) (O(1) outputs), quantized."""
    return FORMATS[fmt].from_float(rand(rng, n, rows, cols) / np.float32(np.sqrt(cols)))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rows,cols", [(1, 32), (70, 96), (129, 288), (300, 64)])
def test_dequantize_is_gguf_dequantize_exactly(fmt, rows, cols):
    rng = np.random.default_rng(rows)
    w = rand(rng, 2, rows, cols)
    w[1, 0, :32] = 0  # an all-zero block: d = 0
    W = FORMATS[fmt].from_float(w)
    for m in range(2):
        np.testing.assert_array_equal(K.dequantize(W, m), quant.dequantize(quant.quantize(w[m], fmt)))
    n_chunks = -(-rows // CHUNK_ROWS)
    assert W.shape == (2, rows, cols) and W.d.shape == (2, n_chunks, cols // 32, CHUNK_ROWS)
    assert not W.d[:, -1, :, rows - (n_chunks - 1) * CHUNK_ROWS:].any()  # padding: scale 0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("cols", COLS)
def test_matvec_kernels_match_numpy(fmt, rows, cols):
    rng = np.random.default_rng(rows * 1000 + cols)
    W1, W3 = quantized(fmt, rng, 2, rows, cols), quantized(fmt, rng, 2, rows, cols)
    x, out0 = rand(rng, cols), rand(rng, rows)
    for name in ("matvec", "matvec_add"):
        a, b = both(name, lambda: (out0.copy(), W1, 1, x))
        close(a[0], b[0])
    a, b = both("swiglu_matvec", lambda: (out0.copy(), W1, W3, 1, x))
    close(a[0], b[0])
    Wk, Wv = quantized(fmt, rng, 2, rows + 2, cols), quantized(fmt, rng, 2, 1, cols)
    a, b = both("qkv_matvec", lambda: (np.zeros(rows, np.float32), np.zeros(rows + 2, np.float32),
                                       np.zeros(1, np.float32), W1, Wk, Wv, 1, x))
    for u, v in zip(a[:3], b[:3]):
        close(u, v)


@pytest.mark.parametrize("fmt", FORMATS)
def test_padding_rows_are_never_written(fmt):
    rng = np.random.default_rng(0)
    rows, cols = 70, 64  # one chunk, 58 rows of it padding
    W, x = quantized(fmt, rng, 1, rows, cols), rand(rng, cols)
    buf = np.full(CHUNK_ROWS, np.nan, np.float32)
    K.matvec(buf[:rows], W, 0, x)
    assert np.isfinite(buf[:rows]).all() and np.isnan(buf[rows:]).all()


def test_mixed_formats_in_one_kernel_call():
    """qkv with three formats; SwiGLU whose gate and up projections tile differently."""
    rng = np.random.default_rng(1)
    rows, cols = 129, 96
    Wq, Wv = quantized("q8_0", rng, 2, rows, cols), quantized("q4_0", rng, 2, 3, cols)
    Wk = K.F32Matrix(rand(rng, 2, 5, cols) / np.float32(np.sqrt(cols)))
    x = rand(rng, cols)
    a, b = both("qkv_matvec", lambda: (np.zeros(rows, np.float32), np.zeros(5, np.float32),
                                       np.zeros(3, np.float32), Wq, Wk, Wv, 0, x))
    for u, v in zip(a[:3], b[:3]):
        close(u, v)
    W3 = K.F32Matrix(rand(rng, 2, rows, cols) / np.float32(np.sqrt(cols)))
    for pair in [(Wq, W3), (W3, Wq), (Wq, quantized("q4_0", rng, 2, rows, cols))]:
        a, b = both("swiglu_matvec", lambda p=pair: (np.zeros(rows, np.float32), *p, 1, x))
        close(a[0], b[0])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("T", [1, 6])
@pytest.mark.parametrize("rows,cols", [(1, 32), (70, 96), (129, 288)])
def test_matmul_kernels_match_numpy(fmt, T, rows, cols):
    rng = np.random.default_rng(T * 7 + rows)
    W1, W3 = quantized(fmt, rng, 2, rows, cols), quantized(fmt, rng, 2, rows, cols)
    X, out0 = rand(rng, T, cols), rand(rng, T, rows)
    for name in ("matmul", "matmul_add"):
        a, b = both(name, lambda: (out0.copy(), W1, 1, X))
        close(a[0], b[0])
    a, b = both("swiglu_matmul", lambda: (out0.copy(), W1, W3, 0, X))
    close(a[0], b[0])


# --- building ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_from_float_refuses_what_gguf_cannot_store(fmt):
    w = np.ones((2, 4, 48), np.float32)
    with pytest.raises(quant.BlockSizeError, match="wq"):
        FORMATS[fmt].from_float(w, "wq")
    w = np.ones((2, 4, 64), np.float32)
    w[1, 2, 5] = np.inf
    with pytest.raises(ValueError, match=r"layers\.1\.attention\.wq\.weight has NaN/inf at index \(2, 5\)"):
        FORMATS[fmt].from_float(w, [f"layers.{m}.attention.wq.weight" for m in range(2)])
    with pytest.raises(ValueError, match="n_mats, rows, cols"):
        FORMATS[fmt].from_float(w[0])


def test_storage_is_the_gguf_size_with_float32_scales():
    w = np.ones((3, 2 * CHUNK_ROWS, 96), np.float32)  # no padding
    for fmt, per_block in [("q8_0", 32 + 4), ("q4_0", 16 + 4)]:
        W = FORMATS[fmt].from_float(w)
        assert W.qs.nbytes + W.d.nbytes == w.size // 32 * per_block
