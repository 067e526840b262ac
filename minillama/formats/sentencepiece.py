"""Read and write SentencePiece `.model` files (Llama 2's `tokenizer.model`) without protobuf.

A `.model` file is one serialized protobuf message, `ModelProto`:

    ModelProto
      1 pieces            repeated SentencePiece { 1 piece: string, 2 score: float, 3 type: enum }
      2 trainer_spec      TrainerSpec     (training options; a few also matter when encoding)
      3 normalizer_spec   NormalizerSpec  (how text is normalized before encoding)
      5 denormalizer_spec NormalizerSpec  (applied after decoding; empty in Llama 2)

The protobuf wire format is a sequence of (field number, wire type, value) records. We parse
it by hand with a bounds check on every read, so a truncated or corrupt file raises
`ModelFormatError` instead of crashing or being silently misread. Fields we do not know are
kept as raw records and written back unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Piece types, as in sentencepiece_model.proto.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
PIECE_TYPES = {NORMAL: "NORMAL", UNKNOWN: "UNKNOWN", CONTROL: "CONTROL",
               USER_DEFINED: "USER_DEFINED", UNUSED: "UNUSED", BYTE: "BYTE"}
MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_U64 = (1 << 64) - 1

# field number -> (name, kind, default). Only the fields we read or write need defaults; the
# rest are listed so that a round trip keeps them typed. Repeated fields have kind "strings".
TRAINER_SPEC = {
    1: ("input", "strings", None), 2: ("model_prefix", "string", ""),
    3: ("model_type", "enum", 1), 4: ("vocab_size", "int32", 8000),
    5: ("accept_language", "strings", None), 6: ("self_test_sample_size", "int32", 0),
    7: ("input_format", "string", ""), 10: ("character_coverage", "float", 0.9995),
    11: ("input_sentence_size", "uint64", 0), 12: ("mining_sentence_size", "int32", 0),
    13: ("training_sentence_size", "int32", 0), 14: ("seed_sentencepiece_size", "int32", 1000000),
    15: ("shrinking_factor", "float", 0.75), 16: ("num_threads", "int32", 16),
    17: ("num_sub_iterations", "int32", 2), 18: ("max_sentence_length", "int32", 4192),
    19: ("shuffle_input_sentence", "bool", True), 20: ("max_sentencepiece_length", "int32", 16),
    21: ("split_by_unicode_script", "bool", True), 22: ("split_by_whitespace", "bool", True),
    23: ("split_by_number", "bool", True), 24: ("treat_whitespace_as_suffix", "bool", False),
    25: ("split_digits", "bool", False), 26: ("allow_whitespace_only_pieces", "bool", False),
    30: ("control_symbols", "strings", None), 31: ("user_defined_symbols", "strings", None),
    32: ("vocabulary_output_piece_score", "bool", True), 33: ("hard_vocab_limit", "bool", True),
    34: ("use_all_vocab", "bool", False), 35: ("byte_fallback", "bool", False),
    36: ("required_chars", "string", ""), 40: ("unk_id", "int32", 0), 41: ("bos_id", "int32", 1),
    42: ("eos_id", "int32", 2), 43: ("pad_id", "int32", -1), 44: ("unk_surface", "string", " \u2047 "),
    45: ("unk_piece", "string", "<unk>"), 46: ("bos_piece", "string", "<s>"),
    47: ("eos_piece", "string", "</s>"), 48: ("pad_piece", "string", "<pad>"),
    49: ("train_extremely_large_corpus", "bool", False),
    50: ("enable_differential_privacy", "bool", False),
    51: ("differential_privacy_noise_level", "float", 0.0),
    52: ("differential_privacy_clipping_threshold", "uint64", 0),
    53: ("pretokenization_delimiter", "string", ""), 54: ("seed_sentencepieces_file", "string", ""),
    55: ("auto_character_coverage", "bool", False),
}
NORMALIZER_SPEC = {
    1: ("name", "string", ""), 2: ("precompiled_charsmap", "bytes", b""),
    3: ("add_dummy_prefix", "bool", True), 4: ("remove_extra_whitespaces", "bool", True),
    5: ("escape_whitespaces", "bool", True), 6: ("normalization_rule_tsv", "string", ""),
}
_WIRE = {"strings": _LEN, "string": _LEN, "bytes": _LEN, "enum": _VARINT, "int32": _VARINT,
         "uint64": _VARINT, "bool": _VARINT, "float": _I32}


class ModelFormatError(ValueError):
    """A `.model` file that is not a valid SentencePiece ModelProto."""


@dataclass
class Spec:
    """One TrainerSpec or NormalizerSpec: the fields present in the file, plus unknown records."""

    schema: dict[int, tuple[str, str, Any]]
    values: dict[str, Any] = field(default_factory=dict)
    unknown: list[tuple[int, int, Any]] = field(default_factory=list)

    def get(self, name: str) -> Any:
        """The field's value, or its proto2 default when the file does not set it."""
        if name in self.values:
            return self.values[name]
        for fname, kind, default in self.schema.values():
            if fname == name:
                return [] if kind == "strings" else default
        raise KeyError(name)


