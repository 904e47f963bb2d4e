"""Softmax over the last axis restricted to a mask, safe for rows where nothing is allowed."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Returns softmax weights over the last axis restricted to ``mask``; rows with nothing allowed get zeros.

    logits: [..., n]; mask: bool, broadcastable to logits -> [..., n]
    """
    logits = jnp.where(mask, logits, -jnp.inf)
    top = jnp.max(logits, axis=-1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    weights = jnp.where(mask, jnp.exp(logits - jax.lax.stop_gradient(top)), 0.0)
    return weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), jnp.finfo(logits.dtype).tiny)
