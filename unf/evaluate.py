"""Training held-out tasks with every optimizer over several seeds: Adam tuned by a sweep, learned optimizers
from their meta-params; a markdown table (mean +- standard error over seeds) and a loss-curve plot."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hetnet.train import inner_step
from unf.tasks.base import Task

ADAM_SWEEP = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def _run_start(task: Task, make_opt: Callable, hyper: Any, key_data: jax.Array):
    """Returns one seed's initial params, its optimizer and the scan body ``(params, state), step -> (.., loss)``."""
    k_init, k_data = jax.random.split(jax.random.wrap_key_data(key_data))
    opt = make_opt(hyper)

    def body(carry, i):
        p, s = carry
        p, s, loss, _ = inner_step(task.loss, opt, p, s, task.sample_batch(jax.random.fold_in(k_data, i)))
        return (p, s), loss

    return task.init(k_init), opt, body


@functools.lru_cache(maxsize=64)
def _trainer(task: Task, steps: int, make_opt: Callable) -> Callable:
    """Returns jitted ``run(hyper, seeds_key_data [n, k]) -> losses [n, steps]``; ``hyper`` is traced."""

    def one(hyper, key_data):
        params, opt, body = _run_start(task, make_opt, hyper, key_data)
        _, losses = jax.lax.scan(body, (params, opt.init(params)), jnp.arange(steps))
        return losses

    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def _adam(lr):
    return optax.with_extra_args_support(optax.adam(lr))


def seed_keys(seeds: Sequence[int], salt: int = 0) -> jax.Array:
    """Returns raw key data ``[len(seeds), k]``; ``salt`` separates evaluation seeds from meta-training's."""
    return jnp.stack([jax.random.key_data(jax.random.fold_in(jax.random.key(salt), s)) for s in seeds])


def train_losses(task: Task, make_opt: Callable, hyper: Any, steps: int, seeds: Sequence[int], salt: int = 1) -> np.ndarray:
    """Returns training losses ``[seeds, steps]`` of ``task`` under ``make_opt(hyper)``."""
    return np.asarray(_trainer(task, steps, make_opt)(hyper, seed_keys(seeds, salt)))


VALID_BATCHES = 8
VALID_SALT = 7


@functools.lru_cache(maxsize=64)
def _valid_trainer(task: Task, steps: int, make_opt: Callable, points: int) -> Callable:
    """Returns jitted ``run(hyper, seeds_key_data [n, k]) -> (train losses [n, steps], valid losses [n, points])``;
    the held-out loss is taken after every ``steps / points`` steps on one fixed set of held-out batches."""
    if task.sample_valid_batch is None:
        raise ValueError(f"task {task.label} has no held-out split (sample_valid_batch is None).")
    if points < 1 or steps % points:
        raise ValueError(f"points must be a positive divisor of steps ({steps}), got {points}.")
    chunk = steps // points
    valid_key = jax.random.key(VALID_SALT)

    valid_keys = jax.vmap(lambda b: jax.random.fold_in(valid_key, b))(jnp.arange(VALID_BATCHES))

    def valid_loss(params):
        # A loop, not VALID_BATCHES copies of the forward pass: the trainer compiles one.
        return jnp.mean(jax.lax.map(lambda k: task.loss(params, task.sample_valid_batch(k)), valid_keys))

    def one(hyper, key_data):
        params, opt, body = _run_start(task, make_opt, hyper, key_data)

        def chunk_body(carry, c):
            carry, losses = jax.lax.scan(body, carry, c * chunk + jnp.arange(chunk))
            return carry, (losses, valid_loss(carry[0]))

        _, (losses, valid) = jax.lax.scan(chunk_body, (params, opt.init(params)), jnp.arange(points))
        return losses.reshape(-1), valid

    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def valid_points(steps: int, most: int = 10) -> int:
    """Returns how many held-out measurements a run of ``steps`` gets: the largest divisor of ``steps`` up to ``most``."""
    return max(p for p in range(1, min(most, steps) + 1) if steps % p == 0)


