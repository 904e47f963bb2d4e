"""ES meta-training: NRES and PES agree with autodiff in expectation, runs are staggered, rescaling keeps the
function, NaN pairs are dropped, resumption is exact and refuses other settings, sharding changes nothing."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unf import lopt, spec as spec_lib, tasks
from unf.meta import estimators as es
from unf.meta.train import (MetaTrainConfig, make_step, meta_optimizer, meta_train, population_sharding, serving,
                             task_order)
from unf.spec import from_labels
from unf.tasks.base import Task


def quadratic_task(nan_when_positive: bool = False) -> Task:
    """Loss 0.5 * sum(a * w^2) with fixed curvatures; optionally NaN when the init's first weight is positive."""
    curv = jnp.array([0.5, 1.0, 2.0, 4.0])

    def init(key):
        return {"w": jax.random.normal(key, (4,))}

    def loss(params, batch):
        value = 0.5 * jnp.sum(curv * params["w"] ** 2) + 0.0 * batch
        if nan_when_positive:
            value = jnp.where(params["w"][0] > 0, jnp.nan, value)
        return value

    spec = from_labels(jax.eval_shape(init, jax.random.key(0)), {"w": (None,)})
    return Task("quadratic", (("nan", nan_when_positive),), init, loss, lambda key: jnp.float32(0.0), spec)


@pytest.mark.parametrize("estimator,power", [("nres", 0.0), ("pes", 0.0), ("nres", 6.0)])
def test_es_estimates_the_true_meta_gradient_of_several_truncations(estimator, power):
    # Summed over the truncations of one run, either estimator is unbiased for the gradient of the summed truncation
    # losses (weighted by (k + 1) (t / T)^k with progress_power k), each depending on theta through the whole run so
    # far: autodiff of that unroll is the oracle.
    task, learned = quadratic_task(), lopt.SGDMomentum(alpha=0.05, g0=0.5)
    cfg = es.ESConfig(estimator=estimator, num_particles=2048, truncation=3, horizons=(9,), sigma=0.01,
                      progress_power=power)
    meta = learned.init_meta_params(jax.random.key(0))
    state = es.init_state(jax.random.key(1), task, learned, meta, cfg)
    state = state._replace(ends=jnp.full_like(state.ends, cfg.horizon))
    step = jax.jit(lambda k, m, s: es.es_step(k, m, s, task, learned, cfg))
    start = state
    total = jax.tree.map(jnp.zeros_like, meta)
    for i in range(3):
        est, state, metrics = step(jax.random.key(2 + i), meta, state)
        total = jax.tree.map(jnp.add, total, est)
        assert int(metrics.dropped) == 0 and int(metrics.resets) == 0

    def run_loss(theta, params, opt_state, key_data):
        losses = []
        for i in range(3):
            params, opt_state, loss = es.unroll(task, learned, theta, params, opt_state, jnp.int32(3 * i), key_data,
                                                cfg.truncation, jnp.int32(cfg.horizon))
            losses.append((power + 1.0) * (3.0 * (i + 1) / cfg.horizon) ** power * loss)
        return sum(losses)

    per_pair = jax.vmap(jax.grad(run_loss), in_axes=(None, 0, 0, 0))(
        meta, jax.tree.map(lambda x: x[:, 0], start.params), jax.tree.map(lambda x: x[:, 0], start.opt_state),
        start.task_key)
    true = jax.tree.map(lambda g: jnp.mean(g, axis=0), per_pair)
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(total)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(true)])
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert cosine > 0.95, (a, b)
    assert 0.7 < np.linalg.norm(a) / np.linalg.norm(b) < 1.3


