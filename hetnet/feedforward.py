"""Position-wise feed-forward layers: GELU and ReLU MLPs, and SwiGLU."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hetnet.config import FeedForwardConfig

_in_init = jax.nn.initializers.lecun_normal()


@dataclasses.dataclass(frozen=True)
class FeedForward:
    """``d_model -> d_ff -> d_model`` with GELU or ReLU (``cfg.kind``), or SwiGLU; no biases.

    Kernels ``w_in`` (and ``w_gate`` for SwiGLU) ``[d_model, d_ff]``, ``w_out [d_ff, d_model]``.
    """

    cfg: FeedForwardConfig

    def init(self, key: jax.Array) -> dict:
        """Returns the kernels, lecun-normal."""
        k_in, k_gate, k_out = jax.random.split(key, 3)
        d, f = self.cfg.d_model, self.cfg.d_ff
        params = {"w_in": _in_init(k_in, (d, f), jnp.float32), "w_out": _in_init(k_out, (f, d), jnp.float32)}
        if self.cfg.kind == "swiglu":
            params["w_gate"] = _in_init(k_gate, (d, f), jnp.float32)
        return params

    @property
    def axes(self) -> dict:
        axes = {"w_in": ("embed", "mlp"), "w_out": ("mlp", "embed")}
        if self.cfg.kind == "swiglu":
            axes["w_gate"] = ("embed", "mlp")
        return axes

    def apply(self, params, x: jax.Array) -> jax.Array:
        """Returns the feed-forward output, same shape and dtype as ``x``.

        x: [..., d_model]
        """
        h = x @ params["w_in"].astype(x.dtype)
        if self.cfg.kind == "swiglu":
            h = jax.nn.silu(x @ params["w_gate"].astype(x.dtype)) * h
        elif self.cfg.kind == "relu":
            h = jax.nn.relu(h)
        else:
            h = jax.nn.gelu(h)
        return h @ params["w_out"].astype(x.dtype)
