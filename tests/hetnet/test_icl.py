"""The in-context-regression linear transformer: the paper's layer, its gradient-descent construction, its data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hetnet import icl, symmetry

CFG = icl.ICLConfig(layers=2, dim=3, context=6, heads=2)


def reference_apply(params, z, n):
    """Each layer, head by head, with explicit block matrices in float64."""
    z = np.asarray(z, np.float64).copy()
    d = z.shape[2] - 1
    m = np.diag([1.0] * n + [0.0])
    for layer in params["layers"]:
        update = np.zeros_like(z)
        for h in range(layer["P"].shape[0]):
            pbar = np.zeros((d + 1, d + 1))
            pbar[:d, :d] = layer["P"][h]
            pbar[d, d] = 1.0
            qbar = np.zeros((d + 1, d + 1))
            qbar[:d, :d] = layer["Q"][h]
            for b in range(z.shape[0]):
                update[b] += (z[b] @ qbar @ z[b].T) @ m @ (z[b] @ pbar.T) / n
        z = z + update
    return z


def test_layers_match_the_definition():
    params, _ = icl.init(jax.random.key(0), CFG)
    params = jax.tree.map(lambda p: p * 10, params)  # larger than init so the layers do something visible
    batch = icl.sample_batch(jax.random.key(1), CFG, 4)
    got = jax.jit(lambda p, z: icl.apply(p, z, CFG))(params, batch["z"])
    np.testing.assert_allclose(got, reference_apply(params, batch["z"], CFG.context), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("covariates", icl.COVARIATES)
def test_one_layer_with_p_zero_and_q_minus_eta_is_one_gradient_step(covariates):
    cfg = icl.ICLConfig(layers=1, dim=4, context=8, heads=1)
    eta = 0.7
    params = {"layers": [{"P": jnp.zeros((1, 4, 4)), "Q": -eta * jnp.eye(4)[None]}]}
    batch = icl.sample_batch(jax.random.key(2), cfg, 5, covariates)
    x, y = batch["z"][:, :-1, :-1], batch["z"][:, :-1, -1]
    w_one_step = eta * jnp.einsum("bn,bnd->bd", y, x) / cfg.context  # GD from w = 0 on (1/2n) sum (w.x - y)^2
    want = jnp.einsum("bd,bd->b", w_one_step, batch["z"][:, -1, :-1])
    np.testing.assert_allclose(icl.predict(params, batch["z"], cfg), want, rtol=1e-4, atol=1e-5)


def test_heads_are_a_symmetry():
    params, axes = icl.init(jax.random.key(0), CFG)
    z = icl.sample_batch(jax.random.key(1), CFG, 3)["z"]
    perms = symmetry.sample_permutations(jax.random.key(4), params, axes)
    np.testing.assert_allclose(icl.predict(symmetry.permute(params, axes, perms), z, CFG), icl.predict(params, z, CFG),
                               rtol=1e-5, atol=1e-6)


def test_gradients():
    params, _ = icl.init(jax.random.key(0), CFG)
    batch = icl.sample_batch(jax.random.key(1), CFG, 2)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) * 5, params)
        b64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), batch)
        check_grads(lambda p: icl.loss(p, b64, CFG), (p64,), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_covariate_distributions():
    key = jax.random.key(0)
    sphere = icl.sample_covariates(key, (4000, 5), "sphere")
    np.testing.assert_allclose(jnp.linalg.norm(sphere, axis=-1), 1.0, rtol=1e-5)
    norms = {k: np.asarray(jnp.linalg.norm(icl.sample_covariates(key, (20000, 5), k), axis=-1))
             for k in ("gaussian", "heavy")}
    kurtosis = {k: np.mean(v**4) / np.mean(v**2) ** 2 for k, v in norms.items()}
    assert kurtosis["heavy"] > 3 * kurtosis["gaussian"]
    batch = icl.sample_batch(key, CFG, 2)
    assert batch["z"].shape == (2, CFG.context + 1, CFG.dim + 1) and np.all(batch["z"][:, -1, -1] == 0)
    with pytest.raises(ValueError, match="covariates must be one of"):
        icl.sample_covariates(key, (2, 3), "cauchy")
