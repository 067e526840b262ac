"""Tests for minillama/model.py: each piece against a torch or transformers reference,
the parameter count, and the KV cache against full recomputation."""

import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize

from minillama.config import PRESETS, ModelArgs, get_preset
from minillama.model import (
    Attention,
    FeedForward,
    KVCache,
    Llama,
    RMSNorm,
    TransformerBlock,
    count_parameters,
    repeat_kv,
)
from minillama.rope import precompute_freqs_cis

# float32 on these tiny shapes: results differ from a reference by summation order only,
# a few ulps of values O(1); 1e-5 absolute is the course's float32 tolerance.
ATOL = 1e-5


def tiny(**overrides) -> ModelArgs:
    base = dict(dim=48, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, max_seq_len=32,
                tie_embeddings=False)
    return ModelArgs(**{**base, **overrides})


# --- pieces ------------------------------------------------------------------------------


def test_rmsnorm_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 24) * 4
    norm = RMSNorm(24, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(24))
    ref = F.rms_norm(x, (24,), norm.weight, eps=1e-5)
    torch.testing.assert_close(norm(x), ref, rtol=0, atol=ATOL)


def test_rmsnorm_upcasts_low_precision():
    # bf16 in, bf16 out, but normalised in float32 like Meta's: compare with the float32 path
    x = (torch.randn(4, 32) * 100).bfloat16()
    norm = RMSNorm(32).bfloat16()
    out = norm(x)
    assert out.dtype == torch.bfloat16
    ref = F.rms_norm(x.float(), (32,), eps=1e-5).bfloat16()
    assert torch.equal(out, ref)


def test_rmsnorm_matches_transformers():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(1)
    ours, ref = RMSNorm(16, eps=1e-6), LlamaRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(16))
        ref.weight.copy_(ours.weight)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=ATOL)


def test_repeat_kv_matches_repeat_interleave():
    x = torch.randn(2, 5, 3, 4)  # (bsz, seqlen, n_kv_heads, head_dim)
    assert torch.equal(repeat_kv(x, 4), torch.repeat_interleave(x, 4, dim=2))
    assert repeat_kv(x, 1) is x


