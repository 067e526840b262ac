"""Weight quantizers of lesson 10, in NumPy: int8 absmax, GGUF Q8_0 and Q4_0, QLoRA's NF4.

    q = absmax_int8(w, group="row")        # int8 q and float32 scales: the teaching path
    q = q8_0_quantize(w)                   # GGUF bytes, identical to gguf.quants / llama.cpp
    q = q4_0_quantize(w)
    q = nf4_quantize(w, double_quant=True) # identical to bitsandbytes' CPU quantize_4bit
    w_hat = dequantize(q)                  # float32, the shape of w
    q = quantize(w, "q4_0", name="layers.0.attention.wq")   # by name: QUANT_FORMATS

Every quantizer returns its storage together with its error against w (`max_abs_error`,
`rmse`), so a test can bound the error. A quantizer takes a `name=` that its errors name:
a NaN or inf raises ValueError, and a row length (last axis) that is not a multiple of the
format's block size raises `BlockSizeError`, which a loader can catch to keep that matrix
in float32. Blocks run along the rows, so a block never straddles two rows.

    format  block  per block                          bits per weight
    q8_0    32     fp16 d, 32 x int8                  34 bytes / 32 = 8.5
    q4_0    32     fp16 d, 16 bytes of nibbles        18 bytes / 32 = 4.5
    nf4     64     fp32 absmax, 32 bytes of nibbles   4 + 32/64 = 4.5 (4.127 double quantized)

The rounding follows the references step by step (order of operations included), because
bytes are only identical when the float32 arithmetic is: see each quantizer's comments.
"""

from __future__ import annotations

from functools import cache
from math import nan, sqrt
from typing import NamedTuple

import numpy as np

QUANT_FORMATS = ("q8_0", "q4_0", "nf4")
BLOCK_SIZE = {"q8_0": 32, "q4_0": 32, "nf4": 64}
DQ_BLOCK = 256  # double quantization: the NF4 absmaxes are quantized in blocks of 256
CHUNK = 1 << 16  # values per pass of a loop whose temporaries should stay in cache

# ---------------------------------------------------------------------------------------
# Shared: input checks, rounding, error
# ---------------------------------------------------------------------------------------


class BlockSizeError(ValueError):
    """A row length that is not a multiple of the format's block size."""


def check_finite(name: str, w: np.ndarray) -> None:
    """Raise ValueError naming tensor `name` and the first position of a NaN or inf in w."""
    bad = ~np.isfinite(w)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"tensor {name} has NaN/inf at index {first} "
                         f"({int(bad.sum())} of {w.size} values are not finite)")


def _rows(w: np.ndarray, name: str, fmt: str, block: int) -> np.ndarray:
    """w as float32 (..., cols), checked: finite, and cols a multiple of `block`."""
    x = np.ascontiguousarray(w, dtype=np.float32)  # gguf and bnb both quantize float32
    if x.ndim == 0 or x.shape[-1] % block:
        cols = x.shape[-1] if x.ndim else "a scalar"
        raise BlockSizeError(f"tensor {name}: {fmt} takes rows of a multiple of {block} values "
                             f"(block size {block}), got row length {cols}, shape {x.shape}")
    check_finite(name, x)
    return x


def round_half_away(x: np.ndarray) -> np.ndarray:
    """x rounded to integers, halves away from zero (C's roundf), same dtype: 2.5 -> 3, -0.5 -> -1."""
    t = np.trunc(x)
    # x - t is exact and so is doubling it; its truncation is +-1 exactly when |fraction| >= 0.5.
    # (trunc(x + 0.5) is not: 0.49999997 + 0.5 rounds to 1.0 in float32.)
    t += np.trunc((x - t) * 2)
    return t


def _errors(x: np.ndarray, x_hat: np.ndarray) -> tuple[float, float]:
    """(max |x - x_hat|, root mean square of x - x_hat), in float64 so no rounding hides an error."""
    xf, hf = x.ravel(), x_hat.ravel()
    max_abs, sq = 0.0, 0.0
    # In chunks that stay in cache, and no BLAS dot: on a busy machine its threads wait
    for i in range(0, xf.size, CHUNK):
        e = np.subtract(xf[i:i + CHUNK], hf[i:i + CHUNK], dtype=np.float64)
        max_abs = max(max_abs, float(np.abs(e).max()))
        sq += float(np.square(e, out=e).sum())
    return max_abs, sqrt(sq / max(xf.size, 1))


