"""Slow, obvious float64 NumPy references for hetnet layers: explicit loops and an explicit softmax."""

from __future__ import annotations

import math

import numpy as np


def _np(tree):
    if isinstance(tree, dict):
        return {k: _np(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_np(v) for v in tree]
    return np.asarray(tree, dtype=np.float64)


def norm(params, x, kind: str, eps: float):
    params, x = _np(params), _np(x)
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape[:-1]):
        row = x[idx]
        if kind == "layer":
            row = row - row.mean()
        row = row / math.sqrt(np.mean(row**2) + eps) * params["scale"]
        if kind == "layer":
            row = row + params["bias"]
        out[idx] = row
    return out


def gelu(z):
    # jax.nn.gelu defaults to the tanh approximation.
    return 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))


def feedforward(params, x, kind: str):
    params, x = _np(params), _np(x)
    h = x @ params["w_in"]
    if kind == "swiglu":
        g = x @ params["w_gate"]
        h = g / (1.0 + np.exp(-g)) * h
    elif kind == "relu":
        h = np.maximum(h, 0.0)
    else:
        h = gelu(h)
    return h @ params["w_out"]


def softmax_attention(params, x, *, causal: bool, padding_mask=None):
    """Per batch element and head: scores over the full [seq, seq] matrix, masked, softmaxed, summed over heads."""
    params, x = _np(params), _np(x)
    batch, seq, d_model = x.shape
    kv_heads, q_per_kv, head_dim, _ = params["out"].shape
    out = np.zeros_like(x)
    for b in range(batch):
        for kv in range(kv_heads):
            k = x[b] @ params["key"][:, kv, :]
            v = x[b] @ params["value"][:, kv, :]
            for g in range(q_per_kv):
                q = x[b] @ params["query"][:, kv, g, :]
                scores = np.empty((seq, seq))
                for i in range(seq):
                    for j in range(seq):
                        allowed = (not causal or j <= i) and (padding_mask is None or bool(padding_mask[b, j]))
                        scores[i, j] = q[i] @ k[j] / math.sqrt(head_dim) if allowed else -np.inf
                weights = np.exp(scores - scores.max(axis=1, keepdims=True))
                weights /= weights.sum(axis=1, keepdims=True)
                out[b] += (weights @ v) @ params["out"][kv, g]
    return out


def layers(stacked) -> list:
    """Returns the per-layer params of blocks stacked along a leading layers axis, as a list."""
    stacked = _np(stacked)
    depth = len(next(iter(_leaves(stacked))))
    return [_map(lambda a, i=i: a[i], stacked) for i in range(depth)]


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree


def _map(fn, tree):
    return {k: _map(fn, v) for k, v in tree.items()} if isinstance(tree, dict) else fn(tree)


def block(params, x, cfg, padding_mask=None):
    h = norm(params["attn_norm"], x, cfg.norm, 1e-6)
    x = _np(x) + softmax_attention(params["attn"], h, causal=cfg.causal, padding_mask=padding_mask)
    h = norm(params["ffn_norm"], x, cfg.norm, 1e-6)
    return x + feedforward(params["ffn"], h, cfg.ffn_config.kind)


def transformer_lm(params, tokens, cfg, padding_mask=None):
    p = _np(params)
    tokens = np.asarray(tokens)
    x = p["tokens"][tokens] + p["positions"][: tokens.shape[1]]
    for blk in layers(params["blocks"]):
        x = block(blk, x, cfg, padding_mask)
    x = norm(p["final_norm"], x, cfg.norm, 1e-6)
    return x @ p["unembed"]


def neutreno_lm(params, tokens, cfg, lam: float):
    """TransformerLM with NeuTRENO attention: each layer adds lam * (V^0 - V^l) per head before the output
    projection, V^0 being layer 0's values (computed the obvious way, head by head)."""
    p = _np(params)
    tokens = np.asarray(tokens)
    x = p["tokens"][tokens] + p["positions"][: tokens.shape[1]]
    first = None
    for blk in layers(p["blocks"]):
        h = norm(blk["attn_norm"], x, cfg.norm, 1e-6)
        attn = blk["attn"]
        values = np.einsum("bsd,dkh->bskh", h, attn["value"])
        first = values if first is None else first
        out = softmax_attention(attn, h, causal=cfg.causal)
        kv_heads, q_per_kv = attn["out"].shape[:2]
        for kv in range(kv_heads):
            for g in range(q_per_kv):
                out += lam * (first[:, :, kv] - values[:, :, kv]) @ attn["out"][kv, g]
        x = x + out
        h = norm(blk["ffn_norm"], x, cfg.norm, 1e-6)
        x = x + feedforward(blk["ffn"], h, cfg.ffn_config.kind)
    return norm(p["final_norm"], x, cfg.norm, 1e-6) @ p["unembed"]


def assert_ignores_the_future(run, tokens, position: int, vocab_size: int) -> None:
    """Asserts that changing ``tokens[:, position]`` leaves ``run``'s outputs before it unchanged and moves some after.

    run: tokens [batch, seq] -> outputs [batch, seq, ...]
    """
    changed = tokens.at[:, position].set((tokens[:, position] + 1) % vocab_size)
    a, b = np.asarray(run(tokens)), np.asarray(run(changed))
    np.testing.assert_allclose(a[:, :position], b[:, :position], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a[:, position:], b[:, position:]), "the changed token did not affect any output"
