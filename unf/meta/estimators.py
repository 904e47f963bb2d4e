"""Online evolution strategies over truncated inner-training unrolls: Noise-Reuse ES and Persistent ES.

Each antithetic pair of particles shares an inner run (init seed, data seed, parameter rescaling) and trains it with
meta-params ``theta + eps`` and ``theta - eps`` for ``truncation`` steps per meta-step. The two estimators differ only
in the noise:

- ``"nres"`` (Noise-Reuse ES, Li et al. 2023): ``eps`` is drawn when the inner run starts and reused for every
  truncation of that run; the estimate is ``eps (L+ - L-) / (2 sigma^2)``. Unbiased, and of lower variance than PES.
- ``"pes"`` (Persistent ES, Vicol et al. 2021): ``eps`` is drawn afresh every truncation and accumulated in ``xi``;
  the estimate is ``xi (L+ - L-) / (2 sigma^2)``.

Inner runs are staggered from the start: pair ``i``'s first run is cut after ``(i + 1) / P`` of its length, so
the population never resets together. Every new run draws a fresh seed, its length from ``horizons`` (the learned
optimizer's ``total_steps`` for that run) and, with ``rescale > 0``, multiplies every tensor by
``exp(U(-rescale, rescale))`` (the optimizer sees ``w' = w / s`` and the loss ``L(s w')``), so the rule cannot rely
on one run length or one parametrisation's scale. A pair whose losses are not finite is dropped from the estimate,
counted, and restarted.

Summed over a run, the truncations' estimates are the gradient of the run's mean loss: every truncation counts
alike, so a rule is paid as much for a fast start as for a low final loss. ``progress_power = k > 0`` weights the
truncation ending at step ``t`` of a run of ``T`` steps by ``(k + 1) (t / T)^k`` (a mean of ~1 over a run, so the
meta-learning rate keeps its meaning): the objective moves toward the loss at the end of the run, the loss a user's
run is judged by. Because the weight is a fraction of the run, runs of every length are scored alike.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hetnet.compiled import run_once
from hetnet.train import inner_step
from unf.tasks.base import Task

ESTIMATORS = ("nres", "pes")
OBJECTIVES = ("train", "valid")


def is_real_number(value) -> bool:
    """True for a real Python or NumPy scalar; a bool (a flag passed by mistake) or a string is not one."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


@dataclasses.dataclass(frozen=True)
class ESConfig:
    """estimator: ``"nres"`` or ``"pes"``; num_particles: inner runs (even: antithetic pairs); truncation: inner
    steps per meta-step; horizons: the lengths a run may have, one drawn per run (each a multiple of truncation;
    the learned optimizer's ``total_steps``); sigma: perturbation std; rescale: log-range of the per-tensor
    parameter rescaling (0: none); objective: what the pairs' losses compare, ``"train"`` (the mean training loss
    over the truncation) or ``"valid"`` (the loss on a held-out batch after it, shared by the pair, so the rule is
    rewarded for what generalises rather than for fitting the batches it sees); progress_power: how much the
    objective weights the end of a run over its start (0: the mean over the run; see the module docstring)."""

    estimator: str = "nres"
    num_particles: int = 16
    truncation: int = 10
    horizons: tuple[int, ...] = (200,)
    sigma: float = 0.01
    rescale: float = 0.0
    objective: str = "train"
    progress_power: float = 0.0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}.")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}.")
        if not isinstance(self.num_particles, int) or self.num_particles < 2 or self.num_particles % 2:
            raise ValueError(f"num_particles must be a positive even number (antithetic pairs), got {self.num_particles!r}.")
        horizons = self.horizons
        if not isinstance(horizons, tuple) or not horizons or any(
                not isinstance(h, int) or isinstance(h, bool) for h in horizons):
            raise ValueError(f"horizons must be a non-empty tuple of ints, got {horizons!r}.")
        if not isinstance(self.truncation, int) or self.truncation < 1 or any(
                h < self.truncation or h % self.truncation for h in horizons):
            raise ValueError(f"every horizon must be a positive multiple of truncation, got truncation="
                             f"{self.truncation}, horizons={horizons}.")
        if not is_real_number(self.sigma) or not 0 < self.sigma < math.inf:
            raise ValueError(f"sigma must be a finite number > 0 (the perturbation's std), got {self.sigma!r}.")
        if not is_real_number(self.rescale) or not 0 <= self.rescale < math.inf:
            raise ValueError(f"rescale must be a finite number >= 0 (0: no rescaling), got {self.rescale!r}.")
        if not is_real_number(self.progress_power) or not 0 <= self.progress_power < math.inf:
            raise ValueError(f"progress_power must be a finite number >= 0 (0: every truncation alike), got "
                             f"{self.progress_power!r}.")

    @property
    def num_pairs(self) -> int:
        return self.num_particles // 2

    @property
    def horizon(self) -> int:
        """The longest run."""
        return max(self.horizons)


