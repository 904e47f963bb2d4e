"""Every hetnet layer against a slow float64 reference, with and without masks, jitted and not; gradients checked."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hetnet import Attention, Block, FeedForward, Norm
from hetnet.config import AttentionConfig, FeedForwardConfig, NormConfig, TransformerConfig
from hetnet.models import TransformerLM
from tests.hetnet import reference

JIT = pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])


def maybe_jit(fn, use_jit):
    return jax.jit(fn) if use_jit else fn


def random_padding_mask(key, batch, seq):
    """A [batch, seq] mask whose first token is always real, so every query has a key to attend to."""
    mask = jax.random.bernoulli(key, 0.7, (batch, seq))
    return mask.at[:, 0].set(True)


@JIT
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_norm_matches_reference(kind, use_jit):
    cfg = NormConfig(8, kind)
    params = Norm(cfg).init(jax.random.key(0))
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(1), p.shape), params)
    x = jax.random.normal(jax.random.key(2), (2, 5, 8)) * 3 + 1
    got = maybe_jit(Norm(cfg).apply, use_jit)(params, x)
    np.testing.assert_allclose(got, reference.norm(params, x, kind, cfg.eps), rtol=2e-5, atol=2e-5)


@JIT
@pytest.mark.parametrize("kind", ["gelu", "relu", "swiglu"])
def test_feedforward_matches_reference(kind, use_jit):
    cfg = FeedForwardConfig(8, 16, kind)
    params = FeedForward(cfg).init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    got = maybe_jit(FeedForward(cfg).apply, use_jit)(params, x)
    np.testing.assert_allclose(got, reference.feedforward(params, x, kind), rtol=1e-4, atol=1e-5)


ATTENTION_CASES = {
    "mha-causal": dict(num_heads=2, causal=True),
    "mha-bidirectional": dict(num_heads=2, causal=False),
    "gqa-causal": dict(num_heads=4, num_kv_heads=2, causal=True),
    "mqa-bidirectional": dict(num_heads=4, num_kv_heads=1, causal=False),
}


@JIT
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "padmask"])
@pytest.mark.parametrize("case", ATTENTION_CASES)
def test_softmax_attention_matches_reference(case, masked, use_jit):
    cfg = AttentionConfig(d_model=8, **ATTENTION_CASES[case])
    layer = Attention(cfg)
    params = layer.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 6, 8))
    mask = random_padding_mask(jax.random.key(2), 2, 6) if masked else None
    got = maybe_jit(lambda p, x, m: layer.apply(p, x, padding_mask=m), use_jit)(params, x, mask)
    want = reference.softmax_attention(params, x, causal=cfg.causal, padding_mask=mask)
    if masked and not cfg.causal:
        # Padded queries attend like any other query; only real positions are compared, as the docstring promises.
        got, want = np.where(mask[..., None], got, 0), np.where(mask[..., None], want, 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@JIT
@pytest.mark.parametrize("norm,ffn", [("rms", "gelu"), ("layer", "swiglu")])
def test_block_matches_reference(norm, ffn, use_jit):
    cfg = TransformerConfig(d_model=8, num_heads=2, num_kv_heads=1, d_ff=12, norm=norm, ffn=ffn)
    params = Block(cfg).init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    mask = random_padding_mask(jax.random.key(2), 2, 5)
    got = maybe_jit(lambda p, x, m: Block(cfg).apply(p, x, padding_mask=m), use_jit)(params, x, mask)
    np.testing.assert_allclose(got, reference.block(params, x, cfg, mask), rtol=1e-4, atol=1e-5)


def test_transformer_lm_matches_reference():
    cfg = TransformerConfig(vocab_size=11, d_model=8, num_heads=2, d_ff=16, num_layers=2, max_len=8)
    model = TransformerLM(cfg)
    params = model.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, cfg.vocab_size)
    got = jax.jit(model.apply)(params, tokens)
    np.testing.assert_allclose(got, reference.transformer_lm(params, tokens, cfg), rtol=1e-4, atol=1e-5)


def test_causal_lm_ignores_future_tokens():
    cfg = TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=2, max_len=8)
    model = TransformerLM(cfg)
    params = model.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (1, 8), 0, cfg.vocab_size)
    changed = tokens.at[0, 5].set((tokens[0, 5] + 1) % cfg.vocab_size)
    a, b = model.apply(params, tokens), model.apply(params, changed)
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a[:, 5:], b[:, 5:])


def _grad_check(fn, params, x, tol=1e-5):
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
        check_grads(fn, (params64, jnp.asarray(x, jnp.float64)), order=1, modes=("rev",), atol=tol, rtol=tol)


# jax.nn.dot_product_attention takes its softmax in float32 even for float64 inputs (forward error ~1e-7), which
# finite differences with step 1e-3 amplify to ~1e-4; a wrong gradient is off by far more.
ATTENTION_GRAD_TOL = 2e-3


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_norm_gradients(kind):
    cfg = NormConfig(6, kind)
    _grad_check(Norm(cfg).apply, Norm(cfg).init(jax.random.key(0)), np.random.default_rng(0).normal(size=(2, 3, 6)))


@pytest.mark.parametrize("kind", ["gelu", "swiglu"])
def test_feedforward_gradients(kind):
    cfg = FeedForwardConfig(6, 10, kind)
    _grad_check(FeedForward(cfg).apply, FeedForward(cfg).init(jax.random.key(0)), np.random.default_rng(0).normal(size=(2, 3, 6)))


@pytest.mark.parametrize("case", ["gqa-causal", "mha-bidirectional"])
def test_softmax_attention_gradients(case):
    cfg = AttentionConfig(d_model=8, **ATTENTION_CASES[case])
    layer = Attention(cfg)
    mask = np.array([[True, True, False, True], [True, True, True, True]])
    fn = lambda p, x: layer.apply(p, x, padding_mask=mask)  # noqa: E731
    _grad_check(fn, layer.init(jax.random.key(0)), np.random.default_rng(0).normal(size=(2, 4, 8)), ATTENTION_GRAD_TOL)


def test_block_gradients():
    cfg = TransformerConfig(d_model=8, num_heads=2, d_ff=12, norm="layer", ffn="swiglu")
    x = np.random.default_rng(0).normal(size=(1, 4, 8))
    _grad_check(Block(cfg).apply, Block(cfg).init(jax.random.key(0)), x, ATTENTION_GRAD_TOL)


@pytest.mark.parametrize("block", ["standard", "recurrent", "hyperset"])
def test_models_are_bound_and_static(block):
    """jit, eval_shape and vmap take the model's methods as they are; axes come from the config with no arrays."""
    cfg = TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=3, max_len=8, block=block)
    model = TransformerLM(cfg)
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(shapes))
    assert jax.tree.structure(shapes) == jax.tree.structure(model.axes, is_leaf=lambda a: isinstance(a, tuple))
    assert hash(model) == hash(TransformerLM(cfg)) and model == TransformerLM(cfg)
    keys = jax.random.split(jax.random.key(0), 2)
    params = jax.vmap(model.init)(keys)
    # init compiles itself when called with a concrete key and traces inline otherwise: the same draws either way.
    chex.assert_trees_all_close(model.init(keys[1]), jax.tree.map(lambda a: a[1], params), rtol=1e-6, atol=1e-7)
    tokens = jax.random.randint(jax.random.key(1), (2, 1, 5), 0, cfg.vocab_size)
    logits = jax.jit(jax.vmap(model.apply))(params, tokens)
    assert logits.shape == (2, 1, 5, cfg.vocab_size)
    one = jax.tree.map(lambda a: a[0], params)
    np.testing.assert_allclose(logits[0], model.apply(one, tokens[0]), rtol=1e-5, atol=1e-6)


