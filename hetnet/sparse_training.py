"""Training with sparse attention: from scratch, or DeepSeek's recipe of a dense warm-up followed by sparse training.

A sparse-attention model's params hold the dense layer's projections (plus, with ``router="indexer"``, the indexer's
kernels), so the same params run with dense attention (:func:`dense_twin`). DSA's recipe, here over key blocks:

1. **Dense warm-up** (``dense_warmup`` steps): the model trains with dense attention while the indexer is fitted to
   dense attention's block mass by KL (:func:`hetnet.attention.sparse.indexer_loss`, on the dense model's residual
   stream). Nothing of the model's loss reaches the indexer, nor the indexer's loss the model.
2. **Sparse training**: the model trains with sparse attention routed by that indexer, which keeps being fitted to
   what dense attention would read on the sparse model's own residual stream.

With the mean-key router there is nothing to fit and phase 1 is plain dense training; ``dense_warmup=0`` trains
sparse from scratch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from hetnet.models import TransformerLM

TaskLoss = Callable[[TransformerLM, Any, dict], jax.Array]


def default_task_loss(model: TransformerLM, params, batch: dict) -> jax.Array:
    """The next-token loss :meth:`TransformerLM.loss`."""
    return model.loss(params, batch)


def _check_sparse(model: TransformerLM) -> None:
    if not isinstance(model, TransformerLM):
        raise TypeError(f"model must be a TransformerLM, got {type(model).__name__}.")
    if model.cfg.attention != "sparse":
        raise ValueError(f"sparse training needs a model with attention='sparse', got attention="
                         f"{model.cfg.attention!r}.")


def uses_indexer(model: TransformerLM) -> bool:
    """Returns whether ``model``'s sparse attention routes with a learned indexer (which training must fit)."""
    return model.cfg.attention == "sparse" and model.cfg.attention_options.router == "indexer"


def dense_twin(model: TransformerLM) -> TransformerLM:
    """Returns the model that runs ``model``'s params with dense softmax attention (the indexer left unused)."""
    _check_sparse(model)
    return TransformerLM(dataclasses.replace(model.cfg, attention="softmax", attention_options=()))


def phase_loss(model: TransformerLM, *, dense: bool, task_loss: TaskLoss = default_task_loss,
               indexer_weight: float = 1.0) -> Callable[[Any, dict], jax.Array]:
    """Returns ``loss(params, batch)`` for one phase: ``task_loss`` under dense (``dense=True``, the warm-up) or
    sparse attention, plus ``indexer_weight`` times the indexer's distillation loss when the router is learned.

    task_loss: ``(model, params, batch) -> scalar``, the model being the dense twin or ``model`` itself; batch: as
    ``task_loss`` reads it, with ``batch["tokens"]`` [batch, seq + 1] for the indexer's inputs.
    """
    _check_sparse(model)
    if indexer_weight < 0:
        raise ValueError(f"indexer_weight must be >= 0, got {indexer_weight!r}.")
    runner = dense_twin(model) if dense else model
    if not uses_indexer(model) or indexer_weight == 0:
        return lambda params, batch: task_loss(runner, params, batch)

    def loss(params, batch):
        inputs = batch["tokens"][:, :-1]
        mask = batch.get("mask")
        padding_mask = None if mask is None else mask[:, :-1]
        x = model.embed(params, inputs)
        # The indexer's targets need no gradient: the forward that makes their inputs is never differentiated.
        states = runner.body.residual_states(*jax.lax.stop_gradient((params, x)), padding_mask=padding_mask)
        index_loss = model.body.aux_loss(params, x, padding_mask=padding_mask, states=states)
        return task_loss(runner, params, batch) + indexer_weight * index_loss

    return loss


def in_warmup(step: int, dense_warmup: int) -> bool:
    """Returns whether 1-based ``step`` belongs to the dense warm-up of ``dense_warmup`` steps."""
    return step <= dense_warmup