def _measured(q, x: np.ndarray, dequantize_fn):
    """q (a NamedTuple whose error fields are placeholders) with the error of its dequantization."""
    max_abs, rmse = _errors(x, dequantize_fn(q))
    return q._replace(max_abs_error=max_abs, rmse=rmse)


def _reciprocal(d: np.ndarray) -> np.ndarray:
    """1/d in float32, and 0 where d is 0 or subnormal enough that 1/d overflows."""
    with np.errstate(divide="ignore", over="ignore"):
        r = np.float32(1) / d
    r[~np.isfinite(r)] = 0
    return r


# ---------------------------------------------------------------------------------------
# int8 absmax: the teaching path
# ---------------------------------------------------------------------------------------


class Int8Quantized(NamedTuple):
    q: np.ndarray  # int8, the shape of w
    scales: np.ndarray  # float32 (n_scale_rows, n_groups): one per group, max|x| / 127
    group_size: int  # values per scale (the whole tensor, a row, or a group)
    max_abs_error: float
    rmse: float


def _groups(x: np.ndarray, group: str | int, name: str) -> np.ndarray:
    """x regrouped (n_scale_rows, n_groups, group_size): one scale per [i, j, :]."""
    cols = x.shape[-1] if x.ndim else 1
    if group == "tensor":
        return x.reshape(1, 1, -1)  # (1, 1, size)
    if group == "row":
        return x.reshape(-1, 1, cols)  # (rows, 1, cols)
    if isinstance(group, int) and not isinstance(group, bool) and group > 0:
        if cols % group:
            raise BlockSizeError(f"tensor {name}: groups of {group} need a row length that is a "
                                 f"multiple of {group}, got {cols}")
        return x.reshape(-1, cols // group, group)  # (rows, cols // group, group)
    raise ValueError(f"group must be 'tensor', 'row' or a positive int, got {group!r}")


def absmax_int8(w: np.ndarray, group: str | int = "tensor", name: str = "w") -> Int8Quantized:
    """w (..., cols) -> int8 q with scale = max|x| / 127 per tensor, per row or per group of
    `group` consecutive values of a row; q = round-half-away(x / scale), 0 where scale is 0."""
    x = np.asarray(w, dtype=np.float32)
    check_finite(name, x)
    g = _groups(x, group, name)
    scales = np.abs(g).max(axis=-1) / np.float32(127)  # (n_scale_rows, n_groups)
    s = scales[..., None]
    # An all-zero group has scale 0 and q 0. The clip only matters for a subnormal scale,
    # too coarse to make max|x| / scale come out as 127.
    q = np.divide(g, s, out=np.zeros_like(g), where=s > 0)
    q = np.clip(round_half_away(q), -127, 127).astype(np.int8).reshape(x.shape)
    return _measured(Int8Quantized(q, scales, g.shape[-1], nan, nan), x, dequantize_absmax)


def dequantize_absmax(qt: Int8Quantized) -> np.ndarray:
    """Int8Quantized -> float32 q * scale, the shape of the original w."""
    g = qt.q.reshape(*qt.scales.shape, -1).astype(np.float32)  # (n_scale_rows, n_groups, group_size)
    return (g * qt.scales[..., None]).reshape(qt.q.shape)


# ---------------------------------------------------------------------------------------
# GGUF Q8_0 and Q4_0 (llama.cpp's ggml-quants.c, as ported to gguf-py's quants.py)
# ---------------------------------------------------------------------------------------

# One block as GGUF stores it, little-endian and unpadded: data.view(dtype) gives the fields
Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", 32)])  # 34 bytes: x = qs * d
Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])  # 18 bytes: byte j = q[j] | q[j+16] << 4
_BLOCK_DTYPE = {"q8_0": Q8_0_BLOCK, "q4_0": Q4_0_BLOCK}


class GGUFQuantized(NamedTuple):
    fmt: str  # "q8_0" or "q4_0"
    data: np.ndarray  # uint8 (..., cols // 32 * type_size): the bytes of a GGUF tensor
    max_abs_error: float
    rmse: float

    @property
    def blocks(self) -> np.ndarray:
        """The same bytes as a structured array (..., cols // 32) with fields d and qs."""
        return self.data.view(_BLOCK_DTYPE[self.fmt])


