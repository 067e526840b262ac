"""Tests for minillama/formats/meta.py: Meta's params.json + consolidated.NN.pth checkpoints.

Everything the format stores is stored as is, so tensors and logits are compared bit for bit
(torch.equal), never within a tolerance. The expectations come from outside the module:
the shard axes from the fairscale layer each tensor is in Meta's model.py (ColumnParallelLinear
splits out_features = weight dim 0, RowParallelLinear in_features = dim 1, ParallelEmbedding
embedding_dim = dim 1), the FFN rule from Meta's FeedForward (meta_hidden below), and the
params.json of Meta's published models with their published FFN widths (11008, 28672, 14336).
The one tolerance: the tensor-parallel simulation sums partial products in another order than
a single matmul, in float64: RANK_SUM_ATOL = 1e-12.
"""

import dataclasses
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network

import numpy as np
import pytest
import torch
from helpers import randomize

from minillama.config import ModelArgs, RopeScaling, get_preset, weight_shapes
from minillama.formats import meta
from minillama.formats.meta import (
    PARAMS_FILE,
    SHARD_AXES,
    args_to_params,
    detect_meta,
    merge_shards,
    params_to_args,
    read_meta,
    shard_axis,
    split_for_shards,
    write_meta,
)
from minillama.model import Llama

RANK_SUM_ATOL = 1e-12

# The fairscale layer of each tensor in Meta's Llama 2 model.py -> the weight dim it splits
META_AXES = {
    "tok_embeddings.weight": 1,  # ParallelEmbedding: embedding_dim
    "output.weight": 0,  # ColumnParallelLinear: out_features
    "attention.wq.weight": 0, "attention.wk.weight": 0, "attention.wv.weight": 0,  # Column
    "attention.wo.weight": 1,  # RowParallelLinear: in_features
    "feed_forward.w1.weight": 0, "feed_forward.w3.weight": 0,  # Column
    "feed_forward.w2.weight": 1,  # Row
    "attention_norm.weight": None, "ffn_norm.weight": None, "norm.weight": None,  # replicated
}
# Fields of Meta's ModelArgs dataclasses (llama/model.py of the Llama 2 and Llama 3.1 repos)
LLAMA2_FIELDS = {"dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
                 "ffn_dim_multiplier", "norm_eps", "max_batch_size", "max_seq_len"}
LLAMA31_FIELDS = LLAMA2_FIELDS | {"rope_theta", "use_scaled_rope"}

# Meta's published params.json files
LLAMA2_7B = {"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-05,
             "vocab_size": -1}
LLAMA2_70B = {"dim": 8192, "multiple_of": 4096, "ffn_dim_multiplier": 1.3, "n_heads": 64,
              "n_kv_heads": 8, "n_layers": 80, "norm_eps": 1e-05, "vocab_size": -1}
LLAMA3_8B = {"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
             "multiple_of": 1024, "ffn_dim_multiplier": 1.3, "norm_eps": 1e-05, "rope_theta": 500000.0}
LLAMA31_8B = {**LLAMA3_8B, "use_scaled_rope": True}


def meta_axis(name: str):
    return META_AXES[name.split(".", 2)[2] if name.startswith("layers.") else name]


def meta_hidden(params: dict) -> int:
    """The FFN width as Meta's FeedForward.__init__ computes it from params.json."""
    hidden = int(2 * (4 * params["dim"]) / 3)
    if params.get("ffn_dim_multiplier") is not None:
        hidden = int(params["ffn_dim_multiplier"] * hidden)
    m = params["multiple_of"]
    return m * ((hidden + m - 1) // m)


def tiny(**overrides) -> ModelArgs:
    """GQA 4 -> 2 heads of 16; Meta's rule gives hidden 192 (multiple_of 32)."""
    base = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, max_seq_len=64,
                tie_embeddings=False)
    return ModelArgs(**{**base, **overrides})


TINY_PARAMS = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 96,
               "multiple_of": 32, "norm_eps": 1e-05, "max_seq_len": 64}  # tiny(), written by hand
VARIANTS = {"untied": {}, "tied": {"tie_embeddings": True}, "hidden100": {"hidden_dim": 100}}


