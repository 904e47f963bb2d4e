"""Learned optimizers: optax drop-ins whose updates respect the weight space's symmetry."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from unf import lopt, tasks
from unf import spec as spec_lib
from unf.lopt import features

from tests.unf import optax_loop


@pytest.fixture(scope="module")
def mlp_task():
    return tasks.mlp_digits(width=8, batch=16)


def perturbed(meta_params, key, scale=0.3):
    """Meta-params moved off their initial values, so the learned term really contributes."""
    leaves, treedef = jax.tree.flatten(meta_params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([x + scale * jax.random.normal(k, jnp.shape(x)) for k, x in zip(keys, leaves)])


def run_steps(opt, params, grads_seq):
    state = opt.init(params)
    for g in grads_seq:
        updates, state = opt.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("name", ["unf", "mlp"])
def test_update_commutes_with_weight_space_permutations(mlp_task, name):
    spec = mlp_task.spec
    learned = lopt.UNFOptimizer(spec) if name == "unf" else lopt.PerParameterMLP()
    meta = perturbed(learned.init_meta_params(jax.random.key(0)), jax.random.key(1))
    meta = {**meta, "beta": jnp.float32(1.0)}
    opt = learned.opt_fn(meta)
    params = mlp_task.init(jax.random.key(2))
    grads = [jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.key(10 + i), p.shape), params) for i in range(3)]
    step = jax.jit(lambda p, gs: run_steps(opt, p, gs)[0])
    moved = step(params, grads)
    for seed in range(2):
        perms = spec.sample(jax.random.key(100 + seed))
        got = step(spec.apply(perms, params), [spec.apply(perms, g) for g in grads])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, spec.apply(perms, moved))


def test_unf_term_is_not_per_parameter(mlp_task):
    # The equivariant layer mixes information across parameters: changing one gradient entry changes other updates.
    learned = lopt.UNFOptimizer(mlp_task.spec)
    meta = {**perturbed(learned.init_meta_params(jax.random.key(0)), jax.random.key(1)), "beta": jnp.float32(1.0)}
    opt = learned.opt_fn(meta)
    params = mlp_task.init(jax.random.key(2))
    g = jax.tree.map(jnp.ones_like, params)
    g2 = jax.tree.map(lambda x: x, g)
    g2[0]["w"] = g2[0]["w"].at[0, 0].set(5.0)
    u1, _ = opt.update(g, opt.init(params), params)
    u2, _ = opt.update(g2, opt.init(params), params)
    assert not np.allclose(u1[1]["w"], u2[1]["w"])


def test_sgdm_matches_optax_sgd_with_momentum(mlp_task):
    learned = lopt.SGDMomentum(alpha=0.05, g0=0.8)
    params = mlp_task.init(jax.random.key(0))
    grads = [jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.key(i), p.shape), params) for i in range(4)]
    ours, _ = run_steps(learned.opt_fn(learned.init_meta_params(jax.random.key(0))), params, grads)
    ref, _ = run_steps(optax.sgd(0.05, momentum=0.8), params, grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ours, ref)


def test_initial_scalars_follow_the_paper():
    meta = lopt.PerParameterMLP().init_meta_params(jax.random.key(0))
    assert np.isclose(np.exp(meta["log_alpha"]), 0.1)
    assert np.isclose(jax.nn.sigmoid(meta["logit_g0"]), 0.9)
    assert np.isclose(meta["beta"], 1e-3)


def test_features_have_19_channels_and_progress_encoding():
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    f = features.parameter_features(params, params, tuple(zeros for _ in features.MOMENTUM_DECAYS), jnp.int32(10))
    assert f["w"].shape == (2, 3, 19)
    np.testing.assert_allclose(f["w"][0, 0, 8:], np.tanh(10 / np.array(features.PROGRESS_TIMESCALES) - 1), rtol=1e-6)
    w = np.arange(6.0)
    np.testing.assert_allclose(f["w"][..., 0].ravel(), np.clip(w / np.sqrt(np.mean(w**2)), -5, 5), rtol=1e-6)


def test_drop_in_for_optax_training_loop_and_state_checkpoints(mlp_task, tmp_path):
    learned = lopt.UNFOptimizer(mlp_task.spec)
    opt = learned.opt_fn(learned.init_meta_params(jax.random.key(0)))
    _, state, losses = optax_loop.train(mlp_task, opt, 30)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "state", state)
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(tmp_path / "state", jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
    assert isinstance(restored, lopt.LearnedOptState) or jax.tree.structure(restored) == jax.tree.structure(state)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.leaves(restored), jax.tree.leaves(state))


def test_unf_meta_params_transfer_to_a_wider_task_but_not_another_structure():
    narrow, wide, deep = tasks.mlp_digits(width=8), tasks.mlp_digits(width=16), tasks.mlp_digits(width=8, depth=3)
    meta = lopt.UNFOptimizer(narrow.spec).init_meta_params(jax.random.key(0))
    lopt.UNFOptimizer(wide.spec).opt_fn(meta)
    with pytest.raises(ValueError, match="does not fit this weight space"):
        lopt.UNFOptimizer(deep.spec).opt_fn(meta)


def test_paper_rule_meta_params_of_another_kind_are_refused(mlp_task):
    unf_meta = lopt.UNFOptimizer(mlp_task.spec).init_meta_params(jax.random.key(0))
    mlp_meta = lopt.PerParameterMLP().init_meta_params(jax.random.key(0))
    with pytest.raises(ValueError, match="do not fit per-parameter"):
        lopt.PerParameterMLP().opt_fn(unf_meta)
    with pytest.raises(ValueError, match="do not fit unf"):
        lopt.UNFOptimizer(mlp_task.spec).opt_fn(mlp_meta)
    with pytest.raises(ValueError, match="do not fit sgdm"):
        lopt.SGDMomentum().opt_fn(mlp_meta)


def test_a_spec_given_to_the_per_parameter_rules_is_named():
    spec = spec_lib.from_labels({"w": jnp.ones((2, 3))}, {"w": ("a", "b")})
    with pytest.raises(TypeError, match="PerParameterMLP takes no spec"):
        lopt.PerParameterMLP(spec)
    assert lopt.PerParameterAdam(spec).spec is spec  # the Adam rule reads its width factors from a spec
    with pytest.raises(TypeError, match="spec must be a WeightSpaceSpec"):
        lopt.UNFOptimizer("spec")


def test_every_rule_meets_the_learned_optimizer_contract(mlp_task):
    rules = [lopt.SGDMomentum(), lopt.PerParameterMLP(), lopt.UNFOptimizer(mlp_task.spec),
             lopt.EquivariantAdam(mlp_task.spec), lopt.PerParameterAdam(mlp_task.spec)]
    for rule in rules:
        assert isinstance(rule, lopt.LearnedOptimizer), type(rule).__name__
        meta = rule.init_meta_params(jax.random.key(0))
        assert isinstance(rule.opt_fn(meta, total_steps=10), optax.GradientTransformationExtraArgs)
    with pytest.raises(ValueError, match="learns its own step size"):
        lopt.SGDMomentum().opt_fn(lopt.SGDMomentum().init_meta_params(jax.random.key(0)), learning_rate=0.1)
