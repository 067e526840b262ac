"""A multi-turn chat in Llama 2's chat template (lesson 11): `minillama chat`.

    engine, tok = load_chat_model(adapter="runs/lora/adapter")   # base + adapter, merged
    session = ChatSession(engine, tok, system="You tell short stories.")
    print(session.reply("Tell me a story about Mia and an owl at the beach."))
    print(session.reply("Now one about Tom and a goat on the farm."))

The whole conversation is rendered into ids at every turn (`instruct.chat_ids`: BOS,
`[INST] ... [/INST]`, the answer, EOS, per turn), so the model sees its earlier answers.
When the conversation no longer fits the context with room for an answer, the oldest turns
are dropped, and `reply` says so through `session.forgotten`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from minillama import instruct

SHIPPED_ADAPTER = Path(__file__).with_name("assets") / "chat"  # LoRA, `minillama chat`'s default
SHIPPED_QLORA_ADAPTER = Path(__file__).with_name("assets") / "chat-qlora"  # QLoRA, for lesson 11


class ChatSession:
    """The turns so far and the engine that answers."""

    def __init__(self, engine, tok, system: str | None = None, max_new_tokens: int = 300,
                 temperature: float = 0.0, seed: int | None = None):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.engine, self.tok, self.system = engine, tok, system
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.turns: list[tuple[str, str]] = []
        self.forgotten = 0  # turns dropped because the context was full

    def prompt_ids(self, user: str) -> list[int]:
        """The ids of the conversation with `user` as the next message, the oldest turns
        dropped until an answer of max_new_tokens fits the context."""
        if not user.strip():
            raise ValueError("empty message: type some text")
        limit = self.engine.args.max_seq_len - self.max_new_tokens
        while True:
            ids = instruct.chat_ids(self.tok, [*self.turns, (user, None)], self.system).ids
            if len(ids) <= limit:
                return ids
            if not self.turns:
                raise ValueError(f"the message takes {len(ids)} tokens; with an answer of "
                                 f"{self.max_new_tokens} tokens it does not fit the context of "
                                 f"{self.engine.args.max_seq_len}: shorten it")
            self.turns.pop(0)
            self.forgotten += 1

    def reply(self, user: str, stream: Callable[[str], None] | None = None,
              ids: list[int] | None = None) -> str:
        """The model's answer to `user` (streamed piece by piece if stream is given); ids:
        prompt_ids(user) if the caller already has them."""
        from minillama.generate import StreamDecoder

        ids = self.prompt_ids(user) if ids is None else ids
        decoder = StreamDecoder(self.tok)
        out = self.engine.generate(ids, self.max_new_tokens, temperature=self.temperature,
                                   seed=self.seed, stop_ids=[self.tok.eos_id],
                                   stream=(lambda t: stream(decoder.push(t))) if stream else None)
        if stream:
            stream(decoder.flush())
        answer = self.tok.decode(out).strip()
        self.turns.append((user, answer))
        return answer


def load_chat_model(model: str | Path | None = None, adapter: str | Path | None = None):
    """(Engine, Tokenizer): the base model directory (default: the shipped one) with a peft
    adapter merged in (default: the shipped chat adapter); an adapter trained by QLoRA (its
    run.json says so) is merged into the NF4-rounded base it was trained on."""
    from minillama import finetune, lora

    adapter_dir = Path(adapter) if adapter else SHIPPED_ADAPTER
    if not (adapter_dir / lora.CONFIG_FILE).is_file():
        raise FileNotFoundError(f"no chat adapter at {adapter_dir} ({lora.CONFIG_FILE} missing); "
                                "make one with `minillama finetune --out DIR` and pass "
                                "--adapter DIR/adapter")
    tuned, tok = finetune.load_tuned(adapter_dir, model)
    return finetune.merged_engine(tuned), tok