def model_and_sd(args: ModelArgs, seed: int = 0) -> tuple[Llama, dict]:
    model = randomize(Llama(args), seed)
    return model, {k: v for k, v in model.state_dict().items() if k in weight_shapes(args)}


def hand_shards(sd: dict, n: int, axes=meta_axis) -> list[dict]:
    """Shards built here with torch.chunk along Meta's axes, replicated tensors copied."""
    shards = [{} for _ in range(n)]
    for name, t in sd.items():
        axis = axes(name)
        parts = [t] * n if axis is None else torch.chunk(t, n, dim=axis)
        for k in range(n):
            shards[k][name] = parts[k].clone()
    return shards


def save_dir(path, params: dict, shards: list[dict]):
    path.mkdir(exist_ok=True)
    (path / PARAMS_FILE).write_text(json.dumps(params))
    for k, shard in enumerate(shards):
        torch.save(shard, path / f"consolidated.{k:02d}.pth")
    return path


def logits(model: Llama) -> torch.Tensor:
    tokens = torch.arange(2 * 16).reshape(2, 16) % model.args.vocab_size
    with torch.no_grad():
        return model(tokens)


def load(args: ModelArgs, sd: dict) -> Llama:
    model = Llama(args)
    full = dict(sd)
    if args.tie_embeddings:
        full["output.weight"] = sd["tok_embeddings.weight"]
    model.load_state_dict(full)
    return model.eval()


def shard_names(n: int) -> list[str]:
    return [f"consolidated.{k:02d}.pth" for k in range(n)]


# ---------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_shards", [1, 2, 4])
@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_is_bit_identical(tmp_path, variant, n_shards):
    args = tiny(**VARIANTS[variant])
    _, sd = model_and_sd(args, seed=n_shards)
    write_meta(tmp_path, args, sd, n_shards=n_shards)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([PARAMS_FILE, *shard_names(n_shards)])
    assert detect_meta(tmp_path)

    back_args, back = read_meta(tmp_path)
    if args.hidden_dim is None:
        assert back_args == args
    else:  # params.json stores the width as Meta's rule only: same model, hidden_dim None
        assert back_args.hidden_dim is None and back_args.ffn_hidden_dim == args.hidden_dim
        assert dataclasses.replace(back_args, hidden_dim=args.hidden_dim, multiple_of=args.multiple_of,
                                   ffn_dim_multiplier=args.ffn_dim_multiplier) == args
    assert list(back) == list(sd)  # tied: no output.weight
    for name, t in sd.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name


def test_bfloat16_and_numpy_inputs_keep_their_values(tmp_path):
    args = tiny()
    _, sd = model_and_sd(args, seed=3)
    bf16 = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    write_meta(tmp_path / "bf16", args, bf16, n_shards=2)
    _, back = read_meta(tmp_path / "bf16")
    for name, t in bf16.items():
        assert back[name].dtype == torch.bfloat16 and torch.equal(back[name], t), name
    write_meta(tmp_path / "np", args, {k: v.numpy() for k, v in sd.items()}, n_shards=2)
    _, back = read_meta(tmp_path / "np")
    for name, t in sd.items():
        assert back[name].dtype == torch.float32 and torch.equal(back[name], t), name


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_loaded_model_gives_the_same_logits(tmp_path, tied):
    args = tiny(tie_embeddings=tied)
    model, sd = model_and_sd(args, seed=7)
    write_meta(tmp_path, args, model.state_dict(), n_shards=2)  # tied: output.weight included
    back_args, back = read_meta(tmp_path)
    assert torch.equal(logits(load(back_args, back)), logits(model))


def test_tied_models_store_output_and_read_back_tied(tmp_path):
    args = tiny(tie_embeddings=True)
    _, sd = model_and_sd(args, seed=4)
    write_meta(tmp_path, args, sd, n_shards=2)
    files = [torch.load(tmp_path / f, weights_only=True) for f in shard_names(2)]
    assert torch.equal(torch.cat([f["output.weight"] for f in files], dim=0), sd["tok_embeddings.weight"])
    assert read_meta(tmp_path)[0].tie_embeddings

    # untied args whose output is bit-identical to tok_embeddings: read as tied (documented)
    untied = {**sd, "output.weight": sd["tok_embeddings.weight"].clone()}
    write_meta(tmp_path / "same", tiny(), untied)
    back_args, back = read_meta(tmp_path / "same")
    assert back_args.tie_embeddings and "output.weight" not in back
    # one bit apart: untied
    out = untied["output.weight"].clone()
    out.view(torch.int32)[3, 5] ^= 1
    write_meta(tmp_path / "apart", tiny(), {**untied, "output.weight": out})
    back_args, back = read_meta(tmp_path / "apart")
    assert not back_args.tie_embeddings and torch.equal(back["output.weight"], out)


