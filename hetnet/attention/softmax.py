"""Multi-head (optionally grouped-query) softmax attention through ``jax.nn.dot_product_attention``."""

from __future__ import annotations

import jax

from hetnet.attention import projections
from hetnet.config import AttentionConfig

init = projections.init
axes = projections.axes
OPTIONS = ()


def attend(q: jax.Array, k: jax.Array, v: jax.Array, cfg: AttentionConfig, padding_mask: jax.Array | None):
    """Returns per-head softmax attention outputs.

    q: [batch, seq, num_heads, head_dim]; k, v: [batch, seq, kv_heads, head_dim]; padding_mask: [batch, seq] or None
    -> [batch, seq, num_heads, head_dim]
    """
    mask = None if padding_mask is None else padding_mask[:, None, None, :].astype(bool)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=cfg.causal)


def apply(params, x: jax.Array, cfg: AttentionConfig, *, padding_mask: jax.Array | None = None, carry=None):
    """Returns the attention output ``y``; ``carry`` is unused (this variant reads nothing from other layers).

    x: [batch, seq, d_model]; padding_mask: [batch, seq] bool, True for real tokens (keys marked False are ignored);
    y: [batch, seq, d_model]. Outputs at padded query positions are defined but meaningless.
    """
    projections.check_padding_mask(padding_mask, x)
    q, k, v = projections.project_qkv(params, x)
    return projections.project_out(params, attend(q, k, v, cfg, padding_mask))
