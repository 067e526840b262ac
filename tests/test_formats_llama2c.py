"""Tests for minillama/formats/llama2c.py: llama2.c checkpoints (v0, v1, v2) and tokenizer.bin.

Tolerances. v0 and v1 store float32 as is, so what is read back is compared bit for bit,
and so are the bytes of every tensor, parsed here independently in the order run.c and
runq.c map them. v2 stores Q8_0: a dequantized value is within scale / 2 of the original
(scale = max |group| / 127), plus float32 rounding in x / scale and q * scale, a few ulp of
the group's max |x|: Q80_EPS = 1e-6 relative is a strict margin. The int8 values are also
compared exactly with round-half-to-even(x / scale) (export.py's torch.round) computed here.
The shipped model read back from v0 drives the Numba engine, compared with torch at
LOGITS_ATOL = 5e-5 (the engine's own tolerance; tests/test_engine.py explains it).
"""

import os
import struct

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network

import numpy as np
import pytest
import torch
from helpers import randomize

from minillama.config import ModelArgs
from minillama.formats.llama2c import (
    MAGIC,
    detect_llama2c,
    quantize_q80,
    read_llama2c,
    read_llama2c_header,
    read_tokenizer_bin,
    write_llama2c,
    write_tokenizer_bin,
)
from minillama.model import Llama
from minillama.pretrained import COURSE_MODEL, load_tokenizer

LOGITS_ATOL = 5e-5
Q80_EPS = 1e-6  # relative to the group's max |x|


def tiny(**overrides) -> ModelArgs:
    """Awkward sizes on purpose: GQA 6 -> 2, head_dim 8, hidden 70, vocab 67."""
    base = dict(dim=48, n_layers=2, n_heads=6, n_kv_heads=2, vocab_size=67, hidden_dim=70,
                max_seq_len=40, tie_embeddings=False)
    return ModelArgs(**{**base, **overrides})


def numpy_state_dict(args: ModelArgs, seed: int) -> dict[str, np.ndarray]:
    """The torch model's names and shapes, as float32 NumPy arrays; no output.weight if tied."""
    sd = {k: v.numpy().copy() for k, v in randomize(Llama(args), seed).state_dict().items()}
    if args.tie_embeddings:
        del sd["output.weight"]
    return sd


def file_order(args: ModelArgs, version: int) -> list[str]:
    """Tensor names in file order, written from run.c's and runq.c's memory_map_weights."""
    def per_layer(name: str) -> list[str]:
        return [f"layers.{l}.{name}" for l in range(args.n_layers)]

    attn = [n for k in "qkvo" for n in per_layer(f"attention.w{k}.weight")]
    ffn = [n for k in "123" for n in per_layer(f"feed_forward.w{k}.weight")]
    if version == 0:
        names = ["tok_embeddings.weight", *per_layer("attention_norm.weight"), *attn,
                 *per_layer("ffn_norm.weight"), *ffn, "norm.weight", "freqs_cos", "freqs_sin"]
    else:
        names = [*per_layer("attention_norm.weight"), *per_layer("ffn_norm.weight"), "norm.weight",
                 "tok_embeddings.weight", *attn, *ffn]
    return names + ([] if args.tie_embeddings else ["output.weight"])


