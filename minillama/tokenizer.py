"""A SentencePiece-style BPE tokenizer with byte fallback: the scheme Llama 2 uses.

Text is normalized the SentencePiece way: a space becomes `▁` (U+2581) and a dummy `▁` is
put in front, so "Once upon" becomes "▁Once▁upon". Encoding starts from single characters
and repeatedly merges the adjacent pair whose concatenation is the highest-scoring piece in
the vocabulary (the leftmost pair on ties), exactly as sentencepiece's BPE encoder does.
A character with no piece falls back to one piece per UTF-8 byte, `<0x00>`..`<0xFF>`.

Vocabulary layout (Llama 2's): 0 `<unk>`, 1 `<s>`, 2 `</s>`, 3..258 the byte pieces, then the
merged pieces in the order they were learned (score -0, -1, -2, ...), then single characters.

Supported SentencePiece models (`Tokenizer.from_sentencepiece`): model_type BPE, the identity
normalizer (no precompiled NFKC map; Llama 2 uses identity), escape_whitespaces on,
treat_whitespace_as_suffix off, with or without add_dummy_prefix, remove_extra_whitespaces and
byte_fallback; user-defined and unused pieces are handled. Anything else raises ValueError.
"""

from __future__ import annotations

import heapq
import json
import operator
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from itertools import chain
from pathlib import Path

from minillama.formats.sentencepiece import (
    BYTE,
    CONTROL,
    NORMAL,
    PIECE_TYPES,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    ModelFormatError,
    ModelProto,
    bpe_model,
    parse_model,
    read_model,
    serialize_model,
    unsupported_options,
)

SPACE = "\u2581"  # "▁", SentencePiece's visible stand-in for a space
UNK_SURFACE = " \u2047 "  # what sentencepiece prints for <unk> unless the model says otherwise
SPECIALS = ("<unk>", "<s>", "</s>")
BYTE_PIECES = [f"<0x{b:02X}>" for b in range(256)]
FORMAT = "minillama.tokenizer"  # first field of the JSON save format
_MAX_CACHE = 1 << 20  # cached segments; a story corpus needs a few tens of thousands


