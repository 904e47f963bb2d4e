"""The Adam-based learned optimizers: exactly Adam at initialisation, equivariant, optax-native in full."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hetnet import TransformerConfig, TransformerLM
from unf import lopt, spec as spec_lib, tasks
from unf.lopt import schedule


def perturbed(meta_params, key, scale=0.3):
    """Meta-params moved off their initial values, so the learned correction really contributes."""
    leaves, treedef = jax.tree.flatten(meta_params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([x + scale * jax.random.normal(k, jnp.shape(x)) for k, x in zip(keys, leaves)])


def random_grads(params, seed, n):
    return [jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.key(seed + i), jnp.shape(p)), params)
            for i in range(n)]


def run(opt, params, grads_seq):
    state = opt.init(params)
    for g in grads_seq:
        updates, state = opt.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.fixture(scope="module")
def lm():
    """A two-block TransformerLM, and the one-block spec the depth-generic optimizer is built from."""
    model = TransformerLM(TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=2, max_len=6))
    params = model.init(jax.random.key(0))
    one_block = TransformerLM(TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=1, max_len=6))
    return {
        "params": params,
        "spec": spec_lib.from_hetnet(params, model.axes, io_as_groups=True),
        "one_block_spec": spec_lib.from_hetnet(one_block.init(jax.random.key(0)), one_block.axes, io_as_groups=True),
    }


@pytest.fixture(scope="module")
def mlp_task():
    return tasks.mlp_digits(width=8, batch=16)


def variants(lm):
    return {
        "equivariant": lopt.EquivariantAdam(lm["one_block_spec"], hidden=8, layer_key="blocks"),
        "per-parameter": lopt.PerParameterAdam(hidden=8, layer_key="blocks"),
    }


@pytest.mark.parametrize("name", ["equivariant", "per-parameter"])
def test_at_initialisation_it_is_exactly_adam(lm, name):
    learned = variants(lm)[name]
    opt = learned.opt_fn(learned.init_meta_params(jax.random.key(0)), total_steps=50)
    ref = optax.adam(1e-3)
    params = lm["params"]
    state, ref_state = opt.init(params), ref.init(params)
    for grads in random_grads(params, 10, 4):
        ours, state = jax.jit(opt.update)(grads, state, params)
        theirs, ref_state = jax.jit(ref.update)(grads, ref_state, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-10), ours, theirs)
        params = optax.apply_updates(params, theirs)


def test_a_user_schedule_replaces_the_learned_one(lm):
    learned = variants(lm)["per-parameter"]
    sched = optax.cosine_decay_schedule(3e-3, 10)
    opt = learned.opt_fn(learned.init_meta_params(jax.random.key(0)), total_steps=10, learning_rate=sched)
    grads = random_grads(lm["params"], 3, 5)
    ours, _ = jax.jit(lambda p, gs: run(opt, p, gs))(lm["params"], grads)
    ref, _ = jax.jit(lambda p, gs: run(optax.adam(sched), p, gs))(lm["params"], grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ours, ref)


@pytest.mark.parametrize("name", ["equivariant", "per-parameter"])
def test_update_commutes_with_random_permutations_of_the_model(lm, name):
    learned = variants(lm)[name]
    meta = perturbed(learned.init_meta_params(jax.random.key(0)), jax.random.key(1))
    opt = learned.opt_fn(meta, total_steps=20)
    spec = lm["spec"]
    grads = random_grads(lm["params"], 20, 3)
    step = jax.jit(lambda p, gs: run(opt, p, gs)[0])
    moved = step(lm["params"], grads)
    for seed in range(2):
        perms = spec.sample(jax.random.key(100 + seed))
        got = step(spec.apply(perms, lm["params"]), [spec.apply(perms, g) for g in grads])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), got, spec.apply(perms, moved))


def test_equivariant_update_on_a_plain_weight_space(mlp_task):
    learned = lopt.EquivariantAdam(mlp_task.spec, hidden=8)
    opt = learned.opt_fn(perturbed(learned.init_meta_params(jax.random.key(0)), jax.random.key(1)), total_steps=20)
    params = mlp_task.init(jax.random.key(2))
    grads = random_grads(params, 0, 2)
    step = jax.jit(lambda p, gs: run(opt, p, gs)[0])
    moved = step(params, grads)
    perms = mlp_task.spec.sample(jax.random.key(7))
    got = step(mlp_task.spec.apply(perms, params), [mlp_task.spec.apply(perms, g) for g in grads])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), got,
                 mlp_task.spec.apply(perms, moved))


def test_the_correction_reads_other_tensors(mlp_task):
    learned = lopt.EquivariantAdam(mlp_task.spec, hidden=8)
    opt = learned.opt_fn(perturbed(learned.init_meta_params(jax.random.key(0)), jax.random.key(1)), total_steps=20)
    params = mlp_task.init(jax.random.key(2))
    g = jax.tree.map(jnp.ones_like, params)
    g2 = jax.tree.map(lambda x: x, g)
    g2[0]["w"] = g2[0]["w"].at[0, 0].set(5.0)
    u1, _ = opt.update(g, opt.init(params), params)
    u2, _ = opt.update(g2, opt.init(params), params)
    assert not np.allclose(u1[1]["w"], u2[1]["w"])


# test_width_invariance and test_pretrained
def test_one_object_and_one_set_of_meta_params_serve_any_width_and_depth(lm):
    learned = variants(lm)["equivariant"]
    meta = perturbed(learned.init_meta_params(jax.random.key(0)), jax.random.key(1))
    opt = learned.opt_fn(meta, total_steps=10)
    for width, depth in ((16, 2),):  # wider and deeper than the spec's one block of width 8
        cfg = TransformerConfig(vocab_size=11, d_model=width, num_heads=2, num_layers=depth, max_len=6)
        params = TransformerLM(cfg).init(jax.random.key(1))
        updates, _ = jax.jit(opt.update)(random_grads(params, 0, 1)[0], opt.init(params), params)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))


def test_meta_params_of_another_kind_are_refused(lm, mlp_task):
    eq, pp = variants(lm)["equivariant"], variants(lm)["per-parameter"]
    with pytest.raises(ValueError, match="do not fit unf-adam"):
        eq.opt_fn(pp.init_meta_params(jax.random.key(0)), total_steps=10)
    with pytest.raises(ValueError, match="do not fit mlp-adam"):
        pp.opt_fn(eq.init_meta_params(jax.random.key(0)), total_steps=10)
    with pytest.raises(ValueError, match="do not fit unf-adam"):
        eq.opt_fn(lopt.UNFOptimizer(mlp_task.spec).init_meta_params(jax.random.key(0)), total_steps=10)
    with pytest.raises(ValueError, match="do not fit mlp-adam"):
        lopt.PerParameterAdam(hidden=16).opt_fn(pp.init_meta_params(jax.random.key(0)), total_steps=10)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_total_steps_must_be_a_positive_int(lm, bad):
    learned = variants(lm)["per-parameter"]
    with pytest.raises(ValueError, match="total_steps must be a positive int"):
        learned.opt_fn(learned.init_meta_params(jax.random.key(0)), total_steps=bad)


@pytest.mark.parametrize("bad, error", [(-1e-3, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
                                        ("1e-3", TypeError), (True, TypeError), (np.ones(2), ValueError)])
def test_a_learning_rate_that_is_not_a_rate_is_refused(lm, bad, error):
    learned = variants(lm)["per-parameter"]
    with pytest.raises(error, match="learning_rate must be None"):
        learned.opt_fn(learned.init_meta_params(jax.random.key(0)), total_steps=10, learning_rate=bad)


def test_update_on_a_model_other_than_init_saw_names_the_leaf(mlp_task):
    learned = lopt.EquivariantAdam(mlp_task.spec, hidden=8)
    opt = learned.opt_fn(learned.init_meta_params(jax.random.key(0)), total_steps=10, learning_rate=1e-3)
    params = mlp_task.init(jax.random.key(1))
    state = opt.init(params)
    wider = jax.tree.map(lambda p: jnp.concatenate([p, p], axis=-1), params)
    with pytest.raises(ValueError, match=r"update got \[0\]\['b'\] of shape"):
        opt.update(wider, state, wider)


def test_update_without_params_is_refused(lm):
    learned = variants(lm)["per-parameter"]
    opt = learned.opt_fn(learned.init_meta_params(jax.random.key(0)), total_steps=10)
    with pytest.raises(ValueError, match="reads the weights"):
        opt.update(lm["params"], opt.init(lm["params"]))


def test_a_leaf_outside_the_spec_is_named(mlp_task):
    learned = lopt.EquivariantAdam(mlp_task.spec, hidden=8)
    opt = learned.opt_fn(learned.init_meta_params(jax.random.key(0)), total_steps=10)
    params = {"other": jnp.ones((3,))}
    with pytest.raises(ValueError, match=r"extra \[\"\['other'\]\"\]"):
        opt.init(params)


def test_works_inside_chain_masked_multisteps_and_inject_hyperparams(mlp_task):
    learned = lopt.PerParameterAdam(hidden=4)
    meta = perturbed(learned.init_meta_params(jax.random.key(0)), jax.random.key(1))
    params = mlp_task.init(jax.random.key(2))
    mask = jax.tree.map(lambda p: p.ndim == 2, params)
    wrapped = {
        "chain": optax.chain(optax.clip_by_global_norm(1.0), learned.opt_fn(meta, total_steps=10)),
        "masked": optax.masked(learned.opt_fn(meta, total_steps=10), mask),
        "multisteps": optax.MultiSteps(learned.opt_fn(meta, total_steps=10), every_k_schedule=2),
        "inject": optax.inject_hyperparams(
            lambda learning_rate: learned.opt_fn(meta, total_steps=10, learning_rate=learning_rate))(learning_rate=3e-3),
    }
    grads = random_grads(params, 0, 3)
    passed_through = jax.tree.map(lambda p, *gs: p + sum(gs), params, *grads)  # what masked does to masked-out leaves
    for name, opt in wrapped.items():
        new, _ = run(opt, params, grads)
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new)), name
        assert all(np.any(a != b) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params))), name
        if name == "masked":
            for m, a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(new), jax.tree.leaves(passed_through)):
                assert np.allclose(a, b, atol=1e-6) != m


def test_equivariant_optimizer_under_masked_uses_the_subtree_spec(mlp_task):
    params = mlp_task.init(jax.random.key(0))
    mask = [{"w": True, "b": False} for _ in params]
    kept = [{"w": layer["w"]} for layer in params]
    spec = spec_lib.from_labels(kept, [{"w": a["w"]} for a in mlp_task.spec.axes_tree()])
    learned = lopt.EquivariantAdam(spec, hidden=8)
    opt = optax.masked(learned.opt_fn(perturbed(learned.init_meta_params(jax.random.key(1)), jax.random.key(2)),
                                      total_steps=10), mask)
    grads = random_grads(params, 0, 2)
    new, _ = run(opt, params, grads)
    for i, (old, layer) in enumerate(zip(params, new)):
        np.testing.assert_allclose(layer["b"], old["b"] + grads[0][i]["b"] + grads[1][i]["b"], rtol=1e-6)
        assert np.all(np.abs(layer["w"] - old["w"]) < 0.01)  # learned steps, not raw gradients
    full = lopt.EquivariantAdam(mlp_task.spec, hidden=8)
    opt = optax.masked(full.opt_fn(full.init_meta_params(jax.random.key(1)), total_steps=10), mask)
    with pytest.raises(ValueError, match="build EquivariantAdam from the spec of the sub-tree"):
        run(opt, params, random_grads(params, 0, 1))


@pytest.mark.parametrize("name", ["equivariant", "per-parameter"])
def test_bf16_params_train_in_a_scan_and_keep_their_dtype(lm, name):
    learned = variants(lm)[name]
    opt = learned.opt_fn(learned.init_meta_params(jax.random.key(0)), total_steps=4)
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), lm["params"])
    grads = jax.tree.map(lambda p: jnp.ones_like(p), params)

    def body(carry, _):
        p, s = carry
        u, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, u), s), None

    (new, state), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=4)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(new))
    assert all(m.dtype == jnp.float32 for m in jax.tree.leaves(state.second_moment))


def test_schedule_basis_interpolates_and_starts_constant():
    for x in (0.0, 0.03, 0.5, 0.97, 1.0):
        w = np.asarray(schedule.hat_basis(jnp.float32(x)))
        np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
        np.testing.assert_allclose(w @ np.array(schedule.KNOTS), x, atol=1e-6)
    meta = schedule.init(2e-3)
    np.testing.assert_allclose(schedule.learning_rate(meta, jnp.int32(37), 100), 2e-3, rtol=1e-6)
    with pytest.raises(ValueError, match="base_lr must be positive"):
        schedule.init(0.0)


def test_stacked_layers_are_updated_as_separate_tensors(lm):
    """Per-tensor statistics (weight RMS, factored moments, the update's RMS) are taken per layer: scaling layer 1's
    weights leaves layer 0's update unchanged."""
    learned = variants(lm)["per-parameter"]
    opt = learned.opt_fn(perturbed(learned.init_meta_params(jax.random.key(0)), jax.random.key(1)), total_steps=10)
    params = lm["params"]
    scaled = {**params, "blocks": jax.tree.map(lambda a: a.at[1].multiply(10.0), params["blocks"])}
    grads = random_grads(params, 10, 1)[0]
    update = jax.jit(opt.update)
    a, _ = update(grads, opt.init(params), params)
    b, _ = update(grads, opt.init(scaled), scaled)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u[0], v[0], rtol=1e-5, atol=1e-8), a["blocks"], b["blocks"])
    assert not np.allclose(a["blocks"]["ffn"]["w_in"][1], b["blocks"]["ffn"]["w_in"][1])
