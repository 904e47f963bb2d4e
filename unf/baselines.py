"""Hand-designed baselines tuned the way a careful researcher tunes them.

AdamW with linear warm-up and cosine decay to zero, its learning rate and warm-up fraction tuned on a grid; Adam with a
constant learning rate, its learning rate tuned. A grid whose best learning rate lies at an edge is extended past that
edge (by half a decade at a time) until the best value is interior, so the tuned baseline is never an artefact of
where the grid stopped. The grid steps by factors of 2 to 2.5, so the best value is not far from a grid point.
Tuning uses its own seeds, never the evaluation's.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax.numpy as jnp
import numpy as np
import optax

from unf import evaluate
from unf.lopt import width as lopt_width
from unf.spec import WeightSpaceSpec
from unf.tasks.base import Task

LEARNING_RATES = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2)
WARMUP_FRACTIONS = (0.0, 0.05, 0.15)
WEIGHT_DECAY = 1e-4
MAX_EXTENSIONS = 6
TUNING_SALT = 2


def warmup_cosine(peak: jnp.ndarray, warmup_fraction: jnp.ndarray, total_steps: int):
    """Returns a schedule: linear warm-up to ``peak`` over ``warmup_fraction * total_steps`` steps, then cosine decay
    to zero at ``total_steps``. ``peak`` and ``warmup_fraction`` may be traced (one compiled trainer serves a grid)."""

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        warm = jnp.maximum(warmup_fraction * total_steps, 1.0)
        ramp = jnp.minimum(1.0, (t + 1.0) / warm)
        progress = jnp.clip((t - warm) / jnp.maximum(total_steps - warm, 1.0), 0.0, 1.0)
        return peak * ramp * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))

    return schedule


@functools.lru_cache(maxsize=32)
def adamw_cosine(total_steps: int):
    """Returns ``make_opt(hyper)`` for AdamW + warm-up + cosine, ``hyper = [learning rate, warm-up fraction]``; one
    object per ``total_steps``, so the sweep and the final evaluation share one compiled trainer."""

    def make(hyper):
        sched = warmup_cosine(hyper[0], hyper[1], total_steps)
        return optax.with_extra_args_support(optax.adamw(sched, weight_decay=WEIGHT_DECAY))

    return make


def constant_adam(hyper):
    """``make_opt(hyper)`` for Adam with the constant learning rate ``hyper[0]``."""
    return optax.with_extra_args_support(optax.adam(hyper[0]))


@dataclasses.dataclass(frozen=True)
class Tuned:
    """The result of a sweep: the best ``hyper`` and every grid point's mean final loss (inf when it diverged)."""

    name: str
    hyper: tuple[float, ...]
    scores: dict

    @property
    def edge_free(self) -> bool:
        lrs = sorted({k[0] for k in self.scores})
        return bool(lrs[0] < self.hyper[0] < lrs[-1])


OBJECTIVES = ("train", "valid")


def _score(task: Task, make_opt, hyper, steps: int, seeds: Sequence[int], objective: str = "train") -> float:
    hyper = jnp.asarray(hyper, jnp.float32)
    if objective == "valid":
        finals = evaluate.train_valid_losses(task, make_opt, hyper, steps, seeds, salt=TUNING_SALT)[1][:, -1]
    else:
        finals = evaluate.final_loss(evaluate.train_losses(task, make_opt, hyper, steps, seeds, salt=TUNING_SALT))
    return float(np.mean(np.where(np.isfinite(finals), finals, np.inf)))


