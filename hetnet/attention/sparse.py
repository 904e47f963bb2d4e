"""Robust sparse attention: exact softmax over routed key blocks plus a summary of the blocks left out.

The sequence is cut into blocks of ``block`` positions. For each query block ``i`` (per head) the attended set is

- **exact keys** of ``1 + window (+ window when non-causal) + 1 + top_k`` blocks: the query's own block (causally
  masked), the ``window`` neighbouring blocks before it (and after it when non-causal), the first block, and the
  ``top_k`` remaining blocks that score highest against the mean query of the query's *routing group* (padded
  positions left out), scored with mean-pooled block keys (MoBA's routing; no extra parameters). A routing group is
  ``query_group`` consecutive queries of one block: the whole block by default (one choice per block), down to
  ``1`` (every query routes on its own, as MoBA and NSA do);
- **one summary token per other block**: the mean key and mean value of each eligible block that was not selected,
  with its logit raised by ``log(block size)`` so it stands for that many keys, so dropped attention mass is
  approximated rather than zeroed (``c exp(q . k_mean)`` stands for ``sum_l exp(q . k_l)``; by Jensen it is a lower
  bound, tight when the block's keys agree).

Both enter one softmax. Nothing of size N x N exists: the logits per query number
``(1 + window + 1 + top_k) * block + N / block``, and the keys gathered for a routing group
``(1 + window + 1 + top_k) * block * head_dim``, so small groups trade memory for finer routing. With ``top_k`` at
least the number of blocks every block is exact and the result equals dense attention.

**Learned router.** With ``router="indexer"`` the ``top_k`` blocks are chosen by a small learned indexer instead of
mean queries against mean keys (the idea of DeepSeek's sparse attention, here over blocks): per head, the query's
indexer projection ``a, b`` ([2, index_dim]) against each block's indexer keys pooled two ways,
``score(q, j) = (a . mean_l u_l + b . max_l u_l) / sqrt(2 index_dim)`` with ``u_l`` the block's projected inputs.
Max-pooling lets one strong key mark its block, which a mean cannot. The indexer is trained apart from the model by
:func:`indexer_loss`: the KL divergence from dense attention's mass over the routable blocks to the indexer's softmax
over them. Its inputs and its target are cut from the gradient, so the loss moves only the indexer, and it is added to
the model's loss (``TransformerLM.aux_loss``, through this variant's :func:`aux_loss` hook). An untrained indexer routes at random.

Options (:class:`~hetnet.attention_options.SparseOptions`): ``block`` (default 64), ``top_k`` (default 4), ``window`` (neighbouring blocks,
default 1), ``query_group`` (queries that share one routing choice; a divisor of ``block``, default ``block``),
``summary`` (``"mean"``, the default, or ``"none"``, which drops unselected blocks as MoBA and NSA do), ``router``
(``"mean"``, the default, or ``"indexer"``) and ``index_dim`` (the indexer's width per head, default 16; only with
``router="indexer"``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from hetnet.attention import projections
from hetnet.attention import sparse_routing as routing
from hetnet.attention.masked_softmax import masked_softmax
from hetnet.config import AttentionConfig

INDEXER_AXES = {
    "index_query": ("embed", "kv_heads", "q_per_kv", None, "index_dim"),
    "index_key": ("embed", "kv_heads", "index_dim"),
}


def init(key: jax.Array, cfg: AttentionConfig) -> dict:
    """Returns the projections, plus the indexer's kernels with ``router="indexer"``.

    index_query: [d_model, kv_heads, q_per_kv, 2, index_dim] (the mean- and max-pooled halves);
    index_key: [d_model, kv_heads, index_dim].
    """
    opts = routing.settings(cfg)
    params = projections.init(key, cfg)  # the same projections as a dense layer made from the same key
    if opts.router == "indexer":
        k_query, k_key = jax.random.split(jax.random.fold_in(key, 1))
        d, kv, g, r = cfg.d_model, cfg.kv_heads, cfg.q_per_kv, opts.index_width
        params["index_query"] = jax.nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2, 3, 4))(
            k_query, (d, kv, g, 2, r), jnp.float32)
        params["index_key"] = jax.nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))(
            k_key, (d, kv, r), jnp.float32)
    return params


def axes(cfg: AttentionConfig) -> dict:
    """Returns the labels of :func:`init`'s kernels."""
    labels = projections.axes(cfg)
    if routing.settings(cfg).router == "indexer":
        labels.update(INDEXER_AXES)
    return labels