def train_valid_losses(task: Task, make_opt: Callable, hyper: Any, steps: int, seeds: Sequence[int], salt: int = 1,
                       points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(train losses [seeds, steps], held-out losses [seeds, points])`` of ``task`` under
    ``make_opt(hyper)``; the held-out loss is measured every ``steps / points`` steps (``points`` defaults to
    :func:`valid_points`), the last at the end."""
    points = valid_points(steps) if points is None else points
    train, valid = _valid_trainer(task, steps, make_opt, points)(hyper, seed_keys(seeds, salt))
    return np.asarray(train), np.asarray(valid)


def final_loss(losses: np.ndarray) -> np.ndarray:
    """Returns each run's final training loss: the mean of its last 10% of steps (at least one). losses: [runs, steps]"""
    tail = max(1, losses.shape[-1] // 10)
    return losses[..., -tail:].mean(axis=-1)


def tune_adam(task: Task, steps: int, seeds: Sequence[int], sweep: Sequence[float] = ADAM_SWEEP) -> tuple[float, dict]:
    """Returns ``(best learning rate, {lr: mean final loss})`` on ``task``; diverged runs count as infinite loss."""
    scores = {}
    for lr in sweep:
        f = final_loss(train_losses(task, _adam, jnp.float32(lr), steps, seeds, salt=2))
        scores[lr] = float(np.mean(np.where(np.isfinite(f), f, np.inf)))
    return min(scores, key=scores.get), scores


@dataclasses.dataclass(frozen=True)
class Contender:
    """An optimizer under evaluation: ``make(task) -> (make_opt, hyper)``."""

    name: str
    make: Callable[[Task], tuple[Callable, Any]]


def adam_contender(lr: float) -> Contender:
    return Contender(f"adam (lr {lr:g})", lambda task: (_adam, jnp.float32(lr)))


def learned_contender(name: str, build: Callable[[Task], Any], meta_params: Any) -> Contender:
    """``build(task)`` returns the learned optimizer for that task's weight space."""

    def make(task):
        lopt = build(task)
        return lopt.opt_fn, meta_params

    return Contender(name, make)


def evaluate(tasks: Sequence[Task], contenders: Sequence[Contender], steps: int, seeds: Sequence[int]) -> list[dict]:
    """Returns one row per (task, optimizer): final and mean training loss, mean and standard error over seeds, and
    the mean loss curve."""
    rows = []
    for task in tasks:
        for c in contenders:
            make_opt, hyper = c.make(task)
            losses = train_losses(task, make_opt, hyper, steps, seeds)
            finals, means = final_loss(losses), losses.mean(axis=-1)
            se = lambda v: float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0  # noqa: E731
            rows.append({
                "task": task.label, "optimizer": c.name, "final": float(np.mean(finals)), "final_se": se(finals),
                "mean": float(np.mean(means)), "mean_se": se(means), "curve": losses.mean(axis=0).tolist(),
                "seeds": len(seeds),
            })
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """Returns the results as a markdown table, the best final loss per task in bold."""
    best = {}
    for r in rows:
        best[r["task"]] = min(best.get(r["task"], np.inf), r["final"])
    lines = ["| task | optimizer | final train loss | mean train loss |", "|---|---|---|---|"]
    for r in rows:
        final = f"{r['final']:.4f} ± {r['final_se']:.4f}"
        if r["final"] == best[r["task"]]:
            final = f"**{final}**"
        lines.append(f"| {r['task']} | {r['optimizer']} | {final} | {r['mean']:.4f} ± {r['mean_se']:.4f} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: str | Path) -> None:
    """Writes a PNG of mean training-loss curves, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in rows:
            if r["task"] == task:
                curve = np.asarray(r["curve"])
                window = max(1, len(curve) // 50)
                smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
                ax.plot(np.arange(len(smooth)) + window - 1, smooth, label=r["optimizer"])
        ax.set_title(task, fontsize=8)
        ax.set_xlabel("inner step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
