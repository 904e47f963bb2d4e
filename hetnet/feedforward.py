"""Position-wise feed-forward layers: GELU MLP and SwiGLU."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hetnet.config import FeedForwardConfig

_in_init = jax.nn.initializers.lecun_normal()


def init(key: jax.Array, cfg: FeedForwardConfig):
    """Returns ``(params, axes)``; kernels ``w_in`` (and ``w_gate`` for SwiGLU) ``[d_model, d_ff]``, ``w_out [d_ff, d_model]``."""
    k_in, k_gate, k_out = jax.random.split(key, 3)
    params = {
        "w_in": _in_init(k_in, (cfg.d_model, cfg.d_ff), jnp.float32),
        "w_out": _in_init(k_out, (cfg.d_ff, cfg.d_model), jnp.float32),
    }
    axes = {"w_in": ("embed", "mlp"), "w_out": ("mlp", "embed")}
    if cfg.kind == "swiglu":
        params["w_gate"] = _in_init(k_gate, (cfg.d_model, cfg.d_ff), jnp.float32)
        axes["w_gate"] = ("embed", "mlp")
    return params, axes


def apply(params, x: jax.Array, cfg: FeedForwardConfig) -> jax.Array:
    """Returns the feed-forward output, same shape and dtype as ``x``.

    x: [..., d_model]
    """
    w_in = params["w_in"].astype(x.dtype)
    h = x @ w_in
    if cfg.kind == "swiglu":
        h = jax.nn.silu(x @ params["w_gate"].astype(x.dtype)) * h
    else:
        h = jax.nn.gelu(h)
    return h @ params["w_out"].astype(x.dtype)
