"""RMSNorm and LayerNorm over the residual-stream axis."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hetnet.config import NormConfig


def init(key: jax.Array, cfg: NormConfig):
    """Returns ``(params, axes)``: a ``scale`` of ones (and a LayerNorm ``bias`` of zeros), each ``[d_model]``."""
    del key
    params = {"scale": jnp.ones((cfg.d_model,), jnp.float32)}
    axes = {"scale": ("embed",)}
    if cfg.kind == "layer":
        params["bias"] = jnp.zeros((cfg.d_model,), jnp.float32)
        axes["bias"] = ("embed",)
    return params, axes


def apply(params, x: jax.Array, cfg: NormConfig) -> jax.Array:
    """Returns ``x`` normalised over its last axis, in ``x``'s dtype; statistics are taken in at least float32.

    x: [..., d_model]
    """
    h = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if cfg.kind == "layer":
        h = h - jnp.mean(h, axis=-1, keepdims=True)
    h = h * jax.lax.rsqrt(jnp.mean(jnp.square(h), axis=-1, keepdims=True) + cfg.eps)
    lead = tuple(range(h.ndim - 1))
    h = h * jnp.expand_dims(params["scale"], lead)
    if cfg.kind == "layer":
        h = h + jnp.expand_dims(params["bias"], lead)
    return h.astype(x.dtype)
