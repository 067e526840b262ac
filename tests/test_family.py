"""Tests for minillama/family.py: parameter counts, weight and KV-cache bytes, the tables.

The published counts, re-derived by hand (per layer: attention = dim * (2 * n_heads +
2 * n_kv_heads) * head_dim, feed-forward = 3 * dim * hidden, norms = 2 * dim; then the
embeddings, the output unless tied, and the final norm):

    Llama 2 7B    32 x (67,108,864 + 135,266,304 + 8,192) = 6,476,267,520
                  + 2 x 32000 x 4096 = 262,144,000 + 4096              = 6,738,415,616
    Llama 2 13B   40 x (104,857,600 + 212,336,640 + 10,240) = 12,688,179,200
                  + 2 x 32000 x 5120 = 327,680,000 + 5120              = 13,015,864,320
    Llama 2 70B   80 x (150,994,944 + 704,643,072 + 16,384) = 68,452,352,000
                  + 2 x 32000 x 8192 = 524,288,000 + 8192              = 68,976,648,192
    Code Llama 7B Llama 2 7B + 2 x 16 x 4096 = 131,072 more            = 6,738,546,688
    TinyLlama     22 x (9,437,184 + 34,603,008 + 4,096) = 968,974,336
                  + 2 x 32000 x 2048 = 131,072,000 + 2048              = 1,100,048,384
    Llama 3 8B    32 x (41,943,040 + 176,160,768 + 8,192) = 6,979,584,000
                  + 2 x 128256 x 4096 = 1,050,673,152 + 4096           = 8,030,261,248
    Llama 3.2 1B  16 x (10,485,760 + 50,331,648 + 4,096) = 973,144,064
                  + 1 x 128256 x 2048 = 262,668,288 (tied) + 2048      = 1,235,814,400
"""

import dataclasses

import numpy as np
import pytest

from minillama.config import ModelArgs, get_preset, weight_shapes
from minillama.family import (
    FAMILY,
    GROUPS,
    PUBLISHED_PARAMS,
    count_parameters,
    family_table,
    kv_cache_bytes,
    memory_table,
    parameter_breakdown,
    weight_bytes,
)
from minillama.quant import BlockSizeError, bits_per_weight, nf4_quantize, q4_0_quantize, q8_0_quantize

# intermediate_size of each model's HF config.json
PUBLISHED_HIDDEN = {"llama2-7b": 11008, "llama2-13b": 13824, "llama2-70b": 28672,
                    "codellama-7b": 11008, "tinyllama-1.1b": 5632, "llama3-8b": 14336,
                    "llama3.2-1b": 8192}

# dim 64, 2 layers, GQA 4/2 (head_dim 16), hidden 128, vocab 128, untied: per layer the
# matrices hold 64*64 + 32*64 + 32*64 + 64*64 + 3 * 128*64 = 36,864 values, so 73,728 for
# both layers plus 2 * 128*64 = 16,384 for embeddings and output: 90,112 in 16 matrices;
# norms 2 * 2 * 64 + 64 = 320 values.
SMALL = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128, hidden_dim=128,
                  tie_embeddings=False)


def test_family_names_are_presets():
    assert all(get_preset(n) for n in FAMILY)
    assert set(PUBLISHED_PARAMS) <= set(FAMILY)
    assert len(set(FAMILY)) == len(FAMILY)


@pytest.mark.parametrize("name, published", PUBLISHED_PARAMS.items())
def test_count_matches_published(name, published):
    assert count_parameters(get_preset(name)) == published


@pytest.mark.parametrize("name, hidden", PUBLISHED_HIDDEN.items())
def test_hidden_matches_published(name, hidden):
    assert get_preset(name).ffn_hidden_dim == hidden


def test_new_presets_fields():
    code, tiny, l32 = get_preset("codellama-7b"), get_preset("tinyllama-1.1b"), get_preset("llama3.2-1b")
    assert (code.vocab_size, code.rope_theta, code.max_seq_len, code.tie_embeddings) \
        == (32016, 1e6, 16384, False)
    assert (tiny.dim, tiny.n_layers, tiny.n_heads, tiny.n_kv_heads, tiny.max_seq_len) \
        == (2048, 22, 32, 4, 2048)
    s = l32.rope_scaling
    assert (s.type, s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max_position_embeddings) \
        == ("llama3", 32.0, 1.0, 4.0, 8192)
    assert (l32.rope_theta, l32.max_seq_len, l32.tie_embeddings) == (500000.0, 131072, True)


