"""Tests for minillama/engine.py: the Numba engine against the torch `Llama`.

Tolerance. The engine and torch both compute in float32 but sum in different orders
(fastmath reassociation, 4x4 tiles in prefill, BLAS in torch), which moves each result by
about 1e-7 relative per operation. Through 2 layers and a classifier the logits (of size
~4 here) differ by ~4e-6 at most, measured; LOGITS_ATOL = 5e-5 leaves 10x room and is
still 1e-5 of the logits' range, far below what any real bug produces (O(0.1)).
"""

import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network

import numpy as np
import pytest
import torch
from helpers import randomize

from minillama.config import ModelArgs
from minillama.engine import PREFILL_CHUNK, Engine
from minillama.model import KVCache, Llama

LOGITS_ATOL = 5e-5
# NUMBA_DISABLE_JIT=1 runs the kernels as plain Python: keep that run short
SLOW_PY = os.environ.get("NUMBA_DISABLE_JIT") == "1"
N_TOKENS = 24 if SLOW_PY else 256
N_GREEDY = 12 if SLOW_PY else 200


def tiny(**overrides) -> ModelArgs:
    """Awkward sizes on purpose: vocab 67, hidden 70, head_dim 8, GQA 6 -> 2."""
    base = dict(dim=48, n_layers=2, n_heads=6, n_kv_heads=2, vocab_size=67, hidden_dim=70,
                max_seq_len=PREFILL_CHUNK + 40, tie_embeddings=False)
    return ModelArgs(**{**base, **overrides})


CONFIGS = {
    "mha": tiny(n_kv_heads=6),
    "gqa": tiny(),
    "mqa-tied": tiny(n_kv_heads=1, tie_embeddings=True),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request):
    model = randomize(Llama(CONFIGS[request.param]), seed=len(request.param))
    return model, Engine.from_model(model)


def tokens(n: int, vocab: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n)


def torch_logits(model: Llama, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(ids)[None])[0].numpy()  # (T, vocab_size)


def torch_greedy(model: Llama, prompt: np.ndarray, n: int) -> list[int]:
    """The reference: prefill the prompt into a KVCache, then argmax one token at a time."""
    cache, out = KVCache(model.args), []
    with torch.no_grad():
        logits = model(torch.as_tensor(prompt)[None], 0, cache)[0, -1]
        for i in range(n):
            out.append(int(logits.argmax()))
            logits = model(torch.tensor([[out[-1]]]), len(prompt) + i, cache)[0, -1]
    return out


def test_decode_logits_match_torch_at_every_position(pair):
    model, engine = pair
    ids = tokens(N_TOKENS, model.args.vocab_size)
    ref = torch_logits(model, ids)  # (T, vocab) without a cache
    engine.reset()
    got = np.stack([engine.step(t).copy() for t in ids])
    np.testing.assert_allclose(got, ref, rtol=0, atol=LOGITS_ATOL)
    assert engine.pos == N_TOKENS


def test_prefill_logits_match_torch_and_decode(pair):
    model, engine = pair
    n = model.args.max_seq_len - 3 if not SLOW_PY else 9  # > PREFILL_CHUNK: two chunks
    ids = tokens(n, model.args.vocab_size, seed=2)
    engine.reset()
    every = engine.prefill(ids, all_logits=True)  # (n, vocab)
    np.testing.assert_allclose(every, torch_logits(model, ids), rtol=0, atol=LOGITS_ATOL)
    keys = engine.state.key_cache[:, :n].copy()
    engine.reset()
    last = engine.prefill(ids)  # last position only
    np.testing.assert_allclose(last, every[-1], rtol=0, atol=LOGITS_ATOL)
    engine.reset()
    for t in ids:
        step = engine.step(t)
    np.testing.assert_allclose(step, every[-1], rtol=0, atol=LOGITS_ATOL)
    np.testing.assert_allclose(engine.state.key_cache[:, :n], keys, rtol=0, atol=1e-5)