def _pack_blocks(fmt: str, d: np.ndarray, qs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """fp16-rounded d (n_blocks,) and qs (n_blocks, k) -> uint8 (..., n_blocks_per_row * bytes)."""
    out = np.empty(len(d), _BLOCK_DTYPE[fmt])
    out["d"] = d  # float32 -> fp16 rounds to nearest even, as astype(np.float16) in gguf
    out["qs"] = qs
    return out.view(np.uint8).reshape(*shape[:-1], -1)


def q8_0_quantize(w: np.ndarray, name: str = "w") -> GGUFQuantized:
    """w (..., cols), cols % 32 == 0 -> Q8_0 bytes (..., cols // 32 * 34) and the error."""
    x = _rows(w, name, "q8_0", 32)
    blocks = x.reshape(-1, 32)  # (n_blocks, 32)
    d = np.abs(blocks).max(axis=1) / np.float32(127)  # (n_blocks,) float32
    # gguf multiplies by id = 1/d, both float32, before d is rounded to fp16: x / d would
    # round differently in about one value per million, x / fp16(d) in almost one per cent.
    qs = round_half_away(blocks * _reciprocal(d)[:, None]).astype(np.int8)  # (n_blocks, 32)
    data = _pack_blocks("q8_0", d, qs, x.shape)
    return _measured(GGUFQuantized("q8_0", data, nan, nan), x, q8_0_dequantize)


def q8_0_dequantize(q: GGUFQuantized) -> np.ndarray:
    """Q8_0 bytes (..., n_blocks * 34) -> float32 (..., n_blocks * 32): qs * d, exact in float32."""
    b = q.blocks  # (..., n_blocks)
    x = b["qs"].astype(np.float32) * b["d"].astype(np.float32)[..., None]  # (..., n_blocks, 32)
    return x.reshape(*b.shape[:-1], -1)


def q4_0_quantize(w: np.ndarray, name: str = "w") -> GGUFQuantized:
    """w (..., cols), cols % 32 == 0 -> Q4_0 bytes (..., cols // 32 * 18) and the error."""
    x = _rows(w, name, "q4_0", 32)
    blocks = x.reshape(-1, 32)  # (n_blocks, 32)
    n = len(blocks)
    # d = the signed extreme / -8, so the extreme itself gets q = 0 and the full range of
    # 16 levels is used; argmax picks the first of two equal magnitudes, as llama.cpp does
    extreme = blocks[np.arange(n), np.abs(blocks).argmax(axis=1)]
    d = extreme / np.float32(-8)  # (n_blocks,)
    inv = _reciprocal(d)
    # q = trunc(x * id + 8.5) in float32, two roundings as in C (no fused multiply-add):
    # a half step rounds up, towards q = 15. Values beyond +7.5 d clamp at 15.
    q = np.minimum(np.trunc(blocks * inv[:, None] + np.float32(8.5)), 15).astype(np.uint8)
    # A subnormal d: gguf's 1/d is inf, and x86 casts the resulting inf/NaN to 0. The fp16
    # d is 0 there, so every q decodes to 0; we write that 0 too, for identical bytes.
    q[(inv == 0) & (d != 0)] = 0
    qs = q[:, :16] | (q[:, 16:] << 4)  # (n_blocks, 16): element j low nibble, j + 16 high
    data = _pack_blocks("q4_0", d, qs, x.shape)
    return _measured(GGUFQuantized("q4_0", data, nan, nan), x, q4_0_dequantize)


def q4_0_dequantize(q: GGUFQuantized) -> np.ndarray:
    """Q4_0 bytes (..., n_blocks * 18) -> float32 (..., n_blocks * 32): (q - 8) * d."""
    b = q.blocks  # (..., n_blocks)
    qs = b["qs"]
    nib = np.concatenate([qs & 15, qs >> 4], axis=-1).astype(np.int8) - 8  # (..., n_blocks, 32)
    x = nib.astype(np.float32) * b["d"].astype(np.float32)[..., None]
    return x.reshape(*b.shape[:-1], -1)


# ---------------------------------------------------------------------------------------
# NF4 (QLoRA), as bitsandbytes quantizes on the CPU
# ---------------------------------------------------------------------------------------

# The 16 NF4 codes. Quantiles of the standard normal N(0, 1), normalised to [-1, 1]: with
# offset = 0.9677083 (the mean of 1 - 1/(2*15) and 1 - 1/(2*16)), the 8 positive codes are
# Phi^-1 at 8 equally spaced probabilities from offset down to (not including) 0.5, the 7
# negative ones -Phi^-1 at 7 from offset down to 0.5, plus an exact 0; all divided by
# Phi^-1(offset), so the ends are exactly -1 and 1. Asymmetric (8 positive, 7 negative)
# so that 0 is a code. These are bitsandbytes' float32 values (tests/test_quant.py checks
# them against bnb and against the definition via statistics.NormalDist).
NF4_CODES = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=np.float32)
# bnb's thresholds: the float32 midpoints between neighbouring codes
NF4_BOUNDS = (NF4_CODES[:-1] + NF4_CODES[1:]) / np.float32(2)  # (15,)
_SCALE_FLOOR = np.float32(1e-38)  # bnb clamps absmax to this before taking its reciprocal


