"""Rotary position embeddings (RoPE): frequencies, scaling variants, and the two layouts.

RoPE rotates pairs of features in each query and key head by an angle `pos * freq`, so
that q.k depends on the distance between positions only. Two layouts rotate different
pairs and are the same thing up to a fixed permutation of each head's features:

- Meta's **complex** form pairs features (2i, 2i+1) and multiplies them, as one complex
  number, by `freqs_cis[pos, i] = exp(1j * pos * freq_i)`: `precompute_freqs_cis`,
  `apply_rotary_emb`. The model uses this form.
- transformers' **rotate-half** form pairs features (i, i + head_dim/2):
  `precompute_cos_sin`, `rotate_half`, `apply_rotary_emb_rotate_half`. HF checkpoints
  store wq and wk permuted to suit it (see `minillama/formats/hf.py`).

Scaling variants (`RopeScaling.type`) and the transformers `rope_type` that computes the
same inverse frequencies (tested against transformers in tests/test_rope.py):

    None       -> "default"
    "linear"   -> "linear"   position interpolation: every frequency / factor
    "ntk"      -> (none)     static NTK-aware: base theta * factor ** (d / (d - 2))
    "dynamic"  -> "dynamic"  NTK base recomputed for the current length L > original:
                             theta * (factor * L / orig - (factor - 1)) ** (d / (d - 2))
    "llama3"   -> "llama3"   Llama 3.1: long wavelengths / factor, short kept, smooth between
    "yarn"     -> "yarn"     per-frequency ramp between the two, and cos/sin multiplied by
                             an attention factor (0.1 ln(factor) + 1 by default)

Frequencies and angles are computed in float64 and rounded once to float32/complex64,
so a table is accurate even at long positions. The frequencies and `rope_table` are NumPy
(the Numba engine never imports torch); the functions that rotate torch tensors import
torch when called.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from minillama.config import RopeScaling

if TYPE_CHECKING:  # annotations only: torch is imported where a function needs it
    import torch


def _as_scaling(scaling: RopeScaling | dict | None) -> RopeScaling | None:
    return RopeScaling(**scaling) if isinstance(scaling, dict) else scaling


def rope_frequencies(
    head_dim: int,
    theta: float = 10000.0,
    scaling: RopeScaling | dict | None = None,
    seq_len: int | None = None,
) -> np.ndarray:
    """Inverse frequencies (head_dim // 2,) float64 NumPy, with scaling applied.

    seq_len is the current sequence length and matters only for "dynamic" scaling.
    """
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be positive and even (RoPE rotates pairs), got {head_dim}")
    scaling = _as_scaling(scaling)
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim  # (head_dim // 2,)
    inv_freq = 1.0 / theta**exponents
    if scaling is None:
        return inv_freq
    kind, factor = scaling.type, scaling.factor
    if kind in ("ntk", "dynamic") and head_dim <= 2:
        raise ValueError(f"{kind!r} scaling needs head_dim > 2, got {head_dim}")
    if kind == "linear":
        return inv_freq / factor
    if kind == "ntk":
        return 1.0 / (theta * factor ** (head_dim / (head_dim - 2))) ** exponents
    if kind == "dynamic":
        original = scaling.original_max_position_embeddings
        length = max(seq_len or original, original)  # no change up to the original length
        base = theta * (factor * length / original - (factor - 1)) ** (head_dim / (head_dim - 2))
        return 1.0 / base**exponents
    if kind == "llama3":
        return _llama3_frequencies(inv_freq, scaling)
    if kind == "yarn":
        return _yarn_frequencies(inv_freq, head_dim, theta, scaling)
    raise ValueError(f"unknown rope scaling type {kind!r}")  # RopeScaling already checks


def _llama3_frequencies(inv_freq: np.ndarray, s: RopeScaling) -> np.ndarray:
    """Llama 3.1: keep wavelengths < orig/high, divide those > orig/low by factor, blend between."""
    original = s.original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    # 0 at the long-wavelength edge (fully interpolated), 1 at the short one (untouched)
    smooth = (original / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    blended = (1 - smooth) * inv_freq / s.factor + smooth * inv_freq
    out = np.where(wavelen > original / s.low_freq_factor, inv_freq / s.factor, blended)
    return np.where(wavelen < original / s.high_freq_factor, inv_freq, out)


def _yarn_frequencies(
    inv_freq: np.ndarray, head_dim: int, theta: float, s: RopeScaling
) -> np.ndarray:
    """YaRN: dims that turn fewer than beta_slow times in the original context are
    interpolated (/ factor), those that turn more than beta_fast times are kept, a ramp between."""
    original = s.original_max_position_embeddings

    def dim_of(n_rotations: float) -> float:  # the dim that turns n_rotations times in `original`
        return head_dim * math.log(original / (n_rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dim_of(s.beta_fast), dim_of(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # avoid dividing by zero, as transformers does
    ramp = (np.arange(head_dim // 2, dtype=np.float64) - low) / (high - low)
    ramp = np.clip(ramp, 0, 1)  # (head_dim // 2,) 0: keep the frequency, 1: interpolate it
    return inv_freq / s.factor * ramp + inv_freq * (1 - ramp)


def attention_scaling(scaling: RopeScaling | dict | None) -> float:
    """The factor that multiplies cos and sin (YaRN's attention temperature); 1.0 otherwise."""
    scaling = _as_scaling(scaling)
    if scaling is None or scaling.type != "yarn":
        return 1.0
    if scaling.attention_factor is not None:
        return float(scaling.attention_factor)
    return 0.1 * math.log(scaling.factor) + 1.0 if scaling.factor > 1 else 1.0


def _angles(head_dim: int, end: int, theta: float, scaling: RopeScaling | None) -> np.ndarray:
    if end <= 0:
        raise ValueError(f"end (number of positions) must be positive, got {end}")
    # "dynamic" picks its base from the table's length: the longest sequence it serves
    inv_freq = rope_frequencies(head_dim, theta, scaling, seq_len=end)  # (head_dim // 2,)
    positions = np.arange(end, dtype=np.float64)  # (end,)
    return np.outer(positions, inv_freq)  # (end, head_dim // 2) float64


def rope_table(
    head_dim: int, end: int, theta: float = 10000.0, scaling: RopeScaling | dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The real and imaginary parts of precompute_freqs_cis as NumPy: cos and sin of
    pos * freq (times YaRN's factor) for pos < end, each float32 (end, head_dim // 2)."""
    scaling = _as_scaling(scaling)
    angles = _angles(head_dim, end, theta, scaling)  # (end, head_dim // 2)
    mscale = attention_scaling(scaling)
    return ((np.cos(angles) * mscale).astype(np.float32),
            (np.sin(angles) * mscale).astype(np.float32))


def precompute_freqs_cis(
    head_dim: int, end: int, theta: float = 10000.0, scaling: RopeScaling | dict | None = None
) -> torch.Tensor:
    """exp(1j * pos * freq) for pos < end: complex64 (end, head_dim // 2), Meta's form."""
    import torch

    scaling = _as_scaling(scaling)
    angles = torch.from_numpy(_angles(head_dim, end, theta, scaling))  # (end, head_dim // 2) f64
    magnitude = torch.full_like(angles, attention_scaling(scaling))
    return torch.polar(magnitude, angles).to(torch.complex64)  # (end, head_dim // 2)


def apply_rotary_emb(
    xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate (bsz, seqlen, heads, head_dim) q and k by freqs_cis (seqlen, head_dim // 2)."""
    seqlen, head_dim = xq.shape[1], xq.shape[-1]
    if freqs_cis.shape != (seqlen, head_dim // 2):
        raise ValueError(
            f"freqs_cis has shape {tuple(freqs_cis.shape)}, expected {(seqlen, head_dim // 2)} "
            "for (seqlen, head_dim // 2)"
        )
    import torch

    # upcast: rotating in low precision loses the small angles of the slow frequencies
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))  # (.., head_dim//2)
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))  # (.., head_dim//2)
    freqs_cis = freqs_cis.view(1, seqlen, 1, head_dim // 2)  # broadcast over batch and heads
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)  # (bsz, seqlen, n_heads, head_dim)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3)  # (bsz, seqlen, n_kv_heads, head_dim)
    return xq_out.type_as(xq), xk_out.type_as(xk)


def precompute_cos_sin(
    head_dim: int, end: int, theta: float = 10000.0, scaling: RopeScaling | dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of pos * freq for pos < end, each float32 (end, head_dim): HF's layout."""
    import torch

    scaling = _as_scaling(scaling)
    angles = torch.from_numpy(_angles(head_dim, end, theta, scaling))  # (end, head_dim // 2)
    angles = torch.cat([angles, angles], dim=-1)  # (end, head_dim): pair i with i + head_dim/2
    mscale = attention_scaling(scaling)
    return (angles.cos() * mscale).float(), (angles.sin() * mscale).float()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim: a 90-degree turn of each pair."""
    import torch

    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary_emb_rotate_half(
    xq: torch.Tensor, xk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate (bsz, seqlen, heads, head_dim) q and k with cos, sin (seqlen, head_dim): HF form."""
    seqlen, head_dim = xq.shape[1], xq.shape[-1]
    if cos.shape != (seqlen, head_dim) or sin.shape != (seqlen, head_dim):
        raise ValueError(
            f"cos/sin have shapes {tuple(cos.shape)}/{tuple(sin.shape)}, expected "
            f"{(seqlen, head_dim)} for (seqlen, head_dim)"
        )
    cos = cos.view(1, seqlen, 1, head_dim)  # broadcast over batch and heads
    sin = sin.view(1, seqlen, 1, head_dim)
    xq_out = xq.float() * cos + rotate_half(xq.float()) * sin  # (bsz, seqlen, n_heads, head_dim)
    xk_out = xk.float() * cos + rotate_half(xk.float()) * sin  # (bsz, seqlen, n_kv_heads, hd)
    return xq_out.type_as(xq), xk_out.type_as(xk)
