"""Tests for minillama/config.py: ModelArgs, RopeScaling and the presets."""

import dataclasses

import pytest

from minillama.config import PRESETS, ModelArgs, RopeScaling, get_preset

# Published FFN widths (the `intermediate_size` of Meta's / HF's configs and llama2.c's
# `hidden_dim`), so Meta's rounding rule is checked against real models, not against itself.
PUBLISHED_FFN = {
    "stories15M": 768,
    "stories42M": 1376,
    "stories110M": 2048,
    "llama2-7b": 11008,
    "llama2-13b": 13824,
    "llama2-70b": 28672,
    "llama3-8b": 14336,
    "llama3.1-8b": 14336,
}


@pytest.mark.parametrize("name, hidden", PUBLISHED_FFN.items())
def test_ffn_hidden_dim_matches_published(name, hidden):
    assert get_preset(name).ffn_hidden_dim == hidden


def test_meta_rule_without_explicit_hidden_dim():
    # 7B's width from Meta's rule alone, and 70B's with ffn_dim_multiplier and multiple_of
    assert ModelArgs(dim=4096, n_heads=32, multiple_of=256).ffn_hidden_dim == 11008
    assert ModelArgs(dim=8192, n_heads=64, n_kv_heads=8, ffn_dim_multiplier=1.3,
                     multiple_of=4096).ffn_hidden_dim == 28672
    assert ModelArgs(dim=64, n_heads=4, hidden_dim=100).ffn_hidden_dim == 100


def test_presets_shapes():
    p = get_preset("llama2-70b")
    assert (p.n_heads, p.n_kv_heads, p.n_rep, p.head_dim) == (64, 8, 8, 128)
    assert get_preset("llama2-7b").n_kv_heads == 32  # None would mean the same; resolved
    assert get_preset("stories15M").head_dim == 48
    assert get_preset("course") == ModelArgs()
    assert get_preset("llama3.1-8b").rope_scaling.type == "llama3"
    assert set(PRESETS) >= {"course", "stories15M", "stories42M", "stories110M",
                            "llama2-7b", "llama2-13b", "llama2-70b"}


def test_unknown_preset_lists_known():
    with pytest.raises(KeyError, match="stories15M"):
        get_preset("stories16M")


def test_frozen_and_replace():
    args = get_preset("course")
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.n_layers = 2
    small = dataclasses.replace(args, n_layers=2)
    assert small.n_layers == 2 and get_preset("course").n_layers == args.n_layers


def test_n_kv_heads_none_means_mha():
    args = ModelArgs(dim=64, n_heads=4, n_kv_heads=None)
    assert args.n_kv_heads == 4 and args.n_rep == 1


def test_rope_scaling_from_dict_and_asdict_round_trip():
    args = ModelArgs(rope_scaling={"type": "linear", "factor": 2.0})
    assert args.rope_scaling == RopeScaling("linear", 2.0)
    assert ModelArgs(**dataclasses.asdict(args)) == args


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=100, n_heads=8), "divisible by n_heads"),
        (dict(n_heads=8, n_kv_heads=3), "divisible by n_kv_heads"),
        (dict(dim=24, n_heads=8), "must be even"),
        (dict(n_layers=0), "n_layers must be positive"),
        (dict(vocab_size=-5), "vocab_size must be positive"),
        (dict(dim=64.0), "dim must be an int"),
        (dict(max_seq_len=True), "max_seq_len must be an int"),
        (dict(hidden_dim=0), "hidden_dim must be positive"),
        (dict(norm_eps=0.0), "norm_eps must be positive"),
        (dict(rope_theta=float("nan")), "rope_theta must be positive"),
        (dict(tie_embeddings=1), "tie_embeddings must be a bool"),
        (dict(rope_scaling={"type": "longrope", "factor": 2.0}), "unknown rope scaling type"),
        (dict(rope_scaling={"type": "linear", "factor": 0.5}), "factor must be >= 1.0"),
        (dict(rope_scaling={"type": "linear", "scale": 2.0}), "unknown rope_scaling keys"),
        (dict(rope_scaling={"factor": 2.0}), "needs a 'type'"),
        (dict(rope_scaling={"type": "yarn", "factor": 2.0}), "original_max_position_embeddings"),
        (dict(rope_scaling={"type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                            "high_freq_factor": 1.0, "original_max_position_embeddings": 64}),
         "high_freq_factor > low_freq_factor"),
        (dict(rope_scaling="linear"), "rope_scaling must be"),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ModelArgs(**kwargs)


def test_numpy_ints_accepted():
    np = pytest.importorskip("numpy")
    args = ModelArgs(dim=np.int64(64), n_heads=np.int32(4))
    assert type(args.dim) is int and args.head_dim == 16