class DoubleQuant(NamedTuple):
    codes: np.ndarray  # uint8 (n_blocks,): absmax - offset, in bnb's 8-bit dynamic code
    scales: np.ndarray  # float32 (ceil(n_blocks / 256),): max |absmax - offset| per 256
    offset: np.float32  # the mean of the absmaxes


class NF4Quantized(NamedTuple):
    packed: np.ndarray  # uint8 (..., cols // 2): element 2i in the high nibble of byte i
    absmax: np.ndarray  # float32 (..., cols // 64): the scales used to dequantize
    double: DoubleQuant | None  # how absmax is stored when double quantized, else None
    max_abs_error: float
    rmse: float


def nf4_quantize(w: np.ndarray, double_quant: bool = False, name: str = "w") -> NF4Quantized:
    """w (..., cols), cols % 64 == 0 -> NF4 codes packed two per byte, absmax per 64 and
    the error; with double_quant the absmaxes are stored in 8 bits (as bnb's
    compress_statistics=True): absmax then holds their dequantized values."""
    x = _rows(w, name, "nf4", 64)
    blocks = x.reshape(-1, 64)  # (n_blocks, 64): consecutive values, as bnb flattens w
    absmax = np.abs(blocks).max(axis=1)  # (n_blocks,)
    # bnb multiplies by the float32 reciprocal of absmax floored at 1e-38 (a zero block
    # then needs no special case, a subnormal one maps to codes near 0) and clamps to [-1, 1]
    inv = np.float32(1) / np.maximum(absmax, _SCALE_FLOOR)
    scaled = np.clip(blocks * inv[:, None], -1, 1).ravel()
    # Nearest code = the number of midpoints strictly below the value: a value exactly on
    # a midpoint takes the lower code (torch.bucketize with right=False).
    codes = _count_below(NF4_BOUNDS, scaled)
    packed = ((codes[0::2] << 4) | codes[1::2]).reshape(*x.shape[:-1], -1)
    double = None
    if double_quant:
        double, absmax = _double_quantize(absmax)
    absmax = absmax.reshape(*x.shape[:-1], -1)  # (..., cols // 64)
    return _measured(NF4Quantized(packed, absmax, double, nan, nan), x, nf4_dequantize)


def _count_below(bounds: np.ndarray, v: np.ndarray) -> np.ndarray:
    """uint8 (n,): how many of the sorted bounds are strictly below each v, i.e.
    np.searchsorted(bounds, v, side="left"), five times faster for 15 bounds."""
    out = np.zeros(v.size, np.uint8)
    for i in range(0, v.size, CHUNK):
        o, vi = out[i:i + CHUNK], v[i:i + CHUNK]
        for b in bounds:
            o += vi > b
    return out


def nf4_dequantize(q: NF4Quantized) -> np.ndarray:
    """NF4 packed (..., cols // 2) -> float32 (..., cols): code * absmax of its block."""
    p = q.packed
    codes = np.stack([p >> 4, p & 15], axis=-1).reshape(*p.shape[:-1], -1, 64)  # (..., n_blocks, 64)
    return (NF4_CODES[codes] * q.absmax[..., None]).reshape(*p.shape[:-1], -1)


