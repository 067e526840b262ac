"""Tests of minillama/tokenizer.py.

The reference is the `sentencepiece` package: models are trained in the test on several
corpora, loaded with `Tokenizer.from_sentencepiece`, and must give the same ids and the same
decoded text on thousands of strings. Our own trained tokenizer is checked by exporting it to
a `.model` file that sentencepiece loads and encodes with. Hand-worked examples cover BPE
training. Speed is measured by `minillama bench tokenizer`, never asserted here.
"""

from __future__ import annotations

import io
import json
import random
import textwrap

import pytest
import sentencepiece as spm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minillama.data import corpus_text, generate_stories
from minillama.formats.sentencepiece import UNUSED, ModelFormatError, parse_model, serialize_model
from minillama.tokenizer import SPACE, Tokenizer

HYP = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Llama 2's tokenizer.model was trained with these options (see its trainer_spec).
LLAMA_OPTIONS = dict(model_type="bpe", byte_fallback=True, split_digits=True,
                     normalization_rule_name="identity", add_dummy_prefix=True,
                     remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
                     character_coverage=0.99995, max_sentencepiece_length=16)

# Short phrases in several scripts, with emoji and digits, for a multilingual corpus.
PHRASES = [
    "the quick brown fox", "naïve café déjà vu", "Straße und Größe", "año nuevo señor",
    "你好世界", "我们在学习", "今天天气很好", "こんにちは世界", "カタカナとひらがな", "東京タワー",
    "привет мир", "доброе утро", "Καλημέρα κόσμε", "مرحبا بالعالم", "שלום עולם",
    "नमस्ते दुनिया", "안녕하세요 세계", "สวัสดีชาวโลก", "Tiếng Việt có dấu", "Ελληνικά 2024",
    "😀 😃 🎉", "👍🏽 ok", "🐶🐱🐭", "❤️ love", "1234567890", "3.14159", "v2.0.1", "2024-05-09",
    "x = y + 42", "e-mail: a@b.c", "100% (approx.)", "tab\tseparated", "ŁÓDŹ żółć",
]
# Characters from many blocks, for random strings; includes combining marks and U+2581.
ODD_CHARS = ("aZ09 \t\n\r\x00\x7f\u00a0é\u0301\u2581\u2581▁\u3000ß\u0130ıǅ\ufb01\u212b"
             "你好こカ한ㄱ가\u0e01\u0900\u093f\u05d0\u0627\u200d\u200b\ufeff\U0001f600\U0001f1fa"
             "\U0001f1f8\U00010348\U000e0001\ufffd\uffff")


# user-defined and control symbols of the "user_symbols" model, and look-alikes
SYMBOLS = ["<tag>", "foo", "世界", "ab", "<sep>", "<s>", "</s>", "<unk>", "<0x41>", "<ta", "fo"]


def _train(lines: list[str], vocab_size: int, **options) -> bytes:
    f = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=f,
                                   vocab_size=vocab_size, num_threads=1, minloglevel=2,
                                   **options)
    return f.getvalue()


def _story_lines() -> list[str]:
    return [s.text for s in generate_stories(600, seed=11)]


def _multilingual_lines(n: int = 3000) -> list[str]:
    rng = random.Random(5)
    return [" ".join(rng.choice(PHRASES) for _ in range(rng.randint(1, 6))) for _ in range(n)]


def _code_lines() -> list[str]:
    lines = []
    for mod in (textwrap, json, random):
        with open(mod.__file__, encoding="utf-8") as f:
            lines += [ln.rstrip("\n") for ln in f if ln.strip()]
    return lines + ["\tif x:\n\t\treturn y", "\t\tindented with tabs"] * 20


