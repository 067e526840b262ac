"""Tests for minillama/finetune.py: the prompt-masked loss, batching, and a short real run.

- masked_loss equals torch's cross-entropy over the answer positions alone (computed by
  selecting them first), and the prompt's targets change nothing, whatever they are.
- collate: inputs and targets are the ids shifted by one; the mask is the targets' mask;
  padding has mask 0 and, attention being causal, does not move a real position's logits.
- A few LoRA steps on the shipped model lower the answer loss and change only adapters.

Tolerance 1e-6: the same float32 sums over a few hundred positions, in another order.
"""

import torch
import torch.nn.functional as F

from minillama import finetune as FT
from minillama import instruct, lora
from minillama.pretrained import COURSE_MODEL, load_model, load_tokenizer


def test_masked_loss_is_the_cross_entropy_of_the_answer_positions():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 10, 17, generator=gen)
    targets = torch.randint(0, 17, (3, 10), generator=gen)
    mask = (torch.rand(3, 10, generator=gen) > 0.4).float()
    keep = mask.bool()
    want = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(FT.masked_loss(logits, targets, mask), want, rtol=0, atol=1e-6)
    other = targets.clone()
    other[~keep] = (other[~keep] + 5) % 17  # the prompt's targets do not matter
    torch.testing.assert_close(FT.masked_loss(logits, other, mask), want, rtol=0, atol=1e-6)


def test_collate_shifts_masks_and_pads():
    a = instruct.Tokens([1, 5, 6, 7, 2], [0, 0, 1, 1, 1])
    b = instruct.Tokens([1, 9, 2], [0, 1, 1])
    x, y, m = FT.collate([a, b])
    assert x.tolist() == [[1, 5, 6, 7], [1, 9, 0, 0]]
    assert y.tolist() == [[5, 6, 7, 2], [9, 2, 0, 0]]
    assert m.tolist() == [[0, 1, 1, 1], [1, 1, 0, 0]]


def test_padding_does_not_move_real_positions():
    model, _ = load_model()
    x, _, _ = FT.collate([instruct.Tokens([1, 5, 6, 7, 2], [0] * 5), instruct.Tokens([1, 9, 2], [0] * 3)])
    with torch.no_grad():
        padded = model(x)[1, :2]
        alone = model(x[1:, :2])[0]
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-5)


def test_a_short_lora_run_lowers_the_answer_loss_and_trains_only_adapters():
    torch.manual_seed(0)
    model, tok = load_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = FT.FinetuneConfig(steps=12, batch_size=4, lr=3e-3, warmup=2, n_pairs=64, r=4, answer_tokens=64)
    examples = FT.encode_pairs(tok, instruct.instruction_pairs(8, seed=5), cfg.template)
    x, y, m = FT.collate(examples)

    def loss():
        with torch.no_grad():
            return float(FT.masked_loss(model(x), y, m))

    FT.prepare(model, cfg)
    start = loss()
    history = FT.finetune(model, tok, cfg, progress=False)
    assert len(history) == 12 and history[-1]["seconds"] > 0
    assert loss() < start  # on held-back pairs of the same kind (seed 5, not the run's 0)
    sd = lora.merged_state_dict(model)
    changed = [k for k in before if not torch.equal(before[k], sd[k])]
    assert changed and all(k.endswith(("wq.weight", "wk.weight", "wv.weight", "wo.weight", "w1.weight",
                                       "w2.weight", "w3.weight")) for k in changed)
    assert load_tokenizer(COURSE_MODEL).eos_id == tok.eos_id


def test_cut_answer_keeps_the_prompt_and_the_first_answer_tokens():
    e = instruct.Tokens([1, 5, 6, 7, 8, 9, 2], [0, 0, 0, 1, 1, 1, 1])
    assert FT.cut_answer(e, 2) == instruct.Tokens([1, 5, 6, 7, 8], [0, 0, 0, 1, 1])
    assert FT.cut_answer(e, 10) == e  # shorter than the cut: unchanged, EOS kept


