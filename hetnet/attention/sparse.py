"""Robust sparse attention: exact softmax over routed key blocks plus a summary of the blocks left out.

The sequence is cut into blocks of ``block`` positions. For each query block ``i`` (per head) the attended set is

- **exact keys** of ``1 + window (+ window when non-causal) + 1 + top_k`` blocks: the query's own block (causally
  masked), the ``window`` neighbouring blocks before it (and after it when non-causal), the first block, and the
  ``top_k`` remaining blocks that score highest against the mean query of the query's *routing group*, scored with
  mean-pooled block keys (MoBA's routing; no extra parameters). A routing group is ``query_group`` consecutive
  queries of one block: the whole block by default (one choice per block), down to ``1`` (every query routes on its
  own, as MoBA and NSA do);
- **one summary token per other block**: the mean key and mean value of each eligible block that was not selected,
  with its logit raised by ``log(block size)`` so it stands for that many keys, so dropped attention mass is
  approximated rather than zeroed (``c exp(q . k_mean)`` stands for ``sum_l exp(q . k_l)``; by Jensen it is a lower
  bound, tight when the block's keys agree).

Both enter one softmax. Nothing of size N x N exists: the logits per query number
``(1 + window + 1 + top_k) * block + N / block``, and the keys gathered for a routing group
``(1 + window + 1 + top_k) * block * head_dim``, so small groups trade memory for finer routing. With ``top_k`` at
least the number of blocks every block is exact and the result equals dense attention.

Options (``AttentionConfig.options``): ``block`` (default 64), ``top_k`` (default 4), ``window`` (neighbouring blocks,
default 1), ``query_group`` (queries that share one routing choice; a divisor of ``block``, default ``block``),
``summary`` (``"mean"``, the default, or ``"none"``, which drops unselected blocks as MoBA and NSA do).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hetnet.attention import projections
from hetnet.attention.masked_softmax import masked_softmax
from hetnet.config import AttentionConfig

init = projections.init
axes = projections.axes


SUMMARIES = ("mean", "none")
OPTIONS = ("block", "top_k", "window", "query_group", "summary")


class SparseSettings(NamedTuple):
    block: int
    top_k: int
    window: int
    summary: str
    query_group: int


def settings(cfg: AttentionConfig) -> SparseSettings:
    """Returns the variant's options, checked."""
    block, top_k, window = (int(cfg.option(n, d)) for n, d in (("block", 64), ("top_k", 4), ("window", 1)))
    if block < 1:
        raise ValueError(f"sparse attention block must be a positive number of positions, got {block}.")
    if top_k < 0 or window < 0:
        raise ValueError(f"sparse attention top_k and window must be >= 0, got top_k={top_k}, window={window}.")
    summary = cfg.option("summary", "mean")
    if summary not in SUMMARIES:
        raise ValueError(f"sparse attention summary must be one of {SUMMARIES}, got {summary!r}.")
    query_group = int(cfg.option("query_group", block))
    if query_group < 1 or block % query_group:
        raise ValueError(f"sparse attention query_group must be a positive divisor of block={block}, "
                         f"got {query_group}.")
    return SparseSettings(block, top_k, window, summary, query_group)