# name -> (training lines, vocab size, options); each model is trained once per test module.
MODELS = {
    "llama_stories": (_story_lines, 1200, LLAMA_OPTIONS),
    "llama_multilingual": (_multilingual_lines, 700, LLAMA_OPTIONS),
    "llama_code": (_code_lines, 1500, LLAMA_OPTIONS),
    # spm's own defaults (remove_extra_whitespaces on, no byte fallback: runs of <unk>)
    "defaults_nofallback": (_multilingual_lines, 500,
                            dict(model_type="bpe", normalization_rule_name="identity")),
    "no_dummy_prefix": (_story_lines, 700, dict(LLAMA_OPTIONS, add_dummy_prefix=False)),
    "no_prefix_strip_spaces": (_multilingual_lines, 600, dict(
        LLAMA_OPTIONS, add_dummy_prefix=False, remove_extra_whitespaces=True)),
    "user_symbols": (_multilingual_lines, 600,
                     dict(LLAMA_OPTIONS, user_defined_symbols=["<tag>", "foo", "世界", "ab"],
                          control_symbols=["<sep>", "<cls>"])),
    # pieces may then contain "▁" in the middle, so merges cross word boundaries
    "no_whitespace_split": (_code_lines, 900, dict(LLAMA_OPTIONS, split_by_whitespace=False)),
}


@pytest.fixture(scope="module")
def corpora() -> dict[str, list[str]]:
    return {name: lines() for name, (lines, _, _) in MODELS.items()}


@pytest.fixture(scope="module")
def models(corpora) -> dict[str, bytes]:
    return {name: _train(corpora[name], size, **opts) for name, (_, size, opts) in MODELS.items()}


def _pair(models, name):
    data = models[name]
    return spm.SentencePieceProcessor(model_proto=data), Tokenizer.from_sentencepiece_bytes(data)


def sample_strings(lines: list[str], n: int, seed: int) -> list[str]:
    """n test strings: corpus lines and slices, whitespace runs, leading/trailing spaces,
    newlines, mixed scripts and random code points."""
    rng = random.Random(seed)
    words = " ".join(lines[:200]).split()
    ws = [" ", "  ", "   ", "\t", "\n", " \n ", "\n\n", "\u3000", SPACE, " " * 8]

    def random_text() -> str:
        return "".join(rng.choice(ODD_CHARS) for _ in range(rng.randint(1, 12)))

    def random_codepoints() -> str:
        cps = [rng.choice([rng.randrange(0x80), rng.randrange(0x800), rng.randrange(0x30000)])
               for _ in range(rng.randint(1, 8))]
        return "".join(chr(c) for c in cps if not 0xD800 <= c < 0xE000)

    makers = [
        lambda: rng.choice(lines),
        lambda: (lambda s, i: s[i:i + rng.randint(1, 40)])(rng.choice(lines), rng.randrange(50)),
        lambda: "".join(rng.choice(words) + rng.choice(ws) for _ in range(rng.randint(1, 6))),
        lambda: rng.choice(ws) * rng.randint(1, 3) + rng.choice(words) + rng.choice(ws),
        lambda: " ".join(rng.choice(PHRASES) for _ in range(rng.randint(1, 3))),
        lambda: rng.choice(ws) * rng.randint(1, 5),
        lambda: str(rng.randrange(10 ** rng.randint(1, 12))),
        random_text,
        random_codepoints,
        lambda: rng.choice(words) + random_text() + rng.choice(words),
        lambda: rng.choice(words) + rng.choice(SYMBOLS) + rng.choice(ws) + rng.choice(SYMBOLS),
    ]
    return [rng.choice(makers)() for _ in range(n)]


# ---------------------------------------------------------------------------- parity

