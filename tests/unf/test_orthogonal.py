"""The orthogonal base: Newton-Schulz gives a near-orthogonal matrix with the input's singular vectors; the rule
steps hidden matrices along it at Adam's per-tensor RMS, leaves every other tensor to Adam, and stays equivariant."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hetnet import TransformerConfig, TransformerLM
from unf import lopt, spec as spec_lib
from unf.lopt import adam_features as feats
from unf.lopt import orthogonal, schedule, width

from tests.unf import optax_loop


@pytest.mark.parametrize("shape", [(6, 6), (4, 12), (12, 4), (1, 7)])
def test_newton_schulz_singular_values_land_near_one_with_the_input_singular_vectors(shape):
    x = jax.random.normal(jax.random.key(0), shape)
    y = orthogonal.newton_schulz(x)
    s = np.linalg.svd(np.asarray(y), compute_uv=False)
    assert s.min() > 0.6 and s.max() < 1.25
    u, _, vt = np.linalg.svd(np.asarray(x), full_matrices=False)
    np.testing.assert_allclose(u.T @ np.asarray(y) @ vt.T, np.diag(np.diag(u.T @ np.asarray(y) @ vt.T)), atol=1e-3)


def test_orthogonalize_reads_the_matrix_off_the_axes():
    x = jax.random.normal(jax.random.key(1), (3, 5, 2, 4))  # [batch, in, out_a, out_b] once moved
    got = orthogonal.orthogonalize(x, ((1,), (2, 3)))
    for b in range(3):
        want = orthogonal.newton_schulz(x[b].reshape(5, 8)).reshape(5, 2, 4)
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def lm():
    model = TransformerLM(TransformerConfig(vocab_size=11, d_model=8, num_heads=2, num_layers=2, max_len=6))
    params = model.init(jax.random.key(0))
    spec = spec_lib.from_hetnet(params, model.axes, io_as_groups=True)
    return params, spec, lopt.EquivariantAdam(spec, hidden=8, layer_key="blocks", base="orthogonal")


def test_fresh_orthogonal_rule_is_muon_on_hidden_matrices_at_adams_rms_and_adam_elsewhere(lm):
    params, spec, learned = lm
    opt = learned.opt_fn(learned.init_meta_params(jax.random.key(0)), total_steps=10)
    adam = optax.adam(1e-3)
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(3), p.shape), params)
    ours, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    theirs, _ = adam.update(grads, adam.init(params), params)
    flat = zip(spec.leaf_names, spec.leaf_axes, jax.tree.leaves(ours), jax.tree.leaves(theirs), jax.tree.leaves(grads))
    hidden = 0
    for name, labels, u, a, g in flat:
        stacked = name.startswith("['blocks']")
        axes = width.matrix_axes(labels[1:] if stacked else labels, spec.fixed)
        if axes is None:
            np.testing.assert_allclose(u, a, rtol=1e-5, atol=1e-10, err_msg=name)
            continue
        hidden += 1
        for i in range(u.shape[0]):  # one layer at a time, as the rule sees them
            nesterov = feats.ADAM_BETA1 * (1 - feats.ADAM_BETA1) * g[i] + (1 - feats.ADAM_BETA1) * g[i]
            direction = orthogonal.orthogonalize(nesterov, axes)
            rms = lambda t: jnp.sqrt(jnp.mean(jnp.square(t)))  # noqa: E731
            np.testing.assert_allclose(u[i], -direction * rms(a[i]) / rms(direction), rtol=1e-4, atol=1e-9,
                                       err_msg=name)
    assert hidden == 6  # query, key, value, out, w_in, w_out


def test_orthogonal_rule_commutes_with_random_permutations_of_the_model(lm):
    params, spec, learned = lm
    meta = lopt.orthogonal_start(learned.init_meta_params(jax.random.key(0)))
    meta = {**meta, "output": jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(5), x.shape),
                                           meta["output"])}
    opt = learned.opt_fn(meta, total_steps=20)
    grads = [jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.key(20 + i), p.shape), params) for i in range(2)]

    step = jax.jit(functools.partial(optax_loop.apply_updates_of, opt))
    moved = step(params, grads)
    perms = spec.sample(jax.random.key(100))
    got = step(spec.apply(perms, params), [spec.apply(perms, g) for g in grads])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=5e-4, atol=1e-6), got, spec.apply(perms, moved))


def test_orthogonal_start_warms_up_then_decays_from_its_peak():
    meta = lopt.orthogonal_start({"schedule": schedule.init(1e-3), "width_exponent": jnp.zeros(len(width.ROLES))})
    lrs = [float(schedule.learning_rate(meta["schedule"], t, 1000)) for t in (0, 50, 100, 500, 999)]
    assert lrs[0] < lrs[1] and lrs[1] == pytest.approx(lopt.adam_rules.ORTHOGONAL_LR, rel=1e-5)
    assert lrs[1] > lrs[2] > lrs[3] > lrs[4]
    exponents = np.asarray(meta["width_exponent"])
    # Spectral muP: an orthogonalised step at Adam's RMS shrinks like 1 / sqrt(width); Adam's readout like 1 / width.
    assert exponents[width.ROLES.index("hidden")] == 0.5 and exponents[width.ROLES.index("output")] == 1.0


def test_an_unknown_base_is_refused():
    spec = spec_lib.from_labels({"w": jnp.ones((2, 3))}, {"w": ("a", "b")})
    with pytest.raises(ValueError, match="base must be one of"):
        lopt.EquivariantAdam(spec, base="muon")


def test_without_the_correction_the_rule_is_its_zeroed_correction(lm):
    params, spec, learned = lm
    meta = lopt.orthogonal_start(learned.init_meta_params(jax.random.key(0)))
    meta = {**meta, "output": jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(6), x.shape),
                                           meta["output"])}
    zeroed = {**meta, "output": jax.tree.map(jnp.zeros_like, meta["output"])}
    plain = dataclasses.replace(learned, correction=False)
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(7), p.shape), params)
    got = [jax.jit(o.update)(grads, o.init(params), params)[0]
           for o in (plain.opt_fn(meta, total_steps=10), learned.opt_fn(zeroed, total_steps=10))]
    # Two compiled programs: Newton-Schulz in float32 rounds them apart by ~1e-4 relative.
    for a, b in zip(jax.tree.leaves(got[0]), jax.tree.leaves(got[1])):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=3e-7)
    with pytest.raises(TypeError, match="correction must be True or False"):
        dataclasses.replace(learned, correction="off")


@pytest.mark.parametrize("shape, axes", [((32, 48), ((0,), (1,))), ((3, 48, 32), ((1,), (2,))),
                                         ((2, 16, 4, 8), ((1,), (2, 3)))])
def test_the_newton_schulz_flop_count_is_what_xla_counts_in_products(shape, axes):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    analysis = jax.jit(lambda y: orthogonal.orthogonalize(y, axes)).lower(x).compile().cost_analysis()
    counted_by_xla = (analysis[0] if isinstance(analysis, list) else analysis)["flops"]
    counted = orthogonal.orthogonalize_flops(shape, axes)
    # XLA also counts the elementwise scalings and sums, a few percent at these sizes; the products are the rest.
    assert 0.9 * counted_by_xla < counted <= counted_by_xla
