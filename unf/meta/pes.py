"""Antithetic Persistent Evolution Strategies (PES) over truncated inner-training unrolls.

Each antithetic pair of particles shares an inner task (init and data seeds) and trains it with meta-params
``theta + eps`` and ``theta - eps``; inner states persist across truncations, and each pair accumulates its
perturbations ``xi``, which removes the truncation bias of plain ES. The meta-gradient estimate is
``sum_j xi_j (L_j^+ - L_j^-) / (2 P sigma^2)`` over the ``P`` pairs whose losses are finite; a pair whose unroll
produced NaN or inf is dropped from the estimate, counted, and restarted.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from unf.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class PESConfig:
    """num_particles: inner runs (even: antithetic pairs); truncation: inner steps per meta-step; horizon: inner
    steps before an inner run restarts on a fresh task seed; sigma: perturbation std."""

    num_particles: int = 16
    truncation: int = 50
    horizon: int = 2000
    sigma: float = 0.01

    def __post_init__(self):
        if self.num_particles < 2 or self.num_particles % 2:
            raise ValueError(f"num_particles must be a positive even number (antithetic pairs), got {self.num_particles}.")
        if self.truncation < 1 or self.horizon < self.truncation:
            raise ValueError(f"need 1 <= truncation <= horizon, got truncation={self.truncation}, horizon={self.horizon}.")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}.")

    @property
    def num_pairs(self) -> int:
        return self.num_particles // 2


class PESState(NamedTuple):
    """Per pair: inner params and optimizer state ``[pairs, 2, ...]``, accumulated perturbation ``xi [pairs, ...]``,
    inner step ``[pairs]`` and the inner run's seed as raw key data ``[pairs, key words]``."""

    params: Any
    opt_state: Any
    xi: Any
    step: jax.Array
    task_key: jax.Array


def _fresh_inner(task: Task, lopt, meta_params, key_data: jax.Array):
    params = task.init(jax.random.wrap_key_data(key_data))
    opt_state = lopt.opt_fn(meta_params).init(params)
    pair = lambda t: jax.tree.map(lambda x: jnp.stack([x, x]), t)  # noqa: E731
    return pair(params), pair(opt_state)


def init_state(key: jax.Array, task: Task, lopt, meta_params, cfg: PESConfig) -> PESState:
    """Returns the initial population: ``num_pairs`` fresh inner runs at step 0 with zero accumulated noise."""
    keys = jax.random.key_data(jax.random.split(key, cfg.num_pairs))
    params, opt_state = jax.vmap(lambda k: _fresh_inner(task, lopt, meta_params, k))(keys)
    xi = jax.tree.map(lambda m: jnp.zeros((cfg.num_pairs,) + jnp.shape(m), jnp.float32), meta_params)
    return PESState(params, opt_state, xi, jnp.zeros((cfg.num_pairs,), jnp.int32), keys)


def unroll(task: Task, lopt, theta, params, opt_state, step: jax.Array, key_data: jax.Array, length: int):
    """Returns ``(params, opt_state, mean training loss)`` after ``length`` inner steps with meta-params ``theta``.

    Batches are drawn from ``fold_in(task seed, inner step)``, so a particle's data depends only on its run.
    """
    opt = lopt.opt_fn(theta)
    data_key = jax.random.wrap_key_data(key_data)

    def body(carry, i):
        p, s = carry
        batch = task.sample_batch(jax.random.fold_in(data_key, step + i))
        loss, grads = jax.value_and_grad(task.loss)(p, batch)
        updates, s = opt.update(grads, s, p, value=loss)
        return (optax.apply_updates(p, updates), s), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), jnp.arange(length))
    return params, opt_state, jnp.mean(losses)


def _where(mask_per_pair: jax.Array, new: Any, old: Any) -> Any:
    def pick(n, o):
        m = mask_per_pair.reshape(mask_per_pair.shape + (1,) * (n.ndim - 1))
        return jnp.where(m, n, o)

    return jax.tree.map(pick, new, old)


def pes_step(key: jax.Array, meta_params, state: PESState, task: Task, lopt, cfg: PESConfig):
    """Returns ``(meta_gradient, state, metrics)`` for one truncation of every pair.

    metrics: ``meta_loss`` (mean of the pairs' mean training losses over the truncation, finite pairs only),
    ``dropped`` (pairs dropped for NaN/inf), ``resets`` (pairs that started a fresh inner run).
    """
    k_reset, k_noise = jax.random.split(key)
    # Restart inner runs that would pass the horizon, on a fresh task seed.
    reset = state.step + cfg.truncation > cfg.horizon
    fresh_keys = jax.random.key_data(jax.random.split(k_reset, cfg.num_pairs))
    fresh_params, fresh_opt = jax.vmap(lambda k: _fresh_inner(task, lopt, meta_params, k))(fresh_keys)
    params = _where(reset, fresh_params, state.params)
    opt_state = _where(reset, fresh_opt, state.opt_state)
    xi = _where(reset, jax.tree.map(jnp.zeros_like, state.xi), state.xi)
    step = jnp.where(reset, 0, state.step)
    task_key = jnp.where(reset[:, None], fresh_keys, state.task_key)

    leaves, treedef = jax.tree.flatten(meta_params)
    noise_keys = jax.random.split(k_noise, len(leaves))
    eps = treedef.unflatten(
        [cfg.sigma * jax.random.normal(k, (cfg.num_pairs,) + jnp.shape(m), jnp.float32) for k, m in zip(noise_keys, leaves)]
    )
    signs = jnp.array([1.0, -1.0], jnp.float32)

    def particle(e, sign, p, s, st, kd):
        theta = jax.tree.map(lambda m, n: m + sign * n, meta_params, e)
        return unroll(task, lopt, theta, p, s, st, kd, cfg.truncation)

    over_signs = jax.vmap(particle, in_axes=(None, 0, 0, 0, None, None))
    over_pairs = jax.vmap(over_signs, in_axes=(0, None, 0, 0, 0, 0))
    new_params, new_opt, losses = over_pairs(eps, signs, params, opt_state, step, task_key)
    xi = jax.tree.map(jnp.add, xi, eps)

    finite = jnp.all(jnp.isfinite(losses), axis=1)
    valid = jnp.maximum(jnp.sum(finite), 1)
    diff = jnp.where(finite, losses[:, 0] - losses[:, 1], 0.0)
    grad = jax.tree.map(
        lambda x: jnp.tensordot(diff, x, axes=1) / (2.0 * valid * cfg.sigma**2), xi
    )
    meta_loss = jnp.sum(jnp.where(finite, jnp.mean(losses, axis=1), 0.0)) / valid
    # A pair that diverged restarts at the next meta-step: pushing its step past the horizon triggers the reset.
    new_step = jnp.where(finite, step + cfg.truncation, cfg.horizon + 1)
    new_state = PESState(new_params, new_opt, xi, new_step, task_key)
    metrics = {"meta_loss": meta_loss, "dropped": jnp.sum(~finite), "resets": jnp.sum(reset)}
    return grad, new_state, metrics