def test_prefill_then_decode_continues_the_same_sequence(pair):
    model, engine = pair
    ids = tokens(20, model.args.vocab_size, seed=3)
    engine.reset()
    engine.prefill(ids[:13])
    got = np.stack([engine.step(t).copy() for t in ids[13:]])
    np.testing.assert_allclose(got, torch_logits(model, ids)[13:], rtol=0, atol=LOGITS_ATOL)


def test_greedy_tokens_match_torch_for_200_tokens():
    model = randomize(Llama(CONFIGS["gqa"]), seed=7)
    engine = Engine.from_model(model)
    prompt = tokens(5, model.args.vocab_size, seed=4)
    assert engine.generate(prompt, N_GREEDY, temperature=0.0) == torch_greedy(model, prompt, N_GREEDY)


@pytest.mark.parametrize("scaling", [
    dict(type="dynamic", factor=2.0, original_max_position_embeddings=8),
    dict(type="yarn", factor=4.0, original_max_position_embeddings=8),
])
def test_rope_scaling_matches_torch(scaling):
    args = dataclasses.replace(CONFIGS["gqa"], max_seq_len=24, rope_scaling=scaling)
    model = randomize(Llama(args), seed=5)
    engine = Engine.from_model(model)
    ids = tokens(20, args.vocab_size, seed=5)
    np.testing.assert_allclose(engine.prefill(ids[:12], all_logits=True),
                               torch_logits(model, ids[:12]), rtol=0, atol=LOGITS_ATOL)
    cache = KVCache(args)  # torch with a cache, one token at a time: lengths grow as ours do
    engine.reset()
    with torch.no_grad():
        for pos, t in enumerate(ids):
            ref = model(torch.tensor([[int(t)]]), pos, cache)[0, -1].numpy()
            np.testing.assert_allclose(engine.step(t), ref, rtol=0, atol=LOGITS_ATOL)


def test_from_pretrained_loads_what_the_torch_model_loads(tmp_path):
    model = randomize(Llama(CONFIGS["gqa"]), seed=6)
    model.save_pretrained(tmp_path)
    engine = Engine.from_pretrained(tmp_path)
    ids = tokens(7, model.args.vocab_size)
    np.testing.assert_allclose(engine.prefill(ids, all_logits=True), torch_logits(model, ids),
                               rtol=0, atol=LOGITS_ATOL)


def test_shipped_model_greedy_matches_torch():
    from minillama.pretrained import COURSE_MODEL, load_model

    if not COURSE_MODEL.is_dir():
        pytest.skip(f"the shipped model is not there yet ({COURSE_MODEL})")
    model, tokenizer = load_model()
    engine = Engine.from_model(model)
    for text in ["Once upon a time", "One day, Lily", "Tom had a little dog"]:
        prompt = np.array(tokenizer.encode(text, bos=True))
        got = engine.generate(prompt, N_GREEDY, temperature=0.0)
        assert got == torch_greedy(model, prompt, N_GREEDY), text


# --- bad input and limits -----------------------------------------------------------------


def test_position_past_max_seq_len_raises():
    args = dataclasses.replace(CONFIGS["gqa"], max_seq_len=6)
    engine = Engine.from_model(randomize(Llama(args)))
    engine.prefill([1, 2, 3, 4, 5])
    engine.step(6)
    with pytest.raises(ValueError, match="max_seq_len"):
        engine.step(7)
    engine.reset()
    with pytest.raises(ValueError, match="max_seq_len"):
        engine.prefill(list(range(7)))
    with pytest.raises(ValueError, match="max_seq_len"):
        engine.generate([1, 2, 3], max_new_tokens=4)
    assert len(engine.generate([1, 2, 3], max_new_tokens=3, temperature=0)) == 3


def test_bad_tokens_and_weights_are_rejected():
    args = CONFIGS["gqa"]
    model = Llama(args)
    engine = Engine.from_model(model)
    with pytest.raises(ValueError, match="vocab_size"):
        engine.step(args.vocab_size)
    with pytest.raises(ValueError, match="vocab_size"):
        engine.prefill([0, -1])
    with pytest.raises(ValueError, match="at least one"):
        engine.prefill([])
    sd = model.state_dict()
    sd["layers.0.attention.wk.weight"] = sd["layers.0.attention.wq.weight"]  # MHA-sized
    with pytest.raises(ValueError, match="wk.weight has shape"):
        Engine.from_state_dict(args, sd)
    del sd["norm.weight"]
    with pytest.raises(ValueError, match="missing"):
        Engine.from_state_dict(args, sd)


