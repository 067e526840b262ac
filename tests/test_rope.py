"""Tests for minillama/rope.py against transformers' RoPE code (the independent reference)."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network

import numpy as np
import pytest
import torch

from minillama.config import RopeScaling
from minillama.formats.hf import permute_meta_to_hf
from minillama.rope import (
    apply_rotary_emb,
    apply_rotary_emb_rotate_half,
    attention_scaling,
    precompute_cos_sin,
    precompute_freqs_cis,
    rope_frequencies,
    rope_table,
    rotate_half,
)

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama.modeling_llama import (  # noqa: E402
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

# transformers computes inverse frequencies in float32 (theta ** x rounds to ~1e-7 relative,
# times |x ln theta| <= 14), we in float64: 2e-6 relative covers float32 rounding only.
FREQ_RTOL = 2e-6
# cos/sin at positions < 64: transformers rounds each angle pos * inv_freq to float32,
# whose spacing near 64 is 3.8e-6 (we round only cos and sin); measured: <= 9e-7.
COS_SIN_ATOL = 4e-6
MAX_POS = 64  # transformers' max_position_embeddings in these tests

# (our RopeScaling or None, head_dim, theta); each maps to the transformers rope_type named
# by RopeScaling.type ("default" for None)
CASES = {
    "default-1e4": (None, 16, 10000.0),
    "default-5e5-hd12": (None, 12, 500000.0),
    "linear": (RopeScaling("linear", 4.0), 16, 10000.0),
    "dynamic": (RopeScaling("dynamic", 2.0, original_max_position_embeddings=MAX_POS), 10,
                10000.0),
    # original 32: wavelengths of head_dim 16 fall in all three llama3 regions (tested below)
    "llama3": (RopeScaling("llama3", 8.0, original_max_position_embeddings=32), 16, 10000.0),
    "yarn": (RopeScaling("yarn", 4.0, original_max_position_embeddings=16), 16, 10000.0),
    "yarn-custom": (RopeScaling("yarn", 2.0, original_max_position_embeddings=32,
                                beta_fast=16.0, beta_slow=2.0, attention_factor=1.25,
                                truncate=False), 24, 500000.0),
}


def hf_config(scaling, head_dim, theta):
    """A transformers LlamaConfig with the same RoPE (written independently of formats/hf.py)."""
    rope = {"rope_type": "default", "rope_theta": theta}
    if scaling is not None:
        rope = {"rope_type": scaling.type, "rope_theta": theta, "factor": scaling.factor}
        if scaling.type in ("llama3", "yarn"):
            rope["original_max_position_embeddings"] = scaling.original_max_position_embeddings
        if scaling.type == "llama3":
            rope.update(low_freq_factor=scaling.low_freq_factor,
                        high_freq_factor=scaling.high_freq_factor)
        if scaling.type == "yarn":
            rope.update(beta_fast=scaling.beta_fast, beta_slow=scaling.beta_slow,
                        truncate=scaling.truncate)
            if scaling.attention_factor is not None:
                rope["attention_factor"] = scaling.attention_factor
    return LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                       max_position_embeddings=MAX_POS, rope_parameters=rope)


def hf_inv_freq(scaling, head_dim, theta, seq_len=None):
    config = hf_config(scaling, head_dim, theta)
    if scaling is None:
        return LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[scaling.type](config, seq_len=seq_len)


@pytest.mark.parametrize("case", CASES)
def test_inverse_frequencies_match_transformers(case):
    scaling, head_dim, theta = CASES[case]
    ours = torch.from_numpy(rope_frequencies(head_dim, theta, scaling))  # NumPy float64
    ref, ref_attention = hf_inv_freq(scaling, head_dim, theta)
    assert ours.dtype == torch.float64 and ours.shape == (head_dim // 2,)
    torch.testing.assert_close(ours, ref.double(), rtol=FREQ_RTOL, atol=0)
    assert attention_scaling(scaling) == pytest.approx(ref_attention, rel=1e-12)


@pytest.mark.parametrize("seq_len", [MAX_POS // 2, MAX_POS, 100, 1000])
def test_dynamic_frequencies_follow_the_length(seq_len):
    scaling, head_dim, theta = CASES["dynamic"]
    ours = torch.from_numpy(rope_frequencies(head_dim, theta, scaling, seq_len=seq_len))
    ref, _ = hf_inv_freq(scaling, head_dim, theta, seq_len=seq_len)
    torch.testing.assert_close(ours, ref.double(), rtol=FREQ_RTOL, atol=0)
    if seq_len <= MAX_POS:  # up to the original length, dynamic changes nothing
        torch.testing.assert_close(ours, torch.from_numpy(rope_frequencies(head_dim, theta)),
                                   rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("end", [MAX_POS // 2, MAX_POS])
def test_cos_sin_match_transformers_rotary_embedding(case, end):
    scaling, head_dim, theta = CASES[case]
    rotary = LlamaRotaryEmbedding(hf_config(scaling, head_dim, theta))
    position_ids = torch.arange(end)[None]  # (1, end)
    ref_cos, ref_sin = rotary(torch.zeros(1, dtype=torch.float32), position_ids)
    cos, sin = precompute_cos_sin(head_dim, end, theta, scaling)
    assert cos.shape == sin.shape == (end, head_dim) and cos.dtype == torch.float32
    torch.testing.assert_close(cos, ref_cos[0], rtol=0, atol=COS_SIN_ATOL)
    torch.testing.assert_close(sin, ref_sin[0], rtol=0, atol=COS_SIN_ATOL)


def test_dynamic_beyond_the_original_length_matches_transformers():
    # a 2 * MAX_POS sequence: transformers recomputes its base for that length, as we do
    scaling, head_dim, theta = CASES["dynamic"]
    rotary = LlamaRotaryEmbedding(hf_config(scaling, head_dim, theta))
    ref_cos, ref_sin = rotary(torch.zeros(1), torch.arange(2 * MAX_POS)[None])
    cos, sin = precompute_cos_sin(head_dim, 2 * MAX_POS, theta, scaling)
    # positions up to 128: float32 angle spacing doubles to 7.6e-6
    torch.testing.assert_close(cos, ref_cos[0], rtol=0, atol=2 * COS_SIN_ATOL)
    torch.testing.assert_close(sin, ref_sin[0], rtol=0, atol=2 * COS_SIN_ATOL)
    assert not torch.allclose(cos, precompute_cos_sin(head_dim, 2 * MAX_POS, theta)[0])


def test_static_ntk_is_plain_rope_with_a_larger_base():
    # the reference: transformers' default RoPE with theta * factor ** (d / (d - 2))
    head_dim, theta, factor = 16, 10000.0, 4.0
    ours = torch.from_numpy(rope_frequencies(head_dim, theta, RopeScaling("ntk", factor)))
    ref, _ = hf_inv_freq(None, head_dim, theta * factor ** (head_dim / (head_dim - 2)))
    torch.testing.assert_close(ours, ref.double(), rtol=FREQ_RTOL, atol=0)
    assert ours[0] == 1.0 and ours[-1] < rope_frequencies(head_dim, theta)[-1]


def test_llama3_case_covers_all_three_regions():
    scaling, head_dim, theta = CASES["llama3"]
    wavelen = 2 * math.pi / rope_frequencies(head_dim, theta)
    original = scaling.original_max_position_embeddings
    assert (wavelen < original / scaling.high_freq_factor).any()  # kept
    assert (wavelen > original / scaling.low_freq_factor).any()  # divided by factor
    assert ((wavelen >= original / scaling.high_freq_factor)
            & (wavelen <= original / scaling.low_freq_factor)).any()  # blended


@pytest.mark.parametrize("case", CASES)
def test_complex_form_equals_rotate_half_form(case):
    # Meta's interleaved layout, reordered by HF's q/k permutation, gives HF's layout;
    # rotating in either layout and reordering must commute
    scaling, head_dim, theta = CASES[case]
    bsz, seqlen, n_heads = 2, 20, 3
    torch.manual_seed(0)
    xq = torch.randn(bsz, seqlen, n_heads, head_dim)
    xk = torch.randn(bsz, seqlen, 1, head_dim)
    perm = permute_meta_to_hf(torch.arange(head_dim)[:, None], n_heads=1)[:, 0]  # (head_dim,)
    freqs_cis = precompute_freqs_cis(head_dim, seqlen, theta, scaling)
    assert freqs_cis.dtype == torch.complex64 and freqs_cis.shape == (seqlen, head_dim // 2)
    cos, sin = precompute_cos_sin(head_dim, seqlen, theta, scaling)
    q_meta, k_meta = apply_rotary_emb(xq, xk, freqs_cis)
    q_hf, k_hf = apply_rotary_emb_rotate_half(xq[..., perm], xk[..., perm], cos, sin)
    torch.testing.assert_close(q_meta[..., perm], q_hf, rtol=0, atol=1e-6)
    torch.testing.assert_close(k_meta[..., perm], k_hf, rtol=0, atol=1e-6)


def test_rotate_half_form_matches_transformers_apply():
    head_dim, seqlen = 12, 9
    torch.manual_seed(1)
    xq, xk = torch.randn(2, seqlen, 4, head_dim), torch.randn(2, seqlen, 2, head_dim)
    cos, sin = precompute_cos_sin(head_dim, seqlen, 10000.0)
    ours = apply_rotary_emb_rotate_half(xq, xk, cos, sin)
    ref = apply_rotary_pos_emb(xq.transpose(1, 2), xk.transpose(1, 2), cos[None], sin[None])
    for a, b in zip(ours, ref):  # transformers: (bsz, heads, seqlen, head_dim)
        torch.testing.assert_close(a, b.transpose(1, 2), rtol=0, atol=1e-6)
    x = torch.arange(6.0)
    assert rotate_half(x).tolist() == [-3.0, -4.0, -5.0, 0.0, 1.0, 2.0]


def test_scores_depend_on_distance_only():
    # the point of RoPE: q at m and k at n give the same score as at m + s, n + s
    head_dim = 16
    freqs_cis = precompute_freqs_cis(head_dim, 64)
    torch.manual_seed(2)
    q, k = torch.randn(1, 1, 1, head_dim), torch.randn(1, 1, 1, head_dim)

    def score(m, n):
        qm, _ = apply_rotary_emb(q, q, freqs_cis[m : m + 1])
        kn, _ = apply_rotary_emb(k, k, freqs_cis[n : n + 1])
        return (qm * kn).sum()

    torch.testing.assert_close(score(5, 2), score(45, 42), rtol=0, atol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 4))


def test_magnitude_is_one_except_yarn():
    assert torch.allclose(precompute_freqs_cis(8, 32).abs(), torch.ones(32, 4))
    scaling = RopeScaling("yarn", 4.0, original_max_position_embeddings=16)
    expected = 0.1 * math.log(4.0) + 1.0  # YaRN paper's attention temperature
    torch.testing.assert_close(precompute_freqs_cis(8, 32, scaling=scaling).abs(),
                               torch.full((32, 4), expected), rtol=1e-6, atol=0)
    assert precompute_freqs_cis(8, 32, scaling={"type": "linear", "factor": 2.0}).shape == (32, 4)


@pytest.mark.parametrize("case", CASES)
def test_numpy_table_is_freqs_cis(case):
    # the engine's torch-free table: the same float64 angles, each part rounded once
    scaling, head_dim, theta = CASES[case]
    cos, sin = rope_table(head_dim, MAX_POS, theta, scaling)
    ref = precompute_freqs_cis(head_dim, MAX_POS, theta, scaling)  # complex64
    assert cos.dtype == sin.dtype == np.float32 and cos.shape == (MAX_POS, head_dim // 2)
    np.testing.assert_array_equal(cos, ref.real.numpy())
    np.testing.assert_array_equal(sin, ref.imag.numpy())


def test_low_precision_inputs_keep_their_dtype():
    xq = torch.randn(1, 4, 2, 8, dtype=torch.bfloat16)
    q, k = apply_rotary_emb(xq, xq, precompute_freqs_cis(8, 4))
    assert q.dtype == k.dtype == torch.bfloat16
    ref, _ = apply_rotary_emb(xq.float(), xq.float(), precompute_freqs_cis(8, 4))
    torch.testing.assert_close(q.float(), ref, rtol=1e-2, atol=1e-2)  # bf16 has 8 bits


def test_errors():
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7)
    with pytest.raises(ValueError, match="head_dim > 2"):
        rope_frequencies(2, scaling=RopeScaling("ntk", 2.0))
    with pytest.raises(ValueError, match=r"freqs_cis has shape \(3, 4\), expected \(4, 4\)"):
        apply_rotary_emb(torch.zeros(1, 4, 1, 8), torch.zeros(1, 4, 1, 8),
                         precompute_freqs_cis(8, 3))
    with pytest.raises(ValueError, match="cos/sin have shapes"):
        cos, sin = precompute_cos_sin(8, 3)
        apply_rotary_emb_rotate_half(torch.zeros(1, 4, 1, 8), torch.zeros(1, 4, 1, 8), cos, sin)
