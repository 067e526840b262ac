"""Tests for minillama/quant.py: each quantizer against its reference, on awkward blocks.

The matrices (`edge_matrix`) hold, row by row: zero and -0.0 blocks, exact ties (values
halfway between two steps for Q8_0, Q4_0 and NF4), blocks whose extreme is negative, positive,
or both with equal magnitude, values equal to +-amax, float32 subnormals (~1e-40) alone and
mixed with normal values, tiny blocks (1e-37, 1e-30) whose fp16 scale is 0, rows of large
dynamic range, large values and random normal rows; and (`near_tie_matrix`) values one or two
ulp beside the ties, where only the reference's order of float32 operations gives its bytes.
Random shapes (7, 64), (3, 256) and, for Q8_0 and Q4_0, (5, 96).

Tolerances, and why:
- Q8_0 and Q4_0: bytes identical to gguf.quants.quantize (which matches llama.cpp bit for bit),
  and dequantized values identical to gguf.quants.dequantize: fp16(d) times an integer of at
  most 8 bits is exact in float32 on both sides. (A block of subnormals makes gguf cast a NaN
  to an integer, which gives 0 on x86, as we write; elsewhere that cast is undefined.)
- NF4: packed bytes and absmax identical to bitsandbytes.functional.quantize_4bit on the CPU,
  and dequantized values identical to dequantize_4bit: bnb computes code * absmax in float32,
  one rounding, as we do.
- NF4 double quantization: 8-bit codes identical to bnb's (at most 1% may be neighbours, in
  case torch's float32 mean lands an ulp elsewhere on another CPU); where they are equal, the
  dequantized absmax within 1e-6 * max(absmax). Our 256-value dynamic code is built from a
  float64 linspace, bnb's from a float32 torch.linspace: they agree within 2 ulp (2.4e-7
  relative), times a scale <= max(absmax); the offset (the mean of the absmaxes) is summed
  in float64 by us and in float32 by torch: an ulp or two, 2.4e-7 * max(absmax) at most.
- Error bounds per element (d the float32 scale, d16 its fp16 rounding):
  Q8_0   |x - x_hat| <= d (0.5 + 2e-5) + 127 |d - d16|: rounding to the nearest step, x * (1/d)
         off by 2 float32 roundings (127 * 2 * 6e-8 < 2e-5 steps), and the fp16 scale moves
         a value q * d by |q| |d - d16| <= 127 |d - d16|.
  Q4_0   |x - x_hat| <= |d| (0.5 + 1e-5) + 8 |d - d16|, except at the clamp (x / d > 7.5,
         the side opposite the extreme, stored as 7): |d| (1 + 1e-5) + 8 |d - d16|.
  NF4    |x - x_hat| <= absmax (g / 2 + 1e-6), g the largest gap between neighbouring codes
         (1 - 0.7229568), 1e-6 for the float32 roundings of x / absmax and code * absmax; in
         a block of subnormals (absmax < 1e-38, where bnb floors the scale) 2 * absmax.
  The reported max_abs_error equals the measured max |x - x_hat| (both float64), the rmse to
  1e-12 relative (summed in another order).
"""

import statistics
import subprocess
import sys

import numpy as np
import pytest

from minillama import quant as Q

SHAPES = [(7, 64), (3, 256)]  # rows a multiple of 64: every format
GGUF_SHAPES = SHAPES + [(5, 96)]  # 96 = 3 * 32: Q8_0 and Q4_0 only


