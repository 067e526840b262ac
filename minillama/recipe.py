"""`minillama train`: corpus -> tokenizer -> token streams -> a trained model directory.

    minillama train --preset course --steps 3000 --out runs/course
    minillama train --nproc 2 ...      # data parallel: 2 processes on this machine (lesson 14)

writes, in --out: tokenizer.model, checkpoint/ (resumable), model/ (config.json,
model.safetensors, tokenizer.model), loss.csv, loss.png and summary.json.

With --nproc N the command checks its arguments (the batch must split evenly, the port must
be free), then starts N copies of itself through torchrun (`minillama.distributed.launch`).
Each copy prepares the same data (everything is seeded), trains on its rows of every global
batch, and rank 0 alone prints and writes. Started by torchrun directly (WORLD_SIZE set,
e.g. on several machines), the command is such a copy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
from pathlib import Path

# the tokenizer learns from the first this-many training stories (all of a 20 MB corpus)
TOKENIZER_STORIES = 25_000


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
    p.add_argument("--stop-after", type=int,
                   help="end this session at this step (checkpointed); --resume continues it")
    d = p.add_argument_group("data parallel (lesson 14)")
    d.add_argument("--nproc", type=int, default=1,
                   help="processes on this machine, each with batch-size / nproc rows (default 1)")
    d.add_argument("--zero", action="store_true",
                   help="shard the optimizer state over the processes (ZeroRedundancyOptimizer)")
    d.add_argument("--port", type=int, help="rendezvous port on 127.0.0.1 (default: a free one)")
    d.add_argument("--dist-timeout", type=float, default=120.0,
                   help="seconds a process waits for the others, at start and in each exchange")
    d.add_argument("--max-seconds", type=float,
                   help="stop every process if the whole run takes longer (default: no limit)")


def _stories(args: argparse.Namespace):
    from minillama.data import generate_corpus, load_text_corpus

    if args.data:
        return load_text_corpus(args.data)
    return generate_corpus(int(args.corpus_mb * 1e6), seed=args.seed)


def _tokenizer(args: argparse.Namespace, train_texts: list[str], out: Path, write: bool = True):
    from minillama.pretrained import load_tokenizer
    from minillama.tokenizer import Tokenizer

    saved = out / "tokenizer.model"
    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    if args.resume and saved.exists():
        return load_tokenizer(saved)  # the run's own tokenizer: retraining could differ
    sample = train_texts[:TOKENIZER_STORIES]
    tok = Tokenizer.train(sample, args.vocab_size)  # seeded: every rank trains the same one
    if write:
        tok.to_sentencepiece(saved)
    return tok


FAIL_RANK_ENV = "MINILLAMA_FAIL_RANK"  # tests: this rank raises right after joining the group
ARGV_ENV = "MINILLAMA_TRAIN_ARGV"  # a worker's `minillama train` arguments, as JSON


def _launch(args: argparse.Namespace) -> int:
    """--nproc N > 1 outside a worker: check everything, then start N workers via torchrun."""
    from minillama.distributed import check_port, check_world, launch
    from minillama.train import check_output_dir

    check_world(args.batch_size, args.grad_accum, args.nproc)
    if args.port is not None:
        check_port(args.port)
    check_output_dir(Path(args.out))
    # the workers get this command's arguments through the environment, not torchrun's argv:
    # torchrun's own parser would take some of ours (--nproc) for abbreviations of its options
    env = dict(os.environ, **{ARGV_ENV: json.dumps(args.argv)})
    try:
        code = launch(["minillama.recipe"], args.nproc, args.port, args.max_seconds, env=env)
    except TimeoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if code != 0:
        print(f"error: the data-parallel run failed (exit code {code}); the 'error: rank N' line "
              "above says which process failed and why", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> int:
    from minillama import distributed as D

    if args.nproc > 1 and not D.in_worker():
        return _launch(args)
    world = D.init(args.dist_timeout)
    if world.distributed:
        if args.nproc not in (1, world.world):
            raise ValueError(f"--nproc {args.nproc} but the launcher started {world.world} processes")
        if os.environ.get(FAIL_RANK_ENV) == str(world.rank):
            raise RuntimeError(f"failing on purpose ({FAIL_RANK_ENV}={world.rank})")
    code = _run(args, world)
    D.finish()  # on success only: a failed rank exits at once, and torchrun stops the others
    return code


def _run(args: argparse.Namespace, world) -> int:
    import torch

    from minillama.config import get_preset
    from minillama.data import split_stories
    from minillama.model import Llama
    from minillama.train import (
        TrainConfig,
        bf16_is_fast,
        check_config,
        check_data,
        check_output_dir,
        default_threads,
        evaluate,
        tokenize_stories,
        train,
        write_curves,
    )

    out = Path(args.out)
    say = print if world.is_main else (lambda *a, **k: None)  # rank 0 alone prints and writes
    if world.is_main:
        check_output_dir(out)
    overrides = {k: v for k, v in (("dim", args.dim), ("n_layers", args.n_layers)) if v}
    margs = dataclasses.replace(get_preset(args.preset), vocab_size=args.vocab_size, **overrides)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                      grad_accum=args.grad_accum, lr=args.lr, min_lr=args.lr / 10,
                      warmup=args.warmup, eval_every=args.eval_every, seed=args.seed,
                      bf16=args.bf16 == "on" or (args.bf16 == "auto" and bf16_is_fast()),
                      extra={"command": " ".join(["minillama train", *args.argv])})
    check_config(margs, cfg)
    if world.distributed:
        from minillama.distributed import check_world, threads_per_process

        check_world(cfg.batch_size, cfg.grad_accum, world.world)
        torch.set_num_threads(args.threads or threads_per_process(world.world))
    else:
        torch.set_num_threads(args.threads or default_threads())
    t_start = time.perf_counter()
    splits = split_stories(_stories(args))
    texts = [getattr(s, "text", s) for s in splits.train]
    if not texts:
        raise ValueError("the corpus is empty: no stories to train on")
    tok = _tokenizer(args, texts, out, write=world.is_main)
    train_ids, val_ids, test_ids = (tokenize_stories(tok, s)
                                    for s in (splits.train, splits.val, splits.test))
    check_data(margs, cfg, tok, train_ids, val_ids)
    say(f"corpus: {len(splits.train)} / {len(splits.val)} / {len(splits.test)} stories "
        f"(train/val/test), {len(train_ids):,} training tokens; threads: {torch.get_num_threads()}"
        + (f" in each of {world.world} processes" if world.distributed else ""))
    torch.manual_seed(args.seed)
    model = Llama(margs).use_sdpa(True)  # torch's fused attention: same maths, faster
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: {args.preset} {n_params:,} parameters; {cfg.steps} steps of "
        f"{cfg.batch_size}x{cfg.seq_len} tokens"
        + (f" ({cfg.batch_size // world.world} rows in each of {world.world} processes"
           + (", optimizer state sharded)" if args.zero else ")") if world.distributed else "")
        + f"; bf16 autocast {'on' if cfg.bf16 else 'off'}")
    t_train = time.perf_counter()
    history = train(model, train_ids, val_ids, cfg, out=out, resume=args.resume,
                    stop_after=args.stop_after, world=world, zero=args.zero)
    if history[-1]["step"] < cfg.steps:
        say(f"stopped after step {history[-1]['step']} of {cfg.steps}; continue with --resume")
        return 0
    if not world.is_main:
        return 0
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
        "corpus_mb": args.corpus_mb if not args.data else None,
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len,
        "train_seconds_this_session": round(train_s), "total_seconds": round(time.perf_counter() - t_start),
        "final_val_loss": val[-1] if val else None, "test_loss": test_loss,
        "test_perplexity": math.exp(test_loss), "threads": torch.get_num_threads(),
        "processes": world.world, "zero": bool(args.zero),
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
    argv = sys.argv[2:] if argv is None else list(argv)
    args = p.parse_args(argv)
    args.argv = argv  # recorded in the run's summary: the command that made it
    try:
        return run(args)
    except Exception as e:
        from minillama import distributed as D

        if D.in_worker():  # one of several processes: say which one failed
            world = D.World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
            print(D.fail_message(world, e), file=sys.stderr, flush=True)
            return 1
        if isinstance(e, (ValueError, FileNotFoundError, PermissionError)):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


# ---------------------------------------------------------------------------------------
# shipping a run as the package's model (authors only)
# ---------------------------------------------------------------------------------------

SHIP_PROMPTS = ("Once upon a time", "One day, Lily", "Tom had a little dog")


def ship(run_dir: str | Path, dest: str | Path, longer_dir: str | Path | None = None) -> None:
    """Copy run_dir/model into dest as float16 safetensors + tokenizer.model + MODEL_CARD.md,
    re-measuring the test loss on the rounded weights; longer_dir is the same run trained for
    twice the steps, recorded in convergence.json."""
    import dataclasses as dc

    import torch

    from minillama.data import generate_corpus, split_stories
    from minillama.generate import generate
    from minillama.pretrained import load_model
    from minillama.train import TrainConfig, evaluate, tokenize_stories

    run_dir, dest = Path(run_dir), Path(dest)
    torch.set_num_threads(1)  # small batches and one-token steps: extra threads only wait
    summary = json.loads((run_dir / "summary.json").read_text())
    model, tok = load_model(run_dir / "model")
    model.half()
    model.save_pretrained(dest)
    tok.to_sentencepiece(dest / "tokenizer.model")
    model, tok = load_model(dest)  # what users get: float16 weights read back as float32
    cfg = TrainConfig(**{k: v for k, v in summary["train_config"].items()
                         if k in {f.name for f in dc.fields(TrainConfig)}})
    cfg.betas = tuple(cfg.betas)
    seed = cfg.seed
    test = split_stories(generate_corpus(int(summary.get("corpus_mb", 20) * 1e6), seed)).test
    test_loss = evaluate(model, tokenize_stories(tok, test), dc.replace(cfg, eval_batches=16, bf16=False))
    torch.manual_seed(0)
    samples = [p + generate(model, tok, p, max_new_tokens=200, temperature=0.8, top_p=0.95,
                            seed=i).text for i, p in enumerate(SHIP_PROMPTS)]
    size = sum(f.stat().st_size for f in dest.iterdir()) / 1e6
    val = summary["final_val_loss"]
    resumed = "--resume" in summary["train_config"]["extra"].get("command", "")
    card = MODEL_CARD.format(
        command=_command(summary), params=summary["parameters"],
        steps=summary["steps"], tokens=summary["tokens_seen"], minutes=_step_seconds(run_dir, summary) / 60,
        threads=summary["threads"], resumed=" (stopped and resumed; this is the last session's "
        "thread count)" if resumed else "", val=val, val_ppl=math.exp(val), test=test_loss,
        test_ppl=math.exp(test_loss), size=size,
        samples="\n\n".join(f"> {s}" for s in samples))
    record = {
        "corpus_mb": summary["corpus_mb"], "seed": seed, "tokenizer_stories": TOKENIZER_STORIES,
        "shipped": {"steps": summary["steps"], "val_loss": val, "test_loss": test_loss,
                    "command": _command(summary)},
    }
    if longer_dir is not None:
        longer = json.loads((Path(longer_dir) / "summary.json").read_text())
        record["2x"] = {"steps": longer["steps"], "val_loss": longer["final_val_loss"],
                        "test_loss": longer["test_loss"], "command": _command(longer)}
        gain = (val - longer["final_val_loss"]) / val
        card += (f"\n## Is it converged?\n\nThe same command with `--steps {longer['steps']}` "
                 f"reaches validation loss {longer['final_val_loss']:.3f}: {gain:.1%} lower "
                 "(convergence.json).\n")
    (dest / "convergence.json").write_text(json.dumps(record, indent=1) + "\n")
    (dest / "MODEL_CARD.md").write_text(card)
    print(card)


def _step_seconds(run_dir: Path, summary: dict) -> float:
    """Seconds spent in training steps over every session of a run, from loss.csv's
    per-step tokens/s (evaluations and start-up not counted)."""
    import csv

    with open(run_dir / "loss.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    tokens = summary["tokens_seen"] / summary["steps"]  # one loss.csv row per step
    return sum(tokens / float(r["tokens_per_s"]) for r in rows)


def _command(summary: dict) -> str:
    """The recorded command, as a user would type it (a resumed run: the command that
    makes the same run in one go)."""
    cmd = summary["train_config"]["extra"].get("command", "?").replace(" --resume", "")
    cmd = re.sub(r"--out \S*/([^/\s]+)", r"--out runs/\1", cmd)  # no machine paths in the card
    return re.sub(r"^\S*minillama(\.cli)? ", "minillama ", cmd)


MODEL_CARD = """# The course model

