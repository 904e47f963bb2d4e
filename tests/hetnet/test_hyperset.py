"""Hyper-SET: steps are energy gradients, energies fall, depth is recurrent, the causal variant is causal."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hetnet import hyperset, symmetry
from hetnet.hyperset import HyperSET
from hetnet.config import TransformerConfig
from hetnet.models import TransformerLM
from tests.hetnet import reference

CFG = TransformerConfig(vocab_size=11, d_model=8, num_heads=2, d_ff=6, num_layers=3, max_len=7, block="hyperset",
                        causal=False)


def orthonormal_layer(key, cfg):
    """Hyper-SET params whose subspaces are orthonormal columns splitting R^d and whose dictionary is orthonormal."""
    params = HyperSET(cfg).init(key)
    heads, p, atoms = hyperset.sizes(cfg)
    basis, _ = jnp.linalg.qr(jax.random.normal(jax.random.fold_in(key, 1), (cfg.d_model, cfg.d_model)))
    params["subspaces"] = basis.reshape(cfg.d_model, heads, p)
    params["dictionary"] = basis[:, :atoms] if atoms <= cfg.d_model else params["dictionary"]
    return params


def random_step_net(params, key):
    """Returns params with a non-zero step-size network, so the layer is not the identity."""
    keys = jax.random.split(key, 2)
    return {**params, "step_out": 0.1 * jax.random.normal(keys[0], params["step_out"].shape),
            "step_out_bias": 0.1 * jax.random.normal(keys[1], params["step_out_bias"].shape)}


def on_head_spheres(key, params, batch=2, seq=5):
    """Returns tokens x with every W_h^T x on the sphere of radius sqrt(p) (W orthonormal)."""
    heads, p = params["subspaces"].shape[1:]
    z = hyperset.sphere(jax.random.normal(key, (batch, seq, heads, p)))
    return jnp.einsum("bshp,dhp->bsd", z, params["subspaces"])


def test_attention_step_is_the_negative_energy_gradient():
    params = orthonormal_layer(jax.random.key(0), CFG)
    x = on_head_spheres(jax.random.key(1), params)
    normalized = hyperset.attention_energy(params, x)
    projected = hyperset.attention_energy(params, x, normalize=False)
    np.testing.assert_allclose(normalized, projected, rtol=1e-5)  # the sphere constraint holds at x
    grad = jax.jit(jax.grad(lambda x: jnp.sum(hyperset.attention_energy(params, x, normalize=False))))(x)
    alpha = 0.05 * jax.random.uniform(jax.random.key(2), x.shape)
    step = -alpha * jax.jit(lambda x: hyperset.attention_update(params, x, causal=False))(x)
    np.testing.assert_allclose(step, -alpha * grad, rtol=1e-4, atol=1e-6)


def test_feedforward_step_is_the_negative_energy_gradient():
    params = HyperSET(CFG).init(jax.random.key(0))
    u = jax.random.normal(jax.random.key(1), (2, 5, CFG.d_model))
    proj = u @ params["dictionary"]
    # Scale each token so that D^T x lies on the sphere of radius sqrt(M).
    x = u * jax.lax.rsqrt(jnp.mean(jnp.square(proj), axis=-1, keepdims=True))
    np.testing.assert_allclose(hyperset.feedforward_energy(params, x),
                               hyperset.feedforward_energy(params, x, normalize=False), rtol=1e-5)
    grad = jax.grad(lambda x: jnp.sum(hyperset.feedforward_energy(params, x, normalize=False)))(x)
    gamma = 0.05 * jax.random.uniform(jax.random.key(2), x.shape)
    np.testing.assert_allclose(gamma * hyperset.feedforward_update(params, x), -gamma * grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("term", ["attention", "feedforward"])
def test_energy_falls_monotonically_under_small_fixed_steps(term):
    params = orthonormal_layer(jax.random.key(0), CFG)
    x = jax.random.normal(jax.random.key(1), (2, 6, CFG.d_model))
    energy = {"attention": hyperset.attention_energy, "feedforward": hyperset.feedforward_energy}[term]
    update = {"attention": lambda x: -hyperset.attention_update(params, x, causal=False),
              "feedforward": lambda x: hyperset.feedforward_update(params, x)}[term]

    def run(x):
        def one(x, _):
            x = x + 0.005 * update(x)
            return x, energy(params, x)
        return jax.lax.scan(one, x, None, length=40)[1]

    trace = np.concatenate([np.asarray(energy(params, x))[None], np.asarray(jax.jit(run)(x))])
    assert np.all(np.diff(trace, axis=0) <= 1e-4), trace
    assert np.all(trace[-1] < trace[0] - 1e-2)


def test_iterations_start_as_the_identity_and_record_energies():
    params = HyperSET(CFG).init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, CFG.d_model))
    y, energies = jax.jit(lambda p, x: HyperSET(CFG).iterate(p, x, record_energies=True))(params, x)
    np.testing.assert_array_equal(y, x)
    assert energies["attention"].shape == energies["feedforward"].shape == (CFG.num_layers + 1, 2)


def test_params_do_not_depend_on_depth_and_run_deeper():
    shallow = TransformerLM(CFG).init(jax.random.key(0))
    deep_cfg = dataclasses.replace(CFG, num_layers=2 * CFG.num_layers)
    deep = TransformerLM(deep_cfg).init(jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, shallow, deep)
    params = {**shallow, "hyperset": random_step_net(shallow["hyperset"], jax.random.key(1))}
    tokens = jax.random.randint(jax.random.key(2), (2, 7), 0, 11)
    a = jax.jit(lambda p: TransformerLM(CFG).apply(p, tokens))(params)
    b = jax.jit(lambda p: TransformerLM(deep_cfg).apply(p, tokens))(params)
    assert np.all(np.isfinite(b)) and not np.allclose(a, b)


def test_causal_hyperset_lm_ignores_the_future():
    cfg = dataclasses.replace(CFG, causal=True)
    params = TransformerLM(cfg).init(jax.random.key(0))
    params["hyperset"] = random_step_net(params["hyperset"], jax.random.key(1))
    tokens = jax.random.randint(jax.random.key(2), (1, 7), 0, 11)
    reference.assert_ignores_the_future(jax.jit(lambda t: TransformerLM(cfg).apply(params, t)), tokens, 4, 11)


def test_labels_are_a_symmetry_of_a_trained_looking_layer():
    params, axes = TransformerLM(CFG).init(jax.random.key(0)), TransformerLM(CFG).axes
    params["hyperset"] = random_step_net(params["hyperset"], jax.random.key(1))
    tokens = jax.random.randint(jax.random.key(2), (2, 7), 0, 11)
    perms = symmetry.sample_permutations(jax.random.key(3), params, axes)
    assert {"hs_heads", "hs_dim", "hs_atoms", "hs_step"} <= set(perms)
    run = jax.jit(lambda p: TransformerLM(CFG).apply(p, tokens))
    np.testing.assert_allclose(run(symmetry.permute(params, axes, perms)), run(params), rtol=1e-4, atol=1e-5)


def test_recurrent_block_is_one_block_applied_num_layers_times():
    cfg = TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=3, max_len=7, block="recurrent")
    model = TransformerLM(cfg)
    params, axes = model.init(jax.random.key(0)), model.axes
    assert "blocks" not in params and axes["shared_block"]["ffn"]["w_in"] == ("embed", "shared/mlp")
    standard_cfg = dataclasses.replace(cfg, block="standard")
    unrolled = {k: v for k, v in params.items() if k != "shared_block"}
    unrolled["blocks"] = jax.tree.map(lambda a: jnp.stack([a] * cfg.num_layers), params["shared_block"])
    tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, 11)
    np.testing.assert_allclose(model.apply(params, tokens),
                               TransformerLM(standard_cfg).apply(unrolled, tokens), rtol=1e-5, atol=1e-6)


def test_gradients():
    cfg = dataclasses.replace(CFG, d_model=4, num_heads=2, d_ff=3, num_layers=2)
    params = HyperSET(cfg).init(jax.random.key(0))
    params = random_step_net(params, jax.random.key(1))
    x = np.random.default_rng(0).normal(size=(1, 4, 4))
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        check_grads(jax.jit(lambda p, x: HyperSET(cfg).apply(p, x)), (p64, jnp.asarray(x)), order=1,
                    modes=("rev",), atol=1e-4, rtol=1e-4)


def test_hyperset_rejects_another_attention_variant():
    with pytest.raises(ValueError, match="hyperset"):
        TransformerConfig(block="hyperset", attention="linear")
    with pytest.raises(ValueError, match="block"):
        TransformerConfig(block="deep")