@pytest.mark.parametrize("name", sorted(MODELS))
def test_vocabulary_matches_sentencepiece(models, name):
    sp, tok = _pair(models, name)
    assert tok.vocab_size == sp.vocab_size()
    assert [tok.id_to_piece(i) for i in range(tok.vocab_size)] == \
        [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    assert (tok.unk_id, tok.bos_id, tok.eos_id) == (sp.unk_id(), sp.bos_id(), sp.eos_id())
    for i in range(tok.vocab_size):
        assert tok.score(i) == sp.get_score(i)
        assert (tok.piece_type(i) == "BYTE") == sp.is_byte(i)
        assert (tok.piece_type(i) == "CONTROL") == sp.is_control(i)
    for piece in ["▁the", "<0x41>", "<s>", "not-a-piece-xyz", "e", "<tag>"]:
        assert tok.piece_to_id(piece) == sp.piece_to_id(piece), piece


@pytest.mark.parametrize("name", sorted(MODELS))
def test_encode_decode_match_sentencepiece_on_many_strings(models, corpora, name):
    sp, tok = _pair(models, name)
    strings = sample_strings(corpora[name], 2500, seed=len(name))
    for s in strings:
        expected = sp.encode(s)
        assert tok.encode(s) == expected, f"{name}: {s!r}"
        assert tok.decode(expected) == sp.decode(expected), f"{name}: {s!r}"
    # the whole batch at once too: long inputs and newlines inside one string
    joined = "\n".join(strings[:300])
    assert tok.encode(joined) == sp.encode(joined)


@pytest.mark.parametrize("name", ["llama_stories", "llama_multilingual", "defaults_nofallback",
                                  "user_symbols"])
@HYP
@given(text=st.text(max_size=40))
def test_encode_matches_sentencepiece_on_random_unicode(models, name, text):
    sp, tok = _pair(models, name)
    ids = sp.encode(text)
    assert tok.encode(text) == ids
    assert tok.decode(ids) == sp.decode(ids)
    assert tok.encode(text, bos=True, eos=True) == sp.encode(text, add_bos=True, add_eos=True)


# whitespace runs, code and the space symbol itself, where the whitespace rules bite
CODEISH = st.text(alphabet=st.sampled_from(list(" \t\n▁▁▁\r") + list("abdefinorstx():=_0123<>")),
                  max_size=40)


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=CODEISH)
def test_encode_matches_sentencepiece_on_whitespace_and_code(models, name, text):
    sp, tok = _pair(models, name)
    ids = sp.encode(text)
    assert tok.encode(text) == ids
    assert tok.decode(ids) == sp.decode(ids)


@pytest.mark.parametrize("name", ["llama_multilingual", "defaults_nofallback", "user_symbols"])
@HYP
@given(data=st.data())
def test_decode_matches_sentencepiece_on_random_ids(models, name, data):
    """Arbitrary id sequences: bytes that are not valid UTF-8, <unk>, controls, "▁" pieces."""
    sp, tok = _pair(models, name)
    n = sp.vocab_size()
    some_id = st.one_of(st.integers(0, n - 1), st.integers(0, 5), st.integers(3 + 0x80, 258))
    ids = data.draw(st.lists(some_id, max_size=20))
    assert tok.decode(ids) == sp.decode(ids)


def test_unused_pieces_are_resegmented_like_sentencepiece(models, corpora):
    """Mark some merged pieces UNUSED (written by us, loaded by sentencepiece as reference)."""
    proto = parse_model(models["llama_stories"])
    rng = random.Random(0)
    for i in rng.sample(range(259, 900), 150):
        piece, score, _ = proto.pieces[i]
        proto.pieces[i] = (piece, score, UNUSED)
    data = serialize_model(proto)
    sp, tok = spm.SentencePieceProcessor(model_proto=data), Tokenizer.from_sentencepiece_bytes(data)
    for s in sample_strings(corpora["llama_stories"], 600, seed=3):
        assert tok.encode(s) == sp.encode(s), repr(s)


def test_score_ties_go_to_the_leftmost_pair():
    """Two pieces with equal scores: sentencepiece merges the leftmost pair first."""
    proto = parse_model(_train(["aaa aaa", "ab ba"] * 50, 270, **LLAMA_OPTIONS))
    pieces = [(p, -1.0 if len(p) == 2 and p not in ("▁▁",) else s, t) for p, s, t in proto.pieces]
    proto.pieces = pieces
    data = serialize_model(proto)
    sp, tok = spm.SentencePieceProcessor(model_proto=data), Tokenizer.from_sentencepiece_bytes(data)
    for s in ["aaa", "aaaa", "abab", "baba", "aba", "bab", "aab ba aaab"]:
        assert tok.encode(s) == sp.encode(s), s


# ---------------------------------------------------------------------------- our training

