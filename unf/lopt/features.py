"""Per-parameter input features of the learned optimizers.

For every parameter: the weight, the gradient and six momenta, each normalised by its RMS over the tensor and
clipped, plus eleven training-progress features ``tanh(t / tau - 1)`` broadcast to every parameter: 19 channels.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MOMENTUM_DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
PROGRESS_TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)
NUM_FEATURES = 2 + len(MOMENTUM_DECAYS) + len(PROGRESS_TIMESCALES)
CLIP = 5.0


def rms_normalise(x: jax.Array, clip: float = CLIP) -> jax.Array:
    """Returns ``x`` divided by its RMS over the whole tensor, clipped to ``[-clip, clip]``."""
    rms = jnp.sqrt(jnp.mean(jnp.square(x)) + 1e-16)
    return jnp.clip(x / rms, -clip, clip)


def progress_features(step: jax.Array) -> jax.Array:
    """Returns ``[11]`` features ``tanh(step / tau - 1)`` over geometric timescales ``tau``."""
    taus = jnp.asarray(np.array(PROGRESS_TIMESCALES, np.float32))
    return jnp.tanh(jnp.asarray(step, jnp.float32) / taus - 1.0)


def parameter_features(params: Any, grads: Any, momenta: tuple, step: jax.Array) -> Any:
    """Returns a tree like ``params`` whose leaves are ``[*leaf_shape, 19]`` features.

    momenta: one tree like ``params`` per decay in :data:`MOMENTUM_DECAYS`.
    """
    progress = progress_features(step)

    def one(w, g, *ms):
        per_param = [rms_normalise(v) for v in (w, g, *ms)]
        tiled = jnp.broadcast_to(progress.reshape((1,) * w.ndim + (-1,)), w.shape + progress.shape)
        return jnp.concatenate([jnp.stack(per_param, axis=-1), tiled], axis=-1)

    return jax.tree.map(one, params, grads, *momenta)
