"""Parity of minillama's Llama with transformers' LlamaForCausalLM, through the HF format
(minillama/formats/hf.py): load what transformers saves, save what transformers loads."""

import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest
import torch
from safetensors.torch import load_file, save_file

from minillama.config import ModelArgs, RopeScaling
from minillama.formats.hf import (
    HF_TO_META,
    config_from_hf,
    hf_to_meta_name,
    meta_to_hf_name,
    permute_hf_to_meta,
    permute_meta_to_hf,
    read_hf_config,
)
from minillama.model import Llama

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

# float32 logits of O(1) (see randomize): the two implementations differ only in summation
# order and in RoPE angles (float64 here, float32 there); measured max |diff| ~2e-6.
ATOL = 1e-5
SEQLEN = 24

# transformers LlamaConfig kwargs for each case: tiny, 2 layers, vocab 128-256
BASE = dict(num_hidden_layers=2, vocab_size=128, max_position_embeddings=32, rms_norm_eps=1e-5)
CASES = {
    "mha": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                intermediate_size=160),
    "gqa-8q-2kv-tied-theta5e5": dict(hidden_size=64, num_attention_heads=8,
                                     num_key_value_heads=2, intermediate_size=96,
                                     rope_theta=500000.0, tie_word_embeddings=True),
    "mqa-head_dim12": dict(hidden_size=96, num_attention_heads=8, num_key_value_heads=1,
                           intermediate_size=200, vocab_size=256),
    "gqa-head_dim10-tied": dict(hidden_size=80, num_attention_heads=8, num_key_value_heads=4,
                                intermediate_size=144, tie_word_embeddings=True),
    "linear": dict(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                   rope_parameters={"rope_type": "linear", "factor": 2.0}),
    # max_position_embeddings 16 < SEQLEN: transformers rescales for length 24
    "dynamic": dict(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                    max_position_embeddings=16,
                    rope_parameters={"rope_type": "dynamic", "factor": 2.0}),
    "llama3-theta5e5": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=128, max_position_embeddings=128,
                            rope_parameters={"rope_type": "llama3", "factor": 8.0,
                                             "rope_theta": 500000.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 16}),
    "yarn": dict(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=64,
                 rope_parameters={"rope_type": "yarn", "factor": 4.0,
                                  "original_max_position_embeddings": 16}),
    "yarn-custom-tied": dict(hidden_size=96, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=128, max_position_embeddings=64,
                             tie_word_embeddings=True,
                             rope_parameters={"rope_type": "yarn", "factor": 2.0,
                                              "original_max_position_embeddings": 32,
                                              "beta_fast": 16.0, "beta_slow": 2.0,
                                              "attention_factor": 1.2, "truncate": False}),
}


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight random, norms included, scaled so activations and logits are O(1):
    ATOL is then a strict bound, and swapped or mis-permuted tensors show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.dim() == 1:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
    return model.eval()


def hf_model(case: str, seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(**{**BASE, **CASES[case]})
    return randomize(LlamaForCausalLM(config), seed)


def random_tokens(vocab_size: int, bsz: int = 2, seqlen: int = SEQLEN) -> torch.Tensor:
    return torch.randint(0, vocab_size, (bsz, seqlen), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", CASES)
def test_parity_and_round_trip(case, tmp_path):
    hf = hf_model(case)
    hf.save_pretrained(tmp_path / "hf")
    ours = Llama.from_pretrained(tmp_path / "hf").eval()
    tokens = random_tokens(hf.config.vocab_size)
    with torch.no_grad():
        ref = hf(tokens).logits
        logits = ours(tokens)
    assert logits.shape == ref.shape == (2, SEQLEN, hf.config.vocab_size)
    assert ref.std() > 0.5  # O(1) logits: the tolerance below is meaningful
    torch.testing.assert_close(logits, ref, rtol=0, atol=ATOL)

    # ours -> transformers: same config, same weights, same logits
    ours.save_pretrained(tmp_path / "ours")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert type(back) is LlamaForCausalLM
    with torch.no_grad():
        torch.testing.assert_close(back(tokens).logits, ref, rtol=0, atol=ATOL)
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    assert read_hf_config(tmp_path / "ours") == ours.args


def test_start_pos_matches_transformers_position_ids(tmp_path):
    # without a cache, tokens at start_pos.. see only each other: transformers' position_ids
    hf = hf_model("gqa-8q-2kv-tied-theta5e5")
    hf.save_pretrained(tmp_path)
    ours = Llama.from_pretrained(tmp_path).eval()
    tokens = random_tokens(hf.config.vocab_size, seqlen=10)
    with torch.no_grad():
        ref = hf(tokens, position_ids=torch.arange(7, 17)[None]).logits
        torch.testing.assert_close(ours(tokens, start_pos=7), ref, rtol=0, atol=ATOL)


def test_reads_sharded_checkpoints(tmp_path):
    hf = hf_model("mha")
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ours = Llama.from_pretrained(tmp_path).eval()
    tokens = random_tokens(128)
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), hf(tokens).logits, rtol=0, atol=ATOL)