# --- sampling and generation ----------------------------------------------------------------


def test_generate_streams_stops_and_is_reproducible():
    model = randomize(Llama(CONFIGS["gqa"]), seed=8)
    engine = Engine.from_model(model)
    seen = []
    out = engine.generate([3, 4], 10, temperature=1.0, top_p=0.9, seed=1, stream=seen.append)
    assert seen == out and len(out) == 10
    assert engine.generate([3, 4], 10, temperature=1.0, top_p=0.9, seed=1) == out
    stopped = engine.generate([3, 4], 10, temperature=1.0, top_p=0.9, seed=1, stop_ids=[out[4]])
    assert stopped == out[: out.index(out[4])]
    with pytest.raises(ValueError, match="top_p must be in"):
        engine.generate([3, 4], 10, temperature=1.0, top_p=0.0)


def test_a_second_process_compiles_nothing():
    """cache=True: once this process has compiled the step and prefill, a new process loads
    them from Numba's cache (NUMBA_CACHE_DIR or __pycache__) instead of compiling."""
    import subprocess
    import sys

    if SLOW_PY:
        pytest.skip("nothing is compiled under NUMBA_DISABLE_JIT")
    engine = Engine.from_model(Llama(CONFIGS["gqa"]))
    engine.step(1), engine.prefill([1, 2]), engine.prefill([3], all_logits=True)
    code = ("from minillama.engine import Engine, forward_step, forward_prefill\n"
            "from minillama.model import Llama\nfrom minillama.config import ModelArgs\n"
            f"e = Engine.from_model(Llama(ModelArgs(**{dataclasses.asdict(CONFIGS['gqa'])!r})))\n"
            "e.step(1), e.prefill([1, 2]), e.prefill([3], all_logits=True)\n"
            "print(sum(forward_step.stats.cache_misses.values()) + "
            "sum(forward_prefill.stats.cache_misses.values()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "0", out.stdout + out.stderr


def test_the_engine_never_imports_torch(tmp_path):
    """`minillama generate` answers at once because the engine path leaves torch out: loading
    a model directory, prefill, a step and generation, in a fresh process."""
    import subprocess
    import sys

    from minillama.pretrained import COURSE_MODEL

    code = ("import sys\nfrom minillama.pretrained import load_model\n"
            "from minillama.generate import generate\n"
            f"engine, tok = load_model({str(COURSE_MODEL)!r}, engine='numba')\n"
            "out = generate(engine, tok, 'Once upon a time', max_new_tokens=3, temperature=0)\n"
            "print(len(out.ids), 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["3", "False"], out.stdout + out.stderr


def test_a_quantized_matrix_stands_in_without_changing_the_step():
    """Quantization readiness: swap two matrix kinds for a toy int8 format (registered in
    tests/test_kernels.py); the same forward_step runs and matches float32 weights that
    hold the same (dequantized) values."""
    from test_kernels import no_numba_cache, quantize_rows

    from minillama.kernels import F32Matrix, dequantize

    model = randomize(Llama(CONFIGS["gqa"]), seed=9)
    w = Engine.from_model(model).weights
    quantized = {name: quantize_rows(getattr(w, name).w) for name in ("wq", "w2")}
    same_values = {name: F32Matrix(np.stack([dequantize(W, l) for l in range(model.args.n_layers)]))
                   for name, W in quantized.items()}
    mixed = Engine(model.args, w._replace(**quantized))
    plain = Engine(model.args, w._replace(**same_values))
    with no_numba_cache():
        for t in tokens(12, model.args.vocab_size):
            np.testing.assert_allclose(mixed.step(t), plain.step(t), rtol=0, atol=LOGITS_ATOL)


# --- quantized weights (minillama/kernels_quant.py) -----------------------------------------
# Tolerance. A quantized engine is compared with a float32 engine that holds exactly the
# values its weights dequantize to: the same math summed in another order (a chunk's
# blocks, then the blocks; float32 rows in one pass), so the logits move by ~1e-6 as
# above. QUANT_ATOL = 1e-4 leaves room and stays far below what a wrong block, nibble or
# scale does (O(0.1)).
QUANT_ATOL = 1e-4
# Every row length a multiple of 64, NF4's block (dim 64, hidden 128); rows that are not a
# multiple of the 128-row chunk (wk and wv 16, vocab 67)
QCONFIGS = {"gqa": tiny(dim=64, n_heads=8, hidden_dim=128),
            "tied": tiny(dim=64, n_heads=8, n_kv_heads=1, hidden_dim=128, tie_embeddings=True)}


def as_float32(engine: Engine) -> Engine:
    """A float32 engine with the values the engine's (quantized) matrices dequantize to."""
    from minillama.engine import MATRIX_KINDS
    from minillama.kernels import F32Matrix, dequantize

    w = engine.weights
    plain = {k: F32Matrix(np.stack([dequantize(getattr(w, k), m) for m in range(getattr(w, k).shape[0])]))
             for k in MATRIX_KINDS if not isinstance(getattr(w, k), F32Matrix)}
    return Engine(engine.args, w._replace(**plain))


@pytest.fixture(scope="module", params=[(q, c) for q in ("q8_0", "q4_0", "nf4") for c in QCONFIGS])
def quantized_pair(request):
    quant, config = request.param
    model = randomize(Llama(QCONFIGS[config]), seed=10)
    engine = Engine.from_model(model, quant=quant)
    return engine, as_float32(engine)


def test_quantized_engine_matches_float32_of_the_same_values(quantized_pair):
    engine, plain = quantized_pair
    ids = tokens(N_TOKENS, engine.args.vocab_size, seed=11)
    for e in (engine, plain):
        e.reset()
    np.testing.assert_allclose(engine.prefill(ids, all_logits=True), plain.prefill(ids, all_logits=True),
                               rtol=0, atol=QUANT_ATOL)
    for e in (engine, plain):
        e.reset()
    for t in ids:
        np.testing.assert_allclose(engine.step(t), plain.step(t), rtol=0, atol=QUANT_ATOL)


def test_quantized_weights_are_what_was_asked_for(quantized_pair):
    from minillama.kernels_quant import QUANT_MATRICES

    engine, _ = quantized_pair
    w = engine.weights
    cls = type(w.wq)
    assert cls in QUANT_MATRICES.values() and all(type(getattr(w, k)) is cls for k in
                                                   ("wk", "wv", "wo", "w1", "w2", "w3", "output"))
    assert w.tok_embeddings.dtype == np.float32 and w.output.shape == (1, 67, 64)  # its own copy
    text = engine.describe()
    assert all(kind in text for kind in ("wq", "w2", "output", cls.fmt)) and "quantizing took" in text
    assert engine.quantize_seconds > 0


def test_bytes_per_token_counts_what_a_step_reads(quantized_pair):
    """By hand: float32 reads 4 bytes a parameter (the tied classifier twice: as the
    embedding row and as the matrix); Q8_0 36 bytes per 32 weights (int8 and a float32
    scale), Q4_0 20 per 32, NF4 36 per 64; norms and one embedding row in float32."""
    engine, plain = quantized_pair
    a = engine.args
    kv = a.n_kv_heads * a.dim // a.n_heads
    per_layer = 2 * a.dim * a.dim + 2 * kv * a.dim + 3 * a.dim * a.hidden_dim
    matrices = a.n_layers * per_layer + a.vocab_size * a.dim
    vectors = a.dim * (2 * a.n_layers + 2)
    per_weight = {"q8_0": 36 / 32, "q4_0": 20 / 32, "nf4": 36 / 64}[engine.weights.wq.fmt]
    assert plain.bytes_per_token() == 4 * (matrices + vectors)
    assert engine.bytes_per_token() == matrices * per_weight + 4 * vectors


def test_quantize_keeps_what_it_is_told_to_and_warns_for_what_it_cannot():
    model = randomize(Llama(tiny(dim=64, n_heads=8, hidden_dim=70)), seed=12)
    with pytest.warns(UserWarning, match=r"layers\.0\.feed_forward\.w2\.weight.*w2 stays float32"):
        engine = Engine.from_model(model, quant="q4_0", keep={"output"})  # w2 rows: 70 values
    w = engine.weights
    assert [type(getattr(w, k)).__name__ for k in ("wq", "w1", "w2", "w3", "output")] == \
        ["Q4Matrix", "Q4Matrix", "F32Matrix", "Q4Matrix", "F32Matrix"]
    with pytest.warns(UserWarning, match=r"multiple of 64.*row length 70.*w2 stays float32"):
        nf4 = Engine.from_model(model, quant="nf4")  # 64-blocks: w2 (70) stays float32 too
    assert type(nf4.weights.w2).__name__ == "F32Matrix" and type(nf4.weights.w1).__name__ == "NF4Matrix"
    plain = as_float32(engine)
    for t in tokens(8, model.args.vocab_size):
        np.testing.assert_allclose(engine.step(t), plain.step(t), rtol=0, atol=QUANT_ATOL)


def test_bad_quant_options_and_non_finite_weights_are_refused():
    model = Llama(QCONFIGS["gqa"])
    with pytest.raises(ValueError, match="accepted: q8_0, q4_0, nf4"):
        Engine.from_model(model, quant="q5_k")
    with pytest.raises(ValueError, match="the kinds are wq, wk, wv, wo, w1, w2, w3, output"):
        Engine.from_model(model, quant="q8_0", keep={"tok_embeddings"})
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["layers.1.attention.wv.weight"][3, 5] = float("nan")
    with pytest.raises(ValueError, match=r"layers\.1\.attention\.wv\.weight has NaN/inf at index \(3, 5\)"):
        Engine.from_state_dict(model.args, sd, quant="q8_0")


def test_shipped_model_q8_0_greedy_matches_float32():
    """Measured: q8_0 keeps all 200 greedy tokens of each prompt (its logits move by up to
    0.17 of a range of 37). q4_0 does not: it parts from float32 after 1 to 17 tokens."""
    from minillama.pretrained import COURSE_MODEL, load_tokenizer

    if not COURSE_MODEL.is_dir():
        pytest.skip(f"the shipped model is not there yet ({COURSE_MODEL})")
    tokenizer = load_tokenizer(COURSE_MODEL)
    fp32, q8 = Engine.from_pretrained(COURSE_MODEL), Engine.from_pretrained(COURSE_MODEL, quant="q8_0")
    for text in ["Once upon a time", "One day, Lily", "Tom had a little dog"]:
        prompt = tokenizer.encode(text, bos=True)
        got = q8.generate(prompt, N_GREEDY, temperature=0.0)
        assert got == fp32.generate(prompt, N_GREEDY, temperature=0.0), text


@pytest.mark.parametrize("quant", ["q8_0", "q4_0"])
def test_a_second_process_compiles_nothing_for_a_quantized_engine(quant):
    import subprocess
    import sys

    if SLOW_PY:
        pytest.skip("nothing is compiled under NUMBA_DISABLE_JIT")
    args = QCONFIGS["gqa"]
    engine = Engine.from_model(Llama(args), quant=quant)
    engine.step(1), engine.prefill([1, 2]), engine.prefill([3], all_logits=True)
    code = ("from minillama.engine import Engine, forward_step, forward_prefill\n"
            "from minillama.model import Llama\nfrom minillama.config import ModelArgs\n"
            f"e = Engine.from_model(Llama(ModelArgs(**{dataclasses.asdict(args)!r})), quant={quant!r})\n"
            "e.step(1), e.prefill([1, 2]), e.prefill([3], all_logits=True)\n"
            "print(sum(forward_step.stats.cache_misses.values()) + "
            "sum(forward_prefill.stats.cache_misses.values()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "0", out.stdout + out.stderr
