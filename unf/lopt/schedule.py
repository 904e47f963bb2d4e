"""The learned global step size: ``log lr(t) = log base_lr + sum_k a_k hat_k(t / total_steps)``.

``hat_k`` are piecewise-linear hat functions on knots over training progress in ``[0, 1]``, so warm-up, decay and
anything between are expressible; all coefficients start at zero, which is a constant ``base_lr``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

KNOTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 1.0)


def hat_basis(progress: jax.Array) -> jax.Array:
    """Returns ``[len(KNOTS)]`` piecewise-linear interpolation weights of ``progress`` (clipped to [0, 1])."""
    knots = jnp.asarray(np.array(KNOTS, np.float32))
    x = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
    left = jnp.concatenate([knots[:1] - 1.0, knots[:-1]])
    right = jnp.concatenate([knots[1:], knots[-1:] + 1.0])
    rising = (x - left) / (knots - left)
    falling = (right - x) / (right - knots)
    return jnp.clip(jnp.minimum(rising, falling), 0.0, 1.0)


def init(base_lr: float) -> dict:
    """Returns the schedule's meta-params: ``log_lr`` (scalar) and ``knots`` (``[len(KNOTS)]`` zeros)."""
    if not base_lr > 0:
        raise ValueError(f"base_lr must be positive, got {base_lr!r}.")
    return {"log_lr": jnp.log(jnp.float32(base_lr)), "knots": jnp.zeros((len(KNOTS),), jnp.float32)}


def learning_rate(meta: dict, step: jax.Array, total_steps) -> jax.Array:
    """Returns the step size at inner step ``step`` (0-based) of a run of ``total_steps`` steps (an int, or a traced
    scalar when runs of several lengths share one compiled meta-step)."""
    progress = jnp.asarray(step, jnp.float32) / jnp.asarray(total_steps, jnp.float32)
    return jnp.exp(meta["log_lr"] + jnp.dot(meta["knots"], hat_basis(progress)))


def warmup_cosine(base_lr: float, warmup: float = 0.05, floor: float = 0.02) -> dict:
    """Returns schedule meta-params shaped like linear warm-up over the first ``warmup`` of training, then cosine
    decay, peaking at ``base_lr``; at the knots ``lr = base_lr * max(shape, floor)`` (log-space interpolation between
    them), so the shape stays expressible by, and meta-trainable from, the same knots."""
    if not 0.0 < warmup < 1.0:
        raise ValueError(f"warmup must be a fraction in (0, 1), got {warmup!r}.")
    knots = np.array(KNOTS)
    shape = np.where(knots < warmup, knots / warmup,
                     0.5 * (1.0 + np.cos(np.pi * np.clip((knots - warmup) / (1.0 - warmup), 0.0, 1.0))))
    meta = init(base_lr)
    return {**meta, "knots": jnp.asarray(np.log(np.maximum(shape, floor)), jnp.float32)}