def test_rewriting_with_fewer_shards_removes_the_stale_ones(tmp_path):
    args = tiny()
    write_meta(tmp_path, args, model_and_sd(args, seed=1)[1], n_shards=4)
    _, sd = model_and_sd(args, seed=2)
    write_meta(tmp_path, args, sd, n_shards=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([PARAMS_FILE, *shard_names(2)])
    _, back = read_meta(tmp_path)
    assert all(torch.equal(back[k], v) for k, v in sd.items())


# ---------------------------------------------------------------------------------------
# The shard rule, checked independently
# ---------------------------------------------------------------------------------------


def test_shard_axes_are_meta_parallel_layers():
    assert SHARD_AXES == META_AXES
    assert shard_axis("layers.3.attention.wo.weight") == 1
    assert shard_axis("layers.12.feed_forward.w3.weight") == 0
    assert shard_axis("layers.0.ffn_norm.weight") is None
    assert shard_axis("output.weight") == 0 and shard_axis("tok_embeddings.weight") == 1
    for bad in ("layers.0.norm.weight", "rope.freqs", "attention.wq.weight", "layers.x.attention.wq.weight"):
        with pytest.raises(ValueError, match=r"unknown tensor .*known: tok_embeddings\.weight.*"
                                             r"layers\.\{l\}\.attention\.wq\.weight"):
            shard_axis(bad)


@pytest.mark.parametrize("n", [2, 4])
def test_hand_made_shards_are_merged_back(tmp_path, n):
    args = tiny()
    model, sd = model_and_sd(args, seed=n)
    shards = hand_shards(sd, n)
    back_args, back = read_meta(save_dir(tmp_path / "hand", TINY_PARAMS, shards))
    assert back_args == args
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    assert torch.equal(logits(load(back_args, back)), logits(model))

    # and write_meta writes exactly these shards, each tensor in a storage of its own
    write_meta(tmp_path / "ours", args, sd, n_shards=n)
    for k, name in enumerate(shard_names(n)):
        ours = torch.load(tmp_path / "ours" / name, weights_only=True)
        assert ours.keys() == shards[k].keys()
        for key, t in ours.items():
            assert torch.equal(t, shards[k][key]), (name, key)
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), (name, key)


def test_a_wrong_axis_gives_a_different_model():
    """Merging the hand-made shards of any one split tensor along the other axis (reshaped to
    fit) changes the logits: the round trips above could not pass with a wrong axis."""
    args = tiny()
    model, sd = model_and_sd(args, seed=5)
    want = logits(model)
    shards = hand_shards(sd, 2)
    kinds = [k for k, axis in META_AXES.items() if axis is not None]
    assert len(kinds) == 9
    for kind in kinds:
        name = kind if kind in sd else f"layers.1.{kind}"
        parts = [s[name] for s in shards]
        right = torch.cat(parts, dim=meta_axis(name))
        wrong = torch.cat(parts, dim=1 - meta_axis(name)).reshape(right.shape)
        assert torch.equal(right, sd[name])
        got = logits(load(args, {**sd, name: wrong}))
        assert (got - want).abs().max() > 1e-3, kind


