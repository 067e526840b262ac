"""The fast CPU inference engine: one jitted Numba call per token, llama2.c style.

    engine = Engine.from_pretrained("path/to/hf-dir")       # or Engine.from_model(model)
    ids = engine.generate(prompt_ids, max_new_tokens=200, temperature=0.0)
    logits = engine.prefill(prompt_ids)      # (vocab_size,) for the last prompt token
    logits = engine.step(token)              # one more token at position engine.pos

Structures (as in llama2.c's run.c): `Weights`, every matrix kind stacked over layers in
one contiguous array (float32, or quantized blocks), and `RunState`, every buffer one step
needs, preallocated, so the step allocates nothing. `forward_step` runs a token through all layers and the
classifier in a single jitted call: no Python per layer. `forward_prefill` does the same
for a chunk of prompt tokens with matrix-matrix kernels, which read each weight once per
chunk instead of once per token.

Weight formats: each of the eight matrix kinds (wq wk wv wo w1 w2 w3 output) is its own
field of `Weights`, holding a format NamedTuple: `F32Matrix(w)` with w (n_layers, rows,
cols), GGUF's Q8_0 / Q4_0 blocks or QLoRA's NF4 (`Q8Matrix`, `Q4Matrix`, `NF4Matrix`,
minillama/kernels_quant.py).
The kernels dispatch on the format's class at compile time, so any mix of formats runs
through the same `forward_step`, compiled once per mix:

    engine = Engine.from_pretrained(path, quant="q8_0")            # or "q4_0", "nf4"
    engine = Engine.from_model(model, quant="q4_0", keep={"output"})  # output stays float32
    print(engine.describe())                                        # each kind's format, bytes

Quantizing happens at load (`engine.quantize_seconds`). The embedding table and norms stay
float32 (a row lookup and a few vectors per token); with tied embeddings the classifier
`output` is quantized as its own copy. A kind whose row length is not a multiple of the
format's block (32; NF4 64) stays float32, with a warning naming the tensor. A format class must live in an
importable module: Numba's cache index pickles every compiled signature, and a class it
cannot import (a notebook's, a test's) breaks loading the cache elsewhere.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np
from numba import njit

from minillama import kernels as K
from minillama.config import ModelArgs, weight_shapes
from minillama.generate import generate_ids
from minillama.kernels import JIT, F32Matrix
from minillama.kernels_quant import QUANT_MATRICES, NF4Matrix, Q4Matrix, Q8Matrix
from minillama.quant import BlockSizeError
from minillama.rope import rope_table

PREFILL_CHUNK = 256  # tokens per prefill call: the chunk's activations stay in L2 (< 4 MB)
MATRIX_KINDS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "output")  # what quant= quantizes
Matrix = F32Matrix | Q8Matrix | Q4Matrix | NF4Matrix  # the weight formats of minillama.kernels


class Weights(NamedTuple):
    """All weights, Meta's names; matrices stacked over layers (a format NamedTuple each)."""

    tok_embeddings: np.ndarray  # (vocab_size, dim) float32
    attention_norm: np.ndarray  # (n_layers, dim)
    ffn_norm: np.ndarray  # (n_layers, dim)
    norm: np.ndarray  # (dim,)
    wq: Matrix  # (n_layers, n_heads * head_dim, dim)
    wk: Matrix  # (n_layers, n_kv_heads * head_dim, dim)
    wv: Matrix  # (n_layers, n_kv_heads * head_dim, dim)
    wo: Matrix  # (n_layers, dim, n_heads * head_dim)
    w1: Matrix  # (n_layers, hidden_dim, dim)   gate
    w2: Matrix  # (n_layers, dim, hidden_dim)   down
    w3: Matrix  # (n_layers, hidden_dim, dim)   up
    output: Matrix  # (1, vocab_size, dim); float32 and tied: tok_embeddings' memory


