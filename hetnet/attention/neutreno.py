"""NeuTRENO attention (Nguyen, Nguyen and Baraniuk, NeurIPS 2023): softmax attention plus a fidelity term.

Per head: ``softmax(Q K^T / sqrt(d_h)) V^l + lambda * (V^0 - V^l)``, added before the output projection, where
``V^0`` is the first attention layer's value tensor in the same forward pass (not detached). ``V^0`` reaches every
layer in a typed carry, :class:`FirstValues`, which the body computes from the first block before running the
blocks (:func:`first_carry`); layer 0 then finds its own values there, so its correction is zero. ``lambda`` is the
option ``"lambda"`` (:class:`~hetnet.attention_options.NeutrenoOptions`, field ``lambda_``; default 0.6, the paper's DeiT setting; 0 gives softmax attention).

Because every layer's values are compared with layer 0's, the head and value-dimension axes are one permutation
group across all layers (``model/...`` labels), not one per layer.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from hetnet.attention import projections
from hetnet.attention.softmax import attend
from hetnet.axes import MODEL_PREFIX
from hetnet.config import AttentionConfig

_TIED = ("kv_heads", "q_per_kv", "v_dim")

init = projections.init


class FirstValues(NamedTuple):
    """The first attention layer's values, handed to every later layer.

    values: [batch, seq, kv_heads, head_dim]
    """

    values: jax.Array


def axes(cfg: AttentionConfig) -> dict:
    """Returns the projections' labels with the head and value axes labelled model-wide."""
    tie = lambda labels: tuple(MODEL_PREFIX + l if l in _TIED else l for l in labels)  # noqa: E731
    return {name: tie(labels) for name, labels in projections.axes(cfg).items()}


def first_carry(params, x: jax.Array, cfg: AttentionConfig) -> FirstValues:
    """Returns the carry made by the first layer: its values of its (normed) input.

    x: [batch, seq, d_model], the first attention layer's input
    """
    del cfg
    return FirstValues(projections.project_qkv(params, x)[2])


def apply(params, x: jax.Array, cfg: AttentionConfig, *, padding_mask: jax.Array | None = None,
          carry: FirstValues | None = None) -> jax.Array:
    """Returns the attention output with the fidelity term toward ``carry.values``.

    x: [batch, seq, d_model]; padding_mask: [batch, seq] bool or None; y: [batch, seq, d_model].
    """
    projections.check_padding_mask(padding_mask, x)
    if not isinstance(carry, FirstValues):
        raise TypeError(f"NeuTRENO attention needs carry=FirstValues(...) from the first layer "
                        f"(hetnet.attention.Attention.first_carry); got {type(carry).__name__}.")
    q, k, v = projections.project_qkv(params, x, cfg)
    o = attend(q, k, v, cfg, padding_mask)
    first = carry.values
    if first.shape != v.shape:
        raise ValueError(
            f"NeuTRENO needs every layer's values shaped like the first layer's {first.shape}; got {v.shape}."
        )
    lam = float(cfg.options.lambda_)
    # Query head n = k * q_per_kv + g reads kv head k: the kv head's correction broadcasts over its query group.
    b, n, heads, e = o.shape
    first = first.astype(v.dtype)
    o = (o.reshape(b, n, cfg.kv_heads, cfg.q_per_kv, e) + lam * (first - v)[:, :, :, None, :]).reshape(b, n, heads, e)
    return projections.project_out(params, o)