def test_each_rank_computes_its_slice_with_its_shards(tmp_path):
    """Meta's tensor parallelism run by hand on write_meta's shards: column-parallel w1/w3 and
    output give slices of their outputs, row-parallel w2 partial sums, ParallelEmbedding slices
    of the embedding's features."""
    args = tiny()
    _, sd = model_and_sd(args, seed=6)
    n = 4
    write_meta(tmp_path, args, sd, n_shards=n)
    ranks = [{k: v.double() for k, v in torch.load(tmp_path / f, weights_only=True).items()}
             for f in shard_names(n)]
    full = {k: v.double() for k, v in sd.items()}
    x = torch.randn(5, args.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    silu = torch.nn.functional.silu

    def ffn(w: dict) -> torch.Tensor:
        w1, w2, w3 = (w[f"layers.0.feed_forward.w{i}.weight"] for i in (1, 2, 3))
        return (silu(x @ w1.T) * (x @ w3.T)) @ w2.T

    torch.testing.assert_close(sum(ffn(r) for r in ranks), ffn(full), rtol=0, atol=RANK_SUM_ATOL)
    out = torch.cat([x @ r["output.weight"].T for r in ranks], dim=-1)  # gathered slices
    assert out.shape == (5, args.vocab_size)
    torch.testing.assert_close(out, x @ full["output.weight"].T, rtol=0, atol=RANK_SUM_ATOL)
    tokens = torch.tensor([3, 0, 95, 3])
    emb = torch.cat([r["tok_embeddings.weight"][tokens] for r in ranks], dim=-1)
    assert torch.equal(emb, full["tok_embeddings.weight"][tokens])


def test_llama3_vocab_parallel_embedding_is_recognized(tmp_path):
    args = tiny()
    _, sd = model_and_sd(args, seed=8)
    shards = hand_shards(sd, 2)
    rows = torch.chunk(sd["tok_embeddings.weight"], 2, dim=0)  # VocabParallelEmbedding
    for k in range(2):
        shards[k]["tok_embeddings.weight"] = rows[k].clone()
    _, back = read_meta(save_dir(tmp_path, TINY_PARAMS, shards))
    assert torch.equal(back["tok_embeddings.weight"], sd["tok_embeddings.weight"])


def test_split_and_merge_are_inverse_for_torch_and_numpy():
    t = torch.arange(24.0).reshape(4, 6)
    for name, axis in [("layers.0.attention.wq.weight", 0), ("layers.0.attention.wo.weight", 1)]:
        for x in (t, t.numpy()):
            parts = split_for_shards(name, x, 2)
            assert [tuple(p.shape) for p in parts] == [(2, 6) if axis == 0 else (4, 3)] * 2
            np.testing.assert_array_equal(np.asarray(parts[1]), np.split(t.numpy(), 2, axis)[1])
            np.testing.assert_array_equal(np.asarray(merge_shards(name, parts)), t.numpy())
    norm = torch.ones(6)
    assert split_for_shards("norm.weight", norm, 3) == [norm] * 3
    assert merge_shards("norm.weight", [norm, norm.clone()]) is norm
    with pytest.raises(ValueError, match=r"n_shards=4 does not divide layers.0.attention.wo.weight's "
                                         r"size 6 along dim 1.*accepted: \[1, 2, 3, 6\]"):
        split_for_shards("layers.0.attention.wo.weight", t, 4)
    with pytest.raises(ValueError, match="n_shards is 0; accepted: a positive int"):
        split_for_shards("norm.weight", norm, 0)
    with pytest.raises(ValueError, match=r"replicated tensor 'norm.weight' in shard 2 \(consolidated.02"):
        merge_shards("norm.weight", [norm, norm, norm * 2])
    with pytest.raises(ValueError, match=r"'output.weight' in shard 1 .* has shape \(3, 6\)"):
        merge_shards("output.weight", [t[:2], t[:3]])


# ---------------------------------------------------------------------------------------
# params.json
# ---------------------------------------------------------------------------------------


def test_llama2_params():
    args = params_to_args(LLAMA2_7B, vocab_size=32000)
    assert args.ffn_hidden_dim == 11008 and args.n_kv_heads == 32 and args.vocab_size == 32000
    assert args == get_preset("llama2-7b")  # theta 10000, no scaling, 4096 positions, untied
    args = params_to_args(LLAMA2_70B, vocab_size=32000)
    assert args.ffn_hidden_dim == 28672 and args.n_kv_heads == 8
    assert args == get_preset("llama2-70b")
    # Llama 1 7B: norm_eps 1e-6, same shape
    assert params_to_args({**LLAMA2_7B, "norm_eps": 1e-06}, vocab_size=32000).ffn_hidden_dim == 11008
    with pytest.raises(ValueError, match="vocab_size is -1 .*pass vocab_size"):
        params_to_args(LLAMA2_7B)
    with pytest.raises(ValueError, match="FFN width 11008 .* w1 has 11000 rows"):
        params_to_args(LLAMA2_7B, vocab_size=32000, hidden_dim=11000)


def test_llama3_params():
    args = params_to_args(LLAMA31_8B)
    assert args.ffn_hidden_dim == 14336 and args.vocab_size == 128256 and args.rope_theta == 500000.0
    assert args.rope_scaling == RopeScaling("llama3", factor=8.0, original_max_position_embeddings=8192,
                                            low_freq_factor=1.0, high_freq_factor=4.0)
    assert args == dataclasses.replace(get_preset("llama3.1-8b"), max_seq_len=4096)
    args = params_to_args(LLAMA3_8B)
    assert args.rope_scaling is None
    assert args == dataclasses.replace(get_preset("llama3-8b"), max_seq_len=4096)
    assert params_to_args({**LLAMA3_8B, "use_scaled_rope": False}).rope_scaling is None
    with pytest.raises(ValueError, match="vocab_size is 128256, but 32000 was given"):
        params_to_args(LLAMA3_8B, vocab_size=32000)


def test_published_params_are_written_back_as_meta_wrote_them():
    assert args_to_params(params_to_args(LLAMA31_8B)) == LLAMA31_8B
    assert args_to_params(params_to_args(LLAMA3_8B)) == LLAMA3_8B
    assert args_to_params(params_to_args(LLAMA2_70B, 32000)) == {**LLAMA2_70B, "vocab_size": 32000}
    p = args_to_params(params_to_args(LLAMA2_7B, 32000))
    assert p == {**LLAMA2_7B, "vocab_size": 32000, "n_kv_heads": 32}
    assert set(p) <= LLAMA2_FIELDS  # Llama 2's code takes it: no rope_theta, no use_scaled_rope


@pytest.mark.parametrize("shape", [
    (256, 8, None), (256, 8, 704), (288, 6, 768), (512, 8, 1376), (768, 12, 2048), (64, 4, 100),
    (64, 4, 1), (64, 4, 2), (64, 4, 169), (64, 4, 171), (64, 4, 1000), (48, 6, 70), (4096, 32, 11008),
    (8192, 64, 28672), (4096, 32, 14336), (5120, 40, 13824), (2048, 32, 8192),
])
def test_args_to_params_gives_the_ffn_width_by_meta_rule(shape):
    dim, n_heads, hidden = shape
    args = ModelArgs(dim=dim, n_layers=1, n_heads=n_heads, n_kv_heads=2, vocab_size=10, hidden_dim=hidden)
    params = json.loads(json.dumps(args_to_params(args)))  # through JSON, as on disk
    assert meta_hidden(params) == args.ffn_hidden_dim
    assert params_to_args(params).ffn_hidden_dim == args.ffn_hidden_dim
    assert set(params) <= LLAMA2_FIELDS and "rope_theta" not in params


def test_args_to_params_keeps_the_models_own_rule():
    p = args_to_params(get_preset("course"))  # hidden_dim None: Meta's rule with multiple_of 32
    assert p["multiple_of"] == 32 and "ffn_dim_multiplier" not in p and meta_hidden(p) == 704
    p = args_to_params(get_preset("stories15M"))  # hidden_dim 768 explicit, which that rule gives
    assert p["multiple_of"] == 32 and meta_hidden(p) == 768
    p = args_to_params(get_preset("llama2-70b"))
    assert (p["multiple_of"], p["ffn_dim_multiplier"]) == (4096, 1.3)


def test_args_to_params_writes_only_what_meta_code_accepts():
    assert set(args_to_params(get_preset("llama3.1-8b"))) <= LLAMA31_FIELDS
    p = args_to_params(tiny(rope_theta=10000.0))
    assert "rope_theta" not in p and "use_scaled_rope" not in p
    # Llama 3.1 scaling with theta 10000: theta written, since Llama 3's code defaults it to 500000
    p = args_to_params(tiny(rope_scaling=meta.LLAMA31_SCALING))
    assert p["use_scaled_rope"] is True and p["rope_theta"] == 10000.0
    assert "max_seq_len" not in args_to_params(tiny(max_seq_len=4096))
    for scaling in [RopeScaling("linear", factor=2.0),
                    RopeScaling("llama3", factor=32.0, original_max_position_embeddings=8192),
                    RopeScaling("yarn", factor=4.0, original_max_position_embeddings=64)]:
        with pytest.raises(ValueError, match=r"cannot be written to params\.json.*only Llama 3\.1's"):
            args_to_params(tiny(rope_scaling=scaling))


@pytest.mark.parametrize("params, match", [
    ({**TINY_PARAMS, "sliding_window": 4}, r"unknown keys \['sliding_window'\]; accepted: \['dim', "),
    ({k: v for k, v in TINY_PARAMS.items() if k != "n_layers"}, r"lacks \['n_layers'\]"),
    ({**TINY_PARAMS, "dim": 64.5}, "dim must be an int, got 64.5"),
    ({**TINY_PARAMS, "n_kv_heads": 3}, r"n_heads \(4\) must be divisible by n_kv_heads \(3\)"),
    ({**TINY_PARAMS, "use_scaled_rope": 1}, "use_scaled_rope is 1; accepted: true or false"),
    ([1, 2], "holds a list; accepted: an object"),
])
def test_bad_params_are_rejected(params, match):
    with pytest.raises(ValueError, match=match):
        params_to_args(params)


def test_llama2_vocab_comes_from_tok_embeddings(tmp_path):
    args = tiny()
    _, sd = model_and_sd(args, seed=9)
    back_args, _ = read_meta(save_dir(tmp_path, {**TINY_PARAMS, "vocab_size": -1}, hand_shards(sd, 2)))
    assert back_args == args


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


@pytest.fixture
def ckpt(tmp_path):
    """A valid 4-shard checkpoint of tiny() and its state dict."""
    args = tiny()
    _, sd = model_and_sd(args, seed=10)
    write_meta(tmp_path / "ckpt", args, sd, n_shards=4)
    return tmp_path / "ckpt", sd


def test_missing_params_and_bad_json(ckpt):
    path, _ = ckpt
    (path / PARAMS_FILE).write_text('{"dim": 64,')
    with pytest.raises(ValueError, match=r"params\.json is not valid JSON"):
        read_meta(path)
    (path / PARAMS_FILE).write_text(json.dumps({**TINY_PARAMS, "max_batch_sz": 1}))
    with pytest.raises(ValueError, match=r"unknown keys \['max_batch_sz'\]; accepted"):
        read_meta(path)
    (path / PARAMS_FILE).unlink()
    assert not detect_meta(path)
    with pytest.raises(FileNotFoundError, match="no params.json in .*ckpt"):
        read_meta(path)


def test_missing_shards(ckpt):
    path, _ = ckpt
    (path / "consolidated.03.pth").rename(path / "last")  # the end: only the sizes can tell
    with pytest.raises(ValueError, match=r"FFN width 192 .* w1 has 144 rows \(in consolidated.00.pth .. "
                                         r"consolidated.02.pth, merged from 3 shards: is one missing\?\)"):
        read_meta(path)
    w1_fits = {**TINY_PARAMS, "multiple_of": 144, "ffn_dim_multiplier": 0.5}  # int(0.5 * 170) -> 144
    (path / PARAMS_FILE).write_text(json.dumps(w1_fits))
    with pytest.raises(ValueError, match=r"'tok_embeddings.weight' in .*consolidated.00.pth .. "
                                         r"consolidated.02.pth has shape \(96, 48\), merged along dim 1 "
                                         r"from 3 shards \(is one missing\?\); expected \(96, 64\)"):
        read_meta(path)
    (path / "last").rename(path / "consolidated.03.pth")
    (path / "consolidated.01.pth").unlink()
    with pytest.raises(ValueError, match=r"without gaps; missing \['consolidated.01.pth'\]"):
        read_meta(path)
    (path / "consolidated.00.pth").unlink()
    assert not detect_meta(path)
    with pytest.raises(ValueError, match=r"missing \['consolidated.00.pth', 'consolidated.01.pth'\]"):
        read_meta(path)
    for f in shard_names(4)[2:]:
        (path / f).unlink()
    with pytest.raises(FileNotFoundError, match="no consolidated.00.pth in"):
        read_meta(path)


def test_truncated_and_garbage_files(ckpt):
    path, _ = ckpt
    f = path / "consolidated.02.pth"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"consolidated.02.pth: cannot load it with torch.load\(weights_only"
                                         r"=True\) \(truncated or corrupt"):
        read_meta(path)
    f.write_bytes(np.random.default_rng(0).bytes(len(data)))
    with pytest.raises(ValueError, match=r"consolidated.02.pth: cannot load it"):
        read_meta(path)
    f.write_bytes(b"")
    with pytest.raises(ValueError, match=r"consolidated.02.pth: cannot load it"):
        read_meta(path)