class RunState(NamedTuple):
    """The buffers of one decode step, plus the KV cache and the RoPE table."""

    x: np.ndarray  # (dim,) the residual stream
    xb: np.ndarray  # (dim,) normed x, then the attention output
    hb: np.ndarray  # (hidden_dim,) silu(w1 x) * w3 x
    q: np.ndarray  # (dim,) the query, n_heads * head_dim
    att: np.ndarray  # (n_heads, max_seq_len) attention scores, one row per head
    parts: np.ndarray  # (max threads, n_heads, head_dim + 2) attention's spans, merged after
    logits: np.ndarray  # (vocab_size,)
    key_cache: np.ndarray  # (n_layers, max_seq_len, n_kv_heads, head_dim)
    value_cache: np.ndarray  # (n_layers, max_seq_len, n_kv_heads, head_dim)
    cos: np.ndarray  # (max_seq_len, head_dim // 2) Re freqs_cis
    sin: np.ndarray  # (max_seq_len, head_dim // 2) Im freqs_cis


class PrefillState(NamedTuple):
    """The buffers of one prefill chunk of T tokens."""

    x: np.ndarray  # (T, dim)
    xb: np.ndarray  # (T, dim)
    q: np.ndarray  # (T, dim)
    k: np.ndarray  # (T, n_kv_heads * head_dim)
    v: np.ndarray  # (T, n_kv_heads * head_dim)
    hb: np.ndarray  # (T, hidden_dim)
    logits: np.ndarray  # (T, vocab_size) if every position's logits are wanted, else (1, 1)


# ---------------------------------------------------------------------------------------
# The forward passes (jitted; each is one call)
# ---------------------------------------------------------------------------------------


@njit(**JIT)
def forward_step(w, s, token, pos, n_heads, eps, n_spans):
    """Token `token` at position `pos`: writes its keys/values into the cache and the
    next-token logits into s.logits (vocab_size,). Attention splits the positions into
    n_spans spans (<= s.parts.shape[0]): one per thread."""
    x, xb = s.x, s.xb
    n_layers, max_seq_len, n_kv_heads, head_dim = s.key_cache.shape
    x[:] = w.tok_embeddings[token]
    q = s.q.reshape(n_heads, head_dim)  # (n_heads, head_dim) view
    out = xb.reshape(n_heads, head_dim)  # attention output, a view of xb
    cos, sin = s.cos[pos], s.sin[pos]  # (head_dim // 2,)
    for l in range(n_layers):
        K.rmsnorm(xb, x, w.attention_norm[l], eps)
        k = s.key_cache[l, pos]  # (n_kv_heads, head_dim): written in place
        v = s.value_cache[l, pos]
        K.qkv_matvec(s.q, k.reshape(n_kv_heads * head_dim), v.reshape(n_kv_heads * head_dim),
                     w.wq, w.wk, w.wv, l, xb)
        K.rope(q, cos, sin)
        K.rope(k, cos, sin)
        K.attention(out, q, s.key_cache[l], s.value_cache[l], s.att, pos + 1, s.parts[:n_spans])
        K.matvec_add(x, w.wo, l, xb)  # x += wo @ attention
        K.rmsnorm(xb, x, w.ffn_norm[l], eps)
        K.swiglu_matvec(s.hb, w.w1, w.w3, l, xb)
        K.matvec_add(x, w.w2, l, s.hb)  # x += w2 @ swiglu
    K.rmsnorm(xb, x, w.norm, eps)
    K.matvec(s.logits, w.output, np.int64(0), xb)  # one matrix: index 0