def test_swiglu_matches_transformers_mlp():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(2)
    ff = randomize(FeedForward(24, 40))
    mlp = LlamaMLP(LlamaConfig(hidden_size=24, intermediate_size=40, num_attention_heads=4))
    with torch.no_grad():
        mlp.gate_proj.weight.copy_(ff.w1.weight)
        mlp.down_proj.weight.copy_(ff.w2.weight)
        mlp.up_proj.weight.copy_(ff.w3.weight)
    x = torch.randn(2, 6, 24)
    torch.testing.assert_close(ff(x), mlp(x), rtol=0, atol=ATOL)
    # and the formula written out: silu(x W1^T) * (x W3^T), then W2
    ref = (F.silu(x @ ff.w1.weight.T) * (x @ ff.w3.weight.T)) @ ff.w2.weight.T
    torch.testing.assert_close(ff(x), ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("n_heads, n_kv_heads", [(4, 4), (8, 2), (6, 1)])
@pytest.mark.parametrize("use_sdpa", [False, True])
def test_attention_matches_sdpa_causal(n_heads, n_kv_heads, use_sdpa):
    # reference: F.scaled_dot_product_attention(is_causal=True) on K/V heads repeated with
    # repeat_interleave, and RoPE switched off (freqs_cis = 1) to isolate the attention
    args = tiny(dim=48, n_heads=n_heads, n_kv_heads=n_kv_heads)
    attn = randomize(Attention(args), seed=3)
    attn.use_sdpa = use_sdpa
    bsz, seqlen, hd = 2, 9, args.head_dim
    x = torch.randn(bsz, seqlen, 48, generator=torch.Generator().manual_seed(4))
    mask = torch.full((seqlen, seqlen), float("-inf")).triu(1)
    out = attn(x, 0, torch.ones(seqlen, hd // 2, dtype=torch.complex64), mask)

    q = (x @ attn.wq.weight.T).view(bsz, seqlen, n_heads, hd).transpose(1, 2)
    k = (x @ attn.wk.weight.T).view(bsz, seqlen, n_kv_heads, hd).transpose(1, 2)
    v = (x @ attn.wv.weight.T).view(bsz, seqlen, n_kv_heads, hd).transpose(1, 2)
    k = k.repeat_interleave(n_heads // n_kv_heads, dim=1)
    v = v.repeat_interleave(n_heads // n_kv_heads, dim=1)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (bsz, nh, seqlen, hd)
    ref = ref.transpose(1, 2).reshape(bsz, seqlen, -1) @ attn.wo.weight.T
    torch.testing.assert_close(out, ref, rtol=0, atol=ATOL)


def test_block_is_pre_norm_residual():
    args = tiny()
    block = randomize(TransformerBlock(0, args), seed=5)
    x = torch.randn(1, 6, args.dim)
    freqs_cis = precompute_freqs_cis(args.head_dim, 6)
    mask = torch.full((6, 6), float("-inf")).triu(1)
    h = x + block.attention(block.attention_norm(x), 0, freqs_cis, mask)
    ref = h + block.feed_forward(block.ffn_norm(h))
    torch.testing.assert_close(block(x, 0, freqs_cis, mask), ref, rtol=0, atol=0)


def test_module_names_are_metas():
    names = set(Llama(tiny(n_layers=1)).state_dict())
    assert names == {
        "tok_embeddings.weight", "norm.weight", "output.weight",
        "layers.0.attention.wq.weight", "layers.0.attention.wk.weight",
        "layers.0.attention.wv.weight", "layers.0.attention.wo.weight",
        "layers.0.feed_forward.w1.weight", "layers.0.feed_forward.w2.weight",
        "layers.0.feed_forward.w3.weight", "layers.0.attention_norm.weight",
        "layers.0.ffn_norm.weight",
    }


# --- parameter count -----------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": True}, {"n_kv_heads": 1},
                                       {"hidden_dim": 50}, {"ffn_dim_multiplier": 1.3}])
def test_count_parameters_matches_the_module(overrides):
    args = tiny(**overrides)
    model = Llama(args)
    assert count_parameters(args) == sum(p.numel() for p in model.parameters())


def test_count_parameters_llama2_7b_published():
    # Meta's Llama 2 7B: 6,738,415,616 parameters (the count of the released checkpoint)
    assert count_parameters(get_preset("llama2-7b")) == 6_738_415_616


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "course"])
def test_count_parameters_matches_transformers(name):
    # transformers' LlamaForCausalLM of the same shape, built on the meta device (no memory)
    from transformers import LlamaConfig, LlamaForCausalLM

    args = get_preset(name)
    config = LlamaConfig(
        hidden_size=args.dim, intermediate_size=args.ffn_hidden_dim,
        num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_kv_heads, vocab_size=args.vocab_size,
        tie_word_embeddings=args.tie_embeddings,
    )
    with torch.device("meta"):
        hf = LlamaForCausalLM(config)
    assert count_parameters(args) == hf.num_parameters()


# --- the model and its KV cache ------------------------------------------------------------


def test_forward_shape_and_dtype():
    model = Llama(tiny())
    logits = model(torch.randint(0, 64, (3, 7)))
    assert logits.shape == (3, 7, 64) and logits.dtype == torch.float32


def test_tied_embeddings_share_one_matrix():
    model = Llama(tiny(tie_embeddings=True))
    assert model.output.weight is model.tok_embeddings.weight


def test_sdpa_path_equals_explicit_path():
    model = randomize(Llama(tiny()))
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        explicit = model(tokens)
        fused = model.use_sdpa(True)(tokens)
    torch.testing.assert_close(fused, explicit, rtol=0, atol=ATOL)


@pytest.mark.parametrize("n_kv_heads", [4, 2], ids=["mha", "gqa"])
@pytest.mark.parametrize("use_sdpa", [False, True])
def test_cache_equals_full_recompute(n_kv_heads, use_sdpa):
    # prefill 5 tokens, then a chunk of 3, then decode one at a time: the logits at every
    # position equal those of one forward over the whole sequence
    model = randomize(Llama(tiny(n_kv_heads=n_kv_heads)), seed=7).use_sdpa(use_sdpa)
    tokens = torch.randint(0, 64, (2, 14), generator=torch.Generator().manual_seed(8))
    cache = KVCache(model.args, max_batch=2)
    with torch.no_grad():
        full = model(tokens)
        steps = [model(tokens[:, :5], 0, cache), model(tokens[:, 5:8], 5, cache)]
        steps += [model(tokens[:, pos : pos + 1], pos, cache) for pos in range(8, 14)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=ATOL)


def test_cache_smaller_batch_and_reuse():
    model = randomize(Llama(tiny()), seed=9)
    tokens = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(10))
    cache = KVCache(model.args, max_batch=4, max_seq_len=8)
    with torch.no_grad():
        model(torch.randint(0, 64, (4, 8)), 0, cache)  # fill with something else first
        out = torch.cat([model(tokens[:, :3], 0, cache), model(tokens[:, 3:], 3, cache)], 1)
        torch.testing.assert_close(out, model(tokens), rtol=0, atol=ATOL)
    assert cache.k[0].shape == (4, 8, 2, 12)


def test_position_errors():
    model = Llama(tiny(max_seq_len=8))
    with pytest.raises(ValueError, match=r"positions 6\.\.9 must lie in 0\.\.7"):
        model(torch.zeros(1, 4, dtype=torch.long), start_pos=6)
    cache = KVCache(model.args, max_batch=1, max_seq_len=4)
    with pytest.raises(ValueError, match="max_seq_len 4"):
        model(torch.zeros(1, 5, dtype=torch.long), 0, cache)
    with pytest.raises(ValueError, match="max_batch 1"):
        model(torch.zeros(2, 1, dtype=torch.long), 0, cache)
    with pytest.raises(ValueError, match=r"\(bsz, seqlen\)"):
        model(torch.zeros(5, dtype=torch.long))


def test_bfloat16_model_runs():
    model = Llama(tiny()).to(torch.bfloat16)
    cache = KVCache(model.args, max_batch=1, dtype=torch.bfloat16)
    tokens = torch.randint(0, 64, (1, 4))
    out = model(tokens, 0, cache)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert model.freqs_cis.dtype == torch.complex64  # the RoPE table survives .to(dtype)


def test_dynamic_rope_model_runs_past_the_original_length():
    scaling = {"type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 8}
    args = dataclasses.replace(tiny(), rope_scaling=scaling)
    model = randomize(Llama(args))
    with torch.no_grad():
        short = model(torch.arange(6)[None])
        long = model(torch.arange(20)[None])
    # up to 8 positions dynamic is plain RoPE; beyond, the frequencies change everywhere
    plain = randomize(Llama(tiny()))
    with torch.no_grad():
        torch.testing.assert_close(short, plain(torch.arange(6)[None]), rtol=0, atol=0)
        assert not torch.allclose(long, plain(torch.arange(20)[None]))
