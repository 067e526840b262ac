"""The Llama model in torch, with Meta's module names, from the smallest piece up.

    RMSNorm -> repeat_kv -> Attention -> FeedForward -> TransformerBlock -> KVCache -> Llama

    model = Llama(get_preset("stories15M"))
    logits = model(tokens)                              # (bsz, seqlen, vocab_size)
    model = Llama.from_pretrained("path/to/hf-dir")     # transformers' format (formats/hf.py)

Weight names match Meta's reference code (`tok_embeddings`, `layers.0.attention.wq`,
`layers.0.feed_forward.w1`, `norm`, `output`), so a Meta state dict loads as is. The
model never picks a device: it follows its parameters and inputs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minillama.config import ModelArgs
from minillama.rope import apply_rotary_emb, precompute_freqs_cis


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dim; any shape (..., dim) in, same shape out."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # (dim,)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32: the mean of squares of bf16/fp16 activations under- or overflows
        return self._norm(x.float()).type_as(x) * self.weight


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(bsz, seqlen, n_kv_heads, head_dim) -> (bsz, seqlen, n_kv_heads * n_rep, head_dim)."""
    bsz, seqlen, n_kv_heads, head_dim = x.shape
    if n_rep == 1:
        return x
    x = x[:, :, :, None, :].expand(bsz, seqlen, n_kv_heads, n_rep, head_dim)  # no copy yet
    return x.reshape(bsz, seqlen, n_kv_heads * n_rep, head_dim)  # kv head j serves j*n_rep..


class Attention(nn.Module):
    """Causal multi-head attention with grouped-query K/V heads and RoPE."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads = args.n_heads
        self.n_kv_heads = args.n_kv_heads
        self.n_rep = args.n_rep
        self.head_dim = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        # True: torch's fused scaled_dot_product_attention instead of the explicit
        # matmul + mask + softmax below; the two are tested equal (tests/test_model.py)
        self.use_sdpa = False

    def forward(
        self,
        x: torch.Tensor,
        start_pos: int,
        freqs_cis: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        layer_id: int = 0,
    ) -> torch.Tensor:
        """x (bsz, seqlen, dim) at positions start_pos.. -> (bsz, seqlen, dim).

        mask is added to the scores: (seqlen, n_keys) with -inf above the causal diagonal,
        or None for a single new token. With a cache, keys and values of earlier positions
        come from cache (layer layer_id) and this call's are written into it.
        """
        bsz, seqlen, _ = x.shape
        xq = self.wq(x).view(bsz, seqlen, self.n_heads, self.head_dim)  # (bsz, seqlen, n_heads, hd)
        xk = self.wk(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim)  # (.., n_kv_heads, hd)
        xv = self.wv(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim)  # (.., n_kv_heads, hd)
        xq, xk = apply_rotary_emb(xq, xk, freqs_cis)

        if cache is not None:
            xk, xv = cache.update(layer_id, start_pos, xk, xv)  # (bsz, n_keys, n_kv_heads, hd)
        keys = repeat_kv(xk, self.n_rep)  # (bsz, n_keys, n_heads, head_dim)
        values = repeat_kv(xv, self.n_rep)  # (bsz, n_keys, n_heads, head_dim)

        xq = xq.transpose(1, 2)  # (bsz, n_heads, seqlen, head_dim)
        keys = keys.transpose(1, 2)  # (bsz, n_heads, n_keys, head_dim)
        values = values.transpose(1, 2)  # (bsz, n_heads, n_keys, head_dim)
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(xq, keys, values, attn_mask=mask)
        else:
            scores = xq @ keys.transpose(2, 3) / math.sqrt(self.head_dim)  # (bsz, nh, seqlen, n_keys)
            if mask is not None:
                scores = scores + mask  # -inf where a query would see the future
            # float32 softmax: exp of low-precision scores loses the small probabilities
            probs = F.softmax(scores.float(), dim=-1).type_as(xq)  # (bsz, nh, seqlen, n_keys)
            out = probs @ values  # (bsz, n_heads, seqlen, head_dim)
        out = out.transpose(1, 2).reshape(bsz, seqlen, -1)  # (bsz, seqlen, n_heads * head_dim)
        return self.wo(out)  # (bsz, seqlen, dim)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)  # gate
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)  # down
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)  # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (..., hidden_dim) inside


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then h + feed_forward(norm(h))."""

    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden_dim)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        start_pos: int,
        freqs_cis: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """(bsz, seqlen, dim) -> (bsz, seqlen, dim)."""
        h = x + self.attention(self.attention_norm(x), start_pos, freqs_cis, mask,
                               cache=cache, layer_id=self.layer_id)
        return h + self.feed_forward(self.ffn_norm(h))