@njit(**JIT)
def forward_prefill(w, s, p, tokens, start_pos, n_heads, eps, all_logits):
    """tokens (T,) at positions start_pos..: fills the cache; logits of the last token go
    to s.logits, or every token's to p.logits (T, vocab_size) when all_logits."""
    T = tokens.shape[0]
    n_layers, max_seq_len, n_kv_heads, head_dim = s.key_cache.shape
    X, XB = p.x[:T], p.xb[:T]  # (T, dim)
    Q = p.q[:T].reshape(T, n_heads, head_dim)
    Kn = p.k[:T].reshape(T, n_kv_heads, head_dim)
    Vn = p.v[:T].reshape(T, n_kv_heads, head_dim)
    for t in range(T):
        X[t] = w.tok_embeddings[tokens[t]]
    for l in range(n_layers):
        for t in range(T):
            K.rmsnorm(XB[t], X[t], w.attention_norm[l], eps)
        K.matmul(p.q[:T], w.wq, l, XB)
        K.matmul(p.k[:T], w.wk, l, XB)
        K.matmul(p.v[:T], w.wv, l, XB)
        for t in range(T):
            K.rope(Q[t], s.cos[start_pos + t], s.sin[start_pos + t])
            K.rope(Kn[t], s.cos[start_pos + t], s.sin[start_pos + t])
        s.key_cache[l, start_pos:start_pos + T] = Kn
        s.value_cache[l, start_pos:start_pos + T] = Vn
        K.attention_prefill(XB.reshape(T, n_heads, head_dim), Q, s.key_cache[l],
                            s.value_cache[l], s.att, start_pos)
        K.matmul_add(X, w.wo, l, XB)
        for t in range(T):
            K.rmsnorm(XB[t], X[t], w.ffn_norm[l], eps)
        K.swiglu_matmul(p.hb[:T], w.w1, w.w3, l, XB)
        K.matmul_add(X, w.w2, l, p.hb[:T])
    if all_logits:
        for t in range(T):
            K.rmsnorm(XB[t], X[t], w.norm, eps)
        K.matmul(p.logits[:T], w.output, np.int64(0), XB)
        s.logits[:] = p.logits[T - 1]
    else:
        K.rmsnorm(s.xb, X[T - 1], w.norm, eps)
        K.matvec(s.logits, w.output, np.int64(0), s.xb)


# ---------------------------------------------------------------------------------------
# Loading and the Engine
# ---------------------------------------------------------------------------------------


def _numpy(t) -> np.ndarray:
    """A NumPy view of a torch tensor (any dtype or device; float32 if NumPy lacks it), or t."""
    if hasattr(t, "detach"):  # torch, imported only by whoever made the tensor
        t = t.detach().cpu()
        return (t.float() if str(t.dtype) == "torch.bfloat16" else t).numpy()
    return np.asarray(t)


