"""Robust sparse attention: dense when every block is selected, causal, no N x N intermediate, gradients, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from hetnet.attention import projections, softmax, sparse
from hetnet.config import AttentionConfig, TransformerConfig
from hetnet.models import TransformerLM
from tests.hetnet import reference

CASES = {
    "causal-block4": dict(causal=True, options=(("block", 4), ("top_k", 8))),
    "causal-gqa-block3-nowindow": dict(causal=True, num_heads=4, num_kv_heads=2,
                                       options=(("block", 3), ("top_k", 8), ("window", 0))),
    "bidirectional-block4": dict(causal=False, options=(("block", 4), ("top_k", 8))),
    "causal-per-query": dict(causal=True, options=(("block", 4), ("top_k", 8), ("query_group", 1))),
    "gqa-query-pairs": dict(num_kv_heads=1, causal=True, options=(("block", 4), ("top_k", 8), ("query_group", 2))),
    "bidirectional-window-covers-all": dict(causal=False, options=(("block", 5), ("top_k", 0), ("window", 3))),
}



def dense(cfg: AttentionConfig) -> AttentionConfig:
    """The softmax attention config with ``cfg``'s projections."""
    return dataclasses.replace(cfg, variant="softmax", options=())

@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "padmask"])
@pytest.mark.parametrize("case", CASES)
def test_equals_dense_attention_when_every_block_is_selected(case, masked):
    cfg = AttentionConfig(variant="sparse", d_model=8, **{"num_heads": 2, **CASES[case]})
    params = sparse.init(jax.random.key(0), cfg)
    x = jax.random.normal(jax.random.key(1), (2, 13, 8))  # 13 is no multiple of the block: the tail is padded
    mask = jnp.ones((2, 13), bool).at[1, 3].set(False).at[1, 10].set(False) if masked else None
    got = jax.jit(lambda p, x, m: sparse.apply(p, x, cfg, padding_mask=m))(params, x, mask)
    want = softmax.apply(params, x, dense(cfg), padding_mask=mask)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_summary_of_unselected_blocks_recovers_dropped_mass():
    # Keys within a block nearly equal: the block's mean key then stands for it almost exactly.
    base = AttentionConfig(variant="sparse", d_model=8, num_heads=2, options=(("block", 4), ("top_k", 0), ("window", 0)))
    params = sparse.init(jax.random.key(0), base)
    centers = jax.random.normal(jax.random.key(1), (1, 6, 1, 8))
    x = (centers + 0.01 * jax.random.normal(jax.random.key(2), (1, 6, 4, 8))).reshape(1, 24, 8)
    want = jax.jit(lambda p, x: softmax.apply(p, x, dense(base)))(params, x)

    def error(summary):
        cfg = dataclasses.replace(base, options=dataclasses.replace(base.options, summary=summary))
        got = jax.jit(lambda p, x: sparse.apply(p, x, cfg))(params, x)
        return float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))

    with_summary, without = error("mean"), error("none")
    assert with_summary < 0.05 < without, (with_summary, without)


@pytest.mark.parametrize("router", ["mean", "indexer"])
def test_padded_positions_do_not_steer_routing(router):
    options = (("block", 4), ("top_k", 1), ("window", 0), ("router", router))
    cfg = AttentionConfig(variant="sparse", d_model=8, num_heads=2, options=options)
    params = sparse.init(jax.random.key(0), cfg)
    x = jax.random.normal(jax.random.key(1), (1, 24, 8))
    mask = jnp.ones((1, 24), bool).at[0, 21].set(False)
    run = jax.jit(lambda x: sparse.apply(params, x, cfg, padding_mask=mask)[0, jnp.array([20, 22, 23])])
    for scale in (10.0, -10.0):  # the padded position's content changes; its block's real queries must not see it
        moved = run(x.at[0, 21].set(scale * jax.random.normal(jax.random.key(2), (8,))))
        np.testing.assert_allclose(moved, run(x), rtol=1e-5, atol=1e-6)


def test_causal_lm_with_sparse_attention_ignores_the_future():
    cfg = TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=2, max_len=16, attention="sparse",
                            attention_options=(("block", 4), ("top_k", 1)))
    model = TransformerLM(cfg)
    params = model.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (1, 16), 0, 11)
    reference.assert_ignores_the_future(jax.jit(lambda t: model.apply(params, t)), tokens, 9, 11)


def test_no_intermediate_is_sequence_by_sequence():
    n = 256
    cfg = AttentionConfig(variant="sparse", d_model=8, num_heads=2, options=(("block", 16), ("top_k", 2)))
    params = sparse.init(jax.random.key(0), cfg)
    jaxpr = jax.make_jaxpr(lambda p, x: sparse.apply(p, x, cfg))(params, jnp.zeros((1, n, 8)))
    shapes = [v.aval.shape for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars]
    assert not [s for s in shapes if sum(dim >= n for dim in s) >= 2]
    largest = max(int(np.prod(s)) for s in shapes)
    assert largest < n * n * 2 // 2, largest  # below one head's dense score matrix