class Tokenizer:
    """SentencePiece-compatible BPE: `encode(text) -> ids`, `decode(ids) -> text`."""

    def __init__(self, model: ModelProto):
        """Build from a ModelProto (pieces + specs); use train, load or from_sentencepiece."""
        problems = unsupported_options(model)
        if problems:
            raise ModelFormatError("unsupported SentencePiece model: " + "; ".join(problems))
        self._model = model
        norm, trainer = model.normalizer_spec, model.trainer_spec
        self.add_dummy_prefix = bool(norm.get("add_dummy_prefix"))
        self.remove_extra_whitespaces = bool(norm.get("remove_extra_whitespaces"))
        self.byte_fallback = bool(trainer.get("byte_fallback"))
        self._unk_surface = trainer.values.get("unk_surface", UNK_SURFACE)
        self._pieces = [p for p, _, _ in model.pieces]
        self._types = [t for _, _, t in model.pieces]
        self._index_pieces()
        self.bos_id = self._control_id(trainer.get("bos_piece") or "<s>")
        self.eos_id = self._control_id(trainer.get("eos_piece") or "</s>")
        user = sorted((p for p, i in self._normal.items() if self._types[i] == USER_DEFINED),
                      key=len, reverse=True)
        # Longest match first, as sentencepiece's prefix matcher does.
        self._user_re = re.compile("(" + "|".join(map(re.escape, user)) + ")") if user else None
        self._has_unused = UNUSED in self._types
        # Segments can be encoded independently (and cached) when no mergeable piece contains
        # a non-space character followed by "▁": then no merge can cross "x|▁".
        straddle = re.compile(f"[^{SPACE}]{SPACE}")
        safe = not any(straddle.search(p) for p, i in self._normal.items()
                       if self._types[i] != USER_DEFINED)
        self._segment_re = re.compile(f"{SPACE}*[^{SPACE}]+|{SPACE}+" if safe else r"(?s).+")
        self._cache: dict[str, list[int]] = {}

    def _index_pieces(self) -> None:
        """Build the lookup tables, checking the pieces as sentencepiece does when loading."""
        # sentencepiece keeps two maps: pieces that take part in merges, and reserved ones
        # (<unk>, control, byte) that are only looked up by name.
        self._normal: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._byte_of: dict[int, int] = {}  # id of a byte piece -> its byte value
        byte_value = {p: b for b, p in enumerate(BYTE_PIECES)}
        for i, (piece, ptype) in enumerate(zip(self._pieces, self._types)):
            target = self._normal if ptype in (NORMAL, USER_DEFINED, UNUSED) else self._reserved
            if not piece or "\0" in piece:
                raise ModelFormatError(f"piece {i} is empty or contains NUL; pieces must not")
            if piece in target:
                raise ModelFormatError(f"piece {piece!r} is defined twice (ids {target[piece]}, {i})")
            target[piece] = i
            if ptype == BYTE:
                if piece not in byte_value:
                    raise ModelFormatError(f"byte piece {piece!r} (id {i}) is not <0x00>..<0xFF>")
                self._byte_of[i] = byte_value[piece]
        self._score = {p: self._model.pieces[i][1] for p, i in self._normal.items()}
        unks = [i for i, t in enumerate(self._types) if t == UNKNOWN]
        if len(unks) != 1:
            raise ModelFormatError(f"a model needs exactly one <unk> piece, found {len(unks)}")
        self.unk_id = unks[0]
        if self._byte_of and not self.byte_fallback:
            raise ModelFormatError("the model has byte pieces although byte_fallback is false")
        if self.byte_fallback and len(self._byte_of) != 256:
            raise ModelFormatError("byte_fallback needs all 256 pieces <0x00>..<0xFF> of type BYTE")
        self._byte_id = [self._reserved.get(p, -1) for p in BYTE_PIECES]

    def _control_id(self, piece: str) -> int:
        i = self._reserved.get(piece, -1)
        return i if i >= 0 and self._types[i] == CONTROL else -1

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        """Number of pieces, so ids run over 0..vocab_size-1."""
        return len(self._pieces)

    def id_to_piece(self, i: int) -> str:
        """The piece string of id i, e.g. "▁the" or "<0x0A>"."""
        return self._pieces[self._check_id(i)]

    def piece_to_id(self, piece: str) -> int:
        """The id of a piece string, or unk_id when the vocabulary lacks it (as sentencepiece)."""
        return self._reserved.get(piece, self._normal.get(piece, self.unk_id))

    def score(self, i: int) -> float:
        """The score of id i: higher merges first."""
        return self._model.pieces[self._check_id(i)][1]

    def piece_type(self, i: int) -> str:
        """The SentencePiece type of id i: NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED or BYTE."""
        return PIECE_TYPES[self._types[self._check_id(i)]]

    def _check_id(self, i) -> int:
        n = len(self._pieces)
        try:
            j = operator.index(i)
        except TypeError:
            raise TypeError(f"token ids must be integers, got {i!r}") from None
        if not 0 <= j < n:
            raise ValueError(f"token id {i} out of range: this tokenizer has {n} pieces "
                             f"(ids 0..{n - 1})")
        return j

    # ------------------------------------------------------------------ encoding

    def normalize(self, text: str) -> str:
        """Text as the encoder sees it: spaces as "▁", with the dummy prefix "▁"."""
        if self.remove_extra_whitespaces:
            text = re.sub(" +", " ", text.lstrip(" "))
            if not text:
                return ""
        out = (SPACE if self.add_dummy_prefix else "") + text.replace(" ", SPACE)
        # sentencepiece strips trailing "▁" after escaping, so literal U+2581 goes too
        return out.rstrip(SPACE) if self.remove_extra_whitespaces else out

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of text, optionally with <s> first and </s> last; "" gives no tokens."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"text is not valid Unicode: {e.reason} at index {e.start} "
                             f"({text[e.start]!r}); encode accepts text that UTF-8 can encode"
                             ) from None
        ids = [self._special("bos")] if bos else []
        norm = self.normalize(text) if text else ""
        if norm:
            ids += self._encode_normalized(norm)
        if eos:
            ids.append(self._special("eos"))
        return ids

    def _special(self, name: str) -> int:
        i = self.bos_id if name == "bos" else self.eos_id
        if i < 0:
            raise ValueError(f"this tokenizer has no {name} piece, so {name}=True is not possible")
        return i

    def _encode_normalized(self, norm: str) -> list[int]:
        if self._has_unused:
            # Unused pieces are undone through a table filled while merging the whole string,
            # so only a single pass over all of it reproduces sentencepiece.
            ids = self._encode_symbols(*self._initial_symbols(norm))
        else:
            parts = self._user_re.split(norm) if self._user_re else [norm]
            get, miss, cache = self._cache.get, self._encode_segment, self._cache
            ids = []
            for k, part in enumerate(parts):
                if k % 2:  # a user-defined symbol: one frozen piece
                    ids.append(self._normal[part])
                elif part:
                    segs = self._segment_re.findall(part)
                    ids += chain.from_iterable([get(s) or miss(s, cache) for s in segs])
        if not self.byte_fallback:  # a run of unknown characters becomes one <unk>
            unk = self.unk_id
            ids = [t for k, t in enumerate(ids) if t != unk or k == 0 or ids[k - 1] != unk]
        return ids

    def _encode_segment(self, seg: str, cache: dict) -> list[int]:
        ids = self._encode_symbols(list(seg), None)
        if len(cache) < _MAX_CACHE:
            cache[seg] = ids
        return ids

    def _initial_symbols(self, norm: str) -> tuple[list[str], list[bool] | None]:
        if not self._user_re:
            return list(norm), None
        symbols, frozen = [], []
        for k, part in enumerate(self._user_re.split(norm)):
            chars = [part] if k % 2 else list(part)
            symbols += chars
            frozen += [k % 2 == 1] * len(chars)
        return symbols, frozen

    def _encode_symbols(self, symbols: list[str], frozen: list[bool] | None) -> list[int]:
        """sentencepiece's BPE: merge the best-scoring adjacent pair until none is a piece."""
        score, n = self._score, len(symbols)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prev = list(range(-1, n - 1))
        heap: list[tuple[float, int, int, int]] = []
        rev_merge: dict[str, tuple[str, str]] = {}

        def push(left: int, right: int) -> None:
            if left < 0 or right < 0 or (frozen and (frozen[left] or frozen[right])):
                return
            piece = symbols[left] + symbols[right]
            s = score.get(piece)
            if s is not None:
                # (-score, left): the best score first, then the leftmost pair
                heapq.heappush(heap, (-s, left, right, len(piece)))
                if self._has_unused:  # the last split seen of a piece is the one undone
                    rev_merge[piece] = (symbols[left], symbols[right])

        for i in range(1, n):
            push(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            a, b = symbols[left], symbols[right]
            if not a or not b or len(a) + len(b) != size:
                continue  # stale: one side has merged with something else since
            symbols[left], symbols[right] = a + b, ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left], left)
            push(left, nxt[left])
        ids: list[int] = []
        i = 0
        while i >= 0:
            self._piece_ids(symbols[i], rev_merge, ids)
            i = nxt[i]
        return ids

    def _piece_ids(self, piece: str, rev_merge: dict, out: list[int]) -> None:
        i = self._reserved.get(piece)
        if i is None:
            i = self._normal.get(piece, self.unk_id)
        if self._types[i] == UNUSED and piece in rev_merge:
            left, right = rev_merge[piece]
            self._piece_ids(left, rev_merge, out)
            self._piece_ids(right, rev_merge, out)
        elif i == self.unk_id and self.byte_fallback:
            out += [self._byte_id[b] for b in piece.encode("utf-8")]
        else:
            out.append(i)

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids: "▁" back to spaces, byte runs as UTF-8 (U+FFFD per bad byte)."""
        out: list[str] = []
        pending = bytearray()  # a run of byte pieces, decoded together
        strip_first = self.add_dummy_prefix or self.remove_extra_whitespaces
        at_start, stripped = True, False  # sentencepiece drops the "▁" of the first piece only
        for i in ids:
            i = self._check_id(i)
            t = self._types[i]
            if t == BYTE:
                pending.append(self._byte_of[i])
                continue
            if pending:
                out.append(_decode_utf8(pending))
                pending.clear()
            if stripped or out:
                at_start = False
            if t == CONTROL:
                text, stripped = "", False
            elif t == UNKNOWN:
                text, stripped = self._unk_surface, False
            else:
                text, stripped = self._pieces[i], False
                if at_start and strip_first and text.startswith(SPACE):
                    text = text[1:]
                    stripped = not self.remove_extra_whitespaces
                text = text.replace(SPACE, " ")
            if text:
                out.append(text)
        if pending:
            out.append(_decode_utf8(pending))
        return "".join(out)

    # ------------------------------------------------------------------ files

    @classmethod
    def from_sentencepiece(cls, path: str | Path) -> Tokenizer:
        """Load a SentencePiece `.model` file (e.g. Llama 2's tokenizer.model)."""
        model = read_model(path)
        try:
            return cls(model)
        except ModelFormatError as e:
            raise ModelFormatError(f"{path}: {e}") from None

    @classmethod
    def from_sentencepiece_bytes(cls, data: bytes) -> Tokenizer:
        """Load a SentencePiece model from the bytes of a `.model` file."""
        return cls(parse_model(data))

    def to_sentencepiece(self, path: str | Path) -> None:
        """Write a `.model` file that sentencepiece.SentencePieceProcessor loads."""
        Path(path).write_bytes(self.to_sentencepiece_bytes())

    def to_sentencepiece_bytes(self) -> bytes:
        """The bytes of a `.model` file for this tokenizer."""
        return serialize_model(self._model)

    def save(self, path: str | Path) -> None:
        """Save as JSON: {"format", "version", "options", "pieces": [[piece, score, type]]}."""
        options = {"add_dummy_prefix": self.add_dummy_prefix,
                   "remove_extra_whitespaces": self.remove_extra_whitespaces,
                   "byte_fallback": self.byte_fallback, "unk_surface": self._unk_surface}
        head = json.dumps({"format": FORMAT, "version": 1, "options": options})
        pieces = (json.dumps([p, s, PIECE_TYPES[t]], ensure_ascii=False)
                  for p, s, t in self._model.pieces)
        # one piece per line, so that the file reads well and diffs well
        text = head[:-1] + ',\n "pieces": [\n' + ",\n".join(pieces) + "\n]}\n"
        Path(path).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load a tokenizer written by `save`; raise ModelFormatError if the file is not one."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f'the first field is not "format": "{FORMAT}"')
            if doc.get("version") != 1:
                raise ValueError(f"version {doc.get('version')!r} is not supported (only 1)")
            names = {v: k for k, v in PIECE_TYPES.items()}
            pieces = [(str(p), float(s), names[t]) for p, s, t in doc["pieces"]]
            opts = doc["options"]
            return cls(bpe_model(pieces, byte_fallback=bool(opts["byte_fallback"]),
                                 add_dummy_prefix=bool(opts["add_dummy_prefix"]),
                                 remove_extra_whitespaces=bool(opts["remove_extra_whitespaces"]),
                                 unk_surface=str(opts.get("unk_surface", UNK_SURFACE))))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"{path}: not a minillama tokenizer file: {e!r}") from None

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, text: str | Iterable[str], vocab_size: int, *,
              character_coverage: float = 0.99995, split_digits: bool = True,
              max_piece_length: int = 16) -> Tokenizer:
        """Learn a BPE vocabulary of exactly vocab_size pieces from text (one sentence per line).

        The defaults are Llama 2's: characters covering 99.995% of the text get a piece (the
        rarest fall back to bytes), digits are never merged, pieces are at most 16 characters.
        """
        if not 0 < character_coverage <= 1:
            raise ValueError(f"character_coverage must be in (0, 1], got {character_coverage}")
        lines = [text] if isinstance(text, str) else text
        words, chars = count_words(lines, character_coverage, split_digits)
        n_merges = vocab_size - len(SPECIALS) - 256 - len(chars)
        if n_merges < 0:
            raise ValueError(f"vocab_size {vocab_size} is too small: the text needs "
                             f"{len(SPECIALS) + 256 + len(chars)} pieces before any merge "
                             f"(3 special + 256 bytes + {len(chars)} characters)")
        merged = _learn_merges(words, n_merges, max_piece_length)
        pieces = [(p, 0.0, t) for p, t in zip(SPECIALS, (UNKNOWN, CONTROL, CONTROL))]
        pieces += [(p, 0.0, BYTE) for p in BYTE_PIECES]
        pieces += [(p, -float(k), NORMAL) for k, p in enumerate(merged + chars)]
        model = bpe_model(pieces)
        model.trainer_spec.values.update(vocab_size=vocab_size, split_digits=split_digits,
                                         character_coverage=character_coverage,
                                         max_sentencepiece_length=max_piece_length)
        return cls(model)


