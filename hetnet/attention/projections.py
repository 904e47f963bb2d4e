"""Query, key, value and output projections shared by the attention variants, and mask checks.

Heads are laid out as ``[kv_heads, q_per_kv]`` so grouped-query attention needs no special case: query head
``n = k * q_per_kv + g`` reads key/value head ``k``, the order ``jax.nn.dot_product_attention`` uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hetnet import embedding
from hetnet.config import AttentionConfig

AXES = {
    "query": ("embed", "kv_heads", "q_per_kv", "qk_dim"),
    "key": ("embed", "kv_heads", "qk_dim"),
    "value": ("embed", "kv_heads", "v_dim"),
    "out": ("kv_heads", "q_per_kv", "v_dim", "embed"),
}


def init(key: jax.Array, cfg: AttentionConfig) -> dict:
    """Returns the four projection kernels (no biases), labelled by :data:`AXES`.

    query: [d_model, kv_heads, q_per_kv, head_dim]; key, value: [d_model, kv_heads, head_dim];
    out: [kv_heads, q_per_kv, head_dim, d_model].
    """
    kq, kk, kv, ko = jax.random.split(key, 4)
    k, g, h, d = cfg.kv_heads, cfg.q_per_kv, cfg.dim_per_head, cfg.d_model
    in_init = jax.nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2, 3))
    kv_init = jax.nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
    out_init = jax.nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)
    params = {
        "query": in_init(kq, (d, k, g, h), jnp.float32),
        "key": kv_init(kk, (d, k, h), jnp.float32),
        "value": kv_init(kv, (d, k, h), jnp.float32),
        "out": out_init(ko, (k, g, h, d), jnp.float32),
    }
    return params


def axes(cfg: AttentionConfig) -> dict:
    """Returns the labels of :func:`init`'s kernels."""
    del cfg
    return dict(AXES)


def project_qkv(params, x: jax.Array, cfg: AttentionConfig | None = None):
    """Returns ``(q, k, v)`` with heads flattened in kv-major order; queries and keys carry rotary positions when
    ``cfg.rope_base`` is set.

    x: [batch, seq, d_model] -> q: [batch, seq, num_heads, head_dim]; k, v: [batch, seq, kv_heads, head_dim]
    """
    wq = params["query"].astype(x.dtype)
    q = jnp.einsum("bsd,dkgh->bskgh", x, wq)
    q = q.reshape(*q.shape[:2], -1, q.shape[-1])
    k = jnp.einsum("bsd,dkh->bskh", x, params["key"].astype(x.dtype))
    v = jnp.einsum("bsd,dkh->bskh", x, params["value"].astype(x.dtype))
    if cfg is not None and cfg.rope_base is not None:
        q, k = embedding.rotate(q, cfg.rope_base), embedding.rotate(k, cfg.rope_base)
    return q, k, v


def project_out(params, o: jax.Array) -> jax.Array:
    """Returns the output projection of per-head outputs.

    o: [batch, seq, num_heads, head_dim] -> [batch, seq, d_model]
    """
    w = params["out"].astype(o.dtype)
    k, g = w.shape[:2]
    o = o.reshape(*o.shape[:2], k, g, o.shape[-1])
    return jnp.einsum("bskgh,kghd->bsd", o, w)


def check_padding_mask(padding_mask: jax.Array | None, x: jax.Array) -> None:
    """Raises ValueError unless ``padding_mask`` is None or a ``[batch, seq]`` mask matching ``x: [batch, seq, ...]``."""
    if padding_mask is None:
        return
    expected = tuple(x.shape[:2])
    if tuple(padding_mask.shape) != expected:
        raise ValueError(
            f"padding_mask must have shape [batch, seq] = {expected} (True marks real tokens), "
            f"got shape {tuple(padding_mask.shape)}."
        )
