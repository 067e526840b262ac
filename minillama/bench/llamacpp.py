"""Do our GGUF files run in llama.cpp as in our engine? A check by hand, never run in CI.

    python -m venv /tmp/lcv && CMAKE_ARGS="-DGGML_NATIVE=OFF" /tmp/lcv/bin/pip install numpy llama-cpp-python
    minillama bench llamacpp --python /tmp/lcv/bin/python

llama-cpp-python (llama.cpp's Python binding, built from source in about 5 minutes) is not
a dependency of minillama: it runs in its own environment, given by --python. The shipped
model is written as GGUF in each type; for each file and prompt, llama.cpp (2 threads, its
KV cache in f32 unless --kv-f16) and our engine decode 60 tokens greedily, and the table
shows how many ids agree before the first difference, the largest logit difference on the
prompt, and at a difference our engine's margin between its two best tokens. With an f16
KV cache (llama.cpp's default) or Q8_0/Q4_0 weights llama.cpp rounds what it computes with
(the cache; activations quantized to Q8_0 for the quantized matmuls), so there ids agree
until the first near-tie, not for ever.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from minillama.bench.machine import describe, machine_info

PROMPTS = ["Once upon a time, a little cat named Tom", "One day, Lily went to the park",
           "There was a big dog"]
TOKENS = 60
_CHILD = """
import json, sys
import numpy as np
from llama_cpp import Llama
path, ids, kv, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_ctx=512, logits_all=True, verbose=False, n_threads=2,
            type_k=kv, type_v=kv, flash_attn=False)
tok = llm.tokenize(sys.argv[5].encode(), add_bos=True)
llm.reset()
llm.eval(ids)
first = np.array(llm.scores[len(ids) - 1]).tolist()
out = []
for _ in range(n):
    out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
    llm.eval([out[-1]])
print(json.dumps(dict(tokens=tok, ids=out, first=first)))
"""


def main(argv: list[str] | None = None) -> int:
    from minillama.engine import Engine
    from minillama.formats.checkpoint import read_checkpoint, write_checkpoint
    from minillama.pretrained import COURSE_MODEL

    p = argparse.ArgumentParser(prog="minillama bench llamacpp", description=__doc__.split("\n")[0])
    p.add_argument("--python", required=True, help="a Python with llama-cpp-python installed")
    p.add_argument("--kv-f16", action="store_true", help="llama.cpp's default f16 KV cache (default: f32)")
    a = p.parse_args(argv)
    print(describe(machine_info(probe=False)))
    ck = read_checkpoint(COURSE_MODEL)
    tok = ck.tokenizer
    kv = 1 if a.kv_f16 else 0  # ggml types: 0 F32, 1 F16
    print(f"\nthe shipped model as GGUF; llama.cpp KV cache {'f16' if kv else 'f32'}; {TOKENS} greedy tokens")
    print(f"{'type':<6}{'prompt':<44}{'tokenizer':>10}{'ids equal':>11}{'max|dlogit|':>13}{'margin':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for quant in (None, "f16", "q8_0", "q4_0"):
            path = write_checkpoint(Path(tmp) / f"m-{quant}.gguf", "gguf", ck.args, ck.tensors, tok, quant)
            engine = Engine.from_pretrained(path)
            for prompt in PROMPTS:
                ids = tok.encode(prompt, bos=True)
                r = subprocess.run([a.python, "-c", _CHILD, str(path), json.dumps(ids), str(kv), str(TOKENS),
                                    prompt], capture_output=True, text=True)
                if r.returncode != 0:
                    raise SystemExit(f"llama.cpp failed: {r.stderr[-600:]}")
                theirs = json.loads(r.stdout.strip().splitlines()[-1])
                engine.reset()
                ours = engine.generate(ids, TOKENS, temperature=0)
                engine.reset()
                dlogit = np.abs(np.array(theirs["first"]) - engine.prefill(ids)).max()
                n = next((i for i, (x, y) in enumerate(zip(ours, theirs["ids"])) if x != y), TOKENS)
                margin = "-"
                if n < TOKENS:
                    engine.reset()
                    top = np.sort(engine.prefill(ids + ours[:n]))
                    margin = f"{top[-1] - top[-2]:.3f}"
                same_tok = "equal" if theirs["tokens"] == ids else "DIFFER"
                print(f"{quant or 'f32':<6}{prompt:<44}{same_tok:>10}{f'{n}/{TOKENS}':>11}{dlogit:>13.2e}"
                      f"{margin:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