def _plant(marker: str) -> None:
    open(marker, "w").close()


class Planter:
    """Unpickling this runs _plant: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return _plant, (self.marker,)


def test_pickles_beyond_weights_are_refused_unrun(tmp_path):
    args = tiny()
    _, sd = model_and_sd(args, seed=11)
    marker = tmp_path / "ran"
    path = save_dir(tmp_path / "ckpt", TINY_PARAMS, [{**sd, "extra": Planter(marker)}])
    torch.load(path / "consolidated.00.pth", weights_only=False)  # the payload is real:
    assert marker.exists()  # unpickled without weights_only, it runs
    marker.unlink()
    with pytest.raises(ValueError, match=r"consolidated.00.pth: cannot load it with torch.load\(weights_only"
                                         r"=True\).*Unsupported global.*_plant"):
        read_meta(path)
    assert not marker.exists()


def test_shard_contents_are_checked(tmp_path, ckpt):
    path, sd = ckpt
    shard = torch.load(path / "consolidated.01.pth", weights_only=True)
    torch.save({**shard, "answer": 42}, path / "consolidated.01.pth")
    with pytest.raises(ValueError, match=r"consolidated.01.pth: entry 'answer' is int; accepted: float"):
        read_meta(path)
    torch.save({k: v for k, v in shard.items() if k != "norm.weight"}, path / "consolidated.01.pth")
    with pytest.raises(ValueError, match=r"consolidated.01.pth holds other tensors than consolidated.00.pth:"
                                         r" only in consolidated.01.pth \[\], missing \['norm.weight'\]"):
        read_meta(path)
    norm = shard["layers.1.attention_norm.weight"].clone()
    norm.view(torch.int32)[7] ^= 1  # one bit
    torch.save({**shard, "layers.1.attention_norm.weight": norm}, path / "consolidated.01.pth")
    with pytest.raises(ValueError, match=r"replicated tensor 'layers.1.attention_norm.weight' in shard 1 "
                                         r"\(consolidated.01.pth\) differs from shard 0's"):
        read_meta(path)
    # slices of unequal size along the concatenation axis
    shards = hand_shards(sd, 2)
    a, b = torch.split(sd["layers.0.attention.wq.weight"], [40, 24])
    shards[0]["layers.0.attention.wq.weight"], shards[1]["layers.0.attention.wq.weight"] = a, b
    with pytest.raises(ValueError, match=r"'layers.0.attention.wq.weight' in shard 1 \(consolidated.01.pth\) "
                                         r"has shape \(24, 64\).*shard 0 \(40, 64\)"):
        read_meta(save_dir(tmp_path / "uneven", TINY_PARAMS, shards))


@pytest.mark.parametrize("change, match", [
    (lambda sd: sd.update({"layers.1.attention.wk.weight": torch.zeros(16, 64)}),
     r"tensor 'layers.1.attention.wk.weight' in .*consolidated.00.pth has shape \(16, 64\); "
     r"expected \(32, 64\) from params.json"),
    (lambda sd: sd.update({"layers.0.attention.bias": torch.zeros(64)}),
     r"consolidated.00.pth: unknown tensor 'layers.0.attention.bias'"),
    (lambda sd: sd.update({"layers.2.attention.wq.weight": torch.zeros(64, 64)}),
     r"unexpected tensor 'layers.2.attention.wq.weight' in .*consolidated.00.pth: params.json has "
     r"n_layers=2"),
    (lambda sd: sd.pop("layers.1.ffn_norm.weight"),
     r"consolidated.00.pth is missing tensors \(name, expected shape\): layers.1.ffn_norm.weight \(64,\)"),
    (lambda sd: sd.update({"layers.0.feed_forward.w1.weight": torch.zeros(256, 64)}),
     r"Meta's rule gives the FFN width 192 .*w1 has 256 rows"),
])
def test_tensors_are_checked_against_params(tmp_path, change, match):
    args = tiny()
    _, sd = model_and_sd(args, seed=12)
    sd = dict(sd)
    change(sd)
    with pytest.raises(ValueError, match=match):
        read_meta(save_dir(tmp_path, TINY_PARAMS, [sd]))


def test_ignored_buffers_and_legacy_files(tmp_path):
    args = tiny()
    _, sd = model_and_sd(args, seed=13)
    shards = hand_shards(sd, 2)
    for s in shards:  # old checkpoints carry the RoPE buffer
        s["rope.freqs"] = torch.rand(8)
    path = save_dir(tmp_path, TINY_PARAMS, shards)
    torch.save(shards[1], path / "consolidated.01.pth", _use_new_zipfile_serialization=False)
    assert (path / "consolidated.01.pth").read_bytes()[:2] != b"PK"  # pre-1.6 format: no mmap
    back_args, back = read_meta(path)
    assert back_args == args and list(back) == list(sd)
    assert all(torch.equal(back[k], v) for k, v in sd.items())


def test_detect_meta(tmp_path, ckpt):
    assert detect_meta(ckpt[0])
    assert not detect_meta(tmp_path / "nowhere")
    assert not detect_meta(ckpt[0] / PARAMS_FILE)  # a file, not a directory
    (tmp_path / "empty").mkdir()
    assert not detect_meta(tmp_path / "empty")


# ---------------------------------------------------------------------------------------
# Writing refuses what it cannot write, and never leaves a partial checkpoint
# ---------------------------------------------------------------------------------------


def test_writer_rejects_bad_input_before_writing(tmp_path):
    args = tiny()
    _, sd = model_and_sd(args, seed=14)
    out = tmp_path / "out"
    # split sizes 64 (wq, wo, tok_embeddings' dim), 32 (wk, wv), 192 (w1, w2, w3), 96 (output)
    with pytest.raises(ValueError, match=r"n_shards=3 does not divide .* accepted n_shards: "
                                         r"\[1, 2, 4, 8, 16, 32\]"):
        write_meta(out, args, sd, n_shards=3)
    with pytest.raises(ValueError, match="n_shards is 0; accepted: a positive int"):
        write_meta(out, args, sd, n_shards=0)
    with pytest.raises(ValueError, match="cannot be written to params.json"):
        write_meta(out, tiny(rope_scaling=RopeScaling("linear", factor=2.0)), sd)
    with pytest.raises(ValueError, match=r"missing \['norm.weight'\], unexpected \[\]"):
        write_meta(out, args, {k: v for k, v in sd.items() if k != "norm.weight"})
    with pytest.raises(ValueError, match=r"layers.0.feed_forward.w2.weight has shape \(192, 64\); "
                                         r"accepted: \(64, 192\)"):
        w1 = sd["layers.0.feed_forward.w1.weight"]
        write_meta(out, args, {**sd, "layers.0.feed_forward.w2.weight": w1})
    with pytest.raises(ValueError, match="output.weight differs from tok_embeddings"):
        write_meta(out, tiny(tie_embeddings=True), sd)
    assert not out.exists()


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    args = tiny()
    _, old = model_and_sd(args, seed=15)
    _, new = model_and_sd(args, seed=16)
    write_meta(tmp_path / "old", args, old, n_shards=2)
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()}
    real_save, calls = torch.save, []

    def failing_save(obj, f, *a, **kw):  # the disk fills up at the third shard
        calls.append(f)
        if len(calls) == 3:
            raise OSError("No space left on device")
        real_save(obj, f, *a, **kw)

    monkeypatch.setattr(meta.torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        write_meta(tmp_path / "new", args, new, n_shards=4)
    assert not (tmp_path / "new").exists()
    calls.clear()
    with pytest.raises(OSError, match="No space left"):
        write_meta(tmp_path / "old", args, new, n_shards=4)
    assert {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()} == before
    monkeypatch.undo()
    _, back = read_meta(tmp_path / "old")
    assert all(torch.equal(back[k], v) for k, v in old.items())