def test_breakdown():
    b = parameter_breakdown(get_preset("llama2-7b"))
    assert list(b) == list(GROUPS)
    assert b["attention"] == 32 * 4 * 4096**2
    assert b["feed_forward"] == 32 * 3 * 4096 * 11008
    assert b["norms"] == (2 * 32 + 1) * 4096
    assert b["embeddings"] == b["output"] == 32000 * 4096
    tied = parameter_breakdown(get_preset("llama3.2-1b"))
    assert tied["output"] == 0 and tied["embeddings"] == 128256 * 2048
    for name in FAMILY:
        assert sum(parameter_breakdown(get_preset(name)).values()) == count_parameters(get_preset(name))


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.mark.parametrize("name", FAMILY)
def test_count_matches_transformers_on_meta_device(transformers, name):
    """An independent count: transformers builds the modules itself, on the meta device (no memory)."""
    torch = pytest.importorskip("torch")
    from minillama.formats.hf import config_to_hf

    args = get_preset(name)
    config = transformers.LlamaConfig(**config_to_hf(args))
    assert config.intermediate_size == args.ffn_hidden_dim
    assert config.tie_word_embeddings == args.tie_embeddings
    with torch.device("meta"):  # ~0.05 s even for 70B; the first build also imports modeling_llama
        model = transformers.LlamaForCausalLM(config)
    # parameters() yields a tied weight once
    assert sum(p.numel() for p in model.parameters()) == count_parameters(args)


def test_weight_bytes_by_hand():
    matrices, norms, n_matrices = 90_112, 320, 16
    assert count_parameters(SMALL) == matrices + norms
    assert weight_bytes(SMALL, "fp32") == 4 * 90_432
    assert weight_bytes(SMALL, "fp16") == weight_bytes(SMALL, "bf16") == 2 * 90_432
    assert weight_bytes(SMALL, "q8_0") == 2816 * 34 + 4 * norms == 97_024  # 90,112 / 32 = 2816 blocks
    assert weight_bytes(SMALL, "q4_0") == 2816 * 18 + 4 * norms == 51_968
    assert weight_bytes(SMALL, "nf4") == 1408 * 36 + 4 * norms == 51_968  # 1408 blocks of 64
    # every matrix here has at most 256 blocks: one fp32 scale and one fp32 offset each
    assert weight_bytes(SMALL, "nf4", double_quant=True) == 1408 * 33 + n_matrices * 8 + 4 * norms == 47_872


def test_weight_bytes_tied_counts_embedding_once():
    tied = dataclasses.replace(SMALL, tie_embeddings=True)
    assert weight_bytes(SMALL, "fp16") - weight_bytes(tied, "fp16") == 2 * 128 * 64
    assert weight_bytes(SMALL, "q4_0") - weight_bytes(tied, "q4_0") == 128 * 64 // 32 * 18


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "nf4"])
def test_constants_match_bits_per_weight(fmt):
    # every matrix 16,384 values = 256 NF4 blocks, so double quantization needs whole scales
    args = ModelArgs(dim=128, n_layers=1, n_heads=4, n_kv_heads=4, vocab_size=128, hidden_dim=128,
                     tie_embeddings=False)
    n_matrices, values, norm_bytes = 9, 9 * 128 * 128, 4 * 3 * 128
    assert (weight_bytes(args, fmt) - norm_bytes) * 8 / values == bits_per_weight(fmt)
    if fmt == "nf4":  # less the 4-byte offset per tensor, which bits_per_weight leaves out
        dq = weight_bytes(args, fmt, double_quant=True) - norm_bytes - 4 * n_matrices
        assert dq * 8 / values == bits_per_weight(fmt, double_quant=True)


