"""Plain NumPy twins of `minillama/kernels.py`: same names, same signatures, output first.

They are the specification the Numba kernels are tested against (tests/test_kernels.py,
tests/test_kernels_quant.py), and the "plain NumPy" baseline of the engine benchmark.
float32 throughout, like the kernels. A matrix W of any registered format (float32, Q8_0,
Q4_0) enters as `kernels.dequantize(W, m)`: the twins multiply by the values the format
stores, so they are the specification for every format at once.
"""

from __future__ import annotations

import math

import numpy as np

from minillama.kernels import dequantize


def rmsnorm(out, x, weight, eps):
    """out = x / sqrt(mean(x^2) + eps) * weight; all (dim,)."""
    out[:] = x / np.sqrt(np.mean(x * x) + np.float32(eps)) * weight


def rope(x, cos, sin):
    """Rotate each head of x (heads, head_dim) in place: pairs (2i, 2i+1) by angle i."""
    a, b = x[:, 0::2].copy(), x[:, 1::2].copy()  # (heads, head_dim // 2)
    x[:, 0::2] = a * cos - b * sin
    x[:, 1::2] = a * sin + b * cos


def softmax(x):
    """In place over the whole (n,) vector."""
    e = np.exp(x - x.max())
    x[:] = e / e.sum()


def add(out, x):
    """out += x."""
    out += x


def silu_mul(a, b):
    return a / (np.float32(1.0) + np.exp(-a)) * b


def matvec(out, W, m, x):
    """out (rows,) = W[m] @ x."""
    out[:] = dequantize(W, m) @ x


def matvec_add(out, W, m, x):
    """out += W[m] @ x."""
    out += dequantize(W, m) @ x


def qkv_matvec(q, k, v, Wq, Wk, Wv, m, x):
    """q, k, v = Wq[m] x, Wk[m] x, Wv[m] x."""
    matvec(q, Wq, m, x)
    matvec(k, Wk, m, x)
    matvec(v, Wv, m, x)


def swiglu_matvec(out, W1, W3, m, x):
    """out = silu(W1[m] x) * (W3[m] x)."""
    out[:] = silu_mul(dequantize(W1, m) @ x, dequantize(W3, m) @ x)


def matmul(out, W, m, X):
    """out (T, rows) = X (T, cols) @ W[m].T."""
    out[:] = X @ dequantize(W, m).T


def matmul_add(out, W, m, X):
    """out (T, rows) += X @ W[m].T."""
    out += X @ dequantize(W, m).T


def swiglu_matmul(out, W1, W3, m, X):
    """out (T, hidden) = silu(X @ W1[m].T) * (X @ W3[m].T)."""
    out[:] = silu_mul(X @ dequantize(W1, m).T, X @ dequantize(W3, m).T)


def attention(out, q, k_cache, v_cache, att, n_keys, parts=None):
    """out, q (n_heads, head_dim); caches (max_seq_len, n_kv_heads, head_dim); the scratch
    att and parts (the kernel's spans of positions) unused."""
    n_heads, head_dim = q.shape
    n_rep = n_heads // k_cache.shape[1]
    keys = np.repeat(k_cache[:n_keys], n_rep, axis=1)  # (n_keys, n_heads, head_dim)
    values = np.repeat(v_cache[:n_keys], n_rep, axis=1)  # (n_keys, n_heads, head_dim)
    scores = np.einsum("hd,thd->ht", q, keys) / np.float32(math.sqrt(head_dim))  # (n_heads, n_keys)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    out[:] = np.einsum("ht,thd->hd", probs, values)  # (n_heads, head_dim)


def attention_prefill(out, q, k_cache, v_cache, att, start_pos):
    """out, q (T, n_heads, head_dim); query t sees cache keys 0..start_pos+t."""
    for t in range(q.shape[0]):
        attention(out[t], q[t], k_cache, v_cache, att, start_pos + t + 1)
