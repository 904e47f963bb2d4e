"""Training loops and data shared by the benchmarks that train small models on the embedded data."""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from hetnet import data
from hetnet.train import make_train_step


def train(loss_fn: Callable, params: Any, sample_batch: Callable[[np.random.Generator], Any], steps: int, lr: float,
          desc: str, weight_decay: float = 1e-4) -> tuple[Any, float]:
    """Returns ``(params, seconds per step)`` after ``steps`` AdamW steps (global-norm clip 1, warm-up then cosine).

    ``sample_batch(rng)`` draws from a NumPy generator seeded 0. The first step compiles and is left out of the time.
    """
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, steps // 20, steps)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=weight_decay))
    step = make_train_step(loss_fn, optimizer)
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(0)
    params, opt_state, _ = step(params, opt_state, sample_batch(rng))
    start = time.perf_counter()
    for _ in tqdm(range(steps - 1), desc=desc, leave=False):
        params, opt_state, _ = step(params, opt_state, sample_batch(rng))
    jax.block_until_ready(params)
    return params, (time.perf_counter() - start) / max(steps - 1, 1)


def digit_patches(patch: int = 2):
    """Returns ``(xs [n, tokens, patch^2], ys [n], valid)``: the digits' training split as patch sequences, and the
    validation split as a batch ``{"inputs", "labels"}``."""
    train_set, valid_set = data.digits()
    valid = {"inputs": jnp.asarray(data.to_patches(valid_set.images, patch)), "labels": jnp.asarray(valid_set.labels)}
    return data.to_patches(train_set.images, patch), train_set.labels, valid


def digit_sampler(xs: np.ndarray, ys: np.ndarray, batch: int) -> Callable[[np.random.Generator], dict]:
    """Returns ``sample(rng) -> {"inputs", "labels"}``, ``batch`` examples drawn with replacement."""

    def sample(rng):
        idx = rng.integers(0, len(ys), batch)
        return {"inputs": jnp.asarray(xs[idx]), "labels": jnp.asarray(ys[idx])}

    return sample
