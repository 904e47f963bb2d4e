"""NeuTRENO attention (Nguyen, Nguyen and Baraniuk, NeurIPS 2023): softmax attention plus a fidelity term.

Per head: ``softmax(Q K^T / sqrt(d_h)) V^l + lambda * (V^0 - V^l)``, added before the output projection, where
``V^0`` is the first attention layer's value tensor in the same forward pass (not detached). It reaches later
layers through the forward-pass ``state``; layer 0 finds no ``V^0`` there and records its own, so its correction is
zero. ``lambda`` is the option ``"lambda"`` (default 0.6, the paper's DeiT setting; 0 gives softmax attention).

Because every layer's values are compared with layer 0's, the head and value-dimension axes are one permutation
group across all layers (``model/...`` labels), not one per layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hetnet.attention import projections
from hetnet.attention.softmax import attend
from hetnet.axes import MODEL_PREFIX
from hetnet.config import AttentionConfig

FIRST_VALUES = "neutreno_first_values"
DEFAULT_LAMBDA = 0.6
OPTIONS = ("lambda",)
_TIED = ("kv_heads", "q_per_kv", "v_dim")


def init(key: jax.Array, cfg: AttentionConfig):
    """Returns ``(params, axes)``: the softmax projections, with head and value axes labelled model-wide."""
    params, axes = projections.init(key, cfg)
    tie = lambda labels: tuple(MODEL_PREFIX + l if l in _TIED else l for l in labels)  # noqa: E731
    return params, {name: tie(labels) for name, labels in axes.items()}


def apply(params, x: jax.Array, cfg: AttentionConfig, *, padding_mask: jax.Array | None = None, state=None):
    """Returns ``(y, state)``; ``state`` gains the first layer's values when this is the first layer.

    x: [batch, seq, d_model]; padding_mask: [batch, seq] bool or None; y: [batch, seq, d_model].
    """
    projections.check_padding_mask(padding_mask, x)
    state = {} if state is None else state
    q, k, v = projections.project_qkv(params, x)
    o = attend(q, k, v, cfg, padding_mask)
    if FIRST_VALUES not in state:
        state = {**state, FIRST_VALUES: v}
    first = state[FIRST_VALUES]
    if first.shape != v.shape:
        raise ValueError(
            f"NeuTRENO needs every layer's values shaped like the first layer's {first.shape}; got {v.shape}."
        )
    lam = float(cfg.option("lambda", DEFAULT_LAMBDA))
    # Query head n = k * q_per_kv + g reads kv head k: the kv head's correction broadcasts over its query group.
    b, n, heads, e = o.shape
    o = (o.reshape(b, n, cfg.kv_heads, cfg.q_per_kv, e) + lam * (first - v)[:, :, :, None, :]).reshape(b, n, heads, e)
    return projections.project_out(params, o), state
