"""Jitted training and evaluation steps over any optax transformation, optionally sharded by axis labels."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hetnet import sharding as sharding_lib
from hetnet.config import ClassifierConfig, TransformerConfig
from hetnet.models import SequenceClassifier, TransformerLM

LossFn = Callable[[Any, Any], jax.Array]  # (params, batch) -> scalar loss


def lm_loss(params, batch: dict, cfg: TransformerConfig) -> jax.Array:
    """Returns the mean next-token cross-entropy (nats per token) over unmasked targets.

    batch["tokens"]: [batch, seq + 1] int; optional batch["mask"]: [batch, seq + 1] bool, True for real tokens.
    """
    tokens = batch["tokens"]
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    mask = batch.get("mask")
    padding_mask = None if mask is None else mask[:, :-1]
    logits = TransformerLM.apply(params, inputs, cfg, padding_mask=padding_mask)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    if mask is None:
        return jnp.mean(losses)
    weights = mask[:, 1:].astype(losses.dtype)
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def classifier_loss(params, batch: dict, cfg: ClassifierConfig) -> jax.Array:
    """Returns the mean cross-entropy of class logits.

    batch["inputs"]: [batch, seq] tokens or [batch, seq, input_dim] features; batch["labels"]: [batch] int;
    optional batch["mask"]: [batch, seq] bool.
    """
    logits = SequenceClassifier.apply(params, batch["inputs"], cfg, padding_mask=batch.get("mask"))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]))


def classifier_accuracy(params, batch: dict, cfg: ClassifierConfig) -> jax.Array:
    """Returns the fraction of examples whose arg-max logit is the label."""
    logits = SequenceClassifier.apply(params, batch["inputs"], cfg, padding_mask=batch.get("mask"))
    return jnp.mean(jnp.argmax(logits, axis=-1) == batch["labels"])


def global_norm(tree: Any) -> jax.Array:
    """Returns the L2 norm of all leaves of ``tree`` taken together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


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
    batch = NamedSharding(mesh, PartitionSpec(rules.get("batch")))
    return StepShardings(param_shardings, state_shardings, batch)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    shardings: StepShardings | None = None,
) -> Callable[[Any, Any, Any], tuple[Any, Any, dict]]:
    """Returns a jitted ``step(params, opt_state, batch) -> (params, opt_state, metrics)``.

    The optimizer receives the loss as the extra argument ``value`` (optax's convention for transformations that
    use it). ``metrics`` holds ``loss`` (before the update) and ``grad_norm``. With ``shardings`` the step is compiled
    for them (see :func:`step_shardings`); put the inputs there with :func:`place`.
    """
    opt = optax.with_extra_args_support(optimizer)

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params, value=loss)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, "grad_norm": global_norm(grads)}

    if shardings is None:
        return jax.jit(step)
    metrics = sharding_lib.replicated(shardings.batch.mesh)
    return jax.jit(
        step,
        in_shardings=(shardings.params, shardings.opt_state, shardings.batch),
        out_shardings=(shardings.params, shardings.opt_state, metrics),
    )


def make_eval_step(loss_fn: LossFn) -> Callable[[Any, Any], jax.Array]:
    """Returns a jitted ``eval_step(params, batch) -> loss``."""
    return jax.jit(loss_fn)


def place(tree: Any, shardings: Any) -> Any:
    """Returns ``tree`` put on devices by ``shardings`` (a matching tree, or one sharding for every leaf)."""
    return jax.device_put(tree, shardings)
