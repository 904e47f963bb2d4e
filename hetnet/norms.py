"""RMSNorm and LayerNorm over the residual-stream axis."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hetnet.config import NormConfig


@dataclasses.dataclass(frozen=True)
class Norm:
    """RMSNorm (``cfg.kind == "rms"``) or LayerNorm over the last axis: ``scale`` (and LayerNorm's ``bias``),
    each ``[d_model]``."""

    cfg: NormConfig

    def init(self, key: jax.Array) -> dict:
        """Returns ``{"scale": ones}`` (and ``"bias": zeros`` for LayerNorm), each [d_model]; ``key`` is unused."""
        del key
        params = {"scale": jnp.ones((self.cfg.d_model,), jnp.float32)}
        if self.cfg.kind == "layer":
            params["bias"] = jnp.zeros((self.cfg.d_model,), jnp.float32)
        return params

    @property
    def axes(self) -> dict:
        return {name: ("embed",) for name in (("scale", "bias") if self.cfg.kind == "layer" else ("scale",))}

    def apply(self, params, x: jax.Array) -> jax.Array:
        """Returns ``x`` normalised over its last axis, in ``x``'s dtype; statistics are taken in at least float32.

        x: [..., d_model]
        """
        h = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        if self.cfg.kind == "layer":
            h = h - jnp.mean(h, axis=-1, keepdims=True)
        h = h * jax.lax.rsqrt(jnp.mean(jnp.square(h), axis=-1, keepdims=True) + self.cfg.eps)
        lead = tuple(range(h.ndim - 1))
        h = h * jnp.expand_dims(params["scale"], lead)
        if self.cfg.kind == "layer":
            h = h + jnp.expand_dims(params["bias"], lead)
        return h.astype(x.dtype)