class ESMetrics(NamedTuple):
    """One meta-step's scalars: ``meta_loss`` (mean over finite pairs of the pair's mean loss over the truncation,
    on the objective's data), ``train_loss`` (the same on the training batches), ``dropped`` (pairs dropped for
    NaN/inf), ``resets`` (pairs that started a fresh inner run) and, once the meta-optimizer has seen the estimate,
    ``grad_norm`` (its global norm; None from :func:`es_step` alone)."""

    meta_loss: jax.Array
    train_loss: jax.Array
    dropped: jax.Array
    resets: jax.Array
    grad_norm: jax.Array | None = None

    def record(self) -> dict[str, float]:
        """Returns the set fields as floats, for a metrics log."""
        return {k: float(v) for k, v in self._asdict().items() if v is not None}


class ESState(NamedTuple):
    """Per pair: inner params and optimizer state ``[pairs, 2, ...]``; ``noise`` like the meta-params
    ``[pairs, ...]`` (NRES: this run's perturbation; PES: the accumulated ``xi``); inner ``step``, the run's
    ``total`` length (its ``total_steps``) and the step it ``ends`` at (shorter for the staggered first runs), all
    ``[pairs]``; the run's seed as raw key data ``[pairs, key words]``; per-tensor ``scales`` like the params
    ``[pairs, ...]`` (scalars per leaf)."""

    params: Any
    opt_state: Any
    noise: Any
    step: jax.Array
    total: jax.Array
    ends: jax.Array
    task_key: jax.Array
    scales: Any


def make_opt(lopt, theta, total: jax.Array) -> optax.GradientTransformationExtraArgs:
    """Returns ``lopt``'s transformation for meta-params ``theta`` over a run of ``total`` steps."""
    return lopt.opt_fn(theta, total_steps=total)


def _scaled_loss(task: Task):
    def loss(params, scales, batch):
        return task.loss(jax.tree.map(lambda p, s: p * s.astype(p.dtype), params, scales), batch)

    return loss


def _fresh_run(task: Task, lopt, meta_params, key_data: jax.Array, cfg: ESConfig):
    key = jax.random.wrap_key_data(key_data)
    k_init, k_scale, k_total = jax.random.split(jax.random.fold_in(key, 1), 3)
    params = task.init(k_init)
    leaves, treedef = jax.tree.flatten(params)
    logs = jax.random.uniform(k_scale, (len(leaves),), jnp.float32, -cfg.rescale, cfg.rescale)
    scales = treedef.unflatten(list(jnp.exp(logs)))
    params = jax.tree.map(lambda p, s: p / s.astype(p.dtype), params, scales)
    total = jax.random.choice(k_total, jnp.asarray(cfg.horizons, jnp.int32))
    opt_state = make_opt(lopt, meta_params, total).init(params)
    pair = lambda t: jax.tree.map(lambda x: jnp.stack([x, x]), t)  # noqa: E731
    return pair(params), pair(opt_state), scales, total


