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
