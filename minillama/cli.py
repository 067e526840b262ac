"""The `minillama` command: course machinery, grading, and (as lessons land) train/generate/bench."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _course(args: argparse.Namespace) -> int:
    from minillama.course.build import build, check, course_root
    from minillama.course.notebooks import NotebookError

    try:
        if args.action == "run":
            from minillama.course.execute import run_notebook

            for nb in args.notebooks:
                print(f"{nb}: ran in {run_notebook(nb, timeout=args.timeout):.1f} s, outputs stored")
            return 0
        root = course_root(args.root)
        if args.action == "build":
            written = build(root)
            for p in written:
                print(f"wrote {p.relative_to(root)}")
            print(f"{len(written)} lesson(s) written; the rest were up to date")
            return 0
        problems = check(root)
        for p in problems:
            print(p)
        print("lessons/ is in sync with solutions/" if not problems
              else "run `minillama course build` to regenerate lessons/")
        return 1 if problems else 0
    except (NotebookError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _grade(args: argparse.Namespace) -> int:
    from minillama.course.build import course_root
    from minillama.course.grade import grade

    try:
        solutions = Path(args.solutions) if args.solutions else course_root() / "solutions"
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not solutions.is_dir():
        print(f"error: solutions folder not found: {solutions}", file=sys.stderr)
        return 2
    csv_path = Path(args.csv) if args.csv else None
    return grade([Path(p) for p in args.paths], solutions, args.timeout, csv_path)


def _bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"minillama.bench.{args.what}")
    return module.main(args.rest)


def _train(args: argparse.Namespace) -> int:
    from minillama.recipe import main as train_main

    return train_main(args.rest)


def _generate(args: argparse.Namespace) -> int:
    from minillama.generate import check_sampling, generate
    from minillama.pretrained import load_model

    if args.engine == "torch":
        import torch

        torch.set_num_threads(1)  # one token at a time through a small model: threads only wait
    try:
        check_sampling(args.temperature, args.top_k, args.top_p)
        # numba: the engine reads the safetensors itself and torch is never imported, so
        # the first token comes quickly; torch: the lesson-05 model
        model, tok = load_model(args.model, engine=args.engine, quant=args.quant)
        if args.quant:
            print(f"[quantized to {args.quant} in {model.quantize_seconds:.2f} s]", file=sys.stderr)
        print(args.prompt, end="", flush=True)
        out = generate(model, tok, args.prompt, stream=lambda s: print(s, end="", flush=True),
                       max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, seed=args.seed, truncate=args.truncate)
    except (ValueError, FileNotFoundError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    print()
    if out.stop_reason == "context":
        print(f"[stopped: the model's context of {model.args.max_seq_len} tokens is full]",
              file=sys.stderr)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from minillama.formats.checkpoint import convert, read_checkpoint

    try:
        out = convert(args.src, args.dst, args.to, quant=args.quant, progress=True)
        ck = read_checkpoint(out)  # read back: the file is what every loader will see
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in ([out] if out.is_file() else out.iterdir()) if p.is_file())
    print(f"wrote {out} ({ck.fmt}{', ' + args.quant if args.quant else ''}, {size / 2**20:.1f} MiB, "
          f"tokenizer {'included' if ck.tokenizer is not None else 'none'})")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    import shutil

    from minillama import finetune as FT
    from minillama import lora
    from minillama.pretrained import COURSE_MODEL, TOKENIZER_FILE, load_model

    long = args.seq_len is not None
    try:
        if not long and (args.rope_scaling or args.passkey):
            raise ValueError("--rope-scaling and --passkey are for a long-context fine-tune: give --seq-len")
        steps = args.steps or (LONG_STEPS if long else 600)
        cfg = FT.FinetuneConfig(method="qlora" if args.qlora else "lora", template=args.template,
                                system=args.system, r=args.r, alpha=args.alpha, steps=steps,
                                batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                targets=args.targets.split(",") if "," in args.targets else args.targets,
                                seq_len=args.seq_len, rope_scaling=args.rope_scaling,
                                passkey_share=args.passkey)
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"{out} exists and is not empty: give a new --out directory")
        import torch

        from minillama.train import default_threads

        torch.set_num_threads(args.threads or default_threads())
        model_dir = Path(args.model) if args.model else COURSE_MODEL
        model, tok = load_model(model_dir)
        model = FT.with_config_context(model, cfg)
        scorer = _long_score if long else _instruct_score
        score = scorer(model, tok, cfg, args.eval, "before")
        if args.init_adapter:
            if args.qlora:
                lora.quantize_base_nf4(model)
            lora.load_adapter(model, args.init_adapter)  # its adapters go on training
            print(f"starting from the adapter in {args.init_adapter}")
        else:
            FT.prepare(model, cfg)
        print(lora.trainable_report(model))
        history = FT.finetune(model, tok, cfg)
        score.update(scorer(model, tok, cfg, args.eval, "after"))
        out = FT.write_run(out, model, model_dir, cfg, history, score or None)
        print(f"adapter (peft format) in {out / 'adapter'}; loss curve {out / 'loss.png'}; "
              f"{history[-1]['seconds']:.0f} s of training")
        if args.merge:
            from minillama.model import Llama

            merged = Llama(model.args)
            merged.load_state_dict(lora.merged_state_dict(model))
            merged.save_pretrained(args.merge)
            shutil.copy(model_dir / TOKENIZER_FILE, Path(args.merge) / TOKENIZER_FILE)
            print(f"merged model directory: {args.merge}")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


LONG_STEPS = 300  # `minillama finetune --seq-len N`'s default steps


def _instruct_score(model, tok, cfg, n: int, when: str) -> dict:
    """The follow score on n held-out requests (before, or after with the second turn)."""
    from minillama import finetune as FT
    from minillama import instruct

    if not n:
        return {}
    requests = instruct.eval_requests(n, seed=1)
    if when == "before":
        score = FT.follow_score(model, tok, requests, cfg.template, cfg.system)
        print(f"follow score before tuning: {score:.0%} of {len(requests)} held-out requests")
        return {"before": score}
    engine = FT.merged_engine(model)
    out = {"after": FT.follow_score(engine, tok, requests, cfg.template, cfg.system),
           "requests": len(requests)}
    line = f"follow score after {cfg.method}: {out['after']:.0%}"
    if cfg.template == "chat":
        out["after, second turn"] = FT.follow_score(engine, tok, requests, "chat", cfg.system, turns=2)
        line += f" (as the second message of a chat: {out['after, second turn']:.0%})"
    print(line)
    return out


def _long_score(model, tok, cfg, n: int, when: str) -> dict:
    """Perplexity at the training window and at seq_len on held-out stories, and (with
    passkey batches) passkey accuracy at seq_len over n documents at five depths."""
    from minillama import finetune as FT
    from minillama import longctx

    if not n:
        return {}
    engine = FT.merged_engine(model)
    lengths = sorted({longctx.TRAIN_WINDOW, cfg.seq_len})
    ppl = longctx.perplexity_by_length(engine, longctx.long_tokens(tok, 4 * cfg.seq_len + 8), lengths, 4)
    out = {f"perplexity {when}": {str(k): round(v, 4) for k, v in ppl.items()}}
    line = ", ".join(f"{v:.3f} over {k} tokens" for k, v in ppl.items())
    if cfg.passkey_share:
        depths = (0.0, 0.25, 0.5, 0.75, 1.0)
        acc = longctx.passkey_accuracy(engine, longctx.Filler(tok), cfg.seq_len, depths,
                                       n=max(1, n // len(depths)))
        out[f"passkey {when}"] = sum(acc.values()) / len(acc)
        line += f"; passkey at {cfg.seq_len} tokens {out[f'passkey {when}']:.0%}"
    print(f"{when} tuning (rope {cfg.rope_scaling or 'unscaled'}, window {cfg.seq_len}): perplexity {line}")
    return out


def _chat(args: argparse.Namespace) -> int:
    from minillama.chat import ChatSession, load_chat_model

    try:
        engine, tok = load_chat_model(args.model, args.adapter)
        session = ChatSession(engine, tok, system=args.system, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, seed=args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("[chat in the Llama 2 template; /reset forgets the conversation, /quit or Ctrl-D ends]",
          file=sys.stderr)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return 0
        if text == "/reset":
            session.turns.clear()
            print("[conversation forgotten]", file=sys.stderr)
            continue
        before = session.forgotten
        try:
            ids = session.prompt_ids(text)  # drops the oldest turns if the context is full
        except ValueError as e:
            print(f"[{e}]", file=sys.stderr)
            continue
        if session.forgotten > before:
            print(f"[context of {engine.args.max_seq_len} tokens full: dropped the "
                  f"{session.forgotten - before} oldest turn(s)]", file=sys.stderr)
        print("model> ", end="", flush=True)
        session.reply(text, stream=lambda piece: print(piece, end="", flush=True), ids=ids)
        print()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minillama", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("course", help="build lessons/ from solutions/, check them, run notebooks")
    c.add_argument("action", choices=["build", "check", "run"],
                   help="build: regenerate lessons/; check: fail if lessons/ is stale; "
                        "run: execute notebooks in place and store their outputs")
    c.add_argument("notebooks", nargs="*", help="notebooks for `run`")
    c.add_argument("--root", help="repo root holding solutions/ (default: found from the cwd)")
    c.add_argument("--timeout", type=int, default=600, help="per-cell time limit for `run` (s)")
    c.set_defaults(func=_course)

    g = sub.add_parser("grade", help="grade submitted notebooks against the reference solutions")
    g.add_argument("paths", nargs="+", help="submitted .ipynb files or folders of them")
    g.add_argument("--csv", help="write one row per student and exercise to this CSV file")
    g.add_argument("--timeout", type=float, default=300,
                   help="time limit in seconds for each notebook (default 300)")
    g.add_argument("--solutions", help="folder of solution notebooks (default: the repo's)")
    g.set_defaults(func=_grade)

    t = sub.add_parser("train", help="train a model on the story corpus (see `minillama train -h`)",
                       add_help=False)
    t.add_argument("rest", nargs=argparse.REMAINDER, help="options for training")
    t.set_defaults(func=_train)

    gen = sub.add_parser("generate", help="continue a prompt with a model, streaming the text")
    gen.add_argument("prompt", nargs="?", default="", help="text to continue (default: none, BOS)")
    gen.add_argument("--model", help="a checkpoint in any format: a transformers or Meta directory, a "
                     "llama2.c .bin or a GGUF file (default: the shipped course model)")
    gen.add_argument("--engine", choices=["numba", "torch"], default="numba",
                     help="numba: the jitted CPU engine (default); torch: the lesson-05 model")
    gen.add_argument("--quant", choices=["q8_0", "q4_0", "nf4"], default=None,
                     help="quantize the weight matrices at load (numba engine; default: float32)")
    gen.add_argument("--max-new-tokens", type=int, default=200)
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    gen.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    gen.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (1 = off)")
    gen.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    gen.add_argument("--truncate", action="store_true",
                     help="keep the end of a prompt longer than the context instead of failing")
    gen.set_defaults(func=_generate)

    cv = sub.add_parser("convert", help="convert a checkpoint between formats (hf, meta, llama2c, gguf)")
    cv.add_argument("src", help="a checkpoint in any format (detected by content)")
    cv.add_argument("dst", help="output: a directory (hf, meta; model.gguf / model.bin inside for gguf, "
                    "llama2c) or a file ending in .gguf / .bin")
    cv.add_argument("--to", required=True, choices=["gguf", "hf", "meta", "llama2c"], help="target format")
    cv.add_argument("--quant", choices=["f16", "q8_0", "q4_0"], default=None,
                    help="gguf: f16, q8_0 or q4_0; hf and meta: f16; llama2c: q8_0 (its v2 file, "
                         "what runq reads). Default: float32")
    cv.set_defaults(func=_convert)

    f = sub.add_parser("finetune", help="instruction-tune a model with LoRA or QLoRA adapters, "
                                     "or tune it for a longer context (--seq-len)")
    f.add_argument("--out", required=True, help="new directory for the adapter, loss.csv/png, run.json")
    f.add_argument("--model", help="base model directory (default: the shipped course model)")
    f.add_argument("--qlora", action="store_true", help="QLoRA: the frozen base in NF4")
    f.add_argument("--template", choices=["chat", "alpaca"], default="chat",
                   help="chat: Llama 2's [INST] template (default); alpaca: instruction/response")
    f.add_argument("--system", help="chat: a system prompt for every example")
    f.add_argument("--targets", default="all-linear",
                   help="comma-separated modules (wq,wv or q_proj,v_proj) or all-linear (default)")
    f.add_argument("--r", type=int, default=16, help="adapter rank (default 16)")
    f.add_argument("--alpha", type=float, default=32.0, help="LoRA alpha (default 32)")
    f.add_argument("--steps", type=int, help=f"optimizer steps (default 600; {LONG_STEPS} with --seq-len)")
    f.add_argument("--batch-size", type=int, default=8)
    f.add_argument("--lr", type=float, default=3e-3)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=0, help="torch threads (default: the cores)")
    f.add_argument("--eval", type=int, default=50,
                   help="held-out requests scored before and after; with --seq-len, passkey "
                        "documents (0: skip)")
    f.add_argument("--seq-len", type=int,
                   help="long context (lesson 12): train on windows of this many tokens of stories")
    f.add_argument("--rope-scaling", metavar="TYPE:FACTOR",
                   help="with --seq-len: linear:4, ntk:4, dynamic:4, yarn:4 or llama3:4 (default: none)")
    f.add_argument("--passkey", type=float, default=0.0, metavar="SHARE",
                   help="with --seq-len: this share of the batches are passkey documents (default 0)")
    f.add_argument("--init-adapter", metavar="DIR",
                   help="go on training this peft adapter instead of a new one")
    f.add_argument("--merge", metavar="DIR", help="also write the merged model directory here")
    f.set_defaults(func=_finetune)

    ch = sub.add_parser("chat", help="chat with the instruction-tuned model (Llama 2 chat template)")
    ch.add_argument("--model", help="base model directory (default: the shipped course model)")
    ch.add_argument("--adapter", help="a peft adapter directory (default: the shipped chat adapter); "
                    "one trained by QLoRA (its run.json says so) runs on the NF4-rounded base")
    ch.add_argument("--system", help="a system prompt")
    ch.add_argument("--max-new-tokens", type=int, default=300)
    ch.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ch.add_argument("--seed", type=int, default=None)
    ch.set_defaults(func=_chat)

    b = sub.add_parser("bench", help="benchmarks that print tables: tokenizer, engine, formats, llamacpp")
    b.add_argument("what", choices=["tokenizer", "engine", "formats", "llamacpp"], help="which benchmark")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options for the benchmark")
    b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # train and bench own their options: hand everything after the subcommand to them
    if argv[:1] == ["train"]:
        return _train(argparse.Namespace(rest=argv[1:]))
    if argv[:1] == ["bench"] and len(argv) > 1 and not argv[1].startswith("-"):
        return _bench(argparse.Namespace(what=argv[1], rest=argv[2:]))
    args = build_parser().parse_args(argv)
    if args.command == "course" and args.action == "run" and not args.notebooks:
        print("error: `minillama course run` needs at least one notebook", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