def random_matrix(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def tile(block: np.ndarray, cols: int) -> np.ndarray:
    return np.resize(np.asarray(block, dtype=np.float64), cols)


def edge_matrix(cols: int) -> np.ndarray:
    """(16, cols) float32 of awkward blocks (cols a multiple of 64): see the module docstring."""
    rng = np.random.default_rng(7)
    k = np.arange(cols)
    normal = rng.standard_normal((8, cols))
    sign = np.where((k // 32) % 2, -1.0, 1.0)  # alternates block by block
    rows = [
        np.where(k < cols // 2, 0.0, -0.0),
        # Q8_0: amax 127 * 2^-4 makes d = 2^-4 and 1/d = 16 exact, so (j + 0.5) * d is a tie
        np.where(k % 32 == 0, 127.0 * sign, (k * 7) % 254 - 126.5) / 16,
        # Q4_0: an extreme of -8 (d = 1) or +8 (d = -1): half-integers land on .0 after + 8.5
        np.where(k % 32 == 0, -8.0 * sign, (k * 5) % 16 - 7.5),
        # NF4: absmax 2 (1/2 exact) and values on the midpoints between codes, or on codes
        np.where(k % 64 == 0, 2.0, 2 * tile(np.r_[Q.NF4_BOUNDS, Q.NF4_CODES], cols)),
        np.where(k % 32 == 5, -4.0, normal[0]),  # the extreme is negative
        np.where(k % 32 == 5, 4.0, normal[1]),  # positive
        # +3 and -3 in each block, which comes first alternating: Q4_0 takes the first
        np.where(k % 32 == 2, 3.0 * sign, np.where(k % 32 == 9, -3.0 * sign, normal[2])),
        np.where(k % 4 == 0, 2.5 * sign, -2.5 * sign),  # only +-amax
        1e-40 * rng.integers(-5, 6, cols),  # subnormals only
        np.where(k % 3 == 0, 1e-40 * sign, 0.01 * normal[3]),  # subnormals among normals
        1e-37 * normal[4],  # Q8_0's d is subnormal and 1/d overflows
        1e-30 * normal[5],  # d is 0 in fp16
        np.sign(normal[6]) * 10.0 ** rng.uniform(-8, 4, cols),  # large dynamic range
        1e5 * normal[7],
        rng.standard_normal(cols),
        0.02 * rng.standard_normal(cols),
    ]
    return np.stack(rows).astype(np.float32)


def near_tie_matrix() -> np.ndarray:
    """(8, 256) float32: values on and 1-2 ulp beside the ties of each format, with inexact
    reciprocals, so that only the reference's order of float32 operations gives its bytes."""
    def around(t):  # t and its float32 neighbours, 1 and 2 ulp either side
        t = np.asarray(t, np.float32)
        up, down = np.nextafter(t, np.float32(np.inf)), np.nextafter(t, np.float32(-np.inf))
        return np.stack([t, up, down, np.nextafter(up, np.float32(np.inf)),
                         np.nextafter(down, np.float32(-np.inf))], axis=-1).ravel()

    def rows(extreme, values, block):  # blocks of `block`: the extreme first, then values
        n_blocks = -(-len(values) // (block - 1))
        n_blocks = -(-n_blocks // (256 // block)) * (256 // block)  # whole rows of 256
        values = np.resize(values, (n_blocks, block - 1))
        blocks = np.concatenate([np.full((n_blocks, 1), extreme, np.float32), values], axis=1)
        return blocks.reshape(-1, 256)

    q8 = around((np.arange(-127, 127) + 0.5) / 127)  # amax 1: d = 1/127, 1/d inexact
    q4 = around((np.arange(-8, 8) + 0.5) * 0.875)  # extreme -7: d = 0.875, 1/d inexact
    nf4 = around(3 * Q.NF4_BOUNDS)  # absmax 3: 1/3 inexact
    parts = [rows(1.0, q8[np.abs(q8) <= 1], 32), rows(-7.0, q4[np.abs(q4) <= 7], 32), rows(3.0, nf4, 64)]
    return np.concatenate(parts)


def matrices(shapes):
    yield from (random_matrix(s, i) for i, s in enumerate(shapes))
    yield from (edge_matrix(c) for c in (64, 256))
    yield near_tie_matrix()


def measured(w, w_hat):
    e = w.astype(np.float64) - w_hat
    return np.abs(e).max(), np.sqrt(np.mean(e * e))


def check_reported(q, w, w_hat):
    max_abs, rmse = measured(w, w_hat)
    assert q.max_abs_error == max_abs
    assert q.rmse == pytest.approx(rmse, rel=1e-12, abs=1e-300)


# ---------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------


def test_round_half_away_is_c_roundf():
    below_half = np.nextafter(np.float32(0.5), np.float32(0))  # 0.49999997
    x = np.array([0.5, -0.5, 1.5, 2.5, -2.5, below_half, -below_half, 126.5, -127.5,
                  2**23 + 1, 0.0, -0.0, 3.4e38], dtype=np.float32)
    want = [1, -1, 2, 3, -3, 0, 0, 127, -128, 2**23 + 1, 0, 0, 3.4e38]
    np.testing.assert_array_equal(Q.round_half_away(x), np.array(want, np.float32))
    r = random_matrix((1000,)) * 50
    ref = np.sign(r) * np.floor(np.abs(r.astype(np.float64)) + 0.5)  # exact in float64
    np.testing.assert_array_equal(Q.round_half_away(r), ref)


def test_module_imports_neither_torch_nor_numba():
    code = "import sys, minillama.quant; print(sorted({'torch', 'numba'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("fmt", Q.QUANT_FORMATS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_is_rejected_with_the_tensor_name(fmt, bad):
    w = random_matrix((3, 64))
    w[2, 5] = bad
    with pytest.raises(ValueError, match=r"tensor layers\.0\.wq has NaN/inf at index \(2, 5\)"):
        Q.quantize(w, fmt, name="layers.0.wq")
    with pytest.raises(ValueError, match="tensor emb has NaN/inf"):
        Q.absmax_int8(w, "row", name="emb")


@pytest.mark.parametrize("fmt, cols, block", [("q8_0", 48, 32), ("q4_0", 100, 32), ("nf4", 96, 64)])
def test_wrong_block_size_names_the_accepted_one(fmt, cols, block):
    w = random_matrix((5, cols))
    with pytest.raises(Q.BlockSizeError, match=f"tensor output: {fmt} .* multiple of {block} .*{cols}"):
        Q.quantize(w, fmt, name="output")
    assert issubclass(Q.BlockSizeError, ValueError)  # a loader catches it, keeps float32
    with pytest.raises(Q.BlockSizeError, match="multiple of 3"):
        Q.absmax_int8(random_matrix((2, 4)), 3)


@pytest.mark.parametrize("fmt", Q.QUANT_FORMATS)
def test_stacked_matrices_quantize_row_by_row(fmt):
    w = random_matrix((2, 3, 128))  # (n_layers, rows, cols), as the engine stacks them
    q = Q.quantize(w, fmt)
    assert Q.dequantize(q).shape == w.shape
    np.testing.assert_array_equal(Q.dequantize(q)[1], Q.dequantize(Q.quantize(w[1], fmt)))
    np.testing.assert_array_equal(Q.dequantize(Q.quantize(w[1, 2], fmt)), Q.dequantize(q)[1, 2])


def test_unknown_format_lists_the_accepted_ones():
    with pytest.raises(ValueError, match="unknown quantization format 'q5_k'; accepted: q8_0, q4_0, nf4"):
        Q.quantize(random_matrix((2, 32)), "q5_k")
    with pytest.raises(ValueError, match="accepted: q8_0, q4_0, nf4"):
        Q.bits_per_weight("int3")


def test_bits_per_weight_matches_storage():
    w = random_matrix((64, 1024))  # 1024 NF4 blocks: 4 whole blocks of 256 absmaxes
    assert Q.bits_per_weight("q8_0") == 8.5 and Q.bits_per_weight("q4_0") == 4.5
    assert Q.bits_per_weight("nf4") == 4.5
    assert Q.bits_per_weight("nf4", double_quant=True) == 4 + 8 / 64 + 32 / (64 * 256)
    for fmt in ("q8_0", "q4_0"):
        assert Q.quantize(w, fmt).data.nbytes * 8 / w.size == Q.bits_per_weight(fmt)
    q = Q.nf4_quantize(w)
    assert (q.packed.nbytes + q.absmax.nbytes) * 8 / w.size == 4.5
    dq = Q.nf4_quantize(w, double_quant=True).double
    stored = q.packed.nbytes + dq.codes.nbytes + dq.scales.nbytes  # the offset: 4 bytes per tensor
    assert stored * 8 / w.size == Q.bits_per_weight("nf4", double_quant=True)
    assert Q.bits_per_weight("nf4", double_quant=True) == pytest.approx(4.127, abs=1e-3)


# ---------------------------------------------------------------------------------------
# int8 absmax, by hand
# ---------------------------------------------------------------------------------------

# Row 0 has amax 127: scale 1. Row 1 has amax 31.75 = 127 / 4: scale 0.25. Row 2 is zeros.
W_HAND = np.array([[127.0, -63.5, 1.25, 0.0],
                   [31.75, -0.375, 0.125, 0.0],
                   [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)


def test_absmax_int8_per_row_by_hand():
    q = Q.absmax_int8(W_HAND, "row")
    np.testing.assert_array_equal(q.scales, [[1.0], [0.25], [0.0]])
    # -63.5 -> -64 and -0.375 / 0.25 = -1.5 -> -2, 0.125 / 0.25 = 0.5 -> 1: halves away from 0
    np.testing.assert_array_equal(q.q, [[127, -64, 1, 0], [127, -2, 1, 0], [0, 0, 0, 0]])
    w_hat = Q.dequantize(q)
    np.testing.assert_array_equal(w_hat, [[127, -64, 1, 0], [31.75, -0.5, 0.25, 0], [0, 0, 0, 0]])
    # errors 0.5, 0.25 (row 0) and 0.125, 0.125 (row 1): squares sum to 0.34375 over 12 values
    assert q.max_abs_error == 0.5 and q.rmse == pytest.approx(np.sqrt(0.34375 / 12), rel=1e-12)
    assert q.group_size == 4


def test_absmax_int8_per_tensor_by_hand():
    q = Q.absmax_int8(W_HAND)  # one scale: 127 / 127 = 1
    np.testing.assert_array_equal(q.scales, [[1.0]])
    # 31.75 -> 32, -0.375 -> 0, 0.125 -> 0
    np.testing.assert_array_equal(q.q, [[127, -64, 1, 0], [32, 0, 0, 0], [0, 0, 0, 0]])
    assert q.max_abs_error == 0.5  # -63.5 -> -64 (and |-0.375 - 0| = 0.375, |31.75 - 32| = 0.25)
    assert q.group_size == 12


def test_absmax_int8_per_group_by_hand():
    q = Q.absmax_int8(W_HAND, 2)  # groups [127, -63.5] [1.25, 0] | [31.75, -0.375] [0.125, 0] | 0s
    np.testing.assert_array_equal(q.scales, np.array([[1, 1.25 / 127], [0.25, 0.125 / 127], [0, 0]],
                                                     np.float32))
    np.testing.assert_array_equal(q.q, [[127, -64, 127, 0], [127, -2, 127, 0], [0, 0, 0, 0]])
    assert q.max_abs_error == 0.5 and q.group_size == 2
    check_reported(q, W_HAND, Q.dequantize(q))


@pytest.mark.parametrize("group", ["tensor", "row", 32])
def test_absmax_int8_error_is_half_a_step(group):
    w = random_matrix((7, 64))
    q = Q.absmax_int8(w, group)
    w_hat = Q.dequantize_absmax(q)
    step = np.repeat(q.scales, q.group_size, axis=-1).reshape(w.shape)
    assert np.all(np.abs(w - w_hat) <= step * (0.5 + 1e-5))
    check_reported(q, w, w_hat)


# ---------------------------------------------------------------------------------------
# GGUF Q8_0 and Q4_0
# ---------------------------------------------------------------------------------------


def test_q8_0_layout_by_hand():
    x = np.arange(-16, 16, dtype=np.float32) * 8  # amax 128: d = 128 / 127
    q = Q.q8_0_quantize(x[None])
    assert q.data.shape == (1, 34) and q.data.dtype == np.uint8
    assert q.data[0, :2].tobytes() == np.float16(128 / 127).tobytes()  # fp16 d first, little-endian
    # x * (1 / d) = 127 j / 16 for j = -16..15, rounded: -127, -119.0625 -> -119, ...
    np.testing.assert_array_equal(q.blocks["qs"][0, 0], Q.round_half_away(np.arange(-16, 16) * 127 / 16))
    assert q.data[0, 2:].view(np.int8)[0] == -127


def test_q4_0_layout_by_hand():
    x = np.concatenate([np.arange(16) - 8.0, np.arange(16) - 7.5]).astype(np.float32)  # extreme -8: d = 1
    q = Q.q4_0_quantize(x[None])
    assert q.data.shape == (1, 18)
    assert q.data[0, :2].tobytes() == np.float16(1.0).tobytes()
    # q = trunc(x + 8.5): 0..15 for the first 16, and 1..16 -> 1..15, 15 (clamped) for the rest
    lo, hi = np.arange(16), np.minimum(np.arange(16) + 1, 15)
    np.testing.assert_array_equal(q.data[0, 2:], lo | (hi << 4))  # element j low nibble, j + 16 high
    np.testing.assert_array_equal(Q.dequantize(q)[0], np.concatenate([lo, hi]) - 8.0)


@pytest.fixture(scope="module")
def gguf():
    return pytest.importorskip("gguf")


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_gguf_bytes_identical(gguf, fmt):
    qtype = gguf.GGMLQuantizationType[fmt.upper()]
    for w in matrices(GGUF_SHAPES):
        with np.errstate(all="ignore"):  # gguf's 1/d overflows for subnormal blocks
            ref = gguf.quants.quantize(w, qtype)
        q = Q.quantize(w, fmt)
        np.testing.assert_array_equal(q.data, ref)
        np.testing.assert_array_equal(Q.dequantize(q), gguf.quants.dequantize(ref, qtype))


def test_q8_0_error_bound():
    for w in matrices(GGUF_SHAPES):
        q = Q.q8_0_quantize(w)
        w_hat = Q.q8_0_dequantize(q)
        blocks = w.reshape(-1, 32).astype(np.float64)
        d = (np.abs(w.reshape(-1, 32)).max(axis=1) / np.float32(127)).astype(np.float64)[:, None]
        d16 = q.blocks["d"].reshape(-1, 1).astype(np.float64)
        err = np.abs(blocks - w_hat.reshape(-1, 32))
        assert np.all(err <= d * (0.5 + 2e-5) + 127 * np.abs(d - d16))
        check_reported(q, w, w_hat)


def test_q4_0_error_bound():
    for w in matrices(GGUF_SHAPES):
        q = Q.q4_0_quantize(w)
        w_hat = Q.q4_0_dequantize(q)
        blocks = w.reshape(-1, 32).astype(np.float64)
        extreme = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)]
        d = (extreme.astype(np.float32) / np.float32(-8)).astype(np.float64)[:, None]
        d16 = q.blocks["d"].reshape(-1, 1).astype(np.float64)
        with np.errstate(all="ignore"):
            clamped = blocks / d > 7.4999  # generous: a near-miss only loosens the bound
        step = np.where(clamped, 1 + 1e-5, 0.5 + 1e-5) * np.abs(d)
        err = np.abs(blocks - w_hat.reshape(-1, 32))
        assert np.all(err <= step + 8 * np.abs(d - d16))
        check_reported(q, w, w_hat)


# ---------------------------------------------------------------------------------------
# NF4
# ---------------------------------------------------------------------------------------


def test_nf4_codes_are_normal_quantiles():
    offset = 0.9677083
    phi = statistics.NormalDist().inv_cdf
    pos = [phi(p) for p in np.linspace(offset, 0.5, 9)[:-1]]
    neg = [-phi(p) for p in np.linspace(offset, 0.5, 8)[:-1]]
    want = np.sort(np.array(pos + neg + [0.0])) / phi(offset)
    np.testing.assert_allclose(Q.NF4_CODES, want, rtol=0, atol=1e-6)  # bnb's linspace was float32
    assert Q.NF4_CODES[0] == -1 and Q.NF4_CODES[7] == 0 and Q.NF4_CODES[-1] == 1


def test_nf4_layout_by_hand():
    x = np.resize(Q.NF4_CODES, 64).astype(np.float32) * 3  # absmax 3: every value on a code
    q = Q.nf4_quantize(x[None])
    assert q.packed.shape == (1, 32) and q.absmax.shape == (1, 1) and q.absmax[0, 0] == 3
    codes = np.resize(np.arange(16), 64)
    np.testing.assert_array_equal(q.packed[0], (codes[0::2] << 4) | codes[1::2])  # 2i high nibble
    assert q.packed[0, 0] == 0x01 and q.packed[0, 7] == 0xEF


def test_nf4_ties_take_the_lower_code():
    x = np.zeros(64, np.float32)
    x[0], x[1:16] = 1.0, Q.NF4_BOUNDS  # absmax 1: the values are exactly on the midpoints
    q = Q.nf4_quantize(x[None])
    codes = np.stack([q.packed[0] >> 4, q.packed[0] & 15], axis=-1).ravel()
    np.testing.assert_array_equal(codes[1:16], np.arange(15))


def test_nf4_error_bound():
    half_gap = np.diff(Q.NF4_CODES.astype(np.float64)).max() / 2  # (1 - 0.7229568) / 2
    for w in matrices(SHAPES):
        q = Q.nf4_quantize(w)
        w_hat = Q.nf4_dequantize(q)
        absmax = q.absmax.reshape(-1, 1).astype(np.float64)
        bound = np.where(absmax < 1e-38, 2 * absmax, absmax * (half_gap + 1e-6))
        assert np.all(np.abs(w.reshape(-1, 64) - w_hat.reshape(-1, 64)) <= bound)
        check_reported(q, w, w_hat)


@pytest.fixture(scope="module")
def bnb():
    pytest.importorskip("bitsandbytes")
    import bitsandbytes.functional as F
    import torch
    return torch, F


def test_nf4_codes_match_bitsandbytes(bnb):
    torch, F = bnb
    np.testing.assert_array_equal(Q.NF4_CODES, F.get_4bit_type("nf4", device="cpu").numpy())


def test_nf4_bytes_identical_to_bitsandbytes(bnb):
    torch, F = bnb
    for w in matrices(SHAPES):
        packed, state = F.quantize_4bit(torch.from_numpy(w), blocksize=64, quant_type="nf4")
        q = Q.nf4_quantize(w)
        assert packed.shape == (w.size // 2, 1)  # bnb packs the flattened tensor: (n / 2, 1)
        np.testing.assert_array_equal(q.packed.ravel(), packed.numpy().ravel())
        np.testing.assert_array_equal(q.absmax.ravel(), state.absmax.numpy())
        np.testing.assert_array_equal(Q.nf4_dequantize(q), F.dequantize_4bit(packed, state).numpy())


def test_dynamic_code_matches_bitsandbytes(bnb):
    torch, F = bnb
    code, _ = Q.dynamic_code()
    np.testing.assert_array_max_ulp(code, F.create_dynamic_map().numpy(), maxulp=2)


@pytest.mark.parametrize("shape", [(7, 64), (64, 512), (3, 256 * 65)])  # 7, 512, 780 absmaxes
def test_nf4_double_quant_matches_bitsandbytes(bnb, shape):
    torch, F = bnb
    rng = np.random.default_rng(3)
    w = (random_matrix(shape, 3) * 10.0 ** rng.uniform(-3, 1, (shape[0], 1))).astype(np.float32)
    packed, state = F.quantize_4bit(torch.from_numpy(w), blocksize=64, quant_type="nf4",
                                    compress_statistics=True)
    q = Q.nf4_quantize(w, double_quant=True)
    np.testing.assert_array_equal(q.packed.ravel(), packed.numpy().ravel())  # codes use exact absmax
    ref_codes = state.absmax.numpy()
    same = q.double.codes == ref_codes
    assert same.mean() >= 0.99 and np.all(np.abs(q.double.codes.astype(int) - ref_codes) <= 1)
    ref_absmax = (F.dequantize_blockwise(state.absmax, state.state2) + state.offset).numpy()
    tol = 1e-6 * ref_absmax.max()
    assert np.all(np.abs(q.absmax.ravel() - ref_absmax)[same] <= tol)
    np.testing.assert_allclose(q.double.offset, state.offset.item(), rtol=3e-7)
    w_hat = F.dequantize_4bit(packed, state).numpy()
    close = np.repeat(same, 64).reshape(w.shape)
    assert np.all(np.abs(Q.nf4_dequantize(q) - w_hat)[close] <= tol)  # |code| <= 1
    check_reported(q, w, Q.nf4_dequantize(q))