class KVCache:
    """Preallocated keys and values: k[layer] and v[layer] are
    (max_batch, max_seq_len, n_kv_heads, head_dim), written at start_pos."""

    def __init__(
        self,
        args: ModelArgs,
        max_batch: int = 1,
        max_seq_len: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        self.max_batch = max_batch
        self.max_seq_len = args.max_seq_len if max_seq_len is None else max_seq_len
        if max_batch <= 0 or self.max_seq_len <= 0:
            raise ValueError(f"max_batch and max_seq_len must be positive, got "
                             f"{max_batch} and {self.max_seq_len}")
        shape = (max_batch, self.max_seq_len, args.n_kv_heads, args.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]

    def check(self, bsz: int, start_pos: int, seqlen: int) -> None:
        """Raise ValueError unless a (bsz, seqlen) step at start_pos fits in the cache."""
        if bsz > self.max_batch:
            raise ValueError(f"batch of {bsz} exceeds the cache's max_batch {self.max_batch}")
        if start_pos < 0 or start_pos + seqlen > self.max_seq_len:
            raise ValueError(
                f"positions {start_pos}..{start_pos + seqlen - 1} do not fit in the cache's "
                f"max_seq_len {self.max_seq_len}"
            )

    def update(
        self, layer_id: int, start_pos: int, xk: torch.Tensor, xv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write xk, xv (bsz, seqlen, n_kv_heads, head_dim) at start_pos; return all keys and
        values so far, each (bsz, start_pos + seqlen, n_kv_heads, head_dim)."""
        bsz, seqlen = xk.shape[:2]
        self.check(bsz, start_pos, seqlen)
        self.k[layer_id][:bsz, start_pos : start_pos + seqlen] = xk
        self.v[layer_id][:bsz, start_pos : start_pos + seqlen] = xv
        end = start_pos + seqlen
        return self.k[layer_id][:bsz, :end], self.v[layer_id][:bsz, :end]


class Llama(nn.Module):
    """Token ids (bsz, seqlen) -> next-token logits (bsz, seqlen, vocab_size)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight  # one (vocab_size, dim) matrix
        # a plain attribute, not a buffer: Module.to(dtype) would drop its imaginary part.
        # With "dynamic" scaling this is the table for a full-length sequence only: forward
        # takes its table from rope_table, which recomputes it for each length.
        self.freqs_cis = precompute_freqs_cis(
            args.head_dim, args.max_seq_len, args.rope_theta, args.rope_scaling
        )  # (max_seq_len, head_dim // 2) complex64
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
                # residual-branch outputs: keep the residual stream's variance from growing
                # with depth (GPT-2's scaled init; llama2.c does the same)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * args.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)  # GPT-2 / llama2.c init

    def rope_table(self, end: int, device: torch.device) -> torch.Tensor:
        """freqs_cis for positions 0..end-1 on device: (end, head_dim // 2) complex64."""
        scaling = self.args.rope_scaling
        if scaling is not None and scaling.type == "dynamic":
            # dynamic NTK: the frequencies depend on the current length, so no fixed table.
            # As in transformers, keys already in a KV cache keep their old rotation, so
            # past the original length cached decoding differs from a full recompute.
            return precompute_freqs_cis(self.args.head_dim, end, self.args.rope_theta,
                                        scaling).to(device)
        if self.freqs_cis.device != device:
            self.freqs_cis = self.freqs_cis.to(device)
        return self.freqs_cis[:end]

    def forward(
        self, tokens: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None
    ) -> torch.Tensor:
        """tokens (bsz, seqlen) at positions start_pos.. -> logits (bsz, seqlen, vocab_size) float32.

        Without a cache, only these tokens are attended to. With one, this call's keys and
        values are written at start_pos and earlier ones are read back: prefill with the
        prompt at start_pos=0, then decode one token at a time at start_pos=len(seen).
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (bsz, seqlen), got shape {tuple(tokens.shape)}")
        bsz, seqlen = tokens.shape
        end = start_pos + seqlen
        if seqlen == 0:
            raise ValueError("tokens is empty: give at least one token per sequence")
        if start_pos < 0 or end > self.args.max_seq_len:
            raise ValueError(f"positions {start_pos}..{end - 1} must lie in "
                             f"0..{self.args.max_seq_len - 1} (max_seq_len)")
        if cache is not None:
            cache.check(bsz, start_pos, seqlen)

        h = self.tok_embeddings(tokens)  # (bsz, seqlen, dim)
        freqs_cis = self.rope_table(end, h.device)[start_pos:end]  # (seqlen, head_dim // 2)
        n_keys = end if cache is not None else seqlen  # cached keys precede the new ones
        mask = None  # one new token may see every key: no mask needed
        if seqlen > 1:
            # (seqlen, n_keys): query i sits at key position n_keys - seqlen + i and may see
            # keys up to there; -inf above that diagonal becomes probability 0 in softmax
            mask = torch.full((seqlen, n_keys), float("-inf"), device=h.device)
            mask = torch.triu(mask, diagonal=n_keys - seqlen + 1).type_as(h)
        for layer in self.layers:
            h = layer(h, start_pos, freqs_cis, mask, cache=cache)  # (bsz, seqlen, dim)
        h = self.norm(h)  # (bsz, seqlen, dim)
        return self.output(h).float()  # (bsz, seqlen, vocab_size)

    def use_sdpa(self, enabled: bool = True) -> Llama:
        """Switch every attention layer to (or from) torch's fused SDPA; returns self."""
        for layer in self.layers:
            layer.attention.use_sdpa = enabled
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Llama:
        """Load any checkpoint `minillama.formats.checkpoint` reads (transformers or Meta
        directory, llama2.c .bin, GGUF), detected by content; weights of any dtype (GGUF's
        quantized ones dequantized) are cast to the model's float32."""
        from minillama.formats.checkpoint import read_checkpoint

        ck = read_checkpoint(path, tokenizer=False)
        model = cls(ck.args)
        targets = model.state_dict()  # our name -> tensor sharing storage with the parameter
        with torch.no_grad():
            for name, array in ck.tensors.items():
                t = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.array(array))
                targets[name].copy_(t)
                ck.release()
        return model

    def save_pretrained(self, path: str | Path, max_shard_size: int | None = None) -> None:
        """Write a directory transformers loads (config.json + safetensors, sharded if asked)."""
        from minillama.formats.hf import save_hf

        save_hf(self, path, max_shard_size=max_shard_size)


def count_parameters(args: ModelArgs) -> int:
    """The number of parameters of Llama(args), in closed form."""
    dim, head_dim, hidden = args.dim, args.head_dim, args.ffn_hidden_dim
    attention = dim * args.n_heads * head_dim * 2  # wq and wo
    attention += dim * args.n_kv_heads * head_dim * 2  # wk and wv: fewer heads with GQA
    feed_forward = 3 * dim * hidden  # w1, w2, w3
    norms = 2 * dim  # attention_norm, ffn_norm
    embeddings = args.vocab_size * dim
    output = 0 if args.tie_embeddings else args.vocab_size * dim
    return embeddings + args.n_layers * (attention + feed_forward + norms) + dim + output
