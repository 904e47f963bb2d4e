"""PES meta-training: the estimator agrees with autodiff, NaN pairs are dropped, resumption is exact, sharding
changes nothing."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unf import lopt, tasks
from unf.meta import pes
from unf.meta.train import MetaTrainConfig, make_step, meta_optimizer, meta_train, population_sharding
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


def test_antithetic_pes_estimates_the_true_meta_gradient():
    task, learned = quadratic_task(), lopt.SGDMomentum(alpha=0.05, g0=0.5)
    cfg = pes.PESConfig(num_particles=1024, truncation=5, horizon=100, sigma=0.01)
    meta = learned.init(jax.random.key(0))
    state = pes.init_state(jax.random.key(1), task, learned, meta, cfg)
    est, _, metrics = jax.jit(lambda k, m, s: pes.pes_step(k, m, s, task, learned, cfg))(jax.random.key(2), meta, state)

    def meta_loss(theta, params, opt_state, step, key_data):
        return pes.unroll(task, learned, theta, params, opt_state, step, key_data, cfg.truncation)[2]

    per_pair = jax.vmap(jax.grad(meta_loss), in_axes=(None, 0, 0, 0, 0))(
        meta, jax.tree.map(lambda x: x[:, 0], state.params), jax.tree.map(lambda x: x[:, 0], state.opt_state),
        state.step, state.task_key)
    true = jax.tree.map(lambda g: jnp.mean(g, axis=0), per_pair)
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(est)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(true)])
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert cosine > 0.95, (a, b)
    assert 0.7 < np.linalg.norm(a) / np.linalg.norm(b) < 1.3
    assert int(metrics["dropped"]) == 0


def test_diverged_pairs_are_dropped_counted_and_restarted():
    task, learned = quadratic_task(nan_when_positive=True), lopt.SGDMomentum()
    cfg = pes.PESConfig(num_particles=16, truncation=3, horizon=30)
    meta = learned.init(jax.random.key(0))
    state = pes.init_state(jax.random.key(1), task, learned, meta, cfg)
    bad = int(jnp.sum(state.params["w"][:, 0, 0] > 0))
    assert 0 < bad < cfg.num_pairs
    step = jax.jit(lambda k, m, s: pes.pes_step(k, m, s, task, learned, cfg))
    grad, state, metrics = step(jax.random.key(2), meta, state)
    assert int(metrics["dropped"]) == bad
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))
    assert np.isfinite(float(metrics["meta_loss"]))
    _, _, metrics2 = step(jax.random.key(3), meta, state)
    assert int(metrics2["resets"]) == bad


def small_run(**overrides):
    values = dict(steps=4, checkpoint_every=2, seed=3, pes=pes.PESConfig(num_particles=4, truncation=3, horizon=6))
    values.update(overrides)
    return MetaTrainConfig(**values)


def test_killed_run_resumes_onto_the_uninterrupted_trajectory(tmp_path):
    task, learned = tasks.mlp_digits(width=8, batch=16), lopt.SGDMomentum()
    cfg = small_run()
    straight = meta_train(learned, [task], cfg, tmp_path / "straight", progress=False)
    meta_train(learned, [task], cfg, tmp_path / "killed", progress=False, stop_after=3)  # checkpoint at 2, dies at 3
    resumed = meta_train(learned, [task], cfg, tmp_path / "killed", progress=False)
    jax.tree.map(np.testing.assert_array_equal, resumed["meta_params"], straight["meta_params"])
    jax.tree.map(np.testing.assert_array_equal, resumed["populations"], straight["populations"])
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_sharded_population_gives_the_same_meta_gradient():
    task, learned = tasks.mlp_digits(width=8, batch=16), lopt.PerParameterMLP(hidden=8)
    cfg = small_run(pes=pes.PESConfig(num_particles=8, truncation=2, horizon=10))
    sharding = population_sharding(cfg.pes.num_pairs)
    assert sharding is not None, "needs the 4 virtual devices from tests/conftest.py"
    meta = learned.init(jax.random.key(0))
    opt_state = meta_optimizer(cfg).init(meta)
    state = pes.init_state(jax.random.key(1), task, learned, meta, cfg.pes)
    key = jax.random.key(5)
    one = make_step(task, learned, cfg)(key, meta, opt_state, state)
    many = make_step(task, learned, cfg, sharding)(key, meta, opt_state, jax.device_put(state, sharding))
    assert len(many[2].step.sharding.device_set) == 4
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), one[0], many[0])
    np.testing.assert_allclose(one[3]["meta_loss"], many[3]["meta_loss"], rtol=1e-6)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="even"):
        pes.PESConfig(num_particles=3)
    with pytest.raises(ValueError, match="truncation <= horizon"):
        pes.PESConfig(truncation=10, horizon=5)
    with pytest.raises(ValueError, match="tasks must hold"):
        meta_train(lopt.SGDMomentum(), [], small_run(), "/tmp/unused")