def test_writes_sharded_checkpoints(tmp_path):
    hf = hf_model("gqa-8q-2kv-tied-theta5e5")
    hf.save_pretrained(tmp_path / "hf")
    ours = Llama.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "one")  # first unsharded, then sharded in the same dir
    ours.save_pretrained(tmp_path / "one", max_shard_size=20_000)
    assert not (tmp_path / "one" / "model.safetensors").exists()  # no stale single file
    assert len(list((tmp_path / "one").glob("model-*-of-*.safetensors"))) > 1
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "one").eval()
    tokens = random_tokens(128)
    with torch.no_grad():
        torch.testing.assert_close(back(tokens).logits, hf(tokens).logits, rtol=0, atol=ATOL)
    assert Llama.from_pretrained(tmp_path / "one").args == ours.args


def test_loads_bfloat16_checkpoints_into_float32(tmp_path):
    hf = hf_model("mha").to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    ours = Llama.from_pretrained(tmp_path)
    expected = hf.model.layers[1].mlp.up_proj.weight.float()
    assert ours.layers[1].feed_forward.w3.weight.dtype == torch.float32
    assert torch.equal(ours.layers[1].feed_forward.w3.weight, expected)


# --- names and the q/k permutation ---------------------------------------------------------


def test_name_table_covers_both_models_exactly():
    hf = LlamaForCausalLM(LlamaConfig(**{**BASE, **CASES["mha"]}))
    ours = Llama(config_from_hf(hf.config.to_dict()))
    hf_names = set(hf.state_dict())
    assert {meta_to_hf_name(n) for n in ours.state_dict()} == hf_names
    assert {hf_to_meta_name(n) for n in hf_names} == set(ours.state_dict())
    assert len(set(HF_TO_META.values())) == len(HF_TO_META)  # one-to-one


def test_permutation_of_one_head():
    # Meta rows (2i, 2i+1) rotate together; HF wants pair i in rows i and i + head_dim/2
    w = torch.arange(6.0)[:, None]  # one head, head_dim 6, dim 1
    assert permute_meta_to_hf(w, 1)[:, 0].tolist() == [0, 2, 4, 1, 3, 5]
    assert permute_hf_to_meta(w, 1)[:, 0].tolist() == [0, 3, 1, 4, 2, 5]


@pytest.mark.parametrize("n_heads, head_dim", [(4, 8), (3, 12), (2, 10)])
def test_permutations_are_inverse(n_heads, head_dim):
    w = torch.randn(n_heads * head_dim, 7)
    assert torch.equal(permute_hf_to_meta(permute_meta_to_hf(w, n_heads), n_heads), w)
    assert torch.equal(permute_meta_to_hf(permute_hf_to_meta(w, n_heads), n_heads), w)
    # rows stay inside their head
    moved = permute_meta_to_hf(w, n_heads).view(n_heads, head_dim, 7)
    for h in range(n_heads):
        rows = w.view(n_heads, head_dim, 7)[h]
        assert sorted(moved[h].sum(1).tolist()) == sorted(rows.sum(1).tolist())


# --- errors name the tensor ----------------------------------------------------------------


def saved(tmp_path, case="mha"):
    hf_model(case).save_pretrained(tmp_path)
    return tmp_path, load_file(tmp_path / "model.safetensors")


def rewrite(path, tensors):
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def test_missing_tensor_is_named(tmp_path):
    path, tensors = saved(tmp_path)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    rewrite(path, tensors)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight \(160, 64\)"):
        Llama.from_pretrained(path)


