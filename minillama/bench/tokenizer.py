"""`minillama bench tokenizer`: our BPE against sentencepiece on the story corpus.

Generates the corpus, trains a 4096-piece tokenizer with minillama and a BPE model with
sentencepiece (Llama 2's options) on the same stories, then times encoding every story with
each (median of --repeats runs) and prints MB/s and the ratio. It also checks that
sentencepiece, loading our exported `.model`, gives exactly our ids.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

# The options of Llama 2's tokenizer.model, for the sentencepiece baseline.
LLAMA_SPM_OPTIONS = dict(model_type="bpe", byte_fallback=True, split_digits=True,
                         normalization_rule_name="identity", add_dummy_prefix=True,
                         remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
                         character_coverage=0.99995, max_sentencepiece_length=16)


def _median_time(fn: Callable[[], object], repeats: int, setup: Callable[[], None] | None = None
                 ) -> tuple[float, object]:
    """Median wall time of fn() over repeats runs (setup runs untimed before each)."""
    times, result = [], None
    for _ in range(repeats):
        if setup:
            setup()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minillama bench tokenizer", description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, default=5.0, help="MB of generated stories (default 5)")
    p.add_argument("--vocab-size", type=int, default=4096, help="pieces (default 4096)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per encoder (default 5)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; returns 0, or 1 if the ids differ."""
    import sentencepiece as spm

    from minillama.data import generate_corpus
    from minillama.tokenizer import Tokenizer

    args = _parser().parse_args(argv)
    if args.repeats < 1 or args.mb <= 0:
        raise SystemExit("error: --repeats must be >= 1 and --mb > 0")
    t0 = time.perf_counter()
    stories = [s.text for s in generate_corpus(int(args.mb * 1e6), seed=args.seed)]
    t_gen = time.perf_counter() - t0
    n_bytes = sum(len(s.encode("utf-8")) for s in stories)
    mb = n_bytes / 1e6
    print(f"corpus: {mb:.2f} MB, {len(stories)} stories, generated in {t_gen:.2f} s "
          f"({mb / t_gen:.1f} MB/s)")

    t_ours, ours = _median_time(lambda: Tokenizer.train(stories, args.vocab_size), 1)
    buf = io.BytesIO()
    t_spm, _ = _median_time(lambda: spm.SentencePieceTrainer.train(
        sentence_iterator=iter(stories), model_writer=buf, vocab_size=args.vocab_size,
        max_sentence_length=1 << 16, num_threads=1, minloglevel=2, **LLAMA_SPM_OPTIONS), 1)
    print(f"training {args.vocab_size} pieces (1 thread): minillama {t_ours:.2f} s, "
          f"sentencepiece {t_spm:.2f} s")

    exported = ours.to_sentencepiece_bytes()
    sp_own = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    sp_ours = spm.SentencePieceProcessor(model_proto=exported)

    fresh: list[Tokenizer] = []  # a new tokenizer per cold run: empty segment cache

    def cold_setup() -> None:
        fresh[:] = [Tokenizer.from_sentencepiece_bytes(exported)]

    rows = []
    t, ids = _median_time(lambda: [fresh[0].encode(s) for s in stories], args.repeats, cold_setup)
    rows.append(("minillama, cold cache", t, ids))
    t, _ = _median_time(lambda: [fresh[0].encode(s) for s in stories], args.repeats)
    rows.append(("minillama, warm cache", t, ids))
    t, spm_ids = _median_time(lambda: sp_ours.encode(stories, num_threads=1), args.repeats)
    rows.append(("sentencepiece, our model", t, spm_ids))
    t, own_ids = _median_time(lambda: sp_own.encode(stories, num_threads=1), args.repeats)
    rows.append(("sentencepiece, its own model", t, own_ids))

    base = rows[3][1]
    print(f"\nencoding {len(stories)} stories one by one, 1 thread, median of {args.repeats}:")
    print(f"{'encoder':<30} {'time (s)':>9} {'MB/s':>7} {'tokens':>10} {'speed vs sentencepiece':>23}")
    for name, t, result in rows:
        n_tokens = sum(len(x) for x in result)
        print(f"{name:<30} {t:>9.3f} {mb / t:>7.2f} {n_tokens:>10} {base / t:>22.2f}x")
    same = ids == spm_ids
    print(f"\nids identical to sentencepiece on our exported model: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