def tune(name: str, task: Task, make_opt, steps: int, seeds: Sequence[int], learning_rates: Sequence[float],
         others: Sequence[tuple[float, ...]] = ((),), objective: str = "train") -> Tuned:
    """Returns the best ``(lr, *other)`` for ``make_opt`` on ``task``, extending the learning-rate grid past an edge
    until the best learning rate is interior (at most :data:`MAX_EXTENSIONS` times). objective: ``"train"`` scores
    the final training loss, ``"valid"`` the final held-out loss."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
    lrs = sorted(learning_rates)
    scores: dict = {}
    for _ in range(MAX_EXTENSIONS + 1):
        for lr in lrs:
            for other in others:
                if (lr, *other) not in scores:
                    scores[(lr, *other)] = _score(task, make_opt, (lr, *other), steps, seeds, objective)
        best = min(scores, key=scores.get)
        # Plain floats, so a grid point reads as a number wherever the scores are written out.
        if best[0] == lrs[0]:
            lrs.insert(0, float(lrs[0] / np.sqrt(10.0)))
        elif best[0] == lrs[-1]:
            lrs.append(float(lrs[-1] * np.sqrt(10.0)))
        else:
            break
    return Tuned(name, best, scores)


def tune_adamw_cosine(task: Task, steps: int, seeds: Sequence[int], objective: str = "train",
                      learning_rates: Sequence[float] = LEARNING_RATES,
                      warmups: Sequence[float] = WARMUP_FRACTIONS) -> Tuned:
    """Returns AdamW + warm-up + cosine tuned over learning rate and warm-up fraction."""
    return tune("adamw+cosine", task, adamw_cosine(steps), steps, seeds, learning_rates, [(w,) for w in warmups],
                objective)


def tune_constant_adam(task: Task, steps: int, seeds: Sequence[int], objective: str = "train",
                       learning_rates: Sequence[float] = LEARNING_RATES) -> Tuned:
    """Returns Adam with a constant learning rate, tuned."""
    return tune("adam", task, constant_adam, steps, seeds, learning_rates, objective=objective)


MUON_LEARNING_RATES = (1e-3, 2e-3, 5e-3, 1e-2)


@functools.lru_cache(maxsize=32)
def muon(spec: WeightSpaceSpec, total_steps: int):
    """Returns ``make_opt(hyper)`` for Muon (``optax.contrib.muon``, Nesterov, warm-up + cosine like AdamW's, with
    ``hyper = [learning rate, warm-up fraction]``) on the hidden matrices of ``spec`` and AdamW with the same
    schedule on the rest, as Muon is used in practice. Which axes Muon contracts is read from the labels
    (:func:`muon_dimensions`)."""
    dims = muon_dimensions(spec)

    def make(hyper):
        sched = warmup_cosine(hyper[0], hyper[1], total_steps)
        return optax.with_extra_args_support(optax.contrib.muon(
            sched, weight_decay=WEIGHT_DECAY, adam_weight_decay=WEIGHT_DECAY,
            muon_weight_dimension_numbers=dims, consistent_rms=0.2))

    return make


def muon_dimensions(spec: WeightSpaceSpec):
    """Returns a tree like the params of ``optax.contrib.MuonDimensionNumbers`` for the hidden matrices (two or more
    width axes, :mod:`unf.lopt.width`) and None elsewhere. A hidden tensor's ``embed`` (residual) axes are its input
    when they lead and its output when they close it; a tensor without an ``embed`` axis contracts its first width
    axis. A leading stacking axis is a batch axis."""
    out = []
    # A leading stacking axis is not a width axis, so the views of the whole leaves keep it as a batch axis.
    for axes in lopt_width.matrix_views(spec, [False] * spec.num_leaves):
        out.append(None if axes is None else optax.contrib.MuonDimensionNumbers(reduction_axis=axes[0],
                                                                                output_axis=axes[1]))
    return spec.unflatten(out)


def tune_muon(task: Task, steps: int, seeds: Sequence[int], objective: str = "train",
              learning_rates: Sequence[float] = MUON_LEARNING_RATES,
              warmups: Sequence[float] = WARMUP_FRACTIONS) -> Tuned:
    """Returns Muon (AdamW on non-matrix leaves) + warm-up + cosine tuned over learning rate and warm-up."""
    return tune("muon", task, muon(task.spec, steps), steps, seeds, learning_rates, [(w,) for w in warmups],
                objective)