@cache
def dynamic_code() -> tuple[np.ndarray, np.ndarray]:
    """bnb's signed 8-bit "dynamic" code (256 sorted float32) and its 65536-entry lookup table.
    For e = 0..6 the decade 10^(e-6) holds 2^e values of each sign, the midpoints of
    linspace(0.1, 1, 2^e + 1); with 0 and 1 that makes 2 * 127 + 2 = 256 codes. (bnb builds
    them with float32 torch.linspace; ours, from float64, agree within 2 ulp.)"""
    vals = [np.float32(0), np.float32(1)]
    for e in range(7):
        edges = np.linspace(0.1, 1, 2**e + 1, dtype=np.float32)
        mids = np.float32(10.0 ** (e - 6)) * ((edges[:-1] + edges[1:]) / np.float32(2))
        vals += [*mids, *-mids]
    code = np.sort(np.array(vals, dtype=np.float32))
    # bnb's CPU kernel does not search for the nearest code: it rounds the value in [-1, 1]
    # to one of 65536 evenly spaced points and takes that point's nearest code (counting
    # float32 midpoints strictly below it). We keep its table so our codes match its codes.
    points = np.float32(-1) + np.float32(2) * np.arange(65536, dtype=np.float32) / np.float32(65535)
    lut = np.searchsorted(np.float32(0.5) * (code[:-1] + code[1:]), points)
    return code, lut.astype(np.uint8)


def _double_quantize(absmax: np.ndarray) -> tuple[DoubleQuant, np.ndarray]:
    """absmax (n_blocks,) -> its 8-bit storage and the float32 absmax it dequantizes to."""
    code, lut = dynamic_code()
    offset = np.float32(absmax.mean(dtype=np.float64))
    n = len(absmax)
    x = np.zeros(-(-n // DQ_BLOCK) * DQ_BLOCK, np.float32)  # zero padding leaves every max alone
    x[:n] = absmax - offset
    x = x.reshape(-1, DQ_BLOCK)  # (n_dq_blocks, 256)
    scales = np.abs(x).max(axis=1)
    v = np.clip(x * _reciprocal(scales)[:, None], -1, 1)
    idx = ((v + np.float32(1)) * np.float32(0.5) * np.float32(65535) + np.float32(0.5)).astype(np.uint16)
    codes = lut[idx]
    codes[scales == 0] = 0  # bnb writes code 0 for a block of zeros (it decodes to 0 all the same)
    dq = DoubleQuant(codes.ravel()[:n], scales, offset)
    return dq, dequantize_absmax_dq(dq)


def dequantize_absmax_dq(dq: DoubleQuant) -> np.ndarray:
    """Double-quantized absmax -> float32 (n_blocks,): code * scale of its 256, plus the offset."""
    code, _ = dynamic_code()
    scale = np.repeat(dq.scales, DQ_BLOCK)[: len(dq.codes)]
    return code[dq.codes] * scale + dq.offset


# ---------------------------------------------------------------------------------------
# By name
# ---------------------------------------------------------------------------------------

_QUANTIZE = {"q8_0": q8_0_quantize, "q4_0": q4_0_quantize, "nf4": nf4_quantize}
_DEQUANTIZE = {"q8_0": q8_0_dequantize, "q4_0": q4_0_dequantize}


def _check_fmt(fmt: str) -> None:
    if fmt not in QUANT_FORMATS:
        raise ValueError(f"unknown quantization format {fmt!r}; accepted: {', '.join(QUANT_FORMATS)}")


def bits_per_weight(fmt: str, double_quant: bool = False) -> float:
    """Storage per weight of `fmt`, scales included: 8.5, 4.5, 4.5 (nf4: 4.127 double quantized)."""
    _check_fmt(fmt)
    if fmt == "nf4":
        # 4-bit codes + one absmax per 64: fp32, or 8 bits plus one fp32 scale per 256 of
        # them (and one fp32 offset per tensor, left out: it is nothing per weight)
        return 4 + (8 / 64 + 32 / (64 * DQ_BLOCK) if double_quant else 32 / 64)
    return _BLOCK_DTYPE[fmt].itemsize * 8 / BLOCK_SIZE[fmt]


def quantize(w: np.ndarray, fmt: str, name: str = "w", **options) -> GGUFQuantized | NF4Quantized:
    """w (..., cols) in format `fmt` (one of QUANT_FORMATS); options go to the quantizer."""
    _check_fmt(fmt)
    return _QUANTIZE[fmt](w, name=name, **options)


def dequantize(q: GGUFQuantized | NF4Quantized | Int8Quantized) -> np.ndarray:
    """Any quantizer's result -> float32 of the original shape."""
    if isinstance(q, NF4Quantized):
        return nf4_dequantize(q)
    if isinstance(q, Int8Quantized):
        return dequantize_absmax(q)
    return _DEQUANTIZE[q.fmt](q)
