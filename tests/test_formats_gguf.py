"""Tests for minillama/formats/gguf.py: GGUF read and write, checked against the `gguf` package.

The `gguf` package (llama.cpp's own Python reader, writer and quantizers) is the independent
reference: it reads every file we write, and we read files it writes.

Tolerances. F32 and F16 tensors are compared bit for bit (F16 with the fp16 rounding NumPy
does, which is gguf's too). Q8_0 and Q4_0 bytes must equal `gguf.quants.quantize`'s exactly,
and the values we dequantize must equal `gguf.quants.dequantize`'s exactly. The engine fed
Q8_0 / Q4_0 blocks is compared with a float32 engine holding the dequantized values at
ENGINE_ATOL = 1e-4: the same products summed in another order (tests/test_kernels_quant.py
measures a few 1e-6 on these sizes).
"""

import os
import struct

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network

import gguf
import numpy as np
import pytest
import torch
from gguf.constants import GGMLQuantizationType as QT
from helpers import randomize

from minillama.config import ModelArgs, RopeScaling
from minillama.engine import Engine
from minillama.formats import gguf as G
from minillama.kernels import F32Matrix, dequantize
from minillama.kernels_quant import Q4Matrix, Q8Matrix
from minillama.model import Llama
from minillama.pretrained import COURSE_MODEL, load_tokenizer

ENGINE_ATOL = 1e-4
PROMPT = "Once upon a time, a little cat named Tom"


def tiny(**overrides) -> ModelArgs:
    base = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, hidden_dim=96,
                max_seq_len=64, tie_embeddings=False)
    return ModelArgs(**{**base, **overrides})


def numpy_sd(args: ModelArgs, seed: int = 0) -> dict[str, np.ndarray]:
    sd = {k: v.numpy().copy() for k, v in randomize(Llama(args), seed).state_dict().items()}
    if args.tie_embeddings:
        del sd["output.weight"]
    return sd


@pytest.fixture(scope="module")
def course():
    from minillama.formats.hf import read_hf_config, read_hf_state_dict

    args = read_hf_config(COURSE_MODEL)
    sd = {k: np.array(v, np.float32) for k, v in read_hf_state_dict(COURSE_MODEL, args).items()}
    return args, sd, load_tokenizer(COURSE_MODEL)


GGML = {None: QT.F32, "f16": QT.F16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0}