@dataclass
class ModelProto:
    """A parsed `.model` file: pieces as (piece, score, type) plus the two specs."""

    pieces: list[tuple[str, float, int]]
    trainer_spec: Spec = field(default_factory=lambda: Spec(TRAINER_SPEC))
    normalizer_spec: Spec = field(default_factory=lambda: Spec(NORMALIZER_SPEC))
    denormalizer_spec: Spec | None = None
    unknown: list[tuple[int, int, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------- reading

def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise ModelFormatError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise ModelFormatError(f"varint longer than 10 bytes at byte {pos}")


def _records(buf: bytes, start: int, end: int):
    """Yield (field number, wire type, value) for one message in buf[start:end]."""
    pos = start
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise ModelFormatError(f"field number 0 at byte {pos}")
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos, end)
        elif wire == _LEN:
            n, pos = _read_varint(buf, pos, end)
            if n > end - pos:
                raise ModelFormatError(f"field {num} claims {n} bytes but only {end - pos} remain")
            value, pos = (pos, pos + n), pos + n
        elif wire in (_I32, _I64):
            n = 4 if wire == _I32 else 8
            if n > end - pos:
                raise ModelFormatError(f"truncated fixed-width field {num} at byte {pos}")
            value, pos = buf[pos:pos + n], pos + n
        else:  # 3 and 4 are the long-deprecated groups; 6 and 7 do not exist
            raise ModelFormatError(f"unsupported protobuf wire type {wire} for field {num}")
        yield num, wire, value


def _text(buf: bytes, span: tuple[int, int], what: str) -> str:
    try:
        return buf[span[0]:span[1]].decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{what} is not valid UTF-8: {e}") from None


def _parse_spec(buf: bytes, span: tuple[int, int], schema: dict, what: str) -> Spec:
    spec = Spec(schema)
    for num, wire, value in _records(buf, *span):
        if num not in schema:
            spec.unknown.append((num, wire, buf[value[0]:value[1]] if wire == _LEN else value))
            continue
        name, kind, _ = schema[num]
        if wire != _WIRE[kind]:
            raise ModelFormatError(f"{what}.{name} has wire type {wire}, expected {_WIRE[kind]}")
        if kind == "strings":
            spec.values.setdefault(name, []).append(_text(buf, value, f"{what}.{name}"))
        elif kind == "string":
            spec.values[name] = _text(buf, value, f"{what}.{name}")
        elif kind == "bytes":
            spec.values[name] = bytes(buf[value[0]:value[1]])
        elif kind == "float":
            spec.values[name] = struct.unpack("<f", value)[0]
        elif kind == "bool":
            spec.values[name] = value != 0
        elif kind in ("int32", "enum"):  # negative int32 are sign-extended to 64 bits
            spec.values[name] = value - (1 << 64) if value >= 1 << 63 else value
        else:
            spec.values[name] = value
    return spec


def _parse_piece(buf: bytes, span: tuple[int, int], index: int) -> tuple[str, float, int]:
    piece, score, ptype = None, 0.0, NORMAL
    for num, wire, value in _records(buf, *span):
        if num == 1 and wire == _LEN:
            piece = _text(buf, value, f"piece {index}")
        elif num == 2 and wire == _I32:
            score = struct.unpack("<f", value)[0]
        elif num == 3 and wire == _VARINT:
            ptype = value
    if piece is None:
        raise ModelFormatError(f"piece {index} has no text")
    if ptype not in PIECE_TYPES:
        raise ModelFormatError(f"piece {index} ({piece!r}) has unknown type {ptype}; "
                               f"known types are {sorted(PIECE_TYPES)}")
    return piece, score, ptype


def parse_model(data: bytes) -> ModelProto:
    """Parse the bytes of a `.model` file into a ModelProto; raise ModelFormatError if corrupt."""
    buf = bytes(data)
    model = ModelProto(pieces=[])
    for num, wire, value in _records(buf, 0, len(buf)):
        if num == 1 and wire == _LEN:
            model.pieces.append(_parse_piece(buf, value, len(model.pieces)))
        elif num == 2 and wire == _LEN:
            model.trainer_spec = _parse_spec(buf, value, TRAINER_SPEC, "trainer_spec")
        elif num == 3 and wire == _LEN:
            model.normalizer_spec = _parse_spec(buf, value, NORMALIZER_SPEC, "normalizer_spec")
        elif num == 5 and wire == _LEN:
            model.denormalizer_spec = _parse_spec(buf, value, NORMALIZER_SPEC, "denormalizer_spec")
        else:
            model.unknown.append((num, wire, buf[value[0]:value[1]] if wire == _LEN else value))
    if not model.pieces:
        raise ModelFormatError("the file has no pieces: it is not a SentencePiece model")
    return model


def read_model(path: str | Path) -> ModelProto:
    """Read and parse a SentencePiece `.model` file."""
    data = Path(path).read_bytes()
    try:
        return parse_model(data)
    except ModelFormatError as e:
        hint = " (it looks like JSON: a minillama tokenizer loads with Tokenizer.load)" \
            if data.lstrip()[:1] in (b"{", b"[") else ""
        raise ModelFormatError(f"{path}: not a valid SentencePiece model: {e}{hint}") from None


# ---------------------------------------------------------------------------- writing

def _varint(value: int) -> bytes:
    value &= _U64  # negative int32 are written as 10-byte two's complement, as protobuf does
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _record(num: int, wire: int, value: Any) -> bytes:
    key = _varint(num << 3 | wire)
    if wire == _LEN:
        return key + _varint(len(value)) + value
    if wire == _VARINT:
        return key + _varint(int(value))
    return key + value  # fixed-width values are kept as raw bytes


def _serialize_spec(spec: Spec) -> bytes:
    out = bytearray()
    for num, (name, kind, _) in spec.schema.items():
        if name not in spec.values:
            continue
        v = spec.values[name]
        if kind == "strings":
            out += b"".join(_record(num, _LEN, s.encode("utf-8")) for s in v)
        elif kind == "string":
            out += _record(num, _LEN, v.encode("utf-8"))
        elif kind == "bytes":
            out += _record(num, _LEN, bytes(v))
        elif kind == "float":
            out += _record(num, _I32, struct.pack("<f", v))
        else:
            out += _record(num, _VARINT, int(v))
    for num, wire, value in spec.unknown:
        out += _record(num, wire, value)
    return bytes(out)


def serialize_model(model: ModelProto) -> bytes:
    """Serialize a ModelProto to the bytes of a `.model` file that sentencepiece loads."""
    out = bytearray()
    for piece, score, ptype in model.pieces:
        body = _record(1, _LEN, piece.encode("utf-8")) + _record(2, _I32, struct.pack("<f", score))
        if ptype != NORMAL:
            body += _record(3, _VARINT, ptype)
        out += _record(1, _LEN, body)
    out += _record(2, _LEN, _serialize_spec(model.trainer_spec))
    out += _record(3, _LEN, _serialize_spec(model.normalizer_spec))
    if model.denormalizer_spec is not None:
        out += _record(5, _LEN, _serialize_spec(model.denormalizer_spec))
    for num, wire, value in model.unknown:
        out += _record(num, wire, value)
    return bytes(out)


def write_model(path: str | Path, model: ModelProto) -> None:
    """Write a ModelProto to `path` as a SentencePiece `.model` file."""
    Path(path).write_bytes(serialize_model(model))


# ---------------------------------------------------------------------------- models

def bpe_model(pieces: list[tuple[str, float, int]], *, byte_fallback: bool = True,
              add_dummy_prefix: bool = True, remove_extra_whitespaces: bool = False,
              unk_surface: str | None = None) -> ModelProto:
    """A BPE ModelProto with the identity normalizer (Llama 2's settings by default)."""
    trainer = Spec(TRAINER_SPEC, {"model_type": 2, "vocab_size": len(pieces),
                                  "byte_fallback": byte_fallback})
    if unk_surface is not None and unk_surface != TRAINER_SPEC[44][2]:
        trainer.values["unk_surface"] = unk_surface
    normalizer = Spec(NORMALIZER_SPEC, {
        "name": "identity", "precompiled_charsmap": b"", "add_dummy_prefix": add_dummy_prefix,
        "remove_extra_whitespaces": remove_extra_whitespaces, "escape_whitespaces": True})
    return ModelProto(pieces=list(pieces), trainer_spec=trainer, normalizer_spec=normalizer)


def unsupported_options(model: ModelProto) -> list[str]:
    """The options of model that minillama's tokenizer does not reproduce (empty if none)."""
    t, n, d = model.trainer_spec, model.normalizer_spec, model.denormalizer_spec
    problems = []
    if t.get("model_type") != 2:
        kind = MODEL_TYPES.get(t.get("model_type"), t.get("model_type"))
        problems.append(f"model_type {kind} (only bpe is supported)")
    if n.get("precompiled_charsmap"):
        problems.append(f"normalizer {n.get('name')!r} (only 'identity' is supported: train "
                        "with normalization_rule_name='identity', as Llama 2 does)")
    if not n.get("escape_whitespaces"):
        problems.append("escape_whitespaces=false (spaces must become '▁')")
    if t.get("treat_whitespace_as_suffix"):
        problems.append("treat_whitespace_as_suffix=true (only '▁' as a prefix is supported)")
    if d is not None and d.get("precompiled_charsmap"):
        problems.append("a denormalizer rule (only none is supported)")
    return problems