def test_missing_lm_head_when_untied_is_named(tmp_path):
    path, tensors = saved(tmp_path)
    del tensors["lm_head.weight"]
    rewrite(path, tensors)
    with pytest.raises(ValueError, match=r"lm_head\.weight \(128, 64\)"):
        Llama.from_pretrained(path)


def test_unknown_tensor_is_named(tmp_path):
    path, tensors = saved(tmp_path)
    tensors["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(64)
    rewrite(path, tensors)
    with pytest.raises(ValueError, match=r"unknown transformers tensor "
                                         r"'model\.layers\.0\.self_attn\.q_proj\.bias'"):
        Llama.from_pretrained(path)


def test_layer_beyond_config_is_named(tmp_path):
    path, tensors = saved(tmp_path)
    tensors["model.layers.2.input_layernorm.weight"] = torch.ones(64)
    rewrite(path, tensors)
    with pytest.raises(ValueError, match=r"'model\.layers\.2\.input_layernorm\.weight'.*n_layers=2"):
        Llama.from_pretrained(path)


def test_shape_mismatch_is_named(tmp_path):
    path, tensors = saved(tmp_path)
    tensors["model.layers.0.mlp.gate_proj.weight"] = torch.zeros(150, 64)
    rewrite(path, tensors)
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.mlp\.gate_proj\.weight' in "
                                         r"model\.safetensors has shape \(150, 64\), "
                                         r"expected \(160, 64\)"):
        Llama.from_pretrained(path)


def test_tied_lm_head_must_equal_embeddings(tmp_path):
    path, tensors = saved(tmp_path, "gqa-8q-2kv-tied-theta5e5")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    rewrite(path, tensors)
    Llama.from_pretrained(path)  # an equal copy is fine
    tensors["lm_head.weight"] = tensors["lm_head.weight"] + 1
    rewrite(path, tensors)
    with pytest.raises(ValueError, match=r"'lm_head\.weight'.*differs"):
        Llama.from_pretrained(path)


def test_shards_must_match_the_index(tmp_path):
    hf_model("mha").save_pretrained(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / shard).unlink()
    with pytest.raises(FileNotFoundError, match=shard):
        Llama.from_pretrained(tmp_path)


def test_truncated_file_is_rejected(tmp_path):
    path, _ = saved(tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read"):
        Llama.from_pretrained(path)


def test_pickle_checkpoints_are_not_read(tmp_path):
    path, _ = saved(tmp_path)
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        Llama.from_pretrained(path)


GOOD = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 128}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"head_dim": 32}, r"head_dim 32 != hidden_size / num_attention_heads"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"model_type": "mistral"}, "model_type 'mistral'"),
        ({"hidden_size": None}, r"lacks \['hidden_size'\]"),
        ({"rope_parameters": {"rope_type": "longrope", "factor": 2.0}}, "rope_type 'longrope'"),
        ({"rope_parameters": {"rope_type": "yarn", "factor": 2.0, "mscale": 1.0}}, "mscale"),
        ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
        ({"num_key_value_heads": 3}, "divisible by n_kv_heads"),
    ],
)
def test_bad_configs_are_rejected(change, message):
    cfg = {**GOOD, **change}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        config_from_hf(cfg)


def test_config_translation_v4_keys_and_defaults():
    # transformers 4.x wrote rope_theta and rope_scaling; absent keys take LlamaConfig defaults
    args = config_from_hf({**GOOD, "rope_theta": 500000.0,
                           "rope_scaling": {"type": "linear", "factor": 4.0}})
    assert args == ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, vocab_size=128,
                             hidden_dim=128, norm_eps=1e-6, rope_theta=500000.0,
                             rope_scaling=RopeScaling("linear", 4.0), max_seq_len=2048,
                             tie_embeddings=False)


def test_bad_directories(tmp_path):
    with pytest.raises(ValueError, match="nothing recognisable.*config.json"):
        Llama.from_pretrained(tmp_path)  # the one loader lists every format it accepts
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Llama.from_pretrained(tmp_path)


def test_static_ntk_cannot_be_saved(tmp_path):
    model = Llama(ModelArgs(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=16,
                            rope_scaling={"type": "ntk", "factor": 2.0}))
    with pytest.raises(ValueError, match="'ntk'.*no transformers rope_type"):
        model.save_pretrained(tmp_path)
    assert not any(tmp_path.iterdir())  # refused before writing anything
