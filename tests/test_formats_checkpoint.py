"""Tests for minillama/formats/checkpoint.py: one loader for every format, and conversion.

The references: the shipped model's own tensors (from its safetensors, read by the
`safetensors` package here, not by our reader), sentencepiece for the tokenizers, and the
original engine / torch model for logits.

Tolerances. fp32 round trips are bit-identical (no arithmetic happens). Every format holds
the shipped fp16 weights exactly (llama2.c v2 aside), so the engine loaded from any of them
gives the original logits bit for bit and the same greedy story. llama2.c v2 stores Q8_0
in groups of 64: its engine equals a float32 engine of its dequantized values at
ENGINE_ATOL = 1e-4 (the same products in another order).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from minillama.cli import main
from minillama.engine import Engine
from minillama.formats import checkpoint as C
from minillama.formats.hf import permute_hf_to_meta, read_hf_config
from minillama.model import Llama
from minillama.pretrained import COURSE_MODEL, load_model, load_tokenizer

ENGINE_ATOL = 1e-4
PROMPT = "One day, Lily went to the park"
TOKENS = 40


@pytest.fixture(scope="module")
def course():
    """(args, Meta-named float32 tensors straight from the safetensors package, tokenizer)."""
    from minillama.formats.hf import hf_to_meta_name

    args = read_hf_config(COURSE_MODEL)
    sd = {}
    for name, a in load_file(COURSE_MODEL / "model.safetensors").items():
        meta = hf_to_meta_name(name)
        heads = {"wq": args.n_heads, "wk": args.n_kv_heads}.get(meta.split(".")[-2])
        a = a.astype(np.float32)
        sd[meta] = permute_hf_to_meta(a, heads) if heads and "attention" in meta else a
    return args, sd, load_tokenizer(COURSE_MODEL)


@pytest.fixture(scope="module")
def written(course, tmp_path_factory):
    """The shipped model in every format and type, as write_checkpoint writes it."""
    args, sd, tok = course
    root = tmp_path_factory.mktemp("formats")
    out = {}
    for fmt, quant in [("hf", None), ("hf", "f16"), ("meta", None), ("meta", "f16"), ("llama2c", None),
                       ("llama2c", "q8_0"), ("gguf", None), ("gguf", "f16"), ("gguf", "q8_0"),
                       ("gguf", "q4_0")]:
        out[fmt, quant] = C.write_checkpoint(root / f"{fmt}-{quant}", fmt, args, sd, tok, quant)
    return out


def test_formats_are_detected_by_content_not_by_name(written, tmp_path):
    for (fmt, _), path in written.items():
        assert C.detect_format(path)[0] == fmt
    gguf_file, l2c = written["gguf", None], written["llama2c", None]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "weights.bin").write_bytes(gguf_file.read_bytes())  # a GGUF named .bin
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.gguf").write_bytes(l2c.read_bytes())  # a llama2.c file named .gguf
    assert C.detect_format(tmp_path / "a" / "weights.bin") == ("gguf", tmp_path / "a" / "weights.bin")
    assert C.detect_format(tmp_path / "a")[0] == "gguf"
    assert C.detect_format(tmp_path / "b" / "model.gguf")[0] == "llama2c"
    assert C.detect_format(written["meta", None] / "consolidated.00.pth") == ("meta", written["meta", None])
    assert C.detect_format(written["hf", None] / "model.safetensors") == ("hf", written["hf", None])


def test_unrecognised_paths_say_what_is_accepted(written, tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"\x01\x02" * 100)
    with pytest.raises(ValueError, match="not a checkpoint minillama recognises.*accepted: a GGUF file"):
        C.detect_format(tmp_path / "junk.bin")
    (tmp_path / "two").mkdir()
    for n in ("a.gguf", "b.gguf"):
        (tmp_path / "two" / n).write_bytes(written["gguf", "q8_0"].read_bytes())
    with pytest.raises(ValueError, match="2 candidates .*a.gguf, b.gguf.*name the file"):
        C.detect_format(tmp_path / "two")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="nothing recognisable"):
        C.detect_format(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        C.detect_format(tmp_path / "missing")


def test_every_fp32_format_holds_the_same_tensors(course, written):
    args, sd, _ = course
    for key in [("hf", None), ("meta", None), ("llama2c", None), ("gguf", None), ("gguf", "f16"),
                ("hf", "f16"), ("meta", "f16")]:
        ck = C.read_checkpoint(written[key])
        assert ck.args.ffn_hidden_dim == args.ffn_hidden_dim and ck.args.tie_embeddings
        assert set(ck.tensors) == set(sd), key
        for name, want in sd.items():  # fp16-valued weights: f16 files hold them exactly too
            got = ck.tensors[name]
            got = got.float().numpy() if isinstance(got, torch.Tensor) else np.asarray(got, np.float32)
            np.testing.assert_array_equal(got, want, err_msg=f"{key} {name}")


def test_round_trip_hf_meta_llama2c_gguf_hf_is_bit_identical(course, tmp_path):
    args, sd, tok = course
    path = COURSE_MODEL
    for i, fmt in enumerate(["meta", "llama2c", "gguf", "hf"]):
        path = C.convert(path, tmp_path / f"{i}-{fmt}", to=fmt, progress=False)
    ck = C.read_checkpoint(path)
    assert ck.fmt == "hf" and set(ck.tensors) == set(sd)
    for name, want in sd.items():
        np.testing.assert_array_equal(np.asarray(ck.tensors[name], np.float32), want, err_msg=name)
    assert ck.tokenizer.encode("A cat sat.") == tok.encode("A cat sat.")


@pytest.mark.parametrize("key", [("hf", "f16"), ("meta", None), ("llama2c", None), ("gguf", None),
                                 ("gguf", "f16"), ("llama2c", "q8_0"), ("gguf", "q8_0"), ("gguf", "q4_0")],
                         ids=lambda k: f"{k[0]}-{k[1]}")
def test_the_same_story_from_every_format(course, written, key):
    args, sd, _ = course
    original = Engine.from_state_dict(args, sd)
    engine, tok = load_model(written[key], engine="numba")
    ids = tok.encode(PROMPT, bos=True)
    logits = engine.prefill(ids, all_logits=True)
    if key in (("llama2c", "q8_0"), ("gguf", "q8_0"), ("gguf", "q4_0")):
        reference = Engine.from_state_dict(args, C.read_checkpoint(written[key]).tensors)
        np.testing.assert_allclose(logits, reference.prefill(ids, all_logits=True), atol=ENGINE_ATOL, rtol=0)
    else:
        reference = original
        np.testing.assert_array_equal(logits, original.prefill(ids, all_logits=True))
    assert engine.generate(ids, TOKENS, temperature=0) == reference.generate(ids, TOKENS, temperature=0)


@pytest.mark.parametrize("key", [("meta", None), ("llama2c", None), ("gguf", "f16")], ids=str)
def test_the_torch_model_loads_every_format(course, written, key):
    args, sd, _ = course
    ref = Llama(args).eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    model = Llama.from_pretrained(written[key]).eval()
    x = torch.tensor([[1, 5, 77, 300, 4000]])
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_tokenizers_travel_with_every_format(written, tmp_path):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(COURSE_MODEL / "tokenizer.model"))
    text = "Once upon a time, Max and his dog ran to the old barn. 🙂"
    for key, path in written.items():
        assert C.read_checkpoint(path).tokenizer.encode(text) == sp.encode(text), key
    # llama2.c with only tokenizer.bin beside it (as llama2.c's repo ships)
    src = written["llama2c", None]
    for name in (src.name, "tokenizer.bin"):
        (tmp_path / name).write_bytes((src.parent / name).read_bytes())
    tok = load_tokenizer(tmp_path / src.name)
    assert tok.encode(text) == sp.encode(text)
    pieces = [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    assert [tok.id_to_piece(i) for i in range(tok.vocab_size)] == pieces


def test_write_checkpoint_refuses_what_a_format_cannot_store(course, tmp_path):
    args, sd, tok = course
    with pytest.raises(ValueError, match="llama2c cannot store 'q4_0'; accepted: none \\(float32\\), q8_0"):
        C.write_checkpoint(tmp_path / "x", "llama2c", args, sd, tok, "q4_0")
    with pytest.raises(ValueError, match="unknown format 'onnx'"):
        C.write_checkpoint(tmp_path / "x", "onnx", args, sd, tok)


def test_convert_command(course, tmp_path, capsys):
    src, dst = str(COURSE_MODEL), str(tmp_path / "m.gguf")
    assert main(["convert", src, dst, "--to", "gguf", "--quant", "q8_0"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "gguf, q8_0" in out and "tokenizer included" in out
    assert C.read_checkpoint(tmp_path / "m.gguf").gguf.tensors["blk.0.attn_q.weight"].type_name == "Q8_0"
    assert main(["convert", str(tmp_path / "m.gguf"), str(tmp_path / "l2c"), "--to", "llama2c"]) == 0
    assert (tmp_path / "l2c" / "model.bin").is_file() and (tmp_path / "l2c" / "tokenizer.bin").is_file()
    assert main(["convert", str(COURSE_MODEL), str(tmp_path / "bad"), "--to", "hf", "--quant", "q8_0"]) == 2
    assert "hf cannot store 'q8_0'" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "nowhere"), str(tmp_path / "x"), "--to", "hf"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_generate_command_takes_any_format(written, capsys):
    outs = []
    for key in [("gguf", "f16"), ("llama2c", None), ("meta", None)]:
        assert main(["generate", PROMPT, "--model", str(written[key]), "--temperature", "0",
                     "--max-new-tokens", "12"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] == outs[2] and outs[0].startswith(PROMPT)


def test_round_trip_of_full_float32_values_untied_and_gqa(tmp_path):
    """Random float32 weights (most not representable in fp16), an unshared classifier and
    grouped-query attention: HF -> Meta -> llama2.c -> GGUF -> HF is still bit-identical."""
    from helpers import randomize

    from minillama.config import ModelArgs

    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, hidden_dim=160,
                     max_seq_len=64, tie_embeddings=False)
    sd = {k: v.numpy().copy() for k, v in randomize(Llama(args), 11).state_dict().items()}
    assert not np.array_equal(sd["output.weight"], sd["output.weight"].astype(np.float16))
    path = C.write_checkpoint(tmp_path / "0-hf", "hf", args, sd)
    for i, fmt in enumerate(["meta", "llama2c", "gguf", "hf"], start=1):
        path = C.convert(path, tmp_path / f"{i}-{fmt}", to=fmt, progress=False)
        ck = C.read_checkpoint(path)
        assert ck.fmt == fmt and ck.args.ffn_hidden_dim == 160 and not ck.args.tie_embeddings
        assert set(ck.tensors) == set(sd)
        for name, want in sd.items():
            got = ck.tensors[name]
            got = got.numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want, err_msg=f"{fmt} {name}")