def test_runs_are_staggered_from_the_start():
    task, learned = quadratic_task(), lopt.SGDMomentum()
    cfg = es.ESConfig(num_particles=16, truncation=2, horizons=(16,))
    meta = learned.init_meta_params(jax.random.key(0))
    state = es.init_state(jax.random.key(1), task, learned, meta, cfg)
    assert sorted(np.asarray(state.ends).tolist()) == [2, 4, 6, 8, 10, 12, 14, 16]
    step = jax.jit(lambda k, m, s: es.es_step(k, m, s, task, learned, cfg))
    resets = []
    for i in range(16):
        _, state, metrics = step(jax.random.key(i), meta, state)
        resets.append(int(metrics.resets))
    assert max(resets) <= 2, resets  # never the whole population at once
    assert sum(resets) >= cfg.num_pairs


def test_each_run_draws_its_length_and_the_schedule_spans_it():
    task, learned = quadratic_task(), lopt.PerParameterAdam(hidden=4)
    cfg = es.ESConfig(num_particles=64, truncation=2, horizons=(4, 8, 16))
    meta = learned.init_meta_params(jax.random.key(0))
    state = es.init_state(jax.random.key(1), task, learned, meta, cfg)
    assert set(np.asarray(state.total).tolist()) == {4, 8, 16}
    assert np.all(np.asarray(state.ends) <= np.asarray(state.total))
    step = jax.jit(lambda k, m, s: es.es_step(k, m, s, task, learned, cfg))
    for i in range(8):
        _, state, _ = step(jax.random.key(i), meta, state)
        assert np.all(np.asarray(state.step) <= np.asarray(state.ends))


def test_rescaled_runs_keep_the_function_and_rescale_the_weights():
    task = tasks.mlp_digits(width=8, batch=16)
    learned = lopt.PerParameterAdam(hidden=4)
    cfg = es.ESConfig(num_particles=4, truncation=2, horizons=(4,), rescale=1.0)
    meta = learned.init_meta_params(jax.random.key(0))
    state = es.init_state(jax.random.key(1), task, learned, meta, cfg)
    batch = task.sample_batch(jax.random.key(2))
    for pair in range(cfg.num_pairs):
        seen = jax.tree.map(lambda x: x[pair, 0], state.params)
        scales = jax.tree.map(lambda x: x[pair], state.scales)
        original = task.init(jax.random.split(jax.random.fold_in(
            jax.random.wrap_key_data(state.task_key[pair]), 1))[0])
        np.testing.assert_allclose(task.loss(jax.tree.map(jnp.multiply, seen, scales), batch),
                                   task.loss(original, batch), rtol=1e-5)
        assert not np.allclose(jax.tree.leaves(scales), 1.0)