A {params:,}-parameter Llama (the `course` preset: dim 256, 6 layers, 8 query / 4 key-value
heads, SwiGLU width 704, vocabulary 4096, context 512) trained from scratch on the course's
generated children's stories, with the course's own BPE tokenizer.

- Command: `{command}`
- Shipped with: `python -m minillama.recipe ship RUN_DIR minillama/assets/course [RUN_2X_DIR]`
- Training: {steps} steps, {tokens:,} tokens seen, {minutes:.0f} min of training steps on
  {threads} CPU thread(s){resumed}
  (bfloat16 autocast on a CPU with AMX; weights and optimizer state in float32)
- Validation loss at the end: {val:.3f} nats/token (perplexity {val_ppl:.2f})
- Test split, on the shipped weights: loss {test:.3f} (perplexity {test_ppl:.2f})
- Files: config.json, model.safetensors (float16, read back as float32), tokenizer.model
  (SentencePiece format; `sentencepiece` loads it too) — {size:.1f} MB in all

## Samples (temperature 0.8, top-p 0.95, seeds 0, 1, 2)

{samples}
"""


if __name__ == "__main__":
    if ARGV_ENV in os.environ and len(sys.argv) == 1:  # a worker of `minillama train --nproc N`
        sys.exit(main(json.loads(os.environ[ARGV_ENV])))
    if sys.argv[1:2] == ["ship"] and len(sys.argv) in (4, 5):
        ship(*sys.argv[2:])
    else:
        print("usage: python -m minillama.recipe ship RUN_DIR DEST [RUN_2X_DIR]", file=sys.stderr)
        sys.exit(2)