def parse(path, args: ModelArgs, sd: dict, version: int, group_size: int | None = None) -> dict:
    """An independent reader: name -> fp32 array, or (int8 q, fp32 scales) for v2 matrices."""
    hd = args.head_dim
    out = {}
    with open(path, "rb") as f:
        f.seek(28 if version == 0 else 256)
        for name in file_order(args, version):
            shape = (args.max_seq_len, hd // 2) if name.startswith("freqs") else sd[name].shape
            n = int(np.prod(shape))
            if version == 2 and len(shape) == 2:
                out[name] = (np.fromfile(f, np.int8, n), np.fromfile(f, "<f4", n // group_size))
            else:
                out[name] = np.fromfile(f, "<f4", n).reshape(shape)
        assert f.read() == b"", "bytes left after the last tensor"
    return out


def reference_q80(x: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(q, scale) per group, in float32 as export.py computes them; a zero group gets q = 0."""
    g = np.asarray(x, np.float32).reshape(-1, group_size)
    scale = np.abs(g).max(axis=1) / np.float32(127)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(scale[:, None] > 0, np.round(g / scale[:, None]), 0)
    return q.astype(np.int8).reshape(-1), scale


# ---------------------------------------------------------------------------------------
# v0 and v1: float32, bit for bit
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("version", [0, 1])
def test_v0_v1_round_trip_is_bit_identical(tmp_path, version, tied):
    args = tiny(tie_embeddings=tied)
    sd = numpy_state_dict(args, seed=version + 2 * tied)
    path = tmp_path / "model.bin"
    write_llama2c(path, args, sd, version=version)

    h = read_llama2c_header(path)
    assert tuple(h) == (version, 48, 70, 2, 6, 2, 67, 40, tied, None)
    assert detect_llama2c(path) == version
    back_args, back = read_llama2c(path)
    assert back_args == ModelArgs(dim=48, n_layers=2, n_heads=6, n_kv_heads=2, vocab_size=67,
                                  hidden_dim=70, norm_eps=1e-5, rope_theta=10000.0,
                                  max_seq_len=40, tie_embeddings=tied)
    assert back.keys() == sd.keys()
    for name, x in sd.items():
        assert back[name].dtype == np.float32 and back[name].shape == x.shape, name
        np.testing.assert_array_equal(back[name], x, err_msg=name)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("version", [0, 1])
def test_v0_v1_bytes_follow_run_c(tmp_path, version, tied):
    args = tiny(tie_embeddings=tied)
    sd = numpy_state_dict(args, seed=5)
    path = tmp_path / "model.bin"
    write_llama2c(path, args, sd, version=version)
    data = path.read_bytes()
    if version == 0:  # 7 int32; a negative vocab_size flags an unshared classifier
        assert struct.unpack_from("<7i", data) == (48, 70, 2, 6, 2, 67 if tied else -67, 40)
    else:  # magic, version, 7 int32, uint8 shared flag, zeros up to 256 bytes
        assert struct.unpack_from("<Ii7iB", data) == (MAGIC, 1, 48, 70, 2, 6, 2, 67, 40, tied)
        assert data[:4] == b"24ka" and data[37:256] == bytes(219)  # 0x616b3432, little-endian
    got = parse(path, args, sd, version)
    for name, x in sd.items():
        np.testing.assert_array_equal(got[name], x, err_msg=name)
    if version == 0:  # RoPE tables run.c skips: cos and sin of pos * 10000^(-2i/head_dim)
        angles = np.outer(np.arange(40), 10000.0 ** (-np.arange(0, 8, 2) / 8))  # (40, 4)
        np.testing.assert_allclose(got["freqs_cos"], np.cos(angles), rtol=0, atol=1e-6)
        np.testing.assert_allclose(got["freqs_sin"], np.sin(angles), rtol=0, atol=1e-6)


def test_torch_tensors_and_equal_tied_output_are_accepted(tmp_path):
    args = tiny(tie_embeddings=True)
    model = randomize(Llama(args), seed=9).half()  # torch float16, output.weight present (tied)
    write_llama2c(tmp_path / "m.bin", args, model.state_dict())
    _, back = read_llama2c(tmp_path / "m.bin")
    assert "output.weight" not in back  # tied: the classifier is tok_embeddings
    for name, t in model.state_dict().items():
        if name != "output.weight":
            np.testing.assert_array_equal(back[name], t.float().numpy(), err_msg=name)


# ---------------------------------------------------------------------------------------
# v2: Q8_0
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden_dim, group_size", [(96, 16), (70, 2)])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_v2_round_trip_within_the_q80_bound(tmp_path, tied, hidden_dim, group_size):
    # requested 64; halved until it divides dim 48 and hidden_dim: 16 for 96, 2 for 70
    args = tiny(tie_embeddings=tied, hidden_dim=hidden_dim)
    sd = numpy_state_dict(args, seed=11)
    path = tmp_path / "q.bin"
    write_llama2c(path, args, sd, version=2)
    data = path.read_bytes()
    assert struct.unpack_from("<Ii7iBi", data) == (MAGIC, 2, 48, hidden_dim, 2, 6, 2, 67, 40,
                                                   tied, group_size)  # group_size at offset 37
    assert read_llama2c_header(path).group_size == group_size
    back_args, back = read_llama2c(path)
    assert back_args.tie_embeddings == tied and back.keys() == sd.keys()
    raw = parse(path, args, sd, 2, group_size)
    for name, x in sd.items():
        if x.ndim == 1:  # norms stay fp32
            np.testing.assert_array_equal(raw[name], x, err_msg=name)
            np.testing.assert_array_equal(back[name], x, err_msg=name)
            continue
        q_ref, scale_ref = reference_q80(x, group_size)
        np.testing.assert_array_equal(raw[name][0], q_ref, err_msg=name)
        np.testing.assert_array_equal(raw[name][1], scale_ref, err_msg=name)
        err = np.abs(back[name] - x).reshape(-1, group_size)  # (n_groups, group_size)
        bound = scale_ref / 2 + Q80_EPS * scale_ref * 127
        assert (err <= bound[:, None]).all(), name


def test_v2_int8_values_of_a_hand_written_tensor(tmp_path):
    args = ModelArgs(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=4, hidden_dim=8,
                     max_seq_len=8, tie_embeddings=True)
    sd = numpy_state_dict(args, seed=1)
    emb = np.array([
        [127, 0.5, 1.5, 2.5, -2.5, -0.5, 63.5, -126.5],  # scale 1: exact ties, half to even
        [0, 0, 0, 0, 0, 0, 0, 0],  # zero group: scale 0, q 0 (no 0 / 0)
        [-254, 1, 3, 5, 127, -127, 0, 253],  # scale 2: ties again
        [0.3, -0.7, 0.1, 0.9, -0.2, 0.5, 0.05, -0.45],  # scale 0.9 / 127, no ties
    ], np.float32)
    sd["tok_embeddings.weight"] = emb
    path = tmp_path / "q.bin"
    write_llama2c(path, args, sd, version=2, group_size=8)
    with open(path, "rb") as f:
        f.seek(256 + 4 * (8 + 8 + 8))  # header, attention_norm, ffn_norm, norm
        q, scale = np.fromfile(f, np.int8, 32).reshape(4, 8), np.fromfile(f, "<f4", 4)
    row3 = emb[3] / (np.float32(0.9) / np.float32(127))
    np.testing.assert_array_equal(q[:3], [[127, 0, 2, 2, -2, 0, 64, -126], [0] * 8,
                                          [-127, 0, 2, 2, 64, -64, 0, 126]])
    np.testing.assert_array_equal(q[3], np.round(row3))
    np.testing.assert_array_equal(scale, np.array([1, 0, 2, np.float32(0.9) / 127], np.float32))
    q2, scale2, err = quantize_q80(emb, 8)
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_array_equal(scale2, scale)
    assert err == np.abs(q * scale[:, None] - emb).max() and err == 0.5 * 2  # row 2's ties
    _, back = read_llama2c(path)
    np.testing.assert_array_equal(back["tok_embeddings.weight"], q * scale[:, None])


def test_quantize_q80_rejects_bad_input():
    with pytest.raises(ValueError, match="group_size 5 does not divide"):
        quantize_q80(np.ones(12), 5)
    with pytest.raises(ValueError, match="inf or NaN"):
        quantize_q80(np.array([1.0, np.nan]), 2)


# ---------------------------------------------------------------------------------------
# The shipped model
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def course_model():
    return Llama.from_pretrained(COURSE_MODEL).eval()


def test_shipped_model_v0_reads_back_and_matches_torch_logits(tmp_path, course_model):
    from minillama.engine import Engine

    path = tmp_path / "course.bin"
    write_llama2c(path, course_model.args, course_model.state_dict())  # torch tensors
    args, sd = read_llama2c(path)
    ref = course_model.args
    assert (args.dim, args.n_layers, args.n_heads, args.n_kv_heads, args.vocab_size,
            args.ffn_hidden_dim, args.max_seq_len, args.tie_embeddings) == (
            ref.dim, ref.n_layers, ref.n_heads, ref.n_kv_heads, ref.vocab_size,
            ref.ffn_hidden_dim, ref.max_seq_len, True)
    expected = {k: v for k, v in course_model.state_dict().items() if k != "output.weight"}
    assert sd.keys() == expected.keys()
    for name, t in expected.items():  # shipped float16, loaded as float32: exact
        np.testing.assert_array_equal(sd[name], t.float().numpy(), err_msg=name)

    ids = np.random.default_rng(0).integers(0, args.vocab_size, 24)
    got = Engine.from_state_dict(args, sd).prefill(ids, all_logits=True)  # (24, vocab)
    with torch.no_grad():
        want = course_model(torch.as_tensor(ids)[None])[0].numpy()  # (24, vocab)
    np.testing.assert_allclose(got, want, rtol=0, atol=LOGITS_ATOL)  # q/k layout unpermuted


def test_shipped_tokenizer_bin_round_trip(tmp_path):
    tok = load_tokenizer(COURSE_MODEL)
    path = tmp_path / "tokenizer.bin"
    write_tokenizer_bin(path, tok)
    pieces, scores, max_len = read_tokenizer_bin(path, tok.vocab_size)
    expected = [tok.id_to_piece(i).replace("\u2581", " ").encode() for i in range(tok.vocab_size)]
    expected[tok.bos_id], expected[tok.eos_id] = b"\n<s>\n", b"\n</s>\n"  # as llama2.c exports
    assert pieces == expected
    assert scores == [float(np.float32(tok.score(i))) for i in range(tok.vocab_size)]
    assert max_len == max(map(len, expected)) == struct.unpack_from("<I", path.read_bytes())[0]
    assert pieces[tok.piece_to_id("\u2581")] == b" "  # run.c's dummy-prefix lookup finds it
    assert pieces[3 + 0x0A] == b"<0x0A>"  # byte pieces stay text: run.c's decode parses them
    assert not any(b"\xe2\x96\x81" in p for p in pieces)  # no "▁" left


# ---------------------------------------------------------------------------------------
# Malformed input
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    """version -> bytes of a valid tiny checkpoint (untied, so v0's vocab_size is negative)."""
    d = tmp_path_factory.mktemp("valid")
    args = tiny(hidden_dim=96)
    sd = numpy_state_dict(args, seed=3)
    out = {}
    for v in (0, 1, 2):
        write_llama2c(d / f"v{v}.bin", args, sd, version=v)
        out[v] = (d / f"v{v}.bin").read_bytes()
    return out


def check_rejected(tmp_path, data: bytes, match: str) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=match):
        read_llama2c(path)
    with pytest.raises(ValueError, match=match):
        read_llama2c_header(path)
    assert detect_llama2c(path) is None


@pytest.mark.parametrize("version", [0, 1, 2])
def test_wrong_file_size_is_rejected(tmp_path, valid_files, version):
    data = valid_files[version]
    head = 28 if version == 0 else 256
    for bad in (data[:head], data[:-1], data + b"\0"):  # header only, one byte short, one extra
        check_rejected(tmp_path, bad, rf"bad\.bin.*file size is {len(bad)} bytes.*exactly "
                                      rf"{len(data)} bytes")


def test_too_short_for_a_header(tmp_path):
    check_rejected(tmp_path, b"", "file size is 0 bytes.*28-byte header")
    check_rejected(tmp_path, b"\1" * 27, "file size is 27 bytes.*28-byte header")
    check_rejected(tmp_path, struct.pack("<Ii", MAGIC, 1) + bytes(100), "256-byte header")


def test_v0_with_the_wrong_vocab_sign_is_explained(tmp_path, valid_files):
    data = bytearray(valid_files[0])
    data[20:24] = struct.pack("<i", 67)  # says shared, but the file holds a classifier
    check_rejected(tmp_path, bytes(data), "file size.*an unshared classifier.*sign of vocab_size")
    args = tiny(tie_embeddings=True)
    write_llama2c(tmp_path / "tied.bin", args, numpy_state_dict(args, seed=0))
    data = bytearray((tmp_path / "tied.bin").read_bytes())
    data[20:24] = struct.pack("<i", -67)  # says unshared, but no classifier follows
    check_rejected(tmp_path, bytes(data), "file size.*a shared classifier.*sign of vocab_size")


def header_v12(version=1, params=(48, 96, 2, 6, 2, 67, 40), shared=0, group=64, magic=MAGIC):
    head = struct.pack("<Ii7iB", magic, version, *params, shared) + struct.pack("<i", group)
    return head.ljust(256, b"\0")


@pytest.mark.parametrize("data, match", [
    (header_v12(magic=0x616B3433), r"dim is \d+; accepted: 1\.\.1048576 \(read as v0"),  # "ak43"
    (header_v12(version=3), "version is 3; accepted: 1 or 2"),
    (header_v12(version=0), "version is 0"),
    (header_v12(shared=2), "shared_classifier is 2; accepted: 0 or 1"),
    (header_v12(params=(48, 96, 2, 6, 2, -67, 40)), "vocab_size is -67"),
    (header_v12(params=(0, 96, 2, 6, 2, 67, 40)), "dim is 0"),
    (header_v12(params=(48, 96, 2, 6, 2, 67, 1 << 21)), "seq_len is 2097152"),
    (header_v12(params=(48, 96, 2, 5, 1, 67, 40)), "n_heads is 5; accepted: a divisor of dim"),
    (header_v12(params=(48, 96, 2, 6, 4, 67, 40)), "n_kv_heads is 4; accepted: a divisor of n_heads"),
    (header_v12(params=(48, 96, 2, 16, 4, 67, 40)), "n_heads is 16; accepted: .*head_dim.*even"),
    (header_v12(version=2, group=0), "group_size is 0; accepted: a positive divisor of dim"),
    (header_v12(version=2, group=32), "group_size is 32"),
    (struct.pack("<7i", 48, 96, 2, 6, 2, 0, 40), "vocab_size is 0.*read as v0"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 0) + bytes(64), "dim is 1179993927"),
], ids=["wrong-magic", "version-3", "version-0", "shared-2", "negative-vocab", "dim-0", "seq-len",
        "heads-not-dividing-dim", "kv-not-dividing-heads", "odd-head-dim", "group-0",
        "group-not-dividing-dim", "v0-vocab-0", "gguf"])
def test_bad_headers_are_rejected(tmp_path, data, match):
    check_rejected(tmp_path, data, match)


def test_a_safetensors_file_is_not_a_v0_checkpoint(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "model.safetensors"
    save_file({"tok_embeddings.weight": np.ones((67, 48), np.float32)}, path)
    # its u64 header length reads as dim, the length's zero high half as hidden_dim
    with pytest.raises(ValueError, match=r"model\.safetensors.*hidden_dim is 0.*read as v0"):
        read_llama2c(path)
    assert detect_llama2c(path) is None


def test_writer_rejects_what_llama2c_cannot_hold(tmp_path):
    args = tiny()
    sd = numpy_state_dict(args, seed=0)
    path = tmp_path / "m.bin"
    with pytest.raises(ValueError, match="version is 3; accepted: 0"):
        write_llama2c(path, args, sd, version=3)
    with pytest.raises(ValueError, match="rope_theta=10000"):
        write_llama2c(path, tiny(rope_theta=500000.0), sd)
    with pytest.raises(ValueError, match="group_size is 0; accepted: a positive int"):
        write_llama2c(path, args, sd, version=2, group_size=0)
    with pytest.raises(ValueError, match=r"missing \['norm.weight'\]"):
        write_llama2c(path, args, {k: v for k, v in sd.items() if k != "norm.weight"})
    with pytest.raises(ValueError, match=r"unexpected \['rope.freqs'\]"):
        write_llama2c(path, args, {**sd, "rope.freqs": np.ones(4)})
    with pytest.raises(ValueError, match=r"layers.0.feed_forward.w2.weight has shape \(70, 48\)"):
        write_llama2c(path, args, {**sd, "layers.0.feed_forward.w2.weight": np.ones((70, 48))})
    tied = tiny(tie_embeddings=True)
    with pytest.raises(ValueError, match="output.weight differs from tok_embeddings"):
        write_llama2c(path, tied, sd)  # sd's output.weight is its own random matrix
    assert not path.exists()  # every check runs before the file is opened
    sd["layers.1.attention.wo.weight"][3, 5] = np.nan
    with pytest.raises(ValueError, match="inf or NaN"):
        write_llama2c(path, args, sd, version=2)  # found while writing: the file is removed
    assert not path.exists()


def test_malformed_tokenizer_bin_is_rejected(tmp_path):
    def entry(score: float, piece: bytes) -> bytes:
        return struct.pack("<fi", score, len(piece)) + piece

    path = tmp_path / "tok.bin"
    good = struct.pack("<I", 3) + entry(0.0, b"a") + entry(-1.5, b"abc")
    path.write_bytes(good)
    assert read_tokenizer_bin(path, 2) == ([b"a", b"abc"], [0.0, -1.5], 3)
    cases = {
        good[:-1]: "ends at byte 23 inside the bytes of token 1",
        good[:2]: "inside max_token_length",
        good + b"x": "1 bytes after token 1.*vocab_size 2",
        struct.pack("<I", 3) + struct.pack("<fi", 0.0, -1): "token 0 has length -1",
        struct.pack("<I", 2) + entry(0.0, b"a") + entry(-1.5, b"abc"): "max_token_length is 2",
    }
    for data, match in cases.items():
        path.write_bytes(data)
        with pytest.raises(ValueError, match=match):
            read_tokenizer_bin(path, 2)
    with pytest.raises(ValueError, match="vocab_size is 0"):
        read_tokenizer_bin(path, 0)