def _factorised_operands(jaxpr) -> list[tuple[int, ...]]:
    """Returns the operand shape of every matrix factorisation in ``jaxpr``, nested jaxprs included."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in {"qr", "geqrf", "householder_product", "svd", "eigh", "lu", "cholesky"}:
            shapes.append(tuple(eqn.invars[0].aval.shape))
        for inner in jax.extend.core.jaxprs_in_params(eqn.params):
            shapes.extend(_factorised_operands(inner))
    return shapes


def test_an_init_that_factorises_a_matrix_is_never_batched_in_the_meta_step():
    # Flax's LSTM cell draws its recurrent kernels orthogonal by QR. Batched over the population, that QR splits its
    # batch over XLA's CPU thread pool from inside the meta-step, which hung meta-training on a two-core CPU.
    task = tasks.lstm_lm(hidden=8, embed=4, seq=4, batch=2)
    learned = lopt.PerParameterAdam(hidden=4)
    cfg = es.ESConfig(num_particles=4, truncation=2, horizons=(4,))
    meta = learned.init_meta_params(jax.random.key(0))
    state = jax.eval_shape(lambda: es.init_state(jax.random.key(1), task, learned, meta, cfg))
    for fn in (lambda k, m, s: es.es_step(k, m, s, task, learned, cfg)[1],
               lambda k, m, s: es.init_state(k, task, learned, m, cfg)):
        shapes = _factorised_operands(jax.make_jaxpr(fn)(jax.random.key(0), meta, state).jaxpr)
        assert shapes and all(len(shape) == 2 for shape in shapes), shapes


def test_diverged_pairs_are_dropped_counted_and_restarted():
    task, learned = quadratic_task(nan_when_positive=True), lopt.SGDMomentum()
    cfg = es.ESConfig(num_particles=16, truncation=3, horizons=(30,))
    meta = learned.init_meta_params(jax.random.key(0))
    state = es.init_state(jax.random.key(1), task, learned, meta, cfg)
    bad = int(jnp.sum(state.params["w"][:, 0, 0] > 0))
    assert 0 < bad < cfg.num_pairs
    step = jax.jit(lambda k, m, s: es.es_step(k, m, s, task, learned, cfg))
    grad, state, metrics = step(jax.random.key(2), meta, state)
    assert int(metrics.dropped) == bad
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))
    assert np.isfinite(float(metrics.meta_loss))
    _, _, metrics2 = step(jax.random.key(3), meta, state)
    assert int(metrics2.resets) == bad


def small_run(**overrides):
    values = dict(steps=4, checkpoint_every=2, seed=3, es=es.ESConfig(num_particles=4, truncation=3, horizons=(6,)))
    values.update(overrides)
    return MetaTrainConfig(**values)


def test_killed_run_resumes_onto_the_uninterrupted_trajectory(tmp_path):
    task, learned = tasks.mlp_digits(width=8, batch=16), lopt.SGDMomentum()
    cfg = small_run()
    straight = meta_train(learned, [task], cfg, tmp_path / "straight", progress=False)
    meta_train(learned, [task], cfg, tmp_path / "killed", progress=False, stop_after=3)  # checkpoint at 2, dies at 3
    resumed = meta_train(learned, [task], cfg, tmp_path / "killed", progress=False)
    jax.tree.map(np.testing.assert_array_equal, resumed.meta_params, straight.meta_params)
    jax.tree.map(np.testing.assert_array_equal, resumed.populations, straight.populations)
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_one_rule_without_a_correction_meta_trains_on_several_architectures(tmp_path):
    # The transformer is trained by the rule in its own layout; the MLP, whose tree it does not know, by the same
    # rule over the MLP's labels, and both tasks move the one set of meta-params.
    transformer = tasks.transformer_lm(d_model=8, heads=2, seq=8, batch=2)
    mlp = tasks.mlp_digits(width=8, batch=8).with_spec(spec_lib.mlp)
    learned = lopt.EquivariantAdam(transformer.spec, layer_key="blocks", base="orthogonal", correction=False)
    family = [transformer, mlp]
    assert serving(learned, transformer) is learned
    assert serving(learned, mlp) == lopt.LabelRule(learned, mlp.spec)
    cfg = small_run(es=es.ESConfig(num_particles=2, truncation=2, horizons=(4,)))
    assert {task_order(cfg.seed, i, len(family)) for i in range(cfg.steps)} == {0, 1}  # both are visited
    start = learned.init_meta_params(jax.random.key(0))
    state = meta_train(learned, family, cfg, tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["task"] for r in records} == {t.label for t in family}
    assert all(np.isfinite(r["meta_loss"]) and r["grad_norm"] > 0 for r in records)
    assert not np.allclose(state.meta_params["schedule"]["knots"], start["schedule"]["knots"])
    with pytest.raises(ValueError, match="correction=False"):
        lopt.LabelRule(dataclasses.replace(learned, correction=True), mlp.spec)


def test_a_meta_step_keeps_the_decay_where_the_loss_still_reads_it():
    # The update clips a negative decay to zero, where ES sees no signal; the meta-step projects it back to zero.
    task, learned = quadratic_task(), lopt.PerParameterAdam(hidden=4)
    cfg = small_run(meta_lr=1e-3, es=es.ESConfig(num_particles=4, truncation=2, horizons=(4,)))
    meta = {**learned.init_meta_params(jax.random.key(0)), "weight_decay": jnp.float32(-0.05)}
    state = es.init_state(jax.random.key(1), task, learned, meta, cfg.es)
    step = make_step(task, learned, cfg)
    meta, _, _, _ = step(jax.random.key(2), meta, meta_optimizer(cfg).init(meta), state)
    assert float(meta["weight_decay"]) == 0.0
    assert float(lopt.LabelRule(lopt.EquivariantAdam(task.spec, correction=False), task.spec).project_meta_params(
        {"weight_decay": jnp.float32(0.02)})["weight_decay"]) == np.float32(0.02)


def test_sharded_population_gives_the_same_meta_gradient():
    task, learned = tasks.mlp_digits(width=8, batch=16), lopt.PerParameterMLP(hidden=8)
    cfg = small_run(es=es.ESConfig(num_particles=8, truncation=2, horizons=(10,)))
    sharding = population_sharding(cfg.es.num_pairs)
    assert sharding is not None, "needs the 4 virtual devices from tests/conftest.py"
    meta = learned.init_meta_params(jax.random.key(0))
    opt_state = meta_optimizer(cfg).init(meta)
    state = es.init_state(jax.random.key(1), task, learned, meta, cfg.es)
    key = jax.random.key(5)
    one = make_step(task, learned, cfg)(key, meta, opt_state, state)
    many = make_step(task, learned, cfg, sharding)(key, meta, opt_state, jax.device_put(state, sharding))
    assert len(many[2].step.sharding.device_set) == 4
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), one[0], many[0])
    np.testing.assert_allclose(one[3].meta_loss, many[3].meta_loss, rtol=1e-6)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="even"):
        es.ESConfig(num_particles=3)
    with pytest.raises(ValueError, match="positive multiple of truncation"):
        es.ESConfig(truncation=10, horizons=(5,))
    with pytest.raises(ValueError, match="positive multiple of truncation"):
        es.ESConfig(truncation=4, horizons=(10,))
    with pytest.raises(ValueError, match="estimator must be one of"):
        es.ESConfig(estimator="ppes")
    for name in ("sigma", "rescale"):
        for bad in (-1.0, float("nan"), float("inf"), "0.1", True):
            with pytest.raises(ValueError, match=f"{name} must be a finite number"):
                es.ESConfig(**{name: bad})
    for name in ("meta_lr", "clip"):
        for bad in (0.0, -1e-3, float("nan"), float("inf"), "1e-3"):
            with pytest.raises(ValueError, match=f"{name} must be a finite number > 0"):
                MetaTrainConfig(**{name: bad})
    for bad in (-1.0, float("inf"), "2", True):
        with pytest.raises(ValueError, match="progress_power must be"):
            es.ESConfig(progress_power=bad)
    with pytest.raises(ValueError, match="tasks must hold"):
        meta_train(lopt.SGDMomentum(), [], small_run(), "/tmp/unused")


def test_resuming_with_other_settings_or_a_damaged_checkpoint_is_refused_by_name(tmp_path):
    task, learned = tasks.mlp_digits(width=8, batch=16), lopt.SGDMomentum()
    meta_train(learned, [task], small_run(), tmp_path / "run", progress=False, stop_after=2)
    with pytest.raises(ValueError, match=r"es.sigma: checkpointed 0.01, now 0.02"):
        meta_train(learned, [task], small_run(es=es.ESConfig(num_particles=4, truncation=3, horizons=(6,), sigma=0.02)),
                   tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"es.horizons: checkpointed \[6\], now \[6, 12\]"):
        meta_train(learned, [task], small_run(es=es.ESConfig(num_particles=4, truncation=3, horizons=(6, 12))),
                   tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="meta_lr"):
        meta_train(learned, [task], small_run(meta_lr=0.5), tmp_path / "run", progress=False)
    for f in (tmp_path / "run" / "checkpoints" / "2").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="could not be restored") as info:
        meta_train(learned, [task], small_run(), tmp_path / "run", progress=False)
    assert len(str(info.value)) < 800 and info.value.__cause__ is None  # orbax's storage specs stay out
