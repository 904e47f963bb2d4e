"""The pre-norm residual block: ``x + attention(norm(x))`` then ``x + ffn(norm(x))``."""

from __future__ import annotations

import jax

from hetnet import attention, feedforward, norms
from hetnet.config import TransformerConfig


def init(key: jax.Array, cfg: TransformerConfig):
    """Returns ``(params, axes)`` of one block with keys ``attn_norm``, ``attn``, ``ffn_norm``, ``ffn``.

    Labels are layer-local (unscoped); the model scopes them per block.
    """
    k_attn, k_ffn = jax.random.split(key)
    variant = attention.get(cfg.attention)
    parts = {
        "attn_norm": norms.init(key, cfg.norm_config),
        "attn": variant.init(k_attn, cfg.attention_config),
        "ffn_norm": norms.init(key, cfg.norm_config),
        "ffn": feedforward.init(k_ffn, cfg.ffn_config),
    }
    return {k: p for k, (p, _) in parts.items()}, {k: a for k, (_, a) in parts.items()}


def apply(params, x: jax.Array, cfg: TransformerConfig, *, padding_mask=None, state=None):
    """Returns ``(x, state)`` after one block.

    x: [batch, seq, d_model]; padding_mask: [batch, seq] bool or None; state: the forward-pass dict of the
    attention variant.
    """
    variant = attention.get(cfg.attention)
    h = norms.apply(params["attn_norm"], x, cfg.norm_config)
    h, state = variant.apply(params["attn"], h, cfg.attention_config, padding_mask=padding_mask, state=state)
    x = x + h
    h = norms.apply(params["ffn_norm"], x, cfg.norm_config)
    return x + feedforward.apply(params["ffn"], h, cfg.ffn_config), state