@pytest.mark.parametrize("tie", [False, True])
def test_weight_bytes_match_real_quantizers(tie):
    args = dataclasses.replace(SMALL, tie_embeddings=tie)
    rng = np.random.default_rng(0)
    sizes = dict.fromkeys(["q8_0", "q4_0", "nf4", "nf4_dq"], 0)
    for name, shape in weight_shapes(args).items():
        w = rng.standard_normal(shape, dtype=np.float32)
        if w.ndim == 1:  # norms stay float32
            for k in sizes:
                sizes[k] += w.nbytes
            continue
        sizes["q8_0"] += q8_0_quantize(w, name=name).blocks.nbytes
        sizes["q4_0"] += q4_0_quantize(w, name=name).blocks.nbytes
        q = nf4_quantize(w, name=name)
        sizes["nf4"] += q.packed.nbytes + q.absmax.nbytes
        q = nf4_quantize(w, double_quant=True, name=name)
        d = q.double
        sizes["nf4_dq"] += q.packed.nbytes + d.codes.nbytes + d.scales.nbytes + np.float32(d.offset).nbytes
    assert sizes["q8_0"] == weight_bytes(args, "q8_0")
    assert sizes["q4_0"] == weight_bytes(args, "q4_0")
    assert sizes["nf4"] == weight_bytes(args, "nf4")
    assert sizes["nf4_dq"] == weight_bytes(args, "nf4", double_quant=True)


def test_weight_bytes_errors():
    with pytest.raises(BlockSizeError, match="tensor tok_embeddings.weight: nf4"):
        weight_bytes(get_preset("stories15M"), "nf4")  # dim 288 = 4.5 blocks of 64
    assert weight_bytes(get_preset("stories15M"), "q4_0") > 0  # 288 = 9 blocks of 32
    with pytest.raises(ValueError, match="unknown format 'q4_k'"):
        weight_bytes(SMALL, "q4_k")
    with pytest.raises(ValueError, match="nf4 only"):
        weight_bytes(SMALL, "q8_0", double_quant=True)


def test_kv_cache_bytes():
    # K and V x layers x kv heads x head_dim x tokens x 2 bytes
    assert kv_cache_bytes(get_preset("llama2-7b"), 4096) == 2 * 32 * 32 * 128 * 4096 * 2 == 2 * 2**30
    assert kv_cache_bytes(get_preset("llama3-8b"), 8192) == 2**30  # GQA: 8 kv heads of 32
    assert kv_cache_bytes(SMALL, 10, batch=3, bytes_per_value=4) == 2 * 2 * 2 * 16 * 10 * 3 * 4
    assert kv_cache_bytes(SMALL, 32, bytes_per_value=34 / 32) == 2 * 2 * 2 * 16 * 34
    for bad in (dict(seq_len=0), dict(seq_len=2.0), dict(seq_len=4, batch=True),
                dict(seq_len=4, bytes_per_value=0)):
        with pytest.raises(ValueError):
            kv_cache_bytes(SMALL, **bad)


def _rows(table: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in table.splitlines()}


def test_memory_table():
    table = memory_table()
    assert table == memory_table()  # deterministic
    rows = _rows(table)
    for name in FAMILY:
        assert name in rows
    lines = table.splitlines()
    assert len({len(line) for line in lines[:len(FAMILY) + 2]}) == 1  # fixed width
    # columns: model, params, fp16, q8_0, q4_0, nf4, context, KV fp16
    _, params, fp16, _, _, _, context, kv = rows["llama2-7b"]
    assert f"{6_738_415_616 * 2 / 2**30:.2f}" == "12.55" == fp16
    assert (params, context, kv) == ("6.74B", "4096", "2.00")
    assert rows["codellama-7b"][-1] == "8.00"  # 16384 tokens: 4 x Llama 2 7B's 2 GiB
    assert "n/a" not in table


def test_memory_table_seq_len_and_na():
    table = memory_table(["stories15M", "llama3.2-1b"], fmts=("fp32", "nf4"), seq_len=1024)
    rows = _rows(table)
    assert rows["stories15M"][3] == "n/a" and "n/a:" in table
    assert rows["llama3.2-1b"][-2:] == ["1024", "0.03"]  # 2 x 16 x 8 x 64 x 1024 x 2 bytes = 32 MiB


def test_family_table():
    table = family_table(FAMILY)
    assert table == family_table(FAMILY)
    rows = _rows(table)
    assert rows["llama3.2-1b"][-5:] == ["llama3", "x32", "yes", "1,235,814,400", "1,235,814,400"]
    assert rows["codellama-7b"][8] == "1000000"
    assert rows["course"][-1] == "-"


def test_count_matches_model_closed_form():
    # minillama.model.count_parameters is a closed formula; ours sums weight_shapes
    model = pytest.importorskip("minillama.model")
    from minillama.config import PRESETS

    for name, args in PRESETS.items():
        assert count_parameters(args) == model.count_parameters(args), name