def project_index(params, x: jax.Array):
    """Returns the indexer's queries and keys.

    x: [batch, seq, d_model] -> queries [batch, seq, num_heads, 2, index_dim], keys [batch, seq, kv_heads, index_dim]
    """
    missing = [name for name in INDEXER_AXES if name not in params]
    if missing:
        raise ValueError(f"router='indexer' reads params {tuple(INDEXER_AXES)}; these params lack {missing} "
                         f"(init them with this config).")
    iq = jnp.einsum("bsd,dkgpr->bskgpr", x, params["index_query"].astype(x.dtype))
    iq = iq.reshape(*iq.shape[:2], -1, *iq.shape[-2:])
    ik = jnp.einsum("bsd,dkr->bskr", x, params["index_key"].astype(x.dtype))
    return iq, ik


def attend(q: jax.Array, k: jax.Array, v: jax.Array, cfg: AttentionConfig, padding_mask: jax.Array | None,
           index=None):
    """Returns per-head sparse attention outputs.

    q: [batch, seq, num_heads, head_dim]; k, v: [batch, seq, kv_heads, head_dim]; padding_mask: [batch, seq] or None;
    index: the indexer's ``(queries, keys)`` from :func:`project_index` with ``router="indexer"``, else None
    -> [batch, seq, num_heads, head_dim]
    """
    opts = routing.settings(cfg)
    if (index is None) != (opts.router == "mean"):
        raise ValueError(f"sparse attention with router={opts.router!r} needs index "
                         f"{'= None' if opts.router == 'mean' else 'from project_index'}.")
    b, n, _, d = q.shape
    lay = routing.layout(q, k, v, cfg, opts, padding_mask)
    qb, kb, vb, realb = lay.qb, lay.kb, lay.vb, lay.realb
    kv_heads, groups, m, r, gs = qb.shape[1:6]
    bs = opts.block
    scale = 1.0 / math.sqrt(d)

    index, valid = _select_blocks(lay, routing.route_scores(lay, index), min(opts.top_k, m),
                                  (b, kv_heads, groups, m, r))

    if opts.summary != "none":
        k_mean, v_mean = routing.block_means(kb, lay), routing.block_means(vb, lay)
        log_count = jnp.log(jnp.maximum(lay.count.astype(q.dtype), 1.0))
    else:
        k_mean = v_mean = log_count = None

    def query_blocks(args):
        """Attention of a chunk of c query blocks: qb [b, K, G, c, r, gs, d], index and valid [b, K, G, c, r,
        slots], eligible [b, c, m], first the chunk's first block -> [b, K, G, c, r, gs, dv]."""
        qb_c, index_c, valid_c, eligible_c, first = args
        c = qb_c.shape[3]
        # Exact part: gather the selected blocks' keys and values, [b, K, G, c, r, slots, bs, d].
        bi = jnp.arange(b)[:, None, None, None, None, None]
        hi = jnp.arange(kv_heads)[None, :, None, None, None, None]
        k_sel, v_sel = kb[bi, hi, index_c], vb[bi, hi, index_c]
        key_real = realb[bi, index_c]  # [b, K, G, c, r, slots, bs]
        q_pos = ((first + jnp.arange(c))[:, None, None] * bs + jnp.arange(r)[None, :, None] * gs
                 + jnp.arange(gs)[None, None, :]).reshape(1, 1, 1, c, r, gs, 1, 1)
        k_pos = index_c[..., None] * bs + jnp.arange(bs).reshape((1,) * index_c.ndim + (bs,))
        exact_mask = (valid_c[..., None] & key_real)[..., None, :, :]  # [b, K, G, c, r, 1, slots, bs]
        if cfg.causal:
            exact_mask = exact_mask & (k_pos[..., None, :, :] <= q_pos)
        logits = jnp.einsum("bkgmrqd,bkgmrsld->bkgmrqsl", qb_c, k_sel) * scale
        slots = index_c.shape[-1]
        logits = logits.reshape(*logits.shape[:6], slots * bs)
        mask = jnp.broadcast_to(exact_mask, logits.shape[:6] + (slots, bs)).reshape(logits.shape)
        if k_mean is not None:
            selected = jnp.any(jax.nn.one_hot(index_c, m, dtype=bool) & valid_c[..., None], axis=-2)
            summary_mask = (eligible_c[:, None, None, :, None] & ~selected)[..., None, :]  # [b, K, G, c, r, 1, m]
            summary_logits = jnp.einsum("bkgmrqd,bkjd->bkgmrqj", qb_c, k_mean) * scale
            summary_logits = summary_logits + log_count[:, None, None, None, None, None, :]
            logits = jnp.concatenate([logits, summary_logits], axis=-1)
            mask = jnp.concatenate([mask, jnp.broadcast_to(summary_mask, summary_logits.shape)], axis=-1)
        p = masked_softmax(logits, mask)
        p_exact = p[..., : slots * bs].reshape(*p.shape[:6], slots, bs)
        out = jnp.einsum("bkgmrqsl,bkgmrsle->bkgmrqe", p_exact, v_sel)
        if v_mean is not None:
            out = out + jnp.einsum("bkgmrqj,bkje->bkgmrqe", p[..., slots * bs :], v_mean)
        return out

    out = _over_query_chunks(query_blocks, qb, index, valid, lay.eligible)  # [b, K, G, m, r, gs, dv]
    out = out.transpose(0, 3, 4, 5, 1, 2, 6).reshape(b, m * bs, kv_heads * groups, -1)
    return out[:, :n].astype(q.dtype)


