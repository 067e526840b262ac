"""Tests of minillama/formats/sentencepiece.py: the hand-written protobuf reader and writer.

References: files written by the `sentencepiece` trainer, `sentencepiece` loading the files we
write, and byte strings worked out by hand from the protobuf encoding rules.
"""

from __future__ import annotations

import io

import pytest
import sentencepiece as spm

from minillama.formats.sentencepiece import (
    BYTE,
    CONTROL,
    NORMAL,
    NORMALIZER_SPEC,
    TRAINER_SPEC,
    UNKNOWN,
    USER_DEFINED,
    ModelFormatError,
    ModelProto,
    Spec,
    _read_varint,
    _varint,
    parse_model,
    read_model,
    serialize_model,
    write_model,
)


@pytest.fixture(scope="module")
def trained() -> bytes:
    f = io.BytesIO()
    lines = ["the cat sat on the mat", "a dog ran to the park", "1234 你好 😀"] * 40
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=f, vocab_size=300, model_type="bpe",
        byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, user_defined_symbols=["<tag>"], num_threads=1,
        minloglevel=2)
    return f.getvalue()


def test_varint_examples_from_the_protobuf_docs():
    # 1 is 0x01; 150 is 0x96 0x01; 300 is 0xAC 0x02; -1 as int32 is ten bytes (sign-extended)
    assert _varint(1) == b"\x01"
    assert _varint(150) == b"\x96\x01"
    assert _varint(300) == b"\xac\x02"
    assert _varint(-1) == b"\xff" * 9 + b"\x01"
    assert _read_varint(b"\xac\x02", 0, 2) == (300, 2)


def test_parse_reads_what_the_trainer_wrote(trained):
    m = parse_model(trained)
    sp = spm.SentencePieceProcessor(model_proto=trained)
    assert len(m.pieces) == sp.vocab_size() == 300
    for i, (piece, score, ptype) in enumerate(m.pieces):
        assert piece == sp.id_to_piece(i)
        assert score == sp.get_score(i)
        assert (ptype == BYTE) == sp.is_byte(i) and (ptype == CONTROL) == sp.is_control(i)
        assert (ptype == UNKNOWN) == sp.is_unknown(i)
    assert m.pieces[3] == ("<tag>", 0.0, USER_DEFINED)
    t, n = m.trainer_spec, m.normalizer_spec
    assert (t.get("model_type"), t.get("vocab_size"), t.get("byte_fallback")) == (2, 300, True)
    assert t.get("split_digits") is True and t.get("user_defined_symbols") == ["<tag>"]
    assert t.get("pad_id") == -1  # not in the file: the proto2 default
    assert (n.get("name"), n.get("precompiled_charsmap")) == ("identity", b"")
    assert (n.get("add_dummy_prefix"), n.get("remove_extra_whitespaces")) == (True, False)


def test_serialize_round_trips_byte_for_byte(trained, tmp_path):
    assert serialize_model(parse_model(trained)) == trained
    path = tmp_path / "m.model"
    write_model(path, parse_model(trained))
    assert path.read_bytes() == trained
    assert serialize_model(read_model(path)) == trained


def test_unknown_fields_are_kept(trained):
    extra = _varint(99 << 3 | 0) + _varint(7) + _varint(98 << 3 | 2) + _varint(3) + b"abc"
    m = parse_model(trained + extra)
    assert m.unknown == [(99, 0, 7), (98, 2, b"abc")]
    data = serialize_model(m)
    assert data.endswith(extra)
    assert spm.SentencePieceProcessor(model_proto=data).vocab_size() == 300


def test_handmade_model_loads_in_sentencepiece(tmp_path):
    pieces = [("<unk>", 0.0, UNKNOWN), ("<s>", 0.0, CONTROL), ("</s>", 0.0, CONTROL)]
    pieces += [(f"<0x{b:02X}>", 0.0, BYTE) for b in range(256)]
    pieces += [("▁h", -0.0, NORMAL), ("▁hi", -1.0, NORMAL), ("▁", -2.0, NORMAL),
               ("h", -3.0, NORMAL), ("i", -4.0, NORMAL)]
    trainer = Spec(TRAINER_SPEC, {"model_type": 2, "vocab_size": len(pieces),
                                  "byte_fallback": True, "pad_id": -1})
    normalizer = Spec(NORMALIZER_SPEC, {"name": "identity", "add_dummy_prefix": True,
                                        "remove_extra_whitespaces": False})
    path = tmp_path / "hand.model"
    write_model(path, ModelProto(pieces, trainer, normalizer))
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert sp.encode("hi hi", out_type=str) == ["▁hi", "▁hi"]
    assert sp.encode("ih") == [259 + 2, 259 + 4, 259 + 3]
    assert read_model(path).trainer_spec.get("pad_id") == -1


@pytest.mark.parametrize("data, message", [
    (b"\x0a", "truncated varint"),
    (b"\x0a\x05ab", "claims 5 bytes"),
    (b"\x80" * 11, "longer than 10 bytes"),
    (b"\x0b", "wire type 3"),  # field 1 as a (deprecated) group
    (b"\x00\x01", "field number 0"),
    (b"\x0a\x03\x0a\x01\xff", "not valid UTF-8"),  # a piece whose text is the byte 0xFF
    (b"\x0a\x05\x0a\x01a\x18\x09", "unknown type 9"),
    (b"\x12\x00", "no pieces"),  # a trainer_spec and nothing else
    (b"\x0a\x02\x10\x01", "has no text"),
    (b"\x0a\x03\x0a\x01a\x12\x05\x25\x00\x00\x00\x00", "wire type 5, expected 0"),
    (b"\x0a\x03\x0a\x01a\x12\x03\x25\x00\x00", "truncated fixed-width"),
])
def test_corrupt_input_raises_model_format_error(data, message):
    with pytest.raises(ModelFormatError, match=message):
        parse_model(data)


def test_read_model_names_the_file(tmp_path):
    path = tmp_path / "broken.model"
    path.write_bytes(b"\x0a\x05ab")
    with pytest.raises(ModelFormatError, match="broken.model"):
        read_model(path)
