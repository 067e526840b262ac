"""`minillama train`: corpus -> tokenizer -> token streams -> a trained model directory.

    minillama train --preset course --steps 3000 --out runs/course

writes, in --out: tokenizer.model, checkpoint/ (resumable), model/ (config.json,
model.safetensors, tokenizer.model), loss.csv, loss.png and summary.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from minillama.config import PRESETS

    p.add_argument("--preset", default="course", choices=sorted(PRESETS),
                   help="model shape (default: course)")
    p.add_argument("--dim", type=int, help="override the preset's dim")
    p.add_argument("--n-layers", type=int, help="override the preset's n_layers")
    p.add_argument("--vocab-size", type=int, default=4096, help="tokenizer and model vocabulary")
    p.add_argument("--data", help="a UTF-8 text file of stories (one per line or paragraph); "
                                  "default: the course's generated stories")
    p.add_argument("--corpus-mb", type=float, default=20.0,
                   help="MB of generated stories when --data is not given (default 20)")
    p.add_argument("--tokenizer", help="use this tokenizer (.model or .json) instead of training one")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bfloat16 autocast: auto = on where the CPU has bf16 matrix units")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--out", default="runs/course", help="output folder (default runs/course)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")


def _stories(args: argparse.Namespace):
    from minillama.data import generate_corpus, load_text_corpus

    if args.data:
        return load_text_corpus(args.data)
    return generate_corpus(int(args.corpus_mb * 1e6), seed=args.seed)


def _tokenizer(args: argparse.Namespace, train_texts: list[str], out: Path):
    from minillama.pretrained import load_tokenizer
    from minillama.tokenizer import Tokenizer

    saved = out / "tokenizer.model"
    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    if args.resume and saved.exists():
        return load_tokenizer(saved)  # the run's own tokenizer: retraining could differ
    sample = train_texts[: 25_000]  # ~5 MB of stories is plenty for 4096 pieces
    tok = Tokenizer.train(sample, args.vocab_size)
    tok.to_sentencepiece(saved)
    return tok


def run(args: argparse.Namespace) -> int:
    import torch

    from minillama.config import get_preset
    from minillama.data import split_stories
    from minillama.model import Llama
    from minillama.train import (
        TrainConfig,
        bf16_is_fast,
        check_output_dir,
        check_run,
        default_threads,
        evaluate,
        tokenize_stories,
        train,
        write_curves,
    )

    out = Path(args.out)
    check_output_dir(out)
    torch.set_num_threads(args.threads or default_threads())
    t_start = time.perf_counter()
    splits = split_stories(_stories(args))
    texts = [getattr(s, "text", s) for s in splits.train]
    if not texts:
        raise ValueError("the corpus is empty: no stories to train on")
    tok = _tokenizer(args, texts, out)
    train_ids, val_ids, test_ids = (tokenize_stories(tok, s)
                                    for s in (splits.train, splits.val, splits.test))
    overrides = {k: v for k, v in (("dim", args.dim), ("n_layers", args.n_layers)) if v}
    margs = dataclasses.replace(get_preset(args.preset), vocab_size=args.vocab_size, **overrides)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                      grad_accum=args.grad_accum, lr=args.lr, min_lr=args.lr / 10,
                      warmup=args.warmup, eval_every=args.eval_every, seed=args.seed,
                      bf16=args.bf16 == "on" or (args.bf16 == "auto" and bf16_is_fast()),
                      extra={"command": " ".join(sys.argv)})
    check_run(margs, cfg, tok, train_ids, val_ids)
    print(f"corpus: {len(splits.train)} / {len(splits.val)} / {len(splits.test)} stories "
          f"(train/val/test), {len(train_ids):,} training tokens; threads: {torch.get_num_threads()}")
    torch.manual_seed(args.seed)
    model = Llama(margs).use_sdpa(True)  # torch's fused attention: same maths, faster
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.preset} {n_params:,} parameters; {cfg.steps} steps of "
          f"{cfg.batch_size}x{cfg.seq_len} tokens; bf16 autocast {'on' if cfg.bf16 else 'off'}")
    t_train = time.perf_counter()
    history = train(model, train_ids, val_ids, cfg, out=out, resume=args.resume)
    train_s = time.perf_counter() - t_train
    # the test split is scored in float32, as the model is used for inference
    test_loss = evaluate(model.eval(), test_ids, dataclasses.replace(cfg, eval_batches=16, bf16=False))
    final = out / "model"
    model.save_pretrained(final)
    tok.to_sentencepiece(final / "tokenizer.model")
    write_curves(out, history)
    val = [h["val_loss"] for h in history if "val_loss" in h]
    summary = {
        "preset": args.preset, "parameters": n_params, "steps": cfg.steps,
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len,
        "train_seconds_this_session": round(train_s), "total_seconds": round(time.perf_counter() - t_start),
        "final_val_loss": val[-1] if val else None, "test_loss": test_loss,
        "test_perplexity": math.exp(test_loss), "threads": torch.get_num_threads(),
        "train_config": dataclasses.asdict(cfg),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"test loss {test_loss:.3f} (perplexity {math.exp(test_loss):.2f}); "
          f"trained {train_s / 60:.1f} min")
    print(f"wrote {final}/ (model + tokenizer.model), {out}/checkpoint/, {out}/loss.csv, "
          f"{out}/loss.png, {out}/summary.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minillama train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