def _decode_utf8(data: bytes | bytearray) -> str:
    """UTF-8 as sentencepiece decodes byte pieces: each byte that starts no valid character
    becomes one U+FFFD (Python's "replace" would merge some of them)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    out, i, n = [], 0, len(data)
    while i < n:
        lead = data[i]  # its top bits give the length of the character it starts
        size = 1 if lead < 0x80 else 2 if lead >> 5 == 6 else 3 if lead >> 4 == 14 else \
            4 if lead >> 3 == 30 else 0
        char = _strict_utf8(data[i:i + size]) if 0 < size <= n - i else None
        out.append(char or "\ufffd")
        i += size if char else 1
    return "".join(out)


def _strict_utf8(chunk: bytes | bytearray) -> str | None:
    try:
        return bytes(chunk).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _char_class(c: str, split_digits: bool) -> str:
    cat = unicodedata.category(c)
    if cat[0] in "LM":
        return "L"  # letters with their combining marks
    if cat == "Nd":
        return "D" if split_digits else "N"
    return "W" if c.isspace() else "P"


def count_words(lines: Iterable[str], coverage: float = 0.99995, split_digits: bool = True
                ) -> tuple[Counter, list[str]]:
    """Count training words ("▁" + a run of letters, of digits or of other symbols), and list
    the characters kept by the coverage, most frequent first. BPE merges within words only."""
    chunks: Counter = Counter()
    chunk_re = re.compile(f"{SPACE}?[^{SPACE}]+|{SPACE}")
    for line in lines:
        if not isinstance(line, str):
            raise TypeError(f"training text must be str, got {type(line).__name__}")
        for sentence in line.split("\n"):
            if sentence:
                chunks.update(chunk_re.findall(SPACE + sentence.replace(" ", SPACE)))
    freq: Counter = Counter()
    for chunk, c in chunks.items():
        for ch in chunk:
            freq[ch] += c
    total, kept, acc = sum(freq.values()), [], 0
    for ch, c in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0])):
        if total and acc / total >= coverage:
            break
        kept.append(ch)
        acc += c
    keep = set(kept)
    words: Counter = Counter()
    for chunk, c in chunks.items():
        word, cls = "", None
        for ch in chunk:
            k = _char_class(ch, split_digits) if ch != SPACE else "S"
            if ch not in keep:  # never merged: it will be encoded as bytes
                k = "X"
            # a new word starts at a class change, at each digit and at each rare character
            if word and (k != cls or k in "DX") and not (cls == "S" and k not in "SXD"):
                words[word] += c
                word = ""
            word, cls = word + ch, k
        words[word] += c
    return words, kept


def _learn_merges(words: Counter, n_merges: int, max_len: int) -> list[str]:
    """Classic word-frequency BPE: merge the most frequent adjacent pair, n_merges times.

    Pair counts are kept up to date incrementally, touching only the words that contain the
    merged pair, and a heap with lazy deletion finds the most frequent pair.
    """
    seqs = [list(w) for w in words]
    freqs = list(words.values())
    counts: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for wi, (seq, f) in enumerate(zip(seqs, freqs)):
        for pair in zip(seq, seq[1:]):
            counts[pair] += f
            where.setdefault(pair, set()).add(wi)
    heap = [(-c, a, b) for (a, b), c in counts.items()]
    heapq.heapify(heap)  # ties go to the smaller (left, right) strings: deterministic
    merged: list[str] = []
    seen: set[str] = set()
    while len(merged) < n_merges:
        if not heap:
            raise ValueError(f"the text supports only {len(merged)} merges, {n_merges} asked: "
                             "give more text or a smaller vocab_size")
        negc, a, b = heapq.heappop(heap)
        c = counts.get((a, b), 0)
        if c != -negc:  # stale entry: put the pair back with its current count
            if c > 0:
                heapq.heappush(heap, (-c, a, b))
            continue
        if len(a) + len(b) > max_len:
            continue
        new = a + b
        if new not in seen:  # two different pairs can spell the same piece
            seen.add(new)
            merged.append(new)
        touched = set()
        for wi in where.pop((a, b), ()):
            seq, f = seqs[wi], freqs[wi]
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            if len(out) == len(seq):
                continue
            for pair in zip(seq, seq[1:]):
                counts[pair] -= f
            for pair in zip(out, out[1:]):
                counts[pair] += f
                where.setdefault(pair, set()).add(wi)
                if new in pair:
                    touched.add(pair)
            seqs[wi] = out
        counts.pop((a, b), None)
        for pair in touched:
            heapq.heappush(heap, (-counts[pair], *pair))
    return merged