def test_a_written_qlora_run_reloads_onto_its_nf4_base(tmp_path):
    """write_run's files name the shipped base portably, and load_tuned rebuilds the model:
    NF4 bases (run.json says qlora) and the same logits as the trained model, within 1e-5
    (the same float32 sums; the adapter goes through safetensors unchanged)."""
    torch.manual_seed(0)
    model, tok = load_model()
    cfg = FT.FinetuneConfig(method="qlora", steps=3, batch_size=2, warmup=1, n_pairs=16, r=2,
                            targets=["wq", "w2"])
    history = FT.finetune(model, tok, cfg, progress=False)
    out = FT.write_run(tmp_path / "run", model, COURSE_MODEL, cfg, history, {"before": 0.0, "after": 0.5})
    config = (out / "adapter" / lora.CONFIG_FILE).read_text()
    assert '"base_model_name_or_path": "minillama/assets/course"' in config
    assert FT.trained_on_nf4(out / "adapter") and not FT.trained_on_nf4(tmp_path)
    again, _ = FT.load_tuned(out / "adapter")
    assert all(isinstance(m.base, lora.NF4Linear) for m in lora.lora_layers(again).values())
    x = torch.tensor([tok.encode("Once upon a time", bos=True)])
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), atol=1e-5, rtol=0)
    plain, _ = FT.load_tuned(out / "adapter", nf4_base=False)  # overridden: a float32 base
    assert not any(isinstance(m.base, lora.NF4Linear) for m in lora.lora_layers(plain).values())


def test_batches_keep_cut_whole_and_two_turn_examples_apart():
    """With both shares 0.25, batch 4k + 3 holds whole stories ending in EOS, 4k + 1 two-turn
    chats (the first answer masked out, the second cut), the others one-turn answers cut
    after answer_tokens; the draws follow the seed."""
    tok = load_tokenizer(COURSE_MODEL)
    cfg = FT.FinetuneConfig(batch_size=3, answer_tokens=16, whole_share=0.25, two_turn_share=0.25, seed=4)
    pairs = instruct.instruction_pairs(20, seed=0)
    examples, two = FT.encode_pairs(tok, pairs, cfg.template), FT.encode_two_turn(tok, pairs)
    next_batch = FT.batch_sampler(examples, cfg, two, max_len=512)
    batches = [next_batch(step) for step in range(8)]
    for step, batch in enumerate(batches):
        assert len(batch) == 3
        bos = [e.ids.count(tok.bos_id) for e in batch]
        if step in (3, 7):
            assert all(e in examples and e.ids[-1] == tok.eos_id for e in batch) and bos == [1] * 3
        else:
            assert all(sum(e.mask) == 16 and e.ids[-1] != tok.eos_id for e in batch)
            assert bos == [2 if step in (1, 5) else 1] * 3
    again = FT.batch_sampler(examples, cfg, two, max_len=512)
    assert [again(step) for step in range(8)] == batches


def test_a_two_turn_example_learns_only_the_second_answer():
    """The ids are instruct.chat_ids of both turns; the mask is 1 exactly on the second
    answer and its EOS (counted by hand from the second answer's own encoding)."""
    tok = load_tokenizer(COURSE_MODEL)
    prev, cur = instruct.instruction_pairs(2, seed=3)
    e = FT.encode_two_turn(tok, [prev, cur])[1]  # pair 1's previous turn is pair 0
    turns = [(prev.instruction, prev.response), (cur.instruction, cur.response)]
    assert e.ids == instruct.chat_ids(tok, turns).ids
    answer = tok.encode(cur.response) + [tok.eos_id]
    assert sum(e.mask) == len(answer) and e.mask[-len(answer):] == [1] * len(answer)
    assert e.ids[-len(answer):] == answer
