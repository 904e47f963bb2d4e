"""The pre-norm residual block: ``x + attention(norm(x))`` then ``x + ffn(norm(x))``."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from hetnet.attention import Attention
from hetnet.config import TransformerConfig
from hetnet.feedforward import FeedForward
from hetnet.norms import Norm


@dataclasses.dataclass(frozen=True)
class Block:
    """One residual block bound to ``cfg``; params ``attn_norm``, ``attn``, ``ffn_norm``, ``ffn``.

    Labels are layer-local (unscoped); a body stacks or scopes them.
    """

    cfg: TransformerConfig

    @property
    def attention(self) -> Attention:
        return Attention(self.cfg.attention_config)

    @property
    def norm(self) -> Norm:
        return Norm(self.cfg.norm_config)

    @property
    def feedforward(self) -> FeedForward:
        return FeedForward(self.cfg.ffn_config)

    def init(self, key: jax.Array) -> dict:
        """Returns the block's params (arrays only)."""
        k_attn, k_ffn = jax.random.split(key)
        return {
            "attn_norm": self.norm.init(key),
            "attn": self.attention.init(k_attn),
            "ffn_norm": self.norm.init(key),
            "ffn": self.feedforward.init(k_ffn),
        }

    @property
    def axes(self) -> dict:
        return {"attn_norm": self.norm.axes, "attn": self.attention.axes, "ffn_norm": self.norm.axes,
                "ffn": self.feedforward.axes}

    def first_carry(self, params, x: jax.Array) -> Any:
        """Returns what this block, run first, hands to every block (None for attention that needs nothing).

        x: [batch, seq, d_model], the first block's input
        """
        if not self.attention.needs_carry:
            return None
        return self.attention.first_carry(params["attn"], self.norm.apply(params["attn_norm"], x))

    def apply(self, params, x: jax.Array, *, padding_mask: jax.Array | None = None, carry: Any = None) -> jax.Array:
        """Returns the residual stream after the block.

        x: [batch, seq, d_model]; padding_mask: [batch, seq] bool or None; carry: the first block's
        :meth:`first_carry` (required by attention that reads it, such as NeuTRENO).
        """
        h = self.norm.apply(params["attn_norm"], x)
        x = x + self.attention.apply(params["attn"], h, padding_mask=padding_mask, carry=carry)
        h = self.norm.apply(params["ffn_norm"], x)
        return x + self.feedforward.apply(params["ffn"], h)