# ---------------------------------------------------------------------------------------
# The gguf package reads what we write
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("quant", [None, "f16", "q8_0", "q4_0"])
def test_gguf_package_reads_our_file(tmp_path, course, quant):
    args, sd, tok = course
    path = tmp_path / "m.gguf"
    G.write_gguf(path, args, sd, tok, quant=quant)
    r = gguf.GGUFReader(path)
    field = {k: f.contents() for k, f in r.fields.items()}
    assert field["general.architecture"] == "llama"
    expected = {"llama.context_length": 512, "llama.embedding_length": 256, "llama.block_count": 6,
                "llama.feed_forward_length": 704, "llama.attention.head_count": 8,
                "llama.attention.head_count_kv": 4, "llama.rope.dimension_count": 32}
    assert {k: field[k] for k in expected} == expected
    assert field["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert field["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5, rel=1e-6)
    assert field["tokenizer.ggml.model"] == "llama"
    assert field["tokenizer.ggml.tokens"] == [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    assert field["tokenizer.ggml.bos_token_id"] == tok.bos_id == 1
    assert field["general.file_type"] == {None: 0, "f16": 1, "q8_0": 7, "q4_0": 2}[quant]
    tensors = {t.name: t for t in r.tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp uses token_embd
    assert len(tensors) == 2 + 9 * args.n_layers
    for name, w in sd.items():
        t = tensors[G.meta_to_gguf_name(name)]
        assert [int(n) for n in t.shape] == list(reversed(w.shape))  # ne = [in, out]
        if w.ndim == 1:
            assert t.tensor_type == QT.F32
            np.testing.assert_array_equal(np.asarray(t.data), w)
            continue
        assert t.tensor_type == GGML[quant]
        if quant in ("q8_0", "q4_0"):  # llama.cpp's quantizer, byte for byte
            want = gguf.quants.quantize(w, GGML[quant])
            assert np.asarray(t.data).tobytes() == want.tobytes(), name
        else:
            np.testing.assert_array_equal(np.asarray(t.data), w.astype(np.float16 if quant else np.float32))


def test_q_and_k_keep_metas_interleaved_layout(tmp_path, course):
    """llama.cpp rotates pairs (2i, 2i+1), as Meta does: our wq is written unpermuted."""
    args, sd, tok = course
    G.write_gguf(tmp_path / "m.gguf", args, sd, tok)
    r = {t.name: t for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    np.testing.assert_array_equal(np.asarray(r["blk.0.attn_q.weight"].data),
                                  sd["layers.0.attention.wq.weight"])


# ---------------------------------------------------------------------------------------
# We read what the gguf package writes
# ---------------------------------------------------------------------------------------


def package_file(path, args: ModelArgs, sd: dict, types: dict[str, QT], tok=None) -> dict[str, np.ndarray]:
    """A llama GGUF written by gguf.GGUFWriter; returns what gguf.quants dequantizes."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(args.max_seq_len)
    w.add_embedding_length(args.dim)
    w.add_block_count(args.n_layers)
    w.add_feed_forward_length(args.ffn_hidden_dim)
    w.add_head_count(args.n_heads)
    w.add_head_count_kv(args.n_kv_heads)
    w.add_rope_dimension_count(args.head_dim)
    w.add_rope_freq_base(args.rope_theta)
    w.add_layer_norm_rms_eps(args.norm_eps)
    if tok is not None:
        w.add_tokenizer_model("llama")
        w.add_token_list([tok.id_to_piece(i) for i in range(tok.vocab_size)])
        w.add_token_scores([tok.score(i) for i in range(tok.vocab_size)])
        w.add_token_types([G._TYPE_IDS[tok.piece_type(i)] for i in range(tok.vocab_size)])
        w.add_bos_token_id(tok.bos_id)
        w.add_eos_token_id(tok.eos_id)
        w.add_unk_token_id(tok.unk_id)
    values = {}
    for name, x in sd.items():
        t = types.get(name, QT.F32) if x.ndim == 2 else QT.F32
        data = x if t == QT.F32 else x.astype(np.float16) if t == QT.F16 else gguf.quants.quantize(x, t)
        w.add_tensor(G.meta_to_gguf_name(name), data, raw_dtype=t)
        values[name] = gguf.quants.dequantize(data, t).astype(np.float32).reshape(x.shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return values


@pytest.mark.parametrize("tied", [False, True])
def test_we_read_gguf_package_files(tmp_path, tied):
    args = tiny(tie_embeddings=tied)
    sd = numpy_sd(args, seed=3)
    kinds = [QT.F32, QT.F16, QT.Q8_0, QT.Q4_0]
    types = {n: kinds[i % 4] for i, n in enumerate(sd)}  # every type, mixed within the model
    values = package_file(tmp_path / "p.gguf", args, sd, types)
    back_args, back, tok = G.read_gguf(tmp_path / "p.gguf")
    assert back_args == args and tok is None
    assert set(back) == set(sd)
    for name in sd:
        np.testing.assert_array_equal(back[name], values[name], err_msg=name)


def test_the_engine_runs_gguf_blocks_as_stored(tmp_path, monkeypatch):
    """Q8_0 and Q4_0 kinds become Q8Matrix / Q4Matrix holding the file's own blocks: no
    quantizer runs (they are made to fail here), and the engine's logits equal a float32
    engine fed gguf.quants' dequantized values."""
    args = tiny()
    sd = numpy_sd(args, seed=5)
    types = {n: QT.Q4_0 if "w2" in n or n == "output.weight" else QT.Q8_0 for n in sd}
    types["tok_embeddings.weight"] = QT.F16
    values = package_file(tmp_path / "p.gguf", args, sd, types)
    import minillama.kernels_quant as KQ

    def refuse(*a, **k):
        raise AssertionError("a quantizer ran: the blocks were not taken as stored")

    monkeypatch.setattr(KQ, "q8_0_quantize", refuse)
    monkeypatch.setattr(KQ, "q4_0_quantize", refuse)
    engine = Engine.from_pretrained(tmp_path / "p.gguf")
    w = engine.weights
    assert isinstance(w.wq, Q8Matrix) and isinstance(w.w2, Q4Matrix) and isinstance(w.output, Q4Matrix)
    r = {t.name: t for t in gguf.GGUFReader(tmp_path / "p.gguf").tensors}
    file_qs = np.asarray(r["blk.1.attn_q.weight"].data).reshape(-1, 34)[:, 2:].view(np.int8)
    ours = np.moveaxis(w.wq.qs[1], 3, 1).reshape(-1, w.wq.qs.shape[2] * 32)[:w.wq.rows]
    np.testing.assert_array_equal(ours.reshape(-1, 32), file_qs)  # the file's int8, reordered
    np.testing.assert_array_equal(dequantize(w.w2, 0), values["layers.0.feed_forward.w2.weight"])
    ref = Engine.from_state_dict(args, values)
    ids = list(range(1, 30))
    np.testing.assert_allclose(engine.prefill(ids, all_logits=True), ref.prefill(ids, all_logits=True),
                               atol=ENGINE_ATOL, rtol=0)


def test_a_kind_of_mixed_types_is_dequantized_with_a_warning(tmp_path):
    args = tiny()
    sd = numpy_sd(args, seed=6)
    types = {"layers.0.attention.wq.weight": QT.Q8_0, "layers.1.attention.wq.weight": QT.Q4_0}
    values = package_file(tmp_path / "p.gguf", args, sd, types)
    with pytest.warns(UserWarning, match="wq mixes types"):
        engine = Engine.from_pretrained(tmp_path / "p.gguf")
    assert isinstance(engine.weights.wq, F32Matrix)
    np.testing.assert_array_equal(engine.weights.wq.w[1], values["layers.1.attention.wq.weight"])


def test_a_quantized_file_refuses_another_quant(tmp_path, course):
    args, sd, tok = course
    G.write_gguf(tmp_path / "q8.gguf", args, sd, tok, quant="q8_0")
    with pytest.raises(ValueError, match="stores its matrices as q8_0"):
        Engine.from_pretrained(tmp_path / "q8.gguf", quant="q4_0")
    assert isinstance(Engine.from_pretrained(tmp_path / "q8.gguf", quant="q8_0").weights.w1, Q8Matrix)


# ---------------------------------------------------------------------------------------
# The shipped model: the same story from every GGUF type
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("quant", [None, "f16", "q8_0", "q4_0"])
def test_the_shipped_model_from_gguf(tmp_path, course, quant):
    """f32 and f16: the shipped weights are fp16 already, so both files hold them exactly: the
    logits equal the original engine's bit for bit, and so does the greedy story. Q8_0 / Q4_0:
    logits equal (ENGINE_ATOL) to a float32 engine holding the dequantized values, and so does
    its greedy story (quantization changes the story itself: lesson 13 shows by how much)."""
    args, sd, tok = course
    path = tmp_path / "m.gguf"
    G.write_gguf(path, args, sd, tok, quant=quant)
    original = Engine.from_state_dict(args, sd)
    engine = Engine.from_pretrained(path)
    ids = tok.encode(PROMPT, bos=True)
    got = engine.prefill(ids, all_logits=True)
    if quant in (None, "f16"):
        reference = original
        np.testing.assert_array_equal(got, original.prefill(ids, all_logits=True))
    else:
        reference = Engine.from_state_dict(args, G.read_gguf(path)[1])
        np.testing.assert_allclose(got, reference.prefill(ids, all_logits=True), atol=ENGINE_ATOL, rtol=0)
    assert engine.generate(ids, 60, temperature=0) == reference.generate(ids, 60, temperature=0)


def test_gguf_tokenizer_encodes_like_sentencepiece(tmp_path, course):
    import sentencepiece as spm

    args, sd, tok = course
    G.write_gguf(tmp_path / "m.gguf", args, sd, tok)
    back = G.tokenizer_from_gguf(G.read_gguf_file(tmp_path / "m.gguf"))
    sp = spm.SentencePieceProcessor(model_file=str(COURSE_MODEL / "tokenizer.model"))
    for text in ["Once upon a time, Lily saw a big dog.", "  two  spaces\nand a newline", "ünïcödé 日本 🙂"]:
        assert back.encode(text) == sp.encode(text) == tok.encode(text)
        assert back.decode(back.encode(text)) == sp.decode(sp.encode(text))
    assert (back.bos_id, back.eos_id, back.unk_id) == (sp.bos_id(), sp.eos_id(), sp.unk_id())


def test_linear_rope_scaling_round_trips_and_others_are_refused(tmp_path):
    args = tiny(rope_scaling=RopeScaling("linear", 4.0), max_seq_len=256)
    G.write_gguf(tmp_path / "l.gguf", args, numpy_sd(args))
    assert G.read_gguf(tmp_path / "l.gguf")[0] == args
    r = gguf.GGUFReader(tmp_path / "l.gguf")
    assert r.fields["llama.rope.scaling.type"].contents() == "linear"
    y = tiny(rope_scaling=RopeScaling("yarn", 4.0, original_max_position_embeddings=64))
    with pytest.raises(ValueError, match="'yarn'"):
        G.write_gguf(tmp_path / "y.gguf", y, numpy_sd(y))
    assert not (tmp_path / "y.gguf").exists()


def test_writer_refuses_a_mismatched_state_dict(tmp_path):
    args = tiny()
    sd = numpy_sd(args)
    bad = dict(sd, **{"layers.0.attention.wq.weight": np.zeros((3, 64), np.float32)})
    with pytest.raises(ValueError, match="layers.0.attention.wq.weight has shape"):
        G.write_gguf(tmp_path / "b.gguf", args, bad)
    with pytest.raises(ValueError, match="missing"):
        G.write_gguf(tmp_path / "b.gguf", args, {k: v for k, v in sd.items() if "norm" not in k})
    with pytest.raises(ValueError, match="accepted"):
        G.write_gguf(tmp_path / "b.gguf", args, sd, quant="q6_k")


def test_rows_not_in_whole_blocks_stay_f32(tmp_path):
    args = tiny(dim=48, n_heads=4, n_kv_heads=2, hidden_dim=80)
    sd = numpy_sd(args)
    with pytest.warns(UserWarning, match="not whole blocks of 32"):
        G.write_gguf(tmp_path / "m.gguf", args, sd, quant="q8_0")
    r = {t.name: t.tensor_type for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    assert r["blk.0.attn_q.weight"] == QT.F32  # rows of 48
    np.testing.assert_array_equal(G.read_gguf(tmp_path / "m.gguf")[1]["layers.0.attention.wq.weight"],
                                  sd["layers.0.attention.wq.weight"])


# ---------------------------------------------------------------------------------------
# Bad files: every field checked, errors name the file and the field
# ---------------------------------------------------------------------------------------


def s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def kv_u32(key: str, v: int) -> bytes:
    return s(key) + struct.pack("<II", G.UINT32, v)


def raw_file(path, kvs: list[bytes], infos: list[bytes], data: bytes = b"", version: int = 3,
             n_tensors=None, n_kv=None) -> None:
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(infos)
    path.write_bytes(head + bytes(-len(head) % 32) + data)


def info(name: str, ne: list[int], ttype: int = 0, offset: int = 0) -> bytes:
    return s(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, ttype, offset)


BAD_HEADERS = [
    ("magic", lambda p: p.write_bytes(b"GGML" + bytes(20)), "first 4 bytes"),
    ("version", lambda p: raw_file(p, [], [], version=1), "version: 1; accepted: 2 or 3"),
    ("tensor count", lambda p: raw_file(p, [], [], n_tensors=1 << 40), "tensor_count"),
    ("kv count", lambda p: raw_file(p, [], [], n_kv=1 << 40), "metadata_kv_count"),
    ("kv past the end", lambda p: raw_file(p, [kv_u32("a", 1)], [], n_kv=2), "metadata key 1"),
    ("string length", lambda p: raw_file(p, [struct.pack("<Q", 1 << 50) + b"x"], []), "at most 65535"),
    ("value type", lambda p: raw_file(p, [s("a") + struct.pack("<I", 99)], []), "value type 99"),
    ("bad utf-8", lambda p: raw_file(p, [struct.pack("<Q", 2) + b"\xff\xfe" + struct.pack("<II", 4, 1)], []),
     "not valid UTF-8"),
    ("bool", lambda p: raw_file(p, [s("b") + struct.pack("<IB", G.BOOL, 7)], []), "a bool must be 0 or 1"),
    ("array too long", lambda p: raw_file(p, [s("a") + struct.pack("<IIQ", G.ARRAY, G.UINT32, 1 << 40)], []),
     "needs"),
    ("string array too long", lambda p: raw_file(
        p, [s("a") + struct.pack("<IIQ", G.ARRAY, G.STRING, 1 << 40)], []), "elements in"),
    ("duplicate key", lambda p: raw_file(p, [kv_u32("a", 1), kv_u32("a", 2)], []), "appears twice"),
    ("alignment", lambda p: raw_file(p, [kv_u32("general.alignment", 24)], []), "power of two"),
    ("n_dims", lambda p: raw_file(p, [], [info("t", [1] * 5)]), "n_dims"),
    ("zero dim", lambda p: raw_file(p, [], [info("t", [4, 0])]), "ne"),
    ("ggml type", lambda p: raw_file(p, [], [info("t", [4], ttype=77)]), "type"),
    ("block", lambda p: raw_file(p, [], [info("t", [30], ttype=8)]), "multiple of Q8_0's block of 32"),
    ("misaligned", lambda p: raw_file(p, [], [info("t", [4], offset=4)], bytes(64)),
     "multiple of the alignment"),
    ("past the end", lambda p: raw_file(p, [], [info("t", [64])], bytes(16)), "runs past the end"),
    ("overlap", lambda p: raw_file(p, [], [info("a", [16]), info("b", [16], offset=32)], bytes(128)),
     "overlap"),
    ("duplicate tensor", lambda p: raw_file(p, [], [info("a", [4]), info("a", [4], offset=32)], bytes(64)),
     "appears twice"),
]


@pytest.mark.parametrize("what, make, message", BAD_HEADERS, ids=[b[0] for b in BAD_HEADERS])
def test_bad_headers_are_refused_naming_file_and_field(tmp_path, what, make, message):
    path = tmp_path / "bad.gguf"
    make(path)
    with pytest.raises(G.GGUFError) as e:
        G.read_gguf_file(path)
    assert str(path) in str(e.value) and message in str(e.value), str(e.value)


def test_every_truncation_of_a_real_file_is_refused(tmp_path, course):
    """Cut the file at many places in its header, tensor table and data: always a GGUFError."""
    args, sd, tok = course
    small = tiny()
    G.write_gguf(tmp_path / "m.gguf", small, numpy_sd(small), quant="q8_0")
    data = (tmp_path / "m.gguf").read_bytes()
    gf = G.read_gguf_file(tmp_path / "m.gguf")
    cuts = sorted(set(list(range(0, gf.data_start, 7)) + [gf.data_start, len(data) - 1, len(data) // 2]))
    for cut in cuts:
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(G.GGUFError):
            G.read_gguf_file(tmp_path / "cut.gguf")


def test_model_level_errors(tmp_path, course):
    args = tiny()
    sd = numpy_sd(args)
    G.write_gguf(tmp_path / "m.gguf", args, sd)
    gf = G.read_gguf_file(tmp_path / "m.gguf")

    def edited(**md):
        g = G.read_gguf_file(tmp_path / "m.gguf")
        g.metadata.update(md)
        return g

    with pytest.raises(G.GGUFError, match="architecture is 'gptneox'; accepted: 'llama'"):
        G.args_from_gguf(edited(**{"general.architecture": "gptneox"}))
    g = edited()
    del g.metadata["llama.block_count"]
    with pytest.raises(G.GGUFError, match="'llama.block_count' is missing"):
        G.args_from_gguf(g)
    with pytest.raises(G.GGUFError, match="dimension_count is 8"):
        G.args_from_gguf(edited(**{"llama.rope.dimension_count": 8}))
    with pytest.raises(G.GGUFError, match="accepted: a int"):
        G.args_from_gguf(edited(**{"llama.block_count": "two"}))
    with pytest.raises(G.GGUFError, match="scaling.type is 'yarn'"):
        G.args_from_gguf(edited(**{"llama.rope.scaling.type": "yarn"}))
    with pytest.raises(G.GGUFError, match="unexpected tensor 'blk.1.attn_q.weight'"):
        G.engine_weights(gf, G.args_from_gguf(edited(**{"llama.block_count": 1})))
    with pytest.raises(G.GGUFError, match="has shape"):
        G.read_gguf_file(tmp_path / "m.gguf")  # fine as a file...
        G.engine_weights(gf, G.args_from_gguf(edited(**{"llama.feed_forward_length": 64})))
    g = edited(**{"tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.model": "gpt2"})
    with pytest.raises(G.GGUFError, match="'gpt2'"):
        G.tokenizer_from_gguf(g)


def test_unreadable_types_are_named(tmp_path):
    args = tiny()
    sd = numpy_sd(args)
    w = gguf.GGUFWriter(tmp_path / "k.gguf", "llama")
    w.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(np.zeros((4, 256), np.float32), QT.Q4_1),
                 raw_dtype=QT.Q4_1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    gf = G.read_gguf_file(tmp_path / "k.gguf")  # the table parses: the type is known
    assert gf.tensors["blk.0.attn_q.weight"].type_name == "Q4_1"
    with pytest.raises(G.GGUFError, match="has type Q4_1; minillama reads F32, F16, BF16, Q8_0 and Q4_0"):
        gf.float32("blk.0.attn_q.weight")
    assert sd  # the tiny model is only used for its shapes above


def test_rope_freqs_tensor_is_refused(tmp_path):
    args = tiny()
    values = numpy_sd(args)
    package_file(tmp_path / "p.gguf", args, values, {})
    gf = G.read_gguf_file(tmp_path / "p.gguf")
    gf.tensors["rope_freqs.weight"] = gf.tensors["output_norm.weight"]
    with pytest.raises(G.GGUFError, match="rope_freqs"):
        G.args_from_gguf(gf)


def test_names_translate_both_ways():
    args = tiny()
    for name in numpy_sd(args):
        assert G.gguf_to_meta_name(G.meta_to_gguf_name(name)) == name
    assert G.meta_to_gguf_name("layers.7.feed_forward.w1.weight") == "blk.7.ffn_gate.weight"
    with pytest.raises(ValueError, match="unknown GGUF tensor 'blk.0.attn_qkv.weight'"):
        G.gguf_to_meta_name("blk.0.attn_qkv.weight")


def test_bf16_tensors_widen_exactly(tmp_path):
    x = torch.randn(4, 32).to(torch.bfloat16)
    w = gguf.GGUFWriter(tmp_path / "b.gguf", "llama")
    w.add_tensor("output_norm.weight", x.view(torch.int16).numpy().view(np.uint16).reshape(4, 32),
                 raw_dtype=QT.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    gf = G.read_gguf_file(tmp_path / "b.gguf")
    np.testing.assert_array_equal(gf.float32("output_norm.weight"), x.float().numpy())
