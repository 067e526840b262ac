"""Tests for minillama/chat.py and `minillama chat`: the conversation as ids, the full
context, and the command driven through its prompt.

- Every reply's prompt is instruct.chat_ids of all turns so far plus the new message, and
  the reply is the engine's greedy continuation of exactly those ids, up to EOS.
- When the turns no longer fit with room for an answer, the oldest go first and the
  session counts them; a message that alone does not fit is refused with its size.
- The command answers typed lines, /reset forgets, Ctrl-D ends; a missing adapter says
  how to make one.
"""

import pytest
import torch

from minillama import chat, instruct, lora
from minillama.cli import main
from minillama.pretrained import load_model


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    torch.manual_seed(0)
    model, _ = load_model()
    lora.add_lora(model, lora.LoRAConfig(r=2, targets=["wq"]))
    with torch.no_grad():
        for m in lora.lora_layers(model).values():
            m.lora_B.normal_(std=0.01)
    return lora.save_adapter(model, tmp_path_factory.mktemp("chat") / "adapter")


def test_replies_continue_the_whole_conversation(adapter_dir):
    engine, tok = chat.load_chat_model(adapter=adapter_dir)
    session = chat.ChatSession(engine, tok, system="Be brief.", max_new_tokens=20)
    first = session.reply("Tell me a story about Mia.")
    ids = instruct.chat_ids(tok, [("Tell me a story about Mia.", first), ("And Tom?", None)], "Be brief.").ids
    assert session.prompt_ids("And Tom?") == ids
    want = engine.generate(ids, 20, temperature=0.0, stop_ids=[tok.eos_id])
    streamed = []
    assert session.reply("And Tom?", stream=streamed.append) == tok.decode(want).strip()
    assert "".join(streamed).strip() == tok.decode(want).strip() and len(session.turns) == 2


def test_a_full_context_drops_the_oldest_turns(adapter_dir):
    engine, tok = chat.load_chat_model(adapter=adapter_dir)
    session = chat.ChatSession(engine, tok, max_new_tokens=400)  # 112 tokens left for prompts
    session.turns = [("Hello there, tell me a story please.", "Once upon a time " * 8)] * 3
    ids = session.prompt_ids("One more?")
    assert len(ids) <= engine.args.max_seq_len - 400 and session.forgotten >= 1
    with pytest.raises(ValueError, match="does not fit the context of 512"):
        session.prompt_ids("word " * 200)
    with pytest.raises(ValueError, match="empty message"):
        session.prompt_ids("  ")


def test_the_command(adapter_dir, monkeypatch, capsys):
    lines = iter(["Tell me a story about Lily.", "/reset", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["chat", "--adapter", str(adapter_dir), "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr()
    assert "model> " in out.out and "[conversation forgotten]" in out.err
    assert main(["chat", "--adapter", str(adapter_dir.parent / "nothing")]) == 2
    assert "make one with `minillama finetune" in capsys.readouterr().err
