"""Tests for minillama/kernels_quant.py: Q8_0, Q4_0 and NF4 in the kernels' chunked layout.

- The layout holds the references' blocks: dequantizing a Q8Matrix / Q4Matrix / NF4Matrix
  gives exactly what `minillama.quant.dequantize` gives for the same matrix (and quant.py
  is byte-identical to gguf and bitsandbytes, tests/test_quant.py).
- Every matrix kernel on these formats against its NumPy twin (kernels_ref, which
  multiplies by the dequantized matrix), on awkward shapes: rows that are not a multiple
  of the chunk (1, 70, 129: one partial chunk, one row past a chunk), row lengths of 1, 3
  and 9 blocks, formats mixed within one kernel call.
- NF4's vector lookup (minillama/simd.py) in every variant this CPU runs (AVX-512, AVX2,
  the plain loop) against NumPy's table lookup.

Tolerance: as in tests/test_kernels.py, RTOL = ATOL = 1e-5. Both sides compute in float32
with the same values, in different orders (the chunk kernels sum a block's 32 products,
then the blocks; NumPy sums as BLAS does), which moves an O(1) result by a few 1e-7 for
these lengths; a wrong index or block moves it by O(0.1).
"""

import numpy as np
import pytest
from numba import njit
from test_kernels import both, close, rand

from minillama import kernels as K
from minillama import quant, simd
from minillama.kernels_quant import CHUNK_ROWS, NF4Matrix, Q4Matrix, Q8Matrix

FORMATS = {"q8_0": Q8Matrix, "q4_0": Q4Matrix, "nf4": NF4Matrix}
BLOCK = {"q8_0": 32, "q4_0": 32, "nf4": 64}
ROWS = [1, 70, 129]
BLOCKS = [1, 3, 9]  # row lengths, in blocks of the format


def quantized(fmt, rng, n, rows, cols):
    """n stacked (rows, cols) matrices scaled by 1/sqrt(cols) (O(1) outputs), quantized."""
    return FORMATS[fmt].from_float(rand(rng, n, rows, cols) / np.float32(np.sqrt(cols)))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rows,blocks", [(1, 1), (70, 3), (129, 9), (300, 2)])
