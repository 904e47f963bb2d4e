"""Linear attention for language models, in O(N) time and memory by a chunked scan.

Per head, with a feature map ``phi``:
    y_i = sum_{j <= i} (phi(q_i) . phi(k_j)) v_j / Z_i
where ``Z_i = sum_{j <= i} phi(q_i) . phi(k_j)`` when ``normalize`` (the default for positive feature maps) and
``Z_i`` = the number of attended positions otherwise (the identity map's scores can be negative, so it averages).
Non-causal attention sums over every real position. Inside a chunk of ``chunk`` positions the scores are formed
exactly; across chunks a running ``sum phi(k) v^T`` state carries the prefix, so nothing of size N x N exists.

Options (:class:`~hetnet.attention_options.LinearOptions`): ``feature_map`` ("elu", "relu" or "identity"; default "elu", i.e. elu+1),
``normalize`` (bool; default: feature map is not "identity"), ``chunk`` (default 64).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hetnet.attention import projections
from hetnet.config import AttentionConfig

init = projections.init
axes = projections.axes

FEATURE_MAPS = {
    "elu": lambda x: jax.nn.elu(x) + 1.0,
    "relu": jax.nn.relu,
    "identity": lambda x: x,
}
EPS = 1e-6


def _chunked_causal(q, k, v, real, normalize: bool, chunk: int):
    """q: [b, n, h, g, d] (g query heads per kv head); k: [b, n, h, d]; v: [b, n, h, e]; real: [b, n] float
    -> [b, n, h, g, e], by a scan over chunks. The running state is per kv head: K/V are never repeated."""
    b, n, h, g, d = q.shape
    pad = (-n) % chunk
    if pad:
        widths = lambda x: [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)  # noqa: E731
        q, k, v, real = (jnp.pad(x, widths(x)) for x in (q, k, v, real))
    m = (n + pad) // chunk
    split = lambda x: jnp.moveaxis(x.reshape(b, m, chunk, *x.shape[2:]), 1, 0)  # noqa: E731
    qs, ks, vs, rs = split(q), split(k), split(v), split(real)
    tril = jnp.tril(jnp.ones((chunk, chunk), q.dtype))

    def body(carry, xs):
        kv_state, k_state, count = carry  # [b, h, d, e], [b, h, d], [b]
        qc, kc, vc, rc = xs
        kc = kc * rc[..., None, None]
        scores = jnp.einsum("bihgd,bjhd->bhgij", qc, kc) * tril[None, None, None]
        intra = jnp.einsum("bhgij,bjhe->bihge", scores, vc)
        inter = jnp.einsum("bihgd,bhde->bihge", qc, kv_state)
        counts = count[:, None] + jnp.cumsum(rc, axis=1)  # attended real positions, [b, chunk]
        if normalize:
            z = jnp.sum(scores, axis=-1).transpose(0, 3, 1, 2) + jnp.einsum("bihgd,bhd->bihg", qc, k_state)
        else:
            z = jnp.broadcast_to(counts[:, :, None, None], qc.shape[:4])
        out = (intra + inter) / (z[..., None] + EPS if normalize else jnp.maximum(z, 1.0)[..., None])
        kv_state = kv_state + jnp.einsum("bjhd,bjhe->bhde", kc, vc)
        k_state = k_state + jnp.sum(kc, axis=1).astype(k_state.dtype)
        return (kv_state, k_state, counts[:, -1]), out

    init_carry = (
        jnp.zeros((b, h, d, v.shape[-1]), q.dtype),
        jnp.zeros((b, h, d), q.dtype),
        jnp.zeros((b,), q.dtype),
    )
    _, outs = jax.lax.scan(body, init_carry, (qs, ks, vs, rs))
    return jnp.moveaxis(outs, 0, 1).reshape(b, m * chunk, h, g, -1)[:, :n]


def _global(q, k, v, real, normalize: bool):
    """q: [b, n, h, g, d]; k: [b, n, h, d]; v: [b, n, h, e]; real: [b, n] -> [b, n, h, g, e]."""
    k = k * real[..., None, None]
    kv = jnp.einsum("bjhd,bjhe->bhde", k, v)
    out = jnp.einsum("bihgd,bhde->bihge", q, kv)
    if normalize:
        z = jnp.einsum("bihgd,bhd->bihg", q, jnp.sum(k, axis=1))
        return out / (z[..., None] + EPS)
    count = jnp.maximum(jnp.sum(real, axis=1), 1.0)
    return out / count[:, None, None, None, None]


def apply(params, x: jax.Array, cfg: AttentionConfig, *, padding_mask: jax.Array | None = None, carry=None):
    """Returns the attention output ``y``; ``carry`` is unused (this variant reads nothing from other layers).

    x: [batch, seq, d_model]; padding_mask: [batch, seq] bool or None (keys marked False are ignored);
    y: [batch, seq, d_model].
    """
    projections.check_padding_mask(padding_mask, x)
    fmap, normalize, chunk = cfg.options.feature_map, cfg.options.normalized, cfg.options.chunk
    q, k, v = projections.project_qkv(params, x, cfg)
    phi = FEATURE_MAPS[fmap]
    q, k = phi(q), phi(k)
    # Query head n = k * q_per_kv + g reads kv head k: a group axis, not K/V repeated per query head.
    b, n = q.shape[:2]
    q = q.reshape(b, n, cfg.kv_heads, cfg.q_per_kv, q.shape[-1])
    real = jnp.ones(x.shape[:2], q.dtype) if padding_mask is None else padding_mask.astype(q.dtype)
    if cfg.causal:
        o = _chunked_causal(q, k, v, real, normalize, chunk)
    else:
        o = _global(q, k, v, real, normalize)
    return projections.project_out(params, o.reshape(b, n, cfg.num_heads, o.shape[-1]))