def test_stacked_blocks_match_a_loop_over_blocks_under_every_remat_policy():
    """The scanned stack equals applying each block in turn; remat changes memory, not values or gradients."""
    cfg = TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=3, max_len=8)
    model = TransformerLM(cfg)
    params = model.init(jax.random.key(0))
    assert params["blocks"]["ffn"]["w_in"].shape == (3, 8, 32)
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, cfg.vocab_size)
    x = model.embed(params, tokens) + params["positions"][None, :6]
    for i in range(3):
        x = Block(cfg).apply(jax.tree.map(lambda a, i=i: a[i], params["blocks"]), x)
    want = Norm(cfg.norm_config).apply(params["final_norm"], x) @ params["unembed"]
    np.testing.assert_allclose(model.apply(params, tokens), want, rtol=1e-5, atol=1e-5)
    batch = {"tokens": jax.random.randint(jax.random.key(2), (2, 7), 0, cfg.vocab_size)}
    grads = {policy: jax.grad(TransformerLM(dataclasses.replace(cfg, remat=policy)).loss)(params, batch)
             for policy in ("none", "dots", "full")}
    for policy in ("dots", "full"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads["none"], grads[policy])


def test_rotary_positions_make_query_key_products_depend_only_on_the_offset():
    from hetnet import embedding

    q, k = jax.random.normal(jax.random.key(0), (2, 8))
    seq = 12
    qs = embedding.rotate(jnp.broadcast_to(q, (1, seq, 1, 8)), 10000.0)[0, :, 0]
    ks = embedding.rotate(jnp.broadcast_to(k, (1, seq, 1, 8)), 10000.0)[0, :, 0]
    products = qs @ ks.T  # [query position, key position]
    for offset in (0, 3, 7):
        diagonal = jnp.diagonal(products, offset=-offset)
        np.testing.assert_allclose(diagonal, diagonal[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(qs, axis=-1), jnp.linalg.norm(q), rtol=1e-5)
    assert float(jnp.abs(products[0, 0] - products[5, 0])) > 1e-3


def test_a_rotary_model_has_no_position_table_and_runs_past_max_len():
    cfg = TransformerConfig(d_model=16, num_heads=2, num_layers=1, max_len=8, positions="rope")
    model = TransformerLM(cfg)
    params = model.init(jax.random.key(0))
    assert "positions" not in params and "positions" not in model.axes
    tokens = jax.random.randint(jax.random.key(1), (1, 20), 0, 256)
    apply = jax.jit(model.apply)
    logits = apply(params, tokens)
    assert logits.shape == (1, 20, 256) and bool(jnp.all(jnp.isfinite(logits)))
    # Causal: a prefix's logits do not depend on what follows it.
    np.testing.assert_allclose(apply(params, tokens[:, :10]), logits[:, :10], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [({"positions": "absolute"}, "positions must be one of"),
                                          ({"positions": "rope", "d_model": 18, "num_heads": 2}, "head size must be even"),
                                          ({"positions": "rope", "block": "hyperset"}, "reads learned positions")])
def test_bad_position_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerConfig(**kwargs)