def test_training_by_hand_example():
    """hug x3, pug, pun, bun: worked by hand below; ties go to the smaller pair of strings."""
    # Words: ▁hug ▁hug ▁hug ▁pug ▁pun ▁bun. Pair counts: (u,g)=4, (▁,h)=3, (h,u)=3, (▁,p)=2,
    # (p,u)=2, (u,n)=2, (▁,b)=1, (b,u)=1.  1st merge: ug (4).  Then (▁,h)=3 and (h,ug)=3 tie;
    # "h" < "▁" so hug, then ▁hug (3). Then (u,n)=2 beats (▁,p)=2 as "u" < "▁": un, then ▁p.
    tok = Tokenizer.train("hug hug hug pug pun bun", vocab_size=259 + 7 + 5)
    merged = [tok.id_to_piece(i) for i in range(259, 264)]
    assert merged == ["ug", "hug", "▁hug", "un", "▁p"]
    # then the 7 characters, most frequent first (u=6, ▁=6, g=4, h=3, n=2, p=2, b=1; ties by text)
    assert [tok.id_to_piece(i) for i in range(264, 271)] == ["u", "▁", "g", "h", "n", "p", "b"]
    assert [tok.score(i) for i in range(259, 262)] == [-0.0, -1.0, -2.0]


def test_training_layout_and_options():
    text = corpus_text(generate_stories(300, seed=2)) + "\nRoom 101, 2024 and 7 cats."
    tok = Tokenizer.train(text, 800)
    assert tok.vocab_size == 800
    assert [tok.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert [tok.id_to_piece(i) for i in range(3, 259)] == [f"<0x{b:02X}>" for b in range(256)]
    assert (tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    pieces = [tok.id_to_piece(i) for i in range(259, 800)]
    assert all(SPACE not in p[1:] for p in pieces), "a piece crosses a word boundary"
    assert not any(c.isdigit() for p in pieces if len(p) > 1 for c in p), "digits must stay split"
    assert len(set(pieces)) == len(pieces)
    assert Tokenizer.train(text, 800).encode(text[:5000]) == tok.encode(text[:5000])  # deterministic


def test_training_accepts_an_iterable_of_lines():
    lines = [s.text for s in generate_stories(50, seed=4)]
    a = Tokenizer.train(lines, 500)
    b = Tokenizer.train("\n".join(lines), 500)
    assert [a.id_to_piece(i) for i in range(500)] == [b.id_to_piece(i) for i in range(500)]


def test_training_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="too small"):
        Tokenizer.train("hello world", 260)
    with pytest.raises(ValueError, match="supports only"):
        Tokenizer.train("hello world", 5000)


@pytest.fixture(scope="module")
def ours() -> Tokenizer:
    lines = [s.text for s in generate_stories(400, seed=9)] + _multilingual_lines(300)
    return Tokenizer.train(lines, 1000)


def test_exported_model_encodes_identically_in_sentencepiece(ours, tmp_path, corpora):
    path = tmp_path / "ours.model"
    ours.to_sentencepiece(path)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert [sp.id_to_piece(i) for i in range(sp.vocab_size())] == \
        [ours.id_to_piece(i) for i in range(ours.vocab_size)]
    strings = sample_strings(corpora["llama_stories"], 1500, seed=1)
    strings += sample_strings(corpora["llama_multilingual"], 500, seed=2)
    for s in strings:
        ids = sp.encode(s)
        assert ours.encode(s) == ids, repr(s)
        assert ours.decode(ids) == sp.decode(ids), repr(s)


@HYP
@given(text=st.text(max_size=60))
def test_decode_inverts_encode_up_to_the_space_symbol(ours, text):
    """SentencePiece documents that "▁" is its space: a literal U+2581 comes back as " "."""
    assert ours.decode(ours.encode(text)) == text.replace(SPACE, " ")


def test_save_and_load_round_trip(ours, tmp_path):
    path = tmp_path / "tok.json"
    ours.save(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == "minillama.tokenizer" and doc["version"] == 1
    assert doc["pieces"][1] == ["<s>", 0.0, "CONTROL"]
    again = Tokenizer.load(path)
    text = "Once upon a time, 你好 😀 there were 42 cats.\n  Indented."
    assert again.encode(text) == ours.encode(text)
    assert [again.id_to_piece(i) for i in range(again.vocab_size)] == \
        [ours.id_to_piece(i) for i in range(ours.vocab_size)]


def test_sentencepiece_file_round_trips_byte_for_byte(models, tmp_path):
    for name in ("llama_stories", "user_symbols"):
        path = tmp_path / f"{name}.model"
        path.write_bytes(models[name])
        Tokenizer.from_sentencepiece(path).to_sentencepiece(tmp_path / "out.model")
        assert (tmp_path / "out.model").read_bytes() == models[name]


# ---------------------------------------------------------------------------- bad input

def test_empty_text(ours):
    assert ours.encode("") == []
    assert ours.encode("", bos=True) == [ours.bos_id]
    assert ours.encode("", bos=True, eos=True) == [1, 2]
    assert ours.decode([]) == ""


def test_unknown_text_falls_back_to_bytes(ours):
    text = "\U0001f996 ꙮ"  # a sauropod and a rare Cyrillic letter: not in the vocabulary
    ids = ours.encode(text)
    assert all(ours.piece_type(i) in ("BYTE", "NORMAL") for i in ids)
    byte_ids = [i for i in ids if ours.piece_type(i) == "BYTE"]
    assert bytes(i - 3 for i in byte_ids) == "\U0001f996ꙮ".encode()
    assert ours.decode(ids) == text


def test_decode_rejects_bad_ids(ours):
    with pytest.raises(ValueError, match=r"token id 1000 out of range: this tokenizer has 1000 "
                                         r"pieces \(ids 0\.\.999\)"):
        ours.decode([5, 1000])
    with pytest.raises(ValueError, match="out of range"):
        ours.decode([-1])
    with pytest.raises(TypeError, match="integers"):
        ours.decode([1.5])
    with pytest.raises(ValueError, match="out of range"):
        ours.id_to_piece(10**6)


def test_encode_rejects_non_text(ours):
    with pytest.raises(TypeError, match="str"):
        ours.encode(b"bytes")
    with pytest.raises(ValueError, match="not valid Unicode"):
        ours.encode("lone \udc80 surrogate")


def test_corrupt_model_files_raise_clear_errors(models, tmp_path):
    data = models["llama_stories"]
    for cut in [1, 2, 7, 100, len(data) // 2, len(data) - 1]:
        with pytest.raises(ModelFormatError):
            Tokenizer.from_sentencepiece_bytes(data[:cut])
    path = tmp_path / "bad.model"
    path.write_bytes(b"\xff" * 40)
    with pytest.raises(ModelFormatError, match="bad.model"):
        Tokenizer.from_sentencepiece(path)
    path.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="no pieces"):
        Tokenizer.from_sentencepiece(path)
    path.write_text('{"format": "minillama.tokenizer"}')
    with pytest.raises(ModelFormatError, match="looks like JSON"):
        Tokenizer.from_sentencepiece(path)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutated_model_files_never_crash(models, data):
    """Random byte edits give a working tokenizer or a ValueError, never another exception."""
    blob = bytearray(models["llama_multilingual"])
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    try:
        tok = Tokenizer.from_sentencepiece_bytes(bytes(blob))
    except ValueError:
        return
    tok.decode(tok.encode("hello 世界 123"))


@pytest.mark.parametrize("options, message", [
    (dict(model_type="unigram"), "model_type unigram"),
    (dict(model_type="bpe"), "normalizer 'nmt_nfkc'"),  # spm's default normalizer
    (dict(model_type="bpe", normalization_rule_name="identity", treat_whitespace_as_suffix=True),
     "treat_whitespace_as_suffix"),
])
def test_unsupported_models_are_rejected(options, message):
    data = _train(["hello world", "a b c"] * 30, 40, hard_vocab_limit=False, **options)
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_sentencepiece_bytes(data)


def test_load_rejects_files_that_are_not_tokenizers(tmp_path):
    path = tmp_path / "x.json"
    for content in ["not json", "[1, 2]", '{"format": "other"}',
                    '{"format": "minillama.tokenizer", "version": 2}',
                    '{"format": "minillama.tokenizer", "version": 1, "options": {}, "pieces": []}']:
        path.write_text(content)
        with pytest.raises(ModelFormatError, match="not a minillama tokenizer"):
            Tokenizer.load(path)