def _fresh_runs(task: Task, lopt, meta_params, keys: jax.Array, cfg: ESConfig):
    """Returns :func:`_fresh_run` of every pair, ``keys: [pairs, key words]``, each pair's init traced alone.

    Vmapped, an init that factorises a matrix (Flax's LSTM cell draws its recurrent kernels orthogonal, by QR)
    becomes one batched LAPACK call that splits its batch over XLA's CPU thread pool from inside a program already
    running on that pool, and on a two-core machine the meta-step can wait on itself forever. One pair at a time
    (``lax.map``) the factorisation is never batched; an init costs little beside the unroll that follows it."""
    return jax.lax.map(lambda k: _fresh_run(task, lopt, meta_params, k, cfg), keys)


def _draw_noise(key: jax.Array, meta_params, cfg: ESConfig) -> Any:
    leaves, treedef = jax.tree.flatten(meta_params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [cfg.sigma * jax.random.normal(k, (cfg.num_pairs,) + jnp.shape(m), jnp.float32) for k, m in zip(keys, leaves)]
    )


def init_state(key: jax.Array, task: Task, lopt, meta_params, cfg: ESConfig) -> ESState:
    """Returns the initial population: fresh runs at step 0 whose first ends are staggered over their lengths.

    Computed as one program (:func:`hetnet.compiled.run_once`): eagerly, every batched draw would compile on its own.
    """
    return run_once(lambda k, m: _initial_population(k, task, lopt, m, cfg), key, meta_params)


def _initial_population(key: jax.Array, task: Task, lopt, meta_params, cfg: ESConfig) -> ESState:
    k_runs, k_noise = jax.random.split(key)
    keys = jax.random.key_data(jax.random.split(k_runs, cfg.num_pairs))
    params, opt_state, scales, total = _fresh_runs(task, lopt, meta_params, keys, cfg)
    if cfg.estimator == "nres":
        noise = _draw_noise(k_noise, meta_params, cfg)
    else:
        noise = jax.tree.map(lambda m: jnp.zeros((cfg.num_pairs,) + jnp.shape(m), jnp.float32), meta_params)
    chunks = total // cfg.truncation
    first = (jnp.arange(cfg.num_pairs) + 1) * chunks // cfg.num_pairs
    ends = jnp.maximum(first, 1).astype(jnp.int32) * cfg.truncation
    return ESState(params, opt_state, noise, jnp.zeros((cfg.num_pairs,), jnp.int32), total, ends, keys, scales)


def unroll(task: Task, lopt, theta, params, opt_state, step: jax.Array, key_data: jax.Array, length: int,
           total: jax.Array, scales: Any = None):
    """Returns ``(params, opt_state, mean training loss)`` after ``length`` inner steps with meta-params ``theta``,
    in a run of ``total`` steps. Batches are drawn from ``fold_in(run seed, inner step)``, so a particle's data
    depends only on its run; ``scales`` (per leaf, default ones) rescale the params inside the loss.
    """
    opt = make_opt(lopt, theta, total)
    data_key = jax.random.fold_in(jax.random.wrap_key_data(key_data), 2)
    if scales is None:
        scales = jax.tree.map(lambda p: jnp.ones((), jnp.float32), params)
    loss_fn = _scaled_loss(task)

    def body(carry, i):
        p, s = carry
        batch = task.sample_batch(jax.random.fold_in(data_key, step + i))
        p, s, loss, _ = inner_step(lambda q, b: loss_fn(q, scales, b), opt, p, s, batch)
        return (p, s), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), jnp.arange(length))
    return params, opt_state, jnp.mean(losses)


def _where(mask_per_pair: jax.Array, new: Any, old: Any) -> Any:
    def pick(n, o):
        m = mask_per_pair.reshape(mask_per_pair.shape + (1,) * (n.ndim - 1))
        return jnp.where(m, n, o)

    return jax.tree.map(pick, new, old)