def test_gradients():
    cfg = AttentionConfig(variant="sparse", d_model=6, num_heads=2, options=(("block", 2), ("top_k", 1)))
    params = sparse.init(jax.random.key(0), cfg)
    x = np.random.default_rng(0).normal(size=(1, 9, 6))
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        check_grads(jax.jit(lambda p, x: sparse.apply(p, x, cfg)), (p64, jnp.asarray(x)), order=1, modes=("rev",),
                    atol=1e-5, rtol=1e-5)


def test_bad_options_are_named():
    x = jnp.zeros((1, 4, 8))
    cases = [((("block", 0),), "block"), ((("top_k", -1),), "top_k"), ((("summary", True),), "summary"),
             ((("router", "learned"),), "router"), ((("index_dim", 8),), "index_dim"),
             ((("router", "indexer"), ("index_dim", 0)), "index_dim")]
    for options, match in cases:
        with pytest.raises(ValueError, match=match):  # refused when the config is built
            AttentionConfig(variant="sparse", d_model=8, num_heads=2, options=options)
    with pytest.raises(ValueError, match="variant='sparse'"):  # another variant's config is named
        sparse.apply(sparse.init(jax.random.key(0), AttentionConfig(variant="sparse", d_model=8, num_heads=2)), x,
                     AttentionConfig(d_model=8, num_heads=2))


def per_query_reference(q, k, v, block: int, top_k: int, scores=None):
    """Causal sparse attention with every query routing alone, the slow obvious way (one head, no summary): a query
    reads its own block, the previous one, the first, and the top_k earlier blocks that score highest: by ``scores``
    ([n, blocks]) when given, else by the query against the block's mean key."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    n, d = q.shape
    means = np.stack([k[j:j + block].mean(axis=0) for j in range(0, n, block)])
    scores = q @ means.T if scores is None else scores
    out = np.zeros_like(v)
    for i in range(n):
        own = i // block
        forced = {own, max(own - 1, 0), 0}
        candidates = [j for j in range(own) if j not in forced]
        chosen = sorted(candidates, key=lambda j: -scores[i, j])[:top_k]
        keys = [p for j in forced | set(chosen) for p in range(j * block, (j + 1) * block) if p <= i]
        logits = np.array([q[i] @ k[p] for p in keys]) / np.sqrt(d)
        w = np.exp(logits - logits.max())
        out[i] = (w / w.sum()) @ v[keys]
    return out


def test_per_query_routing_matches_a_slow_reference():
    cfg = AttentionConfig(variant="sparse", d_model=4, num_heads=1, options=(("block", 3), ("top_k", 1), ("query_group", 1),
                                                            ("summary", "none")))
    q, k, v = (jax.random.normal(jax.random.key(i), (1, 18, 1, 4)) for i in range(3))
    got = sparse.attend(q, k, v, cfg, None)[0, :, 0]
    np.testing.assert_allclose(got, per_query_reference(q[0, :, 0], k[0, :, 0], v[0, :, 0], 3, 1), rtol=1e-4, atol=1e-5)
    coarse = dataclasses.replace(cfg, options=(("block", 3), ("top_k", 1), ("summary", "none")))
    assert not np.allclose(sparse.attend(q, k, v, coarse, None)[0, :, 0], got, atol=1e-4)


def test_query_group_must_divide_the_block():
    with pytest.raises(ValueError, match="query_group must be a positive divisor of block=4"):
        AttentionConfig(variant="sparse", d_model=4, num_heads=1, options=(("block", 4), ("query_group", 3)))


INDEXED = (("block", 3), ("top_k", 1), ("window", 1), ("router", "indexer"), ("index_dim", 3))


def slow_index_scores(iq, ik, block: int):
    """The indexer's score of every query against every key block, the obvious way. iq: [n, 2, r]; ik: [n, r]."""
    iq, ik = np.asarray(iq, np.float64), np.asarray(ik, np.float64)
    blocks = [ik[j:j + block] for j in range(0, len(ik), block)]
    pooled = [(b.mean(axis=0), b.max(axis=0)) for b in blocks]
    return np.array([[(a @ mean + c @ top) / np.sqrt(2 * ik.shape[-1]) for mean, top in pooled] for a, c in iq])


