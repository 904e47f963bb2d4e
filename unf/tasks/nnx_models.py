"""A task from a Flax nnx model, so a rule can be meta-trained on the model a user trains."""

from __future__ import annotations

from typing import Any, Callable

import jax
from flax import nnx

from unf import spec as spec_lib
from unf.spec import flax_names
from unf.spec.inference import merge_params
from unf.tasks.base import Task


def nnx_task(name: str, make_model: Callable[[nnx.Rngs], nnx.Module], loss: Callable[[nnx.Module, Any], jax.Array],
             sample_batch: Callable[[jax.Array], Any], *, sample_valid_batch: Callable[[jax.Array], Any] | None = None,
             config: tuple = ()) -> Task:
    """Returns the :class:`Task` of the nnx model ``make_model(rngs)`` trained on ``loss(model, batch)``.

    Its params are the model's ``nnx.Param`` state as ``nnx.to_pure_dict`` writes it (the tree ``nnx.Optimizer``
    hands an optimizer); ``init(key)`` builds the model from ``nnx.Rngs(key)``; the model's other variables (BatchNorm
    statistics) ride along in the loss as one model made at build time has them; dropout that is on is refused
    (its draws would repeat at every step). The spec is read off the loss by :func:`unf.spec.infer`, so nothing
    need be named. sample_batch, sample_valid_batch: ``key -> batch``, pure and jit-able; config: ``(name, value)``
    pairs for the task's label.
    """
    bad = [n for n, f in (("make_model", make_model), ("loss", loss), ("sample_batch", sample_batch))
           if not callable(f)]
    if bad:
        raise TypeError(f"{', '.join(bad)} must be callable (make_model(rngs) -> nnx.Module, loss(model, batch) -> "
                        "scalar, sample_batch(key) -> batch).")
    model = make_model(nnx.Rngs(0))
    if not isinstance(model, nnx.Module):
        raise TypeError(f"make_model must return an nnx.Module, got {type(model).__name__}.")
    dropping = [".".join(map(str, path)) or "model" for path, m in flax_names.nnx_modules(model)
                if isinstance(m, nnx.Dropout) and m.rate > 0 and not m.deterministic]
    if dropping:
        # The loss replays the model as built, its random streams included, so every call would draw one mask.
        raise ValueError(f"make_model builds dropout that is on ({dropping}): the task's loss would draw the same "
                         "mask at every step. Build the model with its dropout off for the task (nnx.Dropout(rate, "
                         "deterministic=True), or model.eval() before returning it).")
    graphdef, template, rest = nnx.split(model, nnx.Param, ...)

    def init(key: jax.Array) -> Any:
        return nnx.to_pure_dict(nnx.state(make_model(nnx.Rngs(key)), nnx.Param))

    def task_loss(params: Any, batch: Any) -> jax.Array:
        # Fresh variables in the caller's trace: a BatchNorm in training mode writes its statistics, and nnx refuses
        # a write to variables made in another trace.
        return loss(merge_params(graphdef, template, params, jax.tree.map(lambda v: v, rest)), batch)

    key = jax.random.key(0)
    spec = spec_lib.infer(task_loss, jax.eval_shape(init, key), jax.eval_shape(sample_batch, key))
    return Task(name, tuple(config), init, task_loss, sample_batch, spec, sample_valid_batch)