def _forced_blocks(num_blocks: int, window: int, causal: bool):
    """Returns ``(index, valid)``, both [num_blocks, slots]: own block, window neighbours, first block; duplicates invalid."""
    own = jnp.arange(num_blocks)[:, None]
    offsets = [0] + [-o for o in range(1, window + 1)] + ([] if causal else list(range(1, window + 1)))
    index = jnp.concatenate([own + jnp.array(offsets)[None], jnp.zeros((num_blocks, 1), jnp.int32)], axis=1)
    valid = (index >= 0) & (index < num_blocks)
    index = jnp.clip(index, 0, num_blocks - 1)
    earlier_same = (index[:, :, None] == index[:, None, :]) & valid[:, None, :]
    earlier_same = earlier_same & jnp.tril(jnp.ones(earlier_same.shape[1:], bool), k=-1)[None]
    return index, valid & ~jnp.any(earlier_same, axis=-1)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, cfg: AttentionConfig, padding_mask: jax.Array | None):
    """Returns per-head sparse attention outputs.

    q: [batch, seq, num_heads, head_dim]; k, v: [batch, seq, kv_heads, head_dim]; padding_mask: [batch, seq] or None
    -> [batch, seq, num_heads, head_dim]
    """
    opts = settings(cfg)
    b, n, _, d = q.shape
    kv_heads, groups, bs = cfg.kv_heads, cfg.q_per_kv, opts.block
    pad = (-n) % bs
    m = (n + pad) // bs
    real = jnp.ones((b, n), bool) if padding_mask is None else padding_mask.astype(bool)
    if pad:
        q, k, v = (jnp.pad(t, [(0, 0), (0, pad), (0, 0), (0, 0)]) for t in (q, k, v))
        real = jnp.pad(real, [(0, 0), (0, pad)])
    gs = opts.query_group
    r = bs // gs
    # Blocked layouts: q [b, K, G, m, r, gs, d] (r routing groups of gs queries per block); k, v [b, K, m, bs, d].
    qb = q.reshape(b, m, r, gs, kv_heads, groups, d).transpose(0, 4, 5, 1, 2, 3, 6)
    kb = k.reshape(b, m, bs, kv_heads, d).transpose(0, 3, 1, 2, 4)
    vb = v.reshape(b, m, bs, kv_heads, v.shape[-1]).transpose(0, 3, 1, 2, 4)
    realb = real.reshape(b, m, bs)
    count = jnp.sum(realb, axis=-1).astype(q.dtype)  # [b, m]
    weights = realb.astype(q.dtype) / jnp.maximum(count, 1.0)[..., None]
    k_mean = jnp.einsum("bkmld,bml->bkmd", kb, weights)
    v_mean = jnp.einsum("bkmld,bml->bkmd", vb, weights)
    scale = 1.0 / math.sqrt(d)

    # Routing: each group's mean query against each block's mean key, among eligible blocks not already forced.
    eligible = jnp.tril(jnp.ones((m, m), bool), k=-1) if cfg.causal else jnp.ones((m, m), bool)
    eligible = eligible[None] & (count > 0)[:, None, :]  # [b, m_query, m_key]
    forced, forced_valid = _forced_blocks(m, opts.window, cfg.causal)
    forced_hit = jnp.any(jax.nn.one_hot(forced, m, dtype=bool) & forced_valid[..., None], axis=1)  # [m, m]
    route = jnp.einsum("bkgmrd,bkjd->bkgmrj", jnp.mean(qb, axis=5), k_mean)
    route = jnp.where((eligible & ~forced_hit[None])[:, None, None, :, None], route, -jnp.inf)
    lead = (b, kv_heads, groups, m, r)
    top_k = min(opts.top_k, m)
    if top_k:
        top_score, top_index = jax.lax.top_k(jax.lax.stop_gradient(route), top_k)
        forced_r = jnp.broadcast_to(forced[:, None], (m, r, forced.shape[-1]))
        valid_r = jnp.broadcast_to(forced_valid[:, None], forced_r.shape)
        index = jnp.concatenate([jnp.broadcast_to(forced_r, lead + forced.shape[-1:]), top_index], -1)
        valid = jnp.concatenate([jnp.broadcast_to(valid_r, lead + forced.shape[-1:]), jnp.isfinite(top_score)], -1)
    else:
        index = jnp.broadcast_to(forced[:, None], lead + forced.shape[-1:])
        valid = jnp.broadcast_to(forced_valid[:, None], index.shape)

    # Exact part: gather the selected blocks' keys and values, [b, K, G, m, r, slots, bs, d].
    bi = jnp.arange(b)[:, None, None, None, None, None]
    hi = jnp.arange(kv_heads)[None, :, None, None, None, None]
    k_sel, v_sel = kb[bi, hi, index], vb[bi, hi, index]
    key_real = realb[bi, index]  # [b, K, G, m, r, slots, bs]
    q_pos = (jnp.arange(m)[:, None, None] * bs + jnp.arange(r)[None, :, None] * gs
             + jnp.arange(gs)[None, None, :]).reshape(1, 1, 1, m, r, gs, 1, 1)
    k_pos = index[..., None] * bs + jnp.arange(bs).reshape((1,) * index.ndim + (bs,))  # [b, K, G, m, r, slots, bs]
    exact_mask = (valid[..., None] & key_real)[..., None, :, :]  # [b, K, G, m, r, 1, slots, bs]
    if cfg.causal:
        exact_mask = exact_mask & (k_pos[..., None, :, :] <= q_pos)
    exact_logits = jnp.einsum("bkgmrqd,bkgmrsld->bkgmrqsl", qb, k_sel) * scale
    slots = index.shape[-1]
    exact_logits = exact_logits.reshape(*exact_logits.shape[:6], slots * bs)
    exact_mask = jnp.broadcast_to(exact_mask, exact_logits.shape[:6] + (slots, bs)).reshape(exact_logits.shape)

    if opts.summary != "none":
        selected = jnp.any(jax.nn.one_hot(index, m, dtype=bool) & valid[..., None], axis=-2)  # [b, K, G, m, r, m]
        summary_mask = (eligible[:, None, None, :, None] & ~selected)[..., None, :]  # [b, K, G, m, r, 1, m]
        summary_logits = jnp.einsum("bkgmrqd,bkjd->bkgmrqj", qb, k_mean) * scale
        summary_logits = summary_logits + jnp.log(jnp.maximum(count, 1.0))[:, None, None, None, None, None, :]
        summary_mask = jnp.broadcast_to(summary_mask, summary_logits.shape)
        logits = jnp.concatenate([exact_logits, summary_logits], axis=-1)
        mask = jnp.concatenate([exact_mask, summary_mask], axis=-1)
    else:
        logits, mask = exact_logits, exact_mask
    p = masked_softmax(logits, mask)
    p_exact = p[..., : slots * bs].reshape(*p.shape[:6], slots, bs)
    out = jnp.einsum("bkgmrqsl,bkgmrsle->bkgmrqe", p_exact, v_sel)
    if opts.summary != "none":
        out = out + jnp.einsum("bkgmrqj,bkje->bkgmrqe", p[..., slots * bs :], v_mean)
    out = out.transpose(0, 3, 4, 5, 1, 2, 6).reshape(b, m * bs, kv_heads * groups, -1)
    return out[:, :n].astype(q.dtype)


def apply(params, x: jax.Array, cfg: AttentionConfig, *, padding_mask: jax.Array | None = None, carry=None):
    """Returns the attention output ``y``; ``carry`` is unused (this variant reads nothing from other layers).

    x: [batch, seq, d_model]; padding_mask: [batch, seq] bool or None (keys marked False are ignored);
    y: [batch, seq, d_model].
    """
    projections.check_padding_mask(padding_mask, x)
    q, k, v = projections.project_qkv(params, x)
    return projections.project_out(params, attend(q, k, v, cfg, padding_mask))