def weights_from_state_dict(args: ModelArgs, sd, release: Callable[[], None] | None = None) -> Weights:
    """Meta-named tensors (torch or NumPy, any float dtype) -> Weights: float32 copies,
    matrices stacked over layers, every name and shape checked against args. release(), if
    given, is called after each stack is copied (a loader's memory maps drop their pages)."""
    shapes = weight_shapes(args)
    optional = {"output.weight"} if args.tie_embeddings else set()  # tied: the same tensor
    unknown = set(sd) - set(shapes) - optional
    missing = set(shapes) - set(sd)
    if unknown or missing:
        raise ValueError(f"state dict does not match the config: missing {sorted(missing)}, "
                         f"unexpected {sorted(unknown)}")
    for name, shape in shapes.items():
        if tuple(sd[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(sd[name].shape)}, expected {shape}")

    def f32(name: str) -> np.ndarray:  # a float32 C-contiguous copy: never the caller's memory
        return np.array(_numpy(sd[name]), dtype=np.float32, order="C")

    def stack(name: str) -> np.ndarray:  # (n_layers, ...): each layer converted straight in
        first = shapes[f"layers.0.{name}"]
        out = np.empty((args.n_layers, *first), np.float32)
        for l in range(args.n_layers):
            out[l] = _numpy(sd[f"layers.{l}.{name}"])
        if release is not None:
            release()
        return out

    emb = f32("tok_embeddings.weight")
    output = emb if args.tie_embeddings else f32("output.weight")
    return Weights(
        tok_embeddings=emb, attention_norm=stack("attention_norm.weight"),
        ffn_norm=stack("ffn_norm.weight"), norm=f32("norm.weight"),
        wq=F32Matrix(stack("attention.wq.weight")), wk=F32Matrix(stack("attention.wk.weight")),
        wv=F32Matrix(stack("attention.wv.weight")), wo=F32Matrix(stack("attention.wo.weight")),
        w1=F32Matrix(stack("feed_forward.w1.weight")), w2=F32Matrix(stack("feed_forward.w2.weight")),
        w3=F32Matrix(stack("feed_forward.w3.weight")), output=F32Matrix(output[None]),
    )


_TENSORS = {"wq": "attention.wq.weight", "wk": "attention.wk.weight", "wv": "attention.wv.weight",
            "wo": "attention.wo.weight", "w1": "feed_forward.w1.weight",
            "w2": "feed_forward.w2.weight", "w3": "feed_forward.w3.weight"}


def _check_quant(quant: str | None, keep: Collection[str]) -> None:
    if quant is not None and quant not in QUANT_MATRICES:
        raise ValueError(f"unknown quant {quant!r}; accepted: {', '.join(QUANT_MATRICES)} "
                         "(or None for float32)")
    unknown = set(keep) - set(MATRIX_KINDS)
    if unknown:
        raise ValueError(f"keep= names no matrix kind: {sorted(unknown)}; the kinds are "
                         f"{', '.join(MATRIX_KINDS)}")


def _tensor_names(args: ModelArgs, kind: str) -> list[str]:
    """The state-dict name of each matrix of a kind's stack (for errors and warnings)."""
    if kind == "output":
        return ["tok_embeddings.weight (tied, as output)" if args.tie_embeddings else "output.weight"]
    return [f"layers.{l}.{_TENSORS[kind]}" for l in range(args.n_layers)]


def quantize_weights(args: ModelArgs, w: Weights, quant: str,
                     keep: Collection[str] = frozenset()) -> Weights:
    """w with every float32 matrix kind not in keep stored as `quant` (QUANT_MATRICES). A
    kind whose row length is not a multiple of the block stays float32, with a warning naming the
    tensor; a NaN or inf raises ValueError naming it."""
    _check_quant(quant, keep)
    new = {}
    for kind in MATRIX_KINDS:
        W = getattr(w, kind)
        if kind in keep or not isinstance(W, F32Matrix):
            continue
        try:
            new[kind] = QUANT_MATRICES[quant].from_float(W.w, _tensor_names(args, kind))
        except BlockSizeError as e:
            warnings.warn(f"{e}; {kind} stays float32", stacklevel=2)
    return w._replace(**new)


def _matrix_info(W) -> tuple[str, tuple, int]:
    """(format name, (n_mats, rows, cols), bytes stored, the last chunk's padding included)."""
    nbytes = sum(a.nbytes for a in W if isinstance(a, np.ndarray))
    if isinstance(W, F32Matrix):
        return "f32", W.w.shape, nbytes
    return getattr(W, "fmt", type(W).__name__), getattr(W, "shape", ()), nbytes


class Engine:
    """A model ready for fast decoding: Weights, a RunState with its KV cache, a position."""

    def __init__(self, args: ModelArgs, weights: Weights):
        self.args, self.weights = args, weights
        L, S, hd = args.n_layers, args.max_seq_len, args.head_dim
        cos, sin = rope_table(args.head_dim, S, args.rope_theta, args.rope_scaling)
        cache_shape = (L, S, args.n_kv_heads, hd)
        self.state = RunState(
            x=np.zeros(args.dim, np.float32), xb=np.zeros(args.dim, np.float32),
            hb=np.zeros(args.ffn_hidden_dim, np.float32), q=np.zeros(args.dim, np.float32),
            att=np.zeros((args.n_heads, S), np.float32),
            parts=np.zeros((numba.config.NUMBA_NUM_THREADS, args.n_heads, hd + 2), np.float32),
            logits=np.zeros(args.vocab_size, np.float32),
            key_cache=np.zeros(cache_shape, np.float32),
            value_cache=np.zeros(cache_shape, np.float32), cos=cos, sin=sin)
        # dynamic NTK's frequencies depend on the current length: rows are rewritten per call
        self._dynamic = args.rope_scaling is not None and args.rope_scaling.type == "dynamic"
        self.pos = 0  # tokens in the KV cache; the next token goes to this position
        self.quantize_seconds = 0.0  # how long the loader took to quantize the weights

    @classmethod
    def from_model(cls, model, quant: str | None = None,
                   keep: Collection[str] = frozenset()) -> Engine:
        """An engine holding copies of a torch `Llama`'s weights: float32, or the matrix
        kinds not in keep quantized to `quant` ("q8_0", "q4_0" or "nf4")."""
        return cls.from_state_dict(model.args, model.state_dict(), quant, keep)

    @classmethod
    def from_state_dict(cls, args: ModelArgs, state_dict, quant: str | None = None,
                        keep: Collection[str] = frozenset()) -> Engine:
        """An engine from Meta-named tensors (torch or numpy) matching args; quant as above."""
        _check_quant(quant, keep)
        return cls._quantized(args, weights_from_state_dict(args, state_dict), quant, keep)

    @classmethod
    def from_pretrained(cls, path: str | Path, quant: str | None = None,
                        keep: Collection[str] = frozenset()) -> Engine:
        """Load any checkpoint `minillama.formats.checkpoint` reads (a transformers or Meta
        directory, a llama2.c .bin, a GGUF file), detected by content, straight into NumPy
        (torch is only imported for Meta's .pth); quant as above. A GGUF file's Q8_0 / Q4_0
        matrices are loaded as they are stored, never dequantized; quant then only applies to
        its float matrices and must not ask for another quantized format."""
        from minillama.formats.checkpoint import read_checkpoint

        _check_quant(quant, keep)
        ck = read_checkpoint(path, tokenizer=False)
        if ck.gguf is not None:
            from minillama.formats.gguf import engine_weights

            weights = engine_weights(ck.gguf, ck.args)
            stored = {getattr(weights, k).fmt for k in MATRIX_KINDS
                      if not isinstance(getattr(weights, k), F32Matrix)}
            if quant is not None and stored - {quant}:
                raise ValueError(f"{ck.path} stores its matrices as {', '.join(sorted(stored))}; load it "
                                 f"with quant=None or {next(iter(stored))!r}, not {quant!r} "
                                 "(quantizing quantized weights again only loses accuracy)")
        else:
            weights = weights_from_state_dict(ck.args, ck.tensors, ck.release)
        ck.release()
        return cls._quantized(ck.args, weights, quant, keep)

    @classmethod
    def _quantized(cls, args: ModelArgs, weights: Weights, quant: str | None,
                   keep: Collection[str]) -> Engine:
        t0 = time.perf_counter()
        if quant is not None:
            weights = quantize_weights(args, weights, quant, keep)
        engine = cls(args, weights)
        engine.quantize_seconds = time.perf_counter() - t0 if quant is not None else 0.0
        return engine

    def describe(self) -> str:
        """A table of the matrix kinds: format, shape (n_mats, rows, cols) and bytes stored,
        then the total and the time quantizing took."""
        lines, total = [f"{'kind':<8}{'format':<8}{'shape':<24}{'bytes':>14}"], 0
        for kind in MATRIX_KINDS:
            W = getattr(self.weights, kind)
            fmt, shape, nbytes = _matrix_info(W)
            tied = isinstance(W, F32Matrix) and np.shares_memory(W.w, self.weights.tok_embeddings)
            total += 0 if tied else nbytes
            lines.append(f"{kind:<8}{fmt:<8}{str(shape):<24}{nbytes:>14,}"
                         + ("  tok_embeddings' memory (tied)" if tied else ""))
        quantized = any(not isinstance(getattr(self.weights, k), F32Matrix) for k in MATRIX_KINDS)
        lines.append(f"matrices: {total:,} bytes ({total / 2**20:.1f} MiB); embeddings and norms "
                     "float32; " + (f"quantizing took {self.quantize_seconds:.2f} s" if quantized
                                    else "nothing quantized"))
        return "\n".join(lines)

    def bytes_per_token(self) -> int:
        """Bytes of weights one decode step reads: every matrix as stored (the classifier
        too when tied; a chunked format's padding rows are never read, so not counted),
        the norms and one embedding row."""
        total = 4 * self.args.dim * (2 * self.args.n_layers + 2)  # norms, an embedding row
        for kind in MATRIX_KINDS:
            W = getattr(self.weights, kind)
            _, (_, rows, _), nbytes = _matrix_info(W)
            # chunked: qs (n_mats, n_chunks, ..., R) stores n_chunks * R rows
            stored = rows if isinstance(W, F32Matrix) else W.qs.shape[1] * W.qs.shape[-1]
            total += nbytes * rows // stored
        return total

    def reset(self) -> None:
        """Forget the KV cache: the next token goes to position 0."""
        self.pos = 0

    def _check(self, tokens: np.ndarray) -> None:
        a = self.args
        if tokens.size == 0:
            raise ValueError("no tokens given: need at least one token id")
        if tokens.min() < 0 or tokens.max() >= a.vocab_size:
            raise ValueError(f"token ids must lie in 0..{a.vocab_size - 1} (vocab_size), got "
                             f"{tokens.min()}..{tokens.max()}")
        end = self.pos + tokens.size
        if end > a.max_seq_len:
            raise ValueError(f"positions {self.pos}..{end - 1} go past max_seq_len "
                             f"{a.max_seq_len}; call reset() or use a shorter input")
        if self._dynamic:  # what Llama.rope_table does: this call's length sets the base
            cos, sin = rope_table(a.head_dim, end, a.rope_theta, a.rope_scaling)
            self.state.cos[self.pos:end], self.state.sin[self.pos:end] = (
                cos[self.pos:end], sin[self.pos:end])

    def step(self, token: int) -> np.ndarray:
        """Feed one token at position self.pos; the next-token logits (vocab_size,).

        The array is the engine's buffer: the next call overwrites it (copy to keep it)."""
        token = int(token)
        if not (0 <= token < self.args.vocab_size and self.pos < self.args.max_seq_len) \
                or self._dynamic:
            self._check(np.array([token]))
        forward_step(self.weights, self.state, token, self.pos, self.args.n_heads,
                     self.args.norm_eps, numba.get_num_threads())
        self.pos += 1
        return self.state.logits

    def prefill(self, tokens: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """Feed tokens at positions self.pos.. in batched chunks; the last token's logits
        (vocab_size,), or every token's (T, vocab_size) float32 when all_logits."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        self._check(tokens)
        a, T = self.args, tokens.size
        chunk = min(T, PREFILL_CHUNK)
        kv = a.n_kv_heads * a.head_dim
        p = PrefillState(*(np.empty((chunk, n), np.float32) for n in
                           (a.dim, a.dim, a.dim, kv, kv, a.ffn_hidden_dim)),
                         logits=np.empty((chunk, a.vocab_size) if all_logits else (1, 1), np.float32))
        every = np.empty((T, a.vocab_size), np.float32) if all_logits else None
        for c in range(0, T, chunk):
            part = tokens[c:c + chunk]
            forward_prefill(self.weights, self.state, p, part, self.pos, a.n_heads,
                            a.norm_eps, all_logits)
            if all_logits:
                every[c:c + part.size] = p.logits[:part.size]
            self.pos += part.size
        return every if all_logits else self.state.logits

    def feed(self, ids: list[int], start_pos: int) -> np.ndarray:
        """The step function of minillama.generate: a prompt at position 0 (after a reset),
        else one token at self.pos; returns the last position's logits (vocab_size,)."""
        if start_pos == 0:
            self.reset()
            return self.prefill(ids)
        if start_pos != self.pos or len(ids) != 1:
            raise ValueError(f"feed one token at position {self.pos}, got {len(ids)} at {start_pos}")
        return self.step(ids[0])

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop_ids: Sequence[int] = (), stream: Callable[[int], None] | None = None,
                 ) -> list[int]:
        """New token ids after prompt_ids (starting from an empty cache); stops after
        max_new_tokens or before a stop id (which is not returned). stream(id) sees each."""
        prompt = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if prompt.size + max_new_tokens > self.args.max_seq_len:
            raise ValueError(f"prompt ({prompt.size} tokens) + max_new_tokens ({max_new_tokens}) "
                             f"exceeds max_seq_len {self.args.max_seq_len}")
        # the same loop and sampler as the torch backend (minillama.generate)
        out, _ = generate_ids(self.feed, [int(t) for t in prompt], self.args.max_seq_len,
                              max_new_tokens, temperature, top_k or 0,
                              1.0 if top_p is None else top_p, seed, stop_ids, stream)
        return out
