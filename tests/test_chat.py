"""Tests for minillama/chat.py and `minillama chat`: the conversation as ids, the full
context, and the command driven through its prompt.

- Every reply's prompt is instruct.chat_ids of all turns so far plus the new message, and
  the reply is the engine's greedy continuation of exactly those ids, up to EOS.
- When the turns no longer fit with room for an answer, the oldest go first and the
  session counts them; a message that alone does not fit is refused with its size.
- The command answers typed lines, /reset forgets, Ctrl-D ends; a missing adapter says
  how to make one.
"""

import json

import pytest
import torch
from helpers import WORD, ended_sentence_share, unknown_words

from minillama import chat, finetune, instruct, lora
from minillama.cli import main
from minillama.data import generate_corpus, split_stories
from minillama.pretrained import COURSE_MODEL, load_model


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


# ---------------------------------------------------------------- the shipped adapters
# Made by the commands in their cards (minillama/assets/chat*/README.md). The follow score
# and the story bars are measured here afresh, on requests the cards did not use (seed 11;
# the cards and lesson 11 use seed 1).

SHIPPED = {"lora": chat.SHIPPED_ADAPTER, "qlora": chat.SHIPPED_QLORA_ADAPTER}
HF_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.mark.parametrize("method", SHIPPED)
def test_a_shipped_adapter_has_its_files_and_card(method):
    folder = SHIPPED[method]
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "run.json", "loss.csv"} <= {
        p.name for p in folder.iterdir()}
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], set(config["target_modules"])) == (16, 32.0, HF_TARGETS)
    assert config["base_model_name_or_path"] == "minillama/assets/course"  # no machine's path
    run = json.loads((folder / "run.json").read_text())
    assert run["config"]["method"] == method and finetune.trained_on_nf4(folder) == (method == "qlora")
    card = (folder / "README.md").read_text()
    command = "minillama finetune " + ("--qlora " if method == "qlora" else "")
    assert command in card and f"{run['score']['after']:.0%}" in card
    n_loss = len((folder / "loss.csv").read_text().splitlines()) - 1
    assert n_loss == run["config"]["steps"]
    assets = sum(p.stat().st_size for p in COURSE_MODEL.parent.rglob("*") if p.is_file())
    assert assets < 20e6, f"the shipped assets take {assets / 1e6:.1f} MB, over the 20 MB budget"


@pytest.fixture(scope="module")
def tuned_engines():
    return {method: chat.load_chat_model(adapter=folder)[0] for method, folder in SHIPPED.items()}


@pytest.fixture(scope="module")
def fresh_requests():
    return instruct.eval_requests(60, seed=11)


def test_the_qlora_adapter_runs_on_the_nf4_base_it_was_trained_on():
    model, _ = finetune.load_tuned(chat.SHIPPED_QLORA_ADAPTER)
    bases = [m.base for m in lora.lora_layers(model).values()]
    assert len(bases) == 7 * model.args.n_layers and all(isinstance(b, lora.NF4Linear) for b in bases)


def test_the_shipped_adapters_follow_unseen_requests(tuned_engines, fresh_requests):
    """The issue's bars: LoRA >= 80% of held-out requests, QLoRA within 5 points of it (here on
    60 fresh requests, so one request is 1.7 points)."""
    _, tok = load_model()
    got = {m: instruct.score(finetune.answers(e, tok, fresh_requests, "chat"), fresh_requests)
           for m, e in tuned_engines.items()}
    assert got["lora"] >= 0.8, got
    assert got["qlora"] >= got["lora"] - 0.05, got


def test_the_shipped_adapter_follows_the_second_message_of_a_chat(tuned_engines, fresh_requests):
    """As in `minillama chat`: each request follows another request and the model's own answer
    (>= 80% of 30; an adapter trained on one-turn chats alone followed 42% of the card's 120)."""
    _, tok = load_model()
    requests = fresh_requests[:30]
    texts = finetune.answers(tuned_engines["lora"], tok, requests, "chat", turns=2)
    assert instruct.score(texts, requests) >= 0.8


@pytest.fixture(scope="module")
def tuned_stories(tuned_engines, fresh_requests):
    """10 sampled answers (temperature 0.8, as the base model's quality bars) per adapter."""
    _, tok = load_model()
    out = {}
    for method, engine in tuned_engines.items():
        stories = []
        for i, r in enumerate(fresh_requests[:10]):
            prompt = instruct.chat_ids(tok, [(r.instruction, None)]).ids
            ids = engine.generate(prompt, engine.args.max_seq_len - len(prompt), temperature=0.8, seed=i,
                                  stop_ids=[tok.eos_id])
            stories.append((r, tok.decode(ids), len(prompt) + len(ids) < engine.args.max_seq_len))
        out[method] = stories
    return out


@pytest.fixture(scope="module")
def corpus_vocab():
    """The words of the shipped model's training split (its corpus as convergence.json records)."""
    run = json.loads((COURSE_MODEL / "convergence.json").read_text())
    splits = split_stories(generate_corpus(int(run["corpus_mb"] * 1e6), seed=run["seed"]))
    return {w for s in splits.train for w in WORD.findall(s.text)}


@pytest.mark.parametrize("method", SHIPPED)
def test_the_tuned_stories_stay_stories(tuned_stories, corpus_vocab, method):
    """The shipped model's quality bars (tests/test_pretrained.py) on the tuned model's answers."""
    stories = tuned_stories[method]
    assert all(ended for _, _, ended in stories), "answers should end with EOS, within the context"
    n, unknown = unknown_words([t for _, t, _ in stories], corpus_vocab)
    assert n > 500 and len(unknown) / n < 0.01, f"{len(unknown)} of {n}: {unknown[:10]}"
    share, n_sentences = ended_sentence_share([t for _, t, _ in stories])
    assert share > 0.95, f"only {share:.1%} of {n_sentences} sentences end in punctuation"
    kept = sum(instruct.follows(t, r).name for r, t, _ in stories)
    assert kept >= 9, f"the requested name appears in only {kept} of 10 answers"