def es_step(key: jax.Array, meta_params, state: ESState, task: Task, lopt, cfg: ESConfig):
    """Returns ``(meta_gradient, state, metrics)`` for one truncation of every pair; metrics: :class:`ESMetrics`."""
    k_reset, k_noise, k_fresh_noise = jax.random.split(key, 3)
    reset = state.step >= state.ends
    fresh_keys = jax.random.key_data(jax.random.split(k_reset, cfg.num_pairs))
    fresh_params, fresh_opt, fresh_scales, fresh_total = _fresh_runs(task, lopt, meta_params, fresh_keys, cfg)
    params = _where(reset, fresh_params, state.params)
    opt_state = _where(reset, fresh_opt, state.opt_state)
    scales = _where(reset, fresh_scales, state.scales)
    step = jnp.where(reset, 0, state.step)
    total = jnp.where(reset, fresh_total, state.total)
    ends = jnp.where(reset, fresh_total, state.ends)
    task_key = jnp.where(reset[:, None], fresh_keys, state.task_key)

    if cfg.estimator == "nres":
        noise = _where(reset, _draw_noise(k_fresh_noise, meta_params, cfg), state.noise)
        eps = weight = noise
    else:
        eps = _draw_noise(k_noise, meta_params, cfg)
        noise = jax.tree.map(jnp.add, _where(reset, jax.tree.map(jnp.zeros_like, state.noise), state.noise), eps)
        weight = noise
    signs = jnp.array([1.0, -1.0], jnp.float32)

    def particle(e, sign, p, s, st, kd, tot, sc):
        theta = jax.tree.map(lambda m, n: m + sign * n, meta_params, e)
        return unroll(task, lopt, theta, p, s, st, kd, cfg.truncation, tot, sc)

    over_signs = jax.vmap(particle, in_axes=(None, 0, 0, 0, None, None, None, None))
    over_pairs = jax.vmap(over_signs, in_axes=(0, None, 0, 0, 0, 0, 0, 0))
    new_params, new_opt, train_losses = over_pairs(eps, signs, params, opt_state, step, task_key, total, scales)
    losses = train_losses
    if cfg.objective == "valid":
        losses = _valid_losses(task, new_params, scales, task_key, step + cfg.truncation)

    finite = jnp.all(jnp.isfinite(losses), axis=1)
    valid = jnp.maximum(jnp.sum(finite), 1)
    diff = jnp.where(finite, losses[:, 0] - losses[:, 1], 0.0) * progress_weight(step + cfg.truncation, total, cfg)
    grad = jax.tree.map(lambda x: jnp.tensordot(diff, x, axes=1) / (2.0 * valid * cfg.sigma**2), weight)
    meta_loss = jnp.sum(jnp.where(finite, jnp.mean(losses, axis=1), 0.0)) / valid
    # A pair that diverged restarts at the next meta-step: pushing its step to its end triggers the reset.
    new_step = jnp.where(finite, step + cfg.truncation, ends)
    new_state = ESState(new_params, new_opt, noise, new_step, total, ends, task_key, scales)
    train_loss = jnp.sum(jnp.where(finite, jnp.mean(train_losses, axis=1), 0.0)) / valid
    metrics = ESMetrics(meta_loss, train_loss, jnp.sum(~finite), jnp.sum(reset))
    return grad, new_state, metrics


def progress_weight(end: jax.Array, total: jax.Array, cfg: ESConfig) -> jax.Array:
    """Returns the objective's weight ``(k + 1) (end / total)^k`` of truncations ending at step ``end`` of runs of
    ``total`` steps (``[pairs]`` each), ``k = cfg.progress_power``; exactly ones when ``k = 0``."""
    k = float(cfg.progress_power)
    progress = jnp.asarray(end, jnp.float32) / jnp.asarray(total, jnp.float32)
    return (k + 1.0) * progress**k


def _valid_losses(task: Task, params: Any, scales: Any, task_key: jax.Array, step: jax.Array) -> jax.Array:
    """Returns ``[pairs, 2]`` held-out losses of the pairs' params; both members of a pair see the same batch."""
    if task.sample_valid_batch is None:
        raise ValueError(f"objective='valid' needs held-out data, but task {task.label} has no sample_valid_batch.")
    loss_fn = _scaled_loss(task)

    def pair(p, sc, kd, st):
        batch = task.sample_valid_batch(jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(kd), 3), st))
        return jax.vmap(lambda q: loss_fn(q, sc, batch))(p)

    return jax.vmap(pair)(params, scales, task_key, step)
