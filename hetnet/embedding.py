"""Token embedding, learned positions, feature projection and unembedding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_embed_init = jax.nn.initializers.normal(stddev=0.02)
_dense_init = jax.nn.initializers.lecun_normal()


def check_tokens(tokens, vocab_size: int, name: str = "tokens", bound: str = "vocab_size") -> None:
    """Raises ValueError when concrete ``tokens`` are not integers in ``[0, vocab_size)``; ``bound`` names the
    config field that sets the limit.

    The dtype is checked under ``jax.jit`` too; the values of traced tokens cannot be checked eagerly; :func:`embed_tokens` turns their out-of-range entries into NaN so the
    mistake shows in the loss instead of silently reading a clamped row.
    """
    dtype = tokens.dtype if hasattr(tokens, "dtype") else np.asarray(tokens).dtype
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"{name} must be an integer array (token ids), got dtype {dtype}.")
    if isinstance(tokens, jax.core.Tracer):
        return
    arr = np.asarray(tokens)
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError(
            f"{name} must lie in [0, {bound}) = [0, {vocab_size}); got values in [{arr.min()}, {arr.max()}]. "
            f"Raise {bound} in the config or fix the data."
        )


TOKEN_AXES = ("vocab", "embed")
POSITION_AXES = ("pos", "embed")


def init_tokens(key: jax.Array, vocab_size: int, d_model: int) -> jax.Array:
    """Returns a token table [vocab_size, d_model], labelled :data:`TOKEN_AXES`."""
    return _embed_init(key, (vocab_size, d_model), jnp.float32)


def embed_tokens(table: jax.Array, tokens: jax.Array, dtype) -> jax.Array:
    """Returns the rows of ``table`` for ``tokens``; out-of-range tokens, negative ones included, give NaN rows.

    table: [vocab, d_model]; tokens: [batch, seq] int -> [batch, seq, d_model]
    """
    # jnp.take wraps negative indices before its fill mode applies, so validity is masked explicitly.
    valid = (tokens >= 0) & (tokens < table.shape[0])
    rows = jnp.take(table.astype(dtype), jnp.where(valid, tokens, 0), axis=0)
    return jnp.where(valid[..., None], rows, jnp.asarray(jnp.nan, rows.dtype))


def init_positions(key: jax.Array, max_len: int, d_model: int) -> jax.Array:
    """Returns learned absolute positions [max_len, d_model], labelled :data:`POSITION_AXES`."""
    return _embed_init(key, (max_len, d_model), jnp.float32)


def add_positions(table: jax.Array, x: jax.Array) -> jax.Array:
    """Returns ``x`` plus the first ``seq`` rows of the position table.

    table: [max_len, d_model]; x: [batch, seq, d_model]
    """
    seq, max_len = x.shape[1], table.shape[0]
    if seq > max_len:
        raise ValueError(f"sequence length {seq} exceeds max_len {max_len}; raise max_len in the config.")
    return x + table[None, :seq].astype(x.dtype)


def rotate(x: jax.Array, base: float) -> jax.Array:
    """Returns ``x`` with rotary position embedding (RoPE) applied: feature pairs ``(i, i + head_dim / 2)`` of the
    vector at position ``t`` rotated by ``t * base ** (-2 i / head_dim)``, so query-key products depend only on the
    positions' offset.

    x: [batch, seq, heads, head_dim] with head_dim even -> the same shape and dtype
    """
    half = x.shape[-1] // 2
    frequencies = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.arange(x.shape[1], dtype=jnp.float32)[:, None] * frequencies[None]  # [seq, half]
    cos, sin = jnp.cos(angles)[None, :, None], jnp.sin(angles)[None, :, None]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def init_dense(key: jax.Array, d_in: int, d_out: int) -> jax.Array:
    """Returns a lecun-normal kernel [d_in, d_out]."""
    return _dense_init(key, (d_in, d_out), jnp.float32)