def test_indexer_routing_matches_a_slow_reference():
    cfg = AttentionConfig(variant="sparse", d_model=4, num_heads=1, options=INDEXED + (("query_group", 1), ("summary", "none")))
    params = sparse.init(jax.random.key(0), cfg)
    x = jax.random.normal(jax.random.key(1), (1, 18, 4))
    q, k, v = projections.project_qkv(params, x)
    iq, ik = sparse.project_index(params, x)
    got = sparse.attend(q, k, v, cfg, None, (iq, ik))[0, :, 0]
    scores = slow_index_scores(iq[0, :, 0], ik[0, :, 0], 3)
    np.testing.assert_allclose(got, per_query_reference(q[0, :, 0], k[0, :, 0], v[0, :, 0], 3, 1, scores),
                               rtol=1e-4, atol=1e-5)
    mean_routed = dataclasses.replace(cfg, options=dataclasses.replace(cfg.options, router="mean", index_dim=None))
    assert not np.allclose(sparse.attend(q, k, v, mean_routed, None)[0, :, 0], got, atol=1e-4)


def slow_indexer_loss(q, k, iq, ik, block: int, group: int, window: int) -> float:
    """The distillation loss the obvious way, one head: q, k: [n, d]; iq: [n, 2, r]; ik: [n, r]; causal."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    n, m = len(q), -(-len(q) // block)
    logits = q @ k.T / np.sqrt(q.shape[-1]) + np.where(np.tril(np.ones((n, n))) > 0, 0, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    mass = np.stack([p[:, j * block:(j + 1) * block].sum(-1) for j in range(m)], -1)  # [n, m]
    scores = slow_index_scores(iq, ik, block)
    total, weight = 0.0, 0.0
    for start in range(0, n, group):
        rows = range(start, min(start + group, n))
        own = start // block
        routable = [j for j in range(own) if j not in {own, own - 1, 0} and j < own - window + 1 or
                    (j < own and j not in {0} and own - j > window)]
        if not routable:
            continue
        t = mass[list(rows)].mean(0)[routable]
        w = t.sum()
        s = scores[list(rows)].mean(0)[routable]
        log_p = s - np.log(np.exp(s - s.max()).sum()) - s.max()
        t = t / w
        total += w * np.sum(t * (np.log(t) - log_p))
        weight += w
    return total / weight


@pytest.mark.parametrize("group", [1, 3])
def test_indexer_loss_matches_a_slow_reference(group):
    cfg = AttentionConfig(variant="sparse", d_model=4, num_heads=1, options=INDEXED + (("query_group", group),))
    params = sparse.init(jax.random.key(0), cfg)
    x = jax.random.normal(jax.random.key(1), (1, 17, 4))
    q, k, _ = projections.project_qkv(params, x)
    iq, ik = sparse.project_index(params, x)
    want = slow_indexer_loss(q[0, :, 0], k[0, :, 0], iq[0, :, 0], ik[0, :, 0], 3, group, 1)
    np.testing.assert_allclose(float(sparse.indexer_loss(params, x, cfg)), want, rtol=1e-4)


def test_indexer_loss_ignores_padding():
    cfg = AttentionConfig(variant="sparse", d_model=8, num_heads=2, options=INDEXED)
    params = sparse.init(jax.random.key(0), cfg)
    x = jax.random.normal(jax.random.key(1), (1, 16, 8))
    mask = jnp.arange(16)[None] < 11
    loss = jax.jit(lambda x, m: sparse.indexer_loss(params, x, cfg, padding_mask=m))
    np.testing.assert_allclose(loss(x.at[:, 11:].set(7.0), mask), loss(x[:, :11], None), rtol=1e-5)


def test_indexer_loss_trains_only_the_indexer_and_goes_down():
    cfg = TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=2, max_len=24, attention="sparse",
                            attention_options=INDEXED)
    model = TransformerLM(cfg)
    params = model.init(jax.random.key(0))
    batch = {"tokens": jax.random.randint(jax.random.key(1), (2, 25), 0, 11)}
    loss_and_grad = jax.jit(jax.value_and_grad(model.aux_loss))
    first, grads = loss_and_grad(params, batch)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        name = jax.tree_util.keystr(path)
        moved = float(jnp.max(jnp.abs(g)))
        assert (moved > 0) == ("index_" in name), (name, moved)
    opt = optax.adam(3e-2)
    state = opt.init(params)
    for _ in range(30):
        _, grads = loss_and_grad(params, batch)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert float(loss_and_grad(params, batch)[0]) < 0.7 * float(first)


def test_indexer_errors_are_named():
    indexed = AttentionConfig(variant="sparse", d_model=8, num_heads=2, options=INDEXED)
    plain = AttentionConfig(variant="sparse", d_model=8, num_heads=2, options=(("block", 3),))
    x = jnp.zeros((1, 6, 8))
    with pytest.raises(ValueError, match="router"):
        sparse.indexer_loss(sparse.init(jax.random.key(0), plain), x, plain)
    with pytest.raises(ValueError, match="index_query"):
        sparse.apply(sparse.init(jax.random.key(0), plain), x, indexed)
    lm = TransformerLM(TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=1, max_len=8))
    with pytest.raises(ValueError, match="router='indexer'"):
        lm.aux_loss(lm.init(jax.random.key(0)), {"tokens": jnp.zeros((1, 8), jnp.int32)})
