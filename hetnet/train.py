"""Jitted training and evaluation steps over any optax transformation, optionally sharded by axis labels.

A loss is any ``(params, batch) -> scalar``; a model's bound ``loss`` method (``TransformerLM(cfg).loss``) is one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import optax
from jax.sharding import Mesh, NamedSharding

from hetnet import sharding as sharding_lib

LossFn = Callable[[Any, Any], jax.Array]  # (params, batch) -> scalar loss


def inner_step(loss_fn: LossFn, optimizer: optax.GradientTransformationExtraArgs, params, opt_state, batch):
    """Returns ``(params, opt_state, loss, grads)`` after one optimizer step on ``batch`` (``loss`` before it).

    The one training step every loop in the project runs (the train step, meta-training's unrolls, evaluation).
    The optimizer receives the loss as optax's extra argument ``value``; wrap a plain transformation with
    ``optax.with_extra_args_support``.
    """
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params, value=loss)
    return optax.apply_updates(params, updates), opt_state, loss, grads


@dataclasses.dataclass(frozen=True)
class StepShardings:
    """Shardings of a train step's params, optimizer state and batch (a prefix sharding for every batch leaf)."""

    params: Any
    opt_state: Any
    batch: NamedSharding


def step_shardings(
    optimizer: optax.GradientTransformation,
    params: Any,
    axes: Any,
    mesh: Mesh,
    rules: sharding_lib.Rules = sharding_lib.TENSOR_PARALLEL_RULES,
) -> StepShardings:
    """Returns the shardings that ``rules`` give for a train step on ``mesh``.

    Params are sharded by their labels; optimizer-state leaves shaped like params (moments) follow the params; other
    state (counts) is replicated; batches are split over the rule for ``"batch"``.
    """
    mesh = sharding_lib.auto_mesh(mesh)
    param_shardings = sharding_lib.named_shardings(params, axes, mesh, rules)
    state_shape = jax.eval_shape(optimizer.init, params)
    replicated = sharding_lib.replicated(mesh)
    state_shardings = optax.tree_map_params(
        optimizer,
        lambda _, s: s,
        state_shape,
        param_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )
    return StepShardings(param_shardings, state_shardings, sharding_lib.batch_sharding(mesh, rules))


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    shardings: StepShardings | None = None,
    *,
    donate: bool = True,
) -> Callable[[Any, Any, Any], tuple[Any, Any, dict]]:
    """Returns a jitted ``step(params, opt_state, batch) -> (params, opt_state, metrics)``.

    The optimizer receives the loss as the extra argument ``value`` (optax's convention for transformations that
    use it). ``metrics`` holds ``loss`` (before the update) and ``grad_norm``. With ``shardings`` the step is compiled
    for them (see :func:`step_shardings`); put the inputs there with :func:`place`. The ``params`` and ``opt_state``
    passed in are donated (updated in place where the backend can): use the returned ones, not the inputs; with
    ``donate=False`` they stay valid (for calling the step repeatedly on the same inputs, as a benchmark does).
    """
    opt = optax.with_extra_args_support(optimizer)

    def step(params, opt_state, batch):
        params, opt_state, loss, grads = inner_step(loss_fn, opt, params, opt_state, batch)
        return params, opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    # The old params and optimizer state are dead after a step: donating them lets XLA update in place.
    donated = (0, 1) if donate else ()
    if shardings is None:
        return jax.jit(step, donate_argnums=donated)
    metrics = sharding_lib.replicated(shardings.batch.mesh)
    return jax.jit(
        step,
        in_shardings=(shardings.params, shardings.opt_state, shardings.batch),
        out_shardings=(shardings.params, shardings.opt_state, metrics),
        donate_argnums=donated,
    )


def make_eval_step(loss_fn: LossFn) -> Callable[[Any, Any], jax.Array]:
    """Returns a jitted ``eval_step(params, batch) -> loss``."""
    return jax.jit(loss_fn)


def place(tree: Any, shardings: Any) -> Any:
    """Returns ``tree`` put on devices by ``shardings`` (a matching tree, or one sharding for every leaf)."""
    return jax.device_put(tree, shardings)