def _select_blocks(lay: routing.Layout, route: jax.Array, top_k: int,
                   lead: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Returns ``(index, valid)``, each [*lead, slots] with ``lead`` = (b, K, G, m, r): per routing group, the forced
    blocks (local window, sinks) then the ``top_k`` routable blocks of highest ``route`` score (broadcastable to
    [*lead, m]); ``valid`` is False for padding slots."""
    route = jnp.where(lay.routable[:, None, None, :, None], route, -jnp.inf)
    m, r = lead[3:]
    forced, forced_valid = lay.forced, lay.forced_valid
    if not top_k:
        index = jnp.broadcast_to(forced[:, None], lead + forced.shape[-1:])
        return index, jnp.broadcast_to(forced_valid[:, None], index.shape)
    top_score, top_index = jax.lax.top_k(jax.lax.stop_gradient(route), top_k)
    forced_r = jnp.broadcast_to(forced[:, None], (m, r, forced.shape[-1]))
    valid_r = jnp.broadcast_to(forced_valid[:, None], forced_r.shape)
    index = jnp.concatenate([jnp.broadcast_to(forced_r, lead + forced.shape[-1:]), top_index], -1)
    valid = jnp.concatenate([jnp.broadcast_to(valid_r, lead + forced.shape[-1:]), jnp.isfinite(top_score)], -1)
    return index, valid


def _over_query_chunks(query_blocks, qb: jax.Array, index: jax.Array, valid: jax.Array,
                       eligible: jax.Array) -> jax.Array:
    """Returns ``query_blocks`` run over chunks of the m query blocks (axis 3 of ``qb``, ``index``, ``valid``; axis 1
    of ``eligible`` [b, m, m]), each chunk recomputed in the backward pass, joined back -> [b, K, G, m, r, gs, dv].

    Only one chunk's gathered keys, values and logits are ever alive, so peak memory falls with the chunk count
    instead of growing with the number of routing groups times the keys each reads."""
    m = qb.shape[3]
    c = _query_chunk(m)

    def per_chunk(x, axis):
        return jnp.moveaxis(x.reshape(*x.shape[:axis], m // c, c, *x.shape[axis + 1:]), axis, 0)

    chunks = (per_chunk(qb, 3), per_chunk(index, 3), per_chunk(valid, 3), per_chunk(eligible, 1),
              jnp.arange(0, m, c))
    out = jax.lax.map(jax.checkpoint(query_blocks), chunks)  # [m // c, b, K, G, c, r, gs, dv]
    return jnp.moveaxis(out, 0, 3).reshape(*qb.shape[:6], -1)


def _query_chunk(num_blocks: int, chunks: int = 8) -> int:
    """Returns the query blocks per chunk: the largest divisor of ``num_blocks`` that makes at least ``chunks``
    chunks (one block per chunk when there are fewer)."""
    return max(c for c in range(1, max(1, num_blocks // chunks) + 1) if num_blocks % c == 0)


def _dense_block_mass(lay: routing.Layout, cfg: AttentionConfig) -> jax.Array:
    """Returns dense attention's mass on every key block, averaged over each routing group's real queries,
    [b, K, G, m, r, m].

    One query block at a time (``lax.map``), so the largest intermediate is [b, heads, block, seq], not seq x seq.
    """
    qb, kb, realb = lay.qb, lay.kb, lay.realb
    b, kv_heads, groups, m, r, gs, d = qb.shape
    bs = r * gs
    keys = kb.reshape(b, kv_heads, m * bs, d)
    key_real = realb.reshape(b, m * bs)
    k_pos = jnp.arange(m * bs)

    def one(i):
        q_i = jax.lax.dynamic_index_in_dim(qb, i, axis=3, keepdims=False)  # [b, K, G, r, gs, d]
        logits = jnp.einsum("bkgrqd,bknd->bkgrqn", q_i, keys) / math.sqrt(d)
        mask = key_real[:, None, None, None, None, :]
        if cfg.causal:
            q_pos = i * bs + jnp.arange(bs).reshape(r, gs)
            mask = mask & (k_pos[None, None, :] <= q_pos[..., None])[None, None, None]
        p = masked_softmax(logits, mask)
        weights = jax.lax.dynamic_index_in_dim(lay.group_weights, i, axis=1, keepdims=False)  # [b, r, gs]
        return jnp.einsum("bkgrqj,brq->bkgrj", p.reshape(*p.shape[:-1], m, bs).sum(-1), weights)

    return jnp.moveaxis(jax.lax.map(one, jnp.arange(m)), 0, 3)


def indexer_loss(params, x: jax.Array, cfg: AttentionConfig, *, padding_mask: jax.Array | None = None) -> jax.Array:
    """Returns the indexer's distillation loss: KL divergence from dense attention's mass over each routing group's
    routable blocks (renormalised) to the indexer's softmax over them.

    Each group's KL is weighted by the dense mass those blocks hold, since routing there decides that much of the
    output; groups with nothing routable weigh zero. ``x`` and the dense target are cut from the gradient, so only
    the indexer's kernels learn from it.

    x: [batch, seq, d_model], the layer's attention input; padding_mask: [batch, seq] bool or None -> scalar
    """
    opts = routing.settings(cfg)
    if opts.router != "indexer":
        raise ValueError(f"indexer_loss trains the learned router; this config has router={opts.router!r} "
                         f"(set the sparse option router='indexer').")
    projections.check_padding_mask(padding_mask, x)
    x = jax.lax.stop_gradient(x)
    q, k, v = projections.project_qkv(jax.lax.stop_gradient(params), x, cfg)
    lay = routing.layout(q, k, v, cfg, opts, padding_mask)
    target = jax.lax.stop_gradient(_dense_block_mass(lay, cfg))
    routable = lay.routable[:, None, None, :, None]  # [b, 1, 1, m, 1, m]
    target = jnp.where(routable, target, 0.0)
    mass = jnp.sum(target, axis=-1)
    target = target / jnp.maximum(mass, jnp.finfo(target.dtype).tiny)[..., None]
    scores = routing.route_scores(lay, project_index(params, x)).astype(jnp.float32)
    log_p = jax.nn.log_softmax(jnp.where(routable, scores, -jnp.inf), axis=-1)
    kl = jnp.sum(jnp.where(target > 0, target * (jnp.log(jnp.where(target > 0, target, 1.0)) - log_p), 0.0), -1)
    group_real = jnp.sum(lay.group_weights, axis=-1)  # [b, m, r]: 1 where the group has a real query, else 0
    weight = mass * group_real[:, None, None]
    return jnp.sum(weight * kl) / jnp.maximum(jnp.sum(weight), jnp.finfo(weight.dtype).tiny)


def has_aux_loss(cfg: AttentionConfig) -> bool:
    """Returns whether ``cfg`` has a loss of its own to train: the learned indexer's."""
    return routing.settings(cfg).router == "indexer"


# The variant's own loss (see hetnet.attention): the indexer's, with ``router="indexer"``.
aux_loss = indexer_loss


def apply(params, x: jax.Array, cfg: AttentionConfig, *, padding_mask: jax.Array | None = None, carry=None):
    """Returns the attention output ``y``; ``carry`` is unused (this variant reads nothing from other layers).

    x: [batch, seq, d_model]; padding_mask: [batch, seq] bool or None (keys marked False are ignored);
    y: [batch, seq, d_model].
    """
    projections.check_padding_mask(padding_mask, x)
    q, k, v = projections.project_qkv(params, x, cfg)
    index = project_index(params, x) if routing.settings(cfg).router == "indexer" else None
    return projections.project_out(params, attend(q, k, v, cfg, padding_mask, index))