def test_dequantize_is_the_reference_dequantize_exactly(fmt, rows, blocks):
    rng = np.random.default_rng(rows)
    cols = blocks * BLOCK[fmt]
    w = rand(rng, 2, rows, cols)
    w[1, 0, :BLOCK[fmt]] = 0  # an all-zero block: d = 0
    W = FORMATS[fmt].from_float(w)
    for m in range(2):
        np.testing.assert_array_equal(K.dequantize(W, m), quant.dequantize(quant.quantize(w[m], fmt)))
    n_chunks = -(-rows // CHUNK_ROWS)
    scales = W[1]  # d, or NF4's absmax
    assert W.shape == (2, rows, cols) and scales.shape == (2, n_chunks, blocks, CHUNK_ROWS)
    assert not scales[:, -1, :, rows - (n_chunks - 1) * CHUNK_ROWS:].any()  # padding: scale 0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("blocks", BLOCKS)
def test_matvec_kernels_match_numpy(fmt, rows, blocks):
    cols = blocks * BLOCK[fmt]
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
    rows, cols = 70, 64  # one chunk, 58 rows of it padding (and 70 = 4 x 16 + 6 rows for NF4)
    W, x = quantized(fmt, rng, 1, rows, cols), rand(rng, cols)
    buf = np.full(CHUNK_ROWS, np.nan, np.float32)
    K.matvec(buf[:rows], W, 0, x)
    assert np.isfinite(buf[:rows]).all() and np.isnan(buf[rows:]).all()


def test_mixed_formats_in_one_kernel_call():
    """qkv with three formats; SwiGLU whose gate and up projections tile differently."""
    rng = np.random.default_rng(1)
    rows, cols = 129, 192
    Wq, Wv = quantized("q8_0", rng, 2, rows, cols), quantized("nf4", rng, 2, 3, cols)
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
@pytest.mark.parametrize("rows,blocks", [(1, 1), (70, 3), (129, 9)])
def test_matmul_kernels_match_numpy(fmt, T, rows, blocks):
    cols = blocks * BLOCK[fmt]
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
    with pytest.raises(quant.BlockSizeError, match=f"wq.*multiple of {BLOCK[fmt]}"):
        FORMATS[fmt].from_float(w, "wq")
    if fmt == "nf4":  # a whole number of 32-blocks is not one of 64-blocks
        with pytest.raises(quant.BlockSizeError, match="row length 96"):
            FORMATS[fmt].from_float(np.ones((1, 4, 96), np.float32), "wq")
    w = np.ones((2, 4, 64), np.float32)
    w[1, 2, 5] = np.inf
    with pytest.raises(ValueError, match=r"layers\.1\.attention\.wq\.weight has NaN/inf at index \(2, 5\)"):
        FORMATS[fmt].from_float(w, [f"layers.{m}.attention.wq.weight" for m in range(2)])
    with pytest.raises(ValueError, match="n_mats, rows, cols"):
        FORMATS[fmt].from_float(w[0])


def test_storage_is_the_reference_size_with_float32_scales():
    w = np.ones((3, 2 * CHUNK_ROWS, 192), np.float32)  # no padding
    for fmt, per_block in [("q8_0", 32 + 4), ("q4_0", 16 + 4), ("nf4", 32 + 4)]:
        W = FORMATS[fmt].from_float(w)
        assert W.qs.nbytes + W[1].nbytes == w.size // BLOCK[fmt] * per_block


# --- the vector lookup -------------------------------------------------------------------


@pytest.mark.parametrize("variant", simd.supported_variants())
def test_lut16_fma_is_a_table_lookup_in_every_variant(variant):
    """Each variant of simd.lut16_fma against NumPy, on every byte value, at an offset that
    is not a multiple of the vector: tmp[r0:r0 + 16] += lut[p >> 4] x_hi + lut[p & 15] x_lo
    and nothing else written. Tolerance 1e-6: one product rounded, the sum maybe fused."""
    fma = simd.VARIANTS[variant]

    @njit(cache=False)
    def run(tmp, p, lut):
        for r0 in range(3, p.shape[0] - 15, 16):
            fma(tmp, p, r0, np.float32(0.5), np.float32(-2.0), lut)

    lut = quant.NF4_CODES.copy()
    p = (np.arange(256 + 6)[::-1] % 256).astype(np.uint8)  # every byte value, the spans at an offset of 3
    tmp = np.linspace(-1, 1, p.size, dtype=np.float32)
    want = tmp.copy()
    n = (p.size - 3) // 16 * 16
    span = slice(3, 3 + n)
    want[span] += lut[p[span] >> 4] * np.float32(0.5) - lut[p[span] & 15] * np.float32(2.0)
    run(tmp, p, lut)
    np.testing.assert_allclose(tmp, want, rtol=0, atol=1e-6)
    assert tmp[0] == want[0] and tmp[-1] == want[-1]  # outside the spans: untouched


@pytest.mark.parametrize("machine, name, features, isa", [
    ("x86_64", None, "+avx2,+avx512f,+fma", "avx512"),
    ("x86_64", None, "+avx2,-avx512f", "avx2"),
    ("x86_64", None, "+sse4.2,-avx2", None),
    ("x86_64", "generic", None, None),  # a portable build: the plain loop
    ("aarch64", None, "+neon", None),
])
def test_the_lookup_variant_follows_the_target_cpu(monkeypatch, machine, name, features, isa):
    import numba

    monkeypatch.setattr(simd.platform, "machine", lambda: machine)
    monkeypatch.setattr(numba.config, "CPU_NAME", name)
    monkeypatch.setattr(numba.config, "CPU_FEATURES", features)
    assert simd._isa() == isa
