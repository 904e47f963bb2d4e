"""Linear attention: the chunked O(N) scan equals the quadratic definition; causal; gradients; symmetry."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hetnet import symmetry
from hetnet.attention import linear
from hetnet.config import AttentionConfig, TransformerConfig
from hetnet.models import TransformerLM
from tests.hetnet import reference


def quadratic_reference(params, x, cfg, padding_mask=None):
    """Scores over the full [seq, seq] matrix, head by head, with explicit loops."""
    fmap, normalize = cfg.options.feature_map, cfg.options.normalized
    phi = {"elu": lambda z: np.where(z > 0, z + 1.0, np.exp(z)), "relu": lambda z: np.maximum(z, 0.0),
           "identity": lambda z: z}[fmap]
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = np.asarray(x, np.float64)
    b_size, n, _ = x.shape
    kv_heads, q_per_kv = p["out"].shape[:2]
    out = np.zeros_like(x)
    for b in range(b_size):
        for kv in range(kv_heads):
            k = phi(x[b] @ p["key"][:, kv])
            v = x[b] @ p["value"][:, kv]
            for g in range(q_per_kv):
                q = phi(x[b] @ p["query"][:, kv, g])
                o = np.zeros((n, v.shape[1]))
                for i in range(n):
                    js = [j for j in range(n) if (not cfg.causal or j <= i)
                          and (padding_mask is None or padding_mask[b, j])]
                    s = np.array([q[i] @ k[j] for j in js])
                    z = s.sum() + linear.EPS if normalize else max(len(js), 1)
                    o[i] = (s[:, None] * v[js]).sum(axis=0) / z if js else 0.0
                out[b] += o @ p["out"][kv, g]
    return out


CASES = {
    "causal-elu-chunk3": dict(causal=True, options=(("chunk", 3),)),
    "causal-identity-mean": dict(causal=True, options=(("feature_map", "identity"), ("chunk", 4))),
    "causal-relu-gqa": dict(causal=True, num_heads=4, num_kv_heads=2, options=(("feature_map", "relu"), ("chunk", 2))),
    "bidirectional-elu": dict(causal=False),
    "bidirectional-identity": dict(causal=False, options=(("feature_map", "identity"),)),
}


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "padmask"])
@pytest.mark.parametrize("case", CASES)
def test_chunked_scan_matches_quadratic_definition(case, masked):
    settings = {"num_heads": 2, **CASES[case]}
    cfg = AttentionConfig(variant="linear", d_model=8, **settings)
    params = linear.init(jax.random.key(0), cfg)
    x = jax.random.normal(jax.random.key(1), (2, 7, 8))
    mask = None
    if masked:
        mask = np.array([[True] * 7, [True, True, False, True, True, False, True]])
    got = jax.jit(lambda p, x, m: linear.apply(p, x, cfg, padding_mask=m))(params, x, mask)
    np.testing.assert_allclose(got, quadratic_reference(params, x, cfg, mask), rtol=2e-4, atol=2e-5)


def test_result_does_not_depend_on_chunk_size():
    x = jax.random.normal(jax.random.key(1), (1, 10, 8))
    outs = []
    for chunk in (1, 3, 10, 16):
        cfg = AttentionConfig(variant="linear", d_model=8, num_heads=2, options=(("chunk", chunk),))
        params = linear.init(jax.random.key(0), cfg)
        outs.append(linear.apply(params, x, cfg))
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-4, atol=1e-5)


def test_causal_lm_with_linear_attention_ignores_the_future():
    cfg = TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=2, max_len=9, attention="linear",
                            attention_options=(("chunk", 4),))
    model = TransformerLM(cfg)
    params, axes = model.init(jax.random.key(0)), model.axes
    tokens = jax.random.randint(jax.random.key(1), (1, 9), 0, 11)
    reference.assert_ignores_the_future(jax.jit(lambda t: model.apply(params, t)), tokens, 6, 11)
    a = model.apply(params, tokens)
    perms = symmetry.sample_permutations(jax.random.key(2), params, axes)
    np.testing.assert_allclose(model.apply(symmetry.permute(params, axes, perms), tokens), a,
                               rtol=1e-4, atol=1e-5)


def test_gradients():
    cfg = AttentionConfig(variant="linear", d_model=6, num_heads=2, options=(("chunk", 2),))
    params = linear.init(jax.random.key(0), cfg)
    x = np.random.default_rng(0).normal(size=(1, 5, 6))
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        check_grads(lambda p, x: linear.apply(p, x, cfg), (p64, jnp.asarray(x)), order=1, modes=("rev",),
                    atol=1e-5, rtol=1e-5)


def test_bad_options_are_named():
    for options, match in [((("feature_map", "tanh"),), "feature_map must be one of"), ((("chunk", 0),), "chunk")]:
        with pytest.raises(ValueError, match=match):  # refused when the config is built
            dataclasses.replace(AttentionConfig(variant="linear", d_model=8, num_heads=2), options=options)
