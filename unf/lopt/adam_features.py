"""Per-parameter inputs of the Adam-based learned rule: Adam-normalised moments, weights and progress.

Every feature that reads a gradient is divided by Adam's second-moment estimate and the weight by its own RMS, so
the inputs do not change when a loss or a tensor is rescaled and carry no trace of the tensor's size, which is what
lets one rule transfer across widths, depths and tasks.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

BETA1S = (0.5, 0.9, 0.99)
ADAM_BETA1 = 0.9
BETA2 = 0.999
EPS = 1e-8
CLIP = 10.0
WARMUP_TIMESCALE = 10.0
NUM_PROGRESS = 3
NUM_FEATURES = len(BETA1S) + 3 + NUM_PROGRESS


def bias_corrected(moment: jax.Array, decay: float, count: jax.Array) -> jax.Array:
    """Returns ``moment / (1 - decay ** count)``, as optax's Adam corrects it (count counts this step)."""
    return moment / (1.0 - jnp.asarray(decay, jnp.float32) ** count.astype(jnp.float32))


def factored_rms(v: jax.Array) -> jax.Array:
    """Returns the rank-one (Adafactor) estimate of ``sqrt(v)`` from its row and column means, for ``ndim >= 2``;
    ``sqrt(v)`` itself for vectors and scalars."""
    if v.ndim < 2:
        return jnp.sqrt(v)
    row = jnp.mean(v, axis=-1, keepdims=True)
    col = jnp.mean(v, axis=-2, keepdims=True)
    return jnp.sqrt(row * col / (jnp.mean(row, axis=-2, keepdims=True) + 1e-30))


def progress_features(count: jax.Array, total_steps) -> jax.Array:
    """Returns ``[NUM_PROGRESS]``: the fraction of training done, its log-scale version ``log1p(t) / log1p(T)``, and
    ``tanh(t / 10)`` (the moments' own warm-up). All are relative to the run or saturate within any run's first
    steps, so a run longer than any seen in meta-training feeds the rule no input it has not seen."""
    t = count.astype(jnp.float32)
    total = jnp.asarray(total_steps, jnp.float32)
    return jnp.stack([jnp.minimum(t / total, 1.0), jnp.minimum(jnp.log1p(t) / jnp.log1p(total), 1.0),
                      jnp.tanh(t / WARMUP_TIMESCALE)])


def leaf_features(w, g, momenta, v, count, progress) -> jax.Array:
    """Returns ``[*w.shape, NUM_FEATURES]`` for one tensor (all float32).

    momenta: one bias-uncorrected first moment per decay in :data:`BETA1S`; v: the second moment; count: this step's
    1-based count; progress: :func:`progress_features`.
    """
    denom = jnp.sqrt(bias_corrected(v, BETA2, count)) + EPS
    channels = [bias_corrected(m, b, count) / denom for m, b in zip(momenta, BETA1S)]
    adam_m = bias_corrected(momenta[BETA1S.index(ADAM_BETA1)], ADAM_BETA1, count)
    channels.append(g / denom)
    factored = factored_rms(v) / jnp.sqrt(1.0 - jnp.float32(BETA2) ** count.astype(jnp.float32))
    channels.append(adam_m / (factored + EPS))
    w_rms = jnp.sqrt(jnp.mean(jnp.square(w)) + 1e-30)
    # The weight enters relative to its own RMS only: its absolute scale falls like 1 / sqrt(fan-in) with width, and
    # a rule that could read it would key its behaviour to the meta-training widths.
    channels.append(w / (w_rms + 1e-8))
    x = jnp.clip(jnp.stack(channels, axis=-1), -CLIP, CLIP)
    tiled = jnp.broadcast_to(progress.reshape((1,) * w.ndim + (-1,)), w.shape + progress.shape)
    return jnp.concatenate([x, tiled], axis=-1)


def features(params: Any, grads: Any, momenta: tuple, v: Any, count: jax.Array, total_steps,
             stacked: Any = False) -> Any:
    """Returns a tree like ``params`` with leaves ``[*leaf_shape, NUM_FEATURES]``.

    stacked: a bool, or a tree of bools like ``params``, True for leaves that lead with a layers axis: their
    per-tensor statistics (RMS, factored moments) are taken per layer, as for separate tensors.
    """
    progress = progress_features(count, total_steps)
    f32 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), t)  # noqa: E731
    stacked = jax.tree.map(lambda _: stacked, params) if isinstance(stacked, bool) else stacked

    def one(w, g, vv, per_layer, *ms):
        fn = lambda w, g, vv, *ms: leaf_features(w, g, ms, vv, count, progress)  # noqa: E731
        return jax.vmap(fn)(w, g, vv, *ms) if per_layer else fn(w, g, vv, *ms)

    return jax.tree.map(one, f32(params), f32(grads), v, stacked, *momenta)
