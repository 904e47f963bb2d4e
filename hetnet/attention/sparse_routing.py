"""Sparse attention's block layout and routing: the blocked views of one call's inputs, block means, and the scores
by which each routing group picks key blocks. :mod:`.sparse` attends with them."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hetnet.attention_options import SparseOptions
from hetnet.config import AttentionConfig


def settings(cfg: AttentionConfig) -> SparseOptions:
    """Returns ``cfg``'s sparse options (checked when the config was built); raises ValueError naming the variant
    when ``cfg`` is not a sparse attention config."""
    if not isinstance(cfg.options, SparseOptions):
        raise ValueError(f"sparse attention needs AttentionConfig(variant='sparse', ...), got "
                         f"variant={cfg.variant!r} with {type(cfg.options).__name__}.")
    return cfg.options


def forced_blocks(num_blocks: int, window: int, causal: bool):
    """Returns ``(index, valid)``, both [num_blocks, slots]: own block, window neighbours, first block; duplicates
    invalid."""
    own = jnp.arange(num_blocks)[:, None]
    offsets = [0] + [-o for o in range(1, window + 1)] + ([] if causal else list(range(1, window + 1)))
    index = jnp.concatenate([own + jnp.array(offsets)[None], jnp.zeros((num_blocks, 1), jnp.int32)], axis=1)
    valid = (index >= 0) & (index < num_blocks)
    index = jnp.clip(index, 0, num_blocks - 1)
    earlier_same = (index[:, :, None] == index[:, None, :]) & valid[:, None, :]
    earlier_same = earlier_same & jnp.tril(jnp.ones(earlier_same.shape[1:], bool), k=-1)[None]
    return index, valid & ~jnp.any(earlier_same, axis=-1)


class Layout(NamedTuple):
    """Blocked views of one call's inputs: ``m`` blocks of ``bs`` positions, ``r`` routing groups of ``gs``
    queries per block."""

    qb: jax.Array  # [b, K, G, m, r, gs, d]
    kb: jax.Array  # [b, K, m, bs, d]
    vb: jax.Array  # [b, K, m, bs, dv]
    realb: jax.Array  # [b, m, bs] bool: real (unpadded) key positions
    count: jax.Array  # [b, m]: real positions per block
    eligible: jax.Array  # [b, m_query, m_key] bool: blocks a query block may read beyond its own
    routable: jax.Array  # [b, m_query, m_key] bool: eligible blocks that are not already forced in
    forced: jax.Array  # [m, slots]
    forced_valid: jax.Array  # [m, slots] bool
    group_weights: jax.Array  # [b, m, r, gs]: averages over a routing group's real queries


def blocked(x: jax.Array, pad: int) -> jax.Array:
    return jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)) if pad else x


def layout(q, k, v, cfg: AttentionConfig, opts: SparseOptions, padding_mask) -> Layout:
    b, n, _, d = q.shape
    kv_heads, groups, bs, gs = cfg.kv_heads, cfg.q_per_kv, opts.block, opts.group_size
    pad = (-n) % bs
    m, r = (n + pad) // bs, bs // gs
    real = jnp.ones((b, n), bool) if padding_mask is None else padding_mask.astype(bool)
    q, k, v, real = (blocked(t, pad) for t in (q, k, v, real))
    qb = q.reshape(b, m, r, gs, kv_heads, groups, d).transpose(0, 4, 5, 1, 2, 3, 6)
    kb = k.reshape(b, m, bs, kv_heads, d).transpose(0, 3, 1, 2, 4)
    vb = v.reshape(b, m, bs, kv_heads, v.shape[-1]).transpose(0, 3, 1, 2, 4)
    realb = real.reshape(b, m, bs)
    count = jnp.sum(realb, axis=-1)
    eligible = jnp.tril(jnp.ones((m, m), bool), k=-1) if cfg.causal else jnp.ones((m, m), bool)
    eligible = eligible[None] & (count > 0)[:, None, :]
    forced, forced_valid = forced_blocks(m, opts.window, cfg.causal)
    forced_hit = jnp.any(jax.nn.one_hot(forced, m, dtype=bool) & forced_valid[..., None], axis=1)  # [m, m]
    # A routing group routes on its real queries only: a padded position's query must not steer the others.
    query_real = real.reshape(b, m, r, gs).astype(q.dtype)
    group_weights = query_real / jnp.maximum(jnp.sum(query_real, axis=-1, keepdims=True), 1.0)
    return Layout(qb, kb, vb, realb, count, eligible, eligible & ~forced_hit[None], forced, forced_valid,
                   group_weights)


def block_means(x: jax.Array, lay: Layout) -> jax.Array:
    """Returns each block's mean over its real positions. x: [b, K, m, bs, e] -> [b, K, m, e]"""
    weights = lay.realb.astype(x.dtype) / jnp.maximum(lay.count.astype(x.dtype), 1.0)[..., None]
    return jnp.einsum("bkmld,bml->bkmd", x, weights)


def route_scores(lay: Layout, index) -> jax.Array:
    """Returns every routing group's score for every key block, [b, K, G, m, r, m]; higher is read first.

    index: None (mean query against mean key) or the indexer's ``(queries, keys)`` of :func:`project_index`.
    """
    if index is None:
        group_query = jnp.einsum("bkgmrqd,bmrq->bkgmrd", lay.qb, lay.group_weights)
        return jnp.einsum("bkgmrd,bkjd->bkgmrj", group_query, block_means(lay.kb, lay))
    iq, ik = index
    b, n = iq.shape[:2]
    _, kv_heads, groups, m, r, gs, _ = lay.qb.shape
    pad = m * r * gs - n
    iq, ik = blocked(iq, pad), blocked(ik, pad)
    dim = ik.shape[-1]
    iqb = jnp.einsum("bmrqkgpd,bmrq->bmrkgpd", iq.reshape(b, m, r, gs, kv_heads, groups, 2, dim),
                     lay.group_weights)  # [b, m, r, K, G, 2, dim]
    ikb = ik.reshape(b, m, r * gs, kv_heads, dim).transpose(0, 3, 1, 2, 4)  # [b, K, m, bs, dim]
    key_mean = block_means(ikb, lay)
    key_max = jnp.max(jnp.where(lay.realb[:, None, :, :, None], ikb, -jnp.inf), axis=3)
    key_max = jnp.where((lay.count > 0)[:, None, :, None], key_max, 0.0)
    scores = (jnp.einsum("bmrkgd,bkjd->bkgmrj", iqb[..., 0, :], key_mean)
              + jnp.einsum("bmrkgd,bkjd->bkgmrj", iqb[..., 1, :], key_max))
    return scores / math.sqrt(2 * dim)
